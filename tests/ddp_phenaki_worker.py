"""One process of the two-process PhenakiTrainer test (launched by tests/test_phenaki_trainer.py via torchrun).

Usage: python -m torch.distributed.run --standalone --nproc_per_node 2 tests/ddp_phenaki_worker.py OUT_DIR [token|self]
Each process trains a tiny Phenaki with a token critic (or a self-critic head) for a few steps on the CPU (gloo) and writes
OUT_DIR/rank<r>.pt with its final weights, its EMA and a fingerprint of every batch it trained on.
"""

import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from helpers import tiny_critic, tiny_phenaki, train_and_save_rank  # noqa: E402

from phenaki_pytorch.data import SyntheticCaptionedVideos  # noqa: E402
from phenaki_pytorch.training import PhenakiTrainer  # noqa: E402


def main(out: Path, critic: str = "token"):
    torch.set_num_threads(1)
    torch.manual_seed(0)
    if critic == "self":
        phenaki = tiny_phenaki(self_token_critic=True)
    else:
        phenaki = tiny_phenaki(critic=tiny_critic())
    trainer = PhenakiTrainer(
        phenaki=phenaki,
        dataset=SyntheticCaptionedVideos(16, num_frames=5, image_size=16, seed=0),
        batch_size=2,
        grad_accum_every=2,
        train_num_steps=4,
        lr=1e-3,
        ema_beta=0.9,
        sample_texts=["a red square moving left"],
        sample_steps=3,
        save_results_every=2,
        save_model_every=2,
        results_folder=out / "results",
        cpu=True,
    )
    train_and_save_rank(trainer, out)

if __name__ == "__main__":
    main(Path(sys.argv[1]), *sys.argv[2:3])
