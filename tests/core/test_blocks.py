from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from core import InvalidSettingError, PruneConfig, Recipe, build_report, compress, export_bytes, model_from_bytes
from core.onnx.runtime import create_session, run
from tests.graphs import structured_cnn


def _block(amount: float = 0.0, criterion: str = "l1", drop: tuple[str, ...] = ()) -> Recipe:
    return Recipe(PruneConfig(amount, criterion, granularity="block", drop_blocks=drop))


def _outputs(data: bytes, feeds) -> np.ndarray:
    return run(create_session(data), feeds)[0]


def test_dropping_a_block_equals_zeroing_its_branch():
    model = model_from_bytes(structured_cnn().SerializeToString(), name="cnn.onnx", source="cnn.onnx")
    compressed = compress(model, _block(0.99))
    assert [(cost.name, cost.layers, cost.dropped) for cost in compressed.blocks] == [
        ("residual_add", ["res2", "res1"], True)
    ]
    data = export_bytes(compressed)
    onnx.checker.check_model(onnx.load_from_string(data), full_check=True)
    # the branch ends in res2: with its filters and bias at zero the sum is the skip path alone
    zeroed = structured_cnn()
    for init in zeroed.graph.initializer:
        if init.name in ("res2.w", "res2.b"):
            init.CopyFrom(numpy_helper.from_array(np.zeros_like(numpy_helper.to_array(init)), init.name))
    expected = _outputs(zeroed.SerializeToString(), model.eval_set.inputs)
    np.testing.assert_allclose(_outputs(data, model.eval_set.inputs), expected, rtol=0, atol=1e-5)
    assert {layer.name for layer in compressed.layers} == {layer.name for layer in model.layers} - {"res1.w", "res2.w"}


def test_digits_blocks_report_their_cost_and_the_cheapest_goes_first(digits_cnn):
    # l1 (branch weights): the activation criterion read the held-out digits until they were kept apart; on the
    # 32 tuning digits its branch ratios (block2 1.05, block3 1.19) pick block2, which costs 59 % held-out accuracy
    compressed = compress(digits_cnn, _block(0.34, "l1"))
    costs = {cost.name: cost for cost in compressed.blocks}
    assert sorted(costs) == ["/block1/Add", "/block2/Add", "/block3/Add"]
    assert [name for name, cost in costs.items() if cost.dropped] == ["/block3/Add"]
    assert min(costs.values(), key=lambda cost: cost.score).name == "/block3/Add"
    report = build_report(compressed, export_bytes(compressed))
    # the cost shown for a block is what dropping it gives on the tuning part (a user picks blocks by it); the
    # held-out accuracy is measured apart
    tuning = digits_cnn.tuning_part(256)[0]
    dropped = _outputs(export_bytes(compressed), tuning.inputs)
    assert costs["/block3/Add"].accuracy == float(np.mean(dropped.argmax(1) == tuning.labels)) == 1.0
    assert report.accuracy.compressed == pytest.approx(355 / 359)
    assert report.totals["macs"] - report.totals["macs_after"] == costs["/block3/Add"].macs == 2 * 147_456
    removed = [layer for layer in report.layers if not layer.shape_after]
    assert [layer.node for layer in removed] == ["/block3/conv1/Conv", "/block3/conv2/Conv"]
    assert all(layer.sparsity == 1.0 and layer.macs_after == 0 for layer in removed)


def test_blocks_picked_by_name_and_unknown_names_refused(digits_cnn):
    picked = compress(digits_cnn, _block(drop=("/block1/Add",)))
    assert [cost.name for cost in picked.blocks if cost.dropped] == ["/block1/Add"]
    with pytest.raises(InvalidSettingError, match=r"no droppable block named /block9/Add; blocks: /block1/Add, "):
        compress(digits_cnn, _block(drop=("/block9/Add",)))
    with pytest.raises(InvalidSettingError, match="drop_blocks only applies to block granularity"):
        PruneConfig(0.5, drop_blocks=("/block1/Add",))
    recipe = _block(drop=("/block1/Add",))
    assert Recipe.from_json(recipe.to_json()) == recipe


def test_resnet18_has_eight_droppable_blocks_including_downsampling_ones(resnet18):
    compressed = compress(resnet18, _block(0.5))
    assert len(compressed.blocks) == 8 and sum(cost.dropped for cost in compressed.blocks) == 4
    assert _outputs(export_bytes(compressed), resnet18.latency_feed).shape == (1, 1000)
