"""Out-of-scope queries with a real LLM: BANKING77 with intents held back, GPT-4 replayed.

The OCaTS stream (the 3,080 BANKING77 test queries, seeded shuffle, batches of 100, 3 gold
examples per intent to start, no stream label ever shown), except that ``--held`` intents
(seeded) are held back from the task: their queries still arrive, and no answer among the
remaining intents is right for them. GPT-4's recorded answer names the held-back intent on most
of them, a name outside the task's label set. Two runs of kcm on the same stream:

- ``before`` (``large.out_of_scope.unknown_answers=failure``, kcm before out-of-scope handling):
  such an answer is a failed call, the small model answers instead, nothing is learned;
- ``after`` (``unknown_answers=out_of_scope``): the answer is delivered as ``out_of_scope``
  and the judge learns that the small model is wrong on such queries.

Per batch: the share of held-back queries the small model answered itself (confidently, and so
wrongly), the share answered ``out_of_scope``, in-scope accuracy and the share sent to GPT-4.

    python benchmarks/out_of_scope.py --data-dir ../shared/data/banking77-llm --held 10 \
        --seeds 0 1 2 --out /tmp/oos-b77 [--set routing.max_loss=0.02 ...]

writes ``oos.json``, ``OOS.md`` and ``oos.png`` under ``--out``.
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path
from typing import Any

import numpy as np

from kcm.bench.scenario_ocats import batch_of, resolve
from kcm.config import load_config
from kcm.data.batch import OUT_OF_SCOPE, Task
from kcm.data.sources import read_table
from kcm.evaluation.report import view_metrics
from kcm.models.large import make_large_model
from kcm.system import CollaborationSystem

log = logging.getLogger("kcm.bench.oos")
MODES = {"before": "failure", "after": "out_of_scope"}
LATE = 1000


def run(
    root: Path, held: int, seed: int, mode: str, sets: list[str] | None = None
) -> dict[str, Any]:
    test = read_table(root / "test_answers.csv", str_cols=("category", "gpt4"))
    dev = read_table(root / "dev_answers.csv", str_cols=("category", "gpt4"))
    intents = sorted(test["category"].unique())
    rng = np.random.default_rng(seed)
    out = set(rng.choice(intents, held, replace=False).tolist())
    task = Task(
        kind="text",
        label_names=tuple(c for c in intents if c not in out),
        text_col="text",
        label_col="category",
    )
    order = rng.permutation(len(test))
    seed_rows = np.concatenate(
        [
            rng.permutation(np.flatnonzero(dev["category"].to_numpy() == c))[:3]
            for c in task.label_names
        ]
    )
    warm = batch_of(dev.iloc[seed_rows], task, "seed", show_labels=True)
    warmup = batch_of(dev, task, "warmup", show_labels=False)
    stream = batch_of(test.iloc[order], task, "stream", show_labels=False)
    cfg = load_config(
        None,
        [
            f"seed={seed}",
            "large.backend=replay",
            f"large.replay.path={root / 'test_answers.csv'}",
            f"large.out_of_scope.unknown_answers={MODES[mode]}",
            "large.max_consecutive_failures=0",  # "before" fails on purpose: never trip
            *(sets or []),
        ],
    )
    system = CollaborationSystem(task, cfg, make_large_model(cfg, task)).setup(warmup)
    system.learn(warm, system.predict(warm, call_large=False))
    rows, answers, routed = [], [], []
    t0 = time.perf_counter()
    for i, s in enumerate(range(0, len(stream), 100)):
        batch = stream.subset(np.arange(s, min(s + 100, len(stream))), f"batch-{i:03d}")
        p = system.predict(batch)
        system.learn(batch, p)
        m = view_metrics(p.answer, batch.gold, p.to_large, {})
        ins = batch.gold != OUT_OF_SCOPE
        rows.append(
            {
                "batch": i,
                "oos_confident_wrong": m["oos_confident_wrong"],
                "oos_recall": m["oos_recall"],
                "in_scope_accuracy": float((p.answer[ins] == batch.gold[ins]).mean()),
                "large_share": m["large_call_rate"],
                "failures": p.large_failures,
            }
        )
        answers.append(p.answer)
        routed.append(p.to_large)
        log.info("%s seed %d batch %d: %s", mode, seed, i, rows[-1])
    a, r, g = np.concatenate(answers), np.concatenate(routed), stream.gold
    late = np.arange(len(g)) >= len(g) - LATE

    def summary(sel: np.ndarray) -> dict[str, float]:
        m = view_metrics(a[sel], g[sel], r[sel], {})
        ins = sel & (g != OUT_OF_SCOPE)
        return {
            "oos_confident_wrong": m["oos_confident_wrong"],
            "oos_recall": m["oos_recall"],
            "in_scope_accuracy": float((a[ins] == g[ins]).mean()),
            "large_share": m["large_call_rate"],
            "n_oos": int((g[sel] == OUT_OF_SCOPE).sum()),
        }

    return {
        "held": sorted(out),
        "all": summary(np.ones(len(g), bool)),
        "late": summary(late),
        "batches": rows,
        "seconds": time.perf_counter() - t0,
    }


def plot(results: dict[str, list[dict[str, Any]]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4), constrained_layout=True)
    colours = {"before": "#c0392b", "after": "#1f77b4"}
    for mode, runs in results.items():
        for key, ax in zip(("oos_confident_wrong", "oos_recall"), axes, strict=True):
            y = np.array([[b[key] or 0.0 for b in r["batches"]] for r in runs])
            x = np.arange(1, y.shape[1] + 1)
            ax.plot(x, y.mean(axis=0), color=colours[mode], label=f"{mode} ({len(runs)} seeds)")
            if len(runs) > 1:
                ax.fill_between(x, y.min(axis=0), y.max(axis=0), color=colours[mode], alpha=0.15)
    axes[0].set_title("held-back queries the small model answered (wrong)")
    axes[1].set_title("held-back queries answered out_of_scope")
    for ax in axes:
        ax.set_xlabel("batch of 100 queries")
        ax.set_ylabel("share of the batch's held-back queries")
        ax.set_ylim(-0.02, 1.02)
        ax.grid(alpha=0.3)
        ax.legend()
    fig.suptitle("BANKING77, intents held back as out-of-scope, GPT-4 replayed")
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data-dir", default=None)
    ap.add_argument("--held", type=int, default=10, help="intents held back from the task")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0])
    ap.add_argument("--modes", nargs="+", default=list(MODES), choices=list(MODES))
    ap.add_argument("--out", default="runs/oos")
    ap.add_argument("--merge", nargs="+", help="oos.json files of earlier runs to merge")
    ap.add_argument("--set", action="append", default=[], help="a config override (repeatable)")
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if args.merge:  # runs made apart (e.g. one process per mode): one table, one plot
        results = {}
        for path in args.merge:
            results.update(json.loads(Path(path).read_text()))
    else:
        root = resolve(args.data_dir)
        results = {
            m: [run(root, args.held, s, m, args.set) for s in args.seeds] for m in args.modes
        }
    write(results, out)


def write(results: dict[str, list[dict[str, Any]]], out: Path) -> None:
    (out / "oos.json").write_text(json.dumps(results, indent=1))
    lines = [
        "| run | part | held-back answered by the small model | answered out_of_scope | "
        "in-scope accuracy | GPT-4 share |",
        "|---|---|---|---|---|---|",
    ]
    for mode, runs in results.items():
        for part in ("all", "late"):
            cells = []
            for key in ("oos_confident_wrong", "oos_recall", "in_scope_accuracy", "large_share"):
                v = np.array([r[part][key] for r in runs], dtype=float)
                cells.append(f"{100 * v.mean():.1f} ± {100 * v.std():.1f}")
            lines.append(f"| {mode} | {part} | " + " | ".join(cells) + " |")
    (out / "OOS.md").write_text("\n".join(lines) + "\n")
    plot(results, out / "oos.png")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
