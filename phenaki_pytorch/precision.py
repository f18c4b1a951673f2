"""Numeric precision switches for CPU training and sampling.

Two levers, measured in `benchmarks/bench_cvivit.py`:

- bf16 autocast (`torch.autocast("cpu", dtype=torch.bfloat16)`, or a trainer's
  `mixed_precision="bf16"`): matmuls in bf16 (attention stays fp32 on CPU, see
  `attention.sdpa`), everything else fp32.
  Fastest; gradients differ from fp32 by about 1% (relative norm).
- fp32 matmuls through oneDNN's bf16 path (`fp32_matmul_precision("bf16")`): tensors,
  weights and every elementwise op stay fp32; only the matmul kernels change. On the
  AMD EPYC (avx512_bf16) we measured, results stay close to fp32 (gradients within 3e-7
  of the plain fp32 ones, relative norm; a matmul's error about 1.6x that of fp32, far
  from the ~1000x of rounding its operands to bf16) at about twice the matmul speed.
  `resolve_fp32_matmul("auto")` checks this on the running machine before using it.
"""

from __future__ import annotations

import contextlib
import functools

import torch

from .typecheck import typechecked

FP32_MATMUL_CHOICES = ("auto", "ieee", "bf16")


@typechecked
def native_bf16(device: torch.device | str = "cpu") -> bool:
    """Whether `device` computes bf16 natively (CUDA with bf16 support; a CPU with avx512_bf16 or AMX)."""
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    if device.type != "cpu":
        return False
    try:
        with open("/proc/cpuinfo") as handle:
            flags = handle.read()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def _mkldnn_matmul_backend():
    backend = getattr(torch.backends.mkldnn, "matmul", None)
    return backend if backend is not None and hasattr(backend, "fp32_precision") else None


@contextlib.contextmanager
@typechecked
def fp32_matmul_precision(precision: str = "bf16"):
    """Run fp32 CPU matmuls (`nn.Linear`, `matmul`, `bmm`, attention) with oneDNN's `precision` inside the block.

    `"bf16"` lets oneDNN use bf16 hardware for fp32 matmuls; `"ieee"` forces plain fp32.
    The previous setting is restored on exit. A no-op where torch has no such switch
    (before 2.9). CUDA matmuls are untouched (see `torch.backends.cuda.matmul`).

        with fp32_matmul_precision("bf16"):
            loss = cvivit(video)
            loss.backward()
    """
    if precision not in ("ieee", "bf16"):
        raise ValueError(f"precision must be 'ieee' or 'bf16', got {precision!r}")
    backend = _mkldnn_matmul_backend()
    if backend is None:
        yield
        return
    previous = backend.fp32_precision
    backend.fp32_precision = precision
    try:
        yield
    finally:
        backend.fp32_precision = previous


@functools.lru_cache(maxsize=None)
def bf16_matmul_error_ratio() -> float:
    """Error of an fp32 matmul under `fp32_matmul_precision("bf16")` relative to plain fp32, on this CPU.

    Both are measured against float64 on a fixed random (256 x 1024) @ (1024 x 256)
    product. About 1-3 where oneDNN keeps fp32 accuracy; about 1000 where it rounds the
    operands to bf16 outright; 1.0 where the switch does not exist.
    """
    if _mkldnn_matmul_backend() is None:
        return 1.0
    generator = torch.Generator().manual_seed(0)
    a = torch.randn(256, 1024, generator=generator)
    b = torch.randn(1024, 256, generator=generator)
    exact = a.double() @ b.double()
    errors = {}
    for precision in ("ieee", "bf16"):
        with fp32_matmul_precision(precision):
            errors[precision] = ((a @ b).double() - exact).abs().mean().item()
    return errors["bf16"] / max(errors["ieee"], 1e-30)


def resolve_fp32_matmul(setting: str, device: torch.device | str = "cpu") -> str:
    """Turn a user's `fp32_matmul` setting into 'ieee' or 'bf16' for `device`.

    'auto' picks 'bf16' only on a CPU with native bf16 where the check above shows fp32-level
    accuracy (error ratio below 10), and 'ieee' everywhere else.
    """
    if setting not in FP32_MATMUL_CHOICES:
        raise ValueError(f"fp32_matmul must be one of {FP32_MATMUL_CHOICES}, got {setting!r}")
    if setting != "auto":
        return setting
    device = torch.device(device)
    if device.type != "cpu" or not native_bf16(device) or _mkldnn_matmul_backend() is None:
        return "ieee"
    return "bf16" if bf16_matmul_error_ratio() < 10.0 else "ieee"
