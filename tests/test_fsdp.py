"""FSDP: sharded checkpoints (format, integrity, fallback) and two FSDP processes on the CPU (gloo).

The two-process runs (tests/fsdp_worker.py) are marked slow: each starts two interpreters that import torch,
accelerate and transformers, which takes minutes on a loaded 2-core machine.
"""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from phenaki_pytorch.training import CheckpointManager, save_checkpoint
from phenaki_pytorch.training.checkpoint import (
    load_sharded_checkpoint,
    verify_sharded_checkpoint,
    write_sharded_manifest,
)

REPO = Path(__file__).resolve().parents[1]


def fake_sharded(folder: Path, step: int) -> Path:
    """A sharded checkpoint folder as the trainer lays it out, with two stand-in shard files."""
    path = folder / f"checkpoint-{step:08d}"
    (path / "shards").mkdir(parents=True)
    for rank in (0, 1):
        (path / "shards" / f"__{rank}_0.distcp").write_bytes(bytes([rank, step]) * 64)
    (path / "shards" / ".metadata").write_bytes(b"metadata" * 8)
    save_checkpoint(path / "trainer.pt", model={}, step=step, extra={"sharded": True})
    write_sharded_manifest(path, step, num_processes=2)
    return path


def test_sharded_checkpoint_folders_verify_load_and_fall_back(tmp_path):
    manager = CheckpointManager(tmp_path, keep_last=2)
    manager.save(1, model={"w": torch.ones(2)})  # an unsharded file and sharded folders share one numbering
    second, third = fake_sharded(tmp_path, 2), fake_sharded(tmp_path, 3)
    assert [step for step, _ in manager.checkpoints()] == [1, 2, 3]
    manifest = verify_sharded_checkpoint(third)
    assert manifest["num_processes"] == 2 and set(manifest["files"]) == {
        "trainer.pt",
        "shards/__0_0.distcp",
        "shards/__1_0.distcp",
        "shards/.metadata",
    }
    loaded = load_sharded_checkpoint(third)
    assert loaded["step"] == 3 and loaded["sharded"] == str(third / "shards")

    # one flipped byte in one process's shard: named, and resume falls back to the newest readable checkpoint
    shard = third / "shards" / "__1_0.distcp"
    data = bytearray(shard.read_bytes())
    data[10] ^= 0xFF
    shard.write_bytes(bytes(data))
    with pytest.raises(ValueError, match=r"__1_0\.distcp differs from its SHA-256"):
        verify_sharded_checkpoint(third)
    checkpoint, path, skipped = manager.load_latest_readable()
    assert path == second and checkpoint["step"] == 2 and [p for p, _ in skipped] == [third]
    # a missing shard is as bad
    (second / "shards" / "__0_0.distcp").unlink()
    assert "missing" in manager.verify(second)

    # pruning never counts the corrupt folders and moves them aside; the readable .pt stays
    with pytest.warns(UserWarning, match="moved the unreadable checkpoint"):
        manager.prune()
    assert [p.name for _, p in manager.checkpoints()] == ["checkpoint-00000001.pt"]
    assert (tmp_path / "checkpoint-00000003.corrupt").is_dir()


def test_fsdp_argument_is_checked(tmp_path):
    from helpers import tiny_cvivit

    from phenaki_pytorch.data import SyntheticCaptionedVideos
    from phenaki_pytorch.training import CViViTTrainer

    with pytest.raises(TypeError, match="fsdp must be"):
        CViViTTrainer(
            tiny_cvivit(image_size=None),
            dataset=SyntheticCaptionedVideos(4, num_frames=5, image_size=16, seed=0),
            num_frames=5,
            fsdp="yes",
            results_folder=tmp_path,
        )
    # one process: the plugin is accepted and the run stays unsharded (single-file checkpoints)
    trainer = CViViTTrainer(
        tiny_cvivit(image_size=None),
        dataset=SyntheticCaptionedVideos(4, num_frames=5, image_size=16, seed=0),
        num_frames=5,
        batch_size=2,
        num_train_steps=1,
        fsdp=True,
        results_folder=tmp_path,
    )
    assert not trainer.is_sharded
    trainer.train()
    assert trainer.checkpoints.latest().name == "checkpoint-00000001.pt"


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["cvivit", "phenaki", "hourglass"])
def test_two_fsdp_processes_resume_exactly(tmp_path, kind):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO), "HF_HUB_OFFLINE": "1"}
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node",
        "2",
        str(REPO / "tests" / "fsdp_worker.py"),
        str(tmp_path),
        kind,
    ]
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in (0, 1)]
    for rank in ranks:
        assert rank["straight"]["params_sharded"] and rank["resumed_from"] == 2
        assert rank["resumed_logs"] == rank["straight_logs"][2:]
        for part in ("model", "ema", "optimizer_shards"):
            a, b = rank["straight"][part], rank["resumed"][part]
            assert a.keys() == b.keys()
            assert [k for k in a if not torch.equal(a[k], b[k])] == [], part
    # the whole weights are gathered on the main process; the EMA is whole and the same on every process, and
    # it averages (after 4 steps with beta 0.9 it is no longer a copy of the weights)
    model, ema = ranks[0]["straight"]["model"], ranks[0]["straight"]["ema"]
    assert model and ranks[1]["straight"]["model"] == {}
    other = ranks[1]["straight"]["ema"]
    assert ema.keys() == other.keys() and all(torch.equal(ema[k], other[k]) for k in ema)
    assert any(not torch.equal(ema[k], model[k]) for k in model if k in ema and model[k].is_floating_point())
    # the export at the end of train() holds the EMA weights (a whole model, not one process's shards)
    exported = load_file(tmp_path / "resumed" / ("tokenizer" if kind == "cvivit" else "phenaki") / "model.safetensors")
    first_ema = ranks[0]["first_ema"]
    shared = [k for k in exported if k in first_ema]
    assert len(shared) >= len(first_ema) - 2  # all but possibly EMA bookkeeping
    assert [k for k in shared if not torch.equal(exported[k], first_ema[k])] == []
    # without the EMA, the main process's whole copy (evaluated every step, exported) follows the sharded weights
    no_ema = ranks[0]["no_ema"]
    assert no_ema["model"] and no_ema["model"].keys() == no_ema["copy"].keys()
    assert [k for k, v in no_ema["model"].items() if not torch.equal(v, no_ema["copy"][k])] == []
    metrics = (tmp_path / "no_ema" / "metrics.jsonl").read_text().splitlines()
    assert len(metrics) == 2 and all("train_eval" in line for line in metrics)
    # the sharded checkpoint: one folder, a shard file per process
    folder = tmp_path / "resumed" / "checkpoints"
    sharded = sorted(p.name for p in folder.iterdir() if p.is_dir())
    assert sharded[-1] == "checkpoint-00000004"
    shards = sorted(p.name for p in (folder / sharded[-1] / "shards").iterdir())
    assert "__0_0.distcp" in shards and "__1_0.distcp" in shards
