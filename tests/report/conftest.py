"""Headless Chromium for the report browser tests, driven over the DevTools protocol (--remote-debugging-pipe).

The session fixture finds ``chromium``; when it is missing and we run as root it installs Debian's package
(``apt-get update`` then ``apt-get install -y chromium``). Tests skip, with the reason, only where it cannot
be installed. No network is needed by the page: the browser is also told not to talk to Google services.
"""

from __future__ import annotations

import json
import os
import select
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

BROWSER_NAMES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")


def _find_browser() -> str | None:
    for name in BROWSER_NAMES:
        path = shutil.which(name)
        if path:
            return path
    return None


def _install_chromium() -> str:
    """'' on success, else why it could not be installed."""
    if not hasattr(os, "geteuid") or os.geteuid() != 0:
        return "chromium is not installed and the tests are not running as root (install Debian's chromium package)"
    if not shutil.which("apt-get"):
        return "chromium is not installed and apt-get is not available"
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for cmd in (["apt-get", "update", "-qq"], ["apt-get", "install", "-y", "-qq", "chromium"]):
        try:
            done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=900)
        except (OSError, subprocess.TimeoutExpired) as e:
            return f"{' '.join(cmd)} failed: {e}"
        if done.returncode != 0:
            return f"{' '.join(cmd)} failed (exit {done.returncode}): {done.stderr.strip()[-300:]}"
    return ""


def narrow_layout(width: int) -> str:
    """A page expression: how the page lays out on a screen ``width`` CSS pixels wide, with every <details>
    opened (a folded table must fit too). An element overflows when its box passes the screen's edges and no
    scroll container that itself fits holds it; a table fits or sits in such a container. The layout viewport
    of a mobile browser widens to its content, so the edge is ``width``, not innerWidth."""
    return f"""(() => {{
  document.querySelectorAll('details').forEach(d => {{ d.open = true; }});
  const vw = {width};
  const scroller = el => {{ for (let p = el.parentElement; p && p !== document.body; p = p.parentElement) {{
      const s = getComputedStyle(p).overflowX; if (s === 'auto' || s === 'scroll') return p; }} return null; }};
  const fits = el => {{ const r = el.getBoundingClientRect(); return r.right <= vw + 0.5 && r.left >= -0.5; }};
  const held = el => {{ const s = scroller(el); return s !== null && fits(s); }};
  const tables = Array.from(document.querySelectorAll('table'));
  const overflowing = Array.from(document.body.querySelectorAll('*'))
    .filter(e => e.getBoundingClientRect().width > 0 && !fits(e) && !held(e))
    .map(e => e.tagName.toLowerCase() + (typeof e.className === 'string' && e.className ? '.' + e.className : '')
         + ' right ' + Math.round(e.getBoundingClientRect().right));
  const banner = document.getElementById('verdict') || document.querySelector('.banner');
  const mark = banner && banner.closest('header, main, footer, [role=banner], [role=main], [role=contentinfo]');
  return {{scroll_width: document.scrollingElement.scrollWidth, inner_width: window.innerWidth,
          tables: tables.length, tables_scrolled: tables.filter(t => !fits(t) && held(t)).length,
          tables_off_screen: tables.filter(t => !fits(t) && !held(t)).length,
          histograms: Array.from(document.querySelectorAll('svg.histogram')).map(e => e.getBoundingClientRect().width),
          overflowing: overflowing.slice(0, 12),
          banner_landmark: mark ? (mark.getAttribute('role') || mark.tagName.toLowerCase()) : null}};
}})()"""


@pytest.fixture(scope="session")
def chromium_path() -> str:
    path = _find_browser()
    if path is None:
        why = _install_chromium()
        path = _find_browser()
        if path is None:
            pytest.skip(f"headless browser test skipped: {why or 'chromium not found after installation'}")
    return path


@dataclass
class PageVisit:
    """What happened while a page was open."""

    console_errors: list[str] = field(default_factory=list)
    requests: list[str] = field(default_factory=list)  # URLs the page fetched (or tried to, unblocked)
    blocked: list[str] = field(default_factory=list)  # URLs the browser refused (e.g. by the CSP)
    title: str = ""
    evaluations: dict[str, Any] = field(default_factory=dict)
    screenshot: bytes = b""


class _Pipe:
    """A minimal CDP client: JSON messages separated by NUL over fds 3 (to the browser) and 4 (from it)."""

    def __init__(self, browser: str, profile: str) -> None:
        to_browser_r, self._to_browser = os.pipe()
        self._from_browser, from_browser_w = os.pipe()

        def child_fds() -> None:  # the protocol's fixed descriptors: 3 = commands in, 4 = answers out
            os.dup2(to_browser_r, 3, inheritable=True)
            os.dup2(from_browser_w, 4, inheritable=True)

        args = [browser, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-default-apps",
                "--disable-extensions", "--remote-debugging-pipe", f"--user-data-dir={profile}",
                "--window-size=1200,1600", "about:blank"]
        self.proc = subprocess.Popen(args, pass_fds=(3, 4, to_browser_r, from_browser_w), preexec_fn=child_fds,
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        os.close(to_browser_r)
        os.close(from_browser_w)
        self._buffer = b""
        self._next_id = 0
        self.events: list[dict[str, Any]] = []

    def send(self, method: str, params: dict[str, Any] | None = None, session: str | None = None,
             timeout: float = 30.0) -> dict[str, Any]:
        self._next_id += 1
        message: dict[str, Any] = {"id": self._next_id, "method": method, "params": params or {}}
        if session:
            message["sessionId"] = session
        os.write(self._to_browser, json.dumps(message).encode() + b"\0")
        deadline = time.monotonic() + timeout
        while True:
            for msg in self._read(deadline):
                if msg.get("id") == self._next_id:
                    if "error" in msg:
                        raise RuntimeError(f"{method}: {msg['error']}")
                    return msg.get("result", {})
                self.events.append(msg)

    def wait_for(self, method: str, timeout: float = 30.0) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            for i, event in enumerate(self.events):
                if event.get("method") == method:
                    return self.events[i]
            self.events.extend(self._read(deadline))

    def drain(self, seconds: float) -> None:
        deadline = time.monotonic() + seconds
        try:
            while True:
                self.events.extend(self._read(deadline))
        except TimeoutError:
            pass

    def _read(self, deadline: float) -> list[dict[str, Any]]:
        while b"\0" not in self._buffer:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([self._from_browser], [], [], left)[0]:
                raise TimeoutError("no answer from the browser")
            chunk = os.read(self._from_browser, 1 << 20)
            if not chunk:
                raise RuntimeError("the browser closed the DevTools pipe")
            self._buffer += chunk
        *messages, self._buffer = self._buffer.split(b"\0")
        return [json.loads(m) for m in messages if m]

    def close(self) -> None:
        try:
            self.send("Browser.close", timeout=5)
        except Exception:  # noqa: BLE001 -- closing best effort; the process is killed below anyway
            pass
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        os.close(self._to_browser)
        os.close(self._from_browser)


def visit(browser: str, page: Path, expressions: dict[str, str] | None = None, width: int | None = None) -> PageVisit:
    """Open ``page`` in headless Chromium; collect console errors, requests, evaluations and a screenshot.
    ``width``: emulate a phone's viewport that many CSS pixels wide (touch, mobile layout), e.g. 390."""
    with tempfile.TemporaryDirectory(prefix="leakaudit-chromium-") as profile:
        pipe = _Pipe(browser, profile)
        try:
            target = pipe.send("Target.createTarget", {"url": "about:blank"})["targetId"]
            session = pipe.send("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
            for domain in ("Page", "Runtime", "Log", "Network"):
                pipe.send(f"{domain}.enable", session=session)
            if width is not None:
                pipe.send("Emulation.setDeviceMetricsOverride", {"width": width, "height": 844,
                                                                   "deviceScaleFactor": 3, "mobile": True},
                          session=session)
            pipe.events.clear()
            pipe.send("Page.navigate", {"url": page.resolve().as_uri()}, session=session)
            pipe.wait_for("Page.loadEventFired")
            pipe.drain(1.0)  # late console messages (CSP reports arrive asynchronously)
            result = PageVisit()
            for name, expr in (expressions or {}).items():
                value = pipe.send("Runtime.evaluate", {"expression": expr, "returnByValue": True}, session=session)
                result.evaluations[name] = value.get("result", {}).get("value")
            result.title = pipe.send("Runtime.evaluate", {"expression": "document.title", "returnByValue": True},
                                     session=session)["result"]["value"]
            shot = pipe.send("Page.captureScreenshot", {"format": "png", "captureBeyondViewport": True},
                             session=session)
            import base64

            result.screenshot = base64.b64decode(shot["data"])
            sent: dict[str, str] = {}
            blocked: set[str] = set()
            for event in pipe.events:
                method, params = event.get("method"), event.get("params", {})
                if method == "Runtime.consoleAPICalled" and params.get("type") in ("error", "assert"):
                    result.console_errors.append(" ".join(str(a.get("value", a.get("description", "")))
                                                          for a in params.get("args", [])))
                elif method == "Runtime.exceptionThrown":
                    result.console_errors.append(params.get("exceptionDetails", {}).get("text", "exception"))
                elif method == "Log.entryAdded" and params.get("entry", {}).get("level") == "error":
                    result.console_errors.append(params["entry"].get("text", ""))
                elif method == "Network.requestWillBeSent":
                    sent[params.get("requestId")] = params.get("request", {}).get("url", "")
                elif method == "Network.loadingFailed" and params.get("blockedReason"):
                    blocked.add(params.get("requestId"))
            result.requests = [url for rid, url in sent.items() if rid not in blocked]
            result.blocked = [url for rid, url in sent.items() if rid in blocked]
            return result
        finally:
            pipe.close()


@pytest.fixture(scope="session")
def browser_visit(chromium_path: str):
    def _visit(page: Path, expressions: dict[str, str] | None = None, width: int | None = None) -> PageVisit:
        return visit(chromium_path, page, expressions, width)

    return _visit


@pytest.fixture(scope="session")
def artifacts_dir() -> Path:
    path = Path(os.environ.get("LEAKAUDIT_TEST_ARTIFACTS", "test-artifacts")).resolve()
    path.mkdir(parents=True, exist_ok=True)
    return path
