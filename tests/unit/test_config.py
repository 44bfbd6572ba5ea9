from __future__ import annotations

from pathlib import Path

import pytest

from kcm.config import KCMConfig, load_config, parse_override
from kcm.errors import ConfigError

REPO = Path(__file__).resolve().parents[2]


def test_defaults_and_repo_params_agree() -> None:
    assert load_config(REPO / "params.yaml") == KCMConfig()


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


def test_missing_config_file() -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load_config("nope.yaml")


def test_groups_order_checked() -> None:
    with pytest.raises(ConfigError, match="must not exceed"):
        load_config(None, ["data.groups.few=200"])
