"""The README's Python examples run, in order, as a user would paste them.

Runs offline on the CPU: as the seed README's contract allows, GPU placement calls are
removed and sizes are shrunk so the blocks take seconds; the default T5 (which would be a
hub download) is replaced by a local stand-in of the same width. A block preceded by `<!-- skip-test -->` is illustrative (a real data
folder and hours of training) and covered by the trainer tests instead.
"""

import re
from pathlib import Path

import pytest
import torch
from helpers import hashed_text_encoder

README = Path(__file__).resolve().parents[1] / "README.md"

SHRINK = [
    (r"\.cuda\(\)", ""),
    (r"\bdim = 512\b", "dim = 64"),
    (r"\bdepth = 6\b", "depth = 1"),
    (r"\b(spatial|temporal)_depth = 4\b", r"\1_depth = 1"),
    (r"\bheads = 8\b", "heads = 2"),
    (r"\bdim_head = 64\b", "dim_head = 16"),
    (r"\b256\b", "64"),
]


def python_blocks() -> list[tuple[int, str]]:
    lines = README.read_text().splitlines()
    blocks, i = [], 0
    while i < len(lines):
        if lines[i].strip() == "```python":
            skip = i > 0 and lines[i - 1].strip() == "<!-- skip-test -->"
            end = lines.index("```", i + 1)
            if not skip:
                blocks.append((i + 1, "\n".join(lines[i + 1 : end])))
            i = end
        i += 1
    return blocks


def shrink(code: str) -> str:
    for pattern, replacement in SHRINK:
        code = re.sub(pattern, replacement, code)
    return code


def test_readme_examples_run(tmp_path, monkeypatch):
    import phenaki_pytorch.phenaki as phenaki_module
    from phenaki_pytorch.data import save_video
    from phenaki_pytorch.text import DEFAULT_TEXT_ENCODER, get_text_encoder

    def offline_text_encoder(spec, dim=None):
        if spec == DEFAULT_TEXT_ENCODER:
            return hashed_text_encoder(dim=768)  # T5 base width
        return get_text_encoder(spec, dim=dim)

    monkeypatch.setattr(phenaki_module, "get_text_encoder", offline_text_encoder)
    monkeypatch.chdir(tmp_path)
    # the files the examples name
    torch.manual_seed(0)
    save_video(torch.rand(3, 40, 72, 80), "clip.mp4", fps=8)
    save_video(torch.rand(3, 20, 64, 64), "second.gif", fps=8)
    Path("captions.jsonl").write_text(
        '{"video": "clip.mp4", "caption": "noise"}\n{"video": "second.gif", "caption": "more noise"}\n'
    )
    Path("captions.txt").write_text("a red square moving left\n")

    namespace = {
        "my_fn": lambda texts: torch.randn(len(texts), 4, 768),
        "t1": "a whale breaching",
        "t2": "a cat watches",
        "t3": "fireworks",
    }
    blocks = python_blocks()
    assert len(blocks) >= 8
    for line, code in blocks:
        try:
            exec(compile(shrink(code), f"README.md:{line}", "exec"), namespace)
        except Exception as error:  # name the block that failed
            pytest.fail(f"README block at line {line} failed: {type(error).__name__}: {error}")
