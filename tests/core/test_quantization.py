from __future__ import annotations

import numpy as np
import pytest

from core.compression.quantization import levels, quantize_weight


@pytest.mark.parametrize("bits", range(2, 9))
@pytest.mark.parametrize("axis", [0, 1])
def test_error_is_at_most_half_a_step_per_channel(bits, axis):
    weights = np.random.default_rng(bits).standard_normal((6, 5, 3)).astype(np.float32) * np.float32(3.0)
    quantized = quantize_weight(weights, bits, axis)
    shape = [1, 1, 1]
    shape[axis] = -1
    scales = quantized.scales.reshape(shape)
    error = np.abs(weights - quantized.dequantize())
    assert np.all(error <= scales / 2 * (1 + 1e-6))
    largest = 2 ** (bits - 1) - 1
    assert quantized.values.dtype == np.int8
    assert quantized.values.min() >= -largest and quantized.values.max() <= largest
    # the largest |w| of each channel sits exactly on the top code
    assert np.all(np.max(np.abs(quantized.values), axis=tuple(i for i in range(3) if i != axis)) == largest)


@pytest.mark.parametrize("bits", [2, 3, 4, 8])
def test_each_channel_uses_at_most_the_grid_levels(bits):
    weights = np.random.default_rng(0).standard_normal((4, 500)).astype(np.float32)
    weights[0] = np.linspace(-1, 1, 500)
    quantized = quantize_weight(weights, bits, 0)
    assert levels(bits) == 2**bits - 1
    for channel in quantized.dequantize():
        assert len(np.unique(channel)) <= levels(bits)
    assert len(np.unique(quantized.dequantize()[0])) == levels(bits)  # an evenly spread channel fills every level


def test_zeros_stay_zero_and_an_all_zero_channel_is_safe():
    weights = np.random.default_rng(0).standard_normal((3, 10)).astype(np.float32)
    weights[0, ::2] = 0
    weights[2] = 0
    quantized = quantize_weight(weights, 4, 0)
    restored = quantized.dequantize()
    assert np.all(restored[weights == 0] == 0)
    assert np.all(np.isfinite(quantized.scales)) and np.all(quantized.scales > 0)
    assert np.all(restored[2] == 0)
