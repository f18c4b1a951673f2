"""Judges for the glyph benchmark: a shape classifier probe, plus colour and motion-direction checks.

    from phenaki_pytorch.data import glyph_benchmark_splits
    from phenaki_pytorch.evaluation.probe import judge_videos, probe_accuracy, train_shape_probe

    splits = glyph_benchmark_splits(num_train=512, num_eval=128)
    probe = train_shape_probe(splits.train, seed=0)                # 200 steps on 512 clips' frames
    probe_accuracy(probe, videos, shape_labels)                    # fraction of frames named right
    judge_videos(videos, probe, palette=splits.train.palette)      # per clip: shape per frame, colour, direction

The probe names the shape in each frame from its structure only: its input is each pixel's distance from the
background colour (the largest difference over R, G, B), so the object's colour cannot leak into the decision
(the glyph colours all have one channel at 1, so every glyph reaches the same distance). It is trained on frames
of real clips with mild random blur, noise and contrast loss, so that slightly soft reconstructions are judged by
their shape rather than their crispness. ``probe.features`` gives its penultimate features for a Fréchet distance
in probe space (see :mod:`phenaki_pytorch.evaluation.fvd`'s ``feature_statistics`` / ``frechet_distance``).

Colour and direction need no training: :func:`dominant_color` is the palette colour nearest to the mean of the
clip's strongest foreground pixels, :func:`motion_direction` the way the foreground centroid moved between the
first and the last frame.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..data.synthetic import COLORS, DEFAULT_BACKGROUND, GLYPH_COLORS, GLYPH_SHAPES, SyntheticCaptionedVideos
from ..serialization import ConfigMixin
from ..typecheck import typechecked

__all__ = [
    "ShapeProbe",
    "consistent_clips",
    "dominant_color",
    "gaussian_blur",
    "judge_videos",
    "motion_direction",
    "probe_accuracy",
    "temporal_consistency",
    "train_shape_probe",
]

Palette = Mapping[str, Sequence[float]] | Sequence[str]


# ---------------------------------------------------------------------------------------------- the probe


class ShapeProbe(ConfigMixin, nn.Module):
    """A small CNN naming the shape in single frames ``(b, 3, h, w)`` in [0, 1].

    Four 3x3 convolutions (three of stride 2, each with batch norm and ReLU) and a global max pool: ``4 * width``
    features, then a linear layer to one logit per name in ``shapes``. Any frame size works (the pool removes
    position), though it is meant for the glyph benchmark's 32 x 32. The prediction methods always run in eval
    mode (batch norm uses its running statistics), whatever mode the module is in. ``save_pretrained(dir)`` / ``ShapeProbe.from_pretrained(dir)`` store
    the weights as safetensors beside a ``config.json`` holding ``shapes``, ``background`` and ``width``.

    Args:
        shapes: class names, in logit order.
        background: (r, g, b) in [0, 1] of the clips' plain background (the probe sees distances from it).
        width: channels of the first convolution (features are ``4 * width``).
    """

    @typechecked
    def __init__(
        self,
        shapes: Sequence[str] = GLYPH_SHAPES,
        *,
        background: Sequence[float] = DEFAULT_BACKGROUND,
        width: int = 16,
    ):
        super().__init__()
        if isinstance(shapes, str):
            raise TypeError(f"shapes must be a sequence of names, got the string {shapes!r}")
        if len(shapes) < 2 or len(set(shapes)) != len(shapes):
            raise ValueError(f"shapes must hold at least two distinct names, got {list(shapes)}")
        if len(background) != 3 or not all(0.0 <= float(v) <= 1.0 for v in background):
            raise ValueError(f"background must be three numbers in [0, 1], got {tuple(background)!r}")
        if width < 1:
            raise ValueError(f"width must be a positive integer, got {width}")
        self.shapes = tuple(str(s) for s in shapes)
        self.background = tuple(float(v) for v in background)
        self.register_buffer("_background", torch.tensor(self.background).view(1, 3, 1, 1), persistent=False)
        channels = (width, 2 * width, 4 * width, 4 * width)
        layers: list[nn.Module] = []
        for i, (c_in, c_out) in enumerate(zip((1, *channels[:-1]), channels)):
            stride = 1 if i == 0 else 2  # 32 -> 32 -> 16 -> 8 -> 4
            layers += [nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1), nn.BatchNorm2d(c_out), nn.ReLU()]
        self.body = nn.Sequential(*layers)
        self.head = nn.Linear(4 * width, len(self.shapes))

    @property
    def feature_dim(self) -> int:
        return self.head.in_features

    def shape_id(self, name: str) -> int:
        """Logit index of a shape name."""
        try:
            return self.shapes.index(name)
        except ValueError:
            raise ValueError(f"shape {name!r} is not one the probe knows: {list(self.shapes)}") from None

    def distance_map(self, frames: Tensor) -> Tensor:
        """``(b, 1, h, w)``: each pixel's largest per-channel distance from the background: the probe's input."""
        frames = _check_frames(frames)
        return (frames.float().clamp(0.0, 1.0) - self._background).abs().amax(dim=1, keepdim=True)

    def _embed(self, distances: Tensor) -> Tensor:
        return self.body(distances).amax(dim=(2, 3))  # (b, 4 width): is each feature present anywhere

    def features(self, frames: Tensor) -> Tensor:
        """Penultimate features ``(b, feature_dim)`` of frames ``(b, 3, h, w)``."""
        return self._embed(self.distance_map(frames))

    def forward(self, frames: Tensor) -> Tensor:
        """Logits ``(b, len(shapes))`` of frames ``(b, 3, h, w)``."""
        return self.head(self.features(frames))

    @torch.no_grad()
    def predict(self, frames: Tensor, batch_size: int = 1024) -> Tensor:
        """Shape ids ``(b,)`` (long, indices into ``shapes``) of frames ``(b, 3, h, w)``."""
        frames = _check_frames(frames)
        with _eval_mode(self):
            out = [self(chunk.to(self._background.device)).argmax(-1) for chunk in frames.split(batch_size)]
        return torch.cat(out).cpu()

    @torch.no_grad()
    def predict_video(self, videos: Tensor, batch_size: int = 1024) -> Tensor:
        """Shape ids ``(b, f)`` per frame of videos ``(b, 3, f, h, w)``."""
        videos = _check_videos(videos)
        b, _, f, _, _ = videos.shape
        frames = videos.transpose(1, 2).flatten(0, 1)  # (b f, 3, h, w)
        return self.predict(frames, batch_size).view(b, f)

    @torch.no_grad()
    def video_features(self, videos: Tensor, frame_mask: Tensor | None = None, batch_size: int = 1024) -> Tensor:
        """Features ``(n, feature_dim)`` (CPU) of every valid frame of videos ``(b, 3, f, h, w)``: one row per
        frame, for a frame-level Fréchet distance in probe space."""
        videos = _check_videos(videos)
        mask = _check_mask(frame_mask, videos)
        frames = videos.transpose(1, 2)[mask.to(videos.device)]  # (n, 3, h, w)
        with _eval_mode(self):
            out = [self.features(chunk.to(self._background.device)).cpu() for chunk in frames.split(batch_size)]
        return torch.cat(out) if out else torch.zeros(0, self.feature_dim)

    def names(self, ids: Tensor) -> list:
        """Shape names of an id tensor, nested like it (``(b,)`` -> list, ``(b, f)`` -> list of lists)."""
        return _nested_names(ids.tolist(), self.shapes)


@contextmanager
def _eval_mode(module: nn.Module) -> Iterator[None]:
    training = module.training
    module.eval()
    try:
        yield
    finally:
        module.train(training)


def _nested_names(ids: Any, names: Sequence[str]) -> Any:
    if isinstance(ids, list):
        return [_nested_names(i, names) for i in ids]
    return names[ids]


# ---------------------------------------------------------------------------------------------- training


def _shape_labels(dataset: Any, index: int, item: Mapping[str, Any]) -> str:
    if isinstance(item.get("shape"), str):
        return item["shape"]
    if hasattr(dataset, "attributes"):
        return dataset.attributes(index)[1]
    if isinstance(item.get("text"), str):
        return SyntheticCaptionedVideos.parse_caption(item["text"])[1]
    raise ValueError(
        f"dataset item {index} has no shape label: expected a 'shape' key, a dataset.attributes(index) method or a "
        f"'text' caption like 'a red ring moving up' (item keys: {sorted(item)})"
    )


def _gaussian_kernels(sigmas: Tensor, size: int = 5) -> Tensor:
    """(b, size) normalised 1-D Gaussian kernels; sigma 0 gives the identity."""
    x = torch.arange(size, dtype=torch.float32) - size // 2
    weights = torch.exp(-(x.view(1, -1) ** 2) / (2 * sigmas.clamp(min=1e-3).view(-1, 1) ** 2))
    return weights / weights.sum(dim=1, keepdim=True)


@typechecked
def gaussian_blur(frames: Tensor, sigma: float | Tensor) -> Tensor:
    """Gaussian blur of frames ``(b, c, h, w)``: one ``sigma`` in pixels, or one per frame ``(b,)`` (5 x 5
    support, borders replicated; sigma 0 leaves a frame as it is). The probe's training augmentation, and a
    stand-in for soft reconstructions when checking a probe's robustness."""
    if frames.ndim != 4:
        raise ValueError(f"frames must be (batch, channels, height, width), got shape {tuple(frames.shape)}")
    b, c, h, w = frames.shape
    sigmas = torch.full((b,), float(sigma)) if not isinstance(sigma, Tensor) else sigma.flatten()
    if sigmas.shape != (b,) or bool((sigmas < 0).any()):
        raise ValueError(f"sigma must be a number >= 0 or a ({b},) tensor of them, got {sigma!r}")
    kernels = _gaussian_kernels(sigmas.float().cpu()).to(frames.device, frames.dtype)  # (b, 5)
    x = frames.reshape(1, b * c, h, w)
    k = kernels.repeat_interleave(c, dim=0)  # (b c, 5)
    x = F.conv2d(F.pad(x, (2, 2, 0, 0), mode="replicate"), k.view(b * c, 1, 1, 5), groups=b * c)
    x = F.conv2d(F.pad(x, (0, 0, 2, 2), mode="replicate"), k.view(b * c, 1, 5, 1), groups=b * c)
    return x.view(b, c, h, w)


def _augment(distances: Tensor, gen: torch.Generator) -> Tensor:
    """Mild degradations of distance maps (b, 1, h, w): blur (sigma up to 1 px, half the time), contrast loss
    (x0.6..1) and additive noise (std up to 0.04; the map is a distance, so it takes the absolute value)."""
    b = distances.shape[0]
    rand = torch.rand(b, 4, generator=gen)
    sigmas = torch.where(rand[:, 0] < 0.5, rand[:, 1], torch.zeros(b))
    out = gaussian_blur(distances, sigmas)
    out = out * (0.6 + 0.4 * rand[:, 2]).to(out).view(b, 1, 1, 1)
    noise = torch.randn(distances.shape, generator=gen).to(out) * (0.04 * rand[:, 3]).to(out).view(b, 1, 1, 1)
    return (out + noise).abs()


@typechecked
def train_shape_probe(
    dataset: Any,
    *,
    steps: int = 200,
    batch_size: int = 64,
    lr: float = 3e-3,
    seed: int = 0,
    augment: bool = True,
    max_clips: int | None = 512,
    width: int = 16,
    shapes: Sequence[str] | None = None,
    background: Sequence[float] | None = None,
    device: str | torch.device = "cpu",
    log: Callable[[str], None] | None = None,
) -> ShapeProbe:
    """Train a :class:`ShapeProbe` on the frames of real clips and return it in eval mode.

    Args:
        dataset: items are dicts with ``"video"`` (3, f, h, w) in [0, 1] and optionally ``"frame_mask"``; the shape
            label comes from an item's ``"shape"``, else ``dataset.attributes(i)[1]``, else its caption.
        steps, batch_size, lr: AdamW steps over random minibatches of frames (cosine-decayed learning rate).
        seed: weight init, minibatches and augmentation; on the CPU the result is bit-identical per seed.
        augment: mild random blur / contrast / noise (see the module docstring); off, the probe sees crisp frames.
        max_clips: use the first ``max_clips`` clips (all if None); every valid frame of each becomes a sample.
            Synthetic sets cycle through their pairings, so the first clips already cover every one.
        width: probe width (features are ``4 * width``).
        shapes: class names (default ``dataset.shapes``, else :data:`GLYPH_SHAPES`).
        background: (default ``dataset.background``, else the synthetic default).
        device: where to train; the returned probe stays there.
        log: called with a line of progress every 100 steps.
    """
    for name, value in (("steps", steps), ("batch_size", batch_size), ("width", width)):
        if value < 1:
            raise ValueError(f"{name} must be a positive integer, got {value}")
    if max_clips is not None and max_clips < 1:
        raise ValueError(f"max_clips must be a positive integer or None, got {max_clips}")
    if not lr > 0:
        raise ValueError(f"lr must be positive, got {lr}")
    if len(dataset) == 0:
        raise ValueError("dataset is empty: nothing to train the probe on")
    shapes = tuple(shapes if shapes is not None else getattr(dataset, "shapes", GLYPH_SHAPES))
    background = tuple(background if background is not None else getattr(dataset, "background", DEFAULT_BACKGROUND))
    device = torch.device(device)

    with torch.random.fork_rng(devices=[]):  # seeded init without touching the caller's global generator
        torch.manual_seed(seed)
        probe = ShapeProbe(shapes, background=background, width=width)
    probe.to(device)

    # every valid frame of the clips, as the probe's input (distance maps): small and computed once
    maps, labels = [], []
    num_clips = len(dataset) if max_clips is None else min(len(dataset), max_clips)
    for index in range(num_clips):
        item = dataset[index]
        video = _check_videos(item["video"].unsqueeze(0), "dataset item video")[0]
        mask = item.get("frame_mask")
        frames = video.transpose(0, 1) if mask is None else video.transpose(0, 1)[mask.bool()]
        label = probe.shape_id(_shape_labels(dataset, index, item))
        maps.append(probe.distance_map(frames.to(device)))
        labels.extend([label] * frames.shape[0])
    inputs = torch.cat(maps)  # (n, 1, h, w)
    targets = torch.tensor(labels, device=device)

    gen = torch.Generator().manual_seed(seed)
    optimizer = torch.optim.AdamW(probe.parameters(), lr=lr, weight_decay=1e-4)
    probe.train()
    for step in range(steps):
        for group in optimizer.param_groups:
            group["lr"] = lr * 0.5 * (1 + math.cos(math.pi * step / steps))
        picks = torch.randint(0, inputs.shape[0], (batch_size,), generator=gen).to(device)
        batch = inputs[picks]
        if augment:
            batch = _augment(batch, gen)
        loss = F.cross_entropy(probe.head(probe._embed(batch)), targets[picks])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if log is not None and ((step + 1) % 100 == 0 or step + 1 == steps):
            log(f"shape probe step {step + 1}/{steps}: loss {loss.item():.4f}")
    return probe.eval()


# ---------------------------------------------------------------------------------------------- scoring


def _label_ids(probe: ShapeProbe, shape_labels: Sequence[str] | Tensor, count: int) -> Tensor:
    if isinstance(shape_labels, Tensor):
        ids = shape_labels.long().cpu().flatten()
        if ids.numel() and not (0 <= int(ids.min()) and int(ids.max()) < len(probe.shapes)):
            raise ValueError(f"shape_labels ids must be in [0, {len(probe.shapes)}), got {ids.unique().tolist()}")
    else:
        if isinstance(shape_labels, str):
            raise TypeError(
                f"shape_labels must be a sequence of names or an id tensor, got the string {shape_labels!r}"
            )
        ids = torch.tensor([probe.shape_id(name) for name in shape_labels], dtype=torch.long)
    if ids.shape[0] != count:
        raise ValueError(f"shape_labels must give one shape per clip ({count}), got {ids.shape[0]}")
    return ids


@typechecked
def probe_accuracy(
    probe: ShapeProbe,
    videos: Tensor,
    shape_labels: Sequence[str] | Tensor,
    frame_mask: Tensor | None = None,
) -> float:
    """Fraction of valid frames of ``videos (b, 3, f, h, w)`` whose shape the probe names as ``shape_labels``
    (one name or id per clip)."""
    videos = _check_videos(videos)
    mask = _check_mask(frame_mask, videos)
    ids = _label_ids(probe, shape_labels, videos.shape[0])
    predictions = probe.predict_video(videos)
    correct = (predictions == ids.view(-1, 1)) & mask
    total = int(mask.sum())
    if total == 0:
        raise ValueError("frame_mask marks no frame as valid: nothing to score")
    return int(correct.sum()) / total


@typechecked
def consistent_clips(predictions: Tensor, frame_mask: Tensor | None = None) -> Tensor:
    """``(b,)`` bool: every valid frame of the clip got the same predicted shape (``predictions (b, f)``, e.g.
    from :meth:`ShapeProbe.predict_video`). A clip with no valid frame counts as inconsistent."""
    if predictions.ndim != 2:
        raise ValueError(f"predictions must be (batch, frames) shape ids, got shape {tuple(predictions.shape)}")
    if frame_mask is None:
        frame_mask = torch.ones_like(predictions, dtype=torch.bool)
    elif frame_mask.shape != predictions.shape:
        raise ValueError(
            f"frame_mask must be {tuple(predictions.shape)} like predictions, got {tuple(frame_mask.shape)}"
        )
    frame_mask = frame_mask.bool().to(predictions.device)
    first = predictions.gather(1, frame_mask.long().argmax(dim=1, keepdim=True))  # first valid frame's prediction
    return ((predictions == first) | ~frame_mask).all(dim=1) & frame_mask.any(dim=1)


@typechecked
def temporal_consistency(predictions: Tensor, frame_mask: Tensor | None = None) -> float:
    """Fraction of clips whose valid frames all get the same predicted shape (see :func:`consistent_clips`)."""
    return consistent_clips(predictions, frame_mask).float().mean().item()


# ---------------------------------------------------------------------------------------------- colour, motion


def _as_clip(video: Tensor) -> Tensor:
    if not isinstance(video, Tensor) or video.ndim != 4 or video.shape[0] != 3:
        raise ValueError(f"video must be one RGB clip (3, frames, height, width), got {getattr(video, 'shape', video)}")
    return video.detach().float().cpu()


def _clip_mask(frame_mask: Tensor | None, frames: int) -> Tensor:
    if frame_mask is None:
        return torch.ones(frames, dtype=torch.bool)
    if tuple(frame_mask.shape) != (frames,):
        raise ValueError(f"frame_mask must be ({frames},) for this clip, got {tuple(frame_mask.shape)}")
    return frame_mask.bool().cpu()


def _distances(video: Tensor, background: Sequence[float]) -> Tensor:
    """(f, h, w) largest per-channel distance of each pixel from the background."""
    bg = torch.tensor(tuple(float(v) for v in background)).view(3, 1, 1, 1)
    return (video.clamp(0.0, 1.0) - bg).abs().amax(dim=0)


def _resolve_palette(palette: Palette) -> dict[str, tuple[float, ...]]:
    if isinstance(palette, str):
        raise TypeError(f"palette must be colour names or a name -> (r, g, b) mapping, got the string {palette!r}")
    if isinstance(palette, Mapping):
        resolved = {str(name): tuple(float(v) for v in rgb) for name, rgb in palette.items()}
    else:
        unknown = [name for name in palette if name not in COLORS]
        if unknown:
            raise ValueError(f"palette has unknown colour names {unknown}; expected names from {list(COLORS)}")
        resolved = {name: COLORS[name] for name in palette}
    if not resolved or any(len(rgb) != 3 for rgb in resolved.values()):
        raise ValueError(f"palette must map at least one name to (r, g, b), got {palette!r}")
    return resolved


@typechecked
def dominant_color(
    video: Tensor,
    palette: Palette = GLYPH_COLORS,
    *,
    background: Sequence[float] = DEFAULT_BACKGROUND,
    threshold: float = 0.3,
    frame_mask: Tensor | None = None,
    min_pixels: int = 4,
) -> str | None:
    """Palette colour nearest (in RGB) to the object in one clip ``(3, f, h, w)``; None without foreground.

    Foreground pixels are those farther than ``threshold`` from the background (largest channel difference).
    Only the strongest of them (at least 3/4 of the 90th-percentile distance) are averaged, so anti-aliased or
    blurred edges, which mix the colour with the background, do not pull the mean towards it.
    """
    video = _as_clip(video)
    valid = _clip_mask(frame_mask, video.shape[1])
    video = video[:, valid]
    distance = _distances(video, background)
    foreground = distance > threshold
    if int(foreground.sum()) < min_pixels:
        return None
    strong = foreground & (distance >= 0.75 * torch.quantile(distance[foreground], 0.9))
    mean = video[:, strong].mean(dim=1)  # (3,)
    colors = _resolve_palette(palette)
    names = list(colors)
    table = torch.tensor([colors[name] for name in names])
    return names[int((table - mean).pow(2).sum(dim=1).argmin())]


@typechecked
def motion_direction(
    video: Tensor,
    *,
    background: Sequence[float] = DEFAULT_BACKGROUND,
    threshold: float = 0.3,
    frame_mask: Tensor | None = None,
    min_travel: float | None = None,
) -> str | None:
    """ "left", "right", "up" or "down": the way the foreground centroid moved from the first to the last valid
    frame of one clip ``(3, f, h, w)`` (image y grows downwards). Centroids weigh each foreground pixel by its
    distance from the background, so soft edges count in proportion. None when the first or last frame has no
    foreground, or the centroid moved less than ``min_travel`` pixels (default a tenth of the frame width)."""
    video = _as_clip(video)
    valid = _clip_mask(frame_mask, video.shape[1])
    if int(valid.sum()) < 2:
        return None
    distance = _distances(video[:, valid], background)
    weights = torch.where(distance > threshold, distance, torch.zeros_like(distance))
    _, h, w = weights.shape
    ys = torch.arange(h, dtype=torch.float32).view(h, 1)
    xs = torch.arange(w, dtype=torch.float32).view(1, w)
    centroids = []
    for frame in (weights[0], weights[-1]):
        total = frame.sum()
        if total <= 0:
            return None
        centroids.append((float((frame * xs).sum() / total), float((frame * ys).sum() / total)))
    dx = centroids[1][0] - centroids[0][0]
    dy = centroids[1][1] - centroids[0][1]
    min_travel = 0.1 * w if min_travel is None else float(min_travel)
    if max(abs(dx), abs(dy)) < min_travel:
        return None
    if abs(dx) >= abs(dy):
        return "right" if dx > 0 else "left"
    return "down" if dy > 0 else "up"


@typechecked
def judge_videos(
    videos: Tensor,
    probe: ShapeProbe,
    palette: Palette = GLYPH_COLORS,
    background: Sequence[float] | None = None,
    *,
    frame_mask: Tensor | None = None,
    threshold: float = 0.3,
) -> list[dict[str, Any]]:
    """Judge each clip of ``videos (b, 3, f, h, w)`` in [0, 1]. Per clip a dict:

    - ``"shapes"``: the probe's shape name for every valid frame,
    - ``"shape"``: the most common of them (the earliest-seen on a tie),
    - ``"consistent"``: every valid frame got the same name,
    - ``"color"``: :func:`dominant_color` (None without foreground),
    - ``"direction"``: :func:`motion_direction` (None when there is no clear motion).

    ``background`` defaults to the probe's.
    """
    videos = _check_videos(videos)
    mask = _check_mask(frame_mask, videos)
    background = probe.background if background is None else tuple(background)
    predictions = probe.predict_video(videos)
    consistent = consistent_clips(predictions, mask)
    out = []
    for i in range(videos.shape[0]):
        names = [probe.shapes[j] for j in predictions[i][mask[i]].tolist()]
        out.append(
            {
                "shapes": names,
                "shape": Counter(names).most_common(1)[0][0] if names else None,
                "consistent": bool(consistent[i]),
                "color": dominant_color(
                    videos[i], palette, background=background, threshold=threshold, frame_mask=mask[i]
                ),
                "direction": motion_direction(
                    videos[i], background=background, threshold=threshold, frame_mask=mask[i]
                ),
            }
        )
    return out


# ---------------------------------------------------------------------------------------------- argument checks


def _check_frames(frames: Any) -> Tensor:
    if not isinstance(frames, Tensor) or frames.ndim != 4 or frames.shape[1] != 3:
        raise ValueError(f"frames must be (batch, 3, height, width), got {getattr(frames, 'shape', type(frames))}")
    return frames


def _check_videos(videos: Any, name: str = "videos") -> Tensor:
    if not isinstance(videos, Tensor) or videos.ndim != 5 or videos.shape[1] != 3:
        got = tuple(videos.shape) if isinstance(videos, Tensor) else type(videos).__name__
        raise ValueError(f"{name} must be (batch, 3, frames, height, width), got {got}")
    return videos


def _check_mask(frame_mask: Tensor | None, videos: Tensor) -> Tensor:
    b, _, f, _, _ = videos.shape
    if frame_mask is None:
        return torch.ones(b, f, dtype=torch.bool)
    if tuple(frame_mask.shape) != (b, f):
        raise ValueError(f"frame_mask must be (batch, frames) = ({b}, {f}), got {tuple(frame_mask.shape)}")
    return frame_mask.bool().cpu()
