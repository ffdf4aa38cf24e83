from __future__ import annotations

from dataclasses import replace

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from core import (
    InvalidSettingError,
    PruneConfig,
    QuantConfig,
    Recipe,
    build_report,
    compress,
    export_bytes,
    prepare_index,
)
from core.cli import main
from core.compression.recipe import LayerOverride

STEM, FC = "/stem/stem.0/Conv", "/fc/Gemm"


def _initializers(data: bytes) -> dict[str, onnx.TensorProto]:
    return {init.name: init for init in onnx.load_from_string(data).graph.initializer}


def test_overrides_show_up_in_the_exported_graph(digits_cnn):
    recipe = Recipe(
        PruneConfig(0.5, scope="layer"),
        QuantConfig(8),
        overrides=(LayerOverride(STEM, skip=True), LayerOverride(FC, amount=0.1, bits=3)),
    )
    compressed = compress(digits_cnn, recipe)
    stored = _initializers(export_bytes(compressed))
    stem = next(layer for layer in digits_cnn.layers if layer.node == STEM)
    # skipped: the original float weights, no zeros added, no int8 codes
    assert stored[stem.name].data_type == onnx.TensorProto.FLOAT
    np.testing.assert_array_equal(numpy_helper.to_array(stored[stem.name]), digits_cnn.weights[stem.name])
    assert f"{stem.name}_quantized" not in stored
    # its own amount and bits: 10 % zeros (32 of 320) and at most 7 levels per output channel
    codes = numpy_helper.to_array(stored["fc.weight_quantized"])
    assert int(np.count_nonzero(codes == 0)) >= 32 and all(len(np.unique(row)) <= 7 for row in codes)
    report = build_report(compressed, export_bytes(compressed))
    by_node = {layer.node: layer for layer in report.layers}
    assert by_node[STEM].bits == 32 and by_node[STEM].zeros == 0 and by_node[FC].bits == 3
    assert (
        by_node["/block1/conv1/Conv"].sparsity == pytest.approx(0.5, abs=0.02)
        and by_node["/block1/conv1/Conv"].bits == 8
    )


def test_overrides_round_trip_and_are_checked(digits_cnn):
    recipe = Recipe(quant=QuantConfig(8), overrides=(LayerOverride(FC, bits=4),))
    assert Recipe.from_json(recipe.to_json()) == recipe
    assert LayerOverride.parse("/fc/Gemm=amount:0.3,bits:4") == LayerOverride(FC, amount=0.3, bits=4)
    assert LayerOverride.parse("/x=skip") == LayerOverride("/x", skip=True)
    with pytest.raises(InvalidSettingError, match="overrides name no prunable layer: /nope"):
        compress(digits_cnn, Recipe(overrides=(LayerOverride("/nope", bits=4),)))
    with pytest.raises(InvalidSettingError, match="weight bits must be 2-8"):
        LayerOverride(FC, bits=9)
    with pytest.raises(
        InvalidSettingError, match="per-layer amounts and skip apply to unstructured and channel pruning, not block"
    ):
        Recipe(PruneConfig(0.5, granularity="block"), overrides=(LayerOverride(FC, amount=0.2),))


@pytest.mark.parametrize("scope", ["layer", "global"])
def test_a_channel_override_sets_its_coupled_groups_amount(digits_cnn, scope):
    """A layer's own amount prunes the channels of every layer coupled with it; of two in one group, the smaller."""
    base = Recipe(PruneConfig(0.25, scope=scope, granularity="channel"))
    index = prepare_index(digits_cnn, base)
    node = {layer.name: layer.node for layer in digits_cnn.layers}
    single = sorted(next(group for group in index.groups if len(group) == 1))
    coupled = sorted(next(group for group in index.groups if len(group) >= 2))
    skipped = sorted(next(group for group in index.groups if len(group) == 1 and sorted(group) != single))
    overrides = (LayerOverride(node[single[0]], amount=0.5), LayerOverride(node[coupled[0]], amount=0.75),
                 LayerOverride(node[coupled[1]], amount=0.5), LayerOverride(node[skipped[0]], skip=True))  # fmt: skip
    compressed = compress(digits_cnn, replace(base, overrides=overrides))
    before = {layer.name: layer.out_channels for layer in digits_cnn.layers}
    after = {layer.name: layer.out_channels for layer in compressed.layers}
    for weight, amount in ((single[0], 0.5), (skipped[0], 0.0), *((member, 0.5) for member in coupled)):
        assert after[weight] == before[weight] - round(amount * before[weight]), weight
    overridden = {*single, *coupled, *skipped}
    rest = [sorted(group) for group in index.groups if not set(group) & overridden]
    lost = [before[group[0]] - after[group[0]] for group in rest]  # classes each other group lost
    if scope == "layer":  # every other group at the recipe's 25 %
        assert lost == [round(0.25 * before[group[0]]) for group in rest]
    else:  # 25 % of the other groups' classes, ranked together by normalised score
        assert sum(lost) == round(0.25 * sum(before[group[0]] for group in rest))
    # the same recipe with no amount of its own prunes only the overridden groups
    only = compress(digits_cnn, Recipe(PruneConfig(0.0, scope=scope, granularity="channel"), overrides=overrides))
    assert {layer.name: layer.out_channels for layer in only.layers} == before | {
        weight: after[weight] for weight in (*single, *coupled)
    }


def test_the_cli_honours_overrides(tmp_path, capsys):
    out, recipe = tmp_path / "o.onnx", tmp_path / "r.json"
    argv = ["compress", "digits-cnn", "--bits", "8", "--override", f"{FC}=bits:2", "--override", f"{STEM}=skip"]
    assert main([*argv, "--out", str(out), "--recipe", str(recipe), "--no-latency"]) == 0
    codes = numpy_helper.to_array(_initializers(out.read_bytes())["fc.weight_quantized"])
    assert set(np.unique(codes)) <= {-1, 0, 1}  # 2 bits: three levels
    assert '"layer": "/stem/stem.0/Conv"' in recipe.read_text()
    capsys.readouterr()
    assert main(["compress", "digits-cnn", "--override", "fc=fast", "--out", str(out)]) == 2
    assert "override 'fc=fast': expected amount:A, bits:B or skip" in capsys.readouterr().err
