"""A user's data at scale: N generated 224x224 JPEGs in class folders read for resnet18, split 80/20, and every image
run through the CNN, with the time of each step and the process's peak memory.

Goal (issue 13): 10,000 images never sit in memory as float32 at once (6 GB): they are kept as bytes (1.5 GB) and
made float a chunk at a time, so the peak stays far below 6 GB.
Run: .venv/bin/python bench/data_scale.py [--images 10000] [--folder /tmp/squeezelab-images]
"""

from __future__ import annotations

import argparse
import resource
import shutil
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image

from core import load_model
from core.data.datasets import with_data

CLASSES = 10


def generate(folder: Path, count: int) -> None:
    """Seeded noise with a class-dependent tint, 240x320 (so every image is resized and cropped), as JPEG."""
    rng = np.random.default_rng(0)
    for index in range(count):
        label = index % CLASSES
        target = folder / f"class{label}"
        target.mkdir(parents=True, exist_ok=True)
        pixels = rng.integers(0, 256, (240, 320, 3), np.uint8) // 2 + np.uint8(label * 12)
        Image.fromarray(pixels).save(target / f"{index:05d}.jpg", quality=90)


def peak_gb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2  # kB on Linux


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=10_000)
    parser.add_argument("--folder", type=Path, default=Path("/tmp/squeezelab-images"))
    args = parser.parse_args()
    if not args.folder.exists() or sum(1 for _ in args.folder.rglob("*.jpg")) != args.images:
        shutil.rmtree(args.folder, ignore_errors=True)
        started = time.perf_counter()
        generate(args.folder, args.images)
        print(f"generated {args.images:,} JPEGs in {time.perf_counter() - started:.1f} s", file=sys.stderr)
    size = sum(path.stat().st_size for path in args.folder.rglob("*.jpg"))
    model = load_model("resnet18")
    baseline = peak_gb()
    started = time.perf_counter()
    shown = [-1]

    decoded = []

    def progress(fraction: float) -> None:
        if fraction >= 0.5 and not decoded:
            decoded.append(time.perf_counter() - started)
        if int(fraction * 10) > shown[0]:
            shown[0] = int(fraction * 10)
            print(f"  reading and running the held-out part {fraction:.0%}", file=sys.stderr)

    given = with_data(model, args.folder, progress=progress)  # decodes, then runs the original on the held-out part
    read_s = time.perf_counter() - started
    pixels = given.eval_set.inputs["image"].pixels.nbytes  # the tuning part shares the same bytes
    started = time.perf_counter()
    outputs = given.outputs_of(given.runnable, inputs=given.tuning_set.inputs)[0]  # the other 80 % too
    tuning_s = time.perf_counter() - started
    float_gb = args.images * 3 * 224 * 224 * 4 / 1024**3
    print(f"{args.images:,} images ({size / 1024**2:.0f} MB of JPEG), {given.data.preprocessing}")
    print(f"read and decoded: {decoded[0]:.1f} s; then the held-out part ({given.data.held_out:,}) through resnet18: "
          f"{read_s - decoded[0]:.1f} s")  # fmt: skip
    print(f"tuning part ({given.data.tuning:,}) through resnet18: {tuning_s:.1f} s ({outputs.shape[0]:,} outputs)")
    print(f"kept as bytes: {pixels / 1024**3:.2f} GB; as float32 they would be {float_gb:.2f} GB")
    print(f"peak memory: {peak_gb():.2f} GB (after loading the model: {baseline:.2f} GB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
