"""Slider release to updated charts and to the whole page, in a real browser, on a sample (issue 14's targets:
charts <= 0.25 s; the whole page <= 0.5 s on digits-cnn, 1.0 s on resnet18, 1.5 s on minilm; latency aside).

Starts the dashboard, picks resnet18, then moves the pruning slider one step at a time (each a new amount, not
cached) and times, from the key press, until the per-layer sparsity chart, the histogram and the headline
rest of the page (size, accuracy or fidelity: they wait for the export and its run in ONNX Runtime) show the new values,
and until the export's gzip size, measured after the page, has arrived.
Run: .venv/bin/python bench/slider_update.py [--moves 8] [--model resnet18]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the browser helpers live with the e2e tests
from tests.e2e.browser import chromium, histogram_series, sparsity_series, streamlit_server

SLIDER = "Pruning amount (% of weights set to zero)"
TARGET_S = 0.25  # slider release to charts (issue 14)
PAGE_TARGET_S = {"digits-cnn": 0.5, "resnet18": 1.0, "minilm": 1.5}  # to the whole page settled, headline included
FIRST_LOAD_TARGET_S, SWITCH_TARGET_S = 3.0, 5.0  # a new page to its first chart; a switch to minilm (warm caches)
DEFAULT_MODEL = "digits-cnn"  # what the page starts on


def _wait_until_changed(page, read, before, timeout_s: float = 60) -> None:
    deadline = time.monotonic() + timeout_s
    while read(page) == before:
        if time.monotonic() > deadline:
            raise TimeoutError("the page did not update")
        page.wait_for_timeout(5)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--moves", type=int, default=8)
    parser.add_argument("--model", default="resnet18")
    args = parser.parse_args()
    with streamlit_server() as url, chromium() as browser:
        context = browser.new_context(viewport={"width": 1400, "height": 1400})  # one HTTP cache for both visits
        page = context.new_page()
        started = time.perf_counter()
        page.goto(url)
        page.get_by_text("Per-layer sparsity").first.wait_for(timeout=120_000)
        first_chart = time.perf_counter() - started
        page.get_by_text("This file: ").first.wait_for(timeout=120_000)
        first_page = time.perf_counter() - started
        print(f"first load (a new server, samples cached on disk): first chart {first_chart:.2f} s, "
              f"whole page {first_page:.2f} s (target <= {FIRST_LOAD_TARGET_S} s)")  # fmt: skip
        page.get_by_text("Compressed with gzip (level 1)").wait_for(timeout=120_000)
        again = context.new_page()  # the browser's and the server's caches warm
        started = time.perf_counter()
        again.goto(url)
        again.get_by_text("This file: ").first.wait_for(timeout=120_000)
        print(f"a second visit (warm caches): whole page {time.perf_counter() - started:.2f} s")
        again.close()
        if args.model != DEFAULT_MODEL:
            page.get_by_test_id("stSidebar").get_by_test_id("stSelectbox").first.click()
            started = time.perf_counter()
            page.get_by_role("option", name=args.model, exact=False).first.click()
            page.get_by_text(f"{args.model}:").first.wait_for(timeout=300_000)
            page.get_by_text("This file: ").first.wait_for(timeout=300_000)
            switch = time.perf_counter() - started
            target = f" (target <= {SWITCH_TARGET_S} s)" if args.model == "minilm" else ""
            print(f"switch to {args.model} (first time in this server): whole page {switch:.2f} s{target}")
            page.get_by_text("Compressed with gzip (level 1)").wait_for(timeout=120_000)
        page.wait_for_function("() => document.querySelectorAll('.js-plotly-plot').length >= 2")
        thumb = page.get_by_role("slider", name=SLIDER)
        sparsity, histogram, full, gzip = [], [], [], []
        for move in range(args.moves + 1):
            before = (sparsity_series(page), histogram_series(page))
            thumb.focus()
            started = time.perf_counter()
            page.keyboard.press("ArrowRight")
            _wait_until_changed(page, sparsity_series, before[0])
            chart_s = time.perf_counter() - started
            _wait_until_changed(page, histogram_series, before[1])
            histogram_s = time.perf_counter() - started
            # The export section names the file's settings last, once the export has been built and run.
            page.get_by_text(f"This file: {move + 1}.0% of the prunable weights").wait_for(timeout=120_000)
            full_s = time.perf_counter() - started
            # the export's gzip size comes last, after the page has settled (issue 14 lets slow extras follow)
            page.get_by_text("Compressed with gzip: being measured").wait_for(state="detached", timeout=120_000)
            page.get_by_text("Compressed with gzip (level 1)").wait_for(timeout=120_000)
            gzip_s = time.perf_counter() - started
            if move == 0:
                print(f"first move (includes the one-time ranking of all weights): charts {chart_s:.2f} s")
                continue
            sparsity.append(chart_s)
            histogram.append(histogram_s)
            full.append(full_s)
            gzip.append(gzip_s)
            print(
                f"  {move}%: sparsity chart {chart_s:.3f} s, histogram {histogram_s:.3f} s, whole page {full_s:.3f} s, "
                f"gzip size after {gzip_s:.3f} s"
            )
    charts = statistics.median(histogram)
    print(
        f"{args.model}, {args.moves} slider moves, medians: sparsity chart {statistics.median(sparsity):.3f} s, "
        f"histogram {charts:.3f} s (max {max(histogram):.3f} s), whole page {statistics.median(full):.3f} s, "
        f"gzip size {statistics.median(gzip):.3f} s"
    )
    page_s, page_target = statistics.median(full), PAGE_TARGET_S.get(args.model)
    print(f"target <= {TARGET_S} s for charts: {'met' if charts <= TARGET_S else 'NOT met'}")
    if page_target is not None:
        print(f"target <= {page_target} s for the whole page: {'met' if page_s <= page_target else 'NOT met'}")


if __name__ == "__main__":
    main()
