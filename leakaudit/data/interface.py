"""A batch of the user's samples, in model space and in pixel space."""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

import torch


@dataclass(frozen=True)
class Normalization:
    name: str  # "none", "mnist", "cifar10", "imagenet" or "custom"
    mean: tuple[float, ...]
    std: tuple[float, ...]

    def to_model(self, pixels: torch.Tensor) -> torch.Tensor:
        """[0,1] pixels (N, C, ...) -> model input."""
        return (pixels - self._t(self.mean, pixels)) / self._t(self.std, pixels)

    def to_pixels(self, x: torch.Tensor) -> torch.Tensor:
        """Model input -> [0,1] pixels, clamped (metrics live in pixel space)."""
        return (x * self._t(self.std, x) + self._t(self.mean, x)).clamp(0.0, 1.0)

    @staticmethod
    def _t(values: tuple[float, ...], like: torch.Tensor) -> torch.Tensor:
        t = torch.tensor(values, dtype=like.dtype, device=like.device)
        if like.dim() > 2:  # images: broadcast over channels
            return t.view(1, -1, *([1] * (like.dim() - 2)))
        return t  # flat features: one value, or one per feature


@dataclass(frozen=True)
class SampleBatch:
    """``x`` is what the model sees; ``pixels`` the [0,1] originals used only for scoring."""

    x: torch.Tensor  # (N, *input_shape), normalized
    y: torch.Tensor  # (N,) int64 class labels
    pixels: torch.Tensor  # (N, *input_shape) in [0, 1]
    names: tuple[str, ...]  # one per sample (file name or "file.npz[3]")
    source: str  # what the user passed to --data
    normalization: Normalization
    # (C, H, W) of each sample as read, before an image was converted to the model's channels and resized;
    # equal to the input shape when nothing was changed (always, for arrays). Empty when built by hand.
    original_shapes: tuple[tuple[int, ...], ...] = ()
    # leakaudit.modality: for "tabular" and "text", ``pixels`` holds the model-space values (so code that only
    # moves tensors keeps working) and nothing image-specific may be computed from it.
    modality: str = "image"
    # The modality's own payload (frozen, one entry per sample, with ``select(rows)``): tabular records
    # (their schema and the raw rows)
    records: Any = None
    # text samples (token ids, decoded strings, vocabulary: ``TextSamples``, data/text.py)
    text: "TextSamples | None" = None

    def select(self, rows: list[int]) -> "SampleBatch":
        """The samples ``rows``, in that order, with their payload."""
        index = torch.tensor(rows, dtype=torch.long)
        shapes = tuple(self.original_shapes[i] for i in rows) if self.original_shapes else ()
        return SampleBatch(self.x[index], self.y[index], self.pixels[index], tuple(self.names[i] for i in rows),
                           self.source, self.normalization, shapes, self.modality,
                           None if self.records is None else self.records.select(rows),
                           None if self.text is None else self.text.select(rows))

    def __len__(self) -> int:
        return int(self.x.shape[0])

    def subset(self, n: int) -> "SampleBatch":
        return self.select(list(range(min(n, len(self)))))


@dataclass(frozen=True)
class TextSamples:
    """A text batch's own payload (``data/text.py``): the token ids the model sees and what they stand for.

    Every line is encoded without special tokens, truncated to the model's sequence length T and padded on the
    right with ``pad_id``; ``lengths`` are the tokens kept before padding."""

    ids: torch.Tensor  # (N, T) int64 token ids, padded with pad_id
    lengths: tuple[int, ...]  # tokens of each line kept (<= T)
    texts: tuple[str, ...]  # each line as the model sees it: its kept tokens decoded
    vocab: tuple[str, ...]  # token string of every id (the tokenizer's vocabulary, id order)
    pad_id: int
    task: str  # "next-token" (language model) or "classify"
    tokenizer_json: str = ""  # the tokenizer, to decode recovered ids exactly as it would

    @property
    def vocab_size(self) -> int:
        return len(self.vocab)

    def subset(self, n: int) -> "TextSamples":
        return replace(self, ids=self.ids[:n], lengths=self.lengths[:n], texts=self.texts[:n])

    def select(self, index: list[int]) -> "TextSamples":
        return replace(self, ids=self.ids[index], lengths=tuple(self.lengths[i] for i in index),
                       texts=tuple(self.texts[i] for i in index))

