"""Tokenizer reconstruction metrics, codebook statistics and Fréchet Video Distance."""

import json
import math

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from phenaki_pytorch.data import collate_videos
from phenaki_pytorch.evaluation import (
    MAX_PSNR,
    CodebookHistogram,
    TokenizerMetrics,
    VideoFeatureProtocol,
    codebook_perplexity,
    codebook_usage,
    evaluate_tokenizer,
    feature_statistics,
    flicker,
    frechet_distance,
    frechet_video_distance,
    load_i3d_torchscript,
    mse_to_psnr,
    per_frame_mse,
    psnr,
    ssim,
    token_frame_mask,
    video_features,
)
from tests.helpers import tiny_cvivit


def rand_video(*shape, seed=0):
    return torch.rand(*shape, generator=torch.Generator().manual_seed(seed))


# ---------------------------------------------------------------------------------------------- pixel metrics


def test_psnr_of_a_uniform_error_is_the_closed_form():
    real = torch.full((2, 3, 5, 8, 8), 0.5)
    assert torch.allclose(psnr(real + 0.1, real), torch.full((2,), 20.0), atol=1e-4)  # mse 0.01 -> 20 dB
    assert torch.allclose(psnr(real + 0.01, real), torch.full((2,), 40.0), atol=1e-3)


def test_psnr_of_identical_clips_is_capped_not_infinite():
    real = rand_video(2, 3, 5, 8, 8)
    assert torch.equal(psnr(real, real), torch.full((2,), MAX_PSNR))
    assert torch.equal(psnr(real, real, max_psnr=60.0), torch.full((2,), 60.0))


def test_psnr_is_per_clip_from_the_clip_mse_not_the_mean_of_frame_psnrs():
    real = torch.zeros(1, 1, 2, 4, 4)
    recon = real.clone()
    recon[:, :, 1] = 0.1  # frame 0 perfect, frame 1 at 20 dB: clip mse 0.005 -> 23.01 dB (mean of dBs: 60)
    assert psnr(recon, real).item() == pytest.approx(10 * math.log10(1 / 0.005), abs=1e-3)


def test_images_count_as_one_frame_clips():
    real = rand_video(3, 3, 8, 8)
    recon = (real + 0.1).clamp(0, 1)
    assert torch.allclose(psnr(recon, real), psnr(recon.unsqueeze(2), real.unsqueeze(2)))
    assert per_frame_mse(recon, real).shape == (3, 1)
    assert flicker(recon, real).isnan().all()  # no frame-to-frame change to compare


def test_ssim_of_identical_is_one_and_drops_with_noise():
    real = rand_video(2, 3, 3, 16, 16)
    assert torch.allclose(ssim(real, real), torch.ones(2), atol=1e-5)
    noise = torch.randn(2, 3, 3, 16, 16, generator=torch.Generator().manual_seed(1))
    slightly, very = ssim((real + 0.05 * noise).clamp(0, 1), real), ssim((real + 0.3 * noise).clamp(0, 1), real)
    assert (very < slightly).all() and (slightly < 0.999).all() and (very < 0.7).all()


def test_ssim_rejects_frames_smaller_than_its_window():
    with pytest.raises(ValueError, match="at least 6x6"):
        ssim(rand_video(1, 3, 1, 4, 4), rand_video(1, 3, 1, 4, 4))


def test_padded_frames_do_not_change_any_metric():
    real = rand_video(2, 3, 5, 8, 8)
    recon = (real + 0.05 * rand_video(2, 3, 5, 8, 8, seed=1)).clamp(0, 1)
    mask = torch.tensor([[True] * 5, [True, True, True, False, False]])
    changed = recon.clone()
    changed[1, :, 3:] = 1 - changed[1, :, 3:]
    for metric in (psnr, ssim, flicker):
        assert torch.allclose(metric(recon, real, mask), metric(changed, real, mask)), metric.__name__
        assert not torch.allclose(metric(recon, real), metric(changed, real)), metric.__name__
    frames = per_frame_mse(changed, real, mask)
    assert frames[1, 3:].isnan().all() and not frames[1, :3].isnan().any()


def test_psnr_with_mask_equals_psnr_of_the_valid_frames_alone():
    real = rand_video(1, 3, 5, 8, 8)
    recon = (real + 0.1 * rand_video(1, 3, 5, 8, 8, seed=1)).clamp(0, 1)
    mask = torch.tensor([[True, True, True, False, False]])
    assert torch.allclose(psnr(recon, real, mask), psnr(recon[:, :, :3], real[:, :, :3]))
    assert torch.allclose(ssim(recon, real, mask), ssim(recon[:, :, :3], real[:, :, :3]))


def test_flicker_sees_error_that_changes_over_time_not_a_constant_offset():
    real = rand_video(1, 3, 5, 8, 8) * 0.8
    assert flicker(real + 0.1, real).item() == pytest.approx(0.0, abs=1e-10)  # same error every frame
    jumpy = real.clone()
    jumpy[:, :, 1::2] += 0.1  # error 0, 0.1, 0, 0.1, 0: every step changes by 0.1 -> flicker 0.01
    assert flicker(jumpy, real).item() == pytest.approx(0.01, rel=1e-4)


def test_metrics_name_bad_arguments():
    video = rand_video(2, 3, 5, 8, 8)
    with pytest.raises(ValueError, match="one shape"):
        psnr(video, video[:, :, :3])
    with pytest.raises(ValueError, match="frame_mask must be"):
        psnr(video, video, torch.ones(2, 4, dtype=torch.bool))
    with pytest.raises(TypeError, match="bool"):
        psnr(video, video, torch.ones(2, 5))
    with pytest.raises(ValueError, match="no valid frame in clip"):
        psnr(video, video, torch.tensor([[True] * 5, [False] * 5]))
    with pytest.raises(ValueError, match="video batch"):
        psnr(video[0, 0], video[0, 0])


# ---------------------------------------------------------------------------------------------- codebook


def test_codebook_usage_and_perplexity_closed_forms():
    one_code = torch.full((2, 3, 2, 2), 7)
    assert codebook_usage(one_code, 16) == 1 / 16
    assert codebook_perplexity(one_code, 16) == pytest.approx(1.0)
    uniform = torch.arange(16).repeat(3)
    assert codebook_usage(uniform, 16) == 1.0
    assert codebook_perplexity(uniform, 16) == pytest.approx(16.0)
    two_codes = torch.tensor([0, 0, 0, 1])  # p = (3/4, 1/4)
    entropy = -(0.75 * math.log(0.75) + 0.25 * math.log(0.25))
    assert codebook_perplexity(two_codes, 8) == pytest.approx(math.exp(entropy))


def test_codebook_mask_over_leading_dims_leaves_tokens_out():
    ids = torch.zeros(2, 3, 2, 2, dtype=torch.long)
    ids[1, 2] = 5  # only in a masked-out token frame
    mask = torch.tensor([[True, True, True], [True, True, False]])
    assert codebook_usage(ids, 8, mask) == 1 / 8
    assert codebook_usage(ids, 8) == 2 / 8
    with pytest.raises(ValueError, match="leading dims"):
        codebook_usage(ids, 8, torch.ones(3, 2, dtype=torch.bool))


def test_codebook_histogram_accumulates_over_batches():
    histogram = CodebookHistogram(4)
    histogram.update(torch.tensor([0, 0, 1]))
    histogram.update(torch.tensor([[1, 2]]))
    assert histogram.counts.tolist() == [2, 2, 1, 0]
    assert histogram.num_tokens == 5 and histogram.codes_used == 3 and histogram.usage() == 0.75
    assert histogram.perplexity() == pytest.approx(codebook_perplexity(torch.tensor([0, 0, 1, 1, 2]), 4))
    assert math.isnan(CodebookHistogram(4).perplexity())
    with pytest.raises(ValueError, match=r"\[0, 4\)"):
        histogram.update(torch.tensor([4]))
    with pytest.raises(TypeError, match="integer"):
        histogram.update(torch.tensor([0.0]))


def test_token_frame_mask_follows_the_causal_layout():
    # 9 frames, tp=4 -> token frames cover [0], [1..4], [5..8]
    mask = torch.tensor([[True] * 9, [True] * 5 + [False] * 4, [True] * 6 + [False] * 3])
    assert token_frame_mask(mask, 3).tolist() == [[True] * 3, [True, True, False], [True, True, True]]
    with pytest.raises(ValueError, match="do not split"):
        token_frame_mask(mask, 4)


# ---------------------------------------------------------------------------------------------- evaluate_tokenizer


class ClipDataset(Dataset):
    """Items like the project's datasets: {"video": (c, f, h, w), "frame_mask": (f,)}; the last is padded."""

    def __init__(self, n=5, frames=5, padding_value=0.0):
        self.videos = rand_video(n, 3, frames, 16, 16, seed=3)
        self.masks = torch.ones(n, frames, dtype=torch.bool)
        self.masks[-1, 3:] = False
        self.videos[-1, :, 3:] = padding_value

    def __len__(self):
        return len(self.videos)

    def __getitem__(self, i):
        return {"video": self.videos[i], "frame_mask": self.masks[i], "text": "a clip"}


@pytest.fixture(scope="module")
def cvivit():
    torch.manual_seed(0)
    model = tiny_cvivit()
    model.tokenize(rand_video(8, 3, 5, 16, 16, seed=9))  # k-means codebook init happens on the first call
    return model


def test_evaluate_tokenizer_agrees_with_the_metrics_on_its_own_decode(cvivit):
    data = ClipDataset()
    report = evaluate_tokenizer(cvivit, data, batch_size=2, progress=False)

    cvivit.eval()
    ids = cvivit.tokenize(data.videos)
    recon = cvivit.decode_from_codebook_indices(ids).clamp(0, 1)
    assert report.num_clips == 5 and report.num_frames == 5
    assert report.psnr == pytest.approx(psnr(recon, data.videos, data.masks).mean().item(), rel=1e-5)
    assert report.ssim == pytest.approx(ssim(recon, data.videos, data.masks).mean().item(), rel=1e-5)
    assert report.flicker == pytest.approx(flicker(recon, data.videos, data.masks).mean().item(), rel=1e-5)
    frames = per_frame_mse(recon, data.videos, data.masks)
    assert report.per_frame_mse == pytest.approx(torch.nanmean(frames, dim=0).tolist(), rel=1e-5)
    frame_psnr = mse_to_psnr(frames.nan_to_num(0.0)).masked_fill(frames.isnan(), float("nan"))
    assert report.per_frame_psnr == pytest.approx(torch.nanmean(frame_psnr, dim=0).tolist(), rel=1e-5)

    tokens = token_frame_mask(data.masks, ids.shape[1])
    assert report.codes_used == ids[tokens].unique().numel()
    assert 0 < report.codebook_usage <= 1 and report.codebook_usage == report.codes_used / 64
    assert 1 <= report.codebook_perplexity <= report.codes_used
    assert report.num_tokens == int(tokens.sum()) * 2 * 2  # 2x2 patches per token frame
    assert report.seconds > 0


def test_evaluate_tokenizer_ignores_padding(cvivit):
    a = evaluate_tokenizer(cvivit, ClipDataset(padding_value=0.0), progress=False).to_dict()
    b = evaluate_tokenizer(cvivit, ClipDataset(padding_value=1.0), progress=False).to_dict()
    assert a.pop("seconds") > 0 and b.pop("seconds") > 0
    assert a.keys() == b.keys()
    for key in a:
        assert a[key] == pytest.approx(b[key], rel=1e-6), key


def test_evaluate_tokenizer_takes_datasets_loaders_tensors_and_max_items(cvivit):
    data = ClipDataset()
    reference = evaluate_tokenizer(cvivit, data, batch_size=2, progress=False)
    loader = DataLoader(data, batch_size=3, collate_fn=collate_videos)
    from_loader = evaluate_tokenizer(cvivit, loader, progress=False)
    assert from_loader.psnr == pytest.approx(reference.psnr, rel=1e-5)
    assert from_loader.codes_used == reference.codes_used

    first_three = evaluate_tokenizer(cvivit, data.videos, batch_size=2, max_items=3, progress=False)
    assert first_three.num_clips == 3
    tensor_only = evaluate_tokenizer(cvivit, data.videos[:3], progress=False)
    assert first_three.psnr == pytest.approx(tensor_only.psnr, rel=1e-5)


def test_evaluate_tokenizer_on_images(cvivit):
    images = [rand_video(3, 16, 16, seed=i) for i in range(3)]
    report = evaluate_tokenizer(cvivit, _ListDataset(images), progress=False)
    assert report.num_clips == 3 and report.num_frames == 1 and report.flicker is None
    assert report.num_tokens == 3 * 2 * 2


class _ListDataset(Dataset):
    def __init__(self, items):
        self.items = items

    def __len__(self):
        return len(self.items)

    def __getitem__(self, i):
        return self.items[i]


def test_evaluate_tokenizer_restores_every_module_mode(cvivit):
    cvivit.train()
    cvivit.quantizer.eval()  # a submodule its owner keeps in eval mode
    seen = []
    tokenize = cvivit.tokenize
    cvivit.tokenize = lambda video: (seen.append(cvivit.training), tokenize(video))[1]
    try:
        evaluate_tokenizer(cvivit, ClipDataset(n=2), progress=False)
    finally:
        del cvivit.tokenize
    assert seen == [False]
    assert cvivit.training and not cvivit.quantizer.training
    assert all(m.training for name, m in cvivit.named_modules() if not name.startswith("quantizer"))
    cvivit.eval()


def test_evaluate_tokenizer_restores_modes_after_an_error(cvivit):
    cvivit.train()
    with pytest.raises(ValueError, match="frames"):
        evaluate_tokenizer(cvivit, rand_video(2, 3, 4, 16, 16), progress=False)  # 4 frames: not 1 + 2k
    assert cvivit.training
    cvivit.eval()


def test_evaluate_tokenizer_rejects_bad_data(cvivit):
    with pytest.raises(TypeError, match="data must be"):
        evaluate_tokenizer(cvivit, 3, progress=False)
    with pytest.raises(ValueError, match="no clips"):
        evaluate_tokenizer(cvivit, [], progress=False)
    with pytest.raises(TypeError, match="tokenize"):
        evaluate_tokenizer(nn.Linear(2, 2), [], progress=False)


def test_report_table_and_json(cvivit, tmp_path):
    report = evaluate_tokenizer(cvivit, ClipDataset(n=2), progress=False)
    report.meta["checkpoint"] = "some/dir"
    table = report.table()
    assert f"{report.psnr:.2f}" in table and "of 64 codes" in table
    frame_rows = [line.split() for line in table.splitlines()[-5:]]
    assert [row[0] for row in frame_rows] == ["0", "1", "2", "3", "4"]

    path = report.save_json(tmp_path / "out" / "report.json")
    loaded = json.loads(path.read_text())
    assert loaded["psnr"] == pytest.approx(report.psnr) and loaded["meta"] == {"checkpoint": "some/dir"}
    assert len(loaded["per_frame_mse"]) == 5


def test_report_json_has_no_nan_or_inf():
    metrics = TokenizerMetrics(8)
    real = rand_video(1, 3, 16, 16)
    metrics.update(real, real, torch.zeros(1, 1, 2, 2, dtype=torch.long))
    report = metrics.report()
    assert report.flicker is None and report.psnr == MAX_PSNR
    text = json.dumps(report.to_dict(), allow_nan=False)
    assert json.loads(text)["codebook_perplexity"] == 1.0
    with pytest.raises(ValueError, match="no clips"):
        TokenizerMetrics(8).report()


def test_tokenizer_metrics_take_flattened_ids_only_without_padding():
    real = rand_video(1, 3, 3, 8, 8)
    ids = torch.tensor([[[[1, 2]], [[3, 3]]]])  # (b, t, h, w) = (1, 2, 1, 2)
    metrics = TokenizerMetrics(8)
    metrics.update(real, real, ids.flatten(1))
    assert metrics.histogram.counts.tolist() == [0, 1, 1, 2, 0, 0, 0, 0]
    padded = torch.tensor([[True, False, False]])
    metrics.update(real, real, ids, padded)  # token frame 1 encodes frames 1-2: padding, left out
    assert metrics.histogram.counts.tolist() == [0, 2, 2, 2, 0, 0, 0, 0]
    with pytest.raises(ValueError, match=r"\(b, t, h, w\)"):
        metrics.update(real, real, ids.flatten(1), padded)


# ---------------------------------------------------------------------------------------------- Fréchet distance


def test_frechet_distance_of_diagonal_gaussians_is_the_closed_form():
    g = torch.Generator().manual_seed(0)
    mu1, mu2 = torch.randn(6, generator=g, dtype=torch.float64), torch.randn(6, generator=g, dtype=torch.float64)
    s1, s2 = torch.rand(6, generator=g, dtype=torch.float64) + 0.1, torch.rand(6, generator=g, dtype=torch.float64)
    expected = ((mu1 - mu2) ** 2).sum() + ((s1.sqrt() - s2.sqrt()) ** 2).sum()
    got = frechet_distance(mu1, torch.diag(s1), mu2, torch.diag(s2))
    assert got == pytest.approx(expected.item(), rel=1e-9)


def test_frechet_distance_full_covariance_matches_a_rotated_diagonal_case():
    # the distance is invariant under a common rotation: rotate a diagonal pair and compare with the closed form
    g = torch.Generator().manual_seed(1)
    q, _ = torch.linalg.qr(torch.randn(5, 5, generator=g, dtype=torch.float64))
    s1, s2 = torch.rand(5, generator=g, dtype=torch.float64) + 0.1, torch.rand(5, generator=g, dtype=torch.float64)
    mu1, mu2 = torch.randn(5, generator=g, dtype=torch.float64), torch.zeros(5, dtype=torch.float64)
    expected = ((mu1 - mu2) ** 2).sum() + ((s1.sqrt() - s2.sqrt()) ** 2).sum()
    got = frechet_distance(q @ mu1, q @ torch.diag(s1) @ q.T, q @ mu2, q @ torch.diag(s2) @ q.T)
    assert got == pytest.approx(expected.item(), rel=1e-9)


def test_frechet_distance_is_zero_for_equal_stats_and_symmetric():
    features = torch.randn(50, 8, generator=torch.Generator().manual_seed(0))
    other = features * 1.5 + 0.3
    a, b = feature_statistics(features), feature_statistics(other)
    assert frechet_distance(*a, *a) == pytest.approx(0.0, abs=1e-9)
    assert frechet_distance(*a, *b) == pytest.approx(frechet_distance(*b, *a), rel=1e-9)
    assert frechet_distance(*a, *b) > 1.0


def test_feature_statistics_match_torch_cov():
    features = torch.randn(20, 4, generator=torch.Generator().manual_seed(0))
    mu, sigma = feature_statistics(features)
    assert mu.dtype == torch.float64
    assert torch.allclose(mu, features.double().mean(0))
    assert torch.allclose(sigma, torch.cov(features.double().T))
    with pytest.raises(ValueError, match="at least 2"):
        feature_statistics(features[:1])


def test_frechet_distance_names_shape_mismatches():
    with pytest.raises(ValueError, match="sigma2"):
        frechet_distance(torch.zeros(3), torch.eye(3), torch.zeros(3), torch.eye(4))
    with pytest.raises(ValueError, match="mu1 and mu2"):
        frechet_distance(torch.zeros(3), torch.eye(3), torch.zeros(4), torch.eye(3))


# ---------------------------------------------------------------------------------------------- the protocol


def test_protocol_prepares_frames_size_and_value_range():
    protocol = VideoFeatureProtocol(num_frames=4, size=12, value_range=(-1.0, 1.0))
    video = torch.zeros(2, 3, 6, 8, 8)
    video[:, :, 2] = 1.0
    out = protocol.prepare(video)
    assert out.shape == (2, 3, 4, 12, 12)
    assert torch.equal(out[:, :, 2], torch.ones(2, 3, 12, 12)) and torch.equal(out[:, :, 0], -torch.ones(2, 3, 12, 12))
    gray = protocol.prepare(torch.rand(1, 1, 4, 8, 8))
    assert gray.shape == (1, 3, 4, 12, 12) and torch.equal(gray[:, 0], gray[:, 2])
    assert protocol.name == "4f-first-error-12x12-bilinear-[-1,1]"


def test_protocol_frame_sampling_and_short_clips():
    assert VideoFeatureProtocol(num_frames=3).frame_indices(7) == [0, 1, 2]
    assert VideoFeatureProtocol(num_frames=3, sampling="center").frame_indices(7) == [2, 3, 4]
    assert VideoFeatureProtocol(num_frames=3, sampling="uniform").frame_indices(7) == [0, 3, 6]
    assert VideoFeatureProtocol(num_frames=5, short_clips="repeat_last").frame_indices(3) == [0, 1, 2, 2, 2]
    assert VideoFeatureProtocol(num_frames=5, short_clips="loop").frame_indices(3) == [0, 1, 2, 0, 1]
    with pytest.raises(ValueError, match="3 valid frames"):
        VideoFeatureProtocol(num_frames=5).frame_indices(3)
    with pytest.raises(ValueError, match="sampling"):
        VideoFeatureProtocol(sampling="random")


def test_protocol_never_samples_padded_frames():
    protocol = VideoFeatureProtocol(num_frames=4, size=8, short_clips="repeat_last")
    video = rand_video(1, 3, 4, 8, 8)
    mask = torch.tensor([[True, True, False, False]])
    changed = video.clone()
    changed[:, :, 2:] = 1.0
    out = protocol.prepare(changed, mask)
    assert torch.equal(out, protocol.prepare(video, mask))
    assert torch.equal(out[:, :, 3], out[:, :, 1])  # the last valid frame is held
    with pytest.raises(ValueError, match="prefix"):
        protocol.prepare(video, torch.tensor([[True, False, True, False]]))


# ---------------------------------------------------------------------------------------------- FVD end to end


class StandInFeatures(nn.Module):
    """A small video network with the I3D TorchScript call signature (features only when asked)."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.net = nn.Sequential(nn.Conv3d(3, 8, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool3d(1), nn.Flatten())
        self.head = nn.Linear(8, 2)

    def forward(self, x: torch.Tensor, rescale: bool = True, resize: bool = True, return_features: bool = False):
        if rescale or resize:
            raise RuntimeError("the protocol already rescaled and resized")
        features = self.net(x)
        return features if return_features else self.head(features).softmax(-1)


SMALL = VideoFeatureProtocol(num_frames=4, size=16)


def _features_only(module):
    return lambda x: module(x, rescale=False, resize=False, return_features=True)


def test_fvd_is_zero_for_identical_sets_and_grows_with_a_shift():
    network = _features_only(StandInFeatures())
    real = rand_video(24, 3, 5, 12, 12) * 0.6
    same = frechet_video_distance(real, real.clone(), network, batch_size=7, protocol=SMALL)
    assert same.fvd == pytest.approx(0.0, abs=1e-8)
    small_shift = frechet_video_distance(real, real + 0.1, network, batch_size=7, protocol=SMALL)
    big_shift = frechet_video_distance(real, real + 0.3, network, batch_size=7, protocol=SMALL)
    assert 0 < small_shift.fvd < big_shift.fvd
    assert big_shift.protocol == SMALL.name and big_shift.num_real == 24 and big_shift.feature_dim == 8
    assert float(big_shift) == big_shift.fvd and json.dumps(big_shift.to_dict())


def test_fvd_is_independent_of_batching_and_accepts_batch_iterables():
    network = _features_only(StandInFeatures())
    real, fake = rand_video(12, 3, 5, 12, 12), rand_video(12, 3, 5, 12, 12, seed=1)
    whole = frechet_video_distance(real, fake, network, batch_size=12, protocol=SMALL)
    batches = [{"video": part} for part in fake.split(5)]
    pieces = frechet_video_distance(real.split(4), batches, network, batch_size=3, protocol=SMALL)
    assert pieces.fvd == pytest.approx(whole.fvd, rel=1e-6)
    loader = DataLoader(torch.utils.data.TensorDataset(fake), batch_size=5)
    assert frechet_video_distance(real, loader, network, protocol=SMALL).fvd == pytest.approx(whole.fvd, rel=1e-6)


def test_fvd_reads_frame_masks_from_batch_dicts():
    network = _features_only(StandInFeatures())
    protocol = VideoFeatureProtocol(num_frames=4, size=16, short_clips="repeat_last")
    real = rand_video(12, 3, 6, 12, 12)
    mask = torch.ones(12, 6, dtype=torch.bool)
    mask[:, 3:] = False
    scrambled = real.clone()
    scrambled[:, :, 3:] = rand_video(12, 3, 3, 12, 12, seed=5)
    masked = frechet_video_distance(real, [{"video": scrambled, "frame_mask": mask}], network, protocol=protocol)
    short = frechet_video_distance(real, real[:, :, :3], network, protocol=protocol)
    assert masked.fvd == pytest.approx(short.fvd, rel=1e-6) and masked.fvd > 0


def test_video_features_restores_module_mode_and_checks_outputs():
    module = nn.Sequential(nn.Conv3d(3, 4, 1), nn.Dropout(0.5), nn.AdaptiveAvgPool3d(1), nn.Flatten())
    module.train()
    first = video_features(rand_video(3, 3, 4, 16, 16), module, protocol=SMALL)
    second = video_features(rand_video(3, 3, 4, 16, 16), module, protocol=SMALL)
    assert torch.equal(first, second) and first.shape == (3, 4)  # eval mode: dropout off
    assert module.training
    with pytest.raises(ValueError, match=r"\(b, feature_dim\)"):
        video_features(rand_video(2, 3, 4, 16, 16), lambda x: x, protocol=SMALL)


@pytest.mark.filterwarnings("ignore:`torch.jit.script` is deprecated:DeprecationWarning")
def test_load_i3d_torchscript_runs_a_scripted_stand_in(tmp_path):
    module = StandInFeatures().eval()
    path = tmp_path / "i3d_torchscript.pt"
    torch.jit.script(module).save(str(path))
    i3d = load_i3d_torchscript(path)
    assert not i3d.training and i3d.protocol.name == "16f-first-error-224x224-bilinear-[-1,1]"

    real, fake = rand_video(12, 3, 5, 12, 12), rand_video(12, 3, 5, 12, 12, seed=1)
    scripted = frechet_video_distance(real, fake, i3d, protocol=SMALL)
    eager = frechet_video_distance(real, fake, _features_only(module), protocol=SMALL)
    assert scripted.fvd == pytest.approx(eager.fvd, rel=1e-6) and scripted.fvd > 0
    assert scripted.feature_network == "i3d_torchscript"

    with pytest.warns(UserWarning, match="biased"):  # the default protocol is the network's own (16 frames, 224 px)
        default = frechet_video_distance(rand_video(3, 3, 16, 8, 8), rand_video(3, 3, 16, 8, 8, seed=1), i3d)
    assert default.protocol == i3d.protocol.name


def test_load_i3d_torchscript_missing_or_bad_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="nothing is downloaded"):
        load_i3d_torchscript(tmp_path / "missing.pt")
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not torchscript")
    with pytest.raises(ValueError, match="TorchScript"):
        load_i3d_torchscript(bad)
