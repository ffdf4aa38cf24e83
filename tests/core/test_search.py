"""Automatic search: Optuna over the recipe's settings, judged on the tuning part, kept in a storage several workers
share, never empty-handed."""

from __future__ import annotations

import json
import os
import signal
import time

import numpy as np
import optuna
import pytest

from core.compression.export import export_bytes
from core.compression.pipeline import compress
from core.data.quality import QUALITY_METRICS
from core.errors import InvalidSettingError
from core.explore import search as searching
from core.explore.search import SearchSettings, search


def _settings(tmp_path, **values) -> SearchSettings:
    values = {"max_drop": 1.0, "budget_s": 120.0, "storage": f"sqlite:///{tmp_path / 'studies.db'}"} | values
    return SearchSettings(**values)


def test_the_winner_meets_the_constraint_on_the_tuning_part_and_beats_the_uniform_grid(tmp_path, digits_cnn):
    result = search(digits_cnn, _settings(tmp_path, trials=40, study="constraint"))
    assert len(result.trials) == 40 and result.baseline == 1.0 and result.limit == pytest.approx(0.99)
    best = result.best
    assert best.feasible and best.quality >= result.limit
    # judged again here, independently: the tuning batch (never the held-out part), the original's labels
    part, apart = digits_cnn.tuning_part(searching.TRIAL_SAMPLES)
    outputs = digits_cnn.outputs_of(export_bytes(compress(digits_cnn, best.recipe)), inputs=part.inputs)[0]
    assert apart and np.mean(outputs.argmax(1) == part.labels) == pytest.approx(best.quality)
    uniform_8bit = next(trial for trial in result.trials if trial.number == 1)  # the grid corner tried first
    assert uniform_8bit.feasible and best.cost < uniform_8bit.cost  # smaller, gzipped, than 8 bits everywhere


def test_a_channel_trial_prunes_each_group_of_layers_by_its_own_amount(digits_cnn):
    groups = searching.layer_groups(digits_cnn)  # digits-cnn's 9 layers, each alone
    recipe = _channel_recipe(digits_cnn, groups, {1: 0.5, 3: 0.25})
    # every other group's 0 is written too: it holds its coupled group at 0
    assert recipe.prune.amount == 0.0 and {(o.layer, o.amount) for o in recipe.overrides} == {
        (group[0], {1: 0.5, 3: 0.25}.get(index, 0.0)) for index, group in enumerate(groups)
    }
    before = {layer.node: layer.out_channels for layer in digits_cnn.layers}
    after = {layer.node: layer.out_channels for layer in compress(digits_cnn, recipe).layers}
    # each of the two layers loses its share of channels (with the layers coupled to it); the others keep theirs
    assert after[groups[1][0]] == before[groups[1][0]] // 2
    assert after[groups[3][0]] == before[groups[3][0]] - round(0.25 * before[groups[3][0]])
    assert after[groups[0][0]] == before[groups[0][0]] and after[groups[8][0]] == before[groups[8][0]]
    # the stem (group 0) and /block1/conv2 (group 2) share their channels: group 0's 0 holds both whole
    coupled = _channel_recipe(digits_cnn, groups, {2: 0.5})
    assert {layer.node: layer.out_channels for layer in compress(digits_cnn, coupled).layers} == before


def test_a_study_of_the_older_search_space_is_refused_not_misread(tmp_path, digits_cnn):
    storage = f"sqlite:///{tmp_path / 'old.db'}"
    old = optuna.create_study(study_name="old", storage=storage)
    old.add_trial(optuna.trial.create_trial(
        params={"granularity": "channel", "amount": 0.25},
        distributions={"granularity": optuna.distributions.CategoricalDistribution(["unstructured", "channel"]),
                       "amount": optuna.distributions.FloatDistribution(0.0, 0.9, step=0.05)},
        value=1.0,
    ))  # fmt: skip
    settings = SearchSettings("size", max_drop=1.0, budget_s=5, storage=storage, study="old")
    with pytest.raises(InvalidSettingError, match="study old holds trials of an older search space"):
        search(digits_cnn, settings)


def _channel_recipe(model, groups: list[list[str]], amounts: dict[int, float]):
    params = {"granularity": "channel"} | {f"channels {index}": amounts.get(index, 0.0) for index in range(len(groups))}
    return searching.recipe_of(model, params | {f"bits {index}": 32 for index in range(len(groups))}, groups)


def test_a_seeded_search_repeats_its_trials(tmp_path, digits_cnn):
    first = search(digits_cnn, _settings(tmp_path, trials=14, study="one"))
    second = search(digits_cnn, _settings(tmp_path, trials=14, study="two"))
    assert [trial.recipe for trial in first.trials] == [trial.recipe for trial in second.trials]
    assert [trial.cost for trial in first.trials] == [trial.cost for trial in second.trials]


def test_a_stopped_search_keeps_its_best_and_resumes_from_its_storage(tmp_path, digits_cnn):
    heard = []
    stopped = search(digits_cnn, _settings(tmp_path, study="stop"), on_trial=heard.append,
                     should_stop=lambda: len(heard) >= 5)  # fmt: skip
    assert len(stopped.trials) == 5 and stopped.best is not None
    resumed = search(digits_cnn, _settings(tmp_path, study="stop", trials=9))
    assert [trial.number for trial in resumed.trials] == list(range(9))  # the 5 kept, 4 more
    assert resumed.trials[:5] == stopped.trials and resumed.best.cost <= stopped.best.cost


def test_latency_is_a_ratio_to_the_original_and_the_finalists_are_timed_again(tmp_path, digits_mlp, monkeypatch):
    monkeypatch.setattr(searching, "FINAL_LATENCY_S", 0.5)
    result = search(digits_mlp, _settings(tmp_path, objective="latency", trials=10, study="latency"))
    feasible = [trial for trial in result.trials if trial.feasible]
    retimed = [trial for trial in result.trials if trial.retimed]
    study = optuna.load_study(study_name="latency", storage=result.storage)
    first = {frozen.number: frozen.value for frozen in study.trials if frozen.state.is_finished()}
    # the three fastest by their first, short timing, and only those
    assert [trial.number for trial in retimed] == sorted(sorted(first, key=first.get)[:3])
    assert len(feasible) >= 3 and all(trial.feasible for trial in retimed)
    assert all(trial.cost == first[trial.number] for trial in result.trials if not trial.retimed)
    assert all(0.05 < trial.cost < 20 for trial in feasible)  # a ratio, not milliseconds
    assert result.best.retimed and result.best.cost == min(trial.cost for trial in retimed)
    low, high = result.best.speedup_interval
    assert 0 < low <= high and result.best.timing.startswith(f"{1 / result.best.cost:.2f}x, timed")
    assert result.to_csv().splitlines()[0] == "trial,worker,x original,accuracy,feasible,retimed,recipe"


def test_optuna_dashboard_opens_a_study_unchanged(tmp_path, digits_mlp):
    from wsgiref.util import setup_testing_defaults

    from optuna_dashboard import wsgi

    result = search(digits_mlp, _settings(tmp_path, trials=6, study="dashboard"))
    app = wsgi(result.storage)

    def get(path: str) -> dict:
        environ = {"PATH_INFO": path}
        setup_testing_defaults(environ)
        status = []
        body = b"".join(app(environ, lambda code, headers, *error: status.append(code)))
        assert status == ["200 OK"], body[:300]
        return json.loads(body)

    (summary,) = get("/api/studies")["study_summaries"]
    assert summary["study_name"] == "dashboard" and summary["directions"] == ["minimize"]
    trials = [trial for trial in get(f"/api/studies/{summary['study_id']}")["trials"] if trial["state"] == "Complete"]
    assert [trial["number"] for trial in trials] == [trial.number for trial in result.trials] == list(range(6))
    first = trials[0]
    assert first["values"] == [pytest.approx(result.trials[0].cost, rel=1e-4)]
    assert {param["name"] for param in first["params"]} >= {"granularity", "bits 0"}
    attributes = {attr["key"]: attr["value"] for attr in first["user_attrs"]}
    assert float(attributes["quality"]) == pytest.approx(result.trials[0].quality)


def test_an_infeasible_search_names_the_closest_trial(tmp_path, capsys):
    from core.cli import main

    storage = f"sqlite:///{tmp_path / 'studies.db'}"
    code = main(["search", "digits-cnn", "--min-quality", "1.01", "--trials", "6", "--storage", storage,
                 "--out", str(tmp_path / "best.onnx")])  # fmt: skip
    printed = capsys.readouterr().out
    assert code == 1 and not (tmp_path / "best.onnx").exists()
    assert "no trial met the constraint; the closest is trial 0: accuracy 100.0%, 1.0% short" in printed


def test_bad_search_settings_get_one_line_and_exit_2(tmp_path, capsys):
    from core.cli import main

    assert main(["search", "digits-cnn", "--budget", "5"]) == 2
    assert capsys.readouterr().err.strip() == (
        "error: give one constraint: --max-drop POINTS (with labels) or --min-quality Q"
    )
    assert main(["search", "resnet18", "--min-quality", "0.9"]) == 2
    assert "search judges each setting on a tuning part apart from the held-out data" in capsys.readouterr().err
    with pytest.raises(InvalidSettingError, match="--workers must be 1-64; got 0"):
        SearchSettings(max_drop=1, workers=0)


def test_the_cli_exports_the_winner_and_checks_it_on_the_held_out_part(tmp_path, capsys):
    from core.cli import main

    storage = f"sqlite:///{tmp_path / 'studies.db'}"
    out, recipe, table = tmp_path / "best.onnx", tmp_path / "best.json", tmp_path / "trials.csv"
    assert main(["search", "digits-cnn", "--max-drop", "1", "--trials", "12", "--storage", storage,
                 "--out", str(out), "--recipe", str(recipe), "--csv", str(table)]) == 0  # fmt: skip
    printed = capsys.readouterr().out
    assert "constraint: accuracy on the tuning batch >= 99.0% (the original: 100.0%)" in printed
    assert "held-out check: accuracy " in printed and "(the original: 99.7%)" in printed
    assert out.stat().st_size > 1000 and json.loads(recipe.read_text())["model"] == "digits-cnn"
    assert table.read_text().count("\n") == 13  # a header and 12 trials


def _crash_midway(storage: str) -> None:
    from core import load_model

    search(load_model("digits-cnn"), SearchSettings(max_drop=1.0, storage=storage, study="crash"),
           on_trial=lambda trial: os.kill(os.getpid(), signal.SIGKILL) if trial.number == 6 else None)  # fmt: skip


def test_the_storage_reopens_after_a_crash_and_two_workers_share_one_study(tmp_path, digits_cnn):
    storage = f"sqlite:///{tmp_path / 'studies.db'}"
    crashed = searching._CONTEXT.Process(target=_crash_midway, args=(storage,))
    crashed.start()
    crashed.join(120)
    assert crashed.exitcode == -signal.SIGKILL
    reopened = search(digits_cnn, SearchSettings(max_drop=1.0, storage=storage, study="crash", trials=10))
    assert [trial.number for trial in reopened.trials][:6] == list(range(6))  # kept; trial 6 died running
    started = time.monotonic()
    shared = search(digits_cnn, SearchSettings(max_drop=1.0, storage=storage, study="shared", trials=30, workers=2))
    numbers = [trial.number for trial in shared.trials]
    assert len(numbers) == len(set(numbers)) >= 29 and time.monotonic() - started < 90
    assert {trial.worker for trial in shared.trials} == {"0", "1"}  # both searched
    study = optuna.load_study(study_name="shared", storage=storage)
    seeds = [trial.params for trial in study.trials if trial.system_attrs.get("fixed_params")]
    assert len(seeds) == 14 and all(seeds.count(params) == 1 for params in seeds)  # each queued trial ran once
    judge = QUALITY_METRICS["accuracy"]
    assert all(judge.format(trial.quality).endswith("%") for trial in shared.trials)


def test_a_worker_that_cannot_start_is_reported_and_the_search_goes_on(tmp_path):
    from core import load_model
    from core.data.datasets import with_data
    from sample_models import data

    train_x, train_y, test_x, test_y = data.digits_split()
    arrays, path = tmp_path / "digits.npz", tmp_path / "digits.onnx"
    np.savez(arrays, image=np.concatenate([train_x, test_x]), labels=np.concatenate([train_y, test_y]))
    path.write_bytes(load_model("digits-mlp").onnx_bytes)
    model = with_data(load_model(str(path)), arrays)
    assert model.data.path == str(arrays.resolve())  # where a worker reads it again
    arrays.unlink()  # gone before the second worker loads it
    result = search(model, _settings(tmp_path, study="lost", trials=12, workers=2))
    assert len(result.trials) >= 12 and {trial.worker for trial in result.trials} == {"0"}
    (failure,) = result.failures
    assert failure.startswith("worker 1: ") and "digits.npz" in failure
