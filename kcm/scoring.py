"""Scoring a table with a workspace's champion (``kcm score``), on an engine: this process
(``local``), a Dask cluster (``dask``: a local one by default, or a scheduler's address) or
Spark through MLflow's ``spark_udf`` (``spark``). Engines are rows of
``kcm.registry.ENGINES``.

Every engine cuts the table into partitions and answers each with the champion's routing
applied row by row (``answer_frame``: the same answers as the registered pyfunc), writing
``answer``, ``confidence`` (C_x), ``answered_by`` and ``cost`` beside the columns asked to be
kept. The large-model calls of every worker go through the workspace's answer store (an answer
bought once is never bought again, by any worker or a re-run), its spend record (the serving
caps hold across workers) and its rate-limit clocks: ``state/*.sqlite``, shared by every
process that reaches the workspace's folder (a real cluster: a shared file system). What each
partition asked is appended to ``state/scores/<job>.jsonl``, so the requests are counted once.

A part is written under a temporary name and renamed, so a killed job leaves whole parts only;
run again with the same output, it writes only the parts that are missing (the output's
``_job.json`` names the job; another job's output is refused).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import re
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from kcm.data.batch import batch_from_frame, names_of
from kcm.errors import DataError, KCMError
from kcm.failpoints import reach

log = logging.getLogger(__name__)

_PART = re.compile(r"part-(\d{5})\.(?:parquet|csv)")

#: the columns every engine writes after the kept ones
ANSWERS = ("answer", "confidence", "answered_by", "cost")


def answer_frame(
    system: Any, df: pd.DataFrame, keep: tuple[str, ...] = (), batch: Any = None
) -> pd.DataFrame:
    """``df``'s rows answered by ``system`` (routing applied): the ``keep`` columns, then
    answer, confidence (C_x), answered_by and cost. ``batch``: ``df`` already checked and
    converted (``batch_from_frame``)."""
    task = system.task
    missing = [c for c in keep if c not in df.columns]
    if missing:
        raise DataError(f"--keep {missing}: not columns of the table ({list(df.columns)[:12]})")
    if batch is None:
        frame = df if task.label_col in df.columns else df.assign(**{task.label_col: None})
        batch = batch_from_frame(frame.reset_index(drop=True), task, "score")
    p = system.predict(batch)
    out = pd.DataFrame({c: df[c].to_numpy() for c in keep})
    out["answer"] = names_of(task, p.answer)
    out["confidence"] = p.confidence.astype(float)
    out["answered_by"] = p.answered_by.astype(str)
    out["cost"] = p.cost.astype(float) if p.cost is not None else 0.0
    return out


def record_usage(workdir: str | Path, job: str, ledger: dict[str, Any]) -> None:
    """Append what one partition asked the large model (its session's ledger) to the job's
    usage file: one line, written with one ``write`` (whole lines from concurrent workers)."""
    path = Path(workdir) / "state" / "scores" / f"{job}.jsonl"
    path.parent.mkdir(parents=True, exist_ok=True)
    line = json.dumps({k: ledger.get(k, 0) for k in ("calls", "cache_hits", "cost", "refused")})
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, (line + "\n").encode())
    finally:
        os.close(fd)


def usage(workdir: str | Path, job: str) -> dict[str, float]:
    """The job's large-model requests, answers from the store and cost, summed."""
    path = Path(workdir) / "state" / "scores" / f"{job}.jsonl"
    total = {"calls": 0.0, "cache_hits": 0.0, "cost": 0.0, "refused": 0.0}
    if path.is_file():
        for line in path.read_text().splitlines():
            if line.strip():
                for k, v in json.loads(line).items():
                    total[k] += float(v or 0)
    return total


_SYSTEMS: dict[tuple[str, ...], Any] = {}
_BOUND: dict[tuple[str, int], Any] = {}
_LIMITS: list[Any] = []
_ANSWERING = threading.Lock()
_JOB = re.compile(r"[A-Za-z0-9_-]{1,64}")


def answer_for_workspace(
    system: Any,
    workdir: str | Path,
    job: str,
    df: pd.DataFrame,
    keep: tuple[str, ...] = (),
    cfg: Any = None,
) -> pd.DataFrame:
    """``answer_frame`` with the large model a paying session of the workspace at ``workdir``:
    its answer store, its spend caps (``cfg``'s, default the system's own settings) counted
    for the run ``job``, its rate-limit clocks; what was asked is appended to the job's usage."""
    import copy

    from kcm.models.cache import ResponseCache
    from kcm.steps.systems import paying
    from kcm.workspace import Workspace

    if not _JOB.fullmatch(job):
        raise KCMError(f"job {job!r}: give letters, digits, '-' or '_' (at most 64)")
    ws = Workspace(workdir)
    key = (str(ws.root), id(system))
    if key not in _BOUND:
        base = system.large
        store = Path(ws.cache_dir) / "large_cache.sqlite"
        if str(getattr(base.cache, "path", "")) != str(store):  # a model from MLflow: its own
            base = copy.copy(base)
            base.cache = ResponseCache(store)
        _BOUND[key] = base
    with _ANSWERING:  # the system is shared by this process's threads: one session at a time
        saved = system.large
        system.large = paying(ws, cfg or system.cfg, "serve", _BOUND[key], run=job)
        try:
            out = answer_frame(system, df, keep)
            record_usage(ws.root, job, system.large.ledger.snapshot())
        finally:
            system.large = saved
    return out


@dataclass(frozen=True)
class Scorer:
    """Answers frames in any process: holds plain data (the workspace's folder, the settings,
    the champion's version, the job's id) and loads the system once per process, its large
    model a paying session of the workspace (answer store, spend caps, rate limits)."""

    workdir: str
    settings: dict[str, Any]
    version: int
    job: str
    keep: tuple[str, ...] = ()
    threads: int | None = None  # torch threads per process (workers of a cluster: 1)

    def system(self) -> Any:
        key = (self.workdir, str(self.version), json.dumps(self.settings, sort_keys=True))
        if key not in _SYSTEMS:
            from kcm.config import config_from_dict
            from kcm.env import apply_offline_env
            from kcm.steps.systems import system_at
            from kcm.workspace import Workspace

            apply_offline_env()
            if self.threads:  # torch's and the BLAS libraries' (numpy, scikit-learn) pools
                import torch
                from threadpoolctl import threadpool_limits

                torch.set_num_threads(self.threads)
                _LIMITS.append(threadpool_limits(self.threads))  # kept for the process
            cfg = config_from_dict(self.settings, "scoring settings")
            _SYSTEMS[key] = system_at(Workspace(self.workdir), cfg, self.version)
        return _SYSTEMS[key]

    def __call__(self, df: pd.DataFrame) -> pd.DataFrame:
        from kcm.config import config_from_dict

        cfg = config_from_dict(self.settings, "scoring settings")
        return answer_for_workspace(self.system(), self.workdir, self.job, df, self.keep, cfg)


def write_part(scorer: Scorer, df: pd.DataFrame, out: str, index: int, fmt: str) -> dict[str, Any]:
    """Answer one partition and write it as ``part-<index>`` (temporary name, then renamed:
    a killed job leaves whole parts only). Returns its figures."""
    import fsspec

    t0 = time.perf_counter()
    answered = scorer(df)
    fs, root = fsspec.core.url_to_fs(out)
    final = f"{root.rstrip('/')}/part-{index:05d}.{fmt}"
    # "_": Parquet and CSV dataset readers skip it, so a torn part never reads as answers
    tmp = f"{root.rstrip('/')}/_tmp-{os.getpid()}-part-{index:05d}.{fmt}"
    with fs.open(tmp, "wb") as fh:
        if fmt == "parquet":
            answered.to_parquet(fh, index=False)
        else:
            answered.to_csv(fh, index=False)
    fs.mv(tmp, final)
    reach("score:part-written")  # the fault suite kills a job here: a re-run resumes it
    by = answered["answered_by"].value_counts()
    return {
        "part": index,
        "rows": len(answered),
        "seconds": time.perf_counter() - t0,
        "answered_by": {str(k): int(v) for k, v in by.items()},
        "cost": float(answered["cost"].sum()),
    }


@dataclass
class ScoreJob:
    """What to score, where to write it, and how to cut it."""

    source: str
    out: str
    scorer: Scorer
    fmt: str = "parquet"
    partition_rows: int = 50_000
    model_uri: str | None = None  # the registered champion (the Spark engine serves it)
    tracking_uri: str | None = None
    done: set[int] = field(default_factory=set)  # parts a previous run of the job wrote


def job_id(source: str, out: str, version: int, settings: dict[str, Any], cut: Any) -> str:
    """The same input (its size and modification time), output, champion, settings and cut
    (engine, rows per part, kept columns, format): the same job (a re-run resumes it)."""
    import fsspec

    fs, path = fsspec.core.url_to_fs(source)
    try:
        info = fs.info(path)
    except FileNotFoundError:
        raise DataError(f"{source} does not exist: give a CSV or Parquet file or URL") from None
    stamp = [source, info.get("size"), str(info.get("mtime") or info.get("LastModified") or "")]
    blob = json.dumps([stamp, out, version, settings, cut], sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:12]


def prepare_output(job: ScoreJob, engine: str) -> None:
    """Claim the output folder for this job: a new one, or this job's own (resumed); another
    job's output is refused, one line naming both."""
    import fsspec

    fs, root = fsspec.core.url_to_fs(job.out)
    manifest = f"{root.rstrip('/')}/_job.json"
    mine = {"job": job.scorer.job, "source": job.source, "version": job.scorer.version}
    if fs.exists(manifest):
        theirs = json.loads(fs.cat_file(manifest))
        if theirs.get("job") != mine["job"]:
            raise KCMError(
                f"{job.out} holds the answers of another scoring job ({theirs.get('source')}, "
                f"champion v{theirs.get('version')}, job {theirs.get('job')}): write to a new "
                "--out, or remove that folder"
            )
        names = fs.ls(root, detail=False)
        for torn in (p for p in names if Path(p).name.startswith("_tmp-")):
            fs.rm(torn)  # a part a killed run was writing: written again
        whole = (_PART.fullmatch(Path(p).name) for p in names)
        job.done = {int(m.group(1)) for m in whole if m}
        if engine != "spark" and job.done:
            log.info("resuming job %s: %d part(s) already written", mine["job"], len(job.done))
        return
    fs.makedirs(root, exist_ok=True)
    with fs.open(manifest, "w") as fh:
        fh.write(json.dumps({**mine, "engine": engine}, indent=1))


class Engine:
    """A scoring engine (a row of ``kcm.registry.ENGINES``): ``start`` may begin connecting
    while the job is prepared, ``run`` answers and writes every part (returning each part's
    figures), ``abort`` closes what ``start`` opened when the job stops before ``run``."""

    def __init__(self, address: str | None = None, workers: int | None = None) -> None:
        self.address = address
        self.workers = workers

    def start(self) -> None:
        """Nothing to start before ``run``."""

    def abort(self) -> None:
        """Nothing to stop before ``run``."""

    def run(self, job: ScoreJob) -> list[dict[str, Any]]:
        raise NotImplementedError


class LocalEngine(Engine):
    """One process: the table read part by part (``partition_rows`` rows), each answered and
    written in turn."""

    def run(self, job: ScoreJob) -> list[dict[str, Any]]:
        # one torch thread: on these small per-row operations more threads are slower
        # (400,000 digits rows: 128,000 rows/s on 1 thread, 103,000 on 2, 2-core machine);
        # more cores are put to work by more processes (--engine dask)
        scorer = dataclasses.replace(job.scorer, threads=job.scorer.threads or 1)
        done = []
        for i, part in enumerate(read_parts(job.source, job.partition_rows)):
            if i in job.done:
                continue
            done.append(write_part(scorer, part, job.out, i, job.fmt))
            report_progress(done, i)
        return done


def read_parts(source: str, rows: int) -> Any:
    """The table at ``source`` (CSV or Parquet, a path or fsspec URL) in frames of ``rows``."""
    if source.lower().endswith((".parquet", ".pq")):
        import fsspec
        import pyarrow.parquet as pq

        with fsspec.open(source, "rb") as fh:
            for rb in pq.ParquetFile(fh).iter_batches(batch_size=rows):
                yield rb.to_pandas()
        return
    yield from pd.read_csv(source, chunksize=rows)


def report_progress(done: list[dict[str, Any]], last: int, total: int | None = None) -> None:
    rows = sum(d["rows"] for d in done)
    secs = sum(d["seconds"] for d in done)
    of = f"/{total}" if total else ""
    log.info(
        "scored part %d (%d%s parts done): %d rows, %.0f rows/s per worker",
        last,
        len(done),
        of,
        rows,
        rows / max(secs, 1e-9),
    )


def summarize(parts: list[dict[str, Any]], seconds: float, used: dict[str, float]) -> dict:
    by: dict[str, int] = {}
    for p in parts:
        for k, v in p.get("answered_by", {}).items():
            by[k] = by.get(k, 0) + int(v)
    rows = int(sum(p["rows"] for p in parts))
    return {
        "rows": rows,
        "parts": len(parts),
        "seconds": round(seconds, 2),
        "rows_per_s": round(rows / max(seconds, 1e-9), 1),
        "answered_by": by,
        "large_requests": int(used["calls"]),
        "answers_from_store": int(used["cache_hits"]),
        "refused_by_budget": int(used["refused"]),
        "cost": float(np.round(used["cost"], 6)),
    }
