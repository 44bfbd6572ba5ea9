"""``kcm score --engine dask``: the table's partitions answered on a Dask cluster (distributed's
scheduler; a local cluster of worker processes by default, or the scheduler at ``address``).
Each partition is answered and written by the worker that holds it (``kcm.scoring.write_part``),
so nothing but the partitions' figures comes back to this process."""

from __future__ import annotations

import dataclasses
import logging
import math
import os
import threading
from typing import Any

from kcm.scoring import Engine, ScoreJob, report_progress, write_part

log = logging.getLogger(__name__)


class DaskEngine(Engine):
    """``workers``: processes of the local cluster (default: the cores), one thread each."""

    def start(self) -> None:
        """Connect, or start the local cluster, in the background (``run`` waits for it)."""
        box: dict[str, Any] = {}

        def connect() -> None:
            try:
                box["client"] = self._client()
            except BaseException as err:  # raised again by run
                box["error"] = err

        self._starting = (threading.Thread(target=connect, daemon=True), box)
        self._starting[0].start()

    def abort(self) -> None:
        """Close what ``start`` opened (the job stopped before ``run``)."""
        if hasattr(self, "_starting"):
            self._starting[0].join()
            client, cluster = self._starting[1].get("client", (None, None))
            if client is not None:
                client.close()
            if cluster is not None:
                cluster.close()

    def _connected(self) -> tuple[Any, Any]:
        if not hasattr(self, "_starting"):
            self.start()
        thread, box = self._starting
        thread.join()
        if "error" in box:
            raise box["error"]
        return box["client"]

    def _client(self) -> tuple[Any, Any]:
        from dask.distributed import Client, LocalCluster

        if self.address:
            return Client(self.address), None
        import dask

        # distributed's workers start with MALLOC_TRIM_THRESHOLD_=65536, which turns off
        # glibc's adaptive mmap threshold: every large temporary array is then mapped and
        # unmapped afresh (page faults on each). Measured on 1,000,000 digits rows: 67,000
        # rows/s per worker with it, 87,000 without (one process alone: 107,000). One thread
        # each (OMP/MKL/OpenBLAS), as distributed sets.
        environ = dict(dask.config.get("distributed.nanny.pre-spawn-environ"))
        environ.pop("MALLOC_TRIM_THRESHOLD_", None)
        with dask.config.set(
            {
                "distributed.nanny.pre-spawn-environ": environ,
                "distributed.worker.multiprocessing-method": "forkserver",
            }
        ):
            _preload_forkserver()
            cluster = LocalCluster(
                n_workers=self.workers or os.cpu_count() or 1,
                threads_per_worker=1,
                processes=True,
                dashboard_address=None,
            )
        return Client(cluster), cluster

    def run(self, job: ScoreJob) -> list[dict[str, Any]]:
        import dask
        from dask.distributed import as_completed

        client, cluster = self._connected()
        try:
            frame = read(job.source, job.partition_rows)
            scorer = job.scorer if self.address else dataclasses.replace(job.scorer, threads=1)
            parts = frame.to_delayed()
            log.info(
                "dask: %d partitions on %d workers (%s)",
                len(parts),
                len(client.scheduler_info()["workers"]),
                client.dashboard_link if self.address else "local cluster",
            )
            todo = [
                dask.delayed(write_part)(scorer, part, job.out, i, job.fmt)
                for i, part in enumerate(parts)
                if i not in job.done
            ]
            done: list[dict[str, Any]] = []
            for future in as_completed(client.compute(todo)):
                done.append(future.result())
                report_progress(done, done[-1]["part"], len(todo))
            return sorted(done, key=lambda d: d["part"])
        finally:
            client.close()
            if cluster is not None:
                cluster.close()


#: imported once by the fork server the workers start from (each worker: ~2.5 s less)
PRELOAD = (
    "torch",
    "pandas",
    "pyarrow.parquet",
    "sklearn",
    "dask.dataframe",
    "kcm.scoring",
    "kcm.steps.systems",
)


def _preload_forkserver() -> None:
    """Workers start from a fork server that has already imported what answering needs."""
    from distributed.utils import get_mp_context

    ctx = get_mp_context()  # distributed's own preload list first, then ours
    ctx.set_forkserver_preload(["distributed", "dask", *PRELOAD])


def read(source: str, partition_rows: int) -> Any:
    """A Dask frame of the table, cut into partitions of about ``partition_rows`` rows (CSV:
    byte blocks sized from the first rows; Parquet: row groups, split where larger)."""
    import dask.dataframe as dd
    import fsspec

    if source.lower().endswith((".parquet", ".pq")):
        import pyarrow.parquet as pq

        with fsspec.open(source, "rb") as fh:
            rows = pq.ParquetFile(fh).metadata.num_rows
        frame = dd.read_parquet(source, split_row_groups=True)
        want = max(1, math.ceil(rows / partition_rows))
        return frame.repartition(npartitions=want) if frame.npartitions < want else frame
    with fsspec.open(source, "rb") as fh:
        head = fh.read(1 << 20)
    lines = max(1, head.count(b"\n") - 1)
    per_row = max(1.0, len(head) / lines)
    return dd.read_csv(source, blocksize=int(per_row * partition_rows))
