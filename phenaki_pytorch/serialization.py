"""Config capture, `save_pretrained` / `from_pretrained`, and safe weight loading.

Every model records the keyword arguments it was built with. `save_pretrained(dir)`
writes them as `config.json` beside `model.safetensors`, so `from_pretrained(dir)`
rebuilds the model without its constructor arguments. Nested models (a Phenaki
holding a CViViT and a MaskGit) are stored as nested configs.
"""

from __future__ import annotations

import functools
import inspect
import json
from pathlib import Path

import torch
from torch import Tensor, nn

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
FORMAT_VERSION = 1

_REGISTRY: dict[str, type] = {}


class ConfigMixin:
    """Records constructor arguments of the outermost `__init__` call in `self.config`."""

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        _REGISTRY[cls.__name__] = cls
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

    def save_pretrained(self, directory: str | Path) -> Path:
        from safetensors.torch import save_file

        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        payload = {"class": type(self).__name__, "format_version": FORMAT_VERSION, "config": self.config}
        _atomic_write_text(directory / CONFIG_NAME, json.dumps(payload, indent=2))
        state = {k: v.detach().cpu().clone().contiguous() for k, v in self.state_dict().items()}
        tmp = directory / (WEIGHTS_NAME + ".tmp")
        save_file(state, str(tmp))
        tmp.replace(directory / WEIGHTS_NAME)
        return directory

    @classmethod
    def from_pretrained(cls, directory: str | Path, map_location: str | torch.device = "cpu", **overrides):
        directory = Path(directory)
        config_path = directory / CONFIG_NAME
        if not config_path.is_file():
            raise FileNotFoundError(f"no {CONFIG_NAME} in {str(directory)!r}: not a save_pretrained directory")
        try:
            payload = json.loads(config_path.read_text())
        except json.JSONDecodeError as error:
            raise ValueError(f"{config_path} is not valid JSON: {error}") from None
        target = _REGISTRY.get(payload.get("class"))
        if target is None or not issubclass(target, cls):
            raise ValueError(f"{config_path} describes a {payload.get('class')!r}, not a {cls.__name__}")
        config = {**payload["config"], **overrides}
        model = target(**{name: _from_json(value) for name, value in config.items()})
        model.load_state_dict(load_state_dict_file(directory / WEIGHTS_NAME, map_location=map_location))
        return model.to(map_location)


def _to_json(value, name: str):
    if isinstance(value, ConfigMixin):
        return {"__model__": type(value).__name__, "config": value.config}
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


def _from_json(value):
    if isinstance(value, dict) and "__model__" in value:
        target = _REGISTRY.get(value["__model__"])
        if target is None:
            raise ValueError(f"unknown model class {value['__model__']!r} in config")
        return target(**{name: _from_json(v) for name, v in value["config"].items()})
    if isinstance(value, dict) and "__unserializable__" in value:
        raise ValueError(
            f"argument {value['argument']!r} was a {value['__unserializable__']} that cannot be stored in a config; "
            f"pass it again: from_pretrained(path, {value['argument']}=...)"
        )
    if isinstance(value, list):
        return [_from_json(v) for v in value]
    if isinstance(value, dict):
        return {k: _from_json(v) for k, v in value.items()}
    return value


def _atomic_write_text(path: Path, text: str):
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    tmp.replace(path)


def load_state_dict_file(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Tensor]:
    """Read weights from .safetensors or a torch file, never executing code from it."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no weights file at {str(path)!r}")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            return load_file(str(path), device=str(map_location))
        state = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as error:
        raise ValueError(
            f"could not read weights from {str(path)!r} (truncated, corrupt or not a weights file): {error}"
        ) from None
    if not isinstance(state, dict):
        raise ValueError(f"{str(path)!r} holds a {type(state).__name__}, expected a state dict")
    return state


def unwrap_model(model: nn.Module) -> nn.Module:
    """Strip DDP / FSDP / torch.compile wrappers so saved keys carry no wrapper prefix."""
    while True:
        if hasattr(model, "module") and isinstance(model.module, nn.Module):
            model = model.module
        elif hasattr(model, "_orig_mod"):
            model = model._orig_mod
        else:
            return model
