"""What a defense costs the federation: how much of the update a server can still learn from.

A defense is judged by privacy *and* utility. Beside the attacks' scores (protection), a scan with simulated
defenses measures, on the user's own samples:

- how far the defended update is from the clean one: cosine similarity and relative error
  ``||defended - clean|| / ||clean||`` over all trainable parameters;
- what one server step does with it: the client loss on the samples before the step, after a step with the
  clean update and after a step with the defended one. ``kept`` is the fraction of the clean step's loss
  reduction the defended step keeps (1: no cost; 0: the step teaches nothing; negative: it makes things worse).
  It is measured on the samples the update was computed on, one step: a noisy step can lower that loss as much
  as the clean one by chance (kept 1.03 at cosine 0.016 was seen), so the summary leads with the fidelity and
  says that this is no measure of utility on held-out data.

With held-out samples (``--utility-data``) it also measures what a user weighs a defense by: the model's
accuracy and loss on those samples, in eval mode (as it is used), before the step and after the step with the
clean and with the defended update. One step of one client's update moves a model little, so the figures show
a defense that breaks the step (the update's direction gone), not the cost over a whole training run.

The step is the client's own: ``w - lr * update`` with the client's learning rate, times its local steps
under FedAvg (the update is the weight delta divided by ``-lr * steps``, so this is the delta itself). The loss
is taken in train mode with one fixed seed, so dropout and PRECODE draw the same noise for all three.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Mapping

import torch
from torch.func import functional_call

from ..data.interface import SampleBatch
from ..models.interface import LoadedModel
from .client import batch_on_model_device, client_mode, preserved, seeded
from .interface import ThreatModel
from .losses import client_loss


@dataclass(frozen=True)
class HeldOut:
    """The model on held-out samples before one server step and after it with the clean and the defended update."""

    source: str
    samples: int
    loss_before: float
    loss_after_clean: float
    loss_after_defended: float
    accuracy_before: float
    accuracy_after_clean: float
    accuracy_after_defended: float

    def summary(self) -> str:
        return (f"on {self.samples} held-out sample(s) the model after a step with it has accuracy "
                f"{100 * self.accuracy_after_defended:.1f}% and loss {self.loss_after_defended:.4g} (after the clean "
                f"step {100 * self.accuracy_after_clean:.1f}% and {self.loss_after_clean:.4g}; before the step "
                f"{100 * self.accuracy_before:.1f}% and {self.loss_before:.4g})")


@dataclass(frozen=True)
class DefenseCost:
    cosine: float  # cos(defended, clean) over all trainable parameters
    relative_error: float  # ||defended - clean|| / ||clean||
    step: float  # server step size used (client lr, times local steps under FedAvg)
    loss_before: float
    loss_after_clean: float
    loss_after_defended: float
    kept: float | None  # fraction of the clean step's loss reduction kept; None with ``reason``
    reason: str = ""
    heldout: HeldOut | None = None  # with --utility-data

    def fidelity(self) -> str:
        """How much of the clean update the server still receives, in words."""
        c = self.cosine
        if not math.isfinite(c):
            return "not measurable: the clean update is zero"
        if c >= 0.9:
            return "the server receives nearly the clean update"
        if c >= 0.5:
            return "the clean update with substantial distortion"
        if c >= 0.1:
            return "mostly distortion: little of the clean update's direction survives"
        return "almost only distortion: one client's update carries next to none of the clean update's direction"

    def summary(self) -> str:
        """One line that leads with what a user can weigh (how much of the update survives), e.g. "update
        fidelity: cosine 0.016 to the clean update, relative error 62 (almost only distortion: ...); one server
        step ... (the samples the update was computed on, not held-out data, ...)"."""
        text = (f"update fidelity: cosine {self.cosine:.3g} to the clean update, relative error "
                f"{self.relative_error:.3g} ({self.fidelity()}); ")
        if self.heldout is not None:
            text += self.heldout.summary() + "; "
        if self.kept is None:
            return text + self.reason
        caveat = "the samples the update was computed on, not held-out data, so no measure of utility"
        if self.kept > 1 or (self.cosine < 0.5 and self.kept >= 0.5):
            caveat += ": a distorted step can lower it as much by chance"
        return (text + f"one server step with it lowers the loss on the scan's own samples by {100 * self.kept:.0f}% "
                f"of what the clean step does ({caveat})")


def defense_cost(model: LoadedModel, batch: SampleBatch, clean: Mapping[str, torch.Tensor],
                 defended: Mapping[str, torch.Tensor], threat: ThreatModel, *, seed: int = 0,
                 heldout: SampleBatch | None = None) -> DefenseCost:
    """The cost of ``defended`` against ``clean`` (both: parameter name -> update, as ``client_update`` gives),
    and on ``heldout`` samples when given."""
    names = [n for n in clean if n in defended]
    a = torch.cat([clean[n].detach().flatten().double() for n in names])
    b = torch.cat([defended[n].detach().flatten().double().to(a.device) for n in names])
    norm = a.norm().item()
    cosine = float(torch.dot(a, b) / (norm * b.norm() + 1e-30)) if norm > 0 else math.nan
    relative = float((b - a).norm() / norm) if norm > 0 else math.nan
    step = threat.local_lr * (threat.local_steps if threat.protocol == "fedavg" else 1)
    weights = {n: p.detach() for n, p in model.trainable().items()}
    x, y = batch_on_model_device(model, batch)
    before, after_clean, after_defended = (_loss(model, x, y, w, threat.loss, seed, threat.batchnorm) for w in (
        weights, _stepped(weights, clean, step), _stepped(weights, defended, step)))
    gain = before - after_clean
    if not all(math.isfinite(v) for v in (before, after_clean, after_defended)):
        kept, reason = None, "the loss after a step is not finite"
    elif gain <= 0:
        kept, reason = None, (f"the clean step does not lower the loss ({before:.4g} -> {after_clean:.4g} at "
                              f"step {step:g}), so there is no reduction to keep")
    else:
        kept, reason = (before - after_defended) / gain, ""
    held = None
    if heldout is not None:
        hx, hy = batch_on_model_device(model, heldout)
        (lb, ab), (lc, ac), (ld, ad) = (_evaluate(model, hx, hy, w, threat.loss) for w in (
            weights, _stepped(weights, clean, step), _stepped(weights, defended, step)))
        held = HeldOut(heldout.source, len(heldout), lb, lc, ld, ab, ac, ad)
    return DefenseCost(cosine, relative, step, before, after_clean, after_defended, kept, reason, held)


_CHUNK = 256  # held-out samples per forward pass: bounds memory whatever the folder's size


def _evaluate(model: LoadedModel, x: torch.Tensor, y: torch.Tensor, weights: dict[str, torch.Tensor],
              loss: str) -> tuple[float, float]:
    """(mean loss, accuracy) at ``weights`` in eval mode, as the model is used; modes and buffers untouched."""
    total, correct = 0.0, 0
    with torch.no_grad(), preserved(model.module):
        model.module.eval()
        for i in range(0, x.shape[0], _CHUNK):
            out = functional_call(model.module, weights, (x[i:i + _CHUNK],), strict=False)
            target = y[i:i + _CHUNK]
            total += float(client_loss(model.module, out, target, loss)) * out.shape[0]
            if target.dtype == torch.int64:
                correct += int((out.argmax(1) == target).sum())
    return total / x.shape[0], correct / x.shape[0]


def _stepped(weights: dict[str, torch.Tensor], update: Mapping[str, torch.Tensor],
             step: float) -> dict[str, torch.Tensor]:
    return {n: w - step * update[n].to(w.device, w.dtype) if n in update else w for n, w in weights.items()}


def _loss(model: LoadedModel, x: torch.Tensor, y: torch.Tensor, weights: dict[str, torch.Tensor], loss: str,
          seed: int, batchnorm: str = "train") -> float:
    """The client's loss at ``weights``; the model's modes, buffers (BatchNorm statistics) and RNG untouched."""
    with torch.no_grad(), preserved(model.module), seeded(seed, x.device):
        client_mode(model.module, batchnorm)
        out = functional_call(model.module, weights, (x,), strict=False)
        return float(client_loss(model.module, out, y, loss))
