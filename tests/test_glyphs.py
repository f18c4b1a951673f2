"""The glyph benchmark (SyntheticGlyphVideos, held-out pairings) and its judges (phenaki_pytorch.evaluation.probe)."""

import hashlib
import itertools
import json

import pytest
import torch

from phenaki_pytorch.data import (
    COLORS,
    DIRECTIONS,
    GLYPH_COLORS,
    GLYPH_HELD_OUT,
    GLYPH_HELD_OUT_COLOR_SHAPE,
    GLYPH_HELD_OUT_SHAPE_DIRECTION,
    GLYPH_SHAPES,
    SHAPES,
    SyntheticCaptionedVideos,
    SyntheticGlyphVideos,
    collate_videos,
    glyph_benchmark_splits,
)
from phenaki_pytorch.data.synthetic import DEFAULT_BACKGROUND
from phenaki_pytorch.evaluation.probe import (
    ShapeProbe,
    consistent_clips,
    dominant_color,
    gaussian_blur,
    judge_videos,
    motion_direction,
    probe_accuracy,
    temporal_consistency,
    train_shape_probe,
)

BG = torch.tensor(DEFAULT_BACKGROUND).view(3, 1, 1, 1)


def coverage(video: torch.Tensor) -> torch.Tensor:
    """(f, h, w) fraction of each pixel the glyph covers (every glyph colour has a channel at 1)."""
    return (video - BG).abs().amax(dim=0) / (1.0 - DEFAULT_BACKGROUND[0])


def batch_of(dataset, count=None):
    return collate_videos([dataset[i] for i in range(len(dataset) if count is None else count)])


def blurred(videos: torch.Tensor, sigma: float) -> torch.Tensor:
    b, c, f, h, w = videos.shape
    frames = gaussian_blur(videos.transpose(1, 2).reshape(b * f, c, h, w), sigma)
    return frames.view(b, f, c, h, w).transpose(1, 2)


# ---------------------------------------------------------------------------------------------- glyphs


def test_glyphs_have_the_same_area_and_brightness():
    data = SyntheticGlyphVideos(8)
    areas = {}
    for shape in GLYPH_SHAPES:
        for color in GLYPH_COLORS:
            video = data.render(color, shape, "right")
            cover = coverage(video)
            areas[shape, color] = cover[4].sum().item()
            full = cover > 0.999  # pixels the glyph covers entirely show exactly its colour
            assert full.sum() > 40, (shape, color)
            assert torch.allclose(video[:, full], torch.tensor(COLORS[color]).view(3, 1), atol=1e-6)
            assert (cover.sum((1, 2)) - cover[0].sum()).abs().max() < 1.0  # the area holds over the clip
    mean = sum(areas.values()) / len(areas)
    assert all(abs(area / mean - 1) < 0.05 for area in areas.values()), areas  # within 5 % of each other
    assert 80 < mean < 100  # about size**2 / 2 at the default 13.6 px


def test_glyphs_are_pairwise_distinct_and_anti_aliased():
    data = SyntheticGlyphVideos(8)
    masks = {s: coverage(data.render("red", s, "up", start=(16.0, 16.0)))[0] > 0.5 for s in GLYPH_SHAPES}
    mean_area = sum(int(m.sum()) for m in masks.values()) / len(masks)
    for a, b in itertools.combinations(GLYPH_SHAPES, 2):
        differ = int((masks[a] ^ masks[b]).sum())
        assert differ > 0.25 * mean_area, f"{a} and {b} differ in only {differ} pixels"
    # soft edges: values between background and colour; with antialias=1 there are none
    soft = coverage(data.render("red", "star", "up"))
    assert ((soft > 0.05) & (soft < 0.95)).sum() > 20
    hard = SyntheticGlyphVideos(8, antialias=1).render("red", "star", "up")
    assert set(coverage(hard).unique().tolist()) <= {0.0, 1.0}


def test_bar_is_horizontal_whatever_it_moves():
    data = SyntheticGlyphVideos(8)
    for direction in DIRECTIONS:
        cover = coverage(data.render("blue", "bar", direction))[0] > 0.5
        rows, cols = cover.any(dim=1).sum().item(), cover.any(dim=0).sum().item()
        assert cols > 1.6 * rows, (direction, rows, cols)


def test_glyph_clips_stay_inside_and_move_as_documented():
    data = SyntheticGlyphVideos(96, seed=5)
    big = SyntheticGlyphVideos(1, image_size=64, travel=12 / 64)
    for i in range(len(data)):
        item = data[i]
        cover = coverage(item["video"])
        # the same glyph on a canvas with a 16 px rim: nothing of it may fall outside the original frame
        size, x0, y0 = data._sample_params(i)
        wide = big.render(item["color"], item["shape"], item["direction"], start=(x0 + 16, y0 + 16), size=size)
        outside = coverage(wide)
        outside[:, 16:48, 16:48] = 0
        assert outside.sum((1, 2)).max() < 0.2, f"{item['text']} is clipped by the frame"
        ys, xs = torch.meshgrid(torch.arange(32.0), torch.arange(32.0), indexing="ij")
        total = cover.sum((1, 2))
        path = torch.stack([(cover * xs).sum((1, 2)) / total, (cover * ys).sum((1, 2)) / total], dim=-1)
        dx, dy = DIRECTIONS[item["direction"]]
        travel = path[-1] - path[0]
        assert abs(float(travel[0]) - 12 * dx) < 0.3 and abs(float(travel[1]) - 12 * dy) < 0.3, item["text"]
        width = (cover[0] > 0.5).any(dim=0).sum().item()
        assert 8 <= width <= 18  # glyphs of 12.8-14.4 px (the square is 0.71 of that)


def test_glyph_items_are_deterministic_and_labelled():
    a, b, c = SyntheticGlyphVideos(40, seed=1), SyntheticGlyphVideos(40, seed=1), SyntheticGlyphVideos(40, seed=2)
    assert all(torch.equal(a[i]["video"], b[i]["video"]) for i in range(40))
    assert sum(torch.equal(a[i]["video"], c[i]["video"]) for i in range(40)) == 0
    item = a[7]
    assert (item["color"], item["shape"], item["direction"]) == a.attributes(7) == a.parse_caption(item["text"])
    batch = collate_videos([a[i] for i in range(4)])
    assert batch["video"].shape == (4, 3, 9, 32, 32) and batch["shape"] == [a.attributes(i)[1] for i in range(4)]
    assert "shape" not in SyntheticCaptionedVideos(4)[0]  # the original set keeps its item keys


def test_scene_cut_clips_change_one_attribute_and_continue_the_path():
    """Two-scene clips: the caption describes the frames from the cut on; before it the same path shows one
    other attribute, from the dataset's own (not held-out) pairings; the glyph moves on at the same speed
    through the cut and stays in the frame."""
    data = SyntheticGlyphVideos(120, exclude=GLYPH_HELD_OUT, scene_cut_prob=0.5, seed=3)
    plain = SyntheticGlyphVideos(120, exclude=GLYPH_HELD_OUT, seed=3)
    allowed = set(data.combinations)
    ys, xs = torch.meshgrid(torch.arange(32.0), torch.arange(32.0), indexing="ij")
    cuts, kinds = set(), set()
    for i in range(len(data)):
        item = data[i]
        if not item["prime_frames"]:
            assert torch.equal(item["video"], plain[i]["video"])  # single scenes render as without cuts
            continue
        frames = item["prime_frames"]
        cuts.add(frames)
        first, second = data.parse_caption(item["context_text"]), data.parse_caption(item["text"])
        assert first in allowed and second == (item["color"], item["shape"], item["direction"])
        changed = [a for a in range(3) if first[a] != second[a]]
        assert len(changed) == 1
        kinds.add(changed[0])
        cover = coverage(item["video"])
        total = cover.sum((1, 2))
        path = torch.stack([(cover * xs).sum((1, 2)) / total, (cover * ys).sum((1, 2)) / total], dim=-1)
        steps = path[1:] - path[:-1]
        # each scene moves its own way at 1.5 px a frame (a shape change shifts the centroid a little at the cut)
        for (lo, hi), direction in (((0, frames - 1), first[2]), ((frames, 8), second[2])):
            dx, dy = DIRECTIONS[direction]
            if hi > lo:
                mean = steps[lo:hi].mean(dim=0)
                assert abs(float(mean[0]) - 1.5 * dx) < 0.3 and abs(float(mean[1]) - 1.5 * dy) < 0.3, item["text"]
        # no jump at the cut: one frame's motion (a shape change moves the centroid: the ell's sits off its centre)
        limit = 4.5 if changed == [1] else 2.0
        assert float(steps[frames - 1].norm()) < limit, (item["context_text"], item["text"])
        assert float(total.min()) > 0.97 * float(total.max())  # equal-area glyphs, none clipped by the frame
    assert cuts == {3, 5, 7} and kinds == {0, 1, 2}
    batch = collate_videos([data[i] for i in range(4)])
    assert batch["prime_frames"] == [data[i]["prime_frames"] for i in range(4)]
    assert "prime_frames" not in plain[0]
    with pytest.raises(ValueError, match="scene_cut_prob"):
        SyntheticGlyphVideos(4, scene_cut_prob=2.0)
    with pytest.raises(ValueError, match="scene_cut_frames"):
        SyntheticGlyphVideos(4, scene_cut_prob=0.5, scene_cut_frames=(9,))


def test_original_synthetic_set_renders_exactly_as_before():
    """Golden digest computed with the code before the glyph benchmark existed (hard edges, box geometry)."""
    data = SyntheticCaptionedVideos(64, shapes=SHAPES[:5], seed=3)
    digest = hashlib.sha256()
    for i in range(0, 64, 3):
        digest.update(data[i]["video"].numpy().tobytes())
    for shape in SHAPES[:5]:
        digest.update(data.render("green", shape, "left").numpy().tobytes())
    assert digest.hexdigest() == "37825d677496623cf11b0934f66a1e2e478e83ed6d7844fc0f67b3fb1c5dfd55"


def test_held_out_pairings():
    assert len(GLYPH_HELD_OUT) == len(set(GLYPH_HELD_OUT)) == 6 * 4 + 2 * 6
    splits = glyph_benchmark_splits(num_train=64, num_eval=16)
    train = set(splits.train.combinations)
    assert train.isdisjoint(GLYPH_HELD_OUT) and len(train) == 6 * 8 * 4 - 36
    assert set(splits.held_out.combinations) == set(GLYPH_HELD_OUT)
    assert set(splits.seen.combinations) == train
    # every colour, shape and direction, and every colour-direction pair, is still trained on
    assert {c for c, _, _ in train} == set(GLYPH_COLORS) and {s for _, s, _ in train} == set(GLYPH_SHAPES)
    assert {(c, d) for c, _, d in train} == set(itertools.product(GLYPH_COLORS, DIRECTIONS))
    # the held-out pairs themselves never appear together in training
    assert not any((c, s) in GLYPH_HELD_OUT_COLOR_SHAPE for c, s, _ in train)
    assert not any((s, d) in GLYPH_HELD_OUT_SHAPE_DIRECTION for _, s, d in train)
    texts = {splits.held_out[i]["text"] for i in range(16)}
    assert all(SyntheticCaptionedVideos.parse_caption(t) in GLYPH_HELD_OUT for t in texts)
    # the three sets draw different positions
    assert not torch.equal(splits.train[0]["video"], splits.seen[0]["video"])


def test_glyph_errors():
    with pytest.raises(ValueError, match="size_range"):
        SyntheticGlyphVideos(size_range=(0.5, 0.6))  # with the path, the star no longer fits
    with pytest.raises(ValueError, match="size_range"):
        SyntheticGlyphVideos(size_range=(0.4, 0.3))
    with pytest.raises(ValueError, match="travel"):
        SyntheticGlyphVideos(travel=1.5)
    with pytest.raises(ValueError, match="include"):
        SyntheticGlyphVideos(include=[("red", "hexagon", "up")])
    with pytest.raises(ValueError, match="include and exclude"):
        SyntheticGlyphVideos(include=GLYPH_HELD_OUT[:1], exclude=GLYPH_HELD_OUT[:1])
    with pytest.raises(TypeError, match="antialias"):
        SyntheticGlyphVideos(antialias=2.0)
    with pytest.raises(TypeError, match="exclude"):
        glyph_benchmark_splits(exclude=())


# ---------------------------------------------------------------------------------------------- the probe


@pytest.fixture(scope="module")
def probe():
    """A quickly trained probe (about 4 s on one thread): 256 clips, 100 steps."""
    train = SyntheticGlyphVideos(256, seed=11, exclude=GLYPH_HELD_OUT)
    return train_shape_probe(train, steps=100, batch_size=32, seed=0)


@pytest.fixture(scope="module")
def fresh():
    """Clips the probe never saw: another seed, held-out pairings included."""
    return batch_of(SyntheticGlyphVideos(48, seed=99, include=GLYPH_HELD_OUT[::2] + GLYPH_HELD_OUT[1::7]))


def test_probe_names_shapes_of_unseen_clips(probe, fresh):
    assert probe.shapes == GLYPH_SHAPES and not probe.training
    assert probe_accuracy(probe, fresh["video"], fresh["shape"]) > 0.9
    predictions = probe.predict_video(fresh["video"])
    assert predictions.shape == (48, 9) and predictions.dtype == torch.long
    frames = fresh["video"][:5, :, 0]
    assert probe(frames).shape == (5, 8) and probe.features(frames).shape == (5, probe.feature_dim) == (5, 64)
    # a frame mask excludes frames from scoring: all-wrong labels on masked-out frames do not count
    mask = torch.zeros(48, 9, dtype=torch.bool)
    mask[:, 0] = True
    ids = predictions[:, 0]
    assert probe_accuracy(probe, fresh["video"], ids, frame_mask=mask) == 1.0
    assert probe.video_features(fresh["video"], mask).shape == (48, 64)


def test_probe_judges_structure_not_colour(probe):
    # one shape in every colour gets one prediction: the input is the distance from the background
    data = SyntheticGlyphVideos(8)
    for shape in ("ring", "ell"):
        clips = torch.stack([data.render(color, shape, "up") for color in GLYPH_COLORS])
        assert probe.predict_video(clips).unique().numel() == 1


def test_probe_training_is_deterministic():
    train = SyntheticGlyphVideos(24, seed=3)
    a = train_shape_probe(train, steps=3, batch_size=8, seed=5)
    b = train_shape_probe(train, steps=3, batch_size=8, seed=5)
    c = train_shape_probe(train, steps=3, batch_size=8, seed=6)
    assert all(torch.equal(a.state_dict()[k], b.state_dict()[k]) for k in a.state_dict())
    assert not all(torch.equal(a.state_dict()[k], c.state_dict()[k]) for k in a.state_dict())
    state = torch.random.get_rng_state()
    train_shape_probe(train, steps=1, batch_size=8, seed=5)
    assert torch.equal(state, torch.random.get_rng_state())  # the caller's global generator is left alone


def test_probe_save_and_load(probe, fresh, tmp_path):
    probe.save_pretrained(tmp_path / "probe")
    loaded = ShapeProbe.from_pretrained(tmp_path / "probe")
    assert loaded.shapes == probe.shapes and loaded.background == probe.background
    assert torch.equal(loaded.predict_video(fresh["video"]), probe.predict_video(fresh["video"]))
    config = json.loads((tmp_path / "probe" / "config.json").read_text())
    assert config["class"] == "ShapeProbe" and config["config"]["shapes"] == list(GLYPH_SHAPES)


def test_temporal_consistency(probe, fresh):
    predictions = torch.tensor([[1, 1, 1], [2, 2, 3], [4, 0, 4]])
    assert consistent_clips(predictions).tolist() == [True, False, False]
    mask = torch.tensor([[True, True, True], [True, True, False], [True, False, True]])
    assert consistent_clips(predictions, mask).tolist() == [True, True, True]
    assert temporal_consistency(predictions) == pytest.approx(1 / 3)

    real = fresh["video"]
    assert temporal_consistency(probe.predict_video(real)) > 0.8
    # frames swapped between clips of different shapes: a glyph that changes shape mid-clip
    other = [next(j for j in range(len(real)) if fresh["shape"][j] != fresh["shape"][i]) for i in range(len(real))]
    mixed = real.clone()
    mixed[:, :, 4:] = real[other][:, :, 4:]
    assert temporal_consistency(probe.predict_video(mixed)) < 0.2


def test_judges_recover_colour_and_direction():
    data = SyntheticGlyphVideos(8)
    for color, shape, direction in itertools.product(GLYPH_COLORS, GLYPH_SHAPES, DIRECTIONS):
        video = data.render(color, shape, direction)
        assert dominant_color(video) == color and motion_direction(video) == direction, (color, shape, direction)
    # random sizes and positions, and a mild blur that mixes the edges with the background
    items = batch_of(SyntheticGlyphVideos(64, seed=4))
    soft = blurred(items["video"], 1.0)
    for i in range(64):
        for video in (items["video"][i], soft[i]):
            assert dominant_color(video) == items["color"][i] and motion_direction(video) == items["direction"][i]
    # a clip with no foreground, a still clip, a custom palette
    empty = BG.expand(3, 9, 32, 32)
    assert dominant_color(empty) is None and motion_direction(empty) is None
    still = data.render("red", "ring", "left")[:, :1].expand(-1, 9, -1, -1)
    assert motion_direction(still) is None
    assert (
        dominant_color(data.render("yellow", "cross", "up"), {"gold": (0.9, 0.8, 0.1), "teal": (0, 0.5, 0.5)}) == "gold"
    )
    # the frame mask picks the frames: first and last valid ones set the direction
    mask = torch.ones(9, dtype=torch.bool)
    mask[5:] = False
    moving = data.render("green", "bar", "down")
    assert motion_direction(torch.cat([moving[:, :5], moving[:, :4].flip(1)], dim=1), frame_mask=mask) == "down"


def test_judge_videos(probe, fresh):
    verdicts = judge_videos(fresh["video"][:12], probe, GLYPH_COLORS)
    assert len(verdicts) == 12
    assert set(verdicts[0]) == {"shapes", "shape", "consistent", "color", "direction"}
    for verdict, color, direction in zip(verdicts, fresh["color"], fresh["direction"]):
        assert len(verdict["shapes"]) == 9 and verdict["consistent"] == (len(set(verdict["shapes"])) == 1)
        assert (verdict["color"], verdict["direction"]) == (color, direction)
    assert sum(v["shape"] == s for v, s in zip(verdicts, fresh["shape"])) >= 10
    mask = torch.ones(12, 9, dtype=torch.bool)
    mask[:, 6:] = False
    assert all(len(v["shapes"]) == 6 for v in judge_videos(fresh["video"][:12], probe, frame_mask=mask))


def test_probe_errors(probe, fresh):
    with pytest.raises(ValueError, match="videos"):
        probe.predict_video(fresh["video"][0])
    with pytest.raises(ValueError, match="frames"):
        probe(torch.zeros(2, 1, 32, 32))
    with pytest.raises(ValueError, match="hexagon"):
        probe_accuracy(probe, fresh["video"][:2], ["hexagon", "ring"])
    with pytest.raises(ValueError, match="one shape per clip"):
        probe_accuracy(probe, fresh["video"][:2], ["ring"])
    with pytest.raises(ValueError, match="frame_mask"):
        probe_accuracy(probe, fresh["video"][:2], ["ring", "bar"], frame_mask=torch.ones(2, 3, dtype=torch.bool))
    with pytest.raises(ValueError, match="shapes"):
        ShapeProbe(("ring",))
    with pytest.raises(ValueError, match="steps"):
        train_shape_probe(SyntheticGlyphVideos(4), steps=0)
    with pytest.raises(ValueError, match="palette"):
        dominant_color(fresh["video"][0], ["chartreuse"])
    with pytest.raises(ValueError, match="video"):
        dominant_color(fresh["video"])


@pytest.mark.slow
def test_default_probe_is_exact_on_real_and_softened_clips():
    """The default training run (about 15 s on one thread) names every frame of unseen real clips, held-out
    pairings included, and keeps naming them through a mild blur."""
    splits = glyph_benchmark_splits(num_train=512, num_eval=128, seed=1)
    probe = train_shape_probe(splits.train, seed=0)
    for split in (splits.seen, splits.held_out):
        batch = batch_of(split)
        assert probe_accuracy(probe, batch["video"], batch["shape"]) == 1.0
        assert probe_accuracy(probe, blurred(batch["video"], 1.0), batch["shape"]) > 0.98
        assert temporal_consistency(probe.predict_video(batch["video"])) == 1.0
