"""Bad sample data through `leakaudit scan` (issue 11): exit code 2, one line on stderr, no report written.

Before, these were exit 3 (DecompressionBombError, ValueError from int('²'), MemoryError) or a hang (FIFO).
"""

from __future__ import annotations

import json
import os
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from leakaudit.cli import app_main
from leakaudit.models import create_model
from leakaudit.models.safetensors_loader import save_safetensors

SHAPE = (3, 8, 8)


@pytest.fixture(scope="module")
def model(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("model") / "mlp.safetensors"
    save_safetensors(create_model("mlp", num_classes=4, input_shape=SHAPE), path, arch="mlp", input_shape=SHAPE,
                     num_classes=4)
    return path


def _bomb_png(folder: Path) -> Path:
    """A 30000x30000 PNG header (PIL's decompression-bomb size) in a labelled folder; no pixel data."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    folder.mkdir()
    ihdr = struct.pack(">IIBBBBB", 30000, 30000, 8, 2, 0, 0, 0)
    (folder / "a.png").write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0"))
                                   + chunk(b"IEND", b""))
    (folder / "labels.csv").write_text("file,label\na.png,1\n")
    return folder / "a.png"


def _superscript_label(folder: Path) -> Path:
    from PIL import Image

    folder.mkdir()
    Image.new("RGB", (8, 8)).save(folder / "a.png")
    (folder / "labels.csv").write_text("file,label\na.png,\u00b2\n", encoding="utf-8")
    return folder / "labels.csv"


def _fifo(folder: Path) -> Path:
    if not hasattr(os, "mkfifo"):
        pytest.skip("named pipes need a POSIX system")
    os.mkfifo(folder.parent / "x.npy")
    return folder.parent / "x.npy"


def _wrong_shape(folder: Path) -> Path:
    np.savez(folder.parent / "s.npz", x=np.zeros((1, 1, 28, 28), np.uint8), y=[1])
    return folder.parent / "s.npz"


@pytest.mark.parametrize("make, data_is_folder, message", [
    (_bomb_png, True, "image too large to decode safely"),
    (_superscript_label, True, "row 2 has label '\u00b2', not a class number"),
    (_fifo, False, "a named pipe (FIFO), not a regular file"),
    (_wrong_shape, False, "samples 'x' have shape (1, 28, 28) but the model takes (3, 8, 8)"),
])
def test_bad_samples_exit_2_with_one_line(model, tmp_path, capsys, make, data_is_folder, message) -> None:
    culprit = make(tmp_path / "data")
    data = tmp_path / "data" if data_is_folder else culprit
    out = tmp_path / "out"
    code = app_main(["scan", str(model), "--data", str(data), "--output-dir", str(out), "--budget", "quick",
                     "--quiet"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2
    assert len(err) == 1 and err[0].startswith(f"leakaudit: error: {culprit}: ") and message in err[0], err
    assert not (out / "report.json").exists()


def test_the_report_records_each_image_s_shape_before_it_was_resized(model, tmp_path, capsys):
    folder = tmp_path / "imgs"
    (folder / "1").mkdir(parents=True)
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (20, 12), dtype=np.uint8)).save(folder / "1" / "g.png")
    out = tmp_path / "out"
    code = app_main(["scan", str(model), "--data", str(folder), "--output-dir", str(out), "--attacks", "ig",
                     "--iterations", "1", "--restarts", "1", "-q"])
    capsys.readouterr()
    assert code in (0, 1, 4)
    report = json.loads((out / "report.json").read_text())
    assert report["data"]["shape"] == list(SHAPE)
    assert report["data"]["samples"][0]["original_shape"] == [1, 20, 12]  # grey 12x20, resized to 3x8x8
