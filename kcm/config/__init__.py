"""The one typed configuration of kcm, loaded from ``params.yaml``.

Every section is a pydantic model with ``extra="forbid"``: an unknown or ill-typed key
fails at load time with its dotted path (``judge.hiden``) in the message. DVC stages read
the same file, so there is exactly one place where hyperparameters live. Settings split in
two kinds (``FROZEN``): those a learned version is built from, which an existing workspace
refuses to change, and run settings, which take effect on the next cycle.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from pydantic import Field, ValidationError

from kcm.config.large import (
    BudgetConfig,
    CallableConfig,
    EmbeddingHeadConfig,
    LargeConfig,
    MLPTeacherConfig,
    OpenAIConfig,
    OutOfScopeConfig,
    PriceConfig,
    RateLimitConfig,
    ReplayConfig,
)
from kcm.config.sections import (
    DataConfig,
    DistillConfig,
    EncoderConfig,
    EvalConfig,
    FeaturesConfig,
    FlowConfig,
    GroupsConfig,
    JudgeConfig,
    RoutingConfig,
    Section,
    SmallConfig,
    StreamConfig,
    TextFeaturesConfig,
    ValidateConfig,
)
from kcm.config.tracking import DVCConfig, RegistryConfig, ServingConfig
from kcm.errors import ConfigError


class KCMConfig(Section):
    project: str | None = Field(
        None,
        pattern=r"^[a-z0-9][a-z0-9-]*$",
        description="this project's name on a shared MLflow / Prefect server (lower-case "
        "letters, digits, dashes); default: the workspace folder's name when it was created",
    )
    seed: int = 0
    data: DataConfig = DataConfig()
    features: FeaturesConfig = FeaturesConfig()
    judge: JudgeConfig = JudgeConfig()
    small: SmallConfig = SmallConfig()
    large: LargeConfig = LargeConfig()
    routing: RoutingConfig = RoutingConfig()
    distill: DistillConfig = DistillConfig()
    eval: EvalConfig = EvalConfig()
    validation: ValidateConfig = ValidateConfig()
    flow: FlowConfig = FlowConfig()
    registry: RegistryConfig = RegistryConfig()
    dvc: DVCConfig = DVCConfig()
    serving: ServingConfig = ServingConfig()


def _format_validation_error(err: ValidationError, source: str) -> str:
    lines: list[str] = []
    merged: dict[str, list[str]] = {}  # a union's branches (float | 'auto'): one line per key
    for e in err.errors():
        loc = [str(p) for p in e["loc"]]
        branch = bool(loc) and (loc[-1] in _SCALARS or loc[-1].startswith(("literal[", "is-")))
        path = ".".join(loc[:-1] if branch else loc) or "<root>"
        if e["type"] == "extra_forbidden":
            lines.append(f"{source}: unknown key '{path}': remove it or check its spelling")
        elif branch:
            if path not in merged:
                merged[path] = []
                lines.append(f"{source}: '{path}' = {e.get('input')!r}: " + "\0" + path)
            merged[path].append(e["msg"][0].lower() + e["msg"][1:])
        else:
            lines.append(f"{source}: '{path}' = {e.get('input')!r}: {e['msg']}")
    out = []
    for line in lines:
        if "\0" in line:
            head, path = line.split("\0")
            line = head + "; or ".join(merged[path])
        out.append(line)
    return "\n".join(out)


_SCALARS = ("float", "int", "str", "bool", "none")


def set_dotted(tree: dict[str, Any], dotted: str, value: Any) -> None:
    keys = dotted.split(".")
    node = tree
    for key in keys[:-1]:
        child = node.setdefault(key, {})
        if not isinstance(child, dict):
            raise ConfigError(f"override '{dotted}': '{key}' is a value, not a section")
        node = child
    node[keys[-1]] = value


def parse_override(text: str) -> tuple[str, Any]:
    """Parse ``a.b=value`` (value read as YAML, so 0.95, true, [1, 2] and null work)."""
    if "=" not in text:
        raise ConfigError(f"override '{text}' has no '=': write it as section.key=value")
    key, raw = text.split("=", 1)
    key = key.strip()
    if not key:
        raise ConfigError(f"override '{text}' has no key: write it as section.key=value")
    if not raw.strip():
        return key, None
    try:
        return key, yaml.safe_load(raw)
    except yaml.YAMLError as err:
        problem = getattr(err, "problem", None) or type(err).__name__
        raise ConfigError(
            f"override '{text}': the value is not valid YAML ({problem}); quote it as a "
            f"string (--set '{key}=\"{raw}\"') or close its brackets"
        ) from err


def config_from_dict(tree: dict[str, Any], source: str = "config") -> KCMConfig:
    try:
        return KCMConfig.model_validate(tree)
    except ValidationError as err:
        raise ConfigError(_format_validation_error(err, source)) from None


def load_config(
    path: str | Path | None = None,
    overrides: list[str] | dict[str, Any] | None = None,
) -> KCMConfig:
    """Load ``params.yaml`` (or the defaults when ``path`` is None) and apply overrides.

    ``overrides`` is a list of ``"section.key=value"`` strings (the CLI's ``--set``) or a
    mapping of dotted keys to values.
    """
    tree: dict[str, Any] = {}
    source = "defaults"
    if path is not None:
        p = Path(path)
        if not p.is_file():
            raise ConfigError(
                f"config file {p} does not exist: pass --config PATH to a params.yaml"
            )
        try:
            loaded = yaml.safe_load(p.read_text()) or {}
        except yaml.YAMLError as err:
            raise ConfigError(f"{p} is not valid YAML: {err}") from None
        if not isinstance(loaded, dict):
            raise ConfigError(f"{p} must hold a mapping of sections, not {type(loaded).__name__}")
        tree = loaded
        source = str(p)
    items = (
        overrides.items() if isinstance(overrides, dict) else map(parse_override, overrides or [])
    )
    for key, value in items:
        set_dotted(tree, key, value)
    return config_from_dict(tree, source)


def config_to_dict(cfg: KCMConfig) -> dict[str, Any]:
    """The resolved configuration as plain JSON-able data."""
    return cfg.model_dump(mode="json")


def with_overrides(cfg: KCMConfig, overrides: list[str] | dict[str, Any]) -> KCMConfig:
    """A copy of ``cfg`` with ``section.key=value`` overrides applied and validated."""
    tree = config_to_dict(cfg)
    items = overrides.items() if isinstance(overrides, dict) else map(parse_override, overrides)
    for key, value in items:
        set_dotted(tree, key, value)
    return config_from_dict(tree, "overrides")


# -- settings frozen with a learned version vs settings of the run ------------------------------
#: What a learned version is built from: the task and its held-out views, the featurizer, the
#: judge's and small model's architecture, the large backend and its model. Changing one on an
#: existing workspace is refused. Every other setting (routing, hint switches, distillation and
#: training weights, evaluation, validation, flow, registry, DVC) is a run setting: it takes
#: effect on the next cycle and is recorded with the version it produced.
FROZEN: tuple[str, ...] = (
    "seed",
    "data.dataset",
    "data.train",
    "data.test",
    "data.text_col",
    "data.feature_cols",
    "data.label_col",
    "data.test_fraction",
    "data.pretrain_fraction",
    "data.imbalance_factor",
    "data.out_of_scope_classes",
    "data.groups",
    "eval.traffic_size",
    "features",
    "judge.kind",
    "judge.target",
    "judge.hidden",
    "judge.grid",
    "judge.k",
    "judge.grid_eps",
    "judge.memory_space",
    "small.hidden",
    "large.backend",
    "large.embedding_head.model_path",
    "large.embedding_head.max_length",
    "large.embedding_head.epochs",
    "large.embedding_head.lr",
    "large.embedding_head.weight_decay",
    "large.mlp_teacher",
    "large.openai.base_url",
    "large.openai.model",
    "large.openai.temperature",
    "large.openai.top_k",
    "large.callable.target",
    "large.replay.input_col",
    "large.replay.answer_col",
)


def flatten(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"a": {"b": 1}}`` -> ``{"a.b": 1}``."""
    out: dict[str, Any] = {}
    for k, v in tree.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(flatten(v, key + "."))
        else:
            out[key] = v
    return out


def is_frozen(key: str) -> bool:
    return any(key == f or key.startswith(f + ".") for f in FROZEN)


def frozen_settings(cfg: KCMConfig) -> dict[str, Any]:
    """The frozen part of ``cfg`` as dotted keys."""
    return {k: v for k, v in flatten(config_to_dict(cfg)).items() if is_frozen(k)}


def check_frozen(built: KCMConfig, requested: KCMConfig, where: str = "the workspace") -> None:
    """Refuse ``requested`` when it changes a setting frozen with ``built``'s versions."""
    old, new = frozen_settings(built), frozen_settings(requested)
    changed = sorted(k for k in old.keys() | new.keys() if old.get(k) != new.get(k))
    if changed:
        what = ", ".join(f"{k}={new.get(k)!r} (built with {old.get(k)!r})" for k in changed)
        raise ConfigError(
            f"{what}: frozen with the learned versions of {where}; keep the built value or "
            "start a new workspace (another --out / --workdir)"
        )


__all__ = [
    "FROZEN",
    "BudgetConfig",
    "CallableConfig",
    "DVCConfig",
    "DataConfig",
    "DistillConfig",
    "EmbeddingHeadConfig",
    "EncoderConfig",
    "EvalConfig",
    "FeaturesConfig",
    "FlowConfig",
    "GroupsConfig",
    "JudgeConfig",
    "KCMConfig",
    "LargeConfig",
    "MLPTeacherConfig",
    "OpenAIConfig",
    "OutOfScopeConfig",
    "PriceConfig",
    "RateLimitConfig",
    "RegistryConfig",
    "ReplayConfig",
    "RoutingConfig",
    "Section",
    "ServingConfig",
    "SmallConfig",
    "StreamConfig",
    "TextFeaturesConfig",
    "ValidateConfig",
    "check_frozen",
    "config_from_dict",
    "config_to_dict",
    "flatten",
    "frozen_settings",
    "is_frozen",
    "load_config",
    "parse_override",
    "set_dotted",
    "with_overrides",
]
