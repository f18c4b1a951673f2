"""Local stand-ins that let phenaki-pytorch 0.5.0 run in the peer venv without the network.

`install()` is called by `peer_worker.py`, inside the peer venv's interpreter, before
`phenaki_pytorch` (0.5.0) is imported (`compare_peer.py` only borrows `text_table`, so
both sides get the same text embeddings):

- `torchvision`: the PyPI torchvision wheel that pip resolves beside the local CPU torch
  fails at import (`operator torchvision::nms does not exist`), and 0.5.0 imports it at
  package import time (VGG16 in `cvivit.py`, transforms/utils in the trainers and data
  modules). The benchmark runs C-ViViT with `use_vgg_and_gan=False`, so nothing from
  torchvision is ever called; the stub only has to satisfy the imports, and using
  anything from it raises.
- T5: 0.5.0 calls `get_encoded_dim(t5_name)` (downloads the T5 config) when
  `text_embed_dim` is not given, and `t5_encode_text` (downloads T5 itself) from
  `sample()` and from `forward(texts=...)`. The whole `phenaki_pytorch.t5` module is
  replaced before import (so `transformers` is never imported) by one whose helpers
  return a fixed random 768-dim table, the same kind of stand-in our benchmarks use.
- The network: `block_network()` makes any socket connection raise, so a missed download
  fails loudly instead of quietly timing a download.
"""

from __future__ import annotations

import importlib.machinery
import os
import socket
import sys
import types

T5_DIM = 768
TEXT_LEN = 16


class _Unavailable:
    """Placeholder for a torchvision object: importable, fails on use.

    Constructing one is allowed (0.5.0's data.py builds `T.ToTensor()` as a default
    argument at import time); using what was built raises. Anything under
    `torchvision.models` raises at once: that is where the VGG16 download would start.
    """

    def __init__(self, name: str, built: bool = False):
        self._name = name
        self._built = built

    def __call__(self, *args, **kwargs):
        if self._built or self._name.startswith("torchvision.models"):
            raise RuntimeError(f"torchvision is stubbed in the peer benchmark; {self._name} is not available")
        return _Unavailable(f"{self._name}()", built=True)

    def __getattr__(self, attr):
        if attr.startswith("__"):
            raise AttributeError(attr)
        return _Unavailable(f"{self._name}.{attr}", self._built)


class _StubModule(types.ModuleType):
    def __getattr__(self, attr):
        if attr.startswith("__"):
            raise AttributeError(attr)
        return _Unavailable(f"{self.__name__}.{attr}")


def install_torchvision_stub() -> None:
    names = ["torchvision", "torchvision.models", "torchvision.transforms", "torchvision.datasets", "torchvision.utils"]
    modules = {name: _StubModule(name) for name in names}
    for name, module in modules.items():
        module.__path__ = []  # a package, so `from torchvision.x import y` resolves through sys.modules
        module.__file__ = __file__
        module.__spec__ = importlib.machinery.ModuleSpec(name, None, is_package=True)
        sys.modules[name] = module
        if "." in name:
            parent, child = name.rsplit(".", 1)
            setattr(modules[parent], child, module)
    modules["torchvision"].__version__ = "0.0.0+benchmark-stub"


def block_network() -> None:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

    def refuse(self, address, *args, **kwargs):
        raise RuntimeError(f"network access attempted from the peer benchmark: {address!r}")

    socket.socket.connect = refuse
    socket.socket.connect_ex = refuse


def text_table(dim: int = T5_DIM, length: int = TEXT_LEN):
    """The fixed stand-in text embedding shared by both sides: randn(length, dim) from seed 0."""
    import torch

    return torch.randn(length, dim, generator=torch.Generator().manual_seed(0))


def install_t5_stub(dim: int = T5_DIM, length: int = TEXT_LEN) -> None:
    """Register a stand-in `phenaki_pytorch.t5` before 0.5.0 is imported.

    0.5.0's `phenaki_pytorch/phenaki_pytorch.py` does
    `from phenaki_pytorch.t5 import t5_encode_text, get_encoded_dim, DEFAULT_T5_NAME`;
    with this module in sys.modules the real one (and `transformers`) is never imported.
    Every text encodes to the same fixed random (length, dim) table.
    """
    table = text_table(dim, length)
    module = types.ModuleType("phenaki_pytorch.t5")
    module.__file__ = __file__
    module.DEFAULT_T5_NAME = "google/t5-v1_1-base"
    module.MAX_LENGTH = 256

    def get_encoded_dim(name):
        return dim

    def t5_encode_text(texts, name=None, output_device=None):
        if isinstance(texts, str):
            texts = [texts]
        embeds = table[None].expand(len(texts), -1, -1).clone()
        return embeds.to(output_device) if output_device is not None else embeds

    module.get_encoded_dim = get_encoded_dim
    module.t5_encode_text = t5_encode_text
    sys.modules["phenaki_pytorch.t5"] = module


def install(dim: int = T5_DIM, length: int = TEXT_LEN) -> None:
    """Everything the peer worker needs: call before importing phenaki_pytorch."""
    block_network()
    install_torchvision_stub()
    install_t5_stub(dim, length)
