"""The ``kcm-cycle`` flow: ingest → validate → route → call large → distil → evaluate → register.

Each task calls one ``kcm.pipeline`` function. The large-model task retries with backoff and
its result is cached by (workspace, batch, system version, chunk), on top of the answer cache
that ``kcm`` keeps in ``state/large_cache.sqlite``: a re-run never buys an answer twice.
Pure compute is not retried. A batch that fails validation ends the flow run in a
``Quarantined`` (failed) state before any model is touched.
"""

from __future__ import annotations

import base64
import time
from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.cache_policies import NONE
from prefect.context import TaskRunContext
from prefect.states import Failed

from flows.common import resolve
from kcm import pipeline


@task(name="bootstrap", cache_policy=NONE)
def bootstrap_task(cfg: dict[str, Any]) -> dict[str, Any]:
    c, ws = resolve(cfg)
    return pipeline.bootstrap(c, ws)


@task(name="ingest", cache_policy=NONE)
def ingest_task(cfg: dict[str, Any]) -> dict[str, list[str]]:
    c, ws = resolve(cfg)
    out = pipeline.ingest(ws, c)
    log = get_run_logger()
    for name in out["skipped"]:
        log.info("skipped %s: already ingested (same content)", name)
    log.info("ingested %d new batch(es); %d pending", len(out["new"]), len(out["pending"]))
    return out


@task(name="validate", cache_policy=NONE)
def validate_task(cfg: dict[str, Any], name: str) -> dict[str, Any]:
    c, ws = resolve(cfg)
    return pipeline.validate(c, ws, name)


@task(name="route", cache_policy=NONE)
def route_task(cfg: dict[str, Any], name: str) -> dict[str, Any]:
    c, ws = resolve(cfg)
    return pipeline.route(c, ws, name)


def _large_key(ctx: TaskRunContext, params: dict[str, Any]) -> str:
    _c, ws = resolve(params["cfg"])
    return f"kcm-large:{ws.root}:{params['name']}:v{params['version']}:{params['start']}-{params['end']}"


@task(
    name="call-large",
    retries=3,
    retry_delay_seconds=[2, 10, 30],
    cache_key_fn=_large_key,
    persist_result=True,
)
def call_large_task(
    cfg: dict[str, Any], name: str, version: int, start: int, end: int
) -> dict[str, Any]:
    c, ws = resolve(cfg)
    out = pipeline.call_large(c, ws, name, start, end)
    if out["failures"]:
        get_run_logger().warning(
            "%d large-model call(s) failed after retries (recorded; the small "
            "model answers them): %s",
            out["failures"],
            out["errors"][:3],
        )
    return out


@task(name="distill", cache_policy=NONE)
def learn_task(cfg: dict[str, Any], name: str) -> dict[str, Any]:
    c, ws = resolve(cfg)
    return pipeline.learn(c, ws, name)


@task(name="evaluate", cache_policy=NONE)
def evaluate_task(cfg: dict[str, Any], name: str, version: int) -> dict[str, Any]:
    c, ws = resolve(cfg)
    return pipeline.evaluate(c, ws, name, version)


@task(name="register", cache_policy=NONE)
def register_task(
    cfg: dict[str, Any],
    name: str,
    version: int,
    report: dict[str, Any],
    parent_run_id: str | None = None,
) -> dict[str, Any]:
    c, ws = resolve(cfg)
    out = pipeline.register(c, ws, name, version, report, parent_run_id=parent_run_id)
    get_run_logger().info(
        "promotion gate for %s: %s (%s)",
        name,
        "promoted" if out["promoted"] else "refused",
        "; ".join(out["reasons"]),
    )
    return out


def _fmt(v: Any) -> str:
    return "-" if v is None else (f"{v:.3f}" if isinstance(v, float) else str(v))


def publish(cfg: dict[str, Any], report: dict[str, Any], registered: dict[str, Any]) -> None:
    """A markdown artifact with the cycle's table and the gate's decision, one with the
    cycle's plots (PNG, inline), and a table artifact of per-class accuracy."""
    _, ws = resolve(cfg)
    meta = pipeline.eval_meta(ws)
    t, b, f = report["traffic"], report["balanced"], report["forgetting"]
    rows = [("batch (before learning)", report), ("traffic view", t), ("balanced view", b)]
    md = [
        f"# kcm cycle {report['cycle']}: `{report['batch']}`",
        "",
        f"system version v{report['version']:04d}, ε = {report['epsilon']:.3f}",
        "",
        "| view | n | accuracy | Many | Medium | Few | large-call rate |",
        "|---|---|---|---|---|---|---|",
    ]
    for label, m in rows:
        md.append(
            f"| {label} | {m['n']} | {_fmt(m['accuracy'])} | {_fmt(m['accuracy_many'])} | "
            f"{_fmt(m['accuracy_medium'])} | {_fmt(m['accuracy_few'])} | {_fmt(m['large_call_rate'])} |"
        )
    bl = t["baselines"]
    md += [
        "",
        f"baselines on traffic: large_only {_fmt(bl['large_only'])}, small_only "
        f"{_fmt(bl['small_only'])}, cascade {_fmt(bl['cascade'])}",
        "",
        f"forgetting over {report['cycle'] + 1} cycle(s): BWT {_fmt(f['bwt'])}, forgetting "
        f"{_fmt(f['forgetting'])}, Few-group forgetting {_fmt(f['forgetting_few'])}",
    ]
    ml = registered.get("mlflow") or {}
    md += [
        "",
        ("**promoted** to champion" if registered["promoted"] else "**not promoted**")
        + f" (serving v{registered['serving']:04d}): "
        + "; ".join(registered["reasons"]),
    ]
    if ml:
        md.append(
            f"MLflow: model `{ml['model_name']}` version {ml['model_version']}, run `{ml['run_id']}`"
        )
    create_markdown_artifact(
        key="kcm-cycle",
        markdown="\n".join(md),
        description=f"cycle {report['cycle']} on {report['batch']}",
    )
    if registered.get("plots"):
        pics = [f"# kcm cycle {report['cycle']}: plots", ""]
        for path in registered["plots"]:
            data = base64.b64encode(Path(path).read_bytes()).decode()
            pics += [
                f"## {Path(path).stem}",
                "",
                f"![{Path(path).stem}](data:image/png;base64,{data})",
                "",
            ]
        create_markdown_artifact(
            key="kcm-cycle-plots",
            markdown="\n".join(pics),
            description=f"plots of cycle {report['cycle']} (PNG files: {Path(registered['plots'][0]).parent})",
        )
    names = meta["task"]["label_names"]
    groups = meta["groups"]
    table = [
        {
            "class": names[i],
            "group": groups.get(str(i), "-"),
            "accuracy": None if a is None else round(a, 4),
        }
        for i, a in enumerate(report["per_class"])
    ]
    create_table_artifact(
        key="kcm-per-class-accuracy",
        table=table,
        description=f"per-class accuracy (balanced view) after {report['batch']}",
    )


@flow(name="kcm-cycle", flow_run_name="cycle-{name}", log_prints=False)
def cycle_flow(cfg: dict[str, Any], name: str, parent_run_id: str | None = None) -> Any:
    """Process one ingested batch."""
    log = get_run_logger()
    t0 = time.perf_counter()
    v = validate_task(cfg, name)
    if not v["ok"]:
        log.error("batch %s quarantined: %s (report: %s)", name, v["reason"], v["report"])
        return Failed(name="Quarantined", message=f"batch {name} quarantined: {v['reason']}")
    if v.get("n_dropped"):
        log.warning("batch %s: %d bad row(s) dropped and reported", name, v["n_dropped"])
    r = route_task(cfg, name)
    _c, ws = resolve(cfg)
    version = int(ws.load_ledger()["current"])
    log.info(
        "batch %s: %d of %d samples go to the large model (ε=%.3f), %d chunk(s)",
        name,
        r["n_large"],
        r["n"],
        r["epsilon"],
        len(r["chunks"]),
    )
    futures = [call_large_task.submit(cfg, name, version, s, e) for s, e in r["chunks"]]
    calls = [fut.result() for fut in futures]
    learned = learn_task(cfg, name, wait_for=futures)
    report = evaluate_task(cfg, name, learned["version"])
    report["large_ledger"] = pipeline.ledger_totals(calls)
    report["seconds"] = time.perf_counter() - t0
    registered = register_task(cfg, name, learned["version"], report, parent_run_id)
    publish(cfg, report, registered)
    log.info(
        "batch %s: accuracy %.3f, large-call rate %.3f; system v%04d is current",
        name,
        report["accuracy"] or 0.0,
        report["large_call_rate"] or 0.0,
        learned["version"],
    )
    return {k: report[k] for k in ("batch", "cycle", "accuracy", "large_call_rate", "version")}
