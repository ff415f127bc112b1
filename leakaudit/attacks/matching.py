"""The optimisation attacks: DLG, Inverting Gradients, DIA (+ its well-informed variant with the true masks),
PRECODE-aware.

Each is a small class that says *what* to match (``objective``) and *how* to optimise (``schedule``); the
engine does the rest. Settings keys beyond ``AttackSettings``' fields live in ``settings.extra``:
``mask_reg`` (DIA), ``bn_weight`` (the BatchNorm prior's lambda: IG, DIA, PRECODE-aware), ``decay``
("step" | "plateau" | "none"), ``patience``, ``check_every``, ``tol``, and
``seconds``, the attack's time share, which the scan sets (``attacks.clock``).
"""

from __future__ import annotations

import dataclasses
import time

import torch
from torch import nn

from ..detect.interface import Findings
from ..models.layers import MaskableDropout
from ..progress import Observer
from ..update.interface import LocalTraining
from .engine import EngineResult, Objective, Schedule, match_gradients
from .interface import Attack, AttackSettings, AttackTarget, GroundTruth, Reconstruction
from .registry import register_attack

# Inverting Gradients' settings per budget, which the other IG-style attacks start from: quick and standard are
# leakaudit's (planner module docstring); thorough is the paper's 24,000 iterations.
IG_BUDGETS = {"quick": AttackSettings(iterations=300, restarts=1, lr=0.1, tv=1e-4),
              "standard": AttackSettings(iterations=600, restarts=2, lr=0.1, tv=1e-4),
              "thorough": AttackSettings(iterations=24000, restarts=4, lr=0.1, tv=1e-4)}
_MASK_REG = {"mask_reg": 1e-4}  # DIA's regulariser of its continuous masks
# lambda of GradInversion's BatchNorm prior where the update's buffers give the batch statistics: the best of 1, 10,
# 100 and 1000 in whole standard scans of a small BatchNorm CNN at batch 4 (docs/attacks.md, "BatchNorm buffers in
# the update"); the zoo resnet20 reconstructed nothing with or without it
BN_WEIGHT = 100.0


def _masked(ig: AttackSettings) -> AttackSettings:
    """IG's settings with the masks' regulariser, for an attack that optimises dropout masks."""
    return dataclasses.replace(ig, extra=dict(_MASK_REG))


class GradientMatchingAttack(Attack):
    distance = "cosine"
    optimizer = "adam"
    needs_labels = True  # False: optimises soft labels when none are given (DLG)
    bn_prior = False  # matches the batch statistics recovered from the update's BatchNorm buffers, when given

    def reads_local_steps(self, local: LocalTraining) -> str:
        return f"unrolls the client's {local.steps} local steps in its objective"

    def objective(self, target: AttackTarget, settings: AttackSettings) -> tuple[Objective, list[str]]:
        """What to match; the notes explain choices a report reader should know about."""
        return Objective(distance=self.distance, tv=settings.tv, soft_labels=target.labels is None), []

    def schedule(self, settings: AttackSettings) -> Schedule:
        extra = settings.extra
        return Schedule(iterations=int(settings.iterations), restarts=int(settings.restarts), lr=float(settings.lr),
                        optimizer=self.optimizer, decay=str(extra.get("decay", "step")),
                        patience=int(extra.get("patience", 800)), check_every=int(extra.get("check_every", 25)),
                        tol=float(extra.get("tol", 0.0)),
                        seconds=float(extra["seconds"]) if extra.get("seconds") is not None else None)

    def run(self, target: AttackTarget, settings: AttackSettings, *, device: torch.device,
            seed: int | None, observer: Observer) -> Reconstruction:
        return self._match(target, settings, self.objective(target, settings), device=device, seed=seed,
                           observer=observer)

    def _match(self, target: AttackTarget, settings: AttackSettings, planned: tuple[Objective, list[str]], *,
               device: torch.device, seed: int | None, observer: Observer) -> Reconstruction:
        """Run the engine on ``planned`` (the objective and its notes)."""
        start = time.perf_counter()
        objective, notes = planned
        notes.insert(0, protocol_assumed(target.local_training))
        if self.bn_prior:
            objective = _with_bn_prior(objective, notes, target, float(settings.extra.get("bn_weight", BN_WEIGHT)))
        if self.needs_labels and target.labels is None:
            notes.append("labels neither known nor recovered: soft labels optimised jointly")
        res: EngineResult = match_gradients(
            target.module, target.gradients, objective, self.schedule(settings),
            input_shape=tuple(target.input_shape), num_samples=target.num_samples, num_classes=target.num_classes,
            labels=target.labels, loss=target.loss, bounds=target.bounds, device=device, seed=seed,
            observer=observer, attack=self.name, local=target.local_training)
        return Reconstruction(attack=self.name, x=res.x, labels=res.labels, attack_loss=res.loss, settings=settings,
                              seconds=time.perf_counter() - start, iterations_run=res.iterations_run,
                              stopped_early=res.stopped_early, notes=tuple(notes) + res.notes,
                              restart_losses=res.restart_losses, best_restart=res.best_restart, device=str(device))


def _with_bn_prior(objective: Objective, notes: list[str], target: AttackTarget, weight: float) -> Objective:
    """``objective`` with GradInversion's BatchNorm prior where the update's buffers gave the batch statistics and
    matching is stable; a note says whether it was used and why not."""
    if not target.batch_statistics:
        return objective  # no buffers in the update (or none recoverable): nothing to match, nothing to say
    layers = len(target.batch_statistics)
    if target.ill_conditioned:
        notes.append(f"BatchNorm statistics term not used: {layers} layer(s) recovered from the update's buffers, "
                     "but the batch is ill-conditioned (conditioning), where the term gains nothing")
        return objective
    if not weight:
        notes.append("BatchNorm statistics term not used: bn_weight is 0")
        return objective
    notes.append(f"BatchNorm statistics term used: lambda {weight:g} x the candidate's batch mean and variance "
                 f"against those of {layers} layer(s) recovered from the update's buffers")
    stats = {r.name: (r.mean, r.var) for r in target.batch_statistics}
    return dataclasses.replace(objective, batch_statistics=stats, bn_weight=weight)


def protocol_assumed(local: LocalTraining | None) -> str:
    """What the attack took the update to be, for the report."""
    if local is None:
        return "protocol assumed: fedsgd (the update is one gradient at the model's weights)"
    if local.steps == 1:
        return f"protocol assumed: fedavg, {local}: the delta over -lr is one gradient at the model's weights"
    return (f"protocol assumed: fedavg, {local}; unrolled {local.steps} local steps in the objective "
            "(Geiping et al. 2020, section 5)")


@register_attack
class DLG(GradientMatchingAttack):
    name = "dlg"
    summary = "Deep Leakage from Gradients: L2 gradient distance, L-BFGS, labels optimised jointly if unknown"
    distance = "l2"
    optimizer = "lbfgs"
    needs_labels = False
    # Iterations count objective evaluations (L-BFGS line searches evaluate several times per step); thorough ~
    # the DLG paper's 300 L-BFGS steps of up to 20 evaluations each.
    budgets = {"quick": AttackSettings(iterations=150, restarts=1, lr=1.0, tv=0.0),
               "standard": AttackSettings(iterations=300, restarts=2, lr=1.0, tv=0.0),
               "thorough": AttackSettings(iterations=6000, restarts=4, lr=1.0, tv=0.0)}
    # Its L2 objective is dominated by IG's cosine objective (Geiping et al. 2020), and its L-BFGS line searches
    # cost as much as the rest of a standard scan together: it runs at thorough or when asked for by name.
    not_auto_at = {budget: f"not planned at the {budget} budget: IG's cosine objective is the stronger of the two "
                           "(Geiping et al. 2020); ask for it with --attacks dlg or use --budget thorough"
                   for budget in ("quick", "standard")}

    def objective(self, target: AttackTarget, settings: AttackSettings) -> tuple[Objective, list[str]]:
        return Objective(distance="l2", tv=settings.tv, soft_labels=target.labels is None), []


@register_attack
class InvertingGradients(GradientMatchingAttack):
    name = "ig"
    summary = "Inverting Gradients: 1 - cosine over all layers, TV prior, signed Adam, box constraint"
    budgets = IG_BUDGETS
    fits_image_prior = True
    bn_prior = True

    def objective(self, target: AttackTarget, settings: AttackSettings) -> tuple[Objective, list[str]]:
        notes = []
        if _dropout_modules(target.module):
            notes.append("the model has dropout: IG's model runs without it (the client's masks are unknown; "
                         "as the DIA reference code's IG baseline) -- DIA models the masks")
        return Objective(distance="cosine", tv=settings.tv, soft_labels=target.labels is None), notes


def _dropout_modules(module: nn.Module) -> list[str]:
    return [n for n, m in module.named_modules() if isinstance(m, MaskableDropout) and m.p > 0]


def _mask_layers(target: AttackTarget) -> tuple[tuple[str, ...], list[str]]:
    """Dropout layers DIA can drive: the detected ones that are MaskableDropout modules of the model."""
    modules = dict(target.module.named_modules())
    findings = target.findings
    found = [d.name for d in findings.dropout] if findings is not None else _dropout_modules(target.module)
    usable = tuple(n for n in found if isinstance(modules.get(n), MaskableDropout) and modules[n].p > 0)
    notes = [f"dropout '{n}' is not a MaskableDropout module of the loaded model: its mask is not modelled"
             for n in found if n not in usable]
    return usable, notes


@register_attack
class DropoutInversion(GradientMatchingAttack):
    name = "dia"
    summary = "Dropout Inversion Attack: IG + one continuous mask per dropout layer, optimised jointly"
    # thorough: the DIA paper's 20,000 iterations with plateau decay x0.1 after 800 stalled iterations
    budgets = {"quick": _masked(IG_BUDGETS["quick"]), "standard": _masked(IG_BUDGETS["standard"]),
               "thorough": AttackSettings(iterations=20000, restarts=4, lr=0.1, tv=1e-5,
                                          extra={**_MASK_REG, "decay": "plateau", "patience": 800})}
    bn_prior = True
    fits_image_prior = True

    def skip_reason(self, findings: Findings | None, module: nn.Module | None) -> str | None:
        if findings is not None and not findings.has_dropout:
            return "no dropout layers found (if the export removed them, declare rates with --dropout NAME=P)"
        if module is not None and not _dropout_modules(module):
            return "no dropout layer of the loaded model can be driven (none is a MaskableDropout)"
        return None

    def objective(self, target: AttackTarget, settings: AttackSettings) -> tuple[Objective, list[str]]:
        layers, notes = _mask_layers(target)
        reg = float(settings.extra.get("mask_reg", 1e-4))
        notes.append(f"masks optimised for {len(layers)} dropout layer(s): {', '.join(layers)}")
        return Objective(distance="cosine", tv=settings.tv, mask_layers=layers, mask_reg=reg,
                         soft_labels=target.labels is None), notes


@register_attack
class InformedDropoutInversion(GradientMatchingAttack):
    """IG with the client's true masks, the DIA paper's well-informed reference. Uses ground truth, so it never
    runs in an audit unless asked for by name. Not a ceiling on ``dia``: on ReLU models fixed masks leave
    units the image switched off without gradient, and DIA's continuous masks can fit better (docs/attacks.md)."""

    name = "dia-informed"
    summary = "well-informed IG with the client's true dropout masks (needs ground truth; not always above dia)"
    auto = False
    needs_ground_truth = True
    budgets = {"quick": IG_BUDGETS["quick"], "standard": IG_BUDGETS["standard"],
               "thorough": AttackSettings(iterations=20000, restarts=4, lr=0.1, tv=1e-5,
                                          extra={"decay": "plateau", "patience": 800})}
    fits_image_prior = True

    def skip_reason(self, findings: Findings | None, module: nn.Module | None) -> str | None:
        if findings is not None and not findings.has_dropout:
            return "no dropout layers found"
        return None

    def run(self, target: AttackTarget, settings: AttackSettings, *, device: torch.device,
            seed: int | None, observer: Observer, truth: GroundTruth | None = None) -> Reconstruction:
        return self._match(target, settings, self.informed(target, settings, truth or GroundTruth()),
                           device=device, seed=seed, observer=observer)

    def objective(self, target: AttackTarget, settings: AttackSettings) -> tuple[Objective, list[str]]:
        return self.informed(target, settings, GroundTruth())  # no truth given: runs as IG, and says so

    def informed(self, target: AttackTarget, settings: AttackSettings,
                 truth: GroundTruth) -> tuple[Objective, list[str]]:
        modules = dict(target.module.named_modules())
        local = target.local_training
        # unrolled local steps use the client's stacked per-step masks (steps, N, ...); one step its (N, ...)
        lead = (local.steps, target.num_samples) if local is not None and local.steps > 1 else (target.num_samples,)
        masks = {n: m for n, m in truth.dropout_masks.items()
                 if isinstance(modules.get(n), MaskableDropout) and tuple(m.shape[:len(lead)]) == lead}
        notes = ["uses the client's true dropout masks: ground truth a real server lacks; on ReLU models dia can "
                 "still score higher (see docs/attacks.md)"]
        if not masks:
            notes.append("no usable true masks were given: runs as IG")
        return Objective(distance="cosine", tv=settings.tv, fixed_masks=masks,
                         soft_labels=target.labels is None), notes


@register_attack
class PrecodeAware(GradientMatchingAttack):
    name = "precode-aware"
    summary = "match only the gradients of layers before the first variational bottleneck (+ DIA masks)"
    budgets = {"quick": _masked(IG_BUDGETS["quick"]), "standard": _masked(IG_BUDGETS["standard"]),
               "thorough": IG_BUDGETS["thorough"]}
    fits_image_prior = True
    bn_prior = True

    def skip_reason(self, findings: Findings | None, module: nn.Module | None) -> str | None:
        if findings is None or not findings.has_bottleneck:
            return "no variational (PRECODE) bottleneck found"
        if not findings.bottlenecks[0].params_before:
            return (f"the bottleneck '{findings.bottlenecks[0].name}' has no trainable layer before it: "
                    "nothing deterministic to match")
        return None

    def objective(self, target: AttackTarget, settings: AttackSettings) -> tuple[Objective, list[str]]:
        if target.findings is None or not target.findings.has_bottleneck:
            raise ValueError("precode-aware needs findings with a bottleneck")
        b = target.findings.bottlenecks[0]
        match = tuple(n for n in b.params_before if n in target.gradients)
        notes = [f"matches the {len(match)} gradient tensors before bottleneck '{b.name}' "
                 f"(leaves out {len(b.params_after)} at or after its sampling)"]
        layers: tuple[str, ...] = ()
        if _dropout_modules(target.module):
            layers, more = _mask_layers(target)
            notes += more
            notes.append(f"with DIA masks for {len(layers)} dropout layer(s)")
        reg = float(settings.extra.get("mask_reg", 1e-4))
        return Objective(distance="cosine", match=match, tv=settings.tv, mask_layers=layers, mask_reg=reg,
                         soft_labels=target.labels is None), notes
