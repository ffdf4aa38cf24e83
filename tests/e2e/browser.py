"""A real Streamlit server on a free port and Debian's Chromium driven by Playwright (shared by e2e tests and bench)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
MAIN = REPO / "app" / "main.py"
CHROMIUM = "/usr/bin/chromium"
# Without these, Chromium keeps trying to reach Google's hosts, which this machine's closed network refuses.
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update"]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@contextmanager
def streamlit_server(timeout_s: float = 90, script: Path = MAIN) -> Iterator[str]:
    """Start the dashboard as `make run` does (`python -m app.serve`), or `streamlit run script`, and yield its URL
    once its health check answers."""
    port = free_port()
    launch = ["app.serve"] if script == MAIN else ["streamlit", "run", str(script)]
    command = [sys.executable, "-m", *launch, "--server.headless=true"]
    command += [f"--server.port={port}", "--server.address=127.0.0.1", "--browser.gatherUsageStats=false"]
    process = subprocess.Popen(
        command, cwd=REPO, env=dict(os.environ), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + timeout_s
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"streamlit exited with {process.returncode}: {process.stdout.read()}")
            try:
                with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as answer:
                    if answer.status == 200:
                        break
            except OSError:
                if time.monotonic() > deadline:
                    raise TimeoutError(f"streamlit did not answer on {url} within {timeout_s} s") from None
                time.sleep(0.3)
        yield url
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()


@contextmanager
def chromium() -> Iterator:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()


def sparsity_series(page) -> list[float]:
    """The compressed bars of the per-layer sparsity chart, read from the plotly figure in the page."""
    return page.evaluate("() => document.querySelectorAll('.js-plotly-plot')[0].data[1].y")


def histogram_series(page) -> list[float]:
    return page.evaluate("() => document.querySelectorAll('.js-plotly-plot')[1].data[0].y")


def metric_text(page, label: str) -> str:
    return page.get_by_test_id("stMetric").filter(has_text=label).inner_text()
