"""Normalization presets and explicit mean/std."""

from __future__ import annotations

import pytest
import torch

from leakaudit.data import normalization
from leakaudit.errors import ConfigError, UnknownNameError


def test_none_is_the_identity() -> None:
    norm = normalization("none", channels=3)
    x = torch.rand(2, 3, 4, 4)
    assert torch.equal(norm.to_model(x), x)


def test_presets_use_the_datasets_published_statistics() -> None:
    # torchvision's ImageNet constants and the MNIST constants of the PyTorch examples
    assert normalization("imagenet").mean == (0.485, 0.456, 0.406)
    assert normalization("imagenet").std == (0.229, 0.224, 0.225)
    assert normalization("mnist", channels=1).mean == (0.1307,)
    cifar = normalization("cifar10")
    assert cifar.mean == pytest.approx((0.4914, 0.4822, 0.4465), abs=1e-3)
    assert cifar.std == pytest.approx((0.2470, 0.2435, 0.2616), abs=1e-3)


def test_a_one_channel_preset_is_repeated_for_rgb_input() -> None:
    assert normalization("mnist", channels=3).std == (0.3081,) * 3


def test_custom_mean_std_round_trip() -> None:
    norm = normalization("custom", mean=[0.5], std=[0.25, 0.5, 1.0], channels=3)
    assert norm.name == "custom" and norm.mean == (0.5, 0.5, 0.5)
    px = torch.rand(2, 3, 4, 4)
    x = norm.to_model(px)
    assert torch.allclose(x[:, 1], (px[:, 1] - 0.5) / 0.5)
    assert torch.allclose(norm.to_pixels(x), px, atol=1e-6)
    assert normalization(mean=[0.1], std=[0.2], channels=1).name == "custom"  # mean/std alone imply custom


@pytest.mark.parametrize("kwargs, pattern", [
    (dict(name="custom"), "needs mean and std"),
    (dict(name="custom", mean=[0.5]), "give both"),
    (dict(name="cifar10", mean=[0.5], std=[0.5]), "a preset fixes mean and std"),
    (dict(name="custom", mean=[0.5, 0.5], std=[0.5], channels=3), "2 values for a 3-channel input"),
    (dict(name="custom", mean=[0.5], std=[0.0]), "must be positive"),
    (dict(name="cifar10", channels=1), "the preset has 3 channels but the model takes 1"),
])
def test_bad_settings_are_config_errors(kwargs: dict, pattern: str) -> None:
    with pytest.raises(ConfigError, match=pattern) as info:
        normalization(**kwargs)
    assert "\n" not in str(info.value)


def test_unknown_preset_suggests_the_close_name() -> None:
    with pytest.raises(UnknownNameError, match=r"normalize 'cifar': unknown preset; did you mean cifar10"):
        normalization("cifar")
