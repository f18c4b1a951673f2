"""Memory options: gradient checkpointing of the transformers, and C-ViViT decoding in chunks of token frames."""

import copy

import pytest
import torch
from ema_pytorch import EMA
from helpers import TEXT_DIM, tiny_critic, tiny_cvivit, tiny_maskgit, tiny_phenaki

import phenaki_pytorch.attention as attention
from phenaki_pytorch import CViViT, KVCache, Transformer, set_gradient_checkpointing


def saved_tensor_count(fn) -> int:
    """How many tensors autograd saves for the backward while `fn` runs."""
    count = 0

    def pack(t):
        nonlocal count
        count += 1
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        fn()
    return count


def grads(model) -> dict:
    return {name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None}


def assert_same_grads(a: dict, b: dict):
    assert a.keys() == b.keys() and len(a) > 0
    for name in a:
        torch.testing.assert_close(a[name], b[name], rtol=1e-5, atol=1e-6, msg=name)


# ---------------------------------------------------------------- gradient checkpointing


@pytest.mark.parametrize("dropout", [0.0, 0.3])
@pytest.mark.parametrize("precomputed_kv", [False, True])
def test_maskgit_checkpointed_gradients_equal_plain(dropout, precomputed_kv):
    torch.manual_seed(0)
    plain = tiny_maskgit(attn_dropout=dropout, ff_dropout=dropout).train()
    checkpointed = copy.deepcopy(plain)
    assert set_gradient_checkpointing(checkpointed) == 1
    ids = torch.randint(0, 65, (2, 16))  # mask id included
    text = torch.randn(2, 5, TEXT_DIM)
    text_mask = torch.tensor([[True] * 5, [True, True, False, False, False]])
    video_mask = torch.ones(2, 16, dtype=torch.bool)
    video_mask[1, 12:] = False  # padded tokens: a self-attention key mask

    def loss_of(model, seed=1):
        torch.manual_seed(seed)  # dropout masks
        cond = dict(text_embeds=text, text_mask=text_mask)
        if precomputed_kv:  # computed outside the transformer, as Phenaki does: gradients must still reach to_kv
            cond = dict(context_kv=model.context_kv(text, text_mask))
        logits = model(ids, video_patch_shape=(2, 2), video_mask=video_mask, cond_drop_prob=0.0, **cond)
        return logits.square().mean()

    loss_of(plain).backward()
    loss_checkpointed = loss_of(checkpointed)
    loss_checkpointed.backward()
    assert_same_grads(grads(plain), grads(checkpointed))
    assert any("to_kv" in name for name in grads(checkpointed))
    if dropout:  # dropout really acts, so equal gradients mean the recomputation replayed the same masks
        assert not torch.allclose(loss_of(copy.deepcopy(plain), seed=2), loss_checkpointed)


def test_checkpointing_keeps_fewer_activations():
    torch.manual_seed(0)
    maskgit = tiny_maskgit(depth=3).train()
    ids, text = torch.randint(0, 64, (2, 16)), torch.randn(2, 5, TEXT_DIM)
    plain = saved_tensor_count(lambda: maskgit(ids, text_embeds=text))
    set_gradient_checkpointing(maskgit)
    checkpointed = saved_tensor_count(lambda: maskgit(ids, text_embeds=text))
    assert checkpointed < plain / 3


@pytest.mark.parametrize("dropout", [0.0, 0.2])
def test_cvivit_checkpointed_gradients_equal_plain(dropout):
    torch.manual_seed(0)
    plain = tiny_cvivit(attn_dropout=dropout, ff_dropout=dropout, discr_start_step=0).train()
    checkpointed = copy.deepcopy(plain)  # same weights and codebook state before either updates its codebook
    set_gradient_checkpointing(checkpointed)
    video = torch.rand(2, 3, 5, 16, 16)

    def backward(model):
        torch.manual_seed(1)
        loss = model(video)
        loss.backward()
        return loss

    torch.testing.assert_close(backward(plain), backward(checkpointed))
    assert_same_grads(grads(plain), grads(checkpointed))


def test_phenaki_loss_checkpointed_gradients_equal_plain():
    torch.manual_seed(0)
    plain = tiny_phenaki(critic=tiny_critic(), maskgit=tiny_maskgit(attn_dropout=0.1, ff_dropout=0.1)).train()
    checkpointed = copy.deepcopy(plain)
    # MaskGit and TokenCritic trunks, and CViViT's four transformers
    assert set_gradient_checkpointing(checkpointed) == 6
    videos = torch.rand(2, 3, 5, 16, 16)

    def backward(model):
        torch.manual_seed(1)
        loss = model(videos, ["a red square", "a blue circle"], generator=torch.Generator().manual_seed(3))
        loss.backward()
        return loss

    torch.testing.assert_close(backward(plain), backward(checkpointed))
    assert_same_grads(grads(plain.maskgit), grads(checkpointed.maskgit))
    assert_same_grads(grads(plain.critic), grads(checkpointed.critic))


def test_eval_and_no_grad_do_not_checkpoint(monkeypatch):
    torch.manual_seed(0)
    maskgit = tiny_maskgit(attn_dropout=0.1)
    ids, text = torch.randint(0, 64, (2, 16)), torch.randn(2, 5, TEXT_DIM)
    reference = maskgit.eval()(ids, text_embeds=text)
    set_gradient_checkpointing(maskgit)

    def refuse(*args, **kwargs):
        raise AssertionError("checkpoint called outside a training forward with gradients")

    monkeypatch.setattr(attention, "checkpoint", refuse)
    torch.testing.assert_close(maskgit.eval()(ids, text_embeds=text), reference, rtol=0, atol=0)
    maskgit.train()
    with torch.no_grad():
        maskgit(ids, text_embeds=text)
    with pytest.raises(AssertionError, match="checkpoint called"):  # the patch is live: training does call it
        maskgit(ids, text_embeds=text)


def test_set_gradient_checkpointing_off_and_bad_arguments():
    cvivit = tiny_cvivit(gradient_checkpointing=True)
    transformers = [m for m in cvivit.modules() if isinstance(m, Transformer)]
    assert len(transformers) == 4 and all(t.gradient_checkpointing for t in transformers)
    assert set_gradient_checkpointing(cvivit, False) == 4
    assert not any(t.gradient_checkpointing for t in transformers)
    assert cvivit.config["gradient_checkpointing"] is False
    with pytest.raises(TypeError, match="module must be a torch.nn.Module"):
        set_gradient_checkpointing("model")
    with pytest.raises(TypeError, match="enabled must be a bool"):
        set_gradient_checkpointing(cvivit, 1)


def test_gradient_checkpointing_round_trips_through_save_pretrained(tmp_path):
    cvivit = tiny_cvivit(gradient_checkpointing=True)
    assert cvivit.config["gradient_checkpointing"] is True
    loaded = CViViT.from_pretrained(cvivit.save_pretrained(tmp_path / "on"))
    assert all(m.gradient_checkpointing for m in loaded.modules() if isinstance(m, Transformer))

    switched = tiny_cvivit()
    set_gradient_checkpointing(switched)  # switched on after construction: the saved config follows
    loaded = CViViT.from_pretrained(switched.save_pretrained(tmp_path / "switched"))
    assert loaded.config["gradient_checkpointing"] is True
    assert all(m.gradient_checkpointing for m in loaded.modules() if isinstance(m, Transformer))

    loaded = CViViT.from_pretrained(tiny_cvivit().save_pretrained(tmp_path / "off"))
    assert not any(m.gradient_checkpointing for m in loaded.modules() if isinstance(m, Transformer))


@pytest.mark.parametrize("kind", ["maskgit", "critic"])
def test_maskgit_and_critic_take_gradient_checkpointing_and_save_it(tmp_path, kind):
    from phenaki_pytorch import MaskGit, TokenCritic

    cls = MaskGit if kind == "maskgit" else TokenCritic
    extra = {"dim_context": 8} if kind == "maskgit" else {}
    model = cls(num_tokens=32, max_seq_len=16, dim=16, depth=2, heads=2, dim_head=8, gradient_checkpointing=True, **extra)
    layers = [m for m in model.modules() if isinstance(m, Transformer)]
    assert layers and all(m.gradient_checkpointing for m in layers)
    loaded = cls.from_pretrained(model.save_pretrained(tmp_path / kind))
    assert loaded.config["gradient_checkpointing"] is True
    assert all(m.gradient_checkpointing for m in loaded.modules() if isinstance(m, Transformer))
    plain = cls(num_tokens=32, max_seq_len=16, dim=16, depth=2, heads=2, dim_head=8, **extra)
    assert not any(m.gradient_checkpointing for m in plain.modules() if isinstance(m, Transformer))


def test_config_without_the_key_loads_with_checkpointing_off():
    from pathlib import Path

    old = CViViT.from_pretrained(Path(__file__).parent / "fixtures" / "cvivit_v0_1")  # written before the option
    assert old.config["gradient_checkpointing"] is False
    assert not any(m.gradient_checkpointing for m in old.modules() if isinstance(m, Transformer))


# ---------------------------------------------------------------- KV cache


@pytest.mark.parametrize("capacity", [None, 11])
@pytest.mark.parametrize("causal", ["is_causal", "alibi"])
def test_transformer_in_chunks_with_kv_cache_equals_whole(capacity, causal):
    torch.manual_seed(0)
    transformer = Transformer(16, 2, dim_head=4, heads=2).eval()
    alibi = attention.AlibiPositionBias(heads=2, causal=True)
    x = torch.randn(3, 11, 16)
    with torch.no_grad():
        if causal == "is_causal":
            whole = transformer(x, is_causal=True)
        else:
            whole = transformer(x, attn_bias=alibi(11))
        cache, outputs = KVCache(capacity), []
        for start, stop in ((0, 4), (4, 5), (5, 11)):
            kwargs = dict(is_causal=True) if causal == "is_causal" else dict(attn_bias=alibi.rows(start, stop))
            outputs.append(transformer(x[:, start:stop], kv_cache=cache, **kwargs))
        assert cache.length == 11
        torch.testing.assert_close(torch.cat(outputs, dim=1), whole, rtol=1e-5, atol=1e-6)
        # without the cache, the later chunks lose their past and come out different
        alone = transformer(x[:, 5:], is_causal=True) if causal == "is_causal" else transformer(x[:, 5:], attn_bias=alibi(6))
        assert not torch.allclose(alone, whole[:, 5:], atol=1e-3)


def test_kv_cache_capacity_and_checkpointing_are_checked():
    with pytest.raises(ValueError, match="capacity"):
        KVCache(0)
    transformer = Transformer(8, 1, dim_head=4, heads=2)
    cache = KVCache(4)
    with torch.no_grad():
        transformer(torch.randn(1, 3, 8), is_causal=True, kv_cache=cache)
        with pytest.raises(ValueError, match="cannot hold 5"):
            transformer(torch.randn(1, 2, 8), is_causal=True, kv_cache=cache)
    transformer.gradient_checkpointing = True
    with pytest.raises(ValueError, match="gradient checkpointing"):
        transformer.train()(torch.randn(1, 3, 8), is_causal=True, kv_cache=KVCache())


def test_alibi_rows_are_slices_of_the_full_table():
    alibi = attention.AlibiPositionBias(heads=3, causal=True)
    torch.testing.assert_close(alibi.rows(4, 9), alibi(9)[:, 4:9, :9], rtol=0, atol=0)
    with pytest.raises(ValueError, match="start < stop"):
        alibi.rows(3, 3)


# ---------------------------------------------------------------- chunked decoding


def decoder(**overrides) -> CViViT:
    """A tiny tokenizer with a random codebook: with k-means init an untrained codebook is all zeros, every code
    decodes alike and any two decoding paths would agree trivially."""
    model = tiny_cvivit(**{"temporal_depth": 2, "kmeans_init": False, **overrides}).eval()
    codes = model._codes(torch.arange(8).view(1, 2, 2, 2))
    assert codes.flatten(0, -2).std(0).min() > 0  # distinct codes
    return model


def random_ids(cvivit, batch: int, token_frames: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    h, w = cvivit.patch_grid()
    return torch.randint(0, cvivit.codebook_size, (batch, token_frames, h, w), generator=g)


@pytest.mark.parametrize("pixel_head", ["conv", "linear"])
def test_chunked_decode_equals_whole(pixel_head):
    torch.manual_seed(0)
    cvivit = decoder(pixel_head=pixel_head, temporal_patch_size=3)
    ids = random_ids(cvivit, 2, 7)
    with torch.no_grad():
        whole = cvivit.decode_from_codebook_indices(ids)
        assert whole.shape == (2, 3, 1 + 6 * 3, 16, 16)
        for chunk in (1, 2, 3, 4, 6, 7, 50):  # 2, 3, 4, 6 do not divide 7
            chunked = cvivit.decode_from_codebook_indices(ids, token_frames_per_chunk=chunk)
            torch.testing.assert_close(chunked, whole, rtol=1e-5, atol=1e-6, msg=f"chunk {chunk}")
        flat = cvivit.decode_from_codebook_indices(ids.flatten(1), token_frames_per_chunk=3)  # flattened ids
        torch.testing.assert_close(flat, whole, rtol=1e-5, atol=1e-6)
        # the first chunk alone holds the separately patched first frame; a single token frame is an image
        one = cvivit.decode_from_codebook_indices(ids[:, :1], token_frames_per_chunk=4)
        torch.testing.assert_close(one, whole[:, :, :1], rtol=1e-5, atol=1e-6)


def test_iter_decode_yields_frames_chunk_by_chunk():
    torch.manual_seed(0)
    cvivit = decoder()  # temporal_patch_size 2
    ids = random_ids(cvivit, 1, 6)
    with torch.no_grad():
        whole = cvivit.decode_from_codebook_indices(ids)
        chunks = list(cvivit.iter_decode_from_codebook_indices(ids, token_frames_per_chunk=4))
    assert [c.shape[2] for c in chunks] == [1 + 3 * 2, 2 * 2]  # first chunk: 1 + (4-1)*tp frames, then 2 token frames
    torch.testing.assert_close(torch.cat(chunks, dim=2), whole, rtol=1e-5, atol=1e-6)
    # decoded without the first chunk's cache, the second chunk differs: the cache carries the past
    with torch.no_grad():
        alone = cvivit.decode(cvivit._codes(ids[:, 4:]), token_frames_per_chunk=2)
    assert not torch.allclose(alone[:, :, 1:], whole[:, :, -2:], atol=1e-3)  # the last token frame


def test_chunked_decode_with_the_ema_model():
    torch.manual_seed(0)
    cvivit = decoder().train()
    ema = EMA(cvivit, include_online_model=False, beta=0.5, update_after_step=0, update_every=1)
    ema.update()  # the first update copies the weights
    with torch.no_grad():
        for p in cvivit.parameters():
            p.add_(torch.randn_like(p) * 0.1)
    ema.update()  # then averages: halfway between the two
    averaged = ema.ema_model.eval()
    ids = random_ids(averaged, 2, 5)
    with torch.no_grad():
        whole = averaged.decode_from_codebook_indices(ids)
        assert not torch.allclose(whole, cvivit.eval().decode_from_codebook_indices(ids))  # really another model
        for chunk in (1, 2, 3):
            chunked = averaged.decode_from_codebook_indices(ids, token_frames_per_chunk=chunk)
            torch.testing.assert_close(chunked, whole, rtol=1e-5, atol=1e-6)


def test_chunked_decode_with_gradients_matches_whole():
    torch.manual_seed(0)
    cvivit = decoder()
    ids = random_ids(cvivit, 1, 5)
    cvivit.decode_from_codebook_indices(ids).square().mean().backward()
    whole = grads(cvivit)
    cvivit.zero_grad(set_to_none=True)
    cvivit.decode_from_codebook_indices(ids, token_frames_per_chunk=2).square().mean().backward()
    assert_same_grads(whole, grads(cvivit))


def test_bad_chunk_sizes_are_refused_at_the_call():
    cvivit = tiny_cvivit().eval()
    ids = random_ids(cvivit, 1, 3)
    with pytest.raises(ValueError, match="token_frames_per_chunk must be >= 1"):
        cvivit.decode_from_codebook_indices(ids, token_frames_per_chunk=0)
    with pytest.raises(TypeError, match="token_frames_per_chunk must be an int"):
        cvivit.iter_decode_from_codebook_indices(ids, token_frames_per_chunk=2.0)  # before any iteration
    with pytest.raises(TypeError, match="token_frames_per_chunk must be an int"):
        cvivit.decode_from_codebook_indices(ids, token_frames_per_chunk=True)
