"""Judging samples against their prompts, scene-cut jumps in stories, and the offline hashed-word encoder."""

import math

import pytest
import torch
from helpers import tiny_phenaki

from phenaki_pytorch.data import GLYPH_HELD_OUT, GLYPH_SHAPES, SyntheticGlyphVideos
from phenaki_pytorch.evaluation import (
    foreground_centroids,
    judge_prompt_samples,
    scene_cut_jumps,
    summarize_scene_cuts,
    train_shape_probe,
)
from phenaki_pytorch.story import sample_story
from phenaki_pytorch.text import hashed_word_encoder


@pytest.fixture(scope="module")
def probe():
    return train_shape_probe(SyntheticGlyphVideos(256, seed=11, exclude=GLYPH_HELD_OUT), steps=100, batch_size=32)


def test_real_clips_follow_their_prompts_and_wrong_prompts_do_not(probe):
    clips = SyntheticGlyphVideos(24, seed=5)
    videos = torch.stack([clips[i]["video"] for i in range(24)])
    prompts = [clips[i]["text"] for i in range(24)]
    held = prompts[:6]
    report = judge_prompt_samples(videos, prompts, probe, held_out=held, real_videos=videos)
    assert report.counts == {"all": 24, "seen": 18, "held_out": 6}
    assert report.accuracy["shape"]["all"] > 0.9
    assert report.accuracy["color"]["all"] == 1.0 and report.accuracy["direction"]["all"] == 1.0
    assert report.temporal_consistency > 0.8
    assert report.probe_frechet < 1e-6  # same clips on both sides
    assert "consistency" in report.table()
    assert len(report.shape_by_frame) == videos.shape[2] and min(report.shape_by_frame) > 0.8

    # a glyph that morphs: the last frames replaced by another prompt's glyph of the same colour and motion
    morphed = videos.clone()
    for i in range(24):
        color, shape, direction = SyntheticGlyphVideos.parse_caption(prompts[i])
        other = GLYPH_SHAPES[(GLYPH_SHAPES.index(shape) + 1) % len(GLYPH_SHAPES)]
        morphed[i, :, 6:] = clips.render(color, other, direction)[:, 6:]
    changed = judge_prompt_samples(morphed, prompts, probe)
    assert min(changed.shape_by_frame[:6]) > 0.8 and max(changed.shape_by_frame[6:]) < 0.2
    assert changed.temporal_consistency < 0.2 and changed.accuracy["shape"]["all"] > 0.8  # majority still right

    # the same clips, each prompt naming the next shape: shape wrong, colour and direction still right
    def next_shape(text):
        color, shape, direction = SyntheticGlyphVideos.parse_caption(text)
        other = GLYPH_SHAPES[(GLYPH_SHAPES.index(shape) + 1) % len(GLYPH_SHAPES)]
        return SyntheticGlyphVideos.caption_for(color, other, direction)

    wrong = judge_prompt_samples(videos, [next_shape(p) for p in prompts], probe)
    assert wrong.accuracy["shape"]["all"] < 0.2 and wrong.accuracy["color"]["all"] == 1.0
    # noise clips are far from real ones in probe space
    noise = judge_prompt_samples(torch.rand_like(videos), prompts, probe, real_videos=videos)
    assert noise.probe_frechet > 1.0
    with pytest.raises(ValueError, match="one prompt per clip"):
        judge_prompt_samples(videos, prompts[:3], probe)


def test_scene_cut_jumps_measures_the_jump_against_motion():
    long = SyntheticGlyphVideos(1, num_frames=18, seed=0)
    smooth = long.render("red", "ring", "down")  # one motion throughout, "cut" in the middle
    report = scene_cut_jumps(smooth, [0, 9])
    assert report.motion > 0.3 and report.ratio < 1.5
    first = SyntheticGlyphVideos(1, seed=0).render("red", "ring", "down")
    second = torch.roll(first, shifts=8, dims=3)  # restarts at the top, 8 px to the right
    jumped = scene_cut_jumps(torch.cat((first, second), dim=1), [0, 9])
    assert jumped.jump > 8 and jumped.ratio > 5
    centroids = foreground_centroids(torch.full((3, 2, 8, 8), 0.5))  # nothing but background-ish grey
    assert centroids.shape == (2, 2)
    with pytest.raises(ValueError, match="scene_starts"):
        scene_cut_jumps(smooth, [1, 9])
    # over stories: a story with no glyph beside its cut is left out of the means and counted
    empty = scene_cut_jumps(torch.zeros_like(smooth), [0, 9])
    summary = summarize_scene_cuts([report, jumped, empty])
    assert (summary.stories, summary.measured) == (3, 2)
    assert summary.jump == pytest.approx((report.jump + jumped.jump) / 2)
    assert summary.motion == pytest.approx((report.motion + jumped.motion) / 2)
    assert summary.ratio == pytest.approx(summary.jump / summary.motion)
    assert math.isnan(summarize_scene_cuts([]).ratio)


def test_scene_cut_jumps_on_a_sampled_story():
    torch.manual_seed(0)
    phenaki = tiny_phenaki().eval()
    story = sample_story(phenaki, [("a red ring", 5), ("a blue bar", 4)], show_progress=False, steps=3)
    report = scene_cut_jumps(story.video[0], [scene.start for scene in story.scenes])
    assert len(report.jumps) == 1 and report.missing <= story.video.shape[2]


def test_hashed_word_encoder_is_deterministic_per_word():
    encoder = hashed_word_encoder(16)
    embeds, mask = encoder.encode(["a red ring", "red"])
    assert embeds.shape == (2, 3, 16) and mask.tolist() == [[True] * 3, [True, False, False]]
    torch.testing.assert_close(embeds[0, 1], embeds[1, 0])  # "red" is one vector wherever it appears
    assert not torch.allclose(embeds[0, 0], embeds[0, 1])
    again, _ = hashed_word_encoder(16).encode(["a red ring"])
    torch.testing.assert_close(again[0], embeds[0])


def test_remasking_choice():
    from helpers import tiny_critic

    torch.manual_seed(0)
    with_critic = tiny_phenaki(critic=tiny_critic()).eval()
    calls = []
    forward = with_critic.critic.forward

    def spy(*args, **kwargs):
        calls.append(1)
        return forward(*args, **kwargs)

    with_critic.critic.forward = spy
    with_critic.sample(texts=["x"], num_frames=5, steps=3, remasking="confidence")
    assert not calls
    with_critic.sample(texts=["x"], num_frames=5, steps=3)  # default: the critic re-masks
    assert len(calls) == 2  # every step but the last
    with pytest.raises(ValueError, match="needs a critic"):
        tiny_phenaki().sample(texts=["x"], num_frames=5, remasking="critic")
    with pytest.raises(ValueError, match="remasking"):
        with_critic.sample(texts=["x"], num_frames=5, remasking="best")
