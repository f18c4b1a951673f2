import copy
import math
from collections import Counter

import pytest
import torch
from helpers import tiny_critic, tiny_cvivit, tiny_phenaki

from phenaki_pytorch.data import (
    MixedImageVideoDataset,
    MixedImageVideoStream,
    ShardedDataset,
    SyntheticCaptionedVideos,
    image_as_clip,
    write_shards,
)
from phenaki_pytorch.training.cvivit_trainer import collate_clips

FRAMES = 5  # 1 + 2 * temporal_patch_size of the tiny tokenizer


def images(num=7, size=16):
    g = torch.Generator().manual_seed(1)
    return [{"image": torch.rand(3, size, size, generator=g), "text": f"image {i}"} for i in range(num)]


def videos(num=10):
    return SyntheticCaptionedVideos(num_samples=num, num_frames=FRAMES, image_size=16, seed=0)


def is_image_item(item):
    return item["text"].startswith("image")


@pytest.mark.parametrize("fraction", [0.25, 0.3, 0.5, 0.8])
def test_ratio_holds_in_every_window_and_overall(fraction):
    mixed = MixedImageVideoDataset(images(), videos(), image_fraction=fraction, seed=4)
    flags = [mixed.is_image(i) for i in range(len(mixed))]
    assert abs(sum(flags) - fraction * len(mixed)) < 1 and sum(flags) == mixed.num_image_slots
    for n in (3, 8):
        for start in range(len(flags) - n):
            assert math.floor(n * fraction) <= sum(flags[start : start + n]) <= math.ceil(n * fraction)
    assert [is_image_item(mixed[i]) for i in range(len(mixed))] == flags
    # the default length gives every video a slot once an epoch
    video_texts = Counter(mixed[i]["text"] for i in range(len(mixed)) if not flags[i])
    assert len(mixed) - sum(flags) >= 10 and set(videos()[i]["text"] for i in range(10)) <= set(video_texts)


def test_items_are_padded_clips_and_the_rule_is_seeded_and_moves_with_the_epoch():
    mixed = MixedImageVideoDataset(images(), videos(), image_fraction=0.5, temporal_patch_size=2, seed=0)
    for i in range(len(mixed)):
        item = mixed[i]
        assert item["video"].shape == (3, FRAMES, 16, 16) and list(item) == ["video", "frame_mask", "text"]
        if is_image_item(item):
            assert item["frame_mask"].tolist() == [True, False, False, False, False]
            assert not item["video"][:, 1:].any()
        else:
            assert item["frame_mask"].all()
    again = MixedImageVideoDataset(images(), videos(), image_fraction=0.5, temporal_patch_size=2, seed=0)
    assert all(torch.equal(mixed[i]["video"], again[i]["video"]) for i in range(len(mixed)))  # resume-safe
    epoch0 = [mixed[i]["text"] for i in range(len(mixed))]
    mixed.set_epoch(1)
    epoch1 = [mixed[i]["text"] for i in range(len(mixed))]
    assert epoch0 != epoch1
    # image slots walk through every image before any repeats, across epochs
    drawn = [t for t in epoch0 + epoch1 if t.startswith("image")][:7]
    assert sorted(drawn) == sorted(f"image {i}" for i in range(7))


def test_errors_name_the_argument():
    with pytest.raises(ValueError, match="image_fraction must be in"):
        MixedImageVideoDataset(images(), videos(), image_fraction=1.5)
    with pytest.raises(ValueError, match="num_frames=4 cannot be tokenized.*nearest valid: \\(3, 5\\)"):
        MixedImageVideoDataset(images(), videos(), image_fraction=0.5, num_frames=4, temporal_patch_size=2)
    with pytest.raises(ValueError, match="needs a non-empty"):
        MixedImageVideoDataset([], videos(), image_fraction=0.5)
    with pytest.raises(ValueError, match="1 frame"):
        image_as_clip(torch.zeros(3, 2, 4, 4), FRAMES)


def mixed_batch(num=6):
    mixed = MixedImageVideoDataset(images(), videos(), image_fraction=0.5, temporal_patch_size=2, seed=0)
    batch = collate_clips([mixed[i] for i in range(num)])
    assert batch["frame_mask"].shape == (num, FRAMES)
    padded = ~batch["frame_mask"]
    assert padded.any() and batch["frame_mask"].all(dim=1).any()  # images and videos in one batch
    return batch, padded


def with_noise_in_padding(batch, padded):
    video = batch["video"].clone()
    noise = torch.rand(video.shape, generator=torch.Generator().manual_seed(9))
    where = padded[:, None, :, None, None].expand_as(video)
    video[where] = noise[where]
    assert not torch.equal(video, batch["video"])
    return video


def test_one_training_step_on_a_mixed_batch():
    torch.manual_seed(0)
    batch, _ = mixed_batch()
    phenaki = tiny_phenaki(critic=tiny_critic())
    optimizer = torch.optim.AdamW([p for p in phenaki.parameters() if p.requires_grad], lr=1e-3)
    before = copy.deepcopy(phenaki.maskgit.state_dict())
    loss = phenaki(batch["video"], batch["text"], video_frame_mask=batch["frame_mask"])
    assert torch.isfinite(loss)
    loss.backward()
    optimizer.step()
    assert any(not torch.equal(before[k], v) for k, v in phenaki.maskgit.state_dict().items())


def test_padded_frames_get_no_phenaki_loss():
    torch.manual_seed(0)
    batch, padded = mixed_batch()
    noisy = with_noise_in_padding(batch, padded)
    # a random codebook (no k-means on a first training pass): ids that tell the frames apart
    phenaki = tiny_phenaki(cvivit=tiny_cvivit(kmeans_init=False), critic=tiny_critic()).eval()
    assert not torch.equal(phenaki.cvivit.tokenize(noisy), phenaki.cvivit.tokenize(batch["video"]))  # ids differ

    def loss(video, mask=batch["frame_mask"]):
        torch.manual_seed(3)
        return phenaki(video, batch["text"], video_frame_mask=mask, cond_drop_prob=0.0,
                       generator=torch.Generator().manual_seed(5))

    torch.testing.assert_close(loss(noisy), loss(batch["video"]), rtol=1e-6, atol=1e-6)
    assert not torch.allclose(loss(noisy, None), loss(batch["video"], None))  # unmasked, the padding counts


def test_padded_frames_get_no_cvivit_loss_and_no_gradient():
    torch.manual_seed(0)
    batch, padded = mixed_batch()
    noisy = with_noise_in_padding(batch, padded)
    cvivit = tiny_cvivit()

    def loss_and_grad(video, mask=batch["frame_mask"]):
        model = copy.deepcopy(cvivit)  # the codebook updates in training mode: both passes start equal
        video = video.clone().requires_grad_()
        torch.manual_seed(3)
        loss = model(video, mask=mask)
        loss.backward()
        return loss.detach(), video.grad

    clean_loss, clean_grad = loss_and_grad(batch["video"])
    noisy_loss, noisy_grad = loss_and_grad(noisy)
    torch.testing.assert_close(noisy_loss, clean_loss, rtol=1e-6, atol=1e-6)
    where = padded[:, None, :, None, None].expand_as(clean_grad)
    assert clean_grad[where].abs().max() == 0 and noisy_grad[where].abs().max() == 0
    assert clean_grad[~where].abs().max() > 0
    assert not torch.allclose(loss_and_grad(noisy, None)[0], loss_and_grad(batch["video"], None)[0])


def test_stream_mixes_two_shard_readers(tmp_path):
    g = torch.Generator().manual_seed(0)
    stills = [{"video": torch.rand(3, 1, 8, 8, generator=g), "text": f"image {i}"} for i in range(4)]
    clips = [{"video": torch.rand(3, FRAMES, 8, 8, generator=g), "text": f"clip {i}"} for i in range(9)]
    image_shards = ShardedDataset(write_shards(stills, tmp_path / "img", max_count=2, show_progress=False))
    video_shards = ShardedDataset(write_shards(clips, tmp_path / "vid", max_count=2, show_progress=False))
    stream = MixedImageVideoStream(image_shards, video_shards, image_fraction=0.25, num_frames=FRAMES,
                                   temporal_patch_size=2, seed=0)
    stream.set_epoch(1)
    items = list(stream)
    texts = [item["text"] for item in items]
    assert sorted(t for t in texts if t.startswith("clip")) == sorted(c["text"] for c in clips)  # each video once
    assert abs((len(texts) - 9) - 0.25 * len(texts)) <= 1 and len(texts) > 9  # images at the set share
    for item in items:
        assert item["video"].shape == (3, FRAMES, 8, 8)
        assert int(item["frame_mask"].sum()) == (1 if item["text"].startswith("image") else FRAMES)
    batch = collate_clips(items[:4])
    assert batch["video"].shape == (4, 3, FRAMES, 8, 8)
