"""Time a C-ViViT training step and encode/decode.

Configuration (issue 2): batch 2, video 3x9x64x64, dim 128, codebook 1024, patch 8,
temporal patch 2, depth 2+2, 4 heads of 32. The "reconstruction-only" step has no
GAN and no perceptual loss, which is what the public 0.5.0 number measures.

    python benchmarks/bench_cvivit.py [--bf16] [--device cuda] [--gan]
"""

from __future__ import annotations

import argparse

import torch
from common import autocast, header, peak_rss_mb, timeit

from phenaki_pytorch import CViViT


def build_cvivit(use_gan: bool = False) -> CViViT:
    """The issue's benchmark tokenizer: dim 128, codebook 1024, 64x64 frames, patch 8, depth 2+2, 4 heads of 32."""
    return CViViT(
        dim=128,
        codebook_size=1024,
        image_size=64,
        patch_size=8,
        temporal_patch_size=2,
        spatial_depth=2,
        temporal_depth=2,
        dim_head=32,
        heads=4,
        use_gan=use_gan,
        perceptual_network=None,
    )


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--bf16", action="store_true", help="bf16 autocast")
    parser.add_argument("--gan", action="store_true", help="include the adversarial loss in the generator step")
    parser.add_argument("--repeats", type=int, default=20)
    args = parser.parse_args()

    torch.manual_seed(0)
    device = args.device
    cvivit = build_cvivit(use_gan=args.gan).to(device)
    video = torch.rand(2, 3, 9, 64, 64, device=device)
    optimizer = torch.optim.Adam(cvivit.generator_parameters(), lr=1e-4)

    def sync():
        if device == "cuda":
            torch.cuda.synchronize()

    def train_step():
        with autocast(device, args.bf16):
            loss = cvivit(video)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        sync()

    def discr_step():
        with autocast(device, args.bf16):
            loss = cvivit(video, return_discr_loss=True)
        loss.backward()
        cvivit.zero_grad(set_to_none=True)
        sync()

    @torch.no_grad()
    def encode():
        with autocast(device, args.bf16):
            cvivit.tokenize(video)
        sync()

    ids = cvivit.tokenize(video)

    @torch.no_grad()
    def decode():
        with autocast(device, args.bf16):
            cvivit.decode_from_codebook_indices(ids)
        sync()

    header(f"C-ViViT (bf16={args.bf16}, gan={args.gan})")
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    results = {"train step (fwd+bwd+adam)": timeit(train_step, repeats=args.repeats)}
    if args.gan:
        results["discriminator step"] = timeit(discr_step, repeats=args.repeats)
    cvivit.eval()
    results["encode -> ids"] = timeit(encode, repeats=args.repeats)
    results["decode ids -> video"] = timeit(decode, repeats=args.repeats)
    for name, r in results.items():
        print(f"{name:28s} median {r['median_s'] * 1000:8.2f} ms   (min {r['min_s'] * 1000:.2f}, max {r['max_s'] * 1000:.2f})")
    if device == "cuda":
        print(f"peak CUDA memory {torch.cuda.max_memory_allocated() / 2**20:.1f} MiB")
    print(f"peak RSS {peak_rss_mb():.1f} MiB")


if __name__ == "__main__":
    main()
