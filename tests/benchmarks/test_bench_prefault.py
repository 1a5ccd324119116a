"""The runner's prefault: at least ``--prefault-mib``, and 1.1x the largest peak so far."""

from __future__ import annotations

from pathlib import Path

from benchmarks.run import Runner, parse_args


def test_prefault_grows_to_cover_the_largest_peak_of_the_workload(tmp_path: Path) -> None:
    runner = Runner(parse_args(["--prefault-mib", "2048"]), None, tmp_path)  # type: ignore[arg-type]
    assert runner.prefault_mib("W5-write") == 2048
    runner.peaks["W5-write"] = 4127.3  # deltalake's peak there
    assert runner.prefault_mib("W5-write") == 4541
    assert runner.prefault_mib("W2") == 2048  # per workload
    runner.peaks["W2"] = 100.0
    assert runner.prefault_mib("W2") == 2048  # never below the option


def test_prefault_off_stays_off(tmp_path: Path) -> None:
    runner = Runner(parse_args(["--prefault-mib", "0"]), None, tmp_path)  # type: ignore[arg-type]
    runner.peaks["W5-write"] = 4127.3
    assert runner.prefault_mib("W5-write") == 0
