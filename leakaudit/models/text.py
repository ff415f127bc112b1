"""What the text path needs to know about a model: where its token embedding is, and what it predicts.

A text model takes int64 token ids (N, T) into a token embedding: an ``nn.Embedding`` (safetensors, the zoo) or,
for ONNX, a ``Gather`` whose data is a trained weight (onnx2torch's ``OnnxGather`` on a promoted initializer).
The embedding's weight gradient is what names the batch's tokens (``attacks/tokens.py``); its output is where
the order attack substitutes continuous embeddings.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from torch import fx, nn

TextTask = Literal["next-token", "classify"]
IGNORE_INDEX = -100  # next-token targets of padding positions: the loss leaves them out


@dataclass(frozen=True)
class TokenEmbedding:
    param: str  # name of the embedding weight among the module's parameters
    module: str  # name of the module whose output is the embedded tokens (forward hooks go there)
    vocab_size: int
    dim: int


def token_embedding(module: nn.Module) -> TokenEmbedding | None:
    """The model's first token embedding, or None when it has none."""
    params = dict(module.named_parameters())
    for name, sub in module.named_modules():
        if isinstance(sub, nn.Embedding):
            weight = f"{name}.weight" if name else "weight"
            return TokenEmbedding(weight, name, int(sub.num_embeddings), int(sub.embedding_dim))
    if isinstance(module, fx.GraphModule):
        for node in module.graph.nodes:
            if node.op != "call_module" or type(module.get_submodule(str(node.target))).__name__ != "OnnxGather":
                continue
            data = node.args[0] if node.args else None
            if isinstance(data, fx.Node) and data.op == "get_attr" and str(data.target) in params:
                w = params[str(data.target)]
                if w.dim() == 2:
                    return TokenEmbedding(str(data.target), str(node.target), int(w.shape[0]), int(w.shape[1]))
    return None


def text_task(module: nn.Module, seq_len: int) -> TextTask:
    """``next-token`` when the model returns logits at every position (N, T, vocab), else ``classify``."""
    was = module.training
    module.eval()
    try:
        with torch.no_grad():
            device = next((p.device for p in module.parameters()), torch.device("cpu"))
            out = module(torch.zeros(1, seq_len, dtype=torch.int64, device=device))
    finally:
        module.train(was)
    return "next-token" if out.dim() == 3 else "classify"


def next_token_targets(ids: torch.Tensor, pad_id: int) -> torch.Tensor:
    """The targets a next-word model trains on: position t predicts token t+1; the last position and every
    position whose next token is padding get ``IGNORE_INDEX``."""
    targets = torch.full_like(ids, IGNORE_INDEX)
    targets[:, :-1] = ids[:, 1:]
    targets[targets == pad_id] = IGNORE_INDEX
    return targets
