"""The HTML report in a real browser (headless Chromium over the DevTools protocol).

Checks what a reviewer relies on: the page renders without console errors, asks for nothing over the
network, shows the verdict and the evidence images, and user-controlled strings (layer and file names)
cannot run script. A negative control proves the console/network checks can fail.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from conftest import narrow_layout  # noqa: E402
from report_factory import XSS_IMG, XSS_SCRIPT, make_result  # noqa: E402

from leakaudit.report import build_document  # noqa: E402
from leakaudit.report.html import render_html  # noqa: E402

pytestmark = pytest.mark.browser

CHECKS = {
    "verdict_visible": "(() => { const e = document.getElementById('verdict'); if (!e) return false;"
                       " const r = e.getBoundingClientRect(); return r.width > 100 && r.height > 20"
                       " && getComputedStyle(e).visibility === 'visible'; })()",
    "verdict_text": "document.getElementById('verdict') ? document.getElementById('verdict').innerText : ''",
    "images": "document.images.length",
    "images_loaded": "Array.from(document.images).every(i => i.complete && i.naturalWidth > 0"
                     " && i.getBoundingClientRect().width > 50)",
    "scripts": "document.scripts.length",
    "injected_img": "Array.from(document.images).filter(i => !i.src.startsWith('data:')).length",
}


def _external(urls: list[str]) -> list[str]:
    return [u for u in urls if not u.startswith(("file:", "data:", "about:"))]


def _write(tmp_path: Path, name: str, html: str) -> Path:
    page = tmp_path / name
    page.write_text(html, encoding="utf-8")
    return page


def test_report_renders_offline_with_verdict_and_images(tmp_path, browser_visit, artifacts_dir):
    page = _write(tmp_path, "report.html", render_html(build_document(make_result(), embed_data=True)))
    visit = browser_visit(page, CHECKS)
    (artifacts_dir / "report-browser.png").write_bytes(visit.screenshot)
    assert visit.console_errors == []
    assert _external(visit.requests) == []
    ev = visit.evaluations
    assert ev["verdict_visible"] is True and "LEAK" in ev["verdict_text"]
    assert ev["images"] == 4 and ev["images_loaded"] is True  # 2 originals + 2 reconstructions
    assert visit.screenshot.startswith(b"\x89PNG") and len(visit.screenshot) > 10_000


def test_injected_layer_and_file_names_do_not_run(tmp_path, browser_visit, artifacts_dir):
    result = make_result(layer_name=XSS_SCRIPT, sample_name=XSS_IMG)
    page = _write(tmp_path, "xss.html", render_html(build_document(result)))
    visit = browser_visit(page, {**CHECKS, "body_text": "document.body.innerText"})
    (artifacts_dir / "report-browser-xss.png").write_bytes(visit.screenshot)
    assert visit.title == f"leakaudit: FAIL {result.model.path}"  # the injected text, shown; not 'pwned'

    assert visit.evaluations["scripts"] == 0 and visit.evaluations["injected_img"] == 0
    assert XSS_SCRIPT in visit.evaluations["body_text"]  # shown as text, verbatim
    assert visit.console_errors == [] and _external(visit.requests) == []


def test_negative_control_the_checks_catch_script_and_external_requests(tmp_path, browser_visit):
    """Without escaping and without the CSP, the same probes must see the script run and the request."""
    html = render_html(build_document(make_result()))
    html = html.replace('<meta http-equiv="Content-Security-Policy"', '<meta name="x-removed"')
    html = html.replace("</main>", "<script>document.title='pwned'; console.error('boom')</script>"
                                   "<img src='http://127.0.0.1:9/x.png'></main>")
    visit = browser_visit(_write(tmp_path, "unsafe.html", html), CHECKS)
    assert visit.title == "pwned"
    assert any("boom" in e for e in visit.console_errors)
    assert _external(visit.requests) == ["http://127.0.0.1:9/x.png"]


def test_csp_blocks_what_escaping_might_miss(tmp_path, browser_visit):
    """Defence in depth: with the CSP kept, an injected script and remote image are blocked by the browser."""
    html = render_html(build_document(make_result()))
    html = html.replace("</main>", "<script>document.title='pwned'</script><img src='http://127.0.0.1:9/x.png'></main>")
    visit = browser_visit(_write(tmp_path, "csp.html", html), CHECKS)
    assert visit.title != "pwned"
    assert _external(visit.requests) == [] and visit.blocked == ["http://127.0.0.1:9/x.png"]
    assert any("Content Security Policy" in e for e in visit.console_errors)


EVIL_ARCH = '''
import math
from torch import nn
from leakaudit.models.layers import MaskableDropout


def evil(num_classes=4, input_shape=(3, 16, 16)):
    m = nn.Sequential()
    m.add_module("flat", nn.Flatten())
    m.add_module("<script>window['document']['title']='pwned'</script>", nn.Linear(math.prod(input_shape), 16))
    m.add_module("relu", nn.ReLU())
    m.add_module("drop<img src=x onerror=alert(1)>", MaskableDropout(0.25))
    m.add_module("head", nn.Linear(16, num_classes))
    return m
'''


def test_real_scan_of_a_model_with_script_layer_names_and_file_names(tmp_path, browser_visit, artifacts_dir,
                                                                       monkeypatch):
    """End to end: user-controlled layer names (from the model) and file names (from --data) are inert."""
    import json

    import numpy as np

    from leakaudit.cli import app_main
    from leakaudit.models.safetensors_loader import save_safetensors

    monkeypatch.chdir(tmp_path)
    (tmp_path / "evil_arch.py").write_text(EVIL_ARCH)
    monkeypatch.syspath_prepend(str(tmp_path))
    from evil_arch import evil

    save_safetensors(evil(), tmp_path / "evil.safetensors", input_shape=(3, 16, 16), num_classes=4)
    data = "\"><img src=x onerror=\"document.title='pwned2'\">.npz"
    np.savez(tmp_path / data, x=np.random.default_rng(0).random((1, 3, 16, 16), dtype=np.float32), y=np.array([1]))
    code = app_main(["scan", "evil.safetensors", "--arch", "evil_arch.py:evil", "--data", data,
                     "--attacks", "analytic", "--output-dir", "out", "--quiet", "--embed-data"])
    assert code == 1
    doc = json.loads((tmp_path / "out" / "report.json").read_text())
    assert doc["findings"]["dropout"][0]["name"] == "drop<img src=x onerror=alert(1)>"  # kept verbatim in JSON
    visit = browser_visit(tmp_path / "out" / "report.html", {**CHECKS, "body_text": "document.body.innerText"})
    (artifacts_dir / "report-browser-xss-scan.png").write_bytes(visit.screenshot)
    assert visit.title == "leakaudit: FAIL evil.safetensors"
    assert visit.evaluations["scripts"] == 0 and visit.evaluations["injected_img"] == 0
    assert "drop<img src=x onerror=alert(1)>" in visit.evaluations["body_text"]
    assert "<script>window['document']['title']='pwned'</script>" in visit.evaluations["body_text"]
    assert visit.console_errors == [] and _external(visit.requests) == []


PHONE = 390  # CSS pixels: an iPhone 12-15's screen width


@pytest.fixture(scope="module")
def full_report() -> str:
    """A report with every section a scan of several samples writes: coverage (its histogram, per-label and
    per-sample tables), a simulated defense (cost, control), rules, attacks, model layers; a long file name."""
    import torch
    from torch import nn

    import leakaudit
    from leakaudit.data import SampleBatch, normalization

    torch.manual_seed(0)
    net = nn.Sequential(nn.Flatten(), nn.Linear(3 * 8 * 8, 16), nn.ReLU(), nn.Dropout(0.25), nn.Linear(16, 3))
    pixels = torch.rand(6, 3, 8, 8)
    names = tuple(f"a_rather_long_unbroken_file_name_from_the_users_dataset_{i}.png" for i in range(6))
    batch = SampleBatch(pixels, torch.tensor([0, 1, 2, 0, 1, 2]), pixels, names, "in memory",
                        normalization("none", channels=3))
    result = leakaudit.audit(net, batch, attacks=("analytic",), defenses=("noise:sigma=0.3",))
    return render_html(build_document(result, embed_data=True))


def test_report_fits_a_phone_screen_and_its_verdict_is_in_a_landmark(tmp_path, browser_visit, artifacts_dir,
                                                                      full_report):
    visit = browser_visit(_write(tmp_path, "phone.html", full_report), {"layout": narrow_layout(PHONE)}, width=PHONE)
    (artifacts_dir / "report-browser-phone.png").write_bytes(visit.screenshot)
    layout = visit.evaluations["layout"]
    assert layout["tables"] >= 6  # the page measured has the report's wide tables
    assert layout["tables_off_screen"] == 0 and layout["overflowing"] == []
    assert layout["scroll_width"] <= PHONE  # the page itself never scrolls sideways
    assert layout["histograms"] and all(0 < w <= PHONE for w in layout["histograms"])
    assert layout["tables_scrolled"] >= 1  # the wide ones scroll in their own box rather than squeeze
    assert layout["banner_landmark"] == "header"
    assert visit.console_errors == []


def test_negative_control_a_table_without_its_scroll_box_runs_off_the_phone_screen(tmp_path, browser_visit,
                                                                                    full_report):
    html = full_report.replace('class="table-scroll"', 'class="x-removed"').replace("<header>", "<div>") \
        .replace("</header>", "</div>")
    layout = browser_visit(_write(tmp_path, "unwrapped.html", html), {"layout": narrow_layout(PHONE)},
                           width=PHONE).evaluations["layout"]
    assert layout["tables_off_screen"] >= 1 and layout["scroll_width"] > PHONE
    assert layout["banner_landmark"] is None
