"""Config capture, `save_pretrained` / `from_pretrained`, safe weight files and file integrity.

Every model records the keyword arguments it was built with. `save_pretrained(dir)` writes them as
`config.json` beside `model.safetensors`, so `from_pretrained(dir)` rebuilds the model without its constructor
arguments. Nested models (a Phenaki holding a CViViT and a MaskGit) are stored as nested configs.

What a saved folder guarantees (format_version 2):

* Integrity. `config.json` records the SHA-256 of the weights file and a SHA-256 of its own content, so one
  flipped byte in either file, or a config paired with weights from another save, is a `ValueError` naming the
  file instead of a silently wrong model. Stand-alone `.safetensors` files written by `atomic_save_safetensors`
  carry a hash of their tensors in the safetensors metadata; torch checkpoint files get a SHA-256 of the whole
  file in the zip archive comment (`add_checksum_trailer`), which `torch.load` ignores.
* Atomic writes. Every file goes to a uniquely named temporary file in the target folder, is fsynced and then
  renamed over the old one. `save_pretrained` writes the weights and the config as temporaries first and renames
  the weights, then the config: a crash between the two renames leaves the new weights beside the old config
  and the new config still pending, and `from_pretrained` recognises the pair by the weights' hash. Writers of
  one folder take an exclusive advisory lock on it (POSIX `flock`) and readers a shared one, so two processes
  saving to one folder do not mix their files and a reader never sees half of a save.
* Bounded loading. `from_pretrained` first builds the model on the `meta` device (no memory) and compares
  every parameter and buffer shape with the safetensors header, so a crafted config asking for `dim=10**9`
  fails before anything is allocated; a config that builds absurdly many tensors is stopped while building.
* Class lookup by module and name: a class elsewhere that shares a bare name is never picked silently.

The Hub. `ConfigMixin` builds on `huggingface_hub.ModelHubMixin`: `push_to_hub(repo_id)` uploads the folder in
one commit, `save_pretrained` writes a model card (README.md, kept when it exists), and `from_pretrained`
takes a local folder or a Hub id ("user/name", fetched by `snapshot_download`, read from the cache under
`HF_HUB_OFFLINE=1`). The mixin's own config capture and in-place writes are not used (see `ConfigMixin`).

Folders written by the earlier format (version 1: no hashes) still load, without the integrity checks.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import inspect
import json
import os
import re
import secrets
import threading
import warnings
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import torch
from huggingface_hub import ModelHubMixin
from torch import Tensor, nn

__all__ = [
    "CONFIG_NAME",
    "MODEL_CARD_NAME",
    "WEIGHTS_NAME",
    "ConfigMixin",
    "add_checksum_trailer",
    "atomic_save_safetensors",
    "atomic_write_text",
    "file_sha256",
    "load_state_dict_file",
    "nonfinite_tensors",
    "tensors_sha256",
    "unwrap_model",
    "verify_checksum_trailer",
]

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
FORMAT_VERSION = 2
TMP_PREFIX = ".tmp-"
CONTENT_HASH_KEY = "phenaki_pytorch.tensors_sha256"  # safetensors metadata key
MODEL_CARD_NAME = "README.md"
CHECKPOINT_FORMAT = "phenaki_pytorch.checkpoint"  # the marker of training checkpoints (training/checkpoint.py)
MAX_CONFIG_BYTES = 16 * 2**20  # a config.json is a few kB; a larger one is not ours

_REGISTRY: dict[str, type] = {}  # "module.QualName" -> class
_REPO_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")

MODEL_CARD_TEMPLATE = """---
{{ card_data }}
---

# {{ model_class }}

A `{{ model_class }}` of the `phenaki_pytorch` library (text-to-video: C-ViViT, MaskGit, token critic), saved
with `save_pretrained`: `config.json` holds its constructor arguments and the SHA-256 of `model.safetensors`.

```python
from phenaki_pytorch import {{ model_class }}

model = {{ model_class }}.from_pretrained("{{ repo_id or "path/to/this/folder" }}"{% if pass_again %}, {{ pass_again }}{% endif %})
```
{% if pass_again %}
Some constructor arguments could not be stored in the config and must be passed again: `{{ pass_again }}`.
{% endif %}"""


def _class_path(cls: type) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


# ---------------------------------------------------------------------------------------------- hashing


def file_sha256(path: str | Path, *, upto: int | None = None) -> str:
    """Hex SHA-256 of a file (of its first `upto` bytes when given), read in 1 MiB chunks."""
    digest = hashlib.sha256()
    remaining = upto
    with open(path, "rb") as file:
        while remaining is None or remaining > 0:
            chunk = file.read(1 << 20 if remaining is None else min(1 << 20, remaining))
            if not chunk:
                break
            digest.update(chunk)
            if remaining is not None:
                remaining -= len(chunk)
    return digest.hexdigest()


def tensors_sha256(state: Mapping[str, Tensor]) -> str:
    """Hex SHA-256 over the names, dtypes, shapes and bytes of a state dict's tensors (order-independent)."""
    digest = hashlib.sha256()
    for name in sorted(state):
        tensor = state[name].detach()
        digest.update(json.dumps([name, str(tensor.dtype), list(tensor.shape)]).encode())
        flat = tensor.cpu().contiguous().reshape(-1)
        if flat.numel():
            digest.update(memoryview(flat.view(torch.uint8).numpy()))
    return digest.hexdigest()


def nonfinite_tensors(state: Mapping[str, Any]) -> list[str]:
    """Names of the floating / complex tensors in `state` (nested dicts and lists walked) holding NaN or inf."""
    bad: list[str] = []

    def walk(value, name):
        if isinstance(value, Tensor):
            if (value.is_floating_point() or value.is_complex()) and not bool(torch.isfinite(value).all()):
                bad.append(name)
        elif isinstance(value, Mapping):
            for key, item in value.items():
                walk(item, f"{name}.{key}" if name else str(key))
        elif isinstance(value, (list, tuple)):
            for i, item in enumerate(value):
                walk(item, f"{name}.{i}" if name else str(i))

    walk(state, "")
    return bad


def _describe(names: list[str], limit: int = 5) -> str:
    shown = ", ".join(names[:limit])
    return shown + (f" and {len(names) - limit} more" if len(names) > limit else "")


# ---------------------------------------------------------------------------------------------- atomic files


def fsync_directory(folder: str | Path) -> None:
    """Make renames in `folder` durable (POSIX); a no-op where directories cannot be opened."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _fsync_file(path: Path) -> None:
    with open(path, "rb+") as file:
        os.fsync(file.fileno())


def temporary_path(path: Path) -> Path:
    """A new, uniquely named empty file beside `path` (`.tmp-<name>.<random>`), for a write-then-rename.

    Created with the usual permissions (0666 less the umask), so the renamed file is as readable as one
    written in place (`tempfile.mkstemp` would make it private to the owner).
    """
    for _ in range(100):
        candidate = path.with_name(f"{TMP_PREFIX}{path.name}.{secrets.token_hex(6)}")
        try:
            fd = os.open(candidate, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o666)
        except FileExistsError:
            continue
        os.close(fd)
        return candidate
    raise FileExistsError(f"could not create a temporary file beside {str(path)!r}")


@contextlib.contextmanager
def directory_lock(folder: str | Path, shared: bool = False) -> Iterator[None]:
    """An advisory lock on `folder` (POSIX `flock`; a no-op where unavailable): exclusive for its writers,
    `shared` for readers that want a consistent view of several files. Not re-entrant: do not nest it.
    """
    try:
        import fcntl
    except ImportError:  # Windows: no flock; unique temporary names still keep writers' files apart
        yield
        return
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        yield
        return
    try:
        fcntl.flock(fd, fcntl.LOCK_SH if shared else fcntl.LOCK_EX)
        yield
    finally:
        try:
            fcntl.flock(fd, fcntl.LOCK_UN)
        finally:
            os.close(fd)


def atomic_write_text(path: str | Path, text: str) -> Path:
    """Write `text` (UTF-8) to `path` through a unique temporary file, fsync and rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _write_text_temporary(path, text)
    _commit(tmp, path)
    return path


def _write_text_temporary(path: Path, text: str) -> Path:
    tmp = temporary_path(path)
    try:
        with open(tmp, "w", encoding="utf-8") as file:
            file.write(text)
            file.flush()
            os.fsync(file.fileno())
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return tmp


def _commit(tmp: Path, path: Path) -> None:
    try:
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_directory(path.parent)


def _cpu_state(state: Mapping[str, Tensor]) -> dict[str, Tensor]:
    # clones: safetensors refuses tensors that share storage (tied weights), and the copy is what gets hashed
    return {name: tensor.detach().cpu().clone().contiguous() for name, tensor in state.items()}


def _check_finite(state: Mapping[str, Any], what: str) -> None:
    bad = nonfinite_tensors(state)
    if bad:
        raise ValueError(
            f"refusing to write {what}: {len(bad)} tensor(s) hold NaN or inf ({_describe(bad)}). The previous "
            "file (if any) is left as it was; pass allow_nonfinite=True to write such weights anyway"
        )


def _write_safetensors_temporary(
    state: Mapping[str, Tensor], path: Path, metadata: Mapping[str, str] | None
) -> tuple[Path, str]:
    """Write `state` beside `path` under a temporary name; returns (temporary path, SHA-256 of that file)."""
    from safetensors.torch import save_file

    metadata = {**(metadata or {}), CONTENT_HASH_KEY: tensors_sha256(state)}
    tmp = temporary_path(path)
    try:
        save_file(dict(state), str(tmp), metadata=metadata)
        _fsync_file(tmp)
        digest = file_sha256(tmp)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return tmp, digest


def atomic_save_safetensors(
    state: Mapping[str, Tensor] | nn.Module,
    path: str | Path,
    *,
    metadata: Mapping[str, str] | None = None,
    allow_nonfinite: bool = False,
) -> str:
    """Write a state dict (or a module's) to a `.safetensors` file atomically; returns the file's SHA-256.

    The tensors' hash goes into the file's metadata, so `load_state_dict_file` detects a changed byte in any
    tensor. Tensors holding NaN or inf are refused (a `ValueError`, the old file kept) unless `allow_nonfinite`.
    """
    if isinstance(state, nn.Module):
        state = unwrap_model(state).state_dict()
    if not isinstance(state, Mapping):
        raise TypeError(f"state must be a state dict or an nn.Module, got {type(state).__name__}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    state = _cpu_state(state)
    if not allow_nonfinite:
        _check_finite(state, repr(str(path)))
    with directory_lock(path.parent):
        tmp, digest = _write_safetensors_temporary(state, path, metadata)
        _commit(tmp, path)
    return digest


# ---------------------------------------------------------------------------------------------- torch files


_TRAILER_TAG = b"phenaki-sha256:"
_DIGEST_LEN = 64
_TRAILER_LEN = len(_TRAILER_TAG) + _DIGEST_LEN
_EOCD = b"PK\x05\x06"  # zip end-of-central-directory record: 22 bytes, the last 2 are the comment length
_EOCD_LEN = 22


def add_checksum_trailer(path: str | Path) -> str:
    """Store the SHA-256 of a zip-format torch file (what `torch.save` writes) in its zip archive comment.

    The digest covers every byte before it, including the comment length and the tag, so a change anywhere
    in the file is detected by `verify_checksum_trailer`; `torch.load` reads the file as before. Returns
    the digest.
    """
    path = Path(path)
    with open(path, "r+b") as file:
        size = file.seek(0, os.SEEK_END)
        if size < _EOCD_LEN:
            raise ValueError(f"{str(path)!r} is too short to be a torch zip file")
        file.seek(size - _EOCD_LEN)
        record = file.read(_EOCD_LEN)
        if record[:4] != _EOCD or record[-2:] != b"\x00\x00":
            raise ValueError(f"{str(path)!r} does not end with a comment-free zip record (not a torch.save file)")
        file.seek(size - 2)
        file.write(_TRAILER_LEN.to_bytes(2, "little") + _TRAILER_TAG)
        file.flush()
        digest = file_sha256(path, upto=size + len(_TRAILER_TAG))
        file.seek(size + len(_TRAILER_TAG))
        file.write(digest.encode("ascii"))
        file.flush()
        os.fsync(file.fileno())
    return digest


def verify_checksum_trailer(path: str | Path) -> bool:
    """Check a file's `add_checksum_trailer` digest: True when it matches, False when the file has none.

    Raises ValueError naming the file when the stored digest and the content differ.
    """
    path = Path(path)
    size = path.stat().st_size
    if size < _TRAILER_LEN + _EOCD_LEN:
        return False
    with open(path, "rb") as file:
        file.seek(size - _TRAILER_LEN)
        tail = file.read(_TRAILER_LEN)
    if not tail.startswith(_TRAILER_TAG):
        return False
    stored = tail[len(_TRAILER_TAG) :]
    actual = file_sha256(path, upto=size - _DIGEST_LEN)
    if stored != actual.encode("ascii"):
        raise ValueError(
            f"{str(path)!r} is corrupt: its SHA-256 is {actual[:16]}..., but the file records "
            f"{stored[:16].decode('ascii', 'replace')}... (a changed or damaged byte; the file was not used)"
        )
    return True


def load_state_dict_file(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Tensor]:
    """Read weights from .safetensors or a torch file, never executing code from it.

    Integrity records are checked where the file has them: the tensors' hash in safetensors metadata, the
    whole-file SHA-256 trailer of torch files written by this library. A mismatch is a ValueError naming the file.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no weights file at {str(path)!r}")
    try:
        if path.suffix == ".safetensors":
            from safetensors import safe_open
            from safetensors.torch import load_file

            with safe_open(str(path), framework="pt") as handle:
                expected = (handle.metadata() or {}).get(CONTENT_HASH_KEY)
            state = load_file(str(path), device="cpu")
            if expected is not None and tensors_sha256(state) != expected:
                raise _Corrupt("the tensors do not match the hash stored in the file's metadata")
            return {k: v.to(map_location) for k, v in state.items()} if str(map_location) != "cpu" else state
        verified = verify_checksum_trailer(path)
        state = torch.load(path, map_location=map_location, weights_only=True)
        if isinstance(state, dict) and state.get("format") == CHECKPOINT_FORMAT:
            version = state.get("version")
            if not verified and isinstance(version, int) and version >= 2:
                raise _Corrupt("its SHA-256 record (which checkpoints of version 2 end with) is missing or broken")
    except _Corrupt as error:
        raise ValueError(f"{str(path)!r} is corrupt: {error} (a changed or damaged byte)") from None
    except ValueError as error:
        if str(path) in str(error):
            raise
        raise ValueError(
            f"could not read weights from {str(path)!r} (truncated, corrupt or not a weights file): {error}"
        ) from None
    except Exception as error:
        raise ValueError(
            f"could not read weights from {str(path)!r} (truncated, corrupt or not a weights file): {error}"
        ) from None
    if not isinstance(state, dict):
        raise ValueError(f"{str(path)!r} holds a {type(state).__name__}, expected a state dict")
    return state


class _Corrupt(Exception):
    pass


def unwrap_model(model: nn.Module) -> nn.Module:
    """Strip DDP / FSDP / torch.compile wrappers so saved keys carry no wrapper prefix."""
    while True:
        if hasattr(model, "module") and isinstance(model.module, nn.Module):
            model = model.module
        elif hasattr(model, "_orig_mod"):
            model = model._orig_mod
        else:
            return model


# ---------------------------------------------------------------------------------------------- config capture


class ConfigMixin(
    ModelHubMixin,
    library_name="phenaki-pytorch",
    tags=["phenaki-pytorch", "text-to-video"],
    model_card_template=MODEL_CARD_TEMPLATE,
):
    """Records constructor arguments of the outermost `__init__` call in `self.config`; saves and loads folders
    and Hugging Face Hub repos.

    Built on `huggingface_hub.ModelHubMixin`, which gives `push_to_hub`, the model card and its metadata. The
    mixin's own config capture and file writing are replaced: it records only JSON-able arguments (a nested
    CViViT or MaskGit, or a callable text encoder, would be dropped silently), and it rewrites config.json and
    the weights in place one after the other. Here nested models are nested configs, arguments that cannot be
    stored are marked so that loading asks for them, and the folder keeps the guarantees of the module docstring.
    """

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        _REGISTRY[_class_path(cls)] = cls
        if "__init__" not in cls.__dict__:
            return
        original_init = cls.__init__
        signature = inspect.signature(original_init)

        @functools.wraps(original_init)
        def init(self, *args, **kw):
            depth = self.__dict__.get("_config_depth", 0)
            self.__dict__["_config_depth"] = depth + 1
            try:
                original_init(self, *args, **kw)
            finally:
                self.__dict__["_config_depth"] = depth
            if depth == 0:
                bound = signature.bind(self, *args, **kw)
                bound.apply_defaults()
                arguments = dict(bound.arguments)
                arguments.pop("self")
                for name, param in signature.parameters.items():
                    if param.kind is inspect.Parameter.VAR_KEYWORD:
                        arguments.update(arguments.pop(name, {}))
                self.__dict__["_init_kwargs"] = arguments

        cls.__init__ = init

    @property
    def config(self) -> dict:
        """JSON-ready constructor arguments; nested models appear as nested configs."""
        return {name: _to_json(value, name) for name, value in self.__dict__.get("_init_kwargs", {}).items()}

    def save_pretrained(
        self,
        directory: str | Path,
        *,
        config: dict | None = None,
        allow_nonfinite: bool = False,
        model_card_kwargs: dict | None = None,
        push_to_hub: bool = False,
        repo_id: str | None = None,
        **push_to_hub_kwargs,
    ) -> Path:
        """Write `config.json`, `model.safetensors` and a model card (`README.md`) to `directory`; returns it.

        The config and the weights are replaced as a pair (see the module docstring); an existing README.md
        is kept (it may have been edited). `config` replaces the recorded constructor arguments. Weights
        holding NaN or inf are refused with a ValueError (the folder is left as it was) unless
        `allow_nonfinite=True`. With `push_to_hub=True` the model is then uploaded to `repo_id` (default:
        the folder's name) by `push_to_hub`, whose keywords `push_to_hub_kwargs` are.
        """
        if config is not None and not isinstance(config, dict):
            raise TypeError(f"config must be a dict of constructor arguments or None, got {type(config).__name__}")
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        state = _cpu_state(unwrap_model(self).state_dict())  # type: ignore[arg-type]
        if not allow_nonfinite:
            _check_finite(state, f"{type(self).__name__} weights to {str(directory)!r}")
        payload = _config_payload(self, config)
        card = str(self.generate_model_card(**(model_card_kwargs or {})))
        with directory_lock(directory):
            _remove_temporaries(directory)
            weights_tmp, digest = _write_safetensors_temporary(state, directory / WEIGHTS_NAME, None)
            try:
                payload["weights"] = {"file": WEIGHTS_NAME, "sha256": digest, "num_tensors": len(state)}
                payload["config_sha256"] = _payload_digest(payload)
                config_tmp = _write_text_temporary(directory / CONFIG_NAME, json.dumps(payload, indent=2))
            except BaseException:
                weights_tmp.unlink(missing_ok=True)
                raise
            # the weights first, the config last: the config is the commit (see the module docstring)
            try:
                os.replace(weights_tmp, directory / WEIGHTS_NAME)
            except BaseException:
                weights_tmp.unlink(missing_ok=True)
                config_tmp.unlink(missing_ok=True)
                raise
            _commit(config_tmp, directory / CONFIG_NAME)
            if not (directory / MODEL_CARD_NAME).exists():
                _commit(_write_text_temporary(directory / MODEL_CARD_NAME, card), directory / MODEL_CARD_NAME)
        if push_to_hub:
            self.push_to_hub(
                repo_id or directory.name, config=config, model_card_kwargs=model_card_kwargs, **push_to_hub_kwargs
            )
        return directory

    @classmethod
    def from_pretrained(
        cls,
        pretrained_model_name_or_path: str | Path,
        map_location: str | torch.device = "cpu",
        *,
        revision: str | None = None,
        cache_dir: str | Path | None = None,
        force_download: bool = False,
        local_files_only: bool = False,
        token: str | bool | None = None,
        **overrides,
    ):
        """Rebuild a model saved by `save_pretrained`, from a local folder or a Hugging Face Hub id.

        A Hub id ("user/name") is fetched with `huggingface_hub.snapshot_download` (only config.json and
        model.safetensors; `revision`, `cache_dir`, `force_download`, `local_files_only`, `token` go to it; with
        `HF_HUB_OFFLINE=1` it is read from the local cache). Keyword `overrides` replace stored constructor
        arguments. Every problem with the files (unreadable or foreign config, a config that does not match the
        weights, corrupt files, a class other than `cls`) is a ValueError naming the file and what is wrong; a
        folder or id that cannot be found is a FileNotFoundError.
        """
        directory = _resolve_pretrained(
            pretrained_model_name_or_path,
            revision=revision,
            cache_dir=cache_dir,
            force_download=force_download,
            local_files_only=local_files_only,
            token=token,
        )
        return _load_pretrained(cls, directory, map_location, overrides)

    def push_to_hub(self, repo_id: str, *, model_card_kwargs: dict | None = None, **kwargs) -> str:
        """Upload this model (config.json, model.safetensors, README.md) to the Hub repo `repo_id` in one commit.

        `huggingface_hub.ModelHubMixin.push_to_hub`: creates the repo when needed, saves with `save_pretrained`
        into a temporary folder and uploads it; `kwargs` (`private`, `token`, `branch`, `commit_message`,
        `create_pr`, ...) go to it. Returns the commit's URL.
        """
        card_kwargs = {"repo_id": repo_id, **(model_card_kwargs or {})}
        return super().push_to_hub(repo_id, model_card_kwargs=card_kwargs, **kwargs)

    def generate_model_card(self, *args, **kwargs):
        """The model card written beside the weights: how to load the model, and what to pass again."""
        config = self.config
        unserializable = sorted(k for k, v in config.items() if isinstance(v, dict) and "__unserializable__" in v)
        kwargs.setdefault("model_class", type(self).__name__)
        kwargs.setdefault("repo_id", None)
        kwargs.setdefault("pass_again", ", ".join(f"{name}=..." for name in unserializable))
        return super().generate_model_card(*args, **kwargs)


def _looks_like_repo_id(name: str) -> bool:
    return bool(_REPO_ID.match(name)) and ".." not in name and not name.startswith((".", "~"))


def _resolve_pretrained(name: str | Path, **hub_kwargs) -> Path:
    """A local save_pretrained folder, or the cached snapshot of a Hub repo (downloaded when allowed)."""
    path = Path(name).expanduser()
    if path.is_dir():
        return path
    if path.exists():
        raise FileNotFoundError(f"{str(name)!r} is a file: expected a save_pretrained folder or a Hugging Face Hub id")
    if isinstance(name, Path) or not _looks_like_repo_id(name):
        raise FileNotFoundError(f"no folder {str(name)!r} (and it is not a Hugging Face Hub id such as 'user/model')")
    from huggingface_hub import snapshot_download

    try:
        snapshot = snapshot_download(repo_id=name, allow_patterns=[CONFIG_NAME, WEIGHTS_NAME], **hub_kwargs)
    except Exception as error:  # offline and not cached, no such repo, no access, network failure, bad id
        reason = (str(error).strip().splitlines() or [""])[0]
        raise FileNotFoundError(
            f"{name!r} is neither a local folder nor a Hugging Face Hub model that could be fetched "
            f"({type(error).__name__}: {reason})"
        ) from None
    return Path(snapshot)


def _load_pretrained(cls: type, directory: Path, map_location, overrides: Mapping) -> nn.Module:
    config_path = directory / CONFIG_NAME
    if not config_path.is_file():
        raise FileNotFoundError(f"no {CONFIG_NAME} in {str(directory)!r}: not a save_pretrained directory")

    def files() -> tuple:
        return _stat_key(config_path), _stat_key(directory / WEIGHTS_NAME)

    for _ in range(5):  # retries matter only where the lock is unavailable (no flock)
        with directory_lock(directory, shared=True):  # writers hold it exclusively while they save
            before = files()
            try:
                payload, used_config = _read_verified_pair(directory)
                weights_path = directory / _weights_name(payload, used_config)
                model = _build_and_load(cls, payload, used_config, weights_path, overrides)
            except ValueError:
                if files() != before:
                    continue  # another process saved to the folder while we read it: read the new pair
                raise
            if files() == before:
                return model.to(map_location)
    raise ValueError(f"{str(directory)!r} kept changing while it was read (another process saving to it?)")


def _config_payload(model: ConfigMixin, config: dict | None = None) -> dict:
    return {
        "class": type(model).__name__,
        "class_path": _class_path(type(model)),
        "format_version": FORMAT_VERSION,
        "library": "phenaki_pytorch",
        "config": model.config if config is None else config,
    }


def _canonical(payload: Mapping) -> bytes:
    return json.dumps(payload, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode()


def _payload_digest(payload: Mapping) -> str:
    return hashlib.sha256(_canonical({k: v for k, v in payload.items() if k != "config_sha256"})).hexdigest()


def _stat_key(path: Path) -> tuple | None:
    try:
        stat = path.stat()
    except OSError:
        return None
    return stat.st_ino, stat.st_size, stat.st_mtime_ns


def _remove_temporaries(directory: Path) -> None:
    # called under the folder lock: no other save_pretrained is writing, so these are left from killed saves
    for name in (CONFIG_NAME, WEIGHTS_NAME, MODEL_CARD_NAME):
        for path in directory.glob(f"{TMP_PREFIX}{name}.*"):
            path.unlink(missing_ok=True)


def _read_config(path: Path) -> dict:
    """Parse and validate a config.json; every problem is a ValueError naming the path."""
    where = repr(str(path))
    try:
        size = path.stat().st_size
        if size > MAX_CONFIG_BYTES:
            raise ValueError(f"{where} is {size} bytes, too large for a model config (at most {MAX_CONFIG_BYTES})")
        raw = path.read_bytes()
    except OSError as error:
        raise ValueError(f"could not read {where}: {error}") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as error:
        raise ValueError(
            f"{where} is not UTF-8 text (bad byte at offset {error.start}): corrupt, or not a config.json "
            "written by save_pretrained"
        ) from None
    try:
        payload = json.loads(text)
    except (json.JSONDecodeError, RecursionError) as error:
        raise ValueError(f"{where} is not valid JSON: {error}") from None
    if not isinstance(payload, dict):
        raise ValueError(
            f"{where} holds a JSON {type(payload).__name__}, expected an object with 'class' and 'config' "
            "(as written by save_pretrained)"
        )
    missing = [key for key in ("class", "config") if key not in payload]
    if missing:
        raise ValueError(
            f"{where} lacks {' and '.join(repr(k) for k in missing)}: not a config written by save_pretrained "
            f"(its keys are {sorted(payload)[:10]})"
        )
    if not isinstance(payload["config"], dict) or not isinstance(payload["class"], str):
        raise ValueError(f"{where}: 'class' must be a string and 'config' an object")
    version = payload.get("format_version", 1)
    if not isinstance(version, int) or isinstance(version, bool) or version > FORMAT_VERSION:
        raise ValueError(
            f"{where} has format_version {version!r}; this phenaki_pytorch reads versions up to {FORMAT_VERSION} "
            "(upgrade phenaki_pytorch)"
        )
    stored = payload.get("config_sha256")
    if stored is not None and stored != _payload_digest(payload):
        raise ValueError(
            f"{where} does not match its own checksum: the file is corrupt or was edited after saving (if you "
            "edited it on purpose, delete its 'config_sha256' entry)"
        )
    if version >= 2 and stored is None:
        raise ValueError(f"{where} (format_version {version}) lacks its 'config_sha256': the file is damaged")
    return payload


def _weights_name(payload: Mapping, config_path: Path) -> str:
    name = (payload.get("weights") or {}).get("file", WEIGHTS_NAME)
    if not isinstance(name, str) or Path(name).name != name or name in ("", ".", ".."):
        raise ValueError(f"{str(config_path)!r} names the weights file {name!r}; expected a plain file name")
    return name


def _read_verified_pair(directory: Path) -> tuple[dict, Path]:
    """The config of `directory` whose recorded weights hash matches the weights file (see the docstring)."""
    config_path = directory / CONFIG_NAME
    payload = _read_config(config_path)
    expected = (payload.get("weights") or {}).get("sha256")
    weights_path = directory / _weights_name(payload, config_path)
    if not weights_path.is_file():
        raise FileNotFoundError(f"no weights file {str(weights_path)!r} beside {str(config_path)!r}")
    if expected is None:  # format version 1: nothing recorded to check against
        return payload, config_path
    actual = file_sha256(weights_path)
    if actual == expected:
        return payload, config_path
    # a save killed between its two renames leaves its complete config pending beside the new weights
    for candidate in sorted(directory.glob(f"{TMP_PREFIX}{CONFIG_NAME}.*")):
        try:
            pending = _read_config(candidate)
        except ValueError:
            continue
        if (pending.get("weights") or {}).get("sha256") == actual:
            warnings.warn(
                f"{str(directory)!r}: a save was interrupted after writing its weights; loading them with the "
                f"config it left in {candidate.name!r}",
                RuntimeWarning,
                stacklevel=3,
            )
            return pending, candidate
    raise ValueError(
        f"{str(weights_path)!r} does not match {str(config_path)!r}: the weights' SHA-256 is {actual[:16]}..., the "
        f"config expects {expected[:16]}...; the weights file is corrupt or comes from another save"
    )


def _safetensors_shapes(path: Path) -> dict[str, tuple[int, ...]]:
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as handle:
            return {name: tuple(handle.get_slice(name).get_shape()) for name in handle.keys()}
    except Exception as error:
        raise ValueError(f"could not read {str(path)!r} (truncated, corrupt or not safetensors): {error}") from None


@contextlib.contextmanager
def _bounded_construction(max_tensors: int, where: str) -> Iterator[None]:
    """Stop a model constructor (this thread only) once it has registered more than `max_tensors` tensors."""
    from torch.nn.modules import module as module_registry

    thread, count = threading.get_ident(), [0]

    def hook(module, name, value):
        if threading.get_ident() == thread:
            count[0] += 1
            if count[0] > max_tensors:
                raise _TooLarge(f"{where} builds more than {max_tensors} parameters and buffers")

    handles = [
        module_registry.register_module_parameter_registration_hook(hook),
        module_registry.register_module_buffer_registration_hook(hook),
    ]
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()


class _TooLarge(Exception):
    pass


def _upgraded_config(target: type, config: Mapping) -> dict:
    """A class may translate configs written by older versions of itself (`upgrade_config`)."""
    upgrade = getattr(target, "upgrade_config", None)
    return upgrade(dict(config)) if callable(upgrade) else dict(config)


def _upgraded_shapes(shapes: dict) -> dict:
    """Tensor names of older formats, renamed by every registered class that renamed its tensors
    (`upgrade_state_shapes`), so that nested models (a Phenaki holding a CViViT) are upgraded too."""
    for cls in set(_REGISTRY.values()):
        upgrade = getattr(cls, "upgrade_state_shapes", None)
        if callable(upgrade):
            shapes = upgrade(shapes)
    return shapes


def _build(target: type, payload: Mapping, overrides: Mapping, where: str) -> nn.Module:
    config = _upgraded_config(target, payload["config"])
    try:
        kwargs = {name: _from_json(value, where) for name, value in config.items() if name not in overrides}
        kwargs.update(overrides)
        return target(**kwargs)
    except (_TooLarge, ValueError, TypeError, RuntimeError, OverflowError, MemoryError, RecursionError) as error:
        raise ValueError(f"{where}: the stored config does not build a {target.__name__}: {error}") from None


def _build_and_load(cls: type, payload: Mapping, config_path: Path, weights_path: Path, overrides: Mapping):
    where = repr(str(config_path))
    target = _resolve_class(payload.get("class_path"), payload["class"], cls, where)
    shapes = _upgraded_shapes(_safetensors_shapes(weights_path))

    # the same constructor on the meta device: shapes without memory, checked against the weights' header
    with _bounded_construction(2 * len(shapes) + 4096, where), torch.device("meta"):
        skeleton = _build(target, payload, overrides, where)
    expected = {name: tuple(tensor.shape) for name, tensor in skeleton.state_dict().items()}
    del skeleton
    missing = sorted(set(expected) - set(shapes))
    unexpected = sorted(set(shapes) - set(expected))
    differ = [
        f"{k} (config {expected[k]}, weights {shapes[k]})"
        for k in sorted(expected)
        if k in shapes and expected[k] != shapes[k]
    ]
    if missing or unexpected or differ:
        problems = []
        if differ:
            problems.append(f"{len(differ)} shape(s) differ: {_describe(differ, 3)}")
        if missing:
            problems.append(f"{len(missing)} tensor(s) missing from the weights: {_describe(missing, 3)}")
        if unexpected:
            problems.append(f"{len(unexpected)} tensor(s) the model does not have: {_describe(unexpected, 3)}")
        raise ValueError(f"{where} does not match {str(weights_path)!r}: " + "; ".join(problems))

    from safetensors.torch import load_file

    model = _build(target, payload, overrides, where)
    try:
        state = load_file(str(weights_path), device="cpu")
        model.load_state_dict(state)
    except Exception as error:
        raise ValueError(f"could not load {str(weights_path)!r} into the {target.__name__}: {error}") from None
    return model


def _resolve_class(class_path: Any, name: Any, base: type, where: str) -> type:
    """The registered class a config names, which must be `base` or a subclass of it.

    `class_path` ("module.QualName") is exact. Configs of format version 1 carry a bare `name`: it resolves
    to `base` itself when the names agree, else to the one registered subclass of `base` with that name; two
    candidates are an error rather than a guess.
    """
    if class_path is not None:
        target = _REGISTRY.get(class_path) if isinstance(class_path, str) else None
        if target is None:
            raise ValueError(
                f"{where} was written by the class {class_path!r}, which is not loaded: import the module that "
                "defines it first (classes are looked up by module and name, never by name alone)"
            )
    elif base.__name__ == name:
        target = base
    else:
        candidates = [c for c in _REGISTRY.values() if c.__name__ == name and issubclass(c, base)]
        if len(candidates) != 1:
            found = "none is loaded" if not candidates else f"{len(candidates)} classes share that name"
            raise ValueError(f"{where} describes a {name!r}, not a {base.__name__}, and {found}")
        target = candidates[0]
    if not (isinstance(target, type) and issubclass(target, base)):
        raise ValueError(f"{where} describes a {name!r} ({class_path}), not a {base.__name__}")
    return target


def _to_json(value, name: str):
    if isinstance(value, ConfigMixin):
        return {"__model__": type(value).__name__, "class_path": _class_path(type(value)), "config": value.config}
    if isinstance(value, (list, tuple)):
        return [_to_json(v, name) for v in value]
    if isinstance(value, dict):
        return {str(k): _to_json(v, name) for k, v in value.items()}
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, torch.dtype):
        return str(value)
    # modules and callables cannot be rebuilt from a file: the caller passes them again as overrides
    return {"__unserializable__": type(value).__name__, "argument": name}


def _from_json(value, where: str = "the config"):
    if isinstance(value, dict) and "__model__" in value:
        if not isinstance(value.get("config"), dict):
            raise ValueError(f"{where}: the nested model {value['__model__']!r} has no 'config' object")
        target = _resolve_class(value.get("class_path"), value["__model__"], ConfigMixin, where)
        config = _upgraded_config(target, value["config"])
        return target(**{name: _from_json(v, where) for name, v in config.items()})
    if isinstance(value, dict) and "__unserializable__" in value:
        raise ValueError(
            f"argument {value['argument']!r} was a {value['__unserializable__']} that cannot be stored in a config; "
            f"pass it again: from_pretrained(path, {value['argument']}=...)"
        )
    if isinstance(value, list):
        return [_from_json(v, where) for v in value]
    if isinstance(value, dict):
        return {k: _from_json(v, where) for k, v in value.items()}
    return value
