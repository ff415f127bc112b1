"""Simulated defenses: each does what its parameter says, composes in order, and rejects bad input clearly."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from leakaudit.data.interface import Normalization, SampleBatch
from leakaudit.detect.interface import Bottleneck, Findings
from leakaudit.errors import ConfigError, UnknownNameError
from leakaudit.models.interface import LoadedModel
from leakaudit.models.zoo import create_model
from leakaudit.update import (DEFENSES, ClientUpdate, DefenseSpec, ThreatModel, apply_defenses, client_update,
                              parse_defense)


def _update(seed: int = 0) -> ClientUpdate:
    g = torch.Generator().manual_seed(seed)
    grads = {"a.weight": torch.randn(64, 50, generator=g) + 0.01, "a.bias": torch.randn(64, generator=g),
             "b.weight": torch.randn(10, 64, generator=g)}
    return ClientUpdate(gradients=grads, threat=ThreatModel(), num_samples=1)


def _norm(grads: dict[str, torch.Tensor]) -> float:
    return math.sqrt(sum(float((g.double() ** 2).sum()) for g in grads.values()))


def test_noise_has_the_requested_standard_deviation_and_zero_mean():
    clean = _update()
    noisy = apply_defenses(clean, [parse_defense("noise:sigma=0.05")], seed=1)
    diff = torch.cat([(noisy.gradients[n] - clean.gradients[n]).flatten() for n in clean.gradients])
    assert abs(float(diff.std()) - 0.05) < 0.05 * 0.05  # 3,904 samples: std error ~1.1%
    assert abs(float(diff.mean())) < 0.005
    assert noisy.threat.defenses == (DefenseSpec("noise", {"sigma": 0.05}),)


def test_clip_scales_the_global_norm_to_c_and_keeps_the_direction():
    clean = _update()
    c = 0.25 * _norm(clean.gradients)
    clipped = apply_defenses(clean, [parse_defense(f"clip:norm={c}")])
    assert _norm(clipped.gradients) == pytest.approx(c, rel=1e-5)
    ratio = clipped.gradients["a.weight"] / clean.gradients["a.weight"]
    torch.testing.assert_close(ratio, torch.full_like(ratio, 0.25), rtol=1e-4, atol=1e-6)
    loose = apply_defenses(clean, [parse_defense(f"clip:norm={4 * c}")])  # already inside the ball
    assert all(torch.equal(loose.gradients[n], clean.gradients[n]) for n in clean.gradients)


def test_prune_keeps_the_largest_magnitude_fraction_of_each_tensor():
    clean = _update()
    pruned = apply_defenses(clean, [parse_defense("prune:keep=0.1")])
    for name, g in pruned.gradients.items():
        kept = g != 0
        assert int(kept.sum()) == math.ceil(0.1 * g.numel()), name
        original = clean.gradients[name].abs()
        assert float(original[kept].min()) >= float(original[~kept].max())
        assert torch.equal(g[kept], clean.gradients[name][kept])


def test_mask_zeroes_the_fraction_at_random_and_repeats_with_the_seed():
    clean = _update()
    a = apply_defenses(clean, [parse_defense("mask:fraction=0.3")], seed=4)
    b = apply_defenses(clean, [parse_defense("mask:fraction=0.3")], seed=4)
    c = apply_defenses(clean, [parse_defense("mask:fraction=0.3")], seed=5)
    for name, g in a.gradients.items():
        zeroed = g == 0
        assert int(zeroed.sum()) == round(0.3 * g.numel()), name
        assert torch.equal(g[~zeroed], clean.gradients[name][~zeroed])
        assert torch.equal(g, b.gradients[name])
    assert not torch.equal(a.gradients["a.weight"], c.gradients["a.weight"])
    # random, not magnitude-based: masked entries are not systematically the small ones
    w = clean.gradients["a.weight"].abs()
    assert float(w[a.gradients["a.weight"] == 0].mean()) > 0.5 * float(w.mean())


def _precode_model() -> tuple[LoadedModel, Findings]:
    torch.manual_seed(0)
    module = create_model("mlp", num_classes=10, input_shape=(1, 6, 6), precode=True, latent_dim=8, hidden=(32,))
    model = LoadedModel(module, (1, 6, 6), 10, Path("m.safetensors"), "0" * 64, "safetensors", arch="mlp")
    names = list(model.trainable())
    before = tuple(n for n in names if n.startswith("1."))  # the Linear before the bottleneck (module 4)
    after = tuple(n for n in names if n not in before)
    findings = Findings(layers=(), bottlenecks=(Bottleneck("4", 8, 4, "module", after, before),))
    return model, findings


def _batch(n: int = 2) -> SampleBatch:
    x = torch.rand(n, 1, 6, 6, generator=torch.Generator().manual_seed(0))
    return SampleBatch(x, torch.arange(n), x, tuple("ab"[:n]), "samples/", Normalization("none", (0.0,), (1.0,)))


def test_ppp_perturbs_only_the_layers_before_the_bottleneck():
    model, findings = _precode_model()
    clean = client_update(model, _batch(), ThreatModel(), findings, seed=0)
    defended = client_update(model, _batch(), ThreatModel(defenses=(parse_defense("ppp:sigma=0.1"),)), findings,
                             seed=0)
    bottleneck = findings.bottlenecks[0]
    for name in bottleneck.params_after:
        assert torch.equal(defended.gradients[name], clean.gradients[name]), name
    diff = torch.cat([(defended.gradients[n] - clean.gradients[n]).flatten() for n in bottleneck.params_before])
    assert abs(float(diff.std()) - 0.1) < 0.01
    assert defended.threat.defenses == (DefenseSpec("ppp", {"sigma": 0.1}),)


@pytest.mark.parametrize("findings", [None, Findings(layers=())])
def test_ppp_without_a_bottleneck_is_a_config_error(findings):
    with pytest.raises(ConfigError, match=r"^defenses ppp:sigma=0\.1: the model has no PRECODE .*use noise:sigma"):
        apply_defenses(_update(), [parse_defense("ppp:sigma=0.1")], findings)


def test_defenses_compose_in_the_given_order():
    clean = _update()
    clip_then_noise = apply_defenses(clean, [parse_defense("clip:norm=1"), parse_defense("noise:sigma=0.5")], seed=0)
    noise_then_clip = apply_defenses(clean, [parse_defense("noise:sigma=0.5"), parse_defense("clip:norm=1")], seed=0)
    assert _norm(noise_then_clip.gradients) == pytest.approx(1.0, rel=1e-5)
    assert _norm(clip_then_noise.gradients) > 10  # the noise added after clipping dominates
    assert [s.name for s in clip_then_noise.threat.defenses] == ["clip", "noise"]


def test_client_update_applies_the_threat_models_defenses_reproducibly():
    model, _ = _precode_model()
    threat = ThreatModel(defenses=(parse_defense("mask:fraction=0.5"), parse_defense("noise:0.01")))
    state = torch.get_rng_state()
    a = client_update(model, _batch(), threat, seed=3)
    b = client_update(model, _batch(), threat, seed=3)
    assert torch.equal(torch.get_rng_state(), state)
    assert all(torch.equal(a.gradients[n], b.gradients[n]) for n in a.gradients)
    assert a.threat.defenses == threat.defenses


def test_every_registered_defense_parses_its_own_example_and_leaves_shapes_intact():
    _, findings = _precode_model()
    for name, defense in DEFENSES.items():
        spec = parse_defense(defense.example())
        assert spec.name == name
        model, findings = _precode_model()
        update = client_update(model, _batch(), ThreatModel(defenses=(spec,)), findings, seed=0)
        assert {n: g.shape for n, g in update.gradients.items()} == {n: q.shape for n, q in model.trainable().items()}


def test_bare_value_is_the_single_parameter():
    assert parse_defense("noise:0.02") == DefenseSpec("noise", {"sigma": 0.02})
    assert parse_defense(" prune : keep = 0.5 ") == DefenseSpec("prune", {"keep": 0.5})


@pytest.mark.parametrize("text, error, match", [
    ("nosie:sigma=1", UnknownNameError, r"^defenses nosie:sigma=1: unknown defense 'nosie': did you mean noise\?"),
    ("noise:sigm=1", ConfigError, r"^defenses noise:sigm=1: unknown parameter 'sigm' for noise; did you mean sigma"),
    ("noise", ConfigError, r"^defenses noise: missing parameter sigma .*write e\.g\. noise:sigma=0\.01$"),
    ("prune:keep=1.5", ConfigError, r"^defenses prune:keep=1\.5: keep=1\.5 is out of range; keep must be in \(0, 1\]"),
    ("prune:keep=0", ConfigError, r"keep must be in \(0, 1\]"),
    ("mask:fraction=1", ConfigError, r"fraction must be in \[0, 1\)"),
    ("noise:sigma=-0.1", ConfigError, r"sigma must be in \[0, inf\)"),
    ("clip:norm=0", ConfigError, r"norm must be in \(0, inf\)"),
    ("clip:norm=nan", ConfigError, r"out of range"),
    ("noise:sigma=abc", ConfigError, r"^defenses noise:sigma=abc: sigma='abc' is not a number"),
])
def test_bad_defense_strings_are_one_line_config_errors(text, error, match):
    with pytest.raises(error, match=match) as info:
        parse_defense(text)
    assert "\n" not in str(info.value)


def test_a_hand_built_spec_is_checked_before_use():
    with pytest.raises(ConfigError, match=r"^defenses clip:norm=-1: norm=-1 is out of range"):
        apply_defenses(_update(), [DefenseSpec("clip", {"norm": -1.0})])
