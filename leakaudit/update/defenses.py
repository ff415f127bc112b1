"""Simulated client-side defenses, applied in order to the update before the server sees it.

Each defense is a small class in ``DEFENSES`` with its parameters declared (name, valid range, meaning),
so ``parse_defense("prune:keep=0.1")`` can check user input and name the fix in one line. All randomness
comes from one ``torch.Generator`` seeded by ``apply_defenses``'s ``seed``: the same seed gives the same
noise/mask on any device, and the caller's global RNG is never touched.

Parameters are in gradient space: for FedAvg they act on the averaged gradient ``ClientUpdate.gradients``
(the weight delta divided by ``-lr * E``), so ``noise:sigma=0.01`` means the same on both protocols.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Iterable

import torch

from ..detect.interface import Findings
from ..errors import ConfigError, UnknownNameError, setting_ref
from ..registry import Registry
from .interface import ClientUpdate, DefenseSpec

# named in messages: the CLI shows each as its option, a Python caller reads the setting (or argument)
DEFENSE_SETTING = setting_ref("defenses")

Gradients = dict[str, torch.Tensor]


@dataclass(frozen=True)
class Param:
    name: str
    low: float
    high: float
    low_open: bool = False  # True: ``low`` itself is not allowed
    high_open: bool = False
    help: str = ""

    def interval(self) -> str:
        hi = "inf" if math.isinf(self.high) else f"{self.high:g}"
        close = ")" if self.high_open or math.isinf(self.high) else "]"
        return f"{'(' if self.low_open else '['}{self.low:g}, {hi}{close}"

    def contains(self, v: float) -> bool:
        above = v > self.low if self.low_open else v >= self.low
        below = v < self.high if self.high_open else v <= self.high
        return math.isfinite(v) and above and below


class Defense(ABC):
    name: str
    params: tuple[Param, ...]
    summary: str

    @abstractmethod
    def apply(self, gradients: Gradients, values: dict[str, float], findings: Findings | None,
              generator: torch.Generator, spec: DefenseSpec) -> Gradients:
        """Return the defended gradients (new tensors; the input is not modified)."""

    def example(self) -> str:
        return f"{self.name}:" + ",".join(f"{p.name}={_example_value(p)}" for p in self.params)


DEFENSES: Registry[Defense] = Registry("defense")


def _register(cls: type[Defense]) -> type[Defense]:
    DEFENSES.register(cls.name)(cls())
    return cls


def _normal_like(t: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    # Sampled on the CPU generator, then moved: the same seed gives the same noise on every device.
    return torch.randn(t.shape, generator=generator, dtype=torch.float32).to(device=t.device, dtype=t.dtype)


@_register
class GaussianNoise(Defense):
    name = "noise"
    params = (Param("sigma", 0.0, math.inf, help="standard deviation of the noise added to every entry"),)
    summary = "add N(0, sigma^2) to every gradient entry"

    def apply(self, gradients, values, findings, generator, spec):
        sigma = values["sigma"]
        return {n: g + sigma * _normal_like(g, generator) for n, g in gradients.items()}


@_register
class NormClip(Defense):
    name = "clip"
    params = (Param("norm", 0.0, math.inf, low_open=True, help="maximum global L2 norm of the update"),)
    summary = "scale the whole update down to global L2 norm <= norm"

    def apply(self, gradients, values, findings, generator, spec):
        total = torch.sqrt(sum((g.double() ** 2).sum() for g in gradients.values()))
        scale = min(1.0, values["norm"] / float(total)) if float(total) > 0 else 1.0
        return {n: g * scale for n, g in gradients.items()}


@_register
class TopKPrune(Defense):
    name = "prune"
    params = (Param("keep", 0.0, 1.0, low_open=True, help="fraction of entries kept per tensor"),)
    summary = "keep the largest-magnitude fraction of each tensor, zero the rest"

    def apply(self, gradients, values, findings, generator, spec):
        out = {}
        for n, g in gradients.items():
            k = max(1, math.ceil(values["keep"] * g.numel()))
            flat = g.flatten()
            keep = torch.zeros_like(flat, dtype=torch.bool)
            keep[flat.abs().topk(k).indices] = True
            out[n] = torch.where(keep, flat, torch.zeros_like(flat)).view_as(g)
        return out


@_register
class RandomMask(Defense):
    name = "mask"
    params = (Param("fraction", 0.0, 1.0, high_open=True, help="fraction of entries zeroed per tensor"),)
    summary = "zero a random fraction of the entries of each tensor"

    def apply(self, gradients, values, findings, generator, spec):
        out = {}
        for n, g in gradients.items():
            k = round(values["fraction"] * g.numel())
            drop = torch.randperm(g.numel(), generator=generator)[:k].to(g.device)
            flat = g.flatten().clone()
            flat[drop] = 0
            out[n] = flat.view_as(g)
        return out


@_register
class PartialPerturbation(Defense):
    name = "ppp"
    params = (Param("sigma", 0.0, math.inf, help="noise std on the gradients of layers before the bottleneck"),)
    summary = "PRECODE with Partial Perturbation: noise only on the layers before the first PRECODE bottleneck"

    def apply(self, gradients, values, findings, generator, spec):
        if findings is None or not findings.bottlenecks:
            raise ConfigError(f"{DEFENSE_SETTING} {spec}: the model has no PRECODE (variational) bottleneck, so PPP "
                              "has no layers to perturb; use noise:sigma=... to perturb the whole update")
        before = set(findings.bottlenecks[0].params_before)
        sigma = values["sigma"]
        return {n: g + sigma * _normal_like(g, generator) if n in before else g for n, g in gradients.items()}


def parse_defense(text: str, where: str = DEFENSE_SETTING) -> DefenseSpec:
    """``"noise:sigma=0.01"`` -> DefenseSpec; a one-parameter defense also takes ``"noise:0.01"``.
    ``where`` names the source in errors: the setting (the CLI shows its flag), or a config file and its key."""
    at = f"{where} {text if text.isprintable() else repr(text)}"  # a newline would break the one-line error
    name, _, rest = text.strip().partition(":")
    name = name.strip()
    if not name:
        raise ConfigError(f"{where} {text!r}: no defense name; give NAME:K=V, e.g. noise:sigma=0.01 "
                          f"(defenses: {', '.join(DEFENSES.names())})")
    if name not in DEFENSES:
        raise UnknownNameError(f"{at}: {DEFENSES.unknown_message(name)}")
    defense = DEFENSES.get(name)
    values: dict[str, float] = {}
    for item in filter(None, (s.strip() for s in rest.split(","))):
        key, eq, raw = item.partition("=")
        if not eq:
            if len(defense.params) != 1:
                raise ConfigError(f"{at}: {item!r} needs a name; write e.g. {defense.example()}")
            key, raw = defense.params[0].name, item
        key = key.strip()
        try:
            values[key] = float(raw)
        except ValueError:
            raise ConfigError(f"{at}: {key}={raw.strip()!r} is not a number; "
                              f"write e.g. {defense.example()}") from None
    spec = DefenseSpec(name, values)
    check_defense(spec, source=at[len(where) + 1:], where=where)
    return spec


def check_defense(spec: DefenseSpec, source: str | None = None, where: str = DEFENSE_SETTING) -> None:
    """Raise a one-line ConfigError when ``spec`` names an unknown defense or a missing/unknown/bad parameter."""
    where = f"{where} {source if source is not None else spec}"
    if spec.name not in DEFENSES:
        raise UnknownNameError(f"{where}: {DEFENSES.unknown_message(spec.name)}")
    defense = DEFENSES.get(spec.name)
    known = {p.name: p for p in defense.params}
    for key in spec.params:
        if key not in known:
            close = difflib.get_close_matches(key, list(known), n=1)
            hint = f"did you mean {close[0]}? " if close else ""
            raise ConfigError(f"{where}: unknown parameter {key!r} for {spec.name}; {hint}"
                              f"write e.g. {defense.example()}")
    for p in defense.params:
        if p.name not in spec.params:
            raise ConfigError(f"{where}: missing parameter {p.name} ({p.help}); write e.g. {defense.example()}")
        v = float(spec.params[p.name])
        if not p.contains(v):
            raise ConfigError(f"{where}: {p.name}={v:g} is out of range; {p.name} must be in {p.interval()}, "
                              f"e.g. {defense.example()}")


def apply_defenses(update: ClientUpdate, specs: Iterable[DefenseSpec], findings: Findings | None = None,
                   seed: int | None = None) -> ClientUpdate:
    """Apply ``specs`` in order; the result's ``threat.defenses`` lists what was applied on top of the
    defenses already recorded there."""
    specs = tuple(specs)
    for spec in specs:
        check_defense(spec)
    generator = torch.Generator()
    if seed is None:
        generator.seed()  # fresh entropy without touching the global RNG
    else:
        generator.manual_seed(seed)
    gradients = dict(update.gradients)
    for spec in specs:
        values = {k: float(v) for k, v in spec.params.items()}
        gradients = DEFENSES.get(spec.name).apply(gradients, values, findings, generator, spec)
    threat = dataclasses.replace(update.threat, defenses=update.threat.defenses + specs)
    return dataclasses.replace(update, gradients=gradients, threat=threat)


def _example_value(p: Param) -> str:
    return {"sigma": "0.01", "norm": "1.0", "keep": "0.1", "fraction": "0.5"}.get(p.name, f"{p.low:g}")
