"""Tiny model builders shared by the tests."""

import torch

from phenaki_pytorch import CallableTextEncoder, CViViT, MaskGit, Phenaki, TokenCritic

TEXT_DIM = 24


def tiny_cvivit(**overrides) -> CViViT:
    kwargs = dict(
        dim=32,
        codebook_size=64,
        image_size=16,
        patch_size=8,
        temporal_patch_size=2,
        spatial_depth=1,
        temporal_depth=1,
        dim_head=8,
        heads=4,
        perceptual_network=None,
        discr_dim=8,
    )
    kwargs.update(overrides)
    return CViViT(**kwargs)


def tiny_maskgit(**overrides) -> MaskGit:
    kwargs = dict(num_tokens=64, max_seq_len=64, dim=32, dim_context=TEXT_DIM, depth=2, heads=4, dim_head=8)
    kwargs.update(overrides)
    return MaskGit(**kwargs)


def tiny_critic(**overrides) -> TokenCritic:
    kwargs = dict(num_tokens=64, max_seq_len=64, dim=32, dim_context=TEXT_DIM, depth=1, heads=4, dim_head=8)
    kwargs.update(overrides)
    return TokenCritic(**kwargs)


def hashed_text_encoder(dim: int = TEXT_DIM) -> CallableTextEncoder:
    """A deterministic stand-in for T5: each word maps to a fixed random vector."""

    def encode(texts):
        rows = []
        for text in texts:
            words = text.split() or [""]
            vectors = []
            for word in words:
                g = torch.Generator().manual_seed(sum(ord(ch) * 131**i for i, ch in enumerate(word)) % (2**31))
                vectors.append(torch.randn(dim, generator=g))
            rows.append(torch.stack(vectors))
        length = max(len(r) for r in rows)
        embeds = torch.zeros(len(rows), length, dim)
        mask = torch.zeros(len(rows), length, dtype=torch.bool)
        for i, r in enumerate(rows):
            embeds[i, : len(r)] = r
            mask[i, : len(r)] = True
        return embeds, mask

    return CallableTextEncoder(encode, dim=dim)


def tiny_phenaki(critic=None, **overrides) -> Phenaki:
    kwargs = dict(cvivit=tiny_cvivit(), maskgit=tiny_maskgit(), critic=critic, text_encoder=hashed_text_encoder())
    kwargs.update(overrides)
    return Phenaki(**kwargs)


def train_and_save_rank(trainer, out):
    """For the two-process trainer tests: train, then write out/rank<r>.pt with the final weights, the EMA and a
    fingerprint (per-micro-batch video sums) of every batch this process trained on."""
    if trainer.accelerator.num_processes != 2:
        raise RuntimeError(f"expected 2 processes, got {trainer.accelerator.num_processes}")

    fingerprints = []
    next_batches = trainer.next_batches

    def recording_next_batches():
        batches = next_batches()
        fingerprints.append([float(batch["video"].sum()) for batch in batches])
        return batches

    trainer.next_batches = recording_next_batches
    trainer.train()

    rank = trainer.accelerator.process_index
    torch.save(
        {
            "model": trainer.unwrapped_model.state_dict(),
            "ema": trainer.ema.ema_model.state_dict(),
            "fingerprints": fingerprints,
            "step": trainer.step,
        },
        out / f"rank{rank}.pt",
    )
    trainer.accelerator.wait_for_everyone()
    if torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()
