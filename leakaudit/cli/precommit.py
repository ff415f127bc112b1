"""``leakaudit-pre-commit``: the entry of the pre-commit hook (``.pre-commit-hooks.yaml``). pre-commit calls it
with the hook's ``args`` followed by the staged model files; ``leakaudit scan`` takes one model, so this scans
each in turn with the same options, each into a folder of its own, and exits with the worst code."""

from __future__ import annotations

import sys
from pathlib import Path

MODEL_SUFFIXES = (".onnx", ".safetensors")
USAGE = ("leakaudit-pre-commit: no model file given; pre-commit passes the staged .onnx/.safetensors files after "
         "the hook's args (e.g. args: [--data, privacy-samples/])")


def split(argv: list[str]) -> tuple[list[str], list[str]]:
    """(scan options, model files): the models are the trailing arguments with a model's suffix, as pre-commit
    appends them; one that is an option's value (``--reference-data refs.safetensors``) stays an option."""
    end = len(argv)
    while end > 0 and argv[end - 1].lower().endswith(MODEL_SUFFIXES) and not (
            end >= 2 and argv[end - 2].startswith("-") and "=" not in argv[end - 2]):
        end -= 1
    return argv[:end], argv[end:]


def report_dir(options: list[str], model: str) -> tuple[list[str], str]:
    """The options with --output-dir replaced by a folder for ``model`` under it (default leakaudit-report), so
    that one model's reports do not replace another's."""
    base, rest, i = "leakaudit-report", [], 0
    while i < len(options):
        if options[i] == "--output-dir" and i + 1 < len(options):
            base, i = options[i + 1], i + 2
            continue
        if options[i].startswith("--output-dir="):
            base = options[i].partition("=")[2]
        else:
            rest.append(options[i])
        i += 1
    path = Path(model).with_suffix("")
    parts = [p for p in path.parts[len(path.anchor and path.parts[:1]):] if p not in ("", ".", "..")]
    name = "-".join(parts) or "model"
    return rest, str(Path(base) / name)


def main(argv: list[str] | None = None) -> int:
    from . import app_main

    options, models = split(list(sys.argv[1:] if argv is None else argv))
    if not models:
        sys.stderr.write(USAGE + "\n")
        return 2
    codes = []
    for model in models:
        rest, folder = report_dir(options, model)
        code = app_main(["scan", model, *rest, "--output-dir", folder])
        sys.stderr.write(f"leakaudit-pre-commit: {model}: exit {code} (reports in {folder})\n")
        codes.append(code)
    # the worst first: an error or interruption, then a leak, then inconclusive
    return next((c for c in (3, 2, 130, 1, 4) if c in codes), max(codes))


if __name__ == "__main__":
    sys.exit(main())
