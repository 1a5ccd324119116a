"""Every code example in README.md and docs/ runs.

Per file, in a scratch directory: ``python`` blocks run in order in one namespace;
in ``bash`` blocks, each ``dataset-kit ...`` line runs as a real process and must exit 0
(``make`` lines are the set-up commands CI itself runs). A block right after a line
``<!-- not-run: reason -->`` is skipped, with the reason in the source for reviewers.
Files that mention Azure get ``AZURE_STORAGE_CONNECTION_STRING`` of the session's Azurite.
"""

from __future__ import annotations

import contextlib
import io
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
FILES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
FENCE = re.compile(r"^```(\w*)\s*$")


def blocks(path: Path) -> list[tuple[str, int, str]]:
    """``(language, first line number, code)`` of every runnable fenced block."""
    out: list[tuple[str, int, str]] = []
    lines = path.read_text().splitlines()
    i = 0
    while i < len(lines):
        match = FENCE.match(lines[i])
        if match is None:
            i += 1
            continue
        lang, start = match.group(1), i + 1
        j = start
        while j < len(lines) and not lines[j].startswith("```"):
            j += 1
        skipped = i > 0 and lines[i - 1].startswith("<!-- not-run:")
        if lang in ("python", "bash") and not skipped:
            out.append((lang, start + 1, "\n".join(lines[start:j])))
        i = j + 1
    return out


def test_every_document_has_its_examples_found() -> None:
    assert any(blocks(ROOT / "docs" / "pipelines.md"))
    for path in FILES:
        text = path.read_text()
        for marker in re.findall(r"<!-- not-run:(.*?)-->", text):
            assert marker.strip(), f"{path.name}: a not-run marker needs a reason"


WITH_EXAMPLES = [p for p in FILES if blocks(p)]


@pytest.mark.parametrize("path", WITH_EXAMPLES, ids=[p.name for p in WITH_EXAMPLES])
def test_examples_run(
    path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest
) -> None:
    found = blocks(path)
    env = dict(os.environ)
    if "azure" in path.read_text().lower():
        env["AZURE_STORAGE_CONNECTION_STRING"] = request.getfixturevalue("azurite")
        monkeypatch.setenv(
            "AZURE_STORAGE_CONNECTION_STRING", env["AZURE_STORAGE_CONNECTION_STRING"]
        )
    monkeypatch.chdir(tmp_path)
    namespace: dict[str, object] = {"__name__": f"docs_{path.stem}"}
    entry = Path(sys.executable).parent / "dataset-kit"
    for lang, line, code in found:
        where = f"{path.relative_to(ROOT)}:{line}"
        if lang == "python":
            with contextlib.redirect_stdout(io.StringIO()):
                exec(compile(code, where, "exec"), namespace)
            continue
        for command in code.splitlines():
            command = command.split("  #", 1)[0].strip()
            if not command.startswith("dataset-kit "):
                assert command == "" or command.startswith(("make ", "#")), (
                    f"{where}: only dataset-kit and make commands can be tested: {command!r}"
                )
                continue
            argv = [str(entry), *shlex.split(command)[1:]]
            proc = subprocess.run(argv, capture_output=True, text=True, env=env, check=False)
            assert proc.returncode == 0, f"{where}: {command}\n{proc.stderr[-2000:]}"
