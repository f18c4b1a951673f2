"""Long videos from a list of scenes, with a sliding window over time.

A scene is (prompt, duration); durations are frames (int) or seconds (float, with
`fps`). Every window after the first is primed with the last `prime_frames` frames
of the video so far, so scenes flow into each other and the total length is not
bounded by MaskGit's `max_seq_len`: only one window at a time must fit.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor
from tqdm.auto import tqdm

from .phenaki import Phenaki
from .typecheck import typechecked


@dataclass(frozen=True)
class Scene:
    prompt: str
    num_frames: int
    start: int = 0  # first frame of the scene in the whole video

    @property
    def end(self) -> int:
        return self.start + self.num_frames


@dataclass
class Story:
    video: Tensor  # (b, c, total_frames, h, w) in [0, 1]
    scenes: list[Scene]

    def scene_video(self, index: int) -> Tensor:
        scene = self.scenes[index]
        return self.video[:, :, scene.start : scene.end]


def _frames(duration: int | float, fps: float | None, index: int) -> int:
    if isinstance(duration, bool) or not isinstance(duration, (int, float)):
        raise TypeError(f"scene {index}: duration must be frames (int) or seconds (float), got {duration!r}")
    if isinstance(duration, float):
        if fps is None:
            raise ValueError(f"scene {index}: a duration in seconds ({duration}) needs fps=")
        duration = round(duration * fps)
    if duration < 1:
        raise ValueError(f"scene {index}: duration must be at least one frame, got {duration}")
    return int(duration)


@typechecked
def sample_story(
    phenaki: Phenaki,
    scenes: Sequence[tuple[str, int | float]],
    *,
    fps: float | None = None,
    prime_frames: int | None = None,
    window_frames: int | None = None,
    cond_scale: float = 3.0,
    batch_size: int = 1,
    generator: torch.Generator | None = None,
    show_progress: bool = True,
    **sample_kwargs,
) -> Story:
    """One continuous video for `scenes = [(prompt, duration), ...]`.

    prime_frames   K, frames of context carried into each new window (1 + j * temporal_patch_size;
                   default: the largest such K that leaves at least half of a window for new frames)
    window_frames  frames per window, primed ones included (1 + k * temporal_patch_size; default:
                   the most that fit in MaskGit's max_seq_len)
    """
    if not scenes:
        raise ValueError("scenes must hold at least one (prompt, duration) pair")
    cvivit = phenaki.cvivit
    tp = cvivit.temporal_patch_size
    tokens_per_frame = cvivit.tokens_per_frame()

    max_window = cvivit.num_video_frames(max(phenaki.maskgit.max_seq_len // tokens_per_frame, 1))
    window = max_window if window_frames is None else window_frames
    if not cvivit.is_valid_num_frames(window) or window > max_window:
        raise ValueError(
            f"window_frames must be 1 + k * {tp} and at most {max_window} (MaskGit max_seq_len="
            f"{phenaki.maskgit.max_seq_len}), got {window}"
        )
    if prime_frames is None:
        prime_frames = 1 + max(((window - 1) // 2) // tp, 0) * tp if window > 1 + tp else 1
    if not cvivit.is_valid_num_frames(prime_frames) or prime_frames + tp > window:
        raise ValueError(
            f"prime_frames must be 1 + j * {tp} and leave room for at least {tp} new frames in a "
            f"{window}-frame window, got {prime_frames}"
        )
    new_per_window = ((window - prime_frames) // tp) * tp

    plan = []
    start = 0
    for index, (prompt, duration) in enumerate(scenes):
        if not isinstance(prompt, str) or not prompt.strip():
            raise ValueError(f"scene {index}: prompt must be a non-empty string, got {prompt!r}")
        frames = _frames(duration, fps, index)
        plan.append(Scene(prompt, frames, start))
        start += frames

    video: Tensor | None = None
    total = start
    progress = tqdm(total=total, desc="story", unit="frame", disable=not show_progress)
    for scene in plan:
        remaining = scene.num_frames
        while remaining > 0:
            texts = [scene.prompt] * batch_size
            if video is None:  # the very first window has no context
                first = min(window, 1 + math.ceil((remaining - 1) / tp) * tp)
                chunk = phenaki.sample(
                    texts=texts, num_frames=first, cond_scale=cond_scale, generator=generator, **sample_kwargs
                )
            else:
                context = video[:, :, -prime_frames:] if video.shape[2] >= prime_frames else None
                if context is None:  # shorter than K so far: prime on the largest valid prefix length
                    usable = 1 + ((video.shape[2] - 1) // tp) * tp
                    context = video[:, :, -usable:]
                count = min(new_per_window, math.ceil(remaining / tp) * tp)
                count = min(count, ((window - context.shape[2]) // tp) * tp)
                chunk = phenaki.sample(
                    texts=texts,
                    num_frames=count,
                    prime_frames=context,
                    cond_scale=cond_scale,
                    generator=generator,
                    **sample_kwargs,
                )
            chunk = chunk[:, :, :remaining]
            video = chunk if video is None else torch.cat((video, chunk), dim=2)
            remaining -= chunk.shape[2]
            progress.update(chunk.shape[2])
    progress.close()
    return Story(video=video, scenes=plan)
