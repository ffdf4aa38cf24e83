from __future__ import annotations

import pytest

from core import InvalidSettingError, PruneConfig, QuantConfig, Recipe


def test_recipe_json_round_trip():
    recipe = Recipe(PruneConfig(0.37, "random", "layer", seed=5), QuantConfig(4), model="digits-cnn", model_sha256="ab")
    structured = Recipe(PruneConfig(0.5, "activation", "global", granularity="channel", channel_multiple=8))
    assert Recipe.from_json(structured.to_json()) == structured
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
    with pytest.raises(InvalidSettingError, match="unknown criterion 'l7'; choose from l1, l2, activation, random"):
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


def test_criteria_are_checked_against_the_granularity():
    with pytest.raises(
        InvalidSettingError, match="criterion 'l2' does not apply to unstructured pruning; choose from l1, random"
    ):
        PruneConfig(0.5, criterion="l2")
    with pytest.raises(
        InvalidSettingError, match="unknown granularity 'filter'; choose from unstructured, channel, block"
    ):
        PruneConfig(0.5, granularity="filter")
    with pytest.raises(InvalidSettingError, match="channel multiple must be an integer in 1-64, got 0"):
        PruneConfig(0.5, granularity="channel", channel_multiple=0)
    assert PruneConfig(0.5, "activation", granularity="channel", channel_multiple=8).channel_multiple == 8


def test_recipes_without_the_structured_fields_still_load():
    old = {"format": 1, "prune": {"amount": 0.5, "criterion": "l1", "scope": "layer", "seed": 0}, "quant": {}}
    assert Recipe.from_dict(old).prune == PruneConfig(0.5, "l1", "layer")
