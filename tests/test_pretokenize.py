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


def test_pretokenized_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="pretokenize folder"):
        PretokenizedDataset(tmp_path)
    (tmp_path / "tokens.safetensors").write_bytes(b"garbage")
    (tmp_path / "meta.json").write_text("{}")
    with pytest.raises(ValueError, match="could not read"):
        PretokenizedDataset(tmp_path)
