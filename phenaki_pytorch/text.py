"""Frozen text encoders that turn captions into conditioning embeddings.

Every encoder maps a list of captions to ``(embeds, mask)``:

    embeds  (b, n, dim) float32, zero at padded positions
    mask    (b, n)      bool, True for real tokens, False for padding

``HFTextEncoder`` wraps a Hugging Face checkpoint (T5 by default, as in the Phenaki paper). It loads
lazily, keeps its weights out of the owning model's ``state_dict()`` / ``parameters()`` and caches
per-caption embeddings. ``CallableTextEncoder`` adapts any user function. ``get_text_encoder`` builds one
from a loose spec (name/path, encoder instance, callable or ``None``).
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor, nn

from .typecheck import typechecked

__all__ = [
    "DEFAULT_TEXT_ENCODER",
    "TextEncoder",
    "TextEncoderLoadError",
    "HFTextEncoder",
    "CallableTextEncoder",
    "get_text_encoder",
]

DEFAULT_TEXT_ENCODER = "google/t5-v1_1-base"  # 768-dim

Device = torch.device | str | int

# encoder-only classes for encoder-decoder families whose AutoModel would also build the decoder
_ENCODER_ONLY_CLASSES = {
    "t5": "T5EncoderModel",
    "mt5": "MT5EncoderModel",
    "umt5": "UMT5EncoderModel",
}

_ENCODE_CHUNK = 64  # captions per forward pass of the HF model


class TextEncoderLoadError(RuntimeError):
    """A text encoder checkpoint (tokenizer, config or weights) could not be loaded."""


def _describe(value: Any) -> str:
    text = repr(value)
    if len(text) > 60:
        text = text[:57] + "..."
    return f"{type(value).__name__} {text}"


def _check_texts(texts: Any) -> list[str]:
    """Validate ``texts`` (list or tuple of str, non-empty) with messages naming what came."""
    if isinstance(texts, str):
        raise TypeError(
            f"texts: expected a list of str (one caption per sample), got a single str {texts[:60]!r}; "
            "wrap it in a list: [caption]"
        )
    if not isinstance(texts, (list, tuple)):
        raise TypeError(f"texts: expected a list of str (one caption per sample), got {_describe(texts)}")
    if len(texts) == 0:
        raise ValueError("texts: expected a non-empty list of str, got an empty list")
    for index, text in enumerate(texts):
        if not isinstance(text, str):
            raise TypeError(f"texts: expected a list of str, but texts[{index}] is {_describe(text)}")
    return list(texts)


def _pad_embeds(pieces: list[Tensor], dim: int, device: torch.device | None) -> tuple[Tensor, Tensor]:
    """Stack variable-length ``(n_i, dim)`` pieces into zero-padded ``(b, n, dim)`` plus a ``(b, n)`` mask."""
    length = max(1, max(piece.shape[0] for piece in pieces))
    embeds = torch.zeros(len(pieces), length, dim, dtype=torch.float32)
    mask = torch.zeros(len(pieces), length, dtype=torch.bool)
    for row, piece in enumerate(pieces):
        embeds[row, : piece.shape[0]] = piece
        mask[row, : piece.shape[0]] = True
    if device is not None:
        embeds, mask = embeds.to(device), mask.to(device)
    return embeds, mask


class TextEncoder(nn.Module):
    """Base class for caption encoders.

    Subclasses implement ``dim`` and ``encode``. ``forward`` is ``encode``, so an encoder is also callable.
    """

    @property
    def dim(self) -> int:
        """Size of the last axis of the embeddings."""
        raise NotImplementedError

    def encode(self, texts: list[str], device: Device | None = None) -> tuple[Tensor, Tensor]:
        """Return ``(embeds (b, n, dim) float32, mask (b, n) bool)``; padded positions are zero / False."""
        raise NotImplementedError

    def forward(self, texts: list[str], device: Device | None = None) -> tuple[Tensor, Tensor]:
        return self.encode(texts, device=device)


class _HFState:
    """Holder for the (unregistered) tokenizer, model, config and cache of an ``HFTextEncoder``.

    Being a plain object it is invisible to ``nn.Module`` bookkeeping: no parameters, no ``state_dict``
    entries. ``copy.deepcopy`` (e.g. an EMA copy of the owning model) shares it instead of duplicating
    the frozen weights; pickling drops the loaded objects, which reload lazily.
    """

    def __init__(self, cache_size: int):
        self.tokenizer = None
        self.model = None
        self.config = None
        self.cache: OrderedDict[str, Tensor] = OrderedDict()
        self.cache_size = cache_size

    def __deepcopy__(self, memo: dict) -> _HFState:
        return self

    def __getstate__(self) -> dict:
        return {"cache_size": self.cache_size}

    def __setstate__(self, state: dict) -> None:
        self.__init__(state["cache_size"])


class HFTextEncoder(TextEncoder):
    """Frozen Hugging Face text encoder (T5 by default), loaded lazily.

    Args:
        name_or_path: hub id or local folder holding the tokenizer and model (same code path for both).
        max_length: captions are truncated to this many tokens.
        dim: embedding size, if known; saves loading the config just to answer ``.dim``. Checked against
            the model once it loads.
        cache_size: how many per-caption embeddings to keep (LRU, on CPU). ``0`` disables caching.

    Nothing is loaded at construction. The tokenizer and model load on the first ``encode``; the config
    loads when ``.dim`` is asked and ``dim`` was not given. For T5-family and other encoder-decoder
    checkpoints only the encoder is kept. The model is frozen (eval mode, ``requires_grad=False``, run
    under ``torch.no_grad``) and is not a registered submodule, so it is never part of the owning model's
    ``state_dict()`` / ``parameters()``. It runs on the device passed to ``encode``, or, when none is
    passed, on the device this module was last moved to with ``.to(...)``.
    """

    @typechecked
    def __init__(
        self,
        name_or_path: str = DEFAULT_TEXT_ENCODER,
        max_length: int = 256,
        dim: int | None = None,
        cache_size: int = 4096,
    ):
        super().__init__()
        if not name_or_path.strip():
            raise ValueError(f"name_or_path: expected a hub id or a local folder, got {name_or_path!r}")
        if max_length < 1:
            raise ValueError(f"max_length: expected a positive int, got {max_length}")
        if dim is not None and dim < 1:
            raise ValueError(f"dim: expected a positive int or None, got {dim}")
        if cache_size < 0:
            raise ValueError(f"cache_size: expected an int >= 0 (0 disables the cache), got {cache_size}")

        self.name_or_path = name_or_path
        self.max_length = max_length
        self._dim = dim
        self._state = _HFState(cache_size)
        # empty, non-persistent: follows .to(device) so encode knows where the owner lives, adds nothing
        # to state_dict()
        self.register_buffer("_device_anchor", torch.empty(0), persistent=False)

    def extra_repr(self) -> str:
        loaded = self._state.model is not None
        return f"{self.name_or_path!r}, max_length={self.max_length}, dim={self._dim}, loaded={loaded}"

    # ---- loading -------------------------------------------------------------------------------------

    def _load_error(self, what: str, error: Exception) -> TextEncoderLoadError:
        return TextEncoderLoadError(
            f"could not load the text encoder {what} from {self.name_or_path!r} "
            f"({type(error).__name__}: {error}). "
            "If the machine is offline or the name is wrong, pass a local folder holding the tokenizer and "
            "model (saved with save_pretrained) as the text encoder, or skip the text encoder entirely: "
            "set `text_embed_dim` and pass precomputed `text_embeds` (with a mask) instead of texts."
        )

    @property
    def config(self) -> Any:
        """The model config (loaded on first access, or taken from the model when that is loaded)."""
        state = self._state
        if state.config is None:
            if state.model is not None:
                state.config = state.model.config
            else:
                from transformers import AutoConfig

                try:
                    state.config = AutoConfig.from_pretrained(self.name_or_path)
                except Exception as error:
                    raise self._load_error("config", error) from error
        return state.config

    @staticmethod
    def _hidden_size(config: Any) -> int:
        for attribute in ("hidden_size", "d_model"):
            value = getattr(config, attribute, None)
            if isinstance(value, int):
                return value
        encoder_config = getattr(config, "encoder", None)
        if encoder_config is not None and encoder_config is not config:
            return HFTextEncoder._hidden_size(encoder_config)
        raise ValueError(
            f"cannot tell the hidden size of {type(config).__name__} (no hidden_size / d_model); "
            "pass dim= to HFTextEncoder"
        )

    @property
    def dim(self) -> int:
        if self._dim is None:
            self._dim = self._hidden_size(self.config)
        return self._dim

    @property
    def is_loaded(self) -> bool:
        return self._state.model is not None

    def _load(self) -> None:
        state = self._state
        if state.model is not None:
            return

        import transformers

        name = self.name_or_path
        try:
            tokenizer = transformers.AutoTokenizer.from_pretrained(name)
        except Exception as error:
            raise self._load_error("tokenizer", error) from error
        if tokenizer.pad_token is None:  # e.g. GPT-style tokenizers; padding is masked out anyway
            tokenizer.pad_token = tokenizer.eos_token or tokenizer.unk_token

        config = self.config
        # float32 weights: half-precision T5 overflows, and CPU half matmuls are slow or missing
        major = int(transformers.__version__.split(".")[0])
        dtype_kwargs = {"dtype": torch.float32} if major >= 5 else {"torch_dtype": torch.float32}
        try:
            encoder_class = _ENCODER_ONLY_CLASSES.get(getattr(config, "model_type", ""))
            if encoder_class is not None and hasattr(transformers, encoder_class):
                model = getattr(transformers, encoder_class).from_pretrained(name, **dtype_kwargs)
            elif getattr(config, "is_encoder_decoder", False):
                model = transformers.AutoModel.from_pretrained(name, **dtype_kwargs).get_encoder()
            else:
                model = transformers.AutoModel.from_pretrained(name, **dtype_kwargs)
        except Exception as error:
            raise self._load_error("model", error) from error

        model.eval()
        model.requires_grad_(False)

        hidden = self._hidden_size(model.config)
        if self._dim is not None and self._dim != hidden:
            raise ValueError(
                f"dim: HFTextEncoder was told dim={self._dim}, but {name!r} produces {hidden}-dim embeddings"
            )
        self._dim = hidden
        state.tokenizer, state.model = tokenizer, model

    # ---- cache ---------------------------------------------------------------------------------------

    @property
    def cache_size(self) -> int:
        return self._state.cache_size

    def cache_info(self) -> dict[str, int]:
        return {"size": len(self._state.cache), "max_size": self._state.cache_size}

    def clear_cache(self) -> None:
        self._state.cache.clear()

    def _cache_put(self, text: str, embed: Tensor) -> None:
        cache = self._state.cache
        if self._state.cache_size == 0:
            return
        cache[text] = embed
        cache.move_to_end(text)
        while len(cache) > self._state.cache_size:
            cache.popitem(last=False)

    # ---- encoding ------------------------------------------------------------------------------------

    def _default_device(self) -> torch.device:
        return self._device_anchor.device

    @torch.no_grad()
    def _encode_uncached(self, texts: list[str], device: torch.device) -> list[Tensor]:
        """Run the model on ``texts``; return one unpadded ``(n_i, dim)`` float32 CPU tensor per caption."""
        self._load()
        tokenizer, model = self._state.tokenizer, self._state.model
        if next(model.parameters()).device != device:
            model.to(device)

        pieces: list[Tensor] = []
        for start in range(0, len(texts), _ENCODE_CHUNK):
            chunk = texts[start : start + _ENCODE_CHUNK]
            tokens = tokenizer(chunk, padding=True, truncation=True, max_length=self.max_length, return_tensors="pt")
            input_ids = tokens["input_ids"].to(device)
            attention_mask = tokens["attention_mask"].to(device)
            hidden = model(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
            hidden = hidden.float().cpu()
            keep = attention_mask.bool().cpu()
            # boolean indexing works for left- and right-padding tokenizers alike; clone so each cached
            # piece owns its storage instead of pinning the whole batch
            pieces.extend(hidden[row][keep[row]].clone() for row in range(len(chunk)))
        return pieces

    def encode(self, texts: list[str], device: Device | None = None) -> tuple[Tensor, Tensor]:
        """Encode captions into ``(embeds (b, n, dim) float32, mask (b, n) bool)`` on ``device``.

        Captions seen before come from the cache; only new (distinct) captions run through the model.
        """
        texts = _check_texts(texts)
        device = torch.device(device) if device is not None else self._default_device()

        cache = self._state.cache
        found: dict[str, Tensor] = {}
        for text in texts:
            if text in cache and text not in found:
                found[text] = cache[text]
                cache.move_to_end(text)

        new = list(dict.fromkeys(text for text in texts if text not in found))
        if new:
            for text, piece in zip(new, self._encode_uncached(new, device)):
                found[text] = piece
                self._cache_put(text, piece)

        return _pad_embeds([found[text] for text in texts], self.dim, device)


class CallableTextEncoder(TextEncoder):
    """Adapts ``fn(texts) -> embeds (b, n, dim)`` or ``fn(texts) -> (embeds, mask)`` to ``TextEncoder``.

    The mask defaults to all True. Outputs are checked against ``dim``, cast to float32, zeroed where the
    mask is False and moved to ``device`` when one is given. ``fn`` is treated as a frozen black box: it
    runs under ``torch.no_grad`` and, if it is an ``nn.Module``, it is not registered as a submodule (its
    weights stay out of the owner's ``state_dict()``). Subclass ``TextEncoder`` for a trainable encoder.
    """

    @typechecked
    def __init__(self, fn: Callable, dim: int):
        super().__init__()
        if dim < 1:
            raise ValueError(f"dim: expected a positive int, got {dim}")
        self._fn = [fn]  # a list hides an nn.Module fn from submodule registration
        self._dim = dim

    @property
    def fn(self) -> Callable:
        return self._fn[0]

    @property
    def dim(self) -> int:
        return self._dim

    def extra_repr(self) -> str:
        return f"fn={getattr(self.fn, '__name__', type(self.fn).__name__)}, dim={self._dim}"

    def encode(self, texts: list[str], device: Device | None = None) -> tuple[Tensor, Tensor]:
        texts = _check_texts(texts)
        with torch.no_grad():
            out = self.fn(texts)

        name = f"text encoder callable {getattr(self.fn, '__name__', type(self.fn).__name__)}"
        if isinstance(out, tuple):
            if len(out) != 2:
                raise ValueError(f"{name}: expected embeds or (embeds, mask), got a {type(out).__name__} of {len(out)}")
            embeds, mask = out
        else:
            embeds, mask = out, None

        if not isinstance(embeds, Tensor):
            raise TypeError(f"{name}: expected embeds to be a Tensor, got {_describe(embeds)}")
        if embeds.ndim != 3 or embeds.shape[0] != len(texts) or embeds.shape[-1] != self._dim:
            raise ValueError(
                f"{name}: expected embeds of shape ({len(texts)}, n, {self._dim}) for {len(texts)} captions, "
                f"got {tuple(embeds.shape)}"
            )
        if mask is None:
            mask = torch.ones(embeds.shape[:2], dtype=torch.bool, device=embeds.device)
        elif not isinstance(mask, Tensor):
            raise TypeError(f"{name}: expected mask to be a Tensor or None, got {_describe(mask)}")
        elif tuple(mask.shape) != tuple(embeds.shape[:2]):
            raise ValueError(
                f"{name}: expected mask of shape {tuple(embeds.shape[:2])} to match embeds, got {tuple(mask.shape)}"
            )

        mask = mask.to(device=embeds.device, dtype=torch.bool)
        embeds = embeds.float().masked_fill(~mask.unsqueeze(-1), 0.0)
        if device is not None:
            embeds, mask = embeds.to(device), mask.to(device)
        return embeds, mask


def _word_vector(word: str, dim: int) -> Tensor:
    seed = int.from_bytes(hashlib.sha256(word.lower().encode("utf-8")).digest()[:8], "little") & ((1 << 63) - 1)
    return torch.randn(dim, generator=torch.Generator().manual_seed(seed))


@typechecked
def hashed_word_encoder(dim: int = 64) -> CallableTextEncoder:
    """An offline stand-in for a pretrained text encoder, for toy sets and tests: every word maps to a fixed
    random vector (seeded by the lower-cased word's SHA-256), one vector per word. No weights, no downloads,
    no notion of meaning: "crimson" is as far from "red" as from "left"."""
    if dim < 1:
        raise ValueError(f"dim: expected a positive int, got {dim}")

    def encode(texts: list[str]) -> tuple[Tensor, Tensor]:
        rows = [[_word_vector(word, dim) for word in (text.split() or [""])] for text in texts]
        length = max(len(row) for row in rows)
        embeds = torch.zeros(len(rows), length, dim)
        mask = torch.zeros(len(rows), length, dtype=torch.bool)
        for i, row in enumerate(rows):
            embeds[i, : len(row)] = torch.stack(row)
            mask[i, : len(row)] = True
        return embeds, mask

    encode.__name__ = f"hashed_word_encoder_{dim}"
    return CallableTextEncoder(encode, dim=dim)


@typechecked
def get_text_encoder(spec: str | TextEncoder | Callable | None, dim: int | None = None) -> TextEncoder | None:
    """Build a text encoder from a loose spec.

    - ``str``: hub id or local folder -> ``HFTextEncoder(spec, dim=dim)``
    - ``TextEncoder``: returned as is (``dim``, if given, must match its ``dim``)
    - callable: ``CallableTextEncoder(spec, dim)``; ``dim`` is required
    - ``None``: ``None`` (no text encoder; pass precomputed text embeddings instead)
    """
    if spec is None:
        return None
    if isinstance(spec, str):
        return HFTextEncoder(spec, dim=dim)
    if isinstance(spec, TextEncoder):
        if dim is not None and spec.dim != dim:
            raise ValueError(f"dim: got dim={dim}, but the given {type(spec).__name__} has dim={spec.dim}")
        return spec
    if dim is None:
        name = getattr(spec, "__name__", type(spec).__name__)
        raise ValueError(
            f"dim: a callable text encoder ({name}) needs the embedding size; "
            "call get_text_encoder(fn, dim=<size of the last axis of fn's output>)"
        )
    return CallableTextEncoder(spec, dim)
