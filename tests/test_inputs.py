"""Public entry points reject inputs that would otherwise give silent wrong results: non-finite numbers,
bools where counts are expected, and a zero prime length read as "everything"."""

import subprocess
import sys

import pytest
import torch
from helpers import TEXT_DIM, tiny_phenaki

from phenaki_pytorch import make_video


@pytest.fixture
def phenaki():
    torch.manual_seed(0)
    return tiny_phenaki().eval()  # 16x16 frames, 2x2 tokens a frame, temporal patch 2


def sample(phenaki, **kwargs):
    kwargs.setdefault("texts", ["a red square"])
    kwargs.setdefault("num_frames", 5)
    return phenaki.sample(steps=2, **kwargs)


@pytest.mark.parametrize("value", [float("nan"), float("inf"), -float("inf")])
@pytest.mark.parametrize("name", ["cond_scale", "temperature", "critic_noise_scale"])
def test_non_finite_numbers_are_rejected(phenaki, name, value):
    with pytest.raises(ValueError, match=name):
        sample(phenaki, **{name: value})


def test_negative_temperature_is_rejected(phenaki):
    with pytest.raises(ValueError, match="temperature"):
        sample(phenaki, temperature=-0.5)


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_non_finite_text_embeds_are_rejected(phenaki, bad):
    embeds = torch.randn(1, 4, TEXT_DIM)
    embeds[0, 2, 3] = bad
    with pytest.raises(ValueError, match="text_embeds"):
        sample(phenaki, texts=None, text_embeds=embeds)


def test_non_finite_prime_frames_are_rejected(phenaki):
    prime = torch.rand(1, 3, 3, 16, 16)
    prime[0, 1, 2, 5, 5] = float("nan")
    with pytest.raises(ValueError, match="prime_frames"):
        sample(phenaki, prime_frames=prime, num_frames=2)


def test_finite_inputs_still_sample(phenaki):
    video = sample(phenaki, cond_scale=0.0, temperature=0.0, prime_frames=torch.rand(1, 3, 3, 16, 16), num_frames=2)
    assert video.shape == (1, 3, 2, 16, 16)


@pytest.mark.parametrize("name", ["num_frames", "batch_size", "steps"])
def test_bools_are_not_counts(phenaki, name):
    kwargs = {"texts": "a red square", "num_frames": 5, "steps": 2, name: True}
    with pytest.raises(TypeError, match=name):
        phenaki.sample(**kwargs)


def spy_on_sample(phenaki, monkeypatch):
    calls = []
    original = phenaki.sample

    def spy(**kwargs):
        calls.append(kwargs)
        return original(**kwargs)

    monkeypatch.setattr(phenaki, "sample", spy)
    return calls


def test_make_video_prime_length_zero_means_no_priming(phenaki, monkeypatch):
    calls = spy_on_sample(phenaki, monkeypatch)
    entire, scenes = make_video(phenaki, ["a red square", "a blue circle"], [5, 5], [0], steps=2)
    assert calls[1]["prime_frames"] is None  # `[-0:]` used to hand over the whole first scene
    assert entire.shape[2] == 10 and [s.shape[2] for s in scenes] == [5, 5]


def test_make_video_primes_with_the_last_frames(phenaki, monkeypatch):
    calls = spy_on_sample(phenaki, monkeypatch)
    entire, _ = make_video(phenaki, ["a", "b"], [5, 4], [3], steps=2)
    assert torch.equal(calls[1]["prime_frames"], entire[:, :, 2:5])


def test_make_video_counts(phenaki):
    with pytest.raises(ValueError, match=r"prime_lengths\[0\]"):
        make_video(phenaki, ["a", "b"], [5, 5], [-1], steps=2)
    with pytest.raises(TypeError, match=r"prime_lengths\[0\]"):
        make_video(phenaki, ["a", "b"], [5, 5], [True], steps=2)
    with pytest.raises(TypeError, match=r"num_frames\[1\]"):
        make_video(phenaki, ["a", "b"], [5, True], [3], steps=2)


# ---------------------------------------------------------------------- the package top


def test_trainers_import_from_the_package_top():
    import phenaki_pytorch
    from phenaki_pytorch import CViViT, CViViTTrainer, PhenakiTrainer  # the 0.5.0 README's import
    from phenaki_pytorch.training import CViViTTrainer as FromTraining
    from phenaki_pytorch.training import PhenakiTrainer as PhenakiFromTraining

    assert CViViT is phenaki_pytorch.CViViT
    assert CViViTTrainer is FromTraining and PhenakiTrainer is PhenakiFromTraining
    assert {"CViViTTrainer", "PhenakiTrainer"} <= set(dir(phenaki_pytorch)) & set(phenaki_pytorch.__all__)
    with pytest.raises(AttributeError, match="NoSuchTrainer"):
        phenaki_pytorch.NoSuchTrainer  # noqa: B018


def test_importing_the_package_does_not_load_the_trainers():
    code = (
        "import sys, phenaki_pytorch\n"
        "assert 'accelerate' not in sys.modules and 'phenaki_pytorch.training' not in sys.modules, 'eager'\n"
        "phenaki_pytorch.CViViTTrainer\n"
        "assert 'phenaki_pytorch.training' in sys.modules\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
