"""LPIPS offline: unavailable (with the reason) without local weights, and never a download.

A real ImageNet checkpoint cannot be obtained offline, so the "available" tests build a torchvision AlexNet
backbone state dict with random weights of the right shapes and save it locally. They check the wiring
(file lookup order, key mapping into lpips, upsampling, shapes), not LPIPS values.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torchvision import models

from leakaudit.errors import InputError
from leakaudit.metrics import LPIPS_WEIGHTS_ENV, METRICS, Unavailable, find_backbone_weights, lpips_distance, score
from leakaudit.metrics.interface import MetricOptions
from leakaudit.metrics.perceptual import backbone_file_name


@pytest.fixture(autouse=True)
def offline(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """An empty torch hub cache, no env var, and any download attempt fails the test."""
    hub = tmp_path / "hub"
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(hub))
    monkeypatch.delenv(LPIPS_WEIGHTS_ENV, raising=False)

    def no_download(*args, **kwargs):  # type: ignore[no-untyped-def]
        raise AssertionError("leakaudit tried to download weights")

    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", no_download)
    monkeypatch.setattr(torch.hub, "download_url_to_file", no_download)
    return hub


def _fake_alexnet_checkpoint(path: Path, seed: int = 0) -> dict[str, torch.Tensor]:
    torch.manual_seed(seed)
    state = {k: v for k, v in models.alexnet(weights=None).state_dict().items() if k.startswith("features.")}
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(state, path)
    return state


def _images(n: int = 2, size: int = 16) -> torch.Tensor:
    return torch.rand(n, 3, size, size, generator=torch.Generator().manual_seed(3))


def test_without_weights_lpips_is_unavailable_with_the_fix() -> None:
    value = lpips_distance(_images(), _images())
    assert isinstance(value, Unavailable)
    assert backbone_file_name("alex") in value.reason
    assert LPIPS_WEIGHTS_ENV in value.reason


def test_score_lists_lpips_as_unavailable_not_as_a_number() -> None:
    x = _images()
    result = score(x, x, metrics=["ssim", "lpips"])
    assert "lpips" in result.unavailable
    assert "lpips" not in result.means
    assert all("lpips" not in s.metrics for s in result.samples)


@pytest.mark.parametrize(("net", "weights"), [("alex", models.AlexNet_Weights.IMAGENET1K_V1),
                                              ("vgg", models.VGG16_Weights.IMAGENET1K_V1)])
def test_the_written_out_backbone_file_names_are_torchvisions(net: str, weights: models.WeightsEnum) -> None:
    # leakaudit names the files without importing torchvision; a renamed checkpoint would make it look in
    # the wrong place and report LPIPS unavailable with the wrong file name.
    assert backbone_file_name(net) == weights.url.rsplit("/", 1)[-1]


def test_an_unknown_backbone_names_the_option_a_python_caller_gave() -> None:
    """No command has an LPIPS-backbone flag: the error names MetricOptions' field and the backbones there are."""
    with pytest.raises(InputError, match=r"^lpips_net='squeeze': unknown LPIPS backbone; use one of alex, vgg$"):
        find_backbone_weights("squeeze")


def test_weights_in_the_torch_hub_cache_are_used(offline: Path) -> None:
    state = _fake_alexnet_checkpoint(offline / "checkpoints" / backbone_file_name("alex"))
    found = find_backbone_weights("alex")
    assert found == offline / "checkpoints" / backbone_file_name("alex")
    x = _images()
    y = (x + 0.3 * torch.rand(x.shape, generator=torch.Generator().manual_seed(4))).clamp(0, 1)
    d = lpips_distance(y, x)
    assert isinstance(d, torch.Tensor) and d.shape == (2,)
    assert torch.all(d > 0)
    same = lpips_distance(x, x)
    assert torch.allclose(same, torch.zeros(2), atol=1e-6)
    # The backbone in use holds the file's tensors, not torchvision's random init.
    from leakaudit.metrics.perceptual import _model

    model = _model("alex", str(found))
    assert torch.equal(model.net.slice1[0].weight, state["features.0.weight"])
    assert torch.equal(getattr(model.net.slice5, "10").weight, state["features.10.weight"])


def test_user_file_wins_over_env_var_and_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    mine = tmp_path / "mine.pth"
    _fake_alexnet_checkpoint(mine)
    monkeypatch.setenv(LPIPS_WEIGHTS_ENV, str(tmp_path / "env.pth"))
    assert find_backbone_weights("alex", mine) == mine
    _fake_alexnet_checkpoint(tmp_path / "env.pth", seed=1)
    assert find_backbone_weights("alex") == tmp_path / "env.pth"


def test_lpips_through_score_with_a_user_file_and_grayscale(tmp_path: Path) -> None:
    weights = tmp_path / "alex.pth"
    _fake_alexnet_checkpoint(weights)
    x = torch.rand(2, 1, 16, 16, generator=torch.Generator().manual_seed(5))
    result = score(x.flip(0), x, metrics=["lpips"], lpips_weights=str(weights))
    assert "lpips" not in result.unavailable
    assert [s.metrics["lpips"] for s in result.samples] == pytest.approx([0.0, 0.0], abs=1e-6)


def test_a_missing_user_file_is_an_input_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(InputError, match=r"^.*nope\.pth: LPIPS weights file not found; "
                                         r"point it at a local copy of torchvision's alexnet"):
        find_backbone_weights("alex", tmp_path / "nope.pth")
    monkeypatch.setenv(LPIPS_WEIGHTS_ENV, str(tmp_path / "gone.pth"))
    with pytest.raises(InputError,
                       match=rf"^{LPIPS_WEIGHTS_ENV}=.*gone\.pth: LPIPS weights file not found.*or unset it$"):
        lpips_distance(_images(), _images())


def test_a_wrong_checkpoint_is_an_input_error(tmp_path: Path) -> None:
    wrong = tmp_path / "wrong.pth"
    torch.save({"features.0.weight": torch.zeros(3, 3)}, wrong)
    with pytest.raises(InputError, match=r"wrong\.pth: not a torchvision alex checkpoint \(features\.0\.weight"):
        lpips_distance(_images(), _images(), MetricOptions(lpips_weights=wrong))
    garbage = tmp_path / "garbage.pth"
    garbage.write_text("not a checkpoint")
    with pytest.raises(InputError, match=r"garbage\.pth: cannot read as a torch checkpoint"):
        lpips_distance(_images(), _images(), MetricOptions(lpips_weights=garbage))


def test_feature_vectors_have_no_lpips() -> None:
    v = torch.rand(2, 10)
    result = METRICS.get("lpips").compute(v, v)
    assert isinstance(result, Unavailable) and "images" in result.reason


def test_the_unavailable_reason_names_the_cache_under_home_not_the_runners_absolute_path(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Issue 20: the reason (in the report and JUnit) held the runner's torch hub folder as an absolute path."""
    home = tmp_path / "home" / "ci-runner"
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(home / ".cache" / "torch" / "hub"))
    value = lpips_distance(_images(), _images())
    assert isinstance(value, Unavailable)
    assert "not in ~/.cache/torch/hub/checkpoints and" in value.reason and str(tmp_path) not in value.reason
