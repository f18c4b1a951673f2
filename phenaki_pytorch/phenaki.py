"""Phenaki: the tokenizer, MaskGit, an optional critic and a text encoder composed.

    loss = phenaki(videos, texts)                   # training loss (MaskGit + critic)
    video = phenaki.sample(text='...', num_frames=17)
    more = phenaki.sample(text='...', prime_frames=video[:, :, -3:], num_frames=14)

Shape legend: b batch, c channels, f frames, t token frames, h/w token grid, n = t*h*w.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from einops import rearrange, repeat
from torch import Tensor, nn
from tqdm.auto import tqdm

from .attention import exists
from .cvivit import CViViT
from .maskgit import MaskGit, SelfCritic, TokenCritic
from .sampling import MaskGitScheduler, gumbel_sample, random_training_mask
from .serialization import ConfigMixin
from .text import DEFAULT_TEXT_ENCODER, TextEncoder, get_text_encoder
from .typecheck import typechecked


def _check_int(name: str, value, minimum: int = 1, *, allow_none: bool = False) -> None:
    """An int (not a bool: `True` would pass as 1) of at least `minimum`."""
    if value is None and allow_none:
        return
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, got {type(value).__name__} {value!r}")
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")


def _check_finite(name: str, value, *, minimum: float | None = None) -> None:
    """A finite number (or tensor of them): NaN or inf here would decode to all-zero ids without an error."""
    if isinstance(value, Tensor):
        if value.is_floating_point() and not bool(torch.isfinite(value).all()):
            bad = int((~torch.isfinite(value)).sum())
            raise ValueError(f"{name} holds {bad} NaN or infinite values; expected finite numbers")
        return
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a number, got {type(value).__name__} {value!r}")
    if not math.isfinite(value):
        raise ValueError(f"{name} must be a finite number, got {value}")
    if minimum is not None and value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")


def _concat_kv(first: list, second: list) -> list:
    """Stack two per-layer cross-attention (k, v, mask) lists along the batch."""
    joined = []
    for (k1, v1, m1), (k2, v2, m2) in zip(first, second):
        mask = torch.cat((m1, m2)) if exists(m1) else None
        joined.append((torch.cat((k1, k2)), torch.cat((v1, v2)), mask))
    return joined


CRITIC_OBJECTIVES = ("sampled", "errors")


def critic_bce_loss(
    critic: nn.Module,
    target_ids: Tensor,
    masked: Tensor,
    generator_logits: Tensor,
    *,
    temperature: float = 1.0,
    objective: str = "sampled",
    generator: torch.Generator | None = None,
    **critic_kwargs,
) -> Tensor:
    """Fill the masked positions with samples from the (detached) generator logits and train the critic on
    the completed sequence. `generator_logits` (b, n, vocab), or (m, vocab) at the masked positions only.

    - `objective="sampled"` (Token-Critic, the default): over every valid position, label 1 where the token
      was drawn by the generator (a masked position) and 0 where it is original. At sampling time the critic
      ranks every token, so it must learn what real tokens look like too.
    - `objective="errors"`: on masked positions only, label 1 where the drawn token differs from the real
      one (the first release's objective).

    Validity comes from `video_mask` in `critic_kwargs` (padding is never scored).
    """
    if objective not in CRITIC_OBJECTIVES:
        raise ValueError(f"critic objective must be one of {CRITIC_OBJECTIVES}, got {objective!r}")
    at_masked = generator_logits if generator_logits.ndim == 2 else generator_logits[masked]
    filled = target_ids.masked_scatter(masked, gumbel_sample(at_masked.detach().float(), temperature, generator))
    critic_logits = critic(filled, **critic_kwargs)
    if objective == "errors":
        scored, labels = masked, (filled != target_ids).float()
    else:
        valid = critic_kwargs.get("video_mask")
        scored = torch.ones_like(masked) if valid is None else valid.bool()
        labels = masked.float()
    if not scored.any():
        return critic_logits.sum() * 0.0
    return F.binary_cross_entropy_with_logits(critic_logits[scored].float(), labels[scored])


class CriticTrainer(nn.Module):
    """Trains a TokenCritic against a frozen MaskGit.

        critic_trainer = CriticTrainer(maskgit=maskgit, critic=critic)
        loss = critic_trainer(video_codes)          # video_codes (b, n) long
        loss.backward()
    """

    @typechecked
    def __init__(self, *, maskgit: MaskGit, critic: nn.Module, temperature: float = 1.0, objective: str = "sampled"):
        super().__init__()
        if objective not in CRITIC_OBJECTIVES:
            raise ValueError(f"objective must be one of {CRITIC_OBJECTIVES}, got {objective!r}")
        self.objective = objective
        if critic.num_tokens != maskgit.num_tokens:
            raise ValueError(
                f"critic.num_tokens ({critic.num_tokens}) must equal maskgit.num_tokens ({maskgit.num_tokens})"
            )
        self._maskgit = [maskgit]  # frozen helper, not a trained submodule
        self.critic = critic
        self.temperature = temperature

    @property
    def maskgit(self) -> MaskGit:
        return self._maskgit[0]

    def forward(
        self,
        video_codes: Tensor,
        *,
        text_embeds: Tensor | None = None,
        text_mask: Tensor | None = None,
        video_patch_shape: tuple[int, int] | None = None,
        video_mask: Tensor | None = None,
        generator: torch.Generator | None = None,
    ) -> Tensor:
        self.maskgit.trunk.check_ids(video_codes, allow_mask=False)
        valid = video_mask if exists(video_mask) else torch.ones_like(video_codes, dtype=torch.bool)
        masked = random_training_mask(valid, generator)
        inputs = video_codes.masked_fill(masked, self.maskgit.mask_id)
        cond = dict(text_embeds=text_embeds, text_mask=text_mask, video_patch_shape=video_patch_shape, video_mask=video_mask)
        with torch.no_grad():
            logits = self.maskgit(inputs, cond_drop_prob=0.0, logits_at=masked, **cond)
        return critic_bce_loss(
            self.critic,
            video_codes,
            masked,
            logits,
            temperature=self.temperature,
            objective=self.objective,
            generator=generator,
            **cond,
        )


class Phenaki(ConfigMixin, nn.Module):
    """Text-to-video: C-ViViT tokens generated by MaskGit under text guidance."""

    @typechecked
    def __init__(
        self,
        *,
        cvivit: CViViT,
        maskgit: MaskGit,
        critic: TokenCritic | None = None,
        self_token_critic: bool = False,
        text_encoder: str | TextEncoder | Callable | None = DEFAULT_TEXT_ENCODER,
        text_embed_dim: int | None = None,
        max_text_len: int = 256,
        cond_drop_prob: float | None = None,
        steps: int = 18,
        sample_temperature: float = 0.3,
        critic_loss_weight: float = 1.0,
        critic_train_sample_temperature: float = 1.0,
        critic_objective: str = "sampled",
        sample_temperature_rule: str = "constant",
        mask_schedule: str = "cosine",
        t5_name: str | None = None,
        continuation_prob: float = 0.0,
    ):
        super().__init__()
        if maskgit.num_tokens != cvivit.codebook_size:
            raise ValueError(
                f"MaskGit(num_tokens={maskgit.num_tokens}) must equal the tokenizer's "
                f"CViViT(codebook_size={cvivit.codebook_size}): every codebook id is a MaskGit token"
            )
        if exists(critic) and self_token_critic:
            raise ValueError("pass either critic= or self_token_critic=True, not both")
        if exists(critic) and critic.num_tokens != maskgit.num_tokens:
            raise ValueError(f"critic.num_tokens ({critic.num_tokens}) must equal maskgit.num_tokens ({maskgit.num_tokens})")

        self.cvivit = cvivit.eval().requires_grad_(False)  # frozen: stage-2 trains MaskGit and the critic
        self.maskgit = maskgit
        self.critic = SelfCritic(maskgit) if self_token_critic else critic
        if exists(cond_drop_prob):
            maskgit.cond_drop_prob = cond_drop_prob

        self.is_conditional = not maskgit.unconditional
        self.text_embed_dim = text_embed_dim
        self.max_text_len = max_text_len
        self._text_encoder_spec = t5_name if exists(t5_name) else text_encoder
        self._text_encoder: list = []  # built lazily, kept out of parameters and state_dict
        if self.is_conditional and exists(text_embed_dim) and text_embed_dim != maskgit.dim_context:
            raise ValueError(f"text_embed_dim={text_embed_dim} must equal maskgit dim_context={maskgit.dim_context}")

        self.steps = steps
        self.sample_temperature = sample_temperature
        self.critic_loss_weight = critic_loss_weight
        self.critic_train_sample_temperature = critic_train_sample_temperature
        if critic_objective not in CRITIC_OBJECTIVES:
            raise ValueError(f"critic_objective must be one of {CRITIC_OBJECTIVES}, got {critic_objective!r}")
        self.critic_objective = critic_objective
        self.sample_temperature_rule = sample_temperature_rule
        self.mask_schedule = mask_schedule
        if not 0.0 <= continuation_prob <= 1.0:
            raise ValueError(f"continuation_prob must lie in [0, 1], got {continuation_prob}")
        self.continuation_prob = continuation_prob
        self.make_scheduler()  # bad schedule names fail here, not at the first sample

    # ------------------------------------------------------------------ plumbing

    def train(self, mode: bool = True):
        super().train(mode)
        self.cvivit.eval()  # the tokenizer's quantizer must not update its codebook here
        return self

    @property
    def device(self) -> torch.device:
        return self.maskgit.to_logits.weight.device

    def trainable_parameters(self) -> list[nn.Parameter]:
        return [p for p in self.parameters() if p.requires_grad]

    @property
    def text_encoder(self) -> TextEncoder | None:
        if not self.is_conditional:
            return None
        if not self._text_encoder:
            encoder = get_text_encoder(self._text_encoder_spec, dim=self.text_embed_dim)
            if encoder is None:
                raise ValueError("this Phenaki has no text encoder: pass text_embeds= (and text_mask=)")
            if hasattr(encoder, "max_length") and self.max_text_len:
                encoder.max_length = min(encoder.max_length, self.max_text_len)
            self._text_encoder.append(encoder)
        return self._text_encoder[0]

    def encode_text(self, texts: Sequence[str]) -> tuple[Tensor, Tensor]:
        embeds, mask = self.text_encoder.encode(list(texts), device=self.device)
        if embeds.shape[-1] != self.maskgit.dim_context:
            raise ValueError(
                f"the text encoder gives {embeds.shape[-1]}-dim embeddings but MaskGit was built with "
                f"dim_context={self.maskgit.dim_context}"
            )
        return embeds, mask

    def _text_condition(self, texts, text_embeds, text_mask, batch: int) -> tuple[Tensor | None, Tensor | None]:
        if not self.is_conditional:
            return None, None
        if exists(texts):
            if isinstance(texts, str):
                texts = [texts] * batch
            if len(texts) != batch:
                raise ValueError(f"got {len(texts)} texts for a batch of {batch} videos")
            return self.encode_text(texts)
        if exists(text_embeds):
            if text_embeds.ndim != 3 or text_embeds.shape[0] != batch:
                raise ValueError(f"text_embeds must be ({batch}, length, dim), got {tuple(text_embeds.shape)}")
            if exists(text_mask) and text_mask.shape != text_embeds.shape[:2]:
                raise ValueError(f"text_mask must be {tuple(text_embeds.shape[:2])}, got {tuple(text_mask.shape)}")
            if not exists(text_mask):
                text_mask = torch.ones(text_embeds.shape[:2], dtype=torch.bool, device=text_embeds.device)
            return text_embeds, text_mask.bool()
        raise ValueError("this Phenaki is text-conditioned: pass texts= (list of str) or text_embeds=")

    def _patch_shape(self, image_size=None) -> tuple[int, int]:
        if not exists(image_size) and not exists(self.cvivit.image_size):
            raise ValueError("build the CViViT with image_size=... (or pass image_size=) so the token grid is known")
        return self.cvivit.patch_grid(image_size)

    def _token_frame_mask(self, frame_mask: Tensor, num_token_frames: int) -> Tensor:
        """(b, f) real-frame mask -> (b, t) real-token-frame mask: a token frame is real when all its frames are."""
        tp = self.cvivit.temporal_patch_size
        first = frame_mask[:, :1]
        rest = rearrange(frame_mask[:, 1:], "b (t tp) -> b t tp", tp=tp).all(dim=-1)
        return torch.cat((first, rest), dim=1)[:, :num_token_frames]

    # ------------------------------------------------------------------ training

    def forward(
        self,
        videos: Tensor | None = None,
        texts: Sequence[str] | None = None,
        *,
        text_embeds: Tensor | None = None,
        text_mask: Tensor | None = None,
        video_codebook_ids: Tensor | None = None,
        video_frame_mask: Tensor | None = None,
        cond_drop_prob: float | None = None,
        generator: torch.Generator | None = None,
        return_loss_breakdown: bool = False,
        train_critic: bool = True,
        prime_frames: Tensor | Sequence[int] | int | None = None,
    ):
        """Training loss: MaskGit cross-entropy on masked tokens (+ critic BCE when a critic is present and
        `train_critic`; False skips the critic's pass, e.g. to train it on every k-th step only).

        `prime_frames` (an int or one per clip, 0 for none; each 1 + k * temporal_patch_size and shorter than
        the clip) marks each clip's first frames as context, as `sample(prime_frames=...)` gives it: their tokens
        are never masked and carry no loss. A clip whose caption describes only its frames after a scene cut
        trains the model to continue a video under a new prompt, as `sample_story` asks it to.
        """
        if exists(video_codebook_ids):
            ids = video_codebook_ids
            self.cvivit._check_ids(ids)
            if ids.ndim == 2:
                h, w = self._patch_shape()
                ids = rearrange(ids, "b (t h w) -> b t h w", h=h, w=w)
            elif ids.ndim != 4:
                raise ValueError(f"video_codebook_ids must be (b, t, h, w) or (b, n), got {tuple(ids.shape)}")
        elif exists(videos):
            with torch.no_grad():
                ids = self.cvivit.tokenize(videos)
        else:
            raise ValueError("pass videos (b, c, f, h, w) / images (b, c, h, w), or video_codebook_ids")

        b, t, h, w = ids.shape
        ids = ids.to(self.device)
        token_valid = None
        if exists(video_frame_mask):
            frames = self.cvivit.num_video_frames(t)
            if video_frame_mask.shape != (b, frames) or video_frame_mask.dtype != torch.bool:
                raise ValueError(
                    f"video_frame_mask must be bool ({b}, {frames}), got {video_frame_mask.dtype} "
                    f"{tuple(video_frame_mask.shape)}"
                )
            frame_valid = self._token_frame_mask(video_frame_mask.to(ids.device), t)
            token_valid = repeat(frame_valid, "b t -> b (t h w)", h=h, w=w)

        ids = rearrange(ids, "b t h w -> b (t h w)")
        text_embeds, text_mask = self._text_condition(texts, text_embeds, text_mask, b)
        valid = token_valid if exists(token_valid) else torch.ones_like(ids, dtype=torch.bool)
        kept = self._kept_token_frames(prime_frames, b, t, ids.device)
        masked = random_training_mask(self._maskable_in_training(valid, t, h * w, generator, kept), generator)
        inputs = ids.masked_fill(masked, self.maskgit.mask_id)

        cond = dict(text_embeds=text_embeds, text_mask=text_mask, video_patch_shape=(h, w), video_mask=token_valid)
        logits = self.maskgit(inputs, cond_drop_prob=cond_drop_prob, logits_at=masked, **cond)  # (m, vocab)
        maskgit_loss = self.maskgit.masked_loss(logits, ids, masked)
        loss, breakdown = maskgit_loss, {"maskgit": maskgit_loss.detach()}

        if exists(self.critic) and train_critic:
            critic_loss = critic_bce_loss(
                self.critic,
                ids,
                masked,
                logits,
                temperature=self.critic_train_sample_temperature,
                objective=self.critic_objective,
                generator=generator,
                **cond,
            )
            breakdown["critic"] = critic_loss.detach()
            loss = loss + self.critic_loss_weight * critic_loss

        return (loss, breakdown) if return_loss_breakdown else loss

    def _kept_token_frames(self, prime_frames, batch: int, token_frames: int, device) -> Tensor | None:
        """`forward`'s prime_frames as token frames per clip (b,) long, checked; None when there are none."""
        if prime_frames is None:
            return None
        frames = torch.as_tensor(prime_frames, dtype=torch.long).flatten().cpu()
        if frames.numel() == 1:
            frames = frames.expand(batch)
        clip = self.cvivit.num_video_frames(token_frames)
        tp = self.cvivit.temporal_patch_size
        bad = (frames < 0) | (frames >= clip) | ((frames > 0) & ((frames - 1) % tp != 0))
        if frames.numel() != batch or bad.any():
            raise ValueError(
                f"prime_frames must be 0 or 1 + k * {tp} frames below the clip's {clip}, one per clip ({batch}) or "
                f"one for all, got {frames.tolist()}"
            )
        kept = torch.where(frames > 0, 1 + (frames - 1) // tp, 0)
        return kept.to(device) if bool(kept.any()) else None

    def _maskable_in_training(
        self,
        valid: Tensor,
        token_frames: int,
        tokens_per_frame: int,
        generator: torch.Generator | None,
        kept: Tensor | None = None,
    ) -> Tensor:
        """The tokens the training mask may pick: the valid ones after each clip's kept prefix of `kept` (b,)
        token frames (`forward(prime_frames=...)`). In training, a `continuation_prob` share of the clips without
        one keep their first 1 .. t - 1 token frames (uniform) whole, as a primed video is kept when
        `sample(prime_frames=...)` continues it."""
        b, device = valid.shape[0], valid.device
        if self.training and self.continuation_prob > 0.0 and token_frames > 1:
            rows = torch.rand(b, generator=generator, device=device) < self.continuation_prob
            drawn = torch.randint(1, token_frames, (b,), generator=generator, device=device)
            drawn = torch.where(rows, drawn, 0)
            kept = drawn if kept is None else torch.where(kept > 0, kept, drawn)
        if kept is None:
            return valid
        frame = torch.arange(valid.shape[1], device=device) // tokens_per_frame
        maskable = valid & (frame[None] >= kept[:, None])
        # a clip whose valid tokens all lie in the kept prefix (padding) trains as usual
        return torch.where(maskable.any(dim=-1, keepdim=True), maskable, valid)

    # ------------------------------------------------------------------ sampling

    def _check_frames(self, num_frames: int, num_prime: int, image_size) -> tuple[int, int, int, int]:
        """Token frames of prime and total, and the token grid, with errors that name valid lengths."""
        tp = self.cvivit.temporal_patch_size
        if num_frames < 1:
            raise ValueError(f"num_frames must be >= 1, got {num_frames}")
        if num_prime and not self.cvivit.is_valid_num_frames(num_prime):
            raise ValueError(
                f"prime_frames has {num_prime} frames; it must have 1 + k * {tp} frames, nearest valid: "
                f"{self.cvivit.nearest_valid_num_frames(num_prime)}"
            )
        total = num_prime + num_frames
        if not self.cvivit.is_valid_num_frames(total):
            valid = tuple(v - num_prime for v in self.cvivit.nearest_valid_num_frames(total) if v > num_prime)
            after = f" after {num_prime} primed frames" if num_prime else ""
            raise ValueError(
                f"num_frames={num_frames} cannot be tokenized{after}: the total must be 1 + k * {tp} frames; "
                f"nearest valid num_frames: {valid}"
            )
        h, w = self._patch_shape(image_size)
        prime_t = self.cvivit.num_token_frames(num_prime) if num_prime else 0
        total_t = self.cvivit.num_token_frames(total)
        if total_t * h * w > self.maskgit.max_seq_len:
            longest = self.cvivit.num_video_frames(max(self.maskgit.max_seq_len // (h * w), 1)) - num_prime
            raise ValueError(
                f"{total} frames need {total_t * h * w} tokens, more than MaskGit's max_seq_len="
                f"{self.maskgit.max_seq_len}; at most num_frames={longest} here (use make_video / a story for longer)"
            )
        return prime_t, total_t, h, w

    def prepare_context(self, text_embeds: Tensor, text_mask: Tensor, guided: bool) -> list:
        """MaskGit's cross-attention keys/values for a sampling call; with guidance the
        text-free rows are stacked under the conditional ones, so a step is one forward."""
        context_kv = self.maskgit.context_kv(text_embeds, text_mask)
        if guided:
            context_kv = _concat_kv(context_kv, self.maskgit.context_kv(text_embeds, torch.zeros_like(text_mask)))
        return context_kv

    def guided_logits(
        self, ids: Tensor, context_kv: list | None, cond_scale: float | None, video_patch_shape: tuple[int, int]
    ) -> Tensor:
        """Logits (b, n, num_tokens) for one decoding step; classifier-free guidance when
        `cond_scale` is given, with conditional and null-text rows in one batch."""
        if cond_scale is None:
            logits = self.maskgit(ids, context_kv=context_kv, video_patch_shape=video_patch_shape, cond_drop_prob=0.0)
            return logits.float()
        logits = self.maskgit(
            torch.cat((ids, ids)), context_kv=context_kv, video_patch_shape=video_patch_shape, cond_drop_prob=0.0
        )
        cond_logits, null_logits = logits.float().chunk(2)
        return null_logits + cond_scale * (cond_logits - null_logits)

    def make_scheduler(
        self,
        steps: int | None = None,
        temperature: float | None = None,
        critic_noise_scale: float = 1.0,
        *,
        top_k: int | None = None,
        top_p: float | None = None,
    ) -> MaskGitScheduler:
        """The scheduler `sample` uses unless given one: this model's steps, temperature, rule and schedule
        (`top_k` / `top_p`: see `MaskGitScheduler`; off unless given)."""
        return MaskGitScheduler(
            steps if exists(steps) else self.steps,
            mask_schedule=self.mask_schedule,
            temperature=self.sample_temperature if temperature is None else temperature,
            temperature_rule=self.sample_temperature_rule,
            critic_noise_scale=critic_noise_scale,
            top_k=top_k,
            top_p=top_p,
        )

    def guided_critic_logits(
        self, ids: Tensor, critic_kv: list | None, critic_cond_scale: float | None, video_patch_shape: tuple[int, int]
    ) -> Tensor:
        """The critic's "sampled" logits (b, n) for a completed sequence; with `critic_cond_scale` the null-text
        rows run in the same batch and the scores are guided like MaskGit's logits."""
        if critic_cond_scale is None:
            return self.critic(ids, context_kv=critic_kv, video_patch_shape=video_patch_shape).float()
        scores = self.critic(torch.cat((ids, ids)), context_kv=critic_kv, video_patch_shape=video_patch_shape)
        cond, null = scores.float().chunk(2)
        return null + critic_cond_scale * (cond - null)

    @torch.no_grad()
    def sample(
        self,
        *,
        text: str | Sequence[str] | None = None,
        texts: str | Sequence[str] | None = None,
        num_frames: int,
        cond_scale: float = 3.0,
        prime_frames: Tensor | None = None,
        batch_size: int = 1,
        steps: int | None = None,
        temperature: float | None = None,
        critic_noise_scale: float = 1.0,
        top_k: int | None = None,
        top_p: float | None = None,
        critic_cond_scale: float | None = None,
        remasking: str | None = None,
        scheduler: MaskGitScheduler | None = None,
        prime_codebook_ids: Tensor | None = None,
        inpaint_codebook_ids: Tensor | None = None,
        inpaint_mask: Tensor | None = None,
        text_embeds: Tensor | None = None,
        text_mask: Tensor | None = None,
        image_size: int | tuple[int, int] | None = None,
        generator: torch.Generator | None = None,
        return_codebook_ids: bool = False,
        return_prime: bool = False,
        show_progress: bool = False,
    ):
        """A video (b, c, num_frames, h, w) in [0, 1] for each text.

        With `prime_frames` (b or 1, c, k, h, w) the new frames continue them; `num_frames`
        counts the new frames only (with `return_prime=True` the primed frames are put back
        in front, exactly as given). `prime_codebook_ids` (b or 1, t, h, w) primes with token
        ids instead (e.g. the ids of the previous scene, `return_codebook_ids=True`), which
        skips a decode/re-encode round trip; with `return_prime=True` they are decoded in front.

        Inpainting: `inpaint_codebook_ids` (b or 1, t, h, w) with `inpaint_mask` (b or 1, t, h, w) bool, True
        where new ids are drawn; the ids where it is False are kept exactly as given, anywhere in the clip (a
        middle token frame, a region of every frame, the last frames). `num_frames` is then the whole clip the
        ids decode to, and the whole clip is returned. A mask that keeps the first k token frames of every row
        draws the same ids as `prime_codebook_ids` with those frames.

        Decoding: `scheduler` (a `MaskGitScheduler` or anything with its `set_timesteps`/`timesteps`/`step`)
        defaults to `make_scheduler(steps, temperature, critic_noise_scale, top_k=top_k, top_p=top_p)` (`top_k` /
        `top_p`: draw only among the k most likely codes / within the nucleus of probability p; off by default;
        they, `temperature` and `critic_noise_scale` are for that default scheduler). `remasking`: "critic" (the
        default when the model has a critic) or "confidence" (MaskGIT's rule, the default without one).
        `critic_cond_scale` guides the critic's scores like `cond_scale` guides MaskGit's logits (None: unguided).

        A NaN or infinite `cond_scale`, `temperature`, `text_embeds` or `prime_frames` is a ValueError
        naming it; counts must be ints (a bool is a TypeError).
        """
        if exists(text) and exists(texts):
            raise ValueError("pass text= or texts=, not both")
        if remasking not in (None, "critic", "confidence"):
            raise ValueError(f"remasking must be 'critic', 'confidence' or None, got {remasking!r}")
        if remasking == "critic" and not exists(self.critic):
            raise ValueError("remasking='critic' needs a critic: build Phenaki with critic= or self_token_critic=True")
        use_critic = exists(self.critic) and remasking != "confidence"
        if exists(prime_frames) and exists(prime_codebook_ids):
            raise ValueError("pass prime_frames= or prime_codebook_ids=, not both")
        if exists(inpaint_codebook_ids) != exists(inpaint_mask):
            raise ValueError("inpaint_codebook_ids= and inpaint_mask= go together: pass both or neither")
        if exists(inpaint_codebook_ids) and (exists(prime_frames) or exists(prime_codebook_ids)):
            raise ValueError(
                "pass inpaint_codebook_ids= or prime_frames= / prime_codebook_ids=, not both (a prime is an "
                "inpainting mask that keeps the first token frames)"
            )
        # one cheap check per call: non-finite inputs would otherwise come back as all-zero ids, silently
        _check_int("num_frames", num_frames)
        _check_int("batch_size", batch_size)
        _check_int("steps", steps, allow_none=True)
        _check_finite("cond_scale", cond_scale)
        _check_finite("critic_noise_scale", critic_noise_scale)
        if exists(critic_cond_scale):
            _check_finite("critic_cond_scale", critic_cond_scale)
        if exists(temperature):
            _check_finite("temperature", temperature, minimum=0.0)
        if exists(text_embeds):
            _check_finite("text_embeds", text_embeds)
        if exists(prime_frames):
            if not isinstance(prime_frames, Tensor):
                raise TypeError(f"prime_frames must be a tensor (b, c, f, h, w), got {type(prime_frames).__name__}")
            _check_finite("prime_frames", prime_frames)
        texts = text if exists(text) else texts
        if isinstance(texts, str):
            texts = [texts] * batch_size
        if exists(texts):
            texts = list(texts)
            batch = len(texts)
        elif exists(text_embeds):
            batch = text_embeds.shape[0]
        else:
            if self.is_conditional and cond_scale != 0:
                raise ValueError("this Phenaki is text-conditioned: pass text=/texts= or text_embeds=")
            batch = batch_size

        device = self.device
        prime_ids = None
        if exists(prime_codebook_ids):
            if not isinstance(prime_codebook_ids, Tensor) or prime_codebook_ids.ndim != 4:
                raise ValueError(
                    f"prime_codebook_ids must be (b, t, h, w) token ids, got {getattr(prime_codebook_ids, 'shape', type(prime_codebook_ids))}"
                )
            self.cvivit._check_ids(prime_codebook_ids)
            if prime_codebook_ids.shape[0] not in (1, batch):
                raise ValueError(
                    f"prime_codebook_ids must have batch {batch} or 1, got {prime_codebook_ids.shape[0]}"
                )
            prime_ids = prime_codebook_ids.to(device)
            num_prime = self.cvivit.num_video_frames(prime_ids.shape[1])
        else:
            num_prime = prime_frames.shape[2] if exists(prime_frames) else 0
        prime_t, total_t, h, w = self._check_frames(num_frames, num_prime, image_size)
        if exists(prime_ids) and tuple(prime_ids.shape[2:]) != (h, w):
            raise ValueError(f"prime_codebook_ids must have a {h} x {w} token grid, got {tuple(prime_ids.shape[2:])}")
        n, n_prime = total_t * h * w, prime_t * h * w

        ids = torch.full((batch, n), self.maskgit.mask_id, dtype=torch.long, device=device)
        maskable = torch.ones(batch, n, dtype=torch.bool, device=device)
        if num_prime:
            if exists(prime_frames):
                if prime_frames.ndim != 5 or prime_frames.shape[0] not in (1, batch):
                    raise ValueError(
                        f"prime_frames must be (batch={batch} or 1, channels, frames, height, width), "
                        f"got {tuple(prime_frames.shape)}"
                    )
                prime_frames = prime_frames.to(device)
                prime_ids = self.cvivit.tokenize(prime_frames)
            ids[:, :n_prime] = rearrange(prime_ids, "b t h w -> b (t h w)").expand(batch, -1)
            maskable[:, :n_prime] = False
        if exists(inpaint_codebook_ids):
            known, draw = self._check_inpaint(inpaint_codebook_ids, inpaint_mask, batch, (total_t, h, w))
            maskable = draw.to(device).expand(batch, -1).clone()
            ids = known.to(device).long().expand(batch, -1).masked_fill(maskable, self.maskgit.mask_id)

        # text and cross-attention keys/values: once per call, not per step
        guided = self.is_conditional and cond_scale != 1.0
        critic_guided = self.is_conditional and exists(critic_cond_scale) and critic_cond_scale != 1.0
        context_kv = critic_kv = None
        if self.is_conditional:
            if exists(texts) or exists(text_embeds):
                embeds, mask = self._text_condition(texts, text_embeds, text_mask, batch)
            else:  # unconditional sample from a conditional model: null text only
                embeds = torch.zeros(batch, 1, self.maskgit.dim_context, device=device)
                mask = torch.zeros(batch, 1, dtype=torch.bool, device=device)
            context_kv = self.prepare_context(embeds, mask, guided=guided)
            if use_critic:
                critic_kv = self.critic.context_kv(embeds, mask)
                if critic_guided and exists(critic_kv):
                    critic_kv = _concat_kv(critic_kv, self.critic.context_kv(embeds, torch.zeros_like(mask)))
                elif critic_guided:  # a critic without cross-attention has nothing to guide
                    critic_guided = False

        if scheduler is None:
            scheduler = self.make_scheduler(steps, temperature, critic_noise_scale, top_k=top_k, top_p=top_p)
        elif exists(steps):
            scheduler.set_timesteps(steps)
        patch_shape = (h, w)
        critic_fn = None
        if use_critic:
            def critic_fn(filled: Tensor) -> Tensor:
                return self.guided_critic_logits(
                    filled, critic_kv, critic_cond_scale if critic_guided else None, patch_shape
                )

        is_masked = maskable.clone()
        for timestep in tqdm(scheduler.timesteps, desc="sampling", disable=not show_progress, leave=False):
            logits = self.guided_logits(ids, context_kv, cond_scale if guided else None, patch_shape)
            out = scheduler.step(
                logits,
                timestep,
                ids,
                is_masked,
                mask_id=self.maskgit.mask_id,
                maskable=maskable,
                critic=critic_fn,
                generator=generator,
            )
            ids, is_masked = out.ids, out.mask
            if not is_masked.any():  # every token is drawn: the remaining steps would change nothing
                break
        if is_masked.any():  # a custom scheduler left tokens masked: fill them from one more pass
            logits = self.guided_logits(ids, context_kv, cond_scale if guided else None, patch_shape)
            ids = torch.where(is_masked, logits.argmax(dim=-1), ids)

        ids = rearrange(ids, "b (t h w) -> b t h w", h=h, w=w)
        if return_codebook_ids:
            return ids  # primed token frames included: the whole sequence, ready to prime the next call

        video = self.cvivit.decode_from_codebook_indices(ids)
        video = video.float().clamp(0.0, 1.0)
        if num_prime:
            if return_prime and exists(prime_frames):
                video[:, :, :num_prime] = prime_frames.expand(batch, -1, -1, -1, -1).to(video.dtype)
            elif not return_prime:
                video = video[:, :, num_prime:]
        return video

    def _check_inpaint(
        self, ids: Tensor, mask: Tensor, batch: int, grid: tuple[int, int, int]
    ) -> tuple[Tensor, Tensor]:
        """`inpaint_codebook_ids` and `inpaint_mask` checked against the clip's token grid (t, h, w) and the
        batch, flattened to (b or 1, t * h * w)."""
        for name, value in (("inpaint_codebook_ids", ids), ("inpaint_mask", mask)):
            if not isinstance(value, Tensor) or value.ndim != 4:
                raise ValueError(f"{name} must be (b, t, h, w), got {getattr(value, 'shape', type(value).__name__)}")
            if value.shape[0] not in (1, batch) or tuple(value.shape[1:]) != grid:
                raise ValueError(
                    f"{name} must be (batch={batch} or 1, {grid[0]}, {grid[1]}, {grid[2]}): the token grid of the "
                    f"{grid[0]} token frames that num_frames and the image size give, got {tuple(value.shape)}"
                )
        if mask.dtype != torch.bool:
            raise TypeError(f"inpaint_mask must be a bool tensor (True where ids are drawn), got {mask.dtype}")
        self.cvivit._check_ids(ids)
        return rearrange(ids, "b t h w -> b (t h w)"), rearrange(mask, "b t h w -> b (t h w)")

    @torch.no_grad()
    def sample_images(self, *, text=None, texts=None, **kwargs) -> Tensor:
        """Images (b, c, h, w): one-frame samples."""
        return self.sample(text=text, texts=texts, num_frames=1, **kwargs)[:, :, 0]


@typechecked
def make_video(
    phenaki: Phenaki,
    texts: Sequence[str],
    num_frames: Sequence[int],
    prime_lengths: Sequence[int],
    *,
    cond_scale: float = 3.0,
    batch_size: int = 1,
    generator: torch.Generator | None = None,
    **sample_kwargs,
) -> tuple[Tensor, list[Tensor]]:
    """Scenes one after another, each primed with the last frames of the video so far.

    `num_frames[i]` new frames for `texts[i]`; scene i > 0 is primed with the last
    `prime_lengths[i - 1]` frames (0: not primed). Returns (entire_video, scenes).
    """
    if len(texts) != len(num_frames):
        raise ValueError(f"got {len(texts)} texts but {len(num_frames)} num_frames")
    if len(prime_lengths) != len(texts) - 1:
        raise ValueError(f"prime_lengths needs one entry per scene after the first: {len(texts) - 1}, got {len(prime_lengths)}")
    for index, frames in enumerate(num_frames):
        _check_int(f"num_frames[{index}]", frames)
    for index, length in enumerate(prime_lengths):
        _check_int(f"prime_lengths[{index}]", length, minimum=0)
    scenes, entire = [], None
    for index, (text, frames) in enumerate(zip(texts, num_frames)):
        prime = None
        if index > 0:
            prime_length = prime_lengths[index - 1]
            if prime_length > entire.shape[2]:
                raise ValueError(f"prime_lengths[{index - 1}]={prime_length} exceeds the {entire.shape[2]} frames so far")
            # 0 means no priming (`[-0:]` would slice the whole video)
            prime = entire[:, :, entire.shape[2] - prime_length :] if prime_length else None
        scene = phenaki.sample(
            texts=[text] * batch_size,
            num_frames=frames,
            prime_frames=prime,
            cond_scale=cond_scale,
            generator=generator,
            **sample_kwargs,
        )
        scenes.append(scene)
        entire = scene if entire is None else torch.cat((entire, scene), dim=2)
    return entire, scenes
