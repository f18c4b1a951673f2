"""Time a C-ViViT training step and encode/decode, in each precision mode.

Configuration (issue 2): batch 2, video 3x9x64x64, dim 128, codebook 1024, patch 8,
temporal patch 2, depth 2+2, 4 heads of 32. The "reconstruction-only" step has no
GAN and no perceptual loss, which is what the public 0.5.0 number measures. The
optimizer is the trainers' (fused AdamW where available; `--plain-adam` for torch's
default for-loop Adam).

Precision modes (`--modes`, default all three):
  fp32        plain fp32 ("ieee" matmuls)
  fp32-bf16mm fp32 tensors, matmuls through oneDNN's bf16 kernels (`fp32_matmul_precision("bf16")`,
              what the trainers pick with fp32_matmul="auto" on a CPU where it keeps fp32 accuracy)
  bf16        bf16 autocast (`mixed_precision="bf16"` in the trainers)
For each mode it also prints how far the loss and gradients of one step are from plain fp32.

    python benchmarks/bench_cvivit.py [--modes fp32,bf16] [--device cuda] [--gan] [--repeats 20]
"""

from __future__ import annotations

import argparse
import contextlib

import torch
from common import TOKENIZER, autocast, header, peak_rss_mb, timeit

from phenaki_pytorch import CViViT, fp32_matmul_precision

MODES = ("fp32", "fp32-bf16mm", "bf16")


def build_cvivit(use_gan: bool = False) -> CViViT:
    """The issue's benchmark tokenizer: dim 128, codebook 1024, 64x64 frames, patch 8, depth 2+2, 4 heads of 32."""
    return CViViT(**TOKENIZER, use_gan=use_gan, perceptual_network=None)


def make_optimizer(params, plain: bool = False) -> torch.optim.Optimizer:
    """The trainers' optimizer step: fused AdamW (one kernel for all tensors) unless `plain`."""
    if plain:
        return torch.optim.Adam(params, lr=1e-4)
    try:
        return torch.optim.AdamW(params, lr=1e-4, weight_decay=0.0, fused=True)
    except (RuntimeError, TypeError, ValueError):
        return torch.optim.AdamW(params, lr=1e-4, weight_decay=0.0)


@contextlib.contextmanager
def precision(mode: str, device: str):
    """Enter the precision `mode` (one of MODES)."""
    with fp32_matmul_precision("bf16" if mode == "fp32-bf16mm" else "ieee"), autocast(device, mode == "bf16"):
        yield


def gradient_error(device: str, mode: str) -> tuple[float, float]:
    """(relative loss error, relative gradient-norm error) of one step in `mode` against plain fp32."""
    torch.manual_seed(0)
    model = build_cvivit().to(device)
    model.quantizer.eval()  # no codebook update between the passes
    video = torch.rand(2, 3, 9, 64, 64, device=device)
    results = {}
    for name in ("fp32", mode):
        model.zero_grad()
        with precision(name, device):
            loss = model(video)
            loss.backward()
        grads = torch.cat([p.grad.flatten() for p in model.generator_parameters() if p.grad is not None])
        results[name] = (loss.detach().float(), grads)
    (loss_ref, grads_ref), (loss, grads) = results["fp32"], results[mode]
    return (
        ((loss - loss_ref).abs() / loss_ref.abs()).item(),
        ((grads - grads_ref).norm() / grads_ref.norm()).item(),
    )


def run_mode(mode: str, args, video: torch.Tensor):
    """Time the training step, encode and decode in precision `mode` and print them."""
    device = args.device

    def sync():
        if device == "cuda":
            torch.cuda.synchronize()

    torch.manual_seed(0)
    cvivit = build_cvivit(use_gan=args.gan).to(device)
    optimizer = make_optimizer(cvivit.generator_parameters(), plain=args.plain_adam)

    def train_step():
        with precision(mode, device):
            loss = cvivit(video)
            loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        sync()

    def discr_step():
        with precision(mode, device):
            loss = cvivit(video, return_discr_loss=True)
            loss.backward()
        cvivit.zero_grad(set_to_none=True)
        sync()

    @torch.no_grad()
    def encode():
        with precision(mode, device):
            cvivit.tokenize(video)
        sync()

    ids = cvivit.tokenize(video)

    @torch.no_grad()
    def decode():
        with precision(mode, device):
            cvivit.decode_from_codebook_indices(ids)
        sync()

    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    results = {"train step (fwd+bwd+opt)": timeit(train_step, repeats=args.repeats)}
    if args.gan:
        results["discriminator step"] = timeit(discr_step, repeats=args.repeats)
    cvivit.eval()
    results["encode -> ids"] = timeit(encode, repeats=args.repeats)
    results["decode ids -> video"] = timeit(decode, repeats=args.repeats)
    print(f"-- {mode}")
    for name, r in results.items():
        print(
            f"{name:28s} median {r['median_s'] * 1000:8.2f} ms   "
            f"(min {r['min_s'] * 1000:.2f}, max {r['max_s'] * 1000:.2f})"
        )
    if mode != "fp32":
        loss_err, grad_err = gradient_error(device, mode)
        print(f"{'error vs fp32':28s} loss {loss_err:.1e}, gradients {grad_err:.1e} (relative)")
    if device == "cuda":
        print(f"peak CUDA memory {torch.cuda.max_memory_allocated() / 2**20:.1f} MiB")


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--modes", default=",".join(MODES), help=f"comma-separated subset of {','.join(MODES)}")
    parser.add_argument("--bf16", action="store_true", help="shorthand for --modes bf16")
    parser.add_argument("--gan", action="store_true", help="include the adversarial loss in the generator step")
    parser.add_argument("--plain-adam", action="store_true", help="torch's default (for-loop) Adam instead of fused")
    parser.add_argument("--repeats", type=int, default=20)
    args = parser.parse_args()
    modes = ["bf16"] if args.bf16 else [m.strip() for m in args.modes.split(",") if m.strip()]
    unknown = [m for m in modes if m not in MODES]
    if unknown:
        parser.error(f"unknown mode(s) {unknown}; choose from {MODES}")

    video = torch.rand(2, 3, 9, 64, 64, device=args.device)

    header(f"C-ViViT (gan={args.gan}, optimizer={'Adam' if args.plain_adam else 'fused AdamW'})")
    for mode in modes:
        run_mode(mode, args, video)
    print(f"peak RSS {peak_rss_mb():.1f} MiB")


if __name__ == "__main__":
    main()
