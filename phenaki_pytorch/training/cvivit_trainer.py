"""CViViTTrainer: trains the video tokenizer as a VQGAN with alternating generator / discriminator steps.

    trainer = CViViTTrainer(cvivit, folder="videos/", batch_size=4, grad_accum_every=4, num_train_steps=10000)
    trainer.train()

Results folder layout:
    checkpoints/checkpoint-<step>.pt    resumable training state (keep_last newest kept)
    samples/step-<step>.gif             held-out originals (left) beside reconstructions (right)
    metrics.jsonl                       one line of losses per step, validation loss every save_results_every
    tokenizer/                          the final (EMA if used) tokenizer, `CViViT.from_pretrained`-ready
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.optim.lr_scheduler import LambdaLR
from torch.utils.data import Dataset, IterableDataset

from ..cvivit import check_token_noise
from ..data._utils import check_positive_int
from .base import BaseTrainer, LearningRateSchedule, preserved_rng
from .optim import OPTIMIZERS, MuonAdamW, muon_param_groups

DEFAULT_OPTIMIZER = "muon"
# the learning rate when none is passed: Muon's measured best on the glyph benchmark, AdamW's long-standing default
DEFAULT_LR = {"muon": 1e-3, "adamw": 3e-4}
# the tokenizer's weight matrices that stay with AdamW under optimizer="muon": the patch embeddings (pixels in)
# and the quantizer's projections around the codebook (and the pixel head's last layer, see setup); the
# discriminator always trains with AdamW
MUON_EXCLUDE = ("to_first_tokens", "to_rest_tokens", "quantizer", "discr")

__all__ = ["CViViTTrainer"]


def _as_clip(video: Any) -> Any:
    """Images (c, h, w) become one-frame clips (c, 1, h, w); anything else passes through."""
    return video.unsqueeze(1) if isinstance(video, Tensor) and video.ndim == 3 else video


def collate_clips(items: list) -> dict[str, Any]:
    """`collate_videos`, also accepting bare images (c, h, w) as one-frame clips."""
    from ..data import collate_videos

    normalised = []
    for item in items:
        if isinstance(item, dict) and "video" in item:
            item = {**item, "video": _as_clip(item["video"])}
        elif isinstance(item, (tuple, list)) and item:
            item = (_as_clip(item[0]), *item[1:])
        else:
            item = _as_clip(item)
        normalised.append(item)
    return collate_videos(normalised)


def _log_name(name: str) -> str:
    """Breakdown keys as logged: losses get a `_loss` suffix, statistics keep their names."""
    return name if name in ("adaptive_weight", "codebook_usage", "codebook_perplexity") else f"{name}_loss"


def _masked_mse(recon: Tensor, video: Tensor, mask: Tensor | None) -> Tensor:
    if mask is None:
        return F.mse_loss(recon, video)
    per_frame = (recon - video).pow(2).mean(dim=(1, 3, 4))  # (b, f)
    return per_frame[mask].mean()


class CViViTTrainer(BaseTrainer):
    """Trains a `CViViT` on a folder of videos (or images) or on any dataset of clips.

    `dataset` items are dicts `{"video": (c, f, h, w), "frame_mask": (f,) bool, ...}`, `(video, ...)` tuples
    or bare tensors (images `(c, h, w)` count as one-frame clips). With `folder`, a `VideoDataset`
    (`ImageDataset` when `train_on_images`) is built at the model's `image_size`, or at `image_size=` when
    the model was built without one. Each step takes `grad_accum_every` micro-batches, makes one generator
    step and, when the model has a discriminator, one discriminator step on the same batches (gradient
    penalty every `apply_grad_penalty_every` steps).

    Learning rate: `lr` (generator; default 1e-3 with Muon, 3e-4 with AdamW) and `discr_lr` (default `lr`), after
    `lr_warmup_steps` of linear warm-up; `lr_schedule` "constant" (the default), "cosine" or "linear" decays both
    to `lr_min_ratio` times their peak at `num_train_steps` (see `LearningRateSchedule`).

    Optimizer: `optimizer="muon"` (the default; "adamw" under FSDP, whose shards hold slices of a matrix) steps the
    tokenizer's transformer and pixel-head weight matrices with Muon and the rest (patch embeddings, the
    quantizer's projections, norms, biases, convolutions) with AdamW, in one `MuonAdamW`; the discriminator always
    has its own AdamW. On the glyph benchmark's 5-minute tokenizer (AVX2 EPYC, 2 threads) it raised held-out PSNR
    from 23.3 to 26.0 dB and the frames the shape probe reads right in reconstructions from 95 to 99.7%, where
    AdamW at lr 1e-3 stayed at 23.3 dB. `optimizer="adamw"` is AdamW alone (the previous default). A checkpoint
    resumes only with the optimizer it was saved with.
    """

    find_unused_parameters = True  # the discriminator idles in the generator pass, and vice versa
    progress_keys = ("loss", "recon_loss", "discr_loss", "codebook_usage")

    def __init__(
        self,
        cvivit: nn.Module,
        *,
        folder: str | Path | None = None,
        dataset: Dataset | None = None,
        num_frames: int = 17,
        image_size: int | tuple[int, int] | None = None,
        batch_size: int = 4,
        grad_accum_every: int = 1,
        num_train_steps: int = 10000,
        lr: float | None = None,
        discr_lr: float | None = None,
        wd: float = 0.0,
        lr_warmup_steps: int = 0,
        lr_schedule: str = "constant",
        lr_min_ratio: float = 0.1,
        max_grad_norm: float | None = 0.5,
        discr_max_grad_norm: float | None = None,
        train_on_images: bool = False,
        use_ema: bool = True,
        ema_beta: float = 0.995,
        ema_update_every: int = 1,
        ema_update_after_step: int = 0,
        apply_grad_penalty_every: int = 4,
        valid_frac: float | None = None,
        valid_dataset: Dataset | None = None,
        random_split_seed: int | None = None,
        save_results_every: int = 100,
        save_model_every: int = 1000,
        results_folder: str | Path = "./results",
        keep_last: int | None = 3,
        resume: bool | str | Path = False,
        mixed_precision: str = "no",
        fp32_matmul: str = "auto",
        log_with: str | list | None = None,
        seed: int = 0,
        num_workers: int = 0,
        cpu: bool = False,
        accelerate_kwargs: dict | None = None,
        max_nonfinite_in_a_row: int | None = None,
        fsdp: bool | Any = None,
        collapse_warn_usage: float = 0.05,
        collapse_warn_after: int = 100,
        decoder_only: bool = False,
        decoder_token_noise: float | None = None,
        optimizer: str | None = None,
    ):
        if optimizer not in (None, *OPTIMIZERS):
            raise ValueError(f"optimizer must be one of {OPTIMIZERS} or None (the default for the setup), got {optimizer!r}")
        if (folder is None) == (dataset is None):
            raise ValueError("pass exactly one of folder= (a directory of videos or images) or dataset=")
        if valid_frac is not None and not 0.0 <= valid_frac < 1.0:
            raise ValueError(f"valid_frac must lie in [0, 1) or be None, got {valid_frac}")
        check_positive_int("save_results_every", save_results_every)
        check_positive_int("ema_update_every", ema_update_every)
        if apply_grad_penalty_every < 0:
            raise ValueError("apply_grad_penalty_every must be >= 0")
        schedule = LearningRateSchedule(
            lr_schedule, warmup_steps=lr_warmup_steps, total_steps=num_train_steps, min_ratio=lr_min_ratio
        )
        super().__init__(
            num_train_steps=num_train_steps,
            batch_size=batch_size,
            grad_accum_every=grad_accum_every,
            max_grad_norm=max_grad_norm,
            results_folder=results_folder,
            save_model_every=save_model_every,
            keep_last=keep_last,
            mixed_precision=mixed_precision,
            fp32_matmul=fp32_matmul,
            log_with=log_with,
            project_name="cvivit",
            seed=seed,
            num_workers=num_workers,
            cpu=cpu,
            accelerate_kwargs=accelerate_kwargs,
            max_nonfinite_in_a_row=max_nonfinite_in_a_row,
            fsdp=fsdp,
        )
        if optimizer == "muon" and self.is_sharded:
            raise ValueError("optimizer='muon' orthogonalises whole weight matrices, which FSDP shards: pass "
                             "optimizer='adamw' (the default under FSDP)")
        self.optimizer_name = optimizer or ("adamw" if self.is_sharded else DEFAULT_OPTIMIZER)
        self.cvivit = cvivit
        self.folder, self.dataset = folder, dataset
        self.num_frames, self.image_size = num_frames, image_size
        self.train_on_images = train_on_images
        lr = lr if lr is not None else DEFAULT_LR[self.optimizer_name]
        self.lr, self.wd, self.lr_warmup_steps = lr, wd, lr_warmup_steps
        self.lr_schedule, self.lr_min_ratio, self._lr_multiplier = lr_schedule, lr_min_ratio, schedule
        self.discr_lr = discr_lr if discr_lr is not None else lr
        self.discr_max_grad_norm = discr_max_grad_norm
        self.use_ema = use_ema
        self.ema_kwargs = dict(beta=ema_beta, update_every=ema_update_every, update_after_step=ema_update_after_step)
        self.apply_grad_penalty_every = apply_grad_penalty_every
        self.valid_frac, self.valid_dataset = valid_frac, valid_dataset
        self.random_split_seed = seed if random_split_seed is None else random_split_seed
        self.save_results_every = save_results_every
        self.samples_folder = self.results_folder / "samples"
        self.collapse_warn_usage, self.collapse_warn_after = collapse_warn_usage, collapse_warn_after
        if decoder_token_noise is not None:
            check_token_noise(decoder_token_noise)
        self.decoder_only, self.decoder_token_noise = bool(decoder_only), decoder_token_noise
        # what every training forward passes besides the batch (nothing, unless asked: other models may lack them)
        self._forward_kwargs: dict[str, Any] = {}
        if decoder_only:
            self._forward_kwargs["decoder_only"] = True
        if decoder_token_noise is not None:
            self._forward_kwargs["decoder_token_noise"] = float(decoder_token_noise)
        self._collapse_warned = False
        self._valid_batch: dict[str, Any] | None = None
        self._last_batch: dict[str, Any] | None = None
        self.setup()
        self.resume(resume)

    # ------------------------------------------------------------------ setup

    def _build_dataset(self) -> Dataset:
        if self.dataset is not None:
            if not isinstance(self.dataset, IterableDataset) and not (
                hasattr(self.dataset, "__len__") and hasattr(self.dataset, "__getitem__")
            ):
                raise TypeError(
                    "dataset must be a map-style Dataset with __len__ and __getitem__ (shuffled and resumed by "
                    f"index) or a torch IterableDataset (read in its own order), got {type(self.dataset).__name__}"
                )
            return self.dataset
        model_size = getattr(self.cvivit, "image_size", None)
        size = self.image_size if self.image_size is not None else model_size
        if size is None:
            raise ValueError(
                "the CViViT was built without image_size, so the trainer cannot tell what size to read the "
                "videos at: pass image_size=(height, width) to CViViTTrainer (or build the CViViT with image_size)"
            )
        size = size if isinstance(size, tuple) else (size, size)
        if model_size is not None and tuple(model_size) != size:
            raise ValueError(f"image_size={size} differs from the CViViT's image_size={tuple(model_size)}")
        from ..data import ImageDataset, VideoDataset

        if self.train_on_images:
            return ImageDataset(self.folder, size, seed=self.seed)
        self.cvivit.num_token_frames(self.num_frames)  # ValueError naming the valid frame counts
        return VideoDataset(self.folder, self.num_frames, size, seed=self.seed)

    def setup(self):
        cvivit = self.cvivit
        for method in ("generator_parameters", "discriminator_parameters"):
            if not callable(getattr(cvivit, method, None)):
                raise TypeError(f"cvivit must be a CViViT (with .{method}()), got {type(cvivit).__name__}")
        dataset = self._build_dataset()
        self.set_data(
            dataset,
            collate_clips,
            valid_frac=self.valid_frac,
            split_seed=self.random_split_seed,
            valid_dataset=self.valid_dataset,
        )

        self.has_discr = getattr(cvivit, "discr", None) is not None and len(cvivit.discriminator_parameters()) > 0
        status = getattr(cvivit, "perceptual_status", None)
        if status == "unavailable":
            self.print(
                "note: perceptual_network='auto' found no VGG16 weights on disk: training without a perceptual loss "
                "(see the README's C-ViViT options to supply weights or another network)"
            )
        if self.decoder_only:
            if not callable(getattr(cvivit, "decoder_parameters", None)):
                raise TypeError(
                    f"decoder_only=True needs a CViViT (with .decoder_parameters()), got {type(cvivit).__name__}"
                )
            if getattr(getattr(cvivit, "quantizer", None), "awaits_init", False):
                raise ValueError(
                    "decoder_only=True post-trains a trained tokenizer, but this CViViT's codebook was never "
                    "initialised: train it whole first (decoder_only=False)"
                )
        trained = cvivit.decoder_parameters() if self.decoder_only else cvivit.generator_parameters()
        if self.optimizer_name == "muon":
            matrices = {id(p) for g in muon_param_groups(cvivit, exclude=MUON_EXCLUDE) if g["muon"] for p in g["params"]}
            head = getattr(getattr(cvivit, "pixel_head", None), "last_layers", lambda: [])
            matrices -= {id(w) for w in head()}  # the layer that writes pixels (a linear head's) is an output layer
            groups = [{"params": chosen, "muon": muon} for muon in (True, False)
                      if (chosen := [p for p in trained if (id(p) in matrices) == muon])]
            generator_optimizer = MuonAdamW(groups, lr=self.lr, weight_decay=self.wd)
        else:
            generator_optimizer = self.make_adamw(trained, lr=self.lr, weight_decay=self.wd)
        optimizers = {"generator": generator_optimizer}
        if self.has_discr:
            optimizers["discriminator"] = self.make_adamw(
                cvivit.discriminator_parameters(), lr=self.discr_lr, weight_decay=self.wd
            )
        schedulers = {name: LambdaLR(opt, self._lr_multiplier) for name, opt in optimizers.items()}
        ema_kwargs = None
        if self.use_ema:
            # the EMA copy takes the encoder and the codebook as trained (the codebook is fitted to that encoder)
            # and averages the decoder: see CViViT.non_averaged_state_names
            no_ema = set(getattr(cvivit, "non_averaged_state_names", lambda: [])())
            ema_kwargs = {**self.ema_kwargs, "param_or_buffer_names_no_ema": no_ema}
        self.prepare(cvivit, optimizers, schedulers, ema_kwargs=ema_kwargs)

    def hparams(self) -> dict[str, Any]:
        return {
            **super().hparams(),
            "lr": self.lr,
            "discr_lr": self.discr_lr,
            "wd": self.wd,
            "lr_warmup_steps": self.lr_warmup_steps,
            "lr_schedule": self.lr_schedule,
            "lr_min_ratio": self.lr_min_ratio,
            "max_grad_norm": self.max_grad_norm,
            "num_frames": self.num_frames,
            "train_on_images": self.train_on_images,
            "use_ema": self.use_ema,
            "apply_grad_penalty_every": self.apply_grad_penalty_every,
            "decoder_only": self.decoder_only,
            "decoder_token_noise": self.decoder_token_noise,
            "optimizer": self.optimizer_name,
        }

    # ------------------------------------------------------------------ training

    @staticmethod
    def _video_and_mask(batch: dict[str, Any]) -> tuple[Tensor, Tensor | None]:
        video, mask = batch["video"], batch.get("frame_mask")
        if mask is not None and bool(mask.all()):
            mask = None  # no padded frames: the plain loss is the same and cheaper
        return video, mask

    def train_step(self) -> dict[str, float]:
        """One generator step and (with a discriminator) one discriminator step; returns the losses."""
        batches = self.next_batches()
        self._last_batch = batches[0]
        model = self.model  # the prepared (possibly DDP-wrapped) model: always called, never reached into
        model.train()  # a model handed over in eval mode (a loaded or exported tokenizer) trains in training mode

        unwrapped = self.unwrapped_model
        if hasattr(unwrapped, "gan_step"):
            unwrapped.gan_step.fill_(self.step)  # the adversarial warm-up counts trainer steps, not micro-batches
        adversarial = getattr(unwrapped, "adversarial_active", True)  # as the generator step sees it

        def generator_loss(batch):
            video, mask = self._video_and_mask(batch)
            loss, breakdown = model(video, mask=mask, return_loss_breakdown=True, **self._forward_kwargs)
            return {"loss": loss, **{_log_name(name): value for name, value in breakdown.items()}}

        lr = self.optimizers["generator"].param_groups[0]["lr"]  # read before the scheduler moves it
        logs = self.optimizer_step("generator", batches, generator_loss, max_grad_norm=self.max_grad_norm)
        logs["lr"] = lr
        self._watch_codebook(logs)

        # before the warm-up ends the adversarial term is off, so the discriminator is not trained either (as in
        # VQGAN, where its loss is multiplied by 0 until then): both start together
        if self.has_discr and adversarial:
            every = self.apply_grad_penalty_every
            penalty = every > 0 and self.step % every == 0

            def discriminator_loss(batch):
                video, mask = self._video_and_mask(batch)
                loss = model(
                    video, mask=mask, return_discr_loss=True, apply_grad_penalty=penalty, grad_penalty_scale=every
                )
                return {"loss": loss}

            discr_logs = self.optimizer_step(
                "discriminator", batches, discriminator_loss, max_grad_norm=self.discr_max_grad_norm
            )
            logs.update({f"discr_{key}": value for key, value in discr_logs.items()})

        self.finish_step()
        if hasattr(unwrapped, "gan_step"):
            unwrapped.gan_step.fill_(self.step)
        self._copy_counters_to_ema()
        return logs

    def _copy_counters_to_ema(self):
        """ema-pytorch averages and copies float tensors only: the copied integer/bool buffers (the codebook's
        `initted` flag, `gan_step`) are copied here, or an exported tokenizer would re-run its k-means
        initialisation (and lose its codebook) on the first step of a fine-tune."""
        if self.ema is None or not hasattr(self.unwrapped_model, "non_averaged_state_names"):
            return
        online = dict(self.unwrapped_model.named_buffers())
        ema = dict(self.ema.ema_model.named_buffers())
        for name in self.unwrapped_model.non_averaged_state_names():
            if name in online and name in ema and not online[name].is_floating_point():
                ema[name].copy_(online[name])

    def _watch_codebook(self, logs: dict[str, float]):
        """Warn when the batch uses under `collapse_warn_usage` of the codebook: once, and again only after usage
        has recovered to twice that (a usage hovering at the threshold is one collapse, not many)."""
        usage = logs.get("codebook_usage")
        if usage is None or self.step < self.collapse_warn_after:
            return
        if usage < self.collapse_warn_usage and not self._collapse_warned:
            self.print(
                f"warning: step {self.step}: the batch used only {usage:.1%} of the codebook (perplexity "
                f"{logs.get('codebook_perplexity', float('nan')):.1f}): the codebook is collapsing"
            )
            self._collapse_warned = True
        elif usage >= 2 * self.collapse_warn_usage:
            self._collapse_warned = False

    def after_step(self) -> dict[str, float]:
        if self.step % self.save_results_every == 0:
            return self.evaluate()
        return {}

    # ------------------------------------------------------------------ evaluation and export

    @property
    def eval_model(self) -> nn.Module:
        """The tokenizer used for samples and export: the EMA copy when `use_ema`, else the trained weights."""
        if self.ema is not None:
            return self.ema.ema_model
        return self._full_copy if self._full_copy is not None else self.unwrapped_model

    @torch.no_grad()
    def evaluate(self) -> dict[str, float]:
        """Validation reconstruction loss and a GIF of originals beside reconstructions (main process).

        Runs under `preserved_rng`, so evaluating never changes the training trajectory.
        """
        self.sync_full_copy()  # FSDP without EMA: whole weights for the main process (collective)
        if not self.is_main:
            return {}
        batch = self.validation_batch()
        key = "valid_recon_loss"
        if batch is None:  # no held-out split: show the latest training batch instead
            batch, key = self._last_batch, "train_recon_loss_eval"
        if batch is None:
            return {}
        from ..data import save_video

        batch = {k: v.to(self.device) if isinstance(v, Tensor) else v for k, v in batch.items()}
        video, mask = self._video_and_mask(batch)
        model = self.eval_model
        was_training = model.training
        model.eval()
        try:
            with preserved_rng():
                recon = model(video, return_recons_only=True)
            loss = _masked_mse(recon, video, mask).item()
            # what a generator's tokens decode to: PSNR, SSIM, flicker and codebook use of the held-out batch
            from ..evaluation import evaluate_tokenizer

            items = {"video": video, "frame_mask": mask} if mask is not None else {"video": video}
            report = evaluate_tokenizer(model, [items], progress=False)
        finally:
            model.train(was_training)
        prefix = "valid" if key.startswith("valid") else "train_eval"
        logs = {key: loss}
        for name in ("psnr", "ssim", "flicker", "codebook_usage", "codebook_perplexity"):
            value = getattr(report, name)
            if value is not None:
                logs[f"{prefix}_{name}"] = float(value)
        path = self.samples_folder / f"step-{self.step:08d}.gif"
        side_by_side = torch.cat((video, recon.clamp(0.0, 1.0)), dim=-1).float().cpu()
        save_video(side_by_side, path, fps=8)
        self.log_videos("reconstructions", side_by_side)  # originals (left) beside reconstructions (right)
        self.print(
            f"step {self.step}: {key} {loss:.5f}, PSNR {report.psnr:.2f} dB, codebook usage "
            f"{report.codebook_usage:.1%}, samples in {str(path)!r}"
        )
        return logs

    def on_train_end(self):
        self.sync_full_copy()
        if self.is_main:
            path = self.results_folder / "tokenizer"
            self.eval_model.save_pretrained(path)
            self.print(f"saved the {'EMA ' if self.ema is not None else ''}tokenizer to {str(path)!r}")
