"""The attacker's copy computes the client's function and can be differentiated twice (MobileNetV3)."""

from __future__ import annotations

import copy

import pytest
import torch
import torchvision
from torch import nn

from leakaudit.attacks import AttackSettings, AttackTarget, run_attack
from leakaudit.models.differentiable import fast_double_backward, twice_differentiable


def _double_backward(model: nn.Module, x: torch.Tensor) -> None:
    params = [p for p in model.parameters() if p.requires_grad]
    loss = nn.functional.cross_entropy(model(x), torch.tensor([1, 2]))
    grads = torch.autograd.grad(loss, params, create_graph=True)
    torch.autograd.grad(sum((g * g).sum() for g in grads), x)


@pytest.fixture(scope="module")
def mobilenet() -> nn.Module:
    torch.manual_seed(0)
    return torchvision.models.mobilenet_v3_small(num_classes=10).train()


def test_stand_ins_compute_the_same_function_and_differentiate_twice(mobilenet):
    x = torch.randn(2, 3, 32, 32, requires_grad=True)
    with pytest.raises(RuntimeError, match="hardsigmoid_backward"):
        _double_backward(mobilenet, x)
    copied = copy.deepcopy(mobilenet)
    swapped = twice_differentiable(copied)
    assert any("hardsigmoid" in type(m).__name__.lower() for m in mobilenet.modules())
    assert len(swapped) == sum(isinstance(m, (nn.Hardsigmoid, nn.Hardswish)) for m in mobilenet.modules())
    torch.manual_seed(1)
    expected = mobilenet(x)
    torch.manual_seed(1)
    assert torch.allclose(copied(x), expected, atol=1e-6)
    _double_backward(copied, x)


def test_ig_runs_on_mobilenet_v3_instead_of_crashing(mobilenet):
    x = torch.rand(2, 3, 32, 32)
    y = torch.tensor([1, 2])
    loss = nn.functional.cross_entropy(mobilenet(x), y)
    names = [n for n, _ in mobilenet.named_parameters()]
    grads = dict(zip(names, torch.autograd.grad(loss, list(mobilenet.parameters())), strict=True))
    target = AttackTarget(module=mobilenet, gradients=grads, input_shape=(3, 32, 32), num_classes=10, labels=y,
                          num_samples=2)
    recon = run_attack("ig", target, AttackSettings(iterations=2), device="cpu", seed=0)
    assert recon.x.shape == (2, 3, 32, 32) and torch.isfinite(recon.x).all() and recon.iterations_run == 2


def test_timm_fused_attention_is_unfused_in_the_copy_with_the_same_outputs_and_a_double_backward():
    timm = pytest.importorskip("timm")
    torch.manual_seed(0)
    vit = timm.create_model("vit_tiny_patch16_224", pretrained=False, num_classes=10, img_size=16, patch_size=8,
                            depth=1, embed_dim=48, num_heads=2).train()
    x = torch.randn(2, 3, 16, 16, requires_grad=True)
    with pytest.raises(RuntimeError, match="flash_attention"):
        _double_backward(vit, x)
    copied = copy.deepcopy(vit)
    assert twice_differentiable(copied) == ["blocks.0.attn"]
    assert torch.allclose(copied(x), vit(x), atol=1e-5)
    _double_backward(copied, x)


def test_grouped_convolutions_get_the_same_function_and_second_derivative_with_their_names_kept():
    torch.manual_seed(0)
    model = torchvision.models.mobilenet_v3_small(num_classes=10, dropout=0.0).train().double()
    twice_differentiable(model)
    copied = copy.deepcopy(model)
    changed = fast_double_backward(copied)
    grouped = [n for n, m in model.named_modules() if isinstance(m, nn.Conv2d) and m.groups > 1]
    assert changed == grouped and len(grouped) == 11
    assert [n for n, _ in copied.named_parameters()] == [n for n, _ in model.named_parameters()]

    def input_gradient(net: nn.Module) -> tuple[torch.Tensor, torch.Tensor]:
        x = torch.linspace(-1, 1, 2 * 3 * 32 * 32, dtype=torch.float64).view(2, 3, 32, 32).requires_grad_(True)
        out = net(x)
        grads = torch.autograd.grad(nn.functional.cross_entropy(out, torch.tensor([1, 2])),
                                    list(net.parameters()), create_graph=True)
        return out, torch.autograd.grad(sum((g * g).sum() for g in grads), x)[0]

    (out, second), (out_copy, second_copy) = input_gradient(model), input_gradient(copied)
    assert torch.allclose(out_copy, out, rtol=1e-9, atol=1e-12)
    assert torch.allclose(second_copy, second, rtol=1e-8, atol=1e-10 * float(second.abs().max()))


def test_strided_dilated_grouped_convolution_matches_torch():
    torch.manual_seed(0)
    conv = nn.Conv2d(6, 9, (3, 2), stride=(2, 1), padding=(1, 2), dilation=(1, 2), groups=3).double()
    x = torch.randn(2, 6, 11, 8, dtype=torch.float64)
    expected = conv(x)
    fast_double_backward(conv)
    assert type(conv).__name__ == "UnfoldConv2d" and torch.allclose(conv(x), expected, atol=1e-12)
