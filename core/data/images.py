"""A user's images: a folder (or .zip of one) in ImageFolder layout, decoded with Pillow and made into what the
model's image input takes by a preset.

Layout as torchvision's ImageFolder: class subfolders give the labels, in sorted name order (`cat/`, `dog/` -> 0,
1); images directly in the folder have no labels. Each image is resized so its shorter side is `resize` (the
crop's longer side by default), centre-cropped to the input's height and width, converted to the colour the input
takes (`rgb`/`bgr` for 3 channels, `gray` for 1) and kept as bytes: 10,000 images at 224x224 are 1.5 GB as bytes
and 6 GB as float32. They become float32 (`scale`) in the input's layout (`nchw`/`nhwc`, read from the graph) a
slice at a time, when a session runs them.
"""

from __future__ import annotations

import hashlib
import shutil
import tempfile
import warnings
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from core.archive import safe_extract
from core.errors import InvalidSettingError
from core.model import DataPreview, Model
from core.onnx.inputs import declared_inputs
from core.onnx.runtime import default_threads

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff")
MAX_IMAGES = 20_000  # 3 GB of bytes at 224x224 (README: limits)
PREVIEWS = 6  # images shown before and after preprocessing
PREVIEW_SIDE = 96  # the longer side of a preview, in pixels
IGNORED = ("__MACOSX",)  # what zip tools add beside the images


@dataclass(frozen=True)
class Scale:
    """value = (pixel / 255 - mean) / std, per channel in RGB order."""

    help: str
    mean: tuple[float, float, float]
    std: tuple[float, float, float]


SCALES: dict[str, Scale] = {
    "unit": Scale("[0, 1]", (0.0, 0.0, 0.0), (1.0, 1.0, 1.0)),
    "imagenet": Scale("ImageNet mean/std", (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
    "raw": Scale("0-255", (0.0, 0.0, 0.0), (1 / 255, 1 / 255, 1 / 255)),
    "signed": Scale("[-1, 1]", (0.5, 0.5, 0.5), (0.5, 0.5, 0.5)),
}
COLORS: dict[str, int] = {"rgb": 3, "bgr": 3, "gray": 1}  # -> channels
LAYOUTS = ("nchw", "nhwc")
PREPROCESS_KEYS = ("scale", "color", "layout", "resize")  # what a user may set


@dataclass(frozen=True)
class Preprocessing:
    """How an image becomes the model's input."""

    height: int
    width: int
    resize: int  # the shorter side before the centre crop
    color: str
    scale: str
    layout: str

    def describe(self) -> str:
        return (
            f"shorter side resized to {self.resize}, centre-cropped to {self.height}x{self.width}, {self.color}, "
            f"{self.scale} ({SCALES[self.scale].help}), {self.layout}"
        )

    @property
    def offset_and_divisor(self) -> tuple[np.ndarray, np.ndarray]:
        """Per channel in this colour order: value = (pixel - offset) / divisor."""
        scale = SCALES[self.scale]
        mean, std = np.array(scale.mean), np.array(scale.std)
        if self.color == "bgr":
            mean, std = mean[::-1], std[::-1]
        elif self.color == "gray":
            mean, std = mean.mean(keepdims=True), std.mean(keepdims=True)
        return (mean * 255).astype(np.float32), (std * 255).astype(np.float32)


class PixelArray:
    """Images kept as bytes (samples, height, width, channels) that read as the float32 input they become: slicing
    the samples makes just those. Sessions run it a chunk at a time (`core.onnx.batches`). A part of it (`select`)
    shares the bytes and keeps the rows it holds, so splitting 10,000 images copies none of them."""

    def __init__(self, pixels: np.ndarray, preprocessing: Preprocessing, rows: np.ndarray | None = None) -> None:
        self.pixels = pixels
        self.preprocessing = preprocessing
        self.rows = np.arange(len(pixels)) if rows is None else rows
        self.dtype = np.dtype(np.float32)
        _, height, width, channels = pixels.shape
        nchw = preprocessing.layout == "nchw"
        self.shape = (len(self.rows), channels, height, width) if nchw else (len(self.rows), height, width, channels)
        self.ndim = 4

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, index: object) -> np.ndarray:
        parts = index if isinstance(index, tuple) else (index,)
        if any(part != slice(None) for part in parts[1:]):
            raise IndexError("images are sliced along their samples only")
        rows = self.rows[parts[0]]
        values = self.floats(self.pixels[np.atleast_1d(rows)])
        return values if np.ndim(rows) else values[0]  # one sample by number: no samples axis, as numpy does

    def __array__(self, dtype: object = None, copy: object = None) -> np.ndarray:
        values = self.floats(self.pixels[self.rows])
        return values if dtype is None else values.astype(dtype)

    def select(self, indices: np.ndarray) -> PixelArray:
        """These samples, sharing the bytes."""
        return PixelArray(self.pixels, self.preprocessing, self.rows[indices])

    def floats(self, pixels: np.ndarray) -> np.ndarray:
        offset, divisor = self.preprocessing.offset_and_divisor
        values = (pixels.astype(np.float32) - offset) / divisor
        return np.ascontiguousarray(values.transpose(0, 3, 1, 2)) if self.preprocessing.layout == "nchw" else values


@dataclass(frozen=True, eq=False)
class Images:
    """What an image folder holds: the pixels (as the model's input), labels and class names where there are class
    folders, a digest of every file, and a few images before and after preprocessing."""

    name: str
    input_name: str  # the graph input they feed
    pixels: PixelArray
    labels: np.ndarray | None
    classes: tuple[str, ...]
    sha256: str
    previews: tuple[DataPreview, ...]


def image_input(model: Model, source: str) -> tuple[str, tuple, str]:
    """The model's one image input: its name, declared dims and layout (channels of 1 or 3 beside the spatial
    dims). Anything else cannot take images."""
    inputs = declared_inputs(model.proto)
    if len(inputs) != 1 or len(inputs[0].dims) != 4 or inputs[0].dtype not in ("float32", "float16", "float64"):
        taken = ", ".join(f"{spec.name} ({spec.dtype}, rank {len(spec.dims)})" for spec in inputs)
        raise InvalidSettingError(
            f"images need a model with one float image input of rank 4; this one takes {taken}", source
        )
    spec = inputs[0]
    if spec.dims[1] in (1, 3):
        return spec.name, spec.dims, "nchw"
    if spec.dims[3] in (1, 3):
        return spec.name, spec.dims, "nhwc"
    dims = "x".join(str(dim) for dim in spec.dims)
    raise InvalidSettingError(f"input {spec.name!r} ({dims}) has no channel axis of 1 or 3 to put images in", source)


def default_preprocessing(
    model: Model, settings: dict[str, str], size: Callable[[], tuple[int, int] | None], source: str
) -> Preprocessing:
    """The preset for this model's input, with the user's `settings` (scale, color, layout, resize) on top.
    `size`: the images' common size (None where they differ), asked only where the input's height and width are
    symbolic: reading every header is wasted on a fixed input."""
    name, dims, graph_layout = image_input(model, source)
    layout = settings.get("layout", graph_layout)
    if layout not in LAYOUTS:
        raise InvalidSettingError(f"unknown layout {layout!r}; use {', '.join(LAYOUTS)}", source)
    channels, height, width = (dims[1], dims[2], dims[3]) if layout == "nchw" else (dims[3], dims[1], dims[2])
    if channels not in (1, 3):
        shape = "x".join(str(dim) for dim in dims)
        raise InvalidSettingError(
            f"layout {layout} reads {channels} channels from input {name!r} ({shape}); its graph reads {graph_layout}",
            source,
        )
    given = next((given.shape for given in model.given_inputs if given.name == name and given.shape), None)
    if given is not None:
        height, width = (given[2], given[3]) if layout == "nchw" else (given[1], given[2])
    if not (isinstance(height, int) and isinstance(width, int)):
        common = size()
        if common is None:
            raise InvalidSettingError(
                f"the images differ in size and input {name!r} has no fixed height and width to crop them to: set "
                f"it with --shape {name}=1x3xHxW (the page's Inputs panel)",
                source,
            )
        height, width = common
    color = settings.get("color", "rgb" if channels == 3 else "gray")
    if COLORS.get(color) != channels:
        raise InvalidSettingError(
            f"colour {color!r} does not fit {channels} channel(s); use "
            f"{', '.join(c for c, n in COLORS.items() if n == channels)}",
            source,
        )
    scale = settings.get("scale", "unit")
    if scale not in SCALES:
        raise InvalidSettingError(f"unknown scale {scale!r}; use {', '.join(SCALES)}", source)
    try:
        resize = int(settings.get("resize", max(height, width)))
    except ValueError:
        raise InvalidSettingError(
            f"resize must be a whole number of pixels, not {settings['resize']!r}", source
        ) from None
    if resize < max(height, width):
        raise InvalidSettingError(f"resize {resize} is smaller than the {height}x{width} crop", source)
    return Preprocessing(height, width, resize, color, scale, layout)


def read_images(
    path: Path, model: Model, settings: dict[str, str], progress: Callable[[float], None] | None = None
) -> Images:
    """The images of a folder or .zip, decoded a few at a time (with `progress`), for the model's image input."""
    source = str(path)
    image_input(model, source)  # a model that takes no images is told so before any file is read
    if path.is_dir():
        return _read_folder(path, path.name, model, settings, source, progress)
    work = Path(tempfile.mkdtemp(prefix="squeezelab-data-"))
    try:
        folder = safe_extract(path, work / "images", InvalidSettingError)
        entries = _entries(folder)
        if len(entries) == 1 and entries[0].is_dir() and any(entry.is_dir() for entry in _entries(entries[0])):
            folder = entries[0]  # a zip of the folder that holds the class folders
        return _read_folder(folder, path.name, model, settings, source, progress)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _entries(folder: Path) -> list[Path]:
    """What a folder holds, less hidden files and what zip tools add."""
    return sorted(path for path in folder.iterdir() if not path.name.startswith(".") and path.name not in IGNORED)


def _image_files(folder: Path, root: Path, source: str) -> list[Path]:
    files = [path for path in _entries(folder) if path.is_file()]
    others = [path for path in files if path.suffix.lower() not in IMAGE_SUFFIXES]
    if others:
        raise InvalidSettingError(
            f"{others[0].relative_to(root)} is not an image ({', '.join(IMAGE_SUFFIXES)})", source
        )
    return files


def _read_folder(folder: Path, name: str, model: Model, settings: dict[str, str], source: str, progress) -> Images:
    class_folders = [path for path in _entries(folder) if path.is_dir()]
    loose = [path for path in _entries(folder) if path.is_file()]
    if class_folders and loose:
        raise InvalidSettingError(
            f"{loose[0].name} sits beside class folders ({class_folders[0].name}/ …): put every image in a class "
            "folder, or none",
            source,
        )
    files, labels = [], []
    for label, class_folder in enumerate(class_folders):
        found = _image_files(class_folder, folder, source)
        files += found
        labels += [label] * len(found)
    if not class_folders:
        files = _image_files(folder, folder, source)
    if not files:
        raise InvalidSettingError(f"no images in the folder ({', '.join(IMAGE_SUFFIXES)})", source)
    if len(files) > MAX_IMAGES:
        raise InvalidSettingError(f"{len(files):,} images; the limit is {MAX_IMAGES:,}", source)
    preprocessing = default_preprocessing(model, settings, lambda: _common_size(files, folder, source), source)
    pixels = np.empty((len(files), preprocessing.height, preprocessing.width, COLORS[preprocessing.color]), np.uint8)
    digest = hashlib.sha256()

    def decode(index: int) -> bytes:
        data = files[index].read_bytes()
        pixels[index] = _decoded(files[index], folder, preprocessing, source)
        return data

    with ThreadPoolExecutor(max_workers=default_threads()) as pool:  # Pillow releases the GIL while decoding
        for done, data in enumerate(pool.map(decode, range(len(files))), start=1):
            digest.update(str(files[done - 1].relative_to(folder)).encode())
            digest.update(hashlib.sha256(data).digest())
            if progress and (done % 64 == 0 or done == len(files)):
                progress(done / len(files))
    array = PixelArray(pixels, preprocessing)
    return Images(
        name,
        image_input(model, source)[0],
        array,
        np.array(labels, np.int64) if class_folders else None,
        tuple(path.name for path in class_folders),
        digest.hexdigest(),
        tuple(_preview(files[index], array, index) for index in range(min(PREVIEWS, len(files)))),
    )


def _open(path: Path, folder: Path, source: str) -> Image.Image:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(path)
            image.load()
        return image
    except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombWarning, Image.DecompressionBombError):
        raise InvalidSettingError(f"{path.relative_to(folder)} is not a readable image", source) from None


def _common_size(files: list[Path], folder: Path, source: str) -> tuple[int, int] | None:
    """The images' size where they all share one, else None (read from their headers only)."""
    sizes = set()
    for path in files:
        try:
            with Image.open(path) as image:
                width, height = image.size
        except (UnidentifiedImageError, OSError, ValueError):
            raise InvalidSettingError(f"{path.relative_to(folder)} is not a readable image", source) from None
        sizes.add((height, width))
        if len(sizes) > 1:
            return None
    return sizes.pop()


def _decoded(path: Path, folder: Path, preprocessing: Preprocessing, source: str) -> np.ndarray:
    image = _open(path, folder, source).convert("L" if preprocessing.color == "gray" else "RGB")
    image = _resized_and_cropped(image, preprocessing)
    values = np.asarray(image, np.uint8)
    if preprocessing.color == "gray":
        return values[:, :, None]
    return values[:, :, ::-1] if preprocessing.color == "bgr" else values


def _resized_and_cropped(image: Image.Image, preprocessing: Preprocessing) -> Image.Image:
    width, height = image.size
    shorter = min(width, height)
    if shorter != preprocessing.resize:
        ratio = preprocessing.resize / shorter
        width, height = max(1, round(width * ratio)), max(1, round(height * ratio))
        image = image.resize((width, height), Image.Resampling.BILINEAR)
    if width < preprocessing.width or height < preprocessing.height:
        image = image.resize((max(width, preprocessing.width), max(height, preprocessing.height)))
        width, height = image.size
    left, top = (width - preprocessing.width) // 2, (height - preprocessing.height) // 2
    return image.crop((left, top, left + preprocessing.width, top + preprocessing.height))


def _preview(path: Path, array: PixelArray, index: int) -> DataPreview:
    """The image as the file holds it and as the model receives it (its float values stretched to 0-255 for the
    eye, channels in the order the model reads them, with the value range stated)."""
    with Image.open(path) as image:
        before = image.convert("RGB")
        before.thumbnail((PREVIEW_SIDE, PREVIEW_SIDE))
        before_pixels = np.asarray(before, np.uint8)
    values = array[index : index + 1][0]  # exactly what a session is fed
    if array.preprocessing.layout == "nchw":
        values = values.transpose(1, 2, 0)
    low, high = float(values.min()), float(values.max())
    stretched = np.round((values - low) / (high - low or 1.0) * 255).astype(np.uint8)
    if stretched.shape[2] == 1:
        stretched = np.repeat(stretched, 3, axis=2)
    return DataPreview(path.name, before_pixels, stretched, low, high)
