from __future__ import annotations

import csv
import io

from core import PruneConfig, QuantConfig, Recipe, build_report, compress, export_bytes
from core.explore.snapshots import SnapshotStore


def _report(model, recipe):
    compressed = compress(model, recipe)
    return build_report(compressed, export_bytes(compressed))


def test_a_snapshot_survives_a_restart_of_the_store_and_can_be_deleted(tmp_path, digits_cnn):
    path = tmp_path / "snapshots.sqlite"
    half = Recipe(PruneConfig(0.5), QuantConfig(8), model="digits-cnn", model_sha256=digits_cnn.sha256)
    channels = Recipe(PruneConfig(0.25, granularity="channel"), model="digits-cnn", model_sha256=digits_cnn.sha256)
    first = SnapshotStore(path).save("half, 8-bit", half, _report(digits_cnn, half))
    SnapshotStore(path).save("quarter of the channels", channels, _report(digits_cnn, channels))
    reopened = SnapshotStore(path)  # a new process would do exactly this
    saved = reopened.list(digits_cnn.sha256)
    assert [s.name for s in saved] == ["half, 8-bit", "quarter of the channels"]
    assert (
        saved[0].settings == "unstructured 50% (l1, global); 8-bit, activations none" and saved[0].metric == "accuracy"
    )
    assert saved[0].nonzero < 37_840 / 2 + 300 and saved[1].macs < 828_736
    assert reopened.recipe(first) == half
    assert reopened.report(first)["totals"]["nonzero"] == saved[0].nonzero
    rows = list(csv.DictReader(io.StringIO(reopened.to_csv(digits_cnn.sha256))))
    assert [row["name"] for row in rows] == ["half, 8-bit", "quarter of the channels"]
    reopened.delete(first)
    assert [s.name for s in SnapshotStore(path).list()] == ["quarter of the channels"]
