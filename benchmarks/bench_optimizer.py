"""What Muon costs per step: `MuonAdamW` (PhenakiTrainer's default) against fused AdamW on a MaskGit + critic.

Small setting: the glyph benchmark's stage 2 (MaskGit dim 128, depth 4, 320 tokens, 1024 codes; a depth-2
TokenCritic), batch 4. Large: the README's MaskGit (dim 512, depth 8, 8 heads of 64, 17 frames of 64 x 64 at
8 x 8 patches = 576 tokens), batch 4, no critic. Rounds alternate between the optimizers, so a machine's drift
hits both alike; it prints the medians and their ratio. `--ns-dtypes` also times one Newton-Schulz pass over
the model's matrices in float32 (ours on CPU) and bfloat16 (what `torch.optim.Muon` uses), which is emulated
and slow on CPUs without native bf16 (see `lscpu | grep -o 'avx512_bf16\\|amx_bf16'`).

    python benchmarks/bench_optimizer.py [--large] [--rounds 5] [--ns-dtypes]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from common import header

from phenaki_pytorch import MaskGit, TokenCritic
from phenaki_pytorch.training import MuonAdamW, muon_param_groups, newton_schulz


def build(large: bool):
    torch.manual_seed(0)
    if large:
        size, seq, critic = dict(dim=512, depth=8, heads=8, dim_head=64), 9 * 64, None
    else:
        size, seq = dict(dim=128, depth=4, heads=4, dim_head=32), 5 * 64
        critic = TokenCritic(num_tokens=1024, max_seq_len=seq, dim_context=64, dim=128, depth=2, heads=4,
                             dim_head=32, has_cross_attn=True)
    maskgit = MaskGit(num_tokens=1024, max_seq_len=seq, dim_context=64, **size)
    return maskgit, critic, seq


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--large", action="store_true")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--steps", type=int, default=10, help="timed steps per round")
    parser.add_argument("--ns-dtypes", action="store_true")
    args = parser.parse_args()

    maskgit, critic, seq = build(args.large)
    modules = [maskgit] + ([critic] if critic is not None else [])
    params = [p for m in modules for p in m.parameters()]
    optimizers = {
        "adamw (fused)": torch.optim.AdamW(params, lr=1e-3, fused=True),
        "muon + adamw": MuonAdamW([g for m in modules for g in muon_param_groups(m)], lr=1e-3),
    }
    generator = torch.Generator().manual_seed(0)
    ids = torch.randint(0, 1024, (4, seq), generator=generator)
    text = torch.randn(4, 8, 64, generator=generator)
    h = w = 8
    patch = (h, w)

    def step(optimizer):
        masked = torch.rand(ids.shape) < 0.6
        logits = maskgit(ids.masked_fill(masked, maskgit.mask_id), text_embeds=text, video_patch_shape=patch)
        loss = torch.nn.functional.cross_entropy(logits[masked], ids[masked])
        if critic is not None:
            scores = critic(ids, text_embeds=text, video_patch_shape=patch)
            loss = loss + torch.nn.functional.binary_cross_entropy_with_logits(scores, masked.float())
        loss.backward()
        started = time.perf_counter()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return time.perf_counter() - started

    setting = "large (README MaskGit, dim 512, depth 8)" if args.large else "small (glyph benchmark stage 2)"
    header(f"optimizer step, {setting}")
    print(f"parameters {sum(p.numel() for p in params) / 1e6:.2f}M, of which on Muon "
          f"{sum(p.numel() for m in modules for g in muon_param_groups(m) if g['muon'] for p in g['params']) / 1e6:.2f}M")
    whole = {name: [] for name in optimizers}
    opt_only = {name: [] for name in optimizers}
    for optimizer in optimizers.values():
        step(optimizer)  # warm-up: state allocated
    for _ in range(args.rounds):
        for name, optimizer in optimizers.items():
            started = time.perf_counter()
            inner = sum(step(optimizer) for _ in range(args.steps))
            whole[name].append((time.perf_counter() - started) / args.steps)
            opt_only[name].append(inner / args.steps)
    for name in optimizers:
        print(f"{name:16s} training step median {statistics.median(whole[name]) * 1000:7.1f} ms, of which "
              f"optimizer.step {statistics.median(opt_only[name]) * 1000:6.1f} ms")
    a, b = (statistics.median(whole[n]) for n in optimizers)
    print(f"training step time, muon / adamw: {b / a:.2f}")

    if args.ns_dtypes:
        matrices = [p for m in modules for g in muon_param_groups(m) if g["muon"] for p in g["params"]]
        for dtype in (torch.float32, torch.bfloat16):
            started = time.perf_counter()
            for _ in range(3):
                for p in matrices:
                    newton_schulz(torch.randn_like(p)[None], dtype=dtype)
            print(f"Newton-Schulz over {len(matrices)} matrices, {str(dtype):15s} {(time.perf_counter() - started) / 3 * 1000:7.1f} ms")


if __name__ == "__main__":
    main()
