"""Reconstruction metrics for a video tokenizer: PSNR, SSIM, per-frame error, temporal flicker and codebook use.

Videos are ``(b, c, f, h, w)`` floats in [0, 1]; images ``(b, c, h, w)`` count as one-frame clips. Every per-batch
metric takes an optional bool ``frame_mask (b, f)``: False marks a padded frame, which is left out. The per-clip
metrics return one value per clip, ``(b,)``; averaging over clips is the caller's choice.

``evaluate_tokenizer`` runs a C-ViViT over a dataset the way a generator uses it (tokens in, decoded video out)
and returns a :class:`TokenizerReport`.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from einops import rearrange
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset, IterableDataset
from torchmetrics.functional.image import structural_similarity_index_measure
from tqdm.auto import tqdm

from ..data import collate_videos
from ..typecheck import typechecked

__all__ = [
    "MAX_PSNR",
    "CodebookHistogram",
    "TokenizerMetrics",
    "TokenizerReport",
    "codebook_perplexity",
    "codebook_usage",
    "evaluate_tokenizer",
    "flicker",
    "mse_to_psnr",
    "per_frame_mse",
    "psnr",
    "ssim",
    "token_frame_mask",
]

# A perfect reconstruction has infinite PSNR; clamping MSE at 10^(-MAX_PSNR/10) keeps every value finite, so
# means over clips and JSON stay meaningful. 100 dB is far above any lossy tokenizer (8-bit rounding alone: ~59 dB).
MAX_PSNR = 100.0

# torchmetrics' SSIM: an 11x11 Gaussian window (sigma 1.5) with reflect padding of 5 pixels per side
_SSIM_MIN_SIDE = 6


# ---------------------------------------------------------------------------------------------- input checks


def _as_clips(name: str, video: Tensor) -> Tensor:
    if video.ndim == 4:  # images (b, c, h, w) -> one-frame clips
        video = video.unsqueeze(2)
    if video.ndim != 5:
        raise ValueError(
            f"{name} must be a video batch (b, c, f, h, w) or an image batch (b, c, h, w), got shape "
            f"{tuple(video.shape)}"
        )
    if not video.is_floating_point():
        raise TypeError(f"{name} must be a float tensor with values in [0, 1], got dtype {video.dtype}")
    return video.float()


def _check_pair(recon: Tensor, real: Tensor, frame_mask: Tensor | None) -> tuple[Tensor, Tensor, Tensor]:
    """(recon, real, mask) as float (b, c, f, h, w), float (b, c, f, h, w), bool (b, f)."""
    recon, real = _as_clips("recon", recon), _as_clips("real", real)
    if recon.shape != real.shape:
        raise ValueError(f"recon and real must have one shape, got {tuple(recon.shape)} and {tuple(real.shape)}")
    b, _, f = real.shape[:3]
    if frame_mask is None:
        return recon, real, torch.ones(b, f, dtype=torch.bool, device=real.device)
    if frame_mask.dtype != torch.bool:
        raise TypeError(f"frame_mask must be a bool tensor, got dtype {frame_mask.dtype}")
    if tuple(frame_mask.shape) != (b, f):
        raise ValueError(f"frame_mask must be (batch, frames) = {(b, f)}, got shape {tuple(frame_mask.shape)}")
    empty = (~frame_mask.any(dim=1)).nonzero().flatten().tolist()
    if empty:
        raise ValueError(f"frame_mask marks no valid frame in clip(s) {empty}; every clip needs at least one")
    return recon, real, frame_mask.to(real.device)


def _masked_mean(values: Tensor, mask: Tensor) -> Tensor:
    """Mean over dim 1 of (b, n) values where mask is True; NaN for rows with no True entry."""
    mask = mask.float()
    return (values * mask).sum(dim=1) / mask.sum(dim=1)  # 0/0 = NaN for an empty row


# ---------------------------------------------------------------------------------------------- pixel metrics


@typechecked
def mse_to_psnr(mse: Tensor | float, max_psnr: float = MAX_PSNR) -> Tensor:
    """PSNR in dB for data in [0, 1]: ``10 log10(1 / mse)``, capped at ``max_psnr`` (so MSE 0 gives ``max_psnr``)."""
    mse = mse if isinstance(mse, Tensor) else torch.tensor(float(mse), dtype=torch.float64)
    return -10.0 * torch.log10(mse.clamp(min=10.0 ** (-max_psnr / 10.0)))


@typechecked
def per_frame_mse(recon: Tensor, real: Tensor, frame_mask: Tensor | None = None) -> Tensor:
    """Mean squared error of every frame, ``(b, f)``; padded frames are NaN (use ``torch.nanmean``)."""
    recon, real, mask = _check_pair(recon, real, frame_mask)
    mse = (recon - real).pow(2).mean(dim=(1, 3, 4))  # (b, f)
    return mse.masked_fill(~mask, float("nan"))


@typechecked
def psnr(recon: Tensor, real: Tensor, frame_mask: Tensor | None = None, *, max_psnr: float = MAX_PSNR) -> Tensor:
    """PSNR of every clip in dB, ``(b,)``, from the clip's MSE over its valid frames (data range 1).

    This is the PSNR of the clip as one signal, not the mean of per-frame PSNRs (which would overweight nearly
    perfect frames). Identical clips give ``max_psnr`` instead of infinity.
    """
    recon, real, mask = _check_pair(recon, real, frame_mask)
    frame_mse = (recon - real).pow(2).mean(dim=(1, 3, 4))
    return mse_to_psnr(_masked_mean(frame_mse, mask), max_psnr)


@typechecked
def ssim(recon: Tensor, real: Tensor, frame_mask: Tensor | None = None) -> Tensor:
    """Mean SSIM of every clip over its valid frames, ``(b,)``.

    Per frame: torchmetrics' SSIM (11x11 Gaussian window, sigma 1.5, data_range 1) averaged over the frame's
    pixels and channels. Frames must be at least 6x6 pixels.
    """
    recon, real, mask = _check_pair(recon, real, frame_mask)
    b, _, f, h, w = real.shape
    if min(h, w) < _SSIM_MIN_SIDE:
        raise ValueError(f"ssim needs frames of at least {_SSIM_MIN_SIDE}x{_SSIM_MIN_SIDE} pixels, got {h}x{w}")
    valid = mask.flatten()  # (b f)
    frames_recon = rearrange(recon, "b c f h w -> (b f) c h w")[valid]
    frames_real = rearrange(real, "b c f h w -> (b f) c h w")[valid]
    scores = structural_similarity_index_measure(frames_recon, frames_real, data_range=1.0, reduction="none")
    per_frame = torch.zeros(b * f, device=real.device, dtype=scores.dtype)
    per_frame[valid] = scores
    return _masked_mean(per_frame.view(b, f), mask)


@typechecked
def flicker(recon: Tensor, real: Tensor, frame_mask: Tensor | None = None) -> Tensor:
    """Temporal flicker of every clip, ``(b,)``: the MSE between frame-to-frame changes,
    ``(recon[t] - recon[t-1]) - (real[t] - real[t-1])``, averaged over transitions between two valid frames.

    0 means the reconstruction changes over time exactly as the real clip does, even if every frame is off by
    the same amount; a tokenizer whose error jumps from frame to frame scores high. Clips with fewer than two
    valid frames (images) are NaN.
    """
    recon, real, mask = _check_pair(recon, real, frame_mask)
    error = recon - real
    step_error = (error[:, :, 1:] - error[:, :, :-1]).pow(2).mean(dim=(1, 3, 4))  # (b, f - 1)
    return _masked_mean(step_error, mask[:, 1:] & mask[:, :-1])


# ---------------------------------------------------------------------------------------------- codebook use


class CodebookHistogram:
    """Counts of codebook ids over many batches: ``update`` per batch, then ``usage()`` / ``perplexity()``."""

    @typechecked
    def __init__(self, codebook_size: int):
        if codebook_size < 1:
            raise ValueError(f"codebook_size must be a positive integer, got {codebook_size}")
        self.codebook_size = codebook_size
        self.counts = torch.zeros(codebook_size, dtype=torch.long)

    @typechecked
    def update(self, ids: Tensor, mask: Tensor | None = None) -> None:
        """Count ``ids`` (any integer shape). ``mask`` is bool, shaped like ``ids`` or like its leading dims
        (e.g. ``(b, t)`` for ids ``(b, t, h, w)``); ids where it is False are not counted."""
        if ids.is_floating_point() or ids.dtype == torch.bool:
            raise TypeError(f"ids must be an integer tensor, got dtype {ids.dtype}")
        if ids.numel() and (int(ids.min()) < 0 or int(ids.max()) >= self.codebook_size):
            raise ValueError(
                f"ids must lie in [0, {self.codebook_size}), got values in [{int(ids.min())}, {int(ids.max())}]"
            )
        if mask is not None:
            if mask.dtype != torch.bool:
                raise TypeError(f"mask must be a bool tensor, got dtype {mask.dtype}")
            if mask.ndim > ids.ndim or tuple(mask.shape) != tuple(ids.shape[: mask.ndim]):
                raise ValueError(
                    f"mask must have the shape of ids {tuple(ids.shape)} or of its leading dims, "
                    f"got {tuple(mask.shape)}"
                )
            mask = mask.to(ids.device).reshape(*mask.shape, *([1] * (ids.ndim - mask.ndim))).expand_as(ids)
            ids = ids[mask]
        self.counts += torch.bincount(ids.flatten().long(), minlength=self.codebook_size).cpu()

    @property
    def num_tokens(self) -> int:
        return int(self.counts.sum())

    @property
    def codes_used(self) -> int:
        return int((self.counts > 0).sum())

    def usage(self) -> float:
        """Fraction of the codebook that occurred at least once (0 before any update)."""
        return self.codes_used / self.codebook_size

    def perplexity(self) -> float:
        """``exp(entropy)`` of the id histogram (natural log): 1 when one code is used, ``codebook_size`` when
        all are used equally often; the effective number of codes. NaN before any update."""
        total = self.num_tokens
        if total == 0:
            return float("nan")
        p = self.counts[self.counts > 0].double() / total
        return float(torch.exp(-(p * p.log()).sum()))


@typechecked
def codebook_usage(ids: Tensor, codebook_size: int, mask: Tensor | None = None) -> float:
    """Fraction of the ``codebook_size`` codes that occur in ``ids`` (where ``mask`` is True)."""
    histogram = CodebookHistogram(codebook_size)
    histogram.update(ids, mask)
    return histogram.usage()


@typechecked
def codebook_perplexity(ids: Tensor, codebook_size: int, mask: Tensor | None = None) -> float:
    """``exp(entropy)`` of the histogram of ``ids`` (where ``mask`` is True); see
    :meth:`CodebookHistogram.perplexity`."""
    histogram = CodebookHistogram(codebook_size)
    histogram.update(ids, mask)
    return histogram.perplexity()


@typechecked
def token_frame_mask(frame_mask: Tensor, num_token_frames: int) -> Tensor:
    """Which token frames of a causal tokenizer carry real content, ``(b, t)`` from a video ``frame_mask (b, f)``.

    Token frame 0 encodes video frame 0; token frame j >= 1 encodes frames ``1 + (j-1)*tp ... j*tp`` with
    ``tp = (f - 1) / (t - 1)``. A token frame counts when any of its video frames is valid, the rule
    `CViViT.token_frame_mask` uses for the codebook update, so both count the same tokens.
    """
    if frame_mask.dtype != torch.bool or frame_mask.ndim != 2:
        raise ValueError(
            f"frame_mask must be a bool (batch, frames) tensor, got {frame_mask.dtype} {tuple(frame_mask.shape)}"
        )
    f = frame_mask.shape[1]
    if num_token_frames < 1 or (num_token_frames > 1 and (f - 1) % (num_token_frames - 1)):
        raise ValueError(f"{f} video frames do not split into {num_token_frames} causal token frames")
    if num_token_frames == 1:
        return frame_mask[:, :1]
    tp = (f - 1) // (num_token_frames - 1)
    rest = frame_mask[:, 1:].reshape(frame_mask.shape[0], num_token_frames - 1, tp).any(dim=-1)
    return torch.cat((frame_mask[:, :1], rest), dim=1)


# ---------------------------------------------------------------------------------------------- the report


def _json_number(value: float | None) -> float | None:
    return None if value is None or not math.isfinite(value) else float(value)


@dataclass
class TokenizerReport:
    """What :func:`evaluate_tokenizer` measured. Means are over clips; curves are indexed by frame.

    ``psnr`` is the mean over clips of each clip's PSNR (from the clip's MSE over its valid frames, capped at
    ``max_psnr``); ``per_frame_psnr[t]`` is the mean over clips of frame t's PSNR. ``None`` in a curve means no
    clip had a valid frame there; ``flicker`` is None when no clip has two frames.
    """

    num_clips: int
    num_frames: int
    psnr: float
    ssim: float
    mse: float
    flicker: float | None
    per_frame_mse: list[float | None]
    per_frame_psnr: list[float | None]
    codebook_size: int
    codes_used: int
    codebook_usage: float
    codebook_perplexity: float
    num_tokens: int
    seconds: float
    max_psnr: float = MAX_PSNR
    meta: dict[str, Any] = field(default_factory=dict)  # free-form context for the JSON: checkpoint, data, ...

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-safe values (non-finite numbers become None)."""
        out = asdict(self)
        for key, value in out.items():
            if isinstance(value, float):
                out[key] = _json_number(value)
            elif isinstance(value, list):
                out[key] = [_json_number(v) for v in value]
        return out

    def save_json(self, path: str | Path) -> Path:
        """Write :meth:`to_dict` as indented JSON (parent folders are created); returns the path."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(self.to_dict(), indent=2) + "\n")
        return path

    def table(self) -> str:
        """A plain-text table: the summary, then MSE and PSNR per frame."""

        def number(value: float | None, fmt: str) -> str:
            return "-" if value is None or not math.isfinite(value) else format(value, fmt)

        rows = [
            ("clips", str(self.num_clips)),
            ("frames per clip", str(self.num_frames)),
            ("PSNR (dB)", f"{number(self.psnr, '.2f')}  (mean of per-clip PSNR, capped at {self.max_psnr:g} dB)"),
            ("SSIM", number(self.ssim, ".4f")),
            ("MSE", number(self.mse, ".6f")),
            ("flicker (MSE of frame changes)", number(self.flicker, ".6f")),
            ("codebook usage", f"{self.codebook_usage:.3f}  ({self.codes_used} of {self.codebook_size} codes)"),
            ("codebook perplexity", number(self.codebook_perplexity, ".1f")),
            ("tokens", str(self.num_tokens)),
            ("seconds", f"{self.seconds:.1f}"),
        ]
        width = max(len(name) for name, _ in rows)
        lines = ["tokenizer reconstruction", *(f"  {name:<{width}}  {value}" for name, value in rows)]
        lines += ["", f"  {'frame':>5}  {'MSE':>10}  {'PSNR (dB)':>9}"]
        for t, (mse, db) in enumerate(zip(self.per_frame_mse, self.per_frame_psnr)):
            lines.append(f"  {t:>5}  {number(mse, '.6f'):>10}  {number(db, '.2f'):>9}")
        return "\n".join(lines)


class TokenizerMetrics:
    """Accumulates reconstruction metrics over batches; :func:`evaluate_tokenizer` is a loop around it.

    A trainer can feed its own validation batches: ``update(real, recon, ids, frame_mask)`` per batch, then
    ``report()``.
    """

    @typechecked
    def __init__(self, codebook_size: int, *, max_psnr: float = MAX_PSNR):
        self.max_psnr = max_psnr
        self.histogram = CodebookHistogram(codebook_size)
        self.num_clips = 0
        self._sums = {"psnr": 0.0, "ssim": 0.0, "mse": 0.0, "flicker": 0.0}
        self._flicker_clips = 0
        self._frame_mse = torch.zeros(0, dtype=torch.float64)  # per-frame sums over clips
        self._frame_psnr = torch.zeros(0, dtype=torch.float64)
        self._frame_count = torch.zeros(0, dtype=torch.long)

    def _grow(self, num_frames: int) -> None:
        extra = num_frames - len(self._frame_count)
        if extra > 0:
            self._frame_mse = torch.cat((self._frame_mse, torch.zeros(extra, dtype=torch.float64)))
            self._frame_psnr = torch.cat((self._frame_psnr, torch.zeros(extra, dtype=torch.float64)))
            self._frame_count = torch.cat((self._frame_count, torch.zeros(extra, dtype=torch.long)))

    @typechecked
    def update(self, real: Tensor, recon: Tensor, ids: Tensor | None = None, frame_mask: Tensor | None = None) -> None:
        """Add one batch: ``real`` and ``recon`` ``(b, c, f, h, w)`` (or images), optional codebook ``ids
        (b, t, h, w)`` of the same clips, optional ``frame_mask (b, f)``. ``recon`` is clamped to [0, 1]."""
        recon, real, mask = _check_pair(recon.clamp(0.0, 1.0), real, frame_mask)
        frame_mse = per_frame_mse(recon, real, mask)  # (b, f), NaN where padded
        clip_mse = torch.nanmean(frame_mse, dim=1)
        clip_flicker = flicker(recon, real, mask)
        has_flicker = ~clip_flicker.isnan()

        self.num_clips += real.shape[0]
        self._sums["mse"] += float(clip_mse.sum())
        self._sums["psnr"] += float(mse_to_psnr(clip_mse, self.max_psnr).sum())
        self._sums["ssim"] += float(ssim(recon, real, mask).sum())
        self._sums["flicker"] += float(clip_flicker[has_flicker].sum())
        self._flicker_clips += int(has_flicker.sum())

        self._grow(real.shape[2])
        f = real.shape[2]
        frame_psnr = mse_to_psnr(frame_mse.nan_to_num(0.0), self.max_psnr)
        self._frame_mse[:f] += frame_mse.nan_to_num(0.0).sum(dim=0).double().cpu()
        self._frame_psnr[:f] += (frame_psnr * mask).sum(dim=0).double().cpu()
        self._frame_count[:f] += mask.sum(dim=0).cpu()

        if ids is not None:
            if ids.ndim == 4:  # (b, t, h, w): leave out token frames that encode only padding
                self.histogram.update(ids, token_frame_mask(mask, ids.shape[1]))
            elif bool(mask.all()):
                self.histogram.update(ids)
            else:
                raise ValueError(
                    f"with padded frames, ids must be (b, t, h, w) so padded token frames can be left out, "
                    f"got shape {tuple(ids.shape)}"
                )

    @typechecked
    def report(self, seconds: float = 0.0) -> TokenizerReport:
        if self.num_clips == 0:
            raise ValueError("no clips were added: call update() with at least one batch first")

        def curve(sums: Tensor) -> list[float | None]:
            return [float(s / c) if c else None for s, c in zip(sums.tolist(), self._frame_count.tolist())]

        n = self.num_clips
        return TokenizerReport(
            num_clips=n,
            num_frames=len(self._frame_count),
            psnr=self._sums["psnr"] / n,
            ssim=self._sums["ssim"] / n,
            mse=self._sums["mse"] / n,
            flicker=self._sums["flicker"] / self._flicker_clips if self._flicker_clips else None,
            per_frame_mse=curve(self._frame_mse),
            per_frame_psnr=curve(self._frame_psnr),
            codebook_size=self.histogram.codebook_size,
            codes_used=self.histogram.codes_used,
            codebook_usage=self.histogram.usage(),
            codebook_perplexity=self.histogram.perplexity(),
            num_tokens=self.histogram.num_tokens,
            seconds=seconds,
            max_psnr=self.max_psnr,
        )


# ---------------------------------------------------------------------------------------------- the loop


def _item_as_clip(item: Any) -> Any:
    """Dataset items (dicts, tuples or bare tensors) with images (c, h, w) turned into one-frame clips."""
    if isinstance(item, Tensor) and item.ndim == 3:
        return item.unsqueeze(1)
    if isinstance(item, dict) and isinstance(item.get("video"), Tensor) and item["video"].ndim == 3:
        return {**item, "video": item["video"].unsqueeze(1)}
    if isinstance(item, (tuple, list)) and item and isinstance(item[0], Tensor) and item[0].ndim == 3:
        return (item[0].unsqueeze(1), *item[1:])
    return item


def _collate_items(items: list[Any]) -> dict[str, Any]:
    return collate_videos([_item_as_clip(item) for item in items])


def _video_and_mask(batch: Any) -> tuple[Tensor, Tensor | None]:
    """A batch (dict with "video", tuple/list led by the video, or a bare tensor) as (video, frame_mask)."""
    mask = None
    if isinstance(batch, dict):
        if "video" not in batch:
            raise ValueError(f"a batch dict must hold a 'video' entry, got keys {sorted(batch)}")
        video, mask = batch["video"], batch.get("frame_mask")
    elif isinstance(batch, (tuple, list)) and batch:
        video = batch[0]
        mask = next((x for x in batch[1:] if isinstance(x, Tensor) and x.dtype == torch.bool), None)
    else:
        video = batch
    if not isinstance(video, Tensor):
        raise TypeError(
            f"each batch must be a video tensor, a dict with 'video' or a tuple led by the video, got "
            f"{type(video).__name__}"
        )
    if video.ndim == 4:  # images (b, c, h, w)
        video = video.unsqueeze(2)
        mask = None if mask is None else mask.reshape(-1, 1)
    return video, mask


def _batches(data: Any, batch_size: int) -> tuple[Iterable[Any], int | None]:
    """(iterable of batches, number of clips if known)."""
    if isinstance(data, Tensor):
        if data.ndim not in (4, 5):
            raise ValueError(f"a data tensor must be (n, c, f, h, w) or (n, c, h, w), got shape {tuple(data.shape)}")
        return data.split(batch_size), data.shape[0]
    if isinstance(data, Dataset) and not isinstance(data, IterableDataset):
        loader = DataLoader(data, batch_size=batch_size, shuffle=False, collate_fn=_collate_items)
        return loader, len(data)
    if isinstance(data, Iterable):
        return data, None
    raise TypeError(
        f"data must be a map-style Dataset, an iterable of batches or a video tensor, got {type(data).__name__}"
    )


def _model_modes(model: nn.Module) -> dict[nn.Module, bool]:
    return {module: module.training for module in model.modules()}


@typechecked
def evaluate_tokenizer(
    cvivit: nn.Module,
    data: Any,
    *,
    batch_size: int = 8,
    device: str | torch.device | None = None,
    max_items: int | None = None,
    progress: bool = True,
    max_psnr: float = MAX_PSNR,
) -> TokenizerReport:
    """Reconstruction quality of a tokenizer over ``data``, as a generator sees it.

    Each batch is tokenized (``cvivit.tokenize``) and decoded back from the ids
    (``cvivit.decode_from_codebook_indices``); the decoded video, clamped to [0, 1], is compared with the input.

    ``data``: a map-style Dataset of items (dicts ``{"video": (c, f, h, w), "frame_mask": (f,) bool, ...}``,
    tuples led by the video, or bare tensors; images ``(c, h, w)`` are one-frame clips), batched here with
    ``batch_size``; or any iterable of batches (e.g. a DataLoader over ``collate_videos``); or one tensor
    ``(n, c, f, h, w)``. Padded frames (``frame_mask`` False) are left out of every metric, and token frames
    that encode only padding out of the codebook statistics.

    The model runs in eval mode under ``torch.no_grad()`` on ``device`` (default: where its weights are); the
    train/eval mode of every submodule is restored afterwards. ``max_items`` stops after that many clips.
    """
    for name in ("tokenize", "decode_from_codebook_indices"):
        if not callable(getattr(cvivit, name, None)):
            raise TypeError(f"cvivit must be a tokenizer with a {name}() method, got {type(cvivit).__name__}")
    codebook_size = getattr(cvivit, "codebook_size", None)
    if not isinstance(codebook_size, int):
        raise TypeError(f"cvivit must have an int codebook_size, got {codebook_size!r}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size}")
    if max_items is not None and max_items < 1:
        raise ValueError(f"max_items must be a positive integer or None, got {max_items}")

    parameter = next(cvivit.parameters(), None)
    device = torch.device(device) if device is not None else (parameter.device if parameter is not None else None)
    dtype = parameter.dtype if parameter is not None and parameter.is_floating_point() else torch.float32
    batches, total = _batches(data, batch_size)
    if max_items is not None:
        total = min(total, max_items) if total is not None else max_items

    metrics = TokenizerMetrics(codebook_size, max_psnr=max_psnr)
    modes = _model_modes(cvivit)
    start = time.perf_counter()
    bar = tqdm(total=total, desc="evaluating tokenizer", unit="clip", disable=not progress, leave=False)
    try:
        cvivit.eval()
        with torch.no_grad():
            for batch in batches:
                video, mask = _video_and_mask(batch)
                if max_items is not None:
                    left = max_items - metrics.num_clips
                    if left <= 0:
                        break
                    video, mask = video[:left], None if mask is None else mask[:left]
                video = video.to(device=device, dtype=dtype)
                mask = None if mask is None else mask.to(device)
                ids = cvivit.tokenize(video)
                recon = cvivit.decode_from_codebook_indices(ids)
                if recon.ndim == 4:
                    recon = recon.unsqueeze(2)
                if recon.shape != video.shape:
                    raise ValueError(
                        f"the tokenizer decoded a {tuple(video.shape)} batch to {tuple(recon.shape)}: the frame "
                        "count must be one the tokenizer reconstructs exactly (1 + k * temporal_patch_size)"
                    )
                metrics.update(video, recon, ids, mask)
                bar.update(video.shape[0])
    finally:
        bar.close()
        for module, training in modes.items():
            module.train(training)
    if metrics.num_clips == 0:
        raise ValueError("data yielded no clips to evaluate")
    return metrics.report(seconds=time.perf_counter() - start)
