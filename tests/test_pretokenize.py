import pytest
import torch
from helpers import hashed_text_encoder, tiny_cvivit, tiny_phenaki

from phenaki_pytorch.data import PretokenizedDataset, SyntheticCaptionedVideos, collate_tokens, pretokenize


def test_pretokenize_round_trip_and_training_from_it(tmp_path):
    torch.manual_seed(0)
    dataset = SyntheticCaptionedVideos(num_samples=10, num_frames=5, image_size=16, seed=0)
    cvivit = tiny_cvivit().eval()
    encoder = hashed_text_encoder()
    calls = []
    original = encoder.encode

    def counting(texts, device=None):
        calls.append(len(texts))
        return original(texts, device=device)

    encoder.encode = counting
    pretokenize(dataset, cvivit, tmp_path, text_encoder=encoder, batch_size=4, show_progress=False)
    tokens = PretokenizedDataset(tmp_path)
    assert len(tokens) == 10
    unique = {dataset[i]["text"] for i in range(10)}
    assert sum(calls) == len(unique)  # each distinct caption encoded once

    for i in (0, 7):
        item = tokens[i]
        expected = cvivit.tokenize(dataset[i]["video"][None])[0]
        assert torch.equal(item["codebook_ids"], expected)
        assert item["text"] == dataset[i]["text"]
        embeds, mask = original([item["text"]])
        n = int(mask.sum())
        torch.testing.assert_close(item["text_embeds"][:n], embeds[0, :n], atol=2e-3, rtol=1e-2)
        assert item["text_mask"].sum() == n and not item["text_mask"][n:].any()

    batch = collate_tokens([tokens[0], tokens[1]])
    phenaki = tiny_phenaki(cvivit=cvivit)
    loss = phenaki(video_codebook_ids=batch["codebook_ids"], text_embeds=batch["text_embeds"], text_mask=batch["text_mask"])
    assert torch.isfinite(loss)


def test_pretokenize_keeps_scene_cuts_and_training_keeps_their_context_unmasked(tmp_path):
    from phenaki_pytorch.data import SyntheticGlyphVideos
    from phenaki_pytorch.training import PhenakiTrainer

    dataset = SyntheticGlyphVideos(12, num_frames=5, image_size=16, scene_cut_prob=0.5, scene_cut_frames=(3,),
                                   size_range=(0.3, 0.35), travel=0.25, seed=1)
    cuts = [dataset[i]["prime_frames"] for i in range(12)]
    assert set(cuts) == {0, 3}
    cvivit = tiny_cvivit().eval()
    pretokenize(dataset, cvivit, tmp_path / "tokens", text_encoder=hashed_text_encoder(), show_progress=False)
    tokens = PretokenizedDataset(tmp_path / "tokens")
    assert [tokens[i]["prime_frames"] for i in range(12)] == cuts
    assert "prime_frames" not in PretokenizedDataset(
        pretokenize(SyntheticCaptionedVideos(2, num_frames=5, image_size=16), cvivit, tmp_path / "plain",
                    show_progress=False)
    )[0]

    phenaki = tiny_phenaki(cvivit=cvivit)
    seen = []
    phenaki.maskgit.register_forward_hook(lambda module, args, output: seen.append(args[0].clone()))
    trainer = PhenakiTrainer(phenaki, dataset=tokens, batch_size=12, valid_frac=0.0, results_folder=tmp_path / "r",
                             save_results_every=10**6, save_model_every=10**6)
    trainer.train_step()
    h, w = phenaki._patch_shape()
    inputs = seen[0].view(12, -1, h * w)  # (b, token frames, tokens per frame); the batch order is shuffled
    context = ~(inputs[:, :2] == phenaki.maskgit.mask_id).any(dim=-1).any(dim=-1)  # first 2 token frames whole
    assert int(context.sum()) >= cuts.count(3)
    with pytest.raises(ValueError, match="prime_frames"):
        phenaki(video_codebook_ids=tokens[0]["codebook_ids"][None], texts=["a"], prime_frames=2)
    with pytest.raises(ValueError, match="prime_frames"):
        phenaki(video_codebook_ids=tokens[0]["codebook_ids"][None], texts=["a"], prime_frames=5)


def test_pretokenized_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="pretokenize folder"):
        PretokenizedDataset(tmp_path)
    (tmp_path / "tokens.safetensors").write_bytes(b"garbage")
    (tmp_path / "meta.json").write_text("{}")
    with pytest.raises(ValueError, match="could not read"):
        PretokenizedDataset(tmp_path)
