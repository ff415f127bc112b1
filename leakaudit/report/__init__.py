"""Reports: the versioned document and the formats rendered from it.

``build_document(result)`` turns an ``AuditResult`` into the report document; each format in ``FORMATS``
renders that document alone (so ``leakaudit render report.json`` reproduces the HTML). ``write_reports``
writes the set through ``output.OutputFolder``: locked folder, previous set removed, temp files renamed into
place with the manifest last, so a reader never sees half a report or two runs mixed (see ``output``).
"""

from __future__ import annotations

import json as _json  # not "json": the submodule .json would shadow it here
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from ..errors import ConfigError, InputError, setting_ref
from ..registry import Registry
from ..resources import read_report_file
from ..userfiles import REPORT_LIMIT, parse_json, read_user_text
from .html import render_html
from .json import render_json
from .junit import render_junit
from .markdown import render_markdown
from .sarif import render_sarif
from .output import OutputFolder, write_atomic

# named in messages: the CLI shows each as its option, a Python caller reads the setting (or argument)
FORMAT_SETTING = setting_ref("formats")


@dataclass(frozen=True)
class Format:
    name: str
    filename: str  # file written in the output folder
    render: Callable[[dict[str, Any]], str]
    description: str


FORMATS: Registry[Format] = Registry("report format")
for _f in (
    Format("json", "report.json", render_json, "the full report (schema reports/report.schema.json)"),
    Format("html", "report.html", render_html, "self-contained page for people (no network, no script)"),
    Format("junit", "report.junit.xml", render_junit, "JUnit XML, one test case per rule, for CI test views"),
    Format("markdown", "report.md", render_markdown, "a Markdown summary for a CI job page (GITHUB_STEP_SUMMARY)"),
    Format("sarif", "report.sarif", render_sarif, "SARIF 2.1.0 for code-scanning views: failed rules, recognised "
           "samples"),
):
    FORMATS.register(_f.name)(_f)


def parse_formats(names: tuple[str, ...] | list[str], where: str = FORMAT_SETTING) -> tuple[Format, ...]:
    if not names:
        raise ConfigError(f"{where}: no format given; use e.g. {FORMAT_SETTING} json,html")
    out: list[Format] = []
    for name in names:
        try:
            fmt = FORMATS.get(name)
        except ConfigError as e:
            raise ConfigError(f"{where}: {e}") from None
        if fmt not in out:
            out.append(fmt)
    return tuple(out)


def render_all(doc: dict[str, Any], formats: tuple[Format, ...]) -> dict[str, str]:
    """Render every format first, so a renderer error leaves no file behind."""
    return {f.name: f.render(doc) for f in formats}


def write_reports(doc: dict[str, Any], output_dir: str | Path, formats: tuple[Format, ...]) -> list[Path]:
    """Render every format, then write them as one set (see ``output``): the previous set goes, the new one
    appears with its manifest last; an OS error is an OutputError (exit 2) and leaves no set."""
    rendered = render_all(doc, formats)
    with OutputFolder(output_dir, tuple(f.filename for f in formats)) as folder:  # only what this run replaces
        return folder.commit({f.filename: rendered[f.name] for f in formats})


def schema() -> dict[str, Any]:
    return _json.loads(read_report_file("report.schema.json"))


def validate_document(doc: Any, where: str) -> dict[str, Any]:
    """Check a document read from a file before rendering it; one-line InputError naming the file."""
    if not isinstance(doc, dict) or "schema_version" not in doc:
        raise InputError(f"{where}: not a leakaudit report (no schema_version); pass the report.json a scan wrote")
    major = str(doc["schema_version"]).split(".")[0]
    expected = schema()["properties"]["schema_version"]["enum"][-1]  # the versions read, newest last
    if major != expected.split(".")[0]:
        raise InputError(f"{where}: report schema {doc['schema_version']} is not supported (this leakaudit reads "
                         f"{expected}); render it with the leakaudit version that wrote it")
    import jsonschema  # a runtime dependency: a report read back is always checked against its schema

    error = jsonschema.exceptions.best_match(jsonschema.Draft202012Validator(schema()).iter_errors(doc))
    if error is not None:
        at = "/".join(str(p) for p in error.absolute_path) or "(top level)"
        raise InputError(f"{where}: invalid report at {at}: {error.message}; re-run the scan to get a valid report")
    return doc


def load_document(path: str | Path) -> dict[str, Any]:
    """A report.json read back, strict JSON only: a NaN/Infinity literal is refused (exit 2) rather than read,
    since no leakaudit writes one and it could not be rendered back as JSON."""
    path = Path(path)
    text = read_user_text(path, InputError, limit=REPORT_LIMIT,
                          missing=f"{path}: file not found; pass the report.json written by leakaudit scan",
                          unreadable=f"{path}: cannot read ({{e}}); pass a readable report.json")
    doc = parse_json(text, str(path), InputError, "pass the report.json a scan wrote")
    return validate_document(doc, str(path))


def __getattr__(name: str) -> Any:  # build_document imports audit (torch): load it only when asked
    if name == "build_document":
        from .document import build_document

        return build_document
    raise AttributeError(name)


__all__ = ["FORMATS", "Format", "build_document", "load_document", "parse_formats", "render_all",
           "validate_document", "write_atomic", "write_reports"]
