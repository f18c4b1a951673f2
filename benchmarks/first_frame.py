"""Where a sample goes wrong, token frame by token frame: the tokenizer's decoder or MaskGit?

For a Phenaki saved by `quality.py --stage 2 --save-phenaki DIR`, on the glyph benchmark's prompts and a real clip
of each (60 seen pairings and the 36 held-out ones), per token frame of the causal tokenizer (frame 0 is the single
image frame, the others are tubelets of `temporal_patch_size` frames):

- decoder: the probe on the reconstruction when a fraction of that token frame's ids is replaced by random codes
  (the others kept), i.e. how much the decoder amplifies wrong ids there;
- MaskGit: that whole token frame masked, the clip's real ids everywhere else; the share of its glyph ids (patches
  the glyph touches in the real clip) and of its background ids that one pass predicts exactly, and the probe on
  that frame after MaskGit fills it in with the model's own scheduler;
- the probe on each frame of plain samples (no real ids given), for comparison.

    python benchmarks/first_frame.py /path/to/saved_phenaki [--seed 0] [--threads 2]
"""

from __future__ import annotations

import argparse

import torch
from einops import rearrange
from quality_stage2 import prompts_and_real

from phenaki_pytorch import Phenaki
from phenaki_pytorch.data import glyph_benchmark_splits
from phenaki_pytorch.evaluation import judge_prompt_samples, train_shape_probe
from phenaki_pytorch.text import hashed_word_encoder


def glyph_patches(videos, patch_size, temporal_patch_size, threshold=0.2):
    """(b, t, h, w) True where a token's patch holds a glyph pixel in any of its frames: a pixel further than
    `threshold` from the clip's median colour in some channel."""
    background = videos.flatten(2).median(dim=-1).values[..., None, None, None]
    on = ((videos - background).abs().amax(dim=1) > threshold).float()  # (b, f, H, W)
    ph, pw = patch_size
    first = torch.nn.functional.max_pool2d(on[:, :1], (ph, pw))
    rest = torch.nn.functional.max_pool3d(on[:, None, 1:], (temporal_patch_size, ph, pw))[:, 0]
    return torch.cat((first, rest), dim=1).bool()


def frames_of(token_frame: int, temporal_patch_size: int) -> list[int]:
    """The video frames one token frame decodes to."""
    if token_frame == 0:
        return [0]
    start = 1 + (token_frame - 1) * temporal_patch_size
    return list(range(start, start + temporal_patch_size))


@torch.no_grad()
def fill_token_frame(phenaki, ids, prompts, token_frame, cond_scale, generator, batch=48):
    """Mask token frame `token_frame` of `ids` (b, t, h, w), keep the rest, and let MaskGit fill it in
    (`Phenaki.sample` with an inpainting mask, its default scheduler, confidence re-masking).

    Returns the filled ids and the one-pass argmax prediction of the masked frame (b, h * w)."""
    b, t, h, w = ids.shape
    span = slice(token_frame * h * w, (token_frame + 1) * h * w)
    draw = torch.zeros(1, t, h, w, dtype=torch.bool)
    draw[:, token_frame] = True
    guided = cond_scale != 1.0
    num_frames = phenaki.cvivit.num_video_frames(t)
    filled, first_pass = [], []
    for i in range(0, b, batch):
        texts = prompts[i : i + batch]
        embeds, mask = phenaki._text_condition(texts, None, None, len(texts))
        context_kv = phenaki.prepare_context(embeds, mask, guided=guided)
        seq = rearrange(ids[i : i + batch], "b t h w -> b (t h w)").clone()
        seq[:, span] = phenaki.maskgit.mask_id
        logits = phenaki.guided_logits(seq, context_kv, cond_scale if guided else None, (h, w))
        first_pass.append(logits[:, span].argmax(-1))
        filled.append(phenaki.sample(
            texts=texts, num_frames=num_frames, cond_scale=cond_scale, inpaint_codebook_ids=ids[i : i + batch],
            inpaint_mask=draw, remasking="confidence", generator=generator, return_codebook_ids=True,
        ))
    return torch.cat(filled), torch.cat(first_pass)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("phenaki", help="a Phenaki saved with save_pretrained (e.g. quality.py --save-phenaki)")
    parser.add_argument("--seed", type=int, default=0, help="benchmark split, probe and sampling seed")
    parser.add_argument("--text-dim", type=int, default=64, help="the hashed word encoder's size it was trained with")
    parser.add_argument("--rates", type=str, default="0.05,0.15", help="fractions of ids replaced by random codes")
    parser.add_argument("--cond-scales", type=str, default="1,3", help="guidance for the MaskGit rows")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)

    splits = glyph_benchmark_splits(4096, 256, seed=args.seed)
    probe = train_shape_probe(splits.train, seed=args.seed)
    prompts, real, held = prompts_and_real(splits, 60)
    phenaki = Phenaki.from_pretrained(args.phenaki, text_encoder=hashed_word_encoder(args.text_dim)).eval()
    cvivit = phenaki.cvivit
    tp = cvivit.temporal_patch_size
    generator = torch.Generator().manual_seed(args.seed)

    def judge(ids):
        videos = torch.cat([cvivit.decode_from_codebook_indices(ids[i : i + 48]).float().clamp(0, 1)
                            for i in range(0, len(ids), 48)])
        return judge_prompt_samples(videos, prompts, probe, held_out=held)

    def by_frame(report, frames):
        return " ".join(f"{report.shape_by_frame[f]:.0%}" for f in frames)

    with torch.no_grad():
        ids = torch.cat([cvivit.tokenize(real[i : i + 48]) for i in range(0, len(real), 48)])
        token_frames = ids.shape[1]
        glyph = glyph_patches(real, cvivit.patch_size, tp)
        recon = judge(ids)
        print(f"reconstructions: consistency {recon.temporal_consistency:.0%}, shape by frame "
              + " ".join(f"{a:.0%}" for a in recon.shape_by_frame))
        print("\ndecoder: probe on the frames of token frame k with a share of its ids replaced by random codes")
        for rate in (float(r) for r in args.rates.split(",")):
            cells = []
            for k in range(token_frames):
                noisy = ids.clone()
                flip = torch.rand(noisy[:, k].shape, generator=generator) < rate
                noisy[:, k][flip] = torch.randint(0, cvivit.codebook_size, (int(flip.sum()),), generator=generator)
                cells.append(f"k={k}: {by_frame(judge(noisy), frames_of(k, tp))}")
            print(f"  {rate:.0%} replaced | " + " | ".join(cells), flush=True)

        print("\nMaskGit: token frame k masked, the real ids elsewhere")
        for cond_scale in (float(c) for c in args.cond_scales.split(",")):
            for k in range(token_frames):
                on = glyph[:, k].flatten(1)
                filled, first_pass = fill_token_frame(phenaki, ids, prompts, k, cond_scale, generator)
                right = first_pass == ids[:, k].flatten(1)
                on_glyph = (right & on).sum() / on.sum().clamp(min=1)
                off_glyph = (right & ~on).sum() / (~on).sum().clamp(min=1)
                distinct = ids[:, k].flatten(1)[~on].unique().numel()
                print(f"  cond_scale {cond_scale:g}, k={k}: one-pass exact ids {on_glyph:.0%} on the glyph "
                      f"({on.float().mean():.0%} of ids), {off_glyph:.0%} off it ({distinct} distinct background ids); "
                      f"probe on its frames after filling {by_frame(judge(filled), frames_of(k, tp))}", flush=True)

        samples = torch.cat([phenaki.sample(texts=prompts[i : i + 48], num_frames=cvivit.num_video_frames(token_frames),
                                            generator=generator, return_codebook_ids=True)
                             for i in range(0, len(prompts), 48)])
        plain = judge(samples)
        print(f"\nplain samples (defaults): consistency {plain.temporal_consistency:.0%}, shape by frame "
              + " ".join(f"{a:.0%}" for a in plain.shape_by_frame))


if __name__ == "__main__":
    main()
