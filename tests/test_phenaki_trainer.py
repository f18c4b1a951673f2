import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from helpers import hashed_text_encoder, tiny_critic, tiny_maskgit, tiny_phenaki

from phenaki_pytorch import Phenaki
from phenaki_pytorch.data import PretokenizedDataset, SyntheticCaptionedVideos, pretokenize, save_video
from phenaki_pytorch.training import PhenakiTrainer, load_checkpoint

REPO = Path(__file__).resolve().parents[1]
SAMPLE_TEXTS = ["a red square moving left", "a blue circle moving up"]


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Tiny models run fastest on one thread, and stay fast when other jobs share the CPU."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def synthetic(num_samples: int = 24):
    return SyntheticCaptionedVideos(num_samples, num_frames=5, image_size=16, seed=0)


def build_phenaki(seed: int = 0, critic: bool = False, **kwargs):
    """A tiny Phenaki (with a TokenCritic when `critic`), its weights a function of `seed` alone."""
    torch.manual_seed(seed)
    return tiny_phenaki(critic=tiny_critic() if critic else None, **kwargs)


def clone_state(module) -> dict:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def read_logs(results: Path) -> list[dict]:
    return [json.loads(line) for line in (results / "metrics.jsonl").read_text().splitlines()]


def falls(values: list[float], ratio: float = 0.85) -> tuple[bool, float, float]:
    first, last = sum(values[:5]) / 5, sum(values[-5:]) / 5
    return last < ratio * first, first, last


# ---------------------------------------------------------------------------------------------- a real run


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """40 steps with a token critic through `train()`, with snapshots taken before training."""
    results = tmp_path_factory.mktemp("phenaki_run")
    phenaki = build_phenaki(critic=True)
    trainer = PhenakiTrainer(
        phenaki,
        dataset=synthetic(),
        batch_size=4,
        train_num_steps=40,
        lr=1e-3,
        ema_beta=0.9,
        sample_texts=SAMPLE_TEXTS,
        sample_steps=4,
        save_results_every=20,
        save_model_every=25,
        keep_last=2,
        results_folder=results,
    )
    before = {
        "model": clone_state(phenaki),
        "critic": clone_state(phenaki.critic),
        "cvivit": clone_state(phenaki.cvivit),
    }
    trainer.train()
    return trainer, before, read_logs(results), results


def test_training_reduces_the_maskgit_loss_and_logs_both_parts(trained):
    _, _, logs, _ = trained
    assert [entry["step"] for entry in logs] == list(range(1, 41))
    ok, first, last = falls([entry["maskgit_loss"] for entry in logs])
    assert ok, (first, last)
    # the default critic_every=2 trains the critic on updates 0, 2, 4, ... (logged as steps 1, 3, 5, ...)
    assert [entry["step"] for entry in logs if "critic_loss" in entry] == list(range(1, 41, 2))
    for entry in logs:
        critic = entry.get("critic_loss", 0.0)
        assert entry["loss"] == pytest.approx(entry["maskgit_loss"] + critic, rel=1e-5)
    assert all(key in logs[-1] for key in ("grad_norm", "lr", "critic_lr"))
    valid = [entry for entry in logs if "valid_loss" in entry]
    assert [entry["step"] for entry in valid] == [20, 40]
    assert all("valid_maskgit_loss" in entry and "valid_critic_loss" in entry for entry in valid)


def test_critic_and_ema_move_while_the_tokenizer_stays_frozen(trained):
    trainer, before, _, _ = trained
    phenaki = trainer.unwrapped_model
    critic_now = phenaki.critic.state_dict()
    assert all(not torch.equal(critic_now[k], before["critic"][k]) for k in before["critic"] if "weight" in k)
    cvivit_now = phenaki.cvivit.state_dict()
    assert all(torch.equal(cvivit_now[k], before["cvivit"][k]) for k in before["cvivit"])
    # one optimizer, MaskGit groups and critic groups (Muon's matrices, AdamW's rest); no tokenizer parameter
    groups = trainer.optimizers["phenaki"].param_groups
    assert [(group["name"], group["muon"]) for group in groups] == [
        ("maskgit", True), ("maskgit", False), ("critic", True), ("critic", False)
    ]
    critic_ids = {id(p) for group in groups if group["name"] == "critic" for p in group["params"]}
    assert critic_ids == {id(p) for p in phenaki.critic.parameters()}
    optimized = {id(p) for group in groups for p in group["params"]}
    assert not optimized & {id(p) for p in phenaki.cvivit.parameters()}
    # the EMA averages MaskGit and the critic, and shares the frozen tokenizer instead of copying it
    ema = trainer.ema.ema_model
    assert ema is not phenaki and ema.cvivit is phenaki.cvivit and ema.critic is not phenaki.critic
    online, averaged = phenaki.state_dict(), ema.state_dict()
    trained_keys = [k for k in online if not k.startswith("cvivit.") and online[k].is_floating_point()]
    assert all(not torch.equal(averaged[k], before["model"][k]) for k in trained_keys)
    assert all(not torch.equal(averaged[k], online[k]) for k in trained_keys)


def test_results_folder_holds_samples_checkpoints_and_the_model(trained):
    trainer, _, _, results = trained
    samples = results / "samples"
    assert sorted(p.name for p in samples.iterdir()) == [
        "step-00000020.gif",
        "step-00000020.txt",
        "step-00000040.gif",
        "step-00000040.txt",
    ]
    assert (samples / "step-00000040.txt").read_text().splitlines() == SAMPLE_TEXTS
    from PIL import Image

    with Image.open(samples / "step-00000040.gif") as gif:
        assert gif.n_frames == 5 and gif.size[0] > gif.size[1]  # two samples side by side
    assert sorted(p.name for p in (results / "checkpoints").iterdir()) == [
        "checkpoint-00000025.pt",
        "checkpoint-00000040.pt",
    ]
    checkpoint = load_checkpoint(results / "checkpoints" / "checkpoint-00000040.pt")
    assert checkpoint["step"] == 40 and set(checkpoint["optimizers"]) == {"phenaki"}
    # the exported Phenaki is the EMA; its callable text encoder is passed again to load it
    exported = Phenaki.from_pretrained(results / "phenaki", text_encoder=hashed_text_encoder())
    ema = trainer.ema.ema_model.state_dict()
    assert exported.state_dict().keys() == ema.keys()
    assert all(torch.equal(v, ema[k]) for k, v in exported.state_dict().items())


def test_samples_are_seeded_and_leave_training_randomness_alone(trained):
    trainer, _, _, _ = trained
    state = torch.get_rng_state()
    first, captions = trainer._sample(trainer.eval_model)
    second, _ = trainer._sample(trainer.eval_model)
    assert torch.equal(first, second) and captions == SAMPLE_TEXTS and first.shape == (2, 3, 5, 16, 16)
    trainer.evaluate()
    assert torch.equal(torch.get_rng_state(), state)


def test_self_token_critic_trains_its_head(tmp_path):
    phenaki = build_phenaki(self_token_critic=True)
    head = clone_state(phenaki.critic)
    cvivit = clone_state(phenaki.cvivit)
    trainer = PhenakiTrainer(phenaki, dataset=synthetic(8), batch_size=2, lr=1e-3, results_folder=tmp_path)
    logs = [trainer.train_step() for _ in range(5)]
    assert ["critic_loss" in entry for entry in logs] == [True, False, True, False, True]  # critic_every=2
    groups = trainer.optimizers["phenaki"].param_groups
    critic_ids = {id(p) for group in groups if group["name"] == "critic" for p in group["params"]}
    assert critic_ids == {id(p) for p in phenaki.critic.to_logits.parameters()}
    assert all(not torch.equal(v, head[k]) for k, v in phenaki.critic.state_dict().items())
    assert all(torch.equal(v, cvivit[k]) for k, v in phenaki.cvivit.state_dict().items())
    # the EMA's critic head reads the EMA's MaskGit, not the online one
    ema = trainer.ema.ema_model
    assert ema.critic.maskgit is ema.maskgit


def test_a_model_handed_over_in_eval_mode_trains_in_training_mode(tmp_path):
    # e.g. a Phenaki just loaded and sampled from: its training-only behaviour (here continuation_prob) must apply
    phenaki = build_phenaki(continuation_prob=1.0).eval()
    trainer = PhenakiTrainer(phenaki, dataset=synthetic(8), batch_size=2, lr=1e-3, results_folder=tmp_path)
    calls = []
    original = phenaki._maskable_in_training

    def spy(valid, *args, **kwargs):
        calls.append(phenaki.training)
        return original(valid, *args, **kwargs)

    phenaki._maskable_in_training = spy
    trainer.train_step()
    assert calls == [True] and phenaki.training and not phenaki.cvivit.training  # the tokenizer stays frozen


# ---------------------------------------------------------------------------------------------- pre-tokenized data


def test_training_from_pretokenized_ids(tmp_path):
    phenaki = build_phenaki(critic=True)
    pretokenize(
        synthetic(), phenaki.cvivit, tmp_path / "tokens", text_encoder=hashed_text_encoder(), show_progress=False
    )
    dataset = PretokenizedDataset(tmp_path / "tokens")

    def no_tokenizing(*args, **kwargs):
        raise AssertionError("pre-tokenized training must not run the tokenizer")

    phenaki.cvivit.tokenize = no_tokenizing
    trainer = PhenakiTrainer(
        phenaki,
        dataset=dataset,
        batch_size=4,
        train_num_steps=40,
        lr=1e-3,
        sample_steps=3,
        save_results_every=40,
        results_folder=tmp_path / "results",
    )
    assert trainer.pretokenized and trainer.sample_num_frames == 5
    trainer.train()
    logs = read_logs(tmp_path / "results")
    ok, first, last = falls([entry["maskgit_loss"] for entry in logs])
    assert ok, (first, last)
    assert "valid_loss" in logs[-1] and "valid_critic_loss" in logs[-1]
    assert sum("critic_loss" in entry for entry in logs) == 20  # every other step (critic_every=2)
    # without sample texts the held-out captions are sampled, from their stored embeddings
    captions = (tmp_path / "results" / "samples" / "step-00000040.txt").read_text().splitlines()
    held_out = {dataset[i]["text"] for i in trainer.valid_indices}
    assert captions and set(captions) <= held_out
    assert (tmp_path / "results" / "samples" / "step-00000040.gif").is_file()


# ---------------------------------------------------------------------------------------------- resume


def make_resume_trainer(results, **overrides):
    kwargs = dict(
        dataset=synthetic(10),  # 10 items, 2 x 3 per step: epochs wrap mid-batch within the run
        batch_size=3,
        grad_accum_every=2,
        train_num_steps=6,
        lr=1e-3,
        ema_beta=0.9,
        valid_frac=0.1,
        sample_texts=SAMPLE_TEXTS,
        sample_steps=3,
        save_results_every=2,
        results_folder=results,
        seed=3,
    )
    model_seed = overrides.pop("model_seed", 0)
    kwargs.update(overrides)
    return PhenakiTrainer(build_phenaki(model_seed, critic=True), **kwargs)


@pytest.mark.parametrize("optimizer", ["muon", "adamw"])
def test_resume_matches_an_uninterrupted_run(tmp_path, optimizer):
    straight = make_resume_trainer(tmp_path / "straight", optimizer=optimizer)
    straight_logs = [straight.train_step() for _ in range(6)]  # no evaluations, no checkpoints in between

    # the interrupted run goes through train(): samples at step 2 (under preserved RNG), a checkpoint at step 3
    first = make_resume_trainer(tmp_path / "resumed", train_num_steps=3, optimizer=optimizer)
    first.train()
    assert first.checkpoints.latest().name == "checkpoint-00000003.pt"
    assert (tmp_path / "resumed" / "samples" / "step-00000002.gif").is_file()

    # a fresh process: new model weights, different global RNG state, resume=True finds the latest checkpoint
    torch.manual_seed(1234)
    second = make_resume_trainer(tmp_path / "resumed", resume=True, model_seed=99, optimizer=optimizer)
    assert second.step == 3
    resumed_logs = [second.train_step() for _ in range(3)]

    # same data, same random draws (masks, text dropout, critic samples), same arithmetic: exact agreement
    assert resumed_logs == straight_logs[3:]
    for name, a, b in (
        ("model", straight.unwrapped_model, second.unwrapped_model),
        ("ema", straight.ema, second.ema),
    ):
        sa, sb = a.state_dict(), b.state_dict()
        assert sa.keys() == sb.keys()
        for key in sa:
            assert torch.equal(sb[key], sa[key]), f"{name}.{key}"
    opt_a = straight.optimizers["phenaki"].state_dict()["state"]
    opt_b = second.optimizers["phenaki"].state_dict()["state"]
    assert opt_a.keys() == opt_b.keys()
    kinds = set()
    for index in opt_a:
        assert opt_a[index].keys() == opt_b[index].keys()
        kinds.update(opt_a[index])
        for key in opt_a[index]:
            assert torch.equal(torch.as_tensor(opt_b[index][key]), torch.as_tensor(opt_a[index][key])), (index, key)
    # Muon keeps a momentum buffer for the weight matrices and AdamW's moments for the rest; AdamW only moments
    assert ("momentum_buffer" in kinds) == (optimizer == "muon") and "exp_avg_sq" in kinds

    # a checkpoint resumed under the other optimizer is refused with what to pass, not loaded into the wrong state
    other = "adamw" if optimizer == "muon" else "muon"
    with pytest.raises(ValueError, match=f"optimizer={optimizer!r}"):
        make_resume_trainer(tmp_path / "resumed", resume=True, optimizer=other)


# ---------------------------------------------------------------------------------------------- call shapes


class TupleVideos(torch.utils.data.Dataset):
    """(video, caption) tuples, like the reference implementation's mock dataset."""

    def __init__(self, length: int = 8, frames: int = 5):
        self.length, self.frames = length, frames

    def __len__(self):
        return self.length

    def __getitem__(self, index):
        generator = torch.Generator().manual_seed(index)
        return torch.rand(3, self.frames, 16, 16, generator=generator), f"clip number {index % 3}"


def test_peer_api_call_shape(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the default results_folder is ./results, the captions file is relative
    Path("captions.txt").write_text("a red square moving left\n\nclip number 1\n")
    phenaki = build_phenaki(critic=True)
    dataset = TupleVideos()
    trainer = PhenakiTrainer(
        phenaki=phenaki,
        batch_size=4,
        grad_accum_every=4,
        train_on_images=False,
        dataset=dataset,
        sample_texts_file_path="captions.txt",
        train_num_steps=2,
        save_results_every=2,
    )
    trainer.train()
    assert trainer.sample_texts == ["a red square moving left", "clip number 1"]
    results = tmp_path / "results"
    assert (results / "phenaki" / "model.safetensors").is_file()
    assert (results / "checkpoints" / "checkpoint-00000002.pt").is_file()
    assert (results / "samples" / "step-00000002.gif").is_file()
    assert (results / "samples" / "step-00000002.txt").read_text().splitlines() == trainer.sample_texts


def test_captioned_folder_images_and_unconditional_models(tmp_path):
    folder = tmp_path / "videos"
    generator = torch.Generator().manual_seed(0)
    for i in range(4):
        save_video(torch.rand(3, 5, 16, 16, generator=generator), folder / f"clip{i}.gif", fps=8)
        (folder / f"clip{i}.txt").write_text(f"caption {i}\n")
    trainer = PhenakiTrainer(
        build_phenaki(), folder=folder, num_frames=5, batch_size=2, train_num_steps=1, results_folder=tmp_path / "a"
    )
    assert trainer.train_step()["loss"] > 0
    with pytest.raises(ValueError, match="nearest valid"):
        PhenakiTrainer(build_phenaki(), folder=folder, num_frames=4, results_folder=tmp_path / "a")

    # bare images as one-frame clips, an unconditional model, no EMA: samples without captions
    torch.manual_seed(0)
    maskgit = tiny_maskgit(unconditional=True, dim_context=None)
    phenaki = Phenaki(cvivit=build_phenaki().cvivit, maskgit=maskgit, text_encoder=None)
    images = torch.utils.data.TensorDataset(torch.rand(6, 3, 16, 16))
    trainer = PhenakiTrainer(
        phenaki,
        dataset=images,
        train_on_images=True,
        use_ema=False,
        batch_size=2,
        num_train_steps=1,
        num_samples=2,
        sample_steps=2,
        save_results_every=1,
        results_folder=tmp_path / "b",
    )
    trainer.train()
    assert trainer.ema is None and trainer.sample_num_frames == 1
    assert sorted(p.name for p in (tmp_path / "b" / "samples").iterdir()) == ["step-00000001.gif"]


def test_clear_errors(tmp_path):
    with pytest.raises(ValueError, match="exactly one"):
        PhenakiTrainer(build_phenaki(), results_folder=tmp_path)
    with pytest.raises(ValueError, match="exactly one"):
        PhenakiTrainer(build_phenaki(), dataset=synthetic(4), folder=tmp_path, results_folder=tmp_path)
    with pytest.raises(FileNotFoundError, match="no-such-captions.txt"):
        PhenakiTrainer(
            build_phenaki(),
            dataset=synthetic(4),
            sample_texts_file_path=tmp_path / "no-such-captions.txt",
            results_folder=tmp_path,
        )
    (tmp_path / "empty.txt").write_text("\n \n")
    with pytest.raises(ValueError, match="no captions"):
        PhenakiTrainer(
            build_phenaki(),
            dataset=synthetic(4),
            sample_texts_file_path=tmp_path / "empty.txt",
            results_folder=tmp_path,
        )
    with pytest.raises(ValueError, match="disagree"):
        PhenakiTrainer(
            build_phenaki(), dataset=synthetic(4), train_num_steps=3, num_train_steps=4, results_folder=tmp_path
        )
    uncaptioned = torch.utils.data.TensorDataset(torch.rand(4, 3, 5, 16, 16))
    with pytest.raises(ValueError, match="carry no captions"):
        PhenakiTrainer(build_phenaki(), dataset=uncaptioned, results_folder=tmp_path)
    with pytest.raises(TypeError, match="must be a Phenaki"):
        PhenakiTrainer(build_phenaki().maskgit, dataset=synthetic(4), results_folder=tmp_path)


# ---------------------------------------------------------------------------------------------- two processes


@pytest.mark.parametrize("critic", ["token", "self"])
def test_two_processes_keep_identical_replicas(tmp_path, critic):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node",
        "2",
        str(REPO / "tests" / "ddp_phenaki_worker.py"),
        str(tmp_path),
        critic,
    ]
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=180, cwd=tmp_path)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]

    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in (0, 1)]
    assert ranks[0]["step"] == ranks[1]["step"] == 4
    # each process trained on its own shard of the data ...
    assert ranks[0]["fingerprints"] != ranks[1]["fingerprints"]
    # ... and yet both hold the same MaskGit, critic and EMA
    for part in ("model", "ema"):
        a, b = ranks[0][part], ranks[1][part]
        assert a.keys() == b.keys()
        assert [k for k in a if not torch.equal(a[k], b[k])] == [], part
    # the main process wrote the checkpoint, the samples and the final model
    checkpoint = load_checkpoint(tmp_path / "results" / "checkpoints" / "checkpoint-00000004.pt")
    assert checkpoint["model"].keys() == ranks[0]["model"].keys()
    assert all(torch.equal(checkpoint["model"][k], ranks[0]["model"][k]) for k in checkpoint["model"])
    assert (tmp_path / "results" / "samples" / "step-00000004.gif").is_file()
    assert (tmp_path / "results" / "phenaki" / "model.safetensors").is_file()
    initial = build_phenaki(critic=critic == "token", self_token_critic=critic == "self").state_dict()
    moved = [k for k in initial if not torch.equal(initial[k], ranks[0]["model"][k])]
    assert any(k.startswith("maskgit.") for k in moved) and any(k.startswith("critic.") for k in moved)
    assert not any(k.startswith("cvivit.") for k in moved)


# ---------------------------------------------------------------------------------------------- iterable data


class CaptionedStream(torch.utils.data.IterableDataset):
    """Captioned clips in a seeded per-epoch order, resumable mid-epoch with `load_state_dict`."""

    def __init__(self, source):
        self.source, self.epoch, self.skip = source, 0, 0

    def set_epoch(self, epoch):
        self.epoch, self.skip = epoch, 0

    def load_state_dict(self, state):
        self.epoch, self.skip = state["epoch"], state["samples_consumed"]

    def __iter__(self):
        order = torch.randperm(len(self.source), generator=torch.Generator().manual_seed(self.epoch)).tolist()
        for index in order[self.skip :]:
            yield self.source[index]


def test_iterable_dataset_trains_and_resumes_mid_epoch(tmp_path):
    def make(results, **overrides):
        kwargs = dict(dataset=CaptionedStream(synthetic(5)), valid_frac=None, batch_size=2, grad_accum_every=1)
        return make_resume_trainer(results, **{**kwargs, "save_results_every": 100, **overrides})

    with pytest.raises(ValueError, match="IterableDataset"):
        make(tmp_path / "bad", valid_frac=0.2)
    straight = make(tmp_path / "straight")
    straight_logs = [straight.train_step() for _ in range(5)]
    first = make(tmp_path / "resumed", train_num_steps=4)  # 2 + 2 + 1 items of epoch 0, then 2 of epoch 1
    first.train()
    second = make(tmp_path / "resumed", resume=True, model_seed=7)
    assert (second.step, second._data_resume) == (4, {"epoch": 1, "samples_consumed": 2})
    assert second.train_step() == straight_logs[4]
    assert (second.data_epoch, second.samples_consumed) == (1, 4)


# ---------------------------------------------------------------------------------------------- padded frames


class PaddedMix(torch.utils.data.Dataset):
    """Captioned clips; every other one is an image as a one-frame clip padded to 5 frames with `pad_value`."""

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


def test_padded_frames_of_a_mixed_batch_never_reach_the_loss(tmp_path):
    """Batches that differ only in the content of padded frames train identically: frame_mask reaches the loss."""
    runs = []
    for pad_value in (0.0, 1.0):
        trainer = make_resume_trainer(
            tmp_path / str(pad_value), dataset=PaddedMix(pad_value), valid_frac=0, batch_size=4
        )
        logs = [trainer.train_step() for _ in range(2)]
        assert all(torch.isfinite(torch.tensor(entry["maskgit_loss"])) for entry in logs)
        runs.append((logs, clone_state(trainer.unwrapped_model)))
    (logs_a, state_a), (logs_b, state_b) = runs
    assert logs_a == logs_b
    assert all(torch.equal(state_a[k], state_b[k]) for k in state_a)


# ---------------------------------------------------------------------------------------------- lr schedules


def test_learning_rate_schedules_warm_up_then_decay_to_the_floor():
    from phenaki_pytorch.training import LearningRateSchedule

    constant = LearningRateSchedule("constant", warmup_steps=4)
    assert [constant(s) for s in (0, 3, 4, 10**6)] == [0.25, 1.0, 1.0, 1.0]
    cosine = LearningRateSchedule("cosine", warmup_steps=10, total_steps=110, min_ratio=0.1)
    assert cosine(0) == pytest.approx(0.1) and cosine(9) == 1.0 and cosine(10) == 1.0
    assert cosine(60) == pytest.approx(0.55)  # half way: the cosine's midpoint between 1 and the floor
    assert cosine(110) == pytest.approx(0.1) and cosine(10**6) == pytest.approx(0.1)
    values = [cosine(s) for s in range(10, 111)]
    assert all(a >= b for a, b in zip(values, values[1:]))  # never rises after the warm-up
    linear = LearningRateSchedule("linear", total_steps=100, min_ratio=0.0)
    assert linear(0) == 1.0 and linear(25) == pytest.approx(0.75) and linear(100) == 0.0
    with pytest.raises(ValueError, match="lr_schedule must be one of"):
        LearningRateSchedule("step")
    with pytest.raises(ValueError, match="num_train_steps > lr_warmup_steps"):
        LearningRateSchedule("cosine", warmup_steps=10, total_steps=10)
    with pytest.raises(ValueError, match="lr_min_ratio"):
        LearningRateSchedule("cosine", total_steps=10, min_ratio=1.5)


def test_cosine_schedule_reaches_its_floor_at_the_last_step_and_survives_a_resume(tmp_path):
    def trainer(results, **overrides):
        return make_resume_trainer(
            results, lr_schedule="cosine", lr_min_ratio=0.2, lr_warmup_steps=1, save_results_every=10**6, **overrides
        )

    def lrs(t):
        return [group["lr"] for group in t.optimizers["phenaki"].param_groups]

    straight = trainer(tmp_path / "straight")
    seen = []
    for _ in range(6):
        seen.append(lrs(straight)[0])
        straight.train_step()
    # warm-up (1 step), then 1e-3 falling along a cosine to 0.2 * 1e-3 at step 6, both groups alike
    expected = [1e-3 * (0.2 + 0.8 * 0.5 * (1 + math.cos(math.pi * (s - 1) / 5))) for s in range(1, 6)]
    assert seen == pytest.approx([1e-3] + expected)
    assert lrs(straight) == pytest.approx([2e-4] * 4)  # MaskGit's and the critic's groups, Muon's and AdamW's
    assert straight.hparams()["lr_schedule"] == "cosine"

    first = trainer(tmp_path / "resumed")
    for _ in range(3):
        first.train_step()
    first.save()
    second = trainer(tmp_path / "resumed", resume=True, model_seed=99)
    assert second.step == 3
    assert lrs(second)[0] == pytest.approx(seen[3])  # the curve goes on where it stopped
    for _ in range(3):
        second.train_step()
    assert lrs(second) == pytest.approx(lrs(straight))
    with pytest.raises(ValueError, match="lr_schedule must be one of"):
        PhenakiTrainer(build_phenaki(), dataset=synthetic(4), lr_schedule="exp", results_folder=tmp_path / "x")


# ---------------------------------------------------------------------------------------------- critic_every


def test_critic_every_trains_the_critic_on_every_kth_step_only_and_resumes_on_its_cycle(tmp_path):
    def trainer(results, **overrides):
        return make_resume_trainer(results, critic_every=3, save_results_every=10**6, **overrides)

    straight = trainer(tmp_path / "straight")
    critic, maskgit = straight.unwrapped_model.critic, straight.unwrapped_model.maskgit
    trained = []
    for _ in range(6):
        critic_before, maskgit_before = clone_state(critic), clone_state(maskgit)
        logs = straight.train_step()
        critic_moved = any(not torch.equal(v, critic.state_dict()[k]) for k, v in critic_before.items())
        assert any(not torch.equal(v, maskgit.state_dict()[k]) for k, v in maskgit_before.items())  # every step
        assert critic_moved == ("critic_loss" in logs)  # a step that skips the critic leaves it exactly as it was
        trained.append(critic_moved)
    assert trained == [True, False, False, True, False, False]
    assert straight.hparams()["critic_every"] == 3

    first = trainer(tmp_path / "resumed")
    for _ in range(4):
        first.train_step()
    first.save()
    second = trainer(tmp_path / "resumed", resume=True, model_seed=99)
    for _ in range(2):
        assert "critic_loss" not in second.train_step()  # steps 4 and 5: still off the critic's cycle
    final = second.unwrapped_model.state_dict()
    assert all(torch.equal(v, final[k]) for k, v in straight.unwrapped_model.state_dict().items())
    with pytest.raises(ValueError, match="critic_every"):
        PhenakiTrainer(build_phenaki(critic=True), dataset=synthetic(4), critic_every=0, results_folder=tmp_path / "x")


def test_adam_betas_reach_the_optimizer_and_are_checked(tmp_path):
    trainer = PhenakiTrainer(build_phenaki(critic=True), dataset=synthetic(4), adam_betas=(0.9, 0.99),
                             results_folder=tmp_path / "a")
    assert all(group["betas"] == (0.9, 0.99) for group in trainer.optimizers["phenaki"].param_groups)
    assert (trainer.hparams()["adam_beta1"], trainer.hparams()["adam_beta2"]) == (0.9, 0.99)
    default = PhenakiTrainer(build_phenaki(critic=True), dataset=synthetic(4), results_folder=tmp_path / "b")
    assert all(group["betas"] == (0.9, 0.999) for group in default.optimizers["phenaki"].param_groups)
    with pytest.raises(ValueError, match="adam_betas"):
        PhenakiTrainer(build_phenaki(), dataset=synthetic(4), adam_betas=(0.9, 1.0), results_folder=tmp_path / "c")


def test_optimizer_default_is_muon_on_matrices_and_adamw_on_the_rest(tmp_path):
    from phenaki_pytorch.training import MuonAdamW

    trainer = PhenakiTrainer(build_phenaki(critic=True), dataset=synthetic(4), critic_lr=5e-4,
                             results_folder=tmp_path / "a")
    optimizer = trainer.optimizers["phenaki"].optimizer  # inside accelerate's wrapper
    assert isinstance(optimizer, MuonAdamW) and trainer.hparams()["optimizer"] == "muon"
    groups = {(g["name"], g["muon"]): g for g in optimizer.param_groups}
    assert set(groups) == {("maskgit", True), ("maskgit", False), ("critic", True), ("critic", False)}
    assert groups[("critic", True)]["lr"] == groups[("critic", False)]["lr"] == 5e-4  # critic_lr reaches both
    model = trainer.unwrapped_model
    every = {id(p) for g in optimizer.param_groups for p in g["params"]}
    assert every == {id(p) for p in model.trainable_parameters()} | {id(p) for p in model.critic.parameters()}
    assert id(model.maskgit.to_logits.weight) not in {id(p) for (_, m), g in groups.items() if m for p in g["params"]}
    before = clone_state(model.maskgit)
    logs = trainer.train_step()
    assert math.isfinite(logs["loss"]) and any(not torch.equal(before[k], v) for k, v in model.maskgit.state_dict().items())

    adamw = PhenakiTrainer(build_phenaki(critic=True), dataset=synthetic(4), optimizer="adamw",
                           results_folder=tmp_path / "b")
    assert type(adamw.optimizers["phenaki"].optimizer) is torch.optim.AdamW
    assert adamw.hparams()["optimizer"] == "adamw"
    with pytest.raises(ValueError, match="optimizer must be one of"):
        PhenakiTrainer(build_phenaki(), dataset=synthetic(4), optimizer="sgd", results_folder=tmp_path / "c")
