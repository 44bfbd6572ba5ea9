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
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp
import torch

from kcm.config import KCMConfig, check_frozen, config_from_dict, config_to_dict, with_overrides
from kcm.data.batch import Task
from kcm.defaults import resolved
from kcm.distill.records import Records
from kcm.encoder import model_folder
from kcm.errors import KCMError
from kcm.features import Features, features_kind, make_featurizer
from kcm.judge import make_judge
from kcm.models.large import LargeModel, make_large_model, resolve_backend
from kcm.models.small import SmallModel
from kcm.system import CollaborationSystem

FORMAT = 1
SPARSE_KEY = "embed.weight"

#: the settings that name a local sentence-encoder folder (``load_system(encoder_dirs=...)``)
ENCODER_SETTINGS = ("features.encoder.model_path", "large.embedding_head.model_path")


def save_tensors(tensors: dict[str, torch.Tensor], path: Path) -> None:
    """Write a state_dict with safetensors (sparse embedding rows: only the used ones)."""
    from safetensors.torch import save_file

    sd = {k: v.detach().contiguous() for k, v in tensors.items()}
    w = sd.pop(SPARSE_KEY, None)
    if w is not None:  # most hashed n-gram rows are never touched: store the used ones only
        rows = torch.nonzero(w.abs().sum(dim=1)).flatten()
        sd["embed.rows"] = rows
        sd["embed.values"] = w[rows].contiguous()
        sd["embed.shape"] = torch.tensor(list(w.shape))
    save_file(sd, str(path))


def load_tensors(path: Path) -> dict[str, torch.Tensor]:
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
        "label": r.label,
        "target": r.target,
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
        label=a["label"] if "label" in a else a["y"],  # saved before the names were unified
        target=a["target"] if "target" in a else a["truth"],
        large=a["large"],
        judge=a["judge"],
        cycle=a["cycle"],
    )


def save_small(model: SmallModel, path: Path) -> None:
    """A small model as ``<path>`` (safetensors) + ``<path>.json`` (its meta)."""
    state = model.get_state()
    if not state["tensors"]:
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    save_tensors(state["tensors"], path)
    path.with_suffix(".json").write_text(json.dumps(state["meta"]))


def load_small(model: SmallModel, path: Path) -> SmallModel:
    """Restore ``model`` from ``save_small``'s files; unchanged when there are none."""
    if not path.is_file():
        return model
    meta = json.loads(path.with_suffix(".json").read_text())
    return model.set_state({"meta": meta, "tensors": load_tensors(path)})


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
        judge = None if system.judge_ is None else system.judge_.get_state()
        small = system.small_.get_state()
        meta: dict[str, Any] = {
            "format": FORMAT,
            "config": config_to_dict(system.cfg),
            "task": system.task.to_dict(),
            "cycle": system.cycle_,
            "trained": system.trained_,
            "large": {"name": system.large.name, **system.large.describe()},
            "small": small["meta"],
            "judge": None if judge is None else {"kind": system.cfg.judge.kind, **judge["meta"]},
        }
        np.savez_compressed(tmp / "featurizer.npz", **system.featurizer_.state())
        if small["tensors"]:
            save_tensors(small["tensors"], tmp / "small.safetensors")
        if judge is not None:
            save_tensors(judge["tensors"], tmp / "judge.safetensors")
            np.savez_compressed(tmp / "judge.npz", **judge["arrays"])
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


def saved_config(path: str | Path) -> KCMConfig:
    """The configuration a saved system was built with."""
    meta_path = Path(path) / "meta.json"
    if not meta_path.is_file():
        raise KCMError(f"{path} holds no saved kcm system (no meta.json): check the path")
    meta = json.loads(meta_path.read_text())
    tree = meta["config"]
    # saved before features.kind existed: text versions were built on TF-IDF (numeric tasks
    # ignore the setting)
    text = meta.get("task", {}).get("kind") == "text"
    tree.setdefault("features", {}).setdefault("kind", "tfidf" if text else "auto")
    return config_from_dict(tree, str(meta_path))


def check_built(path: str | Path, cfg: KCMConfig, where: str) -> None:
    """Refuse ``cfg`` when it changes a setting frozen with the system saved at ``path``;
    settings left to kcm (``auto`` / ``null``) are compared as they resolve for its task, so
    a version saved with 32 judge dimensions for TF-IDF matches today's ``null``."""
    task = Task.from_dict(json.loads((Path(path) / "meta.json").read_text())["task"])
    check_frozen(resolved(saved_config(path), task), resolved(cfg, task), where)


def load_system(
    path: str | Path,
    large: LargeModel | None = None,
    cache_dir: str | Path | None = None,
    cfg: KCMConfig | None = None,
    encoder_dirs: Mapping[str, str | Path] | None = None,
) -> CollaborationSystem:
    """Rebuild a saved system. ``cfg``: the run's settings, which take effect (a setting
    frozen with the version must equal the saved one, else a ConfigError names it); default
    the saved settings. ``large`` replaces the saved large-model backend (e.g. one already
    loaded); otherwise it is rebuilt from the settings and the saved state. ``cache_dir``:
    where the embedding cache lives (default beside the large model's answers).
    ``encoder_dirs``: setting of ``ENCODER_SETTINGS`` -> the folder its encoder is read from
    instead (a copy that travelled with an MLflow model; the encoder's fingerprint is its
    content, so a copy matches); the settings themselves stay as built."""
    path = Path(path)
    meta_path = path / "meta.json"
    built = saved_config(path)
    meta = json.loads(meta_path.read_text())
    if meta.get("format") != FORMAT:
        raise KCMError(f"{path}: saved with format {meta.get('format')}, this kcm reads {FORMAT}")
    if cfg is None:
        cfg = built
    else:
        check_built(path, cfg, str(path.parent.parent.parent))
    task = Task.from_dict(meta["task"])
    reads = cfg  # what the encoders are read with: the settings, or their relocated folders
    if encoder_dirs:
        reads = with_overrides(cfg, {k: str(v) for k, v in encoder_dirs.items()})
    if large is None:
        large = load_large(path, reads, task, cache_dir)
    system = CollaborationSystem(task, cfg, large)
    feat = make_featurizer(task, resolved(reads, task), cache_dir or system.embedding_dir())
    with np.load(path / "featurizer.npz", allow_pickle=False) as a:
        feat.load_state({k: a[k] for k in a.files})
    system.featurizer_ = feat
    tensors = (
        load_tensors(path / "small.safetensors") if (path / "small.safetensors").is_file() else {}
    )
    system.small_ = system.new_small().set_state({"meta": meta["small"], "tensors": tensors})
    if meta["judge"] is not None:
        j = meta["judge"]
        with np.load(path / "judge.npz", allow_pickle=False) as a:
            arrays = {k: a[k] for k in a.files}
        if "out_dim" not in j:  # written before get_state existed
            j["out_dim"] = 2 if j["target"] == "correctness" else j["n_classes"]
        judge = make_judge(system.settings.judge, seed=cfg.seed)
        system.judge_ = judge.set_state(
            {"meta": j, "arrays": arrays, "tensors": load_tensors(path / "judge.safetensors")}
        )
    if (path / "replay.npz").is_file():
        with np.load(path / "replay.npz", allow_pickle=False) as a:
            system.replay_.records_ = _records_from({k: a[k] for k in a.files})
    system.cycle_ = int(meta["cycle"])
    system.trained_ = bool(meta["trained"])
    return system


def load_large(
    path: str | Path, cfg: KCMConfig, task: Task, cache_dir: str | Path | None = None
) -> LargeModel:
    """The large model of a saved system, built from ``cfg`` with its fitted state."""
    large = make_large_model(cfg, task, cache_dir=cache_dir)
    state = Path(path) / "large.npz"
    if state.is_file():
        with np.load(state, allow_pickle=False) as a:
            large.load_state({k: a[k] for k in a.files})
    return large


def encoder_folders(system: CollaborationSystem) -> dict[str, Path]:
    """The local encoder folders ``system`` reads, by the setting that names each (empty when
    it reads none, or only the packaged all-MiniLM-L6-v2)."""
    cfg, task = system.cfg, system.task
    named: dict[str, str | None] = {}
    if features_kind(task, cfg) == "encoder":
        named["features.encoder.model_path"] = cfg.features.encoder.model_path
    if resolve_backend(cfg, task) == "embedding-head":
        named["large.embedding_head.model_path"] = cfg.large.embedding_head.model_path
    return {k: model_folder(v, k).resolve() for k, v in named.items() if v}
