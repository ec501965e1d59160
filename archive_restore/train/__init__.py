"""Training, following ReDegNet: degradation learning, the conditioned restorer, blind distillation."""
from .loop import Budget
from .run import (
    TrainConfig,
    train_blind,
    train_cleanup,
    train_degradation,
    train_restorer,
)

__all__ = ["Budget", "TrainConfig", "train_blind", "train_cleanup", "train_degradation", "train_restorer"]
