"""A rule file the sweep cannot use is refused before the first value runs (it used to crash after all)."""

from __future__ import annotations

from pathlib import Path

from leakaudit.cli import app_main

EXAMPLES = Path(__file__).parents[2] / "examples"


def test_infinite_threshold_is_refused_before_any_value_runs(tmp_path, capsys):
    rules = tmp_path / "rules.toml"
    rules.write_text('[[rule]]\nid = "never"\nmetric = "psnr"\nthreshold = inf\n')
    out = tmp_path / "out"
    argv = ["sweep", str(EXAMPLES / "models" / "mlp.safetensors"), "--data", str(EXAMPLES / "samples"),
            "--attacks", "analytic", "--vary", "noise.sigma=0.01,0.1", "--rules", str(rules),
            "--output-dir", str(out), "--quiet"]
    assert app_main(argv) == 2
    err = capsys.readouterr().err
    assert "rules.toml: rule 1 ('never'): threshold inf is not finite" in err and err.count("\n") == 1, err
    assert not list(out.glob("sweep.*"))  # nothing ran, nothing written
