from .attention import Attention, ContinuousPositionBias, FeedForward, Transformer
from .cvivit import CViViT
from .discriminator import Discriminator
from .maskgit import MaskGit, SelfCritic, TokenCritic
from .phenaki import CriticTrainer, Phenaki, make_video
from .precision import fp32_matmul_precision, native_bf16
from .sampling import MaskGitScheduler, cosine_schedule
from .story import Scene, Story, sample_story
from .text import CallableTextEncoder, HFTextEncoder, TextEncoder, TextEncoderLoadError, get_text_encoder

__all__ = [
    "Attention",
    "CallableTextEncoder",
    "ContinuousPositionBias",
    "CriticTrainer",
    "CViViT",
    "Discriminator",
    "FeedForward",
    "HFTextEncoder",
    "MaskGit",
    "MaskGitScheduler",
    "Phenaki",
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
    "Scene",
    "Story",
]
