"""The OCaTS protocol on BANKING77 with GPT-4 replayed as the large model (``kcm bench
--scenario ocats --data-dir ../shared/data/banking77-llm``).

As in Stogiannidis et al. (2023): the 3,080 BANKING77 test queries arrive as the stream in a
seeded shuffle; every learner starts from 3 gold examples per intent (drawn, seeded, from
``dev_answers.csv``: BANKING77 training queries); the stream's labels are never shown, so
learners learn only from GPT-4's answers; every answer is delivered before it is learned,
and the delivered (prequential) accuracy against the gold labels is the measure. GPT-4's
recorded answers (``test_answers.csv``: ``text,category,gpt4``) are replayed by kcm's
``replay`` backend: an answer outside the label set is a failed call. The featurizer
(``features.kind``: by default the sentence encoder, as for any LLM backend; ``tfidf`` for
TF-IDF n-grams) is fitted, without labels, on the dev queries; every method, kcm and peers,
reads the same features.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from kcm.answers import teacher_labels
from kcm.bench.online import OnlineStream
from kcm.bench.streams import LAMBDAS, prices_of
from kcm.config import KCMConfig, with_overrides
from kcm.data.batch import NO_LABEL, OUT_OF_SCOPE, Batch, Task
from kcm.data.sources import read_table
from kcm.errors import DataError
from kcm.models.large import make_large_model
from kcm.system import CollaborationSystem

FILES = ("test_answers.csv", "dev_answers.csv")
LATE = 1000  # the last 1,000 queries


def resolve(data_dir: str | Path | None) -> Path:
    root = Path(data_dir or "../shared/data/banking77-llm").expanduser()
    missing = [f for f in FILES if not (root / f).is_file()]
    if missing:
        raise DataError(
            f"--scenario ocats: {root} lacks {missing}: pass --data-dir to the folder with "
            "test_answers.csv and dev_answers.csv (text,category,gpt4), e.g. "
            "../shared/data/banking77-llm"
        )
    return root


def batch_of(df, task: Task, name: str, show_labels: bool) -> Batch:
    """Rows of ``text,category,...`` as a batch; a category outside the task (an intent held
    back from it) has gold ``OUT_OF_SCOPE``."""
    index = task.label_index()
    gold = np.array([index.get(c, OUT_OF_SCOPE) for c in df["category"].astype(str)], np.int64)
    return Batch(
        ids=np.array([f"{name}-{i:05d}" for i in range(len(df))], dtype=object),
        inputs=[str(t).strip() for t in df["text"]],
        label=gold.copy() if show_labels else np.full(len(gold), NO_LABEL, np.int64),
        gold=gold,
        name=name,
    )


def config(cfg: KCMConfig, root: Path) -> KCMConfig:
    """The run's config with GPT-4 replayed as the large model."""
    return with_overrides(
        cfg, ["large.backend=replay", f"large.replay.path={root / 'test_answers.csv'}"]
    )


def features_of(cfg: KCMConfig) -> str:
    """The feature kind every method of this scenario reads (the replay backend's default)."""
    from kcm.features import features_kind

    task = Task(kind="text", label_names=("x",), text_col="text", label_col="category")
    return features_kind(task, config(cfg, Path(".")))


def encoder_speed(cfg: KCMConfig, data_dir: str | Path | None, n: int = 1000) -> dict[str, Any]:
    """Seconds to encode ``n`` stream texts never seen before (an in-memory cache opened
    anew), and kcm's small path with encoding (encode, route, answer) in samples per second;
    empty when the scenario's features are TF-IDF."""
    import time

    import torch

    from kcm.encoder import SentenceEncoder, reopen_cache

    if features_of(cfg) != "encoder":
        return {}
    root = resolve(data_dir)
    test = read_table(root / "test_answers.csv", str_cols=("category", "gpt4"))
    texts = [str(t).strip() for t in test["text"][:n]]
    e = cfg.features.encoder
    enc = SentenceEncoder(e.model_path, e.max_length, e.batch_size, None)
    enc.encode(texts[:8])  # the network loaded before timing
    reopen_cache(None)
    t0 = time.perf_counter()
    enc.encode(texts)
    seconds = time.perf_counter() - t0
    reopen_cache(None)
    task = Task(
        kind="text",
        label_names=tuple(sorted(test["category"].unique())),
        text_col="text",
        label_col="category",
    )
    c = config(cfg, root)
    system = CollaborationSystem(task, c, make_large_model(c, task))
    dev = read_table(root / "dev_answers.csv", str_cols=("category", "gpt4"))
    warm = batch_of(dev.iloc[: min(500, n)], task, "warm", show_labels=True)
    system.setup(warm)
    system.learn(warm, system.predict(warm, call_large=False))
    reopen_cache(None)
    batch = batch_of(test.iloc[:n], task, "speed", show_labels=False)
    t0 = time.perf_counter()
    system.predict(batch, call_large=False)
    path = time.perf_counter() - t0
    reopen_cache(None)
    return {
        "texts_per_second": n / seconds,
        "seconds_per_1000": 1000 * seconds / n,
        "kcm_samples_per_second": n / path,
        "threads": torch.get_num_threads(),
    }


def build(
    cfg: KCMConfig,
    data_dir: str | Path | None,
    seed: int,
    batch_size: int = 100,
    limit: int | None = None,
    per_intent: int = 3,
    cache_dir: str | Path | None = None,
) -> tuple[OnlineStream, Task, Batch]:
    """The seeded stream (``limit``: only its first queries, for tests), the task and the
    featurizer's warm-up queries. ``cache_dir``: where the encoder's embeddings are kept."""
    root = resolve(data_dir)
    test = read_table(root / "test_answers.csv", str_cols=("category", "gpt4"))
    dev = read_table(root / "dev_answers.csv", str_cols=("category", "gpt4"))
    task = Task(
        kind="text",
        label_names=tuple(sorted(test["category"].unique())),
        text_col="text",
        label_col="category",
    )
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(test))[: limit or len(test)]
    seed_rows = np.concatenate(
        [
            rng.permutation(np.flatnonzero(dev["category"].to_numpy() == c))[:per_intent]
            for c in task.label_names
        ]
    )
    warm = batch_of(dev.iloc[seed_rows], task, "seed", show_labels=True)
    warmup = batch_of(dev, task, "warmup", show_labels=False)
    stream = batch_of(test.iloc[order], task, "stream", show_labels=False)
    batches = [
        stream.subset(np.arange(s, min(s + batch_size, len(stream))), f"batch-{i:03d}")
        for i, s in enumerate(range(0, len(stream), batch_size))
    ]
    c = config(cfg, root)
    probe = CollaborationSystem(task, c, make_large_model(c, task)).setup(warmup, cache_dir)
    feats = [probe.featurize(b) for b in batches]
    teacher = [teacher_labels(probe.large, b) for b in batches]
    return (
        OnlineStream(
            batches=batches,
            features=feats,
            teacher=teacher,
            n_classes=task.n_classes,
            warm=warm,
            warm_features=probe.featurize(warm),
            late=LATE,
            prices=prices_of(probe.large, batches),
        ),
        task,
        warmup,
    )


#: the kcm systems of this scenario: name -> config overrides (the peers come from PEERS). The
#: defaults are an LLM backend's (``kcm.defaults``): the encoder student refitted on its memory,
#: GPT-4's answers distilled as they are, the small model answering where C_x > ε = 0.4, the
#: judge a correction to the student's own confidence on an 8-d view, 5 cross-fitting folds.
SYSTEMS: dict[str, tuple[str, ...]] = {
    "kcm": (),
    "mcm": ("judge.kind=mlp",),
    "learned_router": ("judge.kind=logreg",),
    # the judge without the student's confidence as its prior (f(x) alone)
    "kcm_no_prior": ("judge.prior=none",),
    # the rule of before: the small model answers only where C_x > ε = 0.98
    "kcm_eps": ("routing.epsilon=0.98",),
    # a per-batch budget of expected disagreements instead of a fixed ε
    "kcm_max_loss": ("routing.max_loss=0.15",),
    # the student of before: continued training on each batch and a replayed sample
    "kcm_incremental": ("small.refit=false", "small.lr=0.005", "small.epochs=8"),
    # the small model also learns its own confident answers (L_js at T = 2)
    "kcm_self_train": ("distill.w_js=0.5", "distill.temperature=2"),
}


#: ``kcm_swept``: kcm at these ε, credited like a swept peer with its best point in hindsight
#: (the judge's C_x compared with margin and max-softmax at equal calls)
KCM_EPSILONS = (0.3, 0.35, 0.45, 0.5)

#: ``cascade``: kcm's own small model, learning as in ``kcm``, routed on its max-softmax instead
#: of the judge's C_x, swept over these ε (compared at equal calls, like the peers)
CASCADE_EPSILONS = (0.2, 0.35, 0.5, 0.6)


def methods_of(methods: Sequence[str] | None) -> tuple[str, ...]:
    from kcm.errors import ConfigError
    from kcm.peers import PEERS

    known = ("large_only", *SYSTEMS, "kcm_swept", "cascade", *PEERS)
    if not methods:
        return known
    unknown = [m for m in methods if m not in known]
    if unknown:
        raise ConfigError(
            f"--methods {','.join(unknown)}: not a method of --scenario ocats; choose from "
            f"{', '.join(known)}"
        )
    return tuple(m for m in known if m in methods or m == "kcm")


def run_seed(
    cfg: KCMConfig,
    data_dir: str | Path | None,
    seed: int,
    methods: Sequence[str] | None = None,
    limit: int | None = None,
    batch_size: int = 100,
    progress: Callable[[str], None] | None = None,
    cache_dir: str | Path | None = None,
) -> tuple[dict[str, dict[str, Any]], dict[str, Any]]:
    """Every method on one seeded shuffle of the stream: rows and curves."""
    from kcm.bench.online import run_system
    from kcm.bench.streams import nearest, peer_row, stream_target, sweep_row, system_row
    from kcm.evaluation.stream import RankingAUROC

    cfg = with_overrides(cfg, [f"seed={seed}"])
    stream, task, warmup = build(
        cfg, data_dir, seed, batch_size=batch_size, limit=limit, cache_dir=cache_dir
    )
    root = resolve(data_dir)
    target = stream_target(stream.teacher, stream.batches)
    chosen = methods_of(methods)
    rows: dict[str, dict[str, Any]] = {}
    extras: dict[str, Any] = {}
    results: dict[str, dict[str, Any]] = {}
    for name in [m for m in chosen if m in SYSTEMS]:
        if progress:
            progress(f"seed {seed}: {name}")
        c = config(with_overrides(cfg, list(SYSTEMS[name])), root)
        system = CollaborationSystem(task, c, make_large_model(c, task)).setup(warmup, cache_dir)
        ranking = RankingAUROC()
        res = run_system(system, stream, ranking=ranking).result()
        rows[name] = {**system_row(res, target), **ranking.result()}
        extras[name] = {"curves": res["curves"]}
        results[name] = res
    ref = rows["kcm"]["stream_large_share"]
    if "kcm_swept" in chosen:
        swept = [(None, results["kcm"])]  # kcm itself is one point of the sweep
        for eps in KCM_EPSILONS:
            if progress:
                progress(f"seed {seed}: kcm ε={eps}")
            c = config(with_overrides(cfg, [f"routing.epsilon={eps}"]), root)
            system = CollaborationSystem(task, c, make_large_model(c, task))
            system.setup(warmup, cache_dir)
            swept.append((eps, run_system(system, stream).result()))
        _, point = nearest(swept, ref)
        rows["kcm_swept"], extras["kcm_swept"] = sweep_row(
            [r for _, r in swept], point, ref, target, stream.n
        )
    if "cascade" in chosen:
        results = []
        for eps in CASCADE_EPSILONS:
            if progress:
                progress(f"seed {seed}: cascade ε={eps}")
            c = config(cfg, root)
            system = CollaborationSystem(task, c, make_large_model(c, task))
            system.setup(warmup, cache_dir)
            results.append((eps, run_system(system, stream, "cascade", eps).result()))
        _, chosen_point = nearest(results, ref)
        rows["cascade"], extras["cascade"] = sweep_row(
            [r for _, r in results], chosen_point, ref, target, stream.n
        )
    for name in [m for m in chosen if m not in (*SYSTEMS, "kcm_swept", "cascade", "large_only")]:
        rows[name], extras[name] = peer_row(name, stream, seed, ref, target, progress)
    if "large_only" in chosen:
        acc = target + 0.01
        rows["large_only"] = {
            "stream_accuracy": acc,
            "stream_large_share": 1.0,
            "late_large_share": 1.0,
            "calls_to_match": float(stream.n),
            **{f"phi_{lam}": acc - lam for lam in LAMBDAS},
        }
    return rows, extras
