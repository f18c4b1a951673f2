from .attention import (
    Attention,
    ContinuousPositionBias,
    FeedForward,
    KVCache,
    Transformer,
    set_gradient_checkpointing,
)
from .cvivit import CViViT
from .discriminator import Discriminator
from .maskgit import MaskGit, SelfCritic, TokenCritic
from .phenaki import CriticTrainer, Phenaki, make_video
from .precision import fp32_matmul_precision, native_bf16
from .sampling import MaskGitScheduler, cosine_schedule
from .story import Scene, Story, sample_story
from .text import CallableTextEncoder, HFTextEncoder, TextEncoder, TextEncoderLoadError, get_text_encoder

# The trainers pull in accelerate (and its imports): loaded on first use, so `import phenaki_pytorch` stays quick.
_LAZY = {"CViViTTrainer": "phenaki_pytorch.training", "PhenakiTrainer": "phenaki_pytorch.training"}


def __getattr__(name: str):
    if name in _LAZY:
        from importlib import import_module

        value = getattr(import_module(_LAZY[name]), name)
        globals()[name] = value  # later lookups skip this function
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))


__all__ = [
    "Attention",
    "CallableTextEncoder",
    "ContinuousPositionBias",
    "CriticTrainer",
    "CViViT",
    "CViViTTrainer",
    "Discriminator",
    "FeedForward",
    "HFTextEncoder",
    "KVCache",
    "MaskGit",
    "MaskGitScheduler",
    "Phenaki",
    "PhenakiTrainer",
    "SelfCritic",
    "TextEncoder",
    "TextEncoderLoadError",
    "Transformer",
    "TokenCritic",
    "cosine_schedule",
    "fp32_matmul_precision",
    "get_text_encoder",
    "make_video",
    "native_bf16",
    "sample_story",
    "set_gradient_checkpointing",
    "Scene",
    "Story",
]
