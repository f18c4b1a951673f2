"""`phenaki demo`: small models trained on the built-in synthetic clips, with sample videos."""

from __future__ import annotations

from .common import integer, positive_float


def register(sub) -> None:
    demo = sub.add_parser("demo", help="train small models on built-in synthetic data and write sample videos")
    demo.add_argument("--out", default="phenaki-demo", help="output folder (default ./phenaki-demo)")
    demo.add_argument("--minutes", type=positive_float, default=10.0, help="training time budget (default 10)")
    demo.add_argument("--seed", type=integer, default=0)
    demo.add_argument("--quick", action="store_true", help="a one-minute smoke run (samples will be poor)")
    demo.set_defaults(func=cmd_demo)


def cmd_demo(args) -> int:
    from ..demo import run_demo

    run_demo(args.out, minutes=args.minutes, seed=args.seed, quick=args.quick)
    return 0
