"""Time the same configurations on our library and on phenaki-pytorch 0.5.0.

    python benchmarks/compare_peer.py                    # 10 repeats, 2 threads, fp32 vs fp32
    python benchmarks/compare_peer.py --quick --bf16     # 3 repeats, fp32 and bf16 autocast on both sides
    python benchmarks/compare_peer.py --precisions fp32,fp32-bf16mm,bf16 --rounds 3 --configs tokenizer_train
    python benchmarks/compare_peer.py --json out.json --threads 1

phenaki-pytorch 0.5.0 lives in its own virtual environment (`--peer-venv`, default
/work/peer-venv; built by this script when missing, see `ensure_peer_venv`). Each
(library, configuration) runs in its own subprocess, so peak memory (ru_maxrss) is per
configuration: ours with this interpreter (`--worker` below), theirs with the venv's
interpreter running `peer_stubs/peer_worker.py`, which never imports our package and
replaces 0.5.0's T5 and VGG downloads with local stand-ins (`peer_stubs/__init__.py`).

Precisions (`--precisions`, each run on both sides alike):
  fp32          plain fp32
  fp32-bf16mm   fp32 with oneDNN's bf16 kernels for fp32 matmuls (torch.backends.mkldnn.matmul.fp32_precision
                = "bf16"; ours through `fp32_matmul_precision`, what our trainers pick by default on a CPU where
                it keeps fp32 accuracy; theirs with the same torch switch set for the whole process)
  bf16          bf16 autocast on both sides

Configurations (identical on both sides, same seeds, same precision, same thread count):
  tokenizer train step  C-ViViT, batch 2, video 3x9x64x64, dim 128, codebook 1024, patch 8,
                        temporal patch 2, depth 2+2, 4 heads of 32, reconstruction only
                        (ours use_gan=False, perceptual_network=None; theirs use_vgg_and_gan=False),
                        forward + backward + optimizer step (each library's trainer optimizer:
                        ours fused AdamW, theirs Adam)
  MaskGit train step    Phenaki forward on raw videos (tokenizer above, frozen) with 768-dim text
                        embeddings passed in, MaskGit fwd + bwd + Adam step; small: dim 128, depth 2,
                        4 heads of 32, 9 frames; large: dim 512, depth 6, 8 heads of 64, 17 frames
  sample()              one video, 18 steps, cond_scale 3, small and large setting

Each time is the median of `--repeats` calls after warm-up calls (`common.timeit`); with
`--rounds N` every (configuration, precision, library) process runs N times, alternating
the libraries, and the table shows the median of the N medians.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from common import TOKENIZER  # noqa: E402 -- benchmarks/ is on the path from the line above

DEFAULT_PEER_VENV = Path(os.environ.get("PHENAKI_PEER_VENV", "/work/peer-venv"))
PEER_VERSION = "0.5.0"
PEER_REQUIREMENTS = HERE / "peer_stubs" / "peer-requirements.txt"
PEER_WORKER = HERE / "peer_stubs" / "peer_worker.py"

SMALL = dict(frames=9, maskgit=dict(dim=128, depth=2, heads=4, dim_head=32))
LARGE = dict(frames=17, maskgit=dict(dim=512, depth=6, heads=8, dim_head=64))

# key -> (table label, kind, setting)
CONFIGS = {
    "tokenizer_train": ("tokenizer train step (b2, 3x9x64x64, recon only)", "tokenizer_train", SMALL),
    "maskgit_train_small": ("MaskGit train step, small (dim 128, depth 2, 9 frames, b2)", "phenaki_train", SMALL),
    "sample_small": ("sample(), small (1 video, 9 frames, 18 steps, cond 3)", "sample", SMALL),
    "maskgit_train_large": ("MaskGit train step, large (dim 512, depth 6, 17 frames, b2)", "phenaki_train", LARGE),
    "sample_large": ("sample(), large (1 video, 17 frames, 18 steps, cond 3)", "sample", LARGE),
}


PRECISIONS = ("fp32", "fp32-bf16mm", "bf16")


def make_spec(key: str, args, precision: str = "fp32") -> dict:
    _, kind, setting = CONFIGS[key]
    repeats = 3 if args.quick else args.repeats
    if kind == "sample" and args.sample_repeats:
        repeats = args.sample_repeats
    return dict(
        key=key,
        kind=kind,
        batch=1 if kind == "sample" else 2,
        frames=setting["frames"],
        tokenizer=TOKENIZER,
        maskgit=setting["maskgit"],
        quantizer=args.quantizer,
        text_dim=768,
        text_len=16,
        steps=18,
        cond_scale=3.0,
        threads=args.threads,
        repeats=repeats,
        warmup=(1 if kind == "sample" else (2 if args.quick else 3)),
        seed=0,
        precision=precision,
    )


# ---------------------------------------------------------------------------- our side (worker)


def run_ours(spec: dict) -> dict:
    """One configuration on our library; runs inside its own subprocess."""
    import resource

    import torch
    from bench_cvivit import make_optimizer, precision
    from common import timeit
    from peer_stubs import text_table

    torch.set_num_threads(spec["threads"])
    import phenaki_pytorch
    from phenaki_pytorch import CViViT, MaskGit, Phenaki

    rss_import = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    torch.manual_seed(spec["seed"])
    gen = torch.Generator().manual_seed(spec["seed"])
    frames, size = spec["frames"], spec["tokenizer"]["image_size"]
    videos = torch.rand(spec["batch"], 3, frames, size, size, generator=gen)
    cast = lambda: precision(spec["precision"], "cpu")  # noqa: E731

    quantizer = {} if spec["quantizer"] == "default" else {"quantizer": spec["quantizer"]}
    cvivit = CViViT(**spec["tokenizer"], use_gan=False, perceptual_network=None, **quantizer)
    info = {}

    def build_phenaki() -> Phenaki:
        mg = spec["maskgit"]
        maskgit = MaskGit(
            num_tokens=spec["tokenizer"]["codebook_size"],
            max_seq_len=cvivit.num_tokens(frames),
            dim=mg["dim"],
            depth=mg["depth"],
            heads=mg["heads"],
            dim_head=mg["dim_head"],
            dim_context=spec["text_dim"],
            hourglass=0,  # 0.5.0's layout: every layer at full resolution (ours merges the middle from depth 4)
        )
        return Phenaki(cvivit=cvivit, maskgit=maskgit, text_encoder=None, text_embed_dim=spec["text_dim"])

    text_embeds = text_table(spec["text_dim"], spec["text_len"])[None].expand(spec["batch"], -1, -1)
    text_mask = torch.ones(text_embeds.shape[:2], dtype=torch.bool)
    kind = spec["kind"]

    if kind == "tokenizer_train":
        model = cvivit.train()
        opt = make_optimizer(model.generator_parameters())  # the trainers' fused AdamW

        def fn():
            with cast():
                loss = model(videos)
                loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
            return loss

    elif kind == "phenaki_train":
        model = build_phenaki().train()
        opt = make_optimizer(model.trainable_parameters())
        info["maskgit_params_m"] = sum(p.numel() for p in model.maskgit.parameters()) / 1e6

        def fn():
            with cast():
                loss = model(videos, text_embeds=text_embeds, text_mask=text_mask)
                loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
            return loss

    elif kind == "sample":
        model = build_phenaki().eval()

        def fn():
            with cast():
                return model.sample(
                    text_embeds=text_embeds,
                    text_mask=text_mask,
                    num_frames=frames,
                    cond_scale=spec["cond_scale"],
                    steps=spec["steps"],
                )

    else:
        raise ValueError(f"unknown kind {kind}")

    out = fn()
    info["output_shape"] = list(out.shape)
    result = timeit(fn, warmup=max(spec["warmup"] - 1, 0), repeats=spec["repeats"])
    result.update(info)
    result.update(
        library=f"phenaki_pytorch (ours) {getattr(phenaki_pytorch, '__version__', '')}".strip(),
        torch=torch.__version__,
        threads=torch.get_num_threads(),
        rss_after_import_mb=rss_import,
        peak_rss_mb=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    )
    return result


def worker_main(spec_json: str):
    import traceback

    spec = json.loads(spec_json)
    try:
        result = run_ours(spec)
    except Exception as error:  # reported in the table, not fatal for the other configurations
        result = {"error": f"{type(error).__name__}: {error}", "traceback": traceback.format_exc(limit=6)}
    print(json.dumps(result))


# ---------------------------------------------------------------------------- the peer venv


def peer_python(venv: Path) -> Path:
    return venv / "bin" / "python"


def _torch_requirement() -> str:
    """The exact torch that runs our side (e.g. 2.13.0+cpu), so both sides use the same build.

    An exact local version (+cpu) can only come from a local wheel (find-links); pip then
    fails instead of pulling a CUDA build from PyPI.
    """
    import torch

    return f"torch=={torch.__version__}"


def ensure_peer_venv(venv: Path) -> Path:
    """Create the peer venv with phenaki-pytorch 0.5.0 when missing (the commands of README.md)."""
    python = peer_python(venv)
    if python.exists():
        return python
    print(f"building the peer venv in {venv} (phenaki-pytorch {PEER_VERSION}) ...", file=sys.stderr)
    torch_req = _torch_requirement()
    with tempfile.TemporaryDirectory() as tmp:
        constraints = Path(tmp) / "constraints.txt"
        constraints.write_text(torch_req + "\n")
        steps = [
            [sys.executable, "-m", "venv", str(venv)],
            [str(python), "-m", "pip", "install", torch_req],
            # --no-deps: 0.5.0 also asks for torchvision (whose PyPI wheel breaks beside a CPU torch
            # and would be stubbed anyway) and transformers/sentencepiece (T5, stubbed)
            [str(python), "-m", "pip", "install", "--no-deps", f"phenaki-pytorch=={PEER_VERSION}"],
            [str(python), "-m", "pip", "install", "-c", str(constraints), "-r", str(PEER_REQUIREMENTS)],
        ]
        for cmd in steps:
            print("  $ " + " ".join(cmd), file=sys.stderr)
            done = subprocess.run(cmd, stdout=subprocess.DEVNULL)
            if done.returncode:
                raise SystemExit(f"peer venv setup failed at: {' '.join(cmd)}")
    return python


# ---------------------------------------------------------------------------- orchestration


def clean_env(threads: int) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "PYTHONSTARTUP")}
    env.update(
        OMP_NUM_THREADS=str(threads),
        MKL_NUM_THREADS=str(threads),
        HF_HUB_OFFLINE="1",
        TRANSFORMERS_OFFLINE="1",
        PYTHONDONTWRITEBYTECODE="1",
    )
    return env


def run_worker(cmd: list[str], threads: int, timeout: float) -> dict:
    with tempfile.TemporaryDirectory() as cwd:  # nothing of the repo on the path by accident
        try:
            done = subprocess.run(cmd, cwd=cwd, env=clean_env(threads), capture_output=True, text=True, timeout=timeout)
        except subprocess.TimeoutExpired:
            return {"error": f"timed out after {timeout:.0f} s"}
    for line in reversed(done.stdout.strip().splitlines()):
        if line.startswith("{"):
            return json.loads(line)
    tail = (done.stderr or done.stdout).strip().splitlines()[-5:]
    return {"error": f"exit code {done.returncode}: " + " | ".join(tail)}


def machine_info(threads: int) -> dict:
    import torch

    cpu = platform.processor() or "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:
        usable = os.cpu_count()
    return dict(
        cpu=cpu,
        cores=os.cpu_count(),
        usable_cores=usable,
        torch=torch.__version__,
        python=platform.python_version(),
        threads=threads,
        load_average_start=list(os.getloadavg()),
    )


def fmt_ms(result: dict | None) -> str:
    if not result:
        return ""
    if "error" in result:
        return "error"
    return f"{result['median_s'] * 1000:.1f}"


def fmt_mb(result: dict | None) -> str:
    if not result or "error" in result:
        return ""
    return f"{result['peak_rss_mb']:.0f}"


def fmt_ratio(a: dict | None, b: dict | None) -> str:
    if not a or not b or "error" in a or "error" in b:
        return ""
    return f"{a['median_s'] / b['median_s']:.2f}"


def median_of_rounds(results: list[dict]) -> dict | None:
    """One result from several rounds: the median of their medians (errors win: any error is shown)."""
    if not results:
        return None
    for result in results:
        if "error" in result:
            return result
    ordered = sorted(results, key=lambda r: r["median_s"])
    merged = dict(ordered[len(ordered) // 2])
    merged["round_medians_s"] = [r["median_s"] for r in results]
    merged["peak_rss_mb"] = max(r["peak_rss_mb"] for r in results)
    return merged


def render(report: dict) -> str:
    cols = [
        "configuration",
        "precision",
        "ours (ms)",
        f"{PEER_VERSION} (ms)",
        "ours / theirs",
        "ours / theirs fp32",
        "ours peak MB",
        "theirs peak MB",
    ]
    lines = ["| " + " | ".join(cols) + " |", "|" + "|".join(["---", "---"] + ["---:"] * (len(cols) - 2)) + "|"]
    errors = []
    for key, by_precision in report["results"].items():
        # 0.5.0 as it ships: fp32 (its trainers have no CPU mixed precision of their own), when measured
        peer_fp32 = median_of_rounds(by_precision.get("fp32", {}).get("peer", []))
        for precision, row in by_precision.items():
            ours, peer = median_of_rounds(row.get("ours", [])), median_of_rounds(row.get("peer", []))
            cells = [
                CONFIGS[key][0],
                precision,
                fmt_ms(ours),
                fmt_ms(peer),
                fmt_ratio(ours, peer),
                fmt_ratio(ours, peer_fp32),
                fmt_mb(ours),
                fmt_mb(peer),
            ]
            lines.append("| " + " | ".join(cells) + " |")
            for side, result in (("ours", ours), ("peer", peer)):
                if result and "error" in result:
                    errors.append(f"- {key} / {precision} / {side}: {result['error']}")
    m, s = report["machine"], report["settings"]
    rss = {
        side: max(
            (
                r.get("rss_after_import_mb", 0)
                for row in report["results"].values()
                for p in row.values()
                for r in p.get(side, [])
            ),
            default=0,
        )
        for side in ("ours", "peer")
    }
    rounds = f", median of {s['rounds']} rounds" if s["rounds"] > 1 else ""
    lines += [
        "",
        f"Machine: {m['cpu']}, {m['cores']} cores ({m['usable_cores']} usable), torch {m['torch']} "
        f"(peer: {m.get('peer_torch', '?')}), Python {m['python']}, threads per process: {m['threads']} "
        f"(OMP_NUM_THREADS={m['threads']}), load average {m['load_average_start'][0]:.2f} at start, "
        f"{m['load_average_end'][0]:.2f} at end.",
        f"Median of {s['repeats']} repeats ({s['sample_repeats']} for sample()) after warm-up{rounds}; precision as "
        f"listed, the same on both sides (fp32-bf16mm: fp32 with oneDNN's bf16 matmul kernels); quantizer: "
        f"{s['quantizer_note']}; optimizer: ours fused AdamW (our trainers'), theirs Adam; "
        f"each configuration in its own process (peak MB = ru_maxrss; of that, imports alone: ours "
        f"{rss['ours']:.0f} MB, {PEER_VERSION} {rss['peer']:.0f} MB). ours / theirs < 1 means ours is faster; 'ours / theirs fp32' divides by 0.5.0 in plain fp32.",
    ]
    if errors:
        lines += ["", "Errors:"] + errors
    return "\n".join(lines)


def main():
    if len(sys.argv) == 3 and sys.argv[1] == "--worker":
        return worker_main(sys.argv[2])
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--peer-venv", type=Path, default=DEFAULT_PEER_VENV, help="built here when missing")
    parser.add_argument("--threads", type=int, default=2, help="torch threads (and OMP_NUM_THREADS) for both sides")
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--sample-repeats", type=int, help="repeats for sample() (default: as --repeats)")
    parser.add_argument("--quick", action="store_true", help="3 repeats, shorter warm-up")
    parser.add_argument(
        "--precisions",
        default="fp32",
        help=f"comma-separated subset of {','.join(PRECISIONS)}, each run on both sides (default fp32)",
    )
    parser.add_argument("--bf16", action="store_true", help="add bf16 autocast to --precisions")
    parser.add_argument("--rounds", type=int, default=1, help="run everything N times, alternating; report medians")
    parser.add_argument(
        "--quantizer",
        choices=["default", "vq", "lfq"],
        default="default",
        help="default: each library's own default (ours VQ, 0.5.0 LFQ); vq/lfq: the same on both sides",
    )
    parser.add_argument("--configs", default=",".join(CONFIGS), help=f"comma-separated subset of {','.join(CONFIGS)}")
    parser.add_argument("--only", choices=["both", "ours", "peer"], default="both")
    parser.add_argument("--timeout", type=float, default=1800, help="seconds per configuration and library")
    parser.add_argument("--json", type=Path, help="also write the raw results here")
    parser.add_argument("--setup-only", action="store_true", help="build the peer venv and stop")
    args = parser.parse_args()

    precisions = [p.strip() for p in args.precisions.split(",") if p.strip()]
    if args.bf16 and "bf16" not in precisions:
        precisions.append("bf16")
    bad = [p for p in precisions if p not in PRECISIONS]
    if bad:
        parser.error(f"unknown precision(s) {bad}; choose from {list(PRECISIONS)}")
    if args.rounds < 1:
        parser.error("--rounds must be at least 1")
    keys = [k.strip() for k in args.configs.split(",") if k.strip()]
    unknown = [k for k in keys if k not in CONFIGS]
    if unknown:
        parser.error(f"unknown configuration(s) {unknown}; choose from {list(CONFIGS)}")

    python = ensure_peer_venv(args.peer_venv) if args.only != "ours" or args.setup_only else None
    if args.setup_only:
        print(python)
        return
    if python is not None and shutil.which(str(python)) is None:
        raise SystemExit(f"{python} is not executable")

    machine = machine_info(args.threads)
    notes = {
        "default": "each library's default (ours VQ, 0.5.0 LFQ)",
        "vq": "VQ on both sides",
        "lfq": "LFQ on both sides",
    }
    report = {
        "machine": machine,
        "settings": dict(
            threads=args.threads,
            repeats=3 if args.quick else args.repeats,
            sample_repeats=args.sample_repeats or (3 if args.quick else args.repeats),
            quantizer=args.quantizer,
            quantizer_note=notes[args.quantizer],
            peer_version=PEER_VERSION,
            configs=keys,
            precisions=precisions,
            rounds=args.rounds,
        ),
        "results": {},
    }
    sides = []
    if args.only in ("both", "ours"):
        sides.append(("ours", [sys.executable, str(Path(__file__).resolve()), "--worker"]))
    if args.only in ("both", "peer"):
        sides.append(("peer", [str(python), str(PEER_WORKER)]))
    for round_index in range(args.rounds):
        for key in keys:
            for precision in precisions:
                row = report["results"].setdefault(key, {}).setdefault(precision, {})
                # alternate which library goes first, so slow drift of the machine's load hits both alike
                for side, cmd in sides if round_index % 2 == 0 else sides[::-1]:
                    start = time.perf_counter()
                    spec = make_spec(key, args, precision)
                    result = run_worker(cmd + [json.dumps(spec)], args.threads, args.timeout)
                    row.setdefault(side, []).append(result)
                    status = (
                        result.get("error")
                        or f"{result['median_s'] * 1000:.1f} ms, peak {result['peak_rss_mb']:.0f} MB"
                    )
                    print(
                        f"[round {round_index + 1} / {key} / {precision} / {side}] {status} "
                        f"({time.perf_counter() - start:.0f} s)",
                        file=sys.stderr,
                        flush=True,
                    )
                    if side == "peer" and "torch" in result:
                        machine["peer_torch"] = result["torch"]
    machine["load_average_end"] = list(os.getloadavg())

    print(render(report), flush=True)
    if args.json:
        args.json.write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
