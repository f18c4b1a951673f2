"""Muon on a model's hidden weight matrices and AdamW on the rest, as one optimizer.

    from phenaki_pytorch.training import MuonAdamW, muon_param_groups
    optimizer = MuonAdamW(muon_param_groups(phenaki.maskgit), lr=1e-3, weight_decay=0.01)
    loss = phenaki(videos=videos, texts=texts); loss.backward(); optimizer.step(); optimizer.zero_grad()

Muon (Keller Jordan, 2024) replaces each matrix's momentum by the nearest semi-orthogonal matrix (a few
Newton-Schulz iterations), so every direction of the update moves at the same rate. Its step is scaled by
0.2 * sqrt(max(rows, cols)) so that its RMS matches AdamW's (Moonlight, Liu et al. 2025): one learning rate and
one weight decay serve both kinds of parameter. Embeddings, norms, biases and output heads (`to_logits`) stay
on AdamW, as Muon's authors advise.

`torch.optim.Muon` runs the iteration in bfloat16, which is emulated, and slow, on CPUs without native bf16;
here it runs in float32 on the CPU and in bfloat16 on CUDA, and matrices of one shape are orthogonalised in one
batched matmul.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable

import torch
from torch import Tensor, nn
from torch.optim.adam import adam

from ..typecheck import typechecked

__all__ = ["MuonAdamW", "muon_param_groups", "newton_schulz"]

OPTIMIZERS = ("muon", "adamw")  # the trainers' `optimizer=` choices: MuonAdamW, or AdamW alone
# the quintic iteration's coefficients from Muon's reference implementation
NS_COEFFICIENTS = (3.4445, -4.7750, 2.0315)
MIN_MUON_DIM = 16  # smaller matrices (e.g. a 3-input position MLP) stay on AdamW


def newton_schulz(grads: Tensor, steps: int = 5, dtype: torch.dtype | None = None) -> Tensor:
    """An approximately semi-orthogonal matrix U V^T for each (…, m, n) matrix U S V^T of `grads`."""
    a, b, c = NS_COEFFICIENTS
    dtype = dtype or (torch.bfloat16 if grads.is_cuda else torch.float32)
    x = grads.to(dtype)
    wide = x.shape[-2] <= x.shape[-1]
    if not wide:
        x = x.mT
    x = x / x.norm(dim=(-2, -1), keepdim=True).clamp(min=1e-7)
    for _ in range(steps):
        gram = x @ x.mT
        poly = b * gram + c * (gram @ gram)
        x = a * x + poly @ x
    return x if wide else x.mT


@typechecked
def muon_param_groups(module: nn.Module, exclude: Iterable[str] = ("to_logits",), **group_options) -> list[dict]:
    """`module`'s trainable parameters as MuonAdamW groups: the weights of its `nn.Linear` layers (at least
    16 x 16, not under a name in `exclude`) with `muon=True`, everything else with `muon=False`.
    `group_options` (e.g. `lr=`) go to both groups."""
    excluded = tuple(exclude)
    matrices: dict[int, Tensor] = {}
    for name, layer in module.named_modules():
        if not isinstance(layer, nn.Linear) or any(part in excluded for part in name.split(".")):
            continue
        weight = layer.weight
        if weight.requires_grad and weight.ndim == 2 and min(weight.shape) >= MIN_MUON_DIM:
            matrices[id(weight)] = weight
    rest = [p for p in module.parameters() if p.requires_grad and id(p) not in matrices]
    groups = []
    if matrices:
        groups.append({"params": list(matrices.values()), "muon": True, **group_options})
    if rest:
        groups.append({"params": rest, "muon": False, **group_options})
    return groups


class MuonAdamW(torch.optim.Optimizer):
    """One optimizer: Muon for the groups marked `muon=True` (2-d weights only), AdamW for the others.

    lr, weight_decay  shared by both (decoupled decay, as AdamW); Muon's step is RMS-matched to AdamW's
    betas, eps         AdamW's
    momentum, nesterov Muon's momentum (0.95, Nesterov) before orthogonalisation
    ns_steps           Newton-Schulz iterations per step (5)
    """

    @typechecked
    def __init__(
        self,
        params,
        lr: float = 1e-3,
        weight_decay: float = 0.01,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        momentum: float = 0.95,
        nesterov: bool = True,
        ns_steps: int = 5,
    ):
        if not lr >= 0.0 or not weight_decay >= 0.0:
            raise ValueError(f"lr and weight_decay must be >= 0, got {lr} and {weight_decay}")
        if len(betas) != 2 or not all(0.0 <= beta < 1.0 for beta in betas):
            raise ValueError(f"betas must be two numbers in [0, 1), got {betas}")
        if not 0.0 <= momentum < 1.0:
            raise ValueError(f"momentum must lie in [0, 1), got {momentum}")
        if isinstance(ns_steps, bool) or not isinstance(ns_steps, int) or ns_steps < 1:
            raise ValueError(f"ns_steps must be an int >= 1, got {ns_steps!r}")
        defaults = dict(lr=lr, weight_decay=weight_decay, betas=tuple(betas), eps=eps, momentum=momentum,
                        nesterov=nesterov, ns_steps=ns_steps, muon=False)
        super().__init__(params, defaults)
        for group in self.param_groups:
            if group["muon"]:
                bad = [tuple(p.shape) for p in group["params"] if p.ndim != 2]
                if bad:
                    raise ValueError(f"a muon=True group holds only 2-d weights, got shapes {bad}")

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            params = [p for p in group["params"] if p.grad is not None]
            if not params:
                continue
            if group["muon"]:
                self._muon(group, params)
            else:
                self._adamw(group, params)
        return loss

    def _muon(self, group: dict, params: list[Tensor]) -> None:
        lr, decay, momentum = group["lr"], group["weight_decay"], group["momentum"]
        by_shape: dict[tuple, list[tuple[Tensor, Tensor]]] = defaultdict(list)
        for p in params:
            if p.grad.shape != p.shape or p.grad.ndim != 2:  # e.g. a sharded flat parameter
                raise RuntimeError(
                    f"MuonAdamW needs each Muon parameter's whole 2-d gradient, got {tuple(p.grad.shape)} for a "
                    f"{tuple(p.shape)} weight; under FSDP train with optimizer='adamw'"
                )
            state = self.state[p]
            if "momentum_buffer" not in state:
                state["momentum_buffer"] = torch.zeros_like(p, memory_format=torch.preserve_format)
            buf = state["momentum_buffer"]
            buf.lerp_(p.grad, 1.0 - momentum)
            update = p.grad.lerp(buf, momentum) if group["nesterov"] else buf
            by_shape[(tuple(p.shape), p.device)].append((p, update))
        for (shape, _), items in by_shape.items():
            ortho = newton_schulz(torch.stack([u for _, u in items]), group["ns_steps"])
            scale = 0.2 * math.sqrt(max(shape))
            for (p, _), o in zip(items, ortho.unbind(0)):
                if decay:
                    p.mul_(1.0 - lr * decay)
                p.add_(o.to(p.dtype), alpha=-lr * scale)

    def _adamw(self, group: dict, params: list[Tensor]) -> None:
        """torch's own AdamW arithmetic over the whole group at once (fused kernels where torch has them, else
        its multi-tensor path): one call instead of a Python loop of small ops per tensor."""
        beta1, beta2 = group["betas"]
        exp_avgs, exp_avg_sqs, steps = [], [], []
        for p in params:
            state = self.state[p]
            if "step" not in state:
                state["step"] = torch.zeros((), dtype=torch.float32, device=p.device if _fusable(p) else "cpu")
                state["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                state["exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)
            exp_avgs.append(state["exp_avg"])
            exp_avg_sqs.append(state["exp_avg_sq"])
            steps.append(state["step"])
        fused = all(_fusable(p) and s.device == p.device for p, s in zip(params, steps))
        adam(
            params, [p.grad for p in params], exp_avgs, exp_avg_sqs, [], steps,
            fused=True if fused else None, foreach=None, decoupled_weight_decay=True,
            amsgrad=False, beta1=beta1, beta2=beta2, lr=group["lr"], weight_decay=group["weight_decay"],
            eps=group["eps"], maximize=False,
        )


def _fusable(p: Tensor) -> bool:
    """Whether torch's fused Adam kernel takes this parameter (floating point, on the CPU or CUDA)."""
    return p.device.type in ("cpu", "cuda") and p.dtype in (torch.float32, torch.float16, torch.bfloat16, torch.float64)
