"""DIA drives dropout wherever it is: several layers, ViT attention, ONNX graphs, declared dropout; and
PRECODE-aware combines with DIA masks. Few iterations: these check the wiring, not reconstruction quality."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from leakaudit.attacks import ATTACKS, AttackSettings, AttackTarget, GroundTruth
from leakaudit.data.interface import Normalization, SampleBatch
from leakaudit.detect import detect
from leakaudit.models.interface import LoadedModel
from leakaudit.models.layers import MaskableDropout
from leakaudit.models.zoo import create_model
from leakaudit.progress import NullObserver
from leakaudit.update import client_update
from leakaudit.update.interface import ThreatModel

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "models"
NORM = Normalization("none", (0.0, 0.0, 0.0), (1.0, 1.0, 1.0))


def _target(loaded: LoadedModel, n: int = 1) -> tuple[AttackTarget, GroundTruth]:
    shape = tuple(loaded.input_shape)
    pixels = torch.rand((n, *shape), generator=torch.Generator().manual_seed(0))
    batch = SampleBatch(pixels, torch.arange(n) % loaded.num_classes, pixels, tuple(f"s{i}" for i in range(n)),
                        "random", NORM)
    findings = detect(loaded)
    update = client_update(loaded, batch, ThreatModel(), findings, seed=0)
    return (AttackTarget(loaded.module, update.gradients, shape, loaded.num_classes, labels=batch.y, num_samples=n,
                         findings=findings), GroundTruth(update.true_dropout_masks))


def _run(name: str, target: AttackTarget, iterations: int = 3):
    settings = AttackSettings(iterations, 2, 0.1, 1e-4, {"mask_reg": 1e-4})
    return ATTACKS.get(name).run(target, settings, device=torch.device("cpu"), seed=0, observer=NullObserver())


def _optimised_layers(rec) -> list[str]:
    note = next(n for n in rec.notes if n.startswith("masks optimised"))
    return note.split(": ", 1)[1].split(", ")


def test_dia_models_every_dropout_layer_of_a_vit_including_attention():
    module = create_model("vit", num_classes=4, input_shape=(3, 8, 8), dropout=0.25, patch=4, dim=16, depth=1,
                          heads=2, mlp_dim=16)
    loaded = LoadedModel(module, (3, 8, 8), 4, Path("vit.safetensors"), "", "safetensors", arch="vit")
    target, truth = _target(loaded, n=2)
    rec = _run("dia", target)
    drops = [n for n, m in module.named_modules() if isinstance(m, MaskableDropout)]
    assert sorted(_optimised_layers(rec)) == sorted(drops) and len(drops) == 5  # emb, attn, proj, mlp, out
    assert rec.x.shape == (2, 3, 8, 8) and torch.isfinite(rec.x).all()
    settings = AttackSettings(3, 2, 0.1, 1e-4)
    informed = ATTACKS.get("dia-informed").run(target, settings, device=torch.device("cpu"), seed=0,
                                               observer=NullObserver(), truth=truth)  # type: ignore[call-arg]
    assert torch.isfinite(informed.x).all() and not any("no usable true masks" in n for n in informed.notes)


def test_dia_on_an_onnx_graph_with_dropout_nodes():
    path = EXAMPLES / "mlp_dropout.onnx"
    if not path.exists():
        pytest.skip("bundled example models not built")
    from leakaudit.models.load import load_model

    loaded = load_model(path)
    target, _ = _target(loaded)
    assert len(target.findings.dropout) == 2
    rec = _run("dia", target)
    assert len(_optimised_layers(rec)) == 2
    assert torch.isfinite(torch.tensor(rec.attack_loss))


def test_dia_on_declared_dropout_of_an_eval_export():
    path = EXAMPLES / "mlp_dropout_eval.onnx"
    if not path.exists():
        pytest.skip("bundled example models not built")
    from leakaudit.models.load import load_model

    plain = load_model(path)
    linear = [n for n, m in plain.module.named_modules() if isinstance(m, torch.nn.Linear)][0]
    loaded = load_model(path, dropout={linear: 0.5})
    target, _ = _target(loaded)
    assert [d.source for d in target.findings.dropout] == ["declared"]
    rec = _run("dia", target)
    assert len(_optimised_layers(rec)) == 1


def test_precode_aware_matches_only_layers_before_the_bottleneck_and_adds_dia_masks():
    module = create_model("mlp", num_classes=10, input_shape=(3, 8, 8), hidden=(16, 16), dropout=0.25, precode=True,
                          latent_dim=8)
    loaded = LoadedModel(module, (3, 8, 8), 10, Path("p.safetensors"), "", "safetensors", arch="mlp")
    target, _ = _target(loaded)
    b = target.findings.bottlenecks[0]
    rec = _run("precode-aware", target)
    assert any(f"matches the {len(b.params_before)} gradient tensors before bottleneck" in n for n in rec.notes)
    assert any("with DIA masks for 2 dropout layer(s)" in n for n in rec.notes)
    assert not any(name.startswith(b.name + ".") for name in b.params_before)  # the encoder samples: left out
