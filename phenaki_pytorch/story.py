"""Long videos from a list of scenes, with a sliding window over time.

A scene is (prompt, duration); durations are frames (int) or seconds (float, with
`fps`). Every window after the first is primed with the last `prime_frames` frames
of the video so far, so scenes flow into each other and the total length is not
bounded by MaskGit's `max_seq_len`: only one window at a time must fit.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor
from tqdm.auto import tqdm

from .phenaki import Phenaki, _check_finite
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
    """The scenes of a story and, unless the frames went to a `frame_sink`, the whole video."""

    video: Tensor | None  # (b, c, total_frames, h, w) in [0, 1]; None when streamed to frame_sink
    scenes: list[Scene]

    @property
    def num_frames(self) -> int:
        return self.scenes[-1].end if self.scenes else 0

    def scene_video(self, index: int) -> Tensor:
        if self.video is None:
            raise ValueError("this story was streamed to frame_sink: its frames were not kept (Story.video is None)")
        scene = self.scenes[index]
        return self.video[:, :, scene.start : scene.end]


def _frames(duration: int | float, fps: float | None, index: int) -> int:
    if isinstance(duration, bool) or not isinstance(duration, (int, float)):
        raise TypeError(f"scene {index}: duration must be frames (int) or seconds (float), got {duration!r}")
    if isinstance(duration, float):
        if not math.isfinite(duration):
            raise ValueError(f"scene {index}: duration must be a finite number of seconds, got {duration}")
        if fps is None:
            raise ValueError(f"scene {index}: a duration in seconds ({duration}) needs fps=")
        duration = round(duration * fps)
    if duration < 1:
        raise ValueError(f"scene {index}: duration must be at least one frame, got {duration}")
    return int(duration)


def _check_optional_int(name: str, value, minimum: int) -> None:
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int or None, got {type(value).__name__} {value!r}")
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")


@typechecked
def sample_story(
    phenaki: Phenaki,
    scenes: Sequence[tuple[str, int | float]],
    *,
    fps: float | None = None,
    prime_frames: int | None = None,
    window_frames: int | None = None,
    cond_scale: float = 3.0,
    continuation_cond_scale: float | None = None,
    batch_size: int = 1,
    generator: torch.Generator | None = None,
    show_progress: bool = True,
    frame_sink: Callable[[Tensor], None] | None = None,
    max_frames: int | None = None,
    prime_with: str = "tokens",
    **sample_kwargs,
) -> Story:
    """One continuous video for `scenes = [(prompt, duration), ...]`.

    prime_frames   K, frames of context carried into each new window (1 + j * temporal_patch_size, or 0 for
                   independent windows; default: the largest such K that leaves at least half of a window
                   for new frames)
    window_frames  frames per window, primed ones included (1 + k * temporal_patch_size; default: the most
                   that fit in MaskGit's max_seq_len)
    frame_sink     called with each new chunk of frames (b, c, f, h, w) in [0, 1], in order, as it is made
                   (e.g. `VideoWriter.write`); the frames are then not kept, `Story.video` is None, and memory
                   stays flat however long the story. Without it the video is filled into one preallocated
                   tensor and returned as `Story.video`.
    cond_scale     classifier-free guidance of the first window, which starts from nothing
    continuation_cond_scale
                   guidance of every window that continues from context (None: `cond_scale`). Guidance pushes a
                   window toward what its caption looks like in single clips, which on the glyph benchmark
                   includes where the object is at that time index, so strong guidance makes the object jump at
                   a cut; the null-text branch, which sees the context too, pulls it back. Half of `cond_scale`
                   shrank the jump on every glyph model tried, but on one of four it also lost the new scene's
                   colour and, at some cuts, the object, so it is offered, not the default.
    max_frames     refuse (ValueError) a story planned longer than this
    prime_with     "frames": re-encode the last `prime_frames` decoded frames as the next window's context;
                   "tokens" (the default; smaller jumps at cuts on the glyph benchmark): carry the token ids
                   MaskGit already drew for the last K - 1 frames and re-encode only the one frame before them
                   (the causal tokenizer's first token frame stands for one frame alone, so it cannot be copied
                   from the middle of a window). No decode/re-encode drift enters the context; where the
                   previous chunk was cut short (a scene ending off the temporal patch grid) that window falls
                   back to frames.
    """
    if prime_with not in ("frames", "tokens"):
        raise ValueError(f'prime_with must be "frames" or "tokens", got {prime_with!r}')
    if not scenes:
        raise ValueError("scenes must hold at least one (prompt, duration) pair")
    _check_optional_int("prime_frames", prime_frames, 0)
    _check_optional_int("window_frames", window_frames, 1)
    _check_optional_int("max_frames", max_frames, 1)
    _check_optional_int("batch_size", batch_size, 1)
    if fps is not None and (isinstance(fps, bool) or not math.isfinite(fps) or fps <= 0):
        raise ValueError(f"fps must be a positive finite number, got {fps}")
    if continuation_cond_scale is None:
        continuation_cond_scale = cond_scale
    _check_finite("continuation_cond_scale", continuation_cond_scale)  # before the first window, not at the second
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
    if prime_frames and (not cvivit.is_valid_num_frames(prime_frames) or prime_frames + tp > window):
        raise ValueError(
            f"prime_frames must be 0 (no context) or 1 + j * {tp} and leave room for at least {tp} new frames "
            f"in a {window}-frame window, got {prime_frames}"
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
        if max_frames is not None and start > max_frames:
            raise ValueError(f"the story reaches {start} frames at scene {index}, more than max_frames={max_frames}")

    total = start
    video: Tensor | None = None  # the whole story, only without a frame_sink
    tail: Tensor | None = None  # the last frames made: the context of the next window
    tail_ids: Tensor | None = None  # prime_with="tokens": ids (b, t, h, w) of the last window, if they end the video
    made = 0
    progress = tqdm(total=total, desc="story", unit="frame", disable=not show_progress)
    for scene in plan:
        remaining = scene.num_frames
        while remaining > 0:
            texts = [scene.prompt] * batch_size
            if tail is None or prime_frames == 0:  # the first window, or no context: a fresh window
                first = min(window, 1 + math.ceil((remaining - 1) / tp) * tp)
                keep_ids = prime_with == "tokens"
                out = phenaki.sample(
                    texts=texts, num_frames=first, cond_scale=cond_scale, generator=generator,
                    return_codebook_ids=keep_ids, **sample_kwargs,
                )
                ids, chunk = (out, cvivit.decode_from_codebook_indices(out).float().clamp(0.0, 1.0)) if keep_ids \
                    else (None, out)
            else:
                usable = prime_frames if made >= prime_frames else 1 + ((made - 1) // tp) * tp
                context = tail[:, :, tail.shape[2] - usable :]
                count = min(new_per_window, math.ceil(remaining / tp) * tp)
                count = min(count, ((window - usable) // tp) * tp)
                carried = (usable - 1) // tp  # token frames that can be copied from the last window
                if prime_with == "tokens" and tail_ids is not None and tail_ids.shape[1] > carried:
                    first_frame = cvivit.tokenize(context[:, :, :1])  # (b, 1, h, w): a first token frame
                    prime_ids = torch.cat((first_frame, tail_ids[:, tail_ids.shape[1] - carried :]), dim=1)
                    ids = phenaki.sample(
                        texts=texts,
                        num_frames=count,
                        prime_codebook_ids=prime_ids,
                        cond_scale=continuation_cond_scale,
                        generator=generator,
                        return_codebook_ids=True,
                        **sample_kwargs,
                    )
                    chunk = cvivit.decode_from_codebook_indices(ids).float().clamp(0.0, 1.0)[:, :, usable:]
                else:
                    ids = None
                    chunk = phenaki.sample(
                        texts=texts,
                        num_frames=count,
                        prime_frames=context,
                        cond_scale=continuation_cond_scale,
                        generator=generator,
                        **sample_kwargs,
                    )
            cut_short = chunk.shape[2] > remaining
            chunk = chunk[:, :, :remaining]
            n = chunk.shape[2]
            if frame_sink is not None:
                frame_sink(chunk)
            else:
                if video is None:  # one allocation for the whole story: no copying as it grows
                    video = chunk.new_empty((chunk.shape[0], chunk.shape[1], total, *chunk.shape[3:]))
                video[:, :, made : made + n] = chunk
            if prime_frames:
                # a copy, not a view: the tail must not keep a whole chunk (or the whole video) alive
                tail = chunk[:, :, -prime_frames:] if tail is None else torch.cat((tail, chunk), dim=2)
                tail = tail[:, :, -prime_frames:].clone()
            else:
                tail = chunk[:, :, :0]
            # the window's ids describe the video's end only when none of its frames were cut off
            tail_ids = ids if prime_with == "tokens" and ids is not None and not cut_short else None
            made += n
            remaining -= n
            progress.update(n)
    progress.close()
    return Story(video=video, scenes=plan)
