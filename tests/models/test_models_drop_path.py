"""Stochastic depth (DropPath) drops a whole residual branch per sample. Both routes must keep that function
-- one draw per sample, not an element-wise dropout -- and make the draw a mask the client update records and
DIA optimises (one continuous mask per sample and branch)."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from leakaudit.audit import audit
from leakaudit.models import load_model
from leakaudit.models.dropout_tools import replace_dropout
from leakaudit.models.layers import MaskableDropout, MaskableDropPath


class _DropPath(nn.Module):
    """The ops timm's ``drop_path`` runs (a user's own copy of it, as many codebases carry)."""

    def __init__(self, p: float) -> None:
        super().__init__()
        self.p = p

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0:
            return x
        keep = 1 - self.p
        return x * x.new_empty((x.shape[0],) + (1,) * (x.ndim - 1)).bernoulli_(keep).div_(keep)


class _Residual(nn.Module):
    def __init__(self, p: float = 0.5) -> None:
        super().__init__()
        self.stem = nn.Linear(12, 16)
        self.branch = nn.Linear(16, 16)
        self.drop_path = _DropPath(p)
        self.head = nn.Linear(16, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.stem(x.flatten(1)).relu()
        return self.head(h + self.drop_path(self.branch(h)))


def _export(tmp_path: Path, dynamo: bool) -> tuple[nn.Module, Path]:
    torch.manual_seed(0)
    model = _Residual().train()
    path = tmp_path / f"residual_{'dynamo' if dynamo else 'torchscript'}.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if dynamo:
            torch.onnx.export(model, (torch.rand(4, 12),), str(path), dynamo=True, input_names=["x"],
                              dynamic_shapes=({0: torch.export.Dim("batch")},))
        else:
            torch.onnx.export(model, (torch.rand(4, 12),), str(path), dynamo=False, input_names=["x"],
                              training=torch.onnx.TrainingMode.TRAINING, do_constant_folding=False,
                              dynamic_axes={"x": {0: "batch"}})
    return model, path


def _maskable(module: nn.Module) -> list[MaskableDropout]:
    return [m for m in module.modules() if isinstance(m, MaskableDropout)]


@pytest.mark.parametrize("dynamo", [False, True])
def test_an_exported_drop_path_draws_one_mask_per_sample_not_per_element(tmp_path, dynamo):
    model, path = _export(tmp_path, dynamo)
    loaded = load_model(path)
    (drop,) = _maskable(loaded.module)
    assert drop.p == pytest.approx(0.5)
    drop.record = True
    x = torch.rand(64, 12)
    torch.manual_seed(1)
    loaded.module.train()(x)
    assert tuple(drop.last_mask.shape) == (64, 1)  # element-wise would be (64, 16)
    assert 0 < drop.last_mask.sum() < 64  # p = 0.5: some branches dropped, some kept
    model.eval()
    loaded.module.eval()
    assert torch.allclose(model(x), loaded.module(x), atol=1e-6)


def test_a_dropped_branch_leaves_exactly_the_residual(tmp_path):
    model, path = _export(tmp_path, dynamo=False)
    loaded = load_model(path)
    (drop,) = _maskable(loaded.module)
    drop.record = True
    x = torch.rand(32, 12)
    out = loaded.module.train()(x)
    kept = drop.last_mask.flatten().bool()
    with torch.no_grad():
        h = model.stem(x).relu()
        expected = torch.where(kept[:, None], model.head(h + 2 * model.branch(h)), model.head(h))
    assert torch.allclose(out, expected, atol=1e-5)


def test_torch_modules_of_timm_and_torchvision_become_maskable_drop_paths():
    timm = pytest.importorskip("timm")
    torchvision = pytest.importorskip("torchvision")
    vit = timm.create_model("vit_tiny_patch16_224", pretrained=False, num_classes=10, img_size=32, patch_size=8,
                            depth=2, drop_path_rate=0.2)
    replaced = replace_dropout(vit)
    paths = [m for m in vit.modules() if isinstance(m, MaskableDropPath)]
    # timm spreads the rate over the depth: 0 in the first block (left alone), 0.2 in the last
    assert [round(m.p, 3) for m in paths] == [0.2, 0.2] and all(m.per_sample for m in paths)
    assert {"blocks.1.drop_path1", "blocks.1.drop_path2"} <= set(replaced)
    net = torchvision.models.efficientnet_b0(num_classes=10, stochastic_depth_prob=0.2)
    replace_dropout(net)
    depth = [m for m in net.modules() if isinstance(m, MaskableDropPath)]
    assert depth and all(m.per_sample for m in depth)
    assert not [m for m in net.modules() if type(m).__name__ == "StochasticDepth" and m.p > 0]


def test_dia_and_the_client_update_run_on_a_drop_path_model(tmp_path):
    """The scan finds the layer, the client update records per-sample masks, DIA and dia-informed run."""
    _, path = _export(tmp_path, dynamo=False)
    data = tmp_path / "data.npz"
    np.savez(data, x=np.random.default_rng(0).random((2, 12), dtype=np.float32), y=np.array([0, 2]))
    result = audit(path, data, attacks=("dia", "dia-informed"), iterations=3, batch_size=2)
    assert [d.p for d in result.findings.dropout] == [pytest.approx(0.5)]
    assert not result.findings.unrecognized_stochastic
    ran = {a.name: a for a in result.attacks}
    assert ran["dia"].status == "ran" and ran["dia-informed"].status == "ran", [a.reason for a in result.attacks]
    # the scan hands dia-informed the client's masks (and only it): with none it would say it runs as IG
    assert not any("no usable true masks" in n for n in ran["dia-informed"].notes)


def test_a_timm_vit_with_drop_path_from_safetensors_is_found_and_attacked(tmp_path):
    timm = pytest.importorskip("timm")
    from safetensors.torch import save_file

    net = timm.create_model("vit_tiny_patch16_224", pretrained=False, num_classes=4, img_size=16, patch_size=8,
                            depth=2, embed_dim=48, num_heads=2, drop_path_rate=0.2)
    weights = tmp_path / "vit.safetensors"
    save_file({k: v.contiguous() for k, v in net.state_dict().items()}, str(weights))
    data = tmp_path / "data.npz"
    np.savez(data, x=np.random.default_rng(0).random((1, 3, 16, 16), dtype=np.float32), y=np.array([1]))
    args = {"img_size": 16, "patch_size": 8, "depth": 2, "embed_dim": 48, "num_heads": 2, "drop_path_rate": 0.2,
            "num_classes": 4}
    result = audit(weights, data, arch="timm:vit_tiny_patch16_224", arch_args=args, input_shape=(3, 16, 16),
                   attacks=("dia",), iterations=2, batch_size=1)
    assert sorted(d.name for d in result.findings.dropout) == ["blocks.1.drop_path1.drop", "blocks.1.drop_path2.drop"]
    assert not result.findings.unrecognized_stochastic
    assert result.attacks[0].status == "ran", result.attacks[0].reason
