"""The dashboard server's memory after a tour: every sample, two uploads, then back to the first sample, in
Chromium (issue 14's target: under 1.2 GB resident, the server and its children together).

Run: .venv/bin/python bench/server_memory.py
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the browser helpers live with the e2e tests
from bench.memory import tree_rss
from tests.e2e.browser import chromium, streamlit_server
from tests.graphs import conv_gemm_model, structured_cnn

TARGET_GB = 1.2


def resident_gb(pid: int) -> float:
    return tree_rss(pid) / 1024**3


def main() -> int:
    started: list[subprocess.Popen] = []
    original = subprocess.Popen

    def remember(*args, **kwargs):
        process = original(*args, **kwargs)
        started.append(process)
        return process

    subprocess.Popen = remember  # the server's pid, as the helper starts it
    folder = Path(tempfile.mkdtemp(prefix="squeezelab-memory-"))
    uploads = [folder / "tiny.onnx", folder / "cnn.onnx"]
    uploads[0].write_bytes(conv_gemm_model().SerializeToString())
    uploads[1].write_bytes(structured_cnn().SerializeToString())
    with streamlit_server() as url, chromium() as browser:
        server = started[0].pid
        subprocess.Popen = original
        page = browser.new_page(viewport={"width": 1400, "height": 1400})
        page.goto(url)
        page.get_by_text("Per-layer sparsity").first.wait_for(timeout=120_000)
        print(f"first page: {resident_gb(server):.2f} GB")
        for name in ("digits-mlp", "minilm", "resnet18", "digits-cnn"):
            page.get_by_test_id("stSidebar").get_by_test_id("stSelectbox").first.click()
            page.get_by_role("option", name=name, exact=False).first.click()
            page.get_by_text(f"{name}:").first.wait_for(timeout=300_000)
            page.get_by_text("This file:").first.wait_for(timeout=300_000)
            print(f"after {name}: {resident_gb(server):.2f} GB")
        for path in uploads:
            uploader = page.get_by_test_id("stFileUploader").filter(has_text="upload a model")
            uploader.locator("input[type=file]").set_input_files(str(path))
            page.get_by_text(f"{path.name}:").first.wait_for(timeout=120_000)
            page.get_by_text("This file:").first.wait_for(timeout=120_000)
            print(f"after uploading {path.name}: {resident_gb(server):.2f} GB")
        page.get_by_test_id("stSidebar").get_by_test_id("stSelectbox").first.click()
        page.get_by_role("option", name="digits-cnn", exact=False).first.click()
        page.get_by_text("digits-cnn:").first.wait_for(timeout=120_000)
        page.get_by_text("This file:").first.wait_for(timeout=120_000)
        final = resident_gb(server)
    print(f"back on digits-cnn: {final:.2f} GB; target < {TARGET_GB} GB: {'met' if final < TARGET_GB else 'NOT met'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
