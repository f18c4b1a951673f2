"""`phenaki train-tokenizer` and `phenaki train`: model and trainer options from flags or a YAML/JSON file.

A config file holds the same names as the flags (with underscores), e.g.

    dim: 128
    codebook_size: 1024
    steps: 20000
    mixed_precision: bf16

Flags given on the command line win over the file.
"""

from __future__ import annotations

import argparse
from pathlib import Path


def _trainer_flags(parser: argparse.ArgumentParser, default_results: str):
    parser.add_argument("--config", default=None, help="YAML or JSON file with any of these options")
    parser.add_argument("--steps", type=int, default=10000, help="training steps (default 10000)")
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--grad-accum", type=int, default=1, help="gradient accumulation steps")
    parser.add_argument("--lr", type=float, default=3e-4)
    parser.add_argument("--warmup", type=int, default=0, help="learning-rate warmup steps")
    parser.add_argument("--no-ema", action="store_true", help="do not keep an EMA of the weights")
    parser.add_argument("--results", default=default_results, help=f"results folder (default {default_results})")
    parser.add_argument("--save-every", type=int, default=1000, help="checkpoint every N steps")
    parser.add_argument("--sample-every", type=int, default=100, help="write samples / reconstructions every N steps")
    parser.add_argument("--keep-last", type=int, default=3, help="checkpoints to keep")
    parser.add_argument("--resume", action="store_true", help="continue from the latest checkpoint in --results")
    parser.add_argument("--mixed-precision", choices=("no", "bf16", "fp16"), default="no")
    parser.add_argument(
        "--fp32-matmul",
        choices=("auto", "ieee", "bf16"),
        default="auto",
        help="how fp32 matmuls run on CPU: bf16 = oneDNN's bf16 kernels at about fp32 accuracy; auto = bf16 "
        "where this CPU passes an accuracy check (default auto)",
    )
    parser.add_argument("--log-with", default=None, help="accelerate tracker: tensorboard, wandb, ...")
    parser.add_argument("--num-workers", type=int, default=0, help="data loader workers")


def add_commands(sub, common_data):
    tokenizer = sub.add_parser(
        "train-tokenizer",
        help="train a C-ViViT video tokenizer",
        description="Train a C-ViViT on a video folder, a manifest, or the built-in synthetic set. "
        "Launch with `accelerate launch -m phenaki_pytorch.cli train-tokenizer ...` for several GPUs.",
    )
    common_data(tokenizer)
    tokenizer.add_argument("--images", action="store_true", help="train on an image folder (one-frame videos)")
    tokenizer.add_argument("--dim", type=int, default=128)
    tokenizer.add_argument("--codebook-size", type=int, default=1024)
    tokenizer.add_argument("--quantizer", choices=("vq", "lfq", "fsq"), default="vq")
    tokenizer.add_argument("--patch-size", type=int, default=8)
    tokenizer.add_argument("--temporal-patch-size", type=int, default=2)
    tokenizer.add_argument("--spatial-depth", type=int, default=2)
    tokenizer.add_argument("--temporal-depth", type=int, default=2)
    tokenizer.add_argument("--heads", type=int, default=4)
    tokenizer.add_argument("--dim-head", type=int, default=32)
    tokenizer.add_argument("--no-gan", action="store_true", help="reconstruction + quantizer loss only")
    _trainer_flags(tokenizer, "results/tokenizer")
    tokenizer.set_defaults(func=cmd_train_tokenizer)

    train = sub.add_parser(
        "train",
        help="train MaskGit (and a critic) on top of a trained tokenizer",
        description="Train the text-conditioned MaskGit on videos + captions, or on a `phenaki tokenize` folder.",
    )
    common_data(train)
    train.add_argument("--tokenizer", required=True, help="a folder written by CViViT.save_pretrained")
    train.add_argument("--text-encoder", default="google/t5-v1_1-base", help="HF name or local path")
    train.add_argument("--dim", type=int, default=256)
    train.add_argument("--depth", type=int, default=4)
    train.add_argument("--heads", type=int, default=8)
    train.add_argument("--dim-head", type=int, default=32)
    train.add_argument("--cond-drop-prob", type=float, default=0.25)
    train.add_argument("--critic", choices=("none", "token", "self"), default="none", help="token critic to train too")
    train.add_argument("--sample-texts", default=None, help="file with one caption per line, sampled every --sample-every")
    _trainer_flags(train, "results/phenaki")
    train.set_defaults(func=cmd_train)


def _apply_config(args, parser_defaults: dict) -> argparse.Namespace:
    """Values from --config replace defaults, never flags the user typed."""
    from .cli import _load_config_file

    config = _load_config_file(args.config)
    for key, value in config.items():
        name = key.replace("-", "_")
        if not hasattr(args, name):
            from .cli import CommandError

            raise CommandError(f"config file {args.config!r}: unknown option {key!r}")
        if getattr(args, name) == parser_defaults.get(name):
            setattr(args, name, value)
    return args


def _parser_defaults(command: str) -> dict:
    from .cli import build_parser

    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return {action.dest: action.default for action in sub.choices[command]._actions}


def _trainer_kwargs(args) -> dict:
    """The options both trainers take, from the shared flags."""
    return dict(
        batch_size=args.batch_size,
        grad_accum_every=args.grad_accum,
        lr=args.lr,
        lr_warmup_steps=args.warmup,
        use_ema=not args.no_ema,
        results_folder=args.results,
        save_model_every=args.save_every,
        save_results_every=args.sample_every,
        keep_last=args.keep_last,
        resume=args.resume,
        mixed_precision=args.mixed_precision,
        fp32_matmul=args.fp32_matmul,
        log_with=args.log_with,
        seed=args.seed,
        num_workers=args.num_workers,
    )


def cmd_train_tokenizer(args) -> int:
    from .cli import CommandError, _build_dataset
    from .cvivit import CViViT
    from .training import CViViTTrainer

    args = _apply_config(args, _parser_defaults("train-tokenizer"))
    if args.image_size is None:
        if args.data != "synthetic":
            raise CommandError("--image-size is needed for a video folder or manifest")
        args.image_size = 32
    dataset = _build_dataset(args, captioned=False)
    cvivit = CViViT(
        dim=args.dim,
        codebook_size=args.codebook_size,
        quantizer=args.quantizer,
        image_size=args.image_size,
        patch_size=args.patch_size,
        temporal_patch_size=args.temporal_patch_size,
        spatial_depth=args.spatial_depth,
        temporal_depth=args.temporal_depth,
        heads=args.heads,
        dim_head=args.dim_head,
        use_gan=not args.no_gan,
    )
    trainer = CViViTTrainer(
        cvivit,
        dataset=dataset,
        num_frames=args.frames,
        train_on_images=args.images,
        num_train_steps=args.steps,
        **_trainer_kwargs(args),
    )
    trainer.train()
    print(f"tokenizer saved to {Path(args.results) / 'tokenizer'}")
    return 0


def cmd_train(args) -> int:
    from .cli import CommandError, _build_dataset
    from .cvivit import CViViT
    from .data import PretokenizedDataset
    from .maskgit import MaskGit, TokenCritic
    from .phenaki import Phenaki
    from .training import PhenakiTrainer

    args = _apply_config(args, _parser_defaults("train"))
    if not (Path(args.tokenizer) / "config.json").is_file():
        raise CommandError(f"--tokenizer {args.tokenizer!r} is not a saved CViViT folder (no config.json in it)")
    cvivit = CViViT.from_pretrained(args.tokenizer)
    if args.image_size is None:
        args.image_size = cvivit.image_size[0] if cvivit.image_size else None
    if args.image_size is None:
        raise CommandError("--image-size is needed: the tokenizer was saved without image_size")
    if cvivit.image_size is None:
        config = {**cvivit.config, "image_size": args.image_size}
        rebuilt = CViViT(**config)
        rebuilt.load_state_dict(cvivit.state_dict())
        cvivit = rebuilt

    data_path = Path(args.data)
    if data_path.is_dir() and (data_path / "tokens.safetensors").is_file():
        dataset = PretokenizedDataset(data_path)
        args.frames = dataset.meta.get("num_frames", args.frames)
    else:
        dataset = _build_dataset(args, captioned=True)

    from .text import get_text_encoder

    text_encoder = get_text_encoder(args.text_encoder)
    max_seq_len = cvivit.num_tokens(args.frames)
    maskgit = MaskGit(
        num_tokens=cvivit.codebook_size,
        max_seq_len=max_seq_len,
        dim=args.dim,
        depth=args.depth,
        heads=args.heads,
        dim_head=args.dim_head,
        dim_context=text_encoder.dim,
        cond_drop_prob=args.cond_drop_prob,
    )
    critic = None
    if args.critic == "token":
        critic = TokenCritic(
            num_tokens=cvivit.codebook_size,
            max_seq_len=max_seq_len,
            dim=args.dim,
            depth=max(args.depth // 2, 1),
            heads=args.heads,
            dim_head=args.dim_head,
            dim_context=text_encoder.dim,
            has_cross_attn=True,
        )
    phenaki = Phenaki(
        cvivit=cvivit,
        maskgit=maskgit,
        critic=critic,
        self_token_critic=args.critic == "self",
        text_encoder=args.text_encoder,
    )
    trainer = PhenakiTrainer(
        phenaki,
        dataset=dataset,
        num_frames=args.frames,
        train_num_steps=args.steps,
        sample_texts_file_path=args.sample_texts,
        **_trainer_kwargs(args),
    )
    trainer.train()
    print(f"Phenaki saved to {Path(args.results) / 'phenaki'}")
    return 0
