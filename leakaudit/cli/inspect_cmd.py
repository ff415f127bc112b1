"""``leakaudit inspect MODEL``: what leakaudit sees in a model before any attack runs.

Loads the model, runs detection and prints a table of layers and the findings (or, with ``--json``, only JSON
on stdout, for scripts). Exit 0 on success, 2 on an input error (the app's ``run()`` maps errors).
"""

from __future__ import annotations

import json
import sys
from typing import TYPE_CHECKING, Any, Optional

import typer

from ..safetext import terminal
from . import options
from .app import app

if TYPE_CHECKING:  # annotations only: the CLI imports torch-backed stages when a command runs
    from rich.console import Console

    from ..detect.interface import Findings
    from ..models.interface import LoadedModel

INSPECT_SCHEMA = "leakaudit.inspect/1"
OWN_PARAMETERS = "(own parameters)"  # detect's row type suffix for a container's directly owned parameters


def inspection_to_dict(model: Any, findings: Any) -> dict[str, Any]:
    """The JSON document of ``inspect --json`` (model facts + findings)."""
    from ..detect import findings_to_dict

    onnx = model.onnx
    from .. import __version__

    return {
        "schema": INSPECT_SCHEMA,
        "leakaudit_version": __version__,
        "model": {
            "path": str(model.path),
            "format": model.format,
            "sha256": model.sha256,
            "arch": model.arch,
            "input_shape": list(model.input_shape),
            "num_classes": model.num_classes,
            "trainable_parameters": model.num_trainable(),
            "declared_dropout": dict(model.declared_dropout),
            "onnx": None if onnx is None else {
                "opset": onnx.opset,
                "producer": onnx.producer,
                "dropout_nodes": [{"node": n, "ratio": r} for n, r in onnx.dropout_nodes],
                "random_nodes": [{"node": n, "op_type": t} for n, t in onnx.random_nodes],
                "looks_eval_exported": onnx.looks_eval_exported,
            },
        },
        **findings_to_dict(findings),
    }


def _notes(findings: Findings) -> dict[str, list[str]]:
    """Layer name -> what detection says about it (for the table's last column)."""
    notes: dict[str, list[str]] = {}
    for d in findings.dropout:
        notes.setdefault(d.name, []).append(f"dropout p={d.p:g} ({d.source})")
    for b in findings.bottlenecks:
        k = f", K={b.latent_dim}" if b.latent_dim else ""
        notes.setdefault(b.name, []).append(f"PRECODE sampling{k}")
    for n in findings.batchnorm:
        notes.setdefault(n, []).append("BatchNorm")
    for n in findings.unrecognized_stochastic:
        notes.setdefault(n, []).append("unrecognized stochastic")
    return notes


def _print_table(model: LoadedModel, findings: Findings, all_layers: bool) -> None:
    """Every name below comes from the model file (or its path): it goes through ``terminal`` before rich
    reads it as markup, so ``[/]`` cannot crash the table and an escape sequence cannot drive the terminal."""
    from rich.console import Console

    console = Console(highlight=False, soft_wrap=True)
    shape = ",".join(str(s) for s in model.input_shape)
    arch = f", arch {terminal(model.arch)}" if model.arch else ""
    console.print(f"[bold]{terminal(model.path)}[/bold]  ({terminal(model.format)}{arch})")
    console.print(f"sha256       {model.sha256}")
    console.print(f"input shape  {shape}    classes {model.num_classes}    "
                  f"trainable parameters {model.num_trainable():,}")
    if model.onnx is not None:
        console.print(f"onnx         opset {model.onnx.opset}, producer {terminal(model.onnx.producer or 'unknown')}")
    _print_layers(console, findings, all_layers)
    _print_findings(console, findings)


def _print_layers(console: Console, findings: Findings, all_layers: bool) -> None:
    from rich.table import Table

    notes = _notes(findings)
    table = Table(title="Layers in forward order", title_justify="left")
    for col, justify in (("#", "right"), ("layer", "left"), ("type", "left"), ("params", "right"),
                         ("finding", "left")):
        table.add_column(col, justify=justify)  # type: ignore[arg-type]
    hidden, position = 0, 0
    for name, kind, count in findings.layers:
        # "#" is the forward position findings refer to; a container's own-parameter row has none
        own = kind.endswith(OWN_PARAMETERS)
        index = "" if own else str(position)
        position += 0 if own else 1
        note = notes.get(name, [])
        if not all_layers and count == 0 and not note:
            hidden += 1
            continue
        table.add_row(index, terminal(name), terminal(kind), f"{count:,}" if count else "", terminal("; ".join(note)))
    console.print(table)
    if hidden:
        console.print(f"({hidden} parameter-free layers without findings hidden; --all-layers shows them)")


def _print_findings(console: Console, findings: Findings) -> None:
    console.print("[bold]Findings[/bold]")
    console.print(f"  modality     {findings.modality} ({terminal(findings.modality_reason)})")
    if findings.dropout:
        for d in findings.dropout:
            console.print(f"  dropout      {terminal(d.name)}  p={d.p:g}  position {d.position}  "
                          f"({terminal(d.source)})")
    else:
        console.print("  dropout      none")
    if findings.bottlenecks:
        for b in findings.bottlenecks:
            console.print(f"  PRECODE      {terminal(b.name)}  K={b.latent_dim if b.latent_dim else '?'}  "
                          f"position {b.position}  ({terminal(b.source)}): {len(b.params_before)} parameter "
                          f"tensors before it (what a PRECODE-aware attack matches), {len(b.params_after)} at/after it")
    else:
        console.print("  PRECODE      none")
    console.print(f"  BatchNorm    {len(findings.batchnorm)} layer(s)" if findings.batchnorm else "  BatchNorm    none")
    if findings.unrecognized_stochastic:
        names = ", ".join(terminal(n) for n in findings.unrecognized_stochastic)
        console.print(f"  [yellow]unrecognized stochastic layers: {names}[/yellow]")
    for w in findings.warnings:
        console.print(f"[yellow]warning:[/yellow] {terminal(w)}", markup=True)


@app.command("inspect", epilog="Exit codes: 0 inspected, 2 usage or input error, 3 internal error.")
def inspect_model(
    model: str = typer.Argument(..., help="Model file: .onnx, or .safetensors (with --arch unless its metadata "
                                          "names one).", show_default=False),
    arch: Optional[str] = typer.Option(None, "--arch", help="Architecture for safetensors: a built-in name "
                                       "(mlp, lenet, cnn, flower, resnet20, resnet18, vit), file.py:factory, "
                                       "package.module:factory or timm:MODEL."),
    arch_arg: list[str] = options.ARCH_ARG,
    input_shape: Optional[str] = options.INPUT_SHAPE,
    num_classes: Optional[int] = options.NUM_CLASSES,
    dropout: list[str] = options.DROPOUT,
    as_json: bool = typer.Option(False, "--json", help="Print only JSON on stdout."),
    probe: bool = typer.Option(True, "--probe/--no-probe", help="Run the train-mode probe for unknown randomness."),
    all_layers: bool = typer.Option(False, "--all-layers", help="List parameter-free layers too."),
    records: bool = typer.Option(False, "--records", help="The model takes tabular records (its flat input is an "
                                 "encoded row, as scan --schema or a CSV says): detection states the modality so."),
    debug: bool = options.DEBUG,
) -> int:
    """Show a model's layers, parameters, input shape, classes, sha256 and what detection finds in it
    (dropout, PRECODE bottlenecks, BatchNorm, unrecognized randomness)."""
    from ..config import parse_arch_args, parse_dropout, parse_shape
    from ..detect import detect
    from ..models import load_model

    shape = parse_shape(input_shape, "--input-shape") if input_shape is not None else None
    declared = parse_dropout(dropout, "--dropout") if dropout else None
    kwargs = parse_arch_args(arch_arg, "--arch-arg") if arch_arg else None
    loaded = load_model(model, arch=arch, input_shape=shape, num_classes=num_classes, dropout=declared,
                        arch_kwargs=kwargs)
    findings = detect(loaded, probe=probe, tabular=records)
    if as_json:  # ensure_ascii: a name's ESC, C1 or bidi character is written as \u001b etc., never raw
        sys.stdout.write(json.dumps(inspection_to_dict(loaded, findings), indent=2, ensure_ascii=True) + "\n")
    else:
        _print_table(loaded, findings, all_layers)
    return 0
