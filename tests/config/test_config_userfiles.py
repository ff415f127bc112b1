"""User-named files that are not plain small text (devices, FIFOs, folders, huge, not UTF-8, nested
thousands deep, NaN in JSON) give exit 2 with one line naming the file, never a hang, MemoryError or
RecursionError."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from leakaudit.cli import app_main
from leakaudit.config import load_config
from leakaudit.errors import ConfigError, InputError
from leakaudit.userfiles import MAX_DEPTH, TEXT_LIMIT, parse_json, parse_toml, read_user_text
from leakaudit.verdict import load_rules

needs_dev_zero = pytest.mark.skipif(not Path("/dev/zero").exists(), reason="no /dev/zero on this platform")
needs_fifo = pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no FIFOs on this platform")


def read(path: Path) -> str:
    return read_user_text(path, InputError, missing=f"{path}: missing; fix", unreadable=f"{path}: ({{e}}); fix")


def deep_toml(depth: int) -> str:
    return "a = " + "[" * depth + "]" * depth + "\n"


@needs_dev_zero
def test_a_device_is_refused_without_reading_it():
    with pytest.raises(InputError, match=r"^/dev/zero: \(a device, not a regular file\); fix$"):
        read(Path("/dev/zero"))


@needs_fifo
def test_a_fifo_is_refused_without_blocking(tmp_path):
    fifo = tmp_path / "pipe.toml"
    os.mkfifo(fifo)  # no writer: a blocking open would hang the test
    with pytest.raises(ConfigError,
                       match=r"pipe\.toml: cannot read config file \(a named pipe \(FIFO\), not a regular"):
        load_config(fifo)


def test_a_folder_is_refused(tmp_path):
    with pytest.raises(InputError, match=r": \(a folder, not a regular file\); fix$"):
        read(tmp_path)


def test_a_file_above_the_limit_is_refused(tmp_path):
    big = tmp_path / "big.toml"
    big.write_text("#" * TEXT_LIMIT + "\n")
    with pytest.raises(ConfigError, match=r"big\.toml: cannot read config file \(larger than the 1\.0 MiB"):
        load_config(big)


def test_text_that_is_not_utf8_names_the_byte(tmp_path):
    latin1 = tmp_path / "latin1.toml"
    latin1.write_bytes(b'budget = "qu\xe9ck"\n')
    with pytest.raises(ConfigError, match=r"latin1\.toml: cannot read config file \(not UTF-8 text: byte 0xe9 at "
                                          r"offset 12\); give a readable UTF-8 TOML file"):
        load_config(latin1)


@pytest.mark.parametrize("depth", [MAX_DEPTH + 1, 20_000])  # refused by the depth check / by the parser
def test_deeply_nested_toml_config_is_an_error_not_a_recursion_error(tmp_path, depth):
    path = tmp_path / "deep.toml"
    path.write_text(deep_toml(depth))
    with pytest.raises(ConfigError, match=rf"deep\.toml: nested more than {MAX_DEPTH} levels deep, which no leakaudit "
                                          r"file needs; fix the syntax"):
        load_config(path)


def test_deeply_nested_rule_file_is_an_error_not_a_recursion_error(tmp_path):
    path = tmp_path / "deep_rules.toml"
    path.write_text('description = "x"\n' + deep_toml(20_000).replace("a =", "rule ="))
    with pytest.raises(ConfigError, match=r"deep_rules\.toml: nested more than \d+ levels deep"):
        load_rules(path)


def test_nesting_within_the_limit_parses():
    assert parse_toml(deep_toml(MAX_DEPTH - 1), "ok.toml", ConfigError, "fix")["a"]


def test_toml_parser_messages_become_one_line():
    with pytest.raises(ConfigError) as info:
        parse_toml('a = "unterminated\n', "x.toml", ConfigError, "fix the syntax")
    assert "\n" not in str(info.value) and str(info.value).startswith("x.toml: invalid TOML (")


@pytest.mark.parametrize("literal", ["NaN", "Infinity", "-Infinity", "1e400"])
def test_json_numbers_must_be_finite(literal):
    with pytest.raises(InputError, match=rf"r\.json: holds the number {literal}, which is not finite.*; fix$"):
        parse_json(f'{{"a": {literal}}}', "r.json", InputError, "fix")


# ---------------------------------------------------------------------------- through the CLI (exit 2)


def fails(argv: list[str], capsys: pytest.CaptureFixture[str], message: str) -> None:
    assert app_main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("leakaudit: error: "), err
    assert message in err, err


@needs_dev_zero
def test_render_dev_zero(capsys):
    fails(["render", "/dev/zero"], capsys, "/dev/zero: cannot read (a device, not a regular file); pass a readable")


@needs_dev_zero
def test_rules_file_dev_zero_is_not_reported_missing(capsys):
    fails(["rules", "--file", "/dev/zero"], capsys, "/dev/zero: cannot read the rule file (a device, not a regular")


def test_render_a_report_holding_nan_is_refused(tmp_path, capsys):
    report = tmp_path / "report.json"
    report.write_text(json.dumps({"schema_version": "1.0", "duration_seconds": float("nan")}))
    fails(["render", str(report), "--format", "json", "-o", "-"], capsys,
          "report.json: holds the number NaN, which is not finite (JSON numbers must be); pass the report.json")


def test_render_deeply_nested_json(tmp_path, capsys):
    report = tmp_path / "report.json"
    report.write_text('{"schema_version": "1.0", "x": ' + "[" * 100_000 + "]" * 100_000 + "}")
    fails(["render", str(report)], capsys, "report.json: nested more than")
