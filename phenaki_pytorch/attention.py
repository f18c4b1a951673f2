"""Transformer building blocks shared by the tokenizer, MaskGit and the critics.

Shape legend used in comments:
    b  batch            n  query length       m  key/value length
    h  heads            d  head dimension     D  model dimension
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint


def exists(value) -> bool:
    return value is not None


def default(value, fallback):
    return value if exists(value) else fallback


class GEGLU(nn.Module):
    def forward(self, x: Tensor) -> Tensor:
        x, gate = x.chunk(2, dim=-1)
        return F.gelu(gate) * x


class FeedForward(nn.Module):
    """Pre-normed gated-GELU feed-forward."""

    def __init__(self, dim: int, mult: float = 4.0, dropout: float = 0.0):
        super().__init__()
        # 2/3 keeps the parameter count of a plain 4x MLP
        inner = int(dim * mult * 2 / 3)
        self.net = nn.Sequential(
            nn.LayerNorm(dim, bias=False),
            nn.Linear(dim, inner * 2, bias=False),
            GEGLU(),
            nn.Dropout(dropout) if dropout > 0 else nn.Identity(),
            nn.Linear(inner, dim, bias=False),
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)


class KVCache:
    """Self-attention keys and values of the positions seen so far, one entry per layer of a `Transformer`.

    For running a causal sequence through a Transformer in chunks: pass the same cache to every call
    (`transformer(chunk, kv_cache=cache)`), chunks in order, and each chunk's queries attend to the keys of all
    earlier chunks as well as their own. The caller supplies the attention bias or causal flag that covers the
    new queries against every cached key (n queries, m = `length` + n keys).

    `capacity` (optional) is the total length the cache will ever hold: the buffers are allocated once, at that
    size, and filled in place; without it every chunk concatenates (a copy of the whole cache per chunk).
    """

    def __init__(self, capacity: int | None = None):
        if capacity is not None and capacity < 1:
            raise ValueError(f"capacity must be a positive number of positions or None, got {capacity}")
        self.capacity = capacity
        self._layers: dict[int, list] = {}

    @property
    def length(self) -> int:
        """Positions held (the same in every layer once a chunk has passed through all of them)."""
        return max((entry[2] for entry in self._layers.values()), default=0)

    def extend(self, layer: int, k: Tensor, v: Tensor) -> tuple[Tensor, Tensor]:
        """Append k, v (b, h, n, d) to layer `layer`'s cache; returns all keys and values so far (b, h, m, d)."""
        entry = self._layers.get(layer)
        if self.capacity is None:
            if entry is not None:
                k, v = torch.cat((entry[0], k), dim=2), torch.cat((entry[1], v), dim=2)
            self._layers[layer] = [k, v, k.shape[2]]
            return k, v
        start = 0 if entry is None else entry[2]
        stop = start + k.shape[2]
        if stop > self.capacity:
            raise ValueError(f"KVCache(capacity={self.capacity}) cannot hold {stop} positions")
        if entry is None:
            shape = (*k.shape[:2], self.capacity, k.shape[3])
            entry = [k.new_empty(shape), v.new_empty(shape), 0]
            self._layers[layer] = entry
        entry[0][:, :, start:stop] = k
        entry[1][:, :, start:stop] = v
        entry[2] = stop
        return entry[0][:, :, :stop], entry[1][:, :, :stop]


class Attention(nn.Module):
    """Multi-head attention through `F.scaled_dot_product_attention`.

    Self-attention when `dim_context` is None, cross-attention otherwise. Queries
    and keys are layer-normalised per head (qk-norm, as in ViT-22B) for stable
    training; the norm runs on the contiguous (b, n, h, d) layout, where the fused
    kernel applies. `num_null_kv` learned key/value pairs are always attendable, so
    a sample whose context is empty or fully padded still has something to attend to.
    """

    def __init__(
        self,
        dim: int,
        *,
        dim_head: int = 64,
        heads: int = 8,
        dim_context: int | None = None,
        num_null_kv: int = 0,
        qk_norm: bool = True,
        dropout: float = 0.0,
    ):
        super().__init__()
        self.heads = heads
        self.dim_head = dim_head
        self.is_cross = exists(dim_context)
        inner = dim_head * heads

        self.norm = nn.LayerNorm(dim, bias=False)
        if self.is_cross:
            self.context_norm = nn.LayerNorm(dim_context, bias=False)
            self.to_q = nn.Linear(dim, inner, bias=False)
            self.to_kv = nn.Linear(dim_context, inner * 2, bias=False)
        else:
            self.to_qkv = nn.Linear(dim, inner * 3, bias=False)  # one matmul for q, k and v
        self.to_out = nn.Linear(inner, dim, bias=False)

        self.q_norm = nn.LayerNorm(dim_head, bias=False) if qk_norm else nn.Identity()
        self.k_norm = nn.LayerNorm(dim_head, bias=False) if qk_norm else nn.Identity()

        self.num_null_kv = num_null_kv
        self.null_kv = nn.Parameter(torch.randn(2, num_null_kv, heads, dim_head) * 0.02) if num_null_kv > 0 else None
        self.dropout = dropout

    def _split_heads(self, t: Tensor) -> Tensor:
        return t.unflatten(-1, (self.heads, self.dim_head))  # (b, n, h*d) -> (b, n, h, d), a view

    def _with_null_kv(self, k: Tensor, v: Tensor, mask: Tensor | None):
        """Prepend the learned null key/values (k, v in (b, m, h, d) layout)."""
        if self.num_null_kv == 0:
            return k, v, mask
        batch = k.shape[0]
        null_k, null_v = (t.to(k.dtype).unsqueeze(0).expand(batch, -1, -1, -1) for t in self.null_kv)
        # null keys are normalised like the rest so their logits live on the same scale
        k = torch.cat((self.k_norm(null_k), k), dim=1)
        v = torch.cat((null_v, v), dim=1)
        if exists(mask):
            mask = F.pad(mask, (self.num_null_kv, 0), value=True)
        return k, v, mask

    def project_kv(self, context: Tensor, mask: Tensor | None = None) -> tuple[Tensor, Tensor, Tensor | None]:
        """Cross-attention keys, values and key mask for `context` (b, m, dim_context), null kv included.

        Computed once per context and passed back as `kv=` on later calls (e.g. every
        MaskGIT decoding step). Returned k, v are (b, h, m, d).
        """
        if not self.is_cross:
            raise ValueError("project_kv is for cross-attention layers")
        k, v = self.to_kv(self.context_norm(context)).chunk(2, dim=-1)
        k, v, mask = self._with_null_kv(self.k_norm(self._split_heads(k)), self._split_heads(v), mask)
        return k.transpose(1, 2), v.transpose(1, 2), mask

    def forward(
        self,
        x: Tensor,
        *,
        context: Tensor | None = None,
        mask: Tensor | None = None,
        attn_bias: Tensor | None = None,
        is_causal: bool = False,
        kv: tuple[Tensor, Tensor, Tensor | None] | None = None,
        kv_cache: KVCache | None = None,
        layer_index: int = 0,
        rotary: Tensor | None = None,
    ) -> Tensor:
        """x (b, n, D); mask (b, m) bool, True = attend; attn_bias (h, n, m) or (b, h, n, m).
        `rotary` (self-attention only): the rotations of an `AxialRotary` for the n positions, applied to the
        normalised queries and keys.

        Self-attention with `kv_cache`: this call's keys/values are appended to entry `layer_index` of the
        cache and the queries attend to all of them (m = cached + n); `mask`/`attn_bias` then cover all m keys,
        and `is_causal` aligns the n queries with the last n keys.
        """
        normed = self.norm(x)
        if self.is_cross:
            q = self._split_heads(self.to_q(normed))
            if not exists(kv):
                if not exists(context):
                    raise ValueError("cross-attention needs `context` or precomputed `kv`")
                kv = self.project_kv(context, mask)
            k, v, mask = kv
        else:
            qkv = self.to_qkv(normed).unflatten(-1, (3 * self.heads, self.dim_head))  # (b, n, 3h, d)
            q, k, v = qkv.chunk(3, dim=-2)
            k = self.k_norm(k)
            if exists(rotary):
                if exists(kv_cache):
                    raise ValueError("rotary positions are not supported with a kv_cache")
                k = apply_rotary(k, rotary)
            if exists(kv_cache):
                # cached in (b, h, m, d) without the null key/values, which are prepended afresh below
                k, v = kv_cache.extend(layer_index, k.transpose(1, 2), v.transpose(1, 2))
                k, v = k.transpose(1, 2), v.transpose(1, 2)
            k, v, mask = self._with_null_kv(k, v, mask)
            k, v = k.transpose(1, 2), v.transpose(1, 2)
        q = self.q_norm(q)
        if exists(rotary) and not self.is_cross:
            q = apply_rotary(q, rotary)
        q = q.transpose(1, 2)  # (b, h, n, d)

        attn_mask = None
        if exists(attn_bias):
            attn_mask = attn_bias
            if self.num_null_kv > 0:
                attn_mask = F.pad(attn_mask, (self.num_null_kv, 0), value=0.0)
        if exists(mask):
            key_mask = rearrange(mask, "b m -> b 1 1 m")
            attn_mask = key_mask if attn_mask is None else attn_mask.masked_fill(~key_mask, float("-inf"))

        if is_causal and (exists(attn_mask) or q.shape[-2] != k.shape[-2]):
            # SDPA cannot combine is_causal with an explicit mask, and aligns it top-left when there are more keys
            # than queries (a cache): fold causality in, the n queries being the last n positions
            n, m = q.shape[-2], k.shape[-2]
            allowed = torch.ones(n, m, dtype=torch.bool, device=q.device).tril(m - n)
            if attn_mask is None:
                attn_mask = allowed
            elif attn_mask.dtype == torch.bool:
                attn_mask = attn_mask & allowed
            else:
                attn_mask = attn_mask.masked_fill(~allowed, float("-inf"))
            is_causal = False

        out = sdpa(q, k, v, attn_mask, dropout_p=self.dropout if self.training else 0.0, is_causal=is_causal)
        return self.to_out(rearrange(out, "b h n d -> b n (h d)"))


def sdpa(
    q: Tensor, k: Tensor, v: Tensor, attn_mask: Tensor | None, dropout_p: float = 0.0, is_causal: bool = False
) -> Tensor:
    """`F.scaled_dot_product_attention`, run in fp32 on CPU even under bf16 autocast.

    The projections around it stay in bf16. At the tokenizer's sequence lengths (5 and 64)
    bf16 SDPA on CPU gains nothing: its softmax runs slower in bf16, and a constant mask
    kept 4-D lets the fp32 flash kernel take it (a learned bias, which needs a gradient,
    goes to the math kernel). Measured in alternating processes: the tokenizer step is
    unchanged within noise, the small `sample()` 4% faster.
    """
    if q.device.type == "cpu" and torch.is_autocast_enabled("cpu"):
        if exists(attn_mask) and attn_mask.is_floating_point():
            attn_mask = attn_mask.float()
        if exists(attn_mask) and not attn_mask.requires_grad:
            attn_mask = attn_mask.reshape((1,) * (4 - attn_mask.ndim) + tuple(attn_mask.shape))
        with torch.autocast("cpu", enabled=False):
            return F.scaled_dot_product_attention(
                q.float(), k.float(), v.float(), attn_mask=attn_mask, dropout_p=dropout_p, is_causal=is_causal
            )
    if exists(attn_mask) and attn_mask.is_floating_point():
        attn_mask = attn_mask.to(q.dtype)
    return F.scaled_dot_product_attention(
        q, k.to(q.dtype), v.to(q.dtype), attn_mask=attn_mask, dropout_p=dropout_p, is_causal=is_causal
    )


class TransformerLayer(nn.Module):
    def __init__(
        self,
        dim: int,
        *,
        dim_head: int,
        heads: int,
        dim_context: int | None,
        num_null_kv: int,
        ff_mult: float,
        attn_dropout: float,
        ff_dropout: float,
        qk_norm: bool,
    ):
        super().__init__()
        self.self_attn = Attention(dim, dim_head=dim_head, heads=heads, qk_norm=qk_norm, dropout=attn_dropout)
        self.cross_attn = (
            Attention(
                dim,
                dim_head=dim_head,
                heads=heads,
                dim_context=dim_context,
                num_null_kv=num_null_kv,
                qk_norm=qk_norm,
                dropout=attn_dropout,
            )
            if exists(dim_context)
            else None
        )
        self.ff = FeedForward(dim, mult=ff_mult, dropout=ff_dropout)


class Transformer(nn.Module):
    """A stack of pre-norm (self-attention, optional cross-attention, feed-forward) layers.

    forward(x, attn_bias=, mask=, is_causal=, context=, context_mask=, context_kv=, kv_cache=):
        x             (b, n, D)
        attn_bias     (h, n, n) or (b, h, n, n) float bias for self-attention
        mask          (b, n) bool key padding mask for self-attention
        context       (b, m, dim_context) for cross-attention, with context_mask (b, m)
        context_kv    the output of `precompute_context_kv`, reused across calls
        kv_cache      a `KVCache`: run a causal sequence in chunks (see `KVCache`)
        rotary        an `AxialRotary`'s rotations for the n positions: rotary self-attention in every layer

    `gradient_checkpointing=True` (or `set_gradient_checkpointing(model)`): in a training forward with
    gradients on, each layer keeps only its input for the backward pass and runs again there
    (`torch.utils.checkpoint`, non-reentrant): the activations held for the backward become one tensor per
    layer instead of a few dozen, for about one more forward of compute. Dropout draws the same masks in the
    recomputation (the RNG state is restored), so gradients equal those without checkpointing. Eval mode and
    `torch.no_grad()` run the plain forward.
    """

    def __init__(
        self,
        dim: int,
        depth: int,
        *,
        dim_head: int = 64,
        heads: int = 8,
        dim_context: int | None = None,
        num_null_kv: int = 2,
        ff_mult: float = 4.0,
        attn_dropout: float = 0.0,
        ff_dropout: float = 0.0,
        qk_norm: bool = True,
        gradient_checkpointing: bool = False,
    ):
        super().__init__()
        self.has_cross_attn = exists(dim_context)
        self.gradient_checkpointing = gradient_checkpointing
        self.layers = nn.ModuleList(
            TransformerLayer(
                dim,
                dim_head=dim_head,
                heads=heads,
                dim_context=dim_context,
                num_null_kv=num_null_kv,
                ff_mult=ff_mult,
                attn_dropout=attn_dropout,
                ff_dropout=ff_dropout,
                qk_norm=qk_norm,
            )
            for _ in range(depth)
        )
        self.norm_out = nn.LayerNorm(dim, bias=False)

    def precompute_context_kv(self, context: Tensor, context_mask: Tensor | None = None) -> list:
        """Cross-attention keys/values of every layer for a fixed context."""
        if not self.has_cross_attn:
            raise ValueError("this Transformer has no cross-attention (dim_context was None)")
        return [layer.cross_attn.project_kv(context, context_mask) for layer in self.layers]

    def forward(
        self,
        x: Tensor,
        *,
        attn_bias: Tensor | None = None,
        mask: Tensor | None = None,
        is_causal: bool = False,
        context: Tensor | None = None,
        context_mask: Tensor | None = None,
        context_kv: list | None = None,
        kv_cache: KVCache | None = None,
        rotary: Tensor | None = None,
    ) -> Tensor:
        if self.has_cross_attn and not exists(context_kv):
            if not exists(context):
                raise ValueError("this Transformer cross-attends: pass `context` (b, m, dim_context) or `context_kv`")
            context_kv = self.precompute_context_kv(context, context_mask)

        x = self.run_layers(
            x, range(len(self.layers)), attn_bias=attn_bias, mask=mask, is_causal=is_causal,
            context_kv=context_kv, kv_cache=kv_cache, rotary=rotary,
        )
        return self.norm_out(x)

    def run_layers(
        self,
        x: Tensor,
        indices: range,
        *,
        attn_bias: Tensor | None = None,
        mask: Tensor | None = None,
        is_causal: bool = False,
        context_kv: list | None = None,
        kv_cache: KVCache | None = None,
        rotary: Tensor | None = None,
    ) -> Tensor:
        """Layers `indices` only, without the final norm: for callers that change the sequence between layers
        (MaskGit's hourglass). `context_kv` is the whole stack's, indexed by layer."""
        checkpointed = self.gradient_checkpointing and self.training and torch.is_grad_enabled()
        if checkpointed and exists(kv_cache):
            raise ValueError("kv_cache is for inference: it cannot be combined with gradient checkpointing in training")
        for index in indices:
            layer = self.layers[index]
            layer_kv = context_kv[index] if exists(layer.cross_attn) else None
            if checkpointed:
                # non-reentrant: gradients reach every tensor the layer uses (the precomputed context kv and a
                # learned attention bias included), and the RNG state is replayed so dropout masks match
                x = checkpoint(
                    _layer_forward, layer, x, mask, attn_bias, is_causal, layer_kv, None, index, rotary,
                    use_reentrant=False,
                )
            else:
                x = _layer_forward(layer, x, mask, attn_bias, is_causal, layer_kv, kv_cache, index, rotary)
        return x


def _layer_forward(
    layer: TransformerLayer,
    x: Tensor,
    mask: Tensor | None,
    attn_bias: Tensor | None,
    is_causal: bool,
    context_kv: tuple | None,
    kv_cache: KVCache | None = None,
    index: int = 0,
    rotary: Tensor | None = None,
) -> Tensor:
    x = x + layer.self_attn(
        x, mask=mask, attn_bias=attn_bias, is_causal=is_causal, kv_cache=kv_cache, layer_index=index, rotary=rotary
    )
    if exists(layer.cross_attn):
        x = x + layer.cross_attn(x, kv=context_kv)
    return x + layer.ff(x)


def set_gradient_checkpointing(module: nn.Module, enabled: bool = True) -> int:
    """Switch gradient checkpointing on (or off) for every `Transformer` inside `module`; returns how many.

    Works on any model of this library (CViViT, MaskGit, TokenCritic, SelfCritic, Phenaki) or a module holding
    them. Checkpointing trades compute for memory in training: see `Transformer`. Models whose constructor
    records a `gradient_checkpointing` argument (CViViT) get their saved config updated too, so
    `save_pretrained` writes the setting in force.
    """
    if not isinstance(module, nn.Module):
        raise TypeError(f"module must be a torch.nn.Module, got {type(module).__name__}")
    if not isinstance(enabled, bool):
        raise TypeError(f"enabled must be a bool, got {type(enabled).__name__}")
    count = 0
    for sub in module.modules():
        if isinstance(sub, Transformer):
            sub.gradient_checkpointing = enabled
            count += 1
        recorded = sub.__dict__.get("_init_kwargs")
        if isinstance(recorded, dict) and "gradient_checkpointing" in recorded:
            recorded["gradient_checkpointing"] = enabled
    return count


class AxialRotary(nn.Module):
    """Rotary position embedding (RoPE) over an N-d grid: the channel pairs of each head are split evenly
    between the grid's axes, and each axis rotates its pairs by the token's coordinate on that axis.

    The dot product of a rotated query and key then depends on their offset, not on where they are, so a
    pattern learned at one place of the grid (a glyph's outline, "the same token one frame later and one row
    down") applies everywhere. Frequencies run geometrically from 1 down to `1 / theta` radians per grid step
    on every axis; the default `theta=100` suits grids of tens of tokens per side. Channels (2i, 2i + 1) form
    pair i; pairs left over when `dim_head // 2` does not split evenly between the axes are not rotated.
    `forward(*coords)` takes the integer coordinates (n,) of every token, one tensor per axis, and returns the
    rotations as unit complex numbers (n, dim_head // 2) for `apply_rotary`; they depend only on the grid, so a
    caller can keep them per grid shape.
    """

    def __init__(self, dim_head: int, num_dims: int = 3, theta: float = 100.0):
        super().__init__()
        pairs = dim_head // 2 // num_dims
        if pairs < 1 or dim_head % 2:
            raise ValueError(
                f"rotary self-attention over {num_dims} axes needs an even dim_head >= {2 * num_dims}, got "
                f"dim_head={dim_head} (pass rotary=False for narrower heads)"
            )
        if not theta > 1:
            raise ValueError(f"rotary_theta must be > 1, got {theta}")
        self.num_dims = num_dims
        self.dim_head = dim_head
        self.rotated_dim = 2 * pairs * num_dims
        freqs = theta ** (-torch.arange(pairs, dtype=torch.float64) / pairs)
        self.register_buffer("freqs", freqs.float(), persistent=False)

    def forward(self, *coords: Tensor) -> Tensor:
        if len(coords) != self.num_dims:
            raise ValueError(f"expected {self.num_dims} coordinate tensors, got {len(coords)}")
        angles = torch.cat([c.to(self.freqs)[:, None] * self.freqs for c in coords], dim=-1)
        angles = F.pad(angles, (0, self.dim_head // 2 - angles.shape[-1]))  # leftover pairs: angle 0
        return torch.polar(torch.ones_like(angles), angles)


def apply_rotary(x: Tensor, rotary: Tensor) -> Tensor:
    """Rotate each channel pair (2i, 2i + 1) of x (b, n, h, d) by `rotary` (n, d // 2), unit complex numbers from
    `AxialRotary`; one complex multiply, in fp32, returned in x's dtype."""
    pairs = torch.view_as_complex(x.float().unflatten(-1, (-1, 2)))  # (b, n, h, d/2)
    return torch.view_as_real(pairs * rotary[:, None, :]).flatten(-2).to(x.dtype)


class ContinuousPositionBias(nn.Module):
    """Attention bias from an MLP over relative positions on an N-d grid (Swin v2 style).

    The relative offsets are log-scaled so the MLP extrapolates to grids larger
    than those seen in training. The offset tables are cached per grid shape;
    only the small MLP over the (2H-1)(2W-1) distinct offsets runs per forward.
    """

    def __init__(self, dim: int, heads: int, num_dims: int = 2, layers: int = 2):
        super().__init__()
        self.num_dims = num_dims
        mlp: list[nn.Module] = [nn.Linear(num_dims, dim), nn.SiLU()]
        for _ in range(layers - 1):
            mlp += [nn.Linear(dim, dim), nn.SiLU()]
        mlp.append(nn.Linear(dim, heads))
        self.mlp = nn.Sequential(*mlp)
        self._cache: dict = {}

    def _tables(self, shape: tuple[int, ...], device: torch.device) -> tuple[Tensor, Tensor]:
        key = (shape, str(device))
        if key not in self._cache:
            grid = torch.stack(torch.meshgrid(*(torch.arange(s, device=device) for s in shape), indexing="ij"), dim=-1)
            grid = grid.reshape(-1, len(shape))  # (n, dims)
            offsets_range = [torch.arange(-s + 1, s, device=device) for s in shape]
            offsets = torch.stack(torch.meshgrid(*offsets_range, indexing="ij"), dim=-1).reshape(-1, len(shape))
            offsets = torch.sign(offsets) * torch.log1p(offsets.abs())  # log-spaced distances
            rel = grid[:, None, :] - grid[None, :, :] + torch.tensor([s - 1 for s in shape], device=device)
            strides = [math.prod(2 * s - 1 for s in shape[i + 1 :]) for i in range(len(shape))]
            index = (rel * torch.tensor(strides, device=device)).sum(-1)  # (n, n) into offsets
            self._cache[key] = (offsets.float(), index)
        return self._cache[key]

    def forward(self, *shape: int, device: torch.device | None = None) -> Tensor:
        """Returns (heads, n, n) with n = prod(shape)."""
        if len(shape) != self.num_dims:
            raise ValueError(f"expected {self.num_dims} grid sizes, got {shape}")
        device = default(device, self.mlp[0].weight.device)
        offsets, index = self._tables(tuple(shape), device)
        bias = self.mlp(offsets.to(self.mlp[0].weight.dtype))  # (offsets, heads)
        return rearrange(bias[index], "i j h -> h i j")


class AlibiPositionBias(nn.Module):
    """Linear distance penalty per head (ALiBi); optionally causal. Fixed, so cached."""

    def __init__(self, heads: int, causal: bool = True):
        super().__init__()
        self.heads = heads
        self.causal = causal
        self.register_buffer("slopes", self._slopes(heads), persistent=False)
        self._cache: dict = {}

    @staticmethod
    def _slopes(heads: int) -> Tensor:
        def power_of_two(n):
            start = 2 ** (-(2 ** -(math.log2(n) - 3)))
            return [start * start**i for i in range(n)]

        if math.log2(heads).is_integer():
            slopes = power_of_two(heads)
        else:
            closest = 2 ** math.floor(math.log2(heads))
            slopes = power_of_two(closest) + power_of_two(2 * closest)[0::2][: heads - closest]
        return torch.tensor(slopes).view(heads, 1, 1)

    def forward(self, n: int, device: torch.device | None = None) -> Tensor:
        device = default(device, self.slopes.device)
        key = (n, str(device))
        if key not in self._cache:
            pos = torch.arange(n, device=device)
            dist = (pos[None, :] - pos[:, None]).abs().float()
            bias = -dist * self.slopes.to(device)
            if self.causal:
                future = pos[None, :] > pos[:, None]
                bias = bias.masked_fill(future, float("-inf"))
            self._cache[key] = bias
        return self._cache[key]

    def rows(self, start: int, stop: int, device: torch.device | None = None) -> Tensor:
        """Rows start..stop-1 of `forward(stop)`, (heads, stop - start, stop): the bias of positions start..stop-1
        against every position up to stop-1, for a sequence run in chunks with a `KVCache`. Not cached (one
        per chunk), and the same values as slicing the full table."""
        if not 0 <= start < stop:
            raise ValueError(f"rows needs 0 <= start < stop, got start={start}, stop={stop}")
        device = default(device, self.slopes.device)
        query = torch.arange(start, stop, device=device)
        key = torch.arange(stop, device=device)
        dist = (key[None, :] - query[:, None]).abs().float()
        bias = -dist * self.slopes.to(device)
        if self.causal:
            bias = bias.masked_fill(key[None, :] > query[:, None], float("-inf"))
        return bias
