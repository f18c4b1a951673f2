"""The `phenaki` command: parses the command line and dispatches to `phenaki_pytorch.commands`.

    phenaki demo                                   train small models on built-in data, write samples
    phenaki train-tokenizer --data DIR ...         train a C-ViViT
    phenaki train --tokenizer DIR --data DIR ...   train MaskGit (and a critic) on top of it
    phenaki tokenize --tokenizer DIR --data DIR --out DIR
    phenaki eval-tokenizer --checkpoint DIR --data DIR
    phenaki sample --checkpoint DIR "a prompt" --frames 17 --out video.gif
    phenaki story --checkpoint DIR story.txt --out video.mp4

Errors: a mistake in the input (a flag, a config file, a model folder, a data folder) is one line on stderr
and exit status 2. An error that is not the user's (a bug) prints its traceback and exits with status 1.
`--debug` prints the traceback for every error.
"""

from __future__ import annotations

import argparse
import sys
import traceback
from pathlib import Path

from .commands import demo, evaluate, sampling, tokenize, train
from .commands.common import CommandError, apply_config, one_line
from .commands.sampling import parse_story

__all__ = ["CommandError", "build_parser", "is_user_error", "main", "parse_command_line", "parse_story"]

COMMAND_MODULES = (demo, sampling, tokenize, train, evaluate)
EXIT_USER_ERROR, EXIT_BUG, EXIT_INTERRUPTED = 2, 1, 130
_PACKAGE = Path(__file__).resolve().parent
_DEBUG_HELP = "print the full traceback of any error"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="phenaki", description="Phenaki text-to-video: train, sample, tell stories.")
    parser.add_argument("--debug", action="store_true", help=_DEBUG_HELP)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for module in COMMAND_MODULES:
        module.register(sub)
    for command in sub.choices.values():  # `phenaki sample --debug ...` works as well as `phenaki --debug sample ...`
        command.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help=_DEBUG_HELP)
    return parser


def _subcommands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for action in parser._actions:  # argparse offers no public way to reach its subparsers
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


def explicit_options(argv: list[str]) -> set[str]:
    """The option names typed on this command line (whatever their values): parse again with every default
    suppressed, so only what was given lands in the namespace."""
    parser = build_parser()
    for command in [parser, *_subcommands(parser).values()]:
        for action in command._actions:
            if not isinstance(action, argparse._SubParsersAction):
                action.default = argparse.SUPPRESS
    return set(vars(parser.parse_args(argv)))


def _raised_in(error: BaseException, folder: Path) -> bool:
    """Whether the innermost frame of the traceback, where `raise` ran, lies under `folder`."""
    tb = error.__traceback__
    if tb is None:
        return False
    while tb.tb_next is not None:
        tb = tb.tb_next
    try:
        return Path(tb.tb_frame.f_code.co_filename).resolve().is_relative_to(folder)
    except (OSError, ValueError):
        return False


def is_user_error(error: BaseException) -> bool:
    """An error caused by the input, as opposed to a bug.

    The input's: CommandError; a failing text encoder path; OS errors (missing files, permissions, a full
    disk); a ValueError / TypeError raised by this library's own argument checks (not one raised deep inside
    torch or another package); a RuntimeError raised by the data readers (unreadable files).
    """
    from .text import TextEncoderLoadError

    if isinstance(error, (CommandError, TextEncoderLoadError, OSError)):
        return True
    if isinstance(error, (ValueError, TypeError)):
        return _raised_in(error, _PACKAGE)
    if isinstance(error, RuntimeError):
        return _raised_in(error, _PACKAGE / "data")
    return False


def configure(args: argparse.Namespace, argv: list[str], parser: argparse.ArgumentParser) -> argparse.Namespace:
    """Fill the options not typed on the command line from `--config` (CommandError for a bad file) and
    record the typed ones in `args.explicit_options`."""
    explicit = explicit_options(argv)
    args.explicit_options = frozenset(explicit)
    return apply_config(args, _subcommands(parser)[args.command], explicit)


def parse_command_line(argv: list[str]) -> argparse.Namespace:
    """The arguments a command runs with: flags, then the config file for what the flags leave open."""
    parser = build_parser()
    return configure(parser.parse_args(argv), list(argv), parser)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = build_parser()
    args = parser.parse_args(argv)  # argparse's own errors: usage and one line, exit status 2
    debug = bool(getattr(args, "debug", False))
    prefix = f"phenaki {args.command}"
    try:
        configure(args, argv, parser)
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print(f"{prefix}: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except Exception as error:  # noqa: BLE001 - every error ends here, as one line or a traceback
        user = is_user_error(error)
        if debug or not user:
            traceback.print_exc(file=sys.stderr)
        if user:
            plain = isinstance(error, CommandError) and error.__cause__ is None  # nothing more to show
            hint = "" if debug or plain else " (--debug shows the traceback)"
            print(f"{prefix}: error: {one_line(error)}{hint}", file=sys.stderr)
            return EXIT_USER_ERROR
        print(
            f"{prefix}: internal error ({type(error).__name__}: {one_line(error)[:300]}). This is a bug in "
            "phenaki-pytorch, not in your input: please report it with the traceback above.",
            file=sys.stderr,
        )
        return EXIT_BUG


if __name__ == "__main__":
    sys.exit(main())
