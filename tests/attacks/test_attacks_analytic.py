"""Analytic first-layer inversion: exact on fully connected models, a reasoned "not applicable" elsewhere."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from skimage import data as skdata
from torch import nn

from leakaudit.attacks.analytic import AnalyticAttack, invert_first_linear
from leakaudit.attacks.interface import AttackSettings, AttackTarget
from leakaudit.data.interface import Normalization, SampleBatch
from leakaudit.detect.interface import Findings
from leakaudit.models.interface import LoadedModel
from leakaudit.models.zoo import create_model
from leakaudit.progress import NullObserver
from leakaudit.update import ThreatModel, client_update, parse_defense

CIFAR = Normalization("cifar10", (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616))
SHAPE = (3, 32, 32)


def _image(name: str) -> torch.Tensor:
    array = np.asarray(Image.fromarray(getattr(skdata, name)()).resize((32, 32), Image.BILINEAR))
    return torch.tensor(array, dtype=torch.float32).permute(2, 0, 1) / 255.0


def _psnr(a: torch.Tensor, b: torch.Tensor) -> float:  # pixel space [0, 1]
    return float(10 * torch.log10(1.0 / ((a - b) ** 2).mean().clamp_min(1e-20)))


def _setup(names: list[str], module: nn.Module | None = None, **kw) -> tuple[LoadedModel, SampleBatch]:
    torch.manual_seed(0)
    module = module if module is not None else create_model("mlp", num_classes=10, input_shape=SHAPE, **kw)
    model = LoadedModel(module, SHAPE, 10, Path("m.safetensors"), "0" * 64, "safetensors", arch="mlp")
    pixels = torch.stack([_image(n) for n in names])
    batch = SampleBatch(CIFAR.to_model(pixels), torch.arange(len(names)) % 10, pixels, tuple(names), "samples/", CIFAR)
    return model, batch


def _best_psnr_per_original(x: torch.Tensor, batch: SampleBatch) -> list[float]:
    rec = CIFAR.to_pixels(x)
    return [max(_psnr(r, p) for r in rec) for p in batch.pixels]


@pytest.mark.parametrize("dropout", [0.0, 0.5])
def test_one_real_image_is_recovered_exactly_from_an_mlp(dropout):
    model, batch = _setup(["astronaut"], dropout=dropout)
    update = client_update(model, batch, ThreatModel(), seed=0)
    result = invert_first_linear(update.gradients, model.module, SHAPE, 1)
    assert result.reason == "" and result.layer == "1"
    assert _psnr(CIFAR.to_pixels(result.x)[0], batch.pixels[0]) > 60
    assert result.residual < 1e-5  # the attacker's own evidence that the fit is exact


def _psnr_under(model: LoadedModel, batch: SampleBatch, defense: str) -> float:
    update = client_update(model, batch, ThreatModel(defenses=(parse_defense(defense),)), seed=0)
    x = invert_first_linear(update.gradients, model.module, SHAPE, 1).x
    return _psnr(CIFAR.to_pixels(x)[0], batch.pixels[0])


@pytest.mark.parametrize("sweep", [
    ["noise:sigma=1e-5", "noise:sigma=1e-3", "noise:sigma=1e-2"],
    ["prune:keep=0.5", "prune:keep=0.2", "prune:keep=0.05"],
    ["mask:fraction=0.5", "mask:fraction=0.9", "mask:fraction=0.98"],
])
def test_reconstruction_quality_falls_with_defense_strength(sweep):
    model, batch = _setup(["astronaut"])
    psnr = [_psnr_under(model, batch, d) for d in sweep]
    print("analytic PSNR:", dict(zip(sweep, (round(p, 1) for p in psnr), strict=True)))
    assert psnr[0] > psnr[1] > psnr[2]
    assert psnr[2] < 30


def test_clipping_and_moderate_masking_do_not_stop_it():
    model, batch = _setup(["astronaut"])
    assert _psnr_under(model, batch, "clip:norm=1e-4") > 60  # dW_i / db_i does not see the scale
    assert _psnr_under(model, batch, "mask:fraction=0.5") > 60  # zeroed entries are skipped, the rest is exact


def test_fedavg_local_steps_do_not_stop_it_for_one_sample():
    # Every local step's first-layer gradient is a multiple of the same input, so their mean is too.
    model, batch = _setup(["astronaut"], dropout=0.25)
    update = client_update(model, batch, ThreatModel(protocol="fedavg", local_steps=5, local_lr=0.1), seed=0)
    result = invert_first_linear(update.gradients, model.module, SHAPE, 1)
    assert _psnr(CIFAR.to_pixels(result.x)[0], batch.pixels[0]) > 60


def test_a_small_batch_is_separated_into_its_samples():
    model, batch = _setup(["astronaut", "chelsea", "coffee", "rocket"])
    update = client_update(model, batch, ThreatModel(), seed=0)
    result = invert_first_linear(update.gradients, model.module, SHAPE, 4)
    assert result.x.shape == (4, *SHAPE) and result.separated == 4 and result.notes == ()
    assert min(_best_psnr_per_original(result.x, batch)) > 60


def test_a_batch_it_cannot_fully_separate_is_returned_with_a_note():
    names = ["astronaut", "chelsea", "coffee", "rocket", "camera", "horse", "hubble_deep_field", "immunohistochemistry"]
    names = [n for n in names if getattr(skdata, n)().ndim == 3][:6]  # colour images only
    model, batch = _setup(names, hidden=(32,))  # few units: some samples share every active unit
    update = client_update(model, batch, ThreatModel(), seed=0)
    result = invert_first_linear(update.gradients, model.module, SHAPE, len(names))
    assert result.x.shape == (len(names), *SHAPE)
    assert result.separated < len(names)
    assert result.notes and f"separated {result.separated} of {len(names)}" in result.notes[0]
    psnrs = sorted(_best_psnr_per_original(result.x, batch), reverse=True)
    assert all(p > 60 for p in psnrs[: result.separated])  # what it says it separated is exact


def _target(model: LoadedModel, grads, n: int = 1, bounds=None) -> AttackTarget:
    return AttackTarget(module=model.module, gradients=grads, input_shape=SHAPE, num_classes=10, num_samples=n,
                        bounds=bounds)


def test_attack_class_runs_and_clips_to_the_box():
    model, batch = _setup(["astronaut"])
    update = client_update(model, batch, ThreatModel(), seed=0)
    lo, hi = CIFAR.to_model(torch.zeros(1, *SHAPE)), CIFAR.to_model(torch.ones(1, *SHAPE))
    rec = AnalyticAttack().run(_target(model, update.gradients, bounds=(lo, hi)), AttackSettings(iterations=0),
                               device=torch.device("cpu"), seed=0, observer=NullObserver())
    assert rec.attack == "analytic" and rec.iterations_run == 0 and rec.attack_loss < 1e-5
    assert _psnr(CIFAR.to_pixels(rec.x)[0], batch.pixels[0]) > 60
    assert bool((rec.x >= lo).all() and (rec.x <= hi).all())


class _Scale(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return 2 * x


@pytest.mark.parametrize("module, reason", [
    (create_model("cnn", num_classes=10, input_shape=SHAPE),
     r"^not applicable: the first trainable layer '0' is Conv2d"),
    (nn.Sequential(nn.Flatten(), nn.Linear(3072, 16, bias=False), nn.ReLU(), nn.Linear(16, 10)),
     r"^not applicable: the first Linear '1' has no trainable bias"),
    (nn.Sequential(nn.Flatten(), _Scale(), nn.Linear(3072, 16), nn.ReLU(), nn.Linear(16, 10)),
     r"^not applicable: the first Linear '2' does not see the flattened input \(layers before it: Flatten, _Scale\)"),
])
def test_models_that_do_not_fit_get_a_result_with_the_reason(module, reason):
    model, batch = _setup(["astronaut"], module=module)
    update = client_update(model, batch, ThreatModel(), seed=0)
    rec = AnalyticAttack().run(_target(model, update.gradients), AttackSettings(iterations=0),
                               device=torch.device("cpu"), seed=0, observer=NullObserver())
    assert rec.x.shape == (0, *SHAPE)
    assert rec.notes and re.match(reason, rec.notes[0]), rec.notes


def test_skip_reason_uses_the_detected_layer_order():
    cnn = create_model("cnn", num_classes=10, input_shape=SHAPE)
    findings = Findings(layers=(("0", "Conv2d", 896), ("1", "ReLU", 0)))
    assert AnalyticAttack().skip_reason(findings, cnn).startswith("not applicable: the first trainable layer '0'")
    mlp = create_model("mlp", num_classes=10, input_shape=SHAPE)
    assert AnalyticAttack().skip_reason(Findings(layers=(("0", "Flatten", 0), ("1", "Linear", 786688))), mlp) is None
    scaled = nn.Sequential(nn.Flatten(), _Scale(), nn.Linear(3072, 16), nn.ReLU(), nn.Linear(16, 10))
    order = (("0", "Flatten", 0), ("1", "_Scale", 0), ("2", "Linear", 49168))
    assert "layers before it: _Scale" in AnalyticAttack().skip_reason(Findings(layers=order), scaled)
