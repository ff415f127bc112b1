"""Which modality a model takes (``leakaudit.modality``), and why: what ``inspect`` and the report state."""

from __future__ import annotations

from ..models.interface import LoadedModel
from ..models.text import token_embedding

# Layers whose input is integer token ids: a model that starts with one reads text, whatever its input shape.
_TOKEN_LAYERS = ("Embedding", "EmbeddingBag")


def classify(model: LoadedModel, layers: tuple[tuple[str, str, int], ...], *, tabular: bool = False) -> tuple[str, str]:
    """(modality, reason). ``layers`` are the findings' leaf modules in forward order; ``tabular``: the samples
    are records (a CSV or a schema was given), which a flat input vector cannot say by itself."""
    shape = tuple(model.input_shape)
    first = next((t for _, t, k in layers if k > 0), "")
    if first.split(" ")[0] in _TOKEN_LAYERS:
        return "text", f"input is int64 token ids into an embedding (first weighted layer {first})"
    emb = token_embedding(model.module)
    if len(shape) == 1 and emb is not None:  # an ONNX Gather on a trained weight: the embedding of a text model
        return "text", (f"input is int64 token ids into an embedding ({emb.vocab_size} x {emb.dim} weight "
                        f"'{emb.param}')")
    if len(shape) == 3:
        return "image", f"input is (C, H, W) = {shape}"
    if len(shape) == 1 and tabular:
        return "tabular", (f"input is a flat vector of {shape[0]} features and the samples are tabular records "
                           "(a CSV or --schema was given; inspect --records)")
    if len(shape) == 1:
        return "image", (f"input is a flat vector of {shape[0]} values and neither --schema nor a CSV was given: "
                         "its samples are read as arrays of values in [0, 1] and scored as images (give a CSV or "
                         "--schema to audit them as tabular records)")
    return "image", f"input shape {shape}"
