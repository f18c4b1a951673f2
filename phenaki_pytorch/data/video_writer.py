"""Write a video chunk by chunk, so that memory holds one chunk and not the whole video.

    with VideoWriter("story.mp4", fps=8) as writer:
        for chunk in chunks:            # (c, f, h, w) or (b, c, f, h, w), float in [0, 1] or uint8
            writer.write(chunk)

Containers (.mp4, .webm, ...) are encoded frame by frame through PyAV; a path without a suffix becomes a folder
of PNG frames written as they come; a .gif keeps its frames as uint8 (a quarter of float32) and is written on
close, since GIF encoding needs every frame. Files appear under their name only when `close()` succeeds: until
then they are written under a temporary name beside it, removed if the writer is left through an exception.
"""

from __future__ import annotations

import math
import os
import uuid
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
from PIL import Image
from torch import Tensor

from ..typecheck import typechecked
from .video_io import (
    _ENCODER_OPTIONS,
    _ENCODER_PREFERENCE,
    _FRAME_FILE_RE,
    CONTAINER_EXTS,
    GIF_EXTS,
    PathLike,
    _has_encoder,
    _to_uint8_frames,
    _write_gif,
    video_encoder_for,
)

__all__ = ["VideoWriter"]


class VideoWriter:
    """A video file (or frame folder) written as chunks of frames arrive; see the module docstring.

    ``path``: ``.mp4/.m4v/.mov/.mkv/.webm/.avi`` (PyAV), ``.gif`` (Pillow, on close) or no suffix (a folder of
    ``00000.png, 00001.png, ...``). ``nrow``/``padding`` lay a batch out as a grid as :func:`save_video` does;
    ``codec``/``options`` override the encoder and its settings for containers.
    """

    @typechecked
    def __init__(
        self,
        path: PathLike,
        fps: float | int = 8,
        *,
        nrow: int | None = None,
        padding: int = 2,
        codec: str | None = None,
        options: dict[str, str] | None = None,
    ):
        if isinstance(fps, bool) or not fps > 0 or not math.isfinite(fps):
            raise ValueError(f"fps must be a positive number, got {fps}")
        self.path = Path(path)
        self.suffix = self.path.suffix.lower()
        if self.suffix and self.suffix not in CONTAINER_EXTS + GIF_EXTS:
            raise ValueError(
                f"path {str(self.path)!r}: VideoWriter writes {', '.join(CONTAINER_EXTS + GIF_EXTS)} files or a "
                f"folder of PNG frames (no suffix), got {self.suffix!r}"
            )
        if codec is not None and self.suffix not in CONTAINER_EXTS:
            raise ValueError(f"codec applies to {', '.join(CONTAINER_EXTS)} files, not {str(self.path)!r}")
        if self.suffix in CONTAINER_EXTS:
            if codec is None:
                codec = video_encoder_for(self.suffix)
                if codec is None:
                    wanted = ", ".join(_ENCODER_PREFERENCE[self.suffix])
                    raise ValueError(f"path {str(self.path)!r}: this FFmpeg build has no encoder for {self.suffix} (tried {wanted})")
            elif not _has_encoder(codec):
                raise ValueError(f"codec {codec!r} is not available in this FFmpeg build")
        self.fps = float(fps)
        self.nrow, self.padding = nrow, padding
        self.codec, self.options = codec, dict(options or {})
        self.num_frames = 0
        self.closed = False
        self._size: tuple[int, int] | None = None  # (h, w) of the written frames
        self._gif_frames: list[np.ndarray] = []
        self._container = self._stream = None
        self._partial: Path | None = None
        if self.suffix:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            # the container format follows the suffix, so the temporary name keeps it
            self._partial = self.path.with_name(f".{self.path.stem}.partial-{uuid.uuid4().hex[:8]}{self.path.suffix}")
        else:
            self.path.mkdir(parents=True, exist_ok=True)

    # ------------------------------------------------------------------ writing

    def write(self, video: Tensor) -> None:
        """Append the frames of ``video``: ``(c, f, h, w)`` or ``(b, c, f, h, w)``, float in [0, 1] or uint8;
        every chunk must have the frame size of the first."""
        if self.closed:
            raise ValueError(f"VideoWriter for {str(self.path)!r} is closed")
        if not isinstance(video, Tensor):
            raise TypeError(f"video must be a torch.Tensor, got {type(video).__name__}")
        if video.ndim == 3 or (video.ndim in (4, 5) and video.shape[-3] == 0):
            raise ValueError(f"video must be (c, f, h, w) or (b, c, f, h, w) with at least one frame, got {tuple(video.shape)}")
        frames = _to_uint8_frames(video, self.nrow, self.padding)  # (f, h, w, 3) uint8
        size = frames.shape[1:3]
        if self._size is None:
            self._size = size
        elif size != self._size:
            raise ValueError(f"every chunk must have frames of {self._size}, got {size} (shape {tuple(video.shape)})")
        if self.suffix in CONTAINER_EXTS:
            self._encode(frames)
        elif self.suffix in GIF_EXTS:
            self._gif_frames.extend(frames)
        else:
            for i, frame in enumerate(frames):
                Image.fromarray(frame).save(self.path / f"{self.num_frames + i:05d}.png")
        self.num_frames += len(frames)

    def _encode(self, frames: np.ndarray) -> None:
        h, w = frames.shape[1:3]
        if h % 2 or w % 2:  # 4:2:0 chroma needs even sizes: repeat the last row / column
            frames = np.pad(frames, ((0, 0), (0, h % 2), (0, w % 2), (0, 0)), mode="edge")
        if self._container is None:
            rate = Fraction(self.fps).limit_denominator(1001)
            self._time_base = Fraction(rate.denominator, rate.numerator)
            self._container = av.open(str(self._partial), mode="w")
            stream = self._container.add_stream(self.codec, rate=rate)
            stream.width, stream.height = frames.shape[2], frames.shape[1]
            stream.pix_fmt = "yuvj420p" if self.codec == "mjpeg" else "yuv420p"
            stream.options = {**_ENCODER_OPTIONS.get(self.codec, {}), **self.options}
            self._stream = stream
        for i, array in enumerate(frames):
            frame = av.VideoFrame.from_ndarray(array, format="rgb24")
            frame.pts, frame.time_base = self.num_frames + i, self._time_base
            for packet in self._stream.encode(frame):
                self._container.mux(packet)

    # ------------------------------------------------------------------ closing

    def close(self) -> Path:
        """Finish the file (flush the encoder, write the GIF) and give it its name; returns the path."""
        if self.closed:
            return self.path
        if self.num_frames == 0:
            self.abort()
            raise ValueError(f"no frames were written to {str(self.path)!r}")
        self.closed = True
        if self.suffix in CONTAINER_EXTS:
            for packet in self._stream.encode():
                self._container.mux(packet)
            self._container.close()
        elif self.suffix in GIF_EXTS:
            _write_gif(np.stack(self._gif_frames), self._partial, self.fps)
            self._gif_frames.clear()
        else:  # frames left from an earlier, longer video in the folder would join this one
            for stale in self.path.iterdir():
                if stale.is_file() and _FRAME_FILE_RE.match(stale.name) and int(stale.stem) >= self.num_frames:
                    stale.unlink()
        if self._partial is not None:
            os.replace(self._partial, self.path)
        return self.path

    def abort(self) -> None:
        """Stop without a result: the temporary file is removed (frames already in a folder stay)."""
        self.closed = True
        self._gif_frames.clear()
        if self._container is not None:
            try:
                self._container.close()
            except Exception:  # noqa: BLE001 - the file is being thrown away
                pass
        if self._partial is not None and self._partial.exists():
            self._partial.unlink()

    def __enter__(self) -> VideoWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()
