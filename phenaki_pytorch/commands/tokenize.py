"""`phenaki tokenize`: pre-compute codebook ids (and text embeddings) for stage-2 training, as one
safetensors folder (PretokenizedDataset) or, with --shards, WebDataset tar shards (ShardedDataset)."""

from __future__ import annotations

from pathlib import Path

from .common import (
    CommandError,
    add_data_flags,
    build_dataset,
    check_device,
    check_num_frames,
    load_pretrained,
    one_line,
    positive_int,
)


def register(sub) -> None:
    tokenize = sub.add_parser("tokenize", help="pre-tokenize a dataset with a trained tokenizer (and text encoder)")
    tokenize.add_argument("--tokenizer", required=True, help="a folder written by CViViT.save_pretrained")
    tokenize.add_argument("--out", required=True, help="output folder")
    tokenize.add_argument("--shards", action="store_true",
                          help="write WebDataset tar shards (read with ShardedDataset) instead of one tokens.safetensors")
    tokenize.add_argument("--shard-size", type=positive_int, default=1000,
                          help="with --shards: samples per shard (default 1000)")
    tokenize.add_argument("--text-encoder", default=None, help="also store text embeddings (HF name or local path)")
    tokenize.add_argument("--captioned", action="store_true", help="the folder has sidecar .txt captions")
    tokenize.add_argument("--batch-size", type=positive_int, default=16)
    add_data_flags(tokenize)
    tokenize.set_defaults(func=cmd_tokenize)


def cmd_tokenize(args) -> int:
    from ..cvivit import CViViT
    from ..data import pretokenize, write_shards
    from ..text import TextEncoderLoadError, get_text_encoder

    device = check_device(args.device)
    cvivit = load_pretrained(CViViT, args.tokenizer, "--tokenizer", map_location=device)
    if args.image_size is None:
        args.image_size = cvivit.image_size[0] if cvivit.image_size else None
    if args.image_size is None:
        raise CommandError("--image-size is needed: the tokenizer was saved without image_size")
    check_num_frames(args.frames, cvivit.temporal_patch_size)
    text_encoder = None
    if args.text_encoder:
        try:
            text_encoder = get_text_encoder(args.text_encoder)
            text_encoder.dim  # noqa: B018 - loads the config: a wrong path fails here, before any work
        except TextEncoderLoadError as error:
            raise CommandError(f"--text-encoder {args.text_encoder!r}: {one_line(error)}") from error
    if args.shards:
        out = Path(args.out)
        if out.exists() and not out.is_dir():
            raise CommandError(f"--out {args.out!r} is a file; --shards writes a folder")
        if out.is_dir() and any(out.glob("shard-*.tar")):
            raise CommandError(f"--out {args.out!r} already holds shards: give an empty or new folder")
    dataset = build_dataset(args, captioned=args.captioned)
    if args.shards:
        out = write_shards(dataset, args.out, max_count=args.shard_size, tokenizer=cvivit, text_encoder=text_encoder,
                           batch_size=args.batch_size)
        shards = len(list(out.glob("shard-*.tar")))
        print(f"wrote {len(dataset)} pre-tokenized clips as {shards} WebDataset shards to {out}")
        return 0
    out = pretokenize(dataset, cvivit, args.out, text_encoder=text_encoder, batch_size=args.batch_size)
    print(f"wrote pre-tokenized data for {len(dataset)} clips to {out}")
    return 0
