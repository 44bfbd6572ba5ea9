"""End-to-end: a workspace on sentence-encoder features, whose features and embedding-head large
model both read a local encoder folder. Every step shares one embedding cache,
``state/embeddings.sqlite``: a cycle encodes only the texts never encoded before. The
registered champion carries the folder and answers in a fresh process once it is gone."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import pytest

from kcm import loop, steps
from kcm.config import KCMConfig, load_config
from kcm.data.batch import batch_from_frame, names_of
from kcm.encoder import EMBEDDINGS, SentenceEncoder, default_model_path, reopen_cache
from kcm.steps.systems import champion
from kcm.workspace import Workspace
from tests.helpers import champion_answers_in_a_fresh_process

pytestmark = pytest.mark.slow

TOPICS = {
    "card": ["card", "pin", "atm", "contactless"],
    "transfer": ["transfer", "iban", "payee", "wire"],
    "rate": ["exchange rate", "currency", "fx fee", "euro"],
}


@dataclass
class Run:
    cfg: KCMConfig
    ws: Workspace
    model: Path  # the encoder folder the settings name
    new_texts: int  # distinct texts of the second batch that were never encoded before
    misses: int  # texts the second cycle encoded
    hits: int
    rows: tuple[int, int]  # embeddings.sqlite rows before and after the second cycle
    in_memory: tuple[int, int]  # texts encoded outside the workspace's cache; of them, examples


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Run]:
    root = tmp_path_factory.mktemp("encoder-ws")
    model = root / "minilm"
    shutil.copytree(default_model_path(), model)
    rows = [
        {"sentence": f"question {i} about my {w} {['today', 'again', 'now'][i % 3]}", "topic": t}
        for t, words in TOPICS.items()
        for i in range(40)
        for w in [words[i % len(words)]]
    ]
    pd.DataFrame(rows).to_csv(root / "topics.csv", index=False)
    cfg = load_config(
        None,
        [
            "data.dataset=csv",
            f"data.train={root / 'topics.csv'}",
            "data.text_col=sentence",
            "data.label_col=topic",
            "data.imbalance_factor=3",
            "data.stream.n_batches=2",
            "features.kind=encoder",
            f"features.encoder.model_path={model}",
            "large.backend=embedding-head",
            f"large.embedding_head.model_path={model}",
            "large.embedding_head.epochs=50",
            "small.epochs=3",
            "judge.epochs=10",
            "judge.folds=2",
            "dvc.enabled=false",
            "eval.plots=false",
            f"flow.workdir={root / 'ws'}",
        ],
    )
    ws = Workspace(root / "ws", cfg.flow.inbox)
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(root)
        steps.feed(cfg, root / "feed")
        Path(ws.inbox).mkdir(parents=True, exist_ok=True)
        memory = reopen_cache(None)  # a step without the workspace's cache would encode here
        shutil.copy(root / "feed" / "batch-000.csv", ws.inbox)
        loop.run(cfg, ws)
        # the second cycle, as a new process sees the cache (counters at 0)
        cache = reopen_cache(ws.state / EMBEDDINGS)
        texts = pd.read_csv(root / "feed" / "batch-001.csv")["sentence"].tolist()
        keys = set(SentenceEncoder(model, cfg.features.encoder.max_length).keys(texts))
        new = keys - cache.get_many(list(keys)).keys()
        before = len(cache)
        shutil.copy(root / "feed" / "batch-001.csv", ws.inbox)
        loop.run(cfg, ws)
        # MLflow used to load each logged model to answer its input example (the first
        # traffic rows) with embeddings in memory; no example is answered any more
        example = pd.read_parquet(ws.eval_dir / "traffic.parquet")["sentence"].head(3).tolist()
        examples = len(memory.get_many(SentenceEncoder(model).keys(example)))
        yield Run(
            cfg,
            ws,
            model,
            len(new),
            cache.misses,
            cache.hits,
            (before, len(cache)),
            (len(memory), examples),
        )


def test_every_step_shares_the_workspace_embedding_cache(run: Run) -> None:
    assert len(run.ws.load_ledger().cycles) == 2
    assert run.new_texts > 0 and run.misses == run.new_texts, "a text was encoded twice"
    assert run.hits > 0  # the held-out views, the memory, the large model: read again, not encoded
    assert run.rows[1] == run.rows[0] + run.new_texts
    assert run.in_memory == (0, 0), "a text was encoded outside the workspace's cache"
    found = sorted(run.ws.root.parent.rglob(EMBEDDINGS))
    assert found == [run.ws.state / EMBEDDINGS]


def test_the_champion_carries_its_encoder_and_answers_in_a_fresh_process(
    run: Run, tmp_path: Path
) -> None:
    df = pd.read_parquet(run.ws.eval_dir / "traffic.parquet").head(20)
    rows = df[["sentence"]]
    system = champion(run.ws, run.cfg)
    want = system.predict(batch_from_frame(rows.assign(topic=None), system.task, "rows"))
    shutil.rmtree(run.model)  # from here only the registered model's copy is left
    got = champion_answers_in_a_fresh_process(run.ws.root, rows, tmp_path)
    assert got["answer"].tolist() == names_of(system.task, want.answer).tolist()
