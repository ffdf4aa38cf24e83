"""Weight quantization: symmetric, per output channel, round to nearest, stored as int8 on an n-bit grid."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True, eq=False)
class QuantizedWeight:
    """values * scale (broadcast along `axis`) reconstructs the weight to within scale / 2 per element."""

    values: np.ndarray  # int8, in [-(2^(bits-1) - 1), 2^(bits-1) - 1]
    scales: np.ndarray  # float32, one per output channel
    axis: int
    bits: int

    def dequantize(self) -> np.ndarray:
        shape = [1] * self.values.ndim
        shape[self.axis] = -1
        return self.values.astype(np.float32) * self.scales.reshape(shape)


def levels(bits: int) -> int:
    """Distinct values of the symmetric grid: 2^bits - 1 (the most negative code is unused, keeping zero exact)."""
    return 2**bits - 1


def quantize_weight(weights: np.ndarray, bits: int, axis: int) -> QuantizedWeight:
    largest = 2 ** (bits - 1) - 1
    other_axes = tuple(i for i in range(weights.ndim) if i != axis)
    max_abs = np.max(np.abs(weights), axis=other_axes, keepdims=True)
    # An all-zero channel (pruned away) gets scale 1: its codes are 0 whatever the scale, and 0 is not a valid scale.
    scales = np.where(max_abs > 0, max_abs / np.float32(largest), np.float32(1)).astype(np.float32)
    values = np.clip(np.rint(weights / scales), -largest, largest).astype(np.int8)
    return QuantizedWeight(values, scales.ravel(), axis, bits)


def code_counts(values: np.ndarray, bits: int) -> tuple[list[int], list[int]]:
    """Every code of the `bits` grid, in order, with how many of `values` (int8 codes) use it."""
    largest = 2 ** (bits - 1) - 1
    counts = np.bincount(values.ravel().astype(np.int16) + largest, minlength=2 * largest + 1)
    return list(range(-largest, largest + 1)), counts.tolist()
