"""One process of the two-process CViViTTrainer test (launched by tests/test_cvivit_trainer.py via torchrun).

Usage: python -m torch.distributed.run --standalone --nproc_per_node 2 tests/ddp_worker.py OUT_DIR
Each process trains a few steps on the CPU (gloo) and writes OUT_DIR/rank<r>.pt with its final weights, its EMA
and a fingerprint of every batch it trained on.
"""

import sys
from pathlib import Path

import torch

from phenaki_pytorch.data import SyntheticCaptionedVideos
from phenaki_pytorch.training import CViViTTrainer

sys.path.insert(0, str(Path(__file__).parent))
from helpers import tiny_cvivit  # noqa: E402


def main(out: Path):
    torch.manual_seed(0)
    cvivit = tiny_cvivit(image_size=None)
    trainer = CViViTTrainer(
        cvivit,
        dataset=SyntheticCaptionedVideos(16, num_frames=5, image_size=16, seed=0),
        num_frames=5,
        batch_size=2,
        grad_accum_every=2,
        num_train_steps=4,
        lr=1e-3,
        apply_grad_penalty_every=2,
        ema_beta=0.9,
        save_results_every=2,
        save_model_every=2,
        results_folder=out / "results",
        cpu=True,
    )
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


if __name__ == "__main__":
    main(Path(sys.argv[1]))
