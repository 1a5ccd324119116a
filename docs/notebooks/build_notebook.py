"""Write out_of_core_analysis.ipynb from the cells below (``python build_notebook.py``).

The notebook is kept as code here so that reviews see plain Python; the test suite
(tests/test_notebooks.py) executes the .ipynb and checks it matches this script.
"""

from __future__ import annotations

import sys
from pathlib import Path

import nbformat

HERE = Path(__file__).resolve().parent

CELLS: list[tuple[str, str]] = [
    (
        "markdown",
        """# Out-of-core analysis of a dataset_kit dataset

This notebook analyses a sales dataset **larger than the memory of the dask cluster it
runs on**: two workers with 350 MiB each. Nothing loads the whole dataset; dask streams
it partition by partition, and dataset_kit reads only the columns and partitions a query
needs.

Steps: create the dataset (skip this if you have one), look at it, filter + group +
aggregate with a progress bar, plot, and check how much memory the workers used.

`DK_NOTEBOOK_ROWS` sets the dataset's size (default 16 million rows, about 1 GiB as
pandas DataFrames).""",
    ),
    (
        "code",
        """import os
import shutil
import tempfile

import dask.dataframe as dd
import numpy as np
import pandas as pd
import pyarrow as pa
from distributed import Client, LocalCluster, progress
from distributed.diagnostics import MemorySampler

import dataset_kit as dk

ROWS = int(os.environ.get("DK_NOTEBOOK_ROWS", 16_000_000))
MEMORY_LIMIT = 350 * 2**20  # per worker
workdir = tempfile.mkdtemp(prefix="dk-notebook-")
store = dk.open_store(workdir)  # a local directory; an azure:// URL works the same way

cluster = LocalCluster(
    n_workers=2,
    threads_per_worker=1,
    memory_limit=MEMORY_LIMIT,
    host="127.0.0.1",
    dashboard_address="127.0.0.1:0",
)
client = Client(cluster)
print(f"{len(client.scheduler_info()['workers'])} workers, "
      f"{2 * MEMORY_LIMIT / 2**20:.0f} MiB of memory in all")""",
    ),
    (
        "markdown",
        """## 1. A dataset bigger than the cluster's memory

Each dask partition generates the sales of half a day (a real pipeline would download them,
see `docs/download.md`); `write_ddf` writes them partitioned on `date` and commits once.""",
    ),
    (
        "code",
        """DATES = pd.date_range("2024-01-01", periods=30, freq="D").strftime("%Y-%m-%d")
LABELS = pa.array([f"label-{i:04d}" for i in range(1000)])
CHUNKS = [(date, half) for date in DATES for half in (0, 1)]  # two per day: small tasks


def half_a_day(chunk: tuple[str, int]) -> pd.DataFrame:
    date, half = chunk
    rows = ROWS // len(CHUNKS)
    rng = np.random.default_rng(int(date.replace("-", "")) * 2 + half)
    labels = LABELS.take(pa.array(rng.integers(0, len(LABELS), rows)))
    return pd.DataFrame(
        {
            "date": date,
            "store_id": rng.integers(0, 100, rows),
            "product_id": rng.integers(0, 5_000_000, rows),
            "sales": np.round(rng.gamma(2.0, 50.0, rows), 2),
            "price": rng.uniform(0.5, 200.0, rows).astype("float32"),
            "label": pd.Series(labels.to_pandas(), dtype="str"),
        }
    )


generated = dd.from_map(half_a_day, CHUNKS)
job = dk.pipelines.write_ddf(
    generated, store=store, dataset_uuid="sales", partition_on="date", mode="overwrite"
)
meta = job.compute(progress=True)
print(f"version {meta.version}: {meta.num_partitions} partitions")""",
    ),
    (
        "markdown",
        """## 2. What is in it

The dataset object shows its versions, partitions, rows, bytes and schema; the histogram
of partition sizes makes imbalance visible at a glance.""",
    ),
    (
        "code",
        """sales = dk.open_dataset(store=store, dataset_uuid="sales")
sample = dk.read_table(
    store=store, dataset_uuid="sales", predicates=[[("date", "==", DATES[0])]]
)
in_memory = sample.memory_usage(deep=True).sum() * len(DATES)
print(f"{sales.num_rows:,} rows; as pandas about {in_memory / 2**30:.2f} GiB, "
      f"{in_memory / (2 * MEMORY_LIMIT):.1f}x the cluster's memory")
sales""",
    ),
    (
        "code",
        """sales.plot_partition_sizes(by="rows", bins=10);""",
    ),
    (
        "markdown",
        """## 3. Filter, group, aggregate

Revenue per store for the last three weeks. `read_dataset_as_ddf` gives one dask partition
per dataset partition; the predicate prunes whole partitions before anything is read and
only four of the six columns are loaded.""",
    ),
    (
        "code",
        """since = DATES[9]
ddf = dk.read_dataset_as_ddf(
    store=store,
    dataset_uuid="sales",
    columns=["date", "store_id", "sales", "price"],
    predicates=[[("date", ">=", since)]],
)
print(f"{ddf.npartitions} of {sales.num_partitions} partitions to read")
ddf = ddf.assign(revenue=ddf["sales"] * ddf["price"])
per_store = ddf.groupby("store_id").agg(
    revenue=("revenue", "sum"), units=("sales", "count"), avg_price=("price", "mean")
)
per_day = ddf.groupby("date")["revenue"].sum()

sampler = MemorySampler()
with sampler.sample("analysis", interval=0.1):
    futures = client.compute([per_store, per_day])
    progress(futures)
    per_store, per_day = client.gather(futures)
per_store.sort_values("revenue", ascending=False).head(10)""",
    ),
    (
        "markdown",
        """## 4. Plot""",
    ),
    (
        "code",
        """%matplotlib inline
import matplotlib.pyplot as plt

fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4))
top = per_store.sort_values("revenue", ascending=False).head(15)
left.bar(top.index.astype(str), top["revenue"] / 1e6)
left.set(title="Top 15 stores", xlabel="store_id", ylabel="revenue (millions)")
per_day.sort_index().div(1e6).plot(ax=right, marker="o", title="Revenue per day (millions)")
right.tick_params(axis="x", labelrotation=45)
fig.tight_layout()""",
    ),
    (
        "markdown",
        """## 5. Memory and a cross-check

The workers' memory over the analysis, from `distributed`'s `MemorySampler` (the whole
cluster, process memory), against the limit; then the totals checked against a plain
per-partition computation with pyarrow.""",
    ),
    (
        "code",
        """used = sampler.to_pandas()["analysis"]
loaded = ["date", "store_id", "sales", "price"]  # the columns the analysis reads
analysed = sample[loaded].memory_usage(deep=True).sum() * (len(DATES) - 9)
print(f"peak cluster memory {used.max() / 2**20:.0f} MiB of {2 * MEMORY_LIMIT / 2**20:.0f} MiB "
      f"while analysing about {analysed / 2**20:.0f} MiB of data (4 columns, "
      f"{len(DATES) - 9} dates)")
assert used.max() < 2 * MEMORY_LIMIT

check = 0.0
for date in DATES[9:]:
    part = dk.read_table(
        store=store, dataset_uuid="sales", columns=["sales", "price"],
        predicates=[[("date", "==", date)]], output="arrow",
    )
    check += float((part["sales"].to_numpy() * part["price"].to_numpy()).sum())
assert np.isclose(per_store["revenue"].sum(), check, rtol=1e-9)
assert per_store["units"].sum() == (ROWS // len(CHUNKS)) * 2 * (len(DATES) - 9)
print("totals match")""",
    ),
    (
        "code",
        """client.close()
cluster.close()
shutil.rmtree(workdir)  # the dataset was a temporary one""",
    ),
]


def build() -> nbformat.NotebookNode:
    """The notebook, without outputs."""
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {
        "name": "python3",
        "display_name": "Python 3",
        "language": "python",
    }
    nb.metadata["language_info"] = {"name": "python"}
    for kind, source in CELLS:
        make = nbformat.v4.new_markdown_cell if kind == "markdown" else nbformat.v4.new_code_cell
        nb.cells.append(make(source))
    for i, cell in enumerate(nb.cells):
        cell["id"] = f"cell-{i:02d}"
    return nb


def main() -> int:
    """Write the notebook next to this script."""
    nbformat.write(build(), HERE / "out_of_core_analysis.ipynb")
    return 0


if __name__ == "__main__":
    sys.exit(main())
