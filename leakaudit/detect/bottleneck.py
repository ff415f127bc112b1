"""PRECODE-style variational bottlenecks (Scheliga et al., WACV 2022).

Three ways to recognise one:

- ``VariationalBottleneck`` modules (the zoo, or user code that uses leakaudit's layer);
- user modules built the same way: a Linear(d, 2K) encoder (or two Linear(d, K)), a Linear(K, ...) decoder and
  a forward that draws normal noise (``randn``/``normal_``) -- a structural guess, confirmed or not by the probe;
- ONNX graphs: a ``RandomNormal(Like)`` node feeding ``Mul`` -> ``Add`` (z = mu + eps * sigma) where mu and sigma
  each come from an encoder (the nearest Gemm/MatMul upstream: one Linear(d, 2K) split in two, or two
  Linear(d, K)) and z goes on to a decoder.

Where the parameters split: the PRECODE-targeted attack (seed 003) matches only gradients that the sampling
does not touch. The encoder runs before the sampling step, but its gradient is not one of those: with
h = W_enc x, the gradient dL/dW_enc = (dL/dh) x^T, and dL/dh reaches mu and sigma through z = mu + eps * sigma
and the decoder, so it changes with eps (the sigma half is even multiplied by eps). So the encoder counts as
*at* the bottleneck: ``params_after`` starts at the encoder, ``params_before`` holds only the layers in front
of it -- as in the PRECODE reference attack, which leaves out the VB module's gradients and everything after.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

from torch import fx, nn

from ..models.interface import LoadedModel
from ..models.layers import VariationalBottleneck
from .interface import Bottleneck
from .trace import Trace

_RANDOM_NORMAL = ("RandomNormalLike", "RandomNormal")
_LINEAR_OPS = ("Gemm", "MatMul")


@dataclass(frozen=True)
class _Candidate:
    name: str  # the module the probe sees as the source of the randomness
    latent_dim: int | None
    position: int  # where the bottleneck starts (its encoder) in forward order
    source: str


def find_bottlenecks(model: LoadedModel, tr: Trace) -> tuple[Bottleneck, ...]:
    candidates = _module_bottlenecks(model.module, tr)
    if model.onnx is not None and any(op in _RANDOM_NORMAL for _, op in model.onnx.random_nodes):
        candidates += _onnx_bottlenecks(model.path, dict(model.module.named_modules()), tr)
    return tuple(_split(c, tr) for c in sorted(candidates, key=lambda c: (c.position, c.name)))


def _split(c: _Candidate, tr: Trace) -> Bottleneck:
    # A parameter the forward never uses gets no gradient to match: count it with the unmatched side.
    before = tuple(n for n, pos in tr.param_position.items() if pos < c.position)
    after = tuple(n for n, pos in tr.param_position.items() if pos >= c.position) + tr.unused_params
    return Bottleneck(c.name, c.latent_dim, c.position, c.source, params_after=after, params_before=before)


# -- torch modules -------------------------------------------------------------------------------------------

def _module_bottlenecks(root: nn.Module, tr: Trace) -> list[_Candidate]:
    found: list[_Candidate] = []
    for name, m in root.named_modules():
        if name not in tr.module_position:
            continue  # never runs in forward: nothing to attack around
        if isinstance(m, VariationalBottleneck):
            found.append(_Candidate(name, m.latent_dim, tr.position_of(name), "module"))
        elif not isinstance(m, fx.GraphModule) and (k := _looks_variational(m)) is not None:
            # (converted ONNX graphs are matched on the graph itself, below)
            found.append(_Candidate(name, k, tr.position_of(name), "module"))
    return found


def _looks_variational(m: nn.Module) -> int | None:
    """K when ``m`` has a Linear(d, 2K) (or two Linear(d, K)) and a Linear(K, ...) child and its forward samples
    normal noise."""
    linears = [c for c in m.children() if isinstance(c, nn.Linear)]
    if len(linears) < 2:
        return None
    try:
        source = inspect.getsource(type(m).forward)
    except (OSError, TypeError):
        return None
    if not any(s in source for s in ("randn", "normal_", ".normal(", "Normal(")):
        return None
    for enc in linears:
        k, odd = divmod(enc.out_features, 2)
        if not odd and any(dec is not enc and dec.in_features == k for dec in linears):
            return k
    for a in linears:  # VAE style: separate mu and (log-)sigma encoders Linear(d, K), decoder Linear(K, ...)
        for b in linears:
            if b is not a and (a.in_features, a.out_features) == (b.in_features, b.out_features) and any(
                    dec is not a and dec is not b and dec.in_features == a.out_features for dec in linears):
                return a.out_features
    return None


# -- ONNX graphs ---------------------------------------------------------------------------------------------

def _onnx_bottlenecks(path: Path, modules: dict[str, nn.Module], tr: Trace) -> list[_Candidate]:
    import onnx

    from ..models import onnx2torch_import  # noqa: F401 -- imports onnx2torch without torchvision, first
    from onnx2torch.onnx_graph import OnnxGraph  # the loader's naming rule for converted modules

    from ..models.onnx_names import safe_names

    proto, _ = safe_names(onnx.load(str(path), load_external_data=False))  # the names the loader converted
    graph = _Graph(list(OnnxGraph(proto.graph).nodes.values()), modules)
    found: list[_Candidate] = []
    for rnd, mu, sigma, add in graph.reparameterisations():
        # mu and sigma each come from an encoder (one Linear(d, 2K) split in two, or two Linear(d, K))
        enc_mu, enc_sigma = graph.nearest_linear(mu), graph.nearest_linear(sigma)
        if not enc_mu or not enc_sigma or not graph.downstream_linear(add.output_values[0]):
            continue  # noise without an encoder/decoder around it: left to the probe
        rnd_module = graph.module_name(rnd) or rnd.unique_name
        positions = [tr.position_of(m) for m in map(graph.module_name, (graph.node(e) for e in enc_mu | enc_sigma))
                     if m is not None]
        position = min(positions) if positions else tr.position_of(rnd_module)
        found.append(_Candidate(rnd_module, _latent_dim(rnd_module, tr), position, "onnx"))
    return found


class _Graph:
    """An onnx2torch graph's nodes (``OnnxNode``: onnx2torch ships no types), walked up and down by value."""

    def __init__(self, nodes: list[Any], modules: dict[str, nn.Module]) -> None:
        self.nodes, self.modules = nodes, modules
        self.index = {n.unique_name: i for i, n in enumerate(nodes)}
        self.producer = {out: n for n in nodes for out in n.output_values}
        self.consumers: dict[str, list[Any]] = {}
        for n in nodes:
            for v in n.input_values:
                self.consumers.setdefault(v, []).append(n)

    def node(self, name: str) -> Any:
        return self.nodes[self.index[name]]

    def module_name(self, node: Any) -> str | None:
        for cand in (node.unique_name, node.proto.name):
            if cand in self.modules:
                return str(cand)
        return None

    def reparameterisations(self) -> Iterator[tuple[Any, str, str, Any]]:
        """Every ``mu + sigma * RandomNormal``: (the random node, mu's value, sigma's value, the Add node)."""
        for rnd in self.nodes:
            if rnd.operation_type not in _RANDOM_NORMAL:
                continue
            for mul in self.consumers.get(rnd.output_values[0], []):
                if mul.operation_type != "Mul":
                    continue
                sigma = next((v for v in mul.input_values if v != rnd.output_values[0]), None)
                for add in self.consumers.get(mul.output_values[0], []):
                    if add.operation_type != "Add" or sigma is None:
                        continue
                    mu = next((v for v in add.input_values if v != mul.output_values[0]), None)
                    if mu is not None:
                        yield rnd, mu, sigma, add

    def nearest_linear(self, value: str) -> set[str]:
        """The first Gemm/MatMul on every path upstream of ``value``: the encoder(s) computing it."""
        found: set[str] = set()
        seen: set[str] = set()
        stack = [value]
        while stack:
            n = self.producer.get(stack.pop())
            if n is None or n.unique_name in seen:
                continue
            seen.add(n.unique_name)
            if n.operation_type in _LINEAR_OPS:
                found.add(n.unique_name)
            else:
                stack.extend(n.input_values)
        return found

    def downstream_linear(self, value: str) -> bool:
        stack, seen = [value], set()
        while stack:
            for n in self.consumers.get(stack.pop(), []):
                if n.operation_type in _LINEAR_OPS:
                    return True
                if n.unique_name not in seen:
                    seen.add(n.unique_name)
                    stack.extend(n.output_values)
        return False


def _latent_dim(module_name: str, tr: Trace) -> int | None:
    for leaf in tr.leaves:
        if leaf.name == module_name and leaf.output_shape:
            return int(leaf.output_shape[-1])
    return None
