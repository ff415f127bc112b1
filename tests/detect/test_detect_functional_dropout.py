"""Dropout applied as a function argument, not a module call (issue 12): timm's attention passes its
``attn_drop`` rate to ``F.scaled_dot_product_attention`` and never calls the module. The safetensors route
must either make the dropout a module call DIA can drive, or say it cannot drive it -- never list a module
that does not run as dropout the attacks model."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from leakaudit.detect import detect
from leakaudit.models import LoadedModel, load_model, save_safetensors


class FunctionalDropout(nn.Module):
    """Keeps an nn.Dropout for its rate but applies the rate itself, as timm's fused attention does."""

    def __init__(self) -> None:
        super().__init__()
        self.fc, self.drop, self.head = nn.Linear(8, 8), nn.Dropout(0.25), nn.Linear(8, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(F.dropout(self.fc(x), self.drop.p, self.training))


def test_a_dropout_module_that_never_runs_is_reported_as_not_drivable() -> None:
    model = LoadedModel(FunctionalDropout(), (8,), 3, Path("model.safetensors"), "0" * 64, "safetensors")
    findings = detect(model)
    assert findings.dropout == ()  # DIA would optimise a mask that changes nothing
    assert any("'drop' (rate 0.25) is never called" in w and "no attack can drive" in w for w in findings.warnings)
    assert findings.unrecognized_stochastic == ("<model>",)  # the randomness is still reported


def _write_vit_factory(folder: Path) -> str:
    (folder / "vit_factory.py").write_text(
        "import timm\n\n\n"
        "def vit(num_classes=10, attn_drop_rate=0.0):\n"
        "    return timm.create_model('vit_tiny_patch16_224', pretrained=False, img_size=32, patch_size=8,\n"
        "                             depth=2, num_classes=num_classes, attn_drop_rate=attn_drop_rate)\n",
        encoding="utf-8")
    return f"{folder / 'vit_factory.py'}:vit"


def test_timm_vit_attention_dropout_is_dia_drivable_from_safetensors(tmp_path: Path) -> None:
    pytest.importorskip("timm", reason="timm is an optional dependency")
    from leakaudit.attacks import plan
    from leakaudit.models import MaskableDropout

    arch = _write_vit_factory(tmp_path)
    sys.path.insert(0, str(tmp_path))
    try:
        import vit_factory
        net = vit_factory.vit(attn_drop_rate=0.1)
    finally:
        sys.path.remove(str(tmp_path))
        sys.modules.pop("vit_factory", None)
    save_safetensors(net, tmp_path / "vit.safetensors", input_shape=(3, 32, 32), num_classes=10)
    model = load_model(tmp_path / "vit.safetensors", arch=arch, arch_kwargs={"attn_drop_rate": 0.1})
    findings = detect(model)
    attn = [d for d in findings.dropout if d.name.endswith("attn.attn_drop")]
    assert [d.name for d in attn] == ["blocks.0.attn.attn_drop", "blocks.1.attn.attn_drop"]
    assert all(d.p == pytest.approx(0.1) for d in attn)
    assert findings.unrecognized_stochastic == ()  # was every blocks.N.attn
    assert all(isinstance(dict(model.module.named_modules())[d.name], MaskableDropout) for d in attn)
    assert any(p.name == "dia" and p.run for p in plan(findings, model))

    # the unfused attention computes the same function (eval mode: no dropout drawn)
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.allclose(model.module.eval()(x), net.eval()(x), atol=1e-5)


class TrainOnlyDropout(FunctionalDropout):
    """Calls its dropout module in train mode only: the eval-mode trace never sees it, yet it runs."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.fc(x)
        return self.head(self.drop(h) if self.training else h)


def test_a_dropout_module_called_only_in_train_mode_is_still_dropout() -> None:
    model = LoadedModel(TrainOnlyDropout(), (8,), 3, Path("model.safetensors"), "0" * 64, "safetensors")
    findings = detect(model)
    assert [(d.name, d.p) for d in findings.dropout] == [("drop", 0.25)]
    assert not any("never called" in w for w in findings.warnings)
