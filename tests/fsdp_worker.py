"""One process of the two-process FSDP tests (launched by tests/test_fsdp.py via torchrun, gloo on the CPU).

Usage: python -m torch.distributed.run --standalone --nproc_per_node 2 tests/fsdp_worker.py OUT_DIR cvivit|phenaki|hourglass
(hourglass: the phenaki run with a MaskGit whose middle layer runs on merged tokens)

accelerate enables FSDP only for accelerator devices (on CPU processes it silently keeps plain data parallelism),
while torch's FSDP2 (`fully_shard`) itself runs on CPU tensors with gloo. So this worker sets accelerate's state to
FSDP right after each Accelerator is built: everything after that (prepare -> fully_shard, clip_grad_norm_,
no_sync, get_state_dict) is accelerate's own FSDP2 code path, as under `accelerate launch --use_fsdp` on GPUs.

Each process runs (a) 4 uninterrupted steps, (b) 2 steps through train() ending in a sharded checkpoint and
the EMA export, (c) a fresh trainer resumed from it for 2 more steps, saved again, and (d) 2 steps without an
EMA, evaluating every step; it writes OUT_DIR/rank<r>.pt with the whole weights, the EMA and its local optimizer
shards after (a) and after (c), the EMA after (b), and after (d) the gathered weights beside the main process's
whole copy.
"""

import sys
from pathlib import Path

import torch
from accelerate import Accelerator, PartialState
from accelerate.utils import DistributedType

sys.path.insert(0, str(Path(__file__).resolve().parent))

from helpers import tiny_critic, tiny_cvivit, tiny_maskgit, tiny_phenaki  # noqa: E402

from phenaki_pytorch.data import SyntheticCaptionedVideos  # noqa: E402
from phenaki_pytorch.training import CViViTTrainer, PhenakiTrainer  # noqa: E402
from phenaki_pytorch.training.base import _flatten, _local  # noqa: E402

_original_init = Accelerator.__init__


def _fsdp_on_cpu(self, *args, **kwargs):
    _original_init(self, *args, **kwargs)
    plugin = kwargs.get("fsdp_plugin")
    if plugin is not None:
        self.state.fsdp_plugin = plugin
        self.state.distributed_type = DistributedType.FSDP
        # as accelerate does for FSDP: the process-wide state says so too, or the next AcceleratorState() built
        # anywhere (accelerate builds some internally) copies MULTI_CPU back from it and FSDP is off mid-run
        PartialState._shared_state["distributed_type"] = DistributedType.FSDP


Accelerator.__init__ = _fsdp_on_cpu


def make(kind: str, results: Path, model_seed: int = 0, **overrides):
    torch.manual_seed(model_seed)
    common = dict(
        dataset=SyntheticCaptionedVideos(12, num_frames=5, image_size=16, seed=0),
        batch_size=2,
        grad_accum_every=2,
        lr=1e-3,
        ema_beta=0.9,
        valid_frac=0.0,
        save_results_every=100,
        save_model_every=100,
        results_folder=results,
        cpu=True,
        fsdp=True,
        seed=3,
    )
    common.update(overrides)
    if kind == "cvivit":
        model = tiny_cvivit(image_size=None, discr_start_step=0)
        common.setdefault("num_train_steps", 4)
        return CViViTTrainer(model, num_frames=5, apply_grad_penalty_every=2, **common)
    maskgit = tiny_maskgit(depth=3, hourglass=1) if kind == "hourglass" else tiny_maskgit()
    model = tiny_phenaki(critic=tiny_critic(), maskgit=maskgit)
    common.setdefault("train_num_steps", 4)
    return PhenakiTrainer(model, sample_texts=["a red square moving left"], sample_steps=2, **common)


def snapshot(trainer) -> dict:
    assert trainer.is_sharded, "the model was not sharded"
    full = trainer.accelerator.get_state_dict(trainer.model)
    shards = {k: _local(v).detach().clone() for k, v in _flatten(trainer._sharded_state()["optimizers"])}
    return {
        "model": {k: v.detach().clone() for k, v in full.items()},
        "ema": {k: v.detach().clone() for k, v in trainer.ema.ema_model.state_dict().items()},
        "optimizer_shards": shards,
        "step": trainer.step,
        "params_sharded": any(type(p).__name__ == "DTensor" for p in trainer.model.parameters()),
    }


def main(out: Path, kind: str):
    torch.set_num_threads(1)
    straight = make(kind, out / "straight")
    straight_logs = [straight.train_step() for _ in range(4)]
    result = {"straight": snapshot(straight), "straight_logs": straight_logs}

    steps = {"num_train_steps": 2} if kind == "cvivit" else {"train_num_steps": 2}
    first = make(kind, out / "resumed", **steps)
    first.train()  # ends with a sharded checkpoint at step 2
    result["first_ema"] = {k: v.detach().clone() for k, v in first.ema.ema_model.state_dict().items()}
    resumed = make(kind, out / "resumed", model_seed=99, resume=True)
    result["resumed_from"] = resumed.step
    result["resumed_logs"] = [resumed.train_step() for _ in range(2)]
    result["resumed"] = snapshot(resumed)
    resumed.save()  # a second sharded checkpoint (step 4) beside the one resumed from

    # (d) no EMA: evaluation (every step here) and the export use the main process's whole copy of the weights
    plain = make(kind, out / "no_ema", use_ema=False, save_results_every=1, **steps)
    plain.train()
    gathered = plain.accelerator.get_state_dict(plain.model)  # whole on the main process, empty elsewhere
    copied = plain._full_copy.state_dict() if plain._full_copy is not None else {}
    result["no_ema"] = {
        "model": {k: v.detach().clone() for k, v in gathered.items()},
        "copy": {k: v.detach().clone() for k, v in copied.items()},
    }
    rank = resumed.accelerator.process_index
    torch.save(result, out / f"rank{rank}.pt")
    resumed.accelerator.wait_for_everyone()
    if torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()


if __name__ == "__main__":
    main(Path(sys.argv[1]), sys.argv[2])
