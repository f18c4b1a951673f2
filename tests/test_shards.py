import datetime
import io
import json
import tarfile
import warnings
from collections import Counter

import numpy as np
import pytest
import torch
from helpers import hashed_text_encoder, tiny_cvivit, tiny_phenaki
from torch.utils.data import DataLoader

from phenaki_pytorch.data import (
    SHARDS_META_FILE,
    PretokenizedDataset,
    ShardedDataset,
    SyntheticCaptionedVideos,
    UnreadableFileWarning,
    collate_tokens,
    collate_videos,
    pretokenize,
    write_shards,
)
from phenaki_pytorch.training.cvivit_trainer import collate_clips

NUM = 23  # 6 shards of at most 4: 4, 4, 4, 4, 4, 3


def numbered(num=NUM, frames=3, size=4):
    """Clips whose caption and pixel values both carry their index (pixel = index / 255, exact in uint8)."""
    return [
        {"video": torch.full((3, frames, size, size), i / 255), "frame_mask": torch.ones(frames, dtype=torch.bool),
         "text": f"clip {i}"}
        for i in range(num)
    ]


@pytest.fixture
def shards(tmp_path):
    return write_shards(numbered(), tmp_path / "shards", max_count=4, show_progress=False)


def texts_of(dataset, num_workers=0, batch_size=2):
    loader = DataLoader(dataset, batch_size=batch_size, num_workers=num_workers, collate_fn=collate_videos)
    return [text for batch in loader for text in batch["text"]]


def test_written_layout_and_meta(shards):
    names = sorted(p.name for p in shards.iterdir())
    assert names == [f"shard-{i:06d}.tar" for i in range(6)] + [SHARDS_META_FILE]
    meta = json.loads((shards / SHARDS_META_FILE).read_text())
    assert meta["kind"] == "videos" and meta["num_samples"] == NUM
    assert [s["num_samples"] for s in meta["shards"]] == [4, 4, 4, 4, 4, 3]
    with tarfile.open(shards / "shard-000000.tar") as tar:
        assert tar.getnames()[:3] == ["000000000.frame_mask.npy", "000000000.txt", "000000000.video.npy"]
        video = np.load(io.BytesIO(tar.extractfile("000000001.video.npy").read()), allow_pickle=False)
    assert video.dtype == np.uint8 and video.shape == (3, 3, 4, 4) and (video == 1).all()


def test_video_round_trip_exact_in_float32_and_within_half_a_level_in_uint8(tmp_path):
    data = SyntheticCaptionedVideos(num_samples=5, num_frames=5, image_size=8, seed=0)
    items = [data[i] for i in range(5)]
    items[3] = {**items[3], "frame_mask": torch.tensor([True, True, True, False, False])}
    for dtype, atol in (("float32", 0.0), ("uint8", 0.5 / 255 + 1e-7)):
        out = write_shards(items, tmp_path / dtype, max_count=2, video_dtype=dtype, show_progress=False)
        read = list(ShardedDataset(out, shuffle_shards=False))
        assert len(read) == 5
        for original, got in zip(items, read):
            assert list(got) == ["video", "frame_mask", "text"]  # CaptionedVideoDataset's keys
            assert got["video"].dtype == torch.float32 and got["video"].shape == original["video"].shape
            assert (got["video"] - original["video"]).abs().max() <= atol
            assert torch.equal(got["frame_mask"], original["frame_mask"]) and got["text"] == original["text"]
        batch = collate_clips(read[:3])
        assert batch["video"].shape == (3, 3, 5, 8, 8) and batch["text"] == [i["text"] for i in items[:3]]


def test_token_shards_match_pretokenize_and_train(tmp_path):
    torch.manual_seed(0)
    data = SyntheticCaptionedVideos(num_samples=7, num_frames=5, image_size=16, seed=0)
    cvivit = tiny_cvivit().eval()
    encoder = hashed_text_encoder()
    out = write_shards(data, tmp_path / "tok", max_count=3, tokenizer=cvivit, text_encoder=encoder, batch_size=3,
                       show_progress=False)
    pretokenize(data, cvivit, tmp_path / "folder", text_encoder=encoder, batch_size=3, show_progress=False)
    reference = PretokenizedDataset(tmp_path / "folder")
    read = list(ShardedDataset(out, shuffle_shards=False))
    meta = json.loads((out / SHARDS_META_FILE).read_text())
    assert meta["kind"] == "tokens" and meta["has_text_embeds"] and meta["tokenizer_config"] == cvivit.config
    longest = max(len(data[i]["text"].split()) for i in range(7))  # the hashed encoder: one token per word
    assert meta["text_length"] == longest
    assert len(read) == 7
    for i, got in enumerate(read):
        want = reference[i]
        assert list(got) == list(want)  # the same keys in the same order as PretokenizedDataset
        assert torch.equal(got["codebook_ids"], want["codebook_ids"]) and got["codebook_ids"].dtype == torch.long
        assert torch.equal(got["frame_mask"], want["frame_mask"]) and got["text"] == want["text"]
        n = int(want["text_mask"].sum())
        assert got["text_embeds"].shape == (longest, encoder.dim) and got["text_mask"].shape == (longest,)
        assert torch.equal(got["text_embeds"][:n], want["text_embeds"][:n])
        assert torch.equal(got["text_mask"][:n], want["text_mask"][:n]) and not got["text_mask"][n:].any()
        assert not got["text_embeds"][n:].any()
    batch = collate_tokens(read[:4])
    phenaki = tiny_phenaki(cvivit=cvivit)
    loss = phenaki(video_codebook_ids=batch["codebook_ids"], text_embeds=batch["text_embeds"],
                   text_mask=batch["text_mask"], video_frame_mask=batch["frame_mask"])
    assert torch.isfinite(loss)


@pytest.mark.parametrize("equalize", [False, True])
def test_two_ranks_two_workers_see_every_sample_once(shards, equalize):
    for epoch in (0, 1):
        per_rank = []
        for rank in (0, 1):
            dataset = ShardedDataset(shards, rank=rank, world_size=2, equalize=equalize, batch_size=2, seed=3)
            dataset.set_epoch(epoch)
            seen = texts_of(dataset, num_workers=2)
            assert len(seen) == len(dataset)
            per_rank.append(seen)
        everything = per_rank[0] + per_rank[1]
        counts = Counter(everything)
        assert max(counts.values()) == 1  # nothing twice
        if equalize:
            assert len(per_rank[0]) == len(per_rank[1]) == NUM // 2  # one sample left out this epoch
            assert len(everything) == NUM - 1
        else:
            assert sorted(len(s) for s in per_rank) == [NUM // 2, NUM // 2 + 1]
            assert set(everything) == {f"clip {i}" for i in range(NUM)}


def test_worker_count_does_not_change_a_ranks_stream_and_epochs_reshuffle(shards):
    def stream(num_workers, epoch, seed=0, **kwargs):
        dataset = ShardedDataset(shards, rank=1, world_size=2, batch_size=2, seed=seed, **kwargs)
        dataset.set_epoch(epoch)
        return texts_of(dataset, num_workers=num_workers)

    assert stream(0, 0) == stream(2, 0) == stream(3, 0)
    assert stream(0, 0, shuffle_buffer=5) == stream(2, 0, shuffle_buffer=5)
    assert stream(0, 0) != stream(0, 1)  # a new shard order each epoch
    assert stream(0, 0, shuffle_buffer=5) != stream(0, 0)  # the window shuffle reorders inside the slice
    assert sorted(stream(0, 0, shuffle_buffer=5)) == sorted(stream(0, 0))
    order = ShardedDataset(shards, seed=0).shard_order(1)
    assert order == ShardedDataset(shards, rank=1, world_size=2, seed=0).shard_order(1) != list(range(6))
    assert texts_of(ShardedDataset(shards, shuffle_shards=False)) == [f"clip {i}" for i in range(NUM)]


@pytest.mark.parametrize("shuffle_buffer", [0, 5])
def test_exact_resume_mid_epoch(shards, shuffle_buffer):
    def make():
        return ShardedDataset(shards, rank=0, world_size=2, batch_size=2, seed=1, shuffle_buffer=shuffle_buffer)

    dataset = make()
    per_epoch = len(dataset)  # 12 samples = 6 batches a rank
    uninterrupted = []
    for epoch in range(3):
        dataset.set_epoch(epoch)
        uninterrupted.append(texts_of(dataset, num_workers=2))
    flat = [t for epoch in uninterrupted for t in epoch]

    for batches_done in (0, 4, 6, 9, 13):
        resumed = make()
        state = resumed.resume_point(batches_done)
        assert state == {"epoch": batches_done // 6, "samples_consumed": (batches_done % 6) * 2}
        resumed.load_state_dict(state)
        assert resumed.state_dict() == state
        rest = texts_of(resumed, num_workers=1)  # another worker count than the first run
        start = state["epoch"] * per_epoch + state["samples_consumed"]
        assert rest == flat[start : (state["epoch"] + 1) * per_epoch]
        if state["epoch"] < 2:
            resumed.set_epoch(state["epoch"] + 1)  # the next epoch starts from its beginning again
            assert texts_of(resumed) == uninterrupted[state["epoch"] + 1]


def rewrite_member(path, name, data):
    """Copy a tar, with member `name` replaced by `data`."""
    members = []
    with tarfile.open(path) as tar:
        for member in tar:
            members.append((member, data if member.name == name else tar.extractfile(member).read()))
    with tarfile.open(path, "w") as tar:
        for member, content in members:
            member.size = len(content)
            tar.addfile(member, io.BytesIO(content))


@pytest.mark.parametrize("member", ["000000005.video.npy", "000000005.frame_mask.npy"])
def test_corrupt_member_is_skipped_counted_and_warned(shards, member):
    rewrite_member(shards / "shard-000001.tar", member, b"\x93NUMPY garbage")
    dataset = ShardedDataset(shards, shuffle_shards=False)
    with pytest.warns(UnreadableFileWarning, match="shard-000001.tar:1"):
        seen = texts_of(dataset)
    assert dataset.num_skipped == 1 and dataset.skipped == ["shard-000001.tar:1"]
    assert seen == [f"clip {i}" for i in range(NUM) if i != 5]

    equal = ShardedDataset(shards, shuffle_shards=False, equalize=True)
    with pytest.warns(UnreadableFileWarning):
        seen = texts_of(equal)
    assert len(seen) == NUM and seen[5] == "clip 4"  # stands in for the bad one: the batch count stays


def test_truncated_shard_loses_only_its_tail(shards):
    path = shards / "shard-000002.tar"
    data = path.read_bytes()
    with tarfile.open(path) as tar:
        third = [m for m in tar.getmembers() if m.name.startswith("000000010.")][0]
    path.write_bytes(data[: third.offset_data + 10])  # cut inside sample 10 (the shard's third)
    dataset = ShardedDataset(shards, shuffle_shards=False)
    with pytest.warns(UnreadableFileWarning):
        seen = texts_of(dataset)
    assert seen == [f"clip {i}" for i in range(NUM) if i not in (10, 11)]
    assert dataset.num_skipped == 2


def test_shards_without_meta_via_pattern_list_and_folder(shards):
    (shards / SHARDS_META_FILE).unlink()
    expected = [f"clip {i}" for i in range(NUM)]
    for source in (str(shards / "shard-{000000..000005}.tar"), str(shards / "shard-*.tar"), shards,
                   sorted(shards.glob("*.tar"))):
        dataset = ShardedDataset(source, shuffle_shards=False)
        assert dataset.kind == "videos" and dataset.counts == [4, 4, 4, 4, 4, 3]
        assert texts_of(dataset) == expected


def test_argument_errors(shards, tmp_path):
    with pytest.raises(ValueError, match="rank must be in"):
        ShardedDataset(shards, rank=2, world_size=2)
    with pytest.raises(ValueError, match="do not exist"):
        ShardedDataset(str(tmp_path / "nope-{0..3}.tar"))
    with pytest.raises(ValueError, match="already holds shards"):
        write_shards(numbered(3), shards, show_progress=False)
    with pytest.raises(ValueError, match="text_encoder is only used with a tokenizer"):
        write_shards(numbered(3), tmp_path / "x", text_encoder=hashed_text_encoder(), show_progress=False)
    dataset = ShardedDataset(shards)
    with pytest.raises(ValueError, match="samples_consumed must be"):
        dataset.load_state_dict({"epoch": 0, "samples_consumed": NUM + 1})
    with pytest.raises(ValueError, match="'epoch' and 'samples_consumed'"):
        dataset.load_state_dict({"epoch": 0})


def test_tokenize_command_writes_readable_shards(tmp_path):
    from phenaki_pytorch.cli import main

    cvivit = tiny_cvivit()
    cvivit.save_pretrained(tmp_path / "tok")
    code = main(["tokenize", "--tokenizer", str(tmp_path / "tok"), "--data", "synthetic", "--frames", "5",
                 "--synthetic-samples", "5", "--shards", "--shard-size", "2", "--out", str(tmp_path / "ids")])
    assert code == 0
    assert sorted(p.name for p in (tmp_path / "ids").glob("*.tar")) == [f"shard-{i:06d}.tar" for i in range(3)]
    read = list(ShardedDataset(tmp_path / "ids", shuffle_shards=False))
    data = SyntheticCaptionedVideos(num_samples=5, num_frames=5, image_size=16, seed=0)
    assert [item["text"] for item in read] == [data[i]["text"] for i in range(5)]
    expected = cvivit.eval().tokenize(torch.stack([data[i]["video"] for i in range(5)]))
    assert torch.equal(collate_tokens(read)["codebook_ids"], expected)
    # the same flags writing into a folder that already holds shards is the user's error
    assert main(["tokenize", "--tokenizer", str(tmp_path / "tok"), "--synthetic-samples", "2", "--frames", "5",
                 "--shards", "--out", str(tmp_path / "ids")]) == 2


# -------------------------------------------------------------------------------------------------------------
# two real processes (gloo): rank and world size come from torch.distributed
# -------------------------------------------------------------------------------------------------------------


def _distributed_reader(rank, folder, store, out):
    torch.set_num_threads(1)
    torch.distributed.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=2,
                                         timeout=datetime.timedelta(seconds=120))
    try:
        dataset = ShardedDataset(folder, equalize=True, batch_size=2, seed=5)
        dataset.set_epoch(2)
        seen = texts_of(dataset, num_workers=2)
        counts = [torch.tensor(len(seen))]
        gathered = [torch.tensor(0), torch.tensor(0)]
        torch.distributed.all_gather(gathered, counts[0])
        (out / f"rank{rank}.json").write_text(json.dumps({"seen": seen, "counts": [int(g) for g in gathered]}))
    finally:
        torch.distributed.destroy_process_group()


def test_real_two_process_run_splits_by_torch_distributed(shards, tmp_path):
    import torch.multiprocessing as mp

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        # fork: the children reuse the imported modules (spawn would import torch twice more)
        mp.start_processes(_distributed_reader, args=(shards, tmp_path / "store", tmp_path), nprocs=2, join=True,
                           start_method="fork")
    results = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert results[0]["counts"] == results[1]["counts"] == [NUM // 2, NUM // 2]
    seen = results[0]["seen"] + results[1]["seen"]
    assert len(seen) == len(set(seen)) == NUM - 1
    # the same split as explicit rank / world_size
    for rank in (0, 1):
        explicit = ShardedDataset(shards, rank=rank, world_size=2, equalize=True, batch_size=2, seed=5)
        explicit.set_epoch(2)
        assert texts_of(explicit) == results[rank]["seen"]
