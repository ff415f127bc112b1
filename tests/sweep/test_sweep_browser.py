"""sweep.html in a real browser (headless Chromium, the report tests' DevTools driver): it renders offline
with no console errors, its plots and reconstructions load, the threshold is visible, and user strings
cannot run script. A screenshot is kept as a test artifact."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).parent
sys.path.insert(0, str(HERE))
from sweep_factory import CONTEXT, VARY, Recorder, png_uri, synthetic_point  # noqa: E402

from leakaudit.sweep import run_sweep  # noqa: E402
from leakaudit.sweep import jsonio  # noqa: E402
from leakaudit.sweep.html import render_html  # noqa: E402

# The browser fixtures live in the report tests' conftest; load it under its own name (no name clash).
_spec = importlib.util.spec_from_file_location("_report_browser_fixtures", HERE.parent / "report" / "conftest.py")
_fixtures = importlib.util.module_from_spec(_spec)
sys.modules[_spec.name] = _fixtures  # its dataclasses look their module up there
_spec.loader.exec_module(_fixtures)
chromium_path = _fixtures.chromium_path
browser_visit = _fixtures.browser_visit
artifacts_dir = _fixtures.artifacts_dir

pytestmark = pytest.mark.browser

CHECKS = {
    "banner": "(() => { const e = document.querySelector('.banner'); if (!e) return ''; const r ="
              " e.getBoundingClientRect(); return r.width > 100 && r.height > 20 ? e.innerText : ''; })()",
    "figures": "document.querySelectorAll('.plots figure img').length",
    "plots_loaded": "Array.from(document.querySelectorAll('.plots img')).every(i => i.complete"
                    " && i.naturalWidth > 200 && i.getBoundingClientRect().width > 200)",
    "images": "document.images.length",
    "images_loaded": "Array.from(document.images).every(i => i.complete && i.naturalWidth > 0)",
    "scripts": "document.scripts.length",
    "non_data_images": "Array.from(document.images).filter(i => !i.src.startsWith('data:')).length",
}


def _external(urls):
    return [u for u in urls if not u.startswith(("file:", "data:", "about:"))]


def test_sweep_page_renders_offline_with_plots(tmp_path, browser_visit, artifacts_dir):
    doc = jsonio.to_dict(run_sweep(VARY, Recorder(fail_on={0.05}), context=CONTEXT), VARY)
    page = tmp_path / "sweep.html"
    page.write_text(render_html(doc, originals=[png_uri(5), png_uri(6)]), encoding="utf-8")
    visit = browser_visit(page, CHECKS)
    (artifacts_dir / "sweep-browser.png").write_bytes(visit.screenshot)
    ev = visit.evaluations
    assert visit.console_errors == []
    assert _external(visit.requests) == []
    assert "noise.sigma=0.08 is the weakest tested setting" in ev["banner"]
    assert ev["figures"] == 1 and ev["plots_loaded"] is True  # ssim; lpips has no value anywhere
    # 1 plot + 2 originals + 2 reconstructions at each of the 4 values that ran (0.05 failed)
    assert ev["images"] == 1 + 2 + 2 * 4 and ev["images_loaded"] is True
    assert visit.screenshot.startswith(b"\x89PNG")


def test_injected_names_do_not_run(tmp_path, browser_visit):
    evil = "<img src=x onerror=\"document.title='pwned'\"><script>document.title='pwned'</script>"
    ctx = {**CONTEXT, "model": {**CONTEXT["model"], "path": evil}, "data": {"source": evil}, "command": evil}
    doc = jsonio.to_dict(run_sweep(VARY, lambda v: synthetic_point(v, attack=evil), context=ctx), VARY)
    page = tmp_path / "xss.html"
    page.write_text(render_html(doc), encoding="utf-8")
    visit = browser_visit(page, CHECKS)
    assert visit.title != "pwned"
    assert visit.evaluations["scripts"] == 0
    assert visit.evaluations["non_data_images"] == 0
    assert _external(visit.requests) == []


def test_sweep_page_fits_a_phone_screen_and_its_banner_is_in_a_landmark(tmp_path, browser_visit, artifacts_dir):
    doc = jsonio.to_dict(run_sweep(VARY, Recorder(fail_on={0.05}), context=CONTEXT), VARY)
    page = tmp_path / "sweep-phone.html"
    page.write_text(render_html(doc, originals=[png_uri(5), png_uri(6)]), encoding="utf-8")
    visit = browser_visit(page, {"layout": _fixtures.narrow_layout(390)}, width=390)
    (artifacts_dir / "sweep-browser-phone.png").write_bytes(visit.screenshot)
    layout = visit.evaluations["layout"]
    assert layout["tables"] == 2 and layout["tables_off_screen"] == 0 and layout["overflowing"] == []
    assert layout["scroll_width"] <= 390
    assert layout["banner_landmark"] == "main"
