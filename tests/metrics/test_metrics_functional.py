"""The functional metrics against scikit-image on real images, and the invariants users rely on."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from skimage import data, transform
from skimage.metrics import mean_squared_error, peak_signal_noise_ratio, structural_similarity

from leakaudit.metrics import functional as MF


def _images(size: int = 32) -> list[np.ndarray]:
    """Real photographs from scikit-image (bundled, no download), resized, in [0, 1], HWC."""
    rgb = [data.astronaut(), data.chelsea(), data.coffee()]
    return [transform.resize(im, (size, size), anti_aliasing=True).astype(np.float64) for im in rgb]


def _to_tensor(arrays: list[np.ndarray]) -> torch.Tensor:
    return torch.tensor(np.stack(arrays), dtype=torch.float32).permute(0, 3, 1, 2)


def _noisy(arrays: list[np.ndarray], sigma: float, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [np.clip(a + rng.normal(0, sigma, a.shape), 0, 1) for a in arrays]


def _sk_ssim(a: np.ndarray, b: np.ndarray) -> float:
    return structural_similarity(a, b, gaussian_weights=True, sigma=1.5, use_sample_covariance=False,
                                 data_range=1, channel_axis=-1)


@pytest.mark.parametrize("size", [16, 32, 64])
@pytest.mark.parametrize("sigma", [0.0, 0.05, 0.2, 0.5])
def test_ssim_matches_scikit_image_on_real_and_noisy_images(size: int, sigma: float) -> None:
    originals = _images(size)
    recon = _noisy(originals, sigma) if sigma else originals
    expected = [_sk_ssim(r, o) for r, o in zip(recon, originals, strict=True)]
    got = MF.ssim(_to_tensor(recon), _to_tensor(originals))
    assert got.shape == (3,)
    np.testing.assert_allclose(got.numpy(), expected, atol=1e-3)


def test_ssim_matches_scikit_image_on_grayscale() -> None:
    cam = transform.resize(data.camera(), (32, 32), anti_aliasing=True)
    noisy = np.clip(cam + np.random.default_rng(1).normal(0, 0.1, cam.shape), 0, 1)
    expected = structural_similarity(noisy, cam, gaussian_weights=True, sigma=1.5,
                                     use_sample_covariance=False, data_range=1)
    got = MF.ssim(torch.tensor(noisy)[None, None].float(), torch.tensor(cam)[None, None].float())
    assert abs(float(got[0]) - expected) < 1e-3


def test_mse_and_psnr_match_scikit_image() -> None:
    originals = _images()
    recon = _noisy(originals, 0.1)
    got_mse = MF.mse(_to_tensor(recon), _to_tensor(originals))
    got_psnr = MF.psnr(_to_tensor(recon), _to_tensor(originals))
    for i, (r, o) in enumerate(zip(recon, originals, strict=True)):
        assert float(got_mse[i]) == pytest.approx(mean_squared_error(o, r), rel=1e-4)
        assert float(got_psnr[i]) == pytest.approx(peak_signal_noise_ratio(o, r, data_range=1), abs=1e-3)
    assert torch.allclose(MF.rmse(_to_tensor(recon), _to_tensor(originals)), got_mse.sqrt())


def test_identical_images_score_perfectly() -> None:
    x = _to_tensor(_images())
    assert torch.allclose(MF.ssim(x, x), torch.ones(3))
    assert torch.all(MF.mse(x, x) == 0)
    assert torch.all(torch.isinf(MF.psnr(x, x)))


def test_ssim_orders_reconstructions_by_noise() -> None:
    x = _to_tensor(_images())
    values = [MF.ssim(_to_tensor(_noisy(_images(), s)), x).mean().item() for s in (0.02, 0.1, 0.3)]
    assert values[0] > values[1] > values[2]


def test_small_images_use_a_smaller_window() -> None:
    x = torch.rand(2, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    assert torch.allclose(MF.ssim(x, x), torch.ones(2))
    y = (x + 0.2 * torch.rand(2, 3, 8, 8, generator=torch.Generator().manual_seed(1))).clamp(0, 1)
    assert torch.all(MF.ssim(y, x) < 1)


def test_vector_ssim_is_global_statistics() -> None:
    """(N, D) inputs: one window over the whole vector -- same formula, checked by hand."""
    g = torch.Generator().manual_seed(0)
    t = torch.rand(4, 50, generator=g, dtype=torch.float64)
    p = (t + 0.1 * torch.rand(4, 50, generator=g, dtype=torch.float64)).clamp(0, 1)
    got = MF.ssim(p, t)
    for i in range(4):
        a, b = p[i].numpy(), t[i].numpy()
        cov = np.mean((a - a.mean()) * (b - b.mean()))
        want = ((2 * a.mean() * b.mean() + 1e-4) * (2 * cov + 9e-4)) / (
            (a.mean() ** 2 + b.mean() ** 2 + 1e-4) * (a.var() + b.var() + 9e-4))
        assert float(got[i]) == pytest.approx(want, abs=1e-9)


def test_best_adjusted_ssim_undoes_brightness_and_contrast() -> None:
    x = _to_tensor(_images())
    dimmed = x * 0.4 + 0.1  # a reconstruction recovered up to contrast and brightness
    plain = MF.ssim(dimmed, x)
    best = MF.ssim_best_adjusted(dimmed, x)
    assert torch.all(best >= plain)
    assert torch.all(best > 0.99)
    assert torch.all(plain < 0.9)


def test_best_adjusted_ssim_does_not_invent_structure_in_noise() -> None:
    x = _to_tensor(_images())
    noise = torch.rand(x.shape, generator=torch.Generator().manual_seed(0))
    # The most an adjustment can get out of noise is a flat image of the original's mean brightness.
    flat_at_mean = x.mean(dim=(1, 2, 3), keepdim=True).expand_as(x).contiguous()
    best = MF.ssim_best_adjusted(noise, x)
    assert torch.all(best <= MF.ssim(flat_at_mean, x) + 0.02)
    assert torch.all(best < 0.3)


def test_best_adjusted_ssim_handles_a_flat_reconstruction() -> None:
    x = _to_tensor(_images())
    flat = torch.full_like(x, 0.5)
    value = MF.ssim_best_adjusted(flat, x)
    assert torch.all(torch.isfinite(value)) and torch.all(value < 0.2)


@pytest.mark.parametrize(
    ("preds", "target", "match"),
    [
        (torch.rand(2, 3, 8, 8), torch.rand(2, 3, 8, 9), r"same shape"),
        (torch.rand(2, 3, 8), torch.rand(2, 3, 8), r"`preds` to have shape"),
        (torch.rand(2, 4) * 3, torch.rand(2, 4), r"`preds` in pixel space \[0, 1\].*denormalize"),
        (torch.rand(2, 4), torch.full((2, 4), float("nan")), r"`target` to be finite"),
        (torch.zeros(2, 4, dtype=torch.long), torch.rand(2, 4), r"`preds` to be a floating-point"),
        ([0.1], torch.rand(1, 1), r"`preds` to be a torch.Tensor"),
    ],
)
def test_bad_inputs_name_the_argument(preds, target, match) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises((ValueError, TypeError), match=match):
        MF.ssim(preds, target)


def test_label_accuracy_ignores_order() -> None:
    assert MF.label_accuracy([3, 1, 1, 7], [1, 7, 1, 3]) == 1.0
    assert MF.label_accuracy([1, 1, 1, 1], [1, 2, 1, 3]) == 0.5
    assert MF.label_accuracy(torch.tensor([5]), torch.tensor([4])) == 0.0
    with pytest.raises(ValueError, match="`recovered` to hold as many labels"):
        MF.label_accuracy([1], [1, 2])


def test_pairwise_matrix_matches_direct_calls() -> None:
    x = _to_tensor(_images())
    y = _to_tensor(_noisy(_images(), 0.1))
    m = MF.pairwise(MF.ssim, y, x)
    assert m.shape == (3, 3)
    assert float(m[2, 0]) == pytest.approx(float(MF.ssim(y[2:3], x[0:1])[0]), abs=1e-6)


def test_ssim_matrix_equals_ssim_of_every_pair() -> None:
    x = _to_tensor(_images())
    y = _to_tensor(_noisy(_images(), 0.1))
    m = MF.ssim_matrix(y[:2], x)
    assert m.shape == (2, 3)
    for i in range(2):
        for j in range(3):
            assert float(m[i, j]) == pytest.approx(float(MF.ssim(y[i:i + 1], x[j:j + 1])[0]), abs=1e-6)
