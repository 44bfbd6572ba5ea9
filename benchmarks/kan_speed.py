"""KAN layer speed, side by side in one process on the same inputs.

    python benchmarks/kan_speed.py [--json PATH] [--repeats 20]

Implementations: ``kcm`` (kcm.judge.kan_layer.KANNet), ``pykan`` (pykan's ``KAN`` as constructed
by default), ``pykan_speed`` (the same after ``model.speed()``) and ``mlp`` (an MLP of equal
widths with SiLU). Batch 512, grid 5, k 3. Widths: [64, 32, 77] (BANKING77's classes) and the
judge's real widths [40, 16, 2] (32 projected features + 4 memory + 4 small-output features ->
16 hidden -> right/wrong). Reported: the median over ``--repeats`` of one training step
(forward, cross-entropy, backward, Adam step) and of one inference forward pass (no grad).
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import platform
import statistics
import tempfile
import time
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

WIDTHS = ([64, 32, 77], [40, 16, 2])
BATCH, GRID, K = 512, 5, 3


def _median_ms(fn: Callable[[], Any], repeats: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1000)
    return statistics.median(times)


def _models(widths: list[int], scratch: str) -> dict[str, nn.Module]:
    from kan import KAN

    from kcm.judge.kan_layer import KANNet

    torch.manual_seed(0)
    layers: list[nn.Module] = []
    for a, b in itertools.pairwise(widths):
        layers += [nn.Linear(a, b), nn.SiLU()]
    mlp = nn.Sequential(*layers[:-1])
    pykan = KAN(width=list(widths), grid=GRID, k=K, seed=0, auto_save=False, ckpt_path=scratch)
    fast = KAN(
        width=list(widths), grid=GRID, k=K, seed=0, auto_save=False, ckpt_path=scratch
    ).speed()
    return {
        "kcm": KANNet(widths, grid=GRID, k=K, seed=0),
        "pykan": pykan,
        "pykan_speed": fast,
        "mlp": mlp,
    }


def measure(widths: list[int], repeats: int) -> list[dict[str, Any]]:
    x = torch.rand(BATCH, widths[0]) * 2 - 1
    y = torch.randint(0, widths[-1], (BATCH,))
    rows = []
    with tempfile.TemporaryDirectory() as scratch:  # pykan's checkpoint folder, unused
        for name, model in _models(widths, scratch).items():
            opt = torch.optim.Adam(model.parameters(), lr=1e-3)

            def step(model: nn.Module = model, opt: torch.optim.Optimizer = opt) -> None:
                model.train()
                loss = nn.functional.cross_entropy(model(x), y)
                opt.zero_grad()
                loss.backward()
                opt.step()

            def infer(model: nn.Module = model) -> None:
                model.eval()
                with torch.no_grad():
                    model(x)

            rows.append(
                {
                    "impl": name,
                    "widths": widths,
                    "train_step_ms": _median_ms(step, repeats),
                    "infer_ms": _median_ms(infer, repeats),
                }
            )
    return rows


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--json", help="write {'rows': [...]} here")
    p.add_argument("--repeats", type=int, default=20)
    p.add_argument("--threads", type=int, default=min(2, os.cpu_count() or 1))
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    rows = [r for w in WIDTHS for r in measure(w, args.repeats)]
    machine = (
        f"{platform.machine()}, {torch.get_num_threads()} torch threads, torch {torch.__version__}"
    )
    print(f"KAN speed, batch {BATCH}, grid {GRID}, k {K}; {machine}")
    print(
        f"{'widths':>14} {'impl':>12} {'train step ms':>14} {'infer ms':>10} "
        f"{'train vs kcm':>13} {'infer vs kcm':>13}"
    )
    for r in rows:
        base = next(b for b in rows if b["impl"] == "kcm" and b["widths"] == r["widths"])
        print(
            f"{r['widths']!s:>14} {r['impl']:>12} {r['train_step_ms']:14.2f} "
            f"{r['infer_ms']:10.3f} {r['train_step_ms'] / base['train_step_ms']:12.1f}x "
            f"{r['infer_ms'] / base['infer_ms']:12.1f}x"
        )
    if args.json:
        with open(args.json, "w") as fh:
            json.dump({"machine": machine, "rows": rows}, fh, indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
