"""Label recovery from the gradient of the classification layer (cross-entropy clients).

With softmax cross-entropy the last layer's gradients are, per class c and mean over the batch of N,
``db_c = mean_n(p_nc) - k_c / N`` and ``dW_c = mean_n((p_nc - y_nc) * h_n)`` (``k_c`` = how often c occurs,
``h_n`` = the features entering the layer). Every strategy reads these two tensors only:

- ``idlg`` (Zhao et al. 2020), batch 1: all rows of dW are multiples of h, and only the label's multiple is
  negative; the label is the row whose sign disagrees with the others (the paper's "row with negative sum"
  when h >= 0, and still right after a LayerNorm or PRECODE decoder, where h has both signs).
- ``bias-sign``, batch 1: the label's bias gradient is the only negative one -- exact for any model.
- ``bias-impact`` (batches; the count form of breaching's ``bias-corrected``): each occurrence of a class
  lowers ``db_c`` by exactly ``1/N``; pick greedily the class with the lowest ``db_c + picked_c / N``,
  taking ``mean_n(p_nc)`` as uniform.
- ``bias-softmax`` (batches): ``bias-impact`` with ``mean_n(p_nc)`` estimated instead of assumed uniform:
  for a class absent from the batch ``dW_c / db_c`` averages the features, the model's last layer at that
  mean feature gives the mean prediction; used only when it agrees with the absent classes' observed
  ``db_c`` (it does not on confident, trained models, where the uniform guess is kept).
- ``bias-corrected`` (breaching): as above with the impact estimated from the negative bias entries.
- ``wainakh-simple`` (Wainakh et al. 2022, via breaching): the same greedy scheme on the row sums of dW,
  for classifiers without a bias; assumes non-negative features (ReLU/sigmoid before the layer).
- ``yin`` (Yin et al. 2021): the N classes with the most negative dW entry; assumes distinct labels.

``auto`` picks ``bias-sign`` / ``idlg`` for one sample and ``bias-softmax`` / ``wainakh-simple`` for
batches (with / without a bias), the best measured on the zoo models (see the tests' printed table).
Measured limits: on untrained zoo models bias-softmax recovers 95-100% of the labels of batches of 16; on
confident trained models the gradient of well-classified samples nearly vanishes and every strategy drops
(65-90% for batches of 4-16 in our runs) -- use ``--labels-known`` to model the stronger attacker.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Mapping

import torch
from torch import nn

from ..registry import Registry


@dataclass(frozen=True)
class ClassifierLayer:
    """The layer whose outputs are the logits: names of its gradients in the update."""

    weight: str
    bias: str | None
    transposed: bool = False  # weight stored as (features, classes), as a MatMul export keeps it
    module: str | None = None


@dataclass(frozen=True)
class LabelRecovery:
    labels: torch.Tensor | None  # (N,) int64, sorted (the order of a batch is not recoverable); None: no layer
    strategy: str
    layer: ClassifierLayer | None = None
    exact: bool = False  # provably exact for this input (one sample, cross-entropy, bias gradient present)
    notes: tuple[str, ...] = ()


@dataclass(frozen=True)
class _LastLayer:
    weight: torch.Tensor  # gradient (C, d), float64
    bias: torch.Tensor | None  # gradient (C,), float64
    weight_value: torch.Tensor | None = None  # the layer's current weights (C, d), when the model is given
    bias_value: torch.Tensor | None = None

    @property
    def bias_grad(self) -> torch.Tensor:
        """The bias gradient, for the strategies registered with ``needs_bias`` (only run when there is one)."""
        if self.bias is None:
            raise ValueError("a needs_bias label strategy was run on a layer without a bias gradient")
        return self.bias


@dataclass(frozen=True)
class LabelStrategy:
    name: str
    fn: Callable[[_LastLayer, int], torch.Tensor]
    needs_bias: bool = False
    single_only: bool = False  # only defined for one sample
    summary: str = ""


LABEL_STRATEGIES: Registry[LabelStrategy] = Registry("label strategy")
# bias-softmax accepts its estimate when its L1 error on the absent classes is at most this fraction of their
# observed mass: 1.0 kept every gain on untrained models and no loss on trained ones (swept 0.1 ... inf).
_TRUST = 1.0


def _strategy(name: str, *, needs_bias: bool = False, single_only: bool = False, summary: str = ""):
    def deco(fn: Callable[[_LastLayer, int], torch.Tensor]) -> Callable[[_LastLayer, int], torch.Tensor]:
        LABEL_STRATEGIES.register(name)(LabelStrategy(name, fn, needs_bias, single_only, summary))
        return fn

    return deco


@_strategy("bias-sign", needs_bias=True, single_only=True, summary="the one negative bias gradient (batch 1)")
def _bias_sign(layer: _LastLayer, n: int) -> torch.Tensor:
    return layer.bias_grad.argmin().view(1)


@_strategy("idlg", single_only=True, summary="iDLG: the weight-gradient row whose sign disagrees (batch 1)")
def _idlg(layer: _LastLayer, n: int) -> torch.Tensor:
    rows = layer.weight
    norms = rows.norm(dim=1)
    if rows.shape[0] > 2 and float(norms.max()) > 0:
        # rows are a_c * h; project on the largest row and find the class alone on its side
        proj = rows @ rows[norms.argmax()]
        live = norms > 1e-12 * float(norms.max())
        pos, neg = (proj > 0) & live, (proj < 0) & live
        if int(neg.sum()) == 1 and int(pos.sum()) > 1:
            return neg.nonzero().view(1)
        if int(pos.sum()) == 1 and int(neg.sum()) > 1:
            return pos.nonzero().view(1)
    return rows.sum(dim=1).argmin().view(1)  # the paper's rule: needs non-negative features


def _greedy(scores: torch.Tensor, n: int, impact: float) -> torch.Tensor:
    """Classes with a negative score once each, then repeatedly the lowest score, which rises by ``impact``
    per pick (the breaching/Wainakh two-stage scheme)."""
    scores = scores.clone()
    picked: list[int] = []
    for c in (scores < 0).nonzero().view(-1).tolist()[:n]:
        picked.append(c)
        scores[c] += impact
    while len(picked) < n:
        c = int(scores.argmin())
        picked.append(c)
        scores[c] += impact
    return torch.tensor(picked, dtype=torch.int64)


@_strategy("bias-impact", needs_bias=True, summary="greedy on the bias gradient, 1/N per occurrence")
def _bias_impact(layer: _LastLayer, n: int) -> torch.Tensor:
    scores = layer.bias_grad.clone()
    picked: list[int] = []
    for _ in range(n):  # exact impact: no stage 1 needed, the lowest score is always a class still owed
        c = int(scores.argmin())
        picked.append(c)
        scores[c] += 1.0 / n
    return torch.tensor(picked, dtype=torch.int64)


@_strategy("bias-softmax", needs_bias=True, summary="bias-impact with the mean softmax estimated from the "
                                                      "model's last layer at the batch's mean feature")
def _bias_softmax(layer: _LastLayer, n: int) -> torch.Tensor:
    labels = _greedy_counts(layer.bias_grad - 1.0 / layer.bias_grad.numel(), n)  # = bias-impact
    if layer.weight_value is None or layer.bias_value is None:
        return labels
    absent = torch.ones_like(layer.bias_grad, dtype=torch.bool)
    absent[labels] = False
    mass = float(layer.bias_grad[absent].sum())
    if not bool(absent.any()) or mass <= 0:
        return labels
    # For an absent class dW_c = mean_n(p_nc h_n) and db_c = mean_n(p_nc) exactly: their ratio averages the
    # features h, and the softmax there estimates the batch's mean prediction.
    feature = layer.weight[absent].sum(0) / mass
    p_mean = torch.softmax(layer.weight_value @ feature + layer.bias_value, dim=0)
    # Check it where the truth is observable (absent classes: p_c = db_c); a confident model's softmax at
    # the mean feature is far from its mean softmax, and then the uniform guess is the safer one.
    if float((p_mean[absent] - layer.bias_grad[absent]).abs().sum()) > _TRUST * mass:
        return labels
    p_mean = torch.where(absent, layer.bias_grad, p_mean * (1.0 - mass) / float(p_mean[~absent].sum()))
    return _greedy_counts(layer.bias_grad - p_mean, n)


def _greedy_counts(scores: torch.Tensor, n: int) -> torch.Tensor:
    """``scores`` estimates -k_c/N; pick n times the lowest, raising it by 1/N per pick."""
    scores = scores.clone()
    out = []
    for _ in range(n):
        c = int(scores.argmin())
        out.append(c)
        scores[c] += 1.0 / n
    return torch.tensor(out, dtype=torch.int64)


@_strategy("bias-corrected", needs_bias=True, summary="breaching's bias-corrected two-stage greedy")
def _bias_corrected(layer: _LastLayer, n: int) -> torch.Tensor:
    b = layer.bias_grad
    negative = b[b < 0]
    impact = -float(negative.sum()) / n if negative.numel() else 1.0 / n
    return _greedy(b, n, impact)


@_strategy("wainakh-simple", summary="Wainakh et al.: two-stage greedy on weight-gradient row sums")
def _wainakh_simple(layer: _LastLayer, n: int) -> torch.Tensor:
    g = layer.weight.sum(dim=1)
    c = g.shape[0]
    impact = -float(g[g < 0].sum()) * (1 + 1 / c) / n
    return _greedy(g, n, impact if impact > 0 else float(g.abs().max()) / n + 1e-12)


@_strategy("yin", summary="Yin et al.: the N classes with the most negative weight-gradient entry")
def _yin(layer: _LastLayer, n: int) -> torch.Tensor:
    mins = layer.weight.min(dim=1).values
    order = mins.argsort()
    reps = math.ceil(n / order.numel())  # more samples than classes: the label set must repeat
    return order.repeat(reps)[:n]


def find_classifier(module: nn.Module | None, gradients: Mapping[str, torch.Tensor],
                    num_classes: int) -> ClassifierLayer | None:
    """The last Linear (or ONNX Gemm converted to Linear) with ``num_classes`` outputs; without one, the
    last 2-D gradient with a ``num_classes`` axis (a MatMul export) and a matching 1-D bias after it."""
    if module is not None:
        linear = [(n, m) for n, m in module.named_modules()
                  if isinstance(m, nn.Linear) and m.out_features == num_classes and f"{n}.weight" in gradients]
        if linear:
            name, m = linear[-1]
            bias = f"{name}.bias" if m.bias is not None and f"{name}.bias" in gradients else None
            return ClassifierLayer(f"{name}.weight", bias, False, name)
    names = list(gradients)
    for i in range(len(names) - 1, -1, -1):
        g = gradients[names[i]]
        if g.dim() != 2 or num_classes not in g.shape:
            continue
        transposed = g.shape[0] != num_classes
        after = [n for n in names[i + 1:] if gradients[n].shape == (num_classes,)]
        before = [n for n in names[:i] if gradients[n].shape == (num_classes,)]
        bias = after[0] if after else (before[-1] if before and names.index(before[-1]) == i - 1 else None)
        return ClassifierLayer(names[i], bias, transposed, None)
    return None


def _auto(layer: ClassifierLayer, n: int) -> str:
    if n == 1:
        return "bias-sign" if layer.bias else "idlg"
    return "bias-softmax" if layer.bias else "wainakh-simple"


def recover_labels(gradients: Mapping[str, torch.Tensor], model: nn.Module | object | None, num_samples: int,
                   num_classes: int, strategy: str = "auto") -> LabelRecovery:
    """Recover the batch's labels from the update; ``model`` is the ``nn.Module`` or a ``LoadedModel``
    (used to find the classification layer; ``None`` falls back to gradient shapes)."""
    if num_samples < 1:
        raise ValueError(f"num_samples must be at least 1, got {num_samples}")
    if strategy != "auto":
        LABEL_STRATEGIES.get(strategy)  # unknown name -> one-line error listing the strategies
    module = getattr(model, "module", model)
    layer = find_classifier(module if isinstance(module, nn.Module) else None, gradients, num_classes)
    if layer is None:
        return LabelRecovery(None, strategy, notes=(f"not applicable: no classification layer with "
                                                    f"{num_classes} outputs among the update's gradients",))
    name = _auto(layer, num_samples) if strategy == "auto" else strategy
    chosen = LABEL_STRATEGIES.get(name)
    notes: list[str] = []
    if chosen.needs_bias and layer.bias is None:
        return LabelRecovery(None, name, layer, notes=(f"not applicable: {name} needs the bias gradient of "
                                                       f"{layer.weight.rsplit('.', 1)[0]}, which has no bias",))
    if chosen.single_only and num_samples > 1:
        return LabelRecovery(None, name, layer, notes=(f"not applicable: {name} recovers one label; the batch "
                                                       f"has {num_samples}, use bias-impact or wainakh-simple",))
    weight = gradients[layer.weight].detach().to("cpu", torch.float64)
    values = dict(module.named_parameters()) if isinstance(module, nn.Module) else {}
    w_value: torch.Tensor | None = values.get(layer.weight)
    b_value = values.get(layer.bias) if layer.bias else None
    if w_value is not None:
        w_value = w_value.detach().to("cpu", torch.float64)
        w_value = w_value.T if layer.transposed else w_value
    last = _LastLayer(weight.T if layer.transposed else weight,
                      gradients[layer.bias].detach().to("cpu", torch.float64) if layer.bias else None,
                      w_value, b_value.detach().to("cpu", torch.float64) if b_value is not None else None)
    labels = chosen.fn(last, num_samples).sort().values
    exact = num_samples == 1 and name == "bias-sign"
    if num_samples > 1:
        notes.append(f"{name}: batch labels are estimated, not guaranteed; order is arbitrary (sorted)")
    return LabelRecovery(labels, name, layer, exact, tuple(notes))
