"""Is a reconstruction *recognised*? Attributable to its own sample, and better than a trivial output.

An absolute SSIM/PSNR threshold is not a leak criterion: a flat image of the sample's mean colour or a heavy
blur of it reaches SSIM 0.6 / 20 dB on smooth photos, while a mirrored or shifted copy, which a person
recognises at once, falls below. Two questions separate them (``docs/recognition.md`` has the measurements):

* **Attributable** (re-identification): after registration -- a horizontal flip, shifts of up to 2 px at
  32 px (scaled with the size), the brightness/contrast adjustment and a light denoising the attacker gets for
  free -- does the reconstruction explain its own original better than each of K reference images? "Better"
  is judged by the evidence against each image's own trivial outputs (the larger of the structure score and
  the PSNR gain / 10 dB below), not by raw SSIM, which any flat output reaches against a smooth image. The
  p-value
  ``p = (1 + #references at least as similar) / (K + 1)`` is the chance that an output carrying no information
  about the sample is matched to it that well. References are the scan's other samples plus a reference set
  (the user's ``--reference-data``, else the bundled ``references/natural64.npz``); any reference that is a
  copy of the sample itself (pixel MSE below ``DUPLICATE_MSE``) is left out, so giving the scan's own folder as
  references cannot hide a leak.
* **Better than trivial** (skill): ``skill = (s - s_base) / (1 - s_base)``, where ``s`` is the registered SSIM
  and ``s_base`` the better of the sample's mean-colour blank and its heavy blur (sigma 2 px at 32 px, scaled
  with the size). A blank or a heavy blur scores 0 (or less), an exact copy 1. PSNR likewise, as a gain in dB
  over the same baselines.

The registration is chosen per pair by normalised cross-correlation (invariant to brightness and contrast, and,
by its absolute value, to inversion), the same way for the own original and for every reference, so the
comparison is fair. Everything runs at a working resolution of at most ``MAX_SIDE`` px on the short side.
Feature vectors (N, D) have no geometry: only the adjustment is applied, and the baseline is the blank.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import torch
import torch.nn.functional as F

from .functional import _affine_candidates, _ssim_map, _ssim_vectors
from .interface import attributable, chance

MAX_SIDE = 64  # working resolution: registration and the baselines do not need more, and SSIM costs area
SHIFT_AT_32 = 2  # px of shift searched at 32 px (scaled with the image size)
# The "heavy blur" baseline: colour blobs, no recognisable detail. Chosen by measurement (docs/recognition.md,
# benchmarks/bench_recognition.py --blur-sigma): against a sigma-4 baseline every sigma-2 blur, which a person
# does not recognise, passed as recognised (16-18% of all trivial outputs); against sigma 2 none did (0.1-0.5%),
# while 86% of recognisable outputs still were (99% against sigma 4).
BLUR_SIGMA_AT_32 = 2.0
DENOISE_SIGMAS_AT_32: tuple[float, ...] = (1.0,)  # the light denoising an attacker may apply to a noisy image
GAIN_PER_SKILL = 10.0  # dB of PSNR gain that count like a structure score of 1 when ranking references
DUPLICATE_MSE = 1e-4  # a reference this close to the sample (PSNR >= 40 dB) is a copy of it, not a reference
MIN_REFERENCES = 49  # below this, p cannot reach 1/50: the report says per-sample evidence is weak
_PAIRS_PER_CHUNK = 256


@dataclass(frozen=True)
class Recognition:
    """One reconstruction judged against its own original and K references."""

    match_p: float  # (1 + #references at least as similar) / (K + 1); 1/(K+1) = closer than every reference
    references: int  # K
    ssim: float  # registered SSIM to its own original (best over flip, shifts, adjustment, denoising)
    ssim_baseline: float  # the better registered SSIM of the mean-colour blank and the heavy blur
    ssim_skill: float  # (ssim - baseline) / (1 - baseline); 0 for a flat original (baseline 1)
    psnr: float  # registered PSNR (dB)
    psnr_baseline: float
    psnr_gain: float  # psnr - psnr_baseline (dB)
    transform: str  # the registration chosen against its own original, e.g. "flipped, shifted (1, -2) px"


# --------------------------------------------------------------------------------------- image operations


def working(x: torch.Tensor) -> torch.Tensor:
    """float32 at no more than ``MAX_SIDE`` px on the short side."""
    x = x.to(torch.float32)  # float32 is plenty for ranking and thresholds, and twice as fast as float64
    if x.ndim != 4 or min(x.shape[-2:]) <= MAX_SIDE:
        return x
    scale = MAX_SIDE / min(x.shape[-2:])
    size = (max(1, round(x.shape[-2] * scale)), max(1, round(x.shape[-1] * scale)))
    return F.interpolate(x, size=size, mode="bilinear", antialias=True, align_corners=False).clamp(0, 1)


def _scale(x: torch.Tensor) -> float:
    return min(x.shape[-2:]) / 32.0


def gaussian(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """Separable Gaussian filter of (N, C, H, W) images, edges replicated (any size, no dark border)."""
    if sigma <= 0:
        return x
    radius = max(1, math.ceil(3 * sigma))
    coords = torch.arange(-radius, radius + 1, dtype=x.dtype, device=x.device)
    g = torch.exp(-(coords**2) / (2 * sigma**2))
    g = g / g.sum()
    c = x.shape[1]
    x = F.pad(x, (radius, radius, radius, radius), mode="replicate")
    x = F.conv2d(x, g.view(1, 1, 1, -1).expand(c, 1, 1, -1), groups=c)
    return F.conv2d(x, g.view(1, 1, -1, 1).expand(c, 1, -1, 1), groups=c)


def blank(x: torch.Tensor) -> torch.Tensor:
    """Each sample's mean colour, everywhere (per channel for images, one value for vectors)."""
    if x.ndim == 4:
        return x.mean(dim=(2, 3), keepdim=True).expand_as(x).clone()
    return x.mean(dim=1, keepdim=True).expand_as(x).clone()


def heavy_blur(x: torch.Tensor) -> torch.Tensor:
    return gaussian(x, BLUR_SIGMA_AT_32 * _scale(x))


def max_shift(x: torch.Tensor) -> int:
    side = min(x.shape[-2:])
    return max(0, min(round(SHIFT_AT_32 * side / 32), (side - 7) // 2))


# --------------------------------------------------------------------------------------- registration


@dataclass(frozen=True)
class _Geometry:
    flip: bool
    dy: int
    dx: int

    def describe(self) -> str:
        parts = (["flipped"] if self.flip else []) + ([f"shifted ({self.dy}, {self.dx}) px"]
                                                      if self.dy or self.dx else [])
        return ", ".join(parts) or "as is"


def _geometries(shift: int) -> list[_Geometry]:
    """Identity first, so a tie (a flat reconstruction correlates with nothing) keeps the image as it is."""
    offsets = sorted(((dy, dx) for dy in range(-shift, shift + 1) for dx in range(-shift, shift + 1)),
                     key=lambda o: (abs(o[0]) + abs(o[1]), o))
    return [_Geometry(flip, dy, dx) for flip in (False, True) for dy, dx in offsets]


def _windows(x: torch.Tensor, shift: int, geometries: Sequence[_Geometry]) -> torch.Tensor:
    """(N, G, C, h, w): each image under each geometry, cropped to the central (H - 2s, W - 2s) window."""
    h, w = x.shape[-2] - 2 * shift, x.shape[-1] - 2 * shift
    flipped = x.flip(-1)
    out = [(flipped if g.flip else x)[..., shift + g.dy:shift + g.dy + h, shift + g.dx:shift + g.dx + w]
           for g in geometries]
    return torch.stack(out, dim=1)


def _picked(x: torch.Tensor, shift: int, geometries: Sequence[_Geometry], best: torch.Tensor) -> torch.Tensor:
    """(N, C, h, w): row i under geometry ``best[i]`` only -- ``_windows(x)[rows, best]`` without building the
    other geometries' windows."""
    return torch.stack([_windows(x[i:i + 1], shift, [geometries[int(g)]])[0, 0] for i, g in enumerate(best)])


def _normalised(x: torch.Tensor) -> torch.Tensor:
    """Rows centred and scaled to unit norm (zero rows stay zero): dot products are correlations."""
    x = x - x.mean(dim=-1, keepdim=True)
    return x / x.norm(dim=-1, keepdim=True).clamp_min(1e-12)


def _window(x: torch.Tensor, shift: int, g: _Geometry, flipped: torch.Tensor) -> torch.Tensor:
    """(N, D): every image of ``x`` under one geometry, cropped to the central window, flattened."""
    h, w = x.shape[-2] - 2 * shift, x.shape[-1] - 2 * shift
    return (flipped if g.flip else x)[..., shift + g.dy:shift + g.dy + h, shift + g.dx:shift + g.dx + w].flatten(1)


def _best_geometry(recons: torch.Tensor, shift: int, geometries: Sequence[_Geometry],
                   targets: torch.Tensor) -> torch.Tensor:
    """(N, M) index of the geometry whose window of each reconstruction correlates best (in absolute value) with
    each target. One geometry at a time: the windows of every geometry at once are hundreds of MB at 64 px."""
    t = _normalised(targets.flatten(1))  # (M, D)
    flipped = recons.flip(-1)
    corr = torch.stack([(_normalised(_window(recons, shift, g, flipped)) @ t.T).abs() for g in geometries])
    return corr.argmax(dim=0)  # first maximum: identity on ties


def _best_diagonal(recons: torch.Tensor, shift: int, geometries: Sequence[_Geometry],
                   targets: torch.Tensor) -> torch.Tensor:
    """(P,) the best geometry of ``recons[i]`` against ``targets[i]``, one geometry at a time."""
    t = _normalised(targets.flatten(1))  # (P, D)
    flipped = recons.flip(-1)
    corr = torch.stack([(_normalised(_window(recons, shift, g, flipped)) * t).sum(dim=1).abs() for g in geometries])
    return corr.argmax(dim=0)


def _pair_scores(preds: torch.Tensor, target: torch.Tensor,
                 denoised: Sequence[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """Best SSIM and best PSNR of aligned pairs over {as is, denoised} x {as is, least-squares levels, moment
    match}; shape (P,) each."""
    candidates = []
    for p in (preds, *denoised):
        candidates += [p, *_affine_candidates(p, target)]
    stacked = torch.cat(candidates)
    reps = len(candidates)
    tiled = target.repeat(reps, *([1] * (target.ndim - 1)))
    # in the working dtype: functional.ssim's float64 buys nothing for a ranking and costs twice the time
    ssim = _ssim_map(stacked, tiled).flatten(1).mean(dim=1) if stacked.ndim == 4 else _ssim_vectors(stacked, tiled)
    mse = (stacked - tiled).pow(2).flatten(1).mean(dim=1)
    psnr = 10.0 * torch.log10(1.0 / mse.clamp_min(1e-20))
    psnr = torch.where(mse <= 0, torch.full_like(psnr, math.inf), psnr)
    return ssim.view(reps, -1).max(dim=0).values, psnr.view(reps, -1).max(dim=0).values


def similarity(recons: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Registered SSIM and PSNR of every reconstruction against every target, shape (N, M) each, and the chosen
    geometry index (N, M). Both inputs are working-resolution tensors (``working``) of one sample shape."""
    n, m = recons.shape[0], targets.shape[0]
    if recons.ndim == 2:  # feature vectors: no geometry
        rows = torch.arange(n).repeat_interleave(m)
        cols = torch.arange(m).repeat(n)
        ssim, psnr = _chunked(recons[rows], targets[cols], [])
        return ssim.view(n, m), psnr.view(n, m), torch.zeros(n, m, dtype=torch.long)
    shift = max_shift(recons)
    geometries = _geometries(shift)
    raw = _windows(recons, shift, geometries)
    smooth = [_windows(d, shift, geometries) for d in _denoised(recons)]
    crop = targets[..., shift:targets.shape[-2] - shift, shift:targets.shape[-1] - shift]
    best = _best_geometry(recons, shift, geometries, crop)  # (N, M)
    rows = torch.arange(n).repeat_interleave(m)
    cols = torch.arange(m).repeat(n)
    picked = best.flatten()
    ssim, psnr = _chunked(raw[rows, picked], crop[cols], [w[rows, picked] for w in smooth])
    return ssim.view(n, m), psnr.view(n, m), best


def _denoised(x: torch.Tensor) -> list[torch.Tensor]:
    return [gaussian(x, sigma * _scale(x)) for sigma in DENOISE_SIGMAS_AT_32]


def _chunked(preds: torch.Tensor, target: torch.Tensor,
             denoised: Sequence[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    ssim, psnr = [], []
    for start in range(0, preds.shape[0], _PAIRS_PER_CHUNK):
        sl = slice(start, start + _PAIRS_PER_CHUNK)
        s, p = _pair_scores(preds[sl], target[sl], [d[sl] for d in denoised])
        ssim.append(s)
        psnr.append(p)
    return torch.cat(ssim), torch.cat(psnr)


_BASELINES: dict[tuple[tuple[int, ...], str], tuple[torch.Tensor, torch.Tensor]] = {}
_BASELINES_KEPT = 4


def baselines(originals: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per original (working resolution): the better registered SSIM, and PSNR, of its trivial outputs -- the
    mean-colour blank and (images) the heavy blur -- against it. Kept for the last few pools by content: every
    attack of a scan (and its control) is scored against the same reference pool, and its baselines cost more
    than the attack's own scores."""
    import hashlib

    key = (tuple(originals.shape), hashlib.blake2b(originals.detach().cpu().contiguous().numpy().tobytes(),
                                                   digest_size=16).hexdigest())
    if key not in _BASELINES:
        while len(_BASELINES) >= _BASELINES_KEPT:
            _BASELINES.pop(next(iter(_BASELINES)))
        _BASELINES[key] = _baselines(originals)
    ssim, psnr = _BASELINES[key]
    return ssim.clone(), psnr.clone()


def _baselines(originals: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    trivial = [blank(originals)] + ([heavy_blur(originals)] if originals.ndim == 4 else [])
    ssim, psnr = [], []
    for t in trivial:
        s, p = _diagonal(t, originals)
        ssim.append(s)
        psnr.append(p)
    return torch.stack(ssim).max(dim=0).values, torch.stack(psnr).max(dim=0).values


def _diagonal(recons: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Registered SSIM and PSNR of aligned pairs ``recons[i]`` / ``targets[i]``, shape (P,) each."""
    if recons.ndim == 2:
        return _chunked(recons, targets, [])
    shift = max_shift(recons)
    geometries = _geometries(shift)
    crop = targets[..., shift:targets.shape[-2] - shift, shift:targets.shape[-1] - shift]
    best = _best_diagonal(recons, shift, geometries, crop)
    raw = _picked(recons, shift, geometries, best)
    smooth = [_picked(d, shift, geometries, best) for d in _denoised(recons)]
    return _chunked(raw, crop, smooth)


# --------------------------------------------------------------------------------------- the judgement


def _distinct(references: torch.Tensor) -> torch.Tensor:
    """References without exact repeats (the scan's samples may be given as references too)."""
    if references.shape[0] <= 1:
        return references
    flat = references.flatten(1)
    keep: list[int] = []
    for i in range(flat.shape[0]):
        if not keep or not bool((flat[keep] - flat[i]).abs().amax(dim=1).le(1e-9).any()):
            keep.append(i)
    return references[keep]


def recognise(recons: torch.Tensor, originals: torch.Tensor, references: torch.Tensor | None = None,
              pairs: Sequence[tuple[int, int]] | None = None) -> tuple[tuple[tuple[int, int], ...], list[Recognition]]:
    """Judge every reconstruction against its original; returns ``(pairs, judgements)``, one per pair.

    Both in pixel space [0, 1], (N, C, H, W) or (N, D). ``pairs`` (reconstruction row, original row) default
    to the one-to-one assignment that maximises the total skill after registration -- a batch comes back in
    arbitrary order, and mirrored or shifted: matching by raw SSIM would pair a mirrored image with the wrong
    original. The references of each sample are the other ``originals`` and ``references`` (more samples in the
    same shape: the scan's others, a reference set), less exact repeats and copies of the sample itself.
    """
    rec, orig = working(recons), working(originals)
    pool = orig if references is None or references.shape[0] == 0 else \
        torch.cat([orig, working(references.to(orig.device))])
    pool = _distinct(pool)
    sims_ssim, sims_psnr, geometry = similarity(rec, pool)
    base_ssim, base_psnr = baselines(pool)
    # Attribution ranks by how much better than trivial the output explains each target, not by raw SSIM:
    # against a smooth reference any flat output scores a high SSIM (SSIM's contrast term is ~1 where the
    # target has no variance) but no skill. The PSNR gain counts too (in tenths: 10 dB ~ a skill of 1), for
    # smooth photos where noise costs SSIM more than the blur baseline does.
    skill = (sims_ssim - base_ssim) / (1.0 - base_ssim).clamp_min(1e-9)
    # inf - inf: an output adjusted onto a flat target matches it exactly, as that target's own blank does --
    # no evidence at all (a flat reference must not outrank the sample it is compared with)
    gain = torch.nan_to_num(sims_psnr - base_psnr, nan=0.0)
    evidence = torch.maximum(skill, gain / GAIN_PER_SKILL)
    # each original's column in the pool (itself, or the first exact repeat of it)
    own_mse = torch.stack([(pool - orig[c]).pow(2).flatten(1).mean(dim=1) for c in range(orig.shape[0])])
    column = own_mse.argmin(dim=1)
    if pairs is None:
        pairs = _assign(evidence[:, column])
    shift = max_shift(rec) if rec.ndim == 4 else 0
    out = []
    for r, c in pairs:
        own = int(column[c])
        others = own_mse[c] > DUPLICATE_MSE
        s_own, p_own = float(sims_ssim[r, own]), float(sims_psnr[r, own])
        sb, pb = float(base_ssim[own]), float(base_psnr[own])
        # a flat original's baselines are exact: nothing can beat them (the sample is excluded as flat anyway)
        flat = sb >= 1.0 - 1e-9
        as_good = int((evidence[r][others] >= float(evidence[r, own]) - 1e-6).sum())
        count = int(others.sum())
        transform = _geometries(shift)[int(geometry[r, own])].describe() if rec.ndim == 4 else "as is"
        out.append(Recognition(match_p=(1 + as_good) / (count + 1), references=count, ssim=s_own, ssim_baseline=sb,
                               ssim_skill=0.0 if flat else (s_own - sb) / (1.0 - sb), psnr=p_own,
                               psnr_baseline=pb, psnr_gain=0.0 if flat or math.isnan(p_own - pb) else p_own - pb,
                               transform=transform))
    return tuple(pairs), out


def _assign(score: torch.Tensor) -> tuple[tuple[int, int], ...]:
    """One-to-one pairs (row, column) maximising the total ``score`` (Hungarian); NaN counts as the least."""
    from .matching import assign

    matrix = torch.nan_to_num(score.double(), nan=-1e6, posinf=1e6, neginf=-1e6).cpu().numpy()
    rows, cols = assign(matrix, maximize=True)
    return tuple(sorted(zip(rows.tolist(), cols.tolist(), strict=True)))


__all__ = ["Recognition", "recognise", "attributable", "chance", "similarity", "baselines", "working", "blank",
           "heavy_blur", "gaussian", "MIN_REFERENCES", "MAX_SIDE", "DUPLICATE_MSE"]
