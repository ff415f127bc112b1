"""examples/flower_predeploy.py: the pre-deployment audit of Flower's quickstart CNN, and the strategy sketch
(run against a stand-in for flwr, which leakaudit does not depend on)."""

from __future__ import annotations

import importlib.util
import sys
import types
from pathlib import Path

import pytest
import torch

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "flower_predeploy.py"
QUICK = {"budget": "quick", "iterations": 20, "restarts": 1}


def _load(name: str = "flower_predeploy_under_test"):
    spec = importlib.util.spec_from_file_location(name, EXAMPLE)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    finally:
        sys.modules.pop(name, None)
    return module


def test_the_quickstart_cnn_is_audited_on_a_bundled_photo(capsys):
    example = _load()
    images, labels = example.bundled_photo()
    assert images.shape == (1, 3, 32, 32) and 0 <= float(images.min()) and float(images.max()) <= 1
    torch.manual_seed(0)
    result = example.predeploy_audit(example.Net(), images, labels, **QUICK)
    # Flower's quickstart CNN: conv5(3->6), conv5(6->16), fc 400->120->84->10
    assert result.model.num_trainable == 456 + 2416 + 48120 + 10164 + 850 and result.model.num_classes == 10
    assert result.data.normalization.mean == (0.5, 0.5, 0.5) and result.data.normalization.std == (0.5, 0.5, 0.5)
    assert {a.name for a in result.attacks if a.ran} >= {"ig"}  # an optimisation attack ran on the conv model
    assert example.main(["--budget", "quick", "--iterations", "20", "--restarts", "1"]) == result.exit_code
    assert f"Net (in memory) sha256 {result.model.sha256[:12]}: {result.overall}" in capsys.readouterr().out


@pytest.fixture
def fake_flwr(monkeypatch):
    """Just what the sketch uses of flwr: FedAvg keeps initial_parameters; parameters are a list of arrays."""
    class FedAvg:
        def __init__(self, *, initial_parameters=None, **_kwargs):
            self.initial_parameters = initial_parameters

        def initialize_parameters(self, client_manager):
            return self.initial_parameters

    flwr = types.ModuleType("flwr")
    common = types.ModuleType("flwr.common")
    common.parameters_to_ndarrays = lambda parameters: list(parameters)
    server = types.ModuleType("flwr.server")
    strategy = types.ModuleType("flwr.server.strategy")
    strategy.FedAvg = FedAvg
    for name, module in (("flwr", flwr), ("flwr.common", common), ("flwr.server", server),
                         ("flwr.server.strategy", strategy)):
        monkeypatch.setitem(sys.modules, name, module)


def test_without_flwr_the_strategy_is_not_defined_and_the_script_still_works(monkeypatch):
    monkeypatch.setitem(sys.modules, "flwr", None)  # import flwr raises ImportError
    example = _load()
    assert example.flwr is None and not hasattr(example, "AuditedFedAvg") and callable(example.main)


def test_the_strategy_audits_the_initial_global_model_and_refuses_to_deploy_what_does_not_pass(fake_flwr):
    example = _load()
    torch.manual_seed(0)
    net = example.Net()
    arrays = [v.numpy().copy() for v in net.state_dict().values()]
    strategy = example.AuditedFedAvg(initial_parameters=arrays, audit_data=example.bundled_photo(),
                                     audit_settings=QUICK)
    with pytest.raises(RuntimeError, match=r"^leakaudit: not deploying this global model: (LEAK|INCONCLUSIVE)"):
        strategy.initialize_parameters(client_manager=None)
    result = strategy.audit_result
    assert result.exit_code in (1, 4)
    from leakaudit.models.inmemory import state_sha256

    assert result.model.sha256 == state_sha256(net)  # the global model it was given, weights and all
