"""One continual-learning cycle as plain functions over a Workspace.

ingest → validate → route → call_large (in chunks) → learn → evaluate → register.

Each step reads what it needs from the workspace and writes what it produces there, so the
same functions run in-process (``run_pipeline``, ``kcm run --in-process``) and as Prefect
tasks (``flows/``), where each may run in another thread or process and a crashed cycle
resumes: large-model answers are committed to ``state/large_cache.sqlite`` chunk by chunk,
and nothing is visible to the next cycle until ``register`` rewrites the ledger.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from kcm.config import KCMConfig
from kcm.data.batch import Batch, Task, batch_from_frame
from kcm.data.sources import read_table
from kcm.data.stream import DataBundle, build_bundle
from kcm.errors import DataError, KCMError
from kcm.evaluation.curves import group_tradeoff_curve, reliability, tradeoff_curve
from kcm.evaluation.metrics import AccuracyMatrix, PerClassAccuracy, auroc
from kcm.evaluation.report import view_metrics
from kcm.models.large import LargeModel, make_large_model
from kcm.models.small import SmallModel
from kcm.persist import _load_tensors, _save_tensors, load_system, save_system
from kcm.system import CollaborationSystem, Predictions
from kcm.workspace import Workspace, atomic_write_text

log = logging.getLogger(__name__)
BATCH_SUFFIXES = {".csv", ".parquet", ".pq"}


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


# -- per-process caches (a task in another process simply loads again) ---------------
_LARGE: dict[str, LargeModel] = {}


def large_model(ws: Workspace) -> LargeModel:
    """The workspace's large model, loaded once per process (its head is fitted once)."""
    key = str(ws.root)
    if key not in _LARGE:
        _LARGE[key] = load_system(ws.system_dir(0), cache_dir=ws.cache_dir).large
    return _LARGE[key]


def current_system(ws: Workspace, version: int | None = None) -> CollaborationSystem:
    """The latest learned system (or ``version``): what learning continues from."""
    path = ws.current_system() if version is None else ws.system_dir(version)
    return load_system(path, large=large_model(ws))


def serving_system(ws: Workspace) -> CollaborationSystem:
    """The champion: what answers traffic."""
    return load_system(ws.serving_system(), large=large_model(ws))


def task_of(ws: Workspace) -> Task:
    meta = json.loads((ws.eval_dir / "meta.json").read_text())
    return Task.from_dict(meta["task"])


def eval_meta(ws: Workspace) -> dict[str, Any]:
    return json.loads((ws.eval_dir / "meta.json").read_text())


# -- bootstrap and feed ----------------------------------------------------------------
def bootstrap(cfg: KCMConfig, ws: Workspace, bundle: DataBundle | None = None) -> dict[str, Any]:
    """Create the workspace once: fit the large model's head and the featurizer on the
    pretraining split, save system v0000 (untrained) and the held-out evaluation views."""
    if ws.exists():
        return {"created": False, "root": str(ws.root)}
    ws.make_dirs()
    t0 = time.perf_counter()
    bundle = bundle or build_bundle(cfg)
    task = bundle.task
    large = make_large_model(cfg, task, cache_dir=ws.cache_dir)
    large.fit(bundle.pretrain)
    system = CollaborationSystem(task, cfg, large).setup(bundle.pretrain)
    if ws.system_dir(0).exists():  # a bootstrap that crashed before writing the ledger
        shutil.rmtree(ws.system_dir(0))
    save_system(system, ws.system_dir(0))
    for name, view in (("traffic", bundle.traffic), ("balanced", bundle.test)):
        view.to_frame(task).to_parquet(ws.eval_dir / f"{name}.parquet", index=False)
    ranges = None
    if task.kind == "numeric":
        x = np.asarray(bundle.pretrain.inputs, dtype=float)
        ranges = {
            c: (float(x[:, j].min()), float(x[:, j].max()))
            for j, c in enumerate(task.feature_cols or ())
        }
    meta = {
        "task": task.to_dict(),
        "groups": {str(c): g for c, g in bundle.groups.items()},
        "data": bundle.summary(),
        "dataset": cfg.data.dataset,
        "class_counts": [int(n) for n in bundle.class_counts],
        "feature_ranges": ranges,
        "large_model": large.describe(),
    }
    atomic_write_text(ws.eval_dir / "meta.json", json.dumps(meta, indent=1))
    ledger = ws.load_ledger()
    ledger.update(current=0, created_at=_now(), dataset=cfg.data.dataset)
    ws.save_ledger(ledger)
    log.info(
        "workspace %s created in %.1fs (large model %s fitted on %d samples)",
        ws.root,
        time.perf_counter() - t0,
        large.name,
        len(bundle.pretrain),
    )
    return {"created": True, "root": str(ws.root), "seconds": time.perf_counter() - t0}


def feed(
    cfg: KCMConfig, inbox: str | Path, batches: int | None = None, bundle: DataBundle | None = None
) -> list[str]:
    """Write the configured dataset's stream batches into ``inbox`` as CSV files
    (``batch-000.csv`` ...); labels the learner may not see are left empty."""
    import fsspec

    bundle = bundle or build_bundle(cfg)
    fs, root = fsspec.core.url_to_fs(str(inbox))
    fs.makedirs(root, exist_ok=True)
    written = []
    for i, b in enumerate(bundle.stream[: batches or len(bundle.stream)]):
        path = f"{root.rstrip('/')}/batch-{i:03d}.csv"
        with fs.open(path, "w") as fh:
            b.to_frame(bundle.task).to_csv(fh, index=False)
        written.append(path)
    return written


# -- ingest and validate -----------------------------------------------------------------
def ingest(ws: Workspace, cfg: KCMConfig | None = None) -> dict[str, list[str]]:
    """Move new files from the inbox to data/batches/ under stable names
    (``<seq>-<stem>-<sha8><suffix>``) and, with ``dvc.enabled``, version each with DVC
    (``dvc add`` + push to the remote; the md5 goes into the ledger). A file whose content was
    seen before is skipped with a log line and kept under data/batches/duplicates/. Returns
    new, skipped and pending names."""
    import fsspec

    fs, root = fsspec.core.url_to_fs(ws.inbox)
    ledger = ws.load_ledger()
    known = {v["sha256"]: k for k, v in ledger["batches"].items()}
    new, skipped = [], []
    if not fs.exists(root):
        fs.makedirs(root, exist_ok=True)
    entries = sorted(fs.ls(root, detail=True), key=lambda e: e["name"])
    for e in entries:
        src = e["name"]
        base = src.rstrip("/").rsplit("/", 1)[-1]
        if e.get("type") != "file" or base.startswith(".") or base.endswith(".tmp"):
            continue
        data = fs.cat_file(src)
        sha = hashlib.sha256(data).hexdigest()
        if sha in known:
            dup = ws.batches / "duplicates" / f"{_now().replace(':', '')}-{base}"
            dup.parent.mkdir(parents=True, exist_ok=True)
            dup.write_bytes(data)
            fs.rm(src)
            log.info(
                "skipping %s: same content as batch %s, already ingested (kept as %s)",
                base,
                known[sha],
                dup.name,
            )
            skipped.append(base)
            continue
        stem, dot, suffix = base.rpartition(".")
        stem, suffix = (stem, "." + suffix) if dot else (base, "")
        stable = f"{len(ledger['order']):04d}-{stem}-{sha[:8]}{suffix}"
        ws.batches.mkdir(parents=True, exist_ok=True)  # (empty folders are not versioned)
        dest = ws.batches / stable
        tmp = dest.with_name(f".{stable}.tmp")
        tmp.write_bytes(data)
        tmp.replace(dest)
        fs.rm(src)
        entry: dict[str, Any] = {
            "status": "ingested",
            "sha256": sha,
            "source": src,
            "ingested_at": _now(),
        }
        if cfg is not None and cfg.dvc.enabled:
            from kcm.adapters.dvc_store import version_file

            entry.update(version_file(ws.root, dest, cfg.dvc.remote, cfg.dvc.remote_name))
        ledger["batches"][stable] = entry
        ledger["order"].append(stable)
        known[sha] = stable
        new.append(stable)
        ws.save_ledger(ledger)  # commit each move at once: nothing is lost if we stop here
        log.info("ingested %s as %s", base, stable)
    pending = [n for n in ledger["order"] if ledger["batches"][n]["status"] == "ingested"]
    return {"new": new, "skipped": skipped, "pending": pending}


def _quarantine(ws: Workspace, name: str, report: Any) -> None:
    ws.quarantine.mkdir(parents=True, exist_ok=True)
    for suffix in ("", ".dvc"):  # the batch and its DVC record stay together
        src = ws.batches / f"{name}{suffix}"
        if src.exists():
            shutil.move(str(src), ws.quarantine / f"{name}{suffix}")
    atomic_write_text(ws.quarantine / f"{name}.report.json", json.dumps(report.to_dict(), indent=1))
    atomic_write_text(ws.quarantine / f"{name}.summary.md", report.summary())
    ledger = ws.load_ledger()
    ledger["batches"][name].update(status="quarantined", reason=report.reason, at=_now())
    ws.save_ledger(ledger)


def validate(cfg: KCMConfig, ws: Workspace, name: str) -> dict[str, Any]:
    """Validate one ingested batch with Great Expectations. A failing batch is moved to
    data/quarantine/ with its report (JSON and Markdown); bad rows within the tolerance are
    dropped and reported. Writes the accepted rows for the next steps."""
    from kcm.adapters.expectations import unreadable, validate_frame

    task = task_of(ws)
    path = ws.batches / name
    if path.suffix.lower() not in BATCH_SUFFIXES:
        report = unreadable(
            name,
            f"'{path.suffix or 'no suffix'}' is not a batch format: send .csv or .parquet files",
        )
        df = None
    else:
        try:
            df = read_table(path, str_cols=(task.label_col, task.eval_col))
        except DataError as err:
            report, df = unreadable(name, str(err)), None
        else:
            ranges = eval_meta(ws).get("feature_ranges")
            report = validate_frame(
                df,
                task,
                cfg.validation,
                name,
                {k: tuple(v) for k, v in ranges.items()} if ranges else None,
            )
    if report.decision == "quarantine" or df is None:
        _quarantine(ws, name, report)
        log.warning("batch %s quarantined: %s", name, report.reason)
        return {
            "ok": False,
            "batch": name,
            "reason": report.reason,
            "report": str(ws.quarantine / f"{name}.report.json"),
        }
    run = ws.run_dir(name)
    run.mkdir(parents=True, exist_ok=True)
    clean = df.drop(index=df.index[report.bad_rows]) if report.bad_rows else df
    if report.bad_rows:
        ws.quarantine.mkdir(parents=True, exist_ok=True)
        df.iloc[report.bad_rows].to_csv(ws.quarantine / f"{name}.dropped.csv", index=False)
        atomic_write_text(
            ws.quarantine / f"{name}.dropped.report.json", json.dumps(report.to_dict(), indent=1)
        )
        atomic_write_text(ws.quarantine / f"{name}.dropped.summary.md", report.summary())
        log.warning("batch %s: %s", name, report.reason)
    if report.new_classes:  # allowed by config: keep the rows, without their unknown label
        lab = clean[task.label_col]
        clean = clean.assign(**{task.label_col: lab.where(lab.isin(task.label_names), None)})
        log.warning(
            "batch %s: labels outside the label set kept as unlabeled rows: %s",
            name,
            report.new_classes[:10],
        )
    clean.reset_index(drop=True).to_parquet(run / "clean.parquet", index=False)
    atomic_write_text(run / "validation.json", json.dumps(report.to_dict(), indent=1))
    return {
        "ok": True,
        "batch": name,
        "n_rows": len(clean),
        "n_dropped": len(report.bad_rows),
        "decision": report.decision,
    }


def load_batch(ws: Workspace, name: str) -> Batch:
    task = task_of(ws)
    df = read_table(ws.run_dir(name) / "clean.parquet", str_cols=(task.label_col, task.eval_col))
    return batch_from_frame(df, task, name)


# -- route, call the large model, learn ----------------------------------------------------
def route(cfg: KCMConfig, ws: Workspace, name: str) -> dict[str, Any]:
    """Score the batch with the current system (judge and small model) and decide which
    samples go to the large model. Writes route.npz; returns the chunks for call_large."""
    system = serving_system(ws)
    batch = load_batch(ws, name)
    preds = system.predict(batch, call_large=False)
    arrays: dict[str, Any] = {
        "to_large": preds.to_large,
        "confidence": preds.confidence,
        "small_proba": preds.small_proba,
        "epsilon": np.array(preds.epsilon),
        "trained": np.array(system.trained_),
    }
    if preds.judge_proba is not None:
        arrays["judge_proba"] = preds.judge_proba
    np.savez_compressed(ws.run_dir(name) / "route.npz", **arrays)
    n_large = int(preds.to_large.sum())
    size = cfg.flow.large_chunk_size
    chunks = [[s, min(s + size, n_large)] for s in range(0, n_large, size)]
    return {
        "batch": name,
        "n": len(batch),
        "n_large": n_large,
        "epsilon": preds.epsilon,
        "chunks": chunks,
    }


def call_large(cfg: KCMConfig, ws: Workspace, name: str, start: int, end: int) -> dict[str, Any]:
    """Ask the large model about hard samples [start, end) of the batch (with the small
    model's hint). Answers are cached by input hash as they arrive; the chunk's outputs are
    written to large-<start>.npz."""
    r = np.load(ws.run_dir(name) / "route.npz", allow_pickle=False)
    idx = np.flatnonzero(r["to_large"])[start:end]
    batch = load_batch(ws, name)
    inputs = (
        batch.inputs[idx]
        if isinstance(batch.inputs, np.ndarray)
        else [batch.inputs[i] for i in idx]
    )
    hints = r["small_proba"][idx] if (cfg.large.hint and bool(r["trained"])) else None
    large = large_model(ws)
    before = large.ledger.snapshot()
    out = large.predict_proba(inputs, hints)
    np.savez_compressed(
        ws.run_dir(name) / f"large-{start:06d}.npz",
        idx=idx,
        raw=out.raw,
        answer=out.answer,
        ok=out.ok,
    )
    delta = large.ledger.since(before)
    failed = (
        [f for f in large.ledger.failed[-int(delta["failures"]) :]] if delta["failures"] else []
    )
    return {"batch": name, "start": start, "end": end, **delta, "errors": failed[:20]}


def assemble(ws: Workspace, name: str, system: CollaborationSystem, batch: Batch) -> Predictions:
    """The batch's answers before learning: the small model's where routed small, the large
    model's (hinted) where it answered, the small model's as fallback where it failed."""
    r = np.load(ws.run_dir(name) / "route.npz", allow_pickle=False)
    sp = r["small_proba"]
    label = sp.argmax(axis=1)
    final = sp.copy()
    raw = np.full_like(sp, np.nan)
    to_large = r["to_large"]
    answered_by = np.where(to_large, "large", "small").astype(object)
    done = np.zeros(len(batch), dtype=bool)
    for f in sorted(ws.run_dir(name).glob("large-*.npz")):
        c = np.load(f, allow_pickle=False)
        idx, ok = c["idx"], c["ok"]
        done[idx] = True
        raw[idx] = c["raw"]
        final[idx[ok]] = c["answer"][ok]
        label[idx[ok]] = c["answer"][ok].argmax(axis=1)
        answered_by[idx[~ok]] = "small-fallback"
    missing = to_large & ~done
    if missing.any():
        raise KCMError(
            f"batch {name}: {int(missing.sum())} hard samples have no large-model "
            f"answer yet: run call_large for every chunk before learning"
        )
    feats = system.featurize(batch)
    return Predictions(
        label=label,
        confidence=r["confidence"],
        to_large=to_large,
        answered_by=answered_by,
        small_proba=sp,
        large_raw=raw,
        final_proba=final,
        epsilon=float(r["epsilon"]),
        features=feats,
        judge_proba=r["judge_proba"] if "judge_proba" in r.files else None,
        large_failures=int((answered_by == "small-fallback").sum()),
    )


def _baseline_path(ws: Workspace, version: int) -> Path:
    return ws.state / "baseline" / f"v{version:04d}.safetensors"


def _load_baseline(ws: Workspace, system: CollaborationSystem, version: int) -> SmallModel:
    model = system.new_small(seed_offset=7)
    path = _baseline_path(ws, version)
    if path.is_file():
        meta = json.loads(path.with_suffix(".json").read_text())
        import scipy.sparse as sp

        n = meta["n_features"]
        model._init(sp.csr_matrix((1, n)) if meta["sparse"] else np.zeros((1, n), np.float32))
        assert model.net_ is not None
        model.net_.load_state_dict(_load_tensors(path))
        model.net_.eval()
        model._step = meta["step"]
    return model


def learn(cfg: KCMConfig, ws: Workspace, name: str) -> dict[str, Any]:
    """Distil the routed batch into the small model and retrain the judge; save the result
    as a new candidate version (not yet current). Also trains the labels-only baseline."""
    import torch

    from kcm.distill.losses import cross_entropy

    ledger = ws.load_ledger()
    base_version = int(ledger["current"])
    system = current_system(ws)
    batch = load_batch(ws, name)
    preds = assemble(ws, name, system, batch)
    report = system.learn(batch, preds)
    version = ws.next_version()
    save_system(system, ws.system_dir(version))
    baseline = _load_baseline(ws, system, base_version)
    keep = np.flatnonzero(batch.y >= 0)
    if len(keep):
        yt = torch.from_numpy(batch.y[keep])
        baseline.partial_fit(preds.features.small[keep], lambda z, rows: cross_entropy(z, yt[rows]))
    if baseline.net_ is not None:
        path = _baseline_path(ws, version)
        path.parent.mkdir(parents=True, exist_ok=True)
        _save_tensors(baseline.net_, path)
        path.with_suffix(".json").write_text(
            json.dumps(
                {
                    "n_features": baseline.n_features_,
                    "sparse": baseline.net_.sparse,
                    "step": baseline._step,
                }
            )
        )
    return {
        "batch": name,
        "version": version,
        "base_version": base_version,
        "train": report.__dict__,
    }


# -- evaluate and register ---------------------------------------------------------------
def _view(ws: Workspace, name: str, task: Task) -> Batch:
    df = read_table(ws.eval_dir / f"{name}.parquet", str_cols=(task.label_col,))
    return batch_from_frame(df, task, name)


def _few_mask(view: Batch, groups: dict[int, str]) -> np.ndarray:
    return np.array([groups.get(int(t)) == "few" for t in view.y_true], dtype=bool)


def _few_acc(label: np.ndarray, view: Batch, groups: dict[int, str]) -> float | None:
    few = _few_mask(view, groups)
    return float((label[few] == view.y_true[few]).mean()) if few.any() else None


def evaluate(cfg: KCMConfig, ws: Workspace, name: str, version: int) -> dict[str, Any]:
    """Score the cycle: the batch as answered before learning (prequential), and the
    candidate system on the held-out traffic and balanced views, with the baselines and the
    accuracy matrix row (forgetting)."""
    t0 = time.perf_counter()
    task = task_of(ws)
    meta = eval_meta(ws)
    groups = {int(k): v for k, v in meta["groups"].items()}
    ledger = ws.load_ledger()
    base = serving_system(ws)
    batch = load_batch(ws, name)
    pre = assemble(ws, name, base, batch)
    row = view_metrics(pre.label, batch.y_true, pre.to_large, groups)
    right = pre.small_proba.argmax(axis=1) == batch.y_true
    row.update(
        batch=name,
        cycle=len(ledger["cycles"]),
        epsilon=pre.epsilon,
        small_accuracy=float(right[batch.y_true >= 0].mean())
        if (batch.y_true >= 0).any()
        else None,
        judge_auroc=auroc(pre.confidence, right) if pre.judge_proba is not None else None,
        cascade_auroc=auroc(pre.small_proba.max(axis=1), right),
        large_failures=pre.large_failures,
        version=version,
    )
    cand = current_system(ws, version)
    baseline = _load_baseline(ws, cand, version)
    views: dict[str, Any] = {}
    per_class: dict[str, list[float | None]] = {}
    for vname in ("traffic", "balanced"):
        view = _view(ws, vname, task)
        p = cand.predict(view)
        m = view_metrics(p.label, view.y_true, p.to_large, groups)
        lo = cand.predict(view, route="large", use_hint=False)
        ca = cand.predict(view, route="cascade", target_rate=p.large_call_rate)
        so = (
            baseline.predict(cand.featurize(view).small)
            if baseline.is_fitted
            else np.zeros(len(view), int)
        )
        small_label = p.small_proba.argmax(axis=1)
        m["judge_auroc"] = auroc(p.confidence, small_label == view.y_true)
        m["curves"] = {
            "judge": tradeoff_curve(p.confidence, small_label, lo.label, view.y_true),
            "cascade": tradeoff_curve(
                p.small_proba.max(axis=1), small_label, lo.label, view.y_true
            ),
            "oracle": tradeoff_curve(
                (small_label == view.y_true).astype(float), small_label, lo.label, view.y_true
            ),
        }
        # Few-group accuracy against the view's overall large-call rate (judge threshold
        # sweep): the promotion gate compares two versions' tails at one rate with it
        m["few_curve"] = group_tradeoff_curve(
            p.confidence,
            small_label,
            lo.label,
            view.y_true,
            _few_mask(view, groups),
        )
        m["reliability"] = reliability(p.confidence, small_label == view.y_true)
        m["baselines"] = {
            "large_only": float((lo.label == view.y_true).mean()),
            "large_only_few": _few_acc(lo.label, view, groups),
            "small_only": float((so == view.y_true).mean()),
            "small_only_few": _few_acc(so, view, groups),
            "cascade": float((ca.label == view.y_true).mean()),
            "cascade_few": _few_acc(ca.label, view, groups),
        }
        views[vname] = m
        if vname == "balanced":
            pc = PerClassAccuracy(task.n_classes)
            pc.update(p.label, view.y_true)
            per_class["system"] = [None if np.isnan(a) else float(a) for a in pc.result()]
            pc = PerClassAccuracy(task.n_classes)
            pc.update(so, view.y_true)
            per_class["small_only"] = [None if np.isnan(a) else float(a) for a in pc.result()]
            pc = PerClassAccuracy(task.n_classes)
            pc.update(small_label, view.y_true)  # the distilled small model answering alone
            per_class["small"] = [None if np.isnan(a) else float(a) for a in pc.result()]
    classes = np.unique(batch.y_true[batch.y_true >= 0]).tolist()
    few = [c for c, g in groups.items() if g == "few"]
    matrices = {}
    for key, src in (
        ("matrix", "system"),
        ("matrix_small_only", "small_only"),
        ("matrix_small", "small"),
    ):
        m = AccuracyMatrix.from_dict(ledger.get(key) or {})
        m.add_task(classes)
        m.update(np.array([np.nan if a is None else a for a in per_class[src]], dtype=float))
        matrices[key] = m
    row.update(
        traffic=views["traffic"],
        balanced=views["balanced"],
        per_class=per_class["system"],
        forgetting=matrices["matrix"].summary(few),
        forgetting_small_only=matrices["matrix_small_only"].summary(few),
        forgetting_small=matrices["matrix_small"].summary(few),
        matrix_state={k: m.to_dict() for k, m in matrices.items()},
        eval_seconds=time.perf_counter() - t0,
    )
    return row


def cycle_plots(
    cfg: KCMConfig,
    ws: Workspace,
    name: str,
    report: dict[str, Any],
    system: CollaborationSystem | None = None,
) -> list[str]:
    """Draw the cycle's PNGs into ``state/runs/<batch>/plots/``: the accuracy vs large-call
    rate curve (threshold sweep on the traffic view), the accuracy matrix, the judge's
    reliability diagram and, for a KAN judge, its activations drawn by pykan."""
    if not cfg.eval.plots:
        return []
    from kcm.evaluation import plots

    out = ws.run_dir(name) / "plots"
    t = report["traffic"]
    cycle = report.get("cycle", 0)
    paths = [
        plots.plot_tradeoff(
            t["curves"],
            out / "tradeoff.png",
            point=(t["large_call_rate"], t["accuracy"]),
            references={
                "large only": t["baselines"]["large_only"],
                "small only": t["baselines"]["small_only"],
            },
            title=f"cycle {cycle}: accuracy vs large-call rate (traffic view)",
        ),
        plots.plot_reliability(t["reliability"], out / "reliability.png"),
    ]
    state = report.get("matrix_state", {}).get("matrix")
    if state:
        paths.append(
            plots.plot_matrix(
                AccuracyMatrix.from_dict(state).result(),
                out / "accuracy_matrix.png",
                title=f"accuracy matrix after cycle {cycle}",
            )
        )
    if system is None:
        system = current_system(ws, int(report["version"]))
    if cfg.judge.kind == "kan" and cfg.eval.kan_plot_inputs and system.trained_:
        view = _view(ws, "traffic", task_of(ws))
        rows = np.random.default_rng(cfg.seed).permutation(len(view))[:400]
        view = view.subset(rows, "traffic-sample")
        feats = system.featurize(view)
        sp = system.small_proba(feats)
        X = system.judge_inputs(feats, sp, system.replay_.records_)
        paths.append(
            plots.plot_kan(
                system.judge_,
                X,
                sp,
                out / "kan_judge.png",
                top_inputs=cfg.eval.kan_plot_inputs,
                input_names=plots.judge_input_names(feats.dense.shape[1]),
            )
        )
    return [str(p) for p in paths]


def register(
    cfg: KCMConfig,
    ws: Workspace,
    name: str,
    version: int,
    report: dict[str, Any],
    parent_run_id: str | None = None,
) -> dict[str, Any]:
    """Commit the cycle. The promotion gate compares the candidate with the champion on the
    same held-out views; with the registry on, the candidate is tracked and registered in
    MLflow (alias ``challenger``; ``champion`` only if the gate agrees). Then one atomic ledger
    write: the candidate becomes the latest version, and the serving one if promoted."""
    from kcm.evaluation.gate import GateTolerances, decide_promotion

    ledger = ws.load_ledger()
    serving = ledger.get("serving")
    champion = next((c for c in reversed(ledger["cycles"]) if c.get("version") == serving), None)
    r = cfg.registry
    tol = GateTolerances(r.accuracy_tolerance, r.few_tolerance, r.large_rate_tolerance)
    decision = decide_promotion(report, champion, tol)
    report["gate"] = {
        "promote": decision.promote,
        "reasons": decision.reasons,
        "champion_version": serving,
    }
    # the candidate, loaded once for the plots and the MLflow model
    candidate = current_system(ws, version) if (cfg.eval.plots or r.enabled) else None
    report["plots"] = cycle_plots(cfg, ws, name, report, candidate)
    if r.enabled:
        from kcm.adapters import mlflow_registry

        report["mlflow"] = mlflow_registry.track_cycle(
            cfg,
            ws,
            name,
            version,
            report,
            decision,
            lineage=_lineage(ws, ledger, name),
            parent_run_id=parent_run_id,
            system=candidate,
        )
    entry = {k: v for k, v in report.items() if k not in ("matrix_state", "per_class")}
    ledger["cycles"].append(entry)
    for key, state in report["matrix_state"].items():
        ledger[key] = state
    ledger["batches"][name].update(status="processed", version=version, at=_now())
    ledger["current"] = version
    if decision.promote:
        ledger["serving"] = version
    reports = ws.state / "reports"
    reports.mkdir(parents=True, exist_ok=True)
    atomic_write_text(
        reports / f"{Path(name).stem}.json", json.dumps(report, indent=1, default=float)
    )
    ws.save_ledger(ledger)
    log.info("batch %s: %s", name, decision.summary())
    return {
        "batch": name,
        "version": version,
        "promoted": decision.promote,
        "serving": ledger.get("serving"),
        "reasons": decision.reasons,
        "plots": report["plots"],
        "mlflow": report.get("mlflow"),
    }


def _lineage(ws: Workspace, ledger: dict[str, Any], name: str) -> dict[str, Any]:
    """The data a version has seen: every processed batch so far, plus this one."""
    seen = [n for n in ledger["order"] if ledger["batches"][n]["status"] == "processed"] + [name]
    return {
        "batches": [
            {
                "name": n,
                "sha256": ledger["batches"][n]["sha256"],
                "dvc_md5": ledger["batches"][n].get("dvc_md5"),
                "dvc_file": ledger["batches"][n].get("dvc_file"),
            }
            for n in seen
        ]
    }


def summary_report(ws: Workspace, cfg: KCMConfig) -> dict[str, Any]:
    """The report of everything processed so far (the same fields as ``kcm run``)."""
    from kcm.config import config_to_dict
    from kcm.runner import machine

    ledger = ws.load_ledger()
    meta = eval_meta(ws)
    names = meta["task"]["label_names"]
    cycles = ledger["cycles"]
    if not cycles:
        raise KCMError(f"{ws.root}: no batch processed yet; drop batches into {ws.inbox}")
    last = cycles[-1]
    few = [int(c) for c, g in meta["groups"].items() if g == "few"]
    matrix = AccuracyMatrix.from_dict(ledger.get("matrix") or {})

    def base(key: str) -> dict[str, Any]:
        t, b = last["traffic"]["baselines"], last["balanced"]["baselines"]
        return {
            "traffic": t[key],
            "balanced": b[key],
            "few_traffic": t[f"{key}_few"],
            "few_balanced": b[f"{key}_few"],
        }

    strip = ("baselines",)
    quarantined = {
        k: v.get("reason") for k, v in ledger["batches"].items() if v["status"] == "quarantined"
    }
    return {
        "dataset": meta["dataset"],
        "judge": cfg.judge.kind,
        "large_backend": meta["large_model"]["backend"],
        "large_model": meta["large_model"],
        "machine": machine(),
        "config": config_to_dict(cfg),
        "data": meta["data"],
        "groups": {names[int(c)]: g for c, g in meta["groups"].items()},
        "class_counts": {names[i]: n for i, n in enumerate(meta["class_counts"])},
        "cycles": [
            {
                k: v
                for k, v in c.items()
                if k
                not in (
                    "traffic",
                    "balanced",
                    "forgetting",
                    "forgetting_small_only",
                    "forgetting_small",
                )
            }
            for c in cycles
        ],
        "final": {k: v for k, v in last["traffic"].items() if k not in strip},
        "final_balanced": {k: v for k, v in last["balanced"].items() if k not in strip},
        "large_only": base("large_only"),
        "small_only": base("small_only"),
        "cascade": base("cascade"),
        "forgetting": matrix.summary(few),
        "forgetting_small_only": last["forgetting_small_only"],
        "forgetting_small": last.get("forgetting_small"),
        "accuracy_matrix": matrix.result(),
        "accuracy_matrix_few": matrix.result(few),
        "accuracy_matrix_state": matrix.to_dict(),
        "large_ledger": ledger_totals([c.get("large_ledger", {}) for c in cycles]),
        "large_failures": [e for c in cycles for e in c.get("large_ledger", {}).get("errors", [])][
            :50
        ],
        "quarantined": quarantined,
        "current_version": ledger["current"],
    }


# -- the whole loop in-process (no orchestrator) ---------------------------------------------
def ledger_totals(calls: list[dict[str, Any]]) -> dict[str, Any]:
    """Sum the large-model ledger deltas of a cycle's call_large chunks."""
    out: dict[str, Any] = {
        k: sum(int(c.get(k, 0)) for c in calls)
        for k in (
            "calls",
            "cache_hits",
            "failures",
            "retries",
            "prompt_tokens",
            "completion_tokens",
        )
    }
    out["latency_s"] = float(sum(float(c.get("latency_s", 0.0)) for c in calls))
    out["errors"] = [e for c in calls for e in c.get("errors", [])][:20]
    return out


STEPS = ("validate", "route", "call_large", "learn", "evaluate", "register")


def process_batch(
    cfg: KCMConfig,
    ws: Workspace,
    name: str,
    on_step: Callable[[str], None] | None = None,
    parent_run_id: str | None = None,
) -> dict[str, Any]:
    """One cycle in-process: validate → route → call_large → learn → evaluate → register."""
    t0 = time.perf_counter()
    step = on_step or (lambda _s: None)
    v = validate(cfg, ws, name)
    step("validate")
    if not v["ok"]:
        return {"batch": name, "status": "quarantined", "reason": v["reason"]}
    r = route(cfg, ws, name)
    step("route")
    calls = [call_large(cfg, ws, name, start, end) for start, end in r["chunks"]]
    step("call_large")
    learned = learn(cfg, ws, name)
    step("learn")
    report = evaluate(cfg, ws, name, learned["version"])
    report["large_ledger"] = ledger_totals(calls)
    step("evaluate")
    report["seconds"] = time.perf_counter() - t0
    register(cfg, ws, name, learned["version"], report, parent_run_id=parent_run_id)
    step("register")
    return {"batch": name, "status": "processed", "report": report}


def start_tracking(cfg: KCMConfig, ws: Workspace) -> str | None:
    """The MLflow parent run of one continual invocation (None with the registry off)."""
    if not cfg.registry.enabled:
        return None
    from kcm.adapters import mlflow_registry

    return mlflow_registry.start_parent(ws.root, cfg.registry.experiment, cfg.registry.tracking_uri)


def end_tracking(run_id: str | None, failed: bool = False) -> None:
    if run_id is not None:
        from kcm.adapters import mlflow_registry

        mlflow_registry.end_parent(run_id, failed)


def run_pipeline(
    cfg: KCMConfig, ws: Workspace, on_cycle: Callable[[dict[str, Any]], None] | None = None
) -> dict[str, Any]:
    """Bootstrap if needed, ingest the inbox and process every pending batch in order."""
    bootstrap(cfg, ws)
    pending = ingest(ws, cfg)["pending"]
    parent = start_tracking(cfg, ws) if pending else None
    failed = True
    try:
        for name in pending:
            out = process_batch(cfg, ws, name, parent_run_id=parent)
            if on_cycle is not None:
                on_cycle(out)
        failed = False
    finally:
        end_tracking(parent, failed)
    return summary_report(ws, cfg)


__all__ = [
    "assemble",
    "bootstrap",
    "call_large",
    "evaluate",
    "feed",
    "ingest",
    "learn",
    "process_batch",
    "register",
    "route",
    "run_pipeline",
    "summary_report",
    "validate",
]


# -- registry operations by hand ---------------------------------------------------------------
def _registry(cfg: KCMConfig, ws: Workspace) -> Any:
    if not cfg.registry.enabled:
        raise KCMError("the registry is off (registry.enabled: false): nothing to promote")
    from kcm.adapters import mlflow_registry

    mlflow_registry.setup(ws.root, cfg.registry.experiment, cfg.registry.tracking_uri)
    return mlflow_registry


def _serve_version(ws: Workspace, system_version: int | None) -> None:
    if system_version is not None and ws.exists():
        ledger = ws.load_ledger()
        ledger["serving"] = int(system_version)
        ws.save_ledger(ledger)


def promote(cfg: KCMConfig, ws: Workspace, version: int, who: str) -> dict[str, Any]:
    """Make registered model ``version`` the champion by hand (recorded as version tags);
    the workspace serves the system it holds from the next cycle on."""
    reg = _registry(cfg, ws)
    name = cfg.registry.model_name
    info = reg.version_info(name, version)
    previous = reg.promote(name, version, who)
    _serve_version(ws, info["system_version"])
    log.info("model %s: champion is now version %s (was %s)", name, version, previous)
    return {"model": name, "champion": version, "previous": previous, **info}


def rollback(cfg: KCMConfig, ws: Workspace, who: str) -> dict[str, Any]:
    """Point the champion back at the version the current champion replaced."""
    reg = _registry(cfg, ws)
    name = cfg.registry.model_name
    current = reg.champion_version(name)
    version = reg.rollback(name, who)
    info = reg.version_info(name, version)
    _serve_version(ws, info["system_version"])
    log.info("model %s: rolled back from version %s to %s", name, current, version)
    return {"model": name, "champion": version, "previous": current, **info}


def lineage(cfg: KCMConfig, ws: Workspace, version: int) -> dict[str, Any]:
    """Where registered model ``version`` came from: batches (with DVC hashes), code commit,
    config and the gate's decision."""
    reg = _registry(cfg, ws)
    return reg.lineage(cfg.registry.model_name, version)
