from __future__ import annotations

from core import PruneConfig, QuantConfig, Recipe, build_report, compare_latency, compress, export_bytes
from core.cli import main
from core.present.html_report import render


def test_the_report_holds_the_figures_and_needs_no_network(digits_cnn):
    compressed = compress(digits_cnn, Recipe(PruneConfig(0.3), QuantConfig(4)))
    data = export_bytes(compressed)
    latency = compare_latency(digits_cnn.onnx_bytes, data, digits_cnn.latency_feed, budget_s=0.05)
    report = build_report(compressed, data, latency)
    page = render(report)
    assert f"{report.accuracy.original:.2%}" in page and f"{report.accuracy.compressed:.2%}" in page
    assert f"{report.size_bytes['compressed'].raw:,} B" in page and f"{report.totals['nonzero']:,}" in page
    assert f"{latency.compressed.median:.3f} ms" in page and "Speed on this CPU: should run slower" in page
    assert " ".join(latency.environment.cpu_flags) in page
    assert page.count('class="plotly-graph-div"') == 4  # sparsity, histogram, levels, latency
    assert "<script src=" not in page  # plotly.js is inline: nothing to fetch
    assert "/block3/conv1/Conv" in page


def test_the_cli_writes_the_report(tmp_path, capsys):
    recipe, html = tmp_path / "r.json", tmp_path / "report.html"
    assert (
        main(
            [
                "compress",
                "digits-mlp",
                "--prune",
                "0.5",
                "--out",
                str(tmp_path / "m.onnx"),
                "--recipe",
                str(recipe),
                "--no-latency",
            ]
        )
        == 0
    )
    assert main(["report", "digits-mlp", "--recipe", str(recipe), "--html", str(html), "--no-latency"]) == 0
    assert "opens offline" in capsys.readouterr().out and "digits-mlp" in html.read_text()
