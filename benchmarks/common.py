"""Small timing helpers shared by the benchmark scripts."""

from __future__ import annotations

import contextlib
import resource
import statistics
import time

import torch

# the benchmark tokenizer, shared by bench_cvivit.py, bench_phenaki.py and compare_peer.py (both sides)
TOKENIZER = dict(
    dim=128,
    codebook_size=1024,
    image_size=64,
    patch_size=8,
    temporal_patch_size=2,
    spatial_depth=2,
    temporal_depth=2,
    heads=4,
    dim_head=32,
)


def timeit(fn, *, warmup: int = 3, repeats: int = 20) -> dict:
    """Median and spread of `fn()` wall time in seconds after `warmup` calls."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return {"median_s": statistics.median(times), "min_s": min(times), "max_s": max(times)}


def peak_rss_mb() -> float:
    """Peak resident memory of this process so far (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def autocast(device: str, bf16: bool):
    if not bf16:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device, dtype=torch.bfloat16)


def header(title: str):
    print(f"\n== {title} ==")
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}, device {'cuda' if torch.cuda.is_available() else 'cpu'}")
