"""Built-in architectures of the seed papers, for ``--arch NAME`` with safetensors weights.

Each factory takes the same keywords -- ``num_classes``, ``input_shape`` (C, H, W), ``dropout`` (rate of
every dropout layer, 0 = none), ``precode`` (insert a PRECODE bottleneck before the classifier) and
``latent_dim`` -- so the planner, the examples and ``sweep --vary dropout.p`` can build any of them alike.
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import nn

from ..registry import Registry
from .layers import MaskableDropout, VariationalBottleneck

Factory = Callable[..., nn.Module]
ARCHITECTURES: Registry[Factory] = Registry("architecture")


# The zoo's text models (token ids in, below): image-only callers and tests iterate ``image_architectures()``.
TEXT_ARCHITECTURES = ("lstm-lm", "text-transformer")


def image_architectures() -> list[str]:
    return [n for n in ARCHITECTURES.names() if n not in TEXT_ARCHITECTURES]


def create_model(name: str, **kwargs) -> nn.Module:
    return ARCHITECTURES.get(name)(**kwargs)


def _drop(p: float) -> nn.Module:
    return MaskableDropout(p) if p > 0 else nn.Identity()


def _head(features: int, num_classes: int, precode: bool, latent_dim: int) -> list[nn.Module]:
    """Classifier head, with the PRECODE bottleneck in front of it when asked (as in the PRECODE paper)."""
    layers: list[nn.Module] = []
    if precode:
        layers.append(VariationalBottleneck(features, latent_dim))
    layers.append(nn.Linear(features, num_classes))
    return layers


def _flat_size(trunk: nn.Module, input_shape: tuple[int, ...]) -> int:
    with torch.no_grad():
        was_training = trunk.training
        trunk.eval()
        size = trunk(torch.zeros(1, *input_shape)).flatten(1).shape[1]
        trunk.train(was_training)
    return int(size)


@ARCHITECTURES.register("mlp")
def mlp(num_classes: int = 10, input_shape: tuple[int, ...] = (3, 32, 32), dropout: float = 0.0,
        precode: bool = False, latent_dim: int = 256, hidden: tuple[int, ...] = (256, 256)) -> nn.Module:
    """The DIA paper's fully connected network: Linear+ReLU blocks, dropout after each hidden layer."""
    d = 1
    for s in input_shape:
        d *= s
    layers: list[nn.Module] = [nn.Flatten()]
    for width in hidden:
        layers += [nn.Linear(d, width), nn.ReLU(), _drop(dropout)]
        d = width
    return nn.Sequential(*layers, *_head(d, num_classes, precode, latent_dim))


@ARCHITECTURES.register("lenet")
def lenet(num_classes: int = 10, input_shape: tuple[int, ...] = (3, 32, 32), dropout: float = 0.0,
          precode: bool = False, latent_dim: int = 256) -> nn.Module:
    """LeNet as in DLG/iDLG (sigmoid, strided 5x5 convs); one dropout between encoder and classifier
    (the seed-002 setting)."""
    c = input_shape[0]
    trunk = nn.Sequential(
        nn.Conv2d(c, 12, 5, padding=2, stride=2), nn.Sigmoid(),
        nn.Conv2d(12, 12, 5, padding=2, stride=2), nn.Sigmoid(),
        nn.Conv2d(12, 12, 5, padding=2, stride=1), nn.Sigmoid(),
        nn.Flatten(),
    )
    d = _flat_size(trunk, input_shape)
    return nn.Sequential(*trunk, _drop(dropout), *_head(d, num_classes, precode, latent_dim))


@ARCHITECTURES.register("cnn")
def cnn(num_classes: int = 10, input_shape: tuple[int, ...] = (3, 32, 32), dropout: float = 0.0,
        precode: bool = False, latent_dim: int = 256, width: int = 32) -> nn.Module:
    """A small ConvNet (two conv blocks, one hidden dense layer), dropout before each dense layer."""
    c = input_shape[0]
    trunk = nn.Sequential(
        nn.Conv2d(c, width, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(width, 2 * width, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(),
    )
    d = _flat_size(trunk, input_shape)
    return nn.Sequential(*trunk, _drop(dropout), nn.Linear(d, 128), nn.ReLU(), _drop(dropout),
                         *_head(128, num_classes, precode, latent_dim))


class _FlowerNet(nn.Module):
    """Flower's quickstart PyTorch ``Net`` with its attribute names, so a ``state_dict`` saved from it loads as it
    is; built in the quickstart's order, so a seed gives its initial weights too."""

    def __init__(self, num_classes: int, input_shape: tuple[int, ...], dropout: float, precode: bool,
                 latent_dim: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(input_shape[0], 6, 5)
        self.pool = nn.MaxPool2d(2, 2)
        self.conv2 = nn.Conv2d(6, 16, 5)
        self.fc1 = nn.Linear(_flat_size(nn.Sequential(self.conv1, self.pool, self.conv2, self.pool), input_shape), 120)
        self.fc2 = nn.Linear(120, 84)
        head = _head(84, num_classes, precode, latent_dim)
        self.fc3 = head[0] if len(head) == 1 else nn.Sequential(*head)
        self.drop1, self.drop2 = _drop(dropout), _drop(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool(torch.relu(self.conv1(x)))
        x = self.pool(torch.relu(self.conv2(x))).flatten(1)
        x = self.drop1(torch.relu(self.fc1(x)))
        return self.fc3(self.drop2(torch.relu(self.fc2(x))))


@ARCHITECTURES.register("flower")
def flower(num_classes: int = 10, input_shape: tuple[int, ...] = (3, 32, 32), dropout: float = 0.0,
           precode: bool = False, latent_dim: int = 256) -> nn.Module:
    """Flower's quickstart CNN (conv5(6)-pool-conv5(16)-pool-fc120-fc84, unpadded), what many FL deployments
    start from; dropout after each hidden dense layer."""
    return _FlowerNet(num_classes, input_shape, dropout, precode, latent_dim)


class _BasicBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.relu(self.bn1(self.conv1(x)))
        return torch.relu(self.bn2(self.conv2(out)) + self.shortcut(x))


class _ResNet(nn.Module):
    def __init__(self, blocks: tuple[int, ...], widths: tuple[int, ...], num_classes: int,
                 input_shape: tuple[int, ...], dropout: float, precode: bool, latent_dim: int) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(input_shape[0], widths[0], 3, 1, 1, bias=False),
                                  nn.BatchNorm2d(widths[0]), nn.ReLU())
        stages, cin = [], widths[0]
        for i, (n, w) in enumerate(zip(blocks, widths, strict=True)):
            for j in range(n):
                stages.append(_BasicBlock(cin, w, 2 if (j == 0 and i > 0) else 1))
                cin = w
        self.stages = nn.Sequential(*stages)
        self.pool = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.dropout = _drop(dropout)
        self.head = nn.Sequential(*_head(cin, num_classes, precode, latent_dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.dropout(self.pool(self.stages(self.stem(x)))))


@ARCHITECTURES.register("resnet20")
def resnet20(num_classes: int = 10, input_shape: tuple[int, ...] = (3, 32, 32), dropout: float = 0.0,
             precode: bool = False, latent_dim: int = 256) -> nn.Module:
    """CIFAR ResNet-20 (He et al.): 3 stages x 3 basic blocks, widths 16/32/64; dropout before the classifier."""
    return _ResNet((3, 3, 3), (16, 32, 64), num_classes, input_shape, dropout, precode, latent_dim)


@ARCHITECTURES.register("resnet18")
def resnet18(num_classes: int = 10, input_shape: tuple[int, ...] = (3, 32, 32), dropout: float = 0.0,
             precode: bool = False, latent_dim: int = 256) -> nn.Module:
    """ResNet-18 with a CIFAR stem (3x3, no max-pool): 4 stages x 2 basic blocks, widths 64..512."""
    return _ResNet((2, 2, 2, 2), (64, 128, 256, 512), num_classes, input_shape, dropout, precode, latent_dim)


class _TransformerBlock(nn.Module):
    def __init__(self, dim: int, heads: int, mlp_dim: int, dropout: float) -> None:
        super().__init__()
        self.heads = heads
        self.norm1 = nn.LayerNorm(dim)
        self.qkv = nn.Linear(dim, 3 * dim)
        self.attn_drop = _drop(dropout)
        self.proj = nn.Linear(dim, dim)
        self.drop1 = _drop(dropout)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(nn.Linear(dim, mlp_dim), nn.GELU(), _drop(dropout), nn.Linear(mlp_dim, dim))
        self.drop2 = _drop(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, d = x.shape
        q, k, v = self.qkv(self.norm1(x)).reshape(b, n, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        attn = self.attn_drop(torch.softmax(q @ k.transpose(-2, -1) * (d // self.heads) ** -0.5, dim=-1))
        x = x + self.drop1(self.proj((attn @ v).transpose(1, 2).reshape(b, n, d)))
        return x + self.drop2(self.mlp(self.norm2(x)))


class _ViT(nn.Module):
    def __init__(self, num_classes: int, input_shape: tuple[int, ...], dropout: float, precode: bool,
                 latent_dim: int, patch: int, dim: int, depth: int, heads: int, mlp_dim: int) -> None:
        super().__init__()
        c, h, w = input_shape
        if h % patch or w % patch:
            raise ValueError(f"input size {h}x{w} is not divisible by the patch size {patch}")
        self.patch_embed = nn.Conv2d(c, dim, patch, patch)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.pos_embed = nn.Parameter(torch.randn(1, (h // patch) * (w // patch) + 1, dim) * 0.02)
        self.emb_drop = _drop(dropout)
        self.blocks = nn.Sequential(*[_TransformerBlock(dim, heads, mlp_dim, dropout) for _ in range(depth)])
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Sequential(*_head(dim, num_classes, precode, latent_dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        tokens = self.patch_embed(x).flatten(2).transpose(1, 2)
        tokens = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), tokens], dim=1) + self.pos_embed
        return self.head(self.norm(self.blocks(self.emb_drop(tokens)))[:, 0])


@ARCHITECTURES.register("vit")
def vit(num_classes: int = 10, input_shape: tuple[int, ...] = (3, 32, 32), dropout: float = 0.0,
        precode: bool = False, latent_dim: int = 256, patch: int = 4, dim: int = 64, depth: int = 4,
        heads: int = 4, mlp_dim: int = 128) -> nn.Module:
    """The DIA paper's small ViT (patch 4, CLS token, pre-norm blocks) with dropout on embeddings,
    attention weights, attention output and MLP -- every place the paper's ViT drops units."""
    return _ViT(num_classes, input_shape, dropout, precode, latent_dim, patch, dim, depth, heads, mlp_dim)


# ----------------------------------------------------------------------------------------------- text models
# Text models take int64 token ids (N, T): ``input_shape`` is (T,), the sequence length the data is padded or
# truncated to. The token embedding is the first layer, as in every model keyboard FL trains, which is what
# makes its gradient name the tokens of the batch (attacks/tokens.py).


class _LSTMLanguageModel(nn.Module):
    def __init__(self, vocab_size: int, embed_dim: int, hidden: int, dropout: float) -> None:
        super().__init__()
        self.embedding = nn.Embedding(vocab_size, embed_dim)
        self.lstm = nn.LSTM(embed_dim, hidden, batch_first=True)
        self.dropout = _drop(dropout)
        self.head = nn.Linear(hidden, vocab_size)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        out, _ = self.lstm(self.embedding(ids))
        return self.head(self.dropout(out))  # (N, T, vocab): the next token's logits at every position


@ARCHITECTURES.register("lstm-lm")
def lstm_lm(num_classes: int = 512, input_shape: tuple[int, ...] = (16,), dropout: float = 0.0,
            precode: bool = False, latent_dim: int = 256, embed_dim: int = 32, hidden: int = 64) -> nn.Module:
    """Next-word LSTM language model (Embedding -> LSTM -> Linear over the vocabulary), the model of keyboard
    FL (Hard et al. 2018, smaller). ``num_classes`` is the vocabulary size; the output is (N, T, vocab)."""
    if precode:
        raise ValueError("lstm-lm has no PRECODE variant")
    return _LSTMLanguageModel(num_classes, embed_dim, hidden, dropout)


class _TextTransformer(nn.Module):
    def __init__(self, vocab_size: int, seq_len: int, num_classes: int, dim: int, depth: int, heads: int,
                 mlp_dim: int, dropout: float) -> None:
        super().__init__()
        self.embedding = nn.Embedding(vocab_size, dim)
        self.pos_embed = nn.Parameter(torch.randn(1, seq_len, dim) * 0.02)
        self.blocks = nn.Sequential(*[_TransformerBlock(dim, heads, mlp_dim, dropout) for _ in range(depth)])
        self.norm = nn.LayerNorm(dim)
        self.dropout = _drop(dropout)
        self.head = nn.Linear(dim, num_classes)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        tokens = self.embedding(ids) + self.pos_embed[:, : ids.shape[1]]
        return self.head(self.dropout(self.norm(self.blocks(tokens)).mean(dim=1)))


@ARCHITECTURES.register("text-transformer")
def text_transformer(num_classes: int = 2, input_shape: tuple[int, ...] = (16,), dropout: float = 0.0,
                     precode: bool = False, latent_dim: int = 256, vocab_size: int = 512, dim: int = 32,
                     depth: int = 1, heads: int = 2, mlp_dim: int = 64) -> nn.Module:
    """Small transformer sequence classifier: token embedding + learned positions, ``depth`` pre-norm encoder
    layers, mean pool over positions, Linear. ``vocab_size`` must cover the tokenizer's vocabulary."""
    if precode:
        raise ValueError("text-transformer has no PRECODE variant")
    return _TextTransformer(vocab_size, int(input_shape[0]), num_classes, dim, depth, heads, mlp_dim, dropout)
