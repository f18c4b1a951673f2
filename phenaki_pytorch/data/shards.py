"""WebDataset tar shards: write a dataset once, stream it from many processes.

Two kinds of shards, one sample per key (``000000042.<member>``), every tensor stored as ``.npy`` bytes read back
with ``allow_pickle=False`` (nothing in a shard can run code):

    videos   video.npy (c, f, h, w) uint8 (or float16/float32), frame_mask.npy (f,) bool, txt (the caption)
    tokens   codebook_ids.npy (t, h, w) int32, frame_mask.npy (f,) bool, txt, and with a text encoder
             text_embeds.npy (n, d) float16 and text_mask.npy (n,) bool, cut after the last real text token

:func:`write_shards` writes ``<prefix>-000000.tar, ...`` plus ``shards.json`` (per-shard sample counts, shapes,
the tokenizer's config). :class:`ShardedDataset` reads them as an ``IterableDataset`` whose items are exactly the
dicts of :class:`~phenaki_pytorch.data.CaptionedVideoDataset` / :class:`~phenaki_pytorch.data.PretokenizedDataset`,
so ``collate_videos`` / ``collate_clips`` / ``collate_tokens`` batch them unchanged. The shards are ordinary
WebDataset shards: ``webdataset.WebDataset(urls).decode()`` reads them too.
"""

from __future__ import annotations

import glob
import io
import json
import math
import os
import tarfile
import warnings
from bisect import bisect_left
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, IterableDataset, get_worker_info
from tqdm.auto import tqdm

from ._utils import check_positive_int, derive_seed, natural_sort_key, typechecked
from .datasets import UnreadableFileWarning, collate_videos

__all__ = ["SHARDS_META_FILE", "ShardedDataset", "write_shards"]

SHARDS_META_FILE = "shards.json"
FORMAT = "phenaki-shards"
FORMAT_VERSION = 1
VIDEO_DTYPES = ("uint8", "float16", "float32")
VIDEO_MEMBERS = ("video.npy", "frame_mask.npy")
TOKEN_MEMBERS = ("codebook_ids.npy", "frame_mask.npy")

ShardKind = Literal["videos", "tokens"]


# -------------------------------------------------------------------------------------------------------------
# encoding
# -------------------------------------------------------------------------------------------------------------


def _npy(array: Tensor | np.ndarray) -> bytes:
    if isinstance(array, Tensor):
        array = array.detach().cpu().numpy()
    buffer = io.BytesIO()
    np.save(buffer, np.ascontiguousarray(array), allow_pickle=False)
    return buffer.getvalue()


def _from_npy(data: bytes, name: str) -> Tensor:
    try:
        array = np.load(io.BytesIO(data), allow_pickle=False)
    except Exception as error:  # noqa: BLE001 - anything unreadable is a corrupt member
        raise ValueError(f"{name} is not a readable .npy array ({error})") from None
    if not isinstance(array, np.ndarray) or array.dtype == object:
        raise ValueError(f"{name} is not a numeric array")
    return torch.from_numpy(array.copy())


def _video_bytes(video: Tensor, dtype: str) -> bytes:
    if dtype == "uint8":
        # values in [0, 1] land on the nearest of 256 levels (what a decoded 8-bit video holds anyway)
        return _npy((video.float().clamp(0, 1) * 255).round().to(torch.uint8))
    return _npy(video.to(torch.float16 if dtype == "float16" else torch.float32))


def _last_real(mask: Tensor) -> int:
    """Length up to and including the last True (0 for an all-False mask)."""
    real = mask.nonzero()
    return int(real[-1]) + 1 if len(real) else 0


class _ShardSink:
    """Rotates webdataset.TarWriter files every `max_count` samples; each file appears under its final name only
    once complete, so a crash never leaves a truncated shard that looks whole."""

    def __init__(self, folder: Path, prefix: str, max_count: int):
        self.folder, self.prefix, self.max_count = folder, prefix, max_count
        self.shards: list[dict[str, Any]] = []
        self._writer = None
        self._file = None
        self._count = 0

    def _open(self) -> None:
        import webdataset

        name = f"{self.prefix}-{len(self.shards):06d}.tar"
        self._file = open(self.folder / (name + ".tmp"), "wb")  # noqa: SIM115 - closed in _close
        # mtime fixed: the same data gives byte-identical shards
        self._writer = webdataset.TarWriter(self._file, encoder=False, mtime=0.0)
        self.shards.append({"file": name, "num_samples": 0})
        self._count = 0

    def _close(self) -> None:
        if self._writer is None:
            return
        self._writer.close()
        if not self._file.closed:
            self._file.close()
        name = self.shards[-1]["file"]
        os.replace(self.folder / (name + ".tmp"), self.folder / name)
        self._writer = self._file = None

    def write(self, key: str, members: dict[str, bytes]) -> None:
        if self._writer is None or self._count >= self.max_count:
            self._close()
            self._open()
        self._writer.write({"__key__": key, **members})
        self._count += 1
        self.shards[-1]["num_samples"] = self._count

    def close(self) -> None:
        self._close()


@typechecked
@torch.no_grad()
def write_shards(
    dataset: Dataset | Iterable,
    output_dir: str | Path,
    *,
    max_count: int = 1000,
    tokenizer: torch.nn.Module | None = None,
    text_encoder: Any = None,
    video_dtype: Literal["uint8", "float16", "float32"] = "uint8",
    batch_size: int = 16,
    num_workers: int = 0,
    prefix: str = "shard",
    device: str | torch.device | None = None,
    show_progress: bool = True,
) -> Path:
    """Write `dataset` as WebDataset tar shards of at most `max_count` samples each, plus ``shards.json``.

    Without `tokenizer` the shards hold clips (``videos`` kind): each item's ``video`` (stored as `video_dtype`;
    ``uint8`` rounds values in [0, 1] to 1/255 steps and clamps the rest, ``float32`` keeps them exactly),
    ``frame_mask`` and ``text``. With a trained C-ViViT as `tokenizer` they hold stage-2 samples (``tokens``
    kind): codebook ids, frame mask, caption and, given a `text_encoder` (a TextEncoder, or anything with
    ``encode(texts, device) -> (embeds, mask)``), the caption's embeddings in float16.

    `dataset` items are whatever :func:`collate_videos` accepts (dicts, ``(video, text)`` tuples, tensors);
    map-style or iterable (with `num_workers` > 0 an iterable dataset must split itself across the workers, or its
    items are written once per worker). Samples keep the dataset's order, keys are their running index. Returns
    the folder.
    """
    check_positive_int("max_count", max_count)
    check_positive_int("batch_size", batch_size)
    if num_workers < 0:
        raise ValueError(f"num_workers must be >= 0, got {num_workers}")
    if text_encoder is not None and tokenizer is None:
        raise ValueError(
            "text_encoder is only used with a tokenizer (token shards); clip shards store the caption text only"
        )
    if not prefix or any(ch in prefix for ch in "./\\{}*?"):
        raise ValueError(f"prefix must be a plain file-name stem without '.', '/', braces or wildcards, got {prefix!r}")
    if hasattr(dataset, "__len__") and len(dataset) == 0:
        raise ValueError("dataset is empty: nothing to write")
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    stale = sorted(output_dir.glob(f"{prefix}-*.tar"))
    if stale:
        raise ValueError(
            f"output_dir {str(output_dir)!r} already holds shards ({stale[0].name}, ...): pass an empty folder or "
            "another prefix"
        )

    kind = "tokens" if tokenizer is not None else "videos"
    if tokenizer is not None:
        if device is None:
            device = next(tokenizer.parameters()).device
        was_training = tokenizer.training
        tokenizer.eval()
    loader = DataLoader(dataset, batch_size=batch_size, num_workers=num_workers, collate_fn=collate_videos)
    sink = _ShardSink(output_dir, prefix, max_count)
    index = 0
    info: dict[str, Any] = {"has_text": None, "text_length": 0}
    try:
        for batch in tqdm(loader, desc=f"writing {kind} shards", disable=not show_progress):
            texts = batch.get("text")
            has_text = texts is not None
            if info["has_text"] is None:
                info["has_text"] = has_text
            elif info["has_text"] != has_text:
                raise ValueError("either every dataset item has a caption ('text') or none does")
            video, frame_mask = batch["video"], batch["frame_mask"]
            info.setdefault("num_frames", int(video.shape[2]))
            if kind == "videos":
                info.setdefault("video_shape", list(video.shape[1:]))
                for i in range(video.shape[0]):
                    members = {"video.npy": _video_bytes(video[i], video_dtype), "frame_mask.npy": _npy(frame_mask[i])}
                    if has_text:
                        members["txt"] = texts[i].encode("utf-8")
                    sink.write(f"{index:09d}", members)
                    index += 1
                continue
            ids = tokenizer.tokenize(video.to(device)).to(torch.int32).cpu()
            info.setdefault("token_shape", list(ids.shape[1:]))
            embeds = None
            if has_text and text_encoder is not None:
                unique = list(dict.fromkeys(texts))  # each distinct caption of the batch encoded once
                e, m = text_encoder.encode(unique, device=device)
                row = {caption: j for j, caption in enumerate(unique)}
                embeds, masks = e.cpu(), m.cpu().bool()
            for i in range(ids.shape[0]):
                members = {"codebook_ids.npy": _npy(ids[i]), "frame_mask.npy": _npy(frame_mask[i])}
                if has_text:
                    members["txt"] = texts[i].encode("utf-8")
                    if embeds is not None:
                        j = row[texts[i]]
                        n = _last_real(masks[j])
                        info["text_length"] = max(info["text_length"], n)
                        members["text_embeds.npy"] = _npy(embeds[j, :n].half())
                        members["text_mask.npy"] = _npy(masks[j, :n])
                sink.write(f"{index:09d}", members)
                index += 1
    finally:
        sink.close()
        if tokenizer is not None:
            tokenizer.train(was_training)
    if index == 0:
        raise ValueError("dataset yielded no items: nothing written")

    meta: dict[str, Any] = {
        "format": FORMAT,
        "version": FORMAT_VERSION,
        "kind": kind,
        "num_samples": index,
        "shards": sink.shards,
        "num_frames": info["num_frames"],
        "has_text": bool(info["has_text"]),
    }
    if kind == "videos":
        meta.update(video_shape=info["video_shape"], video_dtype=video_dtype)
    else:
        meta.update(
            token_shape=info["token_shape"],
            has_text_embeds=text_encoder is not None and bool(info["has_text"]),
            text_length=info["text_length"],
            codebook_size=getattr(tokenizer, "codebook_size", None),
            tokenizer_config=getattr(tokenizer, "config", None),
        )
    tmp = output_dir / (SHARDS_META_FILE + ".tmp")
    tmp.write_text(json.dumps(meta, indent=2))
    tmp.replace(output_dir / SHARDS_META_FILE)
    return output_dir


# -------------------------------------------------------------------------------------------------------------
# reading a tar
# -------------------------------------------------------------------------------------------------------------


def _split_name(name: str) -> tuple[str, str]:
    """WebDataset's rule: the key is the path up to the first dot of the file name, the rest names the member."""
    folder, _, base = name.rpartition("/")
    stem, dot, ext = base.partition(".")
    return (f"{folder}/{stem}" if folder else stem), (ext if dot else "")


def _scan_tar(path: Path) -> tuple[int, list[str], str | None]:
    """(number of samples, member names of the first sample, error) from the tar headers alone."""
    count, first, last_key, error = 0, [], None, None
    try:
        with tarfile.open(path, mode="r:") as tar:
            for member in tar:
                if not member.isfile():
                    continue
                key, ext = _split_name(member.name)
                if key != last_key:
                    count, last_key = count + 1, key
                if count == 1:
                    first.append(ext)
    except (tarfile.TarError, OSError, EOFError) as err:
        error = f"{type(err).__name__}: {err}"
    return count, first, error


def _read_range(path: Path, start: int, stop: int, wanted: set[int]) -> Iterator[tuple[int, Any]]:
    """The wanted samples (local indices in [start, stop)) of one tar, in order: (index, {member: bytes}) or
    (index, error message).

    Only the wanted samples' bytes are read; the rest are passed over by their headers. A tar that breaks
    mid-way, or holds fewer samples than counted, reports every wanted sample it could not reach as an error.
    """
    reached = start  # samples before this one are yielded or not wanted
    index, key, members, error = -1, None, {}, None
    try:
        with tarfile.open(path, mode="r:") as tar:
            for member in tar:
                if not member.isfile():
                    continue
                name, ext = _split_name(member.name)
                if name != key:
                    if index in wanted:
                        yield index, (error if error is not None else members)
                    index, key, members, error = index + 1, name, {}, None
                    reached = max(index, start)
                    if index >= stop:
                        return
                if index in wanted and error is None:
                    try:
                        handle = tar.extractfile(member)
                        data = handle.read() if handle is not None else b""
                        if len(data) != member.size:
                            raise EOFError(f"{len(data)} of {member.size} bytes")
                        members[ext] = data
                    except (tarfile.TarError, OSError, EOFError) as err:
                        error = f"member {member.name!r} unreadable ({type(err).__name__}: {err})"
            if index in wanted:
                yield index, (error if error is not None else members)
            reached = max(index + 1, start)
    except (tarfile.TarError, OSError, EOFError) as err:
        message = f"shard unreadable from sample {reached} on ({type(err).__name__}: {err})"
        for lost in range(reached, stop):
            if lost in wanted:
                yield lost, message
        return
    for lost in range(reached, stop):
        if lost in wanted:
            yield lost, "sample missing: the shard holds fewer samples than counted"


# -------------------------------------------------------------------------------------------------------------
# decoding
# -------------------------------------------------------------------------------------------------------------


def _decode_video(members: dict[str, bytes]) -> dict[str, Any]:
    for name in VIDEO_MEMBERS:
        if name not in members:
            raise ValueError(f"no {name} member (has {sorted(members)})")
    video = _from_npy(members["video.npy"], "video.npy")
    if video.ndim != 4:
        raise ValueError(f"video.npy must be (c, f, h, w), got shape {tuple(video.shape)}")
    if video.dtype == torch.uint8:
        video = video.float() / 255
    elif video.dtype in (torch.float16, torch.float32, torch.float64):
        video = video.float()
    else:
        raise ValueError(f"video.npy has dtype {video.dtype}, expected uint8 or float")
    item: dict[str, Any] = {"video": video, "frame_mask": _frame_mask(members, video.shape[1])}
    if "txt" in members:
        item["text"] = _text(members)
    return item


def _frame_mask(members: dict[str, bytes], frames: int | None) -> Tensor:
    mask = _from_npy(members["frame_mask.npy"], "frame_mask.npy")
    if mask.dtype != torch.bool or mask.ndim != 1 or (frames is not None and mask.shape[0] != frames):
        raise ValueError(f"frame_mask.npy must be bool ({frames},), got {mask.dtype} {tuple(mask.shape)}")
    return mask


def _text(members: dict[str, bytes]) -> str:
    try:
        return members["txt"].decode("utf-8")
    except UnicodeDecodeError as error:
        raise ValueError(f"txt is not UTF-8 ({error})") from None


def _decode_tokens(members: dict[str, bytes], text_length: int | None) -> dict[str, Any]:
    for name in TOKEN_MEMBERS:
        if name not in members:
            raise ValueError(f"no {name} member (has {sorted(members)})")
    ids = _from_npy(members["codebook_ids.npy"], "codebook_ids.npy")
    if ids.ndim != 3 or ids.dtype not in (torch.int16, torch.int32, torch.int64, torch.uint8):
        raise ValueError(f"codebook_ids.npy must be integer (t, h, w), got {ids.dtype} {tuple(ids.shape)}")
    item: dict[str, Any] = {"codebook_ids": ids.long(), "frame_mask": _frame_mask(members, None)}
    if "txt" in members:
        item["text"] = _text(members)
    if "text_embeds.npy" in members:
        embeds = _from_npy(members["text_embeds.npy"], "text_embeds.npy")
        mask = _from_npy(members.get("text_mask.npy", b""), "text_mask.npy")
        if embeds.ndim != 2 or not embeds.is_floating_point():
            raise ValueError(f"text_embeds.npy must be float (n, d), got {embeds.dtype} {tuple(embeds.shape)}")
        if mask.dtype != torch.bool or mask.shape != embeds.shape[:1]:
            raise ValueError(f"text_mask.npy must be bool ({embeds.shape[0]},), got {mask.dtype} {tuple(mask.shape)}")
        length = embeds.shape[0] if text_length is None else text_length
        if embeds.shape[0] > length:
            raise ValueError(f"text_embeds has {embeds.shape[0]} tokens, more than text_length={length}")
        item["text_embeds"] = torch.cat((embeds.float(), embeds.new_zeros(length - embeds.shape[0], embeds.shape[1]).float()))
        item["text_mask"] = torch.cat((mask, mask.new_zeros(length - mask.shape[0])))
    return item


# -------------------------------------------------------------------------------------------------------------
# the reader
# -------------------------------------------------------------------------------------------------------------


def _resolve_shards(source: Any) -> tuple[list[Path], dict[str, Any] | None]:
    """Shard paths in order, and the shards.json contents when there is one."""
    if isinstance(source, (list, tuple)):
        if not source:
            raise ValueError("source is an empty list of shards")
        paths = [Path(p).expanduser() for p in source]
        meta = None
    else:
        text = str(source)
        folder = Path(text).expanduser()
        if folder.is_dir():
            meta_file = folder / SHARDS_META_FILE
            if meta_file.is_file():
                try:
                    meta = json.loads(meta_file.read_text())
                    if meta.get("format") != FORMAT:
                        raise ValueError(f"format is {meta.get('format')!r}, expected {FORMAT!r}")
                    if int(meta.get("version", 0)) > FORMAT_VERSION:
                        raise ValueError(f"written by a newer version ({meta.get('version')}) of this library")
                    paths = [folder / shard["file"] for shard in meta["shards"]]
                except (ValueError, KeyError, TypeError) as error:
                    raise ValueError(f"could not read {str(meta_file)!r}: {error}") from None
                return paths, meta
            paths = sorted(folder.glob("*.tar"), key=lambda p: natural_sort_key(p.name))
            if not paths:
                raise ValueError(f"folder {text!r} holds no {SHARDS_META_FILE} and no .tar shards")
            return paths, None
        if "{" in text:
            from braceexpand import braceexpand

            paths = [Path(p).expanduser() for p in braceexpand(text)]
        elif any(ch in text for ch in "*?["):
            paths = [Path(p) for p in sorted(glob.glob(os.path.expanduser(text)), key=natural_sort_key)]
            if not paths:
                raise ValueError(f"source pattern {text!r} matches no files")
        else:
            paths = [folder]
        meta = None
    missing = [str(p) for p in paths if not p.is_file()]
    if missing:
        raise ValueError(f"{len(missing)} of {len(paths)} shards do not exist (first: {missing[0]!r})")
    return paths, meta


def _distributed(rank: int | None, world_size: int | None) -> tuple[int, int]:
    if rank is not None and world_size is not None:
        return rank, world_size
    dist = torch.distributed
    if dist.is_available() and dist.is_initialized():
        return (dist.get_rank() if rank is None else rank), (dist.get_world_size() if world_size is None else world_size)
    return (0 if rank is None else rank), (1 if world_size is None else world_size)


class ShardedDataset(IterableDataset):
    """Streams shards written by :func:`write_shards` (or any tars with the same members), split across
    processes and DataLoader workers so that every sample is read exactly once per epoch.

    Items are those of :class:`CaptionedVideoDataset` (``videos`` shards: ``{"video", "frame_mask"[, "text"]}``)
    or :class:`PretokenizedDataset` (``tokens`` shards: ``{"codebook_ids", "frame_mask"[, "text"[, "text_embeds",
    "text_mask"]]}``, embeddings padded with zeros to ``text_length``).

    Args:
        source: a folder written by ``write_shards`` (uses its ``shards.json``); a folder of ``.tar`` files; one
            ``.tar``; a brace pattern (``"data/shard-{000000..000041}.tar"``) or glob; or a list of paths. Shards
            are local files; without ``shards.json`` their tar headers are scanned once to count samples.
        rank, world_size: this process's place among the training processes; by default from
            ``torch.distributed`` when it is initialised (looked up again in the main process by ``set_epoch``,
            ``load_state_dict``, ``len`` and ``iter``, so the dataset may be built before the process group), else
            a single process.
        shuffle_shards: visit the shards in a new seeded order every epoch (the same on every rank).
        shuffle_buffer: if > 0, additionally shuffle each run of this many consecutive samples of a rank's stream.
        seed: seeds both shuffles, with the epoch.
        equalize: give every rank exactly ``num_samples // world_size`` samples per epoch (the remainder, fewer
            than ``world_size`` samples, is left out of that epoch; with ``shuffle_shards`` a different few each
            epoch), and replace a corrupt sample by a repeat of its worker's previous readable one, so every rank
            runs the same number of batches (what DDP needs). Without it, ranks get ``num_samples // world_size``
            or one more (the first ``num_samples % world_size`` ranks), and corrupt samples are simply dropped.
        batch_size: the DataLoader's ``batch_size``. Workers take turns by whole batches, so a DataLoader with any
            ``num_workers`` yields this rank's stream in the same order (needed for exact resume with workers).
        text_length: pad ``text_embeds`` / ``text_mask`` to this length (default: the ``text_length`` recorded in
            ``shards.json``; required for token shards with embeddings that lack one).

    How a rank's stream is made, for epoch ``e``: the shards are ordered (seeded by ``(seed, e)`` when shuffled)
    and concatenated; rank ``r`` takes its contiguous slice of that sequence (reading only the shards it overlaps);
    the slice is shuffled within windows of ``shuffle_buffer``; DataLoader worker ``w`` of ``n`` yields batches
    ``w, w + n, ...`` of it. So the stream depends on ``(seed, epoch, rank, world_size)`` only.

    Epochs and exact resume: call :meth:`set_epoch` before each epoch's iterator is made (with
    ``persistent_workers=False``, the default, so workers pick it up). To resume mid-epoch, call
    ``load_state_dict({"epoch": e, "samples_consumed": n})`` (``n`` samples of epoch ``e`` already trained on by
    this rank; :meth:`resume_point` computes both from a count of batches): the next iteration yields exactly the
    items a never-interrupted run would have yielded after those ``n`` -- same samples, same order -- given the same
    shards, ``seed``, ``world_size``, ``shuffle_*`` and ``batch_size`` (``num_workers`` may differ). A stored state
    applies to every iteration until the next :meth:`set_epoch`.

    With accelerate, build the DataLoader yourself instead of ``accelerator.prepare``-ing it: accelerate would
    dispatch batches from rank 0 or split the already split stream again (``IterableDatasetShard``).

    Corrupt data never ends an epoch: a sample with a bad tar member, undecodable bytes or wrong shapes, or the
    unreadable rest of a broken shard, is reported once with an :class:`UnreadableFileWarning` naming the shard
    and the key, and counted in ``num_skipped`` / ``skipped`` (per process: with DataLoader workers the counts
    live in the workers, as with the folder datasets).
    """

    @typechecked
    def __init__(
        self,
        source: str | Path | Sequence[str | Path],
        *,
        rank: int | None = None,
        world_size: int | None = None,
        shuffle_shards: bool = True,
        shuffle_buffer: int = 0,
        seed: int = 0,
        equalize: bool = False,
        batch_size: int = 1,
        text_length: int | None = None,
    ):
        if world_size is not None:
            check_positive_int("world_size", world_size)
        if rank is not None and (rank < 0 or (world_size is not None and rank >= world_size)):
            raise ValueError(f"rank must be in [0, world_size={world_size}), got {rank}")
        if shuffle_buffer < 0:
            raise ValueError(f"shuffle_buffer must be >= 0, got {shuffle_buffer}")
        check_positive_int("batch_size", batch_size)
        check_positive_int("text_length", text_length, allow_none=True)
        self.paths, self.meta = _resolve_shards(source)
        self.rank, self.world_size = rank, world_size
        self.shuffle_shards, self.shuffle_buffer, self.seed = shuffle_shards, shuffle_buffer, seed
        self.equalize, self.batch_size = equalize, batch_size
        self.epoch, self.samples_consumed = 0, 0
        self.skipped: list[str] = []
        self._place = _distributed(rank, world_size)

        if self.meta is not None:
            self.counts = [int(shard["num_samples"]) for shard in self.meta["shards"]]
            self.kind: str = self.meta["kind"]
            recorded = self.meta.get("text_length") if self.meta.get("has_text_embeds") else None
        else:
            self.counts, kinds = [], set()
            for path in self.paths:
                count, first, error = _scan_tar(path)
                if error is not None:
                    self._skip(f"{path}", f"{error}; counted the {count} samples before it")
                self.counts.append(count)
                if first:
                    kinds.add("tokens" if "codebook_ids.npy" in first else "videos" if "video.npy" in first else "?")
                    if "text_embeds.npy" in first and text_length is None:
                        raise ValueError(
                            "these token shards hold text embeddings but no shards.json says how long: pass "
                            "text_length= (the longest caption in tokens) so batches can be stacked"
                        )
            if kinds - {"?"} and len(kinds - {"?"}) > 1:
                raise ValueError(f"the shards mix clip and token samples ({sorted(kinds)})")
            if not kinds or kinds == {"?"}:
                raise ValueError(
                    f"the shards hold no samples with video.npy or codebook_ids.npy members (first: {str(self.paths[0])!r})"
                )
            self.kind = (kinds - {"?"}).pop()
            recorded = None
        if self.kind not in ("videos", "tokens"):
            raise ValueError(f"unknown shard kind {self.kind!r}")
        if text_length is not None and recorded and text_length < recorded:
            raise ValueError(f"text_length={text_length} is shorter than the longest stored caption ({recorded} tokens)")
        self.text_length = text_length if text_length is not None else recorded
        self.num_samples = sum(self.counts)
        if self.num_samples == 0:
            raise ValueError("the shards hold no samples")

    # -- bookkeeping -------------------------------------------------------------------------------------------

    @property
    def num_skipped(self) -> int:
        return len(self.skipped)

    def _skip(self, where: str, error: str) -> None:
        self.skipped.append(where)
        warnings.warn(f"skipping unreadable sample {where}: {error}", UnreadableFileWarning, stacklevel=3)

    def set_epoch(self, epoch: int) -> None:
        """Iterate epoch `epoch` from its start (new shard order and shuffle)."""
        if isinstance(epoch, bool) or not isinstance(epoch, int) or epoch < 0:
            raise ValueError(f"epoch must be an int >= 0, got {epoch!r}")
        self.epoch, self.samples_consumed = int(epoch), 0
        self.place()

    def place(self) -> tuple[int, int]:
        """(rank, world_size) this dataset reads for. Looked up in the main process (DataLoader workers do not see
        torch.distributed), on construction, :meth:`set_epoch`, :meth:`load_state_dict`, ``len()`` and
        ``iter()``; workers use the value their copy was made with."""
        if get_worker_info() is None:
            self._place = _distributed(self.rank, self.world_size)
        rank, world_size = self._place
        if not 0 <= rank < world_size:
            raise ValueError(f"rank must be in [0, world_size={world_size}), got {rank}")
        return self._place

    def state_dict(self) -> dict[str, int]:
        """Where the next iteration starts: ``{"epoch", "samples_consumed"}`` (the trainer counts consumption)."""
        return {"epoch": self.epoch, "samples_consumed": self.samples_consumed}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Resume epoch ``state["epoch"]`` after ``state["samples_consumed"]`` of this rank's samples."""
        try:
            epoch, consumed = state["epoch"], state["samples_consumed"]
        except (KeyError, TypeError):
            raise ValueError(f"state must be a dict with 'epoch' and 'samples_consumed', got {state!r}") from None
        self.set_epoch(epoch)
        if isinstance(consumed, bool) or not isinstance(consumed, int) or not 0 <= consumed <= len(self):
            raise ValueError(f"samples_consumed must be an int in [0, {len(self)}], got {consumed!r}")
        self.samples_consumed = consumed

    def resume_point(self, batches_consumed: int, batch_size: int | None = None, drop_last: bool = False) -> dict[str, int]:
        """The state after this rank consumed `batches_consumed` batches since epoch 0 (every epoch yields
        ``len(self)`` samples, its last batch partial unless `drop_last`); pass it to :meth:`load_state_dict`."""
        batch_size = self.batch_size if batch_size is None else batch_size
        check_positive_int("batch_size", batch_size)
        if batches_consumed < 0:
            raise ValueError(f"batches_consumed must be >= 0, got {batches_consumed}")
        per_epoch = len(self) // batch_size if drop_last else math.ceil(len(self) / batch_size)
        if per_epoch == 0:
            raise ValueError(f"an epoch of {len(self)} samples holds no full batch of {batch_size}")
        epoch, batches = divmod(batches_consumed, per_epoch)
        return {"epoch": epoch, "samples_consumed": batches * batch_size}

    # -- the plan ----------------------------------------------------------------------------------------------

    def _rank_range(self, rank: int, world_size: int) -> tuple[int, int]:
        if self.equalize:
            per = self.num_samples // world_size
            return rank * per, (rank + 1) * per
        base, extra = divmod(self.num_samples, world_size)
        start = rank * base + min(rank, extra)
        return start, start + base + (1 if rank < extra else 0)

    def __len__(self) -> int:
        """Samples this rank yields in a full epoch."""
        lo, hi = self._rank_range(*self.place())
        return hi - lo

    def shard_order(self, epoch: int) -> list[int]:
        """Indices into ``self.paths`` in the order epoch `epoch` reads them (identical on every rank)."""
        if not self.shuffle_shards:
            return list(range(len(self.paths)))
        generator = torch.Generator().manual_seed(derive_seed(self.seed, "shards", epoch))
        return torch.randperm(len(self.paths), generator=generator).tolist()

    def _stream(self, epoch: int, rank: int, world_size: int) -> list[int]:
        """This rank's epoch as positions in the concatenation of the shards (in shard_order)."""
        lo, hi = self._rank_range(rank, world_size)
        positions = list(range(lo, hi))
        if self.shuffle_buffer > 1:
            window = self.shuffle_buffer
            for start in range(0, len(positions), window):
                block = positions[start : start + window]
                generator = torch.Generator().manual_seed(derive_seed(self.seed, "window", epoch, rank, start))
                perm = torch.randperm(len(block), generator=generator).tolist()
                positions[start : start + window] = [block[i] for i in perm]
        return positions

    def _locate(self, order: list[int]) -> list[tuple[int, int, int]]:
        """(global start, shard index, count) per shard in reading order."""
        out, start = [], 0
        for shard in order:
            out.append((start, shard, self.counts[shard]))
            start += self.counts[shard]
        return out

    def _raw(self, positions: list[int], layout: list[tuple[int, int, int]]) -> Iterator[tuple[int, str, Any]]:
        """(position, where, members or error) for `positions` in their given order; reads sequentially through
        each run of nearby positions, buffering a run's samples only when the order inside it is shuffled."""
        if not positions:
            return
        run = self.shuffle_buffer if self.shuffle_buffer > 1 else len(positions)  # unshuffled: one ascending run
        for start in range(0, len(positions), run):
            chunk = positions[start : start + run]
            ordered = sorted(chunk)
            got: dict[int, tuple[str, Any]] = {}
            sequential = chunk == ordered
            for g0, shard, count in layout:
                first, last = bisect_left(ordered, g0), bisect_left(ordered, g0 + count)
                if first == last:
                    continue
                local_wanted = {p - g0 for p in ordered[first:last]}
                path = self.paths[shard]
                for local, result in _read_range(path, ordered[first] - g0, ordered[last - 1] - g0 + 1, local_wanted):
                    where = f"{path.name}:{local}"
                    if sequential:
                        yield g0 + local, where, result
                    else:
                        got[g0 + local] = (where, result)
            if not sequential:
                for p in chunk:
                    where, result = got[p]
                    yield p, where, result

    def __iter__(self) -> Iterator[dict[str, Any]]:
        rank, world_size = self.place()
        stream = self._stream(self.epoch, rank, world_size)[self.samples_consumed :]
        worker = get_worker_info()
        worker_id, num_workers = (worker.id, worker.num_workers) if worker is not None else (0, 1)
        size = self.batch_size
        mine = [p for i, p in enumerate(stream) if (i // size) % num_workers == worker_id]
        layout = self._locate(self.shard_order(self.epoch))
        decoded = self._decoded(self._raw(mine, layout))
        yield from self._equalized(decoded) if self.equalize else (item for item in decoded if item is not None)

    def _decoded(self, raw: Iterable[tuple[int, str, Any]]) -> Iterator[dict[str, Any] | None]:
        """Items, with None where a sample was corrupt (after warning and counting it)."""
        for _, where, result in raw:
            if isinstance(result, str):
                self._skip(where, result)
                yield None
                continue
            try:
                if self.kind == "videos":
                    yield _decode_video(result)
                else:
                    yield _decode_tokens(result, self.text_length)
            except Exception as error:  # noqa: BLE001 - a bad sample must not end the epoch
                self._skip(where, str(error))
                yield None

    @staticmethod
    def _equalized(items: Iterable[dict[str, Any] | None]) -> Iterator[dict[str, Any]]:
        """Each None replaced by the previous item (or, before the first readable one, by the next)."""
        previous, pending = None, 0
        for item in items:
            if item is None:
                if previous is None:
                    pending += 1
                else:
                    yield previous
                continue
            for _ in range(pending + 1):
                yield item
            previous, pending = item, 0
        if pending:
            raise RuntimeError(
                f"none of this worker's {pending} samples could be read: nothing to stand in for them (see the "
                "UnreadableFileWarning messages)"
            )
