"""Training checkpoints: one file per checkpoint, written atomically, read without executing code.

Format. A checkpoint is ONE file written by `torch.save` holding only tensors and plain Python values
(dict, list, tuple, str, int, float, bool, None):

    {"format": "phenaki_pytorch.checkpoint", "version": 1, "step": int,
     "model": state dict, "ema": state dict | None, "optimizers": {name: state dict},
     "schedulers": {name: state dict}, "rng": {...}, "config": dict | None, "extra": dict}

It is read back with `torch.load(weights_only=True)`, whose restricted unpickler only rebuilds tensors and
those plain types, so a hostile or foreign file fails with a `ValueError` instead of running code. We chose a
single torch file over a folder of safetensors plus a side file because one file is replaced by one
`os.replace`: a reader sees the old checkpoint or the new one, never a mix of two steps. Optimizer and
scheduler state dicts already are tensors and plain values; random generator states are stored as ByteTensors
(torch) and lists / int tensors (python, numpy). `CViViT.load(path)` reads the "model" entry of such a file,
and `save_pretrained` (safetensors + config.json) remains the format for finished models.

Atomic writes. The payload goes to a uniquely named temporary file in the destination folder, is flushed and
fsynced, and then renamed over the destination with `os.replace`; a crash at any point leaves the previous
checkpoint intact.

Integrity (version 2). After `torch.save`, the SHA-256 of the file is stored in the zip archive comment at its
end (`phenaki_pytorch.serialization.add_checksum_trailer`; `torch.load` ignores it). `load_checkpoint` checks
it before unpickling anything, so a flipped or truncated byte anywhere in the file is a `ValueError` naming the
file, never a silently different model. Version 1 files (no checksum) still load.

Finite state. `save_checkpoint` refuses (ValueError, nothing written, older checkpoints kept) a model, EMA or
optimizer state holding NaN or inf, unless `allow_nonfinite=True`: a poisoned run must not replace good
checkpoints.

Sharded checkpoints (FSDP). When the model and optimizer states are sharded across processes, a checkpoint is
a folder `checkpoint-<step>/` instead of a file:

    shards/       torch.distributed.checkpoint files: every process writes its own shards of "model" and
                  "optimizers" (`__<rank>_0.distcp`) and process 0 the `.metadata` that maps them
    trainer.pt    the rest, a regular checkpoint file as above with an empty "model": EMA, schedulers, RNG,
                  config, extra (written by process 0; it carries its own SHA-256 trailer)
    MANIFEST.json format marker, step, number of processes, and the SHA-256 of every other file in the folder

All processes write into one temporary folder `.tmp-checkpoint-<step>-<token>/`; once every shard is on disk,
process 0 writes the manifest last and renames the folder into place, so a crash leaves no half checkpoint under
the final name. Reading checks every file against the manifest first (a flipped byte in any shard is a
ValueError naming the file), and the state is loaded back through `torch.distributed.checkpoint`, which also
reshards: a checkpoint written by N processes loads into M processes, or into one unsharded model. The folder
needs a filesystem every process sees (on several machines: a shared results folder).

Falling back. `CheckpointManager.load_latest_readable()` returns the newest checkpoint that reads and verifies,
with the ones it skipped and why; `prune()` counts only verified checkpoints towards `keep_last` and moves a
corrupt one aside (`<name>.corrupt`) instead of keeping it in place of a readable one.
"""

from __future__ import annotations

import json
import os
import random
import re
import shutil
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from ..serialization import (
    CHECKPOINT_FORMAT,
    add_checksum_trailer,
    atomic_write_text,
    directory_lock,
    file_sha256,
    fsync_directory,
    nonfinite_tensors,
    temporary_path,
    unwrap_model,
    verify_checksum_trailer,
)

__all__ = [
    "CheckpointManager",
    "SHARDED_FORMAT",
    "is_sharded_checkpoint",
    "load_sharded_checkpoint",
    "verify_sharded_checkpoint",
    "write_sharded_manifest",
    "get_rng_state",
    "load_checkpoint",
    "restore_checkpoint",
    "save_checkpoint",
    "set_rng_state",
]

FORMAT = CHECKPOINT_FORMAT
VERSION = 2  # 2: a SHA-256 trailer; version 1 files (no trailer) are still read
READABLE_VERSIONS = (1, 2)
_TMP_PREFIX = ".tmp-"
CORRUPT_SUFFIX = ".corrupt"
SHARDED_FORMAT = "phenaki_pytorch.sharded_checkpoint"
SHARDED_VERSION = 1
MANIFEST_NAME = "MANIFEST.json"
TRAINER_STATE_NAME = "trainer.pt"
SHARDS_DIR = "shards"


# ---------------------------------------------------------------------------------------------- random states


def get_rng_state() -> dict[str, Any]:
    """States of python `random`, numpy (when importable), torch CPU and CUDA (when available), as safe types."""
    version, internal, gauss_next = random.getstate()
    state: dict[str, Any] = {
        "python": {"version": version, "internal": list(internal), "gauss_next": gauss_next},
        "torch": torch.get_rng_state(),
    }
    try:
        import numpy as np
    except ImportError:
        np = None
    if np is not None:
        algorithm, keys, pos, has_gauss, cached_gaussian = np.random.get_state()
        state["numpy"] = {
            "algorithm": str(algorithm),
            "keys": torch.from_numpy(keys.astype(np.int64)),
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "cached_gaussian": float(cached_gaussian),
        }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: Mapping[str, Any]) -> None:
    """Inverse of `get_rng_state`; parts missing from `state` (or from this machine) are left alone."""
    if "python" in state:
        python = state["python"]
        random.setstate((python["version"], tuple(python["internal"]), python["gauss_next"]))
    if "torch" in state:
        torch.set_rng_state(state["torch"].cpu())
    if "numpy" in state:
        try:
            import numpy as np
        except ImportError:
            np = None
        if np is not None:
            saved = state["numpy"]
            keys = saved["keys"].numpy().astype(np.uint32)
            np.random.set_state((saved["algorithm"], keys, saved["pos"], saved["has_gauss"], saved["cached_gaussian"]))
    cuda = state.get("cuda")
    if cuda and torch.cuda.is_available() and len(cuda) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all([s.cpu() for s in cuda])


# ---------------------------------------------------------------------------------------------- save / load


def _model_state(model: nn.Module | Mapping[str, Tensor]) -> dict[str, Tensor]:
    if isinstance(model, nn.Module):
        return unwrap_model(model).state_dict()
    if isinstance(model, Mapping):
        return dict(model)
    raise TypeError(f"model must be an nn.Module or a state dict, got {type(model).__name__}")


def save_checkpoint(
    path: str | Path,
    *,
    model: nn.Module | Mapping[str, Tensor],
    ema: nn.Module | None = None,
    optimizers: Mapping[str, torch.optim.Optimizer] | None = None,
    schedulers: Mapping[str, Any] | None = None,
    step: int,
    config: dict | None = None,
    extra: dict | None = None,
    allow_nonfinite: bool = False,
) -> Path:
    """Write a checkpoint file atomically, with a SHA-256 trailer, and return its path.

    `model` is a module (DDP / FSDP-`module` / torch.compile wrappers are stripped, so keys carry no `module.` or
    `_orig_mod.` prefix) or an already gathered state dict. `config` defaults to the model's `.config`.
    `extra` holds anything else the caller wants back, in plain types or tensors. A model, EMA or optimizer
    state holding NaN or inf is refused with a ValueError (nothing is written) unless `allow_nonfinite`.
    """
    if isinstance(step, bool) or not isinstance(step, int) or step < 0:
        raise ValueError(f"step must be a non-negative int, got {step!r}")
    if config is None and isinstance(model, nn.Module):
        config = getattr(unwrap_model(model), "config", None)
    payload = {
        "format": FORMAT,
        "version": VERSION,
        "step": step,
        "model": _model_state(model),
        "ema": ema.state_dict() if ema is not None else None,
        "optimizers": {name: opt.state_dict() for name, opt in (optimizers or {}).items()},
        "schedulers": {name: sched.state_dict() for name, sched in (schedulers or {}).items()},
        "rng": get_rng_state(),
        "config": config,
        "extra": dict(extra or {}),
    }
    if not allow_nonfinite:
        bad = nonfinite_tensors({key: payload[key] for key in ("model", "ema", "optimizers")})
        if bad:
            shown = ", ".join(bad[:5]) + (f" and {len(bad) - 5} more" if len(bad) > 5 else "")
            raise ValueError(
                f"refusing to write checkpoint {str(path)!r} (step {step}): {len(bad)} tensor(s) hold NaN or inf "
                f"({shown}); the existing checkpoints are kept. Pass allow_nonfinite=True to write it anyway"
            )
    return _atomic_torch_save(payload, Path(path))


def _atomic_torch_save(payload: dict, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temporary_path(path)
    try:
        with open(tmp, "wb") as file:
            torch.save(payload, file)
            file.flush()
            os.fsync(file.fileno())
        add_checksum_trailer(tmp)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_directory(path.parent)
    return path


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Read a checkpoint written by `save_checkpoint`. Never executes code stored in the file.

    Raises FileNotFoundError when there is no file, and ValueError naming the file when it is truncated,
    corrupt (its SHA-256 differs from the one it records), or not a phenaki_pytorch checkpoint.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint file at {str(path)!r}")
    verified = verify_checksum_trailer(path)  # before unpickling anything: ValueError naming the file
    try:
        payload = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as error:
        reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise ValueError(
            f"could not read checkpoint {str(path)!r}: the file is truncated, corrupt or not a checkpoint "
            f"(it was not loaded and nothing in it was executed). Cause: {reason}"
        ) from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        kind = type(payload).__name__
        raise ValueError(
            f"{str(path)!r} is not a phenaki_pytorch checkpoint (it holds a {kind} without the "
            f"format marker {FORMAT!r})"
        )
    version = payload.get("version")
    if version not in READABLE_VERSIONS:
        raise ValueError(
            f"{str(path)!r} has checkpoint version {version!r}; this library reads versions {READABLE_VERSIONS}"
        )
    if version >= 2 and not verified:
        raise ValueError(
            f"{str(path)!r} is damaged: a version {version} checkpoint ends with a SHA-256 record, and this one's "
            "is missing or broken"
        )
    return payload


def restore_checkpoint(
    checkpoint: Mapping[str, Any],
    *,
    model: nn.Module | None = None,
    ema: nn.Module | None = None,
    optimizers: Mapping[str, Any] | None = None,
    schedulers: Mapping[str, Any] | None = None,
    restore_rng: bool = False,
    strict: bool = True,
) -> int:
    """Load the parts of `checkpoint` into the objects given; returns the checkpoint's step."""
    if model is not None:
        unwrap_model(model).load_state_dict(checkpoint["model"], strict=strict)
    if ema is not None:
        if checkpoint.get("ema") is None:
            raise ValueError("the checkpoint holds no EMA weights, but an `ema` was given to restore")
        ema.load_state_dict(checkpoint["ema"], strict=strict)
    for kind, targets in (("optimizers", optimizers), ("schedulers", schedulers)):
        saved = checkpoint.get(kind, {})
        for name, target in (targets or {}).items():
            if name not in saved:
                raise ValueError(f"the checkpoint has no {kind[:-1]} {name!r}; it holds {sorted(saved)}")
            target.load_state_dict(saved[name])
    if restore_rng:
        set_rng_state(checkpoint["rng"])
    return int(checkpoint["step"])


# ---------------------------------------------------------------------------------------------- sharded


def is_sharded_checkpoint(path: str | Path) -> bool:
    """Whether `path` is a sharded checkpoint folder (it holds a MANIFEST.json)."""
    return Path(path).is_dir() and (Path(path) / MANIFEST_NAME).is_file()


def write_sharded_manifest(folder: str | Path, step: int, num_processes: int) -> Path:
    """Record the SHA-256 of every file in a sharded checkpoint folder (call once all of them are written)."""
    folder = Path(folder)
    files = {}
    for path in sorted(folder.rglob("*")):
        if path.is_file() and path.name != MANIFEST_NAME:
            with open(path, "rb") as file:
                os.fsync(file.fileno())
            files[path.relative_to(folder).as_posix()] = file_sha256(path)
    manifest = {
        "format": SHARDED_FORMAT,
        "version": SHARDED_VERSION,
        "step": step,
        "num_processes": num_processes,
        "files": files,
    }
    for sub in sorted({p.parent for p in folder.rglob("*") if p.is_file()}):
        fsync_directory(sub)
    return atomic_write_text(folder / MANIFEST_NAME, json.dumps(manifest, indent=1))


def verify_sharded_checkpoint(folder: str | Path) -> dict[str, Any]:
    """The manifest of a sharded checkpoint folder once every file it lists matches its SHA-256.

    Raises ValueError naming the folder and the file when one is missing, truncated or altered, or when the
    manifest itself is unreadable.
    """
    folder = Path(folder)
    try:
        manifest = json.loads((folder / MANIFEST_NAME).read_text())
    except (OSError, ValueError) as error:
        raise ValueError(f"sharded checkpoint {str(folder)!r}: unreadable {MANIFEST_NAME} ({error})") from None
    if not isinstance(manifest, dict) or manifest.get("format") != SHARDED_FORMAT:
        raise ValueError(f"{str(folder)!r} is not a phenaki_pytorch sharded checkpoint (no {SHARDED_FORMAT!r} marker)")
    if manifest.get("version") != SHARDED_VERSION:
        raise ValueError(f"{str(folder)!r}: sharded checkpoint version {manifest.get('version')!r} is not readable")
    files = manifest.get("files") or {}
    if TRAINER_STATE_NAME not in files:
        raise ValueError(f"sharded checkpoint {str(folder)!r}: its manifest lists no {TRAINER_STATE_NAME}")
    for name, digest in files.items():
        path = folder / name
        if not path.is_file():
            raise ValueError(f"sharded checkpoint {str(folder)!r} is damaged: {name} is missing")
        if file_sha256(path) != digest:
            raise ValueError(f"sharded checkpoint {str(folder)!r} is damaged: {name} differs from its SHA-256 record")
    return manifest


def load_sharded_checkpoint(folder: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Verify a sharded checkpoint folder and read its unsharded part (`trainer.pt`); the result's "sharded"
    entry names the folder, whose model and optimizer shards `torch.distributed.checkpoint` loads."""
    folder = Path(folder)
    manifest = verify_sharded_checkpoint(folder)
    checkpoint = load_checkpoint(folder / TRAINER_STATE_NAME, map_location=map_location)
    checkpoint["sharded"] = str(folder / SHARDS_DIR)
    checkpoint["num_processes_saved"] = int(manifest.get("num_processes", 0))
    return checkpoint


# ---------------------------------------------------------------------------------------------- manager


class CheckpointManager:
    """Numbered checkpoints `checkpoint-<step>.pt` in one folder, keeping the newest `keep_last`.

    manager = CheckpointManager("results/checkpoints", keep_last=3)
    manager.save(step, model=model, optimizers={"adam": opt}, ...)   # keywords of save_checkpoint
    checkpoint = manager.load()                                       # the latest; or load(path)
    """

    PATTERN = re.compile(r"^checkpoint-(\d+)\.pt$")
    SHARDED_PATTERN = re.compile(r"^checkpoint-(\d+)$")  # a sharded checkpoint folder

    def __init__(self, folder: str | Path, keep_last: int | None = 3):
        if keep_last is not None and (isinstance(keep_last, bool) or not isinstance(keep_last, int) or keep_last < 1):
            raise ValueError(f"keep_last must be a positive int or None (keep all), got {keep_last!r}")
        self.folder = Path(folder)
        self.keep_last = keep_last
        self._verified: dict[Path, tuple | None] = {}  # path -> stat when it last verified

    def path_for(self, step: int) -> Path:
        return self.folder / f"checkpoint-{step:08d}.pt"

    def sharded_path_for(self, step: int) -> Path:
        return self.folder / f"checkpoint-{step:08d}"

    def checkpoints(self) -> list[tuple[int, Path]]:
        """(step, path) of every checkpoint in the folder, oldest first."""
        if not self.folder.is_dir():
            return []
        found = []
        for path in self.folder.iterdir():
            match = self.PATTERN.match(path.name)
            if match and path.is_file():
                found.append((int(match.group(1)), path))
            sharded = self.SHARDED_PATTERN.match(path.name)
            if sharded and path.is_dir():
                found.append((int(sharded.group(1)), path))
        return sorted(found)

    def latest(self) -> Path | None:
        found = self.checkpoints()
        return found[-1][1] if found else None

    def save(self, step: int, **state) -> Path:
        """`save_checkpoint(self.path_for(step), step=step, **state)`, then prune old checkpoints."""
        self.folder.mkdir(parents=True, exist_ok=True)
        with directory_lock(self.folder):
            self._remove_stale_temporaries()
            path = save_checkpoint(self.path_for(step), step=step, **state)
            self._verified[path] = _stat_key(path)  # its digest was just computed from the file itself
            self.prune()
        return path

    def verify(self, path: str | Path) -> str | None:
        """None when `path` passes its checksum (or, a version 1 file, at least reads); else the reason it fails.

        Cheap after the first call per file: results are remembered until the file changes.
        """
        path = Path(path)
        if path.is_dir():
            try:
                verify_sharded_checkpoint(path)
            except ValueError as error:
                return str(error)
            return None
        key = _stat_key(path)
        if key is not None and self._verified.get(path) == key:
            return None
        try:
            if not verify_checksum_trailer(path):
                load_checkpoint(path)  # no trailer: only a full read tells (and a version 2 file fails here)
        except (OSError, ValueError) as error:
            return str(error)
        self._verified[path] = key
        return None

    def prune(self) -> list[Path]:
        """Delete all but the newest `keep_last` checkpoints that verify; corrupt ones are moved aside.

        A corrupt checkpoint never counts towards `keep_last`, so it can never cause a readable one to be deleted;
        it is renamed to `<name>.corrupt` (kept for inspection, ignored by `checkpoints()`).
        """
        if self.keep_last is None:
            return []
        kept, removed = 0, []
        for _, path in reversed(self.checkpoints()):
            if kept >= self.keep_last:
                if path.is_dir():
                    shutil.rmtree(path, ignore_errors=True)
                else:
                    path.unlink(missing_ok=True)
                self._verified.pop(path, None)
                removed.append(path)
                continue
            reason = self.verify(path)
            if reason is None:
                kept += 1
            else:
                self._quarantine(path, reason)
        return removed

    def _quarantine(self, path: Path, reason: str) -> None:
        target = path.with_name(path.name + CORRUPT_SUFFIX)
        try:
            os.replace(path, target)
        except OSError:
            return
        warnings.warn(f"moved the unreadable checkpoint {str(path)!r} aside to {target.name!r}: {reason}", stacklevel=3)

    def load(self, path: str | Path | None = None, map_location: str | torch.device = "cpu", **restore) -> dict:
        """Read `path` (default: the latest checkpoint); keywords of `restore_checkpoint` load it into objects."""
        if path is None:
            path = self.latest()
            if path is None:
                raise FileNotFoundError(f"no checkpoints in {str(self.folder)!r}")
        if Path(path).is_dir():
            if restore:
                raise ValueError(f"{str(path)!r} is a sharded checkpoint: a trainer restores it (BaseTrainer.load)")
            return load_sharded_checkpoint(path, map_location=map_location)
        checkpoint = load_checkpoint(path, map_location=map_location)
        if restore:
            restore_checkpoint(checkpoint, **restore)
        return checkpoint

    def load_latest_readable(
        self, map_location: str | torch.device = "cpu"
    ) -> tuple[dict, Path, list[tuple[Path, str]]] | None:
        """The newest checkpoint that reads and verifies: `(checkpoint, path, skipped)`, where `skipped` lists the
        newer `(path, reason)` that did not; None when the folder holds no checkpoints.

        Raises ValueError (naming every file and why) when checkpoints exist but none is readable.
        """
        skipped: list[tuple[Path, str]] = []
        for _, path in reversed(self.checkpoints()):
            try:
                if path.is_dir():
                    checkpoint = load_sharded_checkpoint(path, map_location=map_location)
                else:
                    checkpoint = load_checkpoint(path, map_location=map_location)
            except (OSError, ValueError) as error:
                skipped.append((path, str(error)))
                continue
            self._verified[path] = _stat_key(path)
            return checkpoint, path, skipped
        if skipped:
            reasons = "; ".join(f"{path.name}: {reason}" for path, reason in skipped)
            raise ValueError(f"none of the {len(skipped)} checkpoints in {str(self.folder)!r} is readable: {reasons}")
        return None

    def _remove_stale_temporaries(self) -> None:
        # left behind only when a process was killed mid-write; called under the folder's lock
        if self.folder.is_dir():
            for path in self.folder.glob(_TMP_PREFIX + "checkpoint-*"):
                if path.is_dir():
                    shutil.rmtree(path, ignore_errors=True)
                else:
                    path.unlink(missing_ok=True)


def _stat_key(path: Path) -> tuple | None:
    try:
        stat = path.stat()
    except OSError:
        return None
    return stat.st_ino, stat.st_size, stat.st_mtime_ns
