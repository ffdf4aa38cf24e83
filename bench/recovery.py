"""Accuracy recovery against issue 15's targets, one run, figures printed: each case compressed, then recovered within
its time budget on the tuning part (digits: the 1,438 training digits), and judged on the held-out part (the 359
test digits, never seen in training). Each case is recovered twice with distill: pruned once then trained
(oneshot), and pruned while training (gradual, 10 steps); the target is judged on the better of the two, and
both are printed.

minilm is judged by the mean cosine of its sentence embeddings to the original's, on held-out sentences: real
English, the first sentences of the Python standard library's docstrings (written by its authors, not by us),
split 80/20 by the tool like any user's .txt.

Run: .venv/bin/python bench/recovery.py [--seconds 60]
"""

from __future__ import annotations

import argparse
import importlib
import inspect
import re
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from core import PruneConfig, QuantConfig, Recipe, compress, export_bytes, load_model, prepare_index
from core.compression.recipe import RecoverConfig
from core.compression.recover import recover
from core.data.datasets import with_data
from core.data.quality import measure, metric_of
from sample_models import data


@dataclass(frozen=True)
class Case:
    model: str
    label: str
    recipe: Recipe
    target: float  # held-out accuracy after recovery


CASES = [
    Case("digits-cnn", "50 % channels", Recipe(PruneConfig(0.5, granularity="channel")), 0.990),
    Case("digits-cnn", "75 % channels", Recipe(PruneConfig(0.75, granularity="channel")), 0.975),
    Case("digits-mlp", "90 % unstructured", Recipe(PruneConfig(0.9)), 0.970),
    Case("digits-cnn", "2-bit weights", Recipe(quant=QuantConfig(2)), 0.970),
]


def held_out(model, export: bytes) -> float:
    return metric_of(model).measured(measure(model, model.outputs_of(export)))


def run(
    model, case: Case, seconds: float, method: str = "distill", schedule: str = "oneshot"
) -> tuple[float, float, float, int]:
    compressed = compress(model, case.recipe, prepare_index(model, case.recipe))
    started = time.perf_counter()
    recovered = recover(compressed, RecoverConfig(method, seconds, schedule=schedule))
    took = time.perf_counter() - started
    return recovered.recovery.before, held_out(model, export_bytes(recovered)), took, recovered.recovery.steps


def user_onnx(folder: Path):
    """digits-cnn as a user would bring it: a plain .onnx and an .npz of all 1,797 digits, split 80/20 by the tool."""
    train_x, train_y, test_x, test_y = data.digits_split()
    arrays = folder / "digits.npz"
    np.savez(arrays, image=np.concatenate([train_x, test_x]), labels=np.concatenate([train_y, test_y]))
    path = folder / "digits-cnn.onnx"
    path.write_bytes(load_model("digits-cnn").onnx_bytes)
    return with_data(load_model(str(path)), arrays)


def docstring_sentences(limit: int = 4000) -> list[str]:
    """Sentences of 6 to 40 words from the standard library's module, class and function docstrings."""
    seen: dict[str, None] = {}
    for name in STDLIB_MODULES:
        module = importlib.import_module(name)
        docs = [module.__doc__ or ""] + [
            member.__doc__
            for _, member in inspect.getmembers(module)
            if isinstance(getattr(member, "__doc__", None), str)
        ]
        for doc in docs:
            for sentence in re.split(r"(?<=[.!?])\s+", " ".join(doc.split())):
                if 6 <= len(sentence.split()) <= 40 and sentence[0].isupper() and sentence.endswith("."):
                    seen.setdefault(sentence)
    return list(seen)[:limit]


STDLIB_MODULES = (
    "os json collections itertools functools re pathlib subprocess threading argparse logging statistics decimal "
    "fractions datetime calendar textwrap string shutil tempfile zipfile tarfile csv sqlite3 asyncio unittest "
    "dataclasses heapq bisect random math socket ssl html difflib pickle copy inspect ast codecs io glob fnmatch "
    "hashlib secrets uuid base64 queue sched selectors contextlib abc numbers enum pprint weakref types operator "
    "locale gettext platform sysconfig timeit pdb doctest configparser plistlib wave imaplib smtplib ftplib mailbox "
    "mimetypes gzip bz2 lzma struct array"
).split()
MINILM_BATCH = 16  # a step of 64 sentences of 128 tokens takes seconds here
MINILM = Recipe(PruneConfig(0.4, granularity="channel"), QuantConfig(8, activations="dynamic"))


def minilm_line(folder: Path, seconds: float) -> str:
    text = folder / "sentences.txt"
    text.write_text("\n".join(docstring_sentences()) + "\n")
    model = with_data(load_model("minilm"), text)
    compressed = compress(model, MINILM, prepare_index(model, MINILM))
    corrected = held_out(model, export_bytes(recover(compressed, RecoverConfig("correct"))))
    started = time.perf_counter()
    recovered = recover(compressed, RecoverConfig("distill", seconds, batch=MINILM_BATCH))
    took, info = time.perf_counter() - started, recovered.recovery
    after = held_out(model, export_bytes(recovered))
    return (
        f"{'minilm':<11}{'40% ch + dyn int8':<20}{info.before:>8.4f}{corrected:>8.4f}{'':>6}{after:>8.4f}{'':>8}"
        f"{'':>8}{took:>9.1f}{info.steps:>8}  (mean cosine to the original, {model.data.held_out} held-out "
        f"sentences; {info.tuning_samples} tuning; batch {MINILM_BATCH}, Adam {info.lr:g}; seconds include the "
        "teacher's pass over the tuning sentences)"
    )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=60.0)
    args = parser.parse_args()
    print(f"distill, Adam 3e-3, cosine decay, {args.seconds:g} s budget, 2 threads; accuracy on the held-out digits")
    print("correct: bias correction alone, no training; its column is its held-out accuracy and time")
    print("oneshot: pruned, then trained; gradual: pruned in 10 steps during the first half of the budget")
    header = f"{'model':<11}{'compression':<20}{'before':>8}{'correct':>8}{'(s)':>6}{'oneshot':>8}{'gradual':>8}"
    print(header + f"{'target':>8}{'seconds':>9}{'steps':>8}  met")
    for case in CASES:
        model = load_model(case.model)
        _, corrected, correct_s, _ = run(model, case, args.seconds, "correct")
        before, oneshot, took, steps = run(model, case, args.seconds)
        gradual = run(model, case, args.seconds, schedule="gradual")[1] if case.recipe.prune.active else None
        best = max(oneshot, gradual or 0.0)
        print(
            f"{case.model:<11}{case.label:<20}{before:>8.1%}{corrected:>8.1%}{correct_s:>6.1f}{oneshot:>8.1%}"
            f"{'—' if gradual is None else f'{gradual:.1%}':>8}{case.target:>8.1%}{took:>9.1f}{steps:>8}  "
            f"{'yes' if best >= case.target else 'NO'}"
        )
    with tempfile.TemporaryDirectory() as folder:
        model = user_onnx(Path(folder))
        before, oneshot, took, steps = run(model, CASES[0], args.seconds)
        gradual = run(model, CASES[0], args.seconds, schedule="gradual")[1]
        print(
            f"{'user .onnx':<11}{'50 % channels':<20}{before:>8.1%}{'':>14}{oneshot:>8.1%}{gradual:>8.1%}{'':>8}"
            f"{took:>9.1f}{steps:>8}  (its own 80/20 split of all 1,797 digits: {model.data.held_out} held out; "
            "trained in a sandbox child)"
        )
        print(minilm_line(Path(folder), args.seconds))


if __name__ == "__main__":
    main()
