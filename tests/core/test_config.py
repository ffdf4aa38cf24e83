from __future__ import annotations

import pytest

from core import InvalidSettingError, PruneConfig, QuantConfig, Recipe


def test_recipe_json_round_trip():
    recipe = Recipe(PruneConfig(0.37, "random", "layer", seed=5), QuantConfig(4), model="digits-cnn", model_sha256="ab")
    assert Recipe.from_json(recipe.to_json()) == recipe
    assert Recipe.from_dict(recipe.to_dict()).to_dict() == recipe.to_dict()


@pytest.mark.parametrize("amount", [-0.01, 0.995, 1.0, 2])
def test_amount_outside_range_is_refused(amount):
    with pytest.raises(InvalidSettingError, match=r"prune amount must be in \[0, 0.99\]"):
        PruneConfig(amount)


@pytest.mark.parametrize("bits", [0, 1, 9, 16, 31, 33])
def test_bits_outside_range_are_refused(bits):
    with pytest.raises(InvalidSettingError, match="weight bits must be 2-8, or 32 for off"):
        QuantConfig(bits)


def test_edges_of_ranges_are_accepted():
    assert PruneConfig(0.99).amount == 0.99
    assert [QuantConfig(b).weight_bits for b in (2, 8, 32)] == [2, 8, 32]
    assert not QuantConfig(32).enabled and QuantConfig(8).enabled


def test_unknown_choices_name_the_known_ones():
    with pytest.raises(InvalidSettingError, match="unknown criterion 'l7'; choose from l1, random"):
        PruneConfig(0.5, criterion="l7")
    with pytest.raises(InvalidSettingError, match="unknown scope 'model'; choose from global, layer"):
        PruneConfig(0.5, scope="model")


def test_recipe_rejects_unknown_keys_and_bad_json():
    with pytest.raises(InvalidSettingError, match="unknown prune setting"):
        Recipe.from_dict({"format": 1, "prune": {"amount": 0.5, "amonut": 1}})
    with pytest.raises(InvalidSettingError, match="not valid JSON"):
        Recipe.from_json("{not json")
    with pytest.raises(InvalidSettingError, match="unsupported recipe format"):
        Recipe.from_dict({"prune": {}})
