"""APRIL: a ViT's input recovered in closed form from its positional-embedding and patch-embedding gradients;
a reasoned "not applicable" where the structure is missing, wired differently, or the update holds a batch."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from skimage import data as skdata
from torch import nn

from leakaudit.attacks import ATTACKS, plan
from leakaudit.attacks.april import AprilAttack, find_patch_embedding, invert_patches
from leakaudit.attacks.interface import AttackSettings, AttackTarget
from leakaudit.cli import app_main
from leakaudit.data.interface import Normalization, SampleBatch
from leakaudit.detect import detect
from leakaudit.metrics.functional import ssim
from leakaudit.models import load_model
from leakaudit.models.interface import LoadedModel
from leakaudit.models.zoo import create_model
from leakaudit.progress import NullObserver
from leakaudit.update import ThreatModel, client_update

ROOT = Path(__file__).resolve().parents[2]
CIFAR = Normalization("cifar10", (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616))
SHAPE = (3, 32, 32)
EXACT = 1e-3  # max abs error in model space: float32 gradients, solved in float64


def _image(name: str) -> torch.Tensor:
    array = np.asarray(Image.fromarray(getattr(skdata, name)()).resize((32, 32), Image.BILINEAR))
    return torch.tensor(array, dtype=torch.float32).permute(2, 0, 1) / 255.0


def _loaded(module: nn.Module, fmt: str = "safetensors") -> LoadedModel:
    return LoadedModel(module, SHAPE, 10, Path(f"m.{fmt}"), "0" * 64, fmt, arch="vit")


def _batch(names: list[str]) -> SampleBatch:
    pixels = torch.stack([_image(n) for n in names])
    return SampleBatch(CIFAR.to_model(pixels), torch.arange(len(names)) % 10, pixels, tuple(names), "samples/", CIFAR)


def _update(module: nn.Module, batch: SampleBatch) -> dict[str, torch.Tensor]:
    """The client's update as the pipeline computes it (train mode, cross-entropy, FedSGD)."""
    return dict(client_update(_loaded(module), batch, ThreatModel(), seed=0).gradients)


def _random_update(module: nn.Module, x: torch.Tensor) -> dict[str, torch.Tensor]:
    module.train()
    loss = nn.functional.cross_entropy(module(x), torch.tensor([3] * len(x)))
    params = {n: p for n, p in module.named_parameters() if p.requires_grad}
    grads = torch.autograd.grad(loss, list(params.values()), allow_unused=True)
    return {n: g for n, g in zip(params, grads, strict=True) if g is not None}


def _vit(**kw) -> nn.Module:
    torch.manual_seed(0)
    return create_model("vit", num_classes=10, input_shape=SHAPE, **kw)


def _timm_vit() -> nn.Module:
    timm = pytest.importorskip("timm", reason="timm is an optional dependency (pip install timm)")
    torch.manual_seed(0)
    return timm.create_model("vit_tiny_patch16_224", pretrained=False, img_size=32, patch_size=4, num_classes=10,
                             drop_rate=0.1)


def _onnx(module: nn.Module, path: Path) -> nn.Module:
    torch.onnx.export(module.train(), torch.randn(1, *SHAPE), str(path), training=torch.onnx.TrainingMode.TRAINING,
                      dynamo=False)
    return load_model(str(path)).module


def test_random_input_is_recovered_exactly_when_the_embedding_is_wider_than_the_patch_count():
    module = _vit(dim=96)  # D = 96 > P = 64 patches: Gᵀ has full column rank
    x = torch.randn(1, *SHAPE, generator=torch.Generator().manual_seed(1))
    result = invert_patches(_random_update(module, x), module, SHAPE)
    emb = result.embedding
    assert result.reason == "" and (emb.conv, emb.pos, emb.offset) == ("patch_embed", "pos_embed", 1)
    assert result.rank == 64 and result.residual < 1e-5
    assert float((result.x - x).abs().max()) < EXACT


def test_a_real_image_is_recovered_exactly_from_the_clients_update():
    module, batch = _vit(dim=96), _batch(["astronaut"])
    result = invert_patches(_update(module, batch), module, SHAPE)
    assert float((result.x - batch.x).abs().max()) < EXACT
    assert float(ssim(CIFAR.to_pixels(result.x).clamp(0, 1), batch.pixels)) > 0.999


def test_the_zoo_vit_with_as_many_dimensions_as_patches_is_near_exact_and_says_why_not_exact():
    # dim 64 = 64 patches, class-token pooling behind pre-norm blocks: every patch token's gradient reaches
    # the input only through LayerNorms, so it is orthogonal to the all-ones direction and rank(Gᵀ) = 63.
    module, batch = _vit(), _batch(["astronaut"])
    result = invert_patches(_update(module, batch), module, SHAPE)
    assert result.rank == 63 and any("underdetermined" in n and "not exact" in n for n in result.notes)
    assert float(ssim(CIFAR.to_pixels(result.x).clamp(0, 1), batch.pixels)) > 0.99  # measured 0.999


def test_timm_vit_tiny_is_recovered_exactly_from_torch_and_from_its_onnx_export(tmp_path):
    module = _timm_vit()
    x = torch.randn(1, *SHAPE, generator=torch.Generator().manual_seed(1))
    for route, model in (("torch", module), ("onnx", _onnx(module, tmp_path / "vit_tiny.onnx"))):
        torch.manual_seed(0)  # the same dropout draw is not needed: APRIL reads the update, whatever it was
        result = invert_patches(_random_update(model, x), model, SHAPE)
        assert result.reason == "" and result.rank == 64, route
        assert float((result.x - x).abs().max()) < EXACT, route
    # onnx2torch turns timm's pos_embed into a trainable initializer: found by its gradient, not its name
    assert result.embedding.pos == "weights.pos_embed" and result.embedding.conv == "patch_embed/proj/Conv"


def test_the_dynamo_exporters_onnx_is_recovered_exactly_too(tmp_path):
    module = _vit(dim=96)
    x = torch.randn(1, *SHAPE, generator=torch.Generator().manual_seed(1))
    torch.onnx.export(module.train(), (x,), str(tmp_path / "vit.onnx"), training=torch.onnx.TrainingMode.TRAINING)
    converted = load_model(str(tmp_path / "vit.onnx")).module
    result = invert_patches(_random_update(converted, x), converted, SHAPE)
    assert result.embedding.pos == "weights.pos_embed" and float((result.x - x).abs().max()) < EXACT


def test_the_attack_class_clips_to_the_box_and_reports_what_it_used():
    module, batch = _vit(dim=96), _batch(["chelsea"])
    lo, hi = CIFAR.to_model(torch.zeros(1, *SHAPE)), CIFAR.to_model(torch.ones(1, *SHAPE))
    target = AttackTarget(module=module, gradients=_update(module, batch), input_shape=SHAPE, num_classes=10,
                          bounds=(lo, hi))
    rec = AprilAttack().run(target, AttackSettings(iterations=1), device=torch.device("cpu"), seed=0,
                            observer=NullObserver())
    assert rec.attack == "april" and rec.x.shape == (1, *SHAPE) and rec.attack_loss < 1e-5
    assert bool((rec.x >= lo).all() and (rec.x <= hi).all())
    assert float((rec.x - batch.x).abs().max()) < EXACT
    assert "positional embedding pos_embed from token 1: rank 64 of 64" in rec.notes[0]


def test_a_batch_is_not_applicable_with_the_reason():
    module, batch = _vit(dim=96), _batch(["astronaut", "coffee"])
    target = AttackTarget(module=module, gradients=_update(module, batch), input_shape=SHAPE, num_classes=10,
                          num_samples=2)
    rec = ATTACKS.get("april").run(target, AttackSettings(iterations=1), device=torch.device("cpu"), seed=0,
                                   observer=NullObserver())
    assert rec.x.shape[0] == 0  # the pipeline reports an empty reconstruction as skipped, with notes[0]
    assert rec.notes[0].startswith("not applicable: APRIL's closed form recovers one sample")
    assert "sums 2" in rec.notes[0]


def test_planned_on_vits_and_skipped_with_a_reason_on_a_cnn_and_an_mlp():
    for module in (_vit(), _vit(dim=96)):
        april = {p.name: p for p in plan(detect(_loaded(module)), module)}["april"]
        assert april.run and april.settings.iterations == 1
    for name in ("cnn", "mlp"):
        module = create_model(name, num_classes=10, input_shape=SHAPE)
        april = {p.name: p for p in plan(detect(_loaded(module)), module)}["april"]
        assert not april.run and april.reason == "not applicable: no patch embedding (a Conv2d whose kernel equals " \
                                                 "its stride)"


def test_april_runs_right_after_analytic_at_every_budget():
    module = _vit()
    for budget in ("quick", "standard", "thorough"):
        names = [p.name for p in plan(detect(_loaded(module)), module, budget=budget)]
        assert names.index("april") == names.index("analytic") + 1
        assert {p.name: p for p in plan(None, module, budget=budget)}["april"].settings.iterations == 1


class _NotAdded(nn.Module):
    """Shaped like a ViT (patch conv, a (1, 65, D) parameter named pos_embed) but the parameter scales the
    tokens instead of being added: the attack's identity does not hold, and the probe must see that."""

    def __init__(self, scale_input: bool = False) -> None:
        super().__init__()
        self.scale_input = scale_input
        self.patch_embed = nn.Conv2d(3, 96, 4, 4)
        self.pos_embed = nn.Parameter(torch.randn(1, 65, 96) * 0.02 + 1)
        self.head = nn.Linear(96, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.scale_input:  # the conv sees 2x, not the input: the patches would come back scaled
            return self.head((self.patch_embed(2 * x).flatten(2).transpose(1, 2) + self.pos_embed[:, 1:]).mean(1))
        tokens = self.patch_embed(x).flatten(2).transpose(1, 2)
        return self.head((tokens * self.pos_embed[:, 1:]).mean(1))


def test_the_wiring_is_probed_not_taken_from_names():
    emb = find_patch_embedding(_NotAdded(), SHAPE)
    assert emb.conv is None
    assert "no trainable (1, T, 96) parameter is added to the output of 'patch_embed'" in emb.reason
    emb = find_patch_embedding(_NotAdded(scale_input=True), SHAPE)
    assert emb.conv is None and "'patch_embed' does not see the model's input" in emb.reason
    # the structural pre-check passes (it is shaped like a ViT); the probe in run() says why it does not apply
    assert AprilAttack().skip_reason(None, _NotAdded()) is None


def _scan_vit_onnx(tmp_path, *extra: str) -> tuple[int, dict]:
    """The zoo ViT exported to ONNX, scanned with APRIL on one real photo."""
    onnx_path = tmp_path / "vit.onnx"
    _onnx(_vit(), onnx_path)
    data = tmp_path / "one"
    data.mkdir()
    (data / "astronaut.png").write_bytes((ROOT / "examples" / "samples" / "astronaut.png").read_bytes())
    (data / "labels.csv").write_text("file,label\nastronaut.png,0\n")
    out = tmp_path / "r"
    code = app_main(["scan", str(onnx_path), "--data", str(data), "--attacks", "april", *extra, "--output-dir",
                     str(out), "--format", "json", "--quiet"])
    return code, json.loads((out / "report.json").read_text())


def test_a_scan_of_a_vit_onnx_file_fails_on_april_with_ssim_near_one(tmp_path):
    code, doc = _scan_vit_onnx(tmp_path)
    assert code == 1 and doc["verdict"]["overall"] == "fail"
    april = next(a for a in doc["attacks"] if a["name"] == "april")
    assert april["status"] == "ran" and april["means"]["ssim"] > 0.99  # measured 0.995
    assert "april-positional-embedding" in {r["id"] for r in doc["recommendations"]}


def test_a_strong_noise_defense_on_a_vit_earns_its_pass_from_a_control_that_reconstructs(tmp_path):
    # issue 12: a defense that stops the attack passes only because the control (APRIL on the clean update)
    # reconstructs -- not a false INCONCLUSIVE, and not a pass on no evidence
    code, doc = _scan_vit_onnx(tmp_path, "--defense", "noise:sigma=0.1")
    assert code == 0 and doc["verdict"]["overall"] == "pass"
    april = next(a for a in doc["attacks"] if a["name"] == "april")
    assert april["status"] == "ran" and april["means"]["ssim"] < 0.3
    assert doc["control"]["status"] == "ran" and doc["control"]["reconstructed"] is True


def test_a_cnn_with_pointwise_convolutions_is_skipped_at_planning():
    # 1x1 convolutions have kernel == stride, and a Linear weight (10, 16) has the shape of a (T, D) embedding;
    # but the first convolution, the one that sees the input, is 3x3
    module = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 16, 1), nn.ReLU(),
                           nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, 16), nn.Linear(16, 10))
    april = {p.name: p for p in plan(detect(_loaded(module)), module)}["april"]
    assert not april.run and april.reason.startswith("not applicable: the first convolution '0' is not a patch")


def test_a_patchify_stem_without_positional_embedding_is_skipped_at_planning():
    # ConvNeXt-style: a 4x4 stride-4 stem, but the only (T, 16) parameters are Linear weights
    module = nn.Sequential(nn.Conv2d(3, 16, 4, 4), nn.Flatten(2), nn.Linear(64, 16), nn.Flatten(), nn.Linear(256, 10))
    april = {p.name: p for p in plan(detect(_loaded(module)), module)}["april"]
    assert not april.run and april.reason.startswith("not applicable: no learnable positional embedding")
