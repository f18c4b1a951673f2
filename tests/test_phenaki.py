import pytest
import torch
from helpers import TEXT_DIM, hashed_text_encoder, tiny_critic, tiny_cvivit, tiny_maskgit, tiny_phenaki

from phenaki_pytorch import CViViT, MaskGit, Phenaki, TokenCritic, make_video
from phenaki_pytorch.phenaki import _concat_kv

TEXTS = ["a whale breaching from afar", "young girl blowing out candles", "fireworks with blue sparkles"]


def test_seed_readme_phenaki_snippet_reduced(tiny_t5_dir):
    # the seed README's Phenaki snippet at reduced size, with a local T5 by path instead of the hub name
    maskgit = MaskGit(num_tokens=500, max_seq_len=64, dim=32, dim_context=32, depth=2)
    cvivit = CViViT(
        dim=32,
        codebook_size=500,
        image_size=32,
        patch_size=16,
        temporal_patch_size=2,
        spatial_depth=1,
        temporal_depth=1,
        dim_head=16,
        heads=2,
    )
    phenaki = Phenaki(cvivit=cvivit, maskgit=maskgit, text_encoder=tiny_t5_dir)
    videos = torch.randn(3, 3, 17, 32, 32)
    loss = phenaki(videos, TEXTS)
    loss.backward()
    assert torch.isfinite(loss)

    video = phenaki.sample(text="a squirrel examines an acorn", num_frames=17, cond_scale=5.0)
    assert video.shape == (1, 3, 17, 32, 32)
    video_prime = video[:, :, -3:]
    video_next = phenaki.sample(text="a cat watches the squirrel from afar", prime_frames=video_prime, num_frames=14)
    assert video_next.shape == (1, 3, 14, 32, 32)
    entire_video = torch.cat((video, video_next), dim=2)
    assert entire_video.shape == (1, 3, 31, 32, 32)


def test_peer_api_calls():
    torch.manual_seed(0)
    critic = tiny_critic(has_cross_attn=True)
    phenaki = tiny_phenaki(critic=critic)
    videos = torch.rand(3, 3, 5, 16, 16)
    mask = torch.ones(3, 5, dtype=torch.bool)
    mask[0, 3:] = False
    loss = phenaki(videos, texts=TEXTS, video_frame_mask=mask)
    loss.backward()
    loss = phenaki(videos=videos, texts=TEXTS)
    ids = phenaki.cvivit.tokenize(videos)
    loss_ids = phenaki(video_codebook_ids=ids, texts=TEXTS)
    loss_flat = phenaki(video_codebook_ids=ids.flatten(1), texts=TEXTS)
    embeds, text_mask = phenaki.encode_text(TEXTS)
    loss_embeds = phenaki(videos, text_embeds=embeds, text_mask=text_mask)
    for value in (loss, loss_ids, loss_flat, loss_embeds):
        assert torch.isfinite(value)

    video = phenaki.sample(texts="a squirrel", num_frames=5, cond_scale=5.0)
    assert video.shape == (1, 3, 5, 16, 16)
    assert video.min() >= 0 and video.max() <= 1
    video_next = phenaki.sample(texts="a cat", prime_frames=video[:, :, -3:], num_frames=2)
    assert video_next.shape == (1, 3, 2, 16, 16)
    entire_video, scenes = make_video(phenaki, texts=["a", "b", "c"], num_frames=(5, 2, 4), prime_lengths=(3, 1))
    assert entire_video.shape == (1, 3, 11, 16, 16)
    assert [s.shape[2] for s in scenes] == [5, 2, 4]
    self_critic = tiny_phenaki(self_token_critic=True)
    assert torch.isfinite(self_critic(videos, texts=TEXTS))
    assert self_critic.sample(texts="x", num_frames=3).shape == (1, 3, 3, 16, 16)


def test_batched_guidance_equals_two_passes():
    torch.manual_seed(0)
    phenaki = tiny_phenaki().eval()
    maskgit = phenaki.maskgit
    embeds, mask = phenaki.encode_text(["a red square moving left", "a blue circle"])
    ids = torch.randint(0, 64, (2, 12))
    ids[:, ::2] = maskgit.mask_id
    cond_scale = 3.0
    context_kv = phenaki.prepare_context(embeds, mask, guided=True)
    batched = phenaki.guided_logits(ids, context_kv, cond_scale, (2, 2))

    # two separate passes, keys/values computed inside (a different code path)
    cond = maskgit(ids, text_embeds=embeds, text_mask=mask, video_patch_shape=(2, 2))
    null = maskgit(ids, text_embeds=embeds, text_mask=torch.zeros_like(mask), video_patch_shape=(2, 2))
    torch.testing.assert_close(batched, null + cond_scale * (cond - null), atol=1e-5, rtol=1e-4)

    unguided = phenaki.guided_logits(ids, phenaki.prepare_context(embeds, mask, guided=False), None, (2, 2))
    torch.testing.assert_close(unguided, cond, atol=1e-5, rtol=1e-4)


def test_concat_kv_stacks_along_batch():
    a = [(torch.zeros(1, 2, 3, 4), torch.zeros(1, 2, 3, 4), torch.ones(1, 3, dtype=torch.bool))]
    b = [(torch.ones(1, 2, 3, 4), torch.ones(1, 2, 3, 4), torch.zeros(1, 3, dtype=torch.bool))]
    (k, v, m), = _concat_kv(a, b)
    assert k.shape == (2, 2, 3, 4) and m.tolist() == [[True] * 3, [False] * 3]


def test_sampling_is_reproducible_with_a_generator():
    torch.manual_seed(0)
    phenaki = tiny_phenaki().eval()
    a = phenaki.sample(text="hello", num_frames=5, generator=torch.Generator().manual_seed(3))
    b = phenaki.sample(text="hello", num_frames=5, generator=torch.Generator().manual_seed(3))
    c = phenaki.sample(text="hello", num_frames=5, generator=torch.Generator().manual_seed(4), return_codebook_ids=True)
    assert torch.equal(a, b)
    assert c.shape == (1, 3, 2, 2)


@pytest.mark.parametrize("with_critic,hourglass", [(False, 0), (True, 0), (True, 1)])
def test_primed_tokens_and_pixels_are_preserved(with_critic, hourglass):
    torch.manual_seed(0)
    maskgit = tiny_maskgit(depth=3, hourglass=1) if hourglass else tiny_maskgit()
    phenaki = tiny_phenaki(critic=tiny_critic() if with_critic else None, maskgit=maskgit).eval()
    prime = torch.rand(2, 3, 3, 16, 16)
    prime_ids = phenaki.cvivit.tokenize(prime)  # (2, 2, 2, 2)
    ids = phenaki.sample(texts=["a", "b"], prime_frames=prime, num_frames=4, return_codebook_ids=True, steps=6)
    assert ids.shape == (2, 4, 2, 2)
    assert torch.equal(ids[:, :2], prime_ids)
    full = phenaki.sample(texts=["a", "b"], prime_frames=prime, num_frames=4, return_prime=True, steps=6)
    assert full.shape == (2, 3, 7, 16, 16)
    assert torch.equal(full[:, :, :3], prime)


def test_unconditional_phenaki_needs_no_text():
    torch.manual_seed(0)
    maskgit = tiny_maskgit(unconditional=True, dim_context=None)
    phenaki = Phenaki(cvivit=tiny_cvivit(), maskgit=maskgit, text_encoder="this/does-not-exist")
    loss = phenaki(torch.rand(2, 3, 5, 16, 16))
    loss.backward()
    video = phenaki.sample(num_frames=5, batch_size=2)
    assert video.shape == (2, 3, 5, 16, 16)


def test_text_encoder_is_lazy_and_cached():
    calls = []
    encoder = hashed_text_encoder()
    inner = encoder.fn

    def counting(texts):
        calls.append(list(texts))
        return inner(texts)

    from phenaki_pytorch import CallableTextEncoder

    # the default T5 name does not load (or download) anything at construction
    Phenaki(cvivit=tiny_cvivit(), maskgit=tiny_maskgit())
    Phenaki(cvivit=tiny_cvivit(), maskgit=tiny_maskgit(), text_embed_dim=TEXT_DIM)
    phenaki = tiny_phenaki(text_encoder=CallableTextEncoder(counting, dim=TEXT_DIM))
    assert calls == []
    phenaki.sample(text="abc", num_frames=3, steps=2)
    assert calls == [["abc"]]  # encoded once per sample() call, not once per step


def test_phenaki_loads_a_text_encoder_from_a_local_path(tiny_t5_dir):
    phenaki = Phenaki(cvivit=tiny_cvivit(), maskgit=tiny_maskgit(dim_context=32), text_encoder=tiny_t5_dir)
    embeds, mask = phenaki.encode_text(["a red square moving left", "a blue circle"])
    assert embeds.shape[0] == 2 and embeds.shape[-1] == 32
    assert mask[0].sum() != mask[1].sum() or not torch.allclose(embeds[0], embeds[1])
    assert all(key.split(".")[0] in ("cvivit", "maskgit") for key in phenaki.state_dict())


def test_text_dropout_reaches_phenaki_training():
    """The public reference forced cond_drop_prob to 0 in Phenaki.forward; here the text-free branch trains."""
    torch.manual_seed(0)
    phenaki = tiny_phenaki(cond_drop_prob=0.999999).train()
    videos = torch.rand(2, 3, 5, 16, 16)
    g1, g2 = torch.Generator().manual_seed(1), torch.Generator().manual_seed(1)
    dropped = phenaki(videos, ["a red square", "a blue circle"], generator=g1)
    no_text = phenaki(videos, text_embeds=torch.zeros(2, 1, TEXT_DIM), text_mask=torch.zeros(2, 1, dtype=torch.bool), generator=g2)
    torch.testing.assert_close(dropped, no_text)
    phenaki.eval()
    g1, g2 = torch.Generator().manual_seed(1), torch.Generator().manual_seed(1)
    with_text = phenaki(videos, ["a red square", "a blue circle"], generator=g1, cond_drop_prob=0.0)
    assert not torch.allclose(with_text, phenaki(videos, ["another caption", "and more"], generator=g2, cond_drop_prob=0.0))


def test_tokenizer_is_frozen_inside_phenaki():
    phenaki = tiny_phenaki(critic=tiny_critic())
    phenaki.train()
    assert not phenaki.cvivit.training
    assert all(not p.requires_grad for p in phenaki.cvivit.parameters())
    before = {k: v.clone() for k, v in phenaki.cvivit.state_dict().items()}
    loss = phenaki(torch.rand(2, 3, 5, 16, 16), ["a", "b"])
    loss.backward()
    after = phenaki.cvivit.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)  # no codebook EMA update either
    trainable = {id(p) for p in phenaki.trainable_parameters()}
    assert all(id(p) in trainable for p in phenaki.critic.parameters())
    assert all(id(p) in trainable for p in phenaki.maskgit.parameters())


def test_critic_loss_is_included_and_trains_the_critic():
    torch.manual_seed(0)
    phenaki = tiny_phenaki(critic=tiny_critic())
    loss, breakdown = phenaki(torch.rand(2, 3, 5, 16, 16), ["a", "b"], return_loss_breakdown=True)
    assert set(breakdown) == {"maskgit", "critic"}
    torch.testing.assert_close(loss.detach(), breakdown["maskgit"] + breakdown["critic"])
    loss.backward()
    assert all(p.grad is not None for p in phenaki.critic.parameters())


def test_continuation_training_keeps_a_whole_prefix_of_token_frames_unmasked():
    """continuation_prob=1: every training clip keeps its first 1 .. t-1 token frames whole (as primed tokens are
    at sampling) and masks only after them; at 0 (the default) and in eval the mask may fall anywhere."""
    torch.manual_seed(0)
    phenaki = tiny_phenaki(continuation_prob=1.0)
    h, w = phenaki._patch_shape()
    seen = []
    phenaki.maskgit.register_forward_hook(lambda module, args, output: seen.append(args[0].clone()))
    ids = torch.randint(0, 64, (64, 3, h, w))
    phenaki.train()
    phenaki(video_codebook_ids=ids, texts=["a"] * 64, generator=torch.Generator().manual_seed(0))
    masked = (seen[-1] == phenaki.maskgit.mask_id).view(64, 3, h * w)
    whole = ~masked.any(dim=-1)  # (b, t): token frames without a masked token
    kept = whole.int().cumprod(dim=-1).sum(dim=-1)  # length of each clip's unmasked prefix
    assert kept.min() >= 1 and masked.view(64, -1).any(dim=-1).all()  # a prefix kept, something left to learn
    assert set(kept.tolist()) >= {1, 2}  # both prefix lengths drawn
    maskable = phenaki._maskable_in_training(torch.ones(64, 3 * h * w, dtype=torch.bool), 3, h * w, None)
    assert not maskable[:, : h * w].any() and maskable[:, -h * w :].all()

    plain = tiny_phenaki()
    plain.train()
    everywhere = plain._maskable_in_training(torch.ones(4, 12, dtype=torch.bool), 3, 4, None)
    assert everywhere.all()
    phenaki.eval()
    assert phenaki._maskable_in_training(torch.ones(4, 12, dtype=torch.bool), 3, 4, None).all()
    with pytest.raises(ValueError, match="continuation_prob"):
        tiny_phenaki(continuation_prob=1.5)


def test_forward_prime_frames_keep_each_clips_context_unmasked_and_out_of_the_loss():
    torch.manual_seed(0)
    phenaki = tiny_phenaki()
    h, w = phenaki._patch_shape()
    seen = []
    phenaki.maskgit.register_forward_hook(lambda module, args, output: seen.append(args[0].clone()))
    ids = torch.randint(0, 64, (32, 3, h, w))
    primes = [0, 1, 3, 3] * 8  # 5-frame clips: 0 (none), 1 frame (1 token frame), 3 frames (2 token frames)
    phenaki.train()
    phenaki(video_codebook_ids=ids, texts=["a"] * 32, prime_frames=primes, generator=torch.Generator().manual_seed(0))
    masked = (seen[-1] == phenaki.maskgit.mask_id).view(32, 3, h * w).any(dim=-1)  # (b, token frames)
    rows = torch.tensor(primes)
    assert not masked[rows == 1, 0].any() and not masked[rows == 3, :2].any()
    assert masked[rows == 3, 2].all()  # all the masking falls after the context
    assert masked[rows == 0, 0].any()  # clips without context are masked anywhere
    # an int applies to every clip
    phenaki(video_codebook_ids=ids, texts=["a"] * 32, prime_frames=3)
    assert not (seen[-1] == phenaki.maskgit.mask_id).view(32, 3, h * w)[:, :2].any()
    with pytest.raises(ValueError, match="prime_frames"):
        phenaki(video_codebook_ids=ids, texts=["a"] * 32, prime_frames=[3, 3])  # one per clip or one for all


def test_images_train_as_one_frame_videos():
    phenaki = tiny_phenaki()
    loss = phenaki(torch.rand(2, 3, 16, 16), ["a", "b"])
    assert torch.isfinite(loss)
    images = phenaki.sample_images(texts=["a", "b"], steps=3)
    assert images.shape == (2, 3, 16, 16)


def test_save_and_load_pretrained(tmp_path):
    torch.manual_seed(0)
    phenaki = tiny_phenaki(critic=tiny_critic()).eval()
    phenaki.save_pretrained(tmp_path)
    with pytest.raises(ValueError, match="text_encoder"):
        Phenaki.from_pretrained(tmp_path)
    rebuilt = Phenaki.from_pretrained(tmp_path, text_encoder=hashed_text_encoder()).eval()
    a = phenaki.sample(text="x", num_frames=3, generator=torch.Generator().manual_seed(0))
    b = rebuilt.sample(text="x", num_frames=3, generator=torch.Generator().manual_seed(0))
    assert torch.equal(a, b)


def test_overfits_captions_to_their_videos():
    """Two captions, two videos (red square moving right / blue square moving left): after a
    short training run, samples for each caption have the colour of their training video."""
    torch.manual_seed(0)
    frames, size = 5, 16
    videos = torch.zeros(2, 3, frames, size, size)
    for f in range(frames):
        videos[0, 0, f, 4:12, 1 + 2 * f : 7 + 2 * f] = 1.0  # red, moving right
        videos[1, 2, f, 4:12, 9 - 2 * f : 15 - 2 * f] = 1.0  # blue, moving left
    captions = ["a red square moving right", "a blue square moving left"]

    cvivit = tiny_cvivit(codebook_size=64, use_gan=False, dim=48, spatial_depth=2, temporal_depth=2)
    optimizer = torch.optim.Adam(cvivit.generator_parameters(), lr=3e-3)
    for _ in range(150):
        loss = cvivit(videos)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()

    phenaki = tiny_phenaki(cvivit=cvivit, maskgit=tiny_maskgit(cond_drop_prob=0.1))
    optimizer = torch.optim.Adam(phenaki.trainable_parameters(), lr=3e-3)
    ids = phenaki.cvivit.tokenize(videos)
    for _ in range(150):
        loss = phenaki(video_codebook_ids=ids, texts=captions)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()

    phenaki.eval()
    samples = phenaki.sample(texts=captions, num_frames=frames, cond_scale=3.0, generator=torch.Generator().manual_seed(0))
    red = samples[0].mean(dim=(1, 2, 3))
    blue = samples[1].mean(dim=(1, 2, 3))
    assert red[0] > red[2] + 0.05, red
    assert blue[2] > blue[0] + 0.05, blue
    # motion: the horizontal centre of mass moves right for the first caption, left for the second
    xs = torch.arange(size).float()
    centre = lambda v: (v.sum(dim=(0, 2)) * xs).sum(-1) / v.sum(dim=(0, 2)).sum(-1)  # noqa: E731
    assert centre(samples[0])[-1] > centre(samples[0])[0]
    assert centre(samples[1])[-1] < centre(samples[1])[0]


# ---------------------------------------------------------------------- bad inputs


def test_codebook_size_mismatch_is_a_clear_error_at_construction():
    with pytest.raises(ValueError, match="num_tokens=64.*codebook_size=65536"):
        Phenaki(cvivit=tiny_cvivit(codebook_size=65536), maskgit=tiny_maskgit())
    with pytest.raises(ValueError, match="critic.num_tokens"):
        Phenaki(cvivit=tiny_cvivit(), maskgit=tiny_maskgit(), critic=tiny_critic(num_tokens=32))
    with pytest.raises(ValueError, match="not both"):
        Phenaki(cvivit=tiny_cvivit(), maskgit=tiny_maskgit(), critic=tiny_critic(), self_token_critic=True)
    with pytest.raises(ValueError, match="text_embed_dim"):
        Phenaki(cvivit=tiny_cvivit(), maskgit=tiny_maskgit(), text_embed_dim=TEXT_DIM + 1)


def test_bad_frame_counts_name_the_nearest_valid_lengths():
    phenaki = tiny_phenaki()
    with pytest.raises(ValueError, match="nearest valid num_frames: \\(3, 5\\)"):
        phenaki.sample(text="x", num_frames=4)
    with pytest.raises(ValueError, match="after 3 primed frames.*\\(2, 4\\)"):
        phenaki.sample(text="x", num_frames=3, prime_frames=torch.rand(1, 3, 3, 16, 16))
    with pytest.raises(ValueError, match="prime_frames has 2 frames.*\\(1, 3\\)"):
        phenaki.sample(text="x", num_frames=3, prime_frames=torch.rand(1, 3, 2, 16, 16))
    with pytest.raises(ValueError, match="max_seq_len=64; at most num_frames=31"):
        phenaki.sample(text="x", num_frames=33)


def test_bad_text_and_ids_inputs():
    phenaki = tiny_phenaki()
    videos = torch.rand(2, 3, 5, 16, 16)
    with pytest.raises(ValueError, match="got 3 texts for a batch of 2"):
        phenaki(videos, TEXTS)
    with pytest.raises(ValueError, match="text-conditioned"):
        phenaki(videos)
    with pytest.raises(ValueError, match="text_embeds must be"):
        phenaki(videos, text_embeds=torch.randn(3, 4, TEXT_DIM))
    with pytest.raises(ValueError, match="\\[0, 64\\)"):
        phenaki(video_codebook_ids=torch.full((2, 3, 2, 2), 70), texts=["a", "b"])
    with pytest.raises(ValueError, match="video_frame_mask must be bool \\(2, 5\\)"):
        phenaki(videos, ["a", "b"], video_frame_mask=torch.ones(2, 4, dtype=torch.bool))
    with pytest.raises(ValueError, match="text= or texts="):
        phenaki.sample(text="a", texts=["b"], num_frames=1)
    with pytest.raises(ValueError, match="1 \\+ k"):
        phenaki(torch.rand(2, 3, 4, 16, 16), ["a", "b"])
    wrong_dim = tiny_phenaki(text_encoder=hashed_text_encoder(dim=TEXT_DIM + 8))
    with pytest.raises(ValueError, match="dim_context=24"):
        wrong_dim(videos, ["a", "b"])
    with pytest.raises(ValueError, match="prime_frames must be"):
        phenaki.sample(texts=["a", "b"], num_frames=2, prime_frames=torch.rand(3, 3, 3, 16, 16))
    with pytest.raises(TypeError):
        TokenCritic(num_tokens="64", max_seq_len=8, dim=8, depth=1)
