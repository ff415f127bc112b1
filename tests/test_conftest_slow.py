"""The README's test command on a developer's machine leaves out the attack-quality tests (minutes on 2 cores);
in CI (CI=true, as .ci/run is called) it runs everything and lists the slowest tests (issue 21, item 10)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

SUITE = '''
import pytest

def test_fast():
    pass

@pytest.mark.slow
def test_slow():
    pass
'''


@pytest.mark.parametrize("env, args, ran, durations", [
    ({}, [], "1 passed, 1 deselected", False),
    ({"CI": "true"}, [], "2 passed", True),
    ({"CI": "false"}, [], "1 passed, 1 deselected", False),
    ({}, ["--run-slow"], "2 passed", False),
    ({}, ["-m", "slow"], "1 passed, 1 deselected", False),  # an explicit -m is left alone: only the slow one
])
def test_slow_tests_run_in_ci_or_when_asked(tmp_path, env, args, ran, durations):
    shutil.copy(Path(__file__).with_name("conftest.py"), tmp_path / "conftest.py")
    (tmp_path / "test_suite.py").write_text(SUITE)
    (tmp_path / "pytest.ini").write_text("[pytest]\nmarkers =\n    slow: slow\n")
    environ = {k: v for k, v in os.environ.items() if k != "CI"}
    done = subprocess.run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", *args], cwd=tmp_path,
                          env={**environ, **env}, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and ran in done.stdout.splitlines()[-1], done.stdout
    assert ("slowest 15 durations" in done.stdout) == durations
