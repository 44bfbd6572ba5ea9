from __future__ import annotations

from pathlib import Path

import pytest

from kcm.config import (
    KCMConfig,
    check_frozen,
    config_to_dict,
    is_frozen,
    load_config,
    parse_override,
)
from kcm.errors import ConfigError

REPO = Path(__file__).resolve().parents[2]


def _keys(tree: dict, prefix: str = "") -> set[str]:
    out = set()
    for k, v in tree.items():
        out |= _keys(v, f"{prefix}{k}.") if isinstance(v, dict) else {f"{prefix}{k}"}
    return out


def test_repo_params_load() -> None:
    """The project's params.yaml is valid (its values are the user's to edit)."""
    load_config(REPO / "params.yaml")


def test_every_setting_has_a_default_and_a_description() -> None:
    """A user may delete any key from params.yaml: the defaults then apply."""
    assert load_config(None) == KCMConfig()
    assert len(_keys(config_to_dict(KCMConfig()))) > 80


def test_frozen_settings_are_refused_and_run_settings_pass() -> None:
    built = KCMConfig()
    check_frozen(built, load_config(None, ["routing.epsilon=0.9", "distill.w_js=0.1"]))
    with pytest.raises(ConfigError, match=r"judge\.kind='mlp' \(built with 'kan'\).*new workspace"):
        check_frozen(built, load_config(None, ["judge.kind=mlp"]))
    assert is_frozen("features.text.n_features") and not is_frozen("routing.epsilon")


def test_registry_names_are_validated() -> None:
    with pytest.raises(
        ConfigError, match=r"judge\.kind=.kann. is not known: choose one of kan, logreg, mlp"
    ):
        load_config(None, ["judge.kind=kann"])
    with pytest.raises(ConfigError, match="auto, callable, embedding-head"):
        load_config(None, ["large.backend=gpt"])


def test_unknown_key_names_dotted_path(tmp_path: Path) -> None:
    p = tmp_path / "params.yaml"
    p.write_text("judge:\n  hiden: 3\n")
    with pytest.raises(ConfigError, match=r"unknown key 'judge\.hiden'"):
        load_config(p)


def test_ill_typed_key_names_dotted_path(tmp_path: Path) -> None:
    p = tmp_path / "params.yaml"
    p.write_text("routing:\n  epsilon: lots\n")
    with pytest.raises(ConfigError, match=r"'routing\.epsilon' = 'lots'"):
        load_config(p)


def test_out_of_range_value_is_refused() -> None:
    with pytest.raises(ConfigError, match=r"routing\.epsilon"):
        load_config(None, ["routing.epsilon=1.5"])


def test_overrides_set_single_keys() -> None:
    cfg = load_config(None, ["routing.epsilon=0.95", "judge.kind=mlp", "data.stream.n_batches=3"])
    assert cfg.routing.epsilon == 0.95
    assert cfg.judge.kind == "mlp"
    assert cfg.data.stream.n_batches == 3


def test_override_of_unknown_key_fails() -> None:
    with pytest.raises(ConfigError, match=r"unknown key 'routing\.epsilonn'"):
        load_config(None, ["routing.epsilonn=0.9"])


def test_override_syntax_errors() -> None:
    with pytest.raises(ConfigError, match="no '='"):
        parse_override("routing.epsilon")
    assert parse_override("data.feature_cols=[a, b]") == ("data.feature_cols", ["a", "b"])


def test_an_override_that_is_not_yaml_is_one_line_naming_the_fix() -> None:
    with pytest.raises(ConfigError, match=r"not valid YAML .*quote it as a string") as err:
        load_config(None, ["routing.epsilon=[unclosed"])
    assert "\n" not in str(err.value)


def test_missing_config_file() -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load_config("nope.yaml")


def test_groups_order_checked() -> None:
    with pytest.raises(ConfigError, match="must not exceed"):
        load_config(None, ["data.groups.few=200"])
