"""Ingest from a local folder and from an fsspec URL (memory://, as s3:// would be)."""

from __future__ import annotations

from pathlib import Path

import fsspec

from kcm import steps
from kcm.workspace import Workspace


def test_ingest_moves_names_stably_and_skips_resent_content(tmp_path: Path) -> None:
    ws = Workspace(tmp_path / "ws")
    ws.make_dirs()
    inbox = Path(ws.inbox)
    (inbox / "b1.csv").write_text("text,label\nhi,a\n")
    (inbox / "b2.csv").write_text("text,label\nyo,b\n")
    out = steps.ingest(ws)
    assert [n[:7] for n in out["new"]] == ["0000-b1", "0001-b2"] and out["pending"] == out["new"]
    assert not list(inbox.iterdir())
    (inbox / "b1-again.csv").write_text("text,label\nhi,a\n")  # same content, new name
    again = steps.ingest(ws)
    assert again["new"] == [] and again["skipped"] == ["b1-again.csv"]
    assert len(list((ws.batches / "duplicates").iterdir())) == 1  # kept, never deleted
    assert len(list(ws.batches.glob("*.csv"))) == 2


def test_ingest_from_an_fsspec_url(tmp_path: Path) -> None:
    fs = fsspec.filesystem("memory")
    fs.pipe("/kcm-inbox/batch-000.csv", b"text,label\nhello,a\n")
    ws = Workspace(tmp_path / "ws", inbox="memory://kcm-inbox")
    ws.make_dirs()
    out = steps.ingest(ws)
    assert len(out["new"]) == 1
    assert (ws.batches / out["new"][0]).read_text().startswith("text,label")
    assert not fs.exists("/kcm-inbox/batch-000.csv")
