import os
import pickle
import random

import helpers
import numpy as np
import pytest
import torch
from ema_pytorch import EMA
from torch import nn

from phenaki_pytorch.training import CheckpointManager, load_checkpoint, restore_checkpoint, save_checkpoint
from phenaki_pytorch.training import checkpoint as checkpoint_module


def tiny_cvivit(**overrides):
    return helpers.tiny_cvivit(**{"image_size": None, **overrides})


def make_state(seed: int):
    """A tiny CViViT after two AdamW steps, with an EMA and a scheduler that has moved."""
    torch.manual_seed(seed)
    model = tiny_cvivit(use_gan=False)
    ema = EMA(model, beta=0.9, update_every=1, update_after_step=0, include_online_model=False)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 0.5**step)
    video = torch.rand(2, 3, 3, 16, 16)
    for _ in range(2):
        model(video).backward()
        optimizer.step()
        optimizer.zero_grad()
        scheduler.step()
        ema.update()
    return model, ema, optimizer, scheduler


def state_dicts_equal(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def save(path, model, ema, optimizer, scheduler, step=7):
    return save_checkpoint(
        path,
        model=model,
        ema=ema,
        optimizers={"adam": optimizer},
        schedulers={"warmup": scheduler},
        step=step,
        config=model.config,
        extra={"note": "hello"},
    )


def test_round_trip_restores_everything(tmp_path):
    model, ema, optimizer, scheduler = make_state(0)
    random.seed(1)
    np.random.seed(1)
    torch.manual_seed(1)
    path = save(tmp_path / "ckpt.pt", model, ema, optimizer, scheduler)
    expected_draws = (random.random(), np.random.rand(), torch.rand(3))

    # a different model, optimizer and RNG state, then restore
    other_model, other_ema, other_optimizer, other_scheduler = make_state(1)
    assert not state_dicts_equal(other_model.state_dict(), model.state_dict())
    checkpoint = load_checkpoint(path)
    step = restore_checkpoint(
        checkpoint,
        model=other_model,
        ema=other_ema,
        optimizers={"adam": other_optimizer},
        schedulers={"warmup": other_scheduler},
        restore_rng=True,
    )
    assert step == 7
    assert checkpoint["extra"] == {"note": "hello"}
    assert checkpoint["config"] == model.config
    assert state_dicts_equal(other_model.state_dict(), model.state_dict())
    assert state_dicts_equal(other_ema.state_dict(), ema.state_dict())
    assert not state_dicts_equal(ema.ema_model.state_dict(), model.state_dict())  # the EMA is its own copy
    assert other_scheduler.state_dict() == scheduler.state_dict()
    assert other_scheduler.get_last_lr() == scheduler.get_last_lr()
    saved, restored = optimizer.state_dict(), other_optimizer.state_dict()
    assert saved["param_groups"] == restored["param_groups"]
    for index, state in saved["state"].items():
        assert all(torch.equal(state[k], restored["state"][index][k]) for k in state)

    draws = (random.random(), np.random.rand(), torch.rand(3))
    assert draws[0] == expected_draws[0] and draws[1] == expected_draws[1]
    assert torch.equal(draws[2], expected_draws[2])

    # the weights are also readable by the model's own loader and with a plain weights_only torch.load
    assert state_dicts_equal(tiny_cvivit(use_gan=False).load(path).state_dict(), model.state_dict())
    assert torch.load(path, weights_only=True)["step"] == 7


def test_wrappers_are_unwrapped_before_saving(tmp_path):
    model = tiny_cvivit(use_gan=False)

    class Wrapper(nn.Module):  # stands in for DDP (`.module`)
        def __init__(self, module):
            super().__init__()
            self.module = module

    compiled_like = Wrapper(model)
    compiled_like._orig_mod = model  # and for torch.compile (`._orig_mod`)
    path = save_checkpoint(tmp_path / "wrapped.pt", model=Wrapper(model), step=0)
    keys = list(load_checkpoint(path)["model"])
    assert keys == list(model.state_dict())
    assert not any(k.startswith(("module.", "_orig_mod.")) for k in keys)
    assert load_checkpoint(path)["config"] == model.config


def test_crash_mid_save_keeps_previous_checkpoint(tmp_path, monkeypatch):
    model, ema, optimizer, scheduler = make_state(0)
    manager = CheckpointManager(tmp_path, keep_last=3)
    good = manager.save(1, model=model, ema=ema, optimizers={"adam": optimizer}, schedulers={}, config=None)
    before = good.read_bytes()

    # crash 1: the rename never happens (process dies between write and replace)
    def failing_replace(*args, **kwargs):
        raise OSError("simulated crash before rename")

    monkeypatch.setattr(checkpoint_module.os, "replace", failing_replace)
    with pytest.raises(OSError, match="simulated"):
        save(good, model, ema, optimizer, scheduler, step=2)  # overwriting the same path
    monkeypatch.undo()
    assert good.read_bytes() == before
    assert load_checkpoint(good)["step"] == 1

    # crash 2: the write itself dies half way through
    real_save = torch.save

    def half_written(obj, file, *args, **kwargs):
        file.write(b"PK\x03\x04 partial")
        raise KeyboardInterrupt("simulated crash mid-write")

    monkeypatch.setattr(checkpoint_module.torch, "save", half_written)
    with pytest.raises(KeyboardInterrupt):
        manager.save(2, model=model, optimizers={}, schedulers={}, config=None)
    monkeypatch.setattr(checkpoint_module.torch, "save", real_save)
    assert manager.latest() == good
    assert manager.load()["step"] == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == [good.name]  # no temporary files left behind


def test_keep_last_prunes_oldest(tmp_path):
    model = tiny_cvivit(use_gan=False)
    manager = CheckpointManager(tmp_path / "ckpts", keep_last=2)
    assert manager.latest() is None
    with pytest.raises(FileNotFoundError, match="no checkpoints"):
        manager.load()
    for step in (5, 10, 100, 1000):
        manager.save(step, model=model)
    assert [step for step, _ in manager.checkpoints()] == [100, 1000]
    assert manager.latest() == manager.path_for(1000)
    assert manager.load()["step"] == 1000
    assert manager.load(manager.path_for(100))["step"] == 100
    with pytest.raises(ValueError, match="keep_last"):
        CheckpointManager(tmp_path, keep_last=0)


def test_truncated_file_is_a_clear_error(tmp_path):
    model, ema, optimizer, scheduler = make_state(0)
    path = save(tmp_path / "full.pt", model, ema, optimizer, scheduler)
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(ValueError, match="truncated.pt") as info:
        load_checkpoint(truncated)
    assert "truncated" in str(info.value)
    assert info.value.__cause__ is None and info.value.__suppress_context__


class _Exploit:
    """Unpickling this runs code that creates a marker file."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return exec, (f"open({self.marker!r}, 'w').close()",)


@pytest.mark.parametrize("kind", ["random_bytes", "plain_pickle", "torch_save", "state_dict"])
def test_foreign_files_are_rejected_without_running_code(tmp_path, kind):
    marker = tmp_path / "pwned"
    path = tmp_path / f"{kind}.pt"
    if kind == "random_bytes":
        path.write_bytes(os.urandom(4096))
    elif kind == "plain_pickle":
        path.write_bytes(pickle.dumps({"model": _Exploit(marker)}, protocol=2))
    elif kind == "torch_save":
        torch.save({"format": "phenaki_pytorch.checkpoint", "payload": _Exploit(marker)}, path)
    else:
        torch.save(tiny_cvivit(use_gan=False).state_dict(), path)  # a real weights file, but no checkpoint

    with pytest.raises(ValueError, match=f"{kind}.pt"):
        load_checkpoint(path)
    with pytest.raises(ValueError, match=f"{kind}.pt"):
        CheckpointManager(tmp_path).load(path)
    assert not marker.exists()

    if kind in ("plain_pickle", "torch_save"):
        # the payload is live: an unrestricted unpickler would have created the marker
        pickle.loads(path.read_bytes()) if kind == "plain_pickle" else torch.load(path, weights_only=False)
        assert marker.exists()


def test_missing_file_and_wrong_names(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.pt"):
        load_checkpoint(tmp_path / "nope.pt")
    model, ema, optimizer, scheduler = make_state(0)
    checkpoint = load_checkpoint(save(tmp_path / "c.pt", model, ema, optimizer, scheduler))
    with pytest.raises(ValueError, match="'sgd'"):
        restore_checkpoint(checkpoint, optimizers={"sgd": optimizer})
    with pytest.raises(ValueError, match="step"):
        save_checkpoint(tmp_path / "bad.pt", model=model, step=-1)


# ---------------------------------------------------------------------------------------------- integrity


def flip_byte(path, offset: int, mask: int = 0x01):
    data = bytearray(path.read_bytes())
    data[offset] ^= mask
    path.write_bytes(bytes(data))


def test_a_flipped_byte_anywhere_in_a_checkpoint_is_detected(tmp_path):
    """Before the checksum, 19 of 20 random flips loaded silently (torch's zip reader checks no CRC)."""
    model, ema, optimizer, scheduler = make_state(0)
    path = save(tmp_path / "c.pt", model, ema, optimizer, scheduler)
    original = path.read_bytes()
    rng = random.Random(0)
    offsets = [0, 100, len(original) - 80, len(original) - 66, len(original) - 1]
    offsets += [rng.randrange(len(original)) for _ in range(40)]
    for offset in offsets:
        path.write_bytes(original)
        flip_byte(path, offset, 1 << rng.randrange(8))
        with pytest.raises(ValueError, match="c.pt") as info:
            load_checkpoint(path)
        assert any(word in str(info.value) for word in ("corrupt", "damaged")), str(info.value)
        with pytest.raises(ValueError, match="c.pt"):  # the model's own loader checks it too
            tiny_cvivit(use_gan=False).load(path)
    path.write_bytes(original)
    assert load_checkpoint(path)["step"] == 7


def test_version_1_checkpoints_without_a_checksum_still_load(tmp_path):
    model, ema, optimizer, scheduler = make_state(0)
    path = tmp_path / "old.pt"
    payload = dict(load_checkpoint(save(tmp_path / "new.pt", model, ema, optimizer, scheduler)), version=1)
    torch.save(payload, path)  # what save_checkpoint wrote before: no trailer
    assert load_checkpoint(path)["step"] == 7
    # a version 2 file whose trailer was cut off is damaged, not old
    payload["version"] = 2
    torch.save(payload, path)
    with pytest.raises(ValueError, match="damaged"):
        load_checkpoint(path)


def test_non_finite_state_is_never_checkpointed(tmp_path):
    model, ema, optimizer, scheduler = make_state(0)
    manager = CheckpointManager(tmp_path, keep_last=1)
    good = manager.save(1, model=model, optimizers={"adam": optimizer})
    with torch.no_grad():
        next(model.parameters())[0] = float("inf")
    with pytest.raises(ValueError, match="NaN or inf"):
        manager.save(2, model=model, optimizers={"adam": optimizer})
    assert [p.name for p in tmp_path.iterdir()] == [good.name]  # the good one is kept, not pruned
    with torch.no_grad():
        next(model.parameters())[0] = 0.0
        next(iter(optimizer.state.values()))["exp_avg"].fill_(float("nan"))
    with pytest.raises(ValueError, match="optimizers"):
        manager.save(3, model=model, optimizers={"adam": optimizer})
    path = save_checkpoint(
        tmp_path / "forced.pt", model=model, optimizers={"adam": optimizer}, step=3, allow_nonfinite=True
    )
    assert load_checkpoint(path)["step"] == 3


def test_falls_back_to_the_newest_readable_checkpoint_and_never_prunes_it(tmp_path):
    model = tiny_cvivit(use_gan=False)
    manager = CheckpointManager(tmp_path, keep_last=1)
    manager.save(10, model=model)
    manager.keep_last = None
    manager.save(20, model=model)
    manager.save(30, model=model)
    manager.keep_last = 1
    flip_byte(manager.path_for(30), 5000)
    manager.path_for(20).write_bytes(manager.path_for(20).read_bytes()[:1000])  # truncated
    checkpoint, path, skipped = manager.load_latest_readable()
    assert path == manager.path_for(10) and checkpoint["step"] == 10
    assert [p for p, _ in skipped] == [manager.path_for(30), manager.path_for(20)]
    assert "corrupt" in skipped[0][1]

    # training goes on from 10; the next save must not delete 10 in favour of the corrupt newer files
    with pytest.warns(UserWarning, match="aside"):
        manager.save(15, model=model)
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == ["checkpoint-00000015.pt", "checkpoint-00000020.pt.corrupt", "checkpoint-00000030.pt.corrupt"]
    assert manager.load_latest_readable()[1] == manager.path_for(15)

    # nothing readable at all: an error naming every file, never a silent fresh start
    flip_byte(manager.path_for(15), 200)
    with pytest.raises(ValueError, match="none of the 1 checkpoints.*checkpoint-00000015.pt"):
        manager.load_latest_readable()
