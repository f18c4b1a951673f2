"""Video I/O, datasets and synthetic data (phenaki_pytorch.data). Everything is small and runs in seconds."""

from __future__ import annotations

import csv
import json
import math
import re
import time
import warnings

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader

from phenaki_pytorch.data import (
    COLORS,
    SHAPES,
    CaptionedVideoDataset,
    ImageDataset,
    SyntheticCaptionedVideos,
    UnreadableFileWarning,
    VideoDataset,
    VideoReadError,
    collate_videos,
    read_image,
    read_video,
    read_video_clip,
    save_image,
    save_video,
    video_encoder_for,
    video_grid,
)

CONTAINERS = (".mp4", ".webm", ".mkv", ".mov", ".avi")


def smooth_video(frames: int = 8, height: int = 32, width: int = 48) -> torch.Tensor:
    """Slowly varying colour gradients that drift over time: easy on lossy codecs and GIF palettes."""
    t = torch.linspace(0, 1, frames).view(frames, 1, 1)
    y = torch.linspace(0, 1, height).view(1, height, 1)
    x = torch.linspace(0, 1, width).view(1, 1, width)
    r = 0.2 + 0.6 * (0.5 + 0.5 * torch.sin(2 * math.pi * (x + 0.3 * t)))
    g = 0.2 + 0.6 * y.expand(frames, height, width)
    b = (0.3 + 0.4 * x * y + 0.2 * t).expand(frames, height, width)
    return torch.stack((r.expand(frames, height, width), g, b))


def gray_ramp(frames: int, value_step: int = 12, size: int = 16) -> torch.Tensor:
    """Frame k is flat gray with value k * value_step / 255, so the frame index can be read back."""
    levels = torch.arange(frames, dtype=torch.float32) * value_step / 255.0
    return levels.view(1, frames, 1, 1).expand(3, frames, size, size).contiguous()


def frame_ids(video: torch.Tensor, value_step: int = 12) -> list[int]:
    return [round(v) for v in (video.mean(dim=(0, 2, 3)) * 255.0 / value_step).tolist()]


def needs_encoder(suffix: str):
    return pytest.mark.skipif(video_encoder_for(suffix) is None, reason=f"no {suffix} encoder in this FFmpeg build")


# ---------------------------------------------------------------------------------------------------------------
# round trips
# ---------------------------------------------------------------------------------------------------------------


def test_gif_round_trip(tmp_path):
    video = smooth_video()
    path = save_video(video, tmp_path / "clip.gif", fps=10)
    assert path == tmp_path / "clip.gif" and path.exists()
    with Image.open(path) as img:
        assert img.info.get("loop") == 0  # loops forever
    back = read_video(path)
    assert back.shape == video.shape and back.dtype == torch.float32
    assert 0.0 <= back.min() and back.max() <= 1.0
    assert (back - video).abs().mean() < 0.02


@pytest.mark.parametrize("suffix", [pytest.param(s, marks=needs_encoder(s)) for s in CONTAINERS])
def test_container_round_trip(tmp_path, suffix):
    video = smooth_video()
    path = save_video(video, tmp_path / f"clip{suffix}", fps=8)
    back = read_video(path)
    assert back.shape == video.shape
    assert (back - video).abs().mean() < 0.05  # lossy codecs, smooth content


def test_frame_folder_round_trip(tmp_path):
    video = smooth_video(frames=12)
    folder = save_video(video, tmp_path / "frames")
    assert folder.is_dir() and len(list(folder.glob("*.png"))) == 12
    back = read_video(folder)
    assert back.shape == video.shape
    assert (back - video).abs().max() <= 0.5 / 255 + 1e-6  # PNG is lossless up to 8-bit rounding
    # a shorter save into the same folder leaves no stale frames behind
    save_video(video[:, :5], folder)
    assert read_video(folder).shape[1] == 5


def test_frame_folder_natural_order_and_grayscale(tmp_path):
    folder = tmp_path / "frames"
    folder.mkdir()
    for i in (10, 2, 1):  # natural order is 1, 2, 10; lexicographic would be 1, 10, 2
        Image.fromarray(np.full((8, 8), i * 20, dtype=np.uint8), mode="L").save(folder / f"f{i}.png")
    video = read_video(folder)
    assert video.shape == (3, 3, 8, 8)  # grayscale expanded to RGB
    assert [round(v * 255) for v in video[0, :, 0, 0].tolist()] == [20, 40, 200]
    assert torch.equal(video[0], video[1]) and torch.equal(video[1], video[2])


def test_frame_rate_is_read_back(tmp_path):
    from phenaki_pytorch.data.video_io import _open_source

    video = smooth_video(frames=6, height=16, width=16)
    assert _open_source(save_video(video, tmp_path / "a.gif", fps=7.5)).fps == pytest.approx(7.5)
    if video_encoder_for(".mp4") is not None:
        assert _open_source(save_video(video, tmp_path / "a.mp4", fps=12)).fps == pytest.approx(12)


def test_static_gif_keeps_frame_count(tmp_path):
    # Pillow merges identical consecutive GIF frames; the reader must restore them from the frame durations
    video = torch.full((3, 7, 8, 8), 0.5)
    video[:, 3:5] = 0.9
    back = read_video(save_video(video, tmp_path / "static.gif", fps=10))
    assert back.shape == video.shape
    assert (back - video).abs().max() < 0.01


@pytest.mark.parametrize(
    "suffix", [".gif", "", ".png"] + [pytest.param(s, marks=needs_encoder(s)) for s in (".mp4", ".webm")]
)
def test_rgb_channel_order(tmp_path, suffix):
    red = torch.zeros(3, 1 if suffix == ".png" else 4, 16, 16)
    red[0] = 1.0
    back = read_video(save_video(red, tmp_path / f"red{suffix}"))
    mean = back.mean(dim=(1, 2, 3))
    assert mean[0] > 0.9 and mean[1] < 0.1 and mean[2] < 0.1, f"not red after a round trip: {mean.tolist()}"


def test_read_image_modes(tmp_path):
    Image.fromarray(np.full((10, 20), 128, dtype=np.uint8), mode="L").save(tmp_path / "gray.png")
    rgba = np.zeros((10, 20, 4), dtype=np.uint8)
    rgba[..., 2] = 255
    rgba[..., 3] = 128
    Image.fromarray(rgba, mode="RGBA").save(tmp_path / "rgba.png")
    gray = read_image(tmp_path / "gray.png")
    assert gray.shape == (3, 10, 20) and torch.allclose(gray, torch.full_like(gray, 128 / 255))
    blue = read_image(tmp_path / "rgba.png", image_size=8)
    assert blue.shape == (3, 8, 8) and blue[2].min() > 0.99 and blue[:2].max() < 0.01
    assert read_image(tmp_path / "gray.png", image_size=(4, 6), crop="resize").shape == (3, 4, 6)
    # an image also reads as a one-frame video
    assert read_video(tmp_path / "gray.png").shape == (3, 1, 10, 20)


# ---------------------------------------------------------------------------------------------------------------
# temporal and spatial sampling
# ---------------------------------------------------------------------------------------------------------------


@pytest.fixture
def ramp_folder(tmp_path):
    return save_video(gray_ramp(20), tmp_path / "ramp")


def test_stride_num_frames_and_start(ramp_folder):
    assert frame_ids(read_video(ramp_folder)) == list(range(20))
    assert frame_ids(read_video(ramp_folder, 4)) == [0, 1, 2, 3]
    assert frame_ids(read_video(ramp_folder, 4, stride=3)) == [0, 3, 6, 9]
    assert frame_ids(read_video(ramp_folder, stride=3)) == [0, 3, 6, 9, 12, 15, 18]
    assert frame_ids(read_video(ramp_folder, 3, start=5, stride=2)) == [5, 7, 9]
    assert frame_ids(read_video(ramp_folder, 5, fps=5, source_fps=10)) == [0, 2, 4, 6, 8]


def test_short_clip_is_padded_and_masked(ramp_folder):
    video, mask = read_video_clip(ramp_folder, 8, stride=4)  # frames 0, 4, 8, 12, 16 exist; 3 are missing
    assert video.shape == (3, 8, 16, 16)
    assert mask.dtype == torch.bool and mask.tolist() == [True] * 5 + [False] * 3
    assert frame_ids(video[:, :5]) == [0, 4, 8, 12, 16]
    assert video[:, 5:].abs().max() == 0  # padding is zeros
    # read_video never passes padding off as frames; return_mask gives the padded clip
    assert read_video(ramp_folder, 8, stride=4).shape[1] == 5
    padded, mask2 = read_video(ramp_folder, 8, stride=4, return_mask=True)
    assert torch.equal(padded, video) and torch.equal(mask, mask2)


def test_fps_resampling_uses_container_rate(tmp_path):
    gif = save_video(gray_ramp(20), tmp_path / "ramp.gif", fps=10)
    assert frame_ids(read_video(gif, 5, fps=5)) == [0, 2, 4, 6, 8]
    assert frame_ids(read_video(gif, 4, fps=20, start=3)) == [3, 3, 4, 4]  # faster than the source repeats frames
    if video_encoder_for(".mp4") is not None:
        mp4 = save_video(gray_ramp(20), tmp_path / "ramp.mp4", fps=10)
        assert frame_ids(read_video(mp4, 4, fps=2.5, start=1)) == [1, 5, 9, 13]


def test_random_temporal_crop_is_reproducible(ramp_folder):
    def starts(seed):
        gen = torch.Generator().manual_seed(seed)
        return [
            frame_ids(read_video(ramp_folder, 4, stride=2, random_crop_time=True, generator=gen))[0] for _ in range(6)
        ]

    assert starts(0) == starts(0)
    assert len(set(starts(0) + starts(1))) > 1
    for _ in range(20):
        ids = frame_ids(read_video(ramp_folder, 4, stride=2, random_crop_time=True))
        assert ids == list(range(ids[0], ids[0] + 8, 2)) and 0 <= ids[0] <= 13  # the clip always fits
    # an int seed works as well
    a = read_video(ramp_folder, 4, random_crop_time=True, generator=7)
    assert torch.equal(a, read_video(ramp_folder, 4, random_crop_time=True, generator=7))


def test_resize_and_crop(tmp_path):
    frame = torch.zeros(3, 2, 16, 32)
    frame[0, :, :, :16] = 1.0  # left half red
    frame[2, :, :, 16:] = 1.0  # right half blue
    folder = save_video(frame, tmp_path / "wide")
    center = read_video(folder, image_size=8)
    assert center.shape == (3, 2, 8, 8)
    assert center[0, :, :, :3].min() > 0.9 and center[2, :, :, -3:].min() > 0.9  # both halves visible in the middle
    assert read_video(folder, image_size=(8, 12)).shape == (3, 2, 8, 12)
    assert read_video(folder, image_size=(4, 16), crop="resize").shape == (3, 2, 4, 16)
    crops = {round(read_video(folder, image_size=8, crop="random", generator=s)[0, 0, 0, -1].item()) for s in range(12)}
    assert crops == {0, 1}  # random crops land on either side
    a = read_video(folder, image_size=8, crop="random", generator=3)
    assert torch.equal(a, read_video(folder, image_size=8, crop="random", generator=3))
    # the same crop window applies to every frame
    assert torch.equal(a[:, 0], a[:, 1])


# ---------------------------------------------------------------------------------------------------------------
# writing
# ---------------------------------------------------------------------------------------------------------------


def test_save_sample_shaped_tensor(tmp_path):
    sample = torch.rand(1, 3, 17, 64, 64, requires_grad=True)  # what phenaki.sample returns
    gif = save_video(sample, tmp_path / "nested" / "dir" / "sample.gif")
    assert gif.exists() and read_video(gif).shape == (3, 17, 64, 64)
    if video_encoder_for(".mp4") is not None:
        assert read_video(save_video(sample, tmp_path / "sample.mp4")).shape == (3, 17, 64, 64)


def test_save_batch_as_grid(tmp_path):
    batch = torch.rand(4, 3, 5, 16, 16)
    grid = video_grid(batch, padding=2)
    assert grid.shape == (3, 5, 2 * 16 + 3 * 2, 2 * 16 + 3 * 2)
    assert torch.equal(grid[:, :, 2:18, 20:36], batch[1])  # second video: first row, second column
    assert video_grid(batch, nrow=4).shape == (3, 5, 20, 4 * 16 + 5 * 2)
    back = read_video(save_video(batch, tmp_path / "grid.gif"))
    assert back.shape == grid.shape
    if video_encoder_for(".mp4") is not None:
        # odd sizes are padded to even for 4:2:0 video
        odd = save_video(torch.rand(3, 5, 15, 9), tmp_path / "odd.mp4")
        assert read_video(odd).shape == (3, 5, 16, 10)


def test_save_uint8_clamping_and_gray(tmp_path):
    data = torch.randint(0, 256, (3, 3, 8, 8), dtype=torch.uint8)
    back = read_video(save_video(data, tmp_path / "u8"))
    assert torch.equal((back * 255).round().to(torch.uint8), data)
    wild = torch.full((3, 2, 8, 8), 3.0)
    wild[1] = -2.0
    back = read_video(save_video(wild, tmp_path / "wild"))
    assert back[0].min() == 1.0 and back[1].max() == 0.0
    gray = read_video(save_video(torch.full((1, 2, 8, 8), 0.5), tmp_path / "gray"))
    assert gray.shape == (3, 2, 8, 8)
    img = save_image(torch.rand(3, 8, 8), tmp_path / "one.png")
    assert read_image(img).shape == (3, 8, 8)


def test_codec_availability_is_reported():
    assert video_encoder_for(".gif") is None  # not a container: written with Pillow
    assert video_encoder_for("clip.txt") is None
    encoder = video_encoder_for("clip.mp4")
    assert encoder is None or isinstance(encoder, str)


# ---------------------------------------------------------------------------------------------------------------
# errors
# ---------------------------------------------------------------------------------------------------------------


def test_clear_errors(tmp_path, ramp_folder):
    with pytest.raises(FileNotFoundError, match="missing"):
        read_video(tmp_path / "missing.mp4")
    (tmp_path / "notes.txt").write_text("hi")
    with pytest.raises(ValueError, match="unsupported"):
        read_video(tmp_path / "notes.txt")
    with pytest.raises(ValueError, match="stride"):
        read_video(ramp_folder, stride=0)
    with pytest.raises(ValueError, match="num_frames"):
        read_video(ramp_folder, 0)
    with pytest.raises(ValueError, match="either stride or fps"):
        read_video(ramp_folder, stride=2, fps=4, source_fps=8)
    with pytest.raises(ValueError, match="fps"):
        read_video(ramp_folder, fps=-1)
    with pytest.raises(ValueError, match="source frame rate"):
        read_video(ramp_folder, fps=4)  # a frame folder has no frame rate
    with pytest.raises(ValueError, match="start"):
        read_video(ramp_folder, 2, start=20)
    with pytest.raises(ValueError, match="needs num_frames"):
        read_video(ramp_folder, random_crop_time=True)
    with pytest.raises(ValueError, match="start or random_crop_time"):
        read_video(ramp_folder, 2, start=1, random_crop_time=True)
    with pytest.raises(TypeError, match="crop"):
        read_video(ramp_folder, crop="middle")
    with pytest.raises(ValueError, match="image_size"):
        read_video(ramp_folder, image_size=0)
    with pytest.raises(TypeError, match="generator"):
        read_video(ramp_folder, generator="seed")
    (tmp_path / "junk.mp4").write_bytes(b"\x00not a video" * 20)
    with pytest.raises(VideoReadError, match="junk.mp4"):
        read_video(tmp_path / "junk.mp4")

    with pytest.raises(ValueError, match="channels"):
        save_video(torch.rand(2, 3, 8, 8), tmp_path / "x.gif")
    with pytest.raises(ValueError, match=r"\(c, f, h, w\)"):
        save_video(torch.rand(8, 8), tmp_path / "x.gif")
    with pytest.raises(TypeError, match="dtype"):
        save_video(torch.ones(3, 2, 8, 8, dtype=torch.int64), tmp_path / "x.gif")
    with pytest.raises(ValueError, match="fps"):
        save_video(torch.rand(3, 2, 8, 8), tmp_path / "x.gif", fps=0)
    with pytest.raises(ValueError, match="suffix"):
        save_video(torch.rand(3, 2, 8, 8), tmp_path / "x.xyz")
    with pytest.raises(ValueError, match="frames"):
        save_video(torch.rand(3, 2, 8, 8), tmp_path / "x.png")
    with pytest.raises(TypeError, match="video"):
        save_video(np.zeros((3, 2, 8, 8)), tmp_path / "x.gif")
    with pytest.raises(ValueError, match="b, c, f, h, w"):
        video_grid(torch.rand(3, 2, 8, 8))


# ---------------------------------------------------------------------------------------------------------------
# datasets
# ---------------------------------------------------------------------------------------------------------------


@pytest.fixture
def video_folder(tmp_path):
    root = tmp_path / "videos"
    save_video(gray_ramp(12), root / "a_long.gif", fps=8)
    save_video(gray_ramp(3), root / "sub" / "b_short.gif", fps=8)  # shorter than num_frames
    save_video(gray_ramp(10), root / "sub" / "c_frames")  # a frame folder
    (root / "d_corrupt.mp4").write_bytes(bytes(np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8)))
    (root / "readme.md").write_text("not a video")
    (root / "._a_long.gif").write_bytes(b"macOS resource fork junk")  # hidden files are ignored
    return root


def _by_first_frame(dataset):
    """Read every item once, catching the skip warnings."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        items = [dataset[i] for i in range(len(dataset))]
    return items, caught


def test_video_dataset_skips_corrupt_and_masks_short(video_folder):
    ds = VideoDataset(video_folder, num_frames=6, image_size=8, random_crop_time=False)
    assert len(ds) == 4
    assert [p.name for p in ds.paths] == ["a_long.gif", "d_corrupt.mp4", "b_short.gif", "c_frames"]
    items, caught = _by_first_frame(ds)
    skip_warnings = [w for w in caught if issubclass(w.category, UnreadableFileWarning)]
    assert len(skip_warnings) == 1 and "d_corrupt.mp4" in str(skip_warnings[0].message)
    assert ds.num_skipped == 1 and ds.skipped_paths[0].endswith("d_corrupt.mp4")
    for item in items:
        assert item["video"].shape == (3, 6, 8, 8) and item["frame_mask"].shape == (6,)
        assert "text" not in item
    # the corrupt index fell through to the next item (the short clip)
    assert torch.equal(items[1]["video"], items[2]["video"])
    short = items[2]
    assert short["frame_mask"].tolist() == [True] * 3 + [False] * 3
    assert short["video"][:, 3:].abs().max() == 0
    assert frame_ids(short["video"][:, :3].mean(dim=(2, 3), keepdim=True).expand(3, 3, 8, 8)) == [0, 1, 2]
    # a second pass neither warns again nor recounts; numpy / torch integer indices work too
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        ds[1]
        ds[np.int64(1)]
        ds[torch.tensor(-4)]
    assert ds.num_skipped == 1
    with pytest.raises(IndexError):
        ds[4]

    loader = DataLoader(ds, batch_size=2, collate_fn=collate_videos)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        batches = list(loader)
    assert batches[0]["video"].shape == (2, 3, 6, 8, 8) and batches[0]["frame_mask"].shape == (2, 6)
    assert batches[0]["frame_mask"].dtype == torch.bool


def test_video_dataset_validate_and_failures(video_folder, tmp_path):
    with pytest.warns(UnreadableFileWarning, match="d_corrupt.mp4"):
        ds = VideoDataset(video_folder, num_frames=4, image_size=8, validate=True)
    assert len(ds) == 3 and ds.num_skipped == 1

    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ValueError, match="no videos"):
        VideoDataset(empty, num_frames=4, image_size=8)
    with pytest.raises(ValueError, match="directory"):
        VideoDataset(tmp_path / "nope", num_frames=4, image_size=8)

    bad = tmp_path / "bad"
    bad.mkdir()
    for i in range(3):
        (bad / f"{i}.mp4").write_bytes(b"garbage" * 10)
    ds = VideoDataset(bad, num_frames=4, image_size=8, max_tries=2)
    with pytest.warns(UnreadableFileWarning), pytest.raises(RuntimeError, match="could not read any item"):
        ds[0]
    with pytest.warns(UnreadableFileWarning), pytest.raises(ValueError, match="none of the 3"):
        VideoDataset(bad, num_frames=4, image_size=8, validate=True)


def test_video_dataset_random_crops_are_seeded(video_folder):
    def clip_starts(seed, epoch=None, reads=8):
        ds = VideoDataset(video_folder, num_frames=3, image_size=8, seed=seed, frame_folders=False, exts=[".gif"])
        if epoch is not None:
            ds.set_epoch(epoch)
        return [frame_ids(ds[0]["video"])[0] for _ in range(reads)]

    assert clip_starts(0) == clip_starts(0)
    assert len(set(clip_starts(0))) > 1  # without epochs, repeated reads of one item draw new crops
    # a trainer that sets epochs gets crops that depend on (seed, epoch, index) only: a resumed run
    # reads exactly the clips the interrupted one would have read
    assert len(set(clip_starts(0, epoch=3))) == 1
    by_epoch = [clip_starts(0, epoch=e, reads=1)[0] for e in range(8)]
    assert len(set(by_epoch)) > 1


def test_image_dataset(tmp_path):
    for i, size in enumerate([(20, 30), (12, 12)]):
        Image.fromarray(np.full((*size, 3), 40 * i, dtype=np.uint8)).save(tmp_path / f"img{i}.jpg")
    ds = ImageDataset(tmp_path, image_size=8)
    assert len(ds) == 2
    item = ds[0]
    assert item["video"].shape == (3, 1, 8, 8) and item["frame_mask"].tolist() == [True]
    batch = collate_videos([ds[0], ds[1]])
    assert batch["video"].shape == (2, 3, 1, 8, 8)
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="no images"):
        ImageDataset(tmp_path / "empty", image_size=8)


@pytest.fixture
def captioned(tmp_path):
    root = tmp_path / "data"
    save_video(gray_ramp(8), root / "clips" / "one.gif")
    save_video(gray_ramp(4), root / "clips" / "two.gif")
    return root


def test_captioned_from_jsonl(captioned):
    lines = [
        {"video": "clips/one.gif", "caption": " a gray ramp "},
        {"path": str(captioned / "clips" / "two.gif"), "text": "a short ramp"},
        {"file": "clips/missing.gif", "caption": "gone"},
    ]
    manifest = captioned / "train.jsonl"
    manifest.write_text("\n".join(json.dumps(x) for x in lines) + "\n\n")
    with pytest.warns(UnreadableFileWarning, match="missing.gif"):
        ds = CaptionedVideoDataset(manifest, num_frames=6, image_size=8)
    assert len(ds) == 2 and ds.num_skipped == 1
    assert ds.captions == ["a gray ramp", "a short ramp"]
    item = ds[1]
    assert item["text"] == "a short ramp" and item["frame_mask"].sum() == 4
    batch = collate_videos([ds[0], ds[1]])
    assert batch["text"] == ["a gray ramp", "a short ramp"] and batch["video"].shape == (2, 3, 6, 8, 8)

    manifest.write_text(json.dumps({"video": "clips/one.gif"}) + "\n")
    with pytest.raises(ValueError, match=r"train.jsonl:1.*caption"):
        CaptionedVideoDataset(manifest, num_frames=6, image_size=8)
    manifest.write_text("{not json\n")
    with pytest.raises(ValueError, match="invalid JSON"):
        CaptionedVideoDataset(manifest, num_frames=6, image_size=8)


def test_captioned_from_csv(captioned):
    manifest = captioned / "train.csv"
    with manifest.open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["video", "caption"])
        writer.writerow(["clips/one.gif", "first, with a comma"])
        writer.writerow(["clips/two.gif", "second"])
    ds = CaptionedVideoDataset(manifest, num_frames=4, image_size=8, random_crop_time=False)
    assert [ds[i]["text"] for i in range(2)] == ["first, with a comma", "second"]
    bad = captioned / "bad.csv"
    bad.write_text("name,label\nclips/one.gif,x\n")
    with pytest.raises(ValueError, match="header"):
        CaptionedVideoDataset(bad, num_frames=4, image_size=8)


def test_captioned_from_sidecar_txt(captioned):
    clips = captioned / "clips"
    (clips / "one.txt").write_text("caption of one\n")
    (clips / "two.txt").write_text("caption of two")
    save_video(gray_ramp(5), clips / "three")  # a frame folder with a sidecar
    (clips / "three.txt").write_text("frames")
    save_video(gray_ramp(5), clips / "uncaptioned.gif")
    with pytest.warns(UserWarning, match="no sidecar"):
        ds = CaptionedVideoDataset(clips, num_frames=4, image_size=8)
    assert sorted(ds.captions) == ["caption of one", "caption of two", "frames"]
    assert all(ds[i]["video"].shape == (3, 4, 8, 8) for i in range(len(ds)))
    with pytest.raises(ValueError, match="does not exist"):
        CaptionedVideoDataset(captioned / "nothing.jsonl", num_frames=4, image_size=8)


def test_collate_variants_and_errors():
    v = torch.rand(3, 4, 8, 8)
    out = collate_videos([(v, "a"), (v, "b")])
    assert out["video"].shape == (2, 3, 4, 8, 8) and out["text"] == ["a", "b"] and out["frame_mask"].all()
    out = collate_videos([v, v, v])
    assert out["video"].shape == (3, 3, 4, 8, 8) and set(out) == {"video", "frame_mask"}
    mask = torch.tensor([True, True, False, False])
    out = collate_videos([{"video": v, "frame_mask": mask, "id": 1}, {"video": v, "frame_mask": mask, "id": 2}])
    assert out["frame_mask"].tolist() == [mask.tolist()] * 2 and out["id"] == [1, 2]
    with pytest.raises(ValueError, match="shape"):
        collate_videos([v, torch.rand(3, 5, 8, 8)])
    with pytest.raises(ValueError, match="text"):
        collate_videos([(v, "a"), v])
    with pytest.raises(ValueError, match="empty"):
        collate_videos([])
    with pytest.raises(TypeError, match=r"batch\[0\]"):
        collate_videos(["not a video"])


# ---------------------------------------------------------------------------------------------------------------
# synthetic data
# ---------------------------------------------------------------------------------------------------------------


def foreground(video: torch.Tensor, background) -> torch.Tensor:
    """(f, h, w) mask of pixels that differ from the background."""
    return (video - torch.tensor(background).view(3, 1, 1, 1)).abs().sum(0) > 0.1


def centroids(mask: torch.Tensor) -> torch.Tensor:
    """(f, 2) centroid (x, y) of the foreground in each frame."""
    f, h, w = mask.shape
    ys, xs = torch.meshgrid(torch.arange(h, dtype=torch.float32), torch.arange(w, dtype=torch.float32), indexing="ij")
    total = mask.float().sum((1, 2)).clamp(min=1)
    return torch.stack(((mask * xs).sum((1, 2)) / total, (mask * ys).sum((1, 2)) / total), dim=-1)


def test_synthetic_determinism_and_speed():
    start = time.perf_counter()
    a = SyntheticCaptionedVideos(256, seed=3)
    items = [a[i] for i in range(len(a))]
    assert time.perf_counter() - start < 1.0
    b = SyntheticCaptionedVideos(256, seed=3)
    assert all(torch.equal(items[i]["video"], b[i]["video"]) for i in range(0, 256, 17))
    c = SyntheticCaptionedVideos(256, seed=4)
    assert not all(torch.equal(items[i]["video"], c[i]["video"]) for i in range(8))
    assert len({items[i]["video"].sum().item() for i in range(0, 256, 16)}) > 4  # positions and sizes vary
    item = items[0]
    assert item["video"].shape == (3, 9, 32, 32) and item["frame_mask"].all() and item["frame_mask"].dtype == torch.bool
    assert 0 <= item["video"].min() and item["video"].max() <= 1
    batch = collate_videos(items[:8])
    assert batch["video"].shape == (8, 3, 9, 32, 32) and len(batch["text"]) == 8


def test_synthetic_captions_and_exclusion():
    ds = SyntheticCaptionedVideos(64, exclude=[("red", "circle", "up"), "a blue square moving left"])
    pattern = re.compile(r"^a (red|green|blue|yellow) (square|circle) moving (left|right|up|down)$")
    texts = {ds[i]["text"] for i in range(len(ds))}
    assert all(pattern.match(t) for t in texts)
    assert len(texts) == 4 * 2 * 4 - 2 == len(ds.combinations) == len(ds.captions)
    assert "a red circle moving up" not in texts and "a blue square moving left" not in texts
    assert ds.excluded_captions == ["a red circle moving up", "a blue square moving left"]
    assert ds.parse_caption("a red circle moving up") == ("red", "circle", "up")
    held_out = ds.render("red", "circle", "up")  # held-out combinations can still be rendered as ground truth
    assert held_out.shape == (3, 9, 32, 32)
    assert ds.attributes(5) == ds.parse_caption(ds[5]["text"])


@pytest.mark.parametrize("shape", SHAPES)
def test_synthetic_motion_is_real(shape):
    ds = SyntheticCaptionedVideos(16, colors=("white",), shapes=(shape,), seed=1)
    expected = {"left": (-1, 0), "right": (1, 0), "up": (0, -1), "down": (0, 1)}
    for i in range(len(ds)):
        item = ds[i]
        _, _, direction = ds.parse_caption(item["text"])
        mask = foreground(item["video"], ds.background)
        area = mask.float().sum((1, 2))
        assert (area >= 16).all(), "shape too small or left the frame"
        assert (area == area[0]).all(), "shape got clipped by the border"
        path = centroids(mask)
        step = (path[1:] - path[:-1]).mean(0)
        dx, dy = expected[direction]
        assert step[0] * dx + step[1] * dy > 1.0, f"{item['text']}: centroid moved {step.tolist()} per frame"
        assert abs(step[0] * dy) + abs(step[1] * dx) < 0.1  # no drift sideways


def test_synthetic_colors_are_real():
    names = ("red", "green", "blue", "yellow", "cyan", "magenta", "white", "orange", "purple")
    ds = SyntheticCaptionedVideos(len(names) * 2, colors=names, shapes=("square", "star"), directions=("up",))
    palette = torch.tensor([COLORS[n] for n in names])
    for i in range(len(ds)):
        item = ds[i]
        color = ds.parse_caption(item["text"])[0]
        mask = foreground(item["video"], ds.background)
        mean_rgb = item["video"][:, mask].mean(dim=1)
        assert names[int((palette - mean_rgb).norm(dim=1).argmin())] == color
        background = item["video"][:, ~mask].mean(dim=1)
        assert background.max() < 0.2  # plain dark background


def test_synthetic_errors():
    with pytest.raises(ValueError, match="colors"):
        SyntheticCaptionedVideos(colors=("red", "chartreuse"))
    with pytest.raises(ValueError, match="shapes"):
        SyntheticCaptionedVideos(shapes=("hexagon",))
    with pytest.raises(ValueError, match="exclude"):
        SyntheticCaptionedVideos(exclude=[("red", "circle", "sideways")])
    with pytest.raises(ValueError, match="caption"):
        SyntheticCaptionedVideos(exclude=["red circle up"])
    with pytest.raises(ValueError, match="every"):
        SyntheticCaptionedVideos(
            colors=("red",), shapes=("square",), directions=("up",), exclude=["a red square moving up"]
        )
    with pytest.raises(ValueError, match="num_samples"):
        SyntheticCaptionedVideos(0)
    with pytest.raises(TypeError, match="num_frames"):
        SyntheticCaptionedVideos(num_frames=2.5)
    with pytest.raises(ValueError, match="background"):
        SyntheticCaptionedVideos(colors=("white",), background="white")
    with pytest.raises(IndexError):
        SyntheticCaptionedVideos(4)[4]
