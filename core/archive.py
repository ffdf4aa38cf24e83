"""Extracting a user's .zip without letting it write outside its folder or fill the disk.

Refused: entries whose path is absolute or climbs out with `..`, symbolic links, more than MAX_ENTRIES entries,
more than MAX_TOTAL_BYTES uncompressed, or an entry that expands more than MAX_RATIO times (a zip bomb). Sizes
are checked while writing, so a lying header cannot get past them.
"""

from __future__ import annotations

import shutil
import stat
import zipfile
from pathlib import Path, PurePosixPath

from core.errors import ModelLoadError, SqueezeError

MAX_ENTRIES = 50_000  # a zip of images holds one entry per image (core.data.images.MAX_IMAGES)
MAX_TOTAL_BYTES = 8 * 1024**3
MAX_RATIO = 200  # float32 weights compress ~1.1x; text files ~5x; 200x is a bomb
CHUNK = 1 << 20


def _safe_relative(name: str) -> PurePosixPath | None:
    path = PurePosixPath(name.replace("\\", "/"))
    if path.is_absolute() or ".." in path.parts or (path.parts and ":" in path.parts[0]):
        return None
    return path


def safe_extract(archive_path: Path, destination: Path, error: type[SqueezeError] = ModelLoadError) -> Path:
    """Extract into `destination` (created) and return it; on any refusal nothing stays behind. Refusals raise
    `error`: a zip of a model is a model that cannot load, a zip of data is a bad setting."""
    source = str(archive_path)
    try:
        archive = zipfile.ZipFile(archive_path)
    except (zipfile.BadZipFile, OSError):
        raise error("not a readable .zip archive", source) from None
    destination.mkdir(parents=True, exist_ok=True)
    try:
        with archive:
            entries = archive.infolist()
            if len(entries) > MAX_ENTRIES:
                raise error(f"the zip holds {len(entries):,} entries; the limit is {MAX_ENTRIES:,}", source)
            written = 0
            for entry in entries:
                relative = _safe_relative(entry.filename)
                if relative is None:
                    raise error(f"zip entry {entry.filename!r} points outside the archive's folder", source)
                if stat.S_ISLNK(entry.external_attr >> 16):
                    raise error(f"zip entry {entry.filename!r} is a symbolic link", source)
                target = destination.joinpath(*relative.parts)
                if entry.is_dir():
                    target.mkdir(parents=True, exist_ok=True)
                    continue
                target.parent.mkdir(parents=True, exist_ok=True)
                limit = max(entry.compress_size, 1) * MAX_RATIO
                size = 0
                with archive.open(entry) as reader, open(target, "wb") as writer:
                    while chunk := reader.read(CHUNK):
                        size += len(chunk)
                        written += len(chunk)
                        if size > limit:
                            raise error(f"zip entry {entry.filename!r} expands over {MAX_RATIO}x (a zip bomb?)", source)
                        if written > MAX_TOTAL_BYTES:
                            raise error(f"the zip expands to over {MAX_TOTAL_BYTES / 1024**3:.0f} GiB", source)
                        writer.write(chunk)
    except error:
        shutil.rmtree(destination, ignore_errors=True)
        raise
    except (zipfile.BadZipFile, OSError, EOFError) as damage:
        shutil.rmtree(destination, ignore_errors=True)
        raise error(f"the zip is damaged ({type(damage).__name__})", source) from None
    return destination
