"""Experiment tracking: both trainers log losses, learning rate, validation metrics and sample videos to
TensorBoard (accelerate's tracker), read back here from the event files."""

import json
from pathlib import Path

import pytest
import torch
from helpers import tiny_critic, tiny_cvivit, tiny_phenaki

from phenaki_pytorch.data import SyntheticCaptionedVideos
from phenaki_pytorch.training import CViViTTrainer, PhenakiTrainer

pytest.importorskip("tensorboard")
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator  # noqa: E402


def synthetic(num_samples: int):
    return SyntheticCaptionedVideos(num_samples, num_frames=5, image_size=16, seed=0)


def read_events(folder: Path) -> EventAccumulator:
    files = list(folder.rglob("events.out.tfevents.*"))
    assert files, f"no TensorBoard event files under {folder}"
    accumulator = EventAccumulator(str(files[0].parent), size_guidance={"scalars": 0, "images": 0})
    accumulator.Reload()
    return accumulator


def steps(accumulator: EventAccumulator, tag: str) -> list[int]:
    return [event.step for event in accumulator.Scalars(tag)]


def test_cvivit_trainer_logs_scalars_codebook_use_and_reconstructions(tmp_path):
    torch.manual_seed(0)
    trainer = CViViTTrainer(
        tiny_cvivit(image_size=None, discr_start_step=0),
        dataset=synthetic(10),
        num_frames=5,
        batch_size=2,
        num_train_steps=4,
        lr_warmup_steps=4,
        save_results_every=2,
        save_model_every=100,
        log_with="tensorboard",
        results_folder=tmp_path,
    )
    trainer.train()
    events = read_events(tmp_path / "cvivit")
    scalars = set(events.Tags()["scalars"])
    assert {"loss", "recon_loss", "lr", "codebook_usage", "codebook_perplexity", "discr_loss"} <= scalars
    assert steps(events, "loss") == steps(events, "lr") == [1, 2, 3, 4]
    # the warm-up schedule as logged: lr * (step + 1) / 4 before each update
    assert [round(e.value / trainer.lr, 4) for e in events.Scalars("lr")] == [0.25, 0.5, 0.75, 1.0]
    assert steps(events, "valid_recon_loss") == steps(events, "valid_psnr") == [2, 4]
    logged = {e.step: e.value for e in events.Scalars("valid_recon_loss")}
    lines = [line for line in (tmp_path / "metrics.jsonl").read_text().splitlines() if "valid_recon_loss" in line]
    assert len(lines) == 2 and abs(logged[4] - json.loads(lines[-1])["valid_recon_loss"]) < 1e-6
    images = events.Images("reconstructions")
    assert [image.step for image in images] == [2, 4]
    # one row per held-out clip (1 here), five frames of 16 + 16 pixels (original beside reconstruction)
    assert (images[-1].height, images[-1].width) == (16, 5 * 32)


def test_phenaki_trainer_logs_losses_lr_validation_and_samples(tmp_path):
    torch.manual_seed(0)
    trainer = PhenakiTrainer(
        tiny_phenaki(critic=tiny_critic()),
        dataset=synthetic(10),
        batch_size=2,
        train_num_steps=2,
        sample_texts=["a red square moving left", "a blue circle moving up"],
        sample_steps=2,
        save_results_every=2,
        save_model_every=100,
        log_with="tensorboard",
        results_folder=tmp_path,
    )
    trainer.train()
    events = read_events(tmp_path / "phenaki")
    scalars = set(events.Tags()["scalars"])
    assert {"loss", "maskgit_loss", "critic_loss", "lr", "critic_lr", "valid_loss"} <= scalars
    assert steps(events, "loss") == [1, 2] and steps(events, "valid_loss") == [2]
    samples = events.Images("samples")
    assert [image.step for image in samples] == [2]
    assert (samples[0].height, samples[0].width) == (2 * 16, 5 * 16)  # two sample texts, five frames


def test_no_tracker_by_default(tmp_path):
    torch.manual_seed(0)
    trainer = CViViTTrainer(
        tiny_cvivit(image_size=None),
        dataset=synthetic(4),
        num_frames=5,
        batch_size=2,
        num_train_steps=1,
        save_results_every=1,
        results_folder=tmp_path,
    )
    trainer.train()
    assert trainer.accelerator.trackers == [] and not list(tmp_path.rglob("events.out.tfevents.*"))
