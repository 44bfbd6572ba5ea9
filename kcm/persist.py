"""Save and load a whole CollaborationSystem as one folder, without pickle.

Layout: ``meta.json`` (config, task, counters, backend description), ``featurizer.npz``,
``small.safetensors``, ``judge.safetensors`` + ``judge.npz`` (input scaling), ``replay.npz``
and ``large.npz`` (fitted head, if any). Tensors are written with safetensors and arrays with
``numpy.savez_compressed``; loading never unpickles. The folder is written under a temporary
name and renamed into place, so a reader never sees half a model.
"""

from __future__ import annotations

import json
import os
import shutil
import uuid
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp
import torch

from kcm.config import config_from_dict, config_to_dict
from kcm.data.batch import Task
from kcm.distill.records import Records
from kcm.errors import KCMError
from kcm.features import Features, make_featurizer
from kcm.judge import make_judge
from kcm.models.large import LargeModel, make_large_model
from kcm.system import CollaborationSystem

FORMAT = 1
SPARSE_KEY = "embed.weight"


def _save_tensors(module: torch.nn.Module, path: Path) -> None:
    from safetensors.torch import save_file

    sd = {k: v.detach().contiguous() for k, v in module.state_dict().items()}
    w = sd.pop(SPARSE_KEY, None)
    if w is not None:  # most hashed n-gram rows are never touched: store the used ones only
        rows = torch.nonzero(w.abs().sum(dim=1)).flatten()
        sd["embed.rows"] = rows
        sd["embed.values"] = w[rows].contiguous()
        sd["embed.shape"] = torch.tensor(list(w.shape))
    save_file(sd, str(path))


def _load_tensors(path: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    sd = load_file(str(path))
    if "embed.rows" in sd:
        shape = tuple(int(s) for s in sd.pop("embed.shape").tolist())
        w = torch.zeros(shape, dtype=sd["embed.values"].dtype)
        w[sd.pop("embed.rows")] = sd.pop("embed.values")
        sd[SPARSE_KEY] = w
    return sd


def _records_arrays(r: Records) -> dict[str, np.ndarray]:
    out: dict[str, np.ndarray] = {
        "dense": r.features.dense,
        "y": r.y,
        "truth": r.truth,
        "large": r.large,
        "judge": r.judge,
        "cycle": r.cycle,
    }
    small = r.features.small
    if sp.issparse(small):
        csr = sp.csr_matrix(small)
        out.update(
            csr_data=csr.data,
            csr_indices=csr.indices,
            csr_indptr=csr.indptr,
            csr_shape=np.array(csr.shape),
        )
    else:
        out["small"] = np.asarray(small)
    return out


def _records_from(a: Any) -> Records:
    if "csr_data" in a:
        small: Any = sp.csr_matrix(
            (a["csr_data"], a["csr_indices"], a["csr_indptr"]), shape=tuple(a["csr_shape"])
        )
    else:
        small = a["small"]
    return Records(
        features=Features(small=small, dense=a["dense"]),
        y=a["y"],
        truth=a["truth"],
        large=a["large"],
        judge=a["judge"],
        cycle=a["cycle"],
    )


def save_system(system: CollaborationSystem, path: str | Path) -> Path:
    """Write ``system`` to the folder ``path`` (which must not exist yet), atomically."""
    path = Path(path)
    if path.exists():
        raise KCMError(f"{path} exists already: save each version to a new folder")
    if system.featurizer_ is None or system.small_ is None:
        raise KCMError("call CollaborationSystem.setup(warmup) before saving it")
    tmp = path.with_name(f".{path.name}.tmp-{uuid.uuid4().hex[:8]}")
    tmp.mkdir(parents=True)
    try:
        judge = system.judge_
        meta: dict[str, Any] = {
            "format": FORMAT,
            "config": config_to_dict(system.cfg),
            "task": system.task.to_dict(),
            "cycle": system.cycle_,
            "trained": system.trained_,
            "large": {"name": system.large.name, **system.large.describe()},
            "small": {
                "n_features": system.small_.n_features_,
                "step": system.small_._step,
                "sparse": bool(system.small_.net_ is not None and system.small_.net_.sparse),
            },
            "judge": None
            if judge is None
            else {
                "kind": system.cfg.judge.kind,
                "target": judge.target,
                "in_dim": len(judge.mean_),
                "n_classes": judge.n_classes_,  # type: ignore[arg-type]
            },
        }
        np.savez_compressed(tmp / "featurizer.npz", **system.featurizer_.state())
        if system.small_.net_ is not None:
            _save_tensors(system.small_.net_, tmp / "small.safetensors")
        if judge is not None and judge.net_ is not None:
            _save_tensors(judge.net_, tmp / "judge.safetensors")
            np.savez_compressed(tmp / "judge.npz", mean=judge.mean_, std=judge.std_)
        if system.replay_.records_ is not None:
            np.savez_compressed(tmp / "replay.npz", **_records_arrays(system.replay_.records_))
        large_state = system.large.state()
        if large_state:
            np.savez_compressed(tmp / "large.npz", **large_state)
        (tmp / "meta.json").write_text(json.dumps(meta, indent=2))
        os.replace(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return path


def load_system(
    path: str | Path, large: LargeModel | None = None, cache_dir: str | Path | None = None
) -> CollaborationSystem:
    """Rebuild a saved system. ``large`` replaces the saved large-model backend (e.g. a
    callable in tests); otherwise it is rebuilt from the saved config and state."""
    path = Path(path)
    meta_path = path / "meta.json"
    if not meta_path.is_file():
        raise KCMError(f"{path} holds no saved kcm system (no meta.json): check the path")
    meta = json.loads(meta_path.read_text())
    if meta.get("format") != FORMAT:
        raise KCMError(f"{path}: saved with format {meta.get('format')}, this kcm reads {FORMAT}")
    cfg = config_from_dict(meta["config"], str(meta_path))
    task = Task.from_dict(meta["task"])
    if large is None:
        large = make_large_model(cfg, task, cache_dir=cache_dir)
        if (path / "large.npz").is_file():
            with np.load(path / "large.npz", allow_pickle=False) as a:
                large.load_state({k: a[k] for k in a.files})
    system = CollaborationSystem(task, cfg, large)
    feat = make_featurizer(task, cfg.features, cfg.seed)
    with np.load(path / "featurizer.npz", allow_pickle=False) as a:
        feat.load_state({k: a[k] for k in a.files})
    system.featurizer_ = feat
    system.small_ = system.new_small()
    system.small_._step = int(meta["small"].get("step", 0))
    if (path / "small.safetensors").is_file():
        n_features = meta["small"]["n_features"]
        dummy = (
            sp.csr_matrix((1, n_features)) if meta["small"]["sparse"] else np.zeros((1, n_features))
        )
        system.small_._init(dummy)
        assert system.small_.net_ is not None
        system.small_.net_.load_state_dict(_load_tensors(path / "small.safetensors"))
        system.small_.net_.eval()
    if meta["judge"] is not None:
        j = meta["judge"]
        judge = make_judge(cfg.judge, seed=cfg.seed)
        out_dim = 2 if j["target"] == "correctness" else j["n_classes"]
        judge.net_ = judge._build(j["in_dim"], out_dim)
        judge.net_.load_state_dict(_load_tensors(path / "judge.safetensors"))
        judge.net_.eval()
        with np.load(path / "judge.npz", allow_pickle=False) as a:
            judge.mean_, judge.std_ = a["mean"], a["std"]
        judge.n_classes_ = j["n_classes"]
        system.judge_ = judge
    if (path / "replay.npz").is_file():
        with np.load(path / "replay.npz", allow_pickle=False) as a:
            system.replay_.records_ = _records_from({k: a[k] for k in a.files})
    system.cycle_ = int(meta["cycle"])
    system.trained_ = bool(meta["trained"])
    return system
