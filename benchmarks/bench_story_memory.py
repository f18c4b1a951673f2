"""Peak memory of `sample_story` for long stories: streamed to a video file, or returned as one tensor.

Each (length, mode) runs in a fresh process with a tiny untrained model (64x64 frames, 8x8 tokens a frame,
9-frame windows primed with 3 frames, 1 decoding step: the model's quality does not matter here, only how
memory grows with the story's length). Prints the process's resident memory after the model is built and one
window is sampled ("base"), its peak during the story (the kernel's VmHWM, reset at the base), and the
difference.

    OMP_NUM_THREADS=1 python benchmarks/bench_story_memory.py                 # 1 and 4 minutes at 8 fps, both modes
    OMP_NUM_THREADS=1 python benchmarks/bench_story_memory.py --minutes 1 --modes stream

`--modes tensor` also runs on a library without `frame_sink` (an older checkout on PYTHONPATH), to compare.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

FPS = 8
TEXT_DIM = 32


def current_rss_mb() -> float:
    with open("/proc/self/statm") as file:
        return int(file.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def reset_peak_rss() -> None:
    """Make the kernel's high-water mark (VmHWM) start again from the current resident size."""
    with open("/proc/self/clear_refs", "w") as file:
        file.write("5")


def peak_rss_since_reset_mb() -> float:
    with open("/proc/self/status") as file:
        line = next(line for line in file if line.startswith("VmHWM:"))
    return int(line.split()[1]) / 1024


def build_phenaki():
    import torch

    from phenaki_pytorch import CallableTextEncoder, CViViT, MaskGit, Phenaki

    torch.manual_seed(0)
    cvivit = CViViT(dim=32, codebook_size=256, image_size=64, patch_size=8, temporal_patch_size=2, spatial_depth=1,
                    temporal_depth=1, heads=2, dim_head=16, perceptual_network=None, use_gan=False)
    maskgit = MaskGit(num_tokens=256, max_seq_len=5 * 64, dim=64, dim_context=TEXT_DIM, depth=1, heads=2, dim_head=32)

    def encode(texts):  # a fixed stand-in for T5: one random vector per caption
        g = torch.Generator().manual_seed(0)
        return torch.randn(len(texts), 1, TEXT_DIM, generator=g), torch.ones(len(texts), 1, dtype=torch.bool)

    return Phenaki(cvivit=cvivit, maskgit=maskgit, text_encoder=CallableTextEncoder(encode, dim=TEXT_DIM)).eval()


def child(minutes: float, mode: str) -> dict:
    import torch

    from phenaki_pytorch import sample_story

    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    phenaki = build_phenaki()
    kwargs = dict(fps=float(FPS), window_frames=9, prime_frames=3, steps=1, show_progress=False)
    sample_story(phenaki, [("warm up", 9)], **kwargs)  # allocator and kernels warmed: the base excludes them
    base = current_rss_mb()
    reset_peak_rss()
    scenes = [("a red square moving left", minutes * 30.0), ("a blue circle moving up", minutes * 30.0)]
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as folder:
        if mode == "stream":
            from phenaki_pytorch.data.video_writer import VideoWriter

            with VideoWriter(Path(folder) / "story.mp4", fps=FPS) as writer:
                story = sample_story(phenaki, scenes, frame_sink=writer.write, **kwargs)
            frames = story.num_frames
        else:
            story = sample_story(phenaki, scenes, **kwargs)
            frames = story.video.shape[2]
    return {"minutes": minutes, "mode": mode, "frames": frames, "seconds": time.perf_counter() - start,
            "base_mb": base, "peak_mb": peak_rss_since_reset_mb()}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", default="1,4", help="story lengths in minutes, comma-separated (default 1,4)")
    parser.add_argument("--modes", default="stream,tensor", help="stream (frame_sink -> mp4) and/or tensor")
    parser.add_argument("--child", nargs=2, metavar=("MINUTES", "MODE"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(float(args.child[0]), args.child[1])))
        return

    print(f"story at {FPS} fps, 64x64 frames, tiny untrained model, one process per row")
    print(f"{'minutes':>7}  {'mode':>6}  {'frames':>6}  {'base MB':>8}  {'peak MB':>8}  {'peak - base':>11}  {'seconds':>7}")
    for minutes in (float(m) for m in args.minutes.split(",")):
        for mode in args.modes.split(","):
            out = subprocess.run([sys.executable, __file__, "--child", str(minutes), mode], capture_output=True,
                                 text=True, check=True)
            row = json.loads(out.stdout.strip().splitlines()[-1])
            print(f"{row['minutes']:>7g}  {mode:>6}  {row['frames']:>6}  {row['base_mb']:>8.0f}  {row['peak_mb']:>8.0f}  "
                  f"{row['peak_mb'] - row['base_mb']:>11.0f}  {row['seconds']:>7.1f}", flush=True)


if __name__ == "__main__":
    main()
