"""Summaries (median, min, ratio to dataset_kit, peak memory) and the Markdown report."""

from __future__ import annotations

import statistics
from typing import Any

from benchmarks.contenders import CONTENDERS

REFERENCE = "dataset_kit"


def summarize(measurements: list[dict[str, Any]]) -> dict[str, Any]:
    """Collapse the repetitions of one (workload, contender) into one row."""
    ok = [m for m in measurements if m.get("status") == "ok"]
    failed = [m for m in measurements if m.get("status") != "ok"]
    if failed or not ok:
        first = failed[0] if failed else {"status": "error", "error_type": "NoResult"}
        return {
            "status": first.get("status", "error"),
            "error_type": first.get("error_type"),
            "error": first.get("error"),
            "reps_ok": len(ok),
        }
    seconds = [m["seconds"] for m in ok]
    peaks = [m["peak_mib"] for m in ok if m.get("peak_mib") is not None]
    return {
        "status": "ok",
        "verified": all(m.get("verified", False) for m in ok),
        "median_s": statistics.median(seconds),
        "min_s": min(seconds),
        "peak_mib": statistics.median(peaks) if peaks else None,
        "reps_ok": len(ok),
    }


def add_ratios(summary: dict[str, dict[str, dict[str, Any]]]) -> None:
    """Set ``ratio`` = contender median / dataset_kit median (>1: dataset_kit faster)."""
    for rows in summary.values():
        ref = rows.get(REFERENCE, {})
        ref_s = ref.get("median_s") if ref.get("status") == "ok" else None
        for row in rows.values():
            ok = row.get("status") == "ok" and ref_s
            row["ratio"] = row["median_s"] / ref_s if ok else None


def status_text(row: dict[str, Any]) -> str:
    """Short status for a table cell."""
    status = row.get("status")
    if status == "ok":
        return "ok" if row.get("verified") else "ok (unverified)"
    if status == "unsupported":
        return "n/a (no such feature)"
    if status == "not_implemented":
        return "not implemented"
    return f"error: {row.get('error_type') or 'Error'}"


def fmt_s(value: float | None) -> str:
    """Seconds with precision that suits the magnitude."""
    if value is None:
        return "n/a"
    return f"{value:.4f}" if value < 0.1 else f"{value:.3f}" if value < 10 else f"{value:.2f}"


def fmt_ratio(value: float | None) -> str:
    """Ratio as '2.35x'."""
    return "n/a" if value is None else f"{value:.2f}x"


def fmt_mib(value: float | None) -> str:
    """Memory in MiB."""
    return "n/a" if value is None else f"{value:.0f}"


def markdown(
    meta: dict[str, Any],
    titles: dict[str, str],
    contenders: list[str],
    summary: dict[str, dict[str, dict[str, Any]]],
) -> str:
    """The full report."""
    label = {name: CONTENDERS[name].label for name in contenders}
    lines = ["# dataset_kit benchmark", ""]
    lines += [f"- {key}: {value}" for key, value in meta.items()]
    lines += ["", "## Summary", ""]
    lines += [
        "Median seconds; in brackets the ratio to dataset_kit (>1: dataset_kit is faster).",
        "",
    ]
    lines.append("| workload | " + " | ".join(label[c] for c in contenders) + " |")
    lines.append("|---|" + "---|" * len(contenders))
    for key, rows in summary.items():
        cells = []
        for name in contenders:
            row = rows[name]
            if row["status"] == "ok":
                ratio = f" ({fmt_ratio(row['ratio'])})" if row["ratio"] is not None else ""
                cells.append(f"{fmt_s(row['median_s'])}{ratio}")
            else:
                cells.append(status_text(row))
        lines.append(f"| {key} | " + " | ".join(cells) + " |")
    errors: list[str] = []
    for key, rows in summary.items():
        lines += ["", f"## {key}: {titles[key]}", ""]
        lines.append(
            "| contender | median s | min s | ratio to dataset_kit | peak MiB | reps | status |"
        )
        lines.append("|---|---|---|---|---|---|---|")
        for name in contenders:
            row = rows[name]
            lines.append(
                f"| {label[name]} | {fmt_s(row.get('median_s'))} | {fmt_s(row.get('min_s'))} "
                f"| {fmt_ratio(row.get('ratio'))} | {fmt_mib(row.get('peak_mib'))} "
                f"| {row['reps_ok']} | {status_text(row)} |"
            )
            if row["status"] in ("error", "not_implemented") and row.get("error"):
                message = " ".join(str(row["error"]).split())[:300]
                errors.append(f"- {key} / {label[name]}: {row.get('error_type')}: {message}")
    if errors:
        lines += ["", "## Failures", "", *errors]
    lines += ["", "## Method", "", *METHOD, ""]
    return "\n".join(lines)


METHOD = [
    "- Every measurement runs in a fresh subprocess (imports, input loading and setup untimed);",
    "  `time.perf_counter()` brackets the operation only. Contenders alternate round-robin",
    "  within each repetition; the table shows the median and minimum over repetitions.",
    "- Peak MiB: the process's RSS high-water mark (VmHWM) during the operation minus the",
    "  RSS just before it (VmHWM is reset via /proc/self/clear_refs after loading the",
    "  input), i.e. the extra memory the operation needed. Read results count; input data",
    "  does not. (ru_maxrss is not used: after fork+exec it includes the parent's RSS.)",
    "- Input: the same deterministic data for everyone, generated once; each contender gets",
    "  it in its native format (see 'input' above). All reads end in a pandas DataFrame.",
    "- Reads (W2, W3, W5-read) include opening the dataset from its path. W4 appends to a",
    "  fresh copy of the W1 dataset. W7 setup: write the blobs, overwrite the dataset so",
    "  they become unreferenced; the GC alone is timed.",
    "- Results are verified: row counts (W1, W4, W5-write), row count + product_id sum",
    "  (+ dates and store_ids for W3) for reads, partition count for W5-open, deleted data",
    "  files and remaining rows for W7. A wrong result is an error, not a time.",
    "- The page cache is warm (datasets were just written). After a failure the remaining",
    "  repetitions of that contender/workload are skipped.",
]
