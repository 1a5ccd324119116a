"""Summaries (median, min, ratio to dataset_kit, peak memory) and the Markdown report."""

from __future__ import annotations

import statistics
from typing import Any

from benchmarks.contenders import CONTENDERS
from benchmarks.workloads import (
    CONNECT_RTTS,
    VARIANTS,
    WORKLOADS,
    split_entry,
    split_rtt,
    targets_for,
    workload,
)

REFERENCE = "dataset_kit"

#: How the numeric notes of a measurement are shown (median over the repetitions).
NOTES = {
    "cluster_startup_s": "cluster start-up + warm-up {:.2f} s (untimed)",
    "copied": "data blobs copied: {:,.0f}",
    "partitions": "{:,.0f} partitions",
    "files": "{:,.0f} files",
    "file_mib_min": "file MiB min {:.2f}",
    "file_mib_median": "median {:.2f}",
    "file_mib_max": "max {:.2f}",
    "workers_peak_mib": "workers' summed peak RSS {:,.0f} MiB",
    "uploaded": "setup: {:,.0f} blobs uploaded",
    "upload_s": "in {:.0f} s (untimed)",
    "rtt_ms": "through a {:g} ms round-trip proxy",
    "proxy_connections": "connections opened through it: {:,.0f}",
}


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
    row = {
        "status": "ok",
        "verified": all(m.get("verified", False) for m in ok),
        "median_s": statistics.median(seconds),
        "min_s": min(seconds),
        "peak_mib": statistics.median(peaks) if peaks else None,
        "reps_ok": len(ok),
    }
    names = sorted({n for m in ok for n in m.get("notes", {})})
    notes = {
        n: statistics.median([m["notes"][n] for m in ok if n in m.get("notes", {})]) for n in names
    }
    if notes:
        row["notes"] = notes
    return row


def reference(rows: dict[str, dict[str, Any]]) -> str | None:
    """The entry ratios refer to: the first dataset_kit entry (``dataset_kit[:variant]``)."""
    return next((e for e in rows if split_entry(e)[0] == REFERENCE), None)


def add_ratios(summary: dict[str, dict[str, dict[str, Any]]]) -> None:
    """Set ``ratio`` = entry median / reference median (>1: dataset_kit faster)."""
    for rows in summary.values():
        ref_entry = reference(rows)
        ref = rows.get(ref_entry, {}) if ref_entry is not None else {}
        ref_s = ref.get("median_s") if ref.get("status") == "ok" else None
        for row in rows.values():
            ok = row.get("status") == "ok" and ref_s
            row["ratio"] = row["median_s"] / ref_s if ok else None


def label(entry: str) -> str:
    """``dataset_kit [2-worker LocalCluster, 1 thread each]``."""
    contender, variant = split_entry(entry)
    name = CONTENDERS[contender].label
    return f"{name} [{VARIANTS.get(variant, variant)}]" if variant else name


def notes_text(row: dict[str, Any]) -> str:
    """The notes of a summary row, e.g. 'copied 1,000 data blobs'."""
    notes = row.get("notes") or {}
    order = [k for k in NOTES if k in notes] + [k for k in notes if k not in NOTES]
    return "; ".join(NOTES.get(k, k + " {}").format(notes[k]) for k in order)


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
    """The full report: W1-W7 as contender columns, W8-W10 with their variants."""
    classic = {k: rows for k, rows in summary.items() if not workload(k).pipeline}
    pipeline = {k: rows for k, rows in summary.items() if workload(k).pipeline}
    columns = [c for c in contenders if any(c in rows for rows in classic.values())]
    lines = ["# dataset_kit benchmark", ""]
    lines += [f"- {key}: {value}" for key, value in meta.items()]
    if classic:
        lines += ["", "## Summary", ""]
        lines += [
            "Median seconds; in brackets the ratio to dataset_kit (>1: dataset_kit is faster).",
            "",
        ]
        lines.append("| workload | " + " | ".join(label(c) for c in columns) + " |")
        lines.append("|---|" + "---|" * len(columns))
        for key, rows in classic.items():
            cells = []
            for name in columns:
                row = rows[name]
                if row["status"] == "ok":
                    ratio = f" ({fmt_ratio(row['ratio'])})" if row["ratio"] is not None else ""
                    cells.append(f"{fmt_s(row['median_s'])}{ratio}")
                else:
                    cells.append(status_text(row))
            lines.append(f"| {key} | " + " | ".join(cells) + " |")
    if pipeline:
        lines += pipeline_summary(pipeline)
    errors: list[str] = []
    for key, rows in summary.items():
        lines += ["", f"## {key}: {titles[key]}", ""]
        ref = reference(rows)
        if workload(key).pipeline and ref is not None:
            lines += [f"Ratios are to {label(ref)} (>1: it is faster).", ""]
        extra = " notes |" if workload(key).pipeline else ""
        lines.append(
            "| contender | median s | min s | ratio to dataset_kit | peak MiB | reps | status |"
            + extra
        )
        lines.append("|---|---|---|---|---|---|---|" + ("---|" if extra else ""))
        for name, row in rows.items():
            notes = f" {notes_text(row)} |" if extra else ""
            lines.append(
                f"| {label(name)} | {fmt_s(row.get('median_s'))} | {fmt_s(row.get('min_s'))} "
                f"| {fmt_ratio(row.get('ratio'))} | {fmt_mib(row.get('peak_mib'))} "
                f"| {row['reps_ok']} | {status_text(row)} |{notes}"
            )
            if row["status"] in ("error", "not_implemented") and row.get("error"):
                message = " ".join(str(row["error"]).split())[:300]
                errors.append(f"- {key} / {label(name)}: {row.get('error_type')}: {message}")
    if errors:
        lines += ["", "## Failures", "", *errors]
    lines += ["", "## Method", "", *METHOD]
    if pipeline:
        lines += PIPELINE_METHOD
    if any(workload(k).rtt_ms is not None for k in summary):
        lines += [line.format(connect_rtts=CONNECT_RTTS) for line in RTT_METHOD]
    lines.append("")
    return "\n".join(lines)


def pipeline_summary(pipeline: dict[str, dict[str, dict[str, Any]]]) -> list[str]:
    """The W8-W10 summary (every entry) and the issue targets."""
    lines = ["", "## Pipelines (W8-W10)", ""]
    lines += [
        "Median seconds; ratio = median / median of the workload's first dataset_kit entry",
        "(>1: dataset_kit is faster).",
        "",
        "| workload | contender | median s | ratio to dataset_kit | status | notes |",
        "|---|---|---|---|---|---|",
    ]
    for key, rows in pipeline.items():
        for name, row in rows.items():
            lines.append(
                f"| {key} | {label(name)} | {fmt_s(row.get('median_s'))} "
                f"| {fmt_ratio(row.get('ratio'))} | {status_text(row)} | {notes_text(row)} |"
            )
    lines += rtt_curve(pipeline)
    targets = targets_for(list(pipeline))
    if not targets:
        return lines
    lines += [
        "",
        "### Issue targets",
        "",
        "speed-up = peer median / dataset_kit median, measured in this run.",
        "",
        "| workload | dataset_kit | peer | speed-up | goal | met |",
        "|---|---|---|---|---|---|",
    ]
    for target in targets:
        rows = pipeline[target.key]
        speed = speedup(rows.get(target.entry), rows.get(target.peer))
        if target.at_least is None:
            met = "-"
        elif speed is None:
            met = "n/a"
        else:
            met = "yes" if speed >= target.at_least else "**no**"
        goal = target.goal
        if target.at_least is not None:
            goal += f" (speed-up >= {target.at_least:.2f})"
        lines.append(
            f"| {target.key} | {label(target.entry)} | {label(target.peer)} "
            f"| {fmt_ratio(speed)} | {goal} | {met} |"
        )
    return lines


def rtt_curve(pipeline: dict[str, dict[str, dict[str, Any]]]) -> list[str]:
    """Each Azurite workload run at several round trips (``-rtt<N>``) as one table: every
    entry's median by round trip, then the issue targets' speed-ups by round trip."""
    curves: dict[str, dict[float | None, str]] = {}
    for key in pipeline:
        plain, rtt = split_rtt(key)
        if WORKLOADS[plain].azurite:
            curves.setdefault(plain, {})[rtt] = key
    curves = {k: v for k, v in curves.items() if any(rtt is not None for rtt in v)}
    if not curves:
        return []
    lines = [
        "",
        "### Azure round-trip curve",
        "",
        "The Azurite workloads again with the timed operation going through a proxy that adds",
        "the round trip of a network (see the method notes); direct = no proxy. Median",
        "seconds by added round-trip time, then speed-up = peer median / dataset_kit median.",
    ]
    for plain, keys in curves.items():
        rtts = sorted(keys, key=lambda r: -1.0 if r is None else r)
        heads = ["direct" if r is None else f"RTT {r:g} ms" for r in rtts]
        lines += ["", f"{plain}:", ""]
        lines.append("| entry | " + " | ".join(heads) + " |")
        lines.append("|---|" + "---|" * len(heads))
        for entry in pipeline[keys[rtts[0]]]:
            cells = []
            for rtt in rtts:
                row = pipeline[keys[rtt]].get(entry, {})
                ok = row.get("status") == "ok"
                cells.append(fmt_s(row.get("median_s")) if ok else status_text(row))
            lines.append(f"| {label(entry)} | " + " | ".join(cells) + " |")
        for target in targets_for([plain]):
            cells = []
            for rtt in rtts:
                rows = pipeline[keys[rtt]]
                cells.append(fmt_ratio(speedup(rows.get(target.entry), rows.get(target.peer))))
            goal = "" if target.at_least is None else f" (goal >= {target.at_least:g}x)"
            name = f"speed-up of {label(target.entry)} over {label(target.peer)}{goal}"
            lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return lines


def speedup(mine: dict[str, Any] | None, peer: dict[str, Any] | None) -> float | None:
    """peer median / mine median, when both are ok."""
    if not mine or not peer or mine.get("status") != "ok" or peer.get("status") != "ok":
        return None
    result: float = peer["median_s"] / mine["median_s"]
    return result


METHOD = [
    "- Every measurement runs in a fresh subprocess (imports, input loading and setup untimed);",
    "  `time.perf_counter()` brackets the operation only. Contenders alternate round-robin",
    "  within each repetition; the table shows the median and minimum over repetitions.",
    "- Peak MiB: the process's RSS high-water mark (VmHWM) during the operation minus the",
    "  RSS just before it (VmHWM is reset via /proc/self/clear_refs after loading the",
    "  input), i.e. the extra memory the operation needed. Read results count; input data",
    "  does not. (ru_maxrss is not used: after fork+exec it includes the parent's RSS.)",
    "- Prefault (see 'prefault' above): just before the clock starts, each child touches",
    "  and frees that much memory (more once a measurement of the workload peaked higher),",
    "  so the operation's allocations reuse memory the VM guest holds. Without it, memory",
    "  the guest handed back to its host costs 0.02-2.5 s per GiB to touch again, at",
    "  random, which decided W2 (1.2-1.4 GiB per read).",
    "- Input: the same deterministic data for everyone, generated once; each contender gets",
    "  it in its native format (see 'input' above). All reads end in a pandas DataFrame.",
    "- Reads (W2, W3, W5-read) include opening the dataset from its path. W4 appends to a",
    "  fresh copy of the W1 dataset. W7 setup: write the blobs, overwrite the dataset so",
    "  they become unreferenced, sync (a GC deletes blobs written back long ago, and",
    "  unlinking a never-written-back file is cheaper); the GC alone is timed. W7 runs the",
    "  GC that lists the dataset (dataset_kit's default, deltalake `vacuum(full=True)`,",
    "  plateau's only one); W7-lite the one that reads only the metadata (dataset_kit",
    "  `scan=False, expire=True`, deltalake's default `vacuum()`).",
    "- Results are verified: row counts (W1, W4, W5-write), row count + product_id sum",
    "  (+ dates and store_ids for W3) for reads, partition count for W5-open, deleted data",
    "  files and remaining rows for W7/W7-lite. A wrong result is an error, not a time.",
    "- The page cache is warm (datasets were just written). After a failure the remaining",
    "  repetitions of that contender/workload are skipped.",
]

PIPELINE_METHOD = [
    "- W6: each contender's own W1 dataset (raw dask reads pyarrow's hive directory) is",
    "  rewritten partitioned on `store_id` into a new directory. Cluster entries start a",
    "  2-worker LocalCluster (processes, 1 thread each, default memory limits), warmed up",
    "  untimed; their workers' summed RSS is sampled every 0.2 s (note). Streaming entries",
    "  run in the measured process. Verified: rows, product_id sum, columns and the number",
    "  of `store_id=` directories; notes give the file count and size spread.",
    "- W8: each contender first writes the W8 dataset itself (untimed, partitioned on",
    "  `part`); timed: planning plus computing the per-partition function and writing the",
    "  target dataset (partitioned on `part`). The `cluster` variants start a 2-worker",
    "  LocalCluster (processes, 1 thread each) and warm it up (workers import the libraries",
    "  and run one task) before the clock starts; that start-up is a note, not timed. Their",
    "  peak MiB is the client process only (the work happens in the workers). Verified:",
    "  rows, product_id sum, columns and partition count of the target.",
    "- W9: each contender writes its garbage dataset once (untimed): the W9 blobs as one",
    "  partition each, then an overwrite with 1 partition. Each repetition GCs a fresh copy",
    "  (local: a directory copy; Azurite: uploaded to a new container, untimed).",
    "  dataset_kit: `dk.pipelines.garbage_collect(grace_period=0, keep_versions=1)` on the",
    "  local threaded scheduler; plateau: `garbage_collect_dataset` (Azurite: minimalkv's",
    "  `HAzureBlockBlobStore`); deltalake: `vacuum(retention_hours=0)` (local only).",
    "  Verified: deleted data files and remaining rows.",
    "- W10: a dataset_kit dataset (written untimed) is backed up to an empty directory or",
    "  a new Azurite container. dataset_kit: `dk.pipelines.backup(...)` on the local",
    "  threaded scheduler; naive: a sequential `target.put(key, source.get(key))` loop over",
    "  the same dataset_kit store objects. `-incr`: the source is a copy of the base, backed",
    "  up once by the same contender (untimed), then 1 partition is appended (untimed) and",
    "  the second backup is timed. Verified: rows and product_id sum read back from the",
    "  target, and the number of data blobs copied.",
    "- Azurite (`--azurite`): every measurement starts its own in-memory emulator on this",
    "  machine (untimed; one emulator for the whole run slowed down and then hung). It",
    "  shares the 2 CPUs with the client, so its request rate (tens to ~100 requests/s),",
    "  not network latency, bounds those workloads.",
]

RTT_METHOD = [
    "- `-rtt<N>` entries (`--azurite-rtt-ms`): the same Azurite workload (setup, entries,",
    "  contenders and checks unchanged), but the timed operation reaches Azurite through",
    "  `benchmarks/latency_proxy.py`, a TCP proxy in its own process that delivers every",
    "  chunk N/2 ms after it arrived, in each direction (a queue per connection and",
    "  direction: throughput is kept, delays do not add up along a stream), and holds a new",
    "  connection's first bytes for {connect_rtts:g} more round trips (TCP + TLS 1.3",
    "  handshakes; Azurite here speaks plain HTTP). It models the network round trip to a",
    "  real Azure region (a few ms from inside the region, tens of ms from outside): a",
    "  sequential request loop pays requests x RTT, parallel or batched requests overlap.",
    "  It does not model the service: the server CPU is still the emulator's (one",
    "  single-threaded process sharing this machine's CPUs with the client and the proxy,",
    "  where real Azure scales out), and there is no throttling or bandwidth limit. Setup",
    "  (uploads, the first backup of `-incr`) and checks go to Azurite directly. RTT 0 is",
    "  the proxy alone: its difference to the direct row is the proxy's own overhead. The",
    "  notes give the connections the timed operation opened through the proxy.",
]
