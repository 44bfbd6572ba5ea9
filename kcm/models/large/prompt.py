"""The chat prompt kcm sends an LLM to pick one label (the openai backend sends it; the replay
backend prices the prompt a recorded model would have been sent)."""

from __future__ import annotations

from typing import Any

import numpy as np

from kcm.data.batch import OUT_OF_SCOPE_LABEL, Task


def hint_text(hint: np.ndarray, labels: Any, top_k: int) -> str:
    top = np.argsort(-hint)[:top_k]
    return "; ".join(f"{labels[i]} ({hint[i]:.2f})" for i in top)


def chat_messages(
    task: Task, item: Any, hint: np.ndarray | None, top_k: int = 3, offer_oos: bool = False
) -> list[dict[str, str]]:
    """The system message (the label list) and the user message (the input, and the small
    model's top-``top_k`` guess when ``hint`` is given)."""
    labels = ", ".join(task.label_names)
    system = (
        "You are a classifier. Choose exactly one label for the input from this list: "
        f"{labels}. Reply with the label only, spelled exactly as in the list."
    )
    if offer_oos:
        system += f" If no label fits the input, reply {OUT_OF_SCOPE_LABEL}."
    if isinstance(item, np.ndarray):
        cols = task.feature_cols or tuple(f"x{i}" for i in range(len(item)))
        shown = ", ".join(f"{c}={v:.4g}" for c, v in zip(cols, item, strict=False))
    else:
        shown = str(item)
    user = f"Input: {shown}\n"
    if hint is not None:
        user += (
            "A smaller model's guess (label, confidence): "
            f"{hint_text(hint, task.label_names, top_k)}. It may be wrong.\n"
        )
    return [{"role": "system", "content": system}, {"role": "user", "content": user + "Label:"}]
