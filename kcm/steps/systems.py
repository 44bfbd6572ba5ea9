"""The systems a step works with, loaded with the run's settings in effect.

A step loads the champion (what answers traffic) or a learned version through these functions,
always with the configuration of the current run: run settings (routing, hints, distillation,
evaluation...) take effect on the next cycle of an existing workspace, and a setting frozen
with the learned versions that differs is refused with a ConfigError naming it.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime

from kcm.budget import SpendGuard
from kcm.config import KCMConfig, config_to_dict
from kcm.models.large import LargeModel
from kcm.persist import check_built, load_large, load_system
from kcm.system import CollaborationSystem
from kcm.workspace import Workspace

# per-process cache: a task in another process simply loads again
_LARGE: dict[str, LargeModel] = {}
_GUARDS: dict[tuple[str, ...], SpendGuard] = {}


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


def caps(cfg: KCMConfig, purpose: str) -> tuple[float | None, float | None]:
    """The spend caps of ``purpose`` ("serve" or "evaluate"): per run, per rolling day."""
    b = cfg.large.budget
    return (
        (b.per_run, b.per_day) if purpose == "serve" else (b.evaluate_per_run, b.evaluate_per_day)
    )


def spend_guard(ws: Workspace, cfg: KCMConfig, purpose: str, run: str | None = None) -> SpendGuard:
    """The workspace's spend record for ``purpose`` in this run (state/spend.sqlite); ``run``:
    another run's id than the workspace's current one (a scoring job's)."""
    per_run, per_day = caps(cfg, purpose)
    key = (str(ws.root), purpose, run or ws.run_id(), str(per_run), str(per_day))
    if key not in _GUARDS:
        _GUARDS[key] = SpendGuard(purpose, key[2], per_run, per_day, ws.state / "spend.sqlite")
    return _GUARDS[key]


def paying(
    ws: Workspace,
    cfg: KCMConfig,
    purpose: str,
    large: LargeModel | None = None,
    run: str | None = None,
) -> LargeModel:
    """A session of the large model for ``purpose``: a ledger of its own (what it paid,
    exactly), the spend caps of that purpose, and the workspace's rate-limit clocks (every
    process of the run paces against the same limits)."""
    view = (large or large_model(ws, cfg)).session()
    if any(c is not None for c in caps(cfg, purpose)):
        view.guard = spend_guard(ws, cfg, purpose, run)
    view.limits_path = str(ws.state / "limits.sqlite")
    return view


def release(ws: Workspace) -> None:
    """Close and forget this process's large models and spend records of ``ws`` (opened
    again by the next step): every run starts so, after ``kcm.doctor`` checked the stores."""
    for key in [k for k in _LARGE if k.startswith(f"{ws.root}|")]:
        _LARGE.pop(key).cache.close()
    for gkey in [k for k in _GUARDS if k[0] == str(ws.root)]:
        _GUARDS.pop(gkey).close()


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
