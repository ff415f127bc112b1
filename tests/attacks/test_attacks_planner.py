"""The planner picks the attacks that fit the detected layers, with budgets and overrides, and says why not."""

from __future__ import annotations

from pathlib import Path

import pytest

from leakaudit.attacks import ATTACKS, BUDGETS, plan, run_attack
from leakaudit.attacks.interface import AttackTarget
from leakaudit.detect import detect
from leakaudit.errors import ConfigError, UnknownNameError
from leakaudit.models.interface import LoadedModel
from leakaudit.models.zoo import create_model


def _loaded(**kw) -> LoadedModel:
    module = create_model("mlp", num_classes=10, input_shape=(3, 8, 8), hidden=(16, 16), **kw)
    return LoadedModel(module, (3, 8, 8), 10, Path("model.safetensors"), "0" * 64, "safetensors", arch="mlp")


def _by_name(planned):
    return {p.name: p for p in planned}


def test_every_registered_attack_is_planned_or_skipped_with_a_reason():
    model = _loaded()
    planned = plan(detect(model), model)
    # every attack on images; the text attacks (attacks/tokens.py) and tableak are planned for their modality only
    assert sorted(p.name for p in planned) == [n for n in ATTACKS.names() if "image" in ATTACKS.get(n).modalities]
    for p in planned:
        assert p.run or p.reason, p


def test_dia_runs_only_when_dropout_is_found():
    plain, dropped = _loaded(), _loaded(dropout=0.3)
    skip = _by_name(plan(detect(plain), plain))["dia"]
    assert not skip.run and "no dropout" in skip.reason
    assert _by_name(plan(detect(dropped), dropped))["dia"].run


def test_precode_aware_runs_only_with_a_bottleneck():
    plain, precode = _loaded(), _loaded(precode=True, latent_dim=8)
    assert not _by_name(plan(detect(plain), plain))["precode-aware"].run
    assert "PRECODE" in _by_name(plan(detect(plain), plain))["precode-aware"].reason
    assert _by_name(plan(detect(precode), precode))["precode-aware"].run


def test_the_ground_truth_reference_needs_to_be_asked_for():
    model = _loaded(dropout=0.3)
    auto = _by_name(plan(detect(model), model))["dia-informed"]
    assert not auto.run and "true masks" in auto.reason
    asked = plan(detect(model), model, attacks=["dia-informed"])
    assert [p.name for p in asked] == ["dia-informed"] and asked[0].run


def test_asked_attacks_keep_their_order_and_misfits_say_why():
    model = _loaded()
    planned = plan(detect(model), model, attacks=["ig", "dia"])
    assert [p.name for p in planned] == ["ig", "dia"]
    assert planned[0].run and not planned[1].run


def test_budgets_scale_and_thorough_follows_the_papers():
    model = _loaded(dropout=0.3)
    f = detect(model)
    quick, std, thorough = (_by_name(plan(f, model, budget=b)) for b in ("quick", "standard", "thorough"))
    for name in ("ig", "dia"):
        assert quick[name].settings.iterations < std[name].settings.iterations < thorough[name].settings.iterations
    assert thorough["ig"].settings.iterations == 24000
    dia = thorough["dia"].settings
    assert dia.iterations == 20000 and dia.extra["decay"] == "plateau" and dia.extra["patience"] == 800
    assert dia.extra["mask_reg"] == 1e-4 and dia.restarts > 1
    assert set(BUDGETS) == {"quick", "standard", "thorough"}


def test_overrides_for_all_and_per_attack():
    model = _loaded(dropout=0.3)
    planned = _by_name(plan(detect(model), model, overrides={"iterations": 7, "dia": {"mask_reg": 0.5, "lr": 0.2}}))
    assert planned["ig"].settings.iterations == 7 and planned["dia"].settings.iterations == 7
    assert planned["dia"].settings.extra["mask_reg"] == 0.5 and planned["dia"].settings.lr == 0.2
    assert planned["ig"].settings.lr == BUDGETS["standard"]["ig"].lr


@pytest.mark.parametrize("overrides, match", [
    ({"iterationz": 3}, "iterationz"),
    ({"iterations": 0}, "at least 1"),
    ({"lr": "fast"}, "expected float"),
    ({"decay": "cosine"}, "step, plateau or none"),
])
def test_bad_overrides_are_one_line_config_errors(overrides, match):
    model = _loaded()
    with pytest.raises(ConfigError, match=match):
        plan(detect(model), model, overrides=overrides)


def test_unknown_attack_name_lists_close_matches():
    model = _loaded()
    with pytest.raises(UnknownNameError, match="did you mean dia"):
        plan(detect(model), model, attacks=["dai"])
    with pytest.raises(UnknownNameError):
        plan(detect(model), model, overrides={"igg": {"lr": 1.0}})
    with pytest.raises(ConfigError, match="^budget: .huge. is not one of quick, standard, thorough"):
        plan(detect(model), model, budget="huge")


def test_run_attack_convenience_returns_a_reconstruction():
    import torch

    from leakaudit.update.losses import client_loss

    model = _loaded()
    module = model.module.train()
    x, y = torch.rand(1, 3, 8, 8), torch.tensor([4])
    grads = dict(zip([n for n, _ in module.named_parameters()],
                     torch.autograd.grad(client_loss(module, module(x), y), list(module.parameters())),
                     strict=True))
    target = AttackTarget(module, grads, (3, 8, 8), 10, labels=y, findings=detect(model))
    rec = run_attack("ig", target, budget="quick", overrides={"iterations": 3, "restarts": 2}, device="cpu", seed=0)
    assert rec.attack == "ig" and rec.x.shape == (1, 3, 8, 8) and rec.iterations_run == 3
    assert len(rec.restart_losses) == 2 and rec.device == "cpu"
    exact = run_attack("analytic", target, device="cpu")
    assert torch.allclose(exact.x, x, atol=1e-4)  # the analytic attack is registered and reachable


def test_dlg_runs_only_at_thorough_or_when_asked_for():
    """A default scan must stay fast: DLG (dominated by IG) is skipped with a reason below `thorough`."""
    model = _loaded()
    findings = detect(model)
    for budget in ("quick", "standard"):
        dlg = _by_name(plan(findings, model, budget=budget))["dlg"]
        assert not dlg.run and "--attacks dlg" in dlg.reason
    assert _by_name(plan(findings, model, budget="thorough"))["dlg"].run
    assert _by_name(plan(findings, model, budget="standard", attacks=["dlg"]))["dlg"].run


def test_tv_weight_fits_the_first_layer_at_quick_and_standard_and_an_override_wins():
    from torch import nn

    mlp = _loaded(dropout=0.3)
    conv_net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Flatten(), nn.Dropout(0.3), nn.Linear(144, 10))
    conv = LoadedModel(conv_net, (3, 8, 8), 10, Path("m.onnx"), "0" * 64, "onnx")
    for budget in ("quick", "standard"):
        dense_plan, conv_plan = (_by_name(plan(detect(m), m, budget=budget)) for m in (mlp, conv))
        for name in ("ig", "dia"):
            assert dense_plan[name].settings.tv == 1e-2 and conv_plan[name].settings.tv == 0.1
        assert conv_plan["ig"].settings.iterations == BUDGETS[budget]["ig"].iterations
    thorough = _by_name(plan(detect(conv), conv, budget="thorough"))
    assert thorough["ig"].settings.tv == BUDGETS["thorough"]["ig"].tv == 1e-4  # the papers' settings
    assert _by_name(plan(detect(conv), conv, overrides={"ig": {"tv": 0.5}}))["ig"].settings.tv == 0.5


def test_a_text_model_gets_the_text_attacks_in_order():
    from leakaudit.models.interface import LoadedModel
    from leakaudit.models.zoo import create_model

    net = create_model("lstm-lm", num_classes=30, input_shape=(6,))
    model = LoadedModel(net, (6,), 30, Path("lm.safetensors"), "0" * 64, "safetensors", arch="lstm-lm")
    findings = detect(model)
    assert findings.modality == "text"
    assert [p.name for p in plan(findings, model, modality="text")] == ["lamp", "token-set"]
