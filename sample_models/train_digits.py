"""Train the digits samples, seeded, and write their weights as safetensors.

Run: python -m sample_models.train_digits
Nothing calls this at start-up; the weights it writes ship with the project.
"""

from __future__ import annotations

import numpy as np
import torch
from safetensors.torch import save_file
from torch import nn

from sample_models.architectures import DigitsCNN, DigitsMLP
from sample_models.data import digits_split
from sample_models.registry import WEIGHTS_DIR

SEED = 0
EPOCHS = 60
BATCH_SIZE = 64


def train(model: nn.Module, train_x: np.ndarray, train_y: np.ndarray) -> nn.Module:
    torch.manual_seed(SEED)
    inputs, labels = torch.from_numpy(train_x), torch.from_numpy(train_y)
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=1e-4)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, EPOCHS)
    generator = torch.Generator().manual_seed(SEED)
    model.train()
    for _ in range(EPOCHS):
        for batch in torch.randperm(len(labels), generator=generator).split(BATCH_SIZE):
            optimizer.zero_grad()
            nn.functional.cross_entropy(model(inputs[batch]), labels[batch]).backward()
            optimizer.step()
        schedule.step()
    return model.eval()


def accuracy(model: nn.Module, x: np.ndarray, y: np.ndarray) -> float:
    with torch.no_grad():
        return float((model(torch.from_numpy(x)).argmax(1).numpy() == y).mean())


def main() -> None:
    torch.use_deterministic_algorithms(True)
    train_x, train_y, test_x, test_y = digits_split()
    for name, architecture in (("digits_cnn", DigitsCNN), ("digits_mlp", DigitsMLP)):
        torch.manual_seed(SEED)
        model = train(architecture(), train_x, train_y)
        state = {key: value.contiguous() for key, value in model.state_dict().items()}
        save_file(state, str(WEIGHTS_DIR / f"{name}.safetensors"))
        print(f"{name}: test accuracy {accuracy(model, test_x, test_y):.4f} on {len(test_y)} images")


if __name__ == "__main__":
    main()
