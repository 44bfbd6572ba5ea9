"""Running the continual loop without an orchestrator, and facts about the machine."""

from __future__ import annotations

import platform
import tempfile
from pathlib import Path
from typing import Any

from kcm.config import KCMConfig


def machine() -> str:
    import torch

    return (
        f"{platform.machine()} {platform.system()}, {torch.get_num_threads()} torch threads, "
        f"python {platform.python_version()}, torch {torch.__version__}"
    )


def run_in_process(cfg: KCMConfig, workdir: str | Path) -> dict[str, Any]:
    """Feed the configured stream into a temporary inbox and process it with the same
    pipeline steps the Prefect flows run, in this process (no Prefect)."""
    from kcm import pipeline
    from kcm.workspace import Workspace

    with tempfile.TemporaryDirectory(prefix="kcm-inbox-") as inbox:
        ws = Workspace(workdir, inbox)
        pipeline.feed(cfg, inbox)
        return pipeline.run_pipeline(cfg, ws)
