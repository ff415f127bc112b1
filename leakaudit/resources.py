"""Files shipped with the package: built-in rule profiles (``rules/``) and report templates/schemas
(``reports/``). Both are top-level folders of the repository, installed as ``leakaudit._rules`` and
``leakaudit._reports`` (see pyproject.toml), so editable and regular installs find them alike."""

from __future__ import annotations

from importlib import resources
from importlib.abc import Traversable


def rules_dir() -> Traversable:
    return resources.files("leakaudit._rules")


def reports_dir() -> Traversable:
    return resources.files("leakaudit._reports")


def read_report_file(name: str) -> str:
    return reports_dir().joinpath(name).read_text(encoding="utf-8")
