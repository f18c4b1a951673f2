"""Tokenizer quality on the glyph benchmark: what a user gets from the library's defaults.

Stage 1 of the quality benchmark. It trains the benchmark tokenizer (32x32, 9 frames, patch 4, codebook 1024,
dim 128, depth 2+2) with `CViViTTrainer` and its defaults, under a fixed number of steps and/or a wall-clock
budget, then prints: steps, seconds, PSNR and SSIM of held-out clips (seen and held-out pairings), codebook usage
and perplexity on them, and a shape probe's accuracy on reconstructions against its accuracy on the real clips.

    python benchmarks/quality.py --minutes 8                 # the issue's budget
    python benchmarks/quality.py --steps 400 --curve-every 100
    python benchmarks/quality.py --steps 400 --cvivit '{"pixel_head": "linear"}'   # one ablation
    python benchmarks/quality.py --minutes 5 --decoder-minutes 1   # 4 minutes of training, then 1 of the decoder alone

Stage 2 (benchmarks/quality_stage2.py): `--stage 2 --tokenizer DIR` (or `--stage both`) trains a text-conditioned
Phenaki with `PhenakiTrainer` on the tokenized training clips and judges samples of every prompt; see that file.

A PNG of real frames (top) above their reconstructions (bottom) goes to --out, with a JSON of every number.
Runs on different CPUs compare by --steps; --minutes says what one machine reaches in a budget.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import header  # noqa: E402

from phenaki_pytorch import CViViT  # noqa: E402
from phenaki_pytorch.data import glyph_benchmark_splits, save_image, video_grid  # noqa: E402
from phenaki_pytorch.demo import _train_until  # noqa: E402
from phenaki_pytorch.evaluation import evaluate_tokenizer, probe_accuracy, train_shape_probe  # noqa: E402
from phenaki_pytorch.training import CViViTTrainer  # noqa: E402

# the benchmark tokenizer; everything else is the library's default
BENCH_TOKENIZER = dict(
    dim=128,
    codebook_size=1024,
    image_size=32,
    patch_size=4,
    temporal_patch_size=2,
    spatial_depth=2,
    temporal_depth=2,
    heads=4,
    dim_head=32,
)


def stack(dataset, count=None):
    count = len(dataset) if count is None else min(count, len(dataset))
    items = [dataset[i] for i in range(count)]
    return torch.stack([item["video"] for item in items]), [item["shape"] for item in items]


@torch.no_grad()
def reconstruct(cvivit, videos, batch_size=32):
    cvivit.eval()
    out = [
        cvivit.decode_from_codebook_indices(cvivit.tokenize(videos[i : i + batch_size])).clamp(0, 1)
        for i in range(0, len(videos), batch_size)
    ]
    return torch.cat(out)


def tokenizer_numbers(cvivit, split, videos, shapes, probe, batch_size):
    report = evaluate_tokenizer(cvivit, split, batch_size=batch_size, progress=False)
    recon = reconstruct(cvivit, videos)
    return {
        "psnr": report.psnr,
        "ssim": report.ssim,
        "codebook_usage": report.codebook_usage,
        "codebook_perplexity": report.codebook_perplexity,
        "flicker": report.flicker,
        "per_frame_psnr": report.per_frame_psnr,
        "probe_real": probe_accuracy(probe, videos, shapes),
        "probe_recon": probe_accuracy(probe, recon, shapes),
    }, recon


def picture(real, recon, path, count=8):
    """Frames 0, 4, 8 of `count` clips: real row above reconstruction row, per clip."""
    frames = [0, 4, 8] if real.shape[2] > 8 else list(range(real.shape[2]))
    tiles = []
    for i in range(min(count, len(real))):
        tiles.append(real[i][:, frames])
        tiles.append(recon[i][:, frames])
    # (n, c, f, h, w) -> one image per (clip, row): lay frames side by side
    strips = torch.stack([torch.cat(list(t.unbind(1)), dim=-1) for t in tiles]).unsqueeze(2)
    grid = video_grid(strips, nrow=2, padding=2, pad_value=1.0)
    grid = torch.nn.functional.interpolate(grid[:, 0][None], scale_factor=4, mode="nearest")[0]
    save_image(grid, path)


def stage1_args(parser):
    parser.add_argument("--steps", type=int, default=None, help="stop after this many training steps")
    parser.add_argument("--minutes", type=float, default=None, help="stop after this much training time")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--lr", type=float, default=None, help="default: CViViTTrainer's")
    parser.add_argument("--trainer", type=str, default="{}", help="JSON of extra CViViTTrainer options")
    parser.add_argument("--cvivit", type=str, default="{}", help="JSON of CViViT options over BENCH_TOKENIZER")
    parser.add_argument("--train-clips", type=int, default=4096)
    parser.add_argument("--eval-clips", type=int, default=256)
    parser.add_argument("--curve-every", type=int, default=0, help="PSNR/usage on 64 held-out clips every N steps")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=str, default="results/quality")
    parser.add_argument("--save-tokenizer", type=str, default=None, help="save the EMA tokenizer here (stage 2 input)")
    parser.add_argument("--decoder-minutes", type=float, default=0.0,
                        help="the last M of --minutes post-train the decoder alone (encoder and codebook frozen)")
    parser.add_argument("--decoder-steps", type=int, default=None, help="cap on the decoder phase's steps")
    parser.add_argument("--decoder-trainer", type=str, default="{}",
                        help="JSON of CViViTTrainer options for the decoder phase (default: batch 8, lr 3e-4)")


def stage1(args):
    if args.steps is None and args.minutes is None:
        raise SystemExit("stage 1: give --steps, --minutes or both")
    torch.set_num_threads(args.threads)
    header("tokenizer quality on the glyph benchmark")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    splits = glyph_benchmark_splits(args.train_clips, args.eval_clips, seed=args.seed)
    seen_videos, seen_shapes = stack(splits.seen)
    held_videos, held_shapes = stack(splits.held_out)
    started = time.perf_counter()
    probe = train_shape_probe(splits.train, seed=args.seed)
    print(f"shape probe trained in {time.perf_counter() - started:.1f} s")

    torch.manual_seed(args.seed)
    config = {**BENCH_TOKENIZER, **json.loads(args.cvivit)}
    cvivit = CViViT(**config)
    trainer_kwargs = dict(json.loads(args.trainer))
    if args.lr is not None:
        trainer_kwargs["lr"] = args.lr
    trainer = CViViTTrainer(
        cvivit,
        dataset=splits.train,
        num_frames=9,
        batch_size=args.batch_size,
        num_train_steps=args.steps or 10**9,
        valid_frac=0,
        save_model_every=10**9,
        save_results_every=10**9,
        results_folder=tempfile.mkdtemp(prefix="quality-"),
        seed=args.seed,
        **trainer_kwargs,
    )

    if args.decoder_minutes and not (args.minutes and 0 < args.decoder_minutes < args.minutes):
        raise SystemExit(f"--decoder-minutes must lie in (0, --minutes), got {args.decoder_minutes} of {args.minutes}")
    if args.decoder_steps is not None and not args.decoder_minutes:
        raise SystemExit("--decoder-steps caps the decoder phase: give --decoder-minutes as well")
    curve = []
    deadline = started_training = time.perf_counter()
    deadline += (args.minutes - args.decoder_minutes) * 60 if args.minutes else float("inf")
    with trainer.matmul_precision():
        while (args.steps is None or trainer.step < args.steps) and time.perf_counter() < deadline:
            logs = trainer.train_step()
            if args.curve_every and trainer.step % args.curve_every == 0:
                seconds = time.perf_counter() - started_training
                report = evaluate_tokenizer(trainer.eval_model, held_videos[:64], progress=False)
                online = evaluate_tokenizer(trainer.unwrapped_model, held_videos[:64], progress=False)
                point = dict(
                    step=trainer.step,
                    seconds=round(seconds, 1),
                    recon_loss=logs["recon_loss"],
                    psnr_ema=round(report.psnr, 2),
                    psnr_online=round(online.psnr, 2),
                    usage=round(online.codebook_usage, 3),
                )
                curve.append(point)
                print(json.dumps(point), flush=True)
                deadline += time.perf_counter() - started_training - seconds  # evaluation is not training time
    train_seconds = time.perf_counter() - started_training
    steps = trainer.step
    tokenizer, online = trainer.eval_model, trainer.unwrapped_model

    results = {"steps": steps, "train_seconds": round(train_seconds, 1), "batch_size": args.batch_size,
               "config": config, "trainer": trainer_kwargs, "threads": args.threads, "curve": curve}
    if args.decoder_minutes:
        # the rest of the budget trains the decoder alone on the export's frozen ids (CViViTTrainer(decoder_only=
        # True)): the codes stop moving, so the decoder can settle on them (and on the motion inside a tubelet)
        decoder_kwargs = {"batch_size": 8, "lr": 3e-4, **json.loads(args.decoder_trainer)}
        decoder_trainer = CViViTTrainer(
            tokenizer.requires_grad_(True),  # the EMA export comes frozen; stage 1's trainer is done with it
            dataset=splits.train, num_frames=9,
            num_train_steps=args.decoder_steps or 10**9, valid_frac=0, save_model_every=10**9,
            save_results_every=10**9, results_folder=tempfile.mkdtemp(prefix="quality-decoder-"), seed=args.seed,
            decoder_only=True, **decoder_kwargs,
        )
        # the demo's driver of a trainer against a wall-clock deadline (at least one step, capped by max_steps)
        phase = _train_until(decoder_trainer, deadline=time.perf_counter() + args.decoder_minutes * 60,
                             max_steps=args.decoder_steps, name="decoder", show_progress=False)
        tokenizer, online = decoder_trainer.eval_model, decoder_trainer.unwrapped_model
        results["decoder_phase"] = {"steps": phase["steps"], "seconds": round(phase["seconds"], 1),
                                    "trainer": decoder_kwargs}
        print(f"decoder phase: {phase['steps']} steps in {phase['seconds']:.0f} s (encoder and codebook frozen)")
    for name, model in (("ema", tokenizer), ("online", online)):
        for split_name, split, videos, shapes in (
            ("seen", splits.seen, seen_videos, seen_shapes),
            ("held_out", splits.held_out, held_videos, held_shapes),
        ):
            numbers, recon = tokenizer_numbers(model, split, videos, shapes, probe, batch_size=32)
            results[f"{name}/{split_name}"] = numbers
            if name == "ema" and split_name == "held_out":
                picture(videos, recon, out / "reconstructions.png")

    print(f"\n{steps} steps in {train_seconds:.0f} s ({1000 * train_seconds / max(steps, 1):.0f} ms/step, "
          f"batch {args.batch_size}, {args.threads} threads)")
    print(f"{'model/split':<18}{'PSNR':>7}{'SSIM':>7}{'usage':>7}{'ppl':>7}{'probe real':>11}{'probe recon':>12}{'ratio':>7}")
    for key in ("ema/seen", "ema/held_out", "online/seen", "online/held_out"):
        n = results[key]
        print(
            f"{key:<18}{n['psnr']:>7.2f}{n['ssim']:>7.3f}{n['codebook_usage']:>7.1%}{n['codebook_perplexity']:>7.0f}"
            f"{n['probe_real']:>11.1%}{n['probe_recon']:>12.1%}{n['probe_recon'] / n['probe_real']:>7.1%}"
        )
    (out / "quality.json").write_text(json.dumps(results, indent=2))
    if args.save_tokenizer:
        tokenizer.save_pretrained(args.save_tokenizer)
        print(f"saved the EMA tokenizer to {args.save_tokenizer}")
    print(f"wrote {out / 'quality.json'} and {out / 'reconstructions.png'}")
    return results, tokenizer


def main(argv=None):
    from quality_stage2 import stage2, stage2_args

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--stage", choices=("1", "2", "both"), default="1")
    stage1_args(parser)
    stage2_args(parser)
    args = parser.parse_args(argv)
    cvivit = None
    if args.stage in ("1", "both"):
        if args.stage == "both":
            args.out = str(Path(args.out) / "stage1")
        _, cvivit = stage1(args)
        if args.stage == "both":
            args.out = str(Path(args.out).parent)
    if args.stage in ("2", "both"):
        return stage2(args, cvivit)


if __name__ == "__main__":
    main()
