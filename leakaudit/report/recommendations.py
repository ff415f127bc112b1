"""Recommendations that follow from what a scan found, computed from the report document.

Each one says what to do and *because* of which observation, so a reviewer can check the reasoning.
A pass is never presented as proof of privacy: it holds for the attacks, budget and data tested.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

from ..result import FLAT_NOTE
from .budget import describe as describe_budget


_COMPARE = {">=": lambda v, t: v >= t, ">": lambda v, t: v > t, "<=": lambda v, t: v <= t, "<": lambda v, t: v < t}


def _value(v: Any) -> float | None:
    if isinstance(v, bool) or v is None:
        return None
    if isinstance(v, (int, float)):
        return float(v)
    return {"inf": float("inf"), "-inf": float("-inf")}.get(v)


def rules_broken_by(doc: dict[str, Any]) -> dict[str, list[str]]:
    """attack -> ids of the failing fail-severity rules it crosses on its own.

    A rule's result names only the worst attack; an attack that also crosses the threshold leaks too
    (e.g. DIA on a dropout model where the analytic attack is even better), and the advice depends on it.
    """
    broken: dict[str, list[str]] = {}
    rules = [r for r in doc["rules"]["results"] if r["status"] == "fail" and r["severity"] == "fail"]
    for a in doc["attacks"]:
        if a["status"] not in ("ran", "interrupted"):
            continue
        for r in rules:
            compare = _COMPARE.get(r["comparison"])
            threshold = _value(r["threshold"])
            if compare is None or threshold is None:
                continue
            if r["scope"] == "mean":
                values = [_value(a["means"].get(r["metric"]))]
            else:
                values = [_value(s["metrics"].get(r["metric"])) for s in a["samples"]]
            crossed = any(v is not None and compare(v, threshold) for v in values)
            if crossed or r.get("attack") == a["name"]:  # the verdict's own attribution always counts
                broken.setdefault(a["name"], []).append(r["id"])
    return broken


def _failed_attacks(doc: dict[str, Any]) -> set[str]:
    return set(rules_broken_by(doc))


def _rec(rid: str, title: str, text: str, because: str) -> dict[str, str]:
    return {"id": rid, "title": title, "text": text, "because": because}


def ill_conditioned(doc: dict[str, Any]) -> list[dict[str, Any]]:
    """The conditioning entries (the shown batch's, then every batch's) that say matching cannot work."""
    batches = (doc.get("coverage") or {}).get("batches", [])
    entries = [doc.get("conditioning")] + [b.get("conditioning") for b in batches]
    found: list[dict[str, Any]] = []
    for c in entries:
        if isinstance(c, dict) and c.get("verdict") == "ill-conditioned" and c not in found:
            found.append(c)
    return found


def batchnorm_statistics(doc: dict[str, Any]) -> list[dict[str, Any]]:
    """The BatchNorm-statistics findings that leak (the shown batch's, then every batch's)."""
    batches = (doc.get("coverage") or {}).get("batches", [])
    entries = [doc.get("batchnorm_statistics")] + [b.get("batchnorm_statistics") for b in batches]
    found: list[dict[str, Any]] = []
    for c in entries:
        if isinstance(c, dict) and c.get("leaks") and c not in found:
            found.append(c)
    return found


def _buffer_recommendations(doc: dict[str, Any]) -> list[dict[str, str]]:
    threat = doc["threat_model"]
    leaking = batchnorm_statistics(doc)
    if leaking:
        return [_rec(
            "batchnorm-buffers", "Do not send BatchNorm running statistics with the update",
            "Send only the trainable parameters (filter running_mean, running_var and num_batches_tracked out of "
            "the state_dict the client returns), or keep BatchNorm local to each client (FedBN, Li et al., ICLR "
            "2021). The recovery is closed-form: no attack budget, defense on the gradients or hardware limit "
            "bounds it. It reveals features, not images, so the verdict does not count it; it is still data of "
            "your clients' samples.",
            leaking[0].get("summary", ""))]
    train_bn = bool(doc["findings"].get("batchnorm")) and threat.get("batchnorm", "train") == "train"
    if train_bn and threat.get("protocol") == "fedavg" and not threat.get("buffers"):
        return [_rec(
            "declare-buffers", "Say whether your clients send BatchNorm running statistics",
            "FedAvg frameworks that return the client's whole state_dict (Flower's default NumPyClient examples "
            "do) send each BatchNorm layer's running_mean and running_var, from which a server recovers every "
            "layer's batch statistics in closed form. If yours does, re-scan with --update-buffers yes.",
            "the scan simulated FedAvg with train-mode BatchNorm and an update of trainable parameters only "
            "(--update-buffers no)")]
    return []


@dataclass(frozen=True)
class _Facts:
    """What the advice depends on, read once from the report document."""

    doc: dict[str, Any]
    leaked: frozenset[str]  # attacks that cross a failing fail-severity rule
    has_dropout: bool
    has_bottleneck: bool
    defenses: tuple[str, ...]  # the simulated defenses, as the report writes them
    passed: bool  # the overall verdict is a pass


def _facts(doc: dict[str, Any]) -> _Facts:
    findings = doc["findings"]
    return _Facts(doc=doc, leaked=frozenset(_failed_attacks(doc)), has_dropout=bool(findings["dropout"]),
                  has_bottleneck=bool(findings["bottlenecks"]), defenses=tuple(d["text"] for d in doc["defenses"]),
                  passed=doc["verdict"]["overall"] == "pass")


def _ill_conditioned_advice(f: _Facts) -> list[dict[str, str]]:
    ill = ill_conditioned(f.doc)
    if not ill or f.leaked:
        return []
    batches = (f.doc.get("coverage") or {}).get("batches", [])
    count = sum(1 for b in batches if (b.get("conditioning") or {}).get("verdict") == "ill-conditioned")
    where = f" in {count} of {len(batches)} batches" if len(batches) > 1 else ""
    return [_rec(
        "ill-conditioned", "No gradient-matching attack can work on this update: it is ill-conditioned",
        f"{ill[0].get('advice') or 'try a larger --batch-size'}. The scan then measures what a server can "
        "reconstruct from the update your clients really send; until then its verdict is no evidence either "
        "way, whatever the attacks' budget or hardware.",
        f"{ill[0].get('summary', '')}{where}")]


def _buffer_advice(f: _Facts) -> list[dict[str, str]]:
    return _buffer_recommendations(f.doc)


def _dropout_advice(f: _Facts) -> list[dict[str, str]]:
    if not f.has_dropout or not f.leaked:
        return []
    if f.leaked & {"dia", "dia-informed"}:
        return [_rec(
            "dropout-bypassed", "Dropout alone does not protect the update",
            "Add a gradient perturbation defense on the client (DP-SGD style clipping + Gaussian noise) or "
            "PRECODE with partial perturbation (PPP); re-run leakaudit with --defense noise:sigma=... to "
            "find a noise level that passes.",
            "the Dropout Inversion Attack (Scheliga et al., AAAI 2023) reconstructed samples although the "
            "model has dropout layers")]
    return [_rec(
        "dropout-insufficient", "Dropout did not stop reconstruction",
        "Treat dropout as no privacy defense; add gradient perturbation (clipping + noise) or PRECODE+PPP.",
        f"{', '.join(sorted(f.leaked))} reconstructed samples although the model has dropout layers")]


def _precode_advice(f: _Facts) -> list[dict[str, str]]:
    if not (f.has_bottleneck and "precode-aware" in f.leaked):
        return []
    return [_rec(
        "precode-bypassed", "The PRECODE bottleneck is bypassed",
        "Use PPP (PRECODE with Partial Perturbation): add noise to the gradients of the layers before the "
        "bottleneck only (--defense ppp:sigma=... to test a level), or full gradient perturbation.",
        "the PRECODE-aware attack, which matches only the gradients before the stochastic bottleneck, "
        "reconstructed samples")]


def _closed_form_advice(f: _Facts) -> list[dict[str, str]]:
    recs = []
    if "analytic" in f.leaked:
        recs.append(_rec(
            "analytic-first-layer", "A linear first layer with bias reveals its input exactly",
            "Aggregate updates over larger local batches with secure aggregation, remove the bias of the first "
            "Linear layer, or perturb its gradients; the inversion is closed-form, so no attack budget limits it.",
            "the analytic linear-layer inversion recovered samples from one weight/bias gradient ratio"))
    if "april" in f.leaked:
        recs.append(_rec(
            "april-positional-embedding", "A learnable positional embedding reveals the ViT's input exactly",
            "Use a fixed (e.g. sinusoidal) positional embedding or do not send its gradient, aggregate updates "
            "with secure aggregation, or perturb the gradients; the inversion is closed-form, so no attack "
            "budget limits it.",
            "APRIL (Lu et al., CVPR 2022) solved the patch embedding's gradient for the patches, using the "
            "positional embedding's gradient"))
    return recs


def _label_advice(f: _Facts) -> list[dict[str, str]]:
    label = f.doc.get("label_recovery")
    if not label or label["known"]:
        return []
    accuracy = label.get("accuracy")
    if not (isinstance(accuracy, (int, float)) and accuracy >= 0.999):  # also no advice on a NaN accuracy
        return []
    return [_rec(
        "labels-recovered", "Labels are recovered from the last layer's gradient",
        "Labels leak whenever the server sees per-client gradients of a softmax classifier (iDLG); use secure "
        "aggregation or larger, mixed-class local batches if labels are sensitive.",
        f"label recovery ({label['strategy']}) was 100% accurate on the scanned batch")]


def _batch_size_advice(f: _Facts) -> list[dict[str, str]]:
    if not f.leaked or f.doc["threat_model"]["batch_size"] != 1:
        return []
    return [_rec(
        "batch-size", "Single-sample updates are the worst case",
        "If clients train on more samples per round, scan with that --batch-size: inversion gets harder but "
        "is not prevented by batch size alone.",
        "the scan simulated updates computed on one sample")]


def _defense_advice(f: _Facts) -> list[dict[str, str]]:
    if not f.defenses:
        return []
    if f.leaked:
        return [_rec(
            "defense-too-weak", "The simulated defenses are too weak",
            "Increase their strength (e.g. larger noise sigma, smaller clipping norm) and re-scan.",
            f"reconstruction succeeded despite {', '.join(f.defenses)}")]
    if f.passed:
        return [_rec(
            "deploy-defense", "Deploy the defenses you simulated",
            "The pass holds only if real clients apply the same defenses with the same parameters; measure the "
            "accuracy cost on your task before rollout.",
            f"the scan passed with {', '.join(f.defenses)} applied to the update")]
    return []


def _not_evaluated_advice(f: _Facts) -> list[dict[str, str]]:
    return [_rec(
        f"not-evaluated-{r['id']}", f"Rule {r['id']} was not evaluated",
        "Provide what it needs and re-scan, or accept the gap explicitly"
        + ("; --strict makes this a failure." if r.get("severity", "fail") == "fail" else
           "; it is a warning, so it does not fail the scan, even under --strict."),
        r.get("reason") or "its metric had no value")
        for r in f.doc["rules"]["results"] if r["status"] == "not_evaluated"]


def _flat_advice(f: _Facts) -> list[dict[str, str]]:
    flat = [n for n in f.doc.get("notes", []) if isinstance(n, str) and n.startswith(FLAT_NOTE)]
    if not flat:
        return []
    return [_rec(
        "flat-samples", "Audit samples with structure, not one-colour ones",
        "A flat sample (all black, all grey) has nothing recognisable to reconstruct, so it neither shows a "
        "leak nor shows its absence: SSIM rules leave it out and only pixel metrics judge it. Replace it with "
        "samples like the data your clients train on and re-scan.",
        flat[0].removeprefix(FLAT_NOTE + ": "))]


def _declare_dropout_advice(f: _Facts) -> list[dict[str, str]]:
    onnx = f.doc["model"].get("onnx")
    stated_none = bool((f.doc.get("settings") or {}).get("no_dropout"))
    if not (onnx and onnx.get("looks_eval_exported")) or f.has_dropout or stated_none:
        return []
    return [_rec(
        "declare-dropout", "Say whether the model trains with dropout",
        "An eval-mode export drops Dropout nodes, and a training-mode export of a model without dropout has "
        "none either, so the file cannot tell. If the model trains with dropout, re-export with "
        "training=torch.onnx.TrainingMode.TRAINING or pass --dropout LAYER=P so DIA is planned; if it has "
        "none, pass --no-dropout to record that.",
        "the ONNX file has no Dropout, random or training-mode BatchNorm nodes, and no dropout was declared")]


def _pass_scope_advice(f: _Facts) -> list[dict[str, str]]:
    if not f.passed or f.leaked:
        return []
    budget = describe_budget(f.doc)["text"]
    return [_rec(
        "pass-scope", "A pass is evidence within the tested scope, not proof",
        "Before a release, re-run with --budget thorough (the papers' iteration counts) and with the batch "
        "size and data your clients really use.",
        f"no fail-severity rule failed for the attacks run with the {budget}")]


def _crashed_advice(f: _Facts) -> list[dict[str, str]]:
    crashed = [a for a in f.doc["attacks"] if a["status"] == "failed"]
    if not crashed:
        return []
    return [_rec(
        "attack-crashed", "An attack crashed: its evidence is missing",
        "Rerun with --debug for the traceback and report it. An activation without a double backward "
        "(e.g. a custom autograd function marked once_differentiable) stops every gradient-matching attack: "
        "a limit of the attacks, not evidence of privacy. Until every planned attack runs, no pass is claimed.",
        "; ".join(f"{a['name']}: {a.get('reason', '')}" for a in crashed))]


def _incomplete_advice(f: _Facts) -> list[dict[str, str]]:
    if not f.doc.get("incomplete"):
        return []
    return [_rec(
        "incomplete", "The scan did not finish",
        "Re-run the reproduction command to completion before relying on the verdict.",
        f.doc.get("incomplete_reason") or "the scan was interrupted")]


# The report lists the recommendations in this order, so a reader who saw one report finds them where they were.
_ADVICE: tuple[Callable[[_Facts], list[dict[str, str]]], ...] = (
    _ill_conditioned_advice, _buffer_advice, _dropout_advice, _precode_advice, _closed_form_advice,
    _label_advice, _batch_size_advice, _defense_advice, _not_evaluated_advice, _flat_advice,
    _declare_dropout_advice, _pass_scope_advice, _crashed_advice, _incomplete_advice,
)


def recommend(doc: dict[str, Any]) -> list[dict[str, str]]:
    """Every recommendation that follows from ``doc``, each with the observation it rests on."""
    facts = _facts(doc)
    return [rec for advise in _ADVICE for rec in advise(facts)]
