from .attention import Attention, ContinuousPositionBias, FeedForward, Transformer
from .cvivit import CViViT
from .discriminator import Discriminator
from .maskgit import MaskGit, SelfCritic, TokenCritic
from .phenaki import CriticTrainer, Phenaki, make_video
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
    "get_text_encoder",
    "make_video",
    "sample_story",
    "Scene",
    "Story",
]
