"""Peak memory of the two memory options: chunked C-ViViT decoding, and gradient checkpointing in training.

Every setting runs in a fresh process (so one setting's peak never hides another's). Each process builds its
model, runs the measured call once as a warm-up (allocator, kernels, caches), notes its resident memory
("base"), resets the kernel's high-water mark (VmHWM) and runs the call again; "peak - base" is the memory the
call needed on top of the model. Children run with glibc's MALLOC_MMAP_THRESHOLD_ fixed at 128 KiB, so freed
tensors leave the resident set at once.

decode: `decode_from_codebook_indices` of a long clip with benchmarks/common.py's tokenizer (dim 128, 64x64
frames, 8x8 tokens a frame, depth 2+2, conv pixel head), untrained, whole and in chunks of token frames; `stream`
iterates `iter_decode_from_codebook_indices` and drops each chunk (as a video writer would), so the returned
video is not held either. Also checks the chunked output equals the whole one.

train: one forward + backward of a MaskGit (dim 256, depth 4, 8 heads of 32, 9 frames of 8x8 tokens) and of
that tokenizer (9 frames), with and without gradient checkpointing; prints the bytes autograd saved for the
backward (counted with `torch.autograd.graph.saved_tensors_hooks`) besides the RSS.

    OMP_NUM_THREADS=1 python benchmarks/bench_decode_memory.py                       # both parts
    OMP_NUM_THREADS=1 python benchmarks/bench_decode_memory.py --part decode --token-frames 65 --chunks 4,16
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))


def current_rss_mb() -> float:
    with open("/proc/self/statm") as file:
        return int(file.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def reset_peak_rss() -> None:
    with open("/proc/self/clear_refs", "w") as file:
        file.write("5")  # VmHWM restarts from the current resident size


def peak_rss_mb() -> float:
    with open("/proc/self/status") as file:
        line = next(line for line in file if line.startswith("VmHWM:"))
    return int(line.split()[1]) / 1024


def measure(fn) -> dict:
    fn()  # warm-up
    base = current_rss_mb()
    reset_peak_rss()
    result = fn()
    peak = peak_rss_mb()
    return {"base_mb": base, "peak_mb": peak, "delta_mb": peak - base, "result": result}


def build_tokenizer(**overrides):
    import torch
    from common import TOKENIZER

    from phenaki_pytorch import CViViT

    torch.manual_seed(0)
    return CViViT(**{**TOKENIZER, "perceptual_network": None, "use_gan": False, "kmeans_init": False, **overrides})


def decode_child(token_frames: int, chunk: int | None, stream: bool) -> dict:
    import torch

    cvivit = build_tokenizer().eval()
    h, w = cvivit.patch_grid()
    ids = torch.randint(0, cvivit.codebook_size, (1, token_frames, h, w), generator=torch.Generator().manual_seed(0))

    @torch.no_grad()
    def run():
        if stream:
            checksum = 0.0
            for frames in cvivit.iter_decode_from_codebook_indices(ids, token_frames_per_chunk=chunk):
                checksum += float(frames.double().sum())
            return checksum
        return float(cvivit.decode_from_codebook_indices(ids, token_frames_per_chunk=chunk).double().sum())

    out = measure(run)
    frames = cvivit.num_video_frames(token_frames)
    out["video_mb"] = 3 * frames * 64 * 64 * 4 / 2**20
    return out


def saved_bytes(fn) -> int:
    import torch

    total = 0

    def pack(t):
        nonlocal total
        total += t.numel() * t.element_size()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        fn()
    return total


def train_child(model_name: str, checkpointing: bool) -> dict:
    import torch

    from phenaki_pytorch import MaskGit, set_gradient_checkpointing

    torch.manual_seed(0)
    if model_name == "maskgit":
        # every layer at full resolution, the layout the README's numbers were measured with (hourglass=0)
        model = MaskGit(num_tokens=1024, max_seq_len=5 * 64, dim=256, dim_context=64, depth=4, heads=8, dim_head=32,
                        hourglass=0)
        ids = torch.randint(0, 1024, (4, 5 * 64))
        text = torch.randn(4, 8, 64)

        def forward():
            return model(ids, text_embeds=text, video_patch_shape=(8, 8)).float().logsumexp(-1).mean()
    else:
        model = build_tokenizer()
        video = torch.rand(2, 3, 9, 64, 64)

        def forward():
            return model(video)

    model.train()
    set_gradient_checkpointing(model, checkpointing)

    def step():
        model.zero_grad(set_to_none=True)
        loss = forward()
        loss.backward()
        return float(loss)

    out = measure(step)
    model.zero_grad(set_to_none=True)
    out["saved_mb"] = saved_bytes(forward) / 2**20
    return out


def spawn(args: list[str]) -> dict:
    env = dict(os.environ)
    env.setdefault("OMP_NUM_THREADS", "1")
    # a fixed mmap threshold: glibc otherwise raises it after the warm-up frees its large tensors, keeps the next
    # ones on the heap, and the measured call reuses warm-up pages the RSS never shows again
    env.setdefault("MALLOC_MMAP_THRESHOLD_", str(128 * 1024))
    done = subprocess.run([sys.executable, __file__, "--child", *args], capture_output=True, text=True, env=env)
    if done.returncode:
        raise RuntimeError(f"child {args} failed:\n{done.stderr}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--part", choices=("decode", "train", "both"), default="both")
    parser.add_argument("--token-frames", type=int, default=33, help="token frames decoded (1 + (t-1)*2 video frames)")
    parser.add_argument("--chunks", default="2,8", help="token frames per chunk, comma-separated")
    parser.add_argument("--child", nargs="*", help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.child is not None:
        kind, *rest = args.child
        if kind == "decode":
            chunk = None if rest[1] == "whole" else int(rest[1])
            result = decode_child(int(rest[0]), chunk, stream=rest[2] == "stream")
        else:
            result = train_child(rest[0], rest[1] == "on")
        print(json.dumps(result))
        return

    import torch

    print(f"torch {torch.__version__}, OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')}")
    if args.part in ("decode", "both"):
        t = args.token_frames
        frames = 1 + (t - 1) * 2
        print(f"\ndecode {t} token frames ({frames} frames of 64x64, batch 1): MB over the loaded model")
        print(f"{'setting':<22}{'peak - base':>12}{'base':>8}  same output")
        reference = None
        settings = [("whole", "tensor")] + [(c, mode) for c in args.chunks.split(",") for mode in ("tensor", "stream")]
        for chunk, mode in settings:
            out = spawn(["decode", str(t), str(chunk), mode])
            if reference is None:
                reference = out["result"]
                print(f"(the returned video alone is {out['video_mb']:.1f} MB)")
            same = abs(out["result"] - reference) <= 1e-6 * max(1.0, abs(reference))
            label = "whole" if chunk == "whole" else f"chunks of {chunk}" + (", streamed" if mode == "stream" else "")
            print(f"{label:<22}{out['delta_mb']:>12.1f}{out['base_mb']:>8.0f}  {'yes' if same else 'NO'}")
    if args.part in ("train", "both"):
        print("\ntraining step (forward + backward): MB over the loaded model, and what autograd saved")
        print(f"{'model':<32}{'checkpointing':>14}{'peak - base':>12}{'saved':>8}")
        for name, label in (("maskgit", "MaskGit d256x4, b4, 320 tokens"), ("cvivit", "CViViT (common), b2, 9 frames")):
            for flag in ("off", "on"):
                out = spawn(["train", name, flag])
                print(f"{label:<32}{flag:>14}{out['delta_mb']:>12.1f}{out['saved_mb']:>8.1f}")


if __name__ == "__main__":
    main()
