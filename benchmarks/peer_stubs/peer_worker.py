"""Run one benchmark configuration on phenaki-pytorch 0.5.0 (the peer venv's interpreter).

    /work/peer-venv/bin/python benchmarks/peer_stubs/peer_worker.py '<config json>'

Started by `benchmarks/compare_peer.py`; prints one JSON line on stdout. It never imports
our package: it runs from the peer venv, with only this folder and `benchmarks/` (for
`common.timeit`, which imports nothing but torch) on sys.path, and it checks that the
`phenaki_pytorch` it got is the one installed in the venv.
"""

from __future__ import annotations

import json
import os
import sys
import traceback
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() not in (HERE, HERE.parent.parent)]
sys.path.insert(0, str(HERE.parent))  # benchmarks/: common.py and the peer_stubs package

import resource  # noqa: E402

import peer_stubs  # noqa: E402


def rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def build_cvivit(cfg: dict):
    from phenaki_pytorch import CViViT

    tok = cfg["tokenizer"]
    kwargs = {}
    if cfg["quantizer"] != "default":
        kwargs["lookup_free_quantization"] = cfg["quantizer"] == "lfq"
    return CViViT(
        dim=tok["dim"],
        codebook_size=tok["codebook_size"],
        image_size=tok["image_size"],
        patch_size=tok["patch_size"],
        temporal_patch_size=tok["temporal_patch_size"],
        spatial_depth=tok["spatial_depth"],
        temporal_depth=tok["temporal_depth"],
        heads=tok["heads"],
        dim_head=tok["dim_head"],
        use_vgg_and_gan=False,  # reconstruction only: no VGG16 download, no discriminator
        **kwargs,
    )


def build_phenaki(cfg: dict):
    from phenaki_pytorch import MaskGit, Phenaki

    cvivit = build_cvivit(cfg)
    mg = cfg["maskgit"]
    tokens = cvivit.num_tokens_per_frames(cfg["frames"])
    maskgit = MaskGit(
        num_tokens=cfg["tokenizer"]["codebook_size"],
        max_seq_len=tokens,
        dim=mg["dim"],
        depth=mg["depth"],
        heads=mg["heads"],
        dim_head=mg["dim_head"],
        dim_context=cfg["text_dim"],
    )
    return Phenaki(cvivit=cvivit, maskgit=maskgit, steps=cfg["steps"], text_embed_dim=cfg["text_dim"])


def run(cfg: dict) -> dict:
    import torch
    from common import timeit

    torch.set_num_threads(cfg["threads"])
    peer_stubs.install(cfg["text_dim"], cfg["text_len"])
    import phenaki_pytorch

    origin = Path(phenaki_pytorch.__file__).resolve()
    if Path(sys.prefix).resolve() not in origin.parents:
        raise RuntimeError(f"expected phenaki_pytorch from the peer venv {sys.prefix}, got {origin}")
    rss_import = rss_mb()

    torch.manual_seed(cfg["seed"])
    gen = torch.Generator().manual_seed(cfg["seed"])
    frames, size = cfg["frames"], cfg["tokenizer"]["image_size"]
    videos = torch.rand(cfg["batch"], 3, frames, size, size, generator=gen)
    kind = cfg["kind"]
    info = {}

    # the same precision as our side: the torch switch for the whole process, or bf16 autocast in every call
    precision = cfg.get("precision", "fp32")
    if precision == "fp32-bf16mm":
        torch.backends.mkldnn.matmul.fp32_precision = "bf16"
    info["precision"] = precision

    def cast():
        return torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16")

    if kind == "tokenizer_train":
        model = build_cvivit(cfg).train()
        opt = torch.optim.Adam(model.parameters(), lr=1e-4)

        def fn():
            with cast():
                loss = model(videos)
            loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
            return loss

    elif kind == "phenaki_train":
        model = build_phenaki(cfg).train()
        opt = torch.optim.Adam(model.maskgit.parameters(), lr=1e-4)  # what 0.5.0's PhenakiTrainer optimizes
        text_embeds = peer_stubs.text_table(cfg["text_dim"], cfg["text_len"])[None].expand(cfg["batch"], -1, -1)
        info["maskgit_params_m"] = sum(p.numel() for p in model.maskgit.parameters()) / 1e6

        def fn():
            with cast():
                loss = model(videos, text_embeds=text_embeds)  # 0.5.0 derives text_mask from all-zero rows
            loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
            return loss

    elif kind == "sample":
        model = build_phenaki(cfg).eval()

        def fn():
            # texts go through the stubbed t5_encode_text: the fixed (text_len, 768) table
            with cast():
                return model.sample(
                    texts=["a squirrel examines an acorn"], num_frames=frames, cond_scale=cfg["cond_scale"]
                )

    else:
        raise ValueError(f"unknown kind {kind}")

    out = fn()
    info["output_shape"] = list(out.shape)
    result = timeit(fn, warmup=max(cfg["warmup"] - 1, 0), repeats=cfg["repeats"])
    result.update(info)
    result.update(
        library=f"phenaki-pytorch {phenaki_pytorch_version()}",
        torch=torch.__version__,
        threads=torch.get_num_threads(),
        rss_after_import_mb=rss_import,
        peak_rss_mb=rss_mb(),
    )
    return result


def phenaki_pytorch_version() -> str:
    from importlib.metadata import version

    return version("phenaki-pytorch")


def main():
    cfg = json.loads(sys.argv[1])
    os.environ.setdefault("OMP_NUM_THREADS", str(cfg["threads"]))
    try:
        result = run(cfg)
    except Exception as error:  # reported in the table, not fatal for the other configurations
        result = {"error": f"{type(error).__name__}: {error}", "traceback": traceback.format_exc(limit=6)}
    print(json.dumps(result))


if __name__ == "__main__":
    main()
