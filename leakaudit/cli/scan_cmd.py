"""``leakaudit scan`` and ``leakaudit render``.

scan: settings (defaults < config file < flags) -> ``audit()`` -> report document -> files. Reports are
rendered only after the scan finished (or was interrupted: then marked incomplete, exit 130) and each file
is written atomically, so an input error or a crash leaves no file behind. Progress and the verdict go to
stderr; stdout carries only the JSON report when ``--output -`` asks for it.
"""

from __future__ import annotations

import re
import shlex
import sys
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional, Sequence

import typer
from rich.console import Console

from ..config import ConfigFile, ScanSettings, load_config, resolve_settings, setting_args
from ..errors import EXIT_OK, InputError, LeakauditError
from ..modality import words
from ..safetext import terminal, visible
from . import options
from .app import EXIT_CODES_HELP, app, stderr_console

if TYPE_CHECKING:
    from ..report import Format
    from ..report.output import OutputFolder
    from ..result import AuditResult, BatchCoverage, SampleCoverage

def reproduce_command(model: str, data: str, s: ScanSettings) -> str:
    """A command that repeats the scan without the config file, the seed made explicit: the flags are written
    from the settings table (``config.setting_args``), the same rows the options are built from."""
    return shlex.join(["leakaudit", "scan", model, "--data", data, *setting_args(s)])


def _write_stdout(text: str) -> None:
    """UTF-8 whatever the locale: a report holds user file names, and a pipe may default to ASCII."""
    sys.stdout.flush()
    buffer = getattr(sys.stdout, "buffer", None)
    if buffer is not None:
        buffer.write(text.encode("utf-8"))
        buffer.flush()
    else:  # e.g. a test's captured text stream
        sys.stdout.write(text)
        sys.stdout.flush()


def _sample_lines(console: Console, attack: dict[str, Any]) -> None:
    """--verbose: one line per sample an attack reconstructed (the batch the report shows)."""
    for s in attack.get("samples") or []:
        metrics = s.get("metrics") or {}
        shown = "  ".join(f"{k} {metrics[k]:.3g}" if isinstance(metrics[k], float) else f"{k} {metrics[k]}"
                          for k in ("ssim", "psnr", "ssim_skill", "text_skill", "match_p") if k in metrics)
        verdict = {True: "recognised", False: "not recognised"}.get(s.get("recognised"), "")
        console.print(f"    {terminal(s.get('name', '?'))}  {terminal(shown)}  {verdict}", highlight=False,
                      markup=True)


_SHOWN = {"text": ("token_recall", "rougeL", "exact_match")}  # the means an attack line shows, by modality
MAX_SENTENCES = 4  # recovered lines shown per text attack (the report has every one)


def _sentence_lines(console: Console, attack: dict[str, Any]) -> None:
    """A text attack's recovered sentences, recognised ones first: what the server reads from the update."""
    samples = [s for s in attack.get("samples") or [] if isinstance(s.get("sentence"), dict)]
    if not samples or len({s["sentence"].get("recovered") for s in samples}) == 1 and len(samples) > 1:
        return  # none, or one bag shared by every line (token-set): the attack line's means say it
    for s in sorted(samples, key=lambda s: not s.get("recognised"))[:MAX_SENTENCES]:
        mark = "recognised" if s.get("recognised") else "not recognised"
        console.print(f"    sentence {terminal(s.get('name', '?'))}: \"{terminal(s['sentence'].get('recovered', ''))}\""
                      f"  ({mark})", highlight=False, markup=True)


def _attack_lines(console: Console, doc: dict[str, Any], verbose: bool = False) -> None:
    """One line per planned attack: how well it reconstructed (or why it did not run), so a user sees which
    attack broke the model -- the rule lines below name only the worst one. ``verbose``: each attack's
    per-sample lines below it, and a skip reason in full."""
    control = doc.get("control") or {}
    # the control's own runs (e.g. dia-informed with the true masks) follow, so a "skipped" above is not the
    # last word on an attack the verdict rests on
    rows = [("", a) for a in doc["attacks"]] + [("control ", a) for a in control.get("attacks", [])]
    for prefix, a in rows:
        if a["status"] == "ran":
            means = a.get("means") or {}
            shown = "  ".join(f"{k} {means[k]:.3g}" if isinstance(means[k], float) else f"{k} {means[k]}"
                              for k in _SHOWN.get(doc["data"].get("modality", "image"), ("ssim", "psnr"))
                              if k in means)
            shown += f"  ({a['seconds']:.1f} s)" if isinstance(a.get("seconds"), (int, float)) else ""
        elif a["status"] == "skipped":  # the first clause, with its why; the report has the whole reason
            first = a.get("reason", "") if verbose else re.split(r";", a.get("reason", ""))[0].strip()
            shown = f"skipped: {first if len(first) <= 100 or verbose else first[:99] + '…'}"
        else:
            shown = f"{a['status']}: {a.get('reason', '')}"
        console.print(f"  {terminal(prefix + a['name']):<17} {terminal(shown)}", highlight=False, markup=True)
        if a["status"] == "ran" and not prefix:
            _sentence_lines(console, a)
        if verbose and a["status"] == "ran":
            _sample_lines(console, a)


def _summary(console: Console, doc: dict[str, Any], written: list[str], verbose: bool = False) -> None:
    verdict = doc["verdict"]
    budget = doc.get("budget") or {}
    console.print(f"  budget: {terminal(budget.get('text', '?'))}", highlight=False, markup=True)
    _attack_lines(console, doc, verbose)
    _coverage_lines(console, doc, verbose)
    _context_lines(console, doc)
    style = {"pass": "bold green", "fail": "bold red", "error": "bold red"}.get(verdict["overall"], "bold yellow")
    other = [r["id"] for r in doc["rules"]["results"] if r["status"] == "not_applicable"]
    for r in doc["rules"]["results"]:
        # ids come from a user rule file, reasons may hold sample or model names: markup and controls escaped
        if r["status"] != "not_applicable" or verbose:
            console.print(_rule_line(r), highlight=False, markup=True)
    if other and not verbose:  # another modality's rules: one line, not one each
        console.print(f"  [dim]not applicable[/]  {len(other)} rule(s) that say nothing about "
                      f"{terminal(_modality(doc))} samples ({terminal(', '.join(other))}; --verbose lists them and "
                      "why)",
                      highlight=False, markup=True)
    console.print(f"[{style}]{terminal(verdict['summary'])}[/]", highlight=False)
    for path in written:
        console.print(f"report: {visible(path)}", highlight=False, markup=False)


def _coverage_lines(console: Console, doc: dict[str, Any], verbose: bool) -> None:
    coverage = doc.get("coverage")
    if not coverage or not coverage["audited"]:
        return
    interval = coverage["interval"]
    worst = coverage.get("worst") or {}
    what = words(_modality(doc)).counted
    console.print(f"  coverage: {coverage['recognised']} of {coverage['audited']} {what}(s) recognised "
                  f"({coverage['fraction'] * 100:.3g}%, 95% interval {interval['lower'] * 100:.3g}-"
                  f"{interval['upper'] * 100:.3g}% Clopper-Pearson) in {coverage['batches_run']} batch(es) of "
                  f"{coverage['batch_size']}; worst {terminal(worst.get('name', '-'))}", highlight=False,
                  markup=True)
    if worst.get("explanation"):  # what "recognised" rests on, in words a reviewer can check
        console.print(f"  {terminal(worst['name'])}: {terminal(worst['explanation'])}", highlight=False,
                      markup=True)
    if verbose:  # every sample's test, not only the worst one's
        for s in coverage.get("samples") or []:
            if s.get("explanation") and s.get("name") != worst.get("name"):
                console.print(f"  {terminal(s['name'])} (batch {s.get('batch', '?')}, best attack "
                              f"{terminal(s.get('attack') or '-')}): {terminal(s['explanation'])}",
                              highlight=False, markup=True)
    recognition = doc.get("recognition") or {}
    if recognition.get("text"):
        console.print(f"  chance: {terminal(recognition['text'])}", highlight=False, markup=True)
    every = (doc.get("records") or {}).get("columns") or []
    columns = [c for c in every if c["kind"] != "label"]
    if columns:  # the compliance reader's question: is the diagnosis column exposed?
        shown = ", ".join(f"{terminal(c['column'])} {c['recovered']}/{c['audited']}" for c in columns[:6])
        label = "".join(f"; label {terminal(c['column'])} {c['recovered']}/{c['audited']}" for c in every
                        if c["kind"] == "label")
        console.print(f"  columns recovered (most first): {shown}" + (" ..." if len(columns) > 6 else "") + label,
                      highlight=False, markup=True)


def _modality(doc: dict[str, Any]) -> str:
    return str((doc.get("data") or {}).get("modality") or "image")


def _context_lines(console: Console, doc: dict[str, Any]) -> None:
    """What bounds the verdict printed below it: the batch, BatchNorm statistics, a defense's cost, notes and
    detection's warnings."""
    threat = doc.get("threat_model") or {}
    if threat.get("client_batch_size") is not None:  # what the audited batch says about the real one
        console.print(f"  batch: {terminal(threat.get('batch_statement', ''))}", highlight=False, markup=True)
    statistics = doc.get("batchnorm_statistics")
    if statistics and statistics.get("leaks"):  # a feature leak: a warning, the verdict below does not count it
        console.print(f"  [yellow]warning:[/] {terminal(statistics['title'])}: {terminal(statistics['summary'])}",
                      highlight=False, markup=True)
    elif statistics:
        console.print(f"  note: {terminal(statistics['summary'])}", highlight=False, markup=True)
    if doc.get("defense_cost"):  # protection above, its price here
        console.print(f"  defense cost: {terminal(doc['defense_cost']['summary'])}", highlight=False, markup=True)
    from ..result import FLAT_NOTE

    for note in doc.get("notes", []):  # e.g. a batch size chosen for the model's BatchNorm layers
        # flat samples bound what the verdict means: a warning, like detection's below
        label = "[yellow]warning:[/]" if note.startswith(FLAT_NOTE) else "note:"
        console.print(f"  {label} {terminal(note)}", highlight=False, markup=True)
    # what detection doubts (an export that changed the model, randomness no attack models) bounds the verdict
    # below; a user reading only the terminal must see it too. Warnings name the model's file and layers.
    for warning in (doc.get("findings") or {}).get("warnings", []):
        console.print(f"  [yellow]warning:[/] {terminal(warning)}", highlight=False, markup=True)


_RULE_MARKS = {"pass": "[green]pass[/]", "fail": "[red]FAIL[/]", "warn": "[yellow]warn[/]",
               "not_evaluated": "[dim]not evaluated[/]", "suppressed": "[magenta]suppressed[/]",
               "not_applicable": "[dim]not applicable[/]"}


def _rule_line(r: dict[str, Any]) -> str:
    """One rule's result, its user-given text escaped for rich markup."""
    mark = _RULE_MARKS.get(r["status"], r["status"])
    observed = r["observed"]
    if r["status"] in ("not_evaluated", "not_applicable"):
        reason = r.get("reason") or "no value"
        shown = f"({reason[:117] + '...' if len(reason) > 120 else reason}; see the report)"
    elif observed is None and r.get("max_p") is not None:
        shown = "-> no reconstruction attributable to its sample"
    else:
        shown = "-> " + (f"{observed:.4g}" if isinstance(observed, float) else str(observed))
        shown += f" ({r['attack']})" if r.get("attack") else ""
    attributed = f" and match_p <= {r['max_p']:g}" if r.get("max_p") is not None else ""
    return (f"  {mark}  {terminal(r['id'])}: {terminal(r['metric'])} {r['comparison']} {r['threshold']}"
            f"{attributed} {terminal(shown)}")


def _append_step_summary(doc: dict[str, Any], rendered: dict[str, str]) -> tuple[str, str] | None:
    """Append the Markdown summary to the file GITHUB_STEP_SUMMARY names (GitHub Actions shows it on the job's
    page); (the file, why it failed or ""), or None when the variable is unset. A file that cannot be written is
    a warning, never a different exit code: the verdict and the reports stand."""
    import os

    target = os.environ.get("GITHUB_STEP_SUMMARY", "")
    if not target:
        return None
    text = rendered.get("markdown")
    if text is None:
        from ..report.markdown import render_markdown

        text = render_markdown(doc)
    try:
        with open(target, "a", encoding="utf-8") as f:
            f.write(text if text.endswith("\n") else text + "\n")
    except OSError as e:
        return target, e.strerror or type(e).__name__
    return target, ""


def scan_inputs(model: str, data: str, settings: ScanSettings, config_path: Path | None) -> list[tuple[str, Path]]:
    """The files (and the data folder) a scan reads: none of them may be an output."""
    inputs = [("the model", Path(model)), ("the --data input", Path(data))]
    if config_path is not None:
        inputs.append(("the config file", config_path))
    rules = Path(settings.rules)
    if rules.is_file():
        inputs.append(("the --rules file", rules))
    arch_file = (settings.arch or "").rpartition(":")[0]
    if arch_file.endswith(".py"):
        inputs.append(("the --arch file", Path(arch_file)))
    return inputs


@dataclass
class _ScanJob:
    """One ``scan`` command once its settings are resolved: what it reads and where its reports go."""

    model: str
    data: str
    settings: ScanSettings
    config_file: ConfigFile
    flags: dict[str, Any]  # the settings typed on the command line
    formats: tuple[Format, ...]
    file_formats: tuple[Format, ...]  # the formats written into --output-dir
    json_path: Path | None  # --output FILE
    to_stdout: bool  # --output -
    folder: OutputFolder | None = None  # --output-dir, once claimed; None when no report goes there


@app.command("scan", epilog=EXIT_CODES_HELP
             + " With --exit-zero a leak exits 0 (errors still exit 2/3, inconclusive 4).")
@options.with_settings("scan", after={"output": "formats"})
def scan(
    ctx: typer.Context,
    *,
    model: str = options.MODEL,
    data: str = options.DATA,
    given: options.GivenSettings,  # --arch ... --embed-data: the options of config.SETTINGS (see with_settings)
    output: Optional[str] = typer.Option(None, "--output", help="Where the JSON report goes: a file, or - for stdout."),
    resume: bool = typer.Option(False, "--resume", help="Continue an interrupted multi-batch scan from "
                                "scan-checkpoint.json in --output-dir (same model, data and settings): batches "
                                "done are kept, the others run."),
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Also show, after the scan, each attack's per-sample "
                                 "scores (the batch the report shows), every sample's recognition test in words "
                                 "(not only the worst one's) and the attacks' skip reasons in full."),
    config: Optional[str] = options.CONFIG,
    debug: bool = options.DEBUG,
) -> int:
    """Scan a model for gradient-inversion leakage and write JSON/HTML/JUnit/Markdown/SARIF reports.

    Every sample given is audited (or --samples N, drawn with the seed), in client batches of --batch-size.
    The report gives the fraction recognisably reconstructed, with its 95% interval."""
    job = _resolve_job(model, data, given, output, verbose, config)
    _claim_outputs(job)
    console = stderr_console()
    # A defense or rule profile from a config file changes the verdict with an unchanged command line: say so
    # now, and in the report (its notes, beside the reproduce command that spells them out).
    from_config = job.config_file.applied(job.flags)
    if from_config and not job.settings.quiet:
        console.print(terminal(from_config), highlight=False, markup=True)
    command = reproduce_command(model, data, job.settings)
    _hold_outputs(ctx, job, resume)
    result = _run_audit(job, console, command, resume)
    result = replace(result, notes=(*result.notes, *([from_config] if from_config else [])))
    for record in result.suppressions:  # even with --quiet: an accepted finding is never silent
        console.print(f"  {'[red]' if record.status == 'expired' else '[yellow]'}{terminal(record.line())}[/]",
                      highlight=False, soft_wrap=True)
    from ..report import build_document, render_all

    doc = build_document(result, embed_data=job.settings.embed_data)
    rendered = render_all(doc, job.formats)
    written = _write_reports(job, rendered)
    summary_file = _append_step_summary(doc, rendered)
    if not job.settings.quiet:
        _summary(console, doc, written, verbose)
    if summary_file is not None and summary_file[1]:  # even with --quiet: the CI page lacks what it expected
        console.print(f"[yellow]warning:[/] GITHUB_STEP_SUMMARY {terminal(summary_file[0])}: cannot append the "
                      f"summary ({terminal(summary_file[1])}); the reports are written", highlight=False)
    # The report's own exit code (leakaudit.verdict.outcome.decide), so the two can never disagree.
    return int(doc["verdict"]["exit_code"])


def _resolve_job(model: str, data: str, given: options.GivenSettings, output: str | None, verbose: bool,
                 config: str | None) -> _ScanJob:
    """Defaults < config file < flags, and where the reports go; InputError for a combination that cannot run."""
    from ..report import parse_formats
    from ..report.output import REPORT_NAMES, discard_previous

    try:
        config_file = load_config(config)
        flags = given.flags()
        settings = _ignore_file(resolve_settings(config_file, flags), model)
        formats = parse_formats(settings.formats)
        to_stdout = output == "-"
        json_path = Path(output) if output and not to_stdout else None
        file_formats = tuple(f for f in formats if not (f.name == "json" and (to_stdout or json_path)))
        if verbose and settings.quiet:
            raise InputError("--verbose: cannot be combined with --quiet, which prints nothing; choose one")
        if (to_stdout or json_path) and "json" not in {f.name for f in formats}:
            raise InputError(f"--output {output}: the JSON report is not among --format "
                             f"{','.join(settings.formats)}; add json to --format")
    except LeakauditError:
        # The run never learned its settings; the folder named on the command line must not keep the
        # previous run's report as if it were this one's (see leakaudit/report/output.py).
        if "output_dir" in given.typed:
            discard_previous(given.typed["output_dir"], REPORT_NAMES, keep=(model, data))
        raise
    return _ScanJob(model, data, settings, config_file, flags, formats, file_formats, json_path, to_stdout)


def _claim_outputs(job: _ScanJob) -> None:
    """Sets ``job.folder``; InputError when a report or the checkpoint would overwrite one of the scan's inputs."""
    from ..coverage import checkpoint
    from ..report.output import OutputFolder, refuse_inputs

    inputs = scan_inputs(job.model, job.data, job.settings, job.config_file.path)
    # only the files this run writes are replaced (--format json leaves a report.html alone), never an input
    if job.file_formats:
        job.folder = OutputFolder(job.settings.output_dir, tuple(f.filename for f in job.file_formats),
                                  keep=[p for _, p in inputs])
    folder = job.folder
    targets = [("--output-dir", p) for p in ([folder.folder, *folder.targets(), folder.folder / checkpoint.NAME]
                                             if folder else [])]
    targets += [("--output", job.json_path)] if job.json_path is not None else []
    refuse_inputs(targets, inputs)


def _hold_outputs(ctx: typer.Context, job: _ScanJob, resume: bool) -> None:
    """Before the model loads: a read-only, full or busy location is exit 2 now, and the previous set is gone,
    so a run that fails from here on leaves no stale report. The folder is held until the command returns."""
    from ..report.output import prepare_file

    if job.json_path is not None:
        prepare_file(job.json_path)
    if job.folder is not None:
        ctx.with_resource(job.folder)
    if resume and job.folder is None:
        raise InputError("--resume: the checkpoint lives in --output-dir, and this scan writes no report there; "
                         "leave out --output - / --format that exclude it")


def _run_audit(job: _ScanJob, console: Console, command: str, resume: bool) -> AuditResult:
    """The audit, checkpointed after every batch when it has several; the result carries the reproduce command
    (iterations a time limit chose pinned) and the note on the threads chosen."""
    import torch

    from ..audit import _now, prepare, run  # heavy imports (torch, attacks) only when a scan runs
    from ..coverage import checkpoint
    from ..coverage.executors import choose_threads
    from .progress import RichObserver

    settings, folder = job.settings, job.folder
    saved = Path(settings.output_dir) / checkpoint.NAME
    # Chosen, not torch's default (the machine's cores, blind to a container's quota and to --workers): an
    # oversubscribed 2-core machine ran a standard scan 7x slower. Workers and Ray tasks copy this count.
    threads, threads_note = choose_threads(settings)
    torch.set_num_threads(threads)
    # attributed: an error about a value the config file gave names the file and key, not a flag never typed
    with RichObserver(console, quiet=settings.quiet) as observer, job.config_file.attributed(job.flags):
        started = _now()
        prepared = prepare(job.model, job.data, settings, observer=observer)
        ident = checkpoint.identity(prepared, prepared.settings or settings)
        restored = checkpoint.read(saved, ident) if resume else ([], [])
        many = prepared.plan is not None and len(prepared.plan.batches) > 1

        # after every batch: what --resume continues from
        def on_batch(batches: Sequence[BatchCoverage], samples: Sequence[SampleCoverage]) -> None:
            if many and folder is not None:
                folder.put(checkpoint.NAME, checkpoint.dumps(ident, batches, samples))

        result = run(prepared, observer=observer, command=command, started=started, restored=restored,
                     on_batch=on_batch)
    if not result.incomplete and folder is not None:
        saved.unlink(missing_ok=True)  # complete: nothing to resume
    elif folder is not None and not saved.exists():  # stopped before any batch was recorded: --resume starts it
        folder.put(checkpoint.NAME, checkpoint.dumps(ident, [], []))
    fitted = result.fitted_iterations()
    if fitted:  # the iterations the time gave, pinned: the reproduce command repeats the scan on any machine
        pinned = replace(settings, attack_iterations={**settings.attack_iterations, **fitted})
        result = replace(result, command=reproduce_command(job.model, job.data, pinned))
    return replace(result, notes=(*result.notes, threads_note))


def _write_reports(job: _ScanJob, rendered: dict[str, str]) -> list[str]:
    """Every report file, all or nothing, then the JSON to stdout if asked; the paths written, folder first."""
    from ..report import write_atomic

    written: list[str] = []
    if job.json_path is not None:
        write_atomic(job.json_path, rendered["json"])
        written.append(str(job.json_path))
    if job.folder is not None:
        try:
            written[:0] = [str(p) for p in job.folder.commit({f.filename: rendered[f.name]
                                                              for f in job.file_formats})]
        except BaseException:
            if job.json_path is not None:  # all or nothing: a run that fails (exit 2) leaves no report anywhere
                job.json_path.unlink(missing_ok=True)
            raise
    if job.to_stdout:
        _write_stdout(rendered["json"])
    return written


def _ignore_file(settings: ScanSettings, model: str) -> ScanSettings:
    """The suppression file: --ignore-file (or the config's ignore-file), else .leakaudit-ignore.toml beside the
    model, when there is one (then named in the reproduce command). Read now, so a bad entry is exit 2 before
    the model loads."""
    from ..suppress import find_ignore_file, load_entries

    path = settings.ignore_file
    if path is None:
        found = find_ignore_file(model)
        if found is None:
            return settings
        path = str(found)
        settings = replace(settings, ignore_file=path)
    load_entries(path)
    return settings


@app.command("render", epilog="Exit codes: 0 written, 2 bad or unsupported report file, 3 internal error.")
def render(
    report: str = typer.Argument(..., help="report.json written by leakaudit scan.", show_default=False),
    output: Optional[str] = typer.Option(
        None, "--output", "-o", help="HTML file to write (default: report.html next to the JSON; - for stdout)."),
    format: str = typer.Option("html", "--format", help="Format to render: html, junit, markdown, sarif or json."),
    debug: bool = options.DEBUG,
) -> int:
    """Re-render a report (HTML by default) from a report.json alone."""
    from ..report import FORMATS, load_document, write_atomic
    from ..report.output import refuse_inputs

    doc = load_document(report)
    fmt = FORMATS.get(format.strip().lower())
    text = fmt.render(doc)
    if output == "-":
        _write_stdout(text)
        return EXIT_OK
    target = Path(output) if output else Path(report).with_name(fmt.filename)
    refuse_inputs([("--output", target)], [("the report to render", Path(report))])
    write_atomic(target, text, example=fmt.filename)
    typer.echo(f"wrote {visible(str(target))}", err=True)
    return EXIT_OK
