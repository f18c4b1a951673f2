"""Synthetic captioned videos: coloured shapes moving over a plain dark background.

Small enough to train a text-to-video model on a CPU in minutes, and checkable: the caption
"a {color} {shape} moving {direction}" says exactly what is in the video, so a sample can be judged by the mean
colour of its foreground pixels and the path of their centroid. Combinations can be held out (``exclude``) so a
demo can prompt with a pairing never seen in training.

:class:`SyntheticGlyphVideos` is the harder benchmark preset: eight glyphs that differ only in structure (square,
triangle, diamond, star, cross, ring, bar, ell), drawn at the same area and brightness with anti-aliased edges, in
six colours and four directions, with :data:`GLYPH_HELD_OUT` pairings kept out of training
(:func:`glyph_benchmark_splits`). A shape classifier that tells them apart lives in
:mod:`phenaki_pytorch.evaluation.probe`.
"""

from __future__ import annotations

import math
import re
from collections.abc import Collection, Mapping, Sequence
from typing import Any, NamedTuple

import torch
from torch import Tensor
from torch.utils.data import Dataset

from ._utils import check_index, check_positive_int, derive_seed, typechecked

__all__ = [
    "COLORS",
    "DIRECTIONS",
    "GLYPH_COLORS",
    "GLYPH_HELD_OUT",
    "GLYPH_HELD_OUT_COLOR_SHAPE",
    "GLYPH_HELD_OUT_SHAPE_DIRECTION",
    "GLYPH_SHAPES",
    "SHAPES",
    "GlyphSplits",
    "SyntheticCaptionedVideos",
    "SyntheticGlyphVideos",
    "glyph_benchmark_splits",
]

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

SHAPES = ("square", "circle", "triangle", "diamond", "star", "cross", "ring", "bar", "ell")

# (dx, dy) per unit of travel; image y grows downwards, so "up" is -y
DIRECTIONS: dict[str, tuple[int, int]] = {
    "left": (-1, 0),
    "right": (1, 0),
    "up": (0, -1),
    "down": (0, 1),
}

DEFAULT_BACKGROUND = (0.08, 0.08, 0.08)

# -- the glyph benchmark ---------------------------------------------------------------------------------------------

# eight shapes that differ only in structure: drawn at the same area and brightness (SyntheticGlyphVideos)
GLYPH_SHAPES = ("square", "triangle", "diamond", "star", "cross", "ring", "bar", "ell")
# each has one channel at 1, so every glyph stands out from the dark background by the same amount
GLYPH_COLORS = ("red", "green", "blue", "yellow", "magenta", "cyan")

# Pairings never shown in training. Each colour loses one shape (in every direction) and two shapes lose one
# direction (in every colour), so every colour, shape and direction, and every colour-direction pair, still appears
# in training with other partners.
GLYPH_HELD_OUT_COLOR_SHAPE: tuple[tuple[str, str], ...] = (
    ("red", "ring"),
    ("green", "ell"),
    ("blue", "star"),
    ("yellow", "cross"),
    ("magenta", "triangle"),
    ("cyan", "bar"),
)
GLYPH_HELD_OUT_SHAPE_DIRECTION: tuple[tuple[str, str], ...] = (("square", "down"), ("diamond", "left"))
# the 36 (color, shape, direction) triples those pairings cover, of the 6 x 8 x 4 = 192
GLYPH_HELD_OUT: tuple[tuple[str, str, str], ...] = tuple(
    [(c, s, d) for c, s in GLYPH_HELD_OUT_COLOR_SHAPE for d in DIRECTIONS]
    + [(c, s, d) for s, d in GLYPH_HELD_OUT_SHAPE_DIRECTION for c in GLYPH_COLORS]
)

_CAPTION_RE = re.compile(r"^a (?P<color>\S+) (?P<shape>\S+) moving (?P<direction>\S+)$")


# Geometry. Shapes live in unit coordinates (u, v) = offset / radius, radius = half the shape's nominal width.
# "box" geometry (the original set) lets each shape fill its 2 x 2 box; "equal_area" geometry rescales the
# shapes that would otherwise be larger or smaller so that every shape covers an area of 2 (half the box, i.e.
# size**2 / 2 pixels). The four newer shapes are the same in both geometries: they already cover exactly 2.
_SQRT2 = math.sqrt(2.0)
_EQUAL_SQUARE = 1.0 / _SQRT2  # half-side: (2 a)**2 = 2
_EQUAL_CIRCLE = math.sqrt(2.0 / math.pi)  # pi r**2 = 2
_STAR_OUTER = 1.2  # equal-area star: points reach 1.2, inner radius from 5 R r sin(36 deg) = 2
_STAR_INNER = 2.0 / (5.0 * _STAR_OUTER * math.sin(math.radians(36.0)))
_CROSS_HALF_ARM = 1.0 - _SQRT2 / 2  # plus sign: 8 w - 4 w**2 = 2 (arm width 0.29 of the size)
_RING_INNER = math.sqrt(1.0 - 2.0 / math.pi)  # annulus: pi (1 - r**2) = 2 (stroke 0.2 of the size)
_BAR_HALF_HEIGHT = 0.5  # horizontal bar, 2 x 1 (always horizontal, whatever the direction of travel)
_ELL_STROKE = 2.0 - _SQRT2  # L: 4 t - t**2 = 2 (stroke 0.29 of the size)


def _extent(shape: str, equal_area: bool) -> float:
    """Largest |u| or |v| the shape reaches, in radii: how far it reaches from its centre."""
    if not equal_area:
        return 1.0
    return {"square": _EQUAL_SQUARE, "circle": _EQUAL_CIRCLE, "star": _STAR_OUTER}.get(shape, 1.0)


def _star(outer: float, inner: float) -> Tensor:
    """Vertices (10, 2) of a five-pointed star, one point straight up (y down)."""
    angles = torch.deg2rad(-90.0 + 36.0 * torch.arange(10, dtype=torch.float32))
    radii = torch.tensor([outer, inner] * 5)
    return torch.stack((radii * torch.cos(angles), radii * torch.sin(angles)), dim=-1)


_STAR_VERTICES = _star(_STAR_OUTER, _STAR_INNER)


def _polygon(kind: str, equal_area: bool = False) -> Tensor:
    """Vertices (n, 2) of a polygon centred on the origin (y down), in unit coordinates."""
    if kind == "triangle":  # pointing up, filling the unit box (area 2 in both geometries)
        return torch.tensor([[0.0, -1.0], [1.0, 1.0], [-1.0, 1.0]])
    if kind == "diamond":  # area 2 in both geometries
        return torch.tensor([[0.0, -1.0], [1.0, 0.0], [0.0, 1.0], [-1.0, 0.0]])
    if kind == "star":  # box geometry: five points on the unit circle, a fat inner radius so its area is comparable
        return _STAR_VERTICES if equal_area else _star(1.0, 0.5)
    raise ValueError(f"no polygon for shape {kind!r}")


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


def _shape_mask(shape: str, dx: Tensor, dy: Tensor, radius: float, equal_area: bool = False) -> Tensor:
    """Boolean mask of points (dx, dy) relative to the shape centre."""
    u, v = dx / radius, dy / radius
    au, av = u.abs(), v.abs()
    if shape == "square":
        half = _EQUAL_SQUARE if equal_area else 1.0
        return (au <= half) & (av <= half)
    if shape == "circle":
        r = _EQUAL_CIRCLE if equal_area else 1.0
        return u * u + v * v <= r * r
    if shape == "cross":
        return ((au <= 1.0) & (av <= _CROSS_HALF_ARM)) | ((av <= 1.0) & (au <= _CROSS_HALF_ARM))
    if shape == "ring":
        rr = u * u + v * v
        return (rr <= 1.0) & (rr >= _RING_INNER * _RING_INNER)
    if shape == "bar":
        return (au <= 1.0) & (av <= _BAR_HALF_HEIGHT)
    if shape == "ell":  # a vertical stroke on the left, a horizontal one along the bottom
        inside = (au <= 1.0) & (av <= 1.0)
        return inside & ((u <= -1.0 + _ELL_STROKE) | (v >= 1.0 - _ELL_STROKE))
    if equal_area:  # closed forms (several times faster than the even-odd rule; the box geometry keeps that)
        if shape == "triangle":  # apex (0, -1), base corners (+-1, 1)
            return (v <= 1.0) & (2.0 * au <= v + 1.0)
        if shape == "diamond":
            return au + av <= 1.0
        if shape == "star":
            return _inside_star(u, v, _STAR_VERTICES)
    return _inside_polygon(u, v, _polygon(shape, equal_area))


def _edge_lines(vertices: Tensor) -> Tensor:
    """(n, 3) coefficients (p, q, r) of each edge a -> b: p u + q v - r is the cross product (b - a) x (x - a)."""
    a, b = vertices, vertices.roll(-1, 0)
    p, q = a[:, 1] - b[:, 1], b[:, 0] - a[:, 0]
    return torch.stack((p, q, p * a[:, 0] + q * a[:, 1]), dim=-1)


def _inside_star(u: Tensor, v: Tensor, vertices: Tensor) -> Tensor:
    """Points inside a polygon whose n vertices sit 360/n degrees apart around the origin, the first straight up:
    find the sector each point lies in, then test it against that sector's one edge."""
    n = vertices.shape[0]
    angle = torch.atan2(v, u) + math.pi / 2  # 0 towards the first vertex, growing clockwise on screen (y down)
    sector = torch.floor(angle * (n / (2 * math.pi))).long() % n
    p, q, r = _edge_lines(vertices)[sector].unbind(-1)
    return p * u + q * v >= r  # vertices run clockwise on screen, so the origin's side is the positive one


class SyntheticCaptionedVideos(Dataset):
    """Deterministic in-memory dataset of captioned toy videos.

    Item ``i`` is ``{"video": (3, num_frames, image_size, image_size) in [0, 1], "frame_mask": all True,
    "text": "a {color} {shape} moving {direction}"}`` (plus ``"color"``, ``"shape"``, ``"direction"`` strings with
    ``labels=True``). Combinations cycle with the index (item ``i`` shows ``combinations[i % len(combinations)]``);
    the shape size (``size_range``, by default about a quarter of the image) and its start position are drawn from
    ``(seed, i)``, so the same seed gives identical tensors. The shape travels ``travel`` of the image width over the
    clip in a straight line (by default half: 2 px per frame at 9 frames of 32 x 32) and stays fully inside the
    frame.

    Args:
        num_samples: dataset length.
        num_frames, image_size: clip shape.
        colors: names from :data:`COLORS` or a mapping name -> (r, g, b) in [0, 1].
        shapes: names from :data:`SHAPES`.
        directions: names from :data:`DIRECTIONS`.
        exclude: (color, shape, direction) triples or caption strings held out of the dataset.
        include: if given, only these (color, shape, direction) triples or captions (minus ``exclude``), e.g. to
            build an evaluation set of exactly the held-out pairings.
        seed: randomness of sizes and positions.
        background: (r, g, b) in [0, 1] or a colour name.
        size_range: (low, high) shape width as fractions of ``image_size``, drawn uniformly per item.
        travel: distance the shape moves from the first to the last frame, as a fraction of ``image_size``.
        equal_area: draw every shape at the same area (``size**2 / 2`` pixels) instead of letting each fill its
            ``size x size`` box (squares and circles are then smaller than the box, the star's points reach past it).
        antialias: ``k``: each pixel is sampled at ``k * k`` points (a rotated grid) and shows the colour in
            proportion to the points the shape covers (1 = hard edges, sampled at pixel centres).
        labels: add the ``"color"``, ``"shape"`` and ``"direction"`` names to every item.
        scene_cut_prob: the share of items that are two scenes: the clip's caption (and labels) describe only
            the frames from a cut on; before it the same glyph shows one other attribute (another direction,
            colour or shape, drawn from the dataset's own combinations) and the path runs on unbroken through
            the cut. Every item then has ``"prime_frames"``: the frames before the cut (0 for a single scene),
            which ``Phenaki.forward`` keeps as context, so a model learns to continue a video under a new prompt.
        scene_cut_frames: where cuts may fall (frames before the cut); default every 1 + 2k in [3, num_frames - 2],
            the primed lengths a tokenizer with temporal patch 2 accepts.
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
        include: Collection[str | Sequence[str]] | None = None,
        seed: int = 0,
        background: str | Sequence[float] = DEFAULT_BACKGROUND,
        size_range: tuple[float, float] = (0.22, 0.32),
        travel: float = 0.5,
        equal_area: bool = False,
        antialias: int = 1,
        labels: bool = False,
        scene_cut_prob: float = 0.0,
        scene_cut_frames: Sequence[int] | None = None,
    ):
        check_positive_int("num_samples", num_samples)
        check_positive_int("num_frames", num_frames)
        check_positive_int("image_size", image_size)
        check_positive_int("antialias", antialias)
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

        low, high = (float(v) for v in size_range)
        if not 0.0 < low <= high:
            raise ValueError(f"size_range must be (low, high) with 0 < low <= high, got {size_range}")
        if not 0.0 <= travel < 1.0:
            raise ValueError(f"travel must be a fraction of the image in [0, 1), got {travel}")
        self.equal_area = equal_area
        reach = max(_extent(shape, equal_area) for shape in self.shapes) * high + travel
        if reach > 1.0:
            raise ValueError(
                f"size_range {size_range} with travel {travel} does not fit in the frame: the largest shape plus "
                f"its path spans {reach:.3f} of the image (at most 1)"
            )
        # round() keeps the default span exactly 0.1, so sizes match those drawn before size_range existed
        self.size_range = (low, high)
        self._size_span = round(high - low, 12)
        self.travel_fraction = float(travel)
        self.antialias = antialias
        self.labels = labels
        self._render_size = 0.25  # default width of render(), as a fraction of image_size

        self.excluded = self._resolve_exclude(exclude, "exclude")
        included = None if include is None else set(self._resolve_exclude(include, "include"))
        all_combos = [(c, s, d) for c in self.colors for s in self.shapes for d in self.directions]
        excluded = set(self.excluded)
        self.combinations = [
            combo for combo in all_combos if combo not in excluded and (included is None or combo in included)
        ]
        if not self.combinations:
            raise ValueError(
                "exclude removes every (color, shape, direction) combination: nothing left to train on"
                if included is None
                else "include and exclude leave no (color, shape, direction) combination: every one is excluded"
            )

        self.num_samples = num_samples
        self.num_frames = num_frames
        self.image_size = image_size
        self.seed = seed

        if not 0.0 <= scene_cut_prob <= 1.0:
            raise ValueError(f"scene_cut_prob must lie in [0, 1], got {scene_cut_prob}")
        if scene_cut_frames is None:
            scene_cut_frames = tuple(range(3, num_frames - 1, 2))
        cuts = tuple(int(c) for c in scene_cut_frames)
        if any(not 1 <= c < num_frames for c in cuts) or (scene_cut_prob > 0 and not cuts):
            raise ValueError(
                f"scene_cut_frames must be frame counts in [1, {num_frames - 1}] (at least one when "
                f"scene_cut_prob > 0), got {list(cuts)}"
            )
        self.scene_cut_prob = float(scene_cut_prob)
        self.scene_cut_frames = cuts

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
        return self.travel_fraction * self.image_size  # checked at construction: the path always fits

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
        image); ``size`` the shape's width in pixels (default a quarter of the image; for
        :class:`SyntheticGlyphVideos` the middle of ``size_range``). Any combination can be rendered, held-out
        ones included.
        """
        rgb = self._color_rgb(color)
        if shape not in SHAPES:
            raise ValueError(f"shape must be one of {list(SHAPES)}, got {shape!r}")
        if direction not in DIRECTIONS:
            raise ValueError(f"direction must be one of {list(DIRECTIONS)}, got {direction!r}")
        size = self.image_size * self._render_size if size is None else float(size)
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
        f, k, n = self.num_frames, self.antialias, self.image_size
        t = torch.arange(f, dtype=torch.float32).view(f, 1, 1)
        speed = travel / max(f - 1, 1)
        cx, cy = x0 + dx * speed * t, y0 + dy * speed * t  # (f, 1, 1) centre per frame
        # test only the pixels in a window around each frame's shape (most of the frame is background), all frames
        # at once: window i covers pixels [lo_i, lo_i + span) on each axis
        half = math.ceil(_extent(shape, self.equal_area) * size / 2) + 1
        span = 2 * half + 1
        x_lo = torch.floor(cx.view(f)).long() - half  # (f,)
        y_lo = torch.floor(cy.view(f)).long() - half
        pixels = torch.arange(span)
        # k * k sample points per pixel on a rotated ("n-rooks") grid: no two share an x or a y offset, so
        # horizontal and vertical edges are resolved to 1 / k**2 of a pixel, not 1 / k as on a square grid.
        # Sample (a, b) sits at pixel + ((a k + b + 0.5) / k**2, (b k + a + 0.5) / k**2); with k = 1 that is the
        # pixel centre, computed as (p + 0.5) / 1 exactly as before anti-aliasing existed.
        a, b = torch.arange(k).repeat_interleave(k), torch.arange(k).repeat(k)  # (k k,)
        kk = k * k
        x_sub, y_sub = a * k + b, b * k + a
        xs = (((x_lo.view(f, 1, 1, 1) + pixels.view(1, 1, 1, -1)) * kk + x_sub.view(1, -1, 1, 1)).float() + 0.5) / kk
        ys = (((y_lo.view(f, 1, 1, 1) + pixels.view(1, 1, -1, 1)) * kk + y_sub.view(1, -1, 1, 1)).float() + 0.5) / kk
        samples = _shape_mask(shape, xs - cx.view(f, 1, 1, 1), ys - cy.view(f, 1, 1, 1), size / 2, self.equal_area)
        windows = samples[:, 0] if k == 1 else samples.float().mean(dim=1)  # (f, span, span): covered fraction
        cover = torch.zeros(f, n, n, dtype=windows.dtype)
        for i, (x0_px, y0_px) in enumerate(zip(x_lo.tolist(), y_lo.tolist())):
            xa, xb = max(x0_px, 0), min(x0_px + span, n)  # the window's pixels that lie in the frame
            ya, yb = max(y0_px, 0), min(y0_px + span, n)
            if xa < xb and ya < yb:
                cover[i, ya:yb, xa:xb] = windows[i, ya - y0_px : yb - y0_px, xa - x0_px : xb - x0_px]
        bg = torch.tensor(self.background).view(3, 1, 1, 1)
        fg = torch.tensor(rgb, dtype=torch.float32).view(3, 1, 1, 1)
        if k == 1:
            return torch.where(cover.unsqueeze(0), fg, bg).contiguous()
        return (bg + cover.unsqueeze(0) * (fg - bg)).clamp(0.0, 1.0).contiguous()

    def _sample_params(self, index: int) -> tuple[float, float, float]:
        """(size, x0, y0) for item ``index``: drawn from (seed, index), independent of num_samples."""
        gen = torch.Generator().manual_seed(derive_seed("synthetic", self.seed, index))
        u = torch.rand(3, generator=gen).tolist()
        n = self.image_size
        size = n * (self.size_range[0] + self._size_span * u[0])
        travel = self.travel
        _, shape, direction = self.attributes(index)
        reach = _extent(shape, self.equal_area) * size / 2  # centre-to-edge distance
        dx, dy = DIRECTIONS[direction]
        coords = []
        for delta, rand in ((dx, u[1]), (dy, u[2])):
            lo, hi = reach, n - reach  # fully inside the frame
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
        cut = self._scene_cut(index) if self.scene_cut_prob > 0 else None
        if cut is None:
            video = self._render(self.palette[color], shape, dx, dy, x0, y0, size, self.travel)
        else:
            video = self._render_two_scenes(cut, size)
        item: dict[str, Any] = {
            "video": video,
            "frame_mask": torch.ones(self.num_frames, dtype=torch.bool),
            "text": self.caption_for(color, shape, direction),
        }
        if self.scene_cut_prob > 0:
            item["prime_frames"] = 0 if cut is None else cut[0]
            if cut is not None:
                item["context_text"] = self.caption_for(*cut[1])
        if self.labels:
            item.update(color=color, shape=shape, direction=direction)
        return item

    def _scene_cut(self, index: int) -> tuple[int, tuple[str, str, str], tuple[str, str, str], list[float]] | None:
        """(frames before the cut, first scene's attributes, the caption's attributes, two uniforms for the
        start) for a two-scene item, None for a single scene; drawn from (seed, index)."""
        gen = torch.Generator().manual_seed(derive_seed("scene-cut", self.seed, index))
        u = torch.rand(6, generator=gen).tolist()
        if u[0] >= self.scene_cut_prob:
            return None

        def pick(values, rand):
            return values[min(int(rand * len(values)), len(values) - 1)]

        second = self.attributes(index)
        # for each attribute (colour, shape, direction): the dataset's combinations that differ in it alone
        kinds = [
            options
            for axis in range(3)
            if (options := [c for c in self.combinations if sum(a != b for a, b in zip(c, second)) == 1
                            and c[axis] != second[axis]])
        ]
        if not kinds:
            return None
        first = pick(pick(kinds, u[1]), u[2])
        return pick(self.scene_cut_frames, u[3]), first, second, u[4:]

    def _render_two_scenes(self, cut, size: float) -> Tensor:
        """The first scene up to the cut, then the caption's scene from where the glyph is: one unbroken path
        (the speed of a single-scene clip), placed so that all of it stays inside the frame."""
        frames, first, second, u = cut
        f, n, travel = self.num_frames, self.image_size, self.travel
        speed = travel / max(f - 1, 1)
        (dx1, dy1), (dx2, dy2) = DIRECTIONS[first[2]], DIRECTIONS[second[2]]
        t = torch.arange(f, dtype=torch.float32)
        before = torch.clamp(t, max=frames - 1)  # steps taken in the first direction
        after = torch.clamp(t - (frames - 1), min=0)  # then in the second
        offsets = [d1 * speed * before + d2 * speed * after for d1, d2 in ((dx1, dx2), (dy1, dy2))]
        reach = max(_extent(first[1], self.equal_area), _extent(second[1], self.equal_area)) * size / 2
        start = []
        for offset, rand in zip(offsets, u):
            lo, hi = reach - float(offset.min()), n - reach - float(offset.max())
            start.append(lo + (hi - lo) * rand if hi >= lo else (lo + hi) / 2)
        x_cut = start[0] + float(offsets[0][frames - 1])  # the glyph's centre at the last frame before the cut
        y_cut = start[1] + float(offsets[1][frames - 1])
        video_a = self._render(self.palette[first[0]], first[1], dx1, dy1, start[0], start[1], size, travel)
        x0b, y0b = x_cut - dx2 * speed * (frames - 1), y_cut - dy2 * speed * (frames - 1)
        video_b = self._render(self.palette[second[0]], second[1], dx2, dy2, x0b, y0b, size, travel)
        return torch.cat((video_a[:, :frames], video_b[:, frames:]), dim=1)

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

    def _resolve_exclude(self, exclude: Any, argument: str = "exclude") -> list[tuple[str, str, str]]:
        if isinstance(exclude, str):
            exclude = [exclude]
        out: list[tuple[str, str, str]] = []
        for item in exclude:
            combo = self.parse_caption(item) if isinstance(item, str) else tuple(item)
            if len(combo) != 3:
                raise ValueError(f"{argument} entries must be (color, shape, direction) or captions, got {item!r}")
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
                raise ValueError(f"{argument} entry {item!r}: {'; '.join(problems)}")
            if combo not in out:
                out.append(combo)  # type: ignore[arg-type]
        return out


class SyntheticGlyphVideos(SyntheticCaptionedVideos):
    """The glyph benchmark: :data:`GLYPH_SHAPES` in :data:`GLYPH_COLORS`, moving in four directions.

    A preset of :class:`SyntheticCaptionedVideos` whose shapes differ only in structure: every glyph covers the
    same area (``size**2 / 2`` px, about 92 px at 32 x 32), has one flat colour, and anti-aliased edges (16
    samples per pixel). Glyph widths are drawn from 40-45 % of the image (12.8-14.4 px at 32 x 32), so strokes are
    2.6-4.2 px wide (ring 2.6-2.9, cross and ell 3.7-4.2, bar 6.4-7.2 px tall). A glyph travels 0.375 of the image
    over the clip: 12 px, 1.5 px per frame at 9 frames of 32 x 32, and stays inside the frame. The bar is always
    horizontal, whichever way it moves. Items carry ``"color"``, ``"shape"`` and ``"direction"`` labels.

    Nothing is held out by default; pass ``exclude=GLYPH_HELD_OUT`` for the training set, or use
    :func:`glyph_benchmark_splits`. Every keyword of :class:`SyntheticCaptionedVideos` can be overridden.
    """

    @typechecked
    def __init__(
        self,
        num_samples: int = 1024,
        num_frames: int = 9,
        image_size: int = 32,
        *,
        colors: Sequence[str] | Mapping[str, Sequence[float]] = GLYPH_COLORS,
        shapes: Sequence[str] = GLYPH_SHAPES,
        directions: Sequence[str] = ("left", "right", "up", "down"),
        exclude: Collection[str | Sequence[str]] = (),
        include: Collection[str | Sequence[str]] | None = None,
        seed: int = 0,
        background: str | Sequence[float] = DEFAULT_BACKGROUND,
        size_range: tuple[float, float] = (0.40, 0.45),
        travel: float = 0.375,
        equal_area: bool = True,
        antialias: int = 4,
        labels: bool = True,
        scene_cut_prob: float = 0.0,
        scene_cut_frames: Sequence[int] | None = None,
    ):
        super().__init__(
            num_samples,
            num_frames,
            image_size,
            colors=colors,
            shapes=shapes,
            directions=directions,
            exclude=exclude,
            include=include,
            seed=seed,
            background=background,
            size_range=size_range,
            travel=travel,
            equal_area=equal_area,
            antialias=antialias,
            labels=labels,
            scene_cut_prob=scene_cut_prob,
            scene_cut_frames=scene_cut_frames,
        )
        self._render_size = sum(self.size_range) / 2


class GlyphSplits(NamedTuple):
    """The glyph benchmark's datasets: ``train`` lacks :data:`GLYPH_HELD_OUT`; ``seen`` has fresh clips of the
    training pairings (another seed); ``held_out`` shows only the held-out pairings."""

    train: SyntheticGlyphVideos
    seen: SyntheticGlyphVideos
    held_out: SyntheticGlyphVideos


@typechecked
def glyph_benchmark_splits(num_train: int = 2048, num_eval: int = 256, *, seed: int = 0, **kwargs: Any) -> GlyphSplits:
    """Training and evaluation sets of the glyph benchmark, with :data:`GLYPH_HELD_OUT` kept out of training.

    The three sets draw sizes and positions from different seeds derived from ``seed``, so no evaluation clip
    repeats a training clip. ``kwargs`` go to every :class:`SyntheticGlyphVideos` (e.g. ``num_frames``,
    ``image_size``); ``exclude`` and ``include`` are set here.
    """
    for name in ("exclude", "include"):
        if name in kwargs:
            raise TypeError(f"glyph_benchmark_splits sets {name} itself; got {name}={kwargs[name]!r}")
    held_out = GLYPH_HELD_OUT
    return GlyphSplits(
        train=SyntheticGlyphVideos(num_train, exclude=held_out, seed=seed, **kwargs),
        seen=SyntheticGlyphVideos(
            num_eval, exclude=held_out, seed=derive_seed("glyph-seen", seed) % (1 << 31), **kwargs
        ),
        held_out=SyntheticGlyphVideos(
            num_eval, include=held_out, seed=derive_seed("glyph-held-out", seed) % (1 << 31), **kwargs
        ),
    )
