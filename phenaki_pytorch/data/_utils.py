"""Small helpers shared by the data modules (not public API)."""

from __future__ import annotations

import hashlib
import operator
import re

import torch

from ..typecheck import typechecked  # noqa: F401 -- re-exported for the data modules

_DIGITS = re.compile(r"(\d+)")


def natural_sort_key(name: str) -> tuple:
    """Sort key that orders "frame2" before "frame10" (digit runs compare as numbers)."""
    parts = _DIGITS.split(name)
    return tuple((0, int(part), "") if part.isdigit() else (1, 0, part.lower()) for part in parts)


def as_generator(generator: torch.Generator | int | None) -> torch.Generator | None:
    """A torch.Generator stays as is, an int becomes a freshly seeded CPU generator, None stays None."""
    if generator is None or isinstance(generator, torch.Generator):
        return generator
    if isinstance(generator, bool) or not isinstance(generator, int):
        raise TypeError(f"generator must be a torch.Generator, an int seed or None, got {type(generator).__name__}")
    gen = torch.Generator()
    gen.manual_seed(int(generator))
    return gen


def derive_seed(*parts: object) -> int:
    """A stable 63-bit seed from any printable parts (independent of PYTHONHASHSEED)."""
    digest = hashlib.blake2b(repr(parts).encode("utf-8"), digest_size=8).digest()
    return int.from_bytes(digest, "little") & ((1 << 63) - 1)


def randint(low: int, high_inclusive: int, generator: torch.Generator | None) -> int:
    """Uniform integer in [low, high_inclusive]."""
    if high_inclusive <= low:
        return low
    return int(torch.randint(low, high_inclusive + 1, (1,), generator=generator).item())


def check_positive_int(name: str, value: object, *, allow_none: bool = False) -> None:
    if value is None and allow_none:
        return
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, got {type(value).__name__}")
    if value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value}")


def check_index(index: object, length: int) -> int:
    """A dataset index (ints, numpy / 0-d torch integers; negatives count from the end) as 0 <= i < length."""
    if isinstance(index, bool):
        raise TypeError("index must be an int, got bool")
    try:
        index = operator.index(index)
    except TypeError:
        raise TypeError(f"index must be an int, got {type(index).__name__}") from None
    if not -length <= index < length:
        raise IndexError(f"index {index} out of range for a dataset of {length} items")
    return index % length


def normalize_size(name: str, size: int | tuple[int, int] | list[int] | None) -> tuple[int, int] | None:
    """image_size as (height, width); an int means a square."""
    if size is None:
        return None
    if isinstance(size, bool):
        raise TypeError(f"{name} must be an int or a (height, width) pair, got bool")
    if isinstance(size, int):
        size = (size, size)
    if not isinstance(size, (tuple, list)) or len(size) != 2 or not all(isinstance(s, int) for s in size):
        raise TypeError(f"{name} must be an int or a (height, width) pair of ints, got {size!r}")
    if size[0] < 1 or size[1] < 1:
        raise ValueError(f"{name} must be positive, got {tuple(size)}")
    return int(size[0]), int(size[1])
