"""Mask schedules and the MaskGIT decoding scheduler.

The scheduler holds no weights. Each `step` draws tokens for the masked
positions from the step's logits, then decides which tokens stay masked:
by the sampled tokens' own probabilities (MaskGIT's confidence) or by a
critic's scores (Token-Critic). `Phenaki.sample` runs the network and the
guidance and drives the loop; pass it your own scheduler to change the rule:

    scheduler = MaskGitScheduler(mask_schedule="cosine", temperature=1.0, temperature_rule="constant")
    scheduler.set_timesteps(12)
    mask = torch.ones(b, n, dtype=torch.bool)
    ids = torch.full((b, n), mask_id)
    for t in scheduler.timesteps:
        out = scheduler.step(logits_fn(ids), t, ids, mask, mask_id=mask_id)
        ids, mask = out.ids, out.mask
        if not mask.any():
            break
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor


def cosine_schedule(progress: Tensor | float) -> Tensor:
    """Fraction of tokens still masked at `progress` in [0, 1]: cos(progress * pi / 2)."""
    progress = torch.as_tensor(progress, dtype=torch.float32)
    return torch.cos(progress * math.pi / 2)


def linear_schedule(progress: Tensor | float) -> Tensor:
    """Fraction still masked: 1 - progress."""
    return 1.0 - torch.as_tensor(progress, dtype=torch.float32)


def square_schedule(progress: Tensor | float) -> Tensor:
    """Fraction still masked: 1 - progress ** 2 (reveals few tokens early, many late)."""
    return 1.0 - torch.as_tensor(progress, dtype=torch.float32) ** 2


MASK_SCHEDULES: dict[str, Callable[[Tensor | float], Tensor]] = {
    "cosine": cosine_schedule,
    "linear": linear_schedule,
    "square": square_schedule,
}

TEMPERATURE_RULES = ("constant", "linear")


def resolve_mask_schedule(schedule: str | Callable) -> Callable[[Tensor | float], Tensor]:
    """A schedule name from MASK_SCHEDULES, or a callable progress in [0, 1] -> fraction still masked."""
    if callable(schedule):
        return schedule
    if schedule not in MASK_SCHEDULES:
        raise ValueError(f"mask_schedule must be one of {sorted(MASK_SCHEDULES)} or a callable, got {schedule!r}")
    return MASK_SCHEDULES[schedule]


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


def filter_logits(logits: Tensor, top_k: int | None = None, top_p: float | None = None) -> Tensor:
    """Logits (..., vocab) with all but the `top_k` most likely ids, and all outside the smallest set whose
    probability reaches `top_p` (nucleus), set to -inf. The most likely id always survives; None leaves a rule off."""
    if top_k is not None and top_k < logits.shape[-1]:
        kth = logits.topk(top_k, dim=-1).values[..., -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p is not None and top_p < 1.0:
        sorted_logits, order = logits.sort(dim=-1, descending=True)
        probs = sorted_logits.softmax(dim=-1)
        # drop an id when the ids before it already reach top_p (so the first id is always kept)
        drop_sorted = (probs.cumsum(dim=-1) - probs) >= top_p
        drop = torch.zeros_like(drop_sorted).scatter(-1, order, drop_sorted)
        logits = logits.masked_fill(drop, float("-inf"))
    return logits


def random_training_mask(
    valid: Tensor,
    generator: torch.Generator | None = None,
    min_masked: int = 1,
    schedule: str | Callable = "cosine",
) -> Tensor:
    """Mask a scheduled fraction of each row's valid tokens.

    valid (b, n) bool -> mask (b, n) bool, True = masked. For every row a time
    u ~ U(0, 1) gives the fraction schedule(u) (cosine: cos(u * pi / 2)) of its
    valid tokens to mask, and at least `min_masked` of them (all when a row has
    fewer valid tokens).
    """
    if isinstance(min_masked, bool) or not isinstance(min_masked, int) or min_masked < 0:
        raise ValueError(f"min_masked must be an int >= 0, got {min_masked!r}")
    schedule = resolve_mask_schedule(schedule)
    b, n = valid.shape
    device = valid.device
    num_valid = valid.sum(dim=-1)  # (b,)
    fraction = schedule(uniform((b,), generator, device)).to(device)
    num_masked = (fraction * num_valid).round().long().clamp(min=min_masked)
    num_masked = torch.minimum(num_masked, num_valid)
    scores = uniform((b, n), generator, device).masked_fill(~valid, -1.0)  # invalid tokens are never chosen
    ranks = scores.argsort(dim=-1, descending=True).argsort(dim=-1)
    return ranks < num_masked[:, None]


@dataclass
class MaskGitSchedulerOutput:
    """What one `MaskGitScheduler.step` gives back.

    ids: (b, n) the next step's input: drawn tokens where revealed, `mask_id` where still masked.
    mask: (b, n) bool, True where a token is still masked.
    sampled: (b, n) the completed sequence this step predicted (no mask ids), before re-masking.
    """

    ids: Tensor
    mask: Tensor
    sampled: Tensor


class MaskGitScheduler:
    """MaskGIT decoding, one `step` at a time.

        scheduler = MaskGitScheduler()                    # cosine schedule, 18 steps
        scheduler.set_timesteps(12)
        for t in scheduler.timesteps:
            out = scheduler.step(logits, t, ids, mask, mask_id=mask_id, maskable=maskable, critic=critic_fn)

    - `mask_schedule`: "cosine" (MaskGIT), "linear", "square" or a callable progress -> fraction still masked.
      The count is clamped as MaskGIT does: every step before the last reveals at least one token and leaves
      at least one masked while there is more than one, so no step is wasted; a sequence with fewer masked
      tokens than steps finishes early (`out.mask` all False).
    - `temperature_rule`: "constant" draws every step at `temperature` (MaskGIT; only the re-masking noise
      is annealed); "linear" anneals the draw temperature from `temperature` to 0 (argmax on the last step).
    - Re-masking: by confidence (log-probability of the drawn token plus `choice_temperature`-scaled,
      annealed Gumbel noise; tokens fixed at earlier steps are kept), or, when `step` gets a `critic`
      callable, by the critic's "sampled" logits over every maskable token plus annealed uniform noise
      scaled by `critic_noise_scale` (Token-Critic: any token may be masked again).
    - `top_k` / `top_p`: draw only among the k most likely ids / the nucleus holding probability p (None: off);
      confidence re-masking still scores a drawn token by its unfiltered probability.
    - Positions where `maskable` is False (primed tokens) are never drawn or re-masked.
    """

    def __init__(
        self,
        steps: int = 18,
        *,
        mask_schedule: str | Callable = "cosine",
        temperature: float = 1.0,
        temperature_rule: str = "constant",
        choice_temperature: float = 4.5,
        critic_noise_scale: float = 1.0,
        top_k: int | None = None,
        top_p: float | None = None,
    ):
        if top_k is not None and (isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1):
            raise ValueError(f"top_k must be an int >= 1 or None, got {top_k!r}")
        if top_p is not None and (isinstance(top_p, bool) or not isinstance(top_p, (int, float))
                                  or not 0.0 < top_p <= 1.0):
            raise ValueError(f"top_p must lie in (0, 1] or be None, got {top_p!r}")
        self.top_k = top_k
        self.top_p = top_p
        if temperature_rule not in TEMPERATURE_RULES:
            raise ValueError(f"temperature_rule must be one of {TEMPERATURE_RULES}, got {temperature_rule!r}")
        for name, value in (("temperature", temperature), ("choice_temperature", choice_temperature),
                            ("critic_noise_scale", critic_noise_scale)):
            if not math.isfinite(value) or value < 0:
                raise ValueError(f"{name} must be a finite number >= 0, got {value}")
        self.mask_schedule = resolve_mask_schedule(mask_schedule)
        self.temperature = temperature
        self.temperature_rule = temperature_rule
        self.choice_temperature = choice_temperature
        self.critic_noise_scale = critic_noise_scale
        self.set_timesteps(steps)

    def set_timesteps(self, steps: int, device: torch.device | str | None = None) -> None:
        """Decode in `steps` steps; `timesteps` becomes 0 .. steps - 1."""
        if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
            raise ValueError(f"steps must be an int >= 1, got {steps!r}")
        self.steps = steps
        self.timesteps = torch.arange(steps, device=device)

    def progress(self, step: int) -> float:
        return (int(step) + 1) / self.steps

    def annealing(self, step: int) -> float:
        """Linear annealing factor, 1 at the first step and 0 after the last."""
        return 1.0 - self.progress(step)

    def sampling_temperature(self, step: int) -> float:
        if self.temperature_rule == "constant":
            return self.temperature
        return self.temperature * self.annealing(step)

    def num_masked_after(self, step: int, num_maskable: Tensor, num_masked_now: Tensor | None = None) -> Tensor:
        """How many of the `num_maskable` (b,) tokens stay masked after `step`: 0 after the last step;
        before it, floor(num_maskable * schedule(progress)) clamped to [1, num_masked_now - 1]."""
        if int(step) >= self.steps - 1:
            return torch.zeros_like(num_maskable)
        fraction = float(self.mask_schedule(self.progress(step)))
        count = (num_maskable.float() * fraction).floor().long().clamp(min=1)
        now = num_maskable if num_masked_now is None else num_masked_now
        return torch.minimum(count, now - 1).clamp(min=0)

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

    def remask(self, step: int, scores: Tensor, maskable: Tensor, is_masked: Tensor | None = None) -> Tensor:
        """Boolean mask (b, n) of the tokens to mask again after `step` (the highest scores among `maskable`).

        `is_masked`: the mask before this step, for the clamp (default: every maskable token)."""
        now = maskable.sum(dim=-1) if is_masked is None else (is_masked & maskable).sum(dim=-1)
        num_masked = self.num_masked_after(step, maskable.sum(dim=-1), now)
        scores = scores.masked_fill(~maskable, float("-inf"))
        ranks = scores.argsort(dim=-1, descending=True).argsort(dim=-1)
        return (ranks < num_masked[:, None]) & maskable

    def step(
        self,
        logits: Tensor,
        timestep: int | Tensor,
        ids: Tensor,
        mask: Tensor,
        *,
        mask_id: int,
        maskable: Tensor | None = None,
        critic: Callable[[Tensor], Tensor] | None = None,
        generator: torch.Generator | None = None,
    ) -> MaskGitSchedulerOutput:
        """One decoding step.

        logits (b, n, vocab) for the current `ids` (b, n); `mask` (b, n) True where ids are masked now;
        `maskable` (b, n) False where tokens are fixed (default: all maskable); `critic` maps a completed
        sequence (b, n) to per-token "sampled" logits (b, n) and switches re-masking to Token-Critic.
        """
        step = int(timestep)
        if not 0 <= step < self.steps:
            raise ValueError(f"timestep must be in [0, {self.steps}), got {step}; call set_timesteps first")
        if logits.shape[:2] != ids.shape or mask.shape != ids.shape:
            raise ValueError(
                f"logits (b, n, vocab), ids (b, n) and mask (b, n) must agree, got {tuple(logits.shape)}, "
                f"{tuple(ids.shape)} and {tuple(mask.shape)}"
            )
        maskable = torch.ones_like(mask) if maskable is None else maskable
        mask = mask & maskable
        draw_logits = logits.float()
        if self.top_k is not None or self.top_p is not None:  # filter only where a token is drawn
            draw_logits = draw_logits.clone()
            draw_logits[mask] = filter_logits(draw_logits[mask], self.top_k, self.top_p)
        drawn = gumbel_sample(draw_logits, self.sampling_temperature(step), generator)
        sampled = torch.where(mask, drawn, ids)
        if step == self.steps - 1 or not mask.any():
            return MaskGitSchedulerOutput(ids=sampled, mask=torch.zeros_like(mask), sampled=sampled)
        if critic is not None:
            scores = self.critic_scores(critic(sampled), step, generator)
        else:
            scores = self.confidence_scores(logits, sampled, mask, step, generator)
        new_mask = self.remask(step, scores, maskable, mask)
        return MaskGitSchedulerOutput(ids=sampled.masked_fill(new_mask, mask_id), mask=new_mask, sampled=sampled)
