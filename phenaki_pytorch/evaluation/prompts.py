"""Does a sample follow its prompt? Shape, colour and direction judged on captioned glyph clips.

    from phenaki_pytorch.evaluation import judge_prompt_samples, train_shape_probe

    probe = train_shape_probe(splits.train)
    report = judge_prompt_samples(samples, prompts, probe, held_out=splits.train.excluded_captions,
                                  real_videos=real_clips)
    report.accuracy["shape"]["held_out"], report.temporal_consistency, report.probe_frechet

Prompts must read like the synthetic sets' captions ("a red ring moving left"). Shape is the probe's majority
name over the frames, colour the palette colour of the foreground, direction the way its centroid travelled
(:func:`~phenaki_pytorch.evaluation.probe.judge_videos`). Temporal consistency is the fraction of clips in which
the probe names the same shape in every frame. ``probe_frechet`` is a Fréchet distance between real and sampled
clips in the probe's feature space (per-frame features): a stand-in for FVD on this toy set, not FVD.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass, field
from typing import Any

from torch import Tensor

from ..data.synthetic import GLYPH_COLORS, SyntheticCaptionedVideos
from ..typecheck import typechecked
from .fvd import feature_statistics, frechet_distance
from .probe import Palette, ShapeProbe, judge_videos

__all__ = ["PromptReport", "judge_prompt_samples"]

ATTRIBUTES = ("shape", "color", "direction")


@dataclass
class PromptReport:
    """What :func:`judge_prompt_samples` found.

    ``accuracy[attribute][split]`` with attribute in shape / color / direction and split in seen / held_out /
    all (a split without samples is absent); ``consistency[split]`` the same for temporal consistency;
    ``shape_by_frame[i]`` the fraction of clips whose frame ``i`` the probe names as the prompt's shape (where
    in a clip the shape goes wrong: a glyph that morphs scores well on some frames and badly on others);
    ``per_sample`` one dict per clip (prompt, split, wanted and judged attributes, per-frame shapes, consistent).
    """

    accuracy: dict[str, dict[str, float]]
    consistency: dict[str, float]
    probe_frechet: float | None
    counts: dict[str, int]
    per_sample: list[dict[str, Any]] = field(default_factory=list)
    shape_by_frame: list[float] = field(default_factory=list)

    @property
    def temporal_consistency(self) -> float:
        return self.consistency["all"]

    def as_dict(self) -> dict[str, Any]:
        return {
            "accuracy": self.accuracy,
            "temporal_consistency": self.consistency,
            "probe_frechet": self.probe_frechet,
            "counts": self.counts,
            "shape_by_frame": self.shape_by_frame,
        }

    def table(self) -> str:
        """A small text table: rows attribute / consistency, columns seen, held_out, all."""
        splits = [s for s in ("seen", "held_out", "all") if s in self.counts]
        lines = [f"{'':<14}" + "".join(f"{s:>10}" for s in splits)]
        for attribute in ATTRIBUTES:
            lines.append(f"{attribute:<14}" + "".join(f"{self.accuracy[attribute][s]:>10.1%}" for s in splits))
        lines.append(f"{'consistency':<14}" + "".join(f"{self.consistency[s]:>10.1%}" for s in splits))
        lines.append(f"{'clips':<14}" + "".join(f"{self.counts[s]:>10d}" for s in splits))
        if self.shape_by_frame:
            lines.append("shape by frame: " + " ".join(f"{a:.0%}" for a in self.shape_by_frame))
        if self.probe_frechet is not None:
            lines.append(f"probe-space Fréchet distance (not FVD): {self.probe_frechet:.3f}")
        return "\n".join(lines)


def _mean(values: list[bool]) -> float:
    return sum(values) / len(values) if values else float("nan")


@typechecked
def judge_prompt_samples(
    videos: Tensor,
    prompts: Sequence[str],
    probe: ShapeProbe,
    *,
    held_out: Collection[str] = (),
    palette: Palette = GLYPH_COLORS,
    real_videos: Tensor | None = None,
    threshold: float = 0.3,
) -> PromptReport:
    """Judge clips ``videos (b, 3, f, h, w)`` in [0, 1] against ``prompts`` (one per clip).

    ``held_out``: the captions never seen in training (their clips count under "held_out", the rest under
    "seen"). ``real_videos (m, 3, f', h, w)``: real clips for the probe-space Fréchet distance (None: skipped).
    """
    if videos.ndim != 5 or videos.shape[1] != 3:
        raise ValueError(f"videos must be (batch, 3, frames, height, width), got {tuple(videos.shape)}")
    if len(prompts) != videos.shape[0]:
        raise ValueError(f"got {len(prompts)} prompts for {videos.shape[0]} videos; give one prompt per clip")
    held_out = {h.strip() for h in held_out}
    verdicts = judge_videos(videos, probe, palette, frame_mask=None, threshold=threshold)
    per_sample = []
    for prompt, verdict in zip(prompts, verdicts):
        color, shape, direction = SyntheticCaptionedVideos.parse_caption(prompt)
        wanted = {"color": color, "shape": shape, "direction": direction}
        per_sample.append(
            {
                "prompt": prompt,
                "split": "held_out" if prompt.strip() in held_out else "seen",
                **{f"{a}_ok": verdict[a] == wanted[a] for a in ATTRIBUTES},
                **{f"judged_{a}": verdict[a] for a in ATTRIBUTES},
                "frame_shapes": list(verdict["shapes"]),
                "consistent": verdict["consistent"],
            }
        )
    splits = {"all": per_sample}
    for name in ("seen", "held_out"):
        rows = [row for row in per_sample if row["split"] == name]
        if rows:
            splits[name] = rows
    accuracy = {a: {s: _mean([r[f"{a}_ok"] for r in rows]) for s, rows in splits.items()} for a in ATTRIBUTES}
    consistency = {s: _mean([r["consistent"] for r in rows]) for s, rows in splits.items()}
    wanted_shapes = [SyntheticCaptionedVideos.parse_caption(row["prompt"])[1] for row in per_sample]
    shape_by_frame = [
        _mean([row["frame_shapes"][i] == shape for row, shape in zip(per_sample, wanted_shapes)])
        for i in range(videos.shape[2])
    ]

    frechet = None
    if real_videos is not None:
        real = probe.video_features(real_videos.float())
        fake = probe.video_features(videos.float())
        if min(real.shape[0], fake.shape[0]) >= 2:
            frechet = frechet_distance(*feature_statistics(real), *feature_statistics(fake))
    return PromptReport(
        accuracy=accuracy,
        consistency=consistency,
        probe_frechet=frechet,
        counts={s: len(rows) for s, rows in splits.items()},
        shape_by_frame=shape_by_frame,
        per_sample=per_sample,
    )
