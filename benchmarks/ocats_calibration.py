"""Who is right when kcm's small model and GPT-4 disagree, and how calibrated the judge is, on
the OCaTS stream (BANKING77's test queries, GPT-4's recorded answers replayed, labels never
shown; the same loop as ``kcm bench --scenario ocats``: predict, then learn, batch by batch).

    python benchmarks/ocats_calibration.py --seed 1 [--set routing.max_loss=0.2 ...]

Prints, over the queries the small model answered: how often it agrees with GPT-4, and of the
disagreements, how many the small model got right (GPT-4 wrong), the reverse, and neither; the
sum of C_x against the agreements; then per C_x bin (every query after the first batch) the
share that agrees with GPT-4 and the share the small model gets right.
"""

from __future__ import annotations

import argparse
import logging

import numpy as np

from kcm.bench import scenario_ocats
from kcm.config import KCMConfig, with_overrides
from kcm.env import apply_offline_env
from kcm.models.large import make_large_model
from kcm.system import CollaborationSystem


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--data-dir", default=None, help="default ../shared/data/banking77-llm")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    ap.add_argument("--cache-dir", default=None, help="where the embeddings are kept")
    a = ap.parse_args()
    apply_offline_env()
    logging.basicConfig(level=logging.WARNING)
    cfg = with_overrides(KCMConfig(), [f"seed={a.seed}"])
    stream, task, warmup = scenario_ocats.build(cfg, a.data_dir, a.seed, cache_dir=a.cache_dir)
    c = scenario_ocats.config(with_overrides(cfg, a.set), scenario_ocats.resolve(a.data_dir))
    system = CollaborationSystem(task, c, make_large_model(c, task)).setup(warmup, a.cache_dir)
    assert stream.warm is not None
    system.learn(stream.warm, system.predict(stream.warm, call_large=False))
    n = agree = small_only = gpt_only = neither = 0
    cx_sum = 0.0
    bins = np.zeros((10, 3))
    for i, (batch, teacher) in enumerate(zip(stream.batches, stream.teacher, strict=True)):
        p = system.predict(batch)
        pred = p.small_proba.argmax(axis=1)
        if i > 0:
            k = np.minimum((p.confidence * 10).astype(int), 9)
            np.add.at(bins, k, np.stack([np.ones(len(k)), pred == teacher, pred == batch.gold], 1))
        s = ~p.to_large
        sp, t, g = pred[s], teacher[s], batch.gold[s]
        n += int(s.sum())
        agree += int((sp == t).sum())
        small_only += int(((sp == g) & (t != g)).sum())
        gpt_only += int(((sp != g) & (t == g)).sum())
        neither += int(((sp != g) & (t != g) & (sp != t)).sum())
        cx_sum += float(p.confidence[s].sum())
        system.learn(batch, p)
    print(f"settings {a.set or 'defaults'}, seed {a.seed}")
    print(f"answered by the small model: {n}; agrees with GPT-4: {agree}; sum of C_x: {cx_sum:.0f}")
    print(f"disagreements: small right {small_only}, GPT-4 right {gpt_only}, neither {neither}")
    print("C_x bin: queries, agrees with GPT-4, small model right")
    for k in range(10):
        if bins[k, 0]:
            q = bins[k, 0]
            print(
                f"  [{k / 10:.1f}, {(k + 1) / 10:.1f}): {int(q):5d}  {bins[k, 1] / q:.3f}  {bins[k, 2] / q:.3f}"
            )


if __name__ == "__main__":
    main()
