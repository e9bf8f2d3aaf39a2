"""Load test: several browser sessions at once on one ``streamlit run app.py`` process (loopback only).

Starts the app headless on a free port of 127.0.0.1 (``fileWatcherType none``), then drives
``--sessions`` (default 6, at least 4) concurrent browser sessions with Playwright and Debian's
chromium (``/usr/bin/chromium``; ``apt-get install -y chromium``; no browser is downloaded). Each
session has its own browser context (its own Streamlit session) and opens its own URL: the query
parameters pick different models, sample sizes, seeds, splits and pages. Every round, each session
then reloads with another seed. Checks, per session and round:

* the page finishes running (``stApp[data-test-script-state=notRunning]``) with no exception element,
  no "Traceback" and no error alert, and draws at least one chart;
* on Overview sessions, the numbers shown are that session's own: the two accuracies and the count of
  disagreements equal what ``tffd_viz`` computes here for that session's models, split, n and seed.

Everything is bounded: sessions (<= 12), rounds (<= 5), a per-page timeout and a global deadline; the
server is stopped at the end (by its own process id). Nothing but 127.0.0.1 is contacted.

Usage::

    .venv/bin/python bench/load_test.py                 # 6 sessions, 2 rounds
    .venv/bin/python bench/load_test.py --sessions 8 --rounds 3 --out bench/load_test.json

Exit status 0 when every check passed, 1 otherwise; a JSON summary is printed (and written to ``--out``).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
HOST = "127.0.0.1"
MAX_SESSIONS = 12
MAX_ROUNDS = 5
# Non-overview pages the sessions visit in turn (url path of st.navigation = the page file's stem).
OTHER_PAGES = ("ranking", "similarity", "losses", "cka", "feature_maps")


# ------------------------------------------------------------------------------------------ server
def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


def start_server(port: int, log: Path) -> subprocess.Popen:
    cmd = [
        sys.executable,
        "-m",
        "streamlit",
        "run",
        str(ROOT / "app.py"),
        "--server.headless",
        "true",
        "--server.address",
        HOST,
        "--server.port",
        str(port),
        "--server.fileWatcherType",
        "none",
        "--browser.gatherUsageStats",
        "false",
        "--server.runOnSave",
        "false",
    ]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    handle = log.open("w")
    return subprocess.Popen(
        cmd, cwd=ROOT, env=env, stdout=handle, stderr=subprocess.STDOUT, start_new_session=True
    )


def wait_healthy(port: int, proc: subprocess.Popen, timeout: float) -> float:
    """Seconds until ``/_stcore/health`` answers ok (raises on timeout or server exit)."""
    t0 = time.monotonic()
    url = f"http://{HOST}:{port}/_stcore/health"
    while time.monotonic() - t0 < timeout:
        if proc.poll() is not None:
            raise RuntimeError(f"streamlit exited with code {proc.returncode} before it was healthy")
        try:
            with urllib.request.urlopen(url, timeout=2) as resp:  # loopback only
                if resp.status == 200:
                    return time.monotonic() - t0
        except OSError:
            pass
        time.sleep(0.5)
    raise TimeoutError(f"streamlit was not healthy on port {port} after {timeout:.0f} s")


def stop_server(proc: subprocess.Popen) -> None:
    if proc.poll() is not None:
        return
    os.killpg(proc.pid, signal.SIGTERM)  # the process group of the server we started, nothing else
    try:
        proc.wait(timeout=15)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=5)


# ---------------------------------------------------------------------------------------- sessions
@dataclass
class Plan:
    """One browser session's choices."""

    session: int
    page: str  # "" = Overview
    a: str
    b: str
    n: int
    seed: int
    split: str

    def url(self, port: int, seed: int) -> str:
        query = f"a={self.a}&b={self.b}&n={self.n}&seed={seed}&split={self.split}&device=cpu&dataset=digits"
        return f"http://{HOST}:{port}/{self.page}?{query}"


@dataclass
class Result:
    session: int
    round: int
    page: str
    url: str
    seconds: float = 0.0
    charts: int = 0
    ok: bool = False
    problems: list[str] = field(default_factory=list)
    shown: dict[str, Any] = field(default_factory=dict)
    expected: dict[str, Any] = field(default_factory=dict)


def shipped_models() -> list[str]:
    return sorted(p.stem for p in (ROOT / "checkpoints").glob("digits_*.safetensors"))


def make_plans(sessions: int, models: list[str]) -> list[Plan]:
    if len(models) < 2:
        raise SystemExit(
            f"need at least 2 shipped digits checkpoints in {ROOT / 'checkpoints'}, found {models}"
        )
    plans = []
    for s in range(sessions):
        a, b = models[s % len(models)], models[(s + 1) % len(models)]
        page = "" if s % 2 == 0 else OTHER_PAGES[(s // 2) % len(OTHER_PAGES)]
        plans.append(
            Plan(
                session=s,
                page=page,
                a=a,
                b=b,
                n=(32, 48, 64, 40)[s % 4],
                seed=s,
                split="test" if s % 3 else "train",
            )
        )
    return plans


def expected_overview(plan: Plan, seed: int) -> dict[str, Any]:
    """What the Overview must show for these choices, computed here with the library."""
    import torch

    from tffd_viz.checkpoints import load_checkpoint
    from tffd_viz.data import sample_batch
    from tffd_viz.features import prediction_summary

    images, labels = sample_batch("digits", plan.split, n=plan.n, seed=seed)
    preds: dict[str, torch.Tensor] = {}
    out: dict[str, Any] = {"heading": f"Accuracy on {plan.n} {plan.split} images of digits"}
    for key, name in (("A", plan.a), ("B", plan.b)):
        model, _ = load_checkpoint(ROOT / "checkpoints" / f"{name}.safetensors")
        summary = prediction_summary(model, images, labels, 10)
        preds[key] = summary["pred"]
        out[f"accuracy {key}"] = f"{summary['accuracy']:.2f} %"
        out[f"confusion {key}"] = summary["confusion"].tolist()
    out["disagreements"] = int((preds["A"] != preds["B"]).sum())
    return out


async def settled(page: Any, timeout: float) -> None:
    """Wait until the app script has finished running (and stays so for a moment)."""
    deadline = time.monotonic() + timeout
    app = page.locator('[data-testid="stApp"]')
    calm = 0
    while time.monotonic() < deadline:
        state = await app.get_attribute("data-test-script-state") if await app.count() else None
        running = await page.locator('[data-testid="stStatusWidget"]').count()
        calm = calm + 1 if state == "notRunning" and not running else 0
        if calm >= 3:
            return
        await asyncio.sleep(0.4)
    raise TimeoutError(f"the page did not finish running within {timeout:.0f} s")


async def read_overview(page: Any) -> dict[str, Any]:
    shown: dict[str, Any] = {}
    labels = await page.locator('[data-testid="stMetricLabel"]').all_inner_texts()
    values = await page.locator('[data-testid="stMetricValue"]').all_inner_texts()
    for label, value in zip(labels, values):
        key = label.strip().split(":")[0]
        shown[f"accuracy {key}"] = value.strip()
    headings = " ".join(await page.locator('[data-testid="stHeading"]').all_inner_texts())
    match = re.search(r"Where A and B disagree \((\d+) of (\d+) images\)", headings)
    shown["disagreements"] = int(match.group(1)) if match else None
    match = re.search(r"Accuracy on \d+ \w+ images of \w+", headings)
    shown["heading"] = match.group(0) if match else None
    # the confusion matrices as drawn: plotly keeps each figure's data on its div
    figures = await page.locator(".js-plotly-plot").evaluate_all(
        """els => els.map(el => {
            const z = el.data && el.data[0] ? el.data[0].z : null;
            const title = el._fullLayout && el._fullLayout.title ? el._fullLayout.title.text : "";
            return {title: String(title || ""),
                    z: z && z.bdata ? {dtype: z.dtype, bdata: z.bdata, shape: String(z.shape)}
                       : (z ? Array.from(z, r => Array.from(r)) : null)};
        })"""
    )
    for fig in figures:
        found = re.search(r"Confusion matrix, ([AB])\b", re.sub(r"<[^>]+>", "", fig["title"]))
        if found and fig["z"] is not None:
            shown[f"confusion {found.group(1)}"] = plotly_matrix(fig["z"])
    return shown


def plotly_matrix(z: Any) -> list[list[int]]:
    """A heatmap's ``z`` as integer rows: plotly sends numpy arrays as base64 ``{dtype, bdata, shape}``."""
    if isinstance(z, dict):
        import base64

        import numpy as np

        shape = tuple(int(s) for s in z["shape"].split(","))
        z = np.frombuffer(base64.b64decode(z["bdata"]), dtype=np.dtype(z["dtype"])).reshape(shape).tolist()
    return [[int(v) for v in row] for row in z]


async def visit(context: Any, plan: Plan, round_: int, port: int, timeout: float) -> Result:
    seed = plan.seed + 100 * round_
    url = plan.url(port, seed)
    result = Result(session=plan.session, round=round_, page=plan.page or "overview", url=url)
    page = await context.new_page()
    t0 = time.monotonic()
    try:
        await page.goto(url, wait_until="domcontentloaded", timeout=timeout * 1000)
        await page.locator('[data-testid="stPlotlyChart"]').first.wait_for(timeout=timeout * 1000)
        await settled(page, timeout)
        result.seconds = round(time.monotonic() - t0, 2)
        result.charts = await page.locator('[data-testid="stPlotlyChart"]').count()
        exceptions = await page.locator('[data-testid="stException"]').all_inner_texts()
        text = await page.locator('[data-testid="stApp"]').inner_text()
        errors = [t for t in await page.locator('[data-testid="stAlertContentError"]').all_inner_texts()]
        result.problems += [f"exception: {e[:300]}" for e in exceptions]
        result.problems += [f"error: {e[:300]}" for e in errors]
        if "Traceback" in text:
            result.problems.append("'Traceback' in the page text")
        if result.charts == 0:
            result.problems.append("no chart")
        if not plan.page:
            result.shown = await read_overview(page)
            result.expected = await asyncio.to_thread(expected_overview, plan, seed)
            wrong = [k for k in result.expected if result.shown.get(k) != result.expected[k]]
            if wrong:
                result.problems.append(
                    f"shown != expected for {wrong}: {[result.shown.get(k) for k in wrong]} "
                    f"vs {[result.expected[k] for k in wrong]}"
                )
    except Exception as exc:  # a timeout or a closed page is a failed check of this session
        result.seconds = round(time.monotonic() - t0, 2)
        result.problems.append(f"{type(exc).__name__}: {str(exc).splitlines()[0][:300]}")
    finally:
        await page.close()
    result.ok = not result.problems
    return result


async def drive(plans: list[Plan], rounds: int, port: int, timeout: float, deadline: float) -> list[Result]:
    from playwright.async_api import async_playwright

    results: list[Result] = []
    async with async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        try:
            contexts = [await browser.new_context(viewport={"width": 1400, "height": 1000}) for _ in plans]
            # loopback only: every request to another host is aborted
            for ctx in contexts:
                await ctx.route(re.compile(r"^(?!https?://127\.0\.0\.1[:/]).*"), lambda route: route.abort())
            for r in range(rounds):
                left = deadline - time.monotonic()
                if left < 10:
                    break
                batch = [visit(ctx, plan, r, port, min(timeout, left)) for ctx, plan in zip(contexts, plans)]
                results += await asyncio.wait_for(asyncio.gather(*batch), timeout=left)
        finally:
            await browser.close()
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sessions", type=int, default=6, help="concurrent browser sessions (4..12)")
    parser.add_argument("--rounds", type=int, default=2, help="page loads per session (1..5)")
    parser.add_argument("--timeout", type=float, default=180.0, help="seconds a page may take")
    parser.add_argument("--deadline", type=float, default=540.0, help="seconds for the whole test")
    parser.add_argument("--out", type=Path, default=None, help="also write the JSON summary here")
    args = parser.parse_args(argv)
    sessions = min(max(args.sessions, 4), MAX_SESSIONS)
    rounds = min(max(args.rounds, 1), MAX_ROUNDS)
    if not Path(CHROMIUM).exists():
        print(f"{CHROMIUM} not found: apt-get install -y chromium", file=sys.stderr)
        return 2
    plans = make_plans(sessions, shipped_models())
    port = free_port()
    log = Path(os.environ.get("TMPDIR", "/tmp")) / f"tffd_viz_load_test_{port}.log"
    t0 = time.monotonic()
    proc = start_server(port, log)
    try:
        startup = wait_healthy(port, proc, timeout=90)
        results = asyncio.run(drive(plans, rounds, port, args.timeout, t0 + args.deadline))
    finally:
        stop_server(proc)
    loads = [r.seconds for r in results if r.ok]
    summary = {
        "sessions": sessions,
        "rounds": rounds,
        "port": port,
        "server_startup_s": round(startup, 2),
        "wall_s": round(time.monotonic() - t0, 2),
        "page_loads": len(results),
        "passed": sum(r.ok for r in results),
        "failed": sum(not r.ok for r in results),
        "page_seconds": {
            "min": min(loads, default=None),
            "max": max(loads, default=None),
            "mean": round(sum(loads) / len(loads), 2) if loads else None,
        },
        "server_log": str(log),
        "results": [asdict(r) for r in results],
    }
    text = json.dumps(summary, indent=2)
    print(text)
    if args.out is not None:
        args.out.write_text(text + "\n")
    complete = len(results) == sessions * rounds
    return 0 if complete and all(r.ok for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
