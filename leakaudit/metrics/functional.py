"""Functional image-similarity metrics on pixel-space tensors in [0, 1].

Every public function validates its inputs (errors name the argument and the bad value, as torchmetrics
does), then computes one value per sample. Inputs are shaped ``(N, C, H, W)`` (images) or ``(N, D)``
(feature vectors, e.g. tabular models). Callers denormalize and clamp to [0, 1] first: metrics in model
(normalized) space are not comparable across datasets.

Conventions (all match scikit-image where scikit-image has the metric):

* ``mse``  -- mean squared error over all pixels and channels of a sample.
* ``rmse`` -- its square root (seed 002 reports RMSE).
* ``psnr`` -- ``10 log10(1 / mse)`` with data range 1; identical samples give ``inf`` (as scikit-image).
* ``ssim`` -- Wang et al. 2004: Gaussian window (sigma 1.5, 11x11, truncated at 3.5 sigma as scikit-image),
  K1 = 0.01, K2 = 0.03, population (not sample) covariance, statistics only where the window fits inside
  the image (scikit-image crops the same border), mean over the map and then over channels.
  Images smaller than 11 px use the largest odd window that fits (scikit-image refuses them).
  Feature vectors ``(N, D)`` have no spatial neighbourhood, so a sliding window would invent one: their SSIM
  is the same formula with one window covering the whole vector (global means, variances, covariance).
"""

from __future__ import annotations

from collections import Counter

import torch

K1 = 0.01
K2 = 0.03
SSIM_SIGMA = 1.5
SSIM_WINDOW = 11
_TRUNCATE = 3.5  # scipy.ndimage.gaussian_filter default, used by skimage: radius int(3.5*1.5+0.5) = 5
_RANGE_TOLERANCE = 1e-4  # float round-off from denormalization
_PAIRS_PER_CHUNK = 512


# --------------------------------------------------------------------------- validation


def _check_tensor(name: str, value: object) -> torch.Tensor:
    if not isinstance(value, torch.Tensor):
        raise TypeError(f"Expected `{name}` to be a torch.Tensor, got {type(value).__name__}.")
    if not value.is_floating_point():
        raise TypeError(f"Expected `{name}` to be a floating-point tensor in [0, 1], got dtype {value.dtype}.")
    if value.ndim not in (2, 4):
        raise ValueError(
            f"Expected `{name}` to have shape (N, C, H, W) or (N, D), got shape {tuple(value.shape)}."
        )
    if value.shape[0] == 0 or value.numel() == 0:
        raise ValueError(f"Expected `{name}` to hold at least one sample, got shape {tuple(value.shape)}.")
    if not torch.isfinite(value).all():
        raise ValueError(f"Expected `{name}` to be finite, got {int((~torch.isfinite(value)).sum())} NaN/inf values.")
    lo, hi = float(value.min()), float(value.max())
    if lo < -_RANGE_TOLERANCE or hi > 1 + _RANGE_TOLERANCE:
        raise ValueError(
            f"Expected `{name}` in pixel space [0, 1], got values in [{lo:.4g}, {hi:.4g}]; "
            "denormalize with the data's mean/std and clamp first."
        )
    return value


def _check_pair(preds: object, target: object) -> tuple[torch.Tensor, torch.Tensor]:
    p = _check_tensor("preds", preds)
    t = _check_tensor("target", target)
    if p.shape != t.shape:
        raise ValueError(
            f"Expected `preds` and `target` to have the same shape, got {tuple(p.shape)} and {tuple(t.shape)}."
        )
    return p, t.to(p.device)


def _work_dtype(x: torch.Tensor) -> torch.dtype:
    # float64 keeps E[x^2] - E[x]^2 free of cancellation; MPS has no float64.
    return torch.float32 if x.device.type == "mps" else torch.float64


# --------------------------------------------------------------------------- MSE / PSNR


def _mse_compute(preds: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    diff = preds.to(_work_dtype(preds)) - target.to(_work_dtype(preds))
    return diff.pow(2).flatten(1).mean(dim=1)


def mse(preds: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Per-sample mean squared error, shape (N,). Lower = closer (more leakage).

    >>> import torch
    >>> target = torch.zeros(2, 1, 8, 8)
    >>> mse(target + 0.1, target)
    tensor([0.0100, 0.0100])
    """
    p, t = _check_pair(preds, target)
    return _mse_compute(p, t).to(p.dtype)


def rmse(preds: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Per-sample root mean squared error, shape (N,).

    >>> import torch
    >>> target = torch.zeros(2, 1, 8, 8)
    >>> rmse(target + 0.1, target)
    tensor([0.1000, 0.1000])
    """
    p, t = _check_pair(preds, target)
    return _mse_compute(p, t).sqrt().to(p.dtype)


def psnr(preds: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Per-sample peak signal-to-noise ratio in dB for data range 1, shape (N,); ``inf`` for identical samples.

    >>> import torch
    >>> target = torch.zeros(2, 1, 8, 8)
    >>> psnr(target + 0.1, target)  # an RMS error of 10% of the range
    tensor([20., 20.])
    """
    p, t = _check_pair(preds, target)
    err = _mse_compute(p, t)
    return (10.0 * torch.log10(1.0 / err)).to(p.dtype)  # log10(1/0) = inf, as scikit-image


# --------------------------------------------------------------------------- SSIM


def _gaussian_1d(size: int, sigma: float, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    coords = torch.arange(size, dtype=dtype, device=device) - (size - 1) / 2
    g = torch.exp(-(coords**2) / (2 * sigma**2))
    return g / g.sum()


def _window_size(height: int, width: int) -> int:
    fit = min(height, width, SSIM_WINDOW)
    return fit if fit % 2 == 1 else fit - 1


def _band(n: int, g: torch.Tensor) -> torch.Tensor:
    """(n - k + 1, n) matrix whose rows slide ``g`` along: multiplying by it is a valid 1-D convolution."""
    k = g.numel()
    rows = torch.arange(n - k + 1, device=g.device)
    band = torch.zeros(n - k + 1, n, dtype=g.dtype, device=g.device)
    band[rows[:, None], rows[:, None] + torch.arange(k, device=g.device)] = g
    return band


def _blur_fn(like: torch.Tensor):
    """Gaussian filter of the SSIM window, applied only where it fits (valid convolution).

    Written as two matrix products with banded matrices (rows, then columns): the same sums as a separable
    depthwise convolution, but much faster on CPU for the thousands of pairs that batch matching filters.
    """
    h, w = like.shape[-2:]
    g = _gaussian_1d(_window_size(h, w), SSIM_SIGMA, like.dtype, like.device)
    rows, cols = _band(h, g), _band(w, g).T

    def blur(x: torch.Tensor) -> torch.Tensor:
        return rows @ x @ cols

    return blur


def _ssim_map(p: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """SSIM map of (N, C, H, W) tensors, computed only where the window fits (valid convolution)."""
    blur = _blur_fn(p)
    mu_p, mu_t = blur(p), blur(t)
    var_p = blur(p * p) - mu_p**2
    var_t = blur(t * t) - mu_t**2
    cov = blur(p * t) - mu_p * mu_t
    return _ssim_formula(mu_p, mu_t, var_p, var_t, cov)


def _ssim_formula(mu_p, mu_t, var_p, var_t, cov):
    c1, c2 = K1**2, K2**2  # data range 1
    num = (2 * mu_p * mu_t + c1) * (2 * cov + c2)
    den = (mu_p**2 + mu_t**2 + c1) * (var_p + var_t + c2)
    return num / den


def _ssim_vectors(p: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """Global SSIM of (N, D) vectors: one window over the whole vector."""
    mu_p, mu_t = p.mean(dim=1), t.mean(dim=1)
    var_p = ((p - mu_p[:, None]) ** 2).mean(dim=1)
    var_t = ((t - mu_t[:, None]) ** 2).mean(dim=1)
    cov = ((p - mu_p[:, None]) * (t - mu_t[:, None])).mean(dim=1)
    return _ssim_formula(mu_p, mu_t, var_p, var_t, cov)


def _ssim_compute(p: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    work = _work_dtype(p)
    p, t = p.to(work), t.to(work)
    if p.ndim == 2:
        return _ssim_vectors(p, t)
    # Every channel's map has the same size, so the mean over (C, H', W') equals the mean of channel means.
    return _ssim_map(p, t).flatten(1).mean(dim=1)


def ssim(preds: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Per-sample structural similarity (Wang et al. 2004), shape (N,), in [-1, 1]. Higher = more leakage.

    >>> import torch
    >>> _ = torch.manual_seed(0)
    >>> target = torch.rand(2, 1, 8, 8)
    >>> ssim(target, target)
    tensor([1., 1.])
    >>> ssim(0.5 * target, target)  # the same structure at half the contrast
    tensor([0.6413, 0.6412])
    """
    p, t = _check_pair(preds, target)
    return _ssim_compute(p, t).to(p.dtype)


# --------------------------------------------------------------------------- best over brightness/contrast


def _affine_candidates(p: torch.Tensor, t: torch.Tensor) -> list[torch.Tensor]:
    """Brightness/contrast-adjusted copies of ``p`` (one gain and offset per sample, all channels alike).

    * least-squares fit: gain a and offset b minimising ||a p + b - t||^2;
    * moment match: gain |a| = std(t)/std(p) with the sign of the correlation, offset matching the means
      (makes SSIM's luminance and contrast terms ~1, leaving the structure term).
    Both are clamped to [0, 1], as a displayed image would be. A gain of either sign is allowed: an inverted
    reconstruction still shows the sample. For noise the correlation is ~0, so both copies are ~flat and
    score low: the adjustment cannot invent structure.
    """
    flat_p, flat_t = p.flatten(1), t.flatten(1)
    mu_p, mu_t = flat_p.mean(1, keepdim=True), flat_t.mean(1, keepdim=True)
    dp, dt = flat_p - mu_p, flat_t - mu_t
    var_p = dp.pow(2).mean(1, keepdim=True)
    cov = (dp * dt).mean(1, keepdim=True)
    std_p, std_t = var_p.sqrt(), dt.pow(2).mean(1, keepdim=True).sqrt()
    flat = var_p <= 1e-12  # a constant reconstruction: only the offset can change
    gain_ls = torch.where(flat, torch.zeros_like(cov), cov / var_p.clamp_min(1e-12))
    sign = torch.where(cov < 0, -torch.ones_like(cov), torch.ones_like(cov))
    gain_mm = torch.where(flat, torch.zeros_like(cov), sign * std_t / std_p.clamp_min(1e-12))
    out = []
    for gain in (gain_ls, gain_mm):
        adjusted = gain * dp + mu_t
        out.append(adjusted.clamp(0, 1).view_as(p))
    return out


def ssim_best_adjusted(preds: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Best SSIM over ``preds`` and its brightness/contrast-adjusted copies (seed 004), shape (N,).

    Gradient inversion often recovers an image up to brightness and contrast; seed 004 judges leakage by
    the best SSIM over such adjusted copies. Instead of a grid we take the two closed-form adjustments of
    :func:`_affine_candidates` (least-squares fit and moment match) and keep the best of them and the
    unadjusted reconstruction, so the value is never below :func:`ssim`.

    >>> import torch
    >>> _ = torch.manual_seed(0)
    >>> target = torch.rand(2, 1, 8, 8)
    >>> ssim_best_adjusted(0.5 * target, target)  # contrast and inversion are free for the attacker
    tensor([1., 1.])
    >>> ssim_best_adjusted(1 - target, target)
    tensor([1., 1.])
    """
    p, t = _check_pair(preds, target)
    work = _work_dtype(p)
    pw, tw = p.to(work), t.to(work)
    values = [_ssim_compute(pw, tw)] + [_ssim_compute(c, tw) for c in _affine_candidates(pw, tw)]
    return torch.stack(values).max(dim=0).values.to(p.dtype)


# --------------------------------------------------------------------------- labels


def label_accuracy(recovered: torch.Tensor | list[int], true: torch.Tensor | list[int]) -> float:
    """Fraction of the true labels that the recovered labels account for, as multisets.

    Label-recovery strategies return a batch's labels in arbitrary order (e.g. sorted by class), so the
    score is sum over classes of min(count recovered, count true) divided by the batch size.

    >>> label_accuracy([3, 1], [1, 3])  # order does not matter
    1.0
    >>> label_accuracy([1, 1], [1, 3])
    0.5
    """
    rec = [int(v) for v in torch.as_tensor(recovered).flatten().tolist()]
    tru = [int(v) for v in torch.as_tensor(true).flatten().tolist()]
    if not tru:
        raise ValueError("Expected `true` labels to be non-empty, got 0 labels.")
    if len(rec) != len(tru):
        raise ValueError(
            f"Expected `recovered` to hold as many labels as `true` ({len(tru)}), got {len(rec)}."
        )
    counts_rec, counts_true = Counter(rec), Counter(tru)
    hits = sum(min(n, counts_rec[c]) for c, n in counts_true.items())
    return hits / len(tru)


def ssim_matrix(preds: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """M[i, j] = ssim(preds[i], target[j]), shape (len(preds), len(target)); for matching whole batches.

    The means and variances under the window are per image, so they are filtered once per image; only the
    cross term is filtered per pair (one filter pass per pair instead of five).
    """
    p, t = _check_tensor("preds", preds), _check_tensor("target", target).to(preds.device)
    if p.shape[1:] != t.shape[1:]:
        raise ValueError(f"Expected `preds` and `target` to have the same sample shape, got "
                         f"{tuple(p.shape[1:])} and {tuple(t.shape[1:])}.")
    work = _work_dtype(p)
    p, t = p.to(work), t.to(work)
    if p.ndim == 2:
        return pairwise(_ssim_compute, p, t)
    blur = _blur_fn(p)
    mu_p, mu_t = blur(p), blur(t)
    var_p, var_t = blur(p * p) - mu_p**2, blur(t * t) - mu_t**2
    m = t.shape[0]
    rows_per_chunk = max(1, _PAIRS_PER_CHUNK // m)
    out = []
    for start in range(0, p.shape[0], rows_per_chunk):
        sl = slice(start, start + rows_per_chunk)
        cross = blur((p[sl, None] * t[None]).flatten(0, 1)).unflatten(0, (-1, m))
        cov = cross - mu_p[sl, None] * mu_t[None]
        ssim_map = _ssim_formula(mu_p[sl, None], mu_t[None], var_p[sl, None], var_t[None], cov)
        out.append(ssim_map.flatten(2).mean(dim=2))
    return torch.cat(out).to(preds.dtype)


def pairwise(metric, preds: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Matrix M[i, j] = metric(preds[i], target[j]) for every pair, shape (len(preds), len(target))."""
    n, m = preds.shape[0], target.shape[0]
    rows_per_chunk = max(1, _PAIRS_PER_CHUNK // m)  # bounds memory: a batch of 64 is 4096 pairs
    chunks = []
    for start in range(0, n, rows_per_chunk):
        block = preds[start:start + rows_per_chunk]
        p = block.repeat_interleave(m, dim=0)
        t = target.repeat(block.shape[0], *([1] * (target.ndim - 1)))
        chunks.append(metric(p, t).view(block.shape[0], m))
    return torch.cat(chunks)


__all__ = [
    "mse", "rmse", "psnr", "ssim", "ssim_best_adjusted", "ssim_matrix", "label_accuracy", "pairwise",
    "K1", "K2", "SSIM_SIGMA", "SSIM_WINDOW",
]
