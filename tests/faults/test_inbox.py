"""The fault suite, part 7: an inbox that cannot block the loop or truncate a batch.

A file still being written is left until it settles (or its ``.done`` marker arrives); a
name too long for the file system is stored under a bounded name, quarantine included; a
read-only inbox is read, never emptied, and nothing in it is taken twice."""

from __future__ import annotations

import errno
import threading
import time
from pathlib import Path

import pandas as pd
import pytest

from kcm import steps
from kcm.config import load_config
from kcm.workspace import Workspace

pytestmark = pytest.mark.slow

BASE = [
    "large.backend=callable",
    "large.callable.target=tests.helpers:digits_large",
    "data.stream.n_batches=2",
    "registry.enabled=false",
    "dvc.enabled=false",
    "eval.plots=false",
    "eval.traffic_size=60",
]


@pytest.fixture
def ws_cfg(tmp_path: Path) -> tuple[Workspace, object, pd.DataFrame]:
    cfg = load_config(None, [*BASE, "flow.inbox_settle=1.0"])
    ws = Workspace(tmp_path / "ws")
    steps.bootstrap(cfg, ws)
    src = tmp_path / "stream"
    steps.feed(cfg, src)
    return ws, cfg, pd.read_csv(src / "batch-000.csv")


def test_a_file_still_being_written_waits_and_is_taken_whole(ws_cfg: tuple) -> None:
    ws, cfg, df = ws_cfg
    path = Path(ws.inbox) / "growing.csv"
    df.head(20).to_csv(path, index=False)
    rest = df.iloc[20:]

    def writer() -> None:  # the rest of the rows, a few at a time, over ~2.5 s
        for start in range(0, len(rest), max(1, len(rest) // 10)):
            time.sleep(0.25)
            with open(path, "a") as fh:
                rest.iloc[start : start + max(1, len(rest) // 10)].to_csv(
                    fh, index=False, header=False
                )

    t = threading.Thread(target=writer)
    t.start()
    time.sleep(0.1)
    first = steps.ingest(ws, cfg)
    assert first["waiting"] == ["growing.csv"] and not first["new"]
    t.join()
    time.sleep(1.1)
    second = steps.ingest(ws, cfg)
    (name,) = second["new"]
    assert len(pd.read_csv(ws.batches / name)) == len(df)  # every row, none lost


def test_a_done_marker_takes_a_file_at_once_and_partial_names_never(ws_cfg: tuple) -> None:
    ws, cfg, df = ws_cfg
    cfg = cfg.model_copy(update={"flow": cfg.flow.model_copy(update={"inbox_settle": 60.0})})
    inbox = Path(ws.inbox)
    df.to_csv(inbox / "ready.csv", index=False)
    (inbox / "ready.csv.done").write_text("")
    df.head(5).to_csv(inbox / "upload.csv.part", index=False)
    df.head(5).to_csv(inbox / ".hidden.csv", index=False)
    t0 = time.perf_counter()
    out = steps.ingest(ws, cfg)
    assert time.perf_counter() - t0 < 30  # the marker: no settling wait
    assert len(out["new"]) == 1 and "ready" in out["new"][0]
    assert not (inbox / "ready.csv").exists() and not (inbox / "ready.csv.done").exists()
    assert (inbox / "upload.csv.part").exists() and (inbox / ".hidden.csv").exists()


def test_a_name_too_long_for_the_file_system_is_stored_bounded(ws_cfg: tuple) -> None:
    ws, cfg, df = ws_cfg
    long = "x" * 235 + ".csv"  # 239 characters: with a prefix, over NAME_MAX (255)
    df.to_csv(Path(ws.inbox) / long, index=False)
    bad = "y" * 235 + ".csv"
    (Path(ws.inbox) / bad).write_text("not,a\nbatch,at all\n")
    time.sleep(1.1)
    out = steps.ingest(ws, cfg)
    assert len(out["new"]) == 2 and all(len(n) < 120 for n in out["new"])
    ledger = ws.load_ledger()
    assert {Path(ledger.batches[n].source).name for n in out["new"]} == {long, bad}
    bad_name = next(n for n in out["new"] if "yyy" in n)
    v = steps.validate(cfg, ws, bad_name)  # quarantined with its reports: names bounded too
    assert not v["ok"] and (ws.quarantine / f"{bad_name}.report.json").is_file()


def test_a_read_only_inbox_is_read_never_emptied_and_nothing_taken_twice(
    ws_cfg: tuple, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Tests run as root, which a chmod does not stop: the read-only mount is simulated at
    the file system's ``rm`` (EROFS), where kcm meets it."""
    from fsspec.implementations.local import LocalFileSystem

    def read_only(self: object, path: str, *a: object, **k: object) -> None:
        raise OSError(errno.EROFS, "Read-only file system", path)

    monkeypatch.setattr(LocalFileSystem, "rm", read_only)
    ws, cfg, df = ws_cfg
    df.to_csv(Path(ws.inbox) / "b1.csv", index=False)
    time.sleep(1.1)
    assert len(steps.ingest(ws, cfg)["new"]) == 1
    assert (Path(ws.inbox) / "b1.csv").exists()  # still there: the inbox is read-only
    reads = []
    real_cat = LocalFileSystem.cat_file
    monkeypatch.setattr(
        LocalFileSystem, "cat_file", lambda self, p, *a, **k: reads.append(p) or real_cat(self, p)
    )
    again = steps.ingest(ws, cfg)  # the next runs: not taken again, not even read
    assert again["new"] == [] and again["skipped"] == [] and reads == []
    df.head(30).to_csv(Path(ws.inbox) / "b2.csv", index=False)
    time.sleep(1.1)
    assert len(steps.ingest(ws, cfg)["new"]) == 1
    assert len(ws.load_ledger().order) == 2
