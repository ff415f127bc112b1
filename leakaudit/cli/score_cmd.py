"""``leakaudit score ORIGINALS RECONSTRUCTIONS``: the "recognised" test on any attack's outputs.

    leakaudit score originals/ recon/                       a table on stdout
    leakaudit score originals/ recon/ --output -            JSON on stdout (nothing else)
    leakaudit score originals/ recon/ --output score.json   JSON to a file, the table on stdout
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional

import typer

from ..errors import EXIT_LEAK, EXIT_OK
from ..safetext import terminal
from .app import app

if TYPE_CHECKING:
    from ..judge import Judgement

_HELP = (
    "Judge reconstructions made anywhere with leakaudit's \"recognised\" test: each file of RECONSTRUCTIONS "
    "against the file of the same name in ORIGINALS. Recognised = attributable to its own original (closer to it, "
    "after flip, shift and level registration, than to the other originals and the references) and better than "
    "a blank or heavily blurred copy (the rule profile's per-sample fail rules).\n\n"
    "Exit codes: 0 none recognised, 1 some recognised, 2 usage or input error."
)


@app.command("score", help=_HELP)
def score_command(
    originals: Path = typer.Argument(..., help="Folder of the original images."),
    reconstructions: Path = typer.Argument(..., help="Folder of reconstructions, named like their originals."),
    reference_data: Optional[str] = typer.Option(None, "--reference-data", metavar="DIR",
                                                 help="More references (your own data is best); default: the "
                                                      "bundled 64 natural images."),
    rules: str = typer.Option("default", "--rules", help="Rule profile or file whose per-sample fail rules define "
                                                         "recognised."),
    output: Optional[str] = typer.Option(None, "--output", help="Write JSON here ('-': stdout, nothing else)."),
    debug: bool = typer.Option(False, "--debug", help="Show tracebacks."),
) -> int:
    from ..judge import judge_folders, summary_line

    judgement = judge_folders(originals, reconstructions, reference_data=reference_data, rules=rules)
    doc = judgement.to_dict()
    text = json.dumps(_clean(doc), indent=2, allow_nan=False)
    if output == "-":
        typer.echo(text)
    else:
        if output is not None:
            Path(output).write_text(text + "\n", encoding="utf-8")
        _table(judgement)
        typer.echo(summary_line(judgement))
    return EXIT_LEAK if judgement.recognised else EXIT_OK


def _clean(value: Any) -> Any:
    """Strict JSON: NaN -> null, inf -> the string "inf"."""
    if isinstance(value, float):
        return None if math.isnan(value) else ("inf" if value == math.inf else "-inf" if value == -math.inf
                                               else value)
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    return value


def _table(judgement: Judgement) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console(file=sys.stdout, width=None if sys.stdout.isatty() else 160, highlight=False)
    table = Table(title=f"recognised = {' or '.join(terminal(c) for c in judgement.criterion)}", title_justify="left")
    for column in ("sample", "recognised", "match p (K)", "structure score", "PSNR gain", "registration",
                   "raw SSIM / PSNR"):
        table.add_column(column, overflow="fold")
    for s in judgement.samples:
        table.add_row(terminal(s.name), "yes" if s.recognised else ("partly" if s.attributable else "no"),
                      f"{s.match_p:.3g} ({s.references})", f"{s.ssim_skill:.2f}", f"{s.psnr_gain:+.1f} dB",
                      terminal(s.transform), f"{s.similarity['ssim']:.2f} / {s.similarity['psnr']:.1f} dB")
    console.print(table)
