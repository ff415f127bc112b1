"""The layer contract (issue 22 item 1) is written once, in pyproject.toml, and checked by `lint-imports` in
.ci/run: every module of leakaudit/ is in a layer (import-linter says nothing about a module no layer names),
docs/architecture.md shows the same layers, and the dev extra brings the tool CI runs."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

ROOT = Path(__file__).parents[1]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))


def _layers() -> list[str]:
    contract = next(c for c in PYPROJECT["tool"]["importlinter"]["contracts"] if c["type"] == "layers")
    return contract["layers"]


def test_every_module_of_the_package_is_in_a_layer():
    named = {m.strip() for layer in _layers() for m in re.split(r"[|:]", layer)}
    top = {f"leakaudit.{p.stem if p.is_file() else p.name}" for p in (ROOT / "leakaudit").iterdir()
           if (p.suffix == ".py" and p.stem != "__init__") or any(p.glob("[!_]*.py"))}  # data packages hold no code
    assert top - named == set(), "add the new module to [tool.importlinter] layers in pyproject.toml"
    assert named - top == set()


def test_the_architecture_doc_shows_the_contracts_layers():
    doc = (ROOT / "docs" / "architecture.md").read_text(encoding="utf-8")
    section = doc.split("## Layers: imports point down", 1)[1]
    shown = re.search(r"```\n(.+?)\n```", section, re.S).group(1).splitlines()
    assert shown == _layers()


def test_ci_checks_the_contract_with_the_tool_the_dev_extra_installs():
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    assert re.search(r"^lint-imports \|\|", ci, re.M)
    dev = PYPROJECT["project"]["optional-dependencies"]["dev"]
    assert any(re.match(r"import-linter\b", r) for r in dev)
