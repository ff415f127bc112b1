"""Names from an ONNX file never reach generated code.

onnx2torch names each converted module after its node, and torch.fx pastes module names into the Python
source of the ``GraphModule`` it generates and executes (``getattr(self, "<name>")`` for a name that is not
an identifier). A node name holding a quote therefore runs code when the file is converted. ``safe_names``
rewrites every node, value and graph name of a copy of the model, main graph and subgraphs alike, to
characters that cannot leave a string literal: ``[A-Za-z0-9_./]`` (``.`` and ``/`` are how exporters
structure names, e.g. ``/features/features.0/Conv``; onnx2torch turns dots into slashes). Names made only of
those characters stay as they are, so the layer names of an ordinary export, which ``inspect``, detection and
``--dropout`` use, do not change. The original node names stay available through the returned mapping,
for display only.
"""

from __future__ import annotations

import functools
import re
from typing import Callable, Iterator

import onnx

_UNSAFE = re.compile(r"[^A-Za-z0-9_./]")
# Names onnx2torch generates itself (its buffers, the getitem of a multi-output node): not for the file.
_RESERVED = re.compile(r"onnx_initializer_\d+|.*_split_output")
MAX_NAME = 120  # longer names are cut: a module name is printed in every layer table


def safe_names(model: onnx.ModelProto) -> tuple[onnx.ModelProto, dict[str, str]]:
    """(a copy of ``model`` with safe names, {original node name: new node name} for the nodes renamed)."""
    clone = onnx.ModelProto()
    clone.CopyFrom(model)
    # One pool for both: onnx2torch keeps graph inputs, initializers and nodes in one dict keyed by name.
    taken: set[str] = set()
    values = _Namer(taken, reuse=True)
    nodes = _Namer(taken, reuse=False)
    renamed: dict[str, str] = {}
    for graph in _graphs(clone.graph):
        graph.name = _clean(graph.name) or "graph"
        _rename_values(graph, values)
        wanted = _wanted_node_names(graph)
        # Names that are safe already are given first, so that a renamed node cannot take a real node's name.
        order = sorted(range(len(wanted)), key=lambda i: not _is_clean(wanted[i]))
        for i in order:
            node = graph.node[i]
            node.name = nodes.name(wanted[i], key=functools.partial(_module_key, node.domain))
            if not _is_clean(wanted[i]):
                renamed[wanted[i]] = node.name
    return clone, renamed


def _wanted_node_names(graph: onnx.GraphProto) -> list[str]:
    """Each node's name; an unnamed node gets the one onnx2torch would give it (op type + counter), so
    that it cannot collide with a named node of that name."""
    counters: dict[str, int] = {}
    names = []
    for node in graph.node:
        count = counters.get(node.op_type, 0) if not node.name else 0
        if not node.name:
            counters[node.op_type] = count + 1
        names.append(node.name or (node.op_type + (f"_{count}" if count else "")))
    return names


class _Namer:
    """Gives each wanted name a safe, unique one: the same for the same wanted name when ``reuse`` (a value
    read by many nodes), a new one each time otherwise (two nodes may share a name in the file)."""

    def __init__(self, taken: set[str], reuse: bool) -> None:
        self.reuse = reuse
        self.given: dict[str, str] = {}
        self.taken = taken

    def name(self, wanted: str, key: Callable[[str], str] = str) -> str:
        if self.reuse and wanted in self.given:
            return self.given[wanted]
        base = _clean(wanted) or "v"
        new, i = base, 1
        while key(new) in self.taken or _RESERVED.fullmatch(key(new)):
            new, i = f"{base}_{i}", i + 1
        self.taken.add(key(new))
        self.given[wanted] = new
        return new


def _clean(name: str) -> str:
    return _UNSAFE.sub("_", name)[:MAX_NAME]


def _is_clean(name: str) -> bool:
    return _clean(name) == name and not _RESERVED.fullmatch(name)


def _module_key(domain: str, name: str) -> str:
    """The module name onnx2torch derives from a node name (its ``OnnxGraph.generate_node_name``)."""
    return (f"{domain}/" + name.replace(".", "/")).lstrip("/")


def _graphs(graph: onnx.GraphProto) -> Iterator[onnx.GraphProto]:
    yield graph
    for node in graph.node:
        for attr in node.attribute:
            if attr.type == onnx.AttributeProto.GRAPH:
                yield from _graphs(attr.g)
            elif attr.type == onnx.AttributeProto.GRAPHS:
                for g in attr.graphs:
                    yield from _graphs(g)


def _rename_values(graph: onnx.GraphProto, values: _Namer) -> None:
    """Every value name of ``graph`` (one namer for all graphs: subgraphs read outer values by name)."""
    def new(name: str) -> str:
        return values.name(name) if name else ""  # "" marks an omitted optional input

    for info in (*graph.input, *graph.output, *graph.value_info):
        info.name = new(info.name)
    for init in graph.initializer:
        init.name = new(init.name)
    for sparse in graph.sparse_initializer:
        sparse.values.name = new(sparse.values.name)
        sparse.indices.name = new(sparse.indices.name)
    for node in graph.node:
        node.input[:] = [new(n) for n in node.input]
        node.output[:] = [new(n) for n in node.output]
