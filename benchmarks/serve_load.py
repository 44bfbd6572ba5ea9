"""Serving under load: the champion pyfunc behind ``kcm serve-model`` (MLflow's scoring
server), 1 and 2 worker processes, a bounded load.

    python benchmarks/serve_load.py [--workdir PROJECT] [--workers 1 2] [--requests 2000]
                                    [--clients 1 4 16] [--out DIR]

Without ``--workdir`` a digits project is built first in a temporary folder (``kcm run
--in-process``, 2 batches, registry on): its champion is what is served. For each number of
worker processes the champion is served on 127.0.0.1 (``kcm serve-model --workers N``), then
for each number of concurrent clients ``--requests`` single-row requests (rows of the
project's traffic view: a mix the judge routes to the small and to the large model) are sent
and timed; the route of each answer is read from the reply (``answered_by``). Then malformed
payloads (and a 50,000-row request, over the request limits), each of which must get a 4xx
that names the problem and no stack trace. The load generator shares the machine's cores.

Writes ``serve_load.json`` and ``serve_load.md`` into ``--out`` (default ``runs/serve-load``).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pandas as pd

from kcm.procs import stop_group

REPO = Path(__file__).resolve().parents[1]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def build_project(root: Path) -> Path:
    """A digits project with a champion (2 cycles, registry on, DVC and plots off)."""
    ws = root / "ws"
    cmd = [sys.executable, "-m", "kcm_app.cli", "run", "--in-process", "--no-progress"]
    for s in ("data.stream.n_batches=2", "dvc.enabled=false", "eval.plots=false"):
        cmd += ["--set", s]
    print("building a digits project with a champion ...", flush=True)
    subprocess.run([*cmd, "--out", str(ws)], cwd=REPO, check=True, capture_output=True)
    return ws


def serve(workdir: Path, workers: int, log: Path) -> tuple[subprocess.Popen[bytes], str]:
    """``kcm serve-model --workers N`` on a free loopback port (MLflow's scoring server)."""
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    env["PYTHONPATH"] = str(REPO)
    cmd = [sys.executable, "-m", "kcm_app.cli", "serve-model", "--workdir", str(workdir)]
    cmd += ["--config", str(workdir / "params.resolved.yaml")]
    cmd += ["--workers", str(workers), "--port", str(port)]
    proc = subprocess.Popen(
        cmd,
        env=env,
        cwd=REPO,
        stdout=log.open("w"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"kcm serve-model exited: {log.read_text()[-2000:]}")
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(f"{url}/ping", timeout=2).status_code == 200:
                return proc, url
        time.sleep(1)
    stop(proc)
    raise RuntimeError(f"kcm serve-model did not come up: {log.read_text()[-2000:]}")


def stop(proc: subprocess.Popen[bytes]) -> None:
    stop_group(proc, grace=30)


def traffic_rows(workdir: Path) -> pd.DataFrame:
    df = pd.read_parquet(workdir / "state" / "eval" / "traffic.parquet")
    return df.drop(columns=[c for c in df.columns if c == "label" or c.endswith("__eval")])


def _body(rows: pd.DataFrame) -> dict[str, Any]:
    return {"dataframe_split": json.loads(rows.to_json(orient="split", index=False))}


def load(url: str, rows: pd.DataFrame, n: int, clients: int) -> dict[str, Any]:
    """``n`` single-row requests from ``clients`` threads, each with its own connection."""
    bodies = [json.dumps(_body(rows.iloc[[i % len(rows)]])).encode() for i in range(n)]
    nxt = iter(range(n))
    lock = threading.Lock()
    results: list[tuple[float, int, str]] = []

    def client() -> None:
        with httpx.Client(timeout=60) as c:
            while True:
                with lock:
                    i = next(nxt, None)
                if i is None:
                    return
                t0 = time.perf_counter()
                try:
                    r = c.post(
                        f"{url}/invocations",
                        content=bodies[i],
                        headers={"Content-Type": "application/json"},
                    )
                    status = r.status_code
                    route = r.json()["predictions"][0]["answered_by"] if status == 200 else "error"
                except httpx.HTTPError:
                    status, route = 0, "error"
                ms = (time.perf_counter() - t0) * 1000
                with lock:
                    results.append((ms, status, route))

    t0 = time.perf_counter()
    threads = [threading.Thread(target=client) for _ in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0
    out: dict[str, Any] = {
        "clients": clients,
        "requests": n,
        "seconds": wall,
        "req_per_s": n / wall,
        "errors": sum(1 for _, s, _ in results if s != 200),
    }
    for route in ("all", "small", "large"):
        ms = np.array([m for m, s, r in results if s == 200 and route in ("all", r)])
        out[route] = {
            "n": len(ms),
            **{f"p{q}": float(np.percentile(ms, q)) if len(ms) else None for q in (50, 95, 99)},
        }
    return out


def malformed(url: str, rows: pd.DataFrame, col: str) -> list[dict[str, Any]]:
    """Each bad payload, the status it got, and whether the reply names the problem without a
    stack trace or a server path. ``col``: one of the model's input columns."""
    good = _body(rows.iloc[[0]])
    wrong_type = json.loads(json.dumps(good))
    wrong_type["dataframe_split"]["data"][0][good["dataframe_split"]["columns"].index(col)] = "abc"
    depth = 100_000
    cases: list[tuple[str, bytes, str]] = [
        ("invalid JSON", b"{not json", "json"),
        ("empty body", b"", ""),
        ("a missing column", json.dumps(_body(rows.iloc[[0]].drop(columns=[col]))).encode(), col),
        ("a word in a numeric column", json.dumps(wrong_type).encode(), col),
        ("JSON nested 100,000 deep", b"[" * depth + b"]" * depth, ""),
        ("an unknown format key", json.dumps({"rows": [[1, 2]]}).encode(), ""),
        (
            "50,000 rows in one request",
            json.dumps(_body(rows.sample(50_000, replace=True, random_state=0))).encode(),
            "kcm score",
        ),
    ]
    out = []
    for what, body, names in cases:
        r = httpx.post(
            f"{url}/invocations",
            content=body,
            headers={"Content-Type": "application/json"},
            timeout=60,
        )
        text = r.text
        out.append(
            {
                "payload": what,
                "status": r.status_code,
                "is_4xx": 400 <= r.status_code < 500,
                "names_it": (names.lower() in text.lower()) if names else None,
                "no_trace": "Traceback" not in text and str(REPO) not in text,
                "reply": text[:160],
            }
        )
    return out


def markdown(result: dict[str, Any]) -> str:
    lines = [
        f"Machine: {result['machine']}; model: {result['model']} (champion v{result['version']})",
        "",
        "| workers | clients | req/s | errors | p50 / p95 / p99 ms (all) | small: n, p50 / p99 | "
        "large: n, p50 / p99 |",
        "|---|---|---|---|---|---|---|",
    ]

    def f(x: float | None) -> str:
        return "–" if x is None else f"{x:.1f}"

    for r in result["load"]:
        a, s, lg = r["all"], r["small"], r["large"]
        lines.append(
            f"| {r['workers']} | {r['clients']} | {r['req_per_s']:.1f} | {r['errors']} | "
            f"{f(a['p50'])} / {f(a['p95'])} / {f(a['p99'])} | {s['n']}, {f(s['p50'])} / "
            f"{f(s['p99'])} | {lg['n']}, {f(lg['p50'])} / {f(lg['p99'])} |"
        )
    lines += [
        "",
        "| malformed payload | status | 4xx | names it | no stack trace |",
        "|---|---|---|---|---|",
    ]
    for m in result["malformed"]:
        named = "–" if m["names_it"] is None else ("yes" if m["names_it"] else "no")
        lines.append(
            f"| {m['payload']} | {m['status']} | {'yes' if m['is_4xx'] else 'no'} | {named} | "
            f"{'yes' if m['no_trace'] else 'no'} |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--workdir", type=Path, help="a project with a champion (default: build one)")
    ap.add_argument("--workers", type=int, nargs="+", default=[1, 2], help="server processes")
    ap.add_argument("--requests", type=int, default=2000)
    ap.add_argument("--clients", type=int, nargs="+", default=[1, 4, 16])
    ap.add_argument("--out", type=Path, default=REPO / "runs" / "serve-load")
    args = ap.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    from kcm.workspace import Workspace

    with tempfile.TemporaryDirectory(prefix="kcm-serve-load-") as tmp:
        workdir = (args.workdir or build_project(Path(tmp))).resolve()
        from mlflow import MlflowClient

        model = str(Workspace(workdir).load_ledger().model_name)
        client = MlflowClient(tracking_uri=f"sqlite:///{workdir}/mlflow/mlflow.db")
        version = client.get_model_version_by_alias(model, "champion").version
        rows = traffic_rows(workdir)
        runs, bad = [], []
        for w in args.workers:
            proc, url = serve(workdir, w, args.out / f"serve-{w}.log")
            try:
                load(url, rows, min(50, args.requests), 1)  # warm-up
                for c in args.clients:
                    print(f"{w} worker(s): {args.requests} requests from {c} client(s) ...")
                    runs.append({"workers": w, **load(url, rows, args.requests, c)})
                if not bad:
                    bad = malformed(url, rows, Workspace(workdir).task().input_cols[0])
            finally:
                stop(proc)
    result = {
        "machine": f"{platform.machine()} {platform.system()}, {os.cpu_count()} cores, "
        f"python {platform.python_version()}",
        "date": time.strftime("%Y-%m-%d"),
        "model": model,
        "version": version,
        "load": runs,
        "malformed": bad,
    }
    (args.out / "serve_load.json").write_text(json.dumps(result, indent=2))
    md = markdown(result)
    (args.out / "serve_load.md").write_text(md)
    print(md)
    return 0 if all(m["is_4xx"] and m["no_trace"] for m in bad) else 1


if __name__ == "__main__":
    raise SystemExit(main())
