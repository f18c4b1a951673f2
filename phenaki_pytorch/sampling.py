"""Mask schedules and the MaskGIT decoding scheduler.

The scheduler holds no weights: it says how many tokens stay masked after each
step and which ones, given the step's logits (confidence re-masking) or a
critic's scores (critic re-masking). `Phenaki.sample` drives the loop, the
network and the guidance.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor


def cosine_schedule(progress: Tensor | float) -> Tensor:
    """Fraction of tokens still masked at `progress` in [0, 1]: cos(progress * pi / 2)."""
    progress = torch.as_tensor(progress, dtype=torch.float32)
    return torch.cos(progress * math.pi / 2)


def uniform(shape, generator: torch.Generator | None = None, device=None) -> Tensor:
    return torch.rand(shape, generator=generator, device=device)


def gumbel_noise(shape, generator: torch.Generator | None = None, device=None) -> Tensor:
    noise = uniform(shape, generator, device).clamp(1e-20, 1.0)
    return -torch.log((-torch.log(noise)).clamp(min=1e-20))


def gumbel_sample(logits: Tensor, temperature: float, generator: torch.Generator | None = None) -> Tensor:
    """Sample ids from logits (..., vocab); temperature 0 is argmax."""
    if temperature <= 0:
        return logits.argmax(dim=-1)
    noise = gumbel_noise(logits.shape, generator, logits.device)
    return (logits / temperature + noise).argmax(dim=-1)


def random_training_mask(
    valid: Tensor, generator: torch.Generator | None = None, min_masked: int = 1
) -> Tensor:
    """Mask a cosine-scheduled fraction of each row's valid tokens.

    valid (b, n) bool -> mask (b, n) bool, True = masked. For every row a time
    u ~ U(0, 1) gives the fraction cos(u * pi / 2) of its valid tokens to mask
    (at least `min_masked` when the row has any valid token).
    """
    b, n = valid.shape
    device = valid.device
    num_valid = valid.sum(dim=-1)  # (b,)
    fraction = cosine_schedule(uniform((b,), generator, device))
    num_masked = (fraction * num_valid).round().long().clamp(min=min(min_masked, 1))
    num_masked = torch.minimum(num_masked, num_valid)
    scores = uniform((b, n), generator, device).masked_fill(~valid, -1.0)  # invalid tokens are never chosen
    ranks = scores.argsort(dim=-1, descending=True).argsort(dim=-1)
    return ranks < num_masked[:, None]


class MaskGitScheduler:
    """Decides, step by step, which tokens to re-mask.

        scheduler = MaskGitScheduler(steps=18)
        for step in range(scheduler.steps):
            ...fill masked positions with samples...
            mask = scheduler.remask(step, scores, maskable)

    `scores` are per-token "badness" (higher = more likely re-masked). Positions
    where `maskable` is False (primed tokens) are never re-masked.
    """

    def __init__(
        self,
        steps: int = 18,
        *,
        temperature: float = 0.9,
        choice_temperature: float = 4.5,
        critic_noise_scale: float = 1.0,
    ):
        if steps < 1:
            raise ValueError(f"steps must be >= 1, got {steps}")
        self.steps = steps
        self.temperature = temperature
        self.choice_temperature = choice_temperature
        self.critic_noise_scale = critic_noise_scale

    def progress(self, step: int) -> float:
        return (step + 1) / self.steps

    def annealing(self, step: int) -> float:
        """Linear annealing factor, 1 at the first step and 0 after the last."""
        return 1.0 - self.progress(step)

    def sampling_temperature(self, step: int) -> float:
        return self.temperature * self.annealing(step)

    def num_masked_after(self, step: int, num_maskable: Tensor) -> Tensor:
        """How many of the `num_maskable` (b,) tokens stay masked after `step`; 0 after the last."""
        fraction = cosine_schedule(self.progress(step)).item()
        return (num_maskable.float() * fraction).floor().long()

    def confidence_scores(
        self, logits: Tensor, ids: Tensor, was_masked: Tensor, step: int, generator: torch.Generator | None = None
    ) -> Tensor:
        """MaskGIT: low log-probability of the chosen token means high score, with annealed Gumbel noise.

        Tokens fixed at earlier steps keep -inf (they are never re-masked).
        """
        log_probs = F.log_softmax(logits.float(), dim=-1).gather(-1, ids[..., None]).squeeze(-1)
        noise = gumbel_noise(log_probs.shape, generator, log_probs.device)
        confidence = log_probs + self.choice_temperature * self.annealing(step) * noise
        return (-confidence).masked_fill(~was_masked, float("-inf"))

    def critic_scores(self, critic_logits: Tensor, step: int, generator: torch.Generator | None = None) -> Tensor:
        """Token-Critic: the critic's "this token was sampled" logit plus annealed uniform noise."""
        noise = uniform(critic_logits.shape, generator, critic_logits.device) - 0.5
        return critic_logits.float() + self.critic_noise_scale * self.annealing(step) * noise

    def remask(self, step: int, scores: Tensor, maskable: Tensor) -> Tensor:
        """Boolean mask (b, n) of the tokens to mask again after `step`."""
        num_masked = self.num_masked_after(step, maskable.sum(dim=-1))
        scores = scores.masked_fill(~maskable, float("-inf"))
        ranks = scores.argsort(dim=-1, descending=True).argsort(dim=-1)
        return (ranks < num_masked[:, None]) & maskable
