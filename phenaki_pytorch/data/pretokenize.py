"""Pre-tokenizing: run the trained tokenizer and the text encoder over a dataset once.

Stage-2 training then reads codebook ids and text embeddings instead of running
C-ViViT and T5 every step. The output is a folder:

    tokens.safetensors   codebook_ids (N, t, h, w) int32, frame_mask (N, f) bool,
                         text_index (N,) int64, text_embeds (U, L, D) float16, text_mask (U, L) bool,
                         prime_frames (N,) int32 when the items carry "prime_frames" (scene cuts)
    meta.json            captions (U unique ones), shapes, the tokenizer's config

Each distinct caption is encoded once (U <= N).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm

from ..typecheck import typechecked
from .datasets import collate_videos

TOKENS_FILE = "tokens.safetensors"
META_FILE = "meta.json"


@typechecked
@torch.no_grad()
def pretokenize(
    dataset: Dataset,
    cvivit: torch.nn.Module,
    output_dir: str | Path,
    *,
    text_encoder: Any = None,
    batch_size: int = 16,
    num_workers: int = 0,
    device: str | torch.device | None = None,
    show_progress: bool = True,
) -> Path:
    """Tokenize every item of `dataset` (dicts with "video", optional "frame_mask", "text" and "prime_frames").

    `text_encoder` is a TextEncoder (or anything with `encode(texts, device) -> (embeds, mask)`);
    without it captions are kept in meta.json but no embeddings are stored.
    """
    if len(dataset) == 0:
        raise ValueError("dataset is empty: nothing to tokenize")
    device = torch.device(device) if device is not None else next(cvivit.parameters()).device
    was_training = cvivit.training
    cvivit.eval()
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=num_workers, collate_fn=collate_videos)

    ids, masks, captions, primes = [], [], [], []
    for batch in tqdm(loader, desc="tokenizing", disable=not show_progress):
        video = batch["video"].to(device)
        ids.append(cvivit.tokenize(video).to(torch.int32).cpu())
        masks.append(batch["frame_mask"].cpu())
        captions.extend(batch.get("text", [None] * video.shape[0]))
        primes.extend(batch.get("prime_frames", [None] * video.shape[0]))
    cvivit.train(was_training)

    tensors: dict[str, Tensor] = {"codebook_ids": torch.cat(ids), "frame_mask": torch.cat(masks)}
    if any(p is not None for p in primes):
        tensors["prime_frames"] = torch.tensor([int(p or 0) for p in primes], dtype=torch.int32)
    unique: list[str] = []
    if all(c is not None for c in captions):
        index_of: dict[str, int] = {}
        for caption in captions:
            index_of.setdefault(caption, len(index_of))
        unique = list(index_of)
        tensors["text_index"] = torch.tensor([index_of[c] for c in captions], dtype=torch.long)
        if text_encoder is not None:
            embeds, text_mask = [], []
            for start in tqdm(range(0, len(unique), batch_size), desc="encoding text", disable=not show_progress):
                e, m = text_encoder.encode(unique[start : start + batch_size], device=device)
                embeds.append(e.cpu())
                text_mask.append(m.cpu())
            length = max(e.shape[1] for e in embeds)
            tensors["text_embeds"] = torch.cat([_pad(e, length) for e in embeds]).half()
            tensors["text_mask"] = torch.cat([_pad(m, length) for m in text_mask])

    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    from safetensors.torch import save_file

    tmp = output_dir / (TOKENS_FILE + ".tmp")
    save_file({k: v.contiguous() for k, v in tensors.items()}, str(tmp))
    tmp.replace(output_dir / TOKENS_FILE)
    meta = {
        "num_items": len(captions),
        "captions": unique,
        "token_shape": list(tensors["codebook_ids"].shape[1:]),
        "num_frames": tensors["frame_mask"].shape[1],
        "codebook_size": getattr(cvivit, "codebook_size", None),
        "tokenizer_config": getattr(cvivit, "config", None),
        "has_text_embeds": "text_embeds" in tensors,
    }
    (output_dir / META_FILE).write_text(json.dumps(meta, indent=2))
    return output_dir


def _pad(t: Tensor, length: int) -> Tensor:
    if t.shape[1] == length:
        return t
    pad = t.new_zeros(t.shape[0], length - t.shape[1], *t.shape[2:])
    return torch.cat((t, pad), dim=1)


class PretokenizedDataset(Dataset):
    """Reads a `pretokenize` folder. Items: {"codebook_ids" (t, h, w) long, "frame_mask" (f,) bool,
    and, when captions were stored, "text" and (with embeddings) "text_embeds" (L, D) float, "text_mask" (L,);
    "prime_frames" (int) when the tokenized items had it}."""

    def __init__(self, directory: str | Path):
        from safetensors.torch import load_file

        directory = Path(directory)
        tokens, meta = directory / TOKENS_FILE, directory / META_FILE
        if not tokens.is_file() or not meta.is_file():
            raise FileNotFoundError(f"{str(directory)!r} is not a pretokenize folder (needs {TOKENS_FILE} and {META_FILE})")
        try:
            self.tensors = load_file(str(tokens))
            self.meta = json.loads(meta.read_text())
        except Exception as error:
            raise ValueError(f"could not read pre-tokenized data in {str(directory)!r}: {error}") from None
        self.captions: list[str] = self.meta.get("captions", [])

    def __len__(self) -> int:
        return self.tensors["codebook_ids"].shape[0]

    def __getitem__(self, index: int) -> dict[str, Any]:
        item: dict[str, Any] = {
            "codebook_ids": self.tensors["codebook_ids"][index].long(),
            "frame_mask": self.tensors["frame_mask"][index],
        }
        if "prime_frames" in self.tensors:
            item["prime_frames"] = int(self.tensors["prime_frames"][index])
        if "text_index" in self.tensors:
            text_index = int(self.tensors["text_index"][index])
            item["text"] = self.captions[text_index]
            if "text_embeds" in self.tensors:
                item["text_embeds"] = self.tensors["text_embeds"][text_index].float()
                item["text_mask"] = self.tensors["text_mask"][text_index]
        return item


def collate_tokens(batch: list[dict[str, Any]]) -> dict[str, Any]:
    """Stack PretokenizedDataset items; texts as a list."""
    out: dict[str, Any] = {}
    for key in batch[0]:
        values = [item[key] for item in batch]
        out[key] = torch.stack(values) if isinstance(values[0], Tensor) else values
    return out
