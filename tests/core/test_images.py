"""A user's images (ImageFolder folders and zips), text and targets: read a chunk at a time, split into a tuning and
a held-out part, scored on the held-out part, and every bad input refused in one line."""

from __future__ import annotations

import json
import stat
import zipfile

import numpy as np
import pytest
from PIL import Image

from core import InvalidSettingError, QuantConfig, Recipe, compress, export_bytes, load_model, model_from_bytes
from core.data.datasets import with_data
from core.data.images import PixelArray
from core.measure.summaries import build_report
from core.onnx import batches
from core.onnx.inputs import GivenInput
from core.onnx.runtime import create_session, run
from sample_models import data
from tests.graphs import dense_detector


def _digit_pixels() -> tuple[np.ndarray, np.ndarray]:
    """The 359 held-out digits as 8-bit grey pixels (x/16 in [0, 1] rounded to 0-255), in ImageFolder order."""
    _, _, test_x, test_y = data.digits_split()
    pixels = np.round(test_x[:, 0] * 255).astype(np.uint8)
    order = np.lexsort((np.arange(len(test_y)), test_y))  # class folders in order, files by index within each
    return pixels[order], test_y[order], test_x[order]


@pytest.fixture(scope="module")
def digits_folder(tmp_path_factory):
    pixels, labels, _ = _digit_pixels()
    root = tmp_path_factory.mktemp("images") / "digits"
    for index, (image, label) in enumerate(zip(pixels, labels, strict=True)):
        folder = root / str(label)
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(image, "L").save(folder / f"{index:04d}.png")
    return root


def _zip(path, entries: dict[str, bytes], links: tuple[str, ...] = ()):
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, content in entries.items():
            archive.writestr(name, content)
        for name in links:
            info = zipfile.ZipInfo(name)
            info.external_attr = (stat.S_IFLNK | 0o777) << 16
            archive.writestr(info, "/etc/passwd")
    return path


def _png(side: int = 8, mode: str = "L", height: int | None = None) -> bytes:
    import io

    buffer = io.BytesIO()
    Image.new(mode, (side, height or side), 128).save(buffer, "PNG")
    return buffer.getvalue()


def test_digits_as_png_folders_score_as_the_built_in_digits(digits_cnn, digits_folder, tmp_path):
    # split 20/80: 287 held-out digits, so one digit is 0.35 pp
    images = with_data(digits_cnn, digits_folder, 0.2)
    assert (images.data.tuning, images.data.held_out, images.data.classes) == (72, 287, tuple("0123456789"))
    assert images.data.preprocessing == "shorter side resized to 8, centre-cropped to 8x8, gray, unit ([0, 1]), nchw"
    _, labels, floats = _digit_pixels()
    built_in_path = tmp_path / "built-in.npz"
    np.savez(built_in_path, image=floats, labels=labels)  # the digits as the sample holds them, in the same order
    built_in = with_data(digits_cnn, built_in_path, 0.2)
    recipe = Recipe(quant=QuantConfig(8, "static"))
    png, exact = (build_report(compress(m, recipe), export_bytes(compress(m, recipe))) for m in (images, built_in))
    np.testing.assert_array_equal(images.eval_set.labels, built_in.eval_set.labels)  # the same 287 digits
    assert abs(png.accuracy.original - exact.accuracy.original) <= 0.005
    assert abs(png.accuracy.original - 358 / 359) <= 0.005  # the sample's built-in accuracy on all 359
    assert png.accuracy.compressed >= 0.99 and png.accuracy.top5_original == 1.0
    assert png.quantization.calibration == "64 inputs of the tuning part, apart from the held-out evaluation set"
    assert png.model.data["preprocessing"].startswith("shorter side resized to 8")


def test_the_same_pixels_as_an_npz_give_exactly_the_same_accuracy(digits_cnn, digits_folder, tmp_path):
    pixels, labels, _ = _digit_pixels()
    path = tmp_path / "pixels.npz"
    np.savez(path, image=pixels[:, None].astype(np.float32) / 255, labels=labels)
    images, arrays = with_data(digits_cnn, digits_folder, 0.2), with_data(digits_cnn, path, 0.2)
    np.testing.assert_array_equal(np.asarray(images.eval_set.inputs["image"]), arrays.eval_set.inputs["image"])
    recipe = Recipe(quant=QuantConfig(4))
    first, second = (build_report(compress(m, recipe), export_bytes(compress(m, recipe))) for m in (images, arrays))
    assert (first.accuracy.original, first.accuracy.compressed) == (
        second.accuracy.original,
        second.accuracy.compressed,
    )


def test_a_wrong_preset_gives_a_lower_stated_accuracy_not_an_error(digits_cnn, digits_folder):
    right = with_data(digits_cnn, digits_folder, 0.2)
    wrong = with_data(digits_cnn, digits_folder, 0.2, preprocess={"scale": "imagenet"})
    assert "imagenet (ImageNet mean/std)" in wrong.data.preprocessing
    right_accuracy = float(np.mean(right.reference_outputs[0].argmax(1) == right.eval_set.labels))
    wrong_accuracy = float(np.mean(wrong.reference_outputs[0].argmax(1) == wrong.eval_set.labels))
    assert right_accuracy >= 0.99 and wrong_accuracy < 0.5  # measured: 99.65 % and 22.65 % (286 and 65 of 287)
    preview = wrong.data.previews[0]
    assert preview.after.shape == (8, 8, 3) and preview.low < 0 < preview.high  # the model sees negative values


def test_images_run_a_chunk_at_a_time_and_never_all_as_float(digits_cnn, digits_folder, monkeypatch):
    model = with_data(digits_cnn, digits_folder, 0.2)
    pixels = model.eval_set.inputs["image"]
    assert isinstance(pixels, PixelArray) and pixels.pixels.dtype == np.uint8
    assert pixels.pixels is model.tuning_set.inputs["image"].pixels  # the split copied no image
    assert pixels[3].shape == (1, 8, 8) and pixels[3:5].shape == (2, 1, 8, 8)
    whole = run(create_session(digits_cnn.onnx_bytes), {"image": np.asarray(pixels)})[0]
    sliced = []
    original = PixelArray.floats
    monkeypatch.setattr(PixelArray, "floats", lambda self, values: sliced.append(len(values)) or original(self, values))
    monkeypatch.setattr(batches, "CHUNK_BYTES", 40 * 256)  # 40 digits of 1x8x8 float32 per run
    chunked = model.outputs_of(digits_cnn.onnx_bytes)[0]
    np.testing.assert_allclose(chunked, whole, rtol=1e-6, atol=1e-6)
    assert sliced == [40] * 7 + [7]


def test_a_model_with_symbolic_sizes_takes_the_images_size_or_the_given_one(tmp_path):
    detector = model_from_bytes(dense_detector().SerializeToString(), name="det", source="det.onnx")
    same = tmp_path / "same"
    same.mkdir()
    for index in range(5):
        (same / f"{index}.png").write_bytes(_png(20, "RGB", 12))
    model = with_data(detector, same, 0.6)
    assert model.data.preprocessing.startswith("shorter side resized to 20, centre-cropped to 12x20, rgb")
    assert model.eval_set.labels is None and model.eval_set.inputs["x"].shape == (2, 3, 12, 20)
    (same / "9.png").write_bytes(_png(16, "RGB"))
    with pytest.raises(InvalidSettingError) as caught:
        with_data(detector, same, 0.6)
    assert caught.value.reason == (
        "the images differ in size and input 'x' has no fixed height and width to crop them to: set it with "
        "--shape x=1x3xHxW (the page's Inputs panel)"
    )
    given = model_from_bytes(
        dense_detector().SerializeToString(),
        name="det",
        source="det.onnx",
        given_inputs=(GivenInput("x", shape=(1, 3, 8, 8)),),
    )
    assert with_data(given, same, 0.6).eval_set.inputs["x"].shape == (2, 3, 8, 8)


def _refusal(model, path, **options) -> str:
    with pytest.raises(InvalidSettingError) as caught:
        with_data(model, path, **options)
    return caught.value.reason


def test_every_bad_image_input_is_refused_in_one_line(digits_cnn, tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    assert _refusal(digits_cnn, empty) == "no images in the folder (.png, .jpg, .jpeg, .bmp, .gif, .webp, .tif, .tiff)"
    notes = tmp_path / "notes"
    (notes / "0").mkdir(parents=True)
    (notes / "0" / "a.png").write_bytes(_png())
    (notes / "0" / "readme.md").write_text("hello")
    assert _refusal(digits_cnn, notes).startswith("0/readme.md is not an image (.png, .jpg")
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "a.png").write_bytes(_png())
    (broken / "b.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    assert _refusal(digits_cnn, broken) == "b.png is not a readable image"
    mixed = tmp_path / "mixed"
    (mixed / "cat").mkdir(parents=True)
    (mixed / "cat" / "a.png").write_bytes(_png())
    (mixed / "loose.png").write_bytes(_png())
    assert _refusal(digits_cnn, mixed) == (
        "loose.png sits beside class folders (cat/ …): put every image in a class folder, or none"
    )
    eleven = tmp_path / "eleven"
    for label in range(11):
        (eleven / f"c{label:02d}").mkdir(parents=True)
        (eleven / f"c{label:02d}" / "a.png").write_bytes(_png())
    assert _refusal(digits_cnn, eleven, tuning_fraction=0.5) == (
        "labels go up to 10; the model's first output scores 10 classes"
    )
    assert (
        _refusal(digits_cnn, eleven, preprocess={"color": "rgb"}) == "colour 'rgb' does not fit 1 channel(s); use gray"
    )
    assert _refusal(digits_cnn, eleven, preprocess={"layout": "nhwc"}) == (
        "layout nhwc reads 8 channels from input 'image' (batchx1x8x8); its graph reads nchw"
    )
    assert _refusal(digits_cnn, eleven, preprocess={"scale": "percent"}) == (
        "unknown scale 'percent'; use unit, imagenet, raw, signed"
    )
    assert _refusal(load_model("minilm"), broken).startswith("images need a model with one float image input of rank 4")
    single = tmp_path / "one.png"
    single.write_bytes(_png())
    assert _refusal(digits_cnn, single).startswith("unknown data format .png (a single image: put it in a folder)")


def test_hostile_zips_of_images_are_refused_and_leave_nothing(digits_cnn, tmp_path):
    traversal = _zip(tmp_path / "up.zip", {"../evil.png": _png()})
    assert _refusal(digits_cnn, traversal) == "zip entry '../evil.png' points outside the archive's folder"
    link = _zip(tmp_path / "link.zip", {"0/a.png": _png()}, links=("0/b.png",))
    assert _refusal(digits_cnn, link) == "zip entry '0/b.png' is a symbolic link"
    bomb = _zip(tmp_path / "bomb.zip", {"0/a.png": b"\0" * 50_000_000})
    assert _refusal(digits_cnn, bomb) == "zip entry '0/a.png' expands over 200x (a zip bomb?)"
    good = _zip(
        tmp_path / "good.zip", {f"digits/{label}/{index}.png": _png() for label in range(2) for index in range(3)}
    )
    assert with_data(digits_cnn, good).data.classes == ("0", "1")  # the zip's one top folder is looked into
    assert not list(tmp_path.glob("squeezelab-data-*"))


def test_the_cli_compresses_with_a_zip_of_images_and_refuses_bad_data_writing_nothing(digits_folder, tmp_path, capfd):
    from core.cli import main

    archive = tmp_path / "digits.zip"
    with zipfile.ZipFile(archive, "w") as writer:
        for path in sorted(digits_folder.rglob("*.png")):
            writer.write(path, path.relative_to(digits_folder.parent))
    model_path, report_path, out = tmp_path / "digits.onnx", tmp_path / "r.json", tmp_path / "o.onnx"
    model_path.write_bytes(load_model("digits-cnn").onnx_bytes)
    arguments = ["compress", str(model_path), "--data", str(archive), "--prune", "0.3", "--bits", "8"]
    assert (
        main([*arguments, "--activations", "static", "--out", str(out), "--report", str(report_path), "--no-latency"])
        == 0
    )
    report = json.loads(report_path.read_text())
    assert report["model"]["data"]["held_out"] == 72 and report["model"]["data"]["classes"] == list("0123456789")
    assert report["accuracy"]["samples"] == 72 and report["accuracy"]["original"] >= 0.98
    assert (
        report["quantization"]["calibration"] == "64 inputs of the tuning part, apart from the held-out evaluation set"
    )
    printed = capfd.readouterr()
    assert (
        "on 72 held-out labelled samples" in printed.out
        and "reading the data and running the model on it 100%" in printed.err
    )
    bad = tmp_path / "bad"
    (bad / "0").mkdir(parents=True)
    (bad / "0" / "x.png").write_bytes(b"not a png")
    out.unlink()
    assert main([*arguments, "--data", str(bad), "--out", str(out), "--no-latency"]) == 2
    assert capfd.readouterr().err.strip().splitlines()[-1] == f"error: {bad}: 0/x.png is not a readable image"
    assert not out.exists()
    with pytest.raises(SystemExit) as exited:
        main([*arguments, "--preprocess", "scale=imagenet,shape=2", "--no-latency"])
    assert exited.value.code == 2
    assert "unknown key shape; use scale, color, layout, resize" in capfd.readouterr().err


def test_targets_are_compared_with_the_first_output(digits_cnn, tmp_path):
    _, _, test_x, _ = data.digits_split()
    targets = run(create_session(digits_cnn.onnx_bytes), {"image": test_x})[0]
    path = tmp_path / "targets.npz"
    np.savez(path, image=test_x, targets=targets)
    model = with_data(digits_cnn, path)
    report = build_report(
        compress(model, Recipe(quant=QuantConfig(4))), export_bytes(compress(model, Recipe(quant=QuantConfig(4))))
    )
    assert report.metric == "target-cosine" and report.accuracy is None
    assert report.targets.mse_original == 0.0 and report.targets.cosine_original == pytest.approx(1.0)
    assert 0.9 < report.targets.cosine_compressed < 1.0 and report.targets.mse_compressed > 0
    np.savez(path, image=test_x, targets=targets[:, :5])
    assert _refusal(digits_cnn, path) == "targets are 5 per sample; the model's first output is 10"


def test_text_is_tokenized_by_the_models_own_tokenizer(tmp_path):
    minilm = load_model("minilm")
    lines = tmp_path / "lines.txt"
    lines.write_text("\n".join(f"sentence number {index} about compression" for index in range(10)) + "\n\n")
    model = with_data(minilm, lines)
    assert (model.data.tuning, model.data.held_out) == (8, 2)
    assert model.data.preprocessing == "tokenized by the model's tokenizer, padded or cut to 128 tokens"
    assert model.eval_set.inputs["input_ids"].shape == (2, 128) and model.eval_set.inputs["input_ids"][0, 0] == 101
    assert _refusal(load_model("digits-cnn"), lines).startswith(
        "text needs a Hugging Face text model with its tokenizer"
    )
    lines.write_bytes(b"\xff\xfe bad")
    assert _refusal(minilm, lines) == "not UTF-8 text"
