"""Training schedules: the cosine learning rate, and the epochs of each phase (cross-entropy, then self-critical)."""
from __future__ import annotations

import math
from typing import Any

import torch

from captioning.config import Config


class CosineSchedule:
    """Cosine decay of each parameter group's learning rate, from its configured value at the first step of the run
    to zero after the last cross-entropy epoch, set before every step from the run's position (epoch, batch), so that
    a resumed run continues on the same curve. For a fixed budget of epochs; with --resume and more --epochs, the
    curve stretches.

    Speaks ReduceLROnPlateau's language for the rest of train.py: step(score) after an epoch (nothing to do here),
    state_dict and load_state_dict.
    """

    def __init__(self, optimizer: torch.optim.Optimizer) -> None:
        self.optimizer = optimizer
        self.base_lrs = [group["lr"] for group in optimizer.param_groups]

    def set_position(self, fraction: float) -> None:
        """Set the learning rates for a step taken this far (0 to 1) into the run."""
        factor = 0.5 * (1.0 + math.cos(math.pi * min(max(fraction, 0.0), 1.0)))
        for group, base in zip(self.optimizer.param_groups, self.base_lrs):
            group["lr"] = base * factor

    def step(self, score: float | None = None) -> None:
        """End of an epoch: the learning rate follows the step position, not the validation score."""

    def state_dict(self) -> dict[str, Any]:
        return {"base_lrs": list(self.base_lrs)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.base_lrs = list(state["base_lrs"])


def total_epochs(config: Config) -> int:
    """The cross-entropy epochs, then the self-critical ones."""
    return config.epochs + config.scst_epochs
