"""What a model loader returns to the rest of the pipeline."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn


@dataclass(frozen=True)
class OnnxGraphInfo:
    """Facts read from the ONNX graph itself, before conversion (used by detection)."""

    opset: int
    producer: str
    op_types: tuple[str, ...]  # every node's op_type, in graph order
    dropout_nodes: tuple[tuple[str, float], ...]  # (node name, ratio) of Dropout nodes kept in the file
    random_nodes: tuple[tuple[str, str], ...]  # (node name, op_type) of the random ops (RANDOM_OPS)
    looks_eval_exported: bool  # no Dropout/random nodes and no training-mode traces
    # Batch size fixed in the graph's input (None when symbolic): an export without dynamic axes may only
    # run at this batch size, since exporters bake it into Reshape targets.
    batch_size: int | None = None
    # (name in the file, name of its converted module) for the nodes whose name was unsafe for torch.fx's
    # generated code (see ``onnx_names``): the file's names are for display and for --dropout only.
    renamed: tuple[tuple[str, str], ...] = ()
    # BatchNorm layers the exporter folded into convolutions (torch's dynamo exporter does, even in training
    # mode): "recorded" when the file's node metadata names the fold, "suspected" when only the node names
    # of a metadata-stripped file point to it, "" when neither.
    folded_batchnorm: str = ""
    folded_batchnorm_count: int = 0
    # Rates of attention dropout the exporter left out: node metadata records scaled_dot_product_attention
    # called with dropout_p > 0, and none of its nodes draws random numbers (torch 2.14's dynamo exporter).
    dropped_attention_dropout: tuple[float, ...] = ()

    def module_name(self, node_name: str) -> str | None:
        """The converted module's name for a renamed node of the file, None for a node kept as it is."""
        return dict(self.renamed).get(node_name)


@dataclass
class LoadedModel:
    """A user's model ready for the pipeline.

    ``module`` is a plain ``nn.Module`` whose every trainable weight is an ``nn.Parameter`` (what a client
    sends gradients for: ``trainable()``). Dropout layers are ``MaskableDropout`` and PRECODE bottlenecks of
    built-in architectures are ``VariationalBottleneck`` (see ``layers.py``).
    """

    module: nn.Module
    input_shape: tuple[int, ...]  # one sample, no batch dimension: (C, H, W) or (features,)
    num_classes: int
    path: Path
    sha256: str
    format: str  # "onnx" or "safetensors"
    arch: str | None = None  # architecture name or "file.py:factory" for safetensors
    onnx: OnnxGraphInfo | None = None
    declared_dropout: dict[str, float] = field(default_factory=dict)  # --dropout NAME=P the export removed

    def trainable(self) -> dict[str, nn.Parameter]:
        return {n: p for n, p in self.module.named_parameters() if p.requires_grad}

    def num_trainable(self) -> int:
        return sum(p.numel() for p in self.trainable().values())

    def to(self, device: torch.device | str) -> "LoadedModel":
        self.module.to(device)
        return self
