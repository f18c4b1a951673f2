"""Trainers on accelerate and their checkpoints."""

from .base import (
    LR_SCHEDULES,
    BaseTrainer,
    LearningRateSchedule,
    NonFiniteTrainingError,
    ResumableBatchSampler,
    preserved_rng,
)
from .checkpoint import (
    CheckpointManager,
    get_rng_state,
    load_checkpoint,
    restore_checkpoint,
    save_checkpoint,
    set_rng_state,
)
from .cvivit_trainer import CViViTTrainer
from .optim import MuonAdamW, muon_param_groups, newton_schulz

__all__ = [
    "LR_SCHEDULES",
    "BaseTrainer",
    "CViViTTrainer",
    "CheckpointManager",
    "LearningRateSchedule",
    "MuonAdamW",
    "NonFiniteTrainingError",
    "ResumableBatchSampler",
    "get_rng_state",
    "load_checkpoint",
    "muon_param_groups",
    "newton_schulz",
    "preserved_rng",
    "restore_checkpoint",
    "save_checkpoint",
    "set_rng_state",
]

from .phenaki_trainer import PhenakiTrainer  # noqa: E402

__all__ += ["PhenakiTrainer"]
