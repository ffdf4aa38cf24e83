from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest


def pytest_configure(config: pytest.Config) -> None:
    # One export cache per test run, so tests never depend on (or pollute) the user's ~/.cache.
    if "SQUEEZELAB_CACHE" not in os.environ:
        root = Path(config.rootpath) / "test-output" / "cache"
        root.mkdir(parents=True, exist_ok=True)
        os.environ["SQUEEZELAB_CACHE"] = str(root)
    if "SQUEEZELAB_DATA" not in os.environ:  # snapshots: never the user's own database
        data = Path(config.rootpath) / "test-output" / "data"
        shutil.rmtree(data, ignore_errors=True)
        os.environ["SQUEEZELAB_DATA"] = str(data)


@pytest.fixture(scope="session")
def digits_cnn():
    from core import load_model

    return load_model("digits-cnn")


@pytest.fixture(scope="session")
def digits_mlp():
    from core import load_model

    return load_model("digits-mlp")


@pytest.fixture(scope="session")
def resnet18():
    from core import load_model

    return load_model("resnet18")
