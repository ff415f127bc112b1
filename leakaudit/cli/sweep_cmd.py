"""``leakaudit sweep``: how strong must a defense be? One audit per value of a knob, the leakage curve,
and the weakest setting that passes the rules.

The model, samples and findings are loaded once. sweep.json is written after every value (atomically), so
Ctrl-C (exit 130, marked incomplete) or a crash leaves a file that ``--resume`` continues from.
"""

from __future__ import annotations

import dataclasses
import json
import shlex
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping, Optional, Sequence

import typer
from rich.console import Console
from rich.table import Table

from ..config import load_config, resolve_settings
from ..errors import (EXIT_INCONCLUSIVE, EXIT_INTERNAL, EXIT_INTERRUPTED, EXIT_LEAK, EXIT_OK, EXIT_USAGE, ConfigError,
                      LeakauditError)
from ..safetext import terminal
from . import options
from .app import app, fail, stderr_console

if TYPE_CHECKING:
    from ..config import ScanSettings
    from ..sweep.interface import SweepResult

SWEEP_EXIT_HELP = (
    "Exit codes: 0 a tested setting passes the rules (and every stronger one), 1 no tested setting does, "
    "2 usage or input error, 3 internal error (every value crashed), 4 inconclusive (at every value the attacks "
    "could not reconstruct even the undefended update), 130 interrupted (resume with --resume). "
    "With --exit-zero, 'no setting passes' exits 0."
)


def _sweep_command(model: str, data: str, settings: ScanSettings, vary_text: str) -> str:
    from .scan_cmd import reproduce_command

    argv = shlex.split(reproduce_command(model, data, settings))
    argv[1] = "sweep"
    return shlex.join(argv + ["--vary", vary_text])


def _shown_metrics(doc: dict[str, Any]) -> list[str]:
    names: list[str] = []
    for p in doc["points"]:
        names += [r["metric"] for r in p["rules"] if r["metric"] not in names]
    return names[:2] or ["ssim"]


def _most_leaking(point: dict[str, Any], metric: str) -> tuple[float, str] | None:
    """(value, attack) of the attack whose worst sample leaks most on ``metric`` at this point."""
    found = []
    for a in point["attacks"]:
        m = next((x for x in a["metrics"] if x["name"] == metric and x["worst"] is not None), None)
        if m is not None:
            found.append((m["worst"], a["attack"], m["higher_is_better"]))
    if not found:
        return None
    lower_leaks = found[0][2] is False
    value, attack, _ = (min if lower_leaks else max)(found, key=lambda t: t[0])
    return value, attack


def _table(doc: dict[str, Any]) -> Table:
    """Compact on purpose (CI logs are 80 columns): per rule metric, the most leaking attack's worst sample."""
    metrics = _shown_metrics(doc)
    table = Table(title=f"leakage against {doc['knob']['name']} (most leaking attack, worst sample)",
                  title_justify="left")
    table.add_column(doc["knob"]["name"], justify="right", no_wrap=True)
    table.add_column("verdict", no_wrap=True)
    for m in metrics:
        table.add_column(terminal(m), no_wrap=True)
    table.add_column("time", justify="right", no_wrap=True)
    with_notes = any(p["error"] for p in doc["points"])
    if with_notes:
        table.add_column("error", overflow="fold")
    by_value = {p["value"]: p for p in doc["points"]}
    for v in doc["values"]:
        p = by_value.get(v)
        if p is None:
            table.add_row(f"{v:.4g}", "[dim]not run[/]", *[""] * (len(metrics) + 1 + with_notes))
            continue
        verdict = {True: "[green]pass[/]", False: "[red]FAIL[/]"}.get(p["passed"], f"[yellow]{p['status']}[/]")
        cells = []
        for m in metrics:
            best = _most_leaking(p, m)
            # attack names may come from a resumed sweep.json, a file the user may have been handed
            cells.append("" if best is None else terminal(f"{best[0]:.3g} {best[1]}"))
        secs = "" if p["seconds"] is None else f"{p['seconds']:.0f}s"
        # an error may name a sample or model file: markup and control characters escaped
        row = [f"{v:.4g}", verdict, *cells, secs] + ([terminal(p["error"] or "")] if with_notes else [])
        table.add_row(*row)
    return table


def _exit_code(result: SweepResult, exit_zero: bool, console: Console) -> int:
    from ..sweep import DONE, ERROR

    if result.incomplete:
        return EXIT_INTERRUPTED
    if result.threshold.stable is not None:
        return EXIT_OK
    done = [p for p in result.points if p.status == DONE]
    if not done:
        errors = [p for p in result.points if p.status == ERROR]
        if errors and all(p.error_kind == "input" for p in errors):
            fail(f"every value failed; first error: {errors[0].error}")
            return EXIT_USAGE
        if errors and all(p.error_kind == "inconclusive" for p in errors):
            fail("every value was inconclusive: the attacks could not reconstruct even the undefended update, so no "
                 "setting is shown to protect; raise --budget (or --iterations / --restarts), or use --device cuda")
            return EXIT_INCONCLUSIVE
        fail("every value failed (see the notes in the table); rerun with --debug and please report it")
        return EXIT_INTERNAL
    return EXIT_OK if exit_zero else EXIT_LEAK


@app.command("sweep", epilog=SWEEP_EXIT_HELP)
@options.with_settings("sweep")
def sweep(
    ctx: typer.Context,
    *,
    model: str = options.MODEL,
    data: str = options.DATA,
    vary: Optional[str] = typer.Option(
        None, "--vary", metavar="KNOB=VALUES",
        help="What to vary: noise.sigma, clip.norm, prune.keep, mask.fraction, ppp.sigma or dropout.p (built-in "
             "architectures), = a list 0.01,0.1 or a range START:STOP:log|lin:COUNT, "
             "e.g. noise.sigma=1e-4:1e-1:log:6."),
    resume: Optional[str] = typer.Option(None, "--resume", help="Continue the sweep in this sweep.json (same model "
                                         "and settings): values already done are kept, the others run; --vary may "
                                         "be left out, or add values to extend the sweep."),
    given: options.GivenSettings,  # --arch ... --exit-zero: the options of config.SETTINGS (see with_settings)
    config: Optional[str] = options.CONFIG,
    debug: bool = options.DEBUG,
) -> int:
    """Vary one defense knob, audit at every value, and report the weakest setting that passes the rules."""
    from ..sweep import parse_vary, run_sweep
    from ..sweep.html import render_html
    from ..report.output import SWEEP_NAMES, OutputFolder, discard_previous, refuse_inputs
    from ..sweep.jsonio import previous_points, read_json, to_dict
    from ..sweep.pipeline import check_knob, default_audit, make_runner, prepare, settings_for_resume
    from .progress import RichObserver
    from .scan_cmd import scan_inputs

    keep = [resume] if resume else []  # --resume continues sweep.json in place: an input that is also an output
    try:
        flags = given.flags()
        config_file = load_config(config)
        settings = _sweep_settings(resolve_settings(config_file, flags), flags)
    except LeakauditError:  # as in scan: the folder named must not keep the previous sweep as this run's
        if "output_dir" in given.typed:
            discard_previous(given.typed["output_dir"], SWEEP_NAMES, keep=keep)
        raise
    folder = OutputFolder(settings.output_dir, SWEEP_NAMES, keep=keep)
    refuse_inputs([("--output-dir", p) for p in (folder.folder, *folder.targets())
                   if not (resume and p.resolve() == Path(resume).resolve())],
                  scan_inputs(model, data, settings, config_file.path))
    # held from here (before the model loads) until the command returns: see leakaudit/report/output.py
    ctx.with_resource(folder)
    previous_doc = read_json(Path(resume)) if resume else None
    if vary is None:
        if previous_doc is None:
            raise ConfigError("--vary: missing; give what to vary, e.g. --vary noise.sigma=1e-4:1e-1:log:6, "
                              "or --resume sweep.json to continue a sweep")
        vary = f"{previous_doc['knob']['name']}={previous_doc['knob']['spec']}"
    spec = parse_vary(vary)
    out_dir = Path(settings.output_dir)
    json_path, html_path = out_dir / "sweep.json", out_dir / "sweep.html"

    console = stderr_console()
    from_config = config_file.applied(flags)  # as in scan: settings a file gave, unseen on the command line
    if from_config and not settings.quiet:
        console.print(terminal(from_config), highlight=False, markup=True)
    command = _sweep_command(model, data, settings, f"{spec.knob.name}={spec.spec}")
    # attributed: an error about a value the config file gave names the file and key, not a flag never typed
    with RichObserver(console, quiet=settings.quiet) as observer, config_file.attributed(flags):
        prepared = prepare(model, data, settings, observer)
        check_knob(spec, prepared, settings.defenses)
        resume_settings = settings_for_resume(settings)
        previous = None
        if previous_doc is not None and resume:
            previous = previous_points(Path(resume), previous_doc, knob=spec.knob.name,
                                       sha256=prepared.model.sha256, settings=resume_settings)
        context = _context(prepared, resume_settings, command)
        runner = make_runner(spec, prepared, prepared.settings or settings, default_audit(prepared, command), observer)
        result = run_sweep(spec, runner, previous=previous, observer=observer, context=context,
                           on_point=lambda partial: folder.put(json_path.name, _sweep_json(to_dict(partial, spec))))
    doc = to_dict(result, spec)
    files = {json_path.name: _sweep_json(doc)}
    if "html" in settings.formats:
        from ..report.images import png_data_uri

        originals = [png_data_uri(px) for px in prepared.batch.pixels]
        files[html_path.name] = render_html(doc, originals)
    written = folder.commit(files)
    if not settings.quiet:
        _print_summary(console, doc, result, json_path, written)
    return _exit_code(result, settings.exit_zero, console)


def _sweep_settings(settings: ScanSettings, flags: Mapping[str, Any]) -> ScanSettings:
    """The settings with the formats a sweep writes: a config file's others left out, a flag's refused."""
    unknown = [f for f in settings.formats if f not in ("json", "html")]
    if unknown and "formats" not in flags:  # a config file shared with `scan` may ask for junit: not for us
        settings = dataclasses.replace(settings, formats=tuple(f for f in settings.formats if f not in unknown))
    elif unknown:
        raise ConfigError(f"--format {','.join(settings.formats)}: a sweep writes json and html only, not "
                          f"{', '.join(unknown)}; use --format json,html")
    if "html" in settings.formats:
        _need_matplotlib()  # before the audits run, not after an hour of them
    return settings


def _print_summary(console: Console, doc: dict[str, Any], result: SweepResult, json_path: Path,
                   written: Sequence[Path]) -> None:
    console.print(_table(doc))
    style = "green" if result.threshold.stable is not None else "yellow"
    if result.incomplete:
        console.print(f"[yellow]incomplete: continue with --resume {json_path}[/]", highlight=False)
    console.print(f"[bold {style}]threshold: {terminal(result.threshold.message)}[/]", highlight=False,
                  markup=True)
    for path in written:
        console.print(f"report: {path}", highlight=False, markup=False)


def _need_matplotlib() -> None:
    """sweep.html's plots are drawn with matplotlib, an optional dependency (the ``sweep`` extra)."""
    import importlib.util

    try:
        found = importlib.util.find_spec("matplotlib") is not None
    except (ImportError, ValueError):  # a broken or stubbed matplotlib in sys.modules
        found = False
    if not found:
        raise ConfigError("--format html: the sweep's plots need matplotlib, which is not installed; "
                          "pip install 'leakaudit[sweep]', or write sweep.json alone with --format json")


def _sweep_json(doc: dict[str, Any]) -> str:
    """What sweep.jsonio.write_json wrote; the output folder writes it now (atomic, in the held folder)."""
    return json.dumps(doc, indent=2, allow_nan=False) + "\n"


def _context(prepared: Any, settings: dict[str, Any], command: str) -> dict[str, Any]:
    m, b = prepared.model, prepared.batch
    norm = b.normalization
    return {
        "command": command,
        "model": {"path": str(m.path), "sha256": m.sha256, "arch": m.arch, "format": m.format,
                  "input_shape": list(m.input_shape), "num_classes": m.num_classes},
        "data": {"source": str(b.source), "count": len(b), "shape": list(b.x.shape[1:]), "names": list(b.names),
                 "normalization": {"name": norm.name, "mean": list(norm.mean), "std": list(norm.std)}},
        "settings": settings,
    }
