"""`phenaki train-tokenizer` and `phenaki train`: model and trainer options from flags or a YAML/JSON file.

A config file (`--config`) holds the same names as the flags (with underscores or dashes), e.g.

    dim: 128
    codebook_size: 1024
    steps: 20000
    mixed_precision: bf16
    no_gan: true

Values are checked against each flag's type and choices; a flag typed on the command line always wins over
the file. Everything the flags say is validated before any model, dataset or trainer is built.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from .common import (
    CommandError,
    add_data_flags,
    below_one,
    build_dataset,
    check_device,
    check_num_frames,
    load_pretrained,
    non_negative_int,
    one_line,
    positive_float,
    positive_int,
    probability,
    seed_everything,
)

DEVICE_HELP = "cpu, cuda[:N] or mps (default: what accelerate picks, a GPU when there is one)"


def _trainer_flags(parser: argparse.ArgumentParser, default_results: str, default_lr: float | None,
                   lr_help: str | None = None) -> None:
    parser.add_argument("--config", default=None, help="YAML or JSON file with any of these options")
    parser.add_argument("--steps", type=positive_int, default=10000, help="training steps (default 10000)")
    parser.add_argument("--batch-size", type=positive_int, default=4)
    parser.add_argument("--grad-accum", type=positive_int, default=1, help="gradient accumulation steps")
    parser.add_argument(
        "--lr", type=positive_float, default=default_lr, help=lr_help or f"learning rate (default {default_lr:g})"
    )
    parser.add_argument("--warmup", type=non_negative_int, default=0, help="learning-rate warmup steps")
    parser.add_argument(
        "--lr-schedule",
        choices=("constant", "cosine", "linear"),
        default="constant",
        help="after the warmup: constant (default), or a cosine / linear decay to --lr-min-ratio * lr at --steps",
    )
    parser.add_argument(
        "--lr-min-ratio", type=probability, default=0.1, help="where a decaying schedule ends, times lr (default 0.1)"
    )
    parser.add_argument(
        "--optimizer", choices=("muon", "adamw"), default=None,
        help="muon: Muon on weight matrices, AdamW on the rest (the default; AdamW alone under FSDP); adamw: AdamW only",
    )
    parser.add_argument("--no-ema", action="store_true", help="do not keep an EMA of the weights")
    parser.add_argument("--results", default=default_results, help=f"results folder (default {default_results})")
    parser.add_argument("--save-every", type=positive_int, default=1000, help="checkpoint every N steps")
    parser.add_argument("--sample-every", type=positive_int, default=100, help="write samples / reconstructions every N steps")
    parser.add_argument("--keep-last", type=positive_int, default=3, help="checkpoints to keep")
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
    parser.add_argument("--num-workers", type=non_negative_int, default=0, help="data loader workers")


def register(sub) -> None:
    tokenizer = sub.add_parser(
        "train-tokenizer",
        help="train a C-ViViT video tokenizer",
        description="Train a C-ViViT on a video folder, a manifest, or the built-in synthetic set. "
        "Launch with `accelerate launch -m phenaki_pytorch.cli train-tokenizer ...` for several GPUs.",
    )
    add_data_flags(tokenizer, device_help=DEVICE_HELP, device_default=None)
    tokenizer.add_argument("--images", action="store_true", help="train on an image folder (one-frame videos)")
    tokenizer.add_argument("--dim", type=positive_int, default=128)
    tokenizer.add_argument("--codebook-size", type=positive_int, default=1024)
    tokenizer.add_argument("--quantizer", choices=("vq", "lfq", "fsq"), default="vq")
    tokenizer.add_argument("--patch-size", type=positive_int, default=8)
    tokenizer.add_argument("--temporal-patch-size", type=positive_int, default=2)
    tokenizer.add_argument("--spatial-depth", type=positive_int, default=2)
    tokenizer.add_argument("--temporal-depth", type=positive_int, default=2)
    tokenizer.add_argument("--heads", type=positive_int, default=4)
    tokenizer.add_argument("--dim-head", type=positive_int, default=32)
    tokenizer.add_argument("--no-gan", action="store_true", help="reconstruction + quantizer loss only")
    tokenizer.add_argument(
        "--init", default=None, help="start from this saved tokenizer (a CViViT.save_pretrained folder; the model flags "
        "above are then ignored)"
    )
    tokenizer.add_argument(
        "--decoder-only", action="store_true", help="post-train only the decoder of the --init tokenizer: encoder and "
        "codebook frozen, so its ids (and a MaskGit trained on them) stay valid"
    )
    tokenizer.add_argument(
        "--decoder-token-noise", type=below_one, default=None, help="replace each token the decoder reads in training "
        "by a random code with this probability (default: the tokenizer's own, 0 for a new one)"
    )
    _trainer_flags(  # CViViTTrainer's default, which depends on the optimizer
        tokenizer, "results/tokenizer", default_lr=None,
        lr_help="learning rate (default 1e-3 with --optimizer muon, 3e-4 with adamw)",
    )
    tokenizer.set_defaults(func=cmd_train_tokenizer)

    train = sub.add_parser(
        "train",
        help="train MaskGit (and a critic) on top of a trained tokenizer",
        description="Train the text-conditioned MaskGit on videos + captions, or on a `phenaki tokenize` folder.",
    )
    add_data_flags(train, device_help=DEVICE_HELP, device_default=None)
    train.add_argument("--tokenizer", required=True, help="a folder written by CViViT.save_pretrained")
    train.add_argument("--text-encoder", default="google/t5-v1_1-base", help="HF name or local path")
    train.add_argument("--dim", type=positive_int, default=256)
    train.add_argument("--depth", type=positive_int, default=4)
    train.add_argument("--heads", type=positive_int, default=8)
    train.add_argument("--dim-head", type=positive_int, default=32)
    train.add_argument(
        "--hourglass", type=non_negative_int, default=None,
        help="middle layers run on merged 2x2 blocks of tokens (default: depth - 2 from depth 4 up; 0: none)",
    )
    train.add_argument("--cond-drop-prob", type=probability, default=0.25)
    train.add_argument("--critic", choices=("none", "token", "self"), default="none", help="token critic to train too")
    train.add_argument(
        "--critic-every", type=positive_int, default=2, help="train the critic on every k-th step only (default 2)"
    )
    train.add_argument("--sample-texts", default=None, help="file with one caption per line, sampled every --sample-every")
    _trainer_flags(train, "results/phenaki", default_lr=1e-3)  # PhenakiTrainer's default
    train.set_defaults(func=cmd_train)


def trainer_kwargs(args) -> dict:
    """The options both trainers take, from the shared flags (resume is done apart, see `_resume`)."""
    return dict(
        batch_size=args.batch_size,
        grad_accum_every=args.grad_accum,
        lr=args.lr,
        lr_warmup_steps=args.warmup,
        lr_schedule=args.lr_schedule,
        lr_min_ratio=args.lr_min_ratio,
        use_ema=not args.no_ema,
        optimizer=args.optimizer,
        results_folder=args.results,
        save_model_every=args.save_every,
        save_results_every=args.sample_every,
        keep_last=args.keep_last,
        mixed_precision=args.mixed_precision,
        fp32_matmul=args.fp32_matmul,
        log_with=args.log_with,
        seed=args.seed,
        num_workers=args.num_workers,
        cpu=args.device is not None and args.device.startswith("cpu"),
    )


def _resume(trainer, args) -> None:
    """--resume: the latest checkpoint in --results; one that does not fit the model is the user's error."""
    if not args.resume:
        return
    try:
        trainer.resume(True)
    except (RuntimeError, KeyError, ValueError) as error:
        raise CommandError(
            f"--resume: the checkpoint in {str(Path(args.results) / 'checkpoints')!r} does not fit this model "
            f"(was a model flag changed since it was written?): {one_line(error)}"
        ) from error


def _check_device(args) -> None:
    if args.device is not None:
        args.device = check_device(args.device)


def cmd_train_tokenizer(args) -> int:
    from ..cvivit import CViViT
    from ..training import CViViTTrainer

    _check_device(args)
    if args.decoder_only and args.init is None:
        raise CommandError("--decoder-only post-trains a saved tokenizer: give it with --init DIR")
    initial = None
    if args.init is not None:
        initial = _load_tokenizer(args, args.init, "--init")
        args.patch_size, args.temporal_patch_size = initial.patch_size[0], initial.temporal_patch_size
    if args.image_size is None:
        if args.data != "synthetic":
            raise CommandError("--image-size is needed for a video folder or manifest")
        args.image_size = 32
    if args.image_size % args.patch_size:
        raise CommandError(f"--image-size {args.image_size} must be a multiple of --patch-size {args.patch_size}")
    if not args.images:
        check_num_frames(args.frames, args.temporal_patch_size)

    seed_everything(args.seed)  # before the model is built: the seed fixes the initial weights too
    cvivit = initial if initial is not None else CViViT(
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
    dataset = build_dataset(args, captioned=False)
    trainer = CViViTTrainer(
        cvivit,
        dataset=dataset,
        num_frames=args.frames,
        train_on_images=args.images,
        num_train_steps=args.steps,
        decoder_only=args.decoder_only,
        decoder_token_noise=args.decoder_token_noise,
        **trainer_kwargs(args),
    )
    _resume(trainer, args)
    trainer.train()
    print(f"tokenizer saved to {Path(args.results) / 'tokenizer'}")
    return 0


def _load_tokenizer(args, path: str, flag: str):
    from ..cvivit import CViViT

    cvivit = load_pretrained(CViViT, path, flag)
    if args.image_size is None:
        args.image_size = cvivit.image_size[0] if cvivit.image_size else None
    if args.image_size is None:
        raise CommandError("--image-size is needed: the tokenizer was saved without image_size")
    if cvivit.image_size is None:
        rebuilt = CViViT(**{**cvivit.config, "image_size": args.image_size})
        rebuilt.load_state_dict(cvivit.state_dict())
        cvivit = rebuilt
    return cvivit


def _train_dataset(args, cvivit):
    from ..data import PretokenizedDataset

    data_path = Path(args.data)
    if data_path.is_dir() and (data_path / "tokens.safetensors").is_file():
        dataset = PretokenizedDataset(data_path)
        frames = dataset.meta.get("num_frames", args.frames)
        if "frames" in getattr(args, "explicit_options", ()) and frames != args.frames:
            raise CommandError(f"--frames {args.frames}: the pre-tokenized data in {args.data!r} holds {frames}-frame clips")
        args.frames = frames
        return dataset
    check_num_frames(args.frames, cvivit.temporal_patch_size)
    return build_dataset(args, captioned=True)


def cmd_train(args) -> int:
    from ..maskgit import MaskGit, TokenCritic
    from ..phenaki import Phenaki
    from ..text import TextEncoderLoadError, get_text_encoder
    from ..training import PhenakiTrainer

    _check_device(args)
    if args.sample_texts is not None and not Path(args.sample_texts).is_file():
        raise CommandError(f"--sample-texts {args.sample_texts!r} does not exist")
    if args.hourglass and args.hourglass > args.depth - 2:
        raise CommandError(
            f"--hourglass {args.hourglass}: at most --depth - 2 ({max(args.depth - 2, 0)}) layers can be merged, "
            f"one full-resolution layer is kept before and after them"
        )
    cvivit = _load_tokenizer(args, args.tokenizer, "--tokenizer")
    dataset = _train_dataset(args, cvivit)
    max_seq_len = cvivit.num_tokens(args.frames)
    try:
        text_dim = get_text_encoder(args.text_encoder).dim
    except TextEncoderLoadError as error:
        raise CommandError(f"--text-encoder {args.text_encoder!r}: {one_line(error)}") from error

    seed_everything(args.seed)  # before the models are built: the seed fixes the initial weights too
    maskgit = MaskGit(
        num_tokens=cvivit.codebook_size,
        max_seq_len=max_seq_len,
        dim=args.dim,
        depth=args.depth,
        heads=args.heads,
        dim_head=args.dim_head,
        dim_context=text_dim,
        cond_drop_prob=args.cond_drop_prob,
        hourglass=args.hourglass,
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
            dim_context=text_dim,
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
        critic_every=args.critic_every,
        **trainer_kwargs(args),
    )
    _resume(trainer, args)
    trainer.train()
    print(f"Phenaki saved to {Path(args.results) / 'phenaki'}")
    return 0
