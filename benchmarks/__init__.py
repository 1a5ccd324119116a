"""Benchmark runner comparing dataset_kit with pyarrow.dataset, deltalake and plateau.

Run ``python -m benchmarks.run --help`` (or ``make bench BENCH_ARGS="..."``).
"""
