import helpers
import pytest
import torch

from phenaki_pytorch import CViViT


def tiny_cvivit(**overrides):
    return helpers.tiny_cvivit(**{"image_size": None, **overrides})


@pytest.fixture
def cvivit():
    torch.manual_seed(0)
    return tiny_cvivit()


def test_seed_readme_snippet_reduced():
    # the seed README's first snippet: no image_size, codebook_size 5000, patch 32 (sizes shrunk)
    cvivit = CViViT(
        dim=64,
        codebook_size=5000,
        patch_size=32,
        temporal_patch_size=2,
        spatial_depth=1,
        temporal_depth=1,
        dim_head=16,
        heads=4,
    )
    video = torch.randn(1, 3, 5, 64, 64)
    loss = cvivit(video)
    loss.backward()
    assert torch.isfinite(loss)
    assert any(p.grad is not None for p in cvivit.generator_parameters())


@pytest.mark.parametrize("frames", [1, 3, 9])
def test_video_shapes(cvivit, frames):
    video = torch.rand(2, 3, frames, 32, 32)
    loss, recon = cvivit(video, return_recons=True)
    assert recon.shape == video.shape
    ids = cvivit(video, return_only_codebook_ids=True)
    assert ids.shape == (2, 1 + (frames - 1) // 2, 4, 4)
    assert ids.dtype == torch.long


def test_image_input_is_one_frame_video(cvivit):
    cvivit.eval()
    image = torch.rand(2, 3, 32, 32)
    loss, recon = cvivit(image, return_recons=True)
    assert recon.shape == image.shape
    ids_image = cvivit(image, return_only_codebook_ids=True)
    ids_video = cvivit(image.unsqueeze(2), return_only_codebook_ids=True)
    assert torch.equal(ids_image, ids_video)


def test_rectangular_frames():
    cvivit = tiny_cvivit(image_size=(32, 48), patch_size=(8, 16))
    video = torch.rand(1, 3, 5, 32, 48)
    assert cvivit(video, return_recons_only=True).shape == video.shape
    assert cvivit.patch_grid() == (4, 3)
    assert cvivit.tokens_per_frame() == 12


def test_geometry_helpers(cvivit):
    assert cvivit.num_token_frames(1) == 1
    assert cvivit.num_token_frames(17) == 9
    assert cvivit.num_video_frames(9) == 17
    assert cvivit.tokens_per_frame(64) == 64
    assert cvivit.num_tokens(17, image_size=(32, 64)) == 9 * 4 * 8
    for frames in range(1, 20, 2):
        assert cvivit.num_video_frames(cvivit.num_token_frames(frames)) == frames
    with pytest.raises(ValueError, match="nearest valid: \\(9, 11\\)"):
        cvivit.num_token_frames(10)


@pytest.mark.parametrize("first_frame", ["image", "tubelet"])
def test_causal_in_time(first_frame):
    torch.manual_seed(0)
    cvivit = tiny_cvivit(temporal_depth=2, spatial_depth=2, first_frame=first_frame).eval()
    video = torch.rand(2, 3, 9, 32, 32)
    for cut in (1, 3, 5, 7):  # frames >= cut change; token frame k covers frames 2k-1, 2k
        changed = video.clone()
        changed[:, :, cut:] = torch.rand_like(changed[:, :, cut:])
        keep = 1 + (cut - 1) // 2  # token frames built only from frames < cut
        with torch.no_grad():
            latents_a, latents_b = cvivit.encode(video), cvivit.encode(changed)
            ids_a, ids_b = cvivit.tokenize(video), cvivit.tokenize(changed)
            recon_a = cvivit.decode_from_codebook_indices(ids_a)
            recon_b = cvivit.decode_from_codebook_indices(ids_b)
        torch.testing.assert_close(latents_a[:, :keep], latents_b[:, :keep])
        assert torch.equal(ids_a[:, :keep], ids_b[:, :keep])
        # the decoder is causal too: pixels of unchanged token frames are unchanged
        frames_kept = 1 + (keep - 1) * 2
        torch.testing.assert_close(recon_a[:, :, :frames_kept], recon_b[:, :, :frames_kept])
        # and the change is visible afterwards (the test could fail)
        assert not torch.allclose(latents_a[:, keep:], latents_b[:, keep:])


def test_first_frame_as_a_tubelet(tmp_path):
    torch.manual_seed(0)
    cvivit = tiny_cvivit(first_frame="tubelet", use_gan=False)
    names = [name for name, _ in cvivit.named_parameters()]
    assert not any(name.startswith(("to_first_frame_tokens.", "pixel_head.to_first.")) for name in names)
    video = torch.rand(2, 3, 5, 32, 32)
    cvivit(video).backward()  # trains: every parameter it has gets a gradient
    assert all(p.grad is not None for p in cvivit.generator_parameters())
    cvivit.eval()
    # the first frame is encoded as the tubelet of that frame repeated: the same latents as a video that starts
    # with the frame repeated, up to the temporal transformer's causal context
    image = video[:, :, 0]
    with torch.no_grad():
        expected = cvivit.to_rest_tokens(image[:, :, None].expand(-1, -1, 2, -1, -1))
        expected = cvivit._temporal(cvivit.enc_temporal, cvivit._spatial(cvivit.enc_spatial, cvivit.enc_spatial_bias,
                                                                         expected))
        torch.testing.assert_close(cvivit.encode(image), expected)
        assert cvivit.decode_from_codebook_indices(cvivit.tokenize(image)).shape == (2, 3, 1, 32, 32)
    cvivit.save_pretrained(tmp_path / "tok")
    loaded = CViViT.from_pretrained(tmp_path / "tok").eval()
    assert loaded.first_frame == "tubelet"
    assert torch.equal(loaded.tokenize(video), cvivit.tokenize(video))
    # the linear head has one projection fewer for the adaptive GAN weight to compare
    assert len(tiny_cvivit(first_frame="tubelet", pixel_head="linear").pixel_head.last_layers()) == 1
    with pytest.raises(ValueError, match="first_frame must be 'image' or 'tubelet', got 'frame'"):
        tiny_cvivit(first_frame="frame")


def test_decoder_token_noise_replaces_tokens_in_training_only(tmp_path):
    torch.manual_seed(0)
    # a random codebook (no data-initialised one, which is all zeros until the first training batch)
    clean = tiny_cvivit(use_gan=False, kmeans_init=False)
    noisy = tiny_cvivit(use_gan=False, kmeans_init=False, decoder_token_noise=0.5)
    noisy.load_state_dict(clean.state_dict())
    video = torch.rand(2, 3, 5, 32, 32)
    # evaluation and no-grad passes decode the clean tokens
    for model in (clean, noisy):
        model.eval()
    torch.testing.assert_close(noisy(video, return_recons_only=True), clean(video, return_recons_only=True))
    # _token_noise: a replaced token is a codebook entry, no gradient flows through it, the rest pass as they are
    ids = torch.randint(0, noisy.codebook_size, (64, 3, 4, 4))
    quantized = noisy._codes(ids).clone().requires_grad_()
    torch.manual_seed(1)
    out = noisy._token_noise(quantized, ids, 0.5)
    out.sum().backward()
    replaced = (out != quantized).any(dim=-1)
    assert 0.4 < replaced.float().mean().item() < 0.6  # p = 0.5, minus the draws that hit the same id
    grad = quantized.grad[..., 0]
    assert torch.all((grad == 0) | (grad == 1)) and torch.all(quantized.grad == grad.unsqueeze(-1))
    assert torch.all(grad[replaced] == 0)  # a drawn id equal to the old one is cut off too, but not "replaced"
    assert 0.45 < (grad == 0).float().mean().item() < 0.55
    codebook = noisy._codes(torch.arange(noisy.codebook_size).view(1, 1, 1, -1))[0, 0, 0]  # (codes, d)
    assert torch.all((out[replaced].unsqueeze(1) - codebook).abs().amax(dim=-1).amin(dim=-1) < 1e-6)
    # in training the loss reconstructs from the perturbed tokens, so it differs from the clean model's
    clean.train()
    noisy.train()
    torch.manual_seed(2)
    clean_loss, clean_recon = clean(video, return_recons=True)
    torch.manual_seed(2)
    noisy_loss, noisy_recon = noisy(video, return_recons=True)
    assert not torch.allclose(noisy_recon, clean_recon)
    noisy_loss.backward()
    assert all(p.grad is not None for p in noisy.generator_parameters())
    # saved with the config
    noisy.save_pretrained(tmp_path / "tok")
    assert CViViT.from_pretrained(tmp_path / "tok").decoder_token_noise == 0.5
    for bad in (-0.1, 1.0, True):
        with pytest.raises((ValueError, TypeError), match="decoder_token_noise"):
            tiny_cvivit(decoder_token_noise=bad)


def test_encode_decode_round_trip_of_ids():
    torch.manual_seed(0)
    cvivit = tiny_cvivit(use_gan=False).eval()
    video = torch.rand(2, 3, 5, 32, 32)
    ids = cvivit.tokenize(video)
    recon = cvivit.decode_from_codebook_indices(ids)
    assert recon.shape == video.shape
    # decoding ids equals decoding the quantized latents directly
    with torch.no_grad():
        quantized, ids_direct, _ = cvivit.quantize(cvivit.encode(video))
        direct = cvivit.decode(quantized)
    assert torch.equal(ids, ids_direct)
    torch.testing.assert_close(recon, direct, atol=1e-5, rtol=1e-4)
    # flattened ids decode the same when the model knows its image size
    sized = tiny_cvivit(image_size=32, use_gan=False)
    sized.load_state_dict(cvivit.state_dict())
    sized.eval()
    flat = ids.flatten(1)
    torch.testing.assert_close(sized.decode_from_codebook_indices(flat), recon, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize(
    "quantizer,codebook_size,extra",
    [("vq", 5000, {}), ("lfq", 256, {}), ("fsq", 1000, {}), ("fsq", 40, {"fsq_levels": (8, 5)})],
)
def test_quantizers(quantizer, codebook_size, extra):
    torch.manual_seed(0)
    cvivit = tiny_cvivit(quantizer=quantizer, codebook_size=codebook_size, use_gan=False, **extra).eval()
    video = torch.rand(1, 3, 3, 16, 16)
    ids = cvivit.tokenize(video)
    assert ids.min() >= 0 and ids.max() < codebook_size
    recon = cvivit.decode_from_codebook_indices(ids)
    assert recon.shape == video.shape


def test_quantizer_codebook_validation():
    with pytest.raises(ValueError, match="power of 2"):
        tiny_cvivit(quantizer="lfq", codebook_size=5000)
    with pytest.raises(ValueError, match="fsq_levels"):
        tiny_cvivit(quantizer="fsq", codebook_size=5000)
    with pytest.raises(ValueError, match="product"):
        tiny_cvivit(quantizer="fsq", codebook_size=41, fsq_levels=(8, 5))
    with pytest.raises(ValueError, match="quantizer must be"):
        tiny_cvivit(quantizer="kmeans")


def test_overfits_one_video():
    torch.manual_seed(0)
    cvivit = tiny_cvivit(dim=64, codebook_size=256, use_gan=False, spatial_depth=2, temporal_depth=2, dim_head=16)
    t = torch.linspace(0, 1, 5)[:, None, None]
    x = torch.linspace(0, 1, 16)
    # a smooth moving gradient, 5 frames of 16x16
    frames = torch.sin(6 * (x[None, None, :] + x[None, :, None] * 0.5 - t))
    video = torch.stack((frames, frames.flip(-1), frames.transpose(-1, -2)))[None] * 0.5 + 0.5
    optimizer = torch.optim.Adam(cvivit.generator_parameters(), lr=2e-3)
    cvivit.eval()
    with torch.no_grad():
        start = torch.mean((cvivit(video, return_recons_only=True) - video) ** 2).item()
    cvivit.train()
    for _ in range(300):
        loss = cvivit(video)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    cvivit.eval()
    with torch.no_grad():
        end = torch.mean((cvivit(video, return_recons_only=True) - video) ** 2).item()
    assert end < start / 10, (start, end)


def test_generator_and_discriminator_gradients_reach_the_right_parameters():
    torch.manual_seed(0)
    cvivit = tiny_cvivit()
    video = torch.rand(2, 3, 5, 32, 32)

    loss = cvivit(video)
    assert torch.isfinite(loss)
    loss.backward()
    assert all(p.grad is None for p in cvivit.discriminator_parameters())
    grads = [p.grad for p in cvivit.generator_parameters()]
    assert sum(g is not None and g.abs().sum() > 0 for g in grads) > len(grads) // 2
    cvivit.zero_grad(set_to_none=True)

    discr_loss = cvivit(video, return_discr_loss=True)
    assert torch.isfinite(discr_loss)
    discr_loss.backward()
    assert all(p.grad is None for p in cvivit.generator_parameters())
    assert all(p.grad is not None for p in cvivit.discriminator_parameters())


def test_adversarial_term_changes_the_generator_loss():
    torch.manual_seed(0)
    with_gan = tiny_cvivit(discr_start_step=0)
    video = torch.rand(2, 3, 5, 32, 32)
    torch.manual_seed(1)
    loss, breakdown = with_gan(video, return_loss_breakdown=True)
    assert {"recon", "quantizer", "adversarial", "adaptive_weight"} <= set(breakdown)
    expected = breakdown["recon"] + breakdown["quantizer"] + breakdown["adaptive_weight"] * breakdown["adversarial"]
    torch.testing.assert_close(loss.detach(), expected)


def test_discriminator_loss_variants():
    torch.manual_seed(0)
    video = torch.rand(2, 3, 3, 32, 32)
    for gan_loss in ("hinge", "bce"):
        cvivit = tiny_cvivit(gan_loss=gan_loss)
        for penalty in (True, False):
            loss = cvivit(video, return_discr_loss=True, apply_grad_penalty=penalty)
            assert loss.ndim == 0 and torch.isfinite(loss)
    with pytest.raises(ValueError, match="use_gan"):
        tiny_cvivit(use_gan=False)(video, return_discr_loss=True)


def test_single_channel_video():
    cvivit = tiny_cvivit(channels=1)
    video = torch.rand(2, 1, 3, 16, 16)
    assert cvivit(video, return_recons_only=True).shape == video.shape
    assert torch.isfinite(cvivit(video, return_discr_loss=True))


def test_pluggable_perceptual_network_is_frozen_and_not_saved():
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.ReLU())
    cvivit = tiny_cvivit(perceptual_network=net)
    loss, breakdown = cvivit(torch.rand(1, 3, 3, 16, 16), return_loss_breakdown=True)
    assert "perceptual" in breakdown
    loss.backward()
    assert all(not p.requires_grad and p.grad is None for p in net.parameters())
    assert not any(k.startswith("perceptual") or "_perceptual" in k for k in cvivit.state_dict())
    assert all(p is not q for p in cvivit.parameters() for q in net.parameters())


def test_padding_mask_ignores_padded_frames():
    torch.manual_seed(0)
    cvivit = tiny_cvivit(use_gan=False).eval()
    video = torch.rand(1, 3, 5, 16, 16)
    mask = torch.tensor([[True, True, True, False, False]])
    noisy = video.clone()
    noisy[:, :, 3:] = 100.0
    a = cvivit(video, mask=mask)
    b = cvivit(noisy, mask=mask)
    torch.testing.assert_close(a, b)
    with pytest.raises(ValueError, match="mask must be bool"):
        cvivit(video, mask=mask.float())


@pytest.mark.parametrize(
    "video,error,match",
    [
        (torch.rand(3, 5, 16, 16)[None, None], ValueError, "batch, channels, frames"),
        (torch.rand(3, 16, 16), ValueError, "batch, channels, frames"),
        (torch.rand(1, 4, 5, 16, 16), ValueError, "channels=3"),
        (torch.rand(1, 3, 4, 16, 16), ValueError, "1 \\+ k \\* temporal_patch_size"),
        (torch.rand(1, 3, 5, 20, 16), ValueError, "divisible by patch_size"),
        (torch.randint(0, 255, (1, 3, 5, 16, 16)), TypeError, "float"),
        ([[1.0]], TypeError, "torch.Tensor"),
    ],
)
def test_bad_video_inputs(cvivit, video, error, match):
    with pytest.raises(error, match=match):
        cvivit(video)


def test_bad_ids_and_sizes():
    cvivit = tiny_cvivit(image_size=16)
    with pytest.raises(ValueError, match="\\[0, 64\\)"):
        cvivit.decode_from_codebook_indices(torch.full((1, 2, 2, 2), 64))
    with pytest.raises(ValueError, match="\\[0, 64\\)"):
        cvivit.decode_from_codebook_indices(torch.full((1, 2, 2, 2), -1))
    with pytest.raises(TypeError, match="integer"):
        cvivit.decode_from_codebook_indices(torch.zeros(1, 2, 2, 2))
    with pytest.raises(ValueError, match="whole number"):
        cvivit.decode_from_codebook_indices(torch.zeros(1, 5, dtype=torch.long))
    with pytest.raises(ValueError, match="image_size=\\(16, 16\\)"):
        cvivit(torch.rand(1, 3, 1, 32, 32))
    with pytest.raises(ValueError, match="divisible"):
        tiny_cvivit(image_size=20)


def test_load_and_save_pretrained(tmp_path, cvivit):
    cvivit.eval()
    video = torch.rand(1, 3, 3, 16, 16)
    path = tmp_path / "cvivit.safetensors"
    cvivit.save(path)
    fresh = tiny_cvivit().eval()
    fresh.load(path)
    assert torch.equal(fresh.tokenize(video), cvivit.tokenize(video))

    torch.save(cvivit.state_dict(), tmp_path / "cvivit.pt")
    assert torch.equal(tiny_cvivit().eval().load(tmp_path / "cvivit.pt").tokenize(video), cvivit.tokenize(video))

    cvivit.save_pretrained(tmp_path / "pretrained")
    rebuilt = CViViT.from_pretrained(tmp_path / "pretrained").eval()
    assert rebuilt.config == cvivit.config
    assert torch.equal(rebuilt.tokenize(video), cvivit.tokenize(video))

    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes((tmp_path / "cvivit.pt").read_bytes()[:100])
    with pytest.raises(ValueError, match="truncated"):
        tiny_cvivit().load(truncated)


def test_discriminator_step_does_not_update_the_codebook():
    torch.manual_seed(0)
    cvivit = tiny_cvivit().train()
    before = {k: v.clone() for k, v in cvivit.quantizer.state_dict().items()}
    cvivit(torch.rand(2, 3, 3, 16, 16), return_discr_loss=True).backward()
    after = cvivit.quantizer.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert cvivit.quantizer.training  # mode restored
    cvivit(torch.rand(2, 3, 3, 16, 16))  # while the generator step does update it
    assert any(not torch.equal(before[k], cvivit.quantizer.state_dict()[k]) for k in before)


def test_gan_frames_come_from_real_frames_only():
    cvivit = tiny_cvivit()
    video = torch.zeros(2, 3, 5, 16, 16)
    video[:, :, :2] = 1.0  # only the first two frames are real; padding is zero
    mask = torch.tensor([[True, True, False, False, False]] * 2)
    for _ in range(10):
        real, _ = cvivit._discriminator_frames(video, video, mask)
        assert torch.all(real == 1.0)
