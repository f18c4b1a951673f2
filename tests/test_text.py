import copy
import pickle

import pytest
import torch
from torch import nn

from phenaki_pytorch.text import (
    DEFAULT_TEXT_ENCODER,
    CallableTextEncoder,
    HFTextEncoder,
    TextEncoder,
    TextEncoderLoadError,
    get_text_encoder,
)

DIM = 32  # hidden size of the tiny T5 built in conftest.py


class ForwardCounter:
    """Counts forward calls of the loaded HF model (and the batch sizes it saw)."""

    def __init__(self, encoder: HFTextEncoder):
        encoder._load()
        self.batches: list[int] = []
        self.handle = encoder._state.model.register_forward_pre_hook(self._hook, with_kwargs=True)

    def _hook(self, module, args, kwargs):
        self.batches.append(kwargs["input_ids"].shape[0])

    @property
    def calls(self) -> int:
        return len(self.batches)


@pytest.fixture
def encoder(tiny_t5_dir):
    return HFTextEncoder(tiny_t5_dir, max_length=64)


def test_encode_shapes_mask_and_padding(encoder):
    from transformers import AutoTokenizer

    texts = ["a red square moving left", "a blue circle", "a green triangle moving right"]
    embeds, mask = encoder.encode(texts)

    token_counts = [len(ids) for ids in AutoTokenizer.from_pretrained(encoder.name_or_path)(texts).input_ids]
    assert embeds.dtype == torch.float32 and mask.dtype == torch.bool
    assert embeds.shape == (3, max(token_counts), DIM)
    assert mask.shape == (3, max(token_counts))
    assert mask.sum(-1).tolist() == token_counts
    # False exactly on the padded tail, and those positions are zero
    for row, count in enumerate(token_counts):
        assert mask[row, :count].all() and not mask[row, count:].any()
    assert (embeds[~mask] == 0).all()
    assert (embeds[mask].abs().sum(-1) > 0).all()
    assert not embeds.requires_grad

    # forward is encode
    again, again_mask = encoder(texts)
    assert torch.equal(again, embeds) and torch.equal(again_mask, mask)


def test_matches_plain_t5_encoder(encoder):
    from transformers import AutoTokenizer, T5EncoderModel

    text = "a yellow star moving down"
    tokenizer = AutoTokenizer.from_pretrained(encoder.name_or_path)
    model = T5EncoderModel.from_pretrained(encoder.name_or_path).eval()
    with torch.no_grad():
        expected = model(**tokenizer([text], return_tensors="pt")).last_hidden_state

    embeds, mask = encoder.encode([text])
    assert mask.all()
    torch.testing.assert_close(embeds, expected)


def test_different_captions_differ(encoder):
    embeds, mask = encoder.encode(["a red square moving left", "a blue circle moving up"])
    n = int(mask.sum(-1).min())
    assert (embeds[0, :n] - embeds[1, :n]).abs().max() > 1e-3


def test_truncates_to_max_length(tiny_t5_dir):
    encoder = HFTextEncoder(tiny_t5_dir, max_length=5)
    embeds, mask = encoder.encode(["a white triangle moving right and a red star moving left"])
    assert embeds.shape == (1, 5, DIM) and mask.all()


def test_cache_skips_model_and_returns_identical_values(encoder):
    counter = ForwardCounter(encoder)
    first, first_mask = encoder.encode(["a red square moving left"])
    assert counter.calls == 1
    second, second_mask = encoder.encode(["a red square moving left"])
    assert counter.calls == 1
    assert torch.equal(first, second) and torch.equal(first_mask, second_mask)

    # the returned tensor does not alias the cache
    second.fill_(123.0)
    third, _ = encoder.encode(["a red square moving left"])
    assert torch.equal(third, first)
    assert counter.calls == 1
    assert encoder.cache_info() == {"size": 1, "max_size": 4096}


def test_mixed_cached_and_new_batch(tiny_t5_dir):
    cached = ["a red square moving left", "a blue circle moving up"]
    new = ["a green triangle moving right and a white star", "a yellow star"]
    batch = [new[0], cached[0], new[1], cached[1], new[0]]

    encoder = HFTextEncoder(tiny_t5_dir)
    counter = ForwardCounter(encoder)
    encoder.encode(cached)
    assert counter.batches == [2]
    embeds, mask = encoder.encode(batch)
    # only the two distinct new captions went through the model
    assert counter.batches == [2, 2]

    fresh = HFTextEncoder(tiny_t5_dir, cache_size=0)
    fresh_embeds, fresh_mask = fresh.encode(batch)
    assert torch.equal(mask, fresh_mask)
    torch.testing.assert_close(embeds, fresh_embeds, atol=1e-5, rtol=1e-5)
    assert (embeds[~mask] == 0).all()
    assert fresh.cache_info()["size"] == 0


def test_cache_is_lru_bounded(tiny_t5_dir):
    encoder = HFTextEncoder(tiny_t5_dir, cache_size=2)
    counter = ForwardCounter(encoder)
    encoder.encode(["a red square"])
    encoder.encode(["a blue circle"])
    encoder.encode(["a red square"])  # hit: red becomes most recent
    encoder.encode(["a green star"])  # evicts blue
    assert counter.calls == 3
    assert list(encoder._state.cache) == ["a red square", "a green star"]
    encoder.encode(["a blue circle"])
    assert counter.calls == 4
    encoder.clear_cache()
    assert encoder.cache_info()["size"] == 0


def test_construction_loads_nothing_and_failure_names_path(tmp_path):
    missing = str(tmp_path / "no_such_text_encoder")
    encoder = HFTextEncoder(missing)  # must not touch the filesystem / network
    assert not encoder.is_loaded
    with pytest.raises(TextEncoderLoadError) as info:
        encoder.encode(["a red square"])
    message = str(info.value)
    assert missing in message
    assert "local" in message and "text_embed_dim" in message and "text_embeds" in message
    assert not encoder.is_loaded


def test_default_name_constructs_offline():
    encoder = HFTextEncoder()
    assert encoder.name_or_path == DEFAULT_TEXT_ENCODER
    assert not encoder.is_loaded
    # given dim answers without loading anything
    assert HFTextEncoder(dim=768).dim == 768


def test_dim_reads_config_without_loading_model(tiny_t5_dir):
    encoder = HFTextEncoder(tiny_t5_dir)
    assert encoder.dim == DIM
    assert encoder._state.config is not None
    assert not encoder.is_loaded


def test_wrong_dim_is_reported(tiny_t5_dir):
    encoder = HFTextEncoder(tiny_t5_dir, dim=768)
    with pytest.raises(ValueError, match="768.*32"):
        encoder.encode(["a red square"])


class Owner(nn.Module):
    def __init__(self, text_encoder):
        super().__init__()
        self.text_encoder = text_encoder
        self.proj = nn.Linear(DIM, 8)

    def forward(self, texts):
        embeds, mask = self.text_encoder(texts, device=self.proj.weight.device)
        return self.proj(embeds)[mask]


def test_weights_stay_out_of_owner(encoder):
    owner = Owner(encoder)
    out = owner(["a red square moving left", "a blue circle"])
    assert encoder.is_loaded

    assert set(owner.state_dict()) == {"proj.weight", "proj.bias"}
    assert len(list(owner.parameters())) == 2
    assert encoder.state_dict() == {}
    assert list(encoder.parameters()) == []

    # the frozen model is in eval mode and frozen even after owner.train()
    owner.train()
    model = encoder._state.model
    assert all(not p.requires_grad for p in model.parameters())

    # gradients flow into the owner only; embeds are normal (not inference-mode) tensors
    out.sum().backward()
    assert owner.proj.weight.grad is not None
    assert all(p.grad is None for p in model.parameters())


def test_follows_owner_device(tiny_t5_dir):
    # the (empty, non-persistent) device anchor moves with the owner; encode defaults to its device
    moved = Owner(HFTextEncoder(tiny_t5_dir)).to("meta")
    assert moved.text_encoder._default_device().type == "meta"
    assert set(moved.state_dict()) == {"proj.weight", "proj.bias"}

    encoder = HFTextEncoder(tiny_t5_dir)
    embeds, mask = encoder.encode(["a red square"])
    assert embeds.device.type == "cpu" and mask.device.type == "cpu"
    assert next(encoder._state.model.parameters()).device.type == "cpu"


def test_deepcopy_shares_and_pickle_drops_model(encoder):
    encoder.encode(["a red square"])
    owner = Owner(encoder)
    clone = copy.deepcopy(owner)
    assert clone.text_encoder._state is encoder._state

    restored = pickle.loads(pickle.dumps(encoder))
    assert not restored.is_loaded
    torch.testing.assert_close(restored.encode(["a red square"])[0], encoder.encode(["a red square"])[0])


@pytest.mark.parametrize(
    ("texts", "error", "pattern"),
    [
        ("a red square", TypeError, "texts: expected a list of str.*single str"),
        ([], ValueError, "texts: expected a non-empty list.*empty list"),
        (["ok", 3], TypeError, r"texts\[1\] is int 3"),
        (torch.zeros(2), TypeError, "texts: expected a list of str.*got Tensor"),
    ],
)
def test_bad_texts(tmp_path, texts, error, pattern):
    # validation runs before any loading, so a missing path is fine here
    for enc in (HFTextEncoder(str(tmp_path / "missing")), CallableTextEncoder(lambda t: torch.zeros(len(t), 1, 4), 4)):
        with pytest.raises(error, match=pattern):
            enc.encode(texts)


def test_bad_constructor_args():
    with pytest.raises(ValueError, match="max_length"):
        HFTextEncoder("x", max_length=0)
    with pytest.raises(ValueError, match="cache_size"):
        HFTextEncoder("x", cache_size=-1)
    with pytest.raises(ValueError, match="name_or_path"):
        HFTextEncoder("  ")
    with pytest.raises(Exception, match="max_length"):  # beartype violation
        HFTextEncoder("x", max_length="long")


def test_callable_encoder_embeds_only():
    seen = []

    def fn(texts):
        seen.append(list(texts))
        return torch.arange(len(texts) * 3 * 4, dtype=torch.float64).reshape(len(texts), 3, 4)

    enc = CallableTextEncoder(fn, dim=4)
    assert isinstance(enc, TextEncoder) and enc.dim == 4
    embeds, mask = enc(["a", "b"])
    assert seen == [["a", "b"]]
    assert embeds.dtype == torch.float32 and embeds.shape == (2, 3, 4)
    assert mask.dtype == torch.bool and mask.all()


def test_callable_encoder_with_mask_zeroes_padding():
    def fn(texts):
        embeds = torch.ones(len(texts), 3, 4)
        mask = torch.tensor([[1, 1, 0], [1, 0, 0]])
        return embeds, mask

    embeds, mask = CallableTextEncoder(fn, 4).encode(["a", "b"], device="cpu")
    assert mask.tolist() == [[True, True, False], [True, False, False]]
    assert (embeds[~mask] == 0).all() and (embeds[mask] == 1).all()


def test_callable_encoder_module_not_registered():
    module = nn.Linear(1, 4)
    fn = lambda texts: module(torch.ones(len(texts), 2, 1))
    enc = CallableTextEncoder(module, 4)
    assert enc.state_dict() == {}
    embeds, _ = CallableTextEncoder(fn, 4).encode(["a"])
    assert not embeds.requires_grad


def test_callable_encoder_checks_output():
    with pytest.raises(ValueError, match=r"expected embeds of shape \(2, n, 4\).*got \(2, 3, 5\)"):
        CallableTextEncoder(lambda t: torch.zeros(len(t), 3, 5), 4).encode(["a", "b"])
    with pytest.raises(ValueError, match=r"expected embeds of shape \(2, n, 4\).*got \(2, 4\)"):
        CallableTextEncoder(lambda t: torch.zeros(len(t), 4), 4).encode(["a", "b"])
    with pytest.raises(ValueError, match="mask of shape"):
        CallableTextEncoder(lambda t: (torch.zeros(len(t), 3, 4), torch.ones(len(t), 2)), 4).encode(["a"])
    with pytest.raises(TypeError, match="expected embeds to be a Tensor"):
        CallableTextEncoder(lambda t: [[0.0]] * len(t), 4).encode(["a"])
    with pytest.raises(ValueError, match="dim"):
        CallableTextEncoder(lambda t: t, 0)


def test_get_text_encoder_variants(tiny_t5_dir):
    assert get_text_encoder(None) is None

    hf = get_text_encoder(tiny_t5_dir)
    assert isinstance(hf, HFTextEncoder) and not hf.is_loaded
    assert hf.dim == DIM
    assert get_text_encoder(tiny_t5_dir, dim=DIM).dim == DIM

    assert get_text_encoder(hf) is hf
    assert get_text_encoder(hf, dim=DIM) is hf
    with pytest.raises(ValueError, match="dim=16.*dim=32"):
        get_text_encoder(hf, dim=16)

    def fn(texts):
        return torch.zeros(len(texts), 2, 16)

    wrapped = get_text_encoder(fn, dim=16)
    assert isinstance(wrapped, CallableTextEncoder) and wrapped.dim == 16
    assert wrapped.encode(["x"])[0].shape == (1, 2, 16)


def test_get_text_encoder_errors():
    with pytest.raises(ValueError, match="dim.*needs the embedding size"):
        get_text_encoder(lambda texts: torch.zeros(len(texts), 1, 4))
    with pytest.raises(Exception, match="spec"):  # beartype violation names the parameter
        get_text_encoder(5)
    with pytest.raises(ValueError, match="name_or_path"):
        get_text_encoder("")
