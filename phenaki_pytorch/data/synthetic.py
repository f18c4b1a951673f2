"""Synthetic captioned videos: coloured shapes moving over a plain dark background.

Small enough to train a text-to-video model on a CPU in minutes, and checkable: the caption
"a {color} {shape} moving {direction}" says exactly what is in the video, so a sample can be judged by the mean
colour of its foreground pixels and the path of their centroid. Combinations can be held out (``exclude``) so a
demo can prompt with a pairing never seen in training.
"""

from __future__ import annotations

import math
import re
from collections.abc import Collection, Mapping, Sequence
from typing import Any

import torch
from torch import Tensor
from torch.utils.data import Dataset

from ._utils import check_index, check_positive_int, derive_seed, typechecked

__all__ = ["COLORS", "DIRECTIONS", "SHAPES", "SyntheticCaptionedVideos"]

# saturated colours, far apart in RGB so the mean foreground colour identifies them
COLORS: dict[str, tuple[float, float, float]] = {
    "red": (1.0, 0.0, 0.0),
    "green": (0.0, 1.0, 0.0),
    "blue": (0.0, 0.0, 1.0),
    "yellow": (1.0, 1.0, 0.0),
    "cyan": (0.0, 1.0, 1.0),
    "magenta": (1.0, 0.0, 1.0),
    "white": (1.0, 1.0, 1.0),
    "orange": (1.0, 0.5, 0.0),
    "purple": (0.5, 0.0, 1.0),
    "black": (0.0, 0.0, 0.0),
}

SHAPES = ("square", "circle", "triangle", "diamond", "star")

# (dx, dy) per unit of travel; image y grows downwards, so "up" is -y
DIRECTIONS: dict[str, tuple[int, int]] = {
    "left": (-1, 0),
    "right": (1, 0),
    "up": (0, -1),
    "down": (0, 1),
}

DEFAULT_BACKGROUND = (0.08, 0.08, 0.08)

_CAPTION_RE = re.compile(r"^a (?P<color>\S+) (?P<shape>\S+) moving (?P<direction>\S+)$")


def _polygon(kind: str) -> Tensor:
    """Vertices (n, 2) of a unit-radius polygon centred on the origin (y down)."""
    if kind == "triangle":  # pointing up, filling the unit box like the square does
        return torch.tensor([[0.0, -1.0], [1.0, 1.0], [-1.0, 1.0]])
    if kind == "diamond":
        return torch.tensor([[0.0, -1.0], [1.0, 0.0], [0.0, 1.0], [-1.0, 0.0]])
    if kind == "star":  # five points on the unit circle, a fat inner radius so its area is comparable
        angles = -90.0 + 36.0 * torch.arange(10, dtype=torch.float32)
        radii = torch.tensor([1.0, 0.5] * 5)
    else:
        raise ValueError(f"no polygon for shape {kind!r}")
    rad = torch.deg2rad(angles)
    return torch.stack((radii * torch.cos(rad), radii * torch.sin(rad)), dim=-1)


def _inside_polygon(dx: Tensor, dy: Tensor, vertices: Tensor) -> Tensor:
    """Even-odd rule, vectorised over points (dx, dy broadcastable) and edges."""
    x1, y1 = vertices[:, 0], vertices[:, 1]
    x2, y2 = vertices.roll(-1, 0)[:, 0], vertices.roll(-1, 0)[:, 1]
    px, py = dx.unsqueeze(-1), dy.unsqueeze(-1)
    straddles = (y1 > py) != (y2 > py)
    denom = torch.where(y2 == y1, torch.full_like(y2, 1e-9), y2 - y1)
    x_cross = x1 + (py - y1) * (x2 - x1) / denom
    crossings = (straddles & (px < x_cross)).sum(-1)
    return crossings % 2 == 1


def _shape_mask(shape: str, dx: Tensor, dy: Tensor, radius: float) -> Tensor:
    """Boolean mask of points (dx, dy) relative to the shape centre."""
    u, v = dx / radius, dy / radius
    if shape == "square":
        return (u.abs() <= 1.0) & (v.abs() <= 1.0)
    if shape == "circle":
        return u * u + v * v <= 1.0
    return _inside_polygon(u, v, _polygon(shape))


class SyntheticCaptionedVideos(Dataset):
    """Deterministic in-memory dataset of captioned toy videos.

    Item ``i`` is ``{"video": (3, num_frames, image_size, image_size) in [0, 1], "frame_mask": all True,
    "text": "a {color} {shape} moving {direction}"}``. Combinations cycle with the index (item ``i`` shows
    ``combinations[i % len(combinations)]``); the shape size (about a quarter of the image) and its start position
    are drawn from ``(seed, i)``, so the same seed gives identical tensors. The shape travels half the image width
    over the clip in a straight line (2 px per frame at 9 frames of 32 x 32) and stays fully inside the frame.

    Args:
        num_samples: dataset length.
        num_frames, image_size: clip shape.
        colors: names from :data:`COLORS` or a mapping name -> (r, g, b) in [0, 1].
        shapes: names from :data:`SHAPES`.
        directions: names from :data:`DIRECTIONS`.
        exclude: (color, shape, direction) triples or caption strings held out of the dataset.
        seed: randomness of sizes and positions.
        background: (r, g, b) in [0, 1] or a colour name.
    """

    @typechecked
    def __init__(
        self,
        num_samples: int = 256,
        num_frames: int = 9,
        image_size: int = 32,
        *,
        colors: Sequence[str] | Mapping[str, Sequence[float]] = ("red", "green", "blue", "yellow"),
        shapes: Sequence[str] = ("square", "circle"),
        directions: Sequence[str] = ("left", "right", "up", "down"),
        exclude: Collection[str | Sequence[str]] = (),
        seed: int = 0,
        background: str | Sequence[float] = DEFAULT_BACKGROUND,
    ):
        check_positive_int("num_samples", num_samples)
        check_positive_int("num_frames", num_frames)
        check_positive_int("image_size", image_size)
        if image_size < 8:
            raise ValueError(f"image_size must be at least 8 for the shapes to be recognisable, got {image_size}")

        self.palette = self._resolve_colors(colors)
        for name, values, known in (("shapes", shapes, SHAPES), ("directions", directions, tuple(DIRECTIONS))):
            if isinstance(values, str):
                raise TypeError(f"{name} must be a collection of names, got the string {values!r}")
            if not values:
                raise ValueError(f"{name} must not be empty")
            unknown = [v for v in values if v not in known]
            if unknown:
                raise ValueError(f"{name} has unknown entries {unknown}; expected names from {list(known)}")
        self.colors = tuple(self.palette)
        self.shapes = tuple(dict.fromkeys(shapes))
        self.directions = tuple(dict.fromkeys(directions))
        self.background = self._resolve_background(background)
        for name in self.colors:
            if max(abs(a - b) for a, b in zip(self.palette[name], self.background)) < 0.25:
                raise ValueError(
                    f"color {name!r} {self.palette[name]} is too close to the background {self.background}"
                )

        self.excluded = self._resolve_exclude(exclude)
        all_combos = [(c, s, d) for c in self.colors for s in self.shapes for d in self.directions]
        self.combinations = [combo for combo in all_combos if combo not in set(self.excluded)]
        if not self.combinations:
            raise ValueError("exclude removes every (color, shape, direction) combination: nothing left to train on")

        self.num_samples = num_samples
        self.num_frames = num_frames
        self.image_size = image_size
        self.seed = seed
        # pixel centres, shared by every render
        coords = torch.arange(image_size, dtype=torch.float32) + 0.5
        self._xs = coords.view(1, 1, image_size)
        self._ys = coords.view(1, image_size, 1)

    # -- names and captions ----------------------------------------------------------------------------------------

    @staticmethod
    def caption_for(color: str, shape: str, direction: str) -> str:
        return f"a {color} {shape} moving {direction}"

    @staticmethod
    def parse_caption(text: str) -> tuple[str, str, str]:
        """Inverse of :meth:`caption_for`: "a red circle moving up" -> ("red", "circle", "up")."""
        match = _CAPTION_RE.match(text.strip())
        if match is None:
            raise ValueError(f"caption must look like 'a {{color}} {{shape}} moving {{direction}}', got {text!r}")
        return match["color"], match["shape"], match["direction"]

    @property
    def captions(self) -> list[str]:
        """Captions of every combination in the dataset (held-out ones excluded), in item order."""
        return [self.caption_for(*combo) for combo in self.combinations]

    @property
    def excluded_captions(self) -> list[str]:
        return [self.caption_for(*combo) for combo in self.excluded]

    def attributes(self, index: int) -> tuple[str, str, str]:
        """(color, shape, direction) of item ``index``."""
        return self.combinations[self._check_index(index) % len(self.combinations)]

    # -- rendering -------------------------------------------------------------------------------------------------

    @property
    def travel(self) -> float:
        """Pixels the shape moves from the first to the last frame."""
        if self.num_frames == 1:
            return 0.0
        return 0.5 * self.image_size  # shapes are at most 0.32 of the image, so the path always fits

    @typechecked
    def render(
        self,
        color: str,
        shape: str,
        direction: str,
        start: tuple[float, float] | None = None,
        size: float | int | None = None,
    ) -> Tensor:
        """Render one clip ``(3, num_frames, image_size, image_size)``.

        ``start`` is the shape centre (x, y) in pixels at the first frame (default: the path is centred in the
        image); ``size`` the shape's width in pixels (default a quarter of the image). Any combination can be
        rendered, held-out ones included.
        """
        rgb = self._color_rgb(color)
        if shape not in SHAPES:
            raise ValueError(f"shape must be one of {list(SHAPES)}, got {shape!r}")
        if direction not in DIRECTIONS:
            raise ValueError(f"direction must be one of {list(DIRECTIONS)}, got {direction!r}")
        size = self.image_size / 4 if size is None else float(size)
        if not size > 0:
            raise ValueError(f"size must be positive, got {size}")
        dx, dy = DIRECTIONS[direction]
        travel = self.travel
        if start is None:
            mid = self.image_size / 2
            start = (mid - dx * travel / 2, mid - dy * travel / 2)
        return self._render(rgb, shape, dx, dy, float(start[0]), float(start[1]), size, travel)

    def _render(
        self, rgb: tuple[float, ...], shape: str, dx: int, dy: int, x0: float, y0: float, size: float, travel: float
    ) -> Tensor:
        f = self.num_frames
        t = torch.arange(f, dtype=torch.float32).view(f, 1, 1)
        speed = travel / max(f - 1, 1)
        cx, cy = x0 + dx * speed * t, y0 + dy * speed * t
        mask = _shape_mask(shape, self._xs - cx, self._ys - cy, size / 2)  # (f, h, w)
        bg = torch.tensor(self.background).view(3, 1, 1, 1)
        fg = torch.tensor(rgb, dtype=torch.float32).view(3, 1, 1, 1)
        return torch.where(mask.unsqueeze(0), fg, bg).contiguous()

    def _sample_params(self, index: int) -> tuple[float, float, float]:
        """(size, x0, y0) for item ``index``: drawn from (seed, index), independent of num_samples."""
        gen = torch.Generator().manual_seed(derive_seed("synthetic", self.seed, index))
        u = torch.rand(3, generator=gen).tolist()
        n = self.image_size
        size = n * (0.22 + 0.1 * u[0])
        travel = self.travel
        radius = size / 2
        _, _, direction = self.attributes(index)
        dx, dy = DIRECTIONS[direction]
        coords = []
        for delta, rand in ((dx, u[1]), (dy, u[2])):
            lo, hi = radius, n - radius  # fully inside the frame
            if delta > 0:
                hi -= travel
            elif delta < 0:
                lo += travel
            coords.append(lo + (hi - lo) * rand)
        return size, coords[0], coords[1]

    # -- Dataset -----------------------------------------------------------------------------------------------------

    def _check_index(self, index: int) -> int:
        return check_index(index, self.num_samples)

    def __len__(self) -> int:
        return self.num_samples

    def __getitem__(self, index: int) -> dict[str, Any]:
        index = self._check_index(index)
        color, shape, direction = self.attributes(index)
        size, x0, y0 = self._sample_params(index)
        dx, dy = DIRECTIONS[direction]
        video = self._render(self.palette[color], shape, dx, dy, x0, y0, size, self.travel)
        return {
            "video": video,
            "frame_mask": torch.ones(self.num_frames, dtype=torch.bool),
            "text": self.caption_for(color, shape, direction),
        }

    # -- argument resolution ---------------------------------------------------------------------------------------

    def _color_rgb(self, color: str) -> tuple[float, ...]:
        if color in self.palette:
            return self.palette[color]
        if color in COLORS:
            return COLORS[color]
        raise ValueError(f"color must be one of {sorted(set(self.palette) | set(COLORS))}, got {color!r}")

    @staticmethod
    def _check_rgb(name: str, rgb: Any) -> tuple[float, float, float]:
        values = tuple(float(v) for v in rgb)
        if len(values) != 3 or not all(0.0 <= v <= 1.0 for v in values) or any(math.isnan(v) for v in values):
            raise ValueError(f"{name} must be three numbers in [0, 1], got {tuple(rgb)!r}")
        return values  # type: ignore[return-value]

    def _resolve_colors(self, colors: Any) -> dict[str, tuple[float, float, float]]:
        if isinstance(colors, str):
            raise TypeError(f"colors must be a collection of names or a name -> rgb mapping, got the string {colors!r}")
        if not colors:
            raise ValueError("colors must not be empty")
        if isinstance(colors, Mapping):
            return {str(name): self._check_rgb(f"colors[{name!r}]", rgb) for name, rgb in colors.items()}
        unknown = [c for c in colors if c not in COLORS]
        if unknown:
            raise ValueError(f"colors has unknown names {unknown}; expected names from {list(COLORS)} or a mapping")
        return {c: COLORS[c] for c in dict.fromkeys(colors)}

    def _resolve_background(self, background: Any) -> tuple[float, float, float]:
        if isinstance(background, str):
            if background not in COLORS:
                raise ValueError(f"background must be (r, g, b) or one of {list(COLORS)}, got {background!r}")
            return COLORS[background]
        return self._check_rgb("background", background)

    def _resolve_exclude(self, exclude: Any) -> list[tuple[str, str, str]]:
        if isinstance(exclude, str):
            exclude = [exclude]
        out: list[tuple[str, str, str]] = []
        for item in exclude:
            combo = self.parse_caption(item) if isinstance(item, str) else tuple(item)
            if len(combo) != 3:
                raise ValueError(f"exclude entries must be (color, shape, direction) or captions, got {item!r}")
            color, shape, direction = combo
            problems = [
                f"{kind} {value!r} is not in {list(known)}"
                for kind, value, known in (
                    ("color", color, self.colors),
                    ("shape", shape, self.shapes),
                    ("direction", direction, self.directions),
                )
                if value not in known
            ]
            if problems:
                raise ValueError(f"exclude entry {item!r}: {'; '.join(problems)}")
            if combo not in out:
                out.append(combo)  # type: ignore[arg-type]
        return out
