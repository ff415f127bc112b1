"""An ONNX file exported without dynamic axes fixes its batch size (a Reshape by the traced batch): another
--batch-size is an input error naming the file, its batch and the fix; without --batch-size the file's batch
is used and the report says so."""

from __future__ import annotations

import json

import numpy as np
import torch
from torch import nn

from leakaudit.cli import app_main

QUICK = ["--budget", "quick", "--iterations", "1", "--restarts", "1", "--attacks", "ig"]


class _ViewNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(1 * 4 * 4, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(x.view(x.shape[0], -1))  # traced as a Reshape to the constant [2, 16]


def _files(tmp_path, samples: int = 3):
    torch.manual_seed(0)
    path = tmp_path / "fixed.onnx"
    torch.onnx.export(_ViewNet().train(), torch.zeros(2, 1, 4, 4), str(path), input_names=["input"],
                      training=torch.onnx.TrainingMode.TRAINING, dynamo=False, do_constant_folding=False)
    data = tmp_path / "data.npz"
    np.savez(data, x=np.random.default_rng(0).random((samples, 1, 4, 4), dtype=np.float32),
             y=np.arange(samples) % 3)
    return path, data


def test_another_batch_size_is_an_input_error_naming_the_fix(tmp_path, capsys):
    path, data = _files(tmp_path)
    code = app_main(["scan", str(path), "--data", str(data), "--batch-size", "1",
                     "--output-dir", str(tmp_path / "o"), *QUICK])
    assert code == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err == (f"leakaudit: error: --batch-size 1: {path} was exported with a fixed batch size of 2 and cannot "
                   'run at 1; give --batch-size 2, or re-export with dynamic_axes={"input": {0: "batch"}}')


def test_without_batch_size_the_files_batch_is_used(tmp_path):
    path, data = _files(tmp_path)
    out = tmp_path / "o"
    code = app_main(["scan", str(path), "--data", str(data), "--output-dir", str(out), *QUICK])
    assert code in (0, 1, 4)  # a verdict (4: a rule not evaluated), not an input or internal error
    report = json.loads((out / "report.json").read_text())
    assert report["threat_model"]["batch_size"] == 2
    assert any("the file fixes batch 2 in its graph input" in n for n in report["notes"])
