"""Named snapshots of settings and results, kept in a local SQLite database in the user's data folder so they
survive restarts; listed, compared, deleted and exported as CSV."""

from __future__ import annotations

import csv
import io
import json
import os
import sqlite3
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from core.compression.recipe import Recipe
from core.errors import InvalidSettingError
from core.measure.noise import effect
from core.measure.report import Report

SCHEMA = """
CREATE TABLE IF NOT EXISTS snapshots (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    name TEXT NOT NULL,
    created TEXT NOT NULL,
    model TEXT NOT NULL,
    model_sha256 TEXT NOT NULL,
    settings TEXT NOT NULL,
    size_bytes INTEGER NOT NULL,
    nonzero INTEGER NOT NULL,
    macs INTEGER NOT NULL,
    metric TEXT NOT NULL,
    quality REAL NOT NULL,
    latency_ms REAL,
    speedup REAL,
    recipe TEXT NOT NULL,
    report TEXT NOT NULL
)
"""


def data_dir() -> Path:
    root = (
        os.environ.get("SQUEEZELAB_DATA")
        or Path(os.environ.get("XDG_DATA_HOME", Path.home() / ".local" / "share")) / "squeezelab"
    )
    return Path(root)


@dataclass(frozen=True)
class Snapshot:
    id: int
    name: str
    created: str
    model: str
    settings: str
    size_bytes: int
    nonzero: int
    macs: int
    metric: str
    quality: float
    latency_ms: float | None
    speedup: float | None


def measured_speed(report: dict[str, Any]) -> str:
    """A stored report's speed against the original by the one rule for noise: "1.12× faster", "no measurable
    difference (1.01×)", or "" where it was not measured."""
    latency = report.get("latency_ms") or {}
    speedup, interval = latency.get("speedup"), latency.get("speedup_interval")
    if speedup is None:
        return ""
    if interval is None:  # saved before intervals were kept: the medians alone cannot say
        return f"{speedup:.2f}× (noise unknown)"
    found = effect(*interval)
    if found == "faster":
        return f"{speedup:.2f}× faster"
    if found == "slower":
        return f"{1 / speedup:.2f}× slower"
    return f"no measurable difference ({speedup:.2f}×)"


def describe(recipe: Recipe) -> str:
    prune, quant = recipe.prune, recipe.quant
    parts = [f"{prune.granularity} {prune.amount:.0%} ({prune.criterion}, {prune.scope})"]
    parts.append("float" if not quant.enabled else f"{quant.weight_bits}-bit, activations {quant.activations}")
    if recipe.overrides:
        parts.append(f"{len(recipe.overrides)} override(s)")
    return "; ".join(parts)


class SnapshotStore:
    def __init__(self, path: Path | None = None) -> None:
        self.path = path or data_dir() / "snapshots.sqlite"
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self._connect() as connection:
            connection.execute(SCHEMA)

    def _connect(self) -> sqlite3.Connection:
        return sqlite3.connect(self.path, timeout=10)

    def save(self, name: str, recipe: Recipe, report: Report) -> int:
        if not name.strip():
            raise InvalidSettingError("a snapshot needs a name")
        metric, quality = report.quality
        latency = report.latency_ms
        row = (
            name.strip(), datetime.now(UTC).isoformat(timespec="seconds"), report.model.name, report.model.sha256,
            describe(recipe), report.size_bytes["compressed"].raw, report.totals["nonzero"], report.totals["macs_after"],
            metric, quality, latency.compressed.median if latency and latency.compressed else None,
            latency.speedup if latency else None, recipe.to_json(), json.dumps(report.to_dict()),
        )  # fmt: skip
        with self._connect() as connection:
            cursor = connection.execute(
                "INSERT INTO snapshots (name, created, model, model_sha256, settings, size_bytes, nonzero, macs, "
                "metric, quality, latency_ms, speedup, recipe, report) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
                row,
            )
            return int(cursor.lastrowid)

    def list(self, model_sha256: str | None = None) -> list[Snapshot]:
        query = "SELECT id, name, created, model, settings, size_bytes, nonzero, macs, metric, quality, latency_ms, speedup FROM snapshots"
        arguments: tuple = ()
        if model_sha256:
            query, arguments = query + " WHERE model_sha256 = ?", (model_sha256,)
        with self._connect() as connection:
            return [Snapshot(*row) for row in connection.execute(query + " ORDER BY id", arguments)]

    def _stored(self, snapshot_id: int, column: str) -> str:
        assert column in ("report", "recipe")  # a column name, never user text, goes into the query
        with self._connect() as connection:
            row = connection.execute(f"SELECT {column} FROM snapshots WHERE id = ?", (snapshot_id,)).fetchone()
        if row is None:
            raise KeyError(snapshot_id)
        return row[0]

    def report(self, snapshot_id: int) -> dict[str, Any]:
        return json.loads(self._stored(snapshot_id, "report"))

    def recipe(self, snapshot_id: int) -> Recipe:
        return Recipe.from_json(self._stored(snapshot_id, "recipe"))

    def delete(self, snapshot_id: int) -> None:
        with self._connect() as connection:
            connection.execute("DELETE FROM snapshots WHERE id = ?", (snapshot_id,))

    def to_csv(self, model_sha256: str | None = None) -> str:
        snapshots = self.list(model_sha256)
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=list(Snapshot.__dataclass_fields__))
        writer.writeheader()
        for snapshot in snapshots:
            writer.writerow(asdict(snapshot))
        return buffer.getvalue()
