"""Frozen, validated settings of each technique, and the recipe that bundles them for reproduction."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields
from typing import Any

from core.compression.activations import ACTIVATION_MODES, CALIBRATION_METHODS, SMOOTH_ALPHA
from core.compression.granularities import GRANULARITIES
from core.compression.pruning import CRITERIA, SCOPES
from core.compression.recovery import OPTIMIZERS, RECOVERY_METHODS
from core.compression.schedules import DEFAULT_PRUNING_STEPS, SCHEDULES
from core.errors import InvalidSettingError
from core.model import Model
from core.onnx.inputs import GivenInput

MAX_PRUNE_AMOUNT = 0.99
MAX_CHANNEL_MULTIPLE = 64
WEIGHT_BITS_RANGE = range(2, 9)
FLOAT_BITS = 32
RECIPE_FORMAT = 1


def _from_dict(cls, data: Any, where: str):
    if not isinstance(data, dict):
        raise InvalidSettingError(f"{where} must be a JSON object")
    known = {f.name for f in fields(cls)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise InvalidSettingError(f"unknown {where} setting(s): {', '.join(unknown)}")
    try:
        return cls(**data)
    except TypeError as error:
        raise InvalidSettingError(f"{where}: {error}") from None


def _list(data: Any, where: str) -> list:
    if not isinstance(data, list):
        raise InvalidSettingError(f"{where} must be a JSON list")
    return data


@dataclass(frozen=True)
class PruneConfig:
    """Remove `amount` of the prunable weights (unstructured), channels or residual blocks (`granularity`),
    the least important first by `criterion`, over `scope`; `channel_multiple` rounds kept channel counts up."""

    amount: float = 0.0
    criterion: str = "l1"
    scope: str = ""  # empty: the granularity's default (global for unstructured, layer otherwise)
    seed: int = 0
    granularity: str = "unstructured"
    channel_multiple: int = 1
    drop_blocks: tuple[str, ...] = ()  # block granularity: drop exactly these (by Add node name) instead of `amount`

    def __post_init__(self) -> None:
        if isinstance(self.amount, bool) or not isinstance(self.amount, int | float):
            raise InvalidSettingError(f"prune amount must be a number, got {self.amount!r}")
        if not 0.0 <= self.amount <= MAX_PRUNE_AMOUNT:
            raise InvalidSettingError(f"prune amount must be in [0, {MAX_PRUNE_AMOUNT}], got {self.amount}")
        if self.granularity not in GRANULARITIES:
            raise InvalidSettingError(
                f"unknown granularity {self.granularity!r}; choose from {', '.join(GRANULARITIES)}"
            )
        if self.criterion not in CRITERIA:
            raise InvalidSettingError(f"unknown criterion {self.criterion!r}; choose from {', '.join(CRITERIA)}")
        if not CRITERIA[self.criterion].applies_to(self.granularity):
            usable = [name for name, info in CRITERIA.items() if info.applies_to(self.granularity)]
            raise InvalidSettingError(
                f"criterion {self.criterion!r} does not apply to {self.granularity} pruning; "
                f"choose from {', '.join(usable)}"
            )
        multiple = self.channel_multiple
        if isinstance(multiple, bool) or not isinstance(multiple, int) or not 1 <= multiple <= MAX_CHANNEL_MULTIPLE:
            raise InvalidSettingError(
                f"channel multiple must be an integer in 1-{MAX_CHANNEL_MULTIPLE}, got {multiple!r}"
            )
        if isinstance(self.drop_blocks, list):  # from JSON
            object.__setattr__(self, "drop_blocks", tuple(self.drop_blocks))
        if not isinstance(self.drop_blocks, tuple) or not all(isinstance(name, str) for name in self.drop_blocks):
            raise InvalidSettingError(f"drop_blocks must be a list of block names, got {self.drop_blocks!r}")
        if self.drop_blocks and self.granularity != "block":
            raise InvalidSettingError("drop_blocks only applies to block granularity")
        if not self.scope:
            object.__setattr__(self, "scope", GRANULARITIES[self.granularity].default_scope)
        if self.scope not in SCOPES:
            raise InvalidSettingError(f"unknown scope {self.scope!r}; choose from {', '.join(SCOPES)}")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int):
            raise InvalidSettingError(f"seed must be an integer, got {self.seed!r}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self) | {"drop_blocks": list(self.drop_blocks)}

    @property
    def active(self) -> bool:
        """Whether these settings prune anything at all."""
        return self.amount > 0 or bool(self.drop_blocks)

    @classmethod
    def from_dict(cls, data: Any) -> PruneConfig:
        return _from_dict(cls, data, "prune")


@dataclass(frozen=True)
class QuantConfig:
    """Weights: symmetric, per output channel, round to nearest, `weight_bits` (32 = off). Activations: `none`
    (weight-only), int8 `dynamic` or `static` (calibrated on `calibration` with `calib_method`), or `auto`.
    Layers named in `keep_float` (node names) stay float. `smooth_alpha` (dynamic only) moves activation
    outliers into the weights first; empty means the tool's default."""

    weight_bits: int = FLOAT_BITS
    activations: str = "none"
    calibration: str = "sample"  # "sample", "random", or the path of an .npz of input arrays
    calib_method: str = "minmax"
    keep_float: tuple[str, ...] = ()
    smooth_alpha: float | None = None

    def __post_init__(self) -> None:
        bits = self.weight_bits
        if (
            isinstance(bits, bool)
            or not isinstance(bits, int)
            or (bits not in WEIGHT_BITS_RANGE and bits != FLOAT_BITS)
        ):
            raise InvalidSettingError(f"weight bits must be 2-8, or 32 for off; got {bits!r}")
        if self.activations not in ACTIVATION_MODES:
            raise InvalidSettingError(
                f"unknown activation mode {self.activations!r}; choose from {', '.join(ACTIVATION_MODES)}"
            )
        if ACTIVATION_MODES[self.activations].int8 and bits == FLOAT_BITS:
            raise InvalidSettingError(f"int8 activations ({self.activations}) need quantized weights: set bits 2-8")
        if self.calib_method not in CALIBRATION_METHODS:
            raise InvalidSettingError(
                f"unknown calibration method {self.calib_method!r}; choose from {', '.join(CALIBRATION_METHODS)}"
            )
        if not isinstance(self.calibration, str) or not self.calibration:
            raise InvalidSettingError("calibration must be 'sample', 'random' or the path of an .npz file")
        if isinstance(self.keep_float, list):  # from JSON
            object.__setattr__(self, "keep_float", tuple(self.keep_float))
        if not all(isinstance(name, str) for name in self.keep_float):
            raise InvalidSettingError(f"keep_float must be a list of layer names, got {self.keep_float!r}")
        if self.smooth_alpha is None:
            object.__setattr__(
                self, "smooth_alpha", SMOOTH_ALPHA if ACTIVATION_MODES[self.activations].smoothing else 0.0
            )
        if isinstance(self.smooth_alpha, bool) or not isinstance(self.smooth_alpha, int | float):
            raise InvalidSettingError(f"smooth_alpha must be a number in [0, 1), got {self.smooth_alpha!r}")
        if not 0 <= self.smooth_alpha < 1:
            raise InvalidSettingError(f"smooth_alpha must be a number in [0, 1), got {self.smooth_alpha!r}")

    @property
    def enabled(self) -> bool:
        return self.weight_bits != FLOAT_BITS

    def to_dict(self) -> dict[str, Any]:
        return asdict(self) | {"keep_float": list(self.keep_float)}

    @classmethod
    def from_dict(cls, data: Any) -> QuantConfig:
        return _from_dict(cls, data, "quant")


@dataclass(frozen=True)
class LayerOverride:
    """One layer's own settings: its own pruning amount (of its weights; with channel pruning, of the channels of
    the layers coupled with it), its own weight bits (32: float), or skip (neither pruned nor quantized)."""

    layer: str  # the node name, as `inspect` lists it
    amount: float | None = None
    bits: int | None = None
    skip: bool = False

    def __post_init__(self) -> None:
        if not isinstance(self.layer, str) or not self.layer:
            raise InvalidSettingError("an override needs the layer's node name")
        if self.amount is not None:
            PruneConfig(self.amount)
        if self.bits is not None:
            QuantConfig(self.bits)
        if not isinstance(self.skip, bool):
            raise InvalidSettingError(f"override skip must be true or false, got {self.skip!r}")
        if self.skip and (self.amount is not None or self.bits is not None):
            raise InvalidSettingError(f"override of {self.layer}: skip leaves the layer alone; drop amount and bits")
        if not self.skip and self.amount is None and self.bits is None:
            raise InvalidSettingError(f"override of {self.layer} sets nothing: give amount, bits or skip")

    def to_dict(self) -> dict[str, Any]:
        return {key: value for key, value in asdict(self).items() if value is not None and value is not False}

    @classmethod
    def parse(cls, text: str) -> LayerOverride:
        """`LAYER=amount:0.3,bits:4` or `LAYER=skip` (the CLI's form)."""
        layer, _, settings = text.rpartition("=")
        if not layer:
            raise InvalidSettingError(f"override {text!r}: expected LAYER=amount:A,bits:B or LAYER=skip")
        if settings == "skip":
            return cls(layer, skip=True)
        values: dict[str, Any] = {}
        for part in settings.split(","):
            key, _, value = part.partition(":")
            try:
                values[key] = {"amount": float, "bits": int}[key](value)
            except (KeyError, ValueError):
                raise InvalidSettingError(f"override {text!r}: expected amount:A, bits:B or skip") from None
        return cls(layer, **values)


MAX_RECOVERY_SECONDS = 3600.0
MAX_BATCH = 4096


@dataclass(frozen=True)
class RecoverConfig:
    """Train the compressed model back towards the original (`method`) for at most `seconds` (and `steps`, if
    given), with `optimizer` at `lr` (empty: the method's default) and a cosine decay, shuffled by `seed`; pruning
    all at once before (`schedule` oneshot) or in `pruning_steps` steps during training (gradual), with the masks
    chosen again at each step while the pruned weights still train (`soft`)."""

    method: str = "distill"
    seconds: float = 60.0
    optimizer: str = "adam"
    lr: float | None = None
    seed: int = 0
    steps: int | None = None
    schedule: str = "oneshot"
    pruning_steps: int = DEFAULT_PRUNING_STEPS
    soft: bool = False
    batch: int = 64  # tuning samples per step
    check_every: int | None = None  # steps between checks of the validation loss (None: by the time they take)
    # the steps the learning rate's decay and the pruning steps are spread over (None: `steps`); a recorded run that
    # ran out of time or was stopped before the end of its plan trained fewer steps than it had planned
    schedule_steps: int | None = None

    def __post_init__(self) -> None:
        if self.method not in RECOVERY_METHODS:
            raise InvalidSettingError(f"unknown recovery method {self.method!r}; use {', '.join(RECOVERY_METHODS)}")
        if isinstance(self.seconds, bool) or not isinstance(self.seconds, int | float):
            raise InvalidSettingError(f"recovery seconds must be a number, got {self.seconds!r}")
        if not 0 < self.seconds <= MAX_RECOVERY_SECONDS:
            raise InvalidSettingError(f"recovery seconds must be in (0, {MAX_RECOVERY_SECONDS:g}], got {self.seconds}")
        if self.optimizer not in OPTIMIZERS:
            raise InvalidSettingError(f"unknown optimizer {self.optimizer!r}; use {', '.join(OPTIMIZERS)}")
        if self.lr is not None and not (isinstance(self.lr, int | float) and 0 < self.lr <= 1):
            raise InvalidSettingError(f"learning rate must be in (0, 1], got {self.lr!r}")
        if self.steps is not None and not (isinstance(self.steps, int) and self.steps > 0):
            raise InvalidSettingError(f"recovery steps must be a positive whole number, got {self.steps!r}")
        if self.schedule not in SCHEDULES:
            raise InvalidSettingError(f"unknown schedule {self.schedule!r}; use {', '.join(SCHEDULES)}")
        if isinstance(self.pruning_steps, bool) or not (isinstance(self.pruning_steps, int) and self.pruning_steps > 0):
            raise InvalidSettingError(f"pruning steps must be a positive whole number, got {self.pruning_steps!r}")
        if isinstance(self.batch, bool) or not (isinstance(self.batch, int) and 0 < self.batch <= MAX_BATCH):
            raise InvalidSettingError(f"batch must be a whole number in [1, {MAX_BATCH}], got {self.batch!r}")
        if self.check_every is not None and not (isinstance(self.check_every, int) and self.check_every > 0):
            raise InvalidSettingError(f"check_every must be a positive whole number, got {self.check_every!r}")
        if self.schedule_steps is not None and not (
            isinstance(self.schedule_steps, int) and self.steps is not None and self.schedule_steps >= self.steps
        ):
            raise InvalidSettingError(
                f"schedule_steps must be a whole number no smaller than steps, got {self.schedule_steps!r}"
            )
        if not isinstance(self.soft, bool):
            raise InvalidSettingError(f"soft must be true or false, got {self.soft!r}")
        if self.stepped and not RECOVERY_METHODS[self.method].trains:
            raise InvalidSettingError(
                f"{self.method} does not train: a gradual or soft schedule needs distill or finetune"
            )

    @property
    def stepped(self) -> bool:
        """Prunes during training, from the original weights."""
        return SCHEDULES[self.schedule].stepped or self.soft

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Any) -> RecoverConfig:
        return _from_dict(cls, data, "recover")


@dataclass(frozen=True)
class Recipe:
    """Every setting that turns a model into its compressed export; applying it again gives the same bytes."""

    prune: PruneConfig = field(default_factory=PruneConfig)
    quant: QuantConfig = field(default_factory=QuantConfig)
    model: str | None = None
    model_sha256: str | None = None
    overrides: tuple[LayerOverride, ...] = ()
    inputs: tuple[GivenInput, ...] = ()  # shapes and values given for the model's inputs at load
    recover: RecoverConfig | None = None  # accuracy recovery after compression (core.compression.recover)

    @classmethod
    def for_model(
        cls, model: Model, prune: PruneConfig, quant: QuantConfig, overrides: tuple[LayerOverride, ...] = ()
    ) -> Recipe:
        """Settings for `model`, naming it and the inputs it was loaded with, so applying them reproduces both."""
        return cls(prune, quant, model.name, model.sha256, overrides, model.given_inputs)

    def __post_init__(self) -> None:
        layers = [override.layer for override in self.overrides]
        if len(set(layers)) != len(layers):
            raise InvalidSettingError("a layer is overridden twice")
        if not GRANULARITIES[self.prune.granularity].layer_amounts and any(
            override.amount is not None or override.skip for override in self.overrides
        ):
            taking = [name for name, granularity in GRANULARITIES.items() if granularity.layer_amounts]
            raise InvalidSettingError(
                f"per-layer amounts and skip apply to {' and '.join(taking)} pruning, not {self.prune.granularity}; "
                "set bits here"
            )

    @property
    def prunes(self) -> bool:
        """Whether anything is pruned: by the settings, or by a layer's own amount."""
        return self.prune.active or any(override.amount for override in self.overrides)

    def override(self, layer: str) -> LayerOverride | None:
        return next((override for override in self.overrides if override.layer == layer), None)

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": RECIPE_FORMAT,
            "model": self.model,
            "model_sha256": self.model_sha256,
            "prune": self.prune.to_dict(),
            "quant": self.quant.to_dict(),
            "overrides": [override.to_dict() for override in self.overrides],
            "inputs": [given.to_dict() for given in self.inputs],
        } | ({"recover": self.recover.to_dict()} if self.recover else {})

    @classmethod
    def from_dict(cls, data: Any) -> Recipe:
        if not isinstance(data, dict):
            raise InvalidSettingError("a recipe must be a JSON object")
        if data.get("format") != RECIPE_FORMAT:
            raise InvalidSettingError(f"unsupported recipe format {data.get('format')!r}; expected {RECIPE_FORMAT}")
        known = {"format", "model", "model_sha256", "prune", "quant", "overrides", "inputs", "recover"}
        unknown = sorted(set(data) - known)
        if unknown:
            raise InvalidSettingError(f"unknown recipe key(s): {', '.join(unknown)}")
        return cls(
            prune=PruneConfig.from_dict(data.get("prune", {})),
            quant=QuantConfig.from_dict(data.get("quant", {})),
            model=data.get("model"),
            model_sha256=data.get("model_sha256"),
            overrides=tuple(_from_dict(LayerOverride, entry, "override") for entry in data.get("overrides", [])),
            inputs=tuple(GivenInput.from_dict(entry) for entry in _list(data.get("inputs", []), "inputs")),
            recover=RecoverConfig.from_dict(data["recover"]) if data.get("recover") is not None else None,
        )

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True) + "\n"

    @classmethod
    def from_json(cls, text: str) -> Recipe:
        try:
            data = json.loads(text)
        except json.JSONDecodeError as error:
            raise InvalidSettingError(f"recipe is not valid JSON ({error.msg} at line {error.lineno})") from None
        return cls.from_dict(data)
