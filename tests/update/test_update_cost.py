"""A defense's cost beside its protection: how far the defended update is from the clean one, and how much
of a clean server step's loss reduction it keeps -- in the report, the sweep and the Python API."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from leakaudit.audit import audit
from leakaudit.data.interface import SampleBatch
from leakaudit.data.normalize import normalization
from leakaudit.models.interface import LoadedModel
from leakaudit.models.zoo import create_model
from leakaudit.update import ThreatModel, apply_defenses, client_update, parse_defense
from leakaudit.update.cost import defense_cost

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def _setup(arch: str = "mlp") -> tuple[LoadedModel, SampleBatch]:
    torch.manual_seed(0)
    net = create_model(arch, num_classes=4, input_shape=(3, 8, 8), dropout=0.25)
    model = LoadedModel(net, (3, 8, 8), 4, Path(f"{arch}.safetensors"), "0" * 64, "safetensors", arch=arch)
    pixels = torch.rand(4, 3, 8, 8)
    batch = SampleBatch(pixels, torch.tensor([0, 1, 2, 3]), pixels, tuple(f"{i}.png" for i in range(4)),
                        "in memory", normalization("none", channels=3))
    return model, batch


def _cost(model: LoadedModel, batch: SampleBatch, defense: str | None):
    threat = ThreatModel(batch_size=len(batch))
    clean = client_update(model, batch, threat, seed=0)
    defended = clean if defense is None else apply_defenses(clean, [parse_defense(defense)], seed=1)
    return defense_cost(model, batch, clean.gradients, defended.gradients, threat, seed=0)


def test_no_defense_costs_nothing():
    cost = _cost(*_setup(), None)
    assert cost.cosine == pytest.approx(1.0) and cost.relative_error == pytest.approx(0.0, abs=1e-12)
    assert cost.loss_after_clean < cost.loss_before and cost.kept == pytest.approx(1.0)


def test_clipping_to_a_tiny_norm_keeps_the_direction_but_almost_none_of_the_step():
    cost = _cost(*_setup(), "clip:norm=1e-6")
    assert cost.cosine == pytest.approx(1.0, abs=1e-6) and cost.relative_error == pytest.approx(1.0, abs=1e-3)
    assert abs(cost.kept) < 0.01


def test_stronger_noise_costs_more():
    model, batch = _setup()
    weak, strong = _cost(model, batch, "noise:sigma=0.001"), _cost(model, batch, "noise:sigma=1")
    assert strong.cosine < weak.cosine < 1 and strong.relative_error > weak.relative_error
    assert strong.kept < weak.kept


def test_measuring_leaves_the_model_and_the_callers_random_state_alone():
    model, batch = _setup("cnn")  # BatchNorm: train-mode forwards would move its running statistics
    before = {n: b.clone() for n, b in model.module.named_buffers()}
    model.module.eval()
    state = torch.random.get_rng_state()
    _cost(model, batch, "noise:sigma=0.1")
    assert not model.module.training and torch.equal(torch.random.get_rng_state(), state)
    assert all(torch.equal(before[n], b) for n, b in model.module.named_buffers())


def test_the_scan_report_and_the_sweep_state_the_cost(tmp_path):
    from leakaudit.report import build_document, load_document, parse_formats, write_reports

    model, data = EXAMPLES / "models" / "mlp_dropout.onnx", EXAMPLES / "samples"
    plain = audit(model, data, iterations=1, batch_size=1)
    assert plain.defense_cost is None
    result = audit(model, data, iterations=1, batch_size=1, defenses=("noise:sigma=0.1",))
    cost = result.defense_cost
    assert cost is not None and 0 < cost.cosine < 1 and cost.kept is not None
    doc = build_document(result)
    write_reports(doc, tmp_path, parse_formats(("json", "html")))
    saved = load_document(tmp_path / "report.json")  # validates against the schema
    assert saved["defense_cost"]["cosine"] == pytest.approx(cost.cosine)
    assert saved["defense_cost"]["summary"] == cost.summary()
    assert "<h2>Defense cost</h2>" in (tmp_path / "report.html").read_text()
    assert "defense_cost" in json.loads((tmp_path / "report.json").read_text())  # any newer schema keeps it


def test_the_terminal_summary_states_the_cost(tmp_path, capsys):
    from leakaudit.cli import app_main

    app_main(["scan", str(EXAMPLES / "models" / "mlp_dropout.onnx"), "--data", str(EXAMPLES / "samples"),
              "--defense", "noise:sigma=0.1", "--iterations", "1", "--batch-size", "1",
              "--output-dir", str(tmp_path / "r")])
    err = " ".join(capsys.readouterr().err.split())  # the terminal wraps long lines
    doc = json.loads((tmp_path / "r" / "report.json").read_text())
    assert f"defense cost: {doc['defense_cost']['summary']}" in err


def test_the_summary_leads_with_fidelity_and_does_not_sell_noise_as_free():
    from leakaudit.update.cost import DefenseCost

    noisy = DefenseCost(cosine=0.016, relative_error=62.0, step=0.1, loss_before=2.3, loss_after_clean=2.2,
                        loss_after_defended=2.197, kept=1.03)
    text = noisy.summary()
    assert text.startswith("update fidelity: cosine 0.016 to the clean update, relative error 62 (almost only "
                           "distortion")
    assert "keeps 103%" not in text and "not held-out data" in text and "by chance" in text
    close = DefenseCost(cosine=0.97, relative_error=0.2, step=0.1, loss_before=2.3, loss_after_clean=2.2,
                        loss_after_defended=2.21, kept=0.9)
    assert "nearly the clean update" in close.summary() and "by chance" not in close.summary()


# ------------------------------------------------------------------------- held-out samples (--utility-data)
def _heldout_cost(defense: str | None):
    model, batch = _setup()
    torch.manual_seed(1)
    pixels = torch.rand(12, 3, 8, 8)
    held = SampleBatch(pixels, torch.arange(12) % 4, pixels, tuple(f"h{i}.png" for i in range(12)), "held",
                       normalization("none", channels=3))
    threat = ThreatModel(batch_size=len(batch))
    clean = client_update(model, batch, threat, seed=0)
    defended = clean if defense is None else apply_defenses(clean, [parse_defense(defense)], seed=1)
    return defense_cost(model, batch, clean.gradients, defended.gradients, threat, seed=0, heldout=held)


def test_held_out_samples_show_an_inert_defense_as_free_and_a_destructive_one_as_costly():
    free = _heldout_cost("clip:norm=1e9").heldout  # never clips: the defended step is the clean one
    assert free is not None and free.samples == 12 and free.source == "held"
    assert free.loss_after_defended == free.loss_after_clean
    assert free.accuracy_after_defended == free.accuracy_after_clean
    cost = _heldout_cost("noise:sigma=100")
    held = cost.heldout
    assert held is not None and held.loss_after_defended > 10 * held.loss_after_clean
    assert 0.0 <= held.accuracy_after_defended <= 1.0
    assert "on 12 held-out sample(s)" in cost.summary()


def test_a_scan_with_utility_data_reports_it_and_a_missing_folder_is_one_line(tmp_path, capsys):
    from leakaudit.cli import app_main

    args = ["scan", str(EXAMPLES / "models" / "mlp_dropout.onnx"), "--data", str(EXAMPLES / "samples"),
            "--samples", "1", "--attacks", "analytic", "--defense", "noise:sigma=0.3", "--format", "json",
            "--quiet", "--output-dir", str(tmp_path / "out")]
    assert app_main([*args, "--utility-data", str(EXAMPLES / "samples")]) in (0, 1)
    doc = json.loads((tmp_path / "out" / "report.json").read_text())
    held = doc["defense_cost"]["heldout"]
    assert held["samples"] == 6 and "held-out" in doc["defense_cost"]["summary"]
    assert "--utility-data" in doc["command"]
    capsys.readouterr()
    assert app_main([*args, "--utility-data", str(tmp_path / "missing")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("leakaudit: error: --utility-data") and "missing" in err[-1]
