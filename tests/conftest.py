"""Which tests a plain ``python3 -m pytest`` runs: on a developer's machine the attack-quality tests (marked
``slow``: real optimisations, minutes on 2 CPU cores) are left out unless asked for; in CI (``CI`` set to true,
as GitHub Actions, GitLab CI and ``CI=true bash .ci/run`` set it) every test runs and the 15 slowest are listed.
``.ci/run`` calls the README's command unchanged, so the environment decides, not a flag."""

from __future__ import annotations

import os

import pytest

TRUE = ("1", "true", "yes")


def in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() in TRUE


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--run-slow", action="store_true", default=False,
                     help="Also run the attack-quality tests marked slow (CI=true runs them too).")


def pytest_configure(config: pytest.Config) -> None:
    if in_ci() and not config.getoption("durations", None):
        config.option.durations = 15  # CI logs show where the time goes


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    # an explicit -m (e.g. -m slow) is the caller's choice: left alone
    if in_ci() or config.getoption("--run-slow") or config.getoption("markexpr", ""):
        return
    slow = [item for item in items if item.get_closest_marker("slow") is not None]
    if not slow:
        return
    items[:] = [item for item in items if item.get_closest_marker("slow") is None]
    config.hook.pytest_deselected(items=slow)


def pytest_report_header(config: pytest.Config) -> str | None:
    if in_ci() or config.getoption("--run-slow") or config.getoption("markexpr", ""):
        return None
    return "slow (attack-quality) tests are deselected locally: run them with --run-slow, CI=true or -m slow"
