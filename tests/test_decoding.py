"""MaskGIT decoding and the Token-Critic objective, as published: scheduler step API, clamp, temperature rules,
training masks, critic labels and guided critic scores."""

import pytest
import torch
from helpers import tiny_critic, tiny_maskgit, tiny_phenaki

from phenaki_pytorch import CriticTrainer, MaskGitScheduler
from phenaki_pytorch.phenaki import critic_bce_loss
from phenaki_pytorch.sampling import MaskGitSchedulerOutput, random_training_mask

MASK_ID = 99


def run_schedule(scheduler, n, vocab=8, critic=None, maskable=None, seed=0):
    """Drive `scheduler` on random logits; returns the masked counts after each step and the steps taken."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.full((1, n), MASK_ID)
    maskable = torch.ones(1, n, dtype=torch.bool) if maskable is None else maskable
    ids[~maskable] = 3
    mask = maskable.clone()
    counts = []
    for t in scheduler.timesteps:
        out = scheduler.step(torch.randn(1, n, vocab, generator=g), t, ids, mask, mask_id=MASK_ID,
                             maskable=maskable, critic=critic, generator=g)
        assert isinstance(out, MaskGitSchedulerOutput)
        assert torch.equal(out.ids == MASK_ID, out.mask)  # masked positions hold the mask id, no others
        assert not (out.sampled == MASK_ID).any()
        ids, mask = out.ids, out.mask
        counts.append(int(mask.sum()))
        if not mask.any():
            break
    return counts, ids


@pytest.mark.parametrize("critic", [False, True])
def test_every_step_reveals_a_token_when_steps_exceed_tokens(critic):
    """16 tokens, 18 steps: with floor(n cos) alone 4 steps revealed nothing; MaskGIT's clamp wastes none."""
    scheduler = MaskGitScheduler(steps=18)
    critic_fn = (lambda filled: torch.randn(filled.shape)) if critic else None
    counts, ids = run_schedule(scheduler, 16, critic=critic_fn)
    before = [16] + counts[:-1]
    assert all(after < now for now, after in zip(before, counts)), counts  # strictly fewer masked each step
    assert counts[-1] == 0 and len(counts) <= 16
    assert not (ids == MASK_ID).any()


def test_clamp_keeps_a_token_masked_until_the_last_step():
    """Many tokens, few steps: no step before the last unmasks everything (the cosine tail rounds to 0)."""
    scheduler = MaskGitScheduler(steps=8)
    num = scheduler.num_masked_after(6, torch.tensor([3]), torch.tensor([2]))
    assert num.item() == 1  # floor(3 * cos(7/8 * pi/2)) = 0, clamped up to 1
    assert scheduler.num_masked_after(7, torch.tensor([3])).item() == 0
    counts, _ = run_schedule(scheduler, 3)
    assert counts == [2, 1, 0]  # 3 tokens in 3 steps, one each, finishing early


def test_primed_positions_are_never_drawn_or_remasked():
    maskable = torch.ones(1, 20, dtype=torch.bool)
    maskable[:, :6] = False
    for critic in (None, lambda filled: torch.full(filled.shape, 50.0)):  # a critic that calls everything fake
        _, ids = run_schedule(MaskGitScheduler(steps=5), 20, critic=critic, maskable=maskable)
        assert (ids[:, :6] == 3).all()


def test_temperature_rules():
    constant = MaskGitScheduler(steps=4, temperature=0.7)
    linear = MaskGitScheduler(steps=4, temperature=0.7, temperature_rule="linear")
    assert [constant.sampling_temperature(s) for s in range(4)] == [0.7] * 4
    assert linear.sampling_temperature(0) == pytest.approx(0.7 * 0.75) and linear.sampling_temperature(3) == 0.0
    with pytest.raises(ValueError, match="temperature_rule"):
        MaskGitScheduler(temperature_rule="cosine")
    with pytest.raises(ValueError, match="mask_schedule"):
        MaskGitScheduler(mask_schedule="nope")


def test_top_k_and_top_p_draw_only_inside_the_kept_set():
    probs = torch.tensor([0.5, 0.3, 0.15, 0.05])
    logits = probs.log().expand(1, 2000, 4).clone()  # one row, 2000 positions with the same distribution
    ids, mask = torch.full((1, 2000), MASK_ID), torch.ones(1, 2000, dtype=torch.bool)
    for options, allowed in (({}, {0, 1, 2, 3}), ({"top_k": 2}, {0, 1}), ({"top_p": 0.8}, {0, 1}),
                             ({"top_p": 0.81}, {0, 1, 2}), ({"top_p": 0.3}, {0})):
        scheduler = MaskGitScheduler(steps=1, temperature=1.0, **options)
        out = scheduler.step(logits, 0, ids, mask, mask_id=MASK_ID, generator=torch.Generator().manual_seed(0))
        assert set(out.ids.unique().tolist()) == allowed, options
    # with both rules, the tighter one wins; the drawn shares within the kept set follow the renormalised probabilities
    out = MaskGitScheduler(steps=1, top_k=3, top_p=0.5).step(logits, 0, ids, mask, mask_id=MASK_ID)
    assert set(out.ids.unique().tolist()) == {0}
    out = MaskGitScheduler(steps=1, top_k=2).step(logits, 0, ids, mask, mask_id=MASK_ID,
                                                  generator=torch.Generator().manual_seed(1))
    assert (out.ids == 0).float().mean() == pytest.approx(0.5 / 0.8, abs=0.04)
    for bad in ({"top_k": 0}, {"top_k": 2.5}, {"top_k": True}, {"top_p": 0.0}, {"top_p": 1.5}, {"top_p": True},
                {"top_p": float("nan")}):
        with pytest.raises(ValueError, match="top_"):
            MaskGitScheduler(**bad)


def test_sample_top_k_and_top_p_go_to_its_scheduler():
    phenaki = tiny_phenaki().eval()
    kwargs = dict(texts=["a cat", "a dog"], num_frames=3, steps=4, return_codebook_ids=True)
    filtered = phenaki.sample(top_k=2, top_p=0.6, generator=torch.Generator().manual_seed(0), **kwargs)
    explicit = phenaki.sample(scheduler=phenaki.make_scheduler(4, top_k=2, top_p=0.6),
                              generator=torch.Generator().manual_seed(0), **kwargs)
    plain = phenaki.sample(generator=torch.Generator().manual_seed(0), **kwargs)
    assert torch.equal(filtered, explicit) and not torch.equal(filtered, plain)
    with pytest.raises(ValueError, match="top_p"):
        phenaki.sample(top_p=0.0, **kwargs)


def test_set_timesteps_and_custom_mask_schedule():
    scheduler = MaskGitScheduler(mask_schedule=lambda p: 1.0 - torch.as_tensor(p))
    scheduler.set_timesteps(4)
    assert scheduler.timesteps.tolist() == [0, 1, 2, 3]
    counts, _ = run_schedule(scheduler, 40)
    assert counts == [30, 20, 10, 0]
    with pytest.raises(ValueError, match="timestep"):
        scheduler.step(torch.randn(1, 4, 8), 4, torch.zeros(1, 4, dtype=torch.long),
                       torch.ones(1, 4, dtype=torch.bool), mask_id=MASK_ID)


@pytest.mark.parametrize("min_masked", [3, 7])
def test_random_training_mask_honours_min_masked(min_masked):
    g = torch.Generator().manual_seed(0)
    valid = torch.ones(500, 40, dtype=torch.bool)
    valid[0, 5:] = False  # a row with fewer valid tokens than min_masked gets all of them
    mask = random_training_mask(valid, g, min_masked=min_masked)
    assert (mask[1:].sum(-1) >= min_masked).all()
    assert mask[0].sum() >= min(5, min_masked) and not mask[0, 5:].any()
    assert random_training_mask(valid[:1], g, min_masked=9).sum() == 5  # all 5 valid, never padding


class ConstantCritic(torch.nn.Module):
    """Calls every token "sampled" with a logit of 4."""

    num_tokens = 64

    def __init__(self):
        super().__init__()
        self.bias = torch.nn.Parameter(torch.zeros(()))

    def forward(self, x, **kwargs):
        return torch.full(x.shape, 4.0) + self.bias


def test_critic_objective_scores_every_valid_position():
    """Token-Critic's labels: 1 where drawn, 0 where original, over all valid positions. "Everything is fake"
    is a poor critic and must score badly (today's masked-only loss rated it near its floor)."""
    torch.manual_seed(0)
    maskgit = tiny_maskgit(unconditional=True, dim_context=None)
    codes = torch.randint(0, 64, (8, 32), generator=torch.Generator().manual_seed(1))
    paper = CriticTrainer(maskgit=maskgit, critic=ConstantCritic())(codes, generator=torch.Generator().manual_seed(0))
    errors = CriticTrainer(maskgit=maskgit, critic=ConstantCritic(), objective="errors")(
        codes, generator=torch.Generator().manual_seed(0))
    assert errors.item() < 0.2  # expected ~0.08: a draw matches the real token 1 time in 64
    assert paper.item() > 1.0

    # closed form on a fixed mask: BCE(4, 1) on masked, BCE(4, 0) on unmasked, padding not scored
    masked = torch.zeros(1, 6, dtype=torch.bool)
    masked[0, :2] = True
    valid = torch.ones(1, 6, dtype=torch.bool)
    valid[0, 5] = False
    logits = torch.zeros(1, 6, 64)
    loss = critic_bce_loss(ConstantCritic(), torch.zeros(1, 6, dtype=torch.long), masked, logits, video_mask=valid)
    bce = torch.nn.functional.binary_cross_entropy_with_logits
    expected = (2 * bce(torch.tensor(4.0), torch.tensor(1.0)) + 3 * bce(torch.tensor(4.0), torch.tensor(0.0))) / 5
    torch.testing.assert_close(loss, expected)
    with pytest.raises(ValueError, match="objective"):
        CriticTrainer(maskgit=maskgit, critic=ConstantCritic(), objective="paper")


def test_phenaki_trains_its_critic_with_the_chosen_objective():
    torch.manual_seed(0)
    videos = torch.rand(2, 3, 5, 16, 16)
    texts = ["a red square", "a blue ring"]
    losses = {}
    for objective in ("sampled", "errors"):
        phenaki = tiny_phenaki(critic=tiny_critic(), critic_objective=objective)
        _, breakdown = phenaki(videos, texts, generator=torch.Generator().manual_seed(0), return_loss_breakdown=True)
        losses[objective] = breakdown["critic"].item()
    assert losses["sampled"] != losses["errors"]
    with pytest.raises(ValueError, match="critic_objective"):
        tiny_phenaki(critic=tiny_critic(), critic_objective="x")


def test_guided_critic_equals_two_passes():
    torch.manual_seed(0)
    phenaki = tiny_phenaki(critic=tiny_critic(has_cross_attn=True)).eval()
    embeds, mask = phenaki.encode_text(["a red square moving left", "a blue circle"])
    ids = torch.randint(0, 64, (2, 12))
    kv = phenaki.critic.context_kv(embeds, mask)
    from phenaki_pytorch.phenaki import _concat_kv

    both = _concat_kv(kv, phenaki.critic.context_kv(embeds, torch.zeros_like(mask)))
    guided = phenaki.guided_critic_logits(ids, both, 2.5, (2, 2))
    cond = phenaki.critic(ids, text_embeds=embeds, text_mask=mask, video_patch_shape=(2, 2))
    null = phenaki.critic(ids, text_embeds=embeds, text_mask=torch.zeros_like(mask), video_patch_shape=(2, 2))
    torch.testing.assert_close(guided, null + 2.5 * (cond - null), atol=1e-5, rtol=1e-4)
    a = phenaki.sample(texts=["x"], num_frames=5, critic_cond_scale=2.0, generator=torch.Generator().manual_seed(0),
                       return_codebook_ids=True)
    b = phenaki.sample(texts=["x"], num_frames=5, generator=torch.Generator().manual_seed(0), return_codebook_ids=True)
    assert a.shape == b.shape == (1, 3, 2, 2)


def test_sample_drives_a_user_scheduler():
    class Counting(MaskGitScheduler):
        calls = 0

        def step(self, *args, **kwargs):
            Counting.calls += 1
            return super().step(*args, **kwargs)

    torch.manual_seed(0)
    phenaki = tiny_phenaki().eval()
    ids = phenaki.sample(texts=["x"], num_frames=5, scheduler=Counting(steps=3), return_codebook_ids=True)
    assert Counting.calls == 3 and ids.shape == (1, 3, 2, 2)
    assert (ids < 64).all()
    # steps= overrides the scheduler's count
    phenaki.sample(texts=["x"], num_frames=5, scheduler=Counting(steps=3), steps=2)
    assert Counting.calls == 5


def test_priming_with_ids_keeps_them_and_matches_pixel_priming():
    torch.manual_seed(0)
    phenaki = tiny_phenaki(critic=tiny_critic()).eval()
    prime = torch.rand(2, 3, 3, 16, 16)
    prime_ids = phenaki.cvivit.tokenize(prime)
    kwargs = dict(texts=["a", "b"], num_frames=4, steps=4, return_codebook_ids=True)
    by_ids = phenaki.sample(prime_codebook_ids=prime_ids, generator=torch.Generator().manual_seed(0), **kwargs)
    by_pixels = phenaki.sample(prime_frames=prime, generator=torch.Generator().manual_seed(0), **kwargs)
    assert torch.equal(by_ids[:, :2], prime_ids)
    assert torch.equal(by_ids, by_pixels)
    video = phenaki.sample(texts=["a", "b"], num_frames=4, steps=4, prime_codebook_ids=prime_ids)
    assert video.shape == (2, 3, 4, 16, 16)
    with pytest.raises(ValueError, match="not both"):
        phenaki.sample(texts=["a"], num_frames=4, prime_frames=prime[:1], prime_codebook_ids=prime_ids[:1])
    with pytest.raises(ValueError, match="token grid"):
        phenaki.sample(texts=["a"], num_frames=4, prime_codebook_ids=torch.zeros(1, 2, 3, 3, dtype=torch.long))


@pytest.mark.parametrize("remasking", ["critic", "confidence"])
def test_inpainting_keeps_every_unmasked_id_and_fills_the_rest(remasking):
    torch.manual_seed(0)
    phenaki = tiny_phenaki(critic=tiny_critic()).eval()
    known = torch.randint(0, 64, (2, 3, 2, 2))
    draw = torch.zeros(2, 3, 2, 2, dtype=torch.bool)
    draw[0, 1] = True  # row 0: the middle token frame
    draw[1, :, 0, 1] = True  # row 1: one patch position in every token frame
    ids = phenaki.sample(texts=["a", "b"], num_frames=5, steps=3, inpaint_codebook_ids=known, inpaint_mask=draw,
                         remasking=remasking, return_codebook_ids=True, generator=torch.Generator().manual_seed(1))
    assert ids.shape == known.shape
    assert torch.equal(ids[~draw], known[~draw])
    assert ((ids >= 0) & (ids < 64)).all()
    # the drawn positions come from the model, not from the given ids: other given ids there change nothing
    other = known.masked_fill(draw, 7)
    again = phenaki.sample(texts=["a", "b"], num_frames=5, steps=3, inpaint_codebook_ids=other, inpaint_mask=draw,
                           remasking=remasking, return_codebook_ids=True, generator=torch.Generator().manual_seed(1))
    assert torch.equal(ids, again)
    video = phenaki.sample(texts=["a", "b"], num_frames=5, steps=3, inpaint_codebook_ids=known, inpaint_mask=draw)
    assert video.shape == (2, 3, 5, 16, 16)  # the whole clip, kept frames included


def test_inpainting_a_prefix_equals_priming_with_ids():
    torch.manual_seed(0)
    phenaki = tiny_phenaki(critic=tiny_critic()).eval()
    known = torch.randint(0, 64, (1, 3, 2, 2))
    draw = torch.ones(1, 3, 2, 2, dtype=torch.bool)
    draw[:, 0] = False
    common = dict(texts=["a", "b"], steps=4, return_codebook_ids=True)
    inpainted = phenaki.sample(num_frames=5, inpaint_codebook_ids=known.int(), inpaint_mask=draw,  # any int dtype
                               generator=torch.Generator().manual_seed(3), **common)
    primed = phenaki.sample(num_frames=4, prime_codebook_ids=known[:, :1], generator=torch.Generator().manual_seed(3),
                            **common)
    assert torch.equal(inpainted, primed)


def test_inpainting_arguments_are_checked():
    phenaki = tiny_phenaki().eval()
    known = torch.zeros(1, 3, 2, 2, dtype=torch.long)
    draw = torch.ones(1, 3, 2, 2, dtype=torch.bool)
    with pytest.raises(ValueError, match="go together"):
        phenaki.sample(texts=["a"], num_frames=5, inpaint_codebook_ids=known)
    with pytest.raises(ValueError, match="not both"):
        phenaki.sample(texts=["a"], num_frames=4, inpaint_codebook_ids=known, inpaint_mask=draw,
                       prime_codebook_ids=known[:, :1])
    with pytest.raises(ValueError, match="token grid"):  # 9 frames are 5 token frames, the ids hold 3
        phenaki.sample(texts=["a"], num_frames=9, inpaint_codebook_ids=known, inpaint_mask=draw)
    with pytest.raises(ValueError, match=r"batch=2 or 1"):
        phenaki.sample(texts=["a", "b"], num_frames=5, inpaint_codebook_ids=known.expand(3, -1, -1, -1),
                       inpaint_mask=draw)
    with pytest.raises(TypeError, match="bool"):
        phenaki.sample(texts=["a"], num_frames=5, inpaint_codebook_ids=known, inpaint_mask=draw.long())
    with pytest.raises(ValueError, match=r"\[0, 64\)"):
        phenaki.sample(texts=["a"], num_frames=5, inpaint_codebook_ids=known + 64, inpaint_mask=draw)


def test_label_smoothing_changes_the_maskgit_loss():
    torch.manual_seed(0)
    logits = torch.randn(2, 8, 64)
    target = torch.randint(0, 64, (2, 8))
    masked = torch.rand(2, 8) < 0.5
    plain = tiny_maskgit().masked_loss(logits, target, masked)
    smooth = tiny_maskgit(label_smoothing=0.1).masked_loss(logits, target, masked)
    expected = torch.nn.functional.cross_entropy(logits[masked], target[masked], label_smoothing=0.1)
    torch.testing.assert_close(smooth, expected)
    assert not torch.allclose(plain, smooth)
    with pytest.raises(ValueError, match="label_smoothing"):
        tiny_maskgit(label_smoothing=1.0)
