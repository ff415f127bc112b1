"""Which reconstruction belongs to which original: Hungarian assignment on a similarity matrix.

Attacks return a batch in arbitrary order (the loss is permutation invariant), so every score is computed
after matching. By default the assignment maximises the total SSIM: SSIM is what the leakage rules judge
and, unlike MSE, a reconstruction that is right up to a brightness offset still finds its original.
``by="mse"`` minimises the total MSE instead.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from . import functional as MF

MATCH_BY = {"ssim": (MF.ssim_matrix, True), "mse": (lambda p, t: MF.pairwise(MF.mse, p, t), False)}


@dataclass(frozen=True)
class Matching:
    """``pairs[k] = (reconstruction row, original row)``; rows left out had no partner."""

    pairs: tuple[tuple[int, int], ...]
    by: str
    unmatched_reconstructions: tuple[int, ...] = ()
    unmatched_originals: tuple[int, ...] = ()


def assign(matrix: np.ndarray, *, maximize: bool) -> tuple[np.ndarray, np.ndarray]:
    """``scipy.optimize.linear_sum_assignment`` (rows, columns of the optimal one-to-one assignment)."""
    if matrix.shape == (1, 1):
        # a batch of one (the README's scans) has one assignment: no scipy import (0.2-0.5 CPU-s, 40 MiB) per process
        return np.zeros(1, dtype=np.int64), np.zeros(1, dtype=np.int64)
    from scipy.optimize import linear_sum_assignment

    rows, cols = linear_sum_assignment(matrix, maximize=maximize)
    return rows, cols


def match(reconstructions: torch.Tensor, originals: torch.Tensor, *, by: str = "ssim") -> Matching:
    """Assign reconstructions to originals one-to-one, maximising total similarity (``by``: ssim | mse).

    With unequal counts the smaller side is matched completely; the rest is listed as unmatched.
    """
    if by not in MATCH_BY:
        raise ValueError(f"Expected `by` to be one of {sorted(MATCH_BY)}, got {by!r}.")
    fn, maximize = MATCH_BY[by]
    if reconstructions.shape[1:] != originals.shape[1:]:
        raise ValueError(
            f"Expected `reconstructions` and `originals` to have the same sample shape, got "
            f"{tuple(reconstructions.shape[1:])} and {tuple(originals.shape[1:])}."
        )
    matrix = fn(reconstructions, originals).double().cpu().numpy()
    rows, cols = assign(matrix, maximize=maximize)  # inputs are validated finite
    pairs = tuple(sorted(zip(rows.tolist(), cols.tolist(), strict=True)))
    return Matching(
        pairs=pairs,
        by=by,
        unmatched_reconstructions=tuple(sorted(set(range(matrix.shape[0])) - set(rows.tolist()))),
        unmatched_originals=tuple(sorted(set(range(matrix.shape[1])) - set(cols.tolist()))),
    )
