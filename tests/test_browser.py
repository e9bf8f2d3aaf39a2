"""Real-browser test of the Streamlit app: Debian's chromium driven through Playwright (marker ``browser``).

One ``streamlit run app.py`` server per module (headless, on a free port of 127.0.0.1, its log in
``artifacts/browser/streamlit.log``). Every page that ``app.py`` declares is opened at its URL path with a small
sample batch (``?n=32``); it must finish its script run, show its own title, draw plotly charts that all hold
data, and show no exception, no ``st.error`` and no traceback. A full-page screenshot of each page goes to
``artifacts/browser/<page>.png``. One interaction: the "λ intra" slider of the losses page is moved with the
keyboard; the page must re-run (the URL and the weighted chart's title follow the new lambda) without an
exception.

Skips when ``/usr/bin/chromium``, Playwright or the shipped checkpoints the default selection needs are absent.
"""

from __future__ import annotations

import ast
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import parse_qs, urlparse

import pytest

pytestmark = pytest.mark.browser

ROOT = Path(__file__).resolve().parents[1]
APP = ROOT / "app.py"
CHECKPOINTS = ROOT / "checkpoints"
ARTIFACTS = ROOT / "artifacts" / "browser"
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
DEFAULT_A = "digits_resnet8_baseline_s0"
SAMPLE_N = 32
PAGE_QUERY = {"cka": {"cka_n": "64"}}
"""Extra query parameters per page (keeps the CKA page's own image count small)."""
HEALTH_TIMEOUT_S = 90.0
RUN_TIMEOUT_MS = 120_000
"""Bound on one page's script run (the first page also imports torch and loads both checkpoints)."""
VIEWPORT = {"width": 1400, "height": 900}
MAX_SCREENSHOT_HEIGHT = 16_000

APP_IDLE_JS = """() => {
    const app = document.querySelector('[data-testid="stApp"]');
    return app !== null && app.getAttribute('data-test-connection-state') === 'CONNECTED'
        && app.getAttribute('data-test-script-state') === 'notRunning'
        && document.querySelector('[data-testid="stStatusWidget"]') === null;
}"""
CHARTS_DRAWN_JS = """() => {
    if (document.querySelector('[data-testid="stException"]') !== null) return true;  // reported by the checks
    const charts = [...document.querySelectorAll('[data-testid="stPlotlyChart"]')];
    return charts.length > 0 && charts.every(c => c.querySelector(
        '.js-plotly-plot .main-svg .cartesianlayer g.trace, .js-plotly-plot .main-svg .cartesianlayer image') !== null);
}"""
CHART_SUMMARY_JS = """() => [...document.querySelectorAll('.js-plotly-plot')].map(gd => {
    const svg = gd.querySelector('.main-svg');
    const title = gd.querySelector('.gtitle');
    return {
        title: title ? title.textContent : '',
        traces: (gd.data || []).length,
        drawn: gd.querySelectorAll('.cartesianlayer g.trace, .cartesianlayer image').length,
        width: svg ? svg.getBoundingClientRect().width : 0,
        height: svg ? svg.getBoundingClientRect().height : 0,
    };
})"""
PAGE_HEIGHT_JS = """() => Math.max(
    ...['[data-testid="stMain"]', '[data-testid="stSidebarContent"]']
        .map(s => document.querySelector(s)).filter(e => e !== null).map(e => e.scrollHeight),
    document.documentElement.scrollHeight)"""


def declared_pages(app: Path = APP) -> list[dict]:
    """The ``st.Page`` declarations of ``app``: ``{"file", "title", "url_path"}`` in declaration order.

    The URL path is the ``url_path`` argument, else the file's stem (Streamlit's rule); the default page
    (``default=True``, else the first one) is served at the root, ``""``.
    """
    pages = []
    for node in ast.walk(ast.parse(app.read_text())):
        if isinstance(node, ast.Call) and getattr(node.func, "attr", None) == "Page" and node.args:
            kw = {k.arg: k.value.value for k in node.keywords if isinstance(k.value, ast.Constant)}
            file = node.args[0].value
            pages.append({"file": file, "title": kw.get("title", Path(file).stem),
                          "url_path": kw.get("url_path", Path(file).stem), "default": bool(kw.get("default"))})
    default = next((p for p in pages if p["default"]), pages[0] if pages else None)
    if default is not None:
        default["url_path"] = ""
    return pages


PAGES = declared_pages() if APP.is_file() else []


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _log_tail(path: Path, chars: int = 3000) -> str:
    return path.read_text(errors="replace")[-chars:] if path.is_file() else "(no log)"


def _healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as resp:
            return resp.status == 200 and resp.read().strip() == b"ok"
    except (urllib.error.URLError, OSError):
        return False


@pytest.fixture(scope="module")
def app_url() -> Iterator[str]:
    """Base URL of a headless ``streamlit run app.py`` on a free port of 127.0.0.1 (terminated at teardown)."""
    if not CHROMIUM.is_file():
        pytest.skip(f"{CHROMIUM} is absent (apt-get install -y chromium)")
    pytest.importorskip("playwright.sync_api")
    pytest.importorskip("streamlit")
    absent = [p["file"] for p in PAGES if not (APP.parent / p["file"]).is_file()]
    if absent:
        pytest.skip(f"app.py declares pages not in the tree yet: {', '.join(absent)}")
    if not (CHECKPOINTS / f"{DEFAULT_A}.safetensors").is_file() or not any(CHECKPOINTS.glob("*_tffd*.safetensors")):
        pytest.skip(f"the default models ({DEFAULT_A} and a Tf-FD checkpoint) are not shipped in {CHECKPOINTS}")

    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    log_path = ARTIFACTS / "streamlit.log"
    cmd = [sys.executable, "-m", "streamlit", "run", str(APP), "--server.port", str(port),
           "--server.address", "127.0.0.1", "--server.fileWatcherType", "none", "--server.headless", "true",
           "--browser.gatherUsageStats", "false"]
    with open(log_path, "w") as log:
        proc = subprocess.Popen(cmd, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT,
                                env={**os.environ, "PYTHONUNBUFFERED": "1"})
    try:
        deadline = time.monotonic() + HEALTH_TIMEOUT_S
        while not _healthy(url):
            if proc.poll() is not None:
                pytest.fail(f"streamlit exited with code {proc.returncode} before serving {url}:\n"
                            f"{_log_tail(log_path)}")
            if time.monotonic() > deadline:
                pytest.fail(f"{url}/_stcore/health did not answer ok within {HEALTH_TIMEOUT_S:.0f} s:\n"
                            f"{_log_tail(log_path)}")
            time.sleep(0.5)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=15)


@pytest.fixture(scope="module")
def browser(app_url: str) -> Iterator[object]:
    """Debian's chromium, launched headless through Playwright."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        chromium = pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            yield chromium
        finally:
            chromium.close()


@pytest.fixture
def page(browser) -> Iterator[object]:
    """A fresh browser context and tab (closed after the test)."""
    context = browser.new_context(viewport=VIEWPORT)
    context.set_default_timeout(RUN_TIMEOUT_MS)
    try:
        yield context.new_page()
    finally:
        context.close()


def wait_until_idle(page, timeout_ms: int = RUN_TIMEOUT_MS) -> None:
    """Wait until the app is connected, its script run is over and the "Running..." widget is gone."""
    page.wait_for_function(APP_IDLE_JS, timeout=timeout_ms, polling=250)


def open_page(page, app_url: str, url_path: str, **query: str) -> None:
    """Open ``url_path`` with a small sample batch and wait until its run and its charts are done."""
    params = "&".join(f"{k}={v}" for k, v in {"n": str(SAMPLE_N), **query}.items())
    page.goto(f"{app_url}/{url_path}?{params}", wait_until="domcontentloaded")
    wait_until_idle(page)
    wait_for_charts(page)
    wait_until_idle(page)


def wait_for_charts(page, timeout_ms: int = RUN_TIMEOUT_MS) -> None:
    """Wait until every plotly chart has drawn a trace (or an exception shows); the checks report failures."""
    from playwright.sync_api import TimeoutError as PlaywrightTimeoutError

    try:
        page.wait_for_function(CHARTS_DRAWN_JS, timeout=timeout_ms, polling=250)
    except PlaywrightTimeoutError:
        pass


def assert_page_ok(page, what: str) -> list[dict]:
    """No exception, error or traceback on the page, and every plotly chart drawn with data; the charts."""
    exceptions = page.locator('[data-testid="stException"]')
    assert exceptions.count() == 0, f"{what}: exception shown: {exceptions.first.inner_text()[:2000]}"
    errors = page.locator('[data-testid="stAlertContentError"]')
    assert errors.count() == 0, f"{what}: st.error shown: {errors.all_inner_texts()}"
    text = page.locator("body").inner_text()
    assert "Traceback" not in text, f"{what}: 'Traceback' in the page text"
    charts = page.evaluate(CHART_SUMMARY_JS)
    assert len(charts) >= 1, f"{what}: no plotly chart rendered"
    assert page.locator('[data-testid="stPlotlyChart"]').count() == len(charts), f"{what}: a chart did not render"
    for chart in charts:
        assert chart["traces"] >= 1 and chart["drawn"] >= 1, f"{what}: empty chart {chart}"
        assert chart["width"] > 100 and chart["height"] > 100, f"{what}: chart drawn too small {chart}"
    return charts


def save_screenshot(page, name: str) -> Path:
    """Full-page screenshot (the app scrolls inside its main panel, so the viewport is grown to fit it)."""
    height = min(int(page.evaluate(PAGE_HEIGHT_JS)), MAX_SCREENSHOT_HEIGHT)
    page.set_viewport_size({"width": VIEWPORT["width"], "height": max(height, VIEWPORT["height"])})
    page.wait_for_timeout(500)  # plotly re-lays out its charts on the resize
    wait_until_idle(page)
    path = ARTIFACTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    return path


def _page_id(p: dict) -> str:
    return Path(p["file"]).stem


def test_navigation_lists_every_declared_page(page, app_url: str) -> None:
    page.goto(f"{app_url}/?n={SAMPLE_N}", wait_until="domcontentloaded")
    wait_until_idle(page)
    hrefs = page.locator('[data-testid="stSidebarNav"] a').evaluate_all("els => els.map(e => e.href)")
    assert [urlparse(h).path for h in hrefs] == [f"/{p['url_path']}" for p in PAGES]


@pytest.mark.parametrize("spec", PAGES, ids=_page_id)
def test_page_renders(page, app_url: str, spec: dict) -> None:
    name = _page_id(spec)
    open_page(page, app_url, spec["url_path"], **PAGE_QUERY.get(name, {}))
    screenshot = save_screenshot(page, name)  # first, so that a failing page leaves its picture too
    heading = page.locator('[data-testid="stMain"] h1').first.inner_text()
    assert heading.strip() == spec["title"], f"{name}: heading {heading!r}, nav title {spec['title']!r}"
    assert parse_qs(urlparse(page.url).query).get("n") == [str(SAMPLE_N)], page.url
    assert_page_ok(page, name)
    assert screenshot.stat().st_size > 10_000


def test_losses_lambda_slider_reruns_page(page, app_url: str) -> None:
    from tffd_viz.plots import format_lambda

    if not any(p["url_path"] == "losses" for p in PAGES):
        pytest.skip("app.py declares no losses page")
    open_page(page, app_url, "losses")
    before = float(parse_qs(urlparse(page.url).query)["lambda_intra"][0])
    thumb = page.locator('[data-testid="stSlider"]').filter(has_text="λ intra").get_by_role("slider")
    thumb.focus()
    page.keyboard.press("ArrowRight")
    page.wait_for_function(
        "old => { const v = new URL(location.href).searchParams.get('lambda_intra');"
        " return v !== null && Number(v) !== old; }", arg=before, timeout=RUN_TIMEOUT_MS)
    wait_until_idle(page)
    wait_for_charts(page)
    save_screenshot(page, "losses_lambda_changed")
    after = float(parse_qs(urlparse(page.url).query)["lambda_intra"][0])
    assert after > before, f"ArrowRight moved λ intra from {before} to {after}"
    charts = assert_page_ok(page, "losses after moving λ intra")
    titles = [c["title"] for c in charts]
    assert any(f"λ intra {format_lambda(after)}," in t for t in titles), titles
