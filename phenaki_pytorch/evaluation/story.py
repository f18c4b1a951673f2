"""Jumps at scene cuts: does the object of a story stay where it was when the prompt changes?

    from phenaki_pytorch.evaluation import scene_cut_jumps
    story = sample_story(phenaki, [("a red ring moving right", 9), ("a red ring moving down", 8)])
    report = scene_cut_jumps(story.video[0], [scene.start for scene in story.scenes])
    report.jump, report.motion, report.ratio        # pixels at the cuts, pixels per frame inside scenes

The object's centroid is the foreground's (pixels farther than ``threshold`` from the background, weighted by
that distance), per frame. ``jump`` is the mean centroid displacement from the last frame of a scene to the first
frame of the next; ``motion`` the mean displacement between consecutive frames inside scenes; ``ratio`` their
quotient: about 1 when a cut moves the object no more than one frame of ordinary motion.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from ..data.synthetic import DEFAULT_BACKGROUND
from ..typecheck import typechecked

__all__ = ["SceneCutReport", "SceneCutSummary", "foreground_centroids", "scene_cut_jumps", "summarize_scene_cuts"]


@dataclass
class SceneCutReport:
    jump: float  # mean centroid displacement across cuts (pixels)
    motion: float  # mean centroid displacement between consecutive frames inside scenes (pixels)
    jumps: list[float]  # per cut
    missing: int  # frames without foreground (excluded)

    @property
    def ratio(self) -> float:
        return self.jump / self.motion if self.motion > 0 else float("inf")


@typechecked
def foreground_centroids(
    video: Tensor, background: Sequence[float] = DEFAULT_BACKGROUND, threshold: float = 0.3
) -> Tensor:
    """(f, 2) x, y centroid of the foreground of each frame of one clip (3, f, h, w); NaN where a frame has none."""
    if video.ndim != 4 or video.shape[0] != 3:
        raise ValueError(f"video must be one RGB clip (3, frames, height, width), got {tuple(video.shape)}")
    video = video.detach().float().cpu().clamp(0.0, 1.0)
    bg = torch.tensor([float(v) for v in background]).view(3, 1, 1, 1)
    distance = (video - bg).abs().amax(dim=0)  # (f, h, w)
    weights = torch.where(distance > threshold, distance, torch.zeros_like(distance))
    _, h, w = weights.shape
    total = weights.sum(dim=(1, 2))
    xs = (weights * torch.arange(w, dtype=torch.float32).view(1, 1, w)).sum(dim=(1, 2)) / total
    ys = (weights * torch.arange(h, dtype=torch.float32).view(1, h, 1)).sum(dim=(1, 2)) / total
    out = torch.stack((xs, ys), dim=-1)
    out[total <= 0] = float("nan")
    return out


@typechecked
def scene_cut_jumps(
    video: Tensor,
    scene_starts: Sequence[int],
    *,
    background: Sequence[float] = DEFAULT_BACKGROUND,
    threshold: float = 0.3,
) -> SceneCutReport:
    """Centroid jump at each cut of one story clip ``(3, f, h, w)`` whose scenes start at ``scene_starts``
    (the first is 0), against the motion inside scenes."""
    frames = video.shape[1] if video.ndim == 4 else 0
    starts = list(scene_starts)
    if not starts or starts[0] != 0 or any(b <= a for a, b in zip(starts, starts[1:])) or starts[-1] >= frames:
        raise ValueError(f"scene_starts must rise from 0 and stay below the {frames} frames, got {starts}")
    centroids = foreground_centroids(video, background, threshold)
    step = (centroids[1:] - centroids[:-1]).norm(dim=-1)  # (f - 1,) displacement from frame i to i + 1
    is_cut = torch.zeros(frames - 1, dtype=torch.bool)
    for start in starts[1:]:
        is_cut[start - 1] = True
    finite = torch.isfinite(step)
    jumps = step[is_cut & finite]
    inside = step[~is_cut & finite]
    return SceneCutReport(
        jump=float(jumps.mean()) if jumps.numel() else float("nan"),
        motion=float(inside.mean()) if inside.numel() else float("nan"),
        jumps=[float(v) for v in step[is_cut]],
        missing=int(torch.isnan(centroids[:, 0]).sum()),
    )


@dataclass
class SceneCutSummary:
    jump: float  # mean of the stories' jumps (pixels), NaN when none could be measured
    motion: float  # mean of the stories' motion per frame inside scenes (pixels)
    stories: int  # reports summarized
    measured: int  # of which with a measurable jump (a glyph on both sides of some cut)

    @property
    def ratio(self) -> float:
        return self.jump / self.motion if self.motion > 0 else float("nan")


@typechecked
def summarize_scene_cuts(reports: Sequence[SceneCutReport]) -> SceneCutSummary:
    """Means over several stories' `scene_cut_jumps` reports. A story whose glyph is missing beside every cut has
    no jump (NaN): it is left out of the mean and counted, so one such story does not hide the others."""
    jumps = [r.jump for r in reports if math.isfinite(r.jump)]
    motions = [r.motion for r in reports if math.isfinite(r.motion)]
    return SceneCutSummary(
        jump=sum(jumps) / len(jumps) if jumps else float("nan"),
        motion=sum(motions) / len(motions) if motions else float("nan"),
        stories=len(reports),
        measured=len(jumps),
    )
