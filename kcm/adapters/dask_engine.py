"""``kcm score --engine dask``: the table's partitions answered on a Dask cluster (distributed's
scheduler; a local cluster of worker processes by default, or the scheduler at ``address``).
Each partition is answered and written by the worker that holds it (``kcm.scoring.write_part``),
so nothing but the partitions' figures comes back to this process."""

from __future__ import annotations

import dataclasses
import logging
import math
import os
from typing import Any

from kcm.scoring import ScoreJob, report_progress, write_part

log = logging.getLogger(__name__)


class DaskEngine:
    """``workers``: processes of the local cluster (default: the cores), one thread each."""

    def __init__(self, address: str | None = None, workers: int | None = None) -> None:
        self.address = address
        self.workers = workers

    def _client(self) -> tuple[Any, Any]:
        from dask.distributed import Client, LocalCluster

        if self.address:
            return Client(self.address), None
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

        client, cluster = self._client()
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
