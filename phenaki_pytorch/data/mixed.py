"""Joint image + video training (the Phenaki paper's recipe): one stream of clips, a set fraction of them images.

An image becomes a one-frame clip padded with zero frames to the videos' length; its ``frame_mask`` is True
for the first frame only, so the padded frames enter no loss (C-ViViT's reconstruction, quantizer and
discriminator inputs; MaskGit's masked tokens and attention all honour the mask).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator, Sequence
from fractions import Fraction
from typing import Any

import torch
from torch import Tensor
from torch.utils.data import Dataset, IterableDataset

from ._utils import check_index, check_positive_int, derive_seed, typechecked

__all__ = ["MixedImageVideoDataset", "MixedImageVideoStream", "image_as_clip"]


@typechecked
def image_as_clip(image: Tensor, num_frames: int, frame_mask: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """An image ``(c, h, w)`` or one-frame clip ``(c, 1, h, w)`` as ``(c, num_frames, h, w)`` (zeros after the first
    frame) and its frame mask ``(num_frames,)``, True for the first frame only. A clip that already has
    `num_frames` frames is returned as is (with `frame_mask`, or all frames real)."""
    check_positive_int("num_frames", num_frames)
    if image.ndim == 3:
        image = image.unsqueeze(1)
    if image.ndim != 4:
        raise ValueError(f"image must be (c, h, w) or (c, 1, h, w), got shape {tuple(image.shape)}")
    frames = image.shape[1]
    if frames == num_frames:
        mask = frame_mask if frame_mask is not None else torch.ones(frames, dtype=torch.bool)
        return image, mask.bool()
    if frames != 1:
        raise ValueError(f"image must have 1 frame (or already {num_frames}), got {frames} frames")
    clip = image.new_zeros(image.shape[0], num_frames, *image.shape[2:])
    clip[:, :1] = image
    mask = torch.zeros(num_frames, dtype=torch.bool)
    mask[0] = True
    return clip, mask


def _unpack(item: Any, position: str) -> tuple[Tensor, Tensor | None, str | None]:
    """(video or image tensor, frame mask or None, text or None) from a dict, a tuple or a bare tensor."""
    mask = text = None
    if isinstance(item, dict):
        video = item.get("video", item.get("image"))
        if video is None:
            raise ValueError(f"{position} is a dict without a 'video' or 'image' key (keys {sorted(item)})")
        mask = item.get("frame_mask")
        text = item.get("text", item.get("caption"))
    elif isinstance(item, (tuple, list)) and item:
        video = item[0]
        for part in item[1:]:
            if isinstance(part, str):
                text = part
            elif isinstance(part, Tensor) and part.dtype == torch.bool:
                mask = part
    else:
        video = item
    if not isinstance(video, Tensor):
        raise TypeError(f"{position}: the video/image must be a torch.Tensor, got {type(video).__name__}")
    if text is not None and not isinstance(text, str):
        raise TypeError(f"{position}: the caption must be a str, got {type(text).__name__}")
    return video, mask, text


def _as_item(video: Tensor, mask: Tensor, text: str | None) -> dict[str, Any]:
    item: dict[str, Any] = {"video": video, "frame_mask": mask}
    if text is not None:
        item["text"] = text
    return item


def _check_fraction(image_fraction: float) -> Fraction:
    if not 0.0 <= image_fraction <= 1.0 or math.isnan(image_fraction):
        raise ValueError(f"image_fraction must be in [0, 1], got {image_fraction}")
    return Fraction(image_fraction).limit_denominator(1_000_000)


def _check_frames(num_frames: int, temporal_patch_size: int | None) -> None:
    check_positive_int("num_frames", num_frames)
    if temporal_patch_size is not None:
        check_positive_int("temporal_patch_size", temporal_patch_size)
        if (num_frames - 1) % temporal_patch_size:
            below = num_frames - (num_frames - 1) % temporal_patch_size
            raise ValueError(
                f"num_frames={num_frames} cannot be tokenized: it must be 1 + k * {temporal_patch_size}, nearest "
                f"valid: {(below, below + temporal_patch_size)}"
            )


class _Interleave:
    """Which positions are images: position i is one iff floor((i + 1 + phase) p) > floor((i + phase) p).

    Every run of n consecutive positions then holds floor(n p) or ceil(n p) images (the ratio holds in every
    window, not only on average); the seeded phase decides where the pattern starts.
    """

    def __init__(self, fraction: Fraction, seed: int):
        self.num, self.den = fraction.numerator, fraction.denominator
        self.phase = derive_seed(seed, "phase") % self.den

    def images_before(self, i: int) -> int:
        return ((i + self.phase) * self.num) // self.den - (self.phase * self.num) // self.den

    def is_image(self, i: int) -> bool:
        return self.images_before(i + 1) > self.images_before(i)


class MixedImageVideoDataset(Dataset):
    """Map-style mix of an image-caption dataset and a video-caption dataset: item ``i`` is an image or a video by
    a fixed seeded rule, a fraction `image_fraction` of them images.

    Items are ``{"video": (c, num_frames, h, w), "frame_mask": (num_frames,) bool[, "text"]}``, batched by
    ``collate_videos`` / ``collate_clips``; images are padded by :func:`image_as_clip`. Both datasets must carry
    captions, or neither.

    Args:
        images: items ``{"video" or "image": (c, h, w) / (c, 1, h, w)[, "text"]}``, ``(image, text)`` tuples or
            tensors (e.g. an :class:`ImageDataset`, or a :class:`CaptionedVideoDataset` of images).
        videos: clips of `num_frames` frames (``{"video", "frame_mask", "text"}`` dicts, tuples or tensors).
        image_fraction: share of images in [0, 1]; any ``n`` consecutive indices hold ``floor(n * image_fraction)``
            or ``ceil(...)`` images, the whole dataset ``round``-ish of ``len * image_fraction`` (within one).
        num_frames: clip length (default: ``videos.num_frames``, else the first video's length).
        temporal_patch_size: if given, `num_frames` is checked to be ``1 + k * temporal_patch_size``.
        length: items per epoch (default: enough slots that every video appears once per epoch).
        seed: the interleaving phase and which image / video fills each slot.

    Deterministic: item ``i`` depends only on ``(seed, epoch, i)`` (:meth:`set_epoch`, called by the trainers, is
    passed on to both datasets), so the trainers' exact resume holds. Image slots walk through the images in a
    seeded order that continues across epochs (every image is used once before any repeats), and so do video slots.
    """

    @typechecked
    def __init__(
        self,
        images: Dataset | Sequence,
        videos: Dataset | Sequence,
        *,
        image_fraction: float,
        num_frames: int | None = None,
        temporal_patch_size: int | None = None,
        length: int | None = None,
        seed: int = 0,
    ):
        self.fraction = _check_fraction(image_fraction)
        self.image_fraction = float(image_fraction)
        self.images, self.videos = images, videos
        self.num_images = len(images) if hasattr(images, "__len__") else 0
        self.num_videos = len(videos) if hasattr(videos, "__len__") else 0
        if self.fraction > 0 and self.num_images == 0:
            raise ValueError(f"image_fraction={image_fraction} needs a non-empty map-style images dataset")
        if self.fraction < 1 and self.num_videos == 0:
            raise ValueError(f"image_fraction={image_fraction} needs a non-empty map-style videos dataset")
        if num_frames is None:
            num_frames = getattr(videos, "num_frames", None)
            if num_frames is None:
                if self.num_videos == 0:
                    raise ValueError("num_frames is needed when there are no videos to take it from")
                num_frames = int(_unpack(videos[0], "videos[0]")[0].shape[1])
        _check_frames(num_frames, temporal_patch_size)
        self.num_frames = num_frames
        if length is None:
            if self.fraction == 1:
                length = self.num_images
            else:
                length = math.ceil(self.num_videos / (1 - self.fraction))
        check_positive_int("length", length)
        self.length = length
        self.seed = seed
        self.epoch = 0
        self._rule = _Interleave(self.fraction, seed)
        self._orders: dict[tuple[str, int], list[int]] = {}

    def __len__(self) -> int:
        return self.length

    @property
    def num_image_slots(self) -> int:
        """How many of the ``len(self)`` items are images."""
        return self._rule.images_before(self.length)

    def is_image(self, index: int) -> bool:
        """Whether item `index` is an image."""
        return self._rule.is_image(check_index(index, self.length))

    def set_epoch(self, epoch: int) -> None:
        """Which images and videos fill the slots moves on every epoch; passed on to both datasets."""
        self.epoch = int(epoch)
        for dataset in (self.images, self.videos):
            if hasattr(dataset, "set_epoch"):
                dataset.set_epoch(epoch)

    def _source_index(self, name: str, draw: int, size: int) -> int:
        cycle, k = divmod(draw, size)
        key = (name, cycle)
        if key not in self._orders:
            if len(self._orders) > 8:
                self._orders.clear()
            generator = torch.Generator().manual_seed(derive_seed(self.seed, name, cycle))
            self._orders[key] = torch.randperm(size, generator=generator).tolist()
        return self._orders[key][k]

    def __getitem__(self, index: int) -> dict[str, Any]:
        index = check_index(index, self.length)
        images_before = self._rule.images_before(index)
        if self._rule.is_image(index):
            draw = self.epoch * self.num_image_slots + images_before
            j = self._source_index("images", draw, self.num_images)
            image, mask, text = _unpack(self.images[j], f"images[{j}]")
            clip, mask = image_as_clip(image, self.num_frames, mask if image.ndim == 4 else None)
            return _as_item(clip, mask, text)
        video_slots = self.length - self.num_image_slots
        draw = self.epoch * video_slots + (index - images_before)
        j = self._source_index("videos", draw, self.num_videos)
        return _video_item(self.videos[j], f"videos[{j}]", self.num_frames)


def _video_item(item: Any, position: str, num_frames: int) -> dict[str, Any]:
    video, mask, text = _unpack(item, position)
    if video.ndim != 4 or video.shape[1] != num_frames:
        raise ValueError(f"{position}: expected a (c, {num_frames}, h, w) clip, got shape {tuple(video.shape)}")
    if mask is None:
        mask = torch.ones(num_frames, dtype=torch.bool)
    return _as_item(video, mask.bool(), text)


class MixedImageVideoStream(IterableDataset):
    """Iterable counterpart of :class:`MixedImageVideoDataset` for streams such as two :class:`ShardedDataset`
    (images written as one-frame clips, videos as clips): position ``i`` of the stream is an image or a video by the
    same seeded rule. One epoch is one pass over `videos`; `images` restart when they run out (with
    ``image_fraction=1``, one pass over `images`). :meth:`set_epoch` is passed on to both.

    Each DataLoader worker mixes the part of both streams it reads, so the fraction holds per worker. Resume is
    at epoch boundaries only (call ``set_epoch``): the sub-streams' mid-epoch state is not recorded.
    """

    @typechecked
    def __init__(
        self,
        images: Iterable,
        videos: Iterable,
        *,
        image_fraction: float,
        num_frames: int,
        temporal_patch_size: int | None = None,
        seed: int = 0,
    ):
        self.fraction = _check_fraction(image_fraction)
        _check_frames(num_frames, temporal_patch_size)
        self.images, self.videos = images, videos
        self.num_frames, self.seed, self.epoch = num_frames, seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)
        for stream in (self.images, self.videos):
            if hasattr(stream, "set_epoch"):
                stream.set_epoch(epoch)

    def _images(self) -> Iterator[Any]:
        while True:
            empty = True
            for item in self.images:
                empty = False
                yield item
            if empty:
                raise ValueError("the images stream yielded nothing")
            if self.fraction == 1:
                return

    def __iter__(self) -> Iterator[dict[str, Any]]:
        rule = _Interleave(self.fraction, derive_seed(self.seed, self.epoch))
        images = self._images() if self.fraction > 0 else iter(())
        videos = iter(self.videos) if self.fraction < 1 else iter(())
        i = 0
        while True:
            if rule.is_image(i):
                item = next(images, None)
                if item is None:
                    return
                image, mask, text = _unpack(item, "an images item")
                clip, mask = image_as_clip(image, self.num_frames, mask if image.ndim == 4 else None)
                yield _as_item(clip, mask, text)
            else:
                item = next(videos, None)
                if item is None:
                    return
                yield _video_item(item, "a videos item", self.num_frames)
            i += 1
