import json
import math
import os
import subprocess
import sys
from pathlib import Path

import helpers
import pytest
import torch

from phenaki_pytorch import CViViT
from phenaki_pytorch.data import SyntheticCaptionedVideos, save_video
from phenaki_pytorch.training import CViViTTrainer, ResumableBatchSampler, load_checkpoint

REPO = Path(__file__).resolve().parents[1]


def tiny_cvivit(seed: int = 0, **overrides):
    torch.manual_seed(seed)
    return helpers.tiny_cvivit(**{"image_size": None, "discr_start_step": 0, **overrides})


def synthetic(num_samples: int = 24, image_size: int = 16):
    return SyntheticCaptionedVideos(num_samples, num_frames=5, image_size=image_size, seed=0)


def clone_state(module) -> dict:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


# ---------------------------------------------------------------------------------------------- a real run


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """60 steps on synthetic clips through `train()`, with snapshots taken before training."""
    results = tmp_path_factory.mktemp("cvivit_run")
    cvivit = tiny_cvivit()
    trainer = CViViTTrainer(
        cvivit,
        dataset=synthetic(),
        num_frames=5,
        batch_size=4,
        num_train_steps=60,
        lr=1e-3,
        ema_beta=0.9,
        save_results_every=30,
        save_model_every=25,
        keep_last=2,
        results_folder=results,
        seed=0,
    )
    before = {"model": clone_state(cvivit), "discr": clone_state(cvivit.discr)}
    trainer.train()
    logs = [json.loads(line) for line in (results / "metrics.jsonl").read_text().splitlines()]
    return trainer, before, logs, results


def test_training_reduces_the_reconstruction_loss(trained):
    _, _, logs, _ = trained
    recon = [entry["recon_loss"] for entry in logs]
    assert len(recon) == 60 and [entry["step"] for entry in logs] == list(range(1, 61))
    first, last = sum(recon[:5]) / 5, sum(recon[-5:]) / 5
    assert last < 0.6 * first, (first, last)
    assert all(key in logs[-1] for key in ("loss", "quantizer_loss", "discr_loss", "grad_norm", "lr"))
    valid = [entry["valid_recon_loss"] for entry in logs if "valid_recon_loss" in entry]
    psnr = [entry["valid_psnr"] for entry in logs if "valid_psnr" in entry]
    assert len(valid) == 2 and valid[1] < valid[0] and len(psnr) == 2
    # PSNR against the untrained model on the same held-out batch (the PSNR of steps 30 and 60 of a 60-step run
    # with the adversarial loss from step 0 are within each other's noise: either can be the better one)
    trainer, before = trained[0], trained[1]
    initial = tiny_cvivit()
    initial.load_state_dict(before["model"])
    batch = trainer.validation_batch()
    from phenaki_pytorch.evaluation import evaluate_tokenizer

    start = evaluate_tokenizer(initial.eval(), [{"video": batch["video"]}], progress=False)
    assert sum(psnr) / 2 > start.psnr + 0.5, (start.psnr, psnr)
    assert all(0 < entry["valid_codebook_usage"] <= 1 for entry in logs if "valid_recon_loss" in entry)
    assert all("codebook_usage" in entry and "codebook_perplexity" in entry for entry in logs)


def test_ema_and_discriminator_weights_move(trained):
    trainer, before, _, _ = trained
    online = trainer.unwrapped_model.state_dict()
    ema = trainer.ema.ema_model.state_dict()
    assert trainer.ema.ema_model is not trainer.unwrapped_model
    moved_from_init = [k for k in before["model"] if not torch.equal(ema[k], before["model"][k])]
    copied = set(trainer.unwrapped_model.non_averaged_state_names()) & set(online)  # encoder, codebook: as trained
    averaged = [k for k in online if online[k].is_floating_point() and k not in copied]
    differ_from_online = [k for k in averaged if not torch.equal(ema[k], online[k])]
    assert len(moved_from_init) > len(online) // 2
    assert len(differ_from_online) > len(averaged) // 2
    assert all(torch.equal(ema[k], online[k]) for k in copied)
    discr_now = trainer.unwrapped_model.discr.state_dict()
    assert all(not torch.equal(discr_now[k], before["discr"][k]) for k in before["discr"] if "weight" in k)


def test_results_folder_holds_samples_checkpoints_and_the_tokenizer(trained):
    trainer, _, _, results = trained
    gifs = sorted(p.name for p in (results / "samples").glob("*.gif"))
    assert gifs == ["step-00000030.gif", "step-00000060.gif"]
    from PIL import Image

    with Image.open(results / "samples" / gifs[-1]) as gif:
        assert gif.n_frames == 5 and gif.size[0] > gif.size[1]  # originals beside reconstructions
    # every 25 steps plus the final one, the newest two kept
    assert sorted(p.name for p in (results / "checkpoints").iterdir()) == [
        "checkpoint-00000050.pt",
        "checkpoint-00000060.pt",
    ]
    checkpoint = load_checkpoint(results / "checkpoints" / "checkpoint-00000060.pt")
    assert checkpoint["step"] == 60 and set(checkpoint["optimizers"]) == {"generator", "discriminator"}
    assert checkpoint["config"] == trainer.unwrapped_model.config
    assert not any(k.startswith(("module.", "_orig_mod.")) for k in checkpoint["model"])
    # the exported tokenizer is the EMA
    exported = CViViT.from_pretrained(results / "tokenizer")
    ema = trainer.ema.ema_model.state_dict()
    assert all(torch.equal(v, ema[k]) for k, v in exported.state_dict().items())


# ---------------------------------------------------------------------------------------------- resume


def make_resume_trainer(results, **overrides):
    kwargs = dict(
        dataset=synthetic(10),  # 10 items, 2 x 3 per step: epochs wrap mid-batch within the run
        num_frames=5,
        batch_size=3,
        grad_accum_every=2,
        num_train_steps=6,
        lr=1e-3,
        ema_beta=0.9,
        apply_grad_penalty_every=2,
        valid_frac=0.1,
        save_results_every=2,
        results_folder=results,
        seed=3,
    )
    model_seed = overrides.pop("model_seed", 0)
    kwargs.update(overrides)
    return CViViTTrainer(tiny_cvivit(seed=model_seed), **kwargs)


@pytest.mark.parametrize("optimizer", ["muon", "adamw"])
def test_resume_matches_an_uninterrupted_run(tmp_path, optimizer):
    straight = make_resume_trainer(tmp_path / "straight", optimizer=optimizer)
    straight_logs = [straight.train_step() for _ in range(6)]  # no evaluations, no checkpoints in between

    # the interrupted run goes through train(): samples at step 2 (under preserved RNG), a checkpoint at step 3
    first = make_resume_trainer(tmp_path / "resumed", num_train_steps=3, optimizer=optimizer)
    first.train()
    assert first.checkpoints.latest().name == "checkpoint-00000003.pt"
    assert (tmp_path / "resumed" / "samples" / "step-00000002.gif").is_file()

    # a fresh process: new model weights, different global RNG state, resume=True finds the latest checkpoint
    torch.manual_seed(1234)
    second = make_resume_trainer(tmp_path / "resumed", resume=True, model_seed=99, optimizer=optimizer)
    assert second.step == 3
    resumed_logs = [second.train_step() for _ in range(3)]

    # same data, same random draws, same arithmetic: the losses agree exactly
    assert resumed_logs == straight_logs[3:]
    for name, a, b in (
        ("model", straight.unwrapped_model, second.unwrapped_model),
        ("ema", straight.ema, second.ema),
    ):
        sa, sb = a.state_dict(), b.state_dict()
        assert sa.keys() == sb.keys()
        for key in sa:
            assert torch.equal(sb[key], sa[key]), f"{name}.{key}"
    kinds = set()
    for name in ("generator", "discriminator"):
        opt_a = straight.optimizers[name].state_dict()["state"]
        opt_b = second.optimizers[name].state_dict()["state"]
        assert opt_a.keys() == opt_b.keys()
        for index in opt_a:
            for key, value in opt_a[index].items():
                kinds.add(key)
                assert torch.equal(opt_b[index][key], value), f"{name}[{index}].{key}"
    assert ("momentum_buffer" in kinds) == (optimizer == "muon") and "exp_avg_sq" in kinds

    # a checkpoint resumed under the other optimizer is refused with what to pass, not loaded into the wrong state
    other = "adamw" if optimizer == "muon" else "muon"
    with pytest.raises(ValueError, match=f"optimizer={optimizer!r}"):
        make_resume_trainer(tmp_path / "resumed", resume=True, optimizer=other)


def test_optimizer_muon_takes_the_transformer_matrices_and_adamw_the_rest(tmp_path):
    from phenaki_pytorch.training import MuonAdamW

    trainer = CViViTTrainer(tiny_cvivit(), dataset=synthetic(4), num_frames=5, batch_size=2,
                            results_folder=tmp_path / "a")  # the default
    generator = trainer.optimizers["generator"].optimizer  # inside accelerate's wrapper
    assert isinstance(generator, MuonAdamW) and trainer.hparams()["optimizer"] == "muon"
    assert trainer.hparams()["lr"] == 1e-3 and trainer.hparams()["discr_lr"] == 1e-3  # Muon's default rate
    model = trainer.unwrapped_model
    names = {id(p): n for n, p in model.named_parameters()}
    muon = {names[id(p)] for g in generator.param_groups if g["muon"] for p in g["params"]}
    rest = {names[id(p)] for g in generator.param_groups if not g["muon"] for p in g["params"]}
    assert muon and all(n.endswith(".weight") for n in muon)
    assert any("self_attn.to_qkv" in n for n in muon) and any("ff.net" in n for n in muon)
    # pixels in, the codebook's projections and every 1-d tensor stay with AdamW; the discriminator is not here
    assert not any(n.startswith(("to_rest_tokens", "to_first_tokens", "quantizer", "discr")) for n in muon)
    assert muon | rest == {n for n, p in model.named_parameters() if p.requires_grad and not n.startswith("discr.")}
    assert type(trainer.optimizers["discriminator"].optimizer) is torch.optim.AdamW
    before = {k: v.clone() for k, v in model.state_dict().items()}
    logs = trainer.train_step()
    assert math.isfinite(logs["loss"])
    assert all(not torch.equal(before[n], model.state_dict()[n]) for n in muon)

    adamw = CViViTTrainer(tiny_cvivit(), dataset=synthetic(4), num_frames=5, batch_size=2, optimizer="adamw",
                          results_folder=tmp_path / "b")
    assert type(adamw.optimizers["generator"].optimizer) is torch.optim.AdamW
    assert adamw.hparams()["optimizer"] == "adamw" and adamw.hparams()["lr"] == 3e-4  # AdamW's default rate

    # a linear pixel head's layers write pixels: output layers, which stay on AdamW
    linear = CViViTTrainer(tiny_cvivit(pixel_head="linear"), dataset=synthetic(4), num_frames=5, batch_size=2,
                           lr=5e-4, results_folder=tmp_path / "d")
    groups = linear.optimizers["generator"].optimizer.param_groups
    in_muon = {id(p) for g in groups if g["muon"] for p in g["params"]}
    head = linear.unwrapped_model.pixel_head.last_layers()
    assert head and not any(id(w) in in_muon for w in head) and all(g["lr"] == 5e-4 for g in groups)
    with pytest.raises(ValueError, match="optimizer must be one of"):
        CViViTTrainer(tiny_cvivit(), dataset=synthetic(4), num_frames=5, optimizer="sgd", results_folder=tmp_path / "c")


def test_resume_from_an_explicit_path_and_missing_paths(tmp_path):
    trainer = make_resume_trainer(tmp_path / "a", num_train_steps=2, use_ema=False)
    trainer.train_step()
    path = trainer.save(tmp_path / "manual.pt")
    assert path == tmp_path / "manual.pt"
    again = make_resume_trainer(tmp_path / "b", resume=path, use_ema=False)
    assert again.step == 1
    fresh = make_resume_trainer(tmp_path / "c", resume=True)  # nothing to resume yet: a fresh start
    assert fresh.step == 0
    with pytest.raises(FileNotFoundError, match="nothing-here"):
        make_resume_trainer(tmp_path / "d", resume=tmp_path / "nothing-here.pt")


def test_sampler_resumes_and_shards():
    def take(sampler, count):
        iterator = iter(sampler)
        return [next(iterator) for _ in range(count)]

    full = take(ResumableBatchSampler(7, 3, seed=5), 10)
    assert take(ResumableBatchSampler(7, 3, seed=5, start_batch=4), 6) == full[4:]
    # every index appears once per epoch, epochs are reshuffled
    stream = [key for batch in full for key in batch]
    assert sorted(i for epoch, i in stream if epoch == 0) == list(range(7))
    assert [i for e, i in stream if e == 0] != [i for e, i in stream if e == 1]
    # two ranks split each global batch of the single-process stream with a doubled batch size
    ranks = [take(ResumableBatchSampler(7, 3, seed=5, rank=r, world_size=2), 4) for r in (0, 1)]
    single = take(ResumableBatchSampler(7, 6, seed=5), 4)
    assert [a + b for a, b in zip(*ranks)] == single


# ---------------------------------------------------------------------------------------------- call shapes


def test_peer_api_call_shape_with_a_folder_of_gifs(tmp_path, monkeypatch):
    folder = tmp_path / "videos"
    generator = torch.Generator().manual_seed(0)
    for i in range(5):
        frames = 9 if i % 2 else 17  # the short clips are padded to 17 frames and masked
        save_video(torch.rand(3, frames, 16, 16, generator=generator), folder / f"clip{i}.gif", fps=8)
    cvivit = tiny_cvivit(image_size=16)
    monkeypatch.chdir(tmp_path)  # the default results_folder is ./results
    trainer = CViViTTrainer(
        cvivit,
        folder=str(folder),
        batch_size=4,
        grad_accum_every=4,
        train_on_images=False,
        use_ema=False,
        num_train_steps=2,
    )
    trainer.train()
    assert trainer.ema is None
    assert (tmp_path / "results" / "tokenizer" / "model.safetensors").is_file()
    assert (tmp_path / "results" / "checkpoints" / "checkpoint-00000002.pt").is_file()


def test_images_and_folder_errors(tmp_path):
    from phenaki_pytorch.data import save_image

    folder = tmp_path / "images"
    for i in range(3):
        save_image(torch.rand(3, 16, 16), folder / f"image{i}.png")
    with pytest.raises(ValueError, match="image_size="):
        CViViTTrainer(tiny_cvivit(), folder=folder, train_on_images=True, results_folder=tmp_path / "r")
    trainer = CViViTTrainer(
        tiny_cvivit(),
        folder=folder,
        image_size=16,
        train_on_images=True,
        batch_size=2,
        num_train_steps=1,
        save_results_every=1,
        results_folder=tmp_path / "r",
    )
    trainer.train()
    assert (tmp_path / "r" / "samples" / "step-00000001.gif").is_file()
    # a plain tensor dataset of images works too
    images = torch.utils.data.TensorDataset(torch.rand(4, 3, 16, 16))
    logs = CViViTTrainer(tiny_cvivit(), dataset=images, batch_size=2, results_folder=tmp_path / "t").train_step()
    assert set(logs) >= {"loss", "recon_loss", "discr_loss"}

    with pytest.raises(ValueError, match="exactly one"):
        CViViTTrainer(tiny_cvivit(), results_folder=tmp_path / "r")
    with pytest.raises(ValueError, match="nearest valid"):
        CViViTTrainer(tiny_cvivit(image_size=16), folder=folder, num_frames=4, results_folder=tmp_path / "r")


def test_model_without_discriminator(tmp_path):
    trainer = CViViTTrainer(
        tiny_cvivit(use_gan=False), dataset=synthetic(8), num_frames=5, batch_size=2, results_folder=tmp_path
    )
    logs = trainer.train_step()
    assert "discr_loss" not in logs and set(trainer.optimizers) == {"generator"}


# ---------------------------------------------------------------------------------------------- two processes


def test_two_processes_keep_identical_replicas(tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node",
        "2",
        str(REPO / "tests" / "ddp_worker.py"),
        str(tmp_path),
    ]
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=180, cwd=tmp_path)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]

    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in (0, 1)]
    assert ranks[0]["step"] == ranks[1]["step"] == 4
    # each process trained on its own shard of the data ...
    assert ranks[0]["fingerprints"] != ranks[1]["fingerprints"]
    # ... and yet both hold the same weights, buffers (the VQ codebook) and EMA
    for part in ("model", "ema"):
        a, b = ranks[0][part], ranks[1][part]
        assert a.keys() == b.keys()
        assert [k for k in a if not torch.equal(a[k], b[k])] == [], part
    # the main process wrote the checkpoint: it holds those weights, unprefixed
    checkpoint = load_checkpoint(tmp_path / "results" / "checkpoints" / "checkpoint-00000004.pt")
    assert checkpoint["model"].keys() == ranks[0]["model"].keys()
    assert all(torch.equal(checkpoint["model"][k], ranks[0]["model"][k]) for k in checkpoint["model"])
    initial = tiny_cvivit().state_dict()
    assert any(not torch.equal(initial[k], ranks[0]["model"][k]) for k in initial)


def test_trackers_receive_config_and_logs(tmp_path):
    from accelerate.tracking import GeneralTracker

    class Recorder(GeneralTracker):
        name = "recorder"
        requires_logging_directory = False

        def __init__(self):
            super().__init__()
            self.config, self.logs, self.finished = None, [], False

        @property
        def tracker(self):
            return self

        def store_init_configuration(self, values):
            self.config = values

        def log(self, values, step=None, **kwargs):
            self.logs.append((step, values))

        def finish(self):
            self.finished = True

    recorder = Recorder()
    trainer = CViViTTrainer(
        tiny_cvivit(),
        dataset=synthetic(8),
        num_frames=5,
        batch_size=2,
        num_train_steps=2,
        save_results_every=2,
        log_with=[recorder],
        results_folder=tmp_path,
    )
    trainer.train()
    assert recorder.config["batch_size"] == 2 and recorder.finished
    assert [step for step, _ in recorder.logs] == [1, 2]
    assert "valid_recon_loss" in recorder.logs[-1][1] and "recon_loss" in recorder.logs[0][1]


# ---------------------------------------------------------------------------------------------- iterable data


class ClipStream(torch.utils.data.IterableDataset):
    """Clips of a map-style dataset in a seeded per-epoch order; `load_state_dict` only when `resumable`."""

    def __init__(self, source, resumable: bool = True):
        self.source, self.resumable = source, resumable
        self.epoch, self.skip, self.epochs_set = 0, 0, []

    def set_epoch(self, epoch):
        self.epoch, self.skip = epoch, 0
        self.epochs_set.append(epoch)

    def __getattr__(self, name):
        if name == "load_state_dict" and self.__dict__.get("resumable"):
            return self._load_state_dict
        raise AttributeError(name)

    def _load_state_dict(self, state):
        self.set_epoch(state["epoch"])
        self.skip = state["samples_consumed"]

    def __iter__(self):
        order = torch.randperm(len(self.source), generator=torch.Generator().manual_seed(self.epoch)).tolist()
        for index in order[self.skip :]:
            yield self.source[index]


def make_stream_trainer(results, stream, **overrides):
    kwargs = dict(
        dataset=stream,
        num_frames=5,
        batch_size=2,
        num_train_steps=5,
        lr=1e-3,
        apply_grad_penalty_every=2,
        save_results_every=100,
        save_model_every=100,
        results_folder=results,
        seed=3,
    )
    kwargs.update(overrides)
    return CViViTTrainer(tiny_cvivit(seed=overrides.pop("model_seed", 0)), **kwargs)


def fingerprint(trainer):
    return [round(float(b["video"].sum()), 4) for b in trainer.next_batches()]


def test_iterable_dataset_trains_epoch_after_epoch(tmp_path):
    stream = ClipStream(synthetic(5))  # 5 clips, batches of 2: each epoch is 2 + 2 + 1
    trainer = make_stream_trainer(tmp_path, stream, num_train_steps=7)
    sizes = []
    original = trainer.next_batches

    def recording():
        batches = original()
        sizes.append([b["video"].shape[0] for b in batches])
        return batches

    trainer.next_batches = recording
    trainer.train()
    assert sizes == [[2], [2], [1], [2], [2], [1], [2]]
    assert stream.epochs_set[-3:] == [0, 1, 2]  # set_epoch at the start and whenever an epoch ran out
    assert (trainer.data_epoch, trainer.samples_consumed) == (2, 2)
    checkpoint = load_checkpoint(trainer.checkpoints.latest())
    assert checkpoint["extra"]["data"] == {"per_rank": [{"epoch": 2, "samples_consumed": 2}]}
    # no held-out split from a stream: the evaluation used the latest training batch
    logs = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert not any("valid_recon_loss" in entry for entry in logs)


@pytest.mark.parametrize("resumable", [True, False])
def test_iterable_dataset_resumes_where_it_stopped_or_at_its_epoch_start(tmp_path, resumable):
    straight = make_stream_trainer(tmp_path / "straight", ClipStream(synthetic(5), resumable))
    expected = [fingerprint(straight) for _ in range(6)]
    first = make_stream_trainer(tmp_path / "resumed", ClipStream(synthetic(5), resumable), num_train_steps=4)
    first.train()  # 4 batches: epoch 0 (2 + 2 + 1), then 1 of epoch 1
    second = make_stream_trainer(tmp_path / "resumed", ClipStream(synthetic(5), resumable), resume=True)
    assert second.step == 4
    resumed = [fingerprint(second) for _ in range(2)]
    if resumable:
        assert resumed == expected[4:6]  # exactly where the uninterrupted run was
    else:
        assert resumed == expected[3:5]  # epoch 1 from its first batch


def test_iterable_dataset_validation_comes_from_valid_dataset(tmp_path):
    with pytest.raises(ValueError, match="valid_frac=0.1.*IterableDataset"):
        make_stream_trainer(tmp_path / "a", ClipStream(synthetic(5)), valid_frac=0.1)
    trainer = make_stream_trainer(
        tmp_path / "b", ClipStream(synthetic(5)), valid_dataset=synthetic(3), num_train_steps=2, save_results_every=2
    )
    trainer.train()
    logs = [json.loads(line) for line in (tmp_path / "b" / "metrics.jsonl").read_text().splitlines()]
    assert "valid_recon_loss" in logs[-1] and "valid_psnr" in logs[-1]
    assert trainer.validation_batch()["video"].shape[0] == 2  # the first batch_size items of valid_dataset


# ---------------------------------------------------------------------------------------------- padded frames


class PaddedMix(torch.utils.data.Dataset):
    """Clips and images-as-clips: item 2k is a one-frame clip padded to 5 frames (frame_mask True on frame 0
    only), its padding filled with `pad_value`."""

    def __init__(self, pad_value: float):
        self.clips, self.pad_value = synthetic(8), pad_value

    def __len__(self):
        return 8

    def __getitem__(self, index):
        item = dict(self.clips[index])
        if index % 2 == 0:
            video = item["video"].clone()
            video[:, 1:] = self.pad_value
            item["video"], item["frame_mask"] = video, torch.tensor([True, False, False, False, False])
        return item


def test_padded_frames_of_a_mixed_batch_never_reach_the_losses(tmp_path):
    """Two runs whose batches differ only in the content of padded frames train identically (generator and
    discriminator steps): the trainer hands frame_mask to both losses."""
    runs = []
    for pad_value in (0.0, 1.0):
        trainer = make_stream_trainer(
            tmp_path / str(pad_value), PaddedMix(pad_value), valid_frac=0, batch_size=4, num_train_steps=2
        )
        logs = [trainer.train_step() for _ in range(2)]
        assert all(math.isfinite(entry["recon_loss"]) and "discr_loss" in entry for entry in logs)
        runs.append((logs, clone_state(trainer.unwrapped_model)))
    (logs_a, state_a), (logs_b, state_b) = runs
    assert logs_a == logs_b
    assert all(torch.equal(state_a[k], state_b[k]) for k in state_a)


def test_decoder_only_post_training_keeps_every_id(tmp_path):
    """`decoder_only=True` trains the decoder of a trained tokenizer: encoder, codebook and so every clip's ids
    stay as they were (a MaskGit trained on them stays valid), the decoder moves, and the perturbed ids are what
    it learns to decode."""
    with pytest.raises(ValueError, match="never initialised"):  # a fresh tokenizer has no codebook to keep
        CViViTTrainer(tiny_cvivit(use_gan=False), dataset=synthetic(), num_frames=5, decoder_only=True,
                      results_folder=tmp_path / "fresh")
    with pytest.raises(ValueError, match="decoder_token_noise must lie in"):
        CViViTTrainer(tiny_cvivit(use_gan=False), dataset=synthetic(), num_frames=5, decoder_token_noise=1.5,
                      results_folder=tmp_path / "bad")
    cvivit = tiny_cvivit(use_gan=False)
    CViViTTrainer(cvivit, dataset=synthetic(), num_frames=5, batch_size=4, num_train_steps=3, use_ema=False,
                  results_folder=tmp_path / "whole", seed=0).train()
    video = torch.stack([synthetic()[i]["video"] for i in range(4)])
    ids_before = cvivit.eval().tokenize(video)
    before = clone_state(cvivit)
    decoder = {id(p) for p in cvivit.decoder_parameters()}
    names = {name for name, p in cvivit.named_parameters() if id(p) in decoder}
    assert names and all(name.startswith(CViViT._DECODER_MODULES) for name in names)

    # handed over in eval mode (as a tokenizer just used for tokenizing is): the trainer trains in training mode,
    # where the noise applies; the perturbed ids are what the decoder learns from
    seen = []
    token_noise = cvivit._token_noise
    cvivit._token_noise = lambda quantized, ids, rate: seen.append(rate) or token_noise(quantized, ids, rate)
    trainer = CViViTTrainer(cvivit, dataset=synthetic(), num_frames=5, batch_size=4, num_train_steps=4, lr=1e-2,
                            use_ema=False, decoder_only=True, decoder_token_noise=0.3, results_folder=tmp_path / "dec",
                            seed=0)
    assert trainer.hparams()["decoder_only"] is True and trainer.hparams()["decoder_token_noise"] == 0.3
    trainer.train()
    assert seen == [0.3] * 4
    del cvivit._token_noise
    after = clone_state(cvivit)
    moved = {name for name in before if not torch.equal(before[name], after[name])} - {"gan_step"}  # a step count
    assert moved and all(name.startswith(CViViT._DECODER_MODULES) for name in moved)  # the codebook buffers too
    assert torch.equal(cvivit.eval().tokenize(video), ids_before)
    # the forward the trainer used: no quantizer loss, and the rate it was given (the model's own stays 0)
    cvivit.train()
    _, breakdown = cvivit(video, decoder_only=True, return_loss_breakdown=True)
    assert breakdown["quantizer"] == 0 and cvivit.decoder_token_noise == 0.0
    torch.manual_seed(0)
    clean = cvivit(video, decoder_only=True, return_recons=True)[1]
    torch.manual_seed(0)
    noisy = cvivit(video, decoder_only=True, decoder_token_noise=0.3, return_recons=True)[1]
    assert not torch.allclose(clean, noisy)
    with pytest.raises(ValueError, match="decoder_token_noise must lie in"):
        cvivit(video, decoder_token_noise=-0.5)
