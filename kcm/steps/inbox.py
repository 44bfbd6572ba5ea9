"""Taking batches in from the inbox, by rules a writer can rely on.

- **Only complete files are taken.** Names starting with ``.`` and ending in ``.tmp`` or
  ``.part`` are never taken: write there, then rename (an atomic rename is the surest way).
  A file with a ``<name>.done`` marker beside it is taken at once. Any other file is taken
  once its size and modification time have stayed unchanged for ``flow.inbox_settle``
  seconds (default 1); one still growing is left for the next run.
- **Names are bounded.** A batch is stored as ``<seq>-<stem>-<sha8><suffix>`` with the stem
  cut to ``MAX_STEM`` characters; the original name is kept in the ledger (``source``).
- **A read-only inbox is fine.** A file taken is removed from the inbox when the inbox allows
  it; otherwise it stays there, remembered by content (and by name, size and time, so it is
  not even read again) and never taken twice.
"""

from __future__ import annotations

import hashlib
import logging
import time
from typing import Any

from kcm.config import KCMConfig
from kcm.errors import EnvironmentFault
from kcm.failpoints import reach
from kcm.steps.systems import now
from kcm.workspace import BatchRecord, Ledger, Workspace, atomic_write_bytes

log = logging.getLogger(__name__)

MAX_STEM = 80
PARTIAL = (".tmp", ".part")
MARKER = ".done"


def _split(base: str) -> tuple[str, str]:
    stem, dot, suffix = base.rpartition(".")
    return (stem, "." + suffix) if dot and stem and len(suffix) <= 10 else (base, "")


def stored_name(seq: int, base: str, sha: str) -> str:
    """The batch's name in data/batches/: bounded whatever the inbox name."""
    stem, suffix = _split(base)
    return f"{seq:04d}-{stem[:MAX_STEM]}-{sha[:8]}{suffix}"


def _mtime(entry: dict[str, Any]) -> float | None:
    m = entry.get("mtime", entry.get("LastModified", entry.get("updated")))
    if m is None:
        return None
    return float(m.timestamp()) if hasattr(m, "timestamp") else float(m)


def _settled(fs: Any, entry: dict[str, Any], settle: float) -> bool:
    """True once the file's size and modification time stayed put for ``settle`` seconds
    (waiting at most that long, once)."""
    mtime = _mtime(entry)
    if mtime is None or settle <= 0:
        return True
    young = settle - (time.time() - mtime)
    if young <= 0:
        return True
    time.sleep(min(young, settle))  # a clock ahead of ours waits no longer than settle
    again = fs.info(entry["name"])
    return bool(again.get("size") == entry.get("size") and _mtime(again) == mtime)


def _remove(fs: Any, src: str, readonly: list[str]) -> None:
    """Remove a taken file from the inbox; a read-only inbox keeps it (noted once)."""
    try:
        fs.rm(src)
    except (PermissionError, OSError) as err:
        if not readonly:
            log.info(
                "the inbox does not let kcm remove %s (%s): files stay there, remembered "
                "by content and never taken twice",
                src,
                type(err).__name__,
            )
        readonly.append(src)


def ingest(ws: Workspace, cfg: KCMConfig | None = None) -> dict[str, list[str]]:
    """Take the inbox's complete new files into data/batches/ under stable names and, with
    ``dvc.enabled``, version each with DVC (``dvc add`` + push to the remote; the md5 goes
    into the ledger). A file whose content was seen before is skipped with a log line and
    kept under data/batches/duplicates/. Returns new, skipped, waiting and pending names.

    A transaction per file: the copy is written (fsync, rename), then the ledger records it
    as pending (fsync, rename), and only then is the inbox file removed; DVC versions it
    last. A crash at any point leaves the batch in the inbox or pending in the ledger, never
    neither: an inbox file the ledger already holds from the same source is the tail of an
    interrupted move (or a read-only inbox's) and is only removed if it can be; a pending
    batch not yet versioned is versioned by the next run."""
    import fsspec

    fs, root = fsspec.core.url_to_fs(ws.inbox)
    ledger = ws.load_ledger()
    known = {v.sha256: k for k, v in ledger.batches.items()}
    by_source = {v.source: v for v in ledger.batches.values() if v.source}
    new: list[str] = []
    skipped: list[str] = []
    waiting: list[str] = []
    readonly: list[str] = []
    if not fs.exists(root):
        fs.makedirs(root, exist_ok=True)
    dvc_on = cfg is not None and cfg.dvc.enabled
    settle = cfg.flow.inbox_settle if cfg is not None else 0.0
    if dvc_on:
        _version_unversioned(ws, ledger, cfg)
    entries = sorted(fs.ls(root, detail=True), key=lambda e: e["name"])
    names = {e["name"].rstrip("/").rsplit("/", 1)[-1] for e in entries}
    for e in entries:
        src = e["name"]
        base = src.rstrip("/").rsplit("/", 1)[-1]
        if base.startswith(".") or base.endswith(PARTIAL) or base.endswith(MARKER):
            continue
        if e.get("type") != "file":
            log.warning("skipping inbox entry %s: not a regular file (%s)", base, e.get("type"))
            continue
        rec = by_source.get(src)
        if rec is not None and (rec.source_size, rec.source_mtime) == (e.get("size"), _mtime(e)):
            _remove(fs, src, readonly)  # taken before: unchanged, not read again
            continue
        marked = f"{base}{MARKER}" in names
        if not marked and not _settled(fs, e, settle):
            log.info("%s is still being written: left for the next run", base)
            waiting.append(base)
            continue
        data = fs.cat_file(src)
        sha = hashlib.sha256(data).hexdigest()
        if sha in known:
            if ledger.batches[known[sha]].source == src:
                _remove(fs, src, readonly)  # a move interrupted after its ledger commit
                continue
            stem, suffix = _split(base)
            dup = f"{now().replace(':', '')}-{stem[:MAX_STEM]}-{sha[:8]}{suffix}"
            atomic_write_bytes(ws.batches / "duplicates" / dup, data)
            _remove(fs, src, readonly)
            log.info("skipping %s: same content as batch %s, already ingested", base, known[sha])
            skipped.append(base)
            continue
        stable = stored_name(len(ledger.order), base, sha)
        atomic_write_bytes(ws.batches / stable, data)
        reach("ingest:copied")
        ledger.batches[stable] = BatchRecord(
            sha256=sha,
            source=src,
            source_size=e.get("size"),
            source_mtime=_mtime(e),
            ingested_at=now(),
        )
        ledger.order.append(stable)
        ws.save_ledger(ledger)  # the commit point: from here the batch is pending
        reach("ingest:recorded")
        _remove(fs, src, readonly)
        if marked:
            _remove(fs, f"{src}{MARKER}", readonly)
        known[sha] = stable
        new.append(stable)
        log.info("ingested %s as %s", base, stable)
        if dvc_on:
            _version(ws, ledger, stable, cfg)
    return {"new": new, "skipped": skipped, "waiting": waiting, "pending": ledger.pending}


def _version(ws: Workspace, ledger: Ledger, name: str, cfg: KCMConfig) -> None:
    """Version a recorded batch with DVC. DVC refusing it (git ignores its ``.dvc`` file, the
    remote is down) is the environment's fault, never the batch's: one line naming the file
    and the fix, and the batch stays pending for the next run to version."""
    from kcm.adapters.dvc_store import version_file

    try:
        update = version_file(ws.root, ws.batches / name, cfg.dvc.remote, cfg.dvc.remote_name)
    except EnvironmentFault as err:
        raise EnvironmentFault(
            f"ingest: {err} (batch {name} is kept, pending: the next run versions it)"
        ) from err
    update["dvc_remote_url"] = ws.rel(update["dvc_remote_url"])
    ledger.batches[name] = ledger.batches[name].model_copy(update=update)
    ws.save_ledger(ledger)


def _version_unversioned(ws: Workspace, ledger: Ledger, cfg: KCMConfig) -> None:
    """Batches a crashed run recorded but did not get to version with DVC."""
    for name in ledger.order:
        rec = ledger.batches[name]
        if rec.dvc_md5 is None and (ws.batches / name).is_file():
            log.info("versioning %s with DVC (its ingest stopped before)", name)
            _version(ws, ledger, name, cfg)
