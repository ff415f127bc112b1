"""The contract between the planner, the attacks and scoring.

An attack sees only what the threat model exposes (the observed update, the model, the input shape,
and labels only when the threat model says they are known) -- never the true samples.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any, ClassVar, Mapping

import torch
from torch import nn

from ..detect.interface import Findings
from ..progress import Observer
from ..update.interface import LocalTraining
from .bnstats import RecoveredLayer


BUDGET_NAMES = ("quick", "standard", "thorough")


@dataclass(frozen=True)
class AttackSettings:
    iterations: int
    restarts: int = 1
    lr: float = 0.1
    tv: float = 1e-4
    extra: dict[str, Any] = field(default_factory=dict)  # attack-specific (e.g. mask_reg for DIA)


@dataclass(frozen=True)
class Reconstruction:
    attack: str
    x: torch.Tensor  # (N, *input_shape) in model space, best restart, detached, on CPU
    labels: torch.Tensor | None  # labels the attack used or recovered
    attack_loss: float  # the attack's own objective of the returned restart (what it chose by)
    settings: AttackSettings
    seconds: float
    iterations_run: int
    stopped_early: bool = False  # True when interrupted or converged
    notes: tuple[str, ...] = ()
    # Added (backward compatible): the final objective of every restart (nan for a dropped one), and the
    # index of the returned restart -- lets a report show how consistent the restarts were.
    restart_losses: tuple[float, ...] = ()
    best_restart: int = 0
    device: str = "cpu"
    # Tabular records: (N, features) how much the restarts disagreed on each recovered feature (TabLeak's
    # reliability: normalised entropy of a categorical one, spread of a continuous one); None: not measured.
    feature_spread: torch.Tensor | None = None


@dataclass(frozen=True)
class AttackTarget:
    """Everything an attack may use: what the server sees plus public facts about the model. Ground truth only
    the simulation knows is not here: it is a ``GroundTruth``, handed only to an attack that declares
    ``needs_ground_truth``."""

    module: nn.Module
    gradients: Mapping[str, torch.Tensor]  # observed update: trainable parameter name -> gradient
    input_shape: tuple[int, ...]
    num_classes: int
    labels: torch.Tensor | None = None  # (N,) class indices known or recovered; None: the attack must cope
    num_samples: int = 1
    findings: Findings | None = None
    bounds: tuple[torch.Tensor, torch.Tensor] | None = None  # valid input box in model space, (1, *input_shape)
    loss: str = "cross_entropy"  # the client's objective (leakaudit.update.losses.LOSSES)
    # The protocol, public in FL: None under FedSGD; under FedAvg the client's local steps, which the
    # optimisation attacks simulate when there are several (``gradients`` then holds delta / (-lr * steps)).
    local_training: LocalTraining | None = None
    # Text models (public in FL: the server ships the tokenizer): the padding token's id, and the client's task,
    # "next-token" (targets are the line's own next tokens) or "classify". None for other modalities.
    pad_id: int | None = None
    text_task: str | None = None
    # Tabular records: each feature's (start, end, categorical) in the encoded row -- the encoding every client
    # shares, public like the model. Empty for other samples.
    features: tuple[tuple[int, int, bool], ...] = ()
    # BatchNorm buffers sent with the update (--update-buffers yes, one local step, train-mode BatchNorm): each
    # layer's batch mean and variance as the server recovers them in closed form (``attacks.bnstats``), which the
    # IG-family attacks match (GradInversion's BatchNorm prior). Empty when the update carries none.
    batch_statistics: tuple[RecoveredLayer, ...] = ()
    # The conditioning diagnostic (``update.conditioning``) found this batch ill-conditioned: gradient matching
    # cannot converge, and the BatchNorm prior is left out (it gains nothing there).
    ill_conditioned: bool = False


@dataclass(frozen=True)
class GroundTruth:
    """What the simulated client knows and a real server does not, kept apart from ``AttackTarget`` so an attack
    cannot read it unless it declares ``needs_ground_truth`` (a reference such as ``dia-informed``, which never
    runs unless named)."""

    # dropout layer name -> the client's 0/1 masks, (N, ...); (steps, N, ...) under FedAvg's local steps
    dropout_masks: Mapping[str, torch.Tensor] = field(default_factory=dict, repr=False)


class Attack(ABC):
    """One gradient-inversion attack. Subclasses set ``name``/``summary`` and implement ``run``.

    ``auto`` attacks are planned when they fit the model; the others (references needing ground truth)
    run only when asked for by name. An attack with ``needs_ground_truth`` is also given ``truth=GroundTruth``
    by the caller; no other attack's ``run`` receives it.
    """

    name: str = ""
    summary: str = ""
    auto: bool = True
    # The attack's settings at every budget (BUDGET_NAMES), declared next to it: registering an attack without
    # them is an error (``check_attack``), so no attack silently runs another's numbers.
    budgets: ClassVar[Mapping[str, AttackSettings]] = {}
    # Budgets at which the automatic plan leaves it out (it still runs when named), with the reason shown.
    not_auto_at: ClassVar[Mapping[str, str]] = {}
    # Whether the planner fits its TV weight to the model's first layer below ``thorough`` (planner.image_prior).
    fits_image_prior: ClassVar[bool] = False
    needs_ground_truth: ClassVar[bool] = False  # True: run() takes truth=GroundTruth (a reference, not an attack)
    # The kinds of sample it reconstructs (leakaudit.modality): the planner plans it only for those.
    modalities: ClassVar[tuple[str, ...]] = ("image",)

    def skip_reason(self, findings: Findings | None, module: nn.Module | None) -> str | None:
        """Why this attack does not fit the model (None: it fits)."""
        return None

    def reads_local_steps(self, local: LocalTraining) -> str:
        """How this attack treats a FedAvg update of ``local.steps`` > 1 local steps (said before it runs)."""
        return "reads the FedAvg delta as one averaged gradient"

    @abstractmethod
    def run(self, target: AttackTarget, settings: AttackSettings, *, device: torch.device,
            seed: int | None, observer: Observer) -> Reconstruction: ...


@dataclass(frozen=True)
class PlannedAttack:
    """One line of the plan: an attack with its settings, or the reason it is not run."""

    name: str
    settings: AttackSettings | None
    run: bool
    reason: str = ""  # why it is skipped, or why it was chosen

    def __str__(self) -> str:
        return f"{self.name}: {'run' if self.run else 'skipped'} -- {self.reason}" if self.reason else self.name


def check_attack(attack: Attack) -> Attack:
    """``attack`` when it can be planned at every budget; else the error that names what it lacks. Called when an
    attack is registered (a plug-in too: ``ATTACKS.register()``), so a missing budget fails at import, not
    mid-scan."""
    name = attack.name or type(attack).__name__
    budgets = attack.budgets
    missing = [b for b in BUDGET_NAMES if not isinstance(budgets.get(b), AttackSettings)]
    if missing:
        raise ValueError(f"attack {name!r} declares no AttackSettings for budget(s) {', '.join(missing)}: give its "
                         f"class budgets = {{'quick': AttackSettings(iterations=...), ...}} for each of "
                         f"{', '.join(BUDGET_NAMES)}")
    unknown = sorted(set(budgets) - set(BUDGET_NAMES))
    if unknown:
        raise ValueError(f"attack {name!r} declares settings for unknown budget(s) {', '.join(unknown)}: the "
                         f"budgets are {', '.join(BUDGET_NAMES)}")
    return attack


def run_with_truth(attack: Attack, target: AttackTarget, settings: AttackSettings, truth: GroundTruth | None, *,
                   device: torch.device, seed: int | None, observer: Observer) -> Reconstruction:
    """``attack.run``, given ``truth`` only when the attack declares it needs ground truth."""
    if attack.needs_ground_truth:  # its run() takes truth: Attack.run's signature (every other attack's) does not
        return attack.run(target, settings, device=device, seed=seed, observer=observer,  # type: ignore[call-arg]
                          truth=truth or GroundTruth())
    return attack.run(target, settings, device=device, seed=seed, observer=observer)
