"""The `phenaki` command.

    phenaki demo                                   train small models on built-in data, write samples
    phenaki train-tokenizer --data DIR ...         train a C-ViViT
    phenaki train --tokenizer DIR --data DIR ...   train MaskGit (and a critic) on top of it
    phenaki tokenize --tokenizer DIR --data DIR --out DIR
    phenaki sample --checkpoint DIR "a prompt" --frames 17 --out video.gif
    phenaki story --checkpoint DIR story.txt --out video.mp4

Bad arguments give one line on stderr and exit status 2, never a traceback.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any


class CommandError(Exception):
    """A user-facing error: printed as one line."""


# ---------------------------------------------------------------------- helpers


def _seeded_generator(seed: int | None):
    import torch

    return torch.Generator().manual_seed(seed) if seed is not None else None


def _load_config_file(path: str | None) -> dict[str, Any]:
    if path is None:
        return {}
    file = Path(path)
    if not file.is_file():
        raise CommandError(f"config file {path!r} does not exist")
    text = file.read_text()
    try:
        if file.suffix in (".yaml", ".yml"):
            import yaml

            data = yaml.safe_load(text) or {}
        else:
            data = json.loads(text)
    except Exception as error:
        raise CommandError(f"could not parse config file {path!r}: {error}") from None
    if not isinstance(data, dict):
        raise CommandError(f"config file {path!r} must hold a mapping of option names to values")
    return data


def _load_phenaki(checkpoint: str, text_encoder: str | None, device: str):
    from .phenaki import Phenaki

    directory = Path(checkpoint)
    if not (directory / "config.json").is_file():
        raise CommandError(f"--checkpoint {checkpoint!r} is not a saved Phenaki folder (no config.json in it)")
    overrides = {"text_encoder": text_encoder} if text_encoder else {}
    try:
        phenaki = Phenaki.from_pretrained(directory, map_location=device, **overrides)
    except ValueError as error:
        raise CommandError(f"could not load {checkpoint!r}: {error}") from None
    return phenaki.eval()


def parse_story(path: str) -> list[tuple[str, int | float]]:
    """One scene a line: `DURATION PROMPT`, DURATION in frames (`16`) or seconds (`2s`, `2.5s`).
    Blank lines and lines starting with # are skipped."""
    file = Path(path)
    if not file.is_file():
        raise CommandError(f"story file {path!r} does not exist")
    scenes: list[tuple[str, int | float]] = []
    for number, raw in enumerate(file.read_text().splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        duration, _, prompt = line.partition(" ")
        prompt = prompt.strip()
        try:
            value: int | float = float(duration[:-1]) if duration.endswith("s") else int(duration)
        except ValueError:
            value = None  # type: ignore[assignment]
        if value is None or not prompt or value <= 0:
            raise CommandError(
                f"{path}:{number}: expected 'DURATION PROMPT' with DURATION in frames (16) or seconds (2s), got {raw!r}"
            )
        scenes.append((prompt, value))
    if not scenes:
        raise CommandError(f"story file {path!r} holds no scenes")
    return scenes


def _build_dataset(args, *, captioned: bool):
    """--data: a folder of videos (with sidecar .txt captions when captioned), a .jsonl/.csv manifest,
    or 'synthetic' for the built-in coloured shapes."""
    from .data import CaptionedVideoDataset, ImageDataset, SyntheticCaptionedVideos, VideoDataset

    if args.data == "synthetic":
        return SyntheticCaptionedVideos(
            num_samples=args.synthetic_samples, num_frames=args.frames, image_size=args.image_size, seed=args.seed
        )
    source = Path(args.data)
    if not source.exists():
        raise CommandError(f"--data {args.data!r} does not exist (a folder, a .jsonl/.csv manifest, or 'synthetic')")
    if source.suffix in (".jsonl", ".csv") or captioned:
        return CaptionedVideoDataset(source, args.frames, args.image_size)
    if getattr(args, "images", False):
        return ImageDataset(source, args.image_size)
    return VideoDataset(source, args.frames, args.image_size)


# ---------------------------------------------------------------------- commands


def cmd_sample(args) -> int:
    from .data import save_video

    phenaki = _load_phenaki(args.checkpoint, args.text_encoder, args.device)
    prime = None
    if args.prime:
        from .data import read_video

        prime = read_video(args.prime, image_size=phenaki.cvivit.image_size)[:, -args.prime_frames :][None]
    video = phenaki.sample(
        texts=[args.prompt] * args.batch_size,
        num_frames=args.frames,
        cond_scale=args.cond_scale,
        steps=args.steps,
        temperature=args.temperature,
        prime_frames=prime,
        generator=_seeded_generator(args.seed),
        show_progress=True,
    )
    path = save_video(video, args.out, fps=args.fps)
    print(f"wrote {path} ({video.shape[0]} x {video.shape[2]} frames of {video.shape[3]}x{video.shape[4]})")
    return 0


def cmd_story(args) -> int:
    from .data import save_video
    from .story import sample_story

    scenes = parse_story(args.story)
    phenaki = _load_phenaki(args.checkpoint, args.text_encoder, args.device)
    story = sample_story(
        phenaki,
        scenes,
        fps=float(args.fps),
        prime_frames=args.prime_frames,
        cond_scale=args.cond_scale,
        steps=args.steps,
        generator=_seeded_generator(args.seed),
    )
    path = save_video(story.video, args.out, fps=args.fps)
    print(f"wrote {path}: {story.video.shape[2]} frames, {len(story.scenes)} scenes")
    for scene in story.scenes:
        print(f"  frames {scene.start:5d}-{scene.end - 1:5d}  {scene.prompt}")
    return 0


def cmd_tokenize(args) -> int:
    from .cvivit import CViViT
    from .data import pretokenize
    from .text import get_text_encoder

    if not (Path(args.tokenizer) / "config.json").is_file():
        raise CommandError(f"--tokenizer {args.tokenizer!r} is not a saved CViViT folder (no config.json in it)")
    cvivit = CViViT.from_pretrained(args.tokenizer, map_location=args.device)
    if args.image_size is None:
        args.image_size = cvivit.image_size[0] if cvivit.image_size else None
    if args.image_size is None:
        raise CommandError("--image-size is needed: the tokenizer was saved without image_size")
    dataset = _build_dataset(args, captioned=args.captioned)
    text_encoder = get_text_encoder(args.text_encoder) if args.text_encoder else None
    out = pretokenize(dataset, cvivit, args.out, text_encoder=text_encoder, batch_size=args.batch_size)
    print(f"wrote pre-tokenized data for {len(dataset)} clips to {out}")
    return 0


def cmd_demo(args) -> int:
    from .demo import run_demo

    run_demo(args.out, minutes=args.minutes, seed=args.seed, quick=args.quick)
    return 0


# ---------------------------------------------------------------------- parser


def _common_sampling(parser: argparse.ArgumentParser):
    parser.add_argument("--checkpoint", required=True, help="a folder written by Phenaki.save_pretrained (or `phenaki train`)")
    parser.add_argument("--cond-scale", type=float, default=3.0, help="classifier-free guidance scale (default 3)")
    parser.add_argument("--steps", type=int, default=None, help="MaskGIT decoding steps (default: the model's, 18)")
    parser.add_argument("--seed", type=int, default=0, help="random seed for sampling (default 0)")
    parser.add_argument("--fps", type=float, default=8.0, help="frames per second of the written video (default 8)")
    parser.add_argument("--text-encoder", default=None, help="override the saved text encoder (HF name or local path)")
    parser.add_argument("--device", default="cpu", help="cpu or cuda (default cpu)")


def _common_data(parser: argparse.ArgumentParser):
    parser.add_argument("--data", default="synthetic", help="video folder, .jsonl/.csv manifest, or 'synthetic' (default)")
    parser.add_argument("--frames", type=int, default=9, help="frames per clip, 1 + k * temporal_patch_size (default 9)")
    parser.add_argument("--image-size", type=int, default=None, help="frame size in pixels")
    parser.add_argument("--synthetic-samples", type=int, default=1024, help="clips in the synthetic set (default 1024)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="cpu")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="phenaki", description="Phenaki text-to-video: train, sample, tell stories.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True

    demo = sub.add_parser("demo", help="train small models on built-in synthetic data and write sample videos")
    demo.add_argument("--out", default="phenaki-demo", help="output folder (default ./phenaki-demo)")
    demo.add_argument("--minutes", type=float, default=10.0, help="training time budget (default 10)")
    demo.add_argument("--seed", type=int, default=0)
    demo.add_argument("--quick", action="store_true", help="a one-minute smoke run (samples will be poor)")
    demo.set_defaults(func=cmd_demo)

    sample = sub.add_parser("sample", help="sample a video for a prompt")
    sample.add_argument("prompt", help="the text prompt")
    sample.add_argument("--frames", type=int, default=17, help="frames to generate (default 17)")
    sample.add_argument("--out", default="sample.gif", help="output .gif / .mp4 / .webm (default sample.gif)")
    sample.add_argument("--batch-size", type=int, default=1, help="videos to sample (laid out as a grid)")
    sample.add_argument("--temperature", type=float, default=None)
    sample.add_argument("--prime", default=None, help="a video file whose last --prime-frames frames are continued")
    sample.add_argument("--prime-frames", type=int, default=3)
    _common_sampling(sample)
    sample.set_defaults(func=cmd_sample)

    story = sub.add_parser("story", help="sample one long video from a story file (one scene a line: DURATION PROMPT)")
    story.add_argument("story", help="text file; DURATION in frames (16) or seconds (2s)")
    story.add_argument("--out", default="story.mp4", help="output .mp4 / .gif / .webm (default story.mp4)")
    story.add_argument("--prime-frames", type=int, default=None, help="frames of context carried between windows")
    _common_sampling(story)
    story.set_defaults(func=cmd_story)

    tokenize = sub.add_parser("tokenize", help="pre-tokenize a dataset with a trained tokenizer (and text encoder)")
    tokenize.add_argument("--tokenizer", required=True, help="a folder written by CViViT.save_pretrained")
    tokenize.add_argument("--out", required=True, help="output folder")
    tokenize.add_argument("--text-encoder", default=None, help="also store text embeddings (HF name or local path)")
    tokenize.add_argument("--captioned", action="store_true", help="the folder has sidecar .txt captions")
    tokenize.add_argument("--batch-size", type=int, default=16)
    _common_data(tokenize)
    tokenize.set_defaults(func=cmd_tokenize)

    _add_training_commands(sub)
    return parser


def _add_training_commands(sub):
    from . import cli_train

    cli_train.add_commands(sub, _common_data)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except CommandError as error:
        print(f"phenaki {args.command}: error: {error}", file=sys.stderr)
    except (ValueError, TypeError, FileNotFoundError, NotADirectoryError, PermissionError) as error:
        print(f"phenaki {args.command}: error: {error}", file=sys.stderr)
    except KeyboardInterrupt:
        print(f"phenaki {args.command}: interrupted", file=sys.stderr)
        return 130
    return 2


if __name__ == "__main__":
    sys.exit(main())
