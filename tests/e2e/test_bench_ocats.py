"""`kcm bench --scenario ocats` on a slice of the stream: GPT-4 replayed, every method."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from kcm_app.cli import main

pytestmark = pytest.mark.slow

#: one of each kind of row: kcm systems, a swept kcm, its small model alone, swept peers
METHODS = ("large_only", "kcm", "mcm", "kcm_swept", "cascade", "nc_margin", "ocats")

DATA = Path(__file__).resolve().parents[2] / ".." / "shared" / "data" / "banking77-llm"


@pytest.mark.skipif(not (DATA / "test_answers.csv").is_file(), reason="banking77-llm absent")
def test_ocats_scenario_on_a_slice(tmp_path: Path) -> None:
    out = tmp_path / "ocats"
    args = [
        "bench",
        "--scenario",
        "ocats",
        "--data-dir",
        str(DATA),
        "--seeds",
        "0",
        "--stream-limit",
        "200",
        "--methods",
        ",".join(METHODS),
        "--out",
        str(out),
        "--no-progress",
    ]
    assert main(args) == 0
    result = json.loads((out / "bench.json").read_text())
    rows = {r["method"]: r for r in result["rows"]}
    assert set(rows) == set(METHODS)
    gpt4 = rows["large_only"]["stream_accuracy"]["mean"]
    assert 0.7 < gpt4 < 0.95  # GPT-4's recorded answers against the gold labels
    for name, row in rows.items():
        for key in ("stream_accuracy", "stream_large_share", "late_large_share", "phi_0.1"):
            assert row[key]["mean"] is not None, (name, key)
        # nothing here is better than its teacher by much: the learners see only its answers
        assert row["stream_accuracy"]["mean"] <= gpt4 + 0.05, name
        # φ = accuracy − λ·share of the best point: below that point's accuracy (a swept
        # method shows the point nearest kcm's share, so compare with its best point)
        points = result["stream"][0].get(name, {}).get("points") or []
        best = max([a for _, a in points], default=row["stream_accuracy"]["mean"])
        assert row["phi_0.1"]["mean"] <= best + 1e-9, name
    assert rows["large_only"]["stream_large_share"]["mean"] == 1.0
    curves = result["stream"][0]["kcm"]["curves"]
    assert sum(curves["n"]) == 200 and len(curves["n"]) == 2
    assert (out / "stream.png").is_file()
    md = (out / "BENCH.md").read_text()
    assert "| ocats |" in md
    # every method read the sentence encoder's features (the replay backend's default)
    assert result["features"] == "encoder" and "features: encoder" in md
    seed0 = result["per_seed"][0]["methods"]
    for name in ("kcm", "mcm"):
        for score in ("judge", "margin", "max_softmax"):
            assert 0.0 <= seed0[name][f"auroc_{score}"] <= 1.0, (name, score)
    assert "| kcm | " in md.split("judge C_x")[1]
    assert result["encoder"]["texts_per_second"] > 0
    assert result["encoder"]["kcm_samples_per_second"] > 0
    # a re-run encodes nothing: every text is in the bench folder's embedding cache
    from kcm.encoder import SentenceEncoder, reopen_cache

    cache = reopen_cache(out / "embeddings.sqlite")
    dev = pd.read_csv(DATA / "dev_answers.csv")
    SentenceEncoder(cache_path=out / "embeddings.sqlite").encode(
        [str(t).strip() for t in dev["text"]]
    )
    assert cache.misses == 0 and cache.hits == len(dev)


def test_ocats_scenario_names_a_missing_folder(tmp_path: Path, capsys) -> None:
    args = [
        "bench",
        "--scenario",
        "ocats",
        "--data-dir",
        str(tmp_path),
        "--seeds",
        "0",
        "--out",
        str(tmp_path / "o"),
        "--no-progress",
    ]
    assert main(args) == 2
    assert "test_answers.csv" in capsys.readouterr().err
