import subprocess
import sys

import pytest
import torch
from helpers import tiny_cvivit, tiny_maskgit

from phenaki_pytorch import Phenaki
from phenaki_pytorch.cli import main, parse_story

COMMANDS = ["demo", "sample", "story", "tokenize", "train-tokenizer", "train"]


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


def test_story_writes_one_video(checkpoint, tmp_path):
    from phenaki_pytorch.data import read_video

    story = tmp_path / "story.txt"
    story.write_text("# a comment\n5 a red square moving left\n\n1s a blue circle moving up\n")
    out = tmp_path / "story.gif"
    code = main(["story", "--checkpoint", str(checkpoint), str(story), "--out", str(out), "--fps", "4", "--steps", "2"])
    assert code == 0
    assert read_video(out).shape[1] == 9


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
        "--frames", "5", "--text-encoder", tiny_t5_dir, "--dim", "32", "--depth", "1", "--heads", "2",
        "--dim-head", "16", "--critic", "token", "--steps", "3", "--batch-size", "2", "--results", str(phenaki_results),
        "--sample-every", "3",
    ])
    assert code == 0
    out = tmp_path / "sample.gif"
    code = main(["sample", "--checkpoint", str(phenaki_results / "phenaki"), "a red square moving left",
                 "--frames", "5", "--steps", "2", "--out", str(out)])
    assert code == 0 and out.is_file()


def test_unknown_config_option_is_a_clear_error(tmp_path, capsys):
    config = tmp_path / "bad.json"
    config.write_text('{"dimension": 3}')
    assert main(["train-tokenizer", "--config", str(config), "--image-size", "16"]) == 2
    assert "unknown option 'dimension'" in capsys.readouterr().err


def test_precision_flags_reach_the_trainers(capsys):
    from phenaki_pytorch.cli import build_parser
    from phenaki_pytorch.cli_train import _trainer_kwargs

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
