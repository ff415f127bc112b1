"""Commands that need no model start without torch (issue 8: ``--help``, ``rules``, ``render`` under 0.5 s; torch
alone takes a second or more to import). Checked by what a fresh process imported, not by a timer: the times
are measured by ``benchmarks/bench_startup.py``."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from leakaudit.cli import app_main

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
HEAVY = ("torch", "numpy", "scipy", "onnx", "onnxruntime", "PIL", "lpips", "torchvision")


def _heavy_imports(*args: str, cwd: Path, watch: tuple[str, ...] = HEAVY) -> list[str]:
    """The modules of ``watch`` a fresh ``leakaudit ARGS`` process had imported when it exited (exit 0 required)."""
    code = ("import atexit, sys\n"
            f"atexit.register(lambda: print('heavy:', sorted(m for m in {watch!r} if m in sys.modules)))\n"
            "from leakaudit.cli import main\n"
            "sys.argv = ['leakaudit', *sys.argv[1:]]\n"
            "main()\n")
    done = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=300, cwd=cwd)
    assert done.returncode == 0, done.stderr
    return eval(done.stdout.rpartition("heavy: ")[2])  # noqa: S307 -- our own print of a list of names


def test_importing_the_cli_package_imports_no_torch():
    code = "import sys, leakaudit.cli, leakaudit.config; print('torch' in sys.modules, 'numpy' in sys.modules)"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.stdout.split() == ["False", "False"], done.stderr


@pytest.mark.parametrize("args", [["--help"], ["--version"], ["rules"], ["rules", "--json"], ["scan", "--help"],
                                  ["sweep", "--help"], ["inspect", "--help"]])
def test_commands_that_need_no_model_import_no_torch(tmp_path, args):
    assert _heavy_imports(*args, cwd=tmp_path) == []


def test_render_imports_no_torch(tmp_path):
    out = tmp_path / "r"
    assert app_main(["scan", str(EXAMPLES / "models" / "mlp.safetensors"), "--data", str(EXAMPLES / "samples"),
                     "--attacks", "analytic", "--iterations", "1", "--quiet", "--exit-zero", "--format", "json",
                     "--output-dir", str(out)]) == 0
    assert _heavy_imports("render", str(out / "report.json"), cwd=tmp_path) == []
    assert (out / "report.html").read_text(encoding="utf-8").startswith("<!DOCTYPE html>")


def test_a_safetensors_scan_imports_neither_the_onnx_stack_nor_dynamo(tmp_path):
    # onnx, onnx2torch (which imports torchvision, which imports torch._dynamo) and dynamo itself were ~2 s of
    # every scan's start-up, a third of a short CI scan (issue 8's whole-process goal); a safetensors model
    # needs none of them.
    args = ["scan", str(EXAMPLES / "models" / "mlp.safetensors"), "--data", str(EXAMPLES / "samples"),
            "--attacks", "analytic", "--batch-size", "1", "--quiet", "--exit-zero",
            "--format", "json", "--output-dir", str(tmp_path / "r")]
    assert _heavy_imports(*args, cwd=tmp_path, watch=("onnx", "onnx2torch", "torchvision", "torch._dynamo")) == []
    assert (tmp_path / "r" / "report.json").is_file()


def test_an_onnx_scan_of_batches_of_one_imports_neither_torchvision_nor_dynamo_nor_scipy(tmp_path):
    # onnx2torch's NonMaxSuppression and RoiAlign converters import torchvision, which imports torch._dynamo and
    # sympy; scipy's assignment is not needed to pair one reconstruction with one original. Together ~1.6 CPU-s
    # and ~180 MiB of the README's quick-start scan, paid by every worker process (benchmarks/bench_startup.py
    # --onnx measures it).
    args = ["scan", str(EXAMPLES / "models" / "mlp_dropout.onnx"), "--data", str(EXAMPLES / "samples"),
            "--samples", "1", "--attacks", "analytic", "--quiet", "--exit-zero",
            "--format", "json", "--output-dir", str(tmp_path / "r")]
    assert _heavy_imports(*args, cwd=tmp_path, watch=("onnx2torch", "torchvision", "torch._dynamo", "sympy",
                                                   "scipy")) == [
        "onnx2torch"]
    assert (tmp_path / "r" / "report.json").is_file()
