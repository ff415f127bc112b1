"""benchmarks/reproduce.py writes a results page with its command, machine, budget and date and only
measured rows (table D alone here: analytic attack, seconds)."""

import importlib.util
import re
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "reproduce.py"


def load_script():
    spec = importlib.util.spec_from_file_location("leakaudit_reproduce", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def test_quick_defense_table(tmp_path):
    out = tmp_path / "results.md"
    assert load_script().main(["--quick", "--tables", "D", "--output", str(out)]) == 0
    text = out.read_text()
    for field in ("- command: `python benchmarks/reproduce.py --quick --tables D", "- date: ", "- machine: ",
                  "- budget: `quick`", "- wall time: "):
        assert field in text
    rows = {m.group(1): m.group(2) for m in re.finditer(r"^\| (\w+\.\w+) \| [^|]+ \| ([^|]+) \|", text, re.M)}
    assert set(rows) == {"noise.sigma", "clip.norm", "prune.keep", "mask.fraction"}
    tested = {"noise.sigma": {"0.001", "0.01", "0.1"}, "mask.fraction": {"0.5", "0.9", "0.99"},
              "clip.norm": {"0.1", "1", "10"}, "prune.keep": {"0.01", "0.1", "0.5"}}
    for knob, threshold in rows.items():
        assert threshold.strip() in tested[knob] | {"—"}  # a tested value or none: never an invented number
    # exact inversion under negligible noise, destroyed by sigma 0.1 (the analytic attack's known behaviour)
    assert "noise.sigma | 0.001,0.01,0.1 | 0.1 |" in text
