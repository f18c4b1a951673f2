"""Tokenizer training as the published methods do it: padded frames stay out of every loss and of the codebook,
the R1 penalty keeps its weight when applied lazily, the adversarial term waits for its warm-up, a missing
perceptual network is reported, the codebook is used, and the EMA copy keeps the codebook it was trained with."""

import warnings

import helpers
import pytest
import torch

import phenaki_pytorch.cvivit as cvivit_module
from phenaki_pytorch.cvivit import codebook_stats
from phenaki_pytorch.data import SyntheticCaptionedVideos
from phenaki_pytorch.training import CViViTTrainer


def tiny(seed=0, **overrides):
    torch.manual_seed(seed)
    return helpers.tiny_cvivit(**overrides)


def padded_clips(batch=4, frames=9, real=3, size=16, seed=0):
    """Clips whose last `frames - real` frames are zero padding, with their frame mask."""
    g = torch.Generator().manual_seed(seed)
    video = torch.rand(batch, 3, frames, size, size, generator=g) * 0.8 + 0.2  # never all-zero
    video[:, :, real:] = 0.0
    mask = torch.zeros(batch, frames, dtype=torch.bool)
    mask[:, :real] = True
    return video, mask


class PaddedClips(torch.utils.data.Dataset):
    def __init__(self, n=8, frames=9, real=3, size=16):
        self.video, self.mask = padded_clips(n, frames, real, size)

    def __len__(self):
        return len(self.video)

    def __getitem__(self, i):
        return {"video": self.video[i], "frame_mask": self.mask[i]}


# ------------------------------------------------------------------------------------ padded frames


def test_discriminator_step_of_the_trainer_never_sees_padding(tmp_path):
    cvivit = tiny(discr_start_step=0, image_size=None)
    seen = []
    original = cvivit.discr.forward
    cvivit.discr.forward = lambda images: (seen.append(images.detach().clone()), original(images))[1]
    trainer = CViViTTrainer(
        cvivit, dataset=PaddedClips(), num_frames=9, batch_size=4, valid_frac=0, results_folder=tmp_path
    )
    for _ in range(3):
        trainer.train_step()
    frames = torch.cat(seen)
    assert len(frames) >= 3 * 2 * 4  # real and fake frames of every discriminator step
    padding = frames.flatten(1).abs().amax(dim=1) == 0
    assert not padding.any(), f"{int(padding.sum())} of {len(frames)} discriminator frames were padding"


def test_quantizer_ignores_padded_frames():
    video, mask = padded_clips()
    changed = video.clone()
    changed[:, :, 5:] = torch.rand_like(changed[:, :, 5:])  # token frames 3 and 4 cover only padding
    states, losses = [], []
    for clip in (video, changed):
        cvivit = tiny().train()
        _, breakdown = cvivit(clip, mask=mask, return_loss_breakdown=True)
        states.append({k: v.clone() for k, v in cvivit.quantizer.state_dict().items()})
        losses.append(breakdown["quantizer"])
    for key in states[0]:
        assert torch.equal(states[0][key], states[1][key]), f"padding reached the codebook state {key}"
    torch.testing.assert_close(losses[0], losses[1])


def test_token_frame_mask_covers_tubelets():
    cvivit = tiny()
    mask = torch.tensor([[True] * 4 + [False] * 5, [True] * 9, [True] + [False] * 8])
    expected = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1], [1, 0, 0, 0, 0]], dtype=torch.bool)
    assert torch.equal(cvivit.token_frame_mask(mask), expected)


def test_a_clip_without_real_frames_is_an_error():
    video, mask = padded_clips(batch=2)
    mask[1] = False
    with pytest.raises(ValueError, match="no real frame"):
        tiny()(video, mask=mask)


# ------------------------------------------------------------------------------------ R1 and warm-up


def test_lazy_r1_penalty_is_scaled_by_its_interval():
    video = torch.rand(2, 3, 3, 16, 16)
    losses = {}
    for name, kwargs in {"none": dict(apply_grad_penalty=False), "one": {}, "four": dict(grad_penalty_scale=4)}.items():
        cvivit = tiny()
        torch.manual_seed(1)  # the same discriminator frames
        losses[name] = cvivit(video, return_discr_loss=True, **kwargs)
    penalty = losses["one"] - losses["none"]
    assert penalty > 0
    torch.testing.assert_close(losses["four"] - losses["none"], 4 * penalty)


def test_trainer_passes_the_penalty_interval(tmp_path):
    cvivit = tiny(discr_start_step=0, image_size=None)
    calls = []
    original = cvivit.forward

    def spy(*args, **kwargs):
        if kwargs.get("return_discr_loss"):
            calls.append((kwargs.get("apply_grad_penalty"), kwargs.get("grad_penalty_scale")))
        return original(*args, **kwargs)

    cvivit.forward = spy
    trainer = CViViTTrainer(
        cvivit,
        dataset=PaddedClips(),
        num_frames=9,
        batch_size=4,
        valid_frac=0,
        apply_grad_penalty_every=3,
        results_folder=tmp_path,
    )
    for _ in range(4):
        trainer.train_step()
    assert calls == [(True, 3), (False, 3), (False, 3), (True, 3)]


def test_adversarial_term_waits_for_its_warm_up(tmp_path):
    cvivit = tiny(discr_start_step=2, image_size=None)
    assert not cvivit.adversarial_active
    discr_before = {k: v.clone() for k, v in cvivit.discr.state_dict().items()}
    trainer = CViViTTrainer(
        cvivit, dataset=PaddedClips(), num_frames=9, batch_size=4, valid_frac=0, results_folder=tmp_path
    )
    logs = [trainer.train_step() for _ in range(4)]
    assert ["discr_loss" in entry for entry in logs] == [False, False, True, True]
    assert ["adaptive_weight" in entry for entry in logs] == [False, False, True, True]
    assert int(cvivit.gan_step) == 4  # trainer steps, whatever the micro-batching
    moved = [k for k, v in cvivit.discr.state_dict().items() if not torch.equal(v, discr_before[k])]
    assert moved


def test_default_warm_up_keeps_a_plain_loop_free_of_a_random_discriminator():
    cvivit = tiny()  # the defaults, as a user builds it
    _, breakdown = cvivit(torch.rand(2, 3, 3, 16, 16), return_loss_breakdown=True)
    assert "adversarial" not in breakdown and cvivit.discr_start_step > 0


def test_gan_step_is_saved_and_old_weights_still_load(tmp_path):
    cvivit = tiny()
    cvivit.gan_step.fill_(7)
    state = cvivit.state_dict()
    assert int(state["gan_step"]) == 7
    old = {k: v for k, v in tiny(pixel_head="linear", first_frame="image").state_dict().items() if k != "gan_step"}
    old = {k.replace("pixel_head.to_first.", "to_first_frame_pixels.").replace("pixel_head.to_rest.", "to_rest_pixels."): v
           for k, v in old.items()}
    fresh = tiny(pixel_head="linear", first_frame="image")
    fresh.load_state_dict(old)  # a state dict written before the pixel head and the counter existed
    torch.testing.assert_close(fresh.pixel_head.to_first[0].weight, old["to_first_frame_pixels.0.weight"])


# ------------------------------------------------------------------------------------ perceptual network


def test_auto_perceptual_network_says_when_it_is_missing(monkeypatch, tmp_path, capsys):
    monkeypatch.setattr(cvivit_module, "load_vgg16_features", lambda: None)
    monkeypatch.setattr(cvivit_module, "_warned_no_vgg", False)
    with pytest.warns(UserWarning, match="WITHOUT a perceptual loss"):
        cvivit = tiny(perceptual_network="auto", image_size=None)
    assert cvivit.perceptual_status == "unavailable"
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # once per process, not per model
        tiny(perceptual_network="auto")
    CViViTTrainer(cvivit, dataset=PaddedClips(), num_frames=9, batch_size=2, results_folder=tmp_path)
    assert "without a perceptual loss" in capsys.readouterr().out


# ------------------------------------------------------------------------------------ codebook health


def test_codebook_stats_closed_forms():
    ids = torch.zeros(2, 3, 2, 2, dtype=torch.long)
    usage, perplexity = codebook_stats(ids, 16)
    assert usage == pytest.approx(1 / 16) and perplexity == pytest.approx(1.0)
    ids = torch.arange(16).view(1, 4, 2, 2)
    usage, perplexity = codebook_stats(ids, 16)
    assert usage == pytest.approx(1.0) and perplexity == pytest.approx(16.0, rel=1e-5)
    mask = torch.tensor([[True, False, False, False]])  # only ids 0..3 are real
    usage, perplexity = codebook_stats(ids, 16, mask)
    assert usage == pytest.approx(4 / 16) and perplexity == pytest.approx(4.0, rel=1e-5)


def test_breakdown_reports_codebook_usage():
    _, breakdown = tiny()(torch.rand(2, 3, 3, 16, 16), return_loss_breakdown=True)
    assert 0 < breakdown["codebook_usage"] <= 1 and 1 <= breakdown["codebook_perplexity"] <= 64


def test_codebook_stays_in_use_through_training():
    """k-means initialisation and dead-code replacement (the defaults) against the plain random codebook: after
    30 steps of a plain Adam loop the old settings leave a handful of codes doing the work."""
    data = SyntheticCaptionedVideos(
        32, num_frames=3, image_size=16, shapes=("square", "circle", "star"), colors=("red", "green", "blue", "white")
    )
    video = torch.stack([data[i]["video"] for i in range(32)])
    perplexity = {}
    for name, kwargs in {"old": dict(kmeans_init=False, threshold_ema_dead_code=0), "default": {}}.items():
        cvivit = tiny(codebook_size=64, use_gan=False, patch_size=4, **kwargs).train()
        optimizer = torch.optim.Adam(cvivit.parameters(), lr=1e-3)
        for i in range(30):
            loss = cvivit(video[(i * 8) % 32 :][:8])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        _, perplexity[name] = codebook_stats(cvivit.eval().tokenize(video), 64)
    assert perplexity["default"] > 25 and perplexity["default"] > 2 * perplexity["old"], perplexity


def test_dead_codes_are_replaced():
    cvivit = tiny(codebook_size=32, threshold_ema_dead_code=2).train()
    video = torch.rand(4, 3, 3, 16, 16)
    cvivit(video)
    codebook = cvivit.quantizer.quantizer._codebook
    codebook.cluster_size.data[..., :8] = 0.0  # eight codes look dead
    before = codebook.embed.detach().clone()
    cvivit(video)
    assert not torch.equal(before[..., :8, :], codebook.embed[..., :8, :])


def test_codebook_decay_sets_how_far_codes_move_per_step():
    """`codebook_decay` is the codebook's EMA decay: from the same state, one training forward moves the codes
    less at 0.99 than at the default 0.8; it is saved with the config and a value outside [0, 1) is refused."""
    first, second = torch.rand(2, 4, 3, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    moved = {}
    for decay in (0.8, 0.99):
        cvivit = tiny(codebook_size=32, threshold_ema_dead_code=0, codebook_decay=decay).train()
        cvivit(first)  # k-means initialisation: the codes are the means of this batch's latents
        before = cvivit.quantizer.quantizer._codebook.embed.detach().clone()
        cvivit(second)  # another batch pulls them toward its own means
        moved[decay] = (cvivit.quantizer.quantizer._codebook.embed - before).norm().item()
    assert 0 < moved[0.99] < moved[0.8] / 5, moved
    assert tiny(codebook_decay=0.99).config["codebook_decay"] == 0.99
    with pytest.raises(ValueError, match="codebook_decay"):
        tiny(codebook_decay=1.0)


def test_trainer_logs_usage_and_warns_on_collapse(tmp_path, capsys):
    cvivit = tiny(use_gan=False, image_size=None)
    trainer = CViViTTrainer(
        cvivit,
        dataset=PaddedClips(),
        num_frames=9,
        batch_size=2,
        valid_frac=0,
        results_folder=tmp_path,
        collapse_warn_after=0,
        collapse_warn_usage=1.01,  # any usage counts as collapse here
    )
    logs = trainer.train_step()
    assert 0 < logs["codebook_usage"] <= 1 and logs["codebook_perplexity"] >= 1
    trainer.train_step()
    out = capsys.readouterr().out
    assert out.count("codebook is collapsing") == 1  # said once, not every step


# ------------------------------------------------------------------------------------ EMA export


def test_ema_copy_keeps_the_trained_codebook(tmp_path):
    data = SyntheticCaptionedVideos(32, num_frames=5, image_size=16, seed=0)
    cvivit = tiny(image_size=None, use_gan=False)
    trainer = CViViTTrainer(
        cvivit,
        dataset=data,
        num_frames=5,
        batch_size=4,
        lr=1e-3,
        ema_beta=0.9,
        valid_frac=0,
        num_train_steps=40,
        save_model_every=1000,
        results_folder=tmp_path,
    )
    trainer.train()
    online, ema = trainer.unwrapped_model.eval(), trainer.ema.ema_model.eval()
    embed = ema.quantizer.quantizer._codebook.embed
    torch.testing.assert_close(embed.norm(dim=-1), torch.ones_like(embed.norm(dim=-1)), atol=1e-4, rtol=0)
    torch.testing.assert_close(embed, online.quantizer.quantizer._codebook.embed)
    videos = torch.stack([data[i]["video"] for i in range(16)])
    assert torch.equal(ema.tokenize(videos), online.tokenize(videos))  # the trained encoder and codebook
    decoder = [k for k in online.state_dict() if k.startswith("dec_") and online.state_dict()[k].is_floating_point()]
    assert any(not torch.equal(ema.state_dict()[k], online.state_dict()[k]) for k in decoder)  # averaged
    exported = type(cvivit).from_pretrained(tmp_path / "tokenizer").eval()
    assert torch.equal(exported.tokenize(videos), ema.tokenize(videos))
    # a fine-tune of the export must not re-run the k-means initialisation over its trained codebook
    assert bool(exported.quantizer.quantizer._codebook.initted) and int(exported.gan_step) == 40


# ------------------------------------------------------------------------------------ inputs that gave silent results


def test_non_finite_video_is_an_error_everywhere():
    cvivit = tiny()
    video = torch.rand(1, 3, 3, 16, 16)
    video[0, 0, 1, 2, 3] = float("nan")
    for call in (cvivit.tokenize, cvivit, lambda v: cvivit(v, return_discr_loss=True)):
        with pytest.raises(ValueError, match="NaN or infinite"):
            call(video)
    with pytest.raises(ValueError, match="NaN or infinite"):
        cvivit.tokenize(torch.full((1, 3, 1, 16, 16), float("inf")))


def test_ids_on_a_larger_grid_than_the_model_are_an_error():
    cvivit = tiny()  # image_size 16, patch 8: a 2x2 grid
    ids = torch.zeros(1, 2, 3, 3, dtype=torch.long)
    with pytest.raises(ValueError, match="token grid"):
        cvivit.decode_from_codebook_indices(ids)
    assert cvivit.decode_from_codebook_indices(torch.zeros(1, 2, 2, 2, dtype=torch.long)).shape == (1, 3, 3, 16, 16)


def test_a_tokenizer_saved_by_version_0_1_still_loads_and_tokenizes_the_same():
    """tests/fixtures/cvivit_v0_1 was written by `save_pretrained` of the first release (linear head, random
    codebook, no gan_step); the expected ids were computed by that release."""
    from pathlib import Path

    from safetensors.torch import load_file

    from phenaki_pytorch import CViViT

    fixtures = Path(__file__).parent / "fixtures"
    expected = load_file(str(fixtures / "cvivit_v0_1_expected.safetensors"))
    cvivit = CViViT.from_pretrained(fixtures / "cvivit_v0_1").eval()
    assert cvivit.config["pixel_head"] == "linear" and cvivit.discr_start_step == 0
    assert cvivit.first_frame == "image"  # as it was trained, whatever today's default
    assert torch.equal(cvivit.tokenize(expected["video"]), expected["ids"])


def test_evaluation_and_the_model_count_the_same_token_frames():
    from phenaki_pytorch.evaluation import token_frame_mask

    cvivit = tiny()
    mask = torch.tensor([[True, False, True, True, False], [True, True, False, False, False]])  # gaps and tails
    assert torch.equal(token_frame_mask(mask, 3), cvivit.token_frame_mask(mask))
