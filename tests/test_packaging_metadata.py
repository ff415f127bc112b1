"""What pyproject.toml promises a user who installs leakaudit: the licence, type information, and which
dependencies are required (jsonschema: reports read back are validated) or optional (matplotlib: sweep's plots)."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

ROOT = Path(__file__).parents[1]
PROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))


def _names(requirements: list[str]) -> set[str]:
    return {re.match(r"[A-Za-z0-9_.-]+", r).group(0).lower() for r in requirements}


def test_licence_is_an_spdx_expression_with_its_text_shipped():
    project = PROJECT["project"]
    assert project["license"] == "Apache-2.0"
    assert project["license-files"] == ["LICENSE"]
    text = (ROOT / "LICENSE").read_text(encoding="utf-8")
    assert "Apache License" in text and "Version 2.0, January 2004" in text and "END OF TERMS AND CONDITIONS" in text
    # PEP 639 metadata needs setuptools >= 77; an older floor would build with a deprecated or rejected table
    floor = next(r for r in PROJECT["build-system"]["requires"] if r.startswith("setuptools"))
    assert int(re.search(r">=\s*(\d+)", floor).group(1)) >= 77
    assert not any(c.startswith("License ::") for c in project["classifiers"])  # PEP 639: the expression only


def test_type_information_is_shipped():
    assert (ROOT / "leakaudit" / "py.typed").is_file()
    assert "py.typed" in PROJECT["tool"]["setuptools"]["package-data"]["leakaudit"]
    assert "Typing :: Typed" in PROJECT["project"]["classifiers"]


def test_jsonschema_is_required_and_matplotlib_only_for_sweep():
    required = _names(PROJECT["project"]["dependencies"])
    extras = PROJECT["project"]["optional-dependencies"]
    assert "jsonschema" in required
    assert "matplotlib" not in required and "matplotlib" in _names(extras["sweep"])
    assert "matplotlib" in _names(extras["dev"])  # the sweep HTML tests run in CI instead of skipping
    users = sorted(str(p.relative_to(ROOT)) for p in (ROOT / "leakaudit").rglob("*.py")
                   if re.search(r"^\s*import matplotlib|^\s*from matplotlib", p.read_text(encoding="utf-8"), re.M))
    assert users == ["leakaudit/sweep/html.py"]
