from __future__ import annotations

from core import build_report, compress, export_bytes
from core.cli import main
from core.explore.allocation import allocate, plans
from core.explore.sensitivity import cached_scan


def test_auto_allocation_hits_the_target_and_beats_uniform_and_global(digits_cnn):
    scan = cached_scan(digits_cnn)
    amounts = allocate(digits_cnn, scan, 0.7)
    removed = sum(amounts[layer.node] * layer.params for layer in digits_cnn.layers)
    assert abs(removed - 0.7 * digits_cnn.prunable_params) <= 1
    fragile = scan.layers.index("/stem/stem.0/Conv")
    assert scan.drops[fragile][2] > 0.5 and amounts["/stem/stem.0/Conv"] <= 0.25  # the fragile stem is spared
    accuracy = {}
    for plan in plans(digits_cnn, scan, 0.7):
        compressed = compress(digits_cnn, plan.recipe)
        report = build_report(compressed, export_bytes(compressed))
        assert abs(report.totals["sparsity"] - 0.7) < 0.002
        accuracy[plan.name] = report.accuracy.compressed
    assert accuracy["auto"] > accuracy["global"] > accuracy["uniform"]


def test_the_cli_writes_the_auto_recipe(tmp_path, capsys):
    recipe = tmp_path / "auto.json"
    assert main(["allocate", "digits-mlp", "--target", "0.6", "--recipe", str(recipe)]) == 0
    printed = capsys.readouterr().out
    assert "uniform" in printed and "global" in printed and "auto" in printed
    assert (
        main(
            ["compress", "digits-mlp", "--apply-recipe", str(recipe), "--out", str(tmp_path / "m.onnx"), "--no-latency"]
        )
        == 0
    )
    assert "sparsity 60.00%" in capsys.readouterr().out


def test_bits_allocation_meets_the_mean_and_beats_uniform_bits(digits_cnn):
    from core import QuantConfig, Recipe
    from core.compression.recipe import LayerOverride
    from core.explore.allocation import allocate_bits

    scan = cached_scan(digits_cnn)
    widths = allocate_bits(digits_cnn, scan, 4.0)
    mean = sum(widths[layer.node] * layer.params for layer in digits_cnn.layers) / digits_cnn.prunable_params
    assert mean <= 4.0 and set(widths.values()) <= {8, 6, 4, 3}
    auto = Recipe(
        quant=QuantConfig(8), overrides=tuple(LayerOverride(node, bits=bits) for node, bits in widths.items())
    )
    scores = {}
    for name, recipe in (("auto", auto), ("uniform 4", Recipe(quant=QuantConfig(4)))):
        compressed = compress(digits_cnn, recipe)
        scores[name] = build_report(compressed, export_bytes(compressed)).accuracy.compressed
    assert scores["auto"] >= scores["uniform 4"]
