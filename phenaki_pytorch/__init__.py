from .attention import Attention, ContinuousPositionBias, FeedForward, Transformer
from .cvivit import CViViT
from .discriminator import Discriminator

__all__ = [
    "Attention",
    "ContinuousPositionBias",
    "CViViT",
    "Discriminator",
    "FeedForward",
    "Transformer",
]
