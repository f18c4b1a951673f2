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
