"""The ways to win accuracy back after compression (`recover` applies them), and what a recovery did."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class RecoveryMethod:
    description: str
    needs_labels: bool
    lr: float  # the default learning rate (Adam) of a convolutional or fully connected model
    trains: bool = True  # False: a closed-form correction, done in a few passes


RECOVERY_METHODS: dict[str, RecoveryMethod] = {
    "correct": RecoveryMethod(
        "no training: each layer's bias shifted so its per-channel output mean on the tuning data matches the "
        "original's (bias correction), in one pass per layer",
        needs_labels=False,
        lr=0.0,
        trains=False,
    ),
    "distill": RecoveryMethod(
        "train to match the original's outputs on the tuning data (KL on softened logits for classifiers, "
        "normalised MSE otherwise); no labels needed",
        needs_labels=False,
        lr=3e-3,
    ),
    "finetune": RecoveryMethod(
        "cross-entropy on the tuning labels plus the distillation term (half each)", needs_labels=True, lr=3e-3
    ),
}
OPTIMIZERS = ("adam", "sgd")  # SGD with momentum 0.9
# The default rate where MatMul weights train (a transformer): Adam's usual fine-tuning rate. At 3e-3 minilm's
# validation loss rose from 0.54 to 1.18 in one step; at 1e-4 it fell to 0.25 in 95.
MATMUL_LR = 1e-4


@dataclass(frozen=True)
class RecoveryInfo:
    """What a recovery did, for the report; `before` is the quality of the compressed model without it, on the
    held-out part, by the model's metric."""

    method: str
    seconds: float
    steps: int
    best_step: int
    seed: int
    optimizer: str
    lr: float
    tuning_samples: int
    metric: str
    before: float
    # (step, training loss, validation loss on the tuning part's slice, held-out quality on a watched slice of the
    # held-out part: shown as training goes, never used to choose the checkpoint)
    curve: list[tuple[int, float, float, float]]
    schedule: str = "oneshot"
    pruning_steps: int = 1
    soft: bool = False
    stopped: bool = False  # stopped by the user before its budget ran out; the best checkpoint so far is kept
    check_every: int = 1  # steps between two checks of the validation loss
    planned_steps: int = 0  # the steps its schedule was spread over: more than `steps` if time ran out or it stopped
