"""Pipelines: lazy dask graphs of many parallel nodes and one final commit (or report) node.

Every function here plans on the client and returns a :class:`Job`; ``job.compute()``
runs it on the local threaded scheduler, the active ``distributed.Client``, or the cluster
named by ``$DATASET_KIT_SCHEDULER`` (see :class:`Job`). Stores travel into tasks as specs
(URL + options), never as live clients; task keys are deterministic.

Importing this module loads neither dask nor distributed; they load when a job is built.
"""

from dataset_kit.pipelines._job import SCHEDULER_ENV, Job
from dataset_kit.pipelines.backup import CopyReport, backup, restore, verify
from dataset_kit.pipelines.compute import map_partitions
from dataset_kit.pipelines.ddf import read_dataset_as_ddf, update_from_ddf, write_ddf
from dataset_kit.pipelines.download import download_table
from dataset_kit.pipelines.gc import garbage_collect
from dataset_kit.pipelines.ingest import ingest_files
from dataset_kit.pipelines.repartition import repartition

__all__ = [
    "SCHEDULER_ENV",
    "CopyReport",
    "Job",
    "backup",
    "download_table",
    "garbage_collect",
    "ingest_files",
    "map_partitions",
    "read_dataset_as_ddf",
    "repartition",
    "restore",
    "update_from_ddf",
    "verify",
    "write_ddf",
]
