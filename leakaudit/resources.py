"""Files shipped with the package: built-in rule profiles (``rules/``), report templates/schemas (``reports/``)
and the reference images of the recognition test (``references/``). All three are top-level folders of the
repository, installed as ``leakaudit._rules``, ``leakaudit._reports`` and ``leakaudit._references`` (see
pyproject.toml), so editable and regular installs find them alike. Run from a source tree that is not the
installed copy (``python -m leakaudit`` in a checkout next to a regular install), the package has no such
subpackages: the repository's own folders are used then."""

from __future__ import annotations

from importlib import resources
from importlib.abc import Traversable
from pathlib import Path


def _shipped(package: str, folder: str) -> Traversable:
    try:
        return resources.files(package)
    except ModuleNotFoundError:
        source = Path(__file__).resolve().parent.parent / folder
        if source.is_dir():
            return source
        raise


def rules_dir() -> Traversable:
    return _shipped("leakaudit._rules", "rules")


def reports_dir() -> Traversable:
    return _shipped("leakaudit._reports", "reports")


def references_dir() -> Traversable:
    return _shipped("leakaudit._references", "references")


def read_report_file(name: str) -> str:
    return reports_dir().joinpath(name).read_text(encoding="utf-8")
