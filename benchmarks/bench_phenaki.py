"""Time a Phenaki (MaskGit) training step and `sample()`.

Small setting (issue 3): batch 2, 9 frames of 64x64, the tokenizer of bench_cvivit.py,
MaskGit dim 128 depth 2, 768-dim text, 18 steps, guidance 3. Large setting: MaskGit
dim 512, depth 6, 17 frames. Text embeddings come from a fixed random stand-in for
T5 (the timing excludes the text encoder, which is cached per caption anyway).
`--hourglass K` sets MaskGit's merged middle layers (default: the library's, `depth - 2` from
depth 4 up, so the large setting merges 4 of its 6 layers; 0 runs every layer at full resolution).

    python benchmarks/bench_phenaki.py [--large] [--bf16] [--device cuda] [--hourglass K]
"""

from __future__ import annotations

import argparse

import torch
from bench_cvivit import build_cvivit
from common import autocast, header, peak_rss_mb, timeit

from phenaki_pytorch import CallableTextEncoder, MaskGit, Phenaki


def build(large: bool, device: str, hourglass: int | None = None) -> tuple[Phenaki, int]:
    frames = 17 if large else 9
    cvivit = build_cvivit()
    tokens = cvivit.num_tokens(frames)
    maskgit = MaskGit(
        num_tokens=1024,
        max_seq_len=tokens,
        dim=512 if large else 128,
        depth=6 if large else 2,
        dim_context=768,
        heads=8 if large else 4,
        dim_head=64 if large else 32,
        hourglass=hourglass,
    )
    generator = torch.Generator().manual_seed(0)
    table = torch.randn(16, 768, generator=generator)
    text_encoder = CallableTextEncoder(lambda texts: table[None].expand(len(texts), -1, -1), dim=768)
    phenaki = Phenaki(cvivit=cvivit, maskgit=maskgit, text_encoder=text_encoder).to(device)
    return phenaki, frames


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--large", action="store_true")
    parser.add_argument("--bf16", action="store_true")
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--hourglass", type=int, default=None, help="MaskGit(hourglass=K); default: the library's")
    args = parser.parse_args()
    device = args.device

    torch.manual_seed(0)
    phenaki, frames = build(args.large, device, args.hourglass)
    videos = torch.rand(2, 3, frames, 64, 64, device=device)
    texts = ["a red square moving left", "a blue circle moving up"]
    optimizer = torch.optim.Adam(phenaki.trainable_parameters(), lr=1e-4)

    def sync():
        if device == "cuda":
            torch.cuda.synchronize()

    def train_step():
        with autocast(device, args.bf16):
            loss = phenaki(videos, texts)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        sync()

    ids = phenaki.cvivit.tokenize(videos)

    def train_step_pretokenized():
        with autocast(device, args.bf16):
            loss = phenaki(video_codebook_ids=ids, texts=texts)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        sync()

    def sample():
        with autocast(device, args.bf16):
            phenaki.sample(text="a squirrel examines an acorn", num_frames=frames, cond_scale=3.0, steps=18)
        sync()

    setting = "large (dim 512, depth 6, 17 frames)" if args.large else "small (dim 128, depth 2, 9 frames)"
    header(f"Phenaki {setting}, bf16={args.bf16}")
    print(f"MaskGit parameters {sum(p.numel() for p in phenaki.maskgit.parameters()) / 1e6:.1f}M, "
          f"tokens per video {phenaki.cvivit.num_tokens(frames)}, hourglass {phenaki.maskgit.trunk.hourglass}")
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    phenaki.train()
    results = {
        "train step, videos": timeit(train_step, repeats=args.repeats),
        "train step, pre-tokenized": timeit(train_step_pretokenized, repeats=args.repeats),
    }
    phenaki.eval()
    results["sample() 1 video, 18 steps"] = timeit(sample, warmup=1, repeats=max(args.repeats // 2, 3))
    for name, r in results.items():
        print(f"{name:30s} median {r['median_s'] * 1000:8.1f} ms   (min {r['min_s'] * 1000:.1f}, max {r['max_s'] * 1000:.1f})")
    if device == "cuda":
        print(f"peak CUDA memory {torch.cuda.max_memory_allocated() / 2**20:.1f} MiB")
    print(f"peak RSS {peak_rss_mb():.1f} MiB")


if __name__ == "__main__":
    main()
