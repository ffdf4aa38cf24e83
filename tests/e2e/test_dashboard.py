"""The main path in a real browser: start the server, move the pruning slider, watch the chart, download the model."""

from __future__ import annotations

import os
import re
import zipfile
from pathlib import Path

import numpy as np
import pytest

from core.onnx.runtime import create_session, run
from tests.e2e.browser import (
    CHROMIUM,
    REPO,
    chromium,
    histogram_series,
    metric_text,
    sparsity_series,
    streamlit_server,
)

OUTPUT = Path(__file__).resolve().parents[2] / "test-output" / "e2e"

pytestmark = pytest.mark.skipif(
    not os.path.exists(CHROMIUM), reason="Debian's chromium is not installed (`make test` installs it)"
)


def test_slider_chart_and_download_in_a_real_browser(digits_cnn):
    OUTPUT.mkdir(parents=True, exist_ok=True)
    with streamlit_server() as url, chromium() as browser:
        page = browser.new_page(viewport={"width": 1400, "height": 2300}, accept_downloads=True)
        page.goto(url)
        page.get_by_text("Per-layer sparsity").first.wait_for(timeout=90_000)
        assert "37,840" in metric_text(page, "Non-zero weights")
        assert max(sparsity_series(page)) == 0
        histogram_before = histogram_series(page)

        thumb = page.get_by_role("slider", name="Pruning amount (% of weights set to zero)")
        thumb.focus()
        for _ in range(50):
            page.keyboard.press("ArrowRight")
        assert thumb.get_attribute("aria-valuetext") == "50"
        page.wait_for_function(
            "() => Math.max(...document.querySelectorAll('.js-plotly-plot')[0].data[1].y) > 0", timeout=30_000
        )
        page.wait_for_function(
            "() => [...document.querySelectorAll('[data-testid=stMetric]')].some(e => e.innerText.includes('18,920'))",
            timeout=30_000,
        )
        assert sparsity_series(page) != [0] * 9 and histogram_series(page) != histogram_before
        assert page.get_by_test_id("stException").count() == 0

        with page.expect_download(timeout=30_000) as download:
            page.get_by_role("button", name="Download digits-cnn-squeezed.onnx").click()
        saved = OUTPUT / "digits-cnn-squeezed.onnx"
        download.value.save_as(saved)

        # 4-bit weights (options run off, 8, 7, ..., 2) and a short latency run, for the README's screenshot.
        page.get_by_role("slider", name="Weight bits (per output channel, symmetric)").focus()
        for _ in range(5):
            page.keyboard.press("ArrowRight")
        page.get_by_text("15 levels of the 4-bit grid").first.wait_for(timeout=30_000)
        page.get_by_role("slider", name="Time budget (s)").focus()
        page.keyboard.press("Home")
        page.get_by_text(  # at 4 bits a few more weights round to zero: the file says how many
            re.compile(
                r"This file: 5\d\.\d% of the prunable weights zero or removed .*; weights by layer: 9 at 4-bit\."
            )
        ).wait_for(timeout=30_000)
        page.get_by_test_id("stSidebar").get_by_role("button", name="Measure latency").click()
        page.get_by_text("interleaved runs each").first.wait_for(timeout=60_000)
        assert "ms" in metric_text(page, "Median latency")
        page.screenshot(path=str(OUTPUT / "dashboard.png"), full_page=True)

        # 8-bit weights only: where the time goes, with DequantizeLinear named and timed
        page.get_by_role("slider", name="Weight bits (per output channel, symmetric)").focus()
        for _ in range(4):
            page.keyboard.press("ArrowLeft")
        page.get_by_text("255 levels of the 8-bit grid").first.wait_for(timeout=30_000)
        page.get_by_role("button", name="Profile both models").click()
        finding = page.get_by_text(re.compile(r"Weight-only DequantizeLinear costs \d\.\d{3} ms per run")).first
        finding.wait_for(timeout=60_000)
        assert page.get_by_text(re.compile(r"Verdict: expected slower; measured slower \(0\.\d\dx")).count() == 1
        assert page.get_by_text("Where the time goes: ms per run by op type").count() >= 1  # the stacked bars
        assert page.get_by_test_id("stException").count() == 0
        finding.scroll_into_view_if_needed()
        page.screenshot(path=str(OUTPUT / "profile.png"), full_page=True)

    # the file downloaded at 50 % pruning, before the bits changed
    logits = run(create_session(saved.read_bytes()), digits_cnn.eval_set.inputs)[0]
    assert logits.shape == (359, 10)
    zeros = sum(int(np.count_nonzero(values == 0)) for values in _weights(saved).values())
    assert zeros == 18_920


def _weights(path: Path) -> dict[str, np.ndarray]:
    import onnx
    from onnx import numpy_helper

    from core.onnx.graph import find_prunable_layers

    proto = onnx.load(str(path))
    names = {layer.name for layer in find_prunable_layers(proto)}
    return {init.name: numpy_helper.to_array(init) for init in proto.graph.initializer if init.name in names}


def test_the_html_report_renders_offline_in_a_browser(tmp_path, digits_cnn):
    from core import PruneConfig, QuantConfig, Recipe, build_report, compress, export_bytes
    from core.present.html_report import render

    compressed = compress(digits_cnn, Recipe(PruneConfig(0.3), QuantConfig(4)))
    page_path = tmp_path / "report.html"
    page_path.write_text(render(build_report(compressed, export_bytes(compressed))))
    with chromium() as browser:
        context = browser.new_context(offline=True)
        page = context.new_page()
        requests = []
        page.on("request", lambda request: requests.append(request.url))
        page.goto(page_path.as_uri())
        page.wait_for_function("() => document.querySelectorAll('.js-plotly-plot .main-svg').length >= 3")
        assert page.evaluate("document.querySelectorAll('.js-plotly-plot').length") == 3
        assert [url for url in requests if not url.startswith("file:")] == []
        assert "99.72%" in page.content()


def test_clicking_a_point_of_the_pareto_sweep_loads_its_settings():
    with streamlit_server() as url, chromium() as browser:
        page = browser.new_page(viewport={"width": 1400, "height": 2400})
        page.goto(url)
        page.get_by_text("Per-layer sparsity").first.wait_for(timeout=90_000)
        page.get_by_role("tab", name="Pareto sweep").click()
        page.get_by_role("button", name="Run the sweep").click()
        chart = page.locator(".js-plotly-plot").filter(has_text="accuracy against latency")
        chart.wait_for(timeout=90_000)
        # the point at 50 % pruning, float: find its marker by the hover text plotly keeps in the figure
        trace, index = page.evaluate(
            """() => {
                const plot = [...document.querySelectorAll('.js-plotly-plot')]
                    .find(p => p.layout && p.layout.title && p.layout.title.text.includes('against latency'));
                for (const [t, data] of plot.data.entries()) {
                    const i = (data.text || []).findIndex(label => label.startsWith('unstructured 0.5, float'));
                    if (i >= 0) return [t, i];
                }
                return [-1, -1];
            }"""
        )
        assert index >= 0
        point = chart.locator(".scatterlayer .trace").nth(trace).locator("path.point").nth(index)
        point.scroll_into_view_if_needed()
        box = point.bounding_box()
        x, y = box["x"] + box["width"] / 2, box["y"] + box["height"] / 2
        page.mouse.move(x, y)  # plotly picks the point under the pointer on hover, then a click selects it
        page.wait_for_timeout(300)
        page.mouse.click(x, y)
        slider = page.get_by_role("slider", name="Pruning amount (% of weights set to zero)")
        page.get_by_text(
            "This file: 50.0% of the prunable weights zero or removed (18,920 of 37,840 left); float32 weights."
        ).wait_for(timeout=30_000)
        assert slider.get_attribute("aria-valuetext") == "50"


def test_an_export_over_2_gb_downloads_as_a_zip_in_a_real_browser(tmp_path, digits_cnn):
    """Streamlit serves the zip from a callable only when clicked: the page runs with the 2 GB line lowered."""
    script = tmp_path / "main.py"
    script.write_text(
        f"import sys\nsys.path.insert(0, {str(REPO)!r})\nimport core.compression.export\ncore.compression.export.SINGLE_FILE_LIMIT = 1000\n"
        f"import runpy\nrunpy.run_path({str(REPO / 'app' / 'main.py')!r}, run_name='__main__')\n"
    )
    with streamlit_server(script=script) as url, chromium() as browser:
        page = browser.new_page(viewport={"width": 1400, "height": 2300}, accept_downloads=True)
        page.goto(url)
        button = page.get_by_role("button", name="Download digits-cnn-squeezed.zip")
        button.wait_for(timeout=90_000)
        with page.expect_download(timeout=60_000) as download:
            button.click()
        saved = tmp_path / "downloaded.zip"
        download.value.save_as(saved)
        assert page.get_by_test_id("stException").count() == 0
    with zipfile.ZipFile(saved) as archive:
        assert archive.namelist() == ["model.onnx", "model.onnx.data"]
        archive.extractall(tmp_path / "unzipped")
    # the page starts unpruned in float: the two files compute the original model
    outputs = run(create_session(tmp_path / "unzipped" / "model.onnx"), digits_cnn.eval_set.inputs)[0]
    np.testing.assert_allclose(outputs, digits_cnn.reference_outputs[0], rtol=0, atol=1e-5)


def test_a_zip_of_images_uploaded_as_data_is_previewed_and_scored_held_out(tmp_path):
    """The digits as PNG class folders in a zip, uploaded in Chromium: split, previewed, judged on the held-out part."""
    from tests.app.test_main import _digits_zip

    archive = tmp_path / "digits.zip"
    archive.write_bytes(_digits_zip(200))
    OUTPUT.mkdir(parents=True, exist_ok=True)
    with streamlit_server() as url, chromium() as browser:
        page = browser.new_page(viewport={"width": 1400, "height": 2300})
        page.goto(url)
        page.get_by_text("Per-layer sparsity").first.wait_for(timeout=90_000)
        uploader = page.get_by_test_id("stFileUploader").filter(has_text="Your data")
        uploader.locator("input[type=file]").set_input_files(str(archive))
        page.get_by_text("160 tuning and 40 held-out samples, 10 classes").wait_for(timeout=90_000)
        sidebar = page.get_by_test_id("stSidebar")
        sidebar.get_by_text("As the model receives them").wait_for(timeout=30_000)
        page.wait_for_function(  # 6 images, before and after preprocessing
            "() => [...document.querySelectorAll('[data-testid=stSidebar] img')].filter(i => i.naturalWidth > 0).length"
            " >= 12",
            timeout=30_000,
        )
        page.wait_for_function(
            "() => [...document.querySelectorAll('[data-testid=stMetric]')]"
            ".some(e => e.innerText.includes('Accuracy') && e.innerText.includes('100.0%'))",
            timeout=60_000,
        )
        assert (
            page.get_by_test_id("stException").count() == 0 and page.get_by_test_id("stAlertContentError").count() == 0
        )
        page.screenshot(path=str(OUTPUT / "data-upload.png"), full_page=True)


def test_the_page_keeps_its_place_says_what_the_file_is_and_calls_noise_noise():
    """In Chromium: a tab survives a slider move; the auto plan's overrides show in the caption and clear; the
    original measured against its own unpruned export (an A/A comparison) is no measurable difference."""
    with streamlit_server() as url, chromium() as browser:
        page = browser.new_page(viewport={"width": 1400, "height": 2600})
        page.goto(url)
        page.get_by_text("Per-layer sparsity").first.wait_for(timeout=90_000)
        page.get_by_role("tab", name="Snapshots").click()
        page.get_by_role("button", name="Save snapshot").wait_for(timeout=30_000)
        slider = page.get_by_role("slider", name="Pruning amount (% of weights set to zero)")
        slider.focus()
        for _ in range(10):
            page.keyboard.press("ArrowRight")
        page.get_by_text(re.compile(r"This file: 10\.0% of the prunable weights")).wait_for(timeout=30_000)
        assert page.get_by_role("tab", name="Snapshots").get_attribute("aria-selected") == "true"

        page.get_by_role("tab", name="Per-layer sensitivity").click()
        page.get_by_role("button", name="Run the sensitivity scan").click()
        page.get_by_role("button", name="Use the auto plan as per-layer overrides").click(timeout=90_000)
        page.get_by_text(re.compile(r"Per-layer overrides are set: the amount applies to \d of 9 layers")).wait_for(
            timeout=30_000
        )
        caption = page.get_by_text(re.compile(r"This file: \d+\.\d% of the prunable weights")).inner_text()
        assert not caption.startswith("This file: 0.0%")  # the overrides prune, whatever the slider says
        page.get_by_role("button", name="Clear overrides").click()
        page.get_by_text(re.compile(r"This file: 0\.0% of the prunable weights")).wait_for(timeout=30_000)
        assert page.get_by_text("Per-layer overrides are set").count() == 0

        page.get_by_test_id("stSidebar").get_by_role("button", name="Measure latency").click()
        page.get_by_text("interleaved runs each").first.wait_for(timeout=60_000)
        assert page.get_by_text(re.compile(r"No measurable difference \(\d\.\d\d×; the 99% interval")).count() == 1
        assert page.get_by_test_id("stException").count() == 0


def _grid_lines(pixels: np.ndarray, axis: int) -> list[int]:
    """Where the table's grid lines run: the rows (axis 1) or columns (axis 0) of light grey end to end (the cells
    are white, their text dark)."""
    grey = np.all((pixels >= 215) & (pixels <= 242), axis=-1)
    lines = np.flatnonzero(grey.mean(axis=axis) > 0.8)
    return [int(index) for index in lines if index - 1 not in lines]


def _text_cut(png: bytes, end: str) -> tuple[list[tuple[int, int]], int, int]:
    """Cells whose text touches an edge: wider than its column, which the glide grid clips at the cell's border
    ("8874368" for 18,874,368). Also the count of cells with text, and of columns. `end`: which end of its
    horizontal scroll the table is at; the column the view cuts on the other side is left out, and at the left end
    the first column holds layer names, which may be cut on the right (their column is widened, or hovered)."""
    import io

    from PIL import Image

    pixels = np.asarray(Image.open(io.BytesIO(png)).convert("RGB")).astype(int)
    columns, rows = _grid_lines(pixels, 0), _grid_lines(pixels, 1)
    ink = pixels.mean(axis=-1) < 150
    cut, written = [], 0
    cells = list(zip(columns, columns[1:], strict=False))
    cells = cells[:-1] if end == "left" else cells[1:]  # the column the view cuts
    for top, bottom in zip(rows, rows[1:], strict=False):
        for index, (left, right) in enumerate(cells):
            xs = np.flatnonzero(ink[top + 2 : bottom - 1, left + 1 : right].any(axis=0))
            if xs.size:
                written += 1
                if xs[0] < 3 or (xs[-1] > right - left - 5 and not (end == "left" and index == 0)):
                    cut.append((top, left))
    return cut, written, len(columns)


def test_every_digit_of_the_layer_table_shows():
    """minilm's 18874368 MACs once showed as "8874368": the column was narrower than the number. At a usual width
    the table is wider than its place, so it is read at both ends of its horizontal scroll."""
    with streamlit_server() as url, chromium() as browser:
        page = browser.new_page(viewport={"width": 1400, "height": 1600})
        page.goto(url)
        page.get_by_text("This file: ").first.wait_for(timeout=90_000)
        page.get_by_test_id("stSidebar").get_by_test_id("stSelectbox").first.click()
        page.get_by_role("option", name="resnet18", exact=False).first.click()  # 9-digit MACs: 115,605,504
        page.get_by_text("resnet18:").first.wait_for(timeout=300_000)
        page.wait_for_function(  # the run is over: no element left from digits-cnn's page (Streamlit marks them stale)
            "() => !document.querySelector('[data-stale=true]') && document.body.innerText.includes('Compressed with "
            "gzip (level 1)')",
            timeout=120_000,
        )
        table = page.locator("xpath=//h3[contains(., 'Per-layer detail')]/following::*[@data-testid='stDataFrame'][1]")
        table.scroll_into_view_if_needed()
        scroller = table.locator(".dvn-scroller")  # the grid's scrolling box
        OUTPUT.mkdir(parents=True, exist_ok=True)
        columns = 0
        for end in ("left", "right"):
            scroller.evaluate(f"e => {{ e.scrollLeft = {'0' if end == 'left' else 'e.scrollWidth'}; }}")
            page.wait_for_timeout(500)  # the grid redraws its canvas after a scroll
            shot = table.screenshot()
            (OUTPUT / f"layer-table-{end}.png").write_bytes(shot)  # to look at when this fails
            cut, written, seen = _text_cut(shot, end)
            assert seen >= 6 and written >= 5 * 6  # the header and the first rows of each column in view
            assert cut == [], f"figures cut at the {end} end of the table: see {OUTPUT}/layer-table-{end}.png"
            columns += seen
        assert columns >= 12  # both ends together show every one of the 11 columns


def test_recovery_shows_its_curve_live_and_stop_keeps_the_best_checkpoint():
    """In Chromium: 90 % unstructured, Recover: the progress bar and the live loss / held-out chart update while it
    trains in the background; Stop ends it early with the best checkpoint and its held-out figure."""
    with streamlit_server() as url, chromium() as browser:
        page = browser.new_page(viewport={"width": 1400, "height": 2600})
        page.goto(url)
        page.get_by_text("Per-layer sparsity").first.wait_for(timeout=90_000)
        slider = page.get_by_role("slider", name="Pruning amount (% of weights set to zero)")
        slider.focus()
        for _ in range(90):
            page.keyboard.press("ArrowRight")
        page.get_by_text(re.compile(r"This file: 90\.0% of the prunable weights")).wait_for(timeout=30_000)
        page.get_by_role("button", name="Recover", exact=True).click()
        page.get_by_text(re.compile(r"Recovering \(distill\)… \d+% of 60 s")).wait_for(timeout=30_000)
        live = "() => [...document.querySelectorAll('.js-plotly-plot')].filter(p => p.layout.title.text" \
               ".includes('Recovery: loss')).map(p => p.data[1].x.length)"  # fmt: skip
        page.wait_for_function(f"() => ({live})().some(points => points >= 3)", timeout=60_000)
        first = max(page.evaluate(live))
        page.wait_for_function(f"() => Math.max(...({live})()) > {first}", timeout=30_000)  # it keeps updating
        page.get_by_role("button", name="Stop").click()
        done = page.get_by_text(re.compile(r"^distill: accuracy on the held-out part \d+\.\d% → \d+\.\d%"))
        done.wait_for(timeout=60_000)
        page.get_by_text("Stopped before its budget ran out").wait_for(timeout=10_000)
        before, after = re.findall(r"(\d+\.\d)%", done.inner_text())[:2]
        assert float(after) > float(before)
        assert page.get_by_test_id("stException").count() == 0


def test_the_search_runs_live_and_a_clicked_trial_loads_into_the_sidebar():
    """In Chromium: a search draws its trials as they finish and Stop keeps them; clicking the best trial's point
    loads its settings (per-layer overrides, quantized weights) into the sidebar."""
    with streamlit_server() as url, chromium() as browser:
        page = browser.new_page(viewport={"width": 1400, "height": 2600})
        page.goto(url)
        page.get_by_text("Per-layer sparsity").first.wait_for(timeout=90_000)
        page.get_by_role("tab", name="Search").click()
        page.get_by_role("button", name="Run the search").click()
        page.get_by_text(re.compile(r"Searching \(tpe\)… \d\d+ trials")).wait_for(timeout=60_000)
        page.get_by_role("button", name="Stop").click()  # a stopped search keeps every trial so far
        done = page.get_by_text(re.compile(r"^Best: trial \d+, "))
        done.wait_for(timeout=90_000)
        best = int(re.match(r"Best: trial (\d+)", done.inner_text()).group(1))
        chart = page.locator(".js-plotly-plot").filter(has_text="Search: accuracy against size")
        trace, index = page.evaluate(
            """(best) => {
                const plot = [...document.querySelectorAll('.js-plotly-plot')]
                    .find(p => p.layout && p.layout.title && p.layout.title.text.includes('Search:'));
                for (const [t, data] of plot.data.entries()) {
                    const i = (data.customdata || []).indexOf(best);
                    if (i >= 0) return [t, i];
                }
                return [-1, -1];
            }""",
            best,
        )
        assert index >= 0
        point = chart.locator(".scatterlayer .trace").nth(trace).locator("path.point").nth(index)
        point.scroll_into_view_if_needed()
        box = point.bounding_box()
        x, y = box["x"] + box["width"] / 2, box["y"] + box["height"] / 2
        page.mouse.move(x, y)
        page.wait_for_timeout(300)
        page.mouse.click(x, y)
        page.get_by_text(re.compile(r"Per-layer overrides are set")).wait_for(timeout=30_000)
        assert (
            page.get_by_role("slider", name="Weight bits (per output channel, symmetric)").get_attribute(
                "aria-valuetext"
            )
            != "off"
        )
        assert page.get_by_test_id("stException").count() == 0
