"""`phenaki eval-tokenizer`: reconstruction quality of a saved C-ViViT on a folder or file of videos."""

from __future__ import annotations

from pathlib import Path

from .common import (
    CommandError,
    add_data_flags,
    build_dataset,
    check_device,
    check_num_frames,
    load_pretrained,
    positive_int,
)


def register(sub) -> None:
    evaluate = sub.add_parser(
        "eval-tokenizer",
        help="measure a trained tokenizer's reconstructions (PSNR, SSIM, codebook usage)",
        description="Tokenize and decode clips with a saved C-ViViT and compare them with the originals. "
        "--data takes a folder of videos, one video file, a .jsonl/.csv manifest, or 'synthetic'.",
    )
    evaluate.add_argument("--checkpoint", required=True, help="a folder written by CViViT.save_pretrained")
    evaluate.add_argument("--batch-size", type=positive_int, default=8, help="clips per batch (default 8)")
    evaluate.add_argument("--max-items", type=positive_int, default=None, help="stop after this many clips")
    evaluate.add_argument("--json", default=None, help="also write the report as JSON to this file")
    add_data_flags(evaluate)
    evaluate.set_defaults(func=cmd_eval_tokenizer)


def _single_video(args):
    """One video file as a list holding one batch."""
    from ..data import read_video_clip

    video, mask = read_video_clip(args.data, args.frames, image_size=args.image_size)
    return [{"video": video[None], "frame_mask": mask[None]}]


def cmd_eval_tokenizer(args) -> int:
    from ..cvivit import CViViT
    from ..data import VIDEO_EXTS
    from ..evaluation import evaluate_tokenizer

    device = check_device(args.device)
    if args.json is not None and Path(args.json).is_dir():
        raise CommandError(f"--json {args.json!r} is a folder; give a file name")
    cvivit = load_pretrained(CViViT, args.checkpoint, "--checkpoint", map_location=device)
    if args.image_size is None:
        args.image_size = cvivit.image_size[0] if cvivit.image_size else None
    if args.image_size is None:
        raise CommandError("--image-size is needed: the tokenizer was saved without image_size")
    check_num_frames(args.frames, cvivit.temporal_patch_size)

    source = Path(args.data)
    if args.data != "synthetic" and source.is_file() and source.suffix.lower() in VIDEO_EXTS:
        data = _single_video(args)
    else:
        data = build_dataset(args, captioned=False)
    report = evaluate_tokenizer(cvivit, data, batch_size=args.batch_size, device=device, max_items=args.max_items)
    report.meta.update(checkpoint=str(args.checkpoint), data=str(args.data), image_size=args.image_size)
    print(report.table())
    if args.json is not None:
        print(f"wrote {report.save_json(args.json)}")
    return 0
