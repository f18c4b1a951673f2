"""MaskGit, the Token Critic and the self-critic head.

All three are bidirectional transformers over flattened video tokens (b, n) with
n = t * h * w. Positions come from factorised (time, height, width) embeddings,
so primed and new frames, and clips of different lengths, share one scheme.
Text conditioning is cross-attention with learned null key/values: a sample whose
text is dropped (classifier-free guidance) attends only to the null keys.

Shape legend: b batch, n tokens, t/h/w token grid, m text length, d model dim.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor, nn

from .attention import AxialRotary, ContinuousPositionBias, Transformer, exists
from .serialization import ConfigMixin
from .typecheck import typechecked


class TokenTransformer(nn.Module):
    """Shared trunk: token + (t, h, w) position embeddings -> transformer -> hidden states."""

    def __init__(
        self,
        *,
        num_tokens: int,
        max_seq_len: int,
        dim: int,
        depth: int,
        dim_context: int | None,
        heads: int,
        dim_head: int,
        ff_mult: float,
        attn_dropout: float,
        ff_dropout: float,
        gradient_checkpointing: bool = False,
        rel_pos_bias: bool = False,
        rotary: bool = True,
        rotary_theta: float = 100.0,
        hourglass: int = 0,
    ):
        super().__init__()
        if num_tokens < 1 or max_seq_len < 1:
            raise ValueError(f"num_tokens and max_seq_len must be positive, got {num_tokens}, {max_seq_len}")
        self.num_tokens = num_tokens
        self.mask_id = num_tokens  # one extra embedding row for [MASK]
        self.max_seq_len = max_seq_len
        self.dim = dim
        self.dim_context = dim_context

        self.token_emb = nn.Embedding(num_tokens + 1, dim)
        self.pos_time = nn.Embedding(max_seq_len, dim)
        self.pos_height = nn.Embedding(max_seq_len, dim)
        self.pos_width = nn.Embedding(max_seq_len, dim)
        for emb in (self.token_emb, self.pos_time, self.pos_height, self.pos_width):
            nn.init.normal_(emb.weight, std=0.02)

        self.transformer = Transformer(
            dim,
            depth,
            dim_head=dim_head,
            heads=heads,
            dim_context=dim_context,
            ff_mult=ff_mult,
            attn_dropout=attn_dropout,
            ff_dropout=ff_dropout,
            gradient_checkpointing=gradient_checkpointing,
        )
        # an attention bias from the (t, h, w) offset between two tokens, shared by all layers: a locality prior the
        # absolute embeddings have to learn otherwise; it costs a (heads, n, n) tensor per forward
        self.rel_pos_bias = ContinuousPositionBias(dim=dim_head, heads=heads, num_dims=3) if rel_pos_bias else None
        self._bias_cache: tuple | None = None
        # rotary self-attention over the (t, h, w) grid: query-key scores that depend on the offset between two
        # tokens, so what is learned about a glyph at one place and time applies at every other
        self.rotary = AxialRotary(dim_head, num_dims=3, theta=rotary_theta) if rotary else None
        self._pos_cache: dict = {}
        self._rotary_cache: dict = {}

        # hourglass: the middle `hourglass` layers run on 2 x 2 blocks of tokens merged into one (a quarter of the
        # sequence); the layers before and after run at full resolution, and the middle's output is spread back
        # over the four tokens as a residual. `lengthen` starts at zero, so a new model is the outer layers alone
        if isinstance(hourglass, bool) or not 0 <= hourglass <= max(depth - 2, 0):
            raise ValueError(
                f"hourglass must be an int in [0, depth - 2] (at least one full-resolution layer before and after "
                f"the merged ones), got hourglass={hourglass!r} with depth={depth}"
            )
        if hourglass and rel_pos_bias:
            raise ValueError(
                f"hourglass={hourglass} cannot be combined with rel_pos_bias=True (its bias is over the full-resolution "
                f"grid): pass hourglass=0, or leave hourglass at its default, which is 0 with rel_pos_bias"
            )
        self.hourglass = hourglass
        pre = (depth - hourglass) // 2
        self._segments = (range(0, pre), range(pre, pre + hourglass), range(pre + hourglass, depth))
        if hourglass:
            self.shorten = nn.Linear(4 * dim, dim)
            self.lengthen = nn.Linear(dim, 4 * dim)
            nn.init.zeros_(self.lengthen.weight)
            nn.init.zeros_(self.lengthen.bias)

    @property
    def is_conditional(self) -> bool:
        return exists(self.dim_context)

    @staticmethod
    def _grid_shape(n: int, video_patch_shape: tuple[int, int] | None) -> tuple[int, int, int]:
        """(token frames, rows, columns) of a sequence of n tokens; without a patch shape, one row of n."""
        h, w = video_patch_shape if exists(video_patch_shape) else (1, n)
        if n % (h * w):
            raise ValueError(f"sequence of {n} tokens is not a whole number of {h}x{w} token frames")
        return n // (h * w), h, w

    def _grid_index(self, n: int, video_patch_shape: tuple[int, int] | None, device) -> tuple[Tensor, Tensor, Tensor]:
        _, h, w = self._grid_shape(n, video_patch_shape)
        key = (n, h, w, str(device))
        if key not in self._pos_cache:
            index = torch.arange(n, device=device)
            self._pos_cache[key] = (index // (h * w), (index // w) % h, index % w)
        return self._pos_cache[key]

    def check_ids(self, x: Tensor, allow_mask: bool = True):
        if not isinstance(x, Tensor) or x.is_floating_point() or x.ndim != 2:
            raise TypeError(
                f"token ids must be an integer tensor (batch, seq_len), got "
                f"{getattr(x, 'dtype', type(x).__name__)} {tuple(getattr(x, 'shape', ()))}"
            )
        if x.shape[1] > self.max_seq_len:
            raise ValueError(f"sequence of {x.shape[1]} tokens exceeds max_seq_len={self.max_seq_len}")
        upper = self.num_tokens + (1 if allow_mask else 0)
        if x.numel() and (x.min() < 0 or x.max() >= upper):
            raise ValueError(
                f"token ids must lie in [0, {upper}) (num_tokens={self.num_tokens}"
                f"{', plus the mask id' if allow_mask else ''}), got values in [{int(x.min())}, {int(x.max())}]"
            )

    def context_kv(self, text_embeds: Tensor, text_mask: Tensor | None = None) -> list:
        """Cross-attention keys/values for fixed text: compute once, reuse every decoding step."""
        if not self.is_conditional:
            raise ValueError("this model is unconditional: it takes no text")
        if text_embeds.ndim != 3 or text_embeds.shape[-1] != self.dim_context:
            raise ValueError(
                f"text_embeds must be (batch, length, {self.dim_context}), got {tuple(text_embeds.shape)}"
            )
        return self.transformer.precompute_context_kv(text_embeds, text_mask)

    def embed(
        self,
        x: Tensor,
        *,
        text_embeds: Tensor | None = None,
        text_mask: Tensor | None = None,
        context_kv: list | None = None,
        video_patch_shape: tuple[int, int] | None = None,
        video_mask: Tensor | None = None,
        cond_drop_prob: float = 0.0,
    ) -> Tensor:
        """Hidden states (b, n, d). `video_mask` (b, n) marks real tokens; padding is never attended."""
        self.check_ids(x)
        b, n = x.shape
        t_idx, h_idx, w_idx = self._grid_index(n, video_patch_shape, x.device)
        tokens = self.token_emb(x) + self.pos_time(t_idx) + self.pos_height(h_idx) + self.pos_width(w_idx)

        if self.is_conditional and not exists(context_kv):
            if not exists(text_embeds):
                # no text at all: attend to the null key/values only
                text_embeds = tokens.new_zeros(b, 1, self.dim_context)
                text_mask = torch.zeros(b, 1, dtype=torch.bool, device=x.device)
            if not exists(text_mask):
                text_mask = torch.ones(text_embeds.shape[:2], dtype=torch.bool, device=x.device)
            if cond_drop_prob > 0:
                keep = torch.rand(b, device=x.device) >= cond_drop_prob
                text_mask = text_mask & keep[:, None]
            context_kv = self.context_kv(text_embeds, text_mask)

        attn_bias = self._attn_bias(n, video_patch_shape, x.device) if exists(self.rel_pos_bias) else None
        rotary = None
        if exists(self.rotary):
            key = (n, *self._grid_shape(n, video_patch_shape), str(x.device))
            if key not in self._rotary_cache:
                self._rotary_cache = {key: self.rotary(t_idx, h_idx, w_idx)}  # one grid at a time (and its merged grid)
            rotary = self._rotary_cache[key]
        if self.hourglass:
            return self._hourglass_forward(tokens, video_patch_shape, video_mask, context_kv, rotary)
        return self.transformer(tokens, mask=video_mask, attn_bias=attn_bias, context_kv=context_kv, rotary=rotary)

    def _hourglass_forward(
        self,
        x: Tensor,
        video_patch_shape: tuple[int, int] | None,
        mask: Tensor | None,
        context_kv: list | None,
        rotary: Tensor | None,
    ) -> Tensor:
        b, n, d = x.shape
        t, h, w = self._grid_shape(n, video_patch_shape)
        pre, middle, post = self._segments
        run = self.transformer.run_layers
        x = run(x, pre, mask=mask, context_kv=context_kv, rotary=rotary)

        # a grid with an odd number of rows or columns (or one row: no video_patch_shape) gets a row / column of
        # zeros; every block still holds at least one real token, and the padding is cut off again below
        h2, w2 = -(-h // 2), -(-w // 2)

        def blocks(y: Tensor) -> Tensor:  # (b, t*h*w, ...) -> (b, t*h2*w2, 4, ...): each 2 x 2 block together
            y = y.reshape(b, t, h, w, -1)
            y = F.pad(y, (0, 0, 0, 2 * w2 - w, 0, 2 * h2 - h))
            y = y.reshape(b, t, h2, 2, w2, 2, -1).transpose(3, 4)
            return y.reshape(b, t * h2 * w2, 4, -1)

        merged_mask = blocks(mask[..., None]).any(dim=(2, 3)) if exists(mask) else None
        merged = run(
            self.shorten(blocks(x).flatten(2)), middle, mask=merged_mask, context_kv=context_kv,
            rotary=self._merged_rotary(t, h2, w2, x.device),
        )
        spread = self.lengthen(merged).reshape(b, t, h2, w2, 2, 2, d).transpose(3, 4).reshape(b, t, 2 * h2, 2 * w2, d)
        x = x + spread[:, :, :h, :w].reshape(b, n, d)
        x = run(x, post, mask=mask, context_kv=context_kv, rotary=rotary)
        return self.transformer.norm_out(x)

    def _merged_rotary(self, t: int, h2: int, w2: int, device) -> Tensor | None:
        """Rotary positions of the merged (t, h2, w2) grid: each block at the centre of its four tokens, in token
        units, so offsets mean what they mean at full resolution."""
        if not exists(self.rotary):
            return None
        key = ("merged", t, h2, w2, str(device))
        if key not in self._rotary_cache:
            index = torch.arange(t * h2 * w2, device=device)
            rows, cols = (index // w2) % h2, index % w2
            self._rotary_cache[key] = self.rotary(index // (h2 * w2), 2 * rows + 0.5, 2 * cols + 0.5)
        return self._rotary_cache[key]

    def _attn_bias(self, n: int, video_patch_shape: tuple[int, int] | None, device) -> Tensor:
        """The relative position bias (heads, n, n). Without gradients (every decoding step of `sample`) it is
        computed once and kept until the bias MLP's weights change (their version counters key the cache)."""
        grid = self._grid_shape(n, video_patch_shape)
        if torch.is_grad_enabled():
            return self.rel_pos_bias(*grid, device=device)
        weights = list(self.rel_pos_bias.parameters())
        key = (grid, str(device), weights[0].dtype, tuple(p._version for p in weights))
        if self._bias_cache is None or self._bias_cache[0] != key:
            self._bias_cache = (key, self.rel_pos_bias(*grid, device=device))
        return self._bias_cache[1]


class TiedLogits(nn.Module):
    """MaskGIT's output head: dense -> GELU -> LayerNorm, then logits against the token embedding table itself
    (weights shared with the input embedding, plus a per-token bias). Every code's row gets gradient from every
    prediction's softmax, so rarely seen codes still learn where they sit among the others."""

    def __init__(self, token_emb: nn.Embedding, num_tokens: int, dim: int):
        super().__init__()
        self._token_emb = [token_emb]  # owned (and saved) by the trunk
        self.num_tokens = num_tokens
        self.hidden = nn.Sequential(nn.Linear(dim, dim), nn.GELU(), nn.LayerNorm(dim))
        self.bias = nn.Parameter(torch.zeros(num_tokens))

    @property
    def weight(self) -> Tensor:
        return self._token_emb[0].weight[: self.num_tokens]  # the [MASK] row is never predicted

    def forward(self, x: Tensor) -> Tensor:
        return self.hidden(x) @ self.weight.t() + self.bias


class MaskGit(ConfigMixin, nn.Module):
    """Bidirectional transformer predicting the original id of every [MASK]ed video token.

        maskgit = MaskGit(num_tokens=5000, max_seq_len=1024, dim=512, dim_context=768, depth=6)
        logits = maskgit(ids, text_embeds=..., text_mask=..., video_patch_shape=(h, w))  # (b, n, num_tokens)

    `tie_embeddings=True` uses MaskGIT's output head (dense, GELU, LayerNorm, then logits against the input
    embedding table plus a bias) instead of a separate output matrix; `label_smoothing` applies to the loss.
    `gradient_checkpointing=True` recomputes each layer in the backward pass (less memory, more compute); it
    is saved in the config, and `set_gradient_checkpointing(model)` switches it later.
    `rel_pos_bias=True` adds a learned self-attention bias from the (frame, row, column) offset between two
    tokens (an MLP over log-scaled offsets, shared by all layers), a locality prior on top of the absolute
    position embeddings. It keeps a (heads, n, n) bias per forward, so it is for short token sequences.
    `rotary=True` rotates the self-attention queries and keys by each token's (frame, row, column) (`AxialRotary`,
    frequencies down to `1 / rotary_theta` radians per step): attention scores then depend on the offset between
    two tokens, so a shape learned at one place and time is recognised at every other. It adds no weights and,
    unlike `rel_pos_bias`, no (n, n) tensor, so the fused attention kernels still apply.
    `hourglass=k` runs the middle k of the `depth` layers on 2 x 2 blocks of tokens (within a token frame) merged
    into one: a quarter of the sequence, so a merged layer takes about a quarter of a full one's time (at 320
    tokens, the merge and spread included). The layers before and after run at full resolution, and the merged layers' output is added back to
    every token of its block (starting at zero, so a new model begins as its outer layers). A grid with an odd
    number of rows or columns is padded for the merge. The default (None) merges all but the first and the last
    layer from depth 4 up (`depth - 2`) and none below or with `rel_pos_bias`; 0 keeps every layer at full
    resolution.
    """

    @typechecked
    def __init__(
        self,
        *,
        num_tokens: int,
        max_seq_len: int,
        dim: int,
        depth: int,
        dim_context: int | None = None,
        heads: int = 8,
        dim_head: int = 64,
        unconditional: bool = False,
        cond_drop_prob: float = 0.25,
        ff_mult: float = 4.0,
        attn_dropout: float = 0.0,
        ff_dropout: float = 0.0,
        label_smoothing: float = 0.0,
        tie_embeddings: bool = False,
        gradient_checkpointing: bool = False,
        rel_pos_bias: bool = False,
        rotary: bool = True,
        rotary_theta: float = 100.0,
        hourglass: int | None = None,
    ):
        super().__init__()
        if hourglass is None:
            hourglass = depth - 2 if depth >= 4 and not rel_pos_bias else 0
        if not 0.0 <= label_smoothing < 1.0:
            raise ValueError(f"label_smoothing must be in [0, 1), got {label_smoothing}")
        self.label_smoothing = label_smoothing
        if not unconditional and not exists(dim_context):
            raise ValueError("a conditional MaskGit needs dim_context (the text embedding size), or unconditional=True")
        if not 0.0 <= cond_drop_prob < 1.0:
            raise ValueError(f"cond_drop_prob must be in [0, 1), got {cond_drop_prob}")
        self.unconditional = unconditional
        self.cond_drop_prob = cond_drop_prob if not unconditional else 0.0
        self.trunk = TokenTransformer(
            num_tokens=num_tokens,
            max_seq_len=max_seq_len,
            dim=dim,
            depth=depth,
            dim_context=None if unconditional else dim_context,
            heads=heads,
            dim_head=dim_head,
            ff_mult=ff_mult,
            attn_dropout=attn_dropout,
            ff_dropout=ff_dropout,
            gradient_checkpointing=gradient_checkpointing,
            rel_pos_bias=rel_pos_bias,
            rotary=rotary,
            rotary_theta=rotary_theta,
            hourglass=hourglass,
        )
        self.tie_embeddings = tie_embeddings
        self.to_logits = TiedLogits(self.trunk.token_emb, num_tokens, dim) if tie_embeddings else nn.Linear(dim, num_tokens)

    @classmethod
    def upgrade_config(cls, config: dict) -> dict:
        """Configs saved before rotary self-attention or the hourglass existed rebuild the model they were trained
        as (no rotation, every layer at full resolution)."""
        config.setdefault("rotary", False)
        config.setdefault("hourglass", 0)
        return config

    @property
    def config(self) -> dict:
        """The constructor arguments, with `hourglass` as resolved (a saved model keeps its layout if the
        default for its depth ever changes)."""
        return {**super().config, "hourglass": self.trunk.hourglass}

    num_tokens = property(lambda self: self.trunk.num_tokens)
    mask_id = property(lambda self: self.trunk.mask_id)
    max_seq_len = property(lambda self: self.trunk.max_seq_len)
    dim_context = property(lambda self: self.trunk.dim_context)

    def context_kv(self, text_embeds: Tensor, text_mask: Tensor | None = None) -> list:
        return self.trunk.context_kv(text_embeds, text_mask)

    def forward(
        self,
        x: Tensor,
        *,
        text_embeds: Tensor | None = None,
        text_mask: Tensor | None = None,
        context_kv: list | None = None,
        video_patch_shape: tuple[int, int] | None = None,
        video_mask: Tensor | None = None,
        cond_drop_prob: float | None = None,
        return_embeds: bool = False,
        logits_at: Tensor | None = None,
    ):
        """Logits (b, n, num_tokens); with `return_embeds` also the hidden states (b, n, d).

        `logits_at` (b, n) bool computes the logits at those positions only and returns them as
        (m, num_tokens), in the order of `logits_at.nonzero()`: training needs them at the masked
        positions only, and the output layer is about a tenth of a small model's step.
        `cond_drop_prob` defaults to the model's own in training and to 0 in eval.
        """
        if exists(logits_at) and (logits_at.shape != x.shape or logits_at.dtype != torch.bool):
            raise ValueError(
                f"logits_at must be a bool mask shaped like the ids {tuple(x.shape)}, "
                f"got {logits_at.dtype} {tuple(logits_at.shape)}"
            )
        if cond_drop_prob is None:
            cond_drop_prob = self.cond_drop_prob if self.training else 0.0
        embeds = self.trunk.embed(
            x,
            text_embeds=text_embeds,
            text_mask=text_mask,
            context_kv=context_kv,
            video_patch_shape=video_patch_shape,
            video_mask=video_mask,
            cond_drop_prob=cond_drop_prob,
        )
        logits = self.to_logits(embeds if logits_at is None else embeds[logits_at])
        return (logits, embeds) if return_embeds else logits

    def masked_loss(self, logits: Tensor, target_ids: Tensor, masked: Tensor) -> Tensor:
        """Cross-entropy on masked positions only (with the model's `label_smoothing`).

        `logits` (b, n, num_tokens), or (m, num_tokens) already taken at the masked positions (`logits_at=masked`).
        """
        if not masked.any():
            return logits.sum() * 0.0
        picked = logits if logits.ndim == 2 else logits[masked]
        return F.cross_entropy(picked.float(), target_ids[masked], label_smoothing=self.label_smoothing)


class TokenCritic(ConfigMixin, nn.Module):
    """Scores each token of a filled-in sequence: logit > 0 means "sampled", < 0 "real".

        critic = TokenCritic(num_tokens=5000, max_seq_len=1024, dim=512, dim_context=768, depth=6, has_cross_attn=True)

    `gradient_checkpointing=True`, `rel_pos_bias` and `rotary` as for MaskGit; `rotary` is off by default here
    (on the glyph benchmark a rotary critic re-masked worse than a plain one beside a rotary MaskGit).
    """

    @typechecked
    def __init__(
        self,
        *,
        num_tokens: int,
        max_seq_len: int,
        dim: int,
        depth: int,
        dim_context: int | None = None,
        has_cross_attn: bool = False,
        heads: int = 8,
        dim_head: int = 64,
        ff_mult: float = 4.0,
        attn_dropout: float = 0.0,
        ff_dropout: float = 0.0,
        gradient_checkpointing: bool = False,
        rel_pos_bias: bool = False,
        rotary: bool = False,
        rotary_theta: float = 100.0,
    ):
        super().__init__()
        if has_cross_attn and not exists(dim_context):
            raise ValueError("TokenCritic(has_cross_attn=True) needs dim_context")
        self.trunk = TokenTransformer(
            num_tokens=num_tokens,
            max_seq_len=max_seq_len,
            dim=dim,
            depth=depth,
            dim_context=dim_context if has_cross_attn else None,
            heads=heads,
            dim_head=dim_head,
            ff_mult=ff_mult,
            attn_dropout=attn_dropout,
            ff_dropout=ff_dropout,
            gradient_checkpointing=gradient_checkpointing,
            rel_pos_bias=rel_pos_bias,
            rotary=rotary,
            rotary_theta=rotary_theta,
        )
        self.to_logits = nn.Linear(dim, 1)

    @classmethod
    def upgrade_config(cls, config: dict) -> dict:
        """Configs saved before rotary self-attention existed rebuild the model they were trained as (no rotation)."""
        config.setdefault("rotary", False)
        return config

    num_tokens = property(lambda self: self.trunk.num_tokens)
    has_cross_attn = property(lambda self: self.trunk.is_conditional)

    def context_kv(self, text_embeds: Tensor, text_mask: Tensor | None = None) -> list | None:
        return self.trunk.context_kv(text_embeds, text_mask) if self.has_cross_attn else None

    def forward(
        self,
        x: Tensor,
        *,
        text_embeds: Tensor | None = None,
        text_mask: Tensor | None = None,
        context_kv: list | None = None,
        video_patch_shape: tuple[int, int] | None = None,
        video_mask: Tensor | None = None,
        cond_drop_prob: float = 0.0,
    ) -> Tensor:
        """Per-token logits (b, n)."""
        if not self.has_cross_attn:
            text_embeds = text_mask = context_kv = None
        embeds = self.trunk.embed(
            x,
            text_embeds=text_embeds,
            text_mask=text_mask,
            context_kv=context_kv,
            video_patch_shape=video_patch_shape,
            video_mask=video_mask,
            cond_drop_prob=cond_drop_prob,
        )
        return rearrange(self.to_logits(embeds), "b n 1 -> b n")


class SelfCritic(nn.Module):
    """A critic head on MaskGit's own hidden states (`Phenaki(..., self_token_critic=True)`)."""

    def __init__(self, maskgit: MaskGit):
        super().__init__()
        # not registered as a submodule: its owner (Phenaki) already holds the MaskGit, and its
        # weights must not be saved twice
        self._maskgit = [maskgit]
        self.to_logits = nn.Linear(maskgit.trunk.dim, 1)

    @property
    def maskgit(self) -> MaskGit:
        return self._maskgit[0]

    num_tokens = property(lambda self: self.maskgit.num_tokens)
    has_cross_attn = property(lambda self: not self.maskgit.unconditional)

    def context_kv(self, text_embeds: Tensor, text_mask: Tensor | None = None) -> list | None:
        return self.maskgit.context_kv(text_embeds, text_mask) if self.has_cross_attn else None

    def forward(self, x: Tensor, **kwargs) -> Tensor:
        kwargs.setdefault("cond_drop_prob", 0.0)
        none = torch.zeros_like(x, dtype=torch.bool)  # the hidden states only: no token logits
        _, embeds = self.maskgit(x, return_embeds=True, logits_at=none, **kwargs)
        return rearrange(self.to_logits(embeds), "b n 1 -> b n")
