"""Precision switches: fp32 matmuls through oneDNN's bf16 kernels, bf16 autocast around the codebook search."""

import pytest
import torch
from helpers import tiny_cvivit

from phenaki_pytorch import fp32_matmul_precision
from phenaki_pytorch.precision import bf16_matmul_error_ratio, resolve_fp32_matmul
from phenaki_pytorch.training import CViViTTrainer

backend = getattr(torch.backends.mkldnn, "matmul", None)
needs_switch = pytest.mark.skipif(
    backend is None or not hasattr(backend, "fp32_precision"), reason="torch has no oneDNN fp32 precision switch"
)


@needs_switch
def test_context_sets_and_restores_the_switch():
    before = backend.fp32_precision
    with fp32_matmul_precision("bf16"):
        assert backend.fp32_precision == "bf16"
        with fp32_matmul_precision("ieee"):
            assert backend.fp32_precision == "ieee"
        assert backend.fp32_precision == "bf16"
    assert backend.fp32_precision == before
    with pytest.raises(RuntimeError), fp32_matmul_precision("bf16"):
        raise RuntimeError("boom")
    assert backend.fp32_precision == before


def test_bad_settings_are_named():
    with pytest.raises(ValueError, match="precision must be 'ieee' or 'bf16', got 'fp16'"):
        with fp32_matmul_precision("fp16"):
            pass
    with pytest.raises(ValueError, match="fp32_matmul must be one of"):
        resolve_fp32_matmul("fast")
    with pytest.raises(ValueError, match="fp32_matmul must be one of"):
        CViViTTrainer(tiny_cvivit(), dataset=[torch.rand(3, 5, 16, 16)] * 4, fp32_matmul="fast")


def test_auto_is_ieee_off_cpu_and_explicit_settings_pass_through():
    assert resolve_fp32_matmul("auto", "cuda") == "ieee"
    assert resolve_fp32_matmul("ieee") == "ieee"
    assert resolve_fp32_matmul("bf16") == "bf16"


def _loss_and_grads(model, video):
    model.zero_grad()
    loss = model(video)
    loss.backward()
    return loss.detach(), torch.cat([p.grad.flatten() for p in model.generator_parameters() if p.grad is not None])


@needs_switch
def test_auto_only_picks_bf16_kernels_that_keep_fp32_accuracy():
    """Where 'auto' resolves to 'bf16', a tokenizer's loss and gradients match plain fp32 closely.

    bf16 autocast moves the gradients by about 1e-2 (relative norm); the bound here is 1e-4.
    """
    if resolve_fp32_matmul("auto") != "bf16":
        pytest.skip("this CPU does not get the bf16 kernels by default")
    assert bf16_matmul_error_ratio() < 10
    torch.manual_seed(0)
    model = tiny_cvivit(use_gan=False)
    model.quantizer.eval()  # no codebook EMA update between the two passes
    video = torch.rand(2, 3, 5, 16, 16)
    with fp32_matmul_precision("ieee"):
        loss_ref, grads_ref = _loss_and_grads(model, video)
    with fp32_matmul_precision("bf16"):
        loss_bf16, grads_bf16 = _loss_and_grads(model, video)
    assert torch.allclose(loss_bf16, loss_ref, rtol=1e-5)
    assert ((grads_bf16 - grads_ref).norm() / grads_ref.norm()).item() < 1e-4


def test_codebook_search_runs_in_fp32_under_autocast():
    torch.manual_seed(0)
    model = tiny_cvivit(use_gan=False).eval()  # no codebook update between the two searches compared
    latents = torch.randn(2, 3, 2, 2, model.dim)
    seen = {}
    hook = model.quantizer.quantizer.register_forward_pre_hook(lambda m, args: seen.update(dtype=args[0].dtype))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        _, ids_autocast, _ = model.quantize(latents.bfloat16())
    hook.remove()
    assert seen["dtype"] == torch.float32
    assert torch.equal(ids_autocast, model.quantize(latents.bfloat16().float())[1])


def test_trainer_uses_fused_adamw_and_leaves_the_switch_alone(tmp_path):
    videos = [torch.rand(3, 5, 16, 16) for _ in range(4)]
    before = backend.fp32_precision if backend is not None and hasattr(backend, "fp32_precision") else None
    trainer = CViViTTrainer(
        tiny_cvivit(),
        dataset=videos,
        num_frames=5,
        batch_size=2,
        num_train_steps=1,
        valid_frac=0.25,
        results_folder=tmp_path,
        fp32_matmul="bf16",
        optimizer="adamw",
    )
    assert trainer.fp32_matmul == "bf16"
    optimizer = getattr(trainer.optimizers["generator"], "optimizer", trainer.optimizers["generator"])
    assert optimizer.defaults.get("fused") is True
    seen = []
    original = trainer.unwrapped_model.forward

    def spy(*args, **kwargs):
        seen.append(backend.fp32_precision if before is not None else None)
        return original(*args, **kwargs)

    trainer.unwrapped_model.forward = spy
    logs = trainer.train_step()
    assert torch.isfinite(torch.tensor(logs["loss"]))
    if before is not None:
        assert seen and set(seen) == {"bf16"}  # forward passes ran with the trainer's setting
        assert backend.fp32_precision == before  # and the caller's setting is back afterwards


def test_attention_runs_in_fp32_under_cpu_autocast():
    import torch.nn.functional as F

    from phenaki_pytorch.attention import AlibiPositionBias, Attention, sdpa

    torch.manual_seed(0)
    q, k, v = (torch.randn(3, 2, 5, 8).bfloat16() for _ in range(3))
    bias = AlibiPositionBias(2, causal=True)(5)  # (h, n, n) with -inf above the diagonal
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = sdpa(q, k, v, bias)
    expected = F.scaled_dot_product_attention(q.float(), k.float(), v.float(), attn_mask=bias)
    assert out.dtype == torch.float32
    assert torch.allclose(out, expected, atol=1e-6)

    # a learned bias keeps its gradient, a padding mask still masks, under autocast as without it
    attn = Attention(16, dim_head=8, heads=2)
    x = torch.randn(2, 6, 16)
    learned = torch.randn(2, 6, 6, requires_grad=True)
    mask = torch.tensor([[True] * 6, [True] * 4 + [False] * 2])
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = attn(x, attn_bias=learned, mask=mask)
    y.float().sum().backward()
    assert learned.grad is not None and learned.grad.abs().sum() > 0
    reference = attn(x, attn_bias=learned, mask=mask)
    assert torch.allclose(y.float(), reference, atol=5e-2)
    x_changed = x.clone()
    x_changed[1, 4:] = 100.0  # padded keys of the second sample
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y_changed = attn(x_changed, attn_bias=learned, mask=mask)
    assert torch.equal(y_changed[1, :4], y[1, :4])


def test_native_bf16_answers_per_device():
    from phenaki_pytorch import native_bf16

    assert native_bf16("meta") is False
    if not torch.cuda.is_available():
        assert native_bf16("cuda") is False
    assert isinstance(native_bf16(torch.device("cpu")), bool)
    with pytest.raises(TypeError):
        native_bf16(3)
