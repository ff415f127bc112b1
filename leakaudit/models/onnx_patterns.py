"""Graph rewrites that give back a layer an exporter wrote out as elementary ops, before anything reads the graph.

Dropout decomposed into ops. torch's dynamo exporter writes ``nn.Dropout(inplace=True)`` in training mode
(torchvision's MobileNetV3 classifier; checked with torch 2.14) not as a ``Dropout`` node but as the ops of
``bernoulli_``::

    r = RandomUniformLike(t)     # t: any tensor of x's shape (the exporter stores one as an initializer)
    keep = Less(r, q)            # q: the keep probability 1 - p, a scalar constant
    m = Cast(keep, to=float)
    y = Mul(x, Div(m, q))        # or Mul(Div(m, q), x)

Stochastic depth (timm's ``DropPath``, torchvision's ``StochasticDepth``) exports the same chain, but the
random op is shaped like a per-sample tensor ``t = ConstantOfShape([N, 1, ..., 1])`` built at run time: one
draw per sample drops the whole residual branch. That is rewritten to ``y = Mul(x, Dropout(ones))`` with
``ones = ConstantOfShape([N, 1, ..., 1], value=1)`` -- the same function, with the mask a ``MaskableDropout``
of its own per-sample shape, so the client update draws per sample and DIA optimises one continuous mask per
sample and branch (fusing it as element-wise dropout of ``x`` would change the model).

Converted as they are, the random op is "an unrecognized stochastic layer" that no attack drives and DIA is
not planned. Replaced by one ``Dropout(x, ratio=1 - q, training_mode=True)`` node it becomes a
``MaskableDropout`` like any exported Dropout, and detection reports it with its rate. The rewrite applies
only where each intermediate result has exactly the one consumer the pattern says, so no other computation
can depend on what it removes.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper


def fuse_decomposed_dropout(model: onnx.ModelProto) -> onnx.ModelProto:
    """``model`` with every decomposed dropout replaced by a ``Dropout`` node (a copy when anything changed)."""
    opset = max((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), default=0)
    if opset < 12:  # Dropout takes its ratio as an input from opset 12 on; the dynamo exporter writes 18+
        return model
    matches = [m for m in (_match(model.graph, n) for n in model.graph.node) if m is not None]
    if not matches:
        return model
    out = onnx.ModelProto()
    out.CopyFrom(model)
    graph = out.graph
    removed: set[int] = set()  # ids of the matched nodes
    replacement: dict[str, list[onnx.NodeProto]] = {}  # the Mul's output -> the nodes that now produce it
    ones: set[int] = set()  # ids of per-sample ConstantOfShape nodes that become the drop-path "ones"
    for random_node, chain, x, y, ratio in matches:
        base = random_node.name or f"dropout_{y}"
        ratio_name, mode_name = f"{base}_ratio", f"{base}_training_mode"
        graph.initializer.append(numpy_helper.from_array(_float32(ratio), ratio_name))
        graph.initializer.append(helper.make_tensor(mode_name, TensorProto.BOOL, [], [True]))
        removed |= {id(n) for n in (random_node, *chain)}
        shaped = _run_time_shape(model.graph, random_node)
        if shaped is None:
            replacement[y] = [helper.make_node("Dropout", [x, ratio_name, mode_name], [y], name=base)]
        else:  # stochastic depth: y = x * dropout(ones of the per-sample shape)
            ones.add(id(shaped))
            mask = f"{base}_mask"
            replacement[y] = [helper.make_node("Dropout", [shaped.output[0], ratio_name, mode_name], [mask],
                                               name=base),
                              helper.make_node("Mul", [x, mask], [y], name=f"{base}_apply")]
    nodes: list[onnx.NodeProto] = []
    for node in model.graph.node:
        if id(node) in ones:
            nodes.append(_ones_like(node))
        elif id(node) not in removed:
            nodes.append(_copy_node(node))
        elif node.op_type == "Mul":
            nodes.extend(replacement[node.output[0]])  # at the Mul's place: x is computed before it
    del graph.node[:]
    graph.node.extend(nodes)
    _drop_unused_initializers(graph)
    return out


def _run_time_shape(graph: onnx.GraphProto, r: onnx.NodeProto) -> onnx.NodeProto | None:
    """The ``ConstantOfShape`` node the random op is shaped like, when only the random op reads it (the
    per-sample tensor of stochastic depth); None when the shape comes from elsewhere (element-wise dropout)."""
    producer = next((n for n in graph.node if r.input[0] in n.output), None)
    if producer is None or producer.op_type != "ConstantOfShape":
        return None
    return producer if _only_consumer(graph, r.input[0]) is r else None


def _ones_like(node: onnx.NodeProto) -> onnx.NodeProto:
    """The ``ConstantOfShape`` node with value 1.0 (float32): what the drop-path mask's dropout is applied to."""
    ones = _copy_node(node)
    del ones.attribute[:]
    ones.attribute.append(helper.make_attribute("value", numpy_helper.from_array(np.ones(1, np.float32))))
    return ones


def _copy_node(node: onnx.NodeProto) -> onnx.NodeProto:
    copy = onnx.NodeProto()
    copy.CopyFrom(node)
    return copy


def _float32(value: float) -> np.ndarray:
    return np.array(value, dtype=np.float32)


def _match(graph: onnx.GraphProto, r: onnx.NodeProto
           ) -> tuple[onnx.NodeProto, tuple[onnx.NodeProto, ...], str, str, float] | None:
    """(RandomUniformLike, (Less, Cast, Div, Mul), x, y, ratio) when ``r`` starts a decomposed dropout."""
    if r.op_type != "RandomUniformLike" or len(r.output) != 1:
        return None
    attrs = {a.name: helper.get_attribute_value(a) for a in r.attribute}
    if attrs.get("low", 0.0) != 0.0 or attrs.get("high", 1.0) != 1.0:
        return None
    mask = _mask(graph, r)
    if mask is None:
        return None
    less, cast, q = mask
    scale = _scaled(graph, cast, q)
    if scale is None:
        return None
    div, mul = scale
    x = mul.input[1] if mul.input[0] == div.output[0] else mul.input[0]
    return r, (less, cast, div, mul), x, mul.output[0], round(1.0 - q, 6)


def _mask(graph: onnx.GraphProto, r: onnx.NodeProto) -> tuple[onnx.NodeProto, onnx.NodeProto, float] | None:
    """(Less, Cast, keep probability q) of ``Cast(r < q)``, the 0/1 mask, when ``r`` is the random op's only use."""
    less = _only_consumer(graph, r.output[0])
    if less is None or less.op_type != "Less" or list(less.input[:1]) != [r.output[0]]:
        return None
    q = _scalar(graph, less.input[1])
    cast = _only_consumer(graph, less.output[0])
    if q is None or not 0.0 < q <= 1.0 or cast is None or cast.op_type != "Cast":
        return None
    return less, cast, q


def _scaled(graph: onnx.GraphProto, cast: onnx.NodeProto,
            q: float) -> tuple[onnx.NodeProto, onnx.NodeProto] | None:
    """(Div, Mul) of ``x * (mask / q)``: the mask scaled by the same q and applied to an input."""
    div = _only_consumer(graph, cast.output[0])
    if div is None or div.op_type != "Div" or list(div.input[:1]) != [cast.output[0]]:
        return None
    if _scalar(graph, div.input[1]) != q:
        return None
    mul = _only_consumer(graph, div.output[0])
    if mul is None or mul.op_type != "Mul" or div.output[0] not in mul.input:
        return None
    return div, mul


def _only_consumer(graph: onnx.GraphProto, name: str) -> onnx.NodeProto | None:
    if name in {o.name for o in graph.output}:
        return None
    users = [n for n in graph.node if name in n.input]
    return users[0] if len(users) == 1 else None


def _scalar(graph: onnx.GraphProto, name: str) -> float | None:
    for init in graph.initializer:
        if init.name == name:
            value = numpy_helper.to_array(init)
            return float(value) if value.size == 1 else None
    for node in graph.node:
        if node.op_type == "Constant" and list(node.output) == [name]:
            for a in node.attribute:
                if a.name == "value" and numpy_helper.to_array(a.t).size == 1:
                    return float(numpy_helper.to_array(a.t))
                if a.name == "value_float":
                    return float(a.f)
    return None


def _drop_unused_initializers(graph: onnx.GraphProto) -> None:
    """The tensor the random op was shaped like, and the keep probability, are read by nothing now."""
    used = {i for n in graph.node for i in n.input} | {o.name for o in graph.output}
    keep = [i for i in graph.initializer if i.name in used]
    if len(keep) != len(graph.initializer):
        del graph.initializer[:]
        graph.initializer.extend(keep)
