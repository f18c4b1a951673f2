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
from helpers import tiny_cvivit, train_and_save_rank  # noqa: E402


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
    train_and_save_rank(trainer, out)

if __name__ == "__main__":
    main(Path(sys.argv[1]))
