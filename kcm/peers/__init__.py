"""The published online-distillation policies kcm is measured against (``kcm bench``).

- ``nc_margin``, ``nc_entropy``, ``nc_qbc``: neural caching (Ramírez et al., 2023);
- ``ocats``: OCaTS's k-NN student (Stogiannidis et al., EMNLP 2023 Findings);
- ``online_cascade``: online cascade learning (Nie et al., ICML 2024).

Each module's docstring says what is faithful to the paper and its reference code and what is
adapted. ``PEERS`` is the table: a policy class and the operating points it is swept over
(the bench compares every method at equal cumulative calls along these sweeps).
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from typing import Any

from kcm.peers.base import OnlinePolicy


@dataclass(frozen=True)
class Peer:
    """One peer: ``target`` "module:Class", fixed ``params``, and the ``sweep`` of operating
    points (each a dict of parameters) that trades accuracy for calls."""

    name: str
    target: str
    params: dict[str, Any] = field(default_factory=dict)
    sweep: tuple[dict[str, Any], ...] = ()
    budgeted: bool = False  # takes a fixed budget of calls (neural caching)

    def make(self, **point: Any) -> OnlinePolicy:
        module, _, attr = self.target.partition(":")
        cls = getattr(importlib.import_module(module), attr)
        return cls(**{**self.params, **point})


_NC = "kcm.peers.neural_caching:NeuralCaching"
PEERS: dict[str, Peer] = {
    p.name: p
    for p in (
        Peer(
            "nc_margin",
            _NC,
            {"criterion": "margin"},
            tuple({"threshold": t} for t in (0.01, 0.03, 0.1, 0.2, 0.4)),
            budgeted=True,
        ),
        Peer(
            "nc_entropy",
            _NC,
            {"criterion": "entropy"},
            tuple({"threshold": t} for t in (0.1, 0.25, 0.45, 0.65, 0.85)),
            budgeted=True,
        ),
        Peer(
            "nc_qbc",
            _NC,
            {"criterion": "qbc"},
            tuple({"threshold": t} for t in (0, 1, 2, 3)),
            budgeted=True,
        ),
        Peer(
            "ocats",
            "kcm.peers.ocats:OCaTS",
            {},
            tuple({"t_h": h, "t_c": c} for h in (0.5, 1.0, 1.5) for c in (0.7, 0.85, 0.95)),
        ),
        Peer(
            "online_cascade",
            "kcm.peers.cascade:OnlineCascade",
            {},
            tuple({"mu": m} for m in (0.003, 0.01, 0.03, 0.1)),
        ),
    )
}

__all__ = ["PEERS", "OnlinePolicy", "Peer"]
