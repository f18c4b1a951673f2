"""C-ViViT: the causal video tokenizer.

A video (b, c, 1 + k*tp, H, W) becomes (b, 1 + k, H/p, W/p) codebook ids: the first
frame is cut into p x p patches on its own, later frames into tp x p x p tubelets.
A spatial transformer runs within each token frame, then a causal temporal
transformer along time at each patch position, then a vector quantizer. The decoder
mirrors the encoder. Tokens of frame t never depend on frames after t.

Shape legend: b batch, c channels, f video frames, t token frames, h/w patch grid,
p patch size, tp temporal patch size, d model dimension.
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path

import torch
import torch.nn.functional as F
from einops import rearrange, repeat
from einops.layers.torch import Rearrange
from torch import Tensor, nn
from torch.func import functional_call
from vector_quantize_pytorch import FSQ, LFQ, VectorQuantize

from .attention import AlibiPositionBias, ContinuousPositionBias, KVCache, Transformer, exists
from .discriminator import (
    Discriminator,
    adaptive_weight,
    bce_discr_loss,
    bce_gen_loss,
    gradient_penalty,
    hinge_discr_loss,
    hinge_gen_loss,
)
from .serialization import ConfigMixin, atomic_save_safetensors, load_state_dict_file
from .typecheck import typechecked

# recommended FSQ levels per codebook size (Mentzer et al. 2023, table 1)
FSQ_LEVELS = {
    240: (8, 6, 5),
    1000: (8, 5, 5, 5),
    4375: (7, 5, 5, 5, 5),
    15360: (8, 8, 8, 6, 5),
    64000: (8, 8, 8, 5, 5, 5),
}


def pair(value: int | tuple[int, int]) -> tuple[int, int]:
    return value if isinstance(value, tuple) else (value, value)


class Quantizer(nn.Module):
    """One interface over vector-quantize-pytorch's VQ, LFQ and FSQ.

    forward(x (b, n, d)) -> (quantized (b, n, d), ids (b, n), aux_loss scalar)
    codes_from_ids(ids (b, n)) -> (b, n, d)
    """

    def __init__(
        self,
        kind: str,
        dim: int,
        codebook_size: int,
        codebook_dim: int | None,
        commitment_weight: float,
        fsq_levels: tuple[int, ...] | None,
        kmeans_init: bool = True,
        threshold_ema_dead_code: float = 2.0,
        codebook_decay: float = 0.8,
    ):
        super().__init__()
        self.kind = kind
        self.codebook_size = codebook_size
        if kind == "vq":
            if codebook_size < 2:
                raise ValueError(f"codebook_size must be at least 2, got {codebook_size}")
            self.quantizer = VectorQuantize(
                dim=dim,
                codebook_size=codebook_size,
                codebook_dim=codebook_dim,
                use_cosine_sim=True,
                commitment_weight=commitment_weight,
                decay=codebook_decay,
                # codes start as k-means centroids of the first batch's latents, and a code chosen less than
                # `threshold_ema_dead_code` times (EMA count) is re-seeded from the batch: without both the
                # codebook collapses to a few dozen codes
                kmeans_init=kmeans_init,
                kmeans_iters=10,
                threshold_ema_dead_code=threshold_ema_dead_code,
                # the rotation-trick gradient costs more than the rest of the quantizer together on CPU
                # (about 3x its time); the straight-through estimator is the classic VQ-VAE choice
                rotation_trick=False,
            )
        elif kind == "lfq":
            if codebook_size < 2 or codebook_size & (codebook_size - 1):
                raise ValueError(
                    f"quantizer='lfq' needs codebook_size to be a power of 2, got {codebook_size}; "
                    f"nearest valid: {_nearest_powers_of_two(codebook_size)}"
                )
            # MAGVIT-v2's settings: entropy penalty 0.1 with diversity_gamma 1 (per-sample entropy low, batch
            # codebook entropy high), commitment 0.25
            self.quantizer = LFQ(
                dim=dim,
                codebook_size=codebook_size,
                commitment_loss_weight=0.25 * commitment_weight,
                entropy_loss_weight=0.1,
                diversity_gamma=1.0,
            )
        elif kind == "fsq":
            levels = fsq_levels or FSQ_LEVELS.get(codebook_size)
            if levels is None:
                raise ValueError(
                    f"quantizer='fsq' needs fsq_levels, or a codebook_size with recommended levels "
                    f"({sorted(FSQ_LEVELS)}); got codebook_size={codebook_size}"
                )
            product = 1
            for level in levels:
                product *= level
            if product != codebook_size:
                raise ValueError(
                    f"quantizer='fsq': codebook_size must equal the product of fsq_levels {tuple(levels)} = {product}, "
                    f"got {codebook_size}"
                )
            self.quantizer = FSQ(levels=list(levels), dim=dim)
        else:
            raise ValueError(f"quantizer must be one of 'vq', 'lfq', 'fsq', got {kind!r}")

    def forward(self, x: Tensor, mask: Tensor | None = None) -> tuple[Tensor, Tensor, Tensor]:
        """`mask` (b, n) bool: positions outside it (padded frames) neither update the codebook nor enter the loss."""
        # the codebook search runs in the quantizer's own precision (fp32 unless the model was cast) whatever
        # the surrounding autocast: bf16 similarities confuse close codes, and a bf16 argmax is about 5x
        # slower on CPU
        param = next(self.quantizer.parameters(), None)
        dtype = param.dtype if param is not None and param.is_floating_point() else torch.float32
        with torch.autocast(x.device.type, enabled=False), self._no_init_unless_training():
            return self._quantize(x.to(dtype), mask)

    @property
    def awaits_init(self) -> bool:
        """True while a data-initialised (k-means) codebook has not yet seen its first training batch."""
        initted = getattr(getattr(self.quantizer, "_codebook", None), "initted", None)
        return initted is not None and not bool(initted)

    @contextlib.contextmanager
    def _no_init_unless_training(self):
        """vector-quantize-pytorch runs its k-means initialisation on the first call in any mode; only a
        training forward may do it (not `tokenize` on a fresh model, nor the discriminator's frozen pass)."""
        initted = getattr(getattr(self.quantizer, "_codebook", None), "initted", None)
        if self.training or initted is None or bool(initted):
            yield
            return
        initted.fill_(True)
        try:
            yield
        finally:
            initted.fill_(False)

    def _quantize(self, x: Tensor, mask: Tensor | None) -> tuple[Tensor, Tensor, Tensor]:
        if self.kind == "fsq":  # no codebook to update and no loss: padded positions need no special care
            quantized, ids = self.quantizer(x)
            return quantized, ids, x.new_zeros(())
        quantized, ids, loss = self.quantizer(x, mask=mask)
        if mask is not None:
            ids = ids.masked_fill(~mask, 0)  # vector-quantize-pytorch marks padding -1; keep ids in range
        return quantized, ids, loss.sum()

    def codes_from_ids(self, ids: Tensor) -> Tensor:
        if self.kind == "vq":
            return self.quantizer.get_output_from_indices(ids)
        return self.quantizer.indices_to_codes(ids)


class PixelHead(nn.Module):
    """Decoder output: token features (b, t, h, w, d) -> frames (b, c, 1 + (t-1)*tp, H, W).

    `kind="linear"`: each token is projected straight to its patch (first frame) or tubelet (later frames) of
    pixels, as in ViT-VQGAN. Patches are decoded independently of their neighbours, which leaves a visible
    patch grid. `kind="conv"`: each token is projected to a patch of `head_dim`-channel features instead, then a
    small residual stack of 3x3 convolutions runs over every frame (16 channels and one block by default: on the
    glyph benchmark 32 channels and two blocks gained 0.3 dB at 400 steps but took 1.8x the step time): pixels at patch borders see both sides, and
    no frame looks at any other, so the decoder stays causal.
    """

    def __init__(
        self,
        dim: int,
        channels: int,
        patch_size: tuple[int, int],
        temporal_patch_size: int,
        kind: str = "conv",
        head_dim: int = 16,
        head_depth: int = 1,
        first_frame: str = "image",
    ):
        super().__init__()
        if kind not in ("linear", "conv"):
            raise ValueError(f"pixel_head must be 'linear' or 'conv', got {kind!r}")
        self.kind = kind
        ph, pw = patch_size
        tp = temporal_patch_size
        out = channels if kind == "linear" else head_dim
        # first_frame="tubelet": the first token frame is decoded like any tubelet and its last frame kept
        self.to_first = None
        if first_frame == "image":
            self.to_first = nn.Sequential(
                nn.Linear(dim, out * ph * pw),
                Rearrange("b 1 h w (c p1 p2) -> b c 1 (h p1) (w p2)", p1=ph, p2=pw),
            )
        self.to_rest = nn.Sequential(
            nn.Linear(dim, out * tp * ph * pw),
            Rearrange("b t h w (c pt p1 p2) -> b c (t pt) (h p1) (w p2)", pt=tp, p1=ph, p2=pw),
        )
        self.refine = None
        if kind == "conv":
            if head_dim < 1 or head_depth < 1:
                raise ValueError(f"head_dim and head_depth must be >= 1, got {head_dim} and {head_depth}")
            self.refine = nn.ModuleList(
                nn.Sequential(
                    nn.GroupNorm(1, head_dim),
                    nn.Conv2d(head_dim, head_dim, 3, padding=1),
                    nn.GELU(),
                    nn.Conv2d(head_dim, head_dim, 3, padding=1),
                )
                for _ in range(head_depth)
            )
            self.to_pixels = nn.Sequential(nn.GroupNorm(1, head_dim), nn.GELU(), nn.Conv2d(head_dim, channels, 3, padding=1))

    def last_layers(self) -> list[Tensor]:
        """Weights of the layer(s) that produce pixels: where VQGAN's adaptive weight compares gradients."""
        if self.refine is None:
            return [head[0].weight for head in (self.to_first, self.to_rest) if head is not None]
        return [self.to_pixels[-1].weight]

    def forward(self, x: Tensor, starts_at_first_frame: bool = True) -> Tensor:
        """`starts_at_first_frame=False` for a later chunk of token frames (all of them tubelets)."""
        if starts_at_first_frame:
            frames = self.to_rest(x[:, :1])[:, :, -1:] if self.to_first is None else self.to_first(x[:, :1])
            if x.shape[1] > 1:
                frames = torch.cat((frames, self.to_rest(x[:, 1:])), dim=2)
        else:
            frames = self.to_rest(x)
        if self.refine is None:
            return frames
        b, f = frames.shape[0], frames.shape[2]
        y = rearrange(frames, "b c f h w -> (b f) c h w")  # every frame on its own: causality is kept
        for block in self.refine:
            y = y + block(y)
        y = self.to_pixels(y)
        return rearrange(y, "(b f) c h w -> b c f h w", b=b, f=f)


def _nearest_powers_of_two(value: int) -> tuple[int, int]:
    lower = 1 << max(value.bit_length() - 1, 1)
    return lower, lower * 2


def load_vgg16_features() -> nn.Module | None:
    """VGG16 conv features when torchvision and its ImageNet weights are already on disk.

    Never downloads: returns None when torchvision does not import or the weights
    file is not in the torch hub cache.
    """
    try:
        import torchvision  # noqa: F401 -- import can fail with RuntimeError beside some torch builds
        from torchvision.models import vgg16
    except Exception:
        return None
    weights = Path(torch.hub.get_dir()) / "checkpoints" / "vgg16-397923af.pth"
    if not weights.exists():
        return None
    model = vgg16()
    model.load_state_dict(torch.load(weights, map_location="cpu", weights_only=True))
    return ImageNetFeatures(model.features[:23])  # up to relu4_3


class ImageNetFeatures(nn.Module):
    """Wraps a feature network that expects ImageNet-normalised RGB input in [0, 1]."""

    def __init__(self, net: nn.Module):
        super().__init__()
        self.net = net
        self.register_buffer("mean", torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1), persistent=False)

    def forward(self, images: Tensor) -> Tensor:
        if images.shape[1] == 1:
            images = images.expand(-1, 3, -1, -1)
        return self.net((images - self.mean) / self.std)


class CViViT(ConfigMixin, nn.Module):
    """Causal video tokenizer trained as a VQGAN.

    Calls:
        loss = cvivit(video)                                   # generator loss, video (b, c, f, h, w) or image (b, c, h, w)
        loss, recon = cvivit(video, return_recons=True)
        discr_loss = cvivit(video, return_discr_loss=True)     # for the alternating discriminator step
        ids = cvivit(video, return_only_codebook_ids=True)     # (b, t, h, w)
        video = cvivit.decode_from_codebook_indices(ids)
        video = cvivit.decode_from_codebook_indices(ids, token_frames_per_chunk=8)   # same video, bounded memory

    `gradient_checkpointing=True` recomputes each transformer layer in the backward pass instead of keeping its
    activations (less memory in training, about one more forward of compute; gradients unchanged); see
    `phenaki_pytorch.Transformer` and `phenaki_pytorch.set_gradient_checkpointing`. It is saved in the config.

    `decoder_token_noise=p` (training only): each token the decoder reconstructs from is replaced by a uniformly
    random codebook entry with probability p, and the loss still asks for the clean clip. The decoder then learns
    to read a token against its neighbours in space and time instead of trusting every id, as it must when
    MaskGit's sampled ids, not the encoder's, are decoded (a tokenizer robust to the generator's errors, after
    RobusTok, "Image Tokenizer Needs Post-Training", 2025). The encoder gets no gradient through a replaced token.
    """

    @typechecked
    def __init__(
        self,
        *,
        dim: int,
        codebook_size: int,
        patch_size: int | tuple[int, int],
        temporal_patch_size: int = 2,
        spatial_depth: int = 4,
        temporal_depth: int = 4,
        image_size: int | tuple[int, int] | None = None,
        dim_head: int = 64,
        heads: int = 8,
        channels: int = 3,
        quantizer: str = "vq",
        codebook_dim: int | None = 32,
        fsq_levels: tuple[int, ...] | list[int] | None = None,
        commitment_weight: float = 1.0,
        ff_mult: float = 4.0,
        attn_dropout: float = 0.0,
        ff_dropout: float = 0.0,
        use_gan: bool = True,
        discr_dim: int = 32,
        discr_blocks: int | None = None,
        gan_loss: str = "hinge",
        adversarial_loss_weight: float = 1.0,
        grad_penalty_weight: float = 10.0,
        perceptual_network: nn.Module | Callable | str | None = "auto",
        perceptual_loss_weight: float = 1.0,
        use_vgg_and_gan: bool | None = None,
        pixel_head: str = "conv",
        pixel_head_dim: int = 16,
        pixel_head_depth: int = 1,
        first_frame: str = "tubelet",
        kmeans_init: bool = True,
        threshold_ema_dead_code: float = 2.0,
        codebook_decay: float = 0.8,
        discr_start_step: int = 10000,
        gradient_checkpointing: bool = False,
        decoder_token_noise: float = 0.0,
    ):
        super().__init__()
        for name, value in (("dim", dim), ("temporal_patch_size", temporal_patch_size), ("channels", channels)):
            if value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value}")
        if first_frame not in ("image", "tubelet"):
            raise ValueError(f"first_frame must be 'image' or 'tubelet', got {first_frame!r}")
        if gan_loss not in ("hinge", "bce"):
            raise ValueError(f"gan_loss must be 'hinge' or 'bce', got {gan_loss!r}")
        if discr_start_step < 0:
            raise ValueError(f"discr_start_step must be >= 0, got {discr_start_step}")
        check_token_noise(decoder_token_noise)
        if threshold_ema_dead_code < 0:
            raise ValueError(f"threshold_ema_dead_code must be >= 0, got {threshold_ema_dead_code}")
        if not 0.0 <= codebook_decay < 1.0:
            raise ValueError(f"codebook_decay must lie in [0, 1), got {codebook_decay}")

        if use_vgg_and_gan is not None:  # the public reference's single switch
            use_gan = use_vgg_and_gan
            if not use_vgg_and_gan:
                perceptual_network = None

        self.dim = dim
        self.codebook_size = codebook_size
        self.patch_size = pair(patch_size)
        self.temporal_patch_size = temporal_patch_size
        self.channels = channels
        self.image_size = pair(image_size) if exists(image_size) else None
        if exists(self.image_size):
            self._check_divisible(self.image_size, "image_size")

        ph, pw = self.patch_size
        tp = temporal_patch_size
        first_dim = channels * ph * pw
        rest_dim = channels * tp * ph * pw

        # first_frame="image" (Phenaki): the first frame has its own patch embedding and decoder projection, and
        # its ids a vocabulary of their own; "tubelet" (the default): it is repeated into a tubelet and shares
        # everything with the later frames (MAGVIT's replicate padding). On the glyph benchmark MaskGit drew the
        # image frame's ids much worse than the tubelets' (its first frames were judged right 40-60% of the time
        # against 55-90% for the others); as a tubelet the first frame is judged like the rest
        # (examples/demo_results.md, "The first frame")
        self.first_frame = first_frame
        self.to_first_frame_tokens = None
        if first_frame == "image":
            self.to_first_frame_tokens = nn.Sequential(
                Rearrange("b c 1 (h p1) (w p2) -> b 1 h w (c p1 p2)", p1=ph, p2=pw),
                nn.LayerNorm(first_dim),
                nn.Linear(first_dim, dim),
                nn.LayerNorm(dim),
            )
        self.to_rest_tokens = nn.Sequential(
            Rearrange("b c (t pt) (h p1) (w p2) -> b t h w (c pt p1 p2)", pt=tp, p1=ph, p2=pw),
            nn.LayerNorm(rest_dim),
            nn.Linear(rest_dim, dim),
            nn.LayerNorm(dim),
        )

        transformer_kwargs = dict(
            dim_head=dim_head,
            heads=heads,
            ff_mult=ff_mult,
            attn_dropout=attn_dropout,
            ff_dropout=ff_dropout,
            gradient_checkpointing=gradient_checkpointing,
        )
        self.enc_spatial_bias = ContinuousPositionBias(dim=max(dim // 4, 32), heads=heads, num_dims=2)
        self.enc_spatial = Transformer(dim, spatial_depth, **transformer_kwargs)
        self.enc_temporal = Transformer(dim, temporal_depth, **transformer_kwargs)
        self.dec_temporal = Transformer(dim, temporal_depth, **transformer_kwargs)
        self.dec_spatial_bias = ContinuousPositionBias(dim=max(dim // 4, 32), heads=heads, num_dims=2)
        self.dec_spatial = Transformer(dim, spatial_depth, **transformer_kwargs)
        self.temporal_bias = AlibiPositionBias(heads, causal=True)

        self.quantizer = Quantizer(
            quantizer,
            dim,
            codebook_size,
            codebook_dim,
            commitment_weight,
            tuple(fsq_levels) if exists(fsq_levels) else None,
            kmeans_init=kmeans_init,
            threshold_ema_dead_code=threshold_ema_dead_code,
            codebook_decay=codebook_decay,
        )

        self.pixel_head = PixelHead(
            dim, channels, self.patch_size, tp, kind=pixel_head, head_dim=pixel_head_dim, head_depth=pixel_head_depth,
            first_frame=first_frame,
        )

        # adversarial training, after a warm-up of `discr_start_step` training steps (VQGAN's discriminator start):
        # a random discriminator only adds noise, and the adaptive weight is huge while it is random.
        # `gan_step` counts generator training forwards (a trainer sets it to its own step count)
        self.discr_start_step = discr_start_step
        self.decoder_token_noise = float(decoder_token_noise)
        self.register_buffer("gan_step", torch.zeros((), dtype=torch.long))
        self.gan_loss = gan_loss
        self.adversarial_loss_weight = adversarial_loss_weight
        self.grad_penalty_weight = grad_penalty_weight
        self.discr = None
        if use_gan:
            if discr_blocks is None:
                smallest = min(self.image_size) if exists(self.image_size) else 64
                discr_blocks = max(1, min(6, smallest.bit_length() - 4))  # down to about 8x8
            self.discr = Discriminator(channels=channels, dim=discr_dim, num_blocks=discr_blocks)

        # perceptual loss: frozen, kept out of the optimizer and of saved weights
        self.perceptual_status = "off" if perceptual_network is None else "given"
        if perceptual_network == "auto":
            perceptual_network = load_vgg16_features()
            self.perceptual_status = "vgg16" if exists(perceptual_network) else "unavailable"
            if not exists(perceptual_network):
                _warn_no_vgg_once()
        elif isinstance(perceptual_network, str):
            raise ValueError(f"perceptual_network must be 'auto', None or a module, got {perceptual_network!r}")
        self.perceptual_loss_weight = perceptual_loss_weight
        self._perceptual = [perceptual_network] if exists(perceptual_network) else []
        if exists(perceptual_network) and isinstance(perceptual_network, nn.Module):
            perceptual_network.eval().requires_grad_(False)
        self._register_load_state_dict_pre_hook(_upgrade_state_dict, with_module=True)

    # ------------------------------------------------------------------ geometry

    @property
    def perceptual_network(self) -> nn.Module | Callable | None:
        return self._perceptual[0] if self._perceptual else None

    def _check_divisible(self, size: tuple[int, int], name: str):
        (h, w), (ph, pw) = size, self.patch_size
        if h % ph or w % pw:
            raise ValueError(f"{name} {tuple(size)} must be divisible by patch_size {self.patch_size}")

    def _resolve_image_size(self, image_size: int | tuple[int, int] | None) -> tuple[int, int]:
        size = pair(image_size) if exists(image_size) else self.image_size
        if size is None:
            raise ValueError("this CViViT was built without image_size: pass image_size=(h, w)")
        self._check_divisible(size, "image_size")
        return size

    def patch_grid(self, image_size: int | tuple[int, int] | None = None) -> tuple[int, int]:
        """(h, w) of the token grid for frames of `image_size` (defaults to the model's)."""
        h, w = self._resolve_image_size(image_size)
        return h // self.patch_size[0], w // self.patch_size[1]

    def tokens_per_frame(self, image_size: int | tuple[int, int] | None = None) -> int:
        h, w = self.patch_grid(image_size)
        return h * w

    def is_valid_num_frames(self, num_frames: int) -> bool:
        return num_frames >= 1 and (num_frames - 1) % self.temporal_patch_size == 0

    def nearest_valid_num_frames(self, num_frames: int) -> tuple[int, ...]:
        tp = self.temporal_patch_size
        lower = 1 + max((num_frames - 1) // tp, 0) * tp
        return tuple(sorted({lower, lower + tp} - {num_frames})) if lower != num_frames else (lower,)

    def num_token_frames(self, num_frames: int) -> int:
        """Token frames for a clip of `num_frames` video frames (1 + k*tp -> 1 + k)."""
        if not self.is_valid_num_frames(num_frames):
            raise ValueError(
                f"num_frames must be 1 + k * temporal_patch_size ({self.temporal_patch_size}), got {num_frames}; "
                f"nearest valid: {self.nearest_valid_num_frames(num_frames)}"
            )
        return 1 + (num_frames - 1) // self.temporal_patch_size

    def num_video_frames(self, num_token_frames: int) -> int:
        if num_token_frames < 1:
            raise ValueError(f"num_token_frames must be >= 1, got {num_token_frames}")
        return 1 + (num_token_frames - 1) * self.temporal_patch_size

    def num_tokens(self, num_frames: int, image_size: int | tuple[int, int] | None = None) -> int:
        return self.num_token_frames(num_frames) * self.tokens_per_frame(image_size)

    # ------------------------------------------------------------------ validation

    def _as_video(self, video) -> tuple[Tensor, bool]:
        if not isinstance(video, Tensor):
            raise TypeError(f"video must be a torch.Tensor, got {type(video).__name__}")
        if video.ndim == 4:
            video, is_image = video.unsqueeze(2), True
        elif video.ndim == 5:
            is_image = False
        else:
            raise ValueError(
                f"video must be (batch, channels, frames, height, width) or an image (batch, channels, height, "
                f"width), got shape {tuple(video.shape)}"
            )
        if not video.is_floating_point():
            raise TypeError(f"video must be a float tensor, got dtype {video.dtype}")
        if not bool(torch.isfinite(video).all()):
            raise ValueError("video holds NaN or infinite values: expected finite pixel values (e.g. in [0, 1])")
        b, c, f, h, w = video.shape
        if c != self.channels:
            raise ValueError(f"video has {c} channels, this CViViT expects channels={self.channels}")
        self.num_token_frames(f)
        if exists(self.image_size) and (h, w) != self.image_size:
            raise ValueError(f"video frames are {(h, w)}, this CViViT was built for image_size={self.image_size}")
        self._check_divisible((h, w), "video height and width")
        return video, is_image

    def _check_ids(self, ids: Tensor):
        if not isinstance(ids, Tensor) or ids.is_floating_point():
            raise TypeError(f"codebook ids must be an integer tensor, got {getattr(ids, 'dtype', type(ids))}")
        if ids.numel() and (ids.min() < 0 or ids.max() >= self.codebook_size):
            raise ValueError(
                f"codebook ids must lie in [0, {self.codebook_size}), got values in "
                f"[{int(ids.min())}, {int(ids.max())}]"
            )

    # ------------------------------------------------------------------ encoder / decoder

    def _spatial(self, transformer: Transformer, bias_module: ContinuousPositionBias, tokens: Tensor) -> Tensor:
        b, t, h, w, _ = tokens.shape
        x = rearrange(tokens, "b t h w d -> (b t) (h w) d")
        x = transformer(x, attn_bias=bias_module(h, w, device=x.device))
        return rearrange(x, "(b t) (h w) d -> b t h w d", b=b, h=h)

    def _temporal(
        self, transformer: Transformer, tokens: Tensor, start: int = 0, kv_cache: KVCache | None = None
    ) -> Tensor:
        """`start` > 0 with `kv_cache`: tokens are token frames start.. of a sequence whose earlier frames went
        through `transformer` with the same cache."""
        b, t, h, w, _ = tokens.shape
        x = rearrange(tokens, "b t h w d -> (b h w) t d")
        if exists(kv_cache):
            bias = self.temporal_bias.rows(start, start + t, device=x.device)  # (heads, t, start + t)
        else:
            bias = self.temporal_bias(t, device=x.device)  # causal ALiBi
        x = transformer(x, attn_bias=bias, kv_cache=kv_cache)
        return rearrange(x, "(b h w) t d -> b t h w d", b=b, h=h, w=w)

    def encode(self, video: Tensor) -> Tensor:
        """Continuous latents (b, t, h, w, d) before quantization."""
        video, _ = self._as_video(video)
        first = video[:, :, :1]
        if self.to_first_frame_tokens is None:  # first_frame="tubelet"
            tokens = self.to_rest_tokens(first.expand(-1, -1, self.temporal_patch_size, -1, -1))
        else:
            tokens = self.to_first_frame_tokens(first)
        if video.shape[2] > 1:
            tokens = torch.cat((tokens, self.to_rest_tokens(video[:, :, 1:])), dim=1)
        tokens = self._spatial(self.enc_spatial, self.enc_spatial_bias, tokens)
        return self._temporal(self.enc_temporal, tokens)

    def quantize(self, latents: Tensor, token_mask: Tensor | None = None) -> tuple[Tensor, Tensor, Tensor]:
        """latents (b, t, h, w, d) -> (quantized (b, t, h, w, d), ids (b, t, h, w), aux loss).

        `token_mask` (b, t) bool marks token frames that hold real video: the others (padding) do not update
        the codebook and are left out of the quantizer's loss.
        """
        b, t, h, w, _ = latents.shape
        flat = rearrange(latents, "b t h w d -> b (t h w) d")
        flat_mask = None
        if exists(token_mask) and not bool(token_mask.all()):
            flat_mask = repeat(token_mask, "b t -> b (t h w)", h=h, w=w)
        quantized, ids, aux_loss = self.quantizer(flat, mask=flat_mask)
        quantized = rearrange(quantized, "b (t h w) d -> b t h w d", t=t, h=h, w=w)
        ids = rearrange(ids, "b (t h w) -> b t h w", t=t, h=h, w=w)
        return quantized, ids, aux_loss

    def decode(self, quantized: Tensor, token_frames_per_chunk: int | None = None) -> Tensor:
        """quantized latents (b, t, h, w, d) -> video (b, c, 1 + (t-1)*tp, H, W).

        `token_frames_per_chunk`: decode that many token frames at a time (see `decode_from_codebook_indices`).
        """
        if token_frames_per_chunk is None:
            x = self._temporal(self.dec_temporal, quantized)
            x = self._spatial(self.dec_spatial, self.dec_spatial_bias, x)
            return self.pixel_head(x)
        t = quantized.shape[1]
        chunks = self._decode_chunks(lambda start, stop: quantized[:, start:stop], t, token_frames_per_chunk)
        return torch.cat(list(chunks), dim=2)

    def _decode_chunks(
        self, codes_of: Callable[[int, int], Tensor], num_token_frames: int, token_frames_per_chunk: int
    ) -> Iterator[Tensor]:
        _check_chunk_size(token_frames_per_chunk)
        return self._decode_chunk_iter(codes_of, num_token_frames, token_frames_per_chunk)

    def _decode_chunk_iter(
        self, codes_of: Callable[[int, int], Tensor], num_token_frames: int, token_frames_per_chunk: int
    ) -> Iterator[Tensor]:
        """Video frames of token frames [start, stop) in turn; `codes_of(start, stop)` gives their latents.

        The decoder's temporal transformer is causal (ALiBi with -inf on later frames): a chunk's queries attend
        to its own keys and, through a KV cache, to those of every earlier chunk, exactly the keys whole decoding
        gives them. The spatial transformer and the pixel head work on each frame alone (the conv head's 3x3
        convolutions are 2-D, its GroupNorm per frame), so they need nothing from other chunks.
        """
        # buffers filled in place when nothing needs their history; under autograd each chunk concatenates
        cache = KVCache(capacity=None if torch.is_grad_enabled() else num_token_frames)
        for start in range(0, num_token_frames, token_frames_per_chunk):
            stop = min(start + token_frames_per_chunk, num_token_frames)
            x = self._temporal(self.dec_temporal, codes_of(start, stop), start=start, kv_cache=cache)
            x = self._spatial(self.dec_spatial, self.dec_spatial_bias, x)
            yield self.pixel_head(x, starts_at_first_frame=start == 0)

    def token_frame_mask(self, frame_mask: Tensor) -> Tensor:
        """(b, f) bool over video frames -> (b, t) bool over token frames: a token frame is real when any of the
        frames it covers is (the first frame alone, then `temporal_patch_size` frames per token frame)."""
        first, rest = frame_mask[:, :1], frame_mask[:, 1:]
        if rest.shape[1] == 0:
            return first
        rest = rearrange(rest, "b (t tp) -> b t tp", tp=self.temporal_patch_size).any(dim=-1)
        return torch.cat((first, rest), dim=1)

    @torch.no_grad()
    def tokenize(self, video: Tensor) -> Tensor:
        """Codebook ids (b, t, h, w) of a video or image batch."""
        _, ids, _ = self.quantize(self.encode(video))
        return ids

    def decode_from_codebook_indices(
        self,
        ids: Tensor,
        image_size: int | tuple[int, int] | None = None,
        token_frames_per_chunk: int | None = None,
    ) -> Tensor:
        """ids (b, t, h, w), or flattened (b, t*h*w) given the model's image_size -> video (b, c, f, H, W).

        `token_frames_per_chunk` (None: all at once) decodes that many token frames at a time, so the decoder's
        activations (the spatial transformer's attention, the pixel head's full-resolution feature maps) exist for
        one chunk only. The output equals whole decoding (up to float rounding, ~1e-6): the temporal transformer
        is causal, and each chunk attends to the cached keys/values of all earlier token frames. What still grows
        with the length: those cached keys/values (2 x temporal_depth x heads x dim_head numbers per token) and the
        returned video; `iter_decode_from_codebook_indices` hands the video out chunk by chunk instead.
        """
        ids = self._ids_as_grid(ids, image_size)
        if token_frames_per_chunk is None:
            return self.decode(self._codes(ids))
        chunks = self.iter_decode_from_codebook_indices(ids, token_frames_per_chunk=token_frames_per_chunk)
        return torch.cat(list(chunks), dim=2)

    def iter_decode_from_codebook_indices(
        self, ids: Tensor, image_size: int | tuple[int, int] | None = None, *, token_frames_per_chunk: int
    ) -> Iterator[Tensor]:
        """Decode `ids` (as in `decode_from_codebook_indices`) `token_frames_per_chunk` token frames at a time,
        yielding each chunk's video frames (b, c, f_chunk, H, W): 1 + (n-1)*tp frames for the first chunk of n
        token frames, n*tp for later ones. Concatenated along dim 2 they are the whole decoded video, so a long
        video can be written out (or its frames consumed) without ever holding all of it."""
        ids = self._ids_as_grid(ids, image_size)
        return self._decode_chunks(
            lambda start, stop: self._codes(ids[:, start:stop]), ids.shape[1], token_frames_per_chunk
        )

    def _token_noise(self, quantized: Tensor, ids: Tensor, rate: float) -> Tensor:
        """`quantized` (b, t, h, w, d) with each token replaced by a uniformly random code with probability
        `rate` (no gradient flows through a replaced token)."""
        hit = torch.rand(ids.shape, device=ids.device) < rate
        if not bool(hit.any()):
            return quantized
        random_ids = torch.randint(0, self.codebook_size, ids.shape, device=ids.device)
        with torch.no_grad():
            noise = self._codes(torch.where(hit, random_ids, ids)).to(quantized.dtype)
        return torch.where(hit.unsqueeze(-1), noise, quantized)

    def _codes(self, ids: Tensor) -> Tensor:
        """ids (b, t, h, w) -> quantized latents (b, t, h, w, d)."""
        b, t, h, w = ids.shape
        codes = self.quantizer.codes_from_ids(rearrange(ids, "b t h w -> b (t h w)"))
        return rearrange(codes, "b (t h w) d -> b t h w d", t=t, h=h, w=w)

    def _ids_as_grid(self, ids: Tensor, image_size: int | tuple[int, int] | None) -> Tensor:
        """Checked ids as (b, t, h, w)."""
        self._check_ids(ids)
        if ids.ndim == 2:
            h, w = self.patch_grid(image_size)
            if ids.shape[1] % (h * w):
                raise ValueError(
                    f"flattened ids of length {ids.shape[1]} are not a whole number of {h}x{w} token frames"
                )
            ids = rearrange(ids, "b (t h w) -> b t h w", h=h, w=w)
        elif ids.ndim != 4:
            raise ValueError(f"codebook ids must be (b, t, h, w) or (b, t*h*w), got shape {tuple(ids.shape)}")
        b, t, h, w = ids.shape
        if exists(self.image_size) and (h, w) != self.patch_grid():
            raise ValueError(
                f"codebook ids are on a {h}x{w} token grid, this CViViT was built for image_size={self.image_size} "
                f"(a {self.patch_grid()[0]}x{self.patch_grid()[1]} grid)"
            )
        return ids

    # ------------------------------------------------------------------ losses

    def _discriminator_frames(self, video: Tensor, recon: Tensor, mask: Tensor | None) -> tuple[Tensor, Tensor]:
        """One random real (unpadded) frame per clip for the discriminator / perceptual loss: (b, c, h, w) each."""
        b, _, f = video.shape[:3]
        weights = mask.float() if exists(mask) else torch.ones(b, f, device=video.device)
        index = torch.multinomial(weights.clamp(min=1e-6), 1).squeeze(1)
        batch = torch.arange(b, device=video.device)
        return video[batch, :, index], recon[batch, :, index]

    def _discr_logits(self, images: Tensor, frozen: bool) -> Tensor:
        if not frozen:
            return self.discr(images)
        # generator step: gradients reach the images but never the discriminator's weights
        params = {name: p.detach() for name, p in self.discr.named_parameters()}
        return functional_call(self.discr, params, (images,))

    @property
    def adversarial_active(self) -> bool:
        """Whether the adversarial loss is on: a discriminator exists and the warm-up has passed."""
        return (
            self.discr is not None
            and self.adversarial_loss_weight > 0
            and int(self.gan_step) >= self.discr_start_step
        )

    def forward(
        self,
        video: Tensor,
        mask: Tensor | None = None,
        return_recons: bool = False,
        return_recons_only: bool = False,
        return_discr_loss: bool = False,
        apply_grad_penalty: bool = True,
        return_only_codebook_ids: bool = False,
        return_loss_breakdown: bool = False,
        grad_penalty_scale: float = 1.0,
        decoder_only: bool = False,
        decoder_token_noise: float | None = None,
    ):
        """See the class docstring. `mask` (b, f) bool marks real frames of padded clips: padded frames enter
        no loss, no codebook update and no discriminator input. `grad_penalty_scale` multiplies the R1 penalty
        (StyleGAN2's lazy regularisation: a trainer applying it every N steps passes N).

        `decoder_only=True` trains the decoder alone: the encoder and the codebook run without gradients and
        without codebook updates, so the ids of every clip (and a MaskGit trained on them) stay valid, and the
        quantizer's loss is left out. `decoder_token_noise` overrides the model's rate for this call."""
        if decoder_token_noise is not None:
            check_token_noise(decoder_token_noise)
        noise = self.decoder_token_noise if decoder_token_noise is None else float(decoder_token_noise)
        video, is_image = self._as_video(video)
        if exists(mask):
            if mask.dtype != torch.bool or mask.shape != video.shape[:1] + video.shape[2:3]:
                raise ValueError(
                    f"mask must be bool (batch, frames) = {tuple(video.shape[:1] + video.shape[2:3])}, "
                    f"got {mask.dtype} {tuple(mask.shape)}"
                )
            if not bool(mask.any(dim=1).all()):
                empty = (~mask.any(dim=1)).nonzero().flatten().tolist()
                raise ValueError(f"mask marks no real frame for batch item(s) {empty}: every clip needs at least one")
            if bool(mask.all()):
                mask = None  # nothing padded: the plain losses are the same and cheaper
        token_mask = self.token_frame_mask(mask) if exists(mask) else None

        if return_discr_loss:
            if self.discr is None:
                raise ValueError("return_discr_loss=True needs a discriminator: build CViViT with use_gan=True")
            # the tokenizer is only an input here: no graph, and no second codebook update for this batch
            with torch.no_grad(), _quantizer_frozen(self.quantizer):
                recon = self.decode(self.quantize(self.encode(video), token_mask)[0])
            real, fake = self._discriminator_frames(video, recon, mask)
            if apply_grad_penalty:
                real = real.detach().requires_grad_()
            real_logits, fake_logits = self.discr(real), self.discr(fake)
            discr_loss_fn = hinge_discr_loss if self.gan_loss == "hinge" else bce_discr_loss
            loss = discr_loss_fn(fake_logits, real_logits)
            if apply_grad_penalty and self.grad_penalty_weight > 0:
                penalty = gradient_penalty(real, real_logits)
                loss = loss + self.grad_penalty_weight * grad_penalty_scale * penalty
            recon_out = recon.squeeze(2) if is_image else recon
            return (loss, recon_out) if return_recons else loss

        if decoder_only:
            if self.quantizer.awaits_init:
                raise ValueError(
                    "decoder_only=True trains the decoder of a trained tokenizer, but this one's codebook was never "
                    "initialised (no training batch has passed through it yet): train it whole first"
                )
            with torch.no_grad(), _quantizer_frozen(self.quantizer):
                quantized, ids, _ = self.quantize(self.encode(video), token_mask)
            aux_loss = quantized.new_zeros(())
        else:
            quantized, ids, aux_loss = self.quantize(self.encode(video), token_mask)
        if return_only_codebook_ids:
            return ids

        if self.training and torch.is_grad_enabled() and noise > 0:
            quantized = self._token_noise(quantized, ids, noise)
        recon = self.decode(quantized)
        recon_out = recon.squeeze(2) if is_image else recon
        if return_recons_only:
            return recon_out

        if exists(mask):
            per_frame = (recon - video).pow(2).mean(dim=(1, 3, 4))  # (b, f)
            recon_loss = per_frame[mask].mean()
        else:
            recon_loss = F.mse_loss(recon, video)

        usage, perplexity = codebook_stats(ids, self.codebook_size, token_mask)
        breakdown = {
            "recon": recon_loss.detach(),
            "quantizer": aux_loss.detach(),
            "codebook_usage": usage,
            "codebook_perplexity": perplexity,
        }
        loss = recon_loss + aux_loss

        training = self.training and torch.is_grad_enabled()
        adversarial = training and self.adversarial_active
        if training:
            self.gan_step += 1

        if self.perceptual_network is not None and self.perceptual_loss_weight > 0 or adversarial:
            real_frames, fake_frames = self._discriminator_frames(video, recon, mask)

        if self.perceptual_network is not None and self.perceptual_loss_weight > 0:
            with torch.no_grad():
                real_features = self.perceptual_network(real_frames)
            perceptual = F.mse_loss(self.perceptual_network(fake_frames), real_features)
            breakdown["perceptual"] = perceptual.detach()
            loss = loss + self.perceptual_loss_weight * perceptual

        # the adversarial term needs gradients for its adaptive weight: training only
        if adversarial:
            gen_loss_fn = hinge_gen_loss if self.gan_loss == "hinge" else bce_gen_loss
            gen_loss = gen_loss_fn(self._discr_logits(fake_frames, frozen=True))
            weight = adaptive_weight(loss, gen_loss, self.pixel_head.last_layers())
            breakdown["adversarial"] = gen_loss.detach()
            breakdown["adaptive_weight"] = weight
            loss = loss + self.adversarial_loss_weight * weight * gen_loss

        outputs = (loss, recon_out) if return_recons else (loss,)
        if return_loss_breakdown:
            outputs = outputs + (breakdown,)
        return outputs if len(outputs) > 1 else loss

    # ------------------------------------------------------------------ parameters and files

    def generator_parameters(self):
        """Parameters of the tokenizer proper (everything but the discriminator)."""
        return [p for name, p in self.named_parameters() if not name.startswith("discr.") and p.requires_grad]

    def decoder_parameters(self):
        """Parameters of the decoder alone (temporal and spatial transformers, their position bias, the pixel
        head): what `forward(..., decoder_only=True)` trains."""
        return [p for name in self._DECODER_MODULES for p in getattr(self, name).parameters() if p.requires_grad]

    # tensors renamed since the first release, and the config those weights were trained under
    _RENAMED = (("to_first_frame_pixels.", "pixel_head.to_first."), ("to_rest_pixels.", "pixel_head.to_rest."))

    @classmethod
    def upgrade_config(cls, config: dict) -> dict:
        """Configs saved before the conv pixel head, the data-initialised codebook and the GAN warm-up existed
        rebuild the model they were trained as: linear head, random codebook, adversarial loss from step 0; those
        saved before `first_frame` existed, an image first frame."""
        if "pixel_head" not in config:
            config.update(pixel_head="linear", kmeans_init=False, threshold_ema_dead_code=0.0, discr_start_step=0)
        config.setdefault("first_frame", "image")  # saved before the first frame could be a tubelet
        return config

    @classmethod
    def upgrade_state_shapes(cls, shapes: dict) -> dict:
        """Tensor names (and shapes) of older weights as this version names them (see `_upgrade_state_dict`)."""
        out = {}
        for name, shape in shapes.items():
            for old, new in cls._RENAMED:
                head, found, tail = name.partition(old)
                if found and (not head or head.endswith(".")):
                    name = head + new + tail
                    out.setdefault(head + "gan_step", ())
            out[name] = shape
        return out

    def non_averaged_state_names(self) -> list[str]:
        """Parameter and buffer names that a weight average (EMA) must copy rather than average.

        The encoder and the quantizer: the codebook is already an exponential average of the encoder's outputs
        (kept unit-norm for cosine similarity, re-seeded where codes die), fitted to the encoder as it is trained.
        An averaged encoder would map clips onto a codebook it was never fitted to (on the glyph benchmark the EMA
        encoder used 44% of the codes where the trained one used 67%). So an EMA copy holds the trained encoder and
        codebook, gives exactly the trained ids, and averages only the decoder. Step counters are copied too.
        """
        prefixes = tuple(f"{name}." for name in self._ENCODER_MODULES)
        names = [name for name, _ in self.named_parameters() if name.startswith(prefixes)]
        names += [name for name, _ in self.named_buffers() if name.startswith(prefixes)]
        return names + ["gan_step"]

    _ENCODER_MODULES = ("to_first_frame_tokens", "to_rest_tokens", "enc_spatial_bias", "enc_spatial", "enc_temporal",
                        "quantizer")
    _DECODER_MODULES = ("dec_temporal", "dec_spatial", "dec_spatial_bias", "pixel_head")

    def discriminator_parameters(self):
        return list(self.discr.parameters()) if self.discr is not None else []

    def load(self, path: str | Path, strict: bool = True):
        """Load weights saved by `save`, `save_pretrained` or a trainer checkpoint (never executes pickled code)."""
        state = load_state_dict_file(path)
        state = state.get("model", state) if isinstance(state.get("model", None), dict) else state
        self.load_state_dict(state, strict=strict)
        return self

    def save(self, path: str | Path):
        """Write the weights to a safetensors file atomically (temp file + rename), with a checksum."""
        atomic_save_safetensors(self, path)


def check_token_noise(value, name: str = "decoder_token_noise") -> None:
    """A probability of replacing a token by a random code: a real number in [0, 1)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= value < 1.0:
        raise ValueError(f"{name} must lie in [0, 1), got {value!r}")


def _check_chunk_size(token_frames_per_chunk) -> None:
    if isinstance(token_frames_per_chunk, bool) or not isinstance(token_frames_per_chunk, int):
        raise TypeError(f"token_frames_per_chunk must be an int or None, got {type(token_frames_per_chunk).__name__}")
    if token_frames_per_chunk < 1:
        raise ValueError(f"token_frames_per_chunk must be >= 1 or None, got {token_frames_per_chunk}")


@contextlib.contextmanager
def _quantizer_frozen(quantizer: nn.Module):
    """Run the quantizer in eval mode (no EMA codebook update), restoring its mode afterwards."""
    was_training = quantizer.training
    quantizer.eval()
    try:
        yield
    finally:
        quantizer.train(was_training)


@torch.no_grad()
def codebook_stats(ids: Tensor, codebook_size: int, token_mask: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """(fraction of the codebook used, perplexity of the code histogram) over ids (b, t, h, w).

    `token_mask` (b, t) leaves padded token frames out. Perplexity is exp(entropy): 1 when a single code is
    used, `codebook_size` when all are used equally often.
    """
    if exists(token_mask):
        ids = ids[token_mask]
    counts = torch.bincount(ids.flatten(), minlength=codebook_size).float()
    probs = counts / counts.sum().clamp(min=1)
    entropy = -(probs * probs.clamp(min=1e-12).log()).sum()
    return (counts > 0).float().mean(), entropy.exp()


def _upgrade_state_dict(module, state_dict, prefix, *args):
    """Weights saved before the pixel head and the GAN warm-up counter existed still load."""
    for old, new in CViViT._RENAMED:
        for key in [k for k in state_dict if k.startswith(prefix + old)]:
            state_dict[prefix + new + key[len(prefix + old) :]] = state_dict.pop(key)
    state_dict.setdefault(prefix + "gan_step", torch.zeros((), dtype=torch.long))


_warned_no_vgg = False


def _warn_no_vgg_once():
    global _warned_no_vgg
    if _warned_no_vgg:
        return
    _warned_no_vgg = True
    warnings.warn(
        "CViViT(perceptual_network='auto'): torchvision or its VGG16 ImageNet weights "
        f"({Path(torch.hub.get_dir()) / 'checkpoints' / 'vgg16-397923af.pth'}) are not available, so this tokenizer "
        "trains WITHOUT a perceptual loss. Put the weights file there, pass perceptual_network=<any module mapping "
        "images to features>, or perceptual_network=None to silence this warning.",
        stacklevel=3,
    )


def _silence_vq_warnings():
    warnings.filterwarnings("ignore", message=".*torch.cuda.amp.autocast.*")


_silence_vq_warnings()
