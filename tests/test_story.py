import pytest
import torch
from helpers import tiny_phenaki

from phenaki_pytorch import sample_story


@pytest.fixture
def phenaki():
    torch.manual_seed(0)
    return tiny_phenaki().eval()  # 2x2 tokens per frame, max_seq_len 64 -> at most 31 frames per window


def record_calls(phenaki, monkeypatch):
    calls = []
    original = phenaki.sample

    def spy(**kwargs):
        out = original(**kwargs)
        calls.append((kwargs, out))
        return out

    monkeypatch.setattr(phenaki, "sample", spy)
    return calls


def test_story_longer_than_one_window(phenaki, monkeypatch):
    calls = record_calls(phenaki, monkeypatch)
    story = sample_story(phenaki, [("a red square", 40), ("a blue circle", 37)], window_frames=9, prime_frames=3, steps=2,
                         show_progress=False, prime_with="frames")  # the frames passed as context are checked
    assert story.video.shape == (1, 3, 77, 16, 16)
    assert [(s.start, s.end) for s in story.scenes] == [(0, 40), (40, 77)]
    assert len(calls) > 2  # many windows, each within max_seq_len
    # every window after the first is primed with exactly the last 3 frames made so far
    made, scene_remaining = 0, [40, 37]
    for kwargs, out in calls:
        if kwargs.get("prime_frames") is not None:
            assert torch.equal(kwargs["prime_frames"], story.video[:, :, made - 3 : made])
            assert kwargs["prime_frames"].shape[2] + kwargs["num_frames"] <= 9
        kept = min(out.shape[2], scene_remaining[0])
        made += kept
        scene_remaining[0] -= kept
        if scene_remaining[0] == 0:
            scene_remaining.pop(0)
    assert made == 77
    prompts = [kwargs["texts"][0] for kwargs, _ in calls]
    assert prompts[0] == "a red square" and prompts[-1] == "a blue circle"


def test_story_far_beyond_max_seq_len_in_one_call(phenaki):
    # 2 minutes at 8 fps = 960 frames; one window holds at most 31
    story = sample_story(phenaki, [("a", 60.0), ("b", 60.0)], fps=8.0, steps=1, show_progress=False)
    assert story.video.shape[2] == 960
    assert story.scene_video(1).shape[2] == 480


def test_scene_boundaries_keep_primed_frames_exactly(phenaki, monkeypatch):
    """Frames already made are never rewritten: the video so far is a prefix of the final video."""
    calls = record_calls(phenaki, monkeypatch)
    story = sample_story(phenaki, [("a", 5), ("b", 4), ("c", 6)], prime_frames=3, steps=2, show_progress=False,
                         prime_with="frames")  # each call returns the video alone
    pieces, scene_remaining = [], [5, 4, 6]
    for _, out in calls:
        kept = out[:, :, : scene_remaining[0]]
        pieces.append(kept)
        scene_remaining[0] -= kept.shape[2]
        if scene_remaining[0] == 0:
            scene_remaining.pop(0)
    assert torch.equal(torch.cat(pieces, dim=2), story.video)


def test_story_errors(phenaki):
    with pytest.raises(ValueError, match="at least one"):
        sample_story(phenaki, [])
    with pytest.raises(ValueError, match="needs fps"):
        sample_story(phenaki, [("a", 1.5)])
    with pytest.raises(ValueError, match="window_frames"):
        sample_story(phenaki, [("a", 5)], window_frames=10)
    with pytest.raises(ValueError, match="window_frames"):
        sample_story(phenaki, [("a", 5)], window_frames=33)
    with pytest.raises(ValueError, match="prime_frames"):
        sample_story(phenaki, [("a", 5)], window_frames=5, prime_frames=5)
    with pytest.raises(ValueError, match="non-empty"):
        sample_story(phenaki, [("", 5)])
    with pytest.raises(ValueError, match="at least one frame"):
        sample_story(phenaki, [("a", 0)])


def test_streamed_story_equals_the_returned_tensor(phenaki):
    scenes = [("a red square", 12), ("a blue circle", 9)]
    kwargs = dict(window_frames=9, prime_frames=3, steps=2, show_progress=False)
    whole = sample_story(phenaki, scenes, generator=torch.Generator().manual_seed(1), **kwargs)
    chunks = []
    streamed = sample_story(phenaki, scenes, generator=torch.Generator().manual_seed(1), frame_sink=chunks.append, **kwargs)
    assert streamed.video is None and streamed.num_frames == whole.num_frames == 21
    assert len(chunks) > 2 and all(chunk.ndim == 5 for chunk in chunks)
    assert torch.equal(torch.cat(chunks, dim=2), whole.video)
    assert streamed.scenes == whole.scenes
    with pytest.raises(ValueError, match="frame_sink"):
        streamed.scene_video(0)


def test_streamed_story_keeps_only_the_context(phenaki, monkeypatch):
    """With a sink, each window is primed from a small copy of the last frames, never from a view of a
    bigger tensor that would keep the whole video alive."""
    calls = record_calls(phenaki, monkeypatch)
    sample_story(phenaki, [("a", 30)], window_frames=9, prime_frames=3, steps=1, show_progress=False, frame_sink=lambda c: None,
                 prime_with="frames")  # the primed frames handed to sample are checked
    primes = [kwargs["prime_frames"] for kwargs, _ in calls if kwargs.get("prime_frames") is not None]
    assert primes and all(p.shape[2] == 3 and p.untyped_storage().nbytes() <= p.numel() * p.element_size() for p in primes)


def test_story_prime_frames_zero_gives_independent_windows(phenaki, monkeypatch):
    calls = record_calls(phenaki, monkeypatch)
    story = sample_story(phenaki, [("a", 20)], window_frames=9, prime_frames=0, steps=1, show_progress=False)
    assert story.video.shape[2] == 20 and len(calls) == 3
    assert all(kwargs.get("prime_frames") is None for kwargs, _ in calls)


def test_story_durations_and_counts_are_checked(phenaki):
    for duration in (float("nan"), float("inf")):
        with pytest.raises(ValueError, match="finite"):
            sample_story(phenaki, [("a", duration)], fps=8.0)
    with pytest.raises(ValueError, match="max_frames=100"):
        sample_story(phenaki, [("a", 60), ("b", 1e9)], fps=8.0, max_frames=100)
    with pytest.raises(TypeError, match="prime_frames"):
        sample_story(phenaki, [("a", 5)], prime_frames=True)
    with pytest.raises(TypeError, match="batch_size"):
        sample_story(phenaki, [("a", 5)], batch_size=True)
    with pytest.raises(ValueError, match="fps"):
        sample_story(phenaki, [("a", 1.0)], fps=float("nan"))


def test_token_priming_carries_the_drawn_ids_and_reencodes_one_frame(phenaki, monkeypatch):
    calls = record_calls(phenaki, monkeypatch)
    tp = phenaki.cvivit.temporal_patch_size
    # scene lengths on the temporal patch grid: no chunk is cut short, so every later window carries tokens
    story = sample_story(phenaki, [("a", 9), ("b", 8), ("c", 8)], window_frames=9, prime_frames=5,
                         prime_with="tokens", steps=2, show_progress=False)
    assert story.video.shape[2] == 25
    assert calls[0][0]["return_codebook_ids"] is True
    primed = [(i, kwargs) for i, (kwargs, _) in enumerate(calls) if kwargs.get("prime_codebook_ids") is not None]
    assert len(primed) == len(calls) - 1 and not any(kw.get("prime_frames") is not None for kw, _ in calls)
    carried = (5 - 1) // tp
    for index, kwargs in primed:
        previous_ids = calls[index - 1][1]
        prime = kwargs["prime_codebook_ids"]
        assert prime.shape[1] == 1 + carried
        # the last token frames MaskGit drew are copied as they are, not decoded and re-encoded
        assert torch.equal(prime[:, 1:], previous_ids[:, -carried:])
    # the first token frame is the tokenizer's own encoding of the one frame before the carried ones
    first_window_frames = 9
    frame = story.video[:, :, first_window_frames - 1 - carried * tp][:, :, None]
    torch.testing.assert_close(primed[0][1]["prime_codebook_ids"][:, :1], phenaki.cvivit.tokenize(frame))
    # the decoded story keeps what was made: the first window's frames are the decode of its ids
    torch.testing.assert_close(story.video[:, :, :9], phenaki.cvivit.decode_from_codebook_indices(calls[0][1]).clamp(0, 1))


def test_token_priming_falls_back_to_frames_after_a_cut_chunk(phenaki, monkeypatch):
    calls = record_calls(phenaki, monkeypatch)
    # 6 frames: the first window makes 7 and keeps 6, so its ids do not end the video
    story = sample_story(phenaki, [("a", 6), ("b", 4)], window_frames=9, prime_frames=3,
                         prime_with="tokens", steps=2, show_progress=False)
    assert story.video.shape[2] == 10
    assert calls[1][0].get("prime_frames") is not None and calls[1][0].get("prime_codebook_ids") is None
    with pytest.raises(ValueError, match="prime_with"):
        sample_story(phenaki, [("a", 5)], prime_with="pixels")


@pytest.mark.parametrize("prime_with", ["tokens", "frames"])
def test_continuation_windows_get_their_own_guidance(phenaki, monkeypatch, prime_with):
    calls = record_calls(phenaki, monkeypatch)
    sample_story(phenaki, [("a", 9), ("b", 8)], window_frames=9, prime_frames=5, prime_with=prime_with, steps=1,
                 show_progress=False)
    scales = [kwargs["cond_scale"] for kwargs, _ in calls]
    assert len(scales) >= 3 and scales == [3.0] * len(scales)  # default: every window guided alike
    calls.clear()
    sample_story(phenaki, [("a", 9), ("b", 8)], window_frames=9, prime_frames=5, prime_with=prime_with, steps=1,
                 cond_scale=4.0, continuation_cond_scale=1.5, show_progress=False)
    scales = [kwargs["cond_scale"] for kwargs, _ in calls]
    assert len(scales) >= 3 and scales[0] == 4.0 and all(scale == 1.5 for scale in scales[1:])
    with pytest.raises(ValueError, match="continuation_cond_scale"):
        sample_story(phenaki, [("a", 5)], continuation_cond_scale=float("nan"), show_progress=False)
