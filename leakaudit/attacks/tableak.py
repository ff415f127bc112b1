"""TabLeak (Vero et al., ICML 2023): gradient matching on encoded tabular records.

A record's encoded row mixes continuous values with one-hot groups, which plain gradient matching treats as free
numbers and rounds badly. TabLeak optimises each one-hot group through a softmax of free logits (temperature
``temperature``: lower is closer to a hard one-hot), the continuous values directly, matching the observed
gradient by cosine distance; it runs several restarts and pools them per feature -- the median for a continuous
one, the most frequent category for a categorical one -- after matching each restart's records to the best
restart's (a batch's records come back in any order). How much the restarts disagree says how reliable each
recovered feature is: per feature the normalised entropy of the categories the restarts chose (0 = all agree,
1 = uniform), or the spread (standard deviation) of the continuous value over restarts, in column standard
deviations. The report shows both beside each feature.

The record layout (which values form a one-hot group) is public in federated learning -- every client encodes
records the same way -- so the target carries it (``AttackTarget.features``), never the records.
"""

from __future__ import annotations

import math
import time
from typing import ClassVar, Mapping, Sequence

import torch
from torch import nn

from ..detect.interface import Findings
from ..progress import AttackProgress, Observer
from .engine import attacker_copy
from .interface import Attack, AttackSettings, AttackTarget, Reconstruction
from .registry import register_attack

_EXTRA = {"temperature": 0.5}


def _settings(iterations: int, restarts: int) -> AttackSettings:
    return AttackSettings(iterations=iterations, restarts=restarts, lr=0.05, tv=0.0, extra=dict(_EXTRA))


@register_attack
class TabLeak(Attack):
    name = "tableak"
    summary = ("gradient matching over the encoded record: softmax-relaxed one-hot groups, restarts pooled per "
               "feature with their disagreement (TabLeak)")
    modalities = ("tabular",)
    # Measured on the bundled tabular MLP (docs/tabular.md): quick recovers the undefended record in a few
    # seconds on one core; standard and thorough add iterations and restarts for batches.
    budgets: ClassVar[Mapping[str, AttackSettings]] = {
        "quick": _settings(300, 4), "standard": _settings(1000, 8), "thorough": _settings(3000, 16)}

    def skip_reason(self, findings: Findings | None, module: nn.Module | None) -> str | None:
        if module is None:
            return "not applicable: no model"
        return None

    def run(self, target: AttackTarget, settings: AttackSettings, *, device: torch.device,
            seed: int | None, observer: Observer) -> Reconstruction:
        start = time.perf_counter()
        features = target.features or tuple((i, i + 1, False) for i in range(math.prod(target.input_shape)))
        if target.labels is None:
            empty = torch.empty((0, *target.input_shape))
            return Reconstruction(self.name, empty, None, math.nan, settings, 0.0, 0,
                                  notes=("not applicable: TabLeak needs the labels (known or recovered)",))
        model = attacker_copy(target.module, device)
        names = [n for n, _ in model.named_parameters() if n in target.gradients]
        params = [p for n, p in model.named_parameters() if n in target.gradients]
        for p in params:
            p.requires_grad_(True)
        observed = [target.gradients[n].detach().to(device, torch.float32) for n in names]
        labels = target.labels.to(device)
        tau = float(settings.extra.get("temperature", _EXTRA["temperature"]))
        generator = torch.Generator().manual_seed(0 if seed is None else int(seed))
        n, width = target.num_samples, math.prod(target.input_shape)
        runs, losses, done = [], [], 0
        for restart in range(settings.restarts):
            z = torch.randn(n, width, generator=generator).to(device).requires_grad_(True)
            opt = torch.optim.Adam([z], lr=settings.lr)
            sched = torch.optim.lr_scheduler.MultiStepLR(
                opt, [int(settings.iterations * f) for f in (0.375, 0.625, 0.875)], gamma=0.1)
            for it in range(settings.iterations):
                opt.zero_grad()
                loss = _mismatch(model, params, observed, _relaxed(z, features, tau), labels, target.loss)
                loss.backward()
                opt.step()
                sched.step()
                done += 1
                if observer.should_stop():
                    break
                if it % 100 == 0:
                    observer.attack_progress(AttackProgress(self.name, restart * settings.iterations + it,
                                                            settings.iterations * settings.restarts,
                                                            float(loss.detach())))
            with torch.no_grad():
                hard = _hard(z.detach(), features)
            final = float(_mismatch(model, params, observed, hard, labels, target.loss).detach())
            runs.append(hard.cpu())
            losses.append(final)
            if observer.should_stop():
                break
        best = min(range(len(losses)), key=lambda i: losses[i])
        pooled, spread = pool(runs, best, features)
        return Reconstruction(
            attack=self.name, x=pooled.reshape(n, *target.input_shape), labels=target.labels,
            attack_loss=losses[best], settings=settings, seconds=time.perf_counter() - start,
            iterations_run=done, stopped_early=observer.should_stop(),
            notes=(f"{len(runs)} restart(s) pooled per feature (median / most frequent category); "
                   f"temperature {tau:g}",),
            restart_losses=tuple(losses), best_restart=best, device=str(device), feature_spread=spread)

    def reads_local_steps(self, local: object) -> str:
        return "reads the FedAvg delta as one averaged gradient"


def _relaxed(z: torch.Tensor, features: tuple[tuple[int, int, bool], ...], tau: float) -> torch.Tensor:
    parts = [torch.softmax(z[:, s:e] / tau, dim=1) if cat else z[:, s:e] for s, e, cat in features]
    return torch.cat(parts, dim=1)


def _hard(z: torch.Tensor, features: tuple[tuple[int, int, bool], ...]) -> torch.Tensor:
    out = z.clone()
    for s, e, cat in features:
        if cat:
            out[:, s:e] = nn.functional.one_hot(z[:, s:e].argmax(1), e - s).to(z.dtype)
    return out


def _mismatch(model: nn.Module, params: Sequence[torch.Tensor], observed: Sequence[torch.Tensor], x: torch.Tensor,
              labels: torch.Tensor, loss: str) -> torch.Tensor:
    """1 - cosine similarity of the candidate's gradient and the observed one (all parameters as one vector)."""
    from ..update.losses import LOSSES

    out = model(x)
    grads = torch.autograd.grad(LOSSES.get(loss)(out, labels), params, create_graph=True)
    dot = torch.stack([(g * o).sum() for g, o in zip(grads, observed, strict=True)]).sum()
    gn = torch.stack([(g * g).sum() for g in grads]).sum().sqrt()
    on = torch.stack([(o * o).sum() for o in observed]).sum().sqrt()
    return 1 - dot / (gn * on + 1e-12)


def pool(runs: list[torch.Tensor], best: int, features: tuple[tuple[int, int, bool], ...]
         ) -> tuple[torch.Tensor, torch.Tensor]:
    """The restarts pooled per feature, and each feature's disagreement (N, features): categorical -- the
    normalised entropy of the chosen categories (0 all agree, 1 uniform); continuous -- the standard deviation
    over restarts (encoded values: column standard deviations). Each restart's records are first matched to the
    best restart's (Hungarian on the encoded distance)."""
    anchor = runs[best]
    aligned = [anchor] + [_align(r, anchor) for i, r in enumerate(runs) if i != best]
    stack = torch.stack(aligned)  # (R, N, width)
    n = anchor.shape[0]
    pooled = torch.zeros_like(anchor)
    spread = torch.zeros(n, len(features))
    for k, (s, e, cat) in enumerate(features):
        if cat:
            choice = stack[:, :, s:e].argmax(-1)  # (R, N)
            for i in range(n):
                counts = torch.bincount(choice[:, i], minlength=e - s).double()
                # a tie goes to the best restart's choice: it matched the gradient best
                top = counts.max()
                winner = int(choice[0, i]) if counts[choice[0, i]] == top else int(counts.argmax())
                pooled[i, s + winner] = 1.0
                p = counts[counts > 0] / counts.sum()
                spread[i, k] = float(-(p * p.log()).sum() / math.log(e - s)) if e - s > 1 else 0.0
        else:
            pooled[:, s:e] = stack[:, :, s:e].median(dim=0).values
            spread[:, k] = stack[:, :, s].std(dim=0, unbiased=False) if len(runs) > 1 else 0.0
    return pooled, spread


def _align(run: torch.Tensor, anchor: torch.Tensor) -> torch.Tensor:
    if run.shape[0] == 1:
        return run
    from scipy.optimize import linear_sum_assignment

    cost = torch.cdist(anchor.double(), run.double())
    rows, cols = linear_sum_assignment(cost.numpy())
    return run[torch.as_tensor(cols)[torch.argsort(torch.as_tensor(rows))]]
