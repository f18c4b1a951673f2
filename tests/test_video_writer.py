"""VideoWriter: a video written chunk by chunk reads back as the same video written in one go."""

import pytest
import torch

from phenaki_pytorch.data import read_video, save_video
from phenaki_pytorch.data.video_writer import VideoWriter


@pytest.fixture
def video():
    g = torch.Generator().manual_seed(0)
    return torch.rand(1, 3, 10, 16, 16, generator=g)


@pytest.mark.parametrize("name", ["clip.gif", "clip.mp4", "frames"])
def test_chunks_read_back_like_one_save(tmp_path, video, name):
    with VideoWriter(tmp_path / "chunked" / name, fps=8) as writer:
        for chunk in video.split(3, dim=2):  # 3 + 3 + 3 + 1 frames
            writer.write(chunk)
    assert writer.num_frames == 10
    save_video(video, tmp_path / "whole" / name, fps=8)
    chunked, whole = read_video(tmp_path / "chunked" / name), read_video(tmp_path / "whole" / name)
    assert chunked.shape == (3, 10, 16, 16)
    assert torch.equal(chunked, whole)
    assert sorted(p.name for p in (tmp_path / "chunked").iterdir()) == [name]  # no temporary file left


def test_nothing_appears_when_writing_fails(tmp_path, video):
    with pytest.raises(RuntimeError, match="boom"):
        with VideoWriter(tmp_path / "clip.mp4", fps=8) as writer:
            writer.write(video[:, :, :3])
            raise RuntimeError("boom")
    assert list(tmp_path.iterdir()) == []


def test_a_folder_loses_stale_frames(tmp_path, video):
    save_video(video, tmp_path / "frames")
    with VideoWriter(tmp_path / "frames") as writer:
        writer.write(video[:, :, :4])
    assert read_video(tmp_path / "frames").shape[1] == 4


def test_writer_errors(tmp_path, video):
    with pytest.raises(ValueError, match="suffix|writes"):
        VideoWriter(tmp_path / "clip.png")
    with pytest.raises(ValueError, match="fps"):
        VideoWriter(tmp_path / "clip.gif", fps=0)
    writer = VideoWriter(tmp_path / "clip.gif")
    writer.write(video[:, :, :2])
    with pytest.raises(ValueError, match="frames of"):
        writer.write(torch.rand(1, 3, 2, 8, 8))
    writer.close()
    with pytest.raises(ValueError, match="closed"):
        writer.write(video)
    with pytest.raises(ValueError, match="no frames"):
        VideoWriter(tmp_path / "empty.gif").close()
    assert not (tmp_path / "empty.gif").exists()
