"""The examples in the public API's docstrings run and print what they show (torchmetrics style): a reader
can paste them, and a change that makes one wrong fails here. Each example uses a tiny model and at most a
closed-form attack, so the whole file runs in seconds."""

from __future__ import annotations

import doctest
import importlib

import pytest
import torch

MODULES = ["leakaudit.audit", "leakaudit.metrics.functional", "leakaudit.attacks.planner"]


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples_run_as_shown(name):
    torch.set_num_threads(1)
    module = importlib.import_module(name)
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE, verbose=False)
    assert result.attempted > 0, f"{name} has no docstring examples left"
    assert result.failed == 0, f"{result.failed} docstring example(s) of {name} failed (printed above)"


def test_the_public_entry_points_each_show_an_example():
    from leakaudit.attacks import plan
    from leakaudit.audit import audit, prepare
    from leakaudit.metrics import label_accuracy, mse, psnr, rmse, ssim, ssim_best_adjusted

    for function in (audit, prepare, plan, mse, rmse, psnr, ssim, ssim_best_adjusted, label_accuracy):
        assert ">>> " in (function.__doc__ or ""), f"{function.__qualname__} has no example"
