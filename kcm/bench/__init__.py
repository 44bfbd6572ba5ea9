"""``kcm bench``: every method on the same long-tailed stream and test set, for each seed.

Five full continual runs per seed (in-process, the same pipeline steps as the flows, MLflow,
DVC and plots off): ``kcm`` (KAN judge), ``mcm`` (MLP judge), ``kcm_no_hint`` (no prompt
modification / no fusion), ``kcm_no_distill`` (labels only) and ``kd`` (every stream sample goes
to the large model and is distilled; the small model then answers alone). The other methods
are read off the ``kcm`` run's final state: ``large_only``, ``small_only`` (the labels-only
baseline trained alongside), ``cascade`` (the small model's own max-softmax as the score),
``random`` and ``oracle``.

Views: *traffic* (test samples in the stream's long-tailed proportions) for ``accuracy``,
``large_call_rate``, ``throughput_sps``, ``judge_auroc`` and ``apgr``; *balanced* (the whole
test set) for ``accuracy_balanced`` and Many / Medium / Few. Routers are scored at their own
threshold, at the large-call rate ``kcm`` reaches (``accuracy_at_kcm_rate``) and at a fixed
large-call budget (``accuracy_at_budget``, default 0.30 of the traffic), each through its own
serving path (the hint included).
"""

from __future__ import annotations

import json
import logging
import shutil
import tempfile
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import Any

from kcm import loop
from kcm.bench.methods import METHODS, METRICS, ROUTERS, RUNS, score_methods
from kcm.bench.parallel import check_jobs, map_seeds
from kcm.bench.render import aggregate, render_markdown
from kcm.config import KCMConfig, config_to_dict, with_overrides
from kcm.errors import ConfigError
from kcm.report import machine
from kcm.steps import feed
from kcm.workspace import Workspace

log = logging.getLogger(__name__)

QUIET = ["registry.enabled=false", "dvc.enabled=false", "eval.plots=false"]


def check_budget(budget: float) -> float:
    if not 0.0 <= budget <= 1.0:
        raise ConfigError(f"--budget {budget}: give a large-call rate in [0, 1], e.g. 0.3")
    return budget


def check_methods(methods: Sequence[str] | None) -> tuple[str, ...]:
    """The methods asked for (all by default), each checked against the table."""
    if not methods:
        return METHODS
    unknown = [m for m in methods if m not in METHODS]
    if unknown:
        raise ConfigError(
            f"--methods {','.join(unknown)}: not a bench method; choose from {', '.join(METHODS)}"
        )
    return tuple(m for m in METHODS if m in methods or m == "kcm")  # kcm: the reference


def _run(cfg: KCMConfig, root: Path, share_cache_from: Path | None) -> dict[str, Any]:
    """One continual run in ``root`` (the large model's answer/embedding cache is copied from
    an earlier run of the same seed: the same inputs are never encoded twice)."""
    with tempfile.TemporaryDirectory(prefix="kcm-bench-inbox-") as inbox:
        ws = Workspace(root, inbox)
        if share_cache_from is not None and share_cache_from.is_file():
            ws.state.mkdir(parents=True, exist_ok=True)
            shutil.copy(share_cache_from, ws.state / share_cache_from.name)
        feed(cfg, inbox)
        return loop.run(cfg, ws)


def _bench_seed(
    seed: int,
    progress: Callable[[str], None] | None,
    cfg: KCMConfig,
    work: Path,
    runs_wanted: dict[str, tuple[str, ...]],
    throughput_n: int,
    budget: float,
    chosen: tuple[str, ...],
) -> tuple[dict[str, Any], dict[str, Any]]:
    """One seed of ``run_bench``: its continual runs, then every method scored."""
    t0 = time.perf_counter()
    runs, reports = {}, {}
    cache: Path | None = None
    for name, overrides in runs_wanted.items():
        if progress:
            progress(f"seed {seed}: {name}")
        c = with_overrides(cfg, [*QUIET, f"seed={seed}", *overrides])
        root = work / f"seed{seed}" / name
        shutil.rmtree(root, ignore_errors=True)
        reports[name] = _run(c, root, cache)
        runs[name] = (root, c)
        cache = cache or (root / "state" / "large_cache.sqlite")
    if progress:
        progress(f"seed {seed}: scoring")
    scores, extra = score_methods(runs, reports, throughput_n, seed, budget, chosen)
    log.info("seed %d done after %.0fs", seed, time.perf_counter() - t0)
    return scores, extra


def features_label(cfg: KCMConfig) -> str:
    """What the small model reads in the held-out scenario: numeric, tfidf or encoder."""
    from kcm.data.batch import Task
    from kcm.features import features_kind

    text = cfg.data.dataset == "banking77" or (cfg.data.dataset == "csv" and cfg.data.text_col)
    task = Task(kind="text" if text else "numeric", label_names=("x",), text_col="text")
    return features_kind(task, cfg)


def run_bench(
    cfg: KCMConfig,
    seeds: Sequence[int],
    out: str | Path,
    throughput_n: int = 1000,
    progress: Callable[[str], None] | None = None,
    keep_runs: bool = False,
    budget: float = 0.3,
    methods: Sequence[str] | None = None,
    jobs: int = 1,
) -> dict[str, Any]:
    """Run every method (or those in ``methods``) for every seed; write ``bench.json``,
    ``BENCH.md`` and plots. ``budget``: the large-call rate at which every router is also
    scored. The ``kcm`` run always runs: the others are read off or compared with it.
    ``jobs``: seeds run side by side in that many processes (throughput figures are then
    measured on shared cores)."""
    check_budget(budget)
    chosen = check_methods(methods)
    runs_wanted = {k: v for k, v in RUNS.items() if k == "kcm" or k in chosen}

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    work = out / "runs"
    t0 = time.perf_counter()
    fn = partial(
        _bench_seed,
        cfg=cfg,
        work=work,
        runs_wanted=runs_wanted,
        throughput_n=throughput_n,
        budget=budget,
        chosen=chosen,
    )
    done = map_seeds(fn, seeds, jobs, progress)
    per_seed, extras = [d[0] for d in done], [d[1] for d in done]
    result = {
        "dataset": cfg.data.dataset,
        "features": features_label(cfg),
        "machine": machine(),
        "date": datetime.now(UTC).date().isoformat(),
        "seeds": list(seeds),
        "config": config_to_dict(cfg),
        "seconds": time.perf_counter() - t0,
        "budget": budget,
        "rows": aggregate(per_seed),
        "per_seed": [{"seed": s, "methods": p} for s, p in zip(seeds, per_seed, strict=True)],
        "kcm_rate": [e["kcm_rate"] for e in extras],
        "stream": [e["stream"] for e in extras],
    }
    (out / "bench.json").write_text(json.dumps(result, indent=1))
    (out / "BENCH.md").write_text(render_markdown(result))
    from kcm.evaluation.plots import plot_stream, plot_tradeoff

    plot_tradeoff(
        extras[0]["curves"],
        out / "tradeoff.png",
        title=f"{cfg.data.dataset}, seed {seeds[0]}: accuracy vs large-call rate (traffic)",
    )
    plot_stream(
        extras[0]["stream"],
        out / "stream.png",
        f"{cfg.data.dataset}, seed {seeds[0]}: answers delivered on the stream",
        large_accuracy=extras[0].get("large_stream_accuracy"),
    )
    if not keep_runs:
        shutil.rmtree(work, ignore_errors=True)
    return result


def _ocats_seed(
    seed: int,
    progress: Callable[[str], None] | None,
    cfg: KCMConfig,
    data_dir: str | Path | None,
    methods: Sequence[str] | None,
    limit: int | None,
    cache_dir: str | Path | None = None,
    batch_size: int = 100,
) -> tuple[dict[str, Any], dict[str, Any]]:
    from kcm.bench import scenario_ocats

    return scenario_ocats.run_seed(
        cfg,
        data_dir,
        seed,
        methods,
        limit=limit,
        batch_size=batch_size,
        progress=progress,
        cache_dir=cache_dir,
    )


def run_ocats(
    cfg: KCMConfig,
    seeds: Sequence[int],
    out: str | Path,
    data_dir: str | Path | None = None,
    methods: Sequence[str] | None = None,
    limit: int | None = None,
    progress: Callable[[str], None] | None = None,
    jobs: int = 1,
    batch_size: int = 100,
) -> dict[str, Any]:
    """``kcm bench --scenario ocats``: the OCaTS protocol with GPT-4 replayed (see
    ``kcm.bench.scenario_ocats``); writes ``bench.json``, ``BENCH.md`` and ``stream.png``.
    ``jobs``: seeds run side by side in that many processes."""
    from kcm.bench import scenario_ocats
    from kcm.bench.render import aggregate_rows, ranking_table, stream_table
    from kcm.evaluation.plots import plot_stream

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    # the encoder's embeddings are kept beside the results: a re-run encodes nothing
    fn = partial(
        _ocats_seed,
        cfg=cfg,
        data_dir=data_dir,
        methods=methods,
        limit=limit,
        cache_dir=out,
        batch_size=batch_size,
    )
    done = map_seeds(fn, seeds, jobs, progress)
    per_seed, extras = [d[0] for d in done], [d[1] for d in done]
    names = list(per_seed[0])
    result = {
        "scenario": "ocats",
        "encoder": scenario_ocats.encoder_speed(cfg, data_dir, n=min(1000, limit or 1000)),
        "dataset": "banking77 test stream, GPT-4 replayed",
        "data_dir": str(scenario_ocats.resolve(data_dir)),
        "machine": machine(),
        "date": datetime.now(UTC).date().isoformat(),
        "seeds": list(seeds),
        "stream_limit": limit,
        "stream_batch": batch_size,
        "features": scenario_ocats.features_of(cfg),
        "config": config_to_dict(cfg),
        "seconds": time.perf_counter() - t0,
        "rows": aggregate_rows(per_seed, names),
        "per_seed": [{"seed": s, "methods": p} for s, p in zip(seeds, per_seed, strict=True)],
        "stream": extras,
    }
    (out / "bench.json").write_text(json.dumps(result, indent=1))
    md = [
        "# kcm bench --scenario ocats: BANKING77's test queries as the stream, GPT-4 replayed",
        "",
        f"features: {result['features']}; batches of {batch_size}; seeds {result['seeds']}, "
        f"{result['date']}, "
        f"{result['machine']}; "
        f"{result['seconds'] / 60:.1f} min. Figures in % (mean ± std over seeds). The late "
        "share is over the last 1,000 queries.",
        "",
        *stream_table(result["rows"]),
        "",
        *ranking_table([p["methods"] for p in result["per_seed"]]),
    ]
    if result["encoder"]:
        e = result["encoder"]
        md += [
            "",
            f"Encoder: {e['texts_per_second']:.0f} texts/s ({e['seconds_per_1000']:.2f} s per "
            f"1,000 new texts, {e['threads']} torch threads); kcm's small path with encoding: "
            f"{e['kcm_samples_per_second']:.0f} samples/s.",
        ]
    (out / "BENCH.md").write_text("\n".join(md) + "\n")
    plot_stream(
        extras[0],
        out / "stream.png",
        f"OCaTS protocol, GPT-4 replayed, seed {seeds[0]}",
        large_accuracy=per_seed[0].get("large_only", {}).get("stream_accuracy"),
    )
    return result


__all__ = [
    "METHODS",
    "METRICS",
    "ROUTERS",
    "RUNS",
    "check_budget",
    "check_jobs",
    "check_methods",
    "render_markdown",
    "run_bench",
    "run_ocats",
]
