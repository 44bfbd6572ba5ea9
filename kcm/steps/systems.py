"""The systems a step works with, loaded with the run's settings in effect.

A step loads the champion (what answers traffic) or a learned version through these functions,
always with the configuration of the current run: run settings (routing, hints, distillation,
evaluation...) take effect on the next cycle of an existing workspace, and a setting frozen
with the learned versions that differs is refused with a ConfigError naming it.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime

from kcm.config import KCMConfig, config_to_dict
from kcm.models.large import LargeModel
from kcm.persist import check_built, load_large, load_system
from kcm.system import CollaborationSystem
from kcm.workspace import Workspace

# per-process cache: a task in another process simply loads again
_LARGE: dict[str, LargeModel] = {}


def now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def large_model(ws: Workspace, cfg: KCMConfig) -> LargeModel:
    """The workspace's large model with the run's ``large`` settings, loaded once per process
    and settings (its head is fitted once, at bootstrap)."""
    key = f"{ws.root}|{json.dumps(config_to_dict(cfg)['large'], sort_keys=True)}"
    if key not in _LARGE:
        check_built(ws.system_dir(0), cfg, str(ws.root))
        _LARGE[key] = load_large(ws.system_dir(0), cfg, ws.task(), cache_dir=ws.cache_dir)
    return _LARGE[key]


def release(ws: Workspace) -> None:
    """Close and forget this process's large models of ``ws`` (their answer store is opened
    again by the next step): every run starts so, after ``kcm.doctor`` checked the stores."""
    for key in [k for k in _LARGE if k.startswith(f"{ws.root}|")]:
        _LARGE.pop(key).cache.close()


def system_at(ws: Workspace, cfg: KCMConfig, version: int) -> CollaborationSystem:
    """Learned version ``version`` with the run's settings; its embedding cache is the
    workspace's (``state/embeddings.sqlite``), shared by every step."""
    large = large_model(ws, cfg)
    return load_system(ws.system_dir(version), large=large, cache_dir=ws.cache_dir, cfg=cfg)


def challenger(ws: Workspace, cfg: KCMConfig) -> CollaborationSystem:
    """The latest learned version: what learning continues from."""
    version = ws.load_ledger().challenger
    if version is None:
        raise FileNotFoundError(f"{ws.root} has no system yet: run bootstrap first")
    return system_at(ws, cfg, version)


def champion(ws: Workspace, cfg: KCMConfig) -> CollaborationSystem:
    """The version that answers traffic."""
    version = ws.load_ledger().answering_version
    if version is None:
        raise FileNotFoundError(f"{ws.root} has no system yet: run bootstrap first")
    return system_at(ws, cfg, version)
