"""Datasets of videos, images and captioned videos, plus a collate function.

Every dataset yields dicts ``{"video": (c, f, h, w) float in [0, 1], "frame_mask": (f,) bool}`` (and ``"text"``
for captioned data). A clip shorter than ``num_frames`` is padded with zero frames whose ``frame_mask`` is False.

Unreadable files never end an epoch: the first time a file fails it is reported with a
:class:`UnreadableFileWarning` naming it, recorded in ``dataset.skipped_paths`` / ``dataset.num_skipped``, and
``__getitem__`` moves on to the next readable item (at most ``max_tries`` failed reads per call, then a
RuntimeError). ``validate=True`` probes every file at construction instead, so ``len(dataset)`` excludes bad ones.
With DataLoader workers the skip bookkeeping happens inside each worker process, so the main process's
``num_skipped`` only sees what it read itself (or what ``validate=True`` found).

Random temporal/spatial crops are seeded from ``(seed, epoch, index, ...)``: a fresh dataset gives the same items
for the same seed; call :meth:`set_epoch` (or use DataLoader workers, whose seeds change every epoch) for new crops.
"""

from __future__ import annotations

import csv
import json
import os
import warnings
from collections import defaultdict
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor
from torch.utils.data import Dataset, get_worker_info

from ._utils import check_index, check_positive_int, derive_seed, natural_sort_key, normalize_size, typechecked
from .video_io import IMAGE_EXTS, VIDEO_EXTS, CropMode, PathLike, _open_source, read_video_clip

__all__ = [
    "CaptionedVideoDataset",
    "ImageDataset",
    "UnreadableFileWarning",
    "VideoDataset",
    "collate_videos",
]

PATH_KEYS = ("video", "path", "file")
CAPTION_KEYS = ("caption", "text")


class UnreadableFileWarning(UserWarning):
    """A dataset file could not be read and is skipped."""


def _normalize_exts(name: str, exts: Iterable[str]) -> tuple[str, ...]:
    if isinstance(exts, str):
        raise TypeError(f"{name} must be a collection of suffixes like ('.mp4', '.gif'), got the string {exts!r}")
    out = tuple(e.lower() if e.startswith(".") else f".{e.lower()}" for e in exts)
    if not out:
        raise ValueError(f"{name} must not be empty")
    return out


def _sorted_paths(paths: Iterable[Path]) -> list[Path]:
    return sorted(paths, key=lambda p: natural_sort_key(str(p)))


def _find_media(root: Path, exts: tuple[str, ...], frame_folders: bool) -> list[Path]:
    """Files under root with a suffix in exts, plus (if frame_folders) directories of frames, recursively.

    A directory is a frame folder when it directly holds image files, no video files and no subdirectories.
    Hidden files and directories (names starting with ".") are ignored.
    """
    found: list[Path] = []
    for dirpath, dirnames, filenames in os.walk(root, followlinks=True):
        here = Path(dirpath)
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        filenames = [name for name in filenames if not name.startswith(".")]  # e.g. macOS "._clip.mp4" junk
        suffixes = {Path(name).suffix.lower() for name in filenames}
        if frame_folders and not dirnames and suffixes & set(IMAGE_EXTS) and not suffixes & set(VIDEO_EXTS):
            found.append(here)
            continue
        found.extend(here / name for name in filenames if Path(name).suffix.lower() in exts)
    return _sorted_paths(found)


class _MediaDataset(Dataset):
    """Shared machinery: a list of (path, caption or None) entries, read with read_video_clip, bad files skipped."""

    def __init__(
        self,
        entries: list[tuple[Path, str | None]],
        *,
        what: str,
        num_frames: int,
        image_size: int | tuple[int, int],
        stride: int,
        fps: float | None,
        random_crop_time: bool,
        crop: str,
        seed: int,
        validate: bool,
        max_tries: int,
        source_fps: float | None,
    ):
        check_positive_int("num_frames", num_frames)
        check_positive_int("stride", stride)
        check_positive_int("max_tries", max_tries)
        self.image_size = normalize_size("image_size", image_size)
        if fps is not None and (not fps > 0):
            raise ValueError(f"fps must be a positive number, got {fps}")
        if fps is not None and stride != 1:
            raise ValueError(f"pass either stride or fps, not both (got stride={stride}, fps={fps})")
        if crop not in ("center", "random", "resize"):
            raise ValueError(f"crop must be 'center', 'random' or 'resize', got {crop!r}")
        self.num_frames = num_frames
        self.stride = stride
        self.fps = fps
        self.random_crop_time = random_crop_time
        self.crop = crop
        self.seed = seed
        self.max_tries = max_tries
        self.source_fps = source_fps
        self.epoch = 0
        self.skipped_paths: list[str] = []
        self._bad: set[int] = set()
        self._draws: defaultdict[int, int] = defaultdict(int)
        if validate:
            kept = []
            for path, caption in entries:
                try:
                    _open_source(path)
                except Exception as err:  # noqa: BLE001 - any failure means "unreadable"
                    self._skip(path, err)
                    continue
                kept.append((path, caption))
            if entries and not kept:
                raise ValueError(f"none of the {len(entries)} {what} files could be read: {self.skipped_paths[:5]}")
            entries = kept
        self.entries = entries

    # -- bookkeeping -------------------------------------------------------------------------------------------

    @property
    def num_skipped(self) -> int:
        return len(self.skipped_paths)

    @property
    def paths(self) -> list[Path]:
        return [path for path, _ in self.entries]

    def set_epoch(self, epoch: int) -> None:
        """Change the random crops drawn for every item (call once per epoch)."""
        self.epoch = int(epoch)
        self._epoch_set = True

    def _skip(self, path: Path, err: BaseException | str) -> None:
        self.skipped_paths.append(str(path))
        warnings.warn(f"skipping unreadable file {str(path)!r}: {err}", UnreadableFileWarning, stacklevel=3)

    def __len__(self) -> int:
        return len(self.entries)

    # -- reading -------------------------------------------------------------------------------------------------

    def _generator(self, index: int) -> torch.Generator:
        if getattr(self, "_epoch_set", False):
            # a trainer drives the epochs: crops depend on (seed, epoch, index) only, so a resumed
            # run, or one with a different number of workers, reads exactly the same clips
            return torch.Generator().manual_seed(derive_seed(self.seed, self.epoch, index, 0, None))
        worker = get_worker_info()
        draw = self._draws[index]
        self._draws[index] += 1
        seed = derive_seed(self.seed, self.epoch, index, draw, worker.seed if worker is not None else None)
        return torch.Generator().manual_seed(seed)

    def _load(self, index: int) -> dict[str, Any]:
        path, caption = self.entries[index]
        video, mask = read_video_clip(
            path,
            self.num_frames,
            stride=self.stride,
            fps=self.fps,
            random_crop_time=self.random_crop_time,
            generator=self._generator(index),
            image_size=self.image_size,
            crop=self.crop,
            source_fps=self.source_fps,
        )
        item: dict[str, Any] = {"video": video, "frame_mask": mask}
        if caption is not None:
            item["text"] = caption
        return item

    def __getitem__(self, index: int) -> dict[str, Any]:
        n = len(self.entries)
        index = check_index(index, n)
        failures: list[str] = []
        for offset in range(n):
            j = (index + offset) % n
            if j in self._bad:
                continue
            try:
                return self._load(j)
            except Exception as err:  # noqa: BLE001 - a bad file must not end the epoch
                self._bad.add(j)
                self._skip(self.entries[j][0], err)
                failures.append(f"{str(self.entries[j][0])!r}: {err}")
                if len(failures) >= self.max_tries:
                    break
        raise RuntimeError(
            f"could not read any item starting at index {index}: {len(failures)} files failed "
            f"(max_tries={self.max_tries}), {len(self._bad)} of {n} are known unreadable. "
            f"Failures: {'; '.join(failures[-3:])}"
        )


class VideoDataset(_MediaDataset):
    """Every video under ``folder`` (recursively): files with a suffix in ``exts`` and, with ``frame_folders``,
    directories of frames. Items: ``{"video": (c, num_frames, h, w), "frame_mask": (num_frames,) bool}``.

    See :func:`~phenaki_pytorch.data.read_video_clip` for ``stride``, ``fps``, ``crop``, ``source_fps``;
    ``random_crop_time`` picks a random start per item (seeded by ``seed``).
    """

    @typechecked
    def __init__(
        self,
        folder: PathLike,
        num_frames: int,
        image_size: int | tuple[int, int],
        *,
        stride: int = 1,
        fps: float | int | None = None,
        random_crop_time: bool = True,
        crop: CropMode = "center",
        exts: Sequence[str] = VIDEO_EXTS,
        frame_folders: bool = True,
        seed: int = 0,
        validate: bool = False,
        max_tries: int = 10,
        source_fps: float | int | None = None,
    ):
        folder = Path(folder).expanduser()
        if not folder.is_dir():
            raise ValueError(f"folder must be an existing directory, got {str(folder)!r}")
        exts = _normalize_exts("exts", exts)
        paths = _find_media(folder, exts, frame_folders)
        if not paths:
            kinds = ", ".join(exts) + (" or frame folders" if frame_folders else "")
            raise ValueError(f"folder {str(folder)!r} holds no videos ({kinds})")
        self.folder = folder
        super().__init__(
            [(p, None) for p in paths],
            what="video",
            num_frames=num_frames,
            image_size=image_size,
            stride=stride,
            fps=fps,
            random_crop_time=random_crop_time,
            crop=crop,
            seed=seed,
            validate=validate,
            max_tries=max_tries,
            source_fps=source_fps,
        )


class ImageDataset(_MediaDataset):
    """Every image under ``folder`` (recursively) as a one-frame video:
    ``{"video": (c, 1, h, w), "frame_mask": tensor([True])}``."""

    @typechecked
    def __init__(
        self,
        folder: PathLike,
        image_size: int | tuple[int, int],
        *,
        crop: CropMode = "center",
        exts: Sequence[str] = IMAGE_EXTS,
        seed: int = 0,
        validate: bool = False,
        max_tries: int = 10,
    ):
        folder = Path(folder).expanduser()
        if not folder.is_dir():
            raise ValueError(f"folder must be an existing directory, got {str(folder)!r}")
        exts = _normalize_exts("exts", exts)
        paths = _find_media(folder, exts, frame_folders=False)
        if not paths:
            raise ValueError(f"folder {str(folder)!r} holds no images ({', '.join(exts)})")
        self.folder = folder
        super().__init__(
            [(p, None) for p in paths],
            what="image",
            num_frames=1,
            image_size=image_size,
            stride=1,
            fps=None,
            random_crop_time=False,
            crop=crop,
            seed=seed,
            validate=validate,
            max_tries=max_tries,
            source_fps=None,
        )


# -------------------------------------------------------------------------------------------------------------
# captioned data
# -------------------------------------------------------------------------------------------------------------


def _pick(record: dict, keys: Sequence[str]) -> Any:
    for key in keys:
        if key in record and record[key] not in (None, ""):
            return record[key]
    return None


def _record_entry(
    record: Any, where: str, base: Path, path_keys: Sequence[str], caption_keys: Sequence[str]
) -> tuple[Path, str]:
    if not isinstance(record, dict):
        raise ValueError(f"{where}: expected an object with a path and a caption, got {type(record).__name__}")
    path = _pick(record, path_keys)
    caption = _pick(record, caption_keys)
    if path is None:
        raise ValueError(f"{where}: no path key, expected one of {list(path_keys)}, found keys {sorted(record)}")
    if caption is None:
        raise ValueError(f"{where}: no caption key, expected one of {list(caption_keys)}, found keys {sorted(record)}")
    if not isinstance(path, str):
        raise ValueError(f"{where}: the path must be a string, got {path!r}")
    if not isinstance(caption, str):
        raise ValueError(f"{where}: the caption must be a string, got {caption!r}")
    resolved = Path(path).expanduser()
    if not resolved.is_absolute():
        resolved = base / resolved
    return resolved, caption.strip()


def _read_manifest(source: Path, path_keys: Sequence[str], caption_keys: Sequence[str]) -> list[tuple[Path, str]]:
    base = source.parent
    suffix = source.suffix.lower()
    entries: list[tuple[Path, str]] = []
    if suffix == ".jsonl":
        with source.open(encoding="utf-8") as fh:
            for lineno, line in enumerate(fh, start=1):
                if not line.strip():
                    continue
                where = f"{source}:{lineno}"
                try:
                    record = json.loads(line)
                except json.JSONDecodeError as err:
                    raise ValueError(f"{where}: invalid JSON ({err})") from err
                entries.append(_record_entry(record, where, base, path_keys, caption_keys))
    elif suffix == ".json":
        with source.open(encoding="utf-8") as fh:
            try:
                records = json.load(fh)
            except json.JSONDecodeError as err:
                raise ValueError(f"{source}: invalid JSON ({err})") from err
        if not isinstance(records, list):
            raise ValueError(f"{source}: expected a JSON list of objects, got {type(records).__name__}")
        for i, record in enumerate(records):
            entries.append(_record_entry(record, f"{source}[{i}]", base, path_keys, caption_keys))
    elif suffix in (".csv", ".tsv"):
        with source.open(encoding="utf-8", newline="") as fh:
            reader = csv.DictReader(fh, delimiter="\t" if suffix == ".tsv" else ",")
            header = [h.strip() for h in (reader.fieldnames or [])]
            if not any(k in header for k in path_keys) or not any(k in header for k in caption_keys):
                raise ValueError(
                    f"{source}: the header must name a path column (one of {list(path_keys)}) and a caption column "
                    f"(one of {list(caption_keys)}), got {header}"
                )
            reader.fieldnames = header
            for lineno, row in enumerate(reader, start=2):
                entries.append(_record_entry(row, f"{source}:{lineno}", base, path_keys, caption_keys))
    else:
        raise ValueError(f"source must be a .jsonl, .json, .csv or .tsv manifest or a folder, got {str(source)!r}")
    return entries


def _sidecar_entries(folder: Path, exts: tuple[str, ...]) -> tuple[list[tuple[Path, str]], list[Path]]:
    """Media with a same-stem .txt caption beside them; frame folders ``clip/`` pair with ``clip.txt``."""
    entries: list[tuple[Path, str]] = []
    uncaptioned: list[Path] = []
    for dirpath, dirnames, filenames in os.walk(folder, followlinks=True):
        here = Path(dirpath)
        filenames = [name for name in filenames if not name.startswith(".")]
        texts = {Path(name).stem: here / name for name in filenames if name.lower().endswith(".txt")}
        keep_dirs = []
        for name in sorted(d for d in dirnames if not d.startswith(".")):
            if name in texts:  # a captioned frame folder
                entries.append((here / name, texts[name].read_text(encoding="utf-8", errors="replace").strip()))
            else:
                keep_dirs.append(name)
        dirnames[:] = keep_dirs
        for name in filenames:
            path = here / name
            if path.suffix.lower() not in exts:
                continue
            if path.stem in texts:
                entries.append((path, texts[path.stem].read_text(encoding="utf-8", errors="replace").strip()))
            else:
                uncaptioned.append(path)
    entries.sort(key=lambda e: natural_sort_key(str(e[0])))
    return entries, uncaptioned


class CaptionedVideoDataset(_MediaDataset):
    """Videos with captions. Items: ``{"video", "frame_mask", "text"}``.

    ``source`` is one of
        * a ``.jsonl`` file (one object per line) or ``.json`` list, each object with a path under one of
          ``path_keys`` (default "video", "path", "file") and a caption under one of ``caption_keys``
          (default "caption", "text");
        * a ``.csv`` / ``.tsv`` file whose header names the same columns;
        * a folder where each video (or image, or frame folder) has a sidecar ``.txt`` with the same stem.

    Relative paths in a manifest resolve against the manifest's folder. Entries whose file is missing are
    skipped (warned, counted in ``num_skipped``); media without a sidecar caption are left out with one warning.
    Images are one-frame videos padded to ``num_frames`` (the padding masked out).
    """

    @typechecked
    def __init__(
        self,
        source: PathLike,
        num_frames: int,
        image_size: int | tuple[int, int],
        *,
        stride: int = 1,
        fps: float | int | None = None,
        random_crop_time: bool = True,
        crop: CropMode = "center",
        exts: Sequence[str] = VIDEO_EXTS + IMAGE_EXTS,
        path_keys: Sequence[str] = PATH_KEYS,
        caption_keys: Sequence[str] = CAPTION_KEYS,
        seed: int = 0,
        validate: bool = False,
        max_tries: int = 10,
        source_fps: float | int | None = None,
    ):
        source = Path(source).expanduser()
        if not source.exists():
            raise ValueError(f"source must be a manifest file or a folder, {str(source)!r} does not exist")
        exts = _normalize_exts("exts", exts)
        missing: list[Path] = []
        if source.is_dir():
            entries, uncaptioned = _sidecar_entries(source, exts)
            if uncaptioned:
                warnings.warn(
                    f"{len(uncaptioned)} files under {str(source)!r} have no sidecar .txt caption and are left out "
                    f"(first: {str(uncaptioned[0])!r})",
                    UserWarning,
                    stacklevel=2,
                )
            if not entries:
                raise ValueError(
                    f"folder {str(source)!r} holds no captioned media: expected files like clip.mp4 next to clip.txt"
                )
        else:
            entries = _read_manifest(source, path_keys, caption_keys)
            if not entries:
                raise ValueError(f"manifest {str(source)!r} lists no videos")
            present = []
            for path, caption in entries:
                if path.exists():
                    present.append((path, caption))
                else:
                    missing.append(path)
            entries = present
            if not entries:
                raise ValueError(
                    f"none of the {len(missing)} files listed in {str(source)!r} exist (first: {str(missing[0])!r})"
                )
        self.source = source
        super().__init__(
            entries,
            what="video",
            num_frames=num_frames,
            image_size=image_size,
            stride=stride,
            fps=fps,
            random_crop_time=random_crop_time,
            crop=crop,
            seed=seed,
            validate=validate,
            max_tries=max_tries,
            source_fps=source_fps,
        )
        for path in missing:
            self._skip(path, "file does not exist")

    @property
    def captions(self) -> list[str]:
        return [caption for _, caption in self.entries]


# -------------------------------------------------------------------------------------------------------------
# collation
# -------------------------------------------------------------------------------------------------------------


def _stack(name: str, tensors: list[Tensor]) -> Tensor:
    shapes = {tuple(t.shape) for t in tensors}
    if len(shapes) > 1:
        raise ValueError(f"batch items must share one {name} shape to be stacked, got {sorted(shapes)}")
    return torch.stack(tensors)


def _check_video(item: Any, position: int) -> Tensor:
    if not isinstance(item, Tensor):
        raise TypeError(f"batch[{position}] video must be a torch.Tensor, got {type(item).__name__}")
    if item.ndim != 4:
        raise ValueError(f"batch[{position}] video must be (c, f, h, w), got shape {tuple(item.shape)}")
    return item


@typechecked
def collate_videos(batch: Sequence[Any]) -> dict[str, Any]:
    """Stack dataset items into ``{"video": (b, c, f, h, w), "frame_mask": (b, f) bool, "text": list[str]}``.

    Items may be dicts (``video`` plus optional ``frame_mask`` / ``text`` / anything else: tensors of one shape
    are stacked, other values gathered in lists), tuples ``(video, text)`` / ``(video, frame_mask)`` /
    ``(video, frame_mask, text)``, or bare video tensors. A missing frame mask means all frames are real;
    ``text`` appears only when the items carry it (all of them or none).
    """
    if len(batch) == 0:
        raise ValueError("batch is empty")
    videos: list[Tensor] = []
    masks: list[Tensor] = []
    texts: list[str | None] = []
    extras: dict[str, list[Any]] = defaultdict(list)
    for i, item in enumerate(batch):
        mask = None
        text = None
        if isinstance(item, dict):
            if "video" not in item:
                raise ValueError(f"batch[{i}] is a dict without a 'video' key (keys {sorted(item)})")
            video = _check_video(item["video"], i)
            mask = item.get("frame_mask")
            text = item.get("text")
            for key, value in item.items():
                if key not in ("video", "frame_mask", "text"):
                    extras[key].append(value)
        elif isinstance(item, (tuple, list)):
            if not item:
                raise ValueError(f"batch[{i}] is an empty {type(item).__name__}")
            video = _check_video(item[0], i)
            for part in item[1:]:
                if isinstance(part, str):
                    text = part
                elif isinstance(part, Tensor) and part.dtype == torch.bool:
                    mask = part
                else:
                    raise TypeError(
                        f"batch[{i}]: tuple items must be (video, [frame_mask (bool tensor)], [text (str)]), "
                        f"got a {type(part).__name__}"
                    )
        elif isinstance(item, Tensor):
            video = _check_video(item, i)
        else:
            raise TypeError(f"batch[{i}] must be a dict, a tuple or a tensor, got {type(item).__name__}")
        frames = video.shape[1]
        if mask is None:
            mask = torch.ones(frames, dtype=torch.bool)
        elif not isinstance(mask, Tensor) or mask.shape != (frames,):
            got = tuple(mask.shape) if isinstance(mask, Tensor) else type(mask).__name__
            raise ValueError(f"batch[{i}] frame_mask must be a ({frames},) tensor matching the video, got {got}")
        if text is not None and not isinstance(text, str):
            raise TypeError(f"batch[{i}] text must be a str, got {type(text).__name__}")
        videos.append(video)
        masks.append(mask.bool())
        texts.append(text)
    out: dict[str, Any] = {"video": _stack("video", videos), "frame_mask": _stack("frame_mask", masks)}
    with_text = [t is not None for t in texts]
    if any(with_text):
        if not all(with_text):
            raise ValueError(
                f"either every batch item has text or none does; {with_text.count(False)} of {len(texts)} items lack it"
            )
        out["text"] = texts
    for key, values in extras.items():
        if len(values) != len(batch):
            out[key] = values
        elif all(isinstance(v, Tensor) for v in values) and len({tuple(v.shape) for v in values}) == 1:
            out[key] = torch.stack(values)
        else:
            out[key] = values
    return out
