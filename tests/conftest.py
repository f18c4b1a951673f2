"""Shared test fixtures. Everything here runs offline: nothing is fetched from the Hugging Face Hub."""

from __future__ import annotations

import io
import json
import os

# set before transformers / huggingface_hub are imported anywhere in the test session
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"

import pytest  # noqa: E402


@pytest.fixture(autouse=True, scope="session")
def one_thread():
    """Tiny models run fastest on one thread, and stay fast when other jobs share the CPU
    (two processes with two threads each on two cores slow down many times over)."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)

TINY_T5_DIM = 32

_COLORS = ("red", "blue", "green", "yellow", "white")
_MOTIONS = (("square", "left"), ("circle", "up"), ("triangle", "right"), ("star", "down"))
TINY_CAPTIONS = tuple(f"a {color} {shape} moving {direction}" for color in _COLORS for shape, direction in _MOTIONS)


@pytest.fixture(scope="session")
def tiny_t5_dir(tmp_path_factory) -> str:
    """A folder holding a tiny randomly initialised T5 encoder plus a matching sentencepiece tokenizer.

    Loadable with ``AutoTokenizer.from_pretrained(dir)`` and ``T5EncoderModel.from_pretrained(dir)``;
    hidden size is ``TINY_T5_DIM`` (32).
    """
    import sentencepiece as spm
    import torch
    from transformers import AutoTokenizer, T5Config, T5EncoderModel

    path = tmp_path_factory.mktemp("tiny_t5")

    # sentencepiece model with T5's special-token layout: <pad>=0, </s>=1, <unk>=2, no <s>
    proto = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(TINY_CAPTIONS),
        model_writer=proto,
        model_type="unigram",
        vocab_size=64,
        hard_vocab_limit=False,  # the corpus is tiny; let sentencepiece settle for fewer pieces
        character_coverage=1.0,
        pad_id=0,
        eos_id=1,
        unk_id=2,
        bos_id=-1,
        pad_piece="<pad>",
        eos_piece="</s>",
        unk_piece="<unk>",
        num_threads=1,
        minloglevel=2,
    )
    # transformers 5's T5Tokenizer(vocab_file=...) silently ignores the file and maps every word to <unk>;
    # a folder with `spiece.model` goes through the sentencepiece converter in from_pretrained and loads right
    (path / "spiece.model").write_bytes(proto.getvalue())
    (path / "tokenizer_config.json").write_text(
        json.dumps({"tokenizer_class": "T5Tokenizer", "extra_ids": 0, "model_max_length": 512})
    )
    vocab_size = spm.SentencePieceProcessor(model_proto=proto.getvalue()).get_piece_size()

    config = T5Config(
        vocab_size=vocab_size,
        d_model=TINY_T5_DIM,
        d_kv=8,
        d_ff=64,
        num_layers=2,
        num_heads=4,
        decoder_start_token_id=0,
        pad_token_id=0,
        eos_token_id=1,
    )
    with torch.random.fork_rng():
        torch.manual_seed(0)
        model = T5EncoderModel(config)
    model.save_pretrained(path)

    # sanity: the folder tokenizes for real (distinct captions -> distinct ids, no <unk> in-domain)
    tokenizer = AutoTokenizer.from_pretrained(str(path))
    ids = [tuple(tokenizer(caption).input_ids) for caption in TINY_CAPTIONS]
    assert len(set(ids)) == len(ids), "tiny tokenizer maps distinct captions to the same ids"
    assert all(tokenizer.unk_token_id not in seq for seq in ids), "tiny tokenizer produced <unk> for in-domain text"
    assert max(max(seq) for seq in ids) < vocab_size
    return str(path)
