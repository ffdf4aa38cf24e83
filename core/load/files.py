"""Where the tool keeps files, and writing them so that a reader never sees half of one: write beside the target,
then rename over it."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def atomic_path(target: Path) -> Iterator[Path]:
    """A temporary path beside `target`; it replaces `target` only if the block succeeds."""
    handle, name = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    os.close(handle)
    temporary = Path(name)
    try:
        yield temporary
        os.replace(temporary, target)
    finally:
        temporary.unlink(missing_ok=True)


def write_atomic(target: Path, data: bytes) -> None:
    with atomic_path(target) as temporary:
        temporary.write_bytes(data)


def cache_dir() -> Path:
    """Exports of sample and Hugging Face models, offloaded weights and sensitivity scans: $SQUEEZELAB_CACHE, or
    squeezelab under the XDG cache folder."""
    root = (
        os.environ.get("SQUEEZELAB_CACHE")
        or Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "squeezelab"
    )
    return Path(root)
