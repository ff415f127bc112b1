"""Text models: the zoo's LSTM language model and transformer classifier, from safetensors and through ONNX."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from leakaudit.errors import LeakauditError
from leakaudit.models.load import load_model
from leakaudit.models.safetensors_loader import save_safetensors
from leakaudit.models.zoo import create_model

VOCAB, T = 50, 8


def _export(module: torch.nn.Module, path) -> None:
    torch.onnx.export(module, (torch.randint(0, VOCAB, (2, T)),), str(path), dynamo=False,
                      training=torch.onnx.TrainingMode.TRAINING, do_constant_folding=False, input_names=["ids"],
                      output_names=["logits"], dynamic_axes={"ids": {0: "n"}, "logits": {0: "n"}})


def _grads(module: torch.nn.Module, ids: torch.Tensor, targets: torch.Tensor) -> list[torch.Tensor]:
    out = module(ids)
    loss = F.cross_entropy(out.transpose(1, 2), targets) if out.dim() == 3 else F.cross_entropy(out, targets)
    return list(torch.autograd.grad(loss, [p for p in module.parameters() if p.requires_grad]))


@pytest.mark.filterwarnings("ignore")
def test_onnx_lstm_lm_trains_the_same_weights_as_torch(tmp_path):
    torch.manual_seed(0)
    ref = create_model("lstm-lm", num_classes=VOCAB, input_shape=(T,))
    _export(ref, tmp_path / "lm.onnx")
    loaded = load_model(tmp_path / "lm.onnx")
    assert loaded.input_shape == (T,) and loaded.num_classes == VOCAB
    # one parameter per torch weight: the exporter's gate-reordering slices must not split the LSTM's weights
    assert sorted(tuple(p.shape) for p in loaded.trainable().values()) == sorted(
        tuple(p.shape) for p in ref.parameters())
    ids, targets = torch.randint(0, VOCAB, (3, T)), torch.randint(0, VOCAB, (3, T))
    assert torch.allclose(loaded.module(ids), ref(ids), atol=1e-5)
    got = sorted((g for g in _grads(loaded.module, ids, targets)), key=lambda g: (tuple(g.shape), float(g.sum())))
    want = sorted((g for g in _grads(ref, ids, targets)), key=lambda g: (tuple(g.shape), float(g.sum())))
    for a, b in zip(got, want, strict=True):
        assert torch.allclose(a, b, atol=1e-6)
    emb = [g for g in got if tuple(g.shape) == (VOCAB, 32)][0]
    assert set(emb.abs().sum(1).nonzero().flatten().tolist()) == set(ids.flatten().tolist())


@pytest.mark.filterwarnings("ignore")
def test_onnx_lstm_has_a_double_backward(tmp_path):
    _export(create_model("lstm-lm", num_classes=VOCAB, input_shape=(T,)), tmp_path / "lm.onnx")
    module = load_model(tmp_path / "lm.onnx").module
    ids = torch.randint(0, VOCAB, (2, T))
    grads = torch.autograd.grad(F.cross_entropy(module(ids).transpose(1, 2), ids), list(module.parameters()),
                                create_graph=True)
    second = torch.autograd.grad(sum(g.square().sum() for g in grads), list(module.parameters()),
                                 allow_unused=True)
    assert any(g is not None and g.abs().sum() > 0 for g in second)


@pytest.mark.filterwarnings("ignore")
def test_bidirectional_onnx_lstm_is_refused_by_name(tmp_path):
    class Bi(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.embedding = torch.nn.Embedding(VOCAB, 8)
            self.lstm = torch.nn.LSTM(8, 8, batch_first=True, bidirectional=True)
            self.head = torch.nn.Linear(16, 2)

        def forward(self, ids):
            return self.head(self.lstm(self.embedding(ids))[0].mean(1))

    _export(Bi(), tmp_path / "bi.onnx")
    with pytest.raises(LeakauditError, match="LSTM"):
        load_model(tmp_path / "bi.onnx")


@pytest.mark.filterwarnings("ignore")
def test_text_transformer_loads_from_onnx_and_safetensors(tmp_path):
    torch.manual_seed(1)
    ref = create_model("text-transformer", num_classes=3, input_shape=(T,), vocab_size=VOCAB)
    _export(ref, tmp_path / "tt.onnx")
    save_safetensors(ref, tmp_path / "tt.safetensors", arch="text-transformer", input_shape=(T,), num_classes=3,
                     arch_kwargs={"vocab_size": VOCAB})
    ids = torch.randint(0, VOCAB, (2, T))
    for path in ("tt.onnx", "tt.safetensors"):
        loaded = load_model(tmp_path / path)
        assert loaded.num_classes == 3 and loaded.input_shape == (T,)
        assert torch.allclose(loaded.module.eval()(ids), ref.eval()(ids), atol=1e-5)
        assert any(tuple(p.shape) == (VOCAB, 32) for p in loaded.trainable().values())  # the embedding trains


def test_lstm_lm_safetensors_reads_the_vocabulary_from_the_weights(tmp_path):
    save_safetensors(create_model("lstm-lm", num_classes=VOCAB, input_shape=(T,)), tmp_path / "lm.safetensors",
                     arch="lstm-lm", input_shape=(T,))
    loaded = load_model(tmp_path / "lm.safetensors")
    assert loaded.num_classes == VOCAB
