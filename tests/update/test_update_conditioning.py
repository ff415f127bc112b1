"""The conditioning diagnostic: a client update that a tiny input move turns into an unrelated one is reported as
ill-conditioned, with the BatchNorm layers responsible and what to change; a stable model is called stable."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from torch import nn

from leakaudit.audit import audit
from leakaudit.data import SampleBatch, normalization
from leakaudit.models import LoadedModel, create_model
from leakaudit.report.document import build_document
from leakaudit.update import client_update
from leakaudit.update.conditioning import conditioning
from leakaudit.update.interface import ThreatModel


SHAPE = (3, 4, 4)  # the zoo's resnet20 leaves 1x1 maps in its last stage: 2 values per channel at batch 2


def _resnet() -> nn.Module:
    torch.manual_seed(0)
    return create_model("resnet20", num_classes=4, input_shape=SHAPE)


def _batch(n: int, shape: tuple[int, ...], seed: int = 1) -> SampleBatch:
    g = torch.Generator().manual_seed(seed)
    pixels = torch.rand(n, *shape, generator=g)
    return SampleBatch(pixels, torch.arange(n) % 4, pixels, tuple(f"s{i}.png" for i in range(n)), "in memory",
                       normalization("none", channels=shape[0]))


def _loaded(net: nn.Module, shape: tuple[int, ...], name: str) -> LoadedModel:
    return LoadedModel(net, shape, 4, Path(f"{name}.safetensors"), "0" * 64, "safetensors", arch=name)


def _measure(model: LoadedModel, batch: SampleBatch, mode: str = "train"):
    threat = ThreatModel(batch_size=len(batch), batchnorm=mode)
    return conditioning(model, batch, threat, client_update(model, batch, threat, seed=0).gradients, seed=0)


def test_a_stable_mlp_is_called_stable():
    torch.manual_seed(0)
    c = _measure(_loaded(create_model("mlp", num_classes=4, input_shape=(1, 8, 8), hidden=(16,)), (1, 8, 8), "mlp"),
                 _batch(2, (1, 8, 8)))
    assert c.verdict == "stable" and c.cosine is not None and c.cosine > 0.99 and c.layers == ()
    assert c.summary().startswith("the update is stable (cosine")


def test_batchnorm_on_one_value_per_sample_is_ill_conditioned_and_named():
    c = _measure(_loaded(_resnet(), SHAPE, "resnet20"), _batch(2, SHAPE))
    assert c.verdict == "ill-conditioned", c.cosine
    names = [d["name"] for d in c.layers]
    assert names[:3] == ["stages.6.bn1", "stages.6.bn2", "stages.6.shortcut.1"]
    assert {d["values_per_channel"] for d in c.layers} == {2}
    text = c.summary()
    assert "ill-conditioned (cosine" in text and "stages.6.bn1 (2 values per channel)" in text
    assert "at batch 2, 4x4 input" in text
    assert "--batch-size 8" in text and "--client-batchnorm eval" in text and "larger input" in text


def test_eval_mode_batchnorm_is_stable_on_the_same_model():
    from leakaudit.models.batchnorm import client_model

    model = client_model(_loaded(_resnet(), SHAPE, "resnet20"), "eval")
    c = _measure(model, _batch(2, SHAPE), "eval")
    assert c.verdict == "stable" and c.layers == ()


def test_an_ill_conditioned_scan_is_inconclusive_and_says_why_in_json_and_summary():
    result = audit(_loaded(_resnet(), SHAPE, "resnet20"), _batch(2, SHAPE), attacks=("ig",), iterations=2,
                   restarts=1)
    assert result.overall == "inconclusive"
    assert result.conditioning is not None and result.conditioning.ill
    summary = result.outcome.summary
    assert "ill-conditioned" in summary and "BatchNorm layer(s) stages.6.bn1" in summary
    assert "--batch-size 8" in summary
    doc = json.loads(json.dumps(build_document(result)))
    assert doc["conditioning"]["verdict"] == "ill-conditioned"
    assert doc["conditioning"]["layers"][0] == {"name": "stages.6.bn1", "values_per_channel": 2}
    assert [b["conditioning"]["verdict"] for b in doc["coverage"]["batches"]] == ["ill-conditioned"]
    recs = {r["id"]: r for r in doc["recommendations"]}
    assert "ill-conditioned" in recs and "inconclusive" not in recs  # more power would not help
    assert "--client-batchnorm eval" in recs["ill-conditioned"]["text"]
    import jsonschema

    from leakaudit.report import schema
    from leakaudit.report.html import render_html

    jsonschema.Draft202012Validator(schema()).validate(doc)
    html = render_html(doc)
    assert "<h2>Conditioning</h2>" in html and "stages.6.bn1" in html


def test_a_stable_scan_records_stable_conditioning():
    torch.manual_seed(0)
    net = create_model("mlp", num_classes=4, input_shape=(1, 8, 8), hidden=(16,))
    result = audit(_loaded(net, (1, 8, 8), "mlp"), _batch(1, (1, 8, 8)), attacks=("analytic",))
    assert result.overall == "fail"
    doc = build_document(result)
    assert doc["conditioning"]["verdict"] == "stable" and doc["conditioning"]["advice"] == ""
    assert "ill-conditioned" not in {r["id"] for r in doc["recommendations"]}


def test_the_terminal_summary_of_an_ill_conditioned_scan_says_why_and_what_to_change(tmp_path, capsys):
    import numpy as np

    from leakaudit.cli import app_main
    from leakaudit.models.safetensors_loader import save_safetensors

    save_safetensors(_resnet(), tmp_path / "resnet20.safetensors", arch="resnet20", input_shape=SHAPE,
                     num_classes=4)
    np.savez(tmp_path / "samples.npz", x=_batch(2, SHAPE).pixels.numpy(), y=np.array([0, 1]))
    code = app_main(["scan", str(tmp_path / "resnet20.safetensors"), "--data", str(tmp_path / "samples.npz"),
                     "--attacks", "ig", "--iterations", "2", "--restarts", "1", "--batch-size", "2",
                     "--output-dir", str(tmp_path / "out")])
    err = " ".join(capsys.readouterr().err.split())  # the terminal wraps long lines
    assert code == 4, err
    assert "INCONCLUSIVE" in err and "the update is ill-conditioned (cosine" in err
    assert "stages.6.bn1 (2 values per channel)" in err and "--client-batchnorm eval" in err
    doc = json.loads((tmp_path / "out" / "report.json").read_text())
    assert doc["conditioning"]["verdict"] == "ill-conditioned"


def test_a_failed_measurement_is_not_measured_and_costs_the_scan_nothing(monkeypatch):
    import leakaudit.update.conditioning as module
    from leakaudit.errors import ModelError

    torch.manual_seed(0)
    model = _loaded(create_model("mlp", num_classes=4, input_shape=(1, 8, 8), hidden=(16,)), (1, 8, 8), "mlp")
    batch = _batch(1, (1, 8, 8))
    threat = ThreatModel(batch_size=1)
    reference = client_update(model, batch, threat, seed=0).gradients

    def fail(*args, **kwargs):
        raise ModelError("the client loss is nan on these samples")

    monkeypatch.setattr(module, "client_update", fail)
    c = conditioning(model, batch, threat, reference, seed=0)
    assert c.verdict == "not_measured" and c.cosine is None and "loss is nan" in c.reason
    assert c.summary().startswith("conditioning not measured:") and not c.ill
    assert c.as_dict()["advice"] == ""
