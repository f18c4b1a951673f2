import json
import math

import pytest
import torch

from phenaki_pytorch import CViViT, Phenaki
from phenaki_pytorch.data import COLORS, SyntheticCaptionedVideos, read_video
from phenaki_pytorch.demo import dominant_color, judge_video, motion_direction, psnr, run_demo


def test_checker_recovers_rendered_colour_and_direction():
    palette = [name for name in COLORS if name != "black"]  # black is invisible on the dark background
    data = SyntheticCaptionedVideos(4, num_frames=9, image_size=32, colors=palette)
    for color in palette:
        for shape in ("square", "circle", "triangle", "star"):
            for direction in ("left", "right", "up", "down"):
                video = data.render(color, shape, direction)
                assert judge_video(video, palette) == (color, direction), (color, shape, direction)

    # dataset items: random sizes and start positions, the demo's four-colour palette
    data = SyntheticCaptionedVideos(64, num_frames=9, image_size=32, seed=3)
    for item in data:
        color, _, direction = data.parse_caption(item["text"])
        assert judge_video(item["video"], data.colors) == (color, direction), item["text"]


def test_checker_edge_cases():
    data = SyntheticCaptionedVideos(1, num_frames=9, image_size=32)
    still = data.render("red", "square", "left")[:, :1].expand(-1, 9, -1, -1)
    assert motion_direction(still) is None  # no travel, no direction
    empty = torch.full((3, 9, 32, 32), 0.08)
    assert judge_video(empty) == (None, None)
    noisy = data.render("green", "circle", "up") + 0.05 * torch.randn(
        3, 9, 32, 32, generator=torch.Generator().manual_seed(0)
    )
    assert judge_video(noisy.clamp(0, 1)) == ("green", "up")
    assert (
        dominant_color(data.render("yellow", "square", "down"), {"dark": (0.2, 0.2, 0.2), "gold": (0.9, 0.8, 0.1)})
        == "gold"
    )
    with pytest.raises(ValueError):
        judge_video(torch.zeros(2, 3, 9, 32, 32))
    clip = data.render("blue", "square", "right")[None]
    assert psnr(clip, clip).item() >= 99.0
    assert math.isclose(psnr(torch.zeros(1, 3, 4, 4), torch.full((1, 3, 4, 4), 0.1)).item(), 20.0, rel_tol=1e-5)


def test_run_demo_quick(tmp_path):
    messages = []
    result = run_demo(tmp_path / "demo", quick=True, seed=0, log=messages.append)
    cfg = result.config

    # models reload from their folders
    assert (result.tokenizer_dir / "model.safetensors").is_file()
    assert (result.phenaki_dir / "config.json").is_file()
    CViViT.from_pretrained(result.tokenizer_dir)
    phenaki = Phenaki.from_pretrained(result.phenaki_dir)
    assert phenaki.maskgit.num_tokens == cfg.codebook_size

    # one GIF per prompt, each the prompt's samples side by side, with every frame
    prompts = result.seen_prompts + result.unseen_prompts
    assert result.unseen_prompts and set(result.sample_paths) == set(prompts)
    side = cfg.image_size * cfg.upscale
    for prompt, path in result.sample_paths.items():
        assert path.is_file() and path.suffix == ".gif"
        video = read_video(path)
        assert video.shape[1] == cfg.num_frames
        assert video.shape[2] >= side and video.shape[3] >= cfg.samples_per_prompt * side
        assert ("unseen" in path.name) == (prompt in result.unseen_prompts)

    # grid and its prompt list, in grid order
    assert read_video(result.grid_path).shape[1] == cfg.num_frames
    lines = [line for line in result.grid_prompts_path.read_text().splitlines() if not line.startswith("#")]
    assert len(lines) == len(prompts) * cfg.samples_per_prompt
    assert [prompt in line for line, prompt in zip(lines[:: cfg.samples_per_prompt], prompts)] == [True] * len(prompts)

    # the story
    story_frames = sum(frames for _, frames in cfg.story)
    gif = [p for p in result.story_paths if p.suffix == ".gif"]
    assert len(gif) == 1 and read_video(gif[0]).shape[1] == story_frames
    assert [scene["prompt"] for scene in result.story_scenes] == [prompt for prompt, _ in cfg.story]

    # numbers
    assert math.isfinite(result.psnr) and result.psnr > 0
    for scores in (result.color_accuracy, result.direction_accuracy, result.both_accuracy):
        assert set(scores) == {"seen", "unseen", "all"}
        assert all(0.0 <= value <= 1.0 for value in scores.values())
    assert len(result.prompt_scores) == len(prompts)
    assert all(len(score.colors) == cfg.samples_per_prompt for score in result.prompt_scores)
    assert result.steps["tokenizer"] > 0 and result.steps["maskgit"] > 0

    saved = json.loads(result.results_path.read_text())
    assert saved["psnr"] == pytest.approx(result.psnr)
    assert any("PSNR" in message for message in messages)
