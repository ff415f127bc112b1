"""The gradient-matching engine every optimisation attack (DLG, IG, DIA, PRECODE-aware) shares.

One attack = find inputs (and, depending on the attack, soft labels and continuous dropout masks) whose
gradient, computed the way the client computes it, matches the observed update. Each restart's objective
contains the model gradient and is differentiated again (a double backward). The restarts are computed
folded into one batch where the matched layers are all ``nn.Linear`` / ``nn.Conv2d`` / BatchNorm (``_fold_step``;
each restart normalised with its own batch's statistics), else one after another (``_loop_step``);
``_choose_step`` says why, ``torch.func.vmap`` remains as an option.
The optimiser (Adam with per-restart learning rates, or L-BFGS) works on the stacked ``(R, ...)`` tensors.
The host reads losses only every ``check_every`` iterations (progress, stop requests, plateau decay), so a
GPU run is not synchronised on every step.

Choices that follow the reference code of the DIA paper (dAI-SY-Group/DropoutInversionAttack):
- the attacker's copy of the model runs with dropout switched off (``attacker_train_mode: false`` there):
  plain attacks do not know the client's masks, and DIA substitutes its own continuous masks;
- the image is initialised ``randn`` in model space and clipped to the valid box after every step;
- Adam updates the image with the sign of its gradient, the masks with their raw gradient.
BatchNorm layers use train-mode batch statistics (as the client did) without running-stat updates; PRECODE
bottlenecks and any other random module sample fresh noise per restart and step (the attacker cannot know
the client's draw).

The package: ``problem`` (the attacker's copy, the settings, the observed update), ``objective`` (one restart's
penalised matching objective and the client's gradient), ``restarts`` (fold, loop or vmap, and the choice) and
``optimiser`` (Adam, L-BFGS, the schedule, ``match_gradients``). Every name other modules, tests and benchmarks
import is re-exported here.
"""

from __future__ import annotations

from .objective import _check_twice_differentiable, _client_gradient, _objective_fn, _penalised, total_variation
from .optimiser import (_adam, _bcast, _early, _fit, _init, _join, _lbfgs, _milestones, _plateau, _result,
                        _Runner, _seeded, _split, _start_from, match_gradients)
from .problem import (DISTANCES, EngineResult, MaskVariable, Objective, Schedule, _build, _check_fixed_masks,
                      _Problem, activation_shapes, attacker_copy)
from .restarts import (_BATCH_MEAN_LOSSES, BATCHINGS, _choose_step, _conv_terms, _fold_step, _foldable,
                       _foldable_conv, _loop_step, _NotFoldable, _same_step, _vmap_step, probe_step)

__all__ = [
    "BATCHINGS", "DISTANCES", "EngineResult", "MaskVariable", "Objective", "Schedule", "activation_shapes",
    "attacker_copy", "match_gradients", "probe_step", "total_variation",
    # private names kept importable from here as before the split (tests and benchmarks reach some of them)
    "_BATCH_MEAN_LOSSES", "_NotFoldable", "_Problem", "_Runner", "_adam", "_bcast", "_build", "_check_fixed_masks",
    "_check_twice_differentiable", "_choose_step", "_client_gradient", "_conv_terms", "_early", "_fit", "_fold_step",
    "_foldable", "_foldable_conv", "_init", "_join", "_lbfgs", "_loop_step", "_milestones", "_objective_fn",
    "_penalised", "_plateau", "_result", "_same_step", "_seeded", "_split", "_start_from", "_vmap_step",
]
