import json
import subprocess
import sys

import pytest
import torch
from helpers import tiny_cvivit, tiny_maskgit

from phenaki_pytorch import Phenaki
from phenaki_pytorch.cli import main, parse_story

COMMANDS = ["demo", "sample", "story", "tokenize", "train-tokenizer", "train", "eval-tokenizer"]


@pytest.fixture
def checkpoint(tmp_path, tiny_t5_dir):
    torch.manual_seed(0)
    phenaki = Phenaki(cvivit=tiny_cvivit(), maskgit=tiny_maskgit(dim_context=32), text_encoder=tiny_t5_dir)
    path = tmp_path / "phenaki"
    phenaki.save_pretrained(path)
    return path


def test_help_on_every_command(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--help"])
    assert exit_info.value.code == 0
    top_help = capsys.readouterr().out
    for command in COMMANDS:
        assert command in top_help
        with pytest.raises(SystemExit) as exit_info:
            main([command, "--help"])
        assert exit_info.value.code == 0
        assert "usage: phenaki " + command in capsys.readouterr().out


def test_console_script_is_installed():
    out = subprocess.run(["phenaki", "--help"], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and "train-tokenizer" in out.stdout


def test_sample_writes_a_video(checkpoint, tmp_path, capsys):
    from phenaki_pytorch.data import read_video

    out = tmp_path / "video.gif"
    code = main(["sample", "--checkpoint", str(checkpoint), "a red square moving left", "--frames", "5", "--out", str(out), "--steps", "3"])
    assert code == 0
    assert str(out) in capsys.readouterr().out
    assert read_video(out).shape == (3, 5, 16, 16)


def test_top_k_and_top_p_reach_the_scheduler(checkpoint, tmp_path, monkeypatch, capsys):
    from phenaki_pytorch import Phenaki

    seen = []
    original = Phenaki.make_scheduler

    def spy(self, *args, **kwargs):
        seen.append(original(self, *args, **kwargs))
        return seen[-1]

    monkeypatch.setattr(Phenaki, "make_scheduler", spy)
    base = ["sample", "--checkpoint", str(checkpoint), "a cat", "--frames", "5", "--steps", "2"]
    assert main([*base, "--out", str(tmp_path / "a.gif")]) == 0
    plain = seen[-1]  # the scheduler the sample used (the last one made)
    assert main([*base, "--out", str(tmp_path / "b.gif"), "--top-k", "3", "--top-p", "0.5", "--temperature", "0.2"]) == 0
    assert (plain.top_k, plain.top_p) == (None, None)  # no filter unless asked
    assert (seen[-1].top_k, seen[-1].top_p, seen[-1].temperature, seen[-1].steps) == (3, 0.5, 0.2, 2)
    for bad, message in ((["--top-p", "0"], "--top-p: expected a probability in (0, 1]"),
                         (["--top-k", "0"], "--top-k: expected a positive integer")):
        with pytest.raises(SystemExit) as exit_info:
            main([*base, *bad])
        assert exit_info.value.code == 2 and message in capsys.readouterr().err


def test_story_writes_one_video(checkpoint, tmp_path):
    from phenaki_pytorch.data import read_video

    story = tmp_path / "story.txt"
    story.write_text("# a comment\n5 a red square moving left\n\n1s a blue circle moving up\n")
    out = tmp_path / "story.gif"
    code = main(["story", "--checkpoint", str(checkpoint), str(story), "--out", str(out), "--fps", "4", "--steps", "2"])
    assert code == 0
    assert read_video(out).shape[1] == 9


def test_story_passes_the_continuation_guidance(checkpoint, tmp_path, monkeypatch):
    import phenaki_pytorch.story as story_module

    seen = []
    original = story_module.sample_story

    def spy(*args, **kwargs):
        seen.append(kwargs.get("continuation_cond_scale"))
        return original(*args, **kwargs)

    monkeypatch.setattr(story_module, "sample_story", spy)
    story = tmp_path / "story.txt"
    story.write_text("5 a red square moving left\n4 a blue circle moving up\n")
    base = ["story", "--checkpoint", str(checkpoint), str(story), "--fps", "4", "--steps", "1"]
    assert main([*base, "--out", str(tmp_path / "a.gif")]) == 0
    assert main([*base, "--out", str(tmp_path / "b.gif"), "--continuation-cond-scale", "2.5"]) == 0
    assert seen == [None, 2.5]  # None: sample_story's default, --cond-scale


def run_cli(*args):
    return subprocess.run([sys.executable, "-m", "phenaki_pytorch.cli", *args], capture_output=True, text=True, timeout=120)


def test_bad_arguments_give_one_line_and_no_traceback(checkpoint, tmp_path):
    missing = run_cli("sample", "--checkpoint", str(tmp_path / "nope"), "a prompt")
    assert missing.returncode == 2
    assert "Traceback" not in missing.stderr and len(missing.stderr.strip().splitlines()) == 1
    assert "not a saved Phenaki folder" in missing.stderr

    frames = run_cli("sample", "--checkpoint", str(checkpoint), "a prompt", "--frames", "4", "--out", str(tmp_path / "x.gif"))
    assert frames.returncode == 2 and "Traceback" not in frames.stderr
    assert "nearest valid num_frames: (3, 5)" in frames.stderr

    story = tmp_path / "story.txt"
    story.write_text("5 fine\nlots of frames please\n")
    bad_story = run_cli("story", "--checkpoint", str(checkpoint), str(story))
    assert bad_story.returncode == 2 and "Traceback" not in bad_story.stderr
    assert "story.txt:2" in bad_story.stderr


def test_parse_story(tmp_path):
    story = tmp_path / "s.txt"
    story.write_text("16 a whale\n2.5s a cat watches\n")
    assert parse_story(str(story)) == [("a whale", 16), ("a cat watches", 2.5)]


def test_tokenize_command(tmp_path):
    from phenaki_pytorch.data import PretokenizedDataset

    tiny_cvivit().save_pretrained(tmp_path / "tok")
    code = main(["tokenize", "--tokenizer", str(tmp_path / "tok"), "--data", "synthetic", "--frames", "5",
                 "--synthetic-samples", "6", "--out", str(tmp_path / "ids")])
    assert code == 0
    data = PretokenizedDataset(tmp_path / "ids")
    assert len(data) == 6 and data[0]["codebook_ids"].shape == (3, 2, 2)


def test_train_tokenizer_then_train_then_sample(tmp_path, tiny_t5_dir):
    config = tmp_path / "tokenizer.yaml"
    config.write_text("dim: 32\ncodebook_size: 64\nheads: 2\ndim_head: 16\nspatial_depth: 1\ntemporal_depth: 1\n")
    tokenizer_results = tmp_path / "tok"
    code = main([
        "train-tokenizer", "--config", str(config), "--data", "synthetic", "--synthetic-samples", "8",
        "--image-size", "16", "--frames", "5", "--no-gan", "--steps", "3", "--batch-size", "2",
        "--results", str(tokenizer_results), "--sample-every", "3",
    ])
    assert code == 0
    assert (tokenizer_results / "tokenizer" / "config.json").is_file()
    from phenaki_pytorch import CViViT

    assert CViViT.from_pretrained(tokenizer_results / "tokenizer").dim == 32  # the config file was applied

    phenaki_results = tmp_path / "phenaki"
    code = main([
        "train", "--tokenizer", str(tokenizer_results / "tokenizer"), "--data", "synthetic", "--synthetic-samples", "8",
        "--frames", "5", "--text-encoder", tiny_t5_dir, "--dim", "32", "--depth", "3", "--hourglass", "1",
        "--heads", "2", "--dim-head", "16", "--critic", "token", "--critic-every", "3", "--steps", "3",
        "--batch-size", "2", "--results", str(phenaki_results), "--sample-every", "3",
    ])
    assert code == 0
    config = json.loads((phenaki_results / "phenaki" / "config.json").read_text())
    assert '"hourglass": 1' in json.dumps(config)  # the flag reached the saved MaskGit
    logs = [json.loads(line) for line in (phenaki_results / "metrics.jsonl").read_text().splitlines()]
    assert ["critic_loss" in entry for entry in logs if "loss" in entry] == [True, False, False]  # --critic-every 3
    out = tmp_path / "sample.gif"
    code = main(["sample", "--checkpoint", str(phenaki_results / "phenaki"), "a red square moving left",
                 "--frames", "5", "--steps", "2", "--out", str(out)])
    assert code == 0 and out.is_file()


def test_train_tokenizer_post_trains_a_saved_decoder(tmp_path, capsys):
    from phenaki_pytorch import CViViT

    common = ["--data", "synthetic", "--synthetic-samples", "8", "--frames", "5", "--no-gan", "--batch-size", "2",
              "--sample-every", "100"]
    model = ["--dim", "32", "--codebook-size", "64", "--heads", "2", "--dim-head", "16", "--spatial-depth", "1",
             "--temporal-depth", "1", "--image-size", "16"]
    assert main(["train-tokenizer", *common, *model, "--steps", "3", "--results", str(tmp_path / "tok")]) == 0
    saved = tmp_path / "tok" / "tokenizer"
    code = main(["train-tokenizer", *common, "--init", str(saved), "--decoder-only", "--decoder-token-noise", "0.2",
                 "--steps", "2", "--lr", "1e-2", "--results", str(tmp_path / "dec")])
    assert code == 0
    before = CViViT.from_pretrained(saved).state_dict()
    after = CViViT.from_pretrained(tmp_path / "dec" / "tokenizer").state_dict()
    moved = {name for name in before if not torch.equal(before[name], after[name])} - {"gan_step"}
    assert moved and all(name.startswith(CViViT._DECODER_MODULES) for name in moved)
    capsys.readouterr()
    assert main(["train-tokenizer", *common, "--decoder-only", "--results", str(tmp_path / "x")]) == 2
    assert "--decoder-only post-trains a saved tokenizer: give it with --init DIR" in capsys.readouterr().err
    assert main(["train-tokenizer", *common, "--init", str(tmp_path / "none"), "--results", str(tmp_path / "y")]) == 2
    assert "--init" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["train-tokenizer", "--decoder-token-noise", "1.0"])
    assert "a probability in [0, 1)" in capsys.readouterr().err


def test_unknown_config_option_is_a_clear_error(tmp_path, capsys):
    config = tmp_path / "bad.json"
    config.write_text('{"dimension": 3}')
    assert main(["train-tokenizer", "--config", str(config), "--image-size", "16"]) == 2
    assert "unknown option 'dimension'" in capsys.readouterr().err


def test_precision_flags_reach_the_trainers(capsys):
    from phenaki_pytorch.cli import build_parser
    from phenaki_pytorch.commands.train import trainer_kwargs as _trainer_kwargs

    parser = build_parser()
    for command in (["train-tokenizer"], ["train", "--tokenizer", "tok/"]):
        args = parser.parse_args([*command, "--fp32-matmul", "ieee", "--mixed-precision", "bf16"])
        kwargs = _trainer_kwargs(args)
        assert kwargs["fp32_matmul"] == "ieee" and kwargs["mixed_precision"] == "bf16"
        assert _trainer_kwargs(parser.parse_args(command))["fp32_matmul"] == "auto"
    with pytest.raises(SystemExit) as exit_info:
        parser.parse_args(["train-tokenizer", "--fp32-matmul", "fast"])
    assert exit_info.value.code == 2
    assert "invalid choice: 'fast'" in capsys.readouterr().err


def test_learning_rate_flag_defaults_to_each_trainers_own():
    """`phenaki train` trains a PhenakiTrainer, `train-tokenizer` a CViViTTrainer: each flag default is that trainer's."""
    import inspect

    from phenaki_pytorch.cli import build_parser
    from phenaki_pytorch.commands.train import trainer_kwargs as _trainer_kwargs
    from phenaki_pytorch.training import CViViTTrainer, PhenakiTrainer

    parser = build_parser()
    for command, trainer in ((["train-tokenizer"], CViViTTrainer), (["train", "--tokenizer", "tok/"], PhenakiTrainer)):
        default = inspect.signature(trainer).parameters["lr"].default
        assert _trainer_kwargs(parser.parse_args(command))["lr"] == default
    assert inspect.signature(PhenakiTrainer).parameters["lr"].default == 1e-3


def test_lr_schedule_flags_reach_the_trainer_and_default_to_its_own():
    import inspect

    from phenaki_pytorch.cli import build_parser
    from phenaki_pytorch.commands.train import trainer_kwargs as _trainer_kwargs
    from phenaki_pytorch.training import LR_SCHEDULES, CViViTTrainer, PhenakiTrainer

    parser = build_parser()
    for command, trainer in ((["train-tokenizer"], CViViTTrainer), (["train", "--tokenizer", "tok/"], PhenakiTrainer)):
        signature = inspect.signature(trainer).parameters
        defaults = _trainer_kwargs(parser.parse_args(command))
        assert defaults["lr_schedule"] == signature["lr_schedule"].default
        assert defaults["lr_min_ratio"] == signature["lr_min_ratio"].default
        chosen = _trainer_kwargs(parser.parse_args([*command, "--lr-schedule", "cosine", "--lr-min-ratio", "0.05"]))
        assert (chosen["lr_schedule"], chosen["lr_min_ratio"]) == ("cosine", 0.05)
    train = parser.parse_args(["train", "--tokenizer", "tok/"])
    assert train.critic_every == inspect.signature(PhenakiTrainer).parameters["critic_every"].default
    assert parser.parse_args(["train", "--tokenizer", "tok/", "--critic-every", "3"]).critic_every == 3
    action = next(a for a in parser._subparsers._group_actions[0].choices["train"]._actions
                  if a.dest == "lr_schedule")
    assert tuple(action.choices) == LR_SCHEDULES  # the flag offers exactly what the trainers accept


# ---------------------------------------------------------------------- the command modules


def test_entry_point_and_commands_depend_one_way():
    """cli imports the command modules; no command module imports cli (and cli_train is gone)."""
    import ast
    from pathlib import Path

    import phenaki_pytorch

    package = Path(phenaki_pytorch.__file__).parent
    assert not (package / "cli_train.py").exists() and (package / "commands" / "__init__.py").is_file()
    for source in (package / "commands").glob("*.py"):
        for node in ast.walk(ast.parse(source.read_text())):
            if isinstance(node, ast.ImportFrom):
                target = ("." * node.level) + (node.module or "")
                names = [alias.name for alias in node.names]
                assert target not in ("..cli", "phenaki_pytorch.cli") and not (target == ".." and "cli" in names), source
            elif isinstance(node, ast.Import):
                assert all(alias.name != "phenaki_pytorch.cli" for alias in node.names), source


# ---------------------------------------------------------------------- config files


def write(tmp_path, name, text):
    path = tmp_path / name
    path.write_text(text)
    return str(path)


def test_explicit_flag_wins_over_config_even_when_it_equals_the_default(tmp_path):
    from phenaki_pytorch.cli import parse_command_line

    config = write(tmp_path, "c.yaml", "dim: 32\nheads: 2\nsteps: 7\n")
    args = parse_command_line(["train-tokenizer", "--config", config, "--dim", "128", "--steps", "10000"])
    assert (args.dim, args.steps, args.heads) == (128, 10000, 2)  # 128 and 10000 are the defaults


def test_explicit_default_flag_wins_end_to_end(tmp_path):
    from phenaki_pytorch import CViViT

    config = write(tmp_path, "c.yaml", "dim: 32\ncodebook_size: 64\nheads: 2\ndim_head: 16\nspatial_depth: 1\ntemporal_depth: 1\n")
    code = main(["train-tokenizer", "--config", config, "--heads", "4", "--synthetic-samples", "4", "--image-size", "16",
                 "--frames", "3", "--no-gan", "--steps", "1", "--batch-size", "2", "--results", str(tmp_path / "r")])
    assert code == 0
    assert CViViT.from_pretrained(tmp_path / "r" / "tokenizer").config["heads"] == 4  # the typed default, not the file's 2


@pytest.mark.parametrize(
    "text, expected",
    [
        ("no_gan: 'false'\n", {"no_gan": False}),
        ("no_gan: 'yes'\n", {"no_gan": True}),
        ("no-gan: true\nno_ema: off\n", {"no_gan": True, "no_ema": False}),
        ("lr: '3e-4'\nsteps: '12'\n", {"lr": 3e-4, "steps": 12}),  # YAML reads 3e-4 as a string
        ("lr: 1\nquantizer: fsq\n", {"lr": 1.0, "quantizer": "fsq"}),
        ("log_with: null\n", {"log_with": None}),
    ],
)
def test_config_values_take_the_flag_types(tmp_path, text, expected):
    from phenaki_pytorch.cli import parse_command_line

    args = parse_command_line(["train-tokenizer", "--config", write(tmp_path, "c.yaml", text)])
    assert {key: getattr(args, key) for key in expected} == expected
    assert all(type(getattr(args, key)) is type(value) for key, value in expected.items())


@pytest.mark.parametrize(
    "text, message",
    [
        ("lr: fast\n", "'lr' (--lr) expects a positive number, got 'fast'"),
        ("lr: -1\n", "'lr' (--lr) expects a positive number"),
        ("steps: 2.5\n", "'steps' (--steps) expects a positive integer, got 2.5"),
        ("steps: [1, 2]\n", "'steps' (--steps) expects a positive integer"),
        ("steps: true\n", "'steps' (--steps) expects a positive integer, got True"),
        ("no_gan: maybe\n", "'no_gan' (the --no-gan switch) expects true or false"),
        ("quantizer: bogus\n", "expects one of 'vq', 'lfq', 'fsq'"),
        ("steps: null\n", "expects a positive integer, got null"),
        ("func: 3\n", "unknown option 'func'"),
        ("command: sample\n", "unknown option 'command'"),
        ("config: other.yaml\n", "unknown option 'config'"),
        ("dimension: 3\n", "unknown option 'dimension'"),
        ("- 1\n- 2\n", "must hold a mapping"),
    ],
)
def test_bad_config_values_are_one_line_errors(tmp_path, capsys, text, message):
    tiny = ["--dim", "32", "--codebook-size", "64", "--heads", "2", "--dim-head", "16", "--image-size", "16",
            "--synthetic-samples", "2", "--frames", "3", "--steps", "1", "--batch-size", "1", "--no-gan"]
    code = main(["train-tokenizer", "--config", write(tmp_path, "c.yaml", text), *tiny, "--results", str(tmp_path / "r")])
    err = capsys.readouterr().err
    assert code == 2 and message in err and "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "r").exists()  # nothing was started


# ---------------------------------------------------------------------- errors: the user's and the library's


def run_main(capsys, *args):
    code = main(list(args))
    err = capsys.readouterr().err
    lines = [line for line in err.strip().splitlines() if "it/s" not in line and line.strip()]
    return code, err, lines


def test_invalid_frames_are_reported_before_any_work(tmp_path, capsys, checkpoint):
    results = tmp_path / "r"
    code, err, lines = run_main(capsys, "train-tokenizer", "--frames", "4", "--synthetic-samples", "4", "--image-size", "16",
                                "--steps", "1", "--results", str(results))
    assert code == 2 and "--frames 4" in err and "nearest valid: 3, 5" in err and len(lines) == 1
    assert not results.exists()  # no trainer, no results folder

    tokenizer = tmp_path / "tok"
    tiny_cvivit().save_pretrained(tokenizer)
    code, err, lines = run_main(capsys, "train", "--tokenizer", str(tokenizer), "--frames", "6", "--text-encoder", "nowhere",
                                "--results", str(results))
    assert code == 2 and "--frames 6" in err and not results.exists()
    code, err, lines = run_main(capsys, "train", "--tokenizer", str(tokenizer), "--depth", "4", "--hourglass", "3",
                                "--text-encoder", "nowhere", "--results", str(results))
    assert code == 2 and "--hourglass 3" in err and "at most --depth - 2 (2)" in err and len(lines) == 1
    assert not results.exists()


def test_user_runtime_errors_are_one_line_with_status_2(tmp_path, capsys, checkpoint):
    """A RuntimeError caused by the input: a text encoder path that does not exist, a folder of unreadable
    videos, --resume after a model flag changed."""
    missing = str(tmp_path / "no_such_encoder")
    code, err, lines = run_main(capsys, "sample", "--checkpoint", str(checkpoint), "a cat", "--frames", "3", "--steps", "1",
                                "--text-encoder", missing, "--out", str(tmp_path / "a.gif"))
    assert code == 2 and "Traceback" not in err and len(lines) == 1 and "no_such_encoder" in err

    tokenizer = tmp_path / "tok"
    tiny_cvivit().save_pretrained(tokenizer)
    code, err, lines = run_main(capsys, "tokenize", "--tokenizer", str(tokenizer), "--frames", "3", "--synthetic-samples", "2",
                                "--text-encoder", missing, "--out", str(tmp_path / "ids"))
    assert code == 2 and "Traceback" not in err and len(lines) == 1 and "--text-encoder" in err

    bad = tmp_path / "bad"
    bad.mkdir()
    for i in range(3):
        (bad / f"clip{i}.mp4").write_bytes(b"not a video at all" * 20)
    for command, extra in (
        (["train-tokenizer", "--image-size", "16"], ["--steps", "1", "--results", str(tmp_path / "r1")]),
        (["tokenize", "--tokenizer", str(tokenizer)], ["--out", str(tmp_path / "ids")]),
    ):
        with pytest.warns(UserWarning, match="skipping unreadable"):  # each bad file is still named
            code, err, lines = run_main(capsys, *command, "--data", str(bad), "--frames", "3", *extra)
        assert code == 2 and "Traceback" not in err and "no readable file" in err and len(lines) == 1

    flags = ["train-tokenizer", "--dim", "32", "--codebook-size", "64", "--heads", "2", "--dim-head", "16",
             "--spatial-depth", "1", "--temporal-depth", "1", "--synthetic-samples", "4", "--image-size", "16",
             "--frames", "3", "--no-gan", "--batch-size", "2", "--save-every", "1", "--results", str(tmp_path / "run")]
    assert main([*flags, "--steps", "1"]) == 0
    capsys.readouterr()
    code, err, lines = run_main(capsys, *flags, "--steps", "2", "--resume", "--dim", "48")
    assert code == 2 and "Traceback" not in err and "--resume" in lines[-1] and "does not fit this model" in lines[-1]


def test_library_bugs_show_a_traceback_and_status_1(monkeypatch, capsys):
    import phenaki_pytorch.commands.demo as demo

    def buggy(args):  # a ValueError from outside the library's own checks: a bug, not bad input
        import numpy as np

        np.zeros(3).reshape(2, 2)

    monkeypatch.setattr(demo, "cmd_demo", buggy)
    code, err, _ = run_main(capsys, "demo")
    assert code == 1 and "Traceback" in err and "bug in phenaki-pytorch" in err


def test_debug_shows_the_traceback_of_user_errors(tmp_path, capsys):
    for argv in (["--debug", "sample"], ["sample", "--debug"]):
        code, err, _ = run_main(capsys, *argv, "--checkpoint", str(tmp_path / "nope"), "a prompt")
        assert code == 2 and "Traceback" in err and "not a saved Phenaki folder" in err
    code, err, lines = run_main(capsys, "sample", "--checkpoint", str(tmp_path / "nope"), "a prompt")
    assert code == 2 and "Traceback" not in err and len(lines) == 1


def test_sampling_inputs_are_checked_before_loading(tmp_path, capsys, checkpoint):
    base = ["sample", "--checkpoint", str(checkpoint), "a cat", "--out", str(tmp_path / "a.gif")]
    for extra, message in [
        (["--cond-scale", "nan"], "--cond-scale: expected a finite number"),
        (["--temperature", "inf"], "--temperature: expected a number >= 0"),
        (["--prime-frames", "-1"], "--prime-frames: expected an integer >= 0"),
        (["--frames", "0"], "--frames: expected a positive integer"),
    ]:
        with pytest.raises(SystemExit) as exit_info:
            main([*base, *extra])
        assert exit_info.value.code == 2 and message in capsys.readouterr().err
    for argv, message in [
        ([*base, "--device", "tpu9"], "--device 'tpu9' is not a device"),
        (["sample", "--checkpoint", str(checkpoint), "  ", "--out", str(tmp_path / "a.gif")], "the prompt is empty"),
        ([*base[:-1], str(tmp_path / "a.xyz")], "unsupported suffix '.xyz'"),
    ]:
        code, err, lines = run_main(capsys, *argv)
        assert code == 2 and message in err and len(lines) == 1


def test_prime_frames_zero_means_no_priming(tmp_path, capsys, checkpoint):
    from phenaki_pytorch.data import read_video, save_video

    prime = tmp_path / "prime.gif"
    save_video(torch.rand(3, 9, 16, 16), prime, fps=8)
    out = tmp_path / "out.gif"
    code = main(["sample", "--checkpoint", str(checkpoint), "a cat", "--prime", str(prime), "--prime-frames", "0",
                 "--frames", "5", "--steps", "1", "--out", str(out)])
    assert code == 0 and read_video(out).shape[1] == 5  # `[-0:]` used to prime with all 9 frames
    code, err, _ = run_main(capsys, "sample", "--checkpoint", str(checkpoint), "a cat", "--prime", str(prime),
                            "--prime-frames", "11", "--frames", "4", "--steps", "1", "--out", str(out))
    assert code == 2 and "has only 9 frames" in err


# ---------------------------------------------------------------------- stories


@pytest.mark.parametrize("line", ["nans a cat", "infs a cat", "nan a cat", "-2s a cat", "0 a cat", "1e999s a cat"])
def test_story_durations_must_be_finite_and_positive(tmp_path, line):
    from phenaki_pytorch.cli import CommandError

    with pytest.raises(CommandError, match=r"s\.txt:2: expected 'DURATION PROMPT'"):
        parse_story(write(tmp_path, "s.txt", f"5 fine\n{line}\n"))


@pytest.mark.parametrize("line", ["1e9s forever", "99999999999 frames", "3601s just over an hour"])
def test_story_length_is_bounded(tmp_path, capsys, checkpoint, line):
    story = write(tmp_path, "s.txt", f"{line}\n")
    code, err, lines = run_main(capsys, "story", "--checkpoint", str(checkpoint), story, "--out", str(tmp_path / "s.gif"))
    assert code == 2 and "--max-frames" in err and len(lines) == 1  # at once, not after planning 8e9 frames


def test_story_max_frames_flag(tmp_path, capsys, checkpoint):
    from phenaki_pytorch.commands.sampling import plan_story

    story = write(tmp_path, "s.txt", "2s a\n10 b\n")
    assert plan_story(story, 4.0, None) == [("a", 8), ("b", 10)]
    code, err, _ = run_main(capsys, "story", "--checkpoint", str(checkpoint), story, "--max-frames", "12",
                            "--out", str(tmp_path / "s.gif"))
    assert code == 2 and "more than --max-frames = 12" in err


def test_story_streams_to_an_mp4(tmp_path, checkpoint):
    from phenaki_pytorch.data import read_video

    story = write(tmp_path, "s.txt", "7 a red square moving left\n6 a blue circle moving up\n")
    out = tmp_path / "story.mp4"
    code = main(["story", "--checkpoint", str(checkpoint), story, "--out", str(out), "--steps", "1", "--prime-frames", "0"])
    assert code == 0 and read_video(out).shape == (3, 13, 16, 16)


# ---------------------------------------------------------------------- seeds


TINY_TOKENIZER_FLAGS = ["--dim", "32", "--codebook-size", "64", "--heads", "2", "--dim-head", "16", "--spatial-depth", "1",
                        "--temporal-depth", "1", "--synthetic-samples", "8", "--image-size", "16", "--frames", "3",
                        "--batch-size", "2", "--steps", "3", "--sample-every", "100", "--save-every", "100"]


def loss_curve(results):
    import json

    rows = [json.loads(line) for line in (results / "metrics.jsonl").read_text().splitlines()]
    return [(row["step"], row["loss"]) for row in rows if row.get("loss") is not None]


def test_same_seed_same_loss_curve_for_the_tokenizer(tmp_path):
    curves = []
    for run, seed in enumerate(("5", "5", "6")):
        results = tmp_path / f"run{run}"
        assert main(["train-tokenizer", *TINY_TOKENIZER_FLAGS, "--no-gan", "--seed", seed, "--results", str(results)]) == 0
        curves.append(loss_curve(results))
    assert len(curves[0]) == 3
    assert curves[0] == curves[1]  # the initial weights follow --seed too
    assert curves[0] != curves[2]


def test_same_seed_same_loss_curve_for_phenaki(tmp_path, tiny_t5_dir):
    tokenizer = tmp_path / "tok"
    torch.manual_seed(0)
    tiny_cvivit().save_pretrained(tokenizer)
    curves = []
    for run, seed in enumerate(("5", "5", "6")):
        results = tmp_path / f"run{run}"
        code = main(["train", "--tokenizer", str(tokenizer), "--text-encoder", tiny_t5_dir, "--dim", "32", "--depth", "1",
                     "--heads", "2", "--dim-head", "16", "--critic", "token", "--frames", "3", "--synthetic-samples", "8",
                     "--batch-size", "2", "--steps", "3", "--sample-every", "100", "--save-every", "100", "--seed", seed,
                     "--results", str(results)])
        assert code == 0
        curves.append(loss_curve(results))
    assert len(curves[0]) == 3 and curves[0] == curves[1] and curves[0] != curves[2]


# ---------------------------------------------------------------------- eval-tokenizer


def test_eval_tokenizer_prints_a_table_and_writes_json(tmp_path, capsys):
    import json

    from phenaki_pytorch.data import save_video

    torch.manual_seed(0)
    tiny_cvivit().save_pretrained(tmp_path / "tok")
    videos = tmp_path / "videos"
    for i in range(3):
        save_video(torch.rand(3, 6, 16, 16), videos / f"clip{i}.gif", fps=8)
    out = tmp_path / "report.json"
    code = main(["eval-tokenizer", "--checkpoint", str(tmp_path / "tok"), "--data", str(videos), "--frames", "5",
                 "--batch-size", "2", "--json", str(out)])
    printed = capsys.readouterr().out
    assert code == 0 and "PSNR (dB)" in printed and "codebook usage" in printed and str(out) in printed
    report = json.loads(out.read_text())
    assert report["num_clips"] == 3 and report["num_frames"] == 5 and 0 < report["psnr"] < 100
    assert report["meta"]["data"] == str(videos) and len(report["per_frame_psnr"]) == 5

    code = main(["eval-tokenizer", "--checkpoint", str(tmp_path / "tok"), "--data", str(videos / "clip1.gif"),
                 "--frames", "5", "--json", str(out)])
    assert code == 0 and json.loads(out.read_text())["num_clips"] == 1
    code = main(["eval-tokenizer", "--checkpoint", str(tmp_path / "tok"), "--data", str(videos), "--frames", "3",
                 "--max-items", "2", "--json", str(out)])
    assert code == 0 and json.loads(out.read_text())["num_clips"] == 2

    capsys.readouterr()
    code, err, lines = run_main(capsys, "eval-tokenizer", "--checkpoint", str(tmp_path / "tok"), "--data", str(videos),
                                "--frames", "4")
    assert code == 2 and "nearest valid: 3, 5" in err and len(lines) == 1


def test_optimizer_flag_reaches_both_trainers_and_defaults_to_theirs():
    from phenaki_pytorch.cli import build_parser
    from phenaki_pytorch.commands.train import trainer_kwargs as _trainer_kwargs

    parser = build_parser()
    for command in (["train-tokenizer"], ["train", "--tokenizer", "tok/"]):
        assert _trainer_kwargs(parser.parse_args(command))["optimizer"] is None  # the trainer's own default
        assert _trainer_kwargs(parser.parse_args([*command, "--optimizer", "adamw"]))["optimizer"] == "adamw"
        with pytest.raises(SystemExit):
            parser.parse_args([*command, "--optimizer", "sgd"])
