"""BatchNorm running statistics in the update (--update-buffers yes): the server recovers every layer's batch mean
and variance in closed form, and where a layer sees two values per channel each sample's activations up to a swap;
the report says so as a warning that leaves the verdict alone. And --client-batch-size: the report states what the
audited batch implies for the real one."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from torch import nn

from leakaudit.attacks.bnstats import recover
from leakaudit.audit import audit
from leakaudit.data import SampleBatch, normalization
from leakaudit.models import LoadedModel, create_model
from leakaudit.report.document import batch_statement, build_document
from leakaudit.update import client_update
from leakaudit.update.buffers import buffer_leak, swap_error
from leakaudit.update.interface import ThreatModel

SHAPE = (3, 4, 4)  # the zoo's resnet20 leaves 1x1 maps in its last stage: 2 values per channel at batch 2
# ... in its last stage (stages 6-8): the layers that see two values per channel there
LAST_STAGE = ["stages.6.bn1", "stages.6.bn2", "stages.6.shortcut.1", "stages.7.bn1", "stages.7.bn2", "stages.8.bn1",
              "stages.8.bn2"]


def _resnet() -> nn.Module:
    torch.manual_seed(0)
    return create_model("resnet20", num_classes=4, input_shape=SHAPE)


def _loaded(net: nn.Module) -> LoadedModel:
    return LoadedModel(net, SHAPE, 4, Path("resnet20.safetensors"), "0" * 64, "safetensors", arch="resnet20")


def _batch(n: int = 2, seed: int = 1) -> SampleBatch:
    g = torch.Generator().manual_seed(seed)
    pixels = torch.rand(n, *SHAPE, generator=g)
    return SampleBatch(pixels, torch.arange(n) % 4, pixels, tuple(f"s{i}.png" for i in range(n)), "in memory",
                       normalization("none", channels=SHAPE[0]))


def _pre_bn_activations(net: nn.Module, x: torch.Tensor, name: str) -> torch.Tensor:
    """The input of BatchNorm layer ``name`` in one train-mode forward (buffers restored after): (N*H*W, C)."""
    seen: list[torch.Tensor] = []
    layer = net.get_submodule(name)
    handle = layer.register_forward_pre_hook(lambda _m, inputs: seen.append(inputs[0].detach().clone()))
    saved = {n: b.clone() for n, b in net.named_buffers()}
    try:
        net.train()
        with torch.no_grad():
            net(x)
    finally:
        handle.remove()
        with torch.no_grad():
            for n, b in net.named_buffers():
                b.copy_(saved[n])
    a = seen[0]
    return a.transpose(0, 1).reshape(a.shape[1], -1).T


def test_the_server_recovers_batch_means_and_each_samples_last_stage_activations_up_to_a_swap():
    model, batch = _loaded(_resnet()), _batch()
    old = {n: b.clone() for n, b in model.module.named_buffers()}
    update = client_update(model, batch, ThreatModel(batch_size=2, buffers=True), seed=0)
    assert set(update.buffers) == {n for n in old if n.rsplit(".", 1)[1] in ("running_mean", "running_var",
                                                                             "num_batches_tracked")}
    assert all(torch.equal(b, old[n]) for n, b in model.module.named_buffers())  # the user's model untouched
    layers = {r.name: r for r in recover(model.module, old, update.buffers, 2, SHAPE)}
    assert len(layers) == len([m for m in model.module.modules() if isinstance(m, nn.BatchNorm2d)])
    for name, r in layers.items():
        truth = update.true_batch_statistics[name]
        assert r.n == truth.n
        torch.testing.assert_close(r.mean, truth.mean, rtol=1e-5, atol=1e-6)
    # the last stage sees 2 values per channel: they are each sample's pre-BatchNorm activations, up to a swap
    assert [n for n, r in layers.items() if r.values is not None] == LAST_STAGE
    for name in LAST_STAGE:
        actual = _pre_bn_activations(model.module, batch.x, name)  # (2 samples, C)
        recovered = layers[name].values
        assert recovered is not None and recovered.shape == actual.shape
        assert swap_error(recovered, actual) < 1e-3


def test_the_finding_is_measured_against_the_truth_and_names_the_layers():
    model, batch = _loaded(_resnet()), _batch()
    old = {n: b.clone() for n, b in model.module.named_buffers()}
    leak = buffer_leak(model.module, old, client_update(model, batch, ThreatModel(batch_size=2, buffers=True),
                                                        seed=0), SHAPE)
    assert leak is not None and leak.status == "recovered" and leak.leaks
    assert max(d["mean_error"] for d in leak.layers) < 1e-5
    assert [d["name"] for d in leak.activation_layers] == LAST_STAGE
    assert all(d["activation_error"] < 1e-3 for d in leak.activation_layers)
    assert leak.title() == ("BatchNorm statistics in the update reveal each sample's activations at stages.6.bn1, "
                            "stages.6.bn2, stages.6.shortcut.1 and 4 more (closed form)")
    assert "up to a swap per channel" in leak.summary()


def test_no_buffers_sent_no_finding():
    model, batch = _loaded(_resnet()), _batch()
    update = client_update(model, batch, ThreatModel(batch_size=2), seed=0)
    assert update.buffers == {} and update.true_batch_statistics == {}
    assert buffer_leak(model.module, dict(model.module.named_buffers()), update, SHAPE) is None


def test_frozen_batchnorm_and_several_local_steps_say_why_nothing_is_recovered():
    from leakaudit.models.batchnorm import client_model

    frozen = client_model(_loaded(_resnet()), "eval")
    old = {n: b.clone() for n, b in frozen.module.named_buffers()}
    update = client_update(frozen, _batch(), ThreatModel(batch_size=2, buffers=True, batchnorm="eval"), seed=0)
    leak = buffer_leak(frozen.module, old, update, SHAPE)
    assert leak is not None and leak.status == "unchanged" and not leak.leaks and "frozen" in leak.summary()
    model = _loaded(_resnet())
    old = {n: b.clone() for n, b in model.module.named_buffers()}
    threat = ThreatModel(protocol="fedavg", local_steps=2, batch_size=2, buffers=True)
    leak = buffer_leak(model.module, old, client_update(model, _batch(), threat, seed=0), SHAPE)
    assert leak is not None and leak.status == "not_recovered" and "--local-steps 1" in leak.reason


def test_a_scan_with_buffers_reports_a_warning_that_leaves_the_verdict_alone():
    import jsonschema

    from leakaudit.report import schema
    from leakaudit.report.html import render_html

    common = dict(attacks=("ig",), iterations=2, restarts=1)
    without = audit(_loaded(_resnet()), _batch(), **common)
    result = audit(_loaded(_resnet()), _batch(), update_buffers="yes", **common)
    assert without.batchnorm_statistics is None
    assert result.overall == without.overall  # a feature leak: a warning, not a verdict
    doc = json.loads(json.dumps(build_document(result)))
    jsonschema.Draft202012Validator(schema()).validate(doc)
    found = doc["batchnorm_statistics"]
    assert found["leaks"] and found["title"].startswith("BatchNorm statistics in the update reveal each sample's "
                                                        "activations at stages.6.bn1")
    assert doc["threat_model"]["buffers"] is True
    assert [b["batchnorm_statistics"]["leaks"] for b in doc["coverage"]["batches"]] == [True]
    recs = {r["id"]: r for r in doc["recommendations"]}
    assert "batchnorm-buffers" in recs and "only the trainable parameters" in recs["batchnorm-buffers"]["text"]
    html = render_html(doc)
    assert "<h2>BatchNorm statistics in the update</h2>" in html and "stages.6.shortcut.1" in html
    plain = json.loads(json.dumps(build_document(without)))
    jsonschema.Draft202012Validator(schema()).validate(plain)
    assert plain["batchnorm_statistics"] is None and "batchnorm-buffers" not in {r["id"] for r in
                                                                                 plain["recommendations"]}
    assert "BatchNorm statistics in the update" not in render_html(plain)


def test_fedavg_without_buffers_asks_whether_the_clients_send_them():
    result = audit(_loaded(_resnet()), _batch(), protocol="fedavg", attacks=("ig",), iterations=2, restarts=1)
    recs = {r["id"]: r for r in build_document(result)["recommendations"]}
    assert "--update-buffers yes" in recs["declare-buffers"]["text"]


def test_the_cli_prints_the_finding_and_the_batch_statement(tmp_path, capsys):
    import numpy as np

    from leakaudit.cli import app_main
    from leakaudit.models.safetensors_loader import save_safetensors

    save_safetensors(_resnet(), tmp_path / "resnet20.safetensors", arch="resnet20", input_shape=SHAPE,
                     num_classes=4)
    np.savez(tmp_path / "samples.npz", x=_batch().pixels.numpy(), y=np.array([0, 1]))
    code = app_main(["scan", str(tmp_path / "resnet20.safetensors"), "--data", str(tmp_path / "samples.npz"),
                     "--attacks", "ig", "--iterations", "2", "--restarts", "1", "--batch-size", "2",
                     "--update-buffers", "yes", "--client-batch-size", "32", "--output-dir", str(tmp_path / "out")])
    err = " ".join(capsys.readouterr().err.split())  # the terminal wraps long lines
    assert code == 4, err
    assert "warning: BatchNorm statistics in the update reveal each sample's activations at stages.6.bn1" in err
    assert "batch: audited at batch 2, but the clients train at 32" in err
    doc = json.loads((tmp_path / "out" / "report.json").read_text())
    assert doc["threat_model"]["client_batch_size"] == 32
    assert "--update-buffers yes" in doc["command"] and "--client-batch-size 32" in doc["command"]


@pytest.mark.parametrize("audited, client, bn, words", [
    (2, None, True, "the clients' batch was not stated"),
    (4, 4, True, "the batch the clients train with"),
    (1, 32, False, "overstates"),
    (2, 32, True, "16x more values per channel"),
    (32, 2, True, "understates"),
])
def test_the_batch_statement_says_what_the_difference_implies(audited, client, bn, words):
    text = batch_statement(audited, client, "train", bn)
    assert words in text
    if client is not None and client != audited:
        assert f"--batch-size {client}" in text
    if not bn:
        assert "BatchNorm" not in text


def test_a_checkpoint_keeps_a_batchs_finding_and_rejects_a_malformed_one():
    from leakaudit.coverage.checkpoint import _statistics
    from leakaudit.result import BufferLeak

    record = json.loads(json.dumps(BufferLeak("recovered", 2, layers=({
        "name": "stages.6.bn1", "values_per_channel": 2, "mean_error": 1e-8, "var_error": 1e-7,
        "activation_error": 1e-5},)).as_dict()))
    assert _statistics(record) == record and _statistics(None) is None
    with pytest.raises(TypeError):
        _statistics({**record, "status": "leaked"})


def test_an_onnx_export_in_training_mode_leaks_the_same_way(tmp_path):
    import warnings

    from leakaudit.models import load_model

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(_resnet().train(), (torch.randn(2, *SHAPE),), str(tmp_path / "r.onnx"), dynamo=False,
                          training=torch.onnx.TrainingMode.TRAINING, input_names=["x"],
                          dynamic_axes={"x": {0: "batch"}})
    model = load_model(tmp_path / "r.onnx")
    old = {n: b.clone() for n, b in model.module.named_buffers()}
    leak = buffer_leak(model.module, old, client_update(model, _batch(), ThreatModel(batch_size=2, buffers=True),
                                                        seed=0), SHAPE)
    assert leak is not None and leak.status == "recovered"
    assert max(d["mean_error"] for d in leak.layers) < 1e-5
    assert len(leak.activation_layers) == len(LAST_STAGE)
    assert all(d["activation_error"] < 1e-3 for d in leak.activation_layers)
