"""Text attacks: the token set from the embedding gradient, and lamp's order recovery, on the bundled example."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import torch

from leakaudit.attacks.interface import AttackTarget
from leakaudit.attacks.tokens import Lamp, TokenSet
from leakaudit.models.load import load_model
from leakaudit.models.text import text_task, token_embedding
from leakaudit.progress import NullObserver
from leakaudit.update.losses import client_loss

pytest.importorskip("tokenizers")
from leakaudit.data.text import load_text  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
MODEL = ROOT / "examples" / "models" / "text_lstm.onnx"
TEXT = ROOT / "examples" / "text"
CPU = torch.device("cpu")


def _target(lines: int, frozen: bool = False):
    model = load_model(MODEL)
    emb = token_embedding(model.module)
    task = text_task(model.module, model.input_shape[0])
    batch = load_text(TEXT / "lines.txt", tokenizer=TEXT / "tokenizer.json", seq_len=model.input_shape[0],
                      embedding_rows=emb.vocab_size, task=task, num_classes=model.num_classes, limit=lines)
    params = {n: p for n, p in model.trainable().items() if not (frozen and n == emb.param)}
    loss = client_loss(model.module, model.module(batch.x), batch.y, "next_token")
    grads = dict(zip(params, torch.autograd.grad(loss, list(params.values())), strict=True))
    target = AttackTarget(module=model.module, gradients=grads, input_shape=model.input_shape,
                          num_classes=model.num_classes, num_samples=lines, loss="next_token",
                          pad_id=batch.text.pad_id, text_task=task)
    return target, batch


def test_token_set_holds_every_input_token_and_nothing_else():
    target, batch = _target(4)
    rec = TokenSet().run(target, TokenSet.budgets["quick"], device=CPU, seed=0, observer=NullObserver())
    found = set(rec.x[0].tolist())
    # every token at a position with a target sends gradient to its embedding row: exact
    inputs = set(batch.x[batch.y != -100].tolist())
    assert inputs <= found and found <= set(batch.x.flatten().tolist()) - {batch.text.pad_id}
    assert rec.x.shape[0] == 4


def test_a_single_line_s_last_token_comes_from_the_output_bias():
    target, batch = _target(1)
    rec = TokenSet().run(target, TokenSet.budgets["quick"], device=CPU, seed=0, observer=NullObserver())
    assert set(rec.x[0].tolist()) == set(batch.x.flatten().tolist()) - {batch.text.pad_id}


def test_token_set_does_not_apply_to_a_frozen_embedding():
    target, _ = _target(1, frozen=True)
    rec = TokenSet().run(target, TokenSet.budgets["quick"], device=CPU, seed=0, observer=NullObserver())
    assert any("frozen embedding" in n for n in rec.notes)
    assert rec.x.numel() == 1  # nothing recovered: only a padding placeholder


def test_lamp_recovers_a_single_line_exactly():
    target, batch = _target(1)
    settings = dataclasses.replace(Lamp.budgets["quick"], iterations=50, restarts=1)
    rec = Lamp().run(target, settings, device=CPU, seed=0, observer=NullObserver())
    assert rec.x.shape == batch.x.shape
    assert rec.x.tolist() == batch.x.tolist()
