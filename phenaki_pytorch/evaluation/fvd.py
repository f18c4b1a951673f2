"""Fréchet Video Distance with a pluggable video feature network.

FVD fits a Gaussian to the features of each set of videos and reports the squared Fréchet (2-Wasserstein)
distance between the two Gaussians (the square is not taken back: that is the number papers report).

The numbers depend on how videos are turned into network inputs, so every call runs under a
:class:`VideoFeatureProtocol` (frame count, frame sampling, short-clip padding, resize, value range), and the
result names the protocol and the network. Only compare FVDs measured under the same name.

The standard network is the Kinetics-400 I3D exported to TorchScript (``i3d_torchscript.pt``, used by
StyleGAN-V and most PyTorch FVD code). Nothing is downloaded: :func:`load_i3d_torchscript` loads a file the user
already has. Any ``nn.Module`` or callable mapping ``(b, c, f, h, w)`` to ``(b, d)`` features works too.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from tqdm.auto import tqdm

from ..typecheck import typechecked

__all__ = [
    "I3D_PROTOCOL",
    "FVDResult",
    "I3DFeatures",
    "VideoFeatureProtocol",
    "feature_statistics",
    "frechet_distance",
    "frechet_video_distance",
    "load_i3d_torchscript",
    "video_features",
]

Sampling = Literal["first", "center", "uniform"]
ShortClips = Literal["error", "repeat_last", "loop"]
ResizeMode = Literal["bilinear", "bicubic", "area", "nearest"]


# ---------------------------------------------------------------------------------------------- Fréchet distance


@typechecked
def feature_statistics(features: Tensor) -> tuple[Tensor, Tensor]:
    """Mean ``(d,)`` and unbiased covariance ``(d, d)`` of ``features (n, d)``, in float64 (n >= 2)."""
    if features.ndim != 2:
        raise ValueError(f"features must be (num_samples, feature_dim), got shape {tuple(features.shape)}")
    if features.shape[0] < 2:
        raise ValueError(f"a covariance needs at least 2 samples, got {features.shape[0]}")
    features = features.detach().double()
    mu = features.mean(dim=0)
    centered = features - mu
    sigma = centered.T @ centered / (features.shape[0] - 1)
    return mu, sigma


def _sqrt_psd(matrix: Tensor) -> Tensor:
    """Symmetric square root of a symmetric positive semi-definite matrix (rounding negatives clamped to 0)."""
    eigenvalues, eigenvectors = torch.linalg.eigh(matrix)
    return (eigenvectors * eigenvalues.clamp(min=0).sqrt()) @ eigenvectors.T


@typechecked
def frechet_distance(mu1: Tensor, sigma1: Tensor, mu2: Tensor, sigma2: Tensor) -> float:
    """Squared Fréchet distance between N(mu1, sigma1) and N(mu2, sigma2), computed in float64:
    ``|mu1 - mu2|^2 + tr(sigma1) + tr(sigma2) - 2 tr((sigma1 sigma2)^(1/2))``. Symmetric; 0 for equal inputs."""
    mu1, mu2, sigma1, sigma2 = (x.detach().double().cpu() for x in (mu1, mu2, sigma1, sigma2))
    if mu1.ndim != 1 or mu1.shape != mu2.shape:
        raise ValueError(f"mu1 and mu2 must be vectors of one length, got {tuple(mu1.shape)} and {tuple(mu2.shape)}")
    d = mu1.shape[0]
    for name, sigma in (("sigma1", sigma1), ("sigma2", sigma2)):
        if tuple(sigma.shape) != (d, d):
            raise ValueError(f"{name} must be ({d}, {d}) to match the means, got {tuple(sigma.shape)}")
    sigma1, sigma2 = (sigma1 + sigma1.T) / 2, (sigma2 + sigma2.T) / 2

    # tr((S1 S2)^(1/2)) is the sum of the square roots of the eigenvalues of S1 S2. S1 S2 is not symmetric, so
    # eigenvalues of it directly are numerically fragile (scipy's sqrtm may even return complex noise). With
    # A = S1^(1/2), the matrix A S2 A = A (A S2) has the same eigenvalues as (A S2) A = S1 S2 (XY and YX share
    # their eigenvalues), and it is symmetric positive semi-definite: eigvalsh gives real, non-negative values.
    root1 = _sqrt_psd(sigma1)
    middle = root1 @ sigma2 @ root1
    trace_sqrt = torch.linalg.eigvalsh((middle + middle.T) / 2).clamp(min=0).sqrt().sum()

    distance = (mu1 - mu2).pow(2).sum() + sigma1.trace() + sigma2.trace() - 2 * trace_sqrt
    return max(float(distance), 0.0)  # >= 0 in exact arithmetic; rounding can leave -1e-12


# ---------------------------------------------------------------------------------------------- the protocol


@dataclass(frozen=True)
class VideoFeatureProtocol:
    """How a video in [0, 1] becomes a feature-network input; FVDs are comparable only under one protocol.

    - ``num_frames``: frames per clip given to the network.
    - ``sampling``: which frames of a longer clip: ``"first"`` (frames 0..n-1), ``"center"`` (n consecutive
      frames from the middle) or ``"uniform"`` (n frames spread over the whole clip: changes the frame rate).
    - ``short_clips``: a clip with fewer valid frames: ``"error"``, ``"repeat_last"`` (hold the last frame) or
      ``"loop"`` (start again from frame 0).
    - ``size`` ``(height, width)``: every frame is resized to it with ``resize_mode`` (no crop, so keep the aspect
      ratio in the data if it matters), ``antialias`` as in ``F.interpolate``.
    - ``value_range``: [0, 1] is mapped linearly onto it (values outside [0, 1] are clamped first).
    - ``channels``: grayscale clips are repeated to this many channels.
    """

    num_frames: int = 16
    size: tuple[int, int] | int = (224, 224)
    value_range: tuple[float, float] = (-1.0, 1.0)
    sampling: Sampling = "first"
    short_clips: ShortClips = "error"
    resize_mode: ResizeMode = "bilinear"
    antialias: bool = False
    channels: int = 3

    def __post_init__(self):
        if isinstance(self.size, int):  # a square
            object.__setattr__(self, "size", (self.size, self.size))
        object.__setattr__(self, "size", tuple(self.size))
        if self.num_frames < 1:
            raise ValueError(f"num_frames must be a positive integer, got {self.num_frames}")
        if len(self.size) != 2 or min(self.size) < 1:
            raise ValueError(f"size must be (height, width) of positive ints, got {self.size}")
        if not self.value_range[0] < self.value_range[1]:
            raise ValueError(f"value_range must be (low, high) with low < high, got {self.value_range}")
        if self.channels < 1:
            raise ValueError(f"channels must be a positive integer, got {self.channels}")
        for name, value, allowed in (
            ("sampling", self.sampling, ("first", "center", "uniform")),
            ("short_clips", self.short_clips, ("error", "repeat_last", "loop")),
            ("resize_mode", self.resize_mode, ("bilinear", "bicubic", "area", "nearest")),
        ):
            if value not in allowed:
                raise ValueError(f"{name} must be one of {allowed}, got {value!r}")

    @property
    def name(self) -> str:
        """A short string that identifies the protocol, e.g. ``16f-first-error-224x224-bilinear-[-1,1]``."""
        low, high = self.value_range
        resize = self.resize_mode + ("-aa" if self.antialias else "")
        return (
            f"{self.num_frames}f-{self.sampling}-{self.short_clips}-{self.size[0]}x{self.size[1]}-{resize}-"
            f"[{low:g},{high:g}]" + (f"-{self.channels}ch" if self.channels != 3 else "")
        )

    def frame_indices(self, length: int) -> list[int]:
        """Indices of the ``num_frames`` frames taken from a clip with ``length`` valid frames."""
        n = self.num_frames
        if length < 1:
            raise ValueError(f"a clip needs at least one valid frame, got length {length}")
        if length < n:
            if self.short_clips == "error":
                raise ValueError(
                    f"a clip has {length} valid frames but the protocol takes num_frames={n}; use longer clips "
                    "or short_clips='repeat_last' / 'loop' (which changes the protocol)"
                )
            if self.short_clips == "repeat_last":
                return [min(i, length - 1) for i in range(n)]
            return [i % length for i in range(n)]
        if self.sampling == "first":
            return list(range(n))
        if self.sampling == "center":
            start = (length - n) // 2
            return list(range(start, start + n))
        if n == 1:
            return [0]
        return [round(i * (length - 1) / (n - 1)) for i in range(n)]

    @typechecked
    def prepare(self, video: Tensor, frame_mask: Tensor | None = None) -> Tensor:
        """``video (b, c, f, h, w)`` (or images ``(b, c, h, w)``) in [0, 1] -> network input
        ``(b, channels, num_frames, *size)`` in ``value_range``. ``frame_mask (b, f)`` marks valid frames
        (a prefix of each clip); padded frames are never sampled."""
        if video.ndim == 4:
            video = video.unsqueeze(2)
        if video.ndim != 5 or not video.is_floating_point():
            raise ValueError(
                f"video must be a float (b, c, f, h, w) or (b, c, h, w) tensor, got {video.dtype} {tuple(video.shape)}"
            )
        b, c, f, h, w = video.shape
        if c not in (1, self.channels):
            raise ValueError(f"video has {c} channels; the protocol takes {self.channels} (or 1, repeated)")
        lengths = [f] * b
        if frame_mask is not None:
            if frame_mask.dtype != torch.bool or tuple(frame_mask.shape) != (b, f):
                raise ValueError(
                    f"frame_mask must be a bool (batch, frames) = {(b, f)} tensor, got {frame_mask.dtype} "
                    f"{tuple(frame_mask.shape)}"
                )
            lengths = frame_mask.sum(dim=1).tolist()
            prefix = torch.arange(f, device=frame_mask.device)[None] < frame_mask.sum(dim=1, keepdim=True)
            if not torch.equal(prefix, frame_mask):
                raise ValueError("frame_mask must mark a prefix of each clip (valid frames first, then padding)")
        index = torch.tensor([self.frame_indices(length) for length in lengths], device=video.device)  # (b, n)
        frames = video.float().clamp(0.0, 1.0).transpose(1, 2)  # (b, f, c, h, w)
        frames = frames[torch.arange(b, device=video.device)[:, None], index]  # (b, n, c, h, w)
        frames = frames.flatten(0, 1)  # (b n) c h w
        if (h, w) != tuple(self.size):
            smooth = self.resize_mode in ("bilinear", "bicubic")
            frames = F.interpolate(
                frames,
                size=tuple(self.size),
                mode=self.resize_mode,
                align_corners=False if smooth else None,
                antialias=self.antialias if smooth else False,
            )
        if c == 1 and self.channels != 1:
            frames = frames.expand(-1, self.channels, -1, -1)
        low, high = self.value_range
        frames = frames * (high - low) + low
        return frames.unflatten(0, (b, self.num_frames)).transpose(1, 2).contiguous()  # (b, c, n, H, W)


# The common I3D protocol (StyleGAN-V's "fvd2048_16f"): 16 consecutive frames, frames resized to 224x224
# bilinearly, values in [-1, 1]; StyleGAN-V computes it over 2048 clips per set.
I3D_PROTOCOL = VideoFeatureProtocol()


# ---------------------------------------------------------------------------------------------- feature networks


class I3DFeatures(nn.Module):
    """The I3D TorchScript module behind the protocol: input ``(b, 3, f, 224, 224)`` in [-1, 1] (already resized
    and rescaled by the protocol), output ``(b, 400)`` features: the network's last layer before the softmax.

    The scripted module takes ``rescale`` ([0, 255] -> [-1, 1] inside), ``resize`` (to 224x224 inside) and
    ``return_features``; this wrapper passes ``call_kwargs`` (by default rescale=False, resize=False,
    return_features=True), so the preprocessing happens in one place, the protocol.
    """

    def __init__(self, module: nn.Module, call_kwargs: dict[str, Any] | None = None, name: str = "i3d_torchscript"):
        super().__init__()
        self.module = module
        self.call_kwargs = (
            dict(rescale=False, resize=False, return_features=True) if call_kwargs is None else call_kwargs
        )
        self.name = name
        self.protocol = I3D_PROTOCOL

    def forward(self, video: Tensor) -> Tensor:
        return self.module(video, **self.call_kwargs)


@typechecked
def load_i3d_torchscript(
    path: str | Path, *, device: str | torch.device = "cpu", call_kwargs: dict[str, Any] | None = None
) -> I3DFeatures:
    """Load the Kinetics-400 I3D TorchScript file (``i3d_torchscript.pt``) from ``path``; never downloads.

    The file is the one StyleGAN-V and most PyTorch FVD code fetch (a TorchScript export of the I3D used by the
    original TensorFlow FVD); download it yourself and pass its path. The result is in eval mode, carries
    ``.protocol = I3D_PROTOCOL`` and is what :func:`frechet_video_distance` expects as ``feature_network``.
    """
    path = Path(path).expanduser()
    if not path.is_file():
        raise FileNotFoundError(
            f"no I3D TorchScript file at {str(path)!r}: nothing is downloaded, so fetch i3d_torchscript.pt "
            "(the file StyleGAN-V's FVD uses) yourself and pass its path"
        )
    try:
        with warnings.catch_warnings():  # torch >= 2.10 flags TorchScript as deprecated; the file is TorchScript
            warnings.simplefilter("ignore", DeprecationWarning)
            module = torch.jit.load(str(path), map_location=device)
    except Exception as error:  # noqa: BLE001 - one clear message for any unreadable file
        raise ValueError(f"could not load {str(path)!r} as a TorchScript module: {error}") from error
    return I3DFeatures(module, call_kwargs).eval()


# ---------------------------------------------------------------------------------------------- FVD


def _network_name(network: Callable) -> str:
    return str(getattr(network, "name", None) or type(network).__name__)


def _video_batches(videos: Any, batch_size: int) -> Iterable[tuple[Tensor, Tensor | None]]:
    if isinstance(videos, Tensor):
        videos = videos.split(batch_size)
    elif not isinstance(videos, Iterable):
        raise TypeError(
            f"videos must be a tensor (n, c, f, h, w) or an iterable of batches, got {type(videos).__name__}"
        )
    for batch in videos:
        if isinstance(batch, dict):
            if "video" not in batch:
                raise ValueError(f"a batch dict must hold a 'video' entry, got keys {sorted(batch)}")
            video, mask = batch["video"], batch.get("frame_mask")
        elif isinstance(batch, Tensor):
            video, mask = batch, None
        elif isinstance(batch, (tuple, list)) and batch and isinstance(batch[0], Tensor):  # e.g. a TensorDataset
            video = batch[0]
            mask = next((x for x in batch[1:] if isinstance(x, Tensor) and x.dtype == torch.bool), None)
        else:
            raise TypeError(
                f"each batch must be a video tensor, a dict with 'video' or a tuple led by the video, got "
                f"{type(batch).__name__}"
            )
        for start in range(0, video.shape[0], batch_size):  # a large batch from a loader is split too
            part_mask = None if mask is None or video.ndim == 4 else mask[start : start + batch_size]
            yield video[start : start + batch_size], part_mask


@typechecked
def video_features(
    videos: Any,
    feature_network: nn.Module | Callable,
    *,
    batch_size: int = 16,
    protocol: VideoFeatureProtocol | None = None,
    device: str | torch.device | None = None,
    progress: bool = False,
) -> Tensor:
    """Features ``(n, d)`` (float64, on the CPU) of ``videos`` under ``protocol``: a tensor ``(n, c, f, h, w)``
    in [0, 1], or an iterable of such batches (or of dicts with ``"video"`` and an optional ``"frame_mask"``).

    ``protocol`` defaults to the network's ``.protocol`` attribute if it has one, else :data:`I3D_PROTOCOL`.
    A module runs in eval mode under ``torch.no_grad()``; its train/eval modes are restored afterwards.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size}")
    protocol = protocol or getattr(feature_network, "protocol", None) or I3D_PROTOCOL
    dtype = torch.float32
    if isinstance(feature_network, nn.Module):
        tensors = [t for t in (*feature_network.parameters(), *feature_network.buffers()) if t.is_floating_point()]
        device = device if device is not None else (tensors[0].device if tensors else None)
        dtype = tensors[0].dtype if tensors else dtype
    modes = {m: m.training for m in feature_network.modules()} if isinstance(feature_network, nn.Module) else {}
    features = []
    try:
        for module in modes:
            module.eval()
        with torch.no_grad():
            for video, mask in tqdm(_video_batches(videos, batch_size), desc="video features", disable=not progress):
                inputs = protocol.prepare(video.to(device), None if mask is None else mask.to(device)).to(dtype)
                out = feature_network(inputs)
                if not isinstance(out, Tensor) or out.ndim != 2 or out.shape[0] != inputs.shape[0]:
                    raise ValueError(
                        f"feature_network must map (b, c, f, h, w) to (b, feature_dim) features; for input "
                        f"{tuple(inputs.shape)} it returned {getattr(out, 'shape', type(out).__name__)}"
                    )
                features.append(out.double().cpu())
    finally:
        for module, training in modes.items():
            module.train(training)
    if not features:
        raise ValueError("videos yielded no clips")
    return torch.cat(features)


@dataclass(frozen=True)
class FVDResult:
    """An FVD value with what it was measured under. ``float(result)`` is the value."""

    fvd: float
    protocol: str
    feature_network: str
    num_real: int
    num_fake: int
    feature_dim: int

    def __float__(self) -> float:
        return self.fvd

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["fvd"] = self.fvd if math.isfinite(self.fvd) else None
        return out


@typechecked
def frechet_video_distance(
    real: Any,
    fake: Any,
    feature_network: nn.Module | Callable,
    *,
    batch_size: int = 16,
    protocol: VideoFeatureProtocol | None = None,
    device: str | torch.device | None = None,
    progress: bool = False,
) -> FVDResult:
    """FVD between two sets of videos (tensors ``(n, c, f, h, w)`` in [0, 1] or iterables of batches; see
    :func:`video_features`).

    Lower is better; identical sets give 0. The estimate is biased upwards for few clips (it needs many more clips
    than feature dimensions to be stable: the common protocol uses 2048 per set), so compare values only at one
    set size as well as one protocol. To reuse the real set's statistics, call :func:`video_features`,
    :func:`feature_statistics` and :func:`frechet_distance` yourself.
    """
    protocol = protocol or getattr(feature_network, "protocol", None) or I3D_PROTOCOL
    options = dict(batch_size=batch_size, protocol=protocol, device=device, progress=progress)
    real_features = video_features(real, feature_network, **options)
    fake_features = video_features(fake, feature_network, **options)
    if real_features.shape[1] != fake_features.shape[1]:
        raise ValueError(f"feature dims differ: {real_features.shape[1]} (real) vs {fake_features.shape[1]} (fake)")
    n, d = min(len(real_features), len(fake_features)), real_features.shape[1]
    if n < d:
        warnings.warn(
            f"FVD from {n} clips with {d}-dim features: the covariance is rank-deficient and the value strongly "
            "biased; use more clips than feature dimensions",
            stacklevel=3,  # the caller, past beartype's wrapper
        )
    fvd = frechet_distance(*feature_statistics(real_features), *feature_statistics(fake_features))
    return FVDResult(
        fvd=fvd,
        protocol=protocol.name,
        feature_network=_network_name(feature_network),
        num_real=len(real_features),
        num_fake=len(fake_features),
        feature_dim=d,
    )
