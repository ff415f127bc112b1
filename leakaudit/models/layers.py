"""The two layers gradient leakage hinges on, in a form attacks can drive.

Every dropout of a loaded model (zoo, user code after normalisation, ONNX ``Dropout`` nodes) becomes a
``MaskableDropout``; every PRECODE bottleneck of the zoo is a ``VariationalBottleneck``. Both behave like
their usual counterparts unless an attack substitutes their ``mask`` / ``noise`` buffers, which
``torch.func.functional_call`` can do per restart.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class MaskableDropout(nn.Module):
    """Inverted dropout with rate ``p``.

    - ``mask`` buffer is None (default): a fresh Bernoulli(1-p) mask in train mode, identity in eval.
    - ``mask`` set (an attacker's continuous mask in [0, 1], shape of the activation): ``x * mask / (1-p)``
      in any mode. This is the DIA parametrisation (Scheliga et al., AAAI 2023).
    - ``record = True``: the last realised Bernoulli mask is kept in ``last_mask`` (ground truth for the
      well-informed reference attack and tests; never given to an attack that models a real server).
    """

    def __init__(self, p: float) -> None:
        super().__init__()
        if not 0.0 <= p < 1.0:
            raise ValueError(f"dropout rate must be in [0, 1), got {p}")
        self.p = float(p)
        self.mask: torch.Tensor | None  # a buffer (moves with .to()), not saved: declared for the type checker
        self.register_buffer("mask", None, persistent=False)
        self.record = False
        self.last_mask: torch.Tensor | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.mask is not None:
            return x * self.mask / (1.0 - self.p)
        if not self.training or self.p == 0.0:
            return x
        if torch.onnx.is_in_onnx_export():
            # Exports as an ONNX ``Dropout`` node with its ratio (the loader and detection read it back);
            # the rand_like form below would export as anonymous RandomUniformLike arithmetic.
            return F.dropout(x, self.p, training=True)
        keep = (torch.rand_like(x) >= self.p).to(x.dtype)
        if self.record:
            self.last_mask = keep.detach()
        return x * keep / (1.0 - self.p)

    def extra_repr(self) -> str:
        return f"p={self.p}"


class MaskableDropPath(nn.Module):
    """Stochastic depth / DropPath with rate ``p``: each sample's residual branch is kept with probability
    ``1-p`` (scaled by ``1/(1-p)`` when ``scale``) or dropped whole; ``per_sample=False`` draws once for the
    batch (torchvision's ``mode="batch"``).

    The draw is a ``MaskableDropout`` (``drop``) applied to a tensor of ones of the per-sample shape
    ``(N, 1, ..., 1)`` -- the form the ONNX loader gives the exported op chain too -- so the client update
    records one mask per sample and DIA optimises one continuous mask per sample and branch, with no layer
    of its own.
    """

    def __init__(self, p: float, *, per_sample: bool = True, scale: bool = True) -> None:
        super().__init__()
        self.drop = MaskableDropout(p)
        self.per_sample = per_sample
        self.scale = scale

    @property
    def p(self) -> float:
        return self.drop.p

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shape = (x.shape[0] if self.per_sample else 1,) + (1,) * (x.dim() - 1)
        keep = self.drop(x.new_ones(shape))
        return x * (keep if self.scale else keep * (1.0 - self.p))

    def extra_repr(self) -> str:
        return f"p={self.p}, per_sample={self.per_sample}, scale={self.scale}"


class VariationalBottleneck(nn.Module):
    """PRECODE (Scheliga et al., WACV 2022): encoder Linear(d, 2K) -> mu, sigma=softplus -> z = mu + eps*sigma
    -> decoder Linear(K, d_out). ``kl`` holds the last forward's KL divergence to N(0, I) (mean over the
    batch) so the client loss can add ``beta * kl``. Samples in train mode, uses ``mu`` in eval mode.
    ``noise`` can be substituted like ``MaskableDropout.mask``.
    """

    def __init__(self, in_features: int, latent_dim: int = 256, out_features: int | None = None,
                 beta: float = 1e-3) -> None:
        super().__init__()
        self.latent_dim = latent_dim
        self.beta = beta
        self.encoder = nn.Linear(in_features, 2 * latent_dim)
        self.decoder = nn.Linear(latent_dim, out_features or in_features)
        self.noise: torch.Tensor | None  # a buffer, like MaskableDropout.mask
        self.register_buffer("noise", None, persistent=False)
        self.kl: torch.Tensor | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.encoder(x.flatten(1))
        mu, s = h[:, : self.latent_dim], h[:, self.latent_dim:]
        # The -5 shift starts sigma small (softplus(-5) ~ 0.0067), as in the PRECODE reference code.
        sigma = F.softplus(s - 5.0)
        if self.noise is not None:
            z = mu + self.noise * sigma
        elif self.training:
            z = mu + torch.randn_like(sigma) * sigma
        else:
            z = mu
        self.kl = 0.5 * (mu.pow(2) + sigma.pow(2) - 2 * torch.log(sigma + 1e-12) - 1).sum(1).mean()
        return self.decoder(z)
