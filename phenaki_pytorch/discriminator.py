"""StyleGAN-style discriminator and the GAN losses used to train the tokenizer.

The discriminator judges single frames (b, c, h, w). It is size-agnostic: a run
of residual blocks, each halving the resolution with an anti-aliased (blurred)
downsample, then a minibatch-standard-deviation channel and global pooling.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, autograd, nn


class Blur(nn.Module):
    """Fixed [1, 2, 1] binomial low-pass filter applied per channel (anti-aliasing)."""

    def __init__(self):
        super().__init__()
        kernel = torch.tensor([1.0, 2.0, 1.0])
        kernel = kernel[:, None] * kernel[None, :]
        self.register_buffer("kernel", (kernel / kernel.sum())[None, None], persistent=False)

    def forward(self, x: Tensor) -> Tensor:
        channels = x.shape[1]
        kernel = self.kernel.to(x.dtype).expand(channels, 1, 3, 3)
        return F.conv2d(F.pad(x, (1, 1, 1, 1), mode="reflect"), kernel, groups=channels)


class DownsampleBlock(nn.Module):
    """Two 3x3 convs and a blurred stride-2 downsample, with a 1x1 residual path."""

    def __init__(self, dim_in: int, dim_out: int, downsample: bool = True):
        super().__init__()
        self.residual = nn.Conv2d(dim_in, dim_out, 1, stride=2 if downsample else 1)
        self.net = nn.Sequential(
            nn.Conv2d(dim_in, dim_out, 3, padding=1),
            nn.LeakyReLU(0.2),
            nn.Conv2d(dim_out, dim_out, 3, padding=1),
            nn.LeakyReLU(0.2),
        )
        self.blur = Blur() if downsample else nn.Identity()
        self.down = nn.Conv2d(dim_out, dim_out, 3, stride=2, padding=1) if downsample else nn.Identity()

    def forward(self, x: Tensor) -> Tensor:
        residual = self.residual(self.blur(x))
        x = self.down(self.blur(self.net(x)))
        return (x + residual) / math.sqrt(2)


class MinibatchStd(nn.Module):
    """Appends the mean standard deviation over groups of samples as one extra channel."""

    def __init__(self, group_size: int = 4):
        super().__init__()
        self.group_size = group_size

    def forward(self, x: Tensor) -> Tensor:
        b, _, h, w = x.shape
        group = min(self.group_size, b)
        while b % group != 0:
            group -= 1
        grouped = x.reshape(group, -1, *x.shape[1:])  # (g, b/g, c, h, w)
        std = (grouped.var(dim=0, unbiased=False) + 1e-8).sqrt().mean(dim=(1, 2, 3))  # (b/g,)
        std = std.repeat(group).reshape(b, 1, 1, 1).expand(b, 1, h, w)
        return torch.cat((x, std), dim=1)


class Discriminator(nn.Module):
    """Frame discriminator: `Discriminator(channels=3, dim=32, num_blocks=4)` -> logits (b,)."""

    def __init__(self, channels: int = 3, dim: int = 32, num_blocks: int = 4, max_dim: int = 256, group_size: int = 4):
        super().__init__()
        if num_blocks < 1:
            raise ValueError(f"num_blocks must be >= 1, got {num_blocks}")
        dims = [min(dim * 2**i, max_dim) for i in range(num_blocks + 1)]
        self.to_features = nn.Sequential(nn.Conv2d(channels, dims[0], 3, padding=1), nn.LeakyReLU(0.2))
        self.blocks = nn.Sequential(*(DownsampleBlock(dims[i], dims[i + 1]) for i in range(num_blocks)))
        self.minibatch_std = MinibatchStd(group_size)
        self.final_conv = nn.Sequential(nn.Conv2d(dims[-1] + 1, dims[-1], 3, padding=1), nn.LeakyReLU(0.2))
        self.to_logit = nn.Linear(dims[-1], 1)

    def forward(self, images: Tensor) -> Tensor:
        x = self.blocks(self.to_features(images))
        x = self.final_conv(self.minibatch_std(x))
        x = x.mean(dim=(2, 3))  # global pooling keeps the discriminator size-agnostic
        return self.to_logit(x).squeeze(-1)


def hinge_discr_loss(fake_logits: Tensor, real_logits: Tensor) -> Tensor:
    return F.relu(1 - real_logits).mean() + F.relu(1 + fake_logits).mean()


def hinge_gen_loss(fake_logits: Tensor) -> Tensor:
    return -fake_logits.mean()


def bce_discr_loss(fake_logits: Tensor, real_logits: Tensor) -> Tensor:
    return F.softplus(fake_logits).mean() + F.softplus(-real_logits).mean()


def bce_gen_loss(fake_logits: Tensor) -> Tensor:
    return F.softplus(-fake_logits).mean()


def gradient_penalty(images: Tensor, logits: Tensor) -> Tensor:
    """R1 penalty: squared norm of d logits / d real images. `images` must require grad."""
    (grads,) = autograd.grad(
        outputs=logits.sum(),
        inputs=images,
        create_graph=True,
    )
    return grads.flatten(1).pow(2).sum(dim=1).mean()


def adaptive_weight(
    nll_loss: Tensor, gen_loss: Tensor, last_layers: Tensor | list[Tensor], max_weight: float = 1e4
) -> Tensor:
    """VQGAN's balance: ||grad nll|| / ||grad gan|| at the decoder's output layer(s), detached."""
    layers = [last_layers] if isinstance(last_layers, Tensor) else list(last_layers)

    def grad_norm(loss: Tensor) -> Tensor:
        grads = autograd.grad(loss, layers, retain_graph=True, allow_unused=True)
        squares = [g.pow(2).sum() for g in grads if g is not None]
        return torch.stack(squares).sum().sqrt() if squares else loss.new_zeros(())

    weight = grad_norm(nll_loss) / (grad_norm(gen_loss) + 1e-4)
    return weight.clamp(max=max_weight).detach()
