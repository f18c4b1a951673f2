"""Stage 2 of the quality benchmark: do samples follow their prompts in shape, colour and motion?

A tokenizer from stage 1 (`--tokenizer DIR`, or stage 1 run first with `quality.py --stage both`) tokenizes the
glyph training clips once (`pretokenize`, text embeddings cached per caption); a text-conditioned Phenaki with a
Token Critic trains on them with `PhenakiTrainer` and the library's defaults (batch 4 included, unless
--s2-batch-size says otherwise) under a step and/or wall-clock budget; then every prompt (the 156 seen
colour-shape-direction pairings and the 36 held-out ones) is sampled once per sampling variant (60 seen pairings
spread over all 156 unless --all-prompts) and judged by the glyph probe:

- shape / colour / direction accuracy, seen and held-out pairings,
- temporal consistency (the probe names the same shape in every frame),
- a Fréchet distance between real and sampled clips in the probe's feature space (per frame; not FVD),
- seconds per sample;

and, before the samples, the same judge on the real clips (a check of the judge) and on the tokenizer's
reconstructions of them (the most any sampler can reach through this tokenizer).

Stage 1's tokenizer keeps the 1024 codes the tokenizer-fidelity benchmark fixes; for stage 2 a 128-code tokenizer
(`--cvivit '{"codebook_size": 128}'`) reconstructs as well and lets MaskGit learn much faster in the same minutes
("The tokenizer's codebook size" in examples/demo_results.md).

    python benchmarks/quality.py --stage 2 --tokenizer runs/tok --s2-minutes 12
    python benchmarks/quality.py --stage both --minutes 8 --s2-minutes 12          # the issue's 20-minute budget
    python benchmarks/quality.py --stage both --minutes 7 --s2-minutes 13 --cvivit '{"codebook_size": 128}'
    python benchmarks/quality.py --stage 2 --tokenizer runs/tok --load-phenaki runs/ph \\
        --variants '[{"remasking": "confidence"}, {"remasking": "critic", "critic_cond_scale": 3.0}]'

Text: an offline hashed-word encoder (`phenaki_pytorch.text.hashed_word_encoder`): no pretrained model can be
downloaded here, and the benchmark asks about composition of known words, not language understanding.
"""

from __future__ import annotations

import json
import math
import tempfile
import time
from pathlib import Path

import torch

from phenaki_pytorch import CViViT, MaskGit, MaskGitScheduler, Phenaki, TokenCritic
from phenaki_pytorch.data import (
    PretokenizedDataset,
    SyntheticGlyphVideos,
    glyph_benchmark_splits,
    pretokenize,
    save_image,
    video_grid,
)
from phenaki_pytorch.evaluation import judge_prompt_samples, train_shape_probe
from phenaki_pytorch.text import hashed_word_encoder
from phenaki_pytorch.training import PhenakiTrainer

# sizes the benchmark fixes; every other MaskGit / critic / Phenaki / trainer option is the library's default
BENCH_MASKGIT = dict(dim=128, depth=4, heads=4, dim_head=32)
BENCH_CRITIC = dict(dim=128, depth=2, heads=4, dim_head=32, has_cross_attn=True)
DEFAULT_VARIANTS = [
    {"name": "confidence", "remasking": "confidence"},
    {"name": "critic", "remasking": "critic"},
]


def stage2_args(parser):
    group = parser.add_argument_group("stage 2")
    group.add_argument("--tokenizer", type=str, default=None, help="stage-1 tokenizer folder (save_pretrained)")
    group.add_argument("--s2-steps", type=int, default=None, help="Phenaki training steps")
    group.add_argument("--s2-minutes", type=float, default=None, help="Phenaki training wall clock")
    group.add_argument("--s2-batch-size", type=int, default=None,
                       help="Phenaki batch size (default: PhenakiTrainer's, 4)")
    group.add_argument("--maskgit", type=str, default="{}", help="JSON over BENCH_MASKGIT")
    group.add_argument("--critic", choices=("token", "self", "none"), default="token")
    group.add_argument("--critic-config", type=str, default="{}", help="JSON over BENCH_CRITIC")
    group.add_argument("--phenaki", type=str, default="{}", help="JSON of extra Phenaki options")
    group.add_argument("--phenaki-trainer", type=str, default="{}", help="JSON of extra PhenakiTrainer options")
    group.add_argument("--text-dim", type=int, default=64)
    group.add_argument("--variants", type=str, default=None, help="JSON list of phenaki.sample kwargs (+ name)")
    group.add_argument("--s2-curve-every", type=int, default=0, help="judge 48 prompts every N steps")
    group.add_argument("--sample-batch", type=int, default=48)
    group.add_argument("--all-prompts", action="store_true", help="all 156 seen pairings (default: 60 of them)")
    group.add_argument("--save-phenaki", type=str, default=None)
    group.add_argument("--story", action="store_true", help="also measure jumps at scene cuts of sampled stories")
    group.add_argument("--judge-online", action="store_true",
                       help="also judge the online weights, not only the EMA the trainer evaluates")
    group.add_argument("--scene-cut-prob", type=float, default=0.0,
                       help="share of training clips that are two scenes (SyntheticGlyphVideos(scene_cut_prob=...))")
    group.add_argument("--load-phenaki", type=str, default=None, help="skip training: judge this saved Phenaki")


def prompts_and_real(splits, num_seen=None):
    """`num_seen` seen pairings (spread over all of them; None: every one), then every held-out pairing, each
    with a real clip of it."""
    seen, held = splits.seen, splits.held_out
    n_seen, n_held = len(seen.combinations), len(held.combinations)
    picks = range(n_seen) if num_seen is None else [round(i * n_seen / num_seen) for i in range(num_seen)]
    prompts = [seen.captions[i] for i in picks] + held.captions[:n_held]
    real = torch.stack([seen[i]["video"] for i in picks] + [held[i]["video"] for i in range(n_held)])
    return prompts, real, set(held.captions)


@torch.no_grad()
def sample_all(phenaki, prompts, variant, batch, seed):
    kwargs = {k: v for k, v in variant.items() if k != "name"}
    if "scheduler" in kwargs:  # e.g. {"temperature_rule": "linear"}: a scheduler built from this model's defaults
        options = kwargs.pop("scheduler")
        base = phenaki.make_scheduler(kwargs.pop("steps", None), kwargs.pop("temperature", None))
        kwargs["scheduler"] = MaskGitScheduler(
            base.steps,
            **{"mask_schedule": phenaki.mask_schedule, "temperature": base.temperature,
               "temperature_rule": base.temperature_rule, **options},
        )
    generator = torch.Generator().manual_seed(seed)
    out = []
    for i in range(0, len(prompts), batch):
        out.append(phenaki.sample(texts=prompts[i : i + batch], num_frames=9, generator=generator, **kwargs))
    return torch.cat(out)


@torch.no_grad()
def reference_reports(cvivit, real, prompts, probe, held_out, batch=64):
    """The judge's verdicts on the real clips themselves (a check of the judge) and on the tokenizer's
    reconstructions of them (the ceiling of any sampler that decodes through this tokenizer)."""
    recon = torch.cat([cvivit(real[i : i + batch], return_recons_only=True) for i in range(0, len(real), batch)])
    return {
        name: judge_prompt_samples(videos.clamp(0, 1), prompts, probe, held_out=held_out, real_videos=real)
        for name, videos in (("real clips", real), ("tokenizer recon", recon))
    }


def report_row(name, report, seconds):
    """One table row of a judged set (printed now, with its per-frame shape accuracy under it) for the summary."""
    acc = report.accuracy
    row = (
        f"{name:<22}"
        + "".join(f"{acc[a]['seen']:>6.0%}/{acc[a]['held_out']:<5.0%}" for a in ("shape", "color", "direction"))
        + f"{report.temporal_consistency:>9.0%}{report.probe_frechet:>9.2f}"
        + (f"{seconds:>9.3f}" if seconds is not None else f"{'':>9}")
    )
    print(row, flush=True)
    print(f"{'':<22}shape by frame: " + " ".join(f"{a:.0%}" for a in report.shape_by_frame), flush=True)
    return row


def grid_picture(real, samples, prompts, path, count=12):
    """For `count` prompts: the real clip's frames 0, 4, 8 beside the sample's, 4x upscaled."""
    frames = [0, 4, 8]
    step = max(len(prompts) // count, 1)
    picks = list(range(0, len(prompts), step))[:count]
    tiles = []
    for i in picks:
        tiles.append(torch.cat(list(real[i][:, frames].unbind(1)), dim=-1))
        tiles.append(torch.cat(list(samples[i][:, frames].unbind(1)), dim=-1))
    grid = video_grid(torch.stack(tiles).unsqueeze(2), nrow=2, padding=2, pad_value=1.0)
    grid = torch.nn.functional.interpolate(grid[:, 0][None], scale_factor=4, mode="nearest")[0]
    save_image(grid, path)
    return [prompts[i] for i in picks]


# first scenes of 9 frames (1 + 4 * temporal patch): no window is cut short, so prime_with="tokens" carries ids at
# every cut instead of falling back to frames at the first. A glyph travels 12 px per 8 frames in a 32 px frame
# and is 13-14 px wide, so it cannot travel one way for two scenes (24 px) without leaving the frame.
# "one-way" stories ask exactly that (two scenes in one direction): a glyph that stays in frame must jump back.
ONE_WAY_STORIES = [
    [("a red ring moving right", 9), ("a red ring moving down", 8), ("a blue ring moving down", 8)],
    [("a green cross moving left", 9), ("a green cross moving up", 8), ("a green square moving up", 8)],
    [("a yellow triangle moving down", 9), ("a magenta triangle moving down", 8), ("a magenta bar moving right", 8)],
    [("a cyan ell moving up", 9), ("a cyan ell moving left", 8), ("a red ell moving left", 8)],
]
# "back-and-forth" stories reverse the direction at every cut, so every scene fits in the frame wherever the first
# one put the glyph: a cut need not move it at all. Seen pairings only.
BACK_AND_FORTH_STORIES = [
    [("a red square moving right", 9), ("a red square moving left", 8), ("a blue square moving right", 8)],
    [("a green cross moving up", 9), ("a green cross moving down", 8), ("a green ring moving up", 8)],
    [("a yellow triangle moving left", 9), ("a cyan triangle moving right", 8), ("a cyan ring moving left", 8)],
    [("a cyan ell moving down", 9), ("a cyan ell moving up", 8), ("a red ell moving down", 8)],
]
STORY_SETS = {"back-and-forth": BACK_AND_FORTH_STORIES, "one-way": ONE_WAY_STORIES}


@torch.no_grad()
def held_out_probe_tokens(cvivit, held, count=192):
    """Token ids (b, n), text captions and a foreground mask of `count` held-out clips: the tokens whose id is
    not the clip set's most common (background) id."""
    videos = torch.stack([held[i]["video"] for i in range(min(count, len(held)))])
    ids = torch.cat([cvivit.tokenize(videos[i : i + 64]).flatten(1) for i in range(0, len(videos), 64)])
    background = torch.mode(ids.flatten()).values
    captions = [held[i]["text"] if "text" in held[i] else held.captions[i] for i in range(len(videos))]
    return ids, captions, ids != background


@torch.no_grad()
def masked_foreground_ce(phenaki, probe_tokens, ratio=0.5, seed=0):
    """MaskGit's cross-entropy (nats) and top-1 accuracy on masked *foreground* tokens of held-out clips, a
    fixed `ratio` of all tokens masked with a fixed seed: how well it completes a glyph from what it sees.
    Background tokens are excluded because they are trivially predictable and would hide the glyphs."""
    ids, captions, foreground = probe_tokens
    h, w = phenaki._patch_shape()
    generator = torch.Generator().manual_seed(seed)
    masked = torch.rand(ids.shape, generator=generator) < ratio
    model = phenaki.maskgit.eval()
    text_embeds, text_mask = phenaki._text_condition(captions, None, None, len(captions))
    logits = model(ids.masked_fill(masked, model.mask_id), text_embeds=text_embeds, text_mask=text_mask,
                   video_patch_shape=(h, w), cond_drop_prob=0.0)
    pick = masked & foreground
    ce = torch.nn.functional.cross_entropy(logits[pick].float(), ids[pick])
    accuracy = (logits[pick].argmax(-1) == ids[pick]).float().mean()
    return round(float(ce), 3), round(float(accuracy), 3)


@torch.no_grad()
def story_jumps(phenaki, seed, out):
    """Centroid jump at scene cuts against the motion inside scenes, for each story set and a few primed-frame
    counts."""
    from phenaki_pytorch.evaluation import scene_cut_jumps, summarize_scene_cuts
    from phenaki_pytorch.story import sample_story

    rows = {}
    for set_name, stories in STORY_SETS.items():
        primes = ((1, "frames"), (3, "tokens"), (5, "frames"), (5, "tokens"), (7, "frames"), (7, "tokens"))
        for prime, prime_with in primes:
            reports, videos = [], []
            for index, scenes in enumerate(stories):
                story = sample_story(phenaki, scenes, prime_frames=prime, prime_with=prime_with, show_progress=False,
                                     generator=torch.Generator().manual_seed(seed + index))
                reports.append(scene_cut_jumps(story.video[0], [scene.start for scene in story.scenes]))
                videos.append(story.video)
            # a story whose frames beside every cut show no glyph has no jump to measure: the summary averages the
            # rest and counts them, rather than letting one NaN hide the whole row
            summary = summarize_scene_cuts(reports)
            jump, motion, missing = summary.jump, summary.motion, summary.stories - summary.measured
            rows[f"{set_name}, {prime} {prime_with}"] = {
                "jump_px": round(jump, 2), "motion_px_per_frame": round(motion, 2),
                "ratio": round(summary.ratio, 2) if math.isfinite(summary.ratio) else None,
                "stories_without_a_measurable_cut": missing,
            }
            unmeasured = f" ({missing} of {summary.stories} stories had no glyph beside a cut)" if missing else ""
            print(f"{set_name} stories, {prime} primed frames ({prime_with}): jump {jump:.2f} px at cuts, motion "
                  f"{motion:.2f} px/frame inside scenes, ratio {jump / max(motion, 1e-6):.2f}{unmeasured}", flush=True)
            if prime == 5:
                strip = torch.cat(videos)  # (stories, 3, f, h, w): every other frame side by side
                tiles = torch.cat(list(strip[:, :, ::2].unbind(2)), dim=-1).unsqueeze(2)
                grid = video_grid(tiles, nrow=1, padding=2, pad_value=1.0)
                grid = torch.nn.functional.interpolate(grid[:, 0][None], scale_factor=3, mode="nearest")[0]
                save_image(grid, out / f"stories_{set_name}_{prime_with}.png")
    return rows


def build_phenaki(args, cvivit, text_encoder):
    h, w = cvivit.patch_grid()
    seq = cvivit.num_token_frames(9) * h * w
    mg_config = {**BENCH_MASKGIT, **json.loads(args.maskgit)}
    maskgit = MaskGit(num_tokens=cvivit.codebook_size, max_seq_len=seq, dim_context=args.text_dim, **mg_config)
    critic, extra = None, {}
    critic_config = {**BENCH_CRITIC, **json.loads(args.critic_config)}
    if args.critic == "token":
        critic = TokenCritic(
            num_tokens=cvivit.codebook_size, max_seq_len=seq, dim_context=args.text_dim, **critic_config
        )
    elif args.critic == "self":
        extra["self_token_critic"] = True
    phenaki = Phenaki(
        cvivit=cvivit, maskgit=maskgit, critic=critic, text_encoder=text_encoder, **extra, **json.loads(args.phenaki)
    )
    return phenaki, {"maskgit": mg_config, "critic": critic_config if args.critic == "token" else args.critic}


def stage2(args, cvivit=None):
    torch.set_num_threads(args.threads)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if cvivit is None:
        if args.tokenizer is None:
            raise SystemExit("stage 2 needs --tokenizer DIR (or --stage both)")
        cvivit = CViViT.from_pretrained(args.tokenizer)
    cvivit.eval()
    splits = glyph_benchmark_splits(args.train_clips, args.eval_clips, seed=args.seed)
    probe = train_shape_probe(splits.train, seed=args.seed)
    prompts, real, held_out = prompts_and_real(splits, None if args.all_prompts else 60)
    text_encoder = hashed_word_encoder(args.text_dim)
    variants = json.loads(args.variants) if args.variants else DEFAULT_VARIANTS
    if args.critic == "none" and not args.load_phenaki:  # nothing to re-mask with: confidence variants only
        variants = [v for v in variants if v.get("remasking") != "critic"]
    results = {"variants": {}, "curve": []}

    if args.load_phenaki:
        phenaki = Phenaki.from_pretrained(args.load_phenaki, text_encoder=text_encoder)
        results["loaded"] = args.load_phenaki
    else:
        if args.s2_steps is None and args.s2_minutes is None:
            raise SystemExit("stage 2: give --s2-steps, --s2-minutes or both")
        started = time.perf_counter()
        train_set = splits.train
        if args.scene_cut_prob:  # the same clips and seed, a share of them cut into two scenes; the probe keeps its own
            train = splits.train
            train_set = SyntheticGlyphVideos(len(train), exclude=train.excluded, seed=train.seed,
                                             scene_cut_prob=args.scene_cut_prob)
        tokens_dir = pretokenize(
            train_set, cvivit, tempfile.mkdtemp(prefix="quality-tokens-"), text_encoder=text_encoder,
            batch_size=64, show_progress=False,
        )
        dataset = PretokenizedDataset(tokens_dir)
        tokenize_seconds = time.perf_counter() - started
        print(f"tokenized {len(dataset)} training clips in {tokenize_seconds:.0f} s")

        torch.manual_seed(args.seed)
        phenaki, configs = build_phenaki(args, cvivit, text_encoder)
        trainer_kwargs = json.loads(args.phenaki_trainer)
        if args.s2_batch_size is not None:
            if "batch_size" in trainer_kwargs:
                raise SystemExit("give the batch once: --s2-batch-size or --phenaki-trainer '{\"batch_size\": ...}'")
            trainer_kwargs["batch_size"] = args.s2_batch_size
        trainer = PhenakiTrainer(
            phenaki,
            dataset=dataset,
            num_frames=9,
            num_train_steps=args.s2_steps or 10**9,
            valid_frac=0,
            save_model_every=10**9,
            save_results_every=10**9,
            results_folder=tempfile.mkdtemp(prefix="quality-s2-"),
            seed=args.seed,
            **trainer_kwargs,
        )
        results.update(configs=configs, trainer=trainer_kwargs, phenaki_options=json.loads(args.phenaki),
                       scene_cut_prob=args.scene_cut_prob,
                       batch_size=trainer.batch_size, tokenize_seconds=round(tokenize_seconds, 1))
        deadline = start = time.perf_counter()
        deadline += args.s2_minutes * 60 if args.s2_minutes else float("inf")
        quick = list(range(0, len(prompts), 4))  # a quarter of the prompts, seen and held out
        probe_tokens = held_out_probe_tokens(cvivit, splits.held_out) if args.s2_curve_every else None
        logs = {}
        judging = 0.0  # seconds spent judging curve points, kept out of the training time
        with trainer.matmul_precision():
            while (args.s2_steps is None or trainer.step < args.s2_steps) and time.perf_counter() < deadline:
                logs = trainer.train_step()
                if args.s2_curve_every and trainer.step % args.s2_curve_every == 0:
                    paused = time.perf_counter()
                    model = trainer.eval_model.eval()
                    videos = sample_all(model, [prompts[i] for i in quick], variants[0], args.sample_batch, args.seed)
                    report = judge_prompt_samples(videos, [prompts[i] for i in quick], probe, held_out=held_out)
                    fg_ce, fg_acc = masked_foreground_ce(model, probe_tokens)
                    point = {"step": trainer.step, "seconds": round(paused - start - judging, 1),
                             "loss": logs.get("loss"),
                             "held_out_fg_ce": fg_ce, "held_out_fg_acc": fg_acc,
                             **{a: round(report.accuracy[a]["all"], 3) for a in ("shape", "color", "direction")},
                             "consistency": round(report.temporal_consistency, 3),
                             "shape_by_frame": [round(a, 3) for a in report.shape_by_frame]}
                    results["curve"].append(point)
                    print(json.dumps(point), flush=True)
                    judging += time.perf_counter() - paused
                    deadline += time.perf_counter() - paused  # judging is not training time
        train_seconds = time.perf_counter() - start - judging
        results.update(steps=trainer.step, train_seconds=round(train_seconds, 1), final_logs=logs)
        print(f"\nPhenaki: {trainer.step} steps in {train_seconds:.0f} s "
              f"({1000 * train_seconds / max(trainer.step, 1):.0f} ms/step, batch {trainer.batch_size})")
        phenaki = trainer.eval_model
        if args.save_phenaki:
            phenaki.save_pretrained(args.save_phenaki)
        if args.judge_online and trainer.eval_model is not trainer.unwrapped_model:
            online = trainer.unwrapped_model.eval()  # the raw weights beside the EMA the trainer evaluates
            variants = variants + [{**v, "name": f"{v.get('name', 'variant')} (online)", "model": online}
                                   for v in variants]

    phenaki.eval()
    header = (f"{'variant':<22}{'shape s/h':>12}{'colour s/h':>12}{'dir s/h':>12}{'consist':>9}"
              f"{'probe FD':>9}{'s/sample':>9}")
    rows = []
    # the same judge on the real clips and on the tokenizer's reconstructions of them: what a perfect MaskGit
    # could score through this tokenizer (the reconstructions' FD is against the very clips they reconstruct, so
    # it reads lower than a sampler of the same quality would get)
    for name, report in reference_reports(cvivit, real, prompts, probe, held_out).items():
        results.setdefault("reference", {})[name] = report.as_dict()
        rows.append(report_row(name, report, None))
    for index, variant in enumerate(variants):
        name = variant.get("name") or json.dumps({k: v for k, v in variant.items()})
        started = time.perf_counter()
        model = variant.get("model", phenaki)
        variant = {k: v for k, v in variant.items() if k != "model"}
        videos = sample_all(model, prompts, variant, args.sample_batch, args.seed)
        seconds = (time.perf_counter() - started) / len(prompts)
        report = judge_prompt_samples(videos, prompts, probe, held_out=held_out, real_videos=real)
        results["variants"][name] = {**report.as_dict(), "seconds_per_sample": round(seconds, 3), "kwargs": variant}
        rows.append(report_row(name, report, seconds))
        if index == 0 or name == "critic":
            shown = grid_picture(real, videos, prompts, out / f"samples_{name}.png")
            results["variants"][name]["grid_prompts"] = shown
    print("\n" + header + "\n" + "\n".join(rows))
    if args.story:
        results["story"] = story_jumps(phenaki, args.seed, out)
    (out / "stage2.json").write_text(json.dumps(results, indent=2, default=str))
    print(f"wrote {out / 'stage2.json'}")
    return results
