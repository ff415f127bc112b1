"""docs/api.md's examples run as written, in order, from the repository root, and print what the page says."""

from __future__ import annotations

import contextlib
import io
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PAGE = (ROOT / "docs" / "api.md").read_text(encoding="utf-8")
BLOCKS = re.findall(r"```python\n(.*?)```", PAGE, flags=re.S)


@pytest.fixture(scope="module")
def printed(request) -> str:
    """What the page's examples print, run one after another in one namespace (later ones use earlier names)."""
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(ROOT)
        out, namespace = io.StringIO(), {}
        with contextlib.redirect_stdout(out):
            for i, block in enumerate(BLOCKS):
                exec(compile(block, f"docs/api.md python block {i + 1}", "exec"), namespace)
    return out.getvalue()


def test_the_page_has_an_example_per_section():
    assert len(BLOCKS) >= 6


@pytest.mark.parametrize("claim", [
    "fail 1\n",  # a module with a first Linear layer leaks through the analytic attack
    "Sequential (in memory) 4\n",  # the module's name, and num_classes from a forward pass
    "['3']\n",  # the plain nn.Dropout found in the module passed in memory
    "no reproduce command: the model and the samples were passed in memory through the Python API",
    "leakaudit scan examples/models/mlp_dropout.onnx --data examples/samples --attacks analytic",
    "0.0001 fail\n1.0 pass\n",  # prepare once, run per defense strength
    "fail True\nanalytic torch.Size([1, 3, 32, 32])",
    "['report.html', 'report.json']",
    "input_shape: not given for the Sequential passed in memory",
    "data: image values range over [",
])
def test_an_example_prints_what_the_page_says(printed, claim):
    assert claim in printed
