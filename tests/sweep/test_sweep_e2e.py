"""A real, tiny sweep through the whole pipeline (no fakes): MLP whose first layer has a bias, so the
analytic attack reconstructs the sample exactly under weak noise and not under strong noise."""

from __future__ import annotations

import json

import jsonschema
import numpy as np
import torch

from leakaudit.cli import app_main
from leakaudit.models import create_model
from leakaudit.models.safetensors_loader import save_safetensors
from leakaudit.sweep import jsonio


def test_real_sweep_two_values(tmp_path, monkeypatch, capsys):
    torch.manual_seed(0)
    shape = (3, 8, 8)
    save_safetensors(create_model("mlp", num_classes=10, input_shape=shape), tmp_path / "mlp.safetensors",
                     arch="mlp", input_shape=shape, num_classes=10)
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "samples.npz", x=rng.random((1, *shape)).astype("float32"), y=np.array([4]))
    monkeypatch.chdir(tmp_path)
    code = app_main(["sweep", "mlp.safetensors", "--data", "samples.npz", "--attacks", "analytic,ig",
                     "--iterations", "20", "--restarts", "1", "--device", "cpu",
                     "--vary", "noise.sigma=1e-6,1", "--output-dir", "out", "--quiet"])
    doc = json.loads((tmp_path / "out" / "sweep.json").read_text())
    jsonschema.validate(doc, jsonio.schema())
    points = {p["value"]: p for p in doc["points"]}
    assert [p["status"] for p in doc["points"]] == ["done", "done"]
    analytic = {v: next(a for a in p["attacks"] if a["attack"] == "analytic") for v, p in points.items()}
    psnr = {v: next(m for m in a["metrics"] if m["name"] == "psnr")["worst"] for v, a in analytic.items()}
    assert psnr[1e-6] > 60  # exact under negligible noise
    assert psnr[1.0] < 20  # noise of sigma 1 destroys it
    assert points[1e-6]["passed"] is False and points[1.0]["passed"] is True
    assert doc["threshold"]["stable"] == 1.0 and code == 0
    assert {a["attack"] for a in points[1.0]["attacks"]} == {"analytic", "ig"}
    html = (tmp_path / "out" / "sweep.html").read_text()
    assert html.count("<figure><img") >= 2
    # protection and cost side by side: every point states what its noise costs, the recommendation says it
    cost = {v: p["cost"] for v, p in points.items()}
    assert cost[1e-6]["cosine"] > 0.99 and cost[1.0]["cosine"] < cost[1e-6]["cosine"]
    assert cost[1.0]["relative_error"] > cost[1e-6]["relative_error"]
    assert doc["threshold"]["message"].endswith("what it costs at noise.sigma=1: " + cost[1.0]["summary"])
    assert "defense cost" in html
