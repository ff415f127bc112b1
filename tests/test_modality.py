"""The modality foundation: rules, attacks and detection apply only to the samples they are about."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import torch

from leakaudit.attacks import ATTACKS, plan
from leakaudit.attacks.interface import Attack, AttackSettings
from leakaudit.data import SampleBatch, normalization
from leakaudit.detect import detect
from leakaudit.errors import ConfigError
from leakaudit.metrics import AttackScore, SampleScore
from leakaudit.models.interface import LoadedModel
from leakaudit.models.zoo import create_model
from leakaudit.registry import Registry
from leakaudit.verdict import Rule, RuleSet, evaluate
from leakaudit.verdict.outcome import decide
from leakaudit.verdict.rules import recognition_rules


def _ruleset() -> RuleSet:
    return RuleSet(name="t", source="t", description="", rules=(
        Rule("ssim-any", "ssim", 0.6, ">=", "fail", "any"),
        Rule("labels", "label_accuracy", 0.5, ">=", "warn", "mean")))


def _score(modality: str) -> AttackScore:
    samples = (SampleScore(index=0, original_index=0, name="r0", metrics={}),)
    return AttackScore(attack="a", samples=samples, means={"label_accuracy": 1.0}, label_accuracy=1.0,
                       modality=modality)


def test_an_image_rule_is_not_applicable_to_tabular_samples_and_counts_for_nothing() -> None:
    verdict = evaluate(_ruleset(), [_score("tabular")], strict=True)
    status = {r.rule.id: r.status for r in verdict.results}
    # on images the same missing SSIM is not evaluated, which --strict fails on
    assert status == {"ssim-any": "not_applicable", "labels": "warn"}
    assert verdict.overall == "pass"
    assert evaluate(_ruleset(), [_score("image")], strict=True).overall == "fail"
    reason = next(r.reason for r in verdict.results if r.rule.id == "ssim-any")
    assert reason == "not applicable: a rule of the image criterion (ssim), and these samples are tabular"
    outcome = decide([(r.rule.id, r.status, r.rule.severity) for r in verdict.results], strict=True)
    assert outcome.overall == "pass" and "not evaluated" not in outcome.summary


def test_with_no_scores_the_modality_given_decides_what_applies() -> None:
    verdict = evaluate(_ruleset(), [], modality="tabular")
    assert {r.rule.id: r.status for r in verdict.results}["ssim-any"] == "not_applicable"
    assert {r.rule.id: r.status for r in evaluate(_ruleset(), []).results}["ssim-any"] == "not_evaluated"


def test_what_recognised_means_is_per_modality() -> None:
    rules = _ruleset()
    assert [r.id for r in recognition_rules(rules)] == [r.id for r in recognition_rules(rules, "image")] == ["ssim-any"]
    # no tabular rule in this profile: the default profile's tabular ones, never an image rule
    from leakaudit.metrics import METRICS

    assert all(METRICS.get(r.metric).modality == "tabular" for r in recognition_rules(rules, "tabular"))


class _RecordAttack(Attack):
    name = "records-only"
    summary = "a stand-in for an attack on tabular records"
    modalities = ("tabular",)
    budgets = {b: AttackSettings(iterations=1) for b in ("quick", "standard", "thorough")}

    def run(self, *args: Any, **kwargs: Any) -> Any:
        raise NotImplementedError


def _loaded(shape: tuple[int, ...] = (3, 8, 8)) -> LoadedModel:
    module = create_model("mlp", num_classes=4, input_shape=shape, hidden=(8,))
    return LoadedModel(module, shape, 4, Path("m.safetensors"), "0" * 64, "safetensors", arch="mlp")


def test_the_planner_plans_only_the_attacks_of_the_batchs_modality() -> None:
    registry: Registry[Any] = Registry("attack")
    registry.register("ig")(ATTACKS.get("ig"))
    registry.register("records-only")(_RecordAttack)
    model = _loaded()
    assert [p.name for p in plan(detect(model), model, registry=registry)] == ["ig"]
    assert [p.name for p in plan(detect(model), model, registry=registry, modality="tabular")] == ["records-only"]
    with pytest.raises(ConfigError, match=r"^attacks ig: it does not reconstruct tabular samples; use "
                                          r"records-only"):
        plan(detect(model), model, attacks=["ig"], registry=registry, modality="tabular")


def test_detection_says_the_modality_and_why() -> None:
    image = detect(_loaded())
    assert (image.modality, image.modality_reason) == ("image", "input is (C, H, W) = (3, 8, 8)")
    flat = _loaded((6,))
    assert detect(flat).modality == "image"  # an array of values, as before: nothing says it is a record
    found = detect(flat, tabular=True)
    assert found.modality == "tabular" and "flat vector of 6 features" in found.modality_reason


def test_a_model_that_starts_with_an_embedding_reads_token_ids() -> None:
    from leakaudit.detect.modality import classify

    layers = (("emb", "Embedding", 320), ("head", "Linear", 44))
    assert classify(_loaded((12,)), layers)[0] == "text"
    assert "token ids" in classify(_loaded((12,)), layers)[1]


def test_a_modality_no_metric_scores_is_refused_with_the_reason() -> None:
    from leakaudit.audit import _check_modality
    from leakaudit.errors import InputError

    findings = replace(detect(_loaded()), modality="video", modality_reason="input is (T, C, H, W)")
    with pytest.raises(InputError, match=r"takes video samples \(input is \(T, C, H, W\)\).*cannot audit"):
        _check_modality(findings)
    _check_modality(detect(_loaded()))


def test_a_batch_keeps_its_modality_and_payload_when_cut_into_client_batches() -> None:
    class Rows:
        def __init__(self, rows: list[str]) -> None:
            self.rows = rows

        def select(self, index: list[int]) -> "Rows":
            return Rows([self.rows[i] for i in index])

    x = torch.arange(6.0).view(3, 2)
    batch = SampleBatch(x, torch.tensor([0, 1, 0]), x, ("a", "b", "c"), "t.csv", normalization("none", channels=1),
                        modality="tabular", records=Rows(["A", "B", "C"]))
    from leakaudit.coverage.split import select

    part = select(batch, [2, 0])
    assert part.modality == "tabular" and part.records.rows == ["C", "A"] and part.names == ("c", "a")
    assert torch.equal(part.x, x[[2, 0]])
    assert batch.subset(1).records.rows == ["A"]


def test_every_metric_declares_a_known_modality() -> None:
    from leakaudit.metrics import METRICS
    from leakaudit.modality import ANY, MODALITIES

    assert {m.modality for _, m in METRICS.items()} <= {*MODALITIES, ANY}
    assert METRICS.get("label_accuracy").modality == ANY and METRICS.get("ssim").modality == "image"
