"""Fused attention is random only when its dropout is on: the probe must not flag timm-style attention blocks
whose ``scaled_dot_product_attention`` runs in train mode with ``dropout_p=0`` (issue 12)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from leakaudit.detect import detect
from leakaudit.models import LoadedModel


class FusedAttention(nn.Module):
    """timm's Attention in miniature: dropout_p is the attention dropout in train mode, 0 otherwise."""

    def __init__(self, dim: int = 8, attn_drop: float = 0.0) -> None:
        super().__init__()
        self.qkv, self.proj, self.attn_drop = nn.Linear(dim, 3 * dim), nn.Linear(dim, dim), attn_drop

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        q, k, v = self.qkv(x).chunk(3, dim=-1)
        p = self.attn_drop if self.training else 0.0
        return self.proj(F.scaled_dot_product_attention(q, k, v, dropout_p=p))


class Tokens(nn.Module):
    def __init__(self, attn_drop: float) -> None:
        super().__init__()
        self.attn = FusedAttention(attn_drop=attn_drop)
        self.head = nn.Linear(8, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.attn(x).mean(1))


def _wrap(module: nn.Module) -> LoadedModel:
    return LoadedModel(module, (5, 8), 3, Path("model.safetensors"), "0" * 64, "safetensors")


def test_fused_attention_without_dropout_is_not_flagged_as_stochastic():
    findings = detect(_wrap(Tokens(attn_drop=0.0)))
    assert findings.unrecognized_stochastic == ()
    assert not any("unrecognized stochastic" in w for w in findings.warnings)


def test_fused_attention_with_dropout_is_still_flagged():
    assert detect(_wrap(Tokens(attn_drop=0.3))).unrecognized_stochastic == ("attn",)


def test_timm_vit_with_attention_dropout_zero_has_no_unrecognized_stochastic_layer():
    timm = pytest.importorskip("timm", reason="timm is an optional dependency (pip install timm)")
    torch.manual_seed(0)
    vit = timm.create_model("vit_tiny_patch16_224", pretrained=False, img_size=32, patch_size=4, num_classes=10,
                            depth=2, attn_drop_rate=0.0)
    model = LoadedModel(vit, (3, 32, 32), 10, Path("model.safetensors"), "0" * 64, "safetensors")
    assert detect(model).unrecognized_stochastic == ()
