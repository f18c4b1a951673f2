"""Fault injection for the trainers: NaN batches, kills during checkpoint writes, corrupt checkpoints.

One reference run trains a tiny tokenizer for 8 steps on 12 clips, one of which holds a NaN pixel. Every fault
below is followed by a resume, and the resumed run must end bit-exactly where the reference ended: the same
weights, EMA, optimizer state, skip counters and the same `metrics.jsonl`, line for line.
"""

import json
import math
import os
import shutil
import signal
import subprocess
import sys
import time
import warnings
from pathlib import Path

import helpers
import pytest
import torch
from torch.utils.data import Dataset

from phenaki_pytorch import CViViT, Phenaki
from phenaki_pytorch.data import SyntheticCaptionedVideos
from phenaki_pytorch.serialization import nonfinite_tensors
from phenaki_pytorch.training import CViViTTrainer, PhenakiTrainer, ResumableBatchSampler, load_checkpoint
from phenaki_pytorch.training import checkpoint as checkpoint_module
from phenaki_pytorch.training.base import BaseTrainer, NonFiniteTrainingError

TESTS = Path(__file__).resolve().parent
STEPS = 8
NUM_CLIPS = 12
BATCH = 2
POISONED = 5  # the clip with one NaN pixel


class PoisonedClips(Dataset):
    """Synthetic clips; `poisoned` items (and every item from epoch `all_from_epoch` on) hold one bad pixel."""

    def __init__(self, poisoned=(POISONED,), all_from_epoch=None, value=float("nan"), captions=False):
        self.base = SyntheticCaptionedVideos(NUM_CLIPS, num_frames=3, image_size=16, seed=0)
        self.poisoned, self.all_from_epoch, self.value = set(poisoned), all_from_epoch, value
        self.captions, self.epoch = captions, 0

    def set_epoch(self, epoch):
        self.epoch = epoch

    def __len__(self):
        return NUM_CLIPS

    def __getitem__(self, index):
        item = self.base[index]
        video = item["video"].clone()
        if index in self.poisoned or (self.all_from_epoch is not None and self.epoch >= self.all_from_epoch):
            video[0, 0, 0, 0] = self.value
        return {"video": video, "text": item["text"]} if self.captions else {"video": video}


def make_trainer(results, model_seed=0, dataset=None, **overrides):
    torch.manual_seed(model_seed)
    kwargs = dict(
        dataset=dataset if dataset is not None else PoisonedClips(),
        num_frames=3,
        batch_size=BATCH,
        num_train_steps=STEPS,
        lr=1e-3,
        ema_beta=0.9,
        valid_frac=0.0,
        save_results_every=10**6,
        save_model_every=2,
        keep_last=3,
        results_folder=results,
        seed=0,
    )
    kwargs.update(overrides)
    return CViViTTrainer(helpers.tiny_cvivit(image_size=None, use_gan=False), **kwargs)


def steps_with_clip(index, steps=STEPS):
    """1-based steps whose batch holds dataset item `index`, from the trainer's sampler and its (seeded) split."""
    order = torch.randperm(NUM_CLIPS, generator=torch.Generator().manual_seed(0)).tolist()  # valid_frac=0, seed 0
    batches = iter(ResumableBatchSampler(NUM_CLIPS, BATCH, seed=0))
    return [step for step in range(1, steps + 1) if any(order[i] == index for _, i in next(batches))]


def first_batch_items():
    order = torch.randperm(NUM_CLIPS, generator=torch.Generator().manual_seed(0)).tolist()
    return [order[i] for _, i in next(iter(ResumableBatchSampler(NUM_CLIPS, BATCH, seed=0)))]


def snapshot(trainer):
    optimizer = trainer.optimizers["generator"].state_dict()["state"]
    return {
        "model": {k: v.clone() for k, v in trainer.unwrapped_model.state_dict().items()},
        "ema": {k: v.clone() for k, v in trainer.ema.state_dict().items()},
        "optimizer": {(i, k): v.clone() for i, s in optimizer.items() for k, v in s.items()},
        "metrics": (trainer.results_folder / "metrics.jsonl").read_text(),
        "nonfinite": dict(trainer.nonfinite_skipped),
        "step": trainer.step,
    }


def assert_same_run(trainer, reference):
    actual = snapshot(trainer)
    assert actual["step"] == reference["step"]
    for part in ("model", "ema", "optimizer"):
        assert actual[part].keys() == reference[part].keys(), part
        for key, value in reference[part].items():
            assert torch.equal(actual[part][key], value), f"{part} {key}"
    assert actual["nonfinite"] == reference["nonfinite"]
    assert actual["metrics"] == reference["metrics"]  # each step once, with the same numbers


def checkpoint_names(results):
    return sorted(p.name for p in (results / "checkpoints").iterdir())


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    results = tmp_path_factory.mktemp("reference")
    trainer = make_trainer(results)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        trainer.train()
    skipped_warnings = [w for w in caught if "non-finite" in str(w.message)]
    return snapshot(trainer), results, skipped_warnings


# ---------------------------------------------------------------------------------------------- NaN batches


def test_a_nan_pixel_skips_its_update_and_nothing_saved_is_nan(reference):
    state, results, skipped_warnings = reference
    poisoned_steps = steps_with_clip(POISONED)
    assert poisoned_steps, "the NaN clip must land in the run"
    logs = [json.loads(line) for line in state["metrics"].splitlines()]
    assert [entry["step"] for entry in logs] == list(range(1, STEPS + 1))
    assert [entry["step"] for entry in logs if entry.get("nonfinite_skipped")] == poisoned_steps
    assert all(entry["loss"] is None for entry in logs if entry["step"] in poisoned_steps)  # NaN, logged as null
    assert all(math.isfinite(entry["loss"]) for entry in logs if entry["step"] not in poisoned_steps)
    assert logs[-1]["nonfinite_skipped_total"] == len(poisoned_steps)
    assert state["nonfinite"] == {"generator": len(poisoned_steps)}
    assert len(skipped_warnings) == len(poisoned_steps) and "skipped" in str(skipped_warnings[0].message)

    # the run is not poisoned: weights, EMA, every kept checkpoint and the export are finite
    assert not nonfinite_tensors(state["model"]) and not nonfinite_tensors(state["ema"])
    assert checkpoint_names(results) == [f"checkpoint-{s:08d}.pt" for s in (4, 6, 8)]
    for name in checkpoint_names(results):
        checkpoint = load_checkpoint(results / "checkpoints" / name)
        assert not nonfinite_tensors({k: checkpoint[k] for k in ("model", "ema", "optimizers")}), name
    exported = CViViT.from_pretrained(results / "tokenizer")
    assert not nonfinite_tensors(exported.state_dict())


@pytest.mark.parametrize("value", [float("nan"), 3e38], ids=["nan", "overflow"])
def test_a_skipped_update_leaves_weights_and_codebook_as_they_were(tmp_path, value):
    """The first batch is bad: the VQ codebook's k-means init and EMA update from it are rolled back too."""
    trainer = make_trainer(
        tmp_path, dataset=PoisonedClips(poisoned=first_batch_items()[:1], value=value), use_ema=False
    )
    assert trainer._train_data.indices == torch.randperm(NUM_CLIPS, generator=torch.Generator().manual_seed(0)).tolist()
    before = {k: v.clone() for k, v in trainer.unwrapped_model.state_dict().items()}
    codebook = [k for k in before if "_codebook." in k]
    assert {"initted", "embed", "embed_avg", "cluster_size"} <= {k.rsplit(".", 1)[-1] for k in codebook}
    with pytest.warns(RuntimeWarning, match="update was skipped"):
        logs = trainer.train_step()
    assert logs["nonfinite_skipped"] == 1.0 and not math.isfinite(logs["loss"])
    after = trainer.unwrapped_model.state_dict()
    params = {name for name, _ in trainer.unwrapped_model.named_parameters()}
    watched = [k for k in before if k in params or k.startswith("quantizer.")]  # not the trainer's step counters
    changed = [k for k in watched if not torch.equal(before[k], after[k])]
    assert changed == [], changed  # without the buffer snapshot the codebook would now be changed (or NaN)
    assert not trainer.optimizers["generator"].state  # AdamW never stepped
    assert trainer.step == 1  # the step still counts: data and schedule stay a function of the step
    logs = trainer.train_step()
    assert "nonfinite_skipped" not in logs and math.isfinite(logs["loss"])
    assert not nonfinite_tensors(trainer.unwrapped_model.state_dict())
    assert trainer.nonfinite_in_a_row == {"generator": 0} and trainer.nonfinite_skipped == {"generator": 1}


def test_too_many_bad_updates_in_a_row_stop_with_a_clear_error(tmp_path):
    trainer = make_trainer(tmp_path, dataset=PoisonedClips(poisoned=(), all_from_epoch=1), num_train_steps=20)
    trainer.max_nonfinite_in_a_row = 3  # every clip is bad from step 7 on (epoch 1)
    with pytest.warns(RuntimeWarning, match="skipped"), pytest.raises(NonFiniteTrainingError) as info:
        trainer.train()
    message = str(info.value)
    assert "3 updates of optimizer 'generator' in a row" in message and "steps 7 to 9" in message
    assert "step 6" in message
    # steps 7 and 8 were skipped, so checkpoint 8 holds the weights of step 6, finite; nothing was exported
    assert checkpoint_names(tmp_path) == [f"checkpoint-{s:08d}.pt" for s in (4, 6, 8)]
    six, eight = (load_checkpoint(tmp_path / "checkpoints" / f"checkpoint-{s:08d}.pt") for s in (6, 8))
    params = [name for name, _ in trainer.unwrapped_model.named_parameters()]
    assert all(torch.equal(six["model"][k], eight["model"][k]) for k in params)
    assert not nonfinite_tensors(eight["model"]) and not nonfinite_tensors(eight["optimizers"])
    assert not (tmp_path / "tokenizer").exists()
    with pytest.raises(ValueError, match="max_nonfinite_in_a_row"):
        BaseTrainer(num_train_steps=1, batch_size=1, max_nonfinite_in_a_row=0)


def test_phenaki_trainer_skips_a_nan_critic_and_stops_when_it_persists(tmp_path):
    torch.manual_seed(0)
    phenaki = helpers.tiny_phenaki(critic=helpers.tiny_critic())
    poisoned_steps = {2, 4, 5}
    trainer = PhenakiTrainer(
        phenaki,
        dataset=PoisonedClips(poisoned=(), captions=True),
        critic_every=1,  # the critic runs on every step, so each poisoned step reaches it
        batch_size=BATCH,
        num_train_steps=10,
        valid_frac=0.0,
        save_results_every=10**6,
        save_model_every=10**6,
        results_folder=tmp_path,
    )
    trainer.max_nonfinite_in_a_row = 2

    def nan_critic(module, inputs, output):  # the critic's logits go NaN on the poisoned steps
        return output * float("nan") if trainer.step + 1 in poisoned_steps else output

    phenaki.critic.register_forward_hook(nan_critic)
    logs = [trainer.train_step()]
    before = {k: v.clone() for k, v in trainer.unwrapped_model.state_dict().items()}
    with pytest.warns(RuntimeWarning, match="'phenaki'"):
        logs.append(trainer.train_step())
    after = trainer.unwrapped_model.state_dict()
    assert logs[1]["nonfinite_skipped"] == 1.0 and not math.isfinite(logs[1]["critic_loss"])
    assert all(torch.equal(before[k], after[k]) for k in before)  # MaskGit and critic untouched
    logs.append(trainer.train_step())  # step 3 is fine again and resets the count
    assert "nonfinite_skipped" not in logs[2] and trainer.nonfinite_in_a_row == {"phenaki": 0}
    with pytest.warns(RuntimeWarning), pytest.raises(NonFiniteTrainingError, match="2 updates of optimizer 'phenaki'"):
        for _ in range(2):
            trainer.train_step()
    assert not nonfinite_tensors(trainer.unwrapped_model.state_dict())
    trainer.save()  # what is left is finite and savable
    phenaki.save_pretrained(tmp_path / "export")
    assert Phenaki.from_pretrained(tmp_path / "export", text_encoder=helpers.hashed_text_encoder())


def test_a_non_finite_model_is_never_checkpointed_or_exported(tmp_path):
    trainer = make_trainer(tmp_path, dataset=PoisonedClips(poisoned=()), num_train_steps=2)
    trainer.train_step()
    trainer.train_step()
    good = trainer.save()
    with torch.no_grad():
        next(trainer.unwrapped_model.parameters()).fill_(float("nan"))  # e.g. a bad in-place edit
    with pytest.raises(ValueError, match="NaN or inf"):
        trainer.save()
    with pytest.raises(ValueError, match="NaN or inf"):
        trainer.unwrapped_model.save_pretrained(tmp_path / "tokenizer")
    assert checkpoint_names(tmp_path) == [good.name] and not (tmp_path / "tokenizer" / "config.json").exists()


# ---------------------------------------------------------------------------------------------- kills


class Killed(BaseException):
    """The process dying, in-process: no `except Exception` on the way can swallow it."""


KILL_STEP = 6  # the checkpoint write that dies; the one before it is step 4


def _kill_mid_torch_save(monkeypatch, fraction):
    real_save = torch.save

    def dying_save(obj, file, *args, **kwargs):
        if f"{KILL_STEP:08d}" not in str(getattr(file, "name", "")):
            return real_save(obj, file, *args, **kwargs)
        import io

        buffer = io.BytesIO()
        real_save(obj, buffer, *args, **kwargs)
        data = buffer.getvalue()
        file.write(data[: int(len(data) * fraction)])
        raise Killed

    monkeypatch.setattr(torch, "save", dying_save)


def _kill_in_trailer(monkeypatch):
    real = checkpoint_module.add_checksum_trailer

    def dying(path):
        if f"{KILL_STEP:08d}" in Path(path).name:
            raise Killed
        return real(path)

    monkeypatch.setattr(checkpoint_module, "add_checksum_trailer", dying)


def _kill_at_rename(monkeypatch):
    real = os.replace

    def dying(src, dst):
        if Path(dst).name == f"checkpoint-{KILL_STEP:08d}.pt":
            raise Killed
        return real(src, dst)

    monkeypatch.setattr(checkpoint_module.os, "replace", dying)


def _kill_after_rename(monkeypatch):
    """The new checkpoint is in place; the process dies before the directory fsync and the pruning."""
    real = checkpoint_module.fsync_directory

    def dying(folder):
        if (Path(folder) / f"checkpoint-{KILL_STEP:08d}.pt").exists():
            raise Killed
        return real(folder)

    monkeypatch.setattr(checkpoint_module, "fsync_directory", dying)


KILL_POINTS = {  # where the write of checkpoint 6 dies, and the step the resume must start from
    "torch_save_at_3pc": (lambda mp: _kill_mid_torch_save(mp, 0.03), 4),
    "torch_save_at_61pc": (lambda mp: _kill_mid_torch_save(mp, 0.61), 4),
    "torch_save_at_99pc": (lambda mp: _kill_mid_torch_save(mp, 0.99), 4),
    "checksum_trailer": (_kill_in_trailer, 4),
    "rename": (_kill_at_rename, 4),
    "after_rename_before_prune": (_kill_after_rename, KILL_STEP),
}


@pytest.mark.parametrize("point", sorted(KILL_POINTS))
def test_a_kill_during_a_checkpoint_write_resumes_bit_exactly(reference, tmp_path, monkeypatch, point):
    inject, resumes_at = KILL_POINTS[point]
    trainer = make_trainer(tmp_path)
    inject(monkeypatch)
    with pytest.raises(Killed):
        trainer.train()
    monkeypatch.undo()
    assert trainer.step == KILL_STEP

    torch.manual_seed(1234)  # a new process: other global RNG state, other initial weights
    resumed = make_trainer(tmp_path, model_seed=99, resume=True)
    assert resumed.step == resumes_at
    resumed.train()
    assert_same_run(resumed, reference[0])
    assert not [p for p in (tmp_path / "checkpoints").iterdir() if p.name.startswith(".tmp-")]


KILL_WORKER = """
import io, os, sys, time
sys.path.insert(0, {tests!r})
import torch
torch.set_num_threads(1)
import test_faults

real_save = torch.save

def slow_dying_save(obj, file, *args, **kwargs):
    if "{step:08d}" not in str(getattr(file, "name", "")):
        return real_save(obj, file, *args, **kwargs)
    buffer = io.BytesIO()
    real_save(obj, buffer, *args, **kwargs)
    data = buffer.getvalue()
    file.write(data[: len(data) // 2])
    file.flush()
    os.fsync(file.fileno())
    open({marker!r}, "w").close()  # half the file is on disk: kill me now
    time.sleep(120)

torch.save = slow_dying_save
test_faults.make_trainer({results!r}).train()
"""


def test_a_real_kill_9_mid_write_resumes_bit_exactly(reference, tmp_path):
    marker = tmp_path / "writing"
    script = KILL_WORKER.format(tests=str(TESTS), step=KILL_STEP, marker=str(marker), results=str(tmp_path / "run"))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    process = subprocess.Popen([sys.executable, "-c", script], env=env, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 120
        while not marker.exists():
            if process.poll() is not None:
                pytest.fail(f"the worker exited early: {process.stderr.read().decode()[-2000:]}")
            if time.monotonic() > deadline:
                pytest.fail("the worker never reached the checkpoint write")
            time.sleep(0.05)
        os.kill(process.pid, signal.SIGKILL)
        assert process.wait(timeout=30) == -signal.SIGKILL
    finally:
        if process.poll() is None:
            process.kill()
        process.stderr.close()

    results = tmp_path / "run"
    names = checkpoint_names(results)  # ".tmp-..." sorts first
    assert names[1:] == ["checkpoint-00000002.pt", "checkpoint-00000004.pt"]
    assert len(names) == 3 and names[0].startswith(".tmp-checkpoint-00000006.pt.")  # the half-written file
    torch.manual_seed(1234)
    resumed = make_trainer(results, model_seed=99, resume=True)
    assert resumed.step == 4
    resumed.train()
    assert_same_run(resumed, reference[0])
    assert checkpoint_names(results) == [f"checkpoint-{s:08d}.pt" for s in (4, 6, 8)]  # the leftover is gone


# ---------------------------------------------------------------------------------------------- corrupt files


def _truncate(path, rng):
    path.write_bytes(path.read_bytes()[: rng.randrange(1, path.stat().st_size)])


def _flip(path, rng):
    data = bytearray(path.read_bytes())
    data[rng.randrange(len(data))] ^= 1 << rng.randrange(8)
    path.write_bytes(bytes(data))


@pytest.mark.parametrize(
    "damage, resumes_at",
    [({8: _truncate}, 6), ({8: _flip}, 6), ({8: _truncate, 6: _flip}, 4)],
    ids=["truncated", "bit_flipped", "both_newest"],
)
def test_a_corrupt_latest_checkpoint_falls_back_and_resumes_bit_exactly(reference, tmp_path, damage, resumes_at):
    import random

    state, results, _ = reference
    run = tmp_path / "run"
    shutil.copytree(results, run)
    rng = random.Random(len(damage))
    for step, spoil in damage.items():
        spoil(run / "checkpoints" / f"checkpoint-{step:08d}.pt", rng)
    torch.manual_seed(1234)
    with pytest.warns(RuntimeWarning, match="checkpoint-00000008.pt") as caught:
        resumed = make_trainer(run, model_seed=99, resume=True)
    assert sum("skipped the unreadable checkpoint" in str(w.message) for w in caught) == len(damage)
    assert resumed.step == resumes_at
    assert [json.loads(line)["step"] for line in (run / "metrics.jsonl").read_text().splitlines()] == list(
        range(1, resumes_at + 1)
    )  # metrics.jsonl cut back to the resumed step
    resumed.train()
    assert_same_run(resumed, state)
    # the corrupt files were replaced by good ones of the same steps; a corrupt one newer than the first save
    # after the resume was moved aside (never counted as one of the keep_last=3) before being replaced
    aside = ["checkpoint-00000008.pt.corrupt"] if resumes_at < 6 else []
    assert checkpoint_names(run) == [f"checkpoint-{s:08d}.pt" for s in (4, 6, 8)] + aside
    for step in (4, 6, 8):
        assert load_checkpoint(run / "checkpoints" / f"checkpoint-{step:08d}.pt")["step"] == step


# ---------------------------------------------------------------------------------------------- two processes


DDP_WORKER = """
import sys
import torch
sys.path.insert(0, {tests!r})
import test_faults

trainer = test_faults.make_trainer({results!r}, num_train_steps=5, save_model_every=5, cpu=True)
rank = trainer.accelerator.process_index
next_batches = trainer.next_batches
bad = {{2: float("nan"), 4: 3e38}}  # a NaN pixel (caught before the forward), an overflow (a non-finite loss)

def poisoned_next_batches():
    batches = next_batches()
    if rank == 1 and trainer.step + 1 in bad:
        batches[0]["video"][0, 0, 0, 0, 0] = bad[trainer.step + 1]
    return batches

trainer.next_batches = poisoned_next_batches
trainer.train()
torch.save(
    {{"model": trainer.unwrapped_model.state_dict(), "skipped": trainer.nonfinite_skipped, "step": trainer.step}},
    {out!r} + f"/rank{{rank}}.pt",
)
trainer.accelerator.wait_for_everyone()
torch.distributed.destroy_process_group()
"""


def test_two_processes_skip_together_when_one_sees_a_bad_batch(tmp_path):
    """Only process 1 gets the bad batches; both must skip (else DDP would hang or the replicas diverge)."""
    script = tmp_path / "worker.py"
    script.write_text(DDP_WORKER.format(tests=str(TESTS), results=str(tmp_path / "results"), out=str(tmp_path)))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(TESTS.parent)}
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", str(script)]
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=240, cwd=tmp_path)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in (0, 1)]
    assert ranks[0]["step"] == ranks[1]["step"] == 5
    assert ranks[0]["skipped"] == ranks[1]["skipped"] == {"generator": 2}
    a, b = ranks[0]["model"], ranks[1]["model"]
    assert [k for k in a if not torch.equal(a[k], b[k])] == [] and not nonfinite_tensors(a)
    logs = [json.loads(line) for line in (tmp_path / "results" / "metrics.jsonl").read_text().splitlines()]
    assert [entry["step"] for entry in logs if entry.get("nonfinite_skipped")] == [2, 4]
    assert logs[1].get("nonfinite_input") == 1.0 and "nonfinite_input" not in logs[3]  # the overflow hit the loss
