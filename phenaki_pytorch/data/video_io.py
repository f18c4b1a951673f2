"""Reading and writing videos as tensors.

A video is a float tensor ``(channels, frames, height, width)`` with values in [0, 1], RGB;
a batch is ``(b, c, f, h, w)``.

Readable sources
    * video containers ``.mp4 .m4v .webm .mkv .avi .mov`` (PyAV / FFmpeg, decoded to RGB),
    * ``.gif`` (Pillow; every frame, composited, converted to RGB; frames shown longer than the
      shortest frame are repeated so the timeline has a constant rate),
    * a directory of frames ``.png .jpg .jpeg .webp .bmp`` in natural order (``2.png`` before ``10.png``),
    * a single image file (a one-frame video).

Writable targets: ``.gif`` (Pillow), ``.mp4/.m4v/.mov/.mkv/.webm/.avi`` (PyAV, codec picked from what the local
FFmpeg build offers, see :func:`video_encoder_for`), a directory of PNG frames (a path without a suffix), and
a single image file for one-frame videos.
"""

from __future__ import annotations

import functools
import math
import os
import re
from collections.abc import Sequence
from fractions import Fraction
from pathlib import Path
from typing import Literal

import av
import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageOps, ImageSequence
from torch import Tensor

from ._utils import as_generator, check_positive_int, natural_sort_key, normalize_size, randint, typechecked

__all__ = [
    "FRAME_EXTS",
    "IMAGE_EXTS",
    "VIDEO_EXTS",
    "VideoReadError",
    "read_image",
    "read_video",
    "read_video_clip",
    "save_image",
    "save_video",
    "video_encoder_for",
    "video_grid",
]

CONTAINER_EXTS = (".mp4", ".m4v", ".webm", ".mkv", ".avi", ".mov")
GIF_EXTS = (".gif",)
VIDEO_EXTS = CONTAINER_EXTS + GIF_EXTS
IMAGE_EXTS = (".png", ".jpg", ".jpeg", ".webp", ".bmp")
FRAME_EXTS = IMAGE_EXTS

CropMode = Literal["center", "random", "resize"]
PathLike = str | os.PathLike

# written into GIFs by save_video so a reader can restore frames that Pillow merged because they were identical
_GIF_COMMENT_PREFIX = "phenaki_pytorch frame_ms="
_GIF_COMMENT_RE = re.compile(re.escape(_GIF_COMMENT_PREFIX) + r"(\d+)(?: fps=([0-9.]+))?")


class VideoReadError(ValueError):
    """A file exists but could not be decoded as a video or image."""


# ---------------------------------------------------------------------------------------------------------------
# frame sources: something with a frame count, maybe a frame rate, and random access to decoded RGB uint8 frames
# ---------------------------------------------------------------------------------------------------------------


def _load_image_array(path: Path) -> np.ndarray:
    """(h, w, 3) uint8 RGB, whatever the stored mode (grayscale, palette, alpha, 16 bit)."""
    try:
        with Image.open(path) as img:
            img = ImageOps.exif_transpose(img)
            if img.mode in ("I;16", "I;16B", "I;16L", "I"):
                arr = np.asarray(img).astype(np.float64)
                peak = 65535.0 if img.mode.startswith("I;16") or arr.max() > 255 else 255.0
                arr = np.clip(arr / peak * 255.0 + 0.5, 0, 255).astype(np.uint8)
                return np.repeat(arr[..., None], 3, axis=-1)
            if img.mode == "F":
                arr = np.clip(np.asarray(img) * 255.0 + 0.5, 0, 255).astype(np.uint8)
                return np.repeat(arr[..., None], 3, axis=-1)
            return np.asarray(img.convert("RGB")).copy()
    except (OSError, ValueError, SyntaxError) as err:
        raise VideoReadError(f"cannot read image {str(path)!r}: {err}") from err


class _Source:
    path: Path
    num_frames: int
    fps: float | None

    def get_frames(self, indices: Sequence[int]) -> dict[int, np.ndarray]:
        raise NotImplementedError


class _ContainerSource(_Source):
    """Any container FFmpeg can demux; frames are counted from metadata or packets, decoded on demand."""

    def __init__(self, path: Path):
        self.path = path
        try:
            with av.open(str(path)) as container:
                if not container.streams.video:
                    raise VideoReadError(f"{str(path)!r} has no video stream")
                stream = container.streams.video[0]
                rate = stream.average_rate or stream.guessed_rate or stream.base_rate
                self.fps = float(rate) if rate else None
                count = int(stream.frames or 0)
                if count <= 0:  # webm / mkv store no frame count: count the packets instead (no decoding)
                    count = sum(1 for packet in container.demux(stream) if packet.size > 0)
        except VideoReadError:
            raise
        except (av.FFmpegError, OSError, ValueError, IndexError) as err:
            raise VideoReadError(f"cannot open video {str(path)!r}: {err}") from err
        if count <= 0:
            raise VideoReadError(f"video {str(path)!r} has no frames")
        self.num_frames = count

    def get_frames(self, indices: Sequence[int]) -> dict[int, np.ndarray]:
        wanted = set(indices)
        last = max(wanted)
        out: dict[int, np.ndarray] = {}
        decoded = 0
        reached_end = True
        try:
            with av.open(str(self.path)) as container:
                stream = container.streams.video[0]
                stream.thread_type = "AUTO"
                for index, frame in enumerate(container.decode(stream)):
                    decoded = index + 1
                    if index in wanted:
                        out[index] = frame.to_ndarray(format="rgb24")
                    if index >= last:
                        reached_end = False
                        break
        except (av.FFmpegError, OSError, ValueError) as err:
            raise VideoReadError(f"cannot decode video {str(self.path)!r}: {err}") from err
        if decoded == 0:
            raise VideoReadError(f"video {str(self.path)!r} has no decodable frames")
        if reached_end:  # the whole stream was decoded: now the true frame count is known
            self.num_frames = decoded
        return out


class _GifSource(_Source):
    def __init__(self, path: Path):
        self.path = path
        frames: list[np.ndarray] = []
        durations: list[int] = []
        comment = b""
        try:
            with Image.open(path) as img:
                for frame in ImageSequence.Iterator(img):
                    frames.append(np.asarray(frame.convert("RGB")).copy())
                    durations.append(int(frame.info.get("duration", 0) or 0))
                    comment = frame.info.get("comment", comment) or comment
                comment = img.info.get("comment", comment) or comment
        except (OSError, ValueError, SyntaxError, EOFError) as err:
            raise VideoReadError(f"cannot read gif {str(path)!r}: {err}") from err
        if not frames:
            raise VideoReadError(f"gif {str(path)!r} has no frames")
        # browsers show delays of 10 ms or less as 100 ms; do the same
        durations = [d if d > 10 else 100 for d in durations]
        if isinstance(comment, bytes):
            comment = comment.decode("utf-8", "ignore")
        match = _GIF_COMMENT_RE.search(str(comment))
        base = int(match.group(1)) if match else min(durations)
        base = max(base, 1)
        repeats = [max(1, round(d / base)) for d in durations]
        self._frames = frames
        self._timeline = [i for i, r in enumerate(repeats) for _ in range(r)]
        self.num_frames = len(self._timeline)
        # the exact rate save_video was given (GIF delays are whole hundredths of a second)
        self.fps = float(match.group(2)) if match and match.group(2) else 1000.0 / base

    def get_frames(self, indices: Sequence[int]) -> dict[int, np.ndarray]:
        return {i: self._frames[self._timeline[i]] for i in set(indices) if 0 <= i < self.num_frames}


class _FolderSource(_Source):
    def __init__(self, path: Path):
        self.path = path
        files = [p for p in path.iterdir() if p.is_file() and p.suffix.lower() in FRAME_EXTS]
        if not files:
            raise VideoReadError(f"frame folder {str(path)!r} holds no image files ({', '.join(FRAME_EXTS)})")
        self._files = sorted(files, key=lambda p: natural_sort_key(p.name))
        self.num_frames = len(self._files)
        self.fps = None

    def get_frames(self, indices: Sequence[int]) -> dict[int, np.ndarray]:
        return {i: _load_image_array(self._files[i]) for i in set(indices) if 0 <= i < self.num_frames}


class _ImageSource(_Source):
    def __init__(self, path: Path):
        self.path = path
        self.num_frames = 1
        self.fps = None

    def get_frames(self, indices: Sequence[int]) -> dict[int, np.ndarray]:
        return {0: _load_image_array(self.path)} if 0 in set(indices) else {}


def _open_source(path: PathLike) -> _Source:
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"path {str(path)!r} does not exist")
    if path.is_dir():
        return _FolderSource(path)
    suffix = path.suffix.lower()
    if suffix in GIF_EXTS:
        return _GifSource(path)
    if suffix in CONTAINER_EXTS:
        return _ContainerSource(path)
    if suffix in IMAGE_EXTS:
        return _ImageSource(path)
    raise ValueError(
        f"path {str(path)!r}: unsupported file type {suffix!r}; expected one of "
        f"{', '.join(VIDEO_EXTS + IMAGE_EXTS)} or a directory of frames"
    )


# ---------------------------------------------------------------------------------------------------------------
# temporal and spatial sampling
# ---------------------------------------------------------------------------------------------------------------


def _frame_offsets(count: int, step: float) -> list[int]:
    return [int(math.floor(k * step + 1e-6)) for k in range(count)]


def _select_indices(
    total: int,
    num_frames: int | None,
    step: float,
    start: int | None,
    random_crop_time: bool,
    generator: torch.Generator | None,
) -> list[int]:
    """Source frame indices of the clip (indices >= total mean "missing, pad")."""
    if start is not None and start >= total:
        raise ValueError(f"start must be smaller than the number of frames ({total}), got {start}")
    if num_frames is None:
        first = start or 0
        available = total - first
        count = max(1, math.ceil(available / step - 1e-6))
        offsets = [o for o in _frame_offsets(count, step) if o < available]
        return [first + o for o in offsets]
    offsets = _frame_offsets(num_frames, step)
    span = offsets[-1] + 1
    if start is not None:
        first = start
    elif random_crop_time:
        first = randint(0, max(0, total - span), generator)
    else:
        first = 0
    return [first + o for o in offsets]


def _resize_crop(frames: Tensor, size: tuple[int, int] | None, crop: str, generator: torch.Generator | None) -> Tensor:
    """frames (f, c, h, w) float -> (f, c, *size): resize the shorter side to cover size, then crop."""
    if size is None:
        return frames
    th, tw = size
    h, w = frames.shape[-2:]
    if crop == "resize":
        if (h, w) != (th, tw):
            frames = F.interpolate(frames, size=(th, tw), mode="bilinear", align_corners=False, antialias=True)
        return frames.clamp_(0.0, 1.0)
    scale = max(th / h, tw / w)
    nh, nw = max(th, round(h * scale)), max(tw, round(w * scale))
    if (nh, nw) != (h, w):
        frames = F.interpolate(frames, size=(nh, nw), mode="bilinear", align_corners=False, antialias=True)
        frames = frames.clamp_(0.0, 1.0)
    if crop == "random":
        top, left = randint(0, nh - th, generator), randint(0, nw - tw, generator)
    else:
        top, left = (nh - th) // 2, (nw - tw) // 2
    return frames[..., top : top + th, left : left + tw]


def _to_float_frames(arrays: list[np.ndarray], path: Path) -> Tensor:
    shapes = {a.shape for a in arrays}
    if len(shapes) > 1:
        raise VideoReadError(f"frames of {str(path)!r} differ in size: {sorted(shapes)}")
    stacked = torch.from_numpy(np.ascontiguousarray(np.stack(arrays)))  # (f, h, w, 3) uint8
    return stacked.permute(0, 3, 1, 2).float().div_(255.0)  # (f, 3, h, w)


def _check_common(stride: int, fps: float | None, crop: str, source_fps: float | None) -> None:
    check_positive_int("stride", stride)
    if fps is not None:
        if not fps > 0 or not math.isfinite(fps):
            raise ValueError(f"fps must be a positive number, got {fps}")
        if stride != 1:
            raise ValueError(f"pass either stride or fps, not both (got stride={stride}, fps={fps})")
    if source_fps is not None and (not source_fps > 0 or not math.isfinite(source_fps)):
        raise ValueError(f"source_fps must be a positive number, got {source_fps}")
    if crop not in ("center", "random", "resize"):
        raise ValueError(f"crop must be 'center', 'random' or 'resize', got {crop!r}")


def _read(
    path: PathLike,
    num_frames: int | None,
    stride: int,
    fps: float | None,
    start: int | None,
    random_crop_time: bool,
    generator: torch.Generator | int | None,
    image_size: int | tuple[int, int] | None,
    crop: str,
    source_fps: float | None,
) -> tuple[Tensor, int]:
    """(c, f_real, h, w) real frames and how many frames the padded clip should have."""
    check_positive_int("num_frames", num_frames, allow_none=True)
    _check_common(stride, fps, crop, source_fps)
    if random_crop_time and num_frames is None:
        raise ValueError("random_crop_time=True needs num_frames (a clip of every frame has no start to choose)")
    if start is not None:
        if start < 0:
            raise ValueError(f"start must be >= 0, got {start}")
        if random_crop_time:
            raise ValueError("pass either start or random_crop_time=True, not both")
    size = normalize_size("image_size", image_size)
    gen = as_generator(generator)

    source = _open_source(path)
    step = float(stride)
    if fps is not None:
        rate = source_fps or source.fps
        if rate is None:
            raise ValueError(
                f"fps={fps} needs the source frame rate, and {str(source.path)!r} has none; pass source_fps= or use stride"
            )
        step = rate / fps

    # the second pass only happens when a container announced more frames than it decodes
    for _ in range(2):
        total = source.num_frames
        state = gen.get_state() if gen is not None else None
        indices = _select_indices(total, num_frames, step, start, random_crop_time, gen)
        frames = source.get_frames([i for i in indices if i < total])
        if source.num_frames == total or all(i in frames for i in indices):
            break
        if state is not None:
            gen.set_state(state)  # same draw against the corrected length
    real = [frames[i] for i in indices if i in frames]
    if not real:
        raise VideoReadError(f"no frames could be read from {str(source.path)!r} (start={start})")
    # frames are contiguous from the clip start, anything missing is at the end
    video = _to_float_frames(real, source.path)
    video = _resize_crop(video, size, crop, gen)
    target = len(indices) if num_frames is None else num_frames
    return video.permute(1, 0, 2, 3).contiguous(), target


@typechecked
def read_video_clip(
    path: PathLike,
    num_frames: int | None = None,
    *,
    stride: int = 1,
    fps: float | int | None = None,
    start: int | None = None,
    random_crop_time: bool = False,
    generator: torch.Generator | int | None = None,
    image_size: int | tuple[int, int] | None = None,
    crop: CropMode = "center",
    source_fps: float | int | None = None,
) -> tuple[Tensor, Tensor]:
    """Read a clip of exactly ``num_frames`` frames: ``(video (c, num_frames, h, w), frame_mask (num_frames,))``.

    When the source runs out before ``num_frames`` frames, the missing frames are zeros and
    ``frame_mask`` is False for them (True for real frames). With ``num_frames=None`` every sampled
    frame is returned and the mask is all True.

    Args:
        path: a video file, a .gif, a directory of frames or an image.
        num_frames: frames in the clip, or None for all.
        stride: take every ``stride``-th source frame.
        fps: resample to this frame rate instead (uses the source's average rate; frames are repeated
            when ``fps`` is above it). Mutually exclusive with ``stride``.
        start: first source frame (fixed start); exclusive with ``random_crop_time``.
        random_crop_time: pick the start uniformly among the positions where the clip fits, using ``generator``.
        generator: a ``torch.Generator`` or an int seed for random start / random crop.
        image_size: int (square) or (height, width); the frames are resized so they cover it (aspect kept,
            antialiased) and then cropped. None keeps the source size.
        crop: "center", "random" (uses ``generator``) or "resize" (stretch to size, no crop).
        source_fps: frame rate to assume for the source (frame folders have none).
    """
    video, target = _read(
        path, num_frames, stride, fps, start, random_crop_time, generator, image_size, crop, source_fps
    )
    real = video.shape[1]
    mask = torch.zeros(target, dtype=torch.bool)
    mask[:real] = True
    if real < target:
        pad = video.new_zeros((video.shape[0], target - real, *video.shape[2:]))
        video = torch.cat((video, pad), dim=1)
    return video, mask


@typechecked
def read_video(
    path: PathLike,
    num_frames: int | None = None,
    *,
    stride: int = 1,
    fps: float | int | None = None,
    start: int | None = None,
    random_crop_time: bool = False,
    generator: torch.Generator | int | None = None,
    image_size: int | tuple[int, int] | None = None,
    crop: CropMode = "center",
    source_fps: float | int | None = None,
    return_mask: bool = False,
) -> Tensor | tuple[Tensor, Tensor]:
    """Read a video as a float tensor ``(c, f, h, w)`` in [0, 1], RGB.

    Same arguments as :func:`read_video_clip`. Without ``return_mask`` only real frames are returned, so a
    source shorter than ``num_frames`` gives fewer frames (never zero padding posing as frames);
    ``return_mask=True`` returns the padded clip and its frame mask, exactly like :func:`read_video_clip`.
    """
    if return_mask:
        return read_video_clip(
            path,
            num_frames,
            stride=stride,
            fps=fps,
            start=start,
            random_crop_time=random_crop_time,
            generator=generator,
            image_size=image_size,
            crop=crop,
            source_fps=source_fps,
        )
    video, _ = _read(path, num_frames, stride, fps, start, random_crop_time, generator, image_size, crop, source_fps)
    return video


@typechecked
def read_image(
    path: PathLike,
    image_size: int | tuple[int, int] | None = None,
    crop: CropMode = "center",
    generator: torch.Generator | int | None = None,
) -> Tensor:
    """Read an image as ``(3, h, w)`` float in [0, 1], RGB (grayscale / palette / alpha images converted)."""
    _check_common(1, None, crop, None)
    size = normalize_size("image_size", image_size)
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"image {str(path)!r} does not exist or is not a file")
    frames = _to_float_frames([_load_image_array(path)], path)
    return _resize_crop(frames, size, crop, as_generator(generator))[0].contiguous()


# ---------------------------------------------------------------------------------------------------------------
# writing
# ---------------------------------------------------------------------------------------------------------------


@typechecked
def video_grid(videos: Tensor, nrow: int | None = None, padding: int = 2, pad_value: float = 0.0) -> Tensor:
    """Lay a batch ``(b, c, f, h, w)`` out as one video ``(c, f, H, W)``: ``nrow`` videos per row
    (default ``ceil(sqrt(b))``), ``padding`` pixels around and between them filled with ``pad_value``
    (in [0, 1]; scaled to 255 for uint8 input)."""
    if videos.ndim != 5:
        raise ValueError(f"videos must be (b, c, f, h, w), got shape {tuple(videos.shape)}")
    check_positive_int("nrow", nrow, allow_none=True)
    if padding < 0:
        raise ValueError(f"padding must be >= 0, got {padding}")
    b, c, f, h, w = videos.shape
    if b == 0:
        raise ValueError("videos is an empty batch (b = 0)")
    ncol = min(b, nrow or math.ceil(math.sqrt(b)))
    nrows = math.ceil(b / ncol)
    fill = pad_value * 255 if videos.dtype == torch.uint8 else pad_value
    grid = videos.new_full((c, f, nrows * (h + padding) + padding, ncol * (w + padding) + padding), fill)
    for i in range(b):
        r, col = divmod(i, ncol)
        top, left = padding + r * (h + padding), padding + col * (w + padding)
        grid[:, :, top : top + h, left : left + w] = videos[i]
    return grid


def _to_uint8_frames(video: Tensor, nrow: int | None, padding: int) -> np.ndarray:
    """Any accepted video tensor -> (f, h, w, 3) uint8 numpy."""
    if video.ndim == 5:
        video = video[0] if video.shape[0] == 1 else video_grid(video, nrow=nrow, padding=padding)
    elif video.ndim == 3:  # a single image (c, h, w)
        video = video.unsqueeze(1)
    elif video.ndim != 4:
        raise ValueError(f"video must be (c, f, h, w) or (b, c, f, h, w), got shape {tuple(video.shape)}")
    video = video.detach().cpu()
    c, f, h, w = video.shape
    if c not in (1, 3, 4):
        raise ValueError(
            f"video must have 1 (gray), 3 (RGB) or 4 (RGBA) channels, got {c} (shape {tuple(video.shape)})"
        )
    if 0 in (f, h, w):
        raise ValueError(f"video is empty, shape {tuple(video.shape)}")
    if video.dtype == torch.uint8:
        data = video
    elif video.is_floating_point():
        data = video.float().nan_to_num(0.0).clamp(0.0, 1.0).mul(255.0).round_().to(torch.uint8)
    else:
        raise TypeError(f"video must be a float tensor in [0, 1] or uint8, got dtype {video.dtype}")
    if c == 1:
        data = data.expand(3, -1, -1, -1)
    elif c == 4:
        data = data[:3]
    return data.permute(1, 2, 3, 0).contiguous().numpy()


@functools.cache
def _has_encoder(name: str) -> bool:
    try:
        av.codec.Codec(name, "w")
    except Exception:
        return False
    return True


_ENCODER_PREFERENCE = {
    ".mp4": ("libx264", "h264", "mpeg4"),
    ".m4v": ("libx264", "h264", "mpeg4"),
    ".mov": ("libx264", "h264", "mpeg4"),
    ".mkv": ("libx264", "h264", "libvpx-vp9", "ffv1", "mpeg4"),
    ".webm": ("libvpx-vp9", "libvpx", "libsvtav1", "libaom-av1"),
    ".avi": ("mpeg4", "mjpeg", "libx264"),
}

_ENCODER_OPTIONS = {
    "libx264": {"crf": "17", "preset": "medium"},
    "libvpx-vp9": {"crf": "20", "b:v": "0", "row-mt": "1", "cpu-used": "4"},
    "libvpx": {"crf": "10", "b:v": "2M"},
    "mpeg4": {"qscale": "2"},
    "mjpeg": {"qscale": "2"},
}


@typechecked
def video_encoder_for(path: PathLike) -> str | None:
    """The encoder :func:`save_video` would use for this file name or suffix (".webm"), or None when the local
    FFmpeg build has none (or the suffix is not a video container)."""
    text = os.fspath(path)
    suffix = (text if text.startswith(".") and "/" not in text else Path(text).suffix).lower()
    for name in _ENCODER_PREFERENCE.get(suffix, ()):
        if _has_encoder(name):
            return name
    return None


def _write_container(
    frames: np.ndarray, path: Path, fps: float, codec: str | None, options: dict[str, str] | None
) -> None:
    suffix = path.suffix.lower()
    if codec is None:
        codec = video_encoder_for(suffix)
        if codec is None:
            wanted = ", ".join(_ENCODER_PREFERENCE[suffix])
            raise ValueError(f"path {str(path)!r}: this FFmpeg build has no encoder for {suffix} (tried {wanted})")
    elif not _has_encoder(codec):
        raise ValueError(f"codec {codec!r} is not available in this FFmpeg build")
    pix_fmt = "yuvj420p" if codec == "mjpeg" else "yuv420p"
    f, h, w, _ = frames.shape
    if h % 2 or w % 2:  # 4:2:0 chroma needs even sizes: repeat the last row / column
        frames = np.pad(frames, ((0, 0), (0, h % 2), (0, w % 2), (0, 0)), mode="edge")
        h, w = h + h % 2, w + w % 2
    rate = Fraction(fps).limit_denominator(1001)
    opts = dict(_ENCODER_OPTIONS.get(codec, {}))
    opts.update(options or {})
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream(codec, rate=rate)
        stream.width, stream.height, stream.pix_fmt = w, h, pix_fmt
        stream.options = opts
        time_base = Fraction(rate.denominator, rate.numerator)
        for i in range(f):
            frame = av.VideoFrame.from_ndarray(frames[i], format="rgb24")
            frame.pts, frame.time_base = i, time_base
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


def _write_gif(frames: np.ndarray, path: Path, fps: float) -> None:
    # GIF delays are in hundredths of a second; browsers clamp delays under 20 ms
    frame_ms = max(2, round(100.0 / fps)) * 10
    images = [Image.fromarray(frame) for frame in frames]
    images[0].save(
        path,
        format="GIF",
        save_all=True,
        append_images=images[1:],
        duration=frame_ms,
        loop=0,
        comment=f"{_GIF_COMMENT_PREFIX}{frame_ms} fps={fps:.6f}".encode(),
    )


_FRAME_FILE_RE = re.compile(r"^\d{5,}\.png$")


def _write_frame_folder(frames: np.ndarray, path: Path) -> None:
    path.mkdir(parents=True, exist_ok=True)
    names = {f"{i:05d}.png" for i in range(len(frames))}
    for stale in path.iterdir():  # frames left from an earlier, longer save would join this video
        if stale.is_file() and _FRAME_FILE_RE.match(stale.name) and stale.name not in names:
            stale.unlink()
    for i, frame in enumerate(frames):
        Image.fromarray(frame).save(path / f"{i:05d}.png")


@typechecked
def save_video(
    video: Tensor,
    path: PathLike,
    fps: float | int = 8,
    *,
    nrow: int | None = None,
    padding: int = 2,
    codec: str | None = None,
    options: dict[str, str] | None = None,
) -> Path:
    """Write a video and return its path (parent folders are created).

    ``video`` is ``(c, f, h, w)`` or ``(b, c, f, h, w)`` (b > 1 is laid out as a grid, see :func:`video_grid`),
    float in [0, 1] (clamped) or uint8, with 1, 3 or 4 (alpha dropped) channels. The format follows the suffix:
    ``.gif`` (Pillow, loops forever), ``.mp4/.m4v/.mov/.mkv/.webm/.avi`` (PyAV; odd sizes are padded to even by
    repeating the last row/column), an image suffix for a single frame, or no suffix for a directory of PNG
    frames ``00000.png, 00001.png, ...``. ``codec``/``options`` override the encoder and its settings.
    """
    if not fps > 0 or not math.isfinite(fps):
        raise ValueError(f"fps must be a positive number, got {fps}")
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix and suffix not in VIDEO_EXTS + IMAGE_EXTS:
        raise ValueError(
            f"path {str(path)!r}: unsupported suffix {suffix!r}; expected one of {', '.join(VIDEO_EXTS + IMAGE_EXTS)} "
            "or no suffix (a folder of PNG frames)"
        )
    if codec is not None and suffix not in CONTAINER_EXTS:
        raise ValueError(f"codec applies to {', '.join(CONTAINER_EXTS)} files, not {str(path)!r}")
    frames = _to_uint8_frames(video, nrow, padding)
    if suffix in IMAGE_EXTS and frames.shape[0] != 1:
        raise ValueError(
            f"path {str(path)!r} is an image but the video has {frames.shape[0]} frames; "
            "use .gif/.mp4 or a folder path without suffix"
        )
    if suffix:
        path.parent.mkdir(parents=True, exist_ok=True)
    if suffix == "":
        _write_frame_folder(frames, path)
    elif suffix in GIF_EXTS:
        _write_gif(frames, path, float(fps))
    elif suffix in IMAGE_EXTS:
        Image.fromarray(frames[0]).save(path)
    else:
        _write_container(frames, path, float(fps), codec, options)
    return path


@typechecked
def save_image(image: Tensor, path: PathLike) -> Path:
    """Write ``(c, h, w)`` (or a one-frame ``(c, 1, h, w)``) float in [0, 1] / uint8 to an image file."""
    if image.ndim not in (3, 4) or (image.ndim == 4 and image.shape[1] != 1):
        raise ValueError(f"image must be (c, h, w) or (c, 1, h, w), got shape {tuple(image.shape)}")
    path = Path(path)
    if path.suffix.lower() not in IMAGE_EXTS:
        raise ValueError(f"path {str(path)!r} must end in one of {', '.join(IMAGE_EXTS)}")
    return save_video(image if image.ndim == 4 else image.unsqueeze(1), path)
