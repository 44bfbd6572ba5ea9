"""The command line's habits (issue #25): ``kcm --version``."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from kcm_app.cli import main


def test_version_prints_the_packages_version(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as done:
        main(["--version"])
    assert done.value.code == 0
    pyproject = (Path(__file__).resolve().parents[2] / "pyproject.toml").read_text()
    want = re.search(r'^version = "([^"]+)"', pyproject, re.M)
    assert want and capsys.readouterr().out.strip() == f"kcm {want.group(1)}"
