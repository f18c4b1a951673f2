"""What the command modules share: the user-error type, argument types, config files, model and data loading.

Nothing here imports torch or the models at import time: `phenaki --help` stays fast.
"""

from __future__ import annotations

import argparse
import json
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any


class CommandError(Exception):
    """A mistake in the user's input (a flag, a file, a folder): printed as one line, exit status 2."""


# ---------------------------------------------------------------------- argument types
#
# Each accepts a string (from the command line) or a number (from a config file) and raises
# argparse.ArgumentTypeError with what was expected, so a bad value never starts any work.


def _number(text: Any, kind: type, expected: str):
    if isinstance(text, bool):
        raise argparse.ArgumentTypeError(f"expected {expected}, got {text!r}")
    try:
        value = kind(text) if kind is float else int(str(text).strip())
    except (TypeError, ValueError):
        raise argparse.ArgumentTypeError(f"expected {expected}, got {text!r}") from None
    if kind is float and not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"expected {expected}, got {text!r}")
    return value


def _bounded(kind: type, expected: str, check: Callable[[Any], bool]) -> Callable[[Any], Any]:
    def convert(text: Any):
        value = _number(text, kind, expected)
        if not check(value):
            raise argparse.ArgumentTypeError(f"expected {expected}, got {text!r}")
        return value

    convert.expected = expected  # type: ignore[attr-defined]
    return convert


integer = _bounded(int, "an integer", lambda v: True)
positive_int = _bounded(int, "a positive integer", lambda v: v >= 1)
non_negative_int = _bounded(int, "an integer >= 0", lambda v: v >= 0)
finite_float = _bounded(float, "a finite number", lambda v: True)
positive_float = _bounded(float, "a positive number", lambda v: v > 0)
non_negative_float = _bounded(float, "a number >= 0", lambda v: v >= 0)
probability = _bounded(float, "a probability in [0, 1]", lambda v: 0.0 <= v <= 1.0)
below_one = _bounded(float, "a probability in [0, 1)", lambda v: 0.0 <= v < 1.0)
nucleus = _bounded(float, "a probability in (0, 1]", lambda v: 0.0 < v <= 1.0)
for _name, _type in list(globals().items()):
    if callable(_type) and hasattr(_type, "expected"):
        _type.__name__ = _name  # argparse names the type in some messages


def describe_type(action: argparse.Action) -> str:
    kind = action.type
    if hasattr(kind, "expected"):
        return kind.expected
    return {int: "an integer", float: "a number", str: "a string", None: "a string"}.get(kind, "a value")


# ---------------------------------------------------------------------- config files

NOT_CONFIGURABLE = frozenset({"help", "config", "debug"})
_TRUE, _FALSE = frozenset({"true", "yes", "on", "1"}), frozenset({"false", "no", "off", "0"})


def load_config_file(path: str) -> dict[str, Any]:
    """A YAML (.yaml / .yml) or JSON file holding one mapping of option names to values."""
    file = Path(path)
    if not file.is_file():
        raise CommandError(f"config file {path!r} does not exist")
    try:
        text = file.read_text(encoding="utf-8")
        if file.suffix.lower() in (".yaml", ".yml"):
            import yaml

            data = yaml.safe_load(text)
        else:
            data = json.loads(text)
    except Exception as error:  # noqa: BLE001 - any parse failure is the file's
        first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise CommandError(f"could not parse config file {path!r}: {first}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise CommandError(
            f"config file {path!r} must hold a mapping of option names to values, got a {type(data).__name__}"
        )
    return data


def _is_flag(action: argparse.Action) -> bool:
    """store_true / store_false: no value on the command line."""
    return action.nargs == 0 and isinstance(action.const, bool)


def config_value(action: argparse.Action, key: str, value: Any, where: str) -> Any:
    """`value` from a config file as the option's declared type would give it, or a CommandError."""
    option = action.option_strings[-1]
    if _is_flag(action):
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.strip().lower() in _TRUE | _FALSE:
            return value.strip().lower() in _TRUE
        if isinstance(value, int) and value in (0, 1):
            return bool(value)
        raise CommandError(f"{where}: {key!r} (the {option} switch) expects true or false, got {value!r}")
    if value is None:
        if action.default is None:
            return None
        raise CommandError(f"{where}: {key!r} ({option}) expects {describe_type(action)}, got null")
    if isinstance(value, (bool, list, dict)) or not isinstance(value, (str, int, float)):
        raise CommandError(f"{where}: {key!r} ({option}) expects {describe_type(action)}, got {value!r}")
    if action.type in (None, str):
        if not isinstance(value, str):
            raise CommandError(f"{where}: {key!r} ({option}) expects a string, got {value!r}")
        converted = value
    else:
        try:
            converted = action.type(value if isinstance(value, str) else repr(value))
        except (argparse.ArgumentTypeError, TypeError, ValueError):
            raise CommandError(f"{where}: {key!r} ({option}) expects {describe_type(action)}, got {value!r}") from None
    if action.choices is not None and converted not in action.choices:
        choices = ", ".join(repr(c) for c in action.choices)
        raise CommandError(f"{where}: {key!r} ({option}) expects one of {choices}, got {value!r}")
    return converted


def apply_config(args: argparse.Namespace, parser: argparse.ArgumentParser, explicit: set[str]) -> argparse.Namespace:
    """Values from `--config` fill every option the user did not type (`explicit` holds those typed).

    Keys are option names with `_` or `-`; each value is checked against the option's declared type and
    choices; keys that are not options of this command are an error.
    """
    if getattr(args, "config", None) is None:
        return args
    where = f"config file {args.config!r}"
    options = {
        action.dest: action
        for action in parser._actions  # argparse has no public list of a parser's actions
        if action.option_strings and action.dest not in NOT_CONFIGURABLE
    }
    for key, value in load_config_file(args.config).items():
        if not isinstance(key, str):
            raise CommandError(f"{where}: option names must be strings, got {key!r}")
        name = key.strip().replace("-", "_")
        action = options.get(name)
        if action is None:
            known = ", ".join(sorted(options))
            raise CommandError(f"{where}: unknown option {key!r} for `phenaki {args.command}` (known: {known})")
        converted = config_value(action, key, value, where)
        if name not in explicit:
            setattr(args, name, converted)
    return args


# ---------------------------------------------------------------------- devices, seeds, models


def check_device(name: str) -> str:
    """--device as torch understands it, or a CommandError when it names no usable device."""
    import torch

    try:
        device = torch.device(name)
    except (RuntimeError, ValueError, TypeError):
        raise CommandError(f"--device {name!r} is not a device name (cpu, cuda, cuda:1, mps)") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise CommandError(f"--device {name!r}: CUDA is not available on this machine; use --device cpu")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise CommandError(f"--device {name!r}: this machine has {torch.cuda.device_count()} CUDA device(s)")
    elif device.type == "mps" and not torch.backends.mps.is_available():
        raise CommandError(f"--device {name!r}: MPS is not available on this machine; use --device cpu")
    elif device.type not in ("cpu", "cuda", "mps"):
        raise CommandError(f"--device {name!r}: expected cpu, cuda[:N] or mps")
    return str(device)


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (all devices) before any model is built, so `--seed` fixes the initial
    weights as well as the training randomness."""
    import random

    import numpy as np
    import torch

    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def seeded_generator(seed: int | None):
    import torch

    return torch.Generator().manual_seed(seed) if seed is not None else None


def load_pretrained(cls, path: str, flag: str, **kwargs):
    """`cls.from_pretrained(path)`, with any problem in the folder as a CommandError naming the flag and path."""
    directory = Path(path)
    if not (directory / "config.json").is_file():
        raise CommandError(f"{flag} {path!r} is not a saved {cls.__name__} folder (no config.json in it)")
    try:
        return cls.from_pretrained(directory, **kwargs)
    except Exception as error:  # noqa: BLE001 - the folder is the user's input, whatever is wrong with it
        raise CommandError(f"could not load {flag} {path!r}: {one_line(error)}") from error


def one_line(error: BaseException) -> str:
    text = " ".join(str(error).split())
    return text or type(error).__name__


# ---------------------------------------------------------------------- frames and data


def check_num_frames(frames: int, temporal_patch_size: int, flag: str = "--frames") -> None:
    """`frames` must be 1 + k * temporal_patch_size: checked before any model, data or trainer is built."""
    if frames >= 1 and (frames - 1) % temporal_patch_size == 0:
        return
    lower = 1 + max((frames - 1) // temporal_patch_size, 0) * temporal_patch_size
    nearest = sorted({lower, lower + temporal_patch_size} - {frames})
    raise CommandError(
        f"{flag} {frames}: clips must have 1 + k * {temporal_patch_size} frames (the temporal patch size); "
        f"nearest valid: {', '.join(map(str, nearest))}"
    )


def build_dataset(args, *, captioned: bool):
    """--data: a folder of videos (with sidecar .txt captions when captioned), a .jsonl/.csv manifest,
    or 'synthetic' for the built-in coloured shapes."""
    from ..data import CaptionedVideoDataset, ImageDataset, SyntheticCaptionedVideos, VideoDataset

    if args.data == "synthetic":
        return SyntheticCaptionedVideos(
            num_samples=args.synthetic_samples, num_frames=args.frames, image_size=args.image_size, seed=args.seed
        )
    source = Path(args.data)
    if not source.exists():
        raise CommandError(f"--data {args.data!r} does not exist (a folder, a .jsonl/.csv manifest, or 'synthetic')")
    if source.suffix in (".jsonl", ".csv") or captioned:
        dataset = CaptionedVideoDataset(source, args.frames, args.image_size)
    elif getattr(args, "images", False):
        dataset = ImageDataset(source, args.image_size)
    else:
        dataset = VideoDataset(source, args.frames, args.image_size)
    probe_dataset(dataset, args.data)
    return dataset


def probe_dataset(dataset, data: str) -> None:
    """Read one item before any training starts: a folder where no file can be read is the user's error
    (the dataset still warns once for each file it skips)."""
    if len(dataset) == 0:
        raise CommandError(f"--data {data!r} holds no usable clips")
    try:
        dataset[0]
    except RuntimeError as error:
        raise CommandError(f"--data {data!r}: no readable file found: {one_line(error)}") from error


# ---------------------------------------------------------------------- shared flags


def add_sampling_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--checkpoint", required=True, help="a folder written by Phenaki.save_pretrained (or `phenaki train`)")
    parser.add_argument("--cond-scale", type=finite_float, default=3.0, help="classifier-free guidance scale (default 3)")
    parser.add_argument("--steps", type=positive_int, default=None, help="MaskGIT decoding steps (default: the model's, 18)")
    parser.add_argument("--top-k", type=positive_int, default=None, help="draw only among the k most likely codes (default: off)")
    parser.add_argument("--top-p", type=nucleus, default=None, help="draw only within this nucleus of probability (default: off)")
    parser.add_argument("--seed", type=integer, default=0, help="random seed for sampling (default 0)")
    parser.add_argument("--fps", type=positive_float, default=8.0, help="frames per second of the written video (default 8)")
    parser.add_argument("--text-encoder", default=None, help="override the saved text encoder (HF name or local path)")
    parser.add_argument("--device", default="cpu", help="cpu, cuda[:N] or mps (default cpu)")


def add_data_flags(parser: argparse.ArgumentParser, *, device_help: str = "cpu, cuda[:N] or mps (default cpu)",
                   device_default: str | None = "cpu") -> None:
    parser.add_argument("--data", default="synthetic", help="video folder, .jsonl/.csv manifest, or 'synthetic' (default)")
    parser.add_argument("--frames", type=positive_int, default=9, help="frames per clip, 1 + k * temporal_patch_size (default 9)")
    parser.add_argument("--image-size", type=positive_int, default=None, help="frame size in pixels")
    parser.add_argument("--synthetic-samples", type=positive_int, default=1024, help="clips in the synthetic set (default 1024)")
    parser.add_argument("--seed", type=integer, default=0, help="random seed (default 0)")
    parser.add_argument("--device", default=device_default, help=device_help)


def check_output_path(path: str, *, allow_image: bool = True) -> None:
    """An output video path save_video can write: checked before any sampling starts."""
    from ..data.video_io import CONTAINER_EXTS, IMAGE_EXTS, VIDEO_EXTS, video_encoder_for

    out = Path(path)
    suffix = out.suffix.lower()
    if out.exists() and out.is_dir() and suffix:
        raise CommandError(f"--out {path!r} is a folder; give a file name")
    if suffix == "":
        return  # a folder of PNG frames
    if suffix in IMAGE_EXTS and not allow_image:
        raise CommandError(f"--out {path!r}: an image file holds one frame; use .mp4, .webm, .gif or a folder")
    if suffix not in VIDEO_EXTS + IMAGE_EXTS:
        raise CommandError(
            f"--out {path!r}: unsupported suffix {suffix!r}; expected one of {', '.join(VIDEO_EXTS + IMAGE_EXTS)} "
            "or no suffix (a folder of PNG frames)"
        )
    if suffix in CONTAINER_EXTS and video_encoder_for(suffix) is None:
        raise CommandError(f"--out {path!r}: this FFmpeg build has no encoder for {suffix}; try .gif or .webm")
