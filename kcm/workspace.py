"""The project folder a deployed system lives in, and its ledger.

```
<workdir>/
  data/inbox/        new batch files arrive here (or flow.inbox: a file:// or fsspec URL)
  data/batches/      every ingested batch, under a stable name; never deleted
  data/quarantine/   batches that failed validation, each with <name>.report.json and .summary.md
  state/ledger.json  processed batches, the accuracy matrix, the cycle history, the latest and
                     the serving (champion) version
  state/systems/vNNNN/  saved systems (kcm.persist); the ledger names the current one
  state/eval/        the held-out evaluation views and the class groups
  state/runs/<batch>/   a cycle's intermediate results (routing, large-model chunks)
  state/large_cache.sqlite  every large-model answer, by input hash
```

The ledger is rewritten atomically (temp file + rename): it is the commit point of a cycle.
"""

from __future__ import annotations

import json
import os
import uuid
from pathlib import Path
from typing import Any


def atomic_write_text(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


class Workspace:
    def __init__(self, root: str | Path, inbox: str | None = None) -> None:
        self.root = Path(root).resolve()
        self.inbox = inbox if inbox is not None else str(self.root / "data" / "inbox")
        if "://" not in self.inbox and not Path(self.inbox).is_absolute():
            self.inbox = str(self.root / self.inbox)

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

    def load_ledger(self) -> dict[str, Any]:
        if not self.ledger_path.is_file():
            return {
                "batches": {},
                "order": [],
                "cycles": [],
                "current": None,
                "matrix": {},
                "matrix_small_only": {},
            }
        return json.loads(self.ledger_path.read_text())

    def save_ledger(self, ledger: dict[str, Any]) -> None:
        atomic_write_text(self.ledger_path, json.dumps(ledger, indent=1, default=float))

    def current_system(self) -> Path:
        version = self.load_ledger().get("current")
        if version is None:
            raise FileNotFoundError(f"{self.root} has no system yet: run bootstrap first")
        return self.system_dir(int(version))

    def serving_system(self) -> Path:
        """The version that answers traffic: the champion (the latest learned version may
        have been refused by the promotion gate)."""
        ledger = self.load_ledger()
        version = ledger.get("serving", ledger.get("current"))
        if version is None:
            raise FileNotFoundError(f"{self.root} has no system yet: run bootstrap first")
        return self.system_dir(int(version))

    def next_version(self) -> int:
        existing = [int(p.name[1:]) for p in (self.state / "systems").glob("v[0-9]*") if p.is_dir()]
        return max(existing, default=-1) + 1
