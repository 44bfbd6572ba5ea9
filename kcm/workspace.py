"""The project folder a deployed system lives in, its ledger, and the readers of both.

```
<workdir>/
  data/inbox/        new batch files arrive here (or flow.inbox: a file:// or fsspec URL)
  data/batches/      every ingested batch, under a stable name; never deleted
  data/quarantine/   batches that failed validation, each with <name>.report.json and .summary.md
  data/answers/      each processed batch's answers, <name>.csv (flow.answers: elsewhere)
  state/ledger.json  the batches, the accuracy matrices, the cycle history, and the two
                     versions that matter: the challenger (latest learned) and the champion
  state/systems/vNNNN/  saved systems (kcm.persist)
  state/eval/        the held-out evaluation views, the task and the class groups (meta.json)
  state/runs/<batch>/   a cycle's intermediate results (routing, large-model chunks)
  state/large_cache.sqlite  every large-model answer, by input, hint and model
```

The ledger is rewritten atomically (temp file + rename): it is the commit point of a cycle.
The ledgers it replaces are kept, newest first, as ``state/backups/ledger.json.1`` to ``.5``;
a ledger that cannot be read stops the run naming them (``kcm doctor --repair`` restores
the newest good one).
Vocabulary (as in MLflow's registry): the **challenger** is the latest learned version, which
learning continues from; the **champion** is the version that answers traffic (the promotion
gate, or a person, moves it). With the registry on, MLflow's ``champion`` alias is the
authority and the ledger's copy is reconciled from it at the start of every run.
"""

from __future__ import annotations

import json
import logging
import os
import uuid
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from kcm.data.batch import Batch, Task, batch_from_frame
from kcm.data.sources import read_table
from kcm.errors import EnvironmentFault, NoWorkspace
from kcm.project import slug

log = logging.getLogger(__name__)

BatchStatus = Literal["ingested", "processed", "quarantined"]
#: how many replaced ledgers ``save_ledger`` keeps (``state/backups/ledger.json.<n>``)
LEDGER_BACKUPS = 5


class LedgerDamaged(EnvironmentFault):
    """The ledger cannot be read, or disagrees with the workspace's files."""


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write, fsync, rename, fsync the folder: after a crash at any point ``path`` holds
    either its old content or all of the new (never part of it)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")
    with open(tmp, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)
    fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode())


def _plain(value: Any) -> Any:
    """numpy scalars and arrays in a cycle report, as JSON values."""
    import numpy as np

    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


class BatchRecord(BaseModel):
    """One ingested batch file."""

    model_config = ConfigDict(extra="forbid")

    status: BatchStatus = "ingested"
    sha256: str
    source: str | None = None  # the inbox file it came from, by its original name
    source_size: int | None = None  # and its size and modification time there, so that a
    source_mtime: float | None = None  # file left in a read-only inbox is not read again
    ingested_at: str | None = None
    at: str | None = None  # when it was processed or quarantined
    version: int | None = None  # the system version learned from it
    reason: str | None = None  # why it was quarantined
    failures: int = 0  # cycles of this batch that failed after validation
    last_error: str | None = None
    dvc_file: str | None = None
    dvc_md5: str | None = None
    dvc_remote: str | None = None
    dvc_remote_url: str | None = None


class Ledger(BaseModel):
    """What the workspace has done. ``cycles`` holds each cycle's report (kcm.steps.evaluate
    and register write it) without the per-class arrays."""

    model_config = ConfigDict(extra="forbid")

    batches: dict[str, BatchRecord] = Field(default_factory=dict)
    order: list[str] = Field(default_factory=list)
    cycles: list[dict[str, Any]] = Field(default_factory=list)
    challenger: int | None = None
    champion: int | None = None
    matrix: dict[str, Any] = Field(default_factory=dict)
    matrix_small_only: dict[str, Any] = Field(default_factory=dict)
    matrix_small: dict[str, Any] = Field(default_factory=dict)
    created_at: str | None = None
    dataset: str | None = None
    workspace_id: str = Field(default_factory=lambda: uuid.uuid4().hex)
    project: str | None = None  # kcm.project: the names it was created / first registered with
    model_name: str | None = None

    @model_validator(mode="before")
    @classmethod
    def _legacy_names(cls, data: Any) -> Any:
        """Ledgers written before the vocabulary was unified said current / serving."""
        if isinstance(data, dict):
            data = dict(data)
            if "current" in data:
                data.setdefault("challenger", data.pop("current"))
            if "serving" in data:
                data.setdefault("champion", data.pop("serving"))
            if "model_name" not in data:  # before projects had names: the name it registered
                named = [(c.get("mlflow") or {}).get("model_name") for c in data.get("cycles", [])]
                data["model_name"] = next((n for n in reversed(named) if n), None)
        return data

    def with_status(self, status: BatchStatus) -> list[str]:
        return [n for n in self.order if self.batches[n].status == status]

    @property
    def pending(self) -> list[str]:
        return self.with_status("ingested")

    @property
    def answering_version(self) -> int | None:
        """The version that answers traffic: the champion (v0, untrained, before any)."""
        return self.champion if self.champion is not None else self.challenger

    def champion_report(self) -> dict[str, Any] | None:
        """The cycle report of the champion version (what the gate compares against)."""
        return next((c for c in reversed(self.cycles) if c.get("version") == self.champion), None)


class Workspace:
    def __init__(self, root: str | Path, inbox: str | None = None) -> None:
        self.root = Path(root).resolve()
        self.inbox = inbox if inbox is not None else str(self.root / "data" / "inbox")
        if "://" not in self.inbox and not Path(self.inbox).is_absolute():
            self.inbox = str(self.root / self.inbox)

    def rel(self, path: str | Path) -> str:
        """How the ledger and reports name a path: relative to the workspace when inside it
        (a moved or copied workspace goes on), else as given (a URL, another folder)."""
        if "://" in str(path):
            return str(path)
        p = Path(path).resolve()
        return str(p.relative_to(self.root)) if p.is_relative_to(self.root) else str(p)

    def path(self, name: str | Path) -> Path:
        """The inverse of ``rel``: a workspace-relative name as a path."""
        return self.root / name

    # folders
    @property
    def batches(self) -> Path:
        return self.root / "data" / "batches"

    @property
    def quarantine(self) -> Path:
        return self.root / "data" / "quarantine"

    @property
    def state(self) -> Path:
        return self.root / "state"

    @property
    def eval_dir(self) -> Path:
        return self.state / "eval"

    @property
    def cache_dir(self) -> Path:
        return self.state

    def run_dir(self, batch: str) -> Path:
        return self.state / "runs" / batch

    def system_dir(self, version: int) -> Path:
        return self.state / "systems" / f"v{version:04d}"

    def make_dirs(self) -> None:
        for p in (self.batches, self.quarantine, self.state / "systems", self.eval_dir):
            p.mkdir(parents=True, exist_ok=True)
        if "://" not in self.inbox:
            Path(self.inbox).mkdir(parents=True, exist_ok=True)

    # ledger
    @property
    def ledger_path(self) -> Path:
        return self.state / "ledger.json"

    def exists(self) -> bool:
        return self.ledger_path.is_file()

    def require(self) -> None:
        """Raise ``NoWorkspace`` (naming the folder and ``kcm init``) unless one is here."""
        if not self.exists():
            raise NoWorkspace.of(self.root)

    def ledger_backups(self) -> list[Path]:
        """The kept ledgers, newest first."""
        return [
            p
            for n in range(1, LEDGER_BACKUPS + 1)
            if (p := self.state / "backups" / f"ledger.json.{n}").is_file()
        ]

    def load_ledger(self) -> Ledger:
        if not self.ledger_path.is_file():
            return Ledger()
        try:
            raw = json.loads(self.ledger_path.read_text())
            ledger = Ledger.model_validate(raw)
        except ValueError as err:  # JSON or schema: a torn or foreign file
            first = str(err).strip().splitlines()[0]
            raise LedgerDamaged(
                f"{self.ledger_path} cannot be read ({type(err).__name__}: {first}): run "
                f"`kcm doctor --repair --workdir {self.root}` to restore the newest good backup "
                f"({len(self.ledger_backups())} kept in {self.state / 'backups'})"
            ) from err
        if "workspace_id" not in raw:  # written before ids existed: fix one id, once
            self.save_ledger(ledger)
        return ledger

    def save_ledger(self, ledger: Ledger, backup: bool = True) -> None:
        """Write the ledger atomically, keeping the one it replaces as backup 1 (a hard
        link: the replaced file's content stays there) and shifting the older ones."""
        text = json.dumps(ledger.model_dump(), indent=1, default=_plain)
        if backup and self.ledger_path.is_file():
            backups = self.state / "backups"
            backups.mkdir(parents=True, exist_ok=True)
            for n in range(LEDGER_BACKUPS - 1, 0, -1):
                older = backups / f"ledger.json.{n}"
                if older.exists():
                    os.replace(older, backups / f"ledger.json.{n + 1}")
            try:
                os.link(self.ledger_path, backups / "ledger.json.1")
            except OSError:  # a file system without hard links
                atomic_write_bytes(backups / "ledger.json.1", self.ledger_path.read_bytes())
        atomic_write_text(self.ledger_path, text)

    def claim_identity(self) -> bool:
        """A copy of a workspace whose original is still in place gets an identity of its
        own (a new ``workspace_id``), so that nothing done here (registry commands, alias
        moves) touches the original's; a moved workspace keeps its identity. Where the
        workspace was last used is kept in ``state/location`` (not in the ledger, which names
        no path outside the workspace). Returns True when a new identity was given."""
        where = self.state / "location"
        last = where.read_text().strip() if where.is_file() else None
        if last == str(self.root):
            return False
        ledger = self.load_ledger()
        copy = False
        if last is not None:
            try:
                original = Workspace(last)
                copy = original.exists() and (
                    original.load_ledger().workspace_id == ledger.workspace_id
                )
            except (OSError, EnvironmentFault):  # an unreadable original is not in place
                copy = False
        if copy:
            log.warning(
                "%s is a copy of %s: it gets an identity of its own (its registry commands "
                "and versions never touch the original's)",
                self.root,
                last,
            )
            ledger.workspace_id = uuid.uuid4().hex
            # and names of its own: it registers into a model of its own
            ledger.project, ledger.model_name = slug(self.root.name), None
            self.save_ledger(ledger)
        atomic_write_text(where, str(self.root))
        return copy

    def begin_run(self) -> str:
        """A new run id (``state/run``), read by every step and process of the run: the
        per-run spend caps count what this run spent."""
        run = uuid.uuid4().hex[:12]
        atomic_write_text(self.state / "run", run)
        return run

    def run_id(self) -> str:
        p = self.state / "run"
        return p.read_text().strip() if p.is_file() else "none"

    def next_version(self) -> int:
        existing = [int(p.name[1:]) for p in (self.state / "systems").glob("v[0-9]*") if p.is_dir()]
        return max(existing, default=-1) + 1

    # readers of what bootstrap wrote
    def meta(self) -> dict[str, Any]:
        """The task, class groups, data summary and large-model description (meta.json)."""
        path = self.eval_dir / "meta.json"
        if not path.is_file():
            raise FileNotFoundError(f"{self.root} has no system yet: run bootstrap first")
        return dict(json.loads(path.read_text()))

    def task(self) -> Task:
        return Task.from_dict(self.meta()["task"])

    def groups(self) -> dict[int, str]:
        """Class index -> many / medium / few."""
        return {int(k): v for k, v in self.meta()["groups"].items()}

    def view(self, name: str, task: Task | None = None) -> Batch:
        """A held-out evaluation view: ``traffic``, ``balanced`` or (with classes held back
        from the task) ``out_of_scope``."""
        task = task or self.task()
        df = read_table(self.eval_dir / f"{name}.parquet", str_cols=(task.label_col,))
        return batch_from_frame(df, task, name)

    def load_batch(self, name: str, task: Task | None = None) -> Batch:
        """A validated batch's accepted rows (written by the validate step)."""
        task = task or self.task()
        df = read_table(
            self.run_dir(name) / "clean.parquet", str_cols=(task.label_col, task.eval_col)
        )
        return batch_from_frame(df, task, name)
