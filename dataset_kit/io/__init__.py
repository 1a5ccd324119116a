"""Parquet I/O, indices, the commit protocol and read/write steps on one dataset."""
