"""Real-browser test of the Streamlit app: Debian's chromium driven through Playwright (marker ``browser``).

One ``streamlit run app.py`` server per module (headless, on a free port of 127.0.0.1, its log in
``artifacts/browser/streamlit.log``). Every page that ``app.py`` declares is opened at its URL path with a
small sample batch (``?n=32``); it must finish its script run, show its own title, draw plotly charts that all
hold data (but the placeholders of ``EMPTY_BY_DESIGN``, which show their message), and show no exception, no
``st.error`` and no traceback. A full-page screenshot of each page goes to ``artifacts/browser/<page>.png``.
Two interactions: the "λ intra" slider of the losses page is moved with the keyboard; the page must re-run
(the URL's ``losses_lambda_intra`` and the weighted chart's title follow the new lambda) without an exception.
On the what-if page a small run (3 steps, 16 held-out images, set through its query parameters) is started
with its Run button; its progress must be seen between 0 and 100 % while it runs, then the answer, the train
command, its figures and the comparison table (screenshot ``artifacts/browser/whatif_run.png``).

The tests assert what the pages show, not how fast: the waits below are bounds against a hung run, far above
the times ``bench/app_latency.py`` (a page's first run, a widget change, a cached redraw; ``--page`` for any
page) and ``bench/whatif.py`` (a what-if step) measure. Skips when ``/usr/bin/chromium`` or Playwright is
absent; a declared page or a shipped checkpoint of the default selection that is missing fails.
"""

from __future__ import annotations

import ast
import contextlib
import os
import re
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import parse_qs, quote, urlparse

import pytest

pytestmark = pytest.mark.browser

ROOT = Path(__file__).resolve().parents[1]
APP = ROOT / "app.py"
CHECKPOINTS = ROOT / "checkpoints"
ARTIFACTS = ROOT / "artifacts" / "browser"
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
DEFAULT_A = "digits_resnet8_baseline_s0"
DEFAULT_B = "digits_resnet8_tffd_s0"
SAMPLE_N = 32
PAGE_QUERY = {"cka": {"cka_n": "64"}}
"""Extra query parameters per page (keeps the CKA page's own image count small)."""
HEALTH_TIMEOUT_S = 90.0
RUN_TIMEOUT_MS = 120_000
"""Bound on one page's script run against a hang, not a speed target (the first page also imports torch and
loads both checkpoints; bench/app_latency.py measures the times)."""
VIEWPORT = {"width": 1400, "height": 900}
MAX_SCREENSHOT_HEIGHT = 16_000
SCREENSHOT_TIMEOUT_MS = 30_000
SCREENSHOT_TRIES = 2
"""Playwright screenshot tries (each bounded) before the DevTools capture (``screenshot_with_retries``)."""
EMPTY_BY_DESIGN = ("What-if: training curves (press Run)",)
"""Titles of placeholder charts that hold no data on purpose (their message shows instead): the what-if page's
curves before its first run."""

APP_IDLE_JS = """() => {
    const app = document.querySelector('[data-testid="stApp"]');
    return app !== null && app.getAttribute('data-test-connection-state') === 'CONNECTED'
        && app.getAttribute('data-test-script-state') === 'notRunning'
        && document.querySelector('[data-testid="stStatusWidget"]') === null;
}"""
CHARTS_DRAWN_JS = """empty => {
    // an exception ends the wait: it is reported by the checks
    if (document.querySelector('[data-testid="stException"]') !== null) return true;
    const charts = [...document.querySelectorAll('[data-testid="stPlotlyChart"]')];
    return charts.length > 0 && charts.every(c => c.querySelector(
        '.js-plotly-plot .main-svg .cartesianlayer g.trace, .js-plotly-plot .main-svg .cartesianlayer image'
        ) !== null
        || (c.querySelector('.js-plotly-plot .main-svg') !== null
            && empty.includes(c.querySelector('.gtitle')?.textContent)));
}"""
CHART_SUMMARY_JS = """() => [...document.querySelectorAll('.js-plotly-plot')].map(gd => {
    const svg = gd.querySelector('.main-svg');
    const title = gd.querySelector('.gtitle');
    return {
        title: title ? title.textContent : '',
        traces: (gd.data || []).length,
        notes: [...gd.querySelectorAll('.annotation-text')].map(a => a.textContent),
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
            pages.append(
                {
                    "file": file,
                    "title": kw.get("title", Path(file).stem),
                    "url_path": kw.get("url_path", Path(file).stem),
                    "default": bool(kw.get("default")),
                }
            )
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
    """Base URL of a headless ``streamlit run app.py`` on a free port of 127.0.0.1
    (terminated at teardown)."""
    if not CHROMIUM.is_file():
        pytest.skip(f"{CHROMIUM} is absent (apt-get install -y chromium)")
    pytest.importorskip("playwright.sync_api")
    pytest.importorskip("streamlit")
    absent = [p["file"] for p in PAGES if not (APP.parent / p["file"]).is_file()]
    assert not absent, f"app.py declares pages missing in the tree: {', '.join(absent)}"
    missing = [m for m in (DEFAULT_A, DEFAULT_B) if not (CHECKPOINTS / f"{m}.safetensors").is_file()]
    assert not missing, f"the default models {missing} are not shipped in {CHECKPOINTS}"

    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    log_path = ARTIFACTS / "streamlit.log"
    cmd = [
        sys.executable,
        "-m",
        "streamlit",
        "run",
        str(APP),
        "--server.port",
        str(port),
        "--server.address",
        "127.0.0.1",
        "--server.fileWatcherType",
        "none",
        "--server.headless",
        "true",
        "--browser.gatherUsageStats",
        "false",
    ]
    with open(log_path, "w") as log:
        proc = subprocess.Popen(
            cmd, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, env={**os.environ, "PYTHONUNBUFFERED": "1"}
        )
    try:
        deadline = time.monotonic() + HEALTH_TIMEOUT_S
        while not _healthy(url):
            if proc.poll() is not None:
                pytest.fail(
                    f"streamlit exited with code {proc.returncode} before serving {url}:\n"
                    f"{_log_tail(log_path)}"
                )
            if time.monotonic() > deadline:
                pytest.fail(
                    f"{url}/_stcore/health did not answer ok within {HEALTH_TIMEOUT_S:.0f} s:\n"
                    f"{_log_tail(log_path)}"
                )
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

    with contextlib.suppress(PlaywrightTimeoutError):
        page.wait_for_function(CHARTS_DRAWN_JS, arg=list(EMPTY_BY_DESIGN), timeout=timeout_ms, polling=250)


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
    assert page.locator('[data-testid="stPlotlyChart"]').count() == len(charts), (
        f"{what}: a chart did not render"
    )
    for chart in charts:
        if chart["title"] in EMPTY_BY_DESIGN:
            assert chart["traces"] == 0 and chart["notes"], f"{what}: placeholder without its message {chart}"
        else:
            assert chart["traces"] >= 1 and chart["drawn"] >= 1, f"{what}: empty chart {chart}"
        assert chart["width"] > 100 and chart["height"] > 100, f"{what}: chart drawn too small {chart}"
    return charts


def save_screenshot(page, name: str) -> Path:
    """Full-page screenshot (the app scrolls inside its main panel, so the viewport is grown to fit it)."""
    height = 0
    for _ in range(3):  # measured again after the resize: a table or chart drawn late adds height
        measured = min(int(page.evaluate(PAGE_HEIGHT_JS)), MAX_SCREENSHOT_HEIGHT)
        if measured <= height:
            break
        height = measured
        page.set_viewport_size({"width": VIEWPORT["width"], "height": max(height, VIEWPORT["height"])})
        page.wait_for_timeout(500)  # plotly re-lays out its charts on the resize
        wait_until_idle(page)
    path = ARTIFACTS / f"{name}.png"
    return screenshot_with_retries(page, path)


def screenshot_with_retries(page, path: Path) -> Path:
    """Write a full-page screenshot of ``page`` to ``path``: Playwright's capture, tried again when it times
    out, then the DevTools protocol's ``Page.captureScreenshot``.

    Playwright's capture waits for the renderer's next frames; on a loaded 2-core CI machine it once waited
    past 120 s on a page that had finished (CI, the sweep page: "fonts loaded", then nothing). A timed-out try
    is retried after the tab is brought to the front; the last resort asks chromium for the frame directly.
    Only when every way fails does the test fail, naming each error.
    """
    from playwright.sync_api import TimeoutError as PlaywrightTimeoutError

    errors = []
    for _ in range(SCREENSHOT_TRIES):
        try:
            page.screenshot(
                path=str(path), full_page=True, animations="disabled", timeout=SCREENSHOT_TIMEOUT_MS
            )
            return path
        except PlaywrightTimeoutError as err:
            errors.append(str(err).splitlines()[0])
            page.bring_to_front()
            page.wait_for_timeout(1000)
    try:
        path.write_bytes(devtools_screenshot_png(page))
        return path
    except Exception as err:  # reported with the earlier errors
        errors.append(f"Page.captureScreenshot: {err}")
    raise AssertionError(f"no screenshot of {page.url} to {path}: {errors}")


def devtools_screenshot_png(page) -> bytes:
    """PNG bytes of the viewport (already grown to the page by ``save_screenshot``) from chromium's
    ``Page.captureScreenshot`` (no wait for the next frame)."""
    import base64

    session = page.context.new_cdp_session(page)
    try:
        shot = session.send("Page.captureScreenshot", {"format": "png"})
    finally:
        session.detach()
    return base64.b64decode(shot["data"])


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

    assert any(p["url_path"] == "losses" for p in PAGES), "app.py declares no losses page"
    open_page(page, app_url, "losses")
    before = float(parse_qs(urlparse(page.url).query)["losses_lambda_intra"][0])
    thumb = page.locator('[data-testid="stSlider"]').filter(has_text="λ intra").get_by_role("slider")
    thumb.focus()
    page.keyboard.press("ArrowRight")
    page.wait_for_function(
        "old => { const v = new URL(location.href).searchParams.get('losses_lambda_intra');"
        " return v !== null && Number(v) !== old; }",
        arg=before,
        timeout=RUN_TIMEOUT_MS,
    )
    wait_until_idle(page)
    wait_for_charts(page)
    save_screenshot(page, "losses_lambda_changed")
    after = float(parse_qs(urlparse(page.url).query)["losses_lambda_intra"][0])
    assert after > before, f"ArrowRight moved λ intra from {before} to {after}"
    charts = assert_page_ok(page, "losses after moving λ intra")
    titles = [c["title"] for c in charts]
    assert any(f"λ intra {format_lambda(after)}," in t for t in titles), titles


WHATIF_STEPS = 3
WHATIF_QUERY = {
    "whatif_model": "A",
    "whatif_lambda_intra": "1.0",
    "whatif_lambda_inter": "0.5",
    "whatif_stages": "layer2,layer3",
    "whatif_pairs": quote("layer1->layer3"),
    "whatif_steps": str(WHATIF_STEPS),
    "whatif_heldout": "16",
}
"""The what-if run: model A (digits resnet8), intra on two stages, one inter pair, 3 steps,
16 held-out images."""
WHATIF_RUN_TIMEOUT_MS = 300_000
"""Bound on the what-if run against a hang, not a speed target (3 arms x 3 steps and 4 held-out evaluations
take seconds, minutes on a loaded machine; bench/whatif.py measures a step)."""
WHATIF_RECORD_JS = """() => {
    // every state the run passes through: the progress bar (value, text) and the live curves' point count
    const seen = window.__whatif = {progress: [], points: []};
    const record = () => {
        const running = document.querySelector('[data-testid="stApp"]')
            ?.getAttribute('data-test-script-state') === 'running';
        const bar = document.querySelector('[data-testid="stProgress"] [role="progressbar"]');
        if (bar !== null) {
            const value = Number(bar.getAttribute('aria-valuenow'));
            const text = bar.closest('[data-testid="stProgress"]').innerText.trim();
            const last = seen.progress[seen.progress.length - 1];
            if (!last || last.value !== value || last.text !== text)
                seen.progress.push({value, text, running});
        }
        for (const gd of document.querySelectorAll('.js-plotly-plot')) {
            const title = gd.querySelector('.gtitle');
            if (!running || !title || title.textContent !== 'What-if: training curves' || !gd.data) continue;
            const n = gd.data.reduce((s, t) => s + (t.x ? t.x.length : 0), 0);
            if (seen.points[seen.points.length - 1] !== n) seen.points.push(n);
        }
    };
    new MutationObserver(record).observe(document.body,
        {subtree: true, childList: true, attributes: true, characterData: true});
    window.setInterval(record, 100);
}"""
WHATIF_DONE_JS = """() => [...document.querySelectorAll('[data-testid="stMain"] h3')]
    .some(h => h.textContent.trim() === 'The answer')"""


def test_whatif_run_shows_progress_and_the_comparison(page, app_url: str) -> None:
    assert any(p["url_path"] == "whatif" for p in PAGES), "app.py declares no whatif page"
    open_page(page, app_url, "whatif", **WHATIF_QUERY)
    assert_page_ok(page, "whatif before the run")
    inputs = {
        label: page.locator('[data-testid="stNumberInput"]')
        .filter(has_text=label)
        .locator("input")
        .input_value()
        for label in ("Steps per arm", "Held-out images", "λ intra", "λ inter")
    }
    assert inputs == {"Steps per arm": "3", "Held-out images": "16", "λ intra": "1", "λ inter": "0.5"}, inputs
    page.evaluate(WHATIF_RECORD_JS)
    page.locator(".st-key-whatif-start button").click()
    page.wait_for_function(WHATIF_DONE_JS, timeout=WHATIF_RUN_TIMEOUT_MS, polling=250)
    wait_until_idle(page, WHATIF_RUN_TIMEOUT_MS)
    wait_for_charts(page)
    seen = page.evaluate("() => window.__whatif")
    page.locator('[data-testid="stDataFrame"] table[role="grid"]').wait_for(state="attached")  # drawn last
    screenshot = save_screenshot(page, "whatif_run")

    # progress: at least one intermediate state while the script ran, then step 3 of 3
    assert any(0 < s["value"] < 100 and s["running"] for s in seen["progress"]), seen["progress"]
    values = [s["value"] for s in seen["progress"]]
    assert values == sorted(values), f"progress went back: {values}"
    bar = page.locator('[data-testid="stProgress"]')
    assert bar.get_by_role("progressbar").get_attribute("aria-valuenow") == "100"
    assert bar.inner_text().strip().startswith(f"step {WHATIF_STEPS} of {WHATIF_STEPS} per arm"), (
        bar.inner_text()
    )
    assert page.locator('[data-testid="stAlertContentWarning"]').count() == 0, "the run stopped early"

    # the answer in words and numbers, the train command, the figures and the comparison table
    charts = assert_page_ok(page, "whatif after the run")
    main = page.locator('[data-testid="stMain"]')
    answer = main.locator('[data-testid="stMarkdownContainer"] li').all_inner_texts()
    assert answer and answer[0].startswith(f"After {WHATIF_STEPS} steps per arm"), answer
    assert "λ_intra 1 on layer2, layer3, λ_inter 0.5 on layer1->layer3; held-out: 16 test images" in answer[0]
    number = r"−?\d+(\.\d+)?(e[+-]\d+)?"  # whatif._fmt: 3 (2 for the noise floor) significant digits
    for term in (
        "layer2 intra term",
        "layer3 intra term",
        "intra terms, mean over stages",
        "layer1->layer3 inter term",
    ):
        line = next((a for a in answer if a.startswith(f"{term} (held-out): control ")), None)
        assert line is not None, (term, answer)
        assert re.search(rf"Tf-FD arm {number}.*\(\+?{number} %\), noise floor ±{number} %", line), line
    assert any(
        re.fullmatch(
            rf"accuracy \(held-out\): control {number} %, Tf-FD arm {number} % .*start {number} %", a
        )
        for a in answer
    ), answer
    command = main.locator('[data-testid="stCode"]').inner_text()
    assert command.startswith("tffd-viz train") and "--stages layer2,layer3" in command, command
    titles = [c["title"] for c in charts]
    assert (
        titles.count("What-if: training curves") == 1 and "What-if: held-out terms and accuracy" in titles
    ), titles
    curves = next(c for c in charts if c["title"] == "What-if: training curves")
    assert curves["traces"] >= 3 * 4, curves  # 3 arms x (CE, total, 2 intra terms, 1 inter term)
    table = main.locator('[data-testid="stDataFrame"]')
    assert table.count() == 1
    grid = table.locator('table[role="grid"]')  # glide's accessible copy of the canvas
    headers = [h.strip() for h in grid.locator('th[role="columnheader"]').all_text_contents()]
    assert {"quantity", "start", "control", "tffd", "control2", "change", "noise", "beyond_noise"} <= set(
        headers
    )
    quantities = [q.strip() for q in grid.locator('td[aria-colindex="1"]').all_text_contents()]
    taps, pairs = ["layer1", "layer2", "layer3"], ["layer1->layer2", "layer1->layer3", "layer2->layer3"]
    # whatif.compare_arms: accuracy, then every stage, every pair and their means,
    # raw and relative to the maps
    raw = [f"intra {t}" for t in [*taps, "mean"]] + [f"inter {p}" for p in [*pairs, "mean"]]
    expected = ["accuracy", *raw, *[f"{q} (relative)" for q in raw]]
    assert grid.get_attribute("aria-rowcount") == str(1 + len(expected))
    assert quantities == expected[: len(quantities)] and len(quantities) >= 8, (
        quantities
    )  # the rows glide drew
    assert screenshot.stat().st_size > 10_000
