"""A small trainer base on `accelerate`: what every phenaki_pytorch trainer shares.

Protocol for subclasses:
    __init__   call `super().__init__(...)`, then build data, optimizers and EMA in `setup()`, then `resume(...)`
    setup()    `set_train_data(dataset)` and `prepare(model, {name: optimizer}, ...)`
    train_step()  `next_batches()` -> `optimizer_step(name, batches, compute_loss)` per optimizer ->
               `finish_step()`; returns a dict of floats
    after_step()  optional: periodic evaluation / samples (returns more logs)
    on_train_end()  optional: export the finished model

Determinism and resume. Batches come from `ResumableBatchSampler`, an endless stream of seeded per-epoch
permutations. Every step consumes exactly `grad_accum_every` micro-batches, so the stream position is a pure
function of the step, and a resumed run rebuilds the sampler at `step * grad_accum_every` instead of storing
a sampler state. RNG states (python, numpy, torch, CUDA) go into the checkpoint; evaluation runs inside
`preserved_rng()`, so taking samples never shifts the training randomness.

Precision. `mixed_precision="bf16"` runs each step under bf16 autocast (accelerate). In fp32, `fp32_matmul`
chooses how CPU matmuls run: 'auto' (default) uses oneDNN's bf16 kernels for fp32 matmuls where this CPU
keeps fp32-level accuracy with them (checked once per process, see `phenaki_pytorch.precision`), 'ieee'
plain fp32, 'bf16' those kernels unconditionally. The setting holds inside `train()` only.

Non-finite updates. `optimizer_step` checks the loss and the gradient norm once per update (one small
device-to-host sync; with several processes the decision is all-reduced, so every process skips together).
When either is NaN or inf the update is skipped: no optimizer step, gradients zeroed, and the model's buffers
(e.g. a VQ codebook that the forward pass moved with an EMA of the batch) restored from a snapshot taken
before the forward. A skipped update still counts as a step: the data position, the LR schedule, the EMA
update and the step counter advance as they would have, so the run stays a pure function of the step and
resume remains bit-exact. A batch that itself holds NaN or inf is caught before the forward pass (the model
never sees it). The skip is warned about, logged (`nonfinite_skipped` for that optimizer,
`nonfinite_skipped_total` from then on) and stored in checkpoints. After `max_nonfinite_in_a_row` skipped
updates of one optimizer in a row, training stops with `NonFiniteTrainingError`. Checkpoints and exports
refuse non-finite weights, so a poisoned run never replaces good files. Under fp16 with a grad scaler, gradient
overflow is the scaler's business (it skips the step and lowers the scale): only a non-finite loss counts there.

Resume. `resume=True` (or a folder) loads the newest checkpoint that reads and passes its checksum, warning
about each newer one it skipped; `metrics.jsonl` is cut back to the resumed step, so curves hold each step once.

Several processes. Every process runs the same code: DDP averages the gradients, so each optimizer step leaves
identical weights everywhere; model buffers that the forward pass changes (e.g. a VQ codebook updated from the
local batch) are re-broadcast from process 0 after each step. Every process also holds and updates the EMA:
the same update applied to identical weights keeps the EMA identical on all processes without communication,
so any process can evaluate or save it. Under FSDP the EMA stays a whole, unsharded module on every process too:
each update all-gathers the sharded parameters it reads (a collective every process makes, in the same order),
so the EMA is identical everywhere and is saved by the main process like the unsharded part of the state.
Checkpoints are written by the main process only; `save` is collective (every process must call it) because
gathering a sharded state dict can be, and because every process's random states are gathered into it: the
processes share a seed but may draw a data-dependent number of random values, so on resume with the same number
of processes each one gets its own states back (with another number, the main process's).
"""

from __future__ import annotations

import copy
import itertools
import json
import math
import os
import shutil
import uuid
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from accelerate import Accelerator
from accelerate.utils import (
    DistributedDataParallelKwargs,
    DistributedType,
    FullyShardedDataParallelPlugin,
    send_to_device,
    set_seed,
)
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset, IterableDataset, Sampler
from tqdm.auto import tqdm

from ..data._utils import check_positive_int
from ..precision import FP32_MATMUL_CHOICES, fp32_matmul_precision, resolve_fp32_matmul
from ..serialization import atomic_write_text
from .checkpoint import (
    SHARDS_DIR,
    TRAINER_STATE_NAME,
    CheckpointManager,
    get_rng_state,
    is_sharded_checkpoint,
    load_checkpoint,
    load_sharded_checkpoint,
    restore_checkpoint,
    save_checkpoint,
    set_rng_state,
    write_sharded_manifest,
)

__all__ = [
    "LR_SCHEDULES",
    "BaseTrainer",
    "LearningRateSchedule",
    "NonFiniteTrainingError",
    "ResumableBatchSampler",
    "preserved_rng",
]

LR_SCHEDULES = ("constant", "cosine", "linear")


class NonFiniteTrainingError(RuntimeError):
    """Training stopped: too many updates in a row had a NaN or inf loss or gradient."""


@contextmanager
def preserved_rng():
    """Run a block (evaluation, sampling) without changing any global random state afterwards."""
    state = get_rng_state()
    try:
        yield
    finally:
        set_rng_state(state)


class LearningRateSchedule:
    """The learning-rate multiplier of optimizer update `step` (0-based), for `torch.optim.lr_scheduler.LambdaLR`.

    A linear warm-up from ``1 / warmup_steps`` to 1 over the first `warmup_steps` updates, then:

    - ``"constant"``: 1 for ever;
    - ``"cosine"``: half a cosine from 1 down to `min_ratio` at update `total_steps`, `min_ratio` after it;
    - ``"linear"``: a straight line from 1 down to `min_ratio` at `total_steps`, `min_ratio` after it.

    A plain object rather than a closure, so that it pickles (trainer state, multiprocessing). Its state lives in
    the scheduler's step count, which checkpoints save, so a resumed run continues on the same curve.
    """

    def __init__(self, schedule: str = "constant", *, warmup_steps: int = 0, total_steps: int = 1,
                 min_ratio: float = 0.0):
        if schedule not in LR_SCHEDULES:
            raise ValueError(f"lr_schedule must be one of {LR_SCHEDULES}, got {schedule!r}")
        if warmup_steps < 0:
            raise ValueError(f"lr_warmup_steps must be >= 0, got {warmup_steps}")
        if schedule != "constant" and total_steps <= warmup_steps:
            raise ValueError(
                f"lr_schedule={schedule!r} decays between the warm-up's end ({warmup_steps} steps) and the last "
                f"training step, so it needs num_train_steps > lr_warmup_steps; got num_train_steps={total_steps}"
            )
        if not 0.0 <= min_ratio <= 1.0:
            raise ValueError(f"lr_min_ratio must lie in [0, 1], got {min_ratio}")
        self.schedule, self.warmup_steps, self.total_steps, self.min_ratio = (
            schedule, warmup_steps, total_steps, min_ratio
        )

    def __call__(self, step: int) -> float:
        if self.warmup_steps and step < self.warmup_steps:
            return (step + 1) / self.warmup_steps
        if self.schedule == "constant":
            return 1.0
        progress = min(max(step - self.warmup_steps, 0) / (self.total_steps - self.warmup_steps), 1.0)
        shape = 0.5 * (1.0 + math.cos(math.pi * progress)) if self.schedule == "cosine" else 1.0 - progress
        return self.min_ratio + (1.0 - self.min_ratio) * shape

    def __repr__(self) -> str:
        return (f"LearningRateSchedule({self.schedule!r}, warmup_steps={self.warmup_steps}, "
                f"total_steps={self.total_steps}, min_ratio={self.min_ratio})")


class ResumableBatchSampler(Sampler[list[tuple[int, int]]]):
    """Endless batches of `(epoch, index)` keys from seeded per-epoch permutations of `range(num_samples)`.

    The epochs are laid end to end as one stream of indices; global batch k is stream positions
    `[k * batch_size * world_size, (k + 1) * batch_size * world_size)` and process `rank` takes its slice of it.
    Starting at `start_batch` therefore reproduces exactly the batches an uninterrupted run would have drawn,
    and datasets smaller than a batch simply wrap into the next epoch.
    """

    def __init__(
        self,
        num_samples: int,
        batch_size: int,
        *,
        seed: int = 0,
        shuffle: bool = True,
        start_batch: int = 0,
        rank: int = 0,
        world_size: int = 1,
    ):
        if num_samples < 1:
            raise ValueError(f"the training set is empty (num_samples={num_samples})")
        if not 0 <= rank < world_size:
            raise ValueError(f"rank must lie in [0, world_size={world_size}), got {rank}")
        self.num_samples, self.batch_size = num_samples, batch_size
        self.seed, self.shuffle, self.start_batch = seed, shuffle, start_batch
        self.rank, self.world_size = rank, world_size

    def epoch_order(self, epoch: int) -> list[int]:
        if not self.shuffle:
            return list(range(self.num_samples))
        generator = torch.Generator().manual_seed((self.seed * 1_000_003 + epoch) % 2**63)
        return torch.randperm(self.num_samples, generator=generator).tolist()

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        global_batch = self.batch_size * self.world_size
        epoch, offset = divmod(self.start_batch * global_batch, self.num_samples)
        order = self.epoch_order(epoch)
        while True:
            keys: list[tuple[int, int]] = []
            while len(keys) < global_batch:
                if offset == self.num_samples:
                    epoch, offset, order = epoch + 1, 0, self.epoch_order(epoch + 1)
                take = min(global_batch - len(keys), self.num_samples - offset)
                keys.extend((epoch, i) for i in order[offset : offset + take])
                offset += take
            yield keys[self.rank * self.batch_size : (self.rank + 1) * self.batch_size]


class EpochSubset(Dataset):
    """`dataset[indices[i]]` for the key `(epoch, i)`; datasets with `set_epoch` are told the epoch first.

    The call happens wherever the item is read (also inside DataLoader workers), so per-epoch random crops
    follow the sampler's epoch.
    """

    def __init__(self, dataset: Dataset, indices: Sequence[int] | None = None):
        self.dataset = dataset
        self.indices = list(range(len(dataset))) if indices is None else list(indices)

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, key: tuple[int, int]):
        epoch, i = key
        if hasattr(self.dataset, "set_epoch"):
            self.dataset.set_epoch(epoch)
        return self.dataset[self.indices[i]]


class BaseTrainer:
    """Accelerator, results folder, seeding, resumable data, optimizer steps, EMA, checkpoints and the loop."""

    # DDP must tolerate parameters idle in a pass (e.g. a GAN's discriminator during the generator step)
    find_unused_parameters: bool = False
    progress_keys: tuple[str, ...] = ("loss",)
    # skipped (non-finite) updates of one optimizer in a row before training stops; set per instance to change
    max_nonfinite_in_a_row: int = 10

    def __init__(
        self,
        *,
        num_train_steps: int,
        batch_size: int,
        grad_accum_every: int = 1,
        max_grad_norm: float | None = None,
        results_folder: str | Path = "./results",
        save_model_every: int = 1000,
        keep_last: int | None = 3,
        mixed_precision: str = "no",
        fp32_matmul: str = "auto",
        log_with: str | list | None = None,
        project_name: str = "phenaki",
        seed: int = 0,
        num_workers: int = 0,
        cpu: bool = False,
        accelerate_kwargs: dict | None = None,
        max_nonfinite_in_a_row: int | None = None,
        fsdp: bool | FullyShardedDataParallelPlugin | None = None,
    ):
        check_positive_int("num_train_steps", num_train_steps)
        if max_nonfinite_in_a_row is not None:
            check_positive_int("max_nonfinite_in_a_row", max_nonfinite_in_a_row)
            self.max_nonfinite_in_a_row = max_nonfinite_in_a_row
        check_positive_int("batch_size", batch_size)
        check_positive_int("grad_accum_every", grad_accum_every)
        check_positive_int("save_model_every", save_model_every)
        if num_workers < 0:
            raise ValueError(f"num_workers must be >= 0, got {num_workers}")
        if max_grad_norm is not None and not max_grad_norm > 0:
            raise ValueError(f"max_grad_norm must be positive or None, got {max_grad_norm}")
        if mixed_precision not in ("no", "bf16", "fp16"):
            raise ValueError(f"mixed_precision must be 'no', 'bf16' or 'fp16', got {mixed_precision!r}")

        if fp32_matmul not in FP32_MATMUL_CHOICES:
            raise ValueError(f"fp32_matmul must be one of {FP32_MATMUL_CHOICES}, got {fp32_matmul!r}")

        self.num_train_steps = num_train_steps
        self.batch_size = batch_size
        self.grad_accum_every = grad_accum_every
        self.max_grad_norm = max_grad_norm
        self.save_model_every = save_model_every
        self.seed = seed
        self.num_workers = num_workers
        self.project_name = project_name
        self.results_folder = Path(results_folder)

        # gradient accumulation is done here (see optimizer_step), not by accelerate's step counter: two
        # optimizers alternate within one training step, and the counter assumes a single one
        accelerate_kwargs = dict(accelerate_kwargs or {})
        plugin = fsdp_plugin(fsdp)
        if plugin is not None:
            if accelerate_kwargs.get("fsdp_plugin") is not None:
                raise ValueError("pass fsdp= or accelerate_kwargs['fsdp_plugin'], not both")
            accelerate_kwargs["fsdp_plugin"] = plugin
        handlers = list(accelerate_kwargs.pop("kwargs_handlers", []))
        if self.find_unused_parameters and not any(isinstance(h, DistributedDataParallelKwargs) for h in handlers):
            handlers.append(DistributedDataParallelKwargs(find_unused_parameters=True))
        self.accelerator = Accelerator(
            mixed_precision=mixed_precision,
            log_with=log_with,
            project_dir=str(self.results_folder),
            cpu=cpu,
            kwargs_handlers=handlers,
            **accelerate_kwargs,
        )
        self.log_with = log_with
        # how fp32 matmuls run on this device ('ieee' or 'bf16', see phenaki_pytorch.precision); under bf16
        # mixed precision the matmuls are bf16 already and this changes nothing
        self.fp32_matmul = resolve_fp32_matmul(fp32_matmul, self.accelerator.device)
        set_seed(seed)  # the same seed everywhere: processes differ through their data shard, not their RNG

        if self.is_main:
            self.results_folder.mkdir(parents=True, exist_ok=True)  # an existing folder is reused, never erased
        self.accelerator.wait_for_everyone()
        self.checkpoints = CheckpointManager(self.results_folder / "checkpoints", keep_last=keep_last)

        self.step = 0
        self.model: nn.Module | None = None
        self.optimizers: dict[str, Any] = {}
        self.schedulers: dict[str, Any] = {}
        self.ema = None
        self._full_copy: nn.Module | None = None  # FSDP without EMA: the main process's unsharded copy
        self._train_data: EpochSubset | None = None
        self._train_iterable: IterableDataset | None = None
        self._valid_dataset: Dataset | None = None
        self._collate_fn: Callable | None = None
        # an iterable dataset's position on this process: its epoch and the items of it trained on so far
        self.data_epoch = 0
        self.samples_consumed = 0
        self._data_resume: dict[str, int] | None = None
        self._batches: Iterator | None = None
        self._trackers_started = False
        self._checkpointed_step: int | None = None  # the same on every process, unlike a look at the folder
        self.nonfinite_skipped: dict[str, int] = {}  # optimizer name -> updates skipped for a NaN / inf
        self.nonfinite_in_a_row: dict[str, int] = {}  # optimizer name -> skipped updates since its last good one

    # ------------------------------------------------------------------ protocol

    def setup(self):
        raise NotImplementedError

    def train_step(self) -> dict[str, float]:
        raise NotImplementedError

    def after_step(self) -> dict[str, float]:
        return {}

    def on_train_end(self):
        pass

    def hparams(self) -> dict[str, Any]:
        """Plain values recorded with trackers and checkpoints."""
        return {
            "num_train_steps": self.num_train_steps,
            "batch_size": self.batch_size,
            "grad_accum_every": self.grad_accum_every,
            "num_processes": self.accelerator.num_processes,
            "seed": self.seed,
            "fp32_matmul": self.fp32_matmul,
        }

    # ------------------------------------------------------------------ helpers

    @property
    def is_main(self) -> bool:
        return self.accelerator.is_main_process

    @property
    def device(self) -> torch.device:
        return self.accelerator.device

    @property
    def unwrapped_model(self) -> nn.Module:
        return self.accelerator.unwrap_model(self.model)

    @property
    def is_sharded(self) -> bool:
        """Whether the model and optimizer states are sharded across processes (FSDP)."""
        return self.accelerator.distributed_type == DistributedType.FSDP

    def sharding_ignored_modules(self, model: nn.Module) -> list[nn.Module]:
        """Submodules FSDP leaves whole on every process (e.g. a frozen tokenizer); none by default."""
        return []

    def sync_full_copy(self):
        """Under FSDP without EMA: gather the weights into the main process's unsharded copy (collective).

        Every process takes part in the gather, also those without a copy (only the main process keeps one).
        """
        if not self.is_sharded or self.ema is not None:
            return
        state = self.accelerator.get_state_dict(self.model)
        if self.is_main:
            self._full_copy.load_state_dict(state)

    def matmul_precision(self):
        """The context every forward/backward of this trainer runs in: fp32 matmuls as `fp32_matmul` resolved."""
        return fp32_matmul_precision(self.fp32_matmul)

    def make_adamw(self, params, lr: float, weight_decay: float, **kwargs) -> torch.optim.AdamW:
        """AdamW with the fused single-kernel update where this torch supports it on the device (CPU or CUDA).

        The fused kernel replaces a dozen small ops per parameter tensor; on the benchmark tokenizer it
        takes the optimizer step from about 3 ms to under 1 ms on 2 CPU cores.
        """
        params = list(params)
        fused = self.device.type in ("cpu", "cuda")
        try:
            return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay, fused=fused, **kwargs)
        except (RuntimeError, TypeError, ValueError):  # an older torch or an unsupported dtype/device
            return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay, **kwargs)

    def print(self, *args):
        if self.is_main:
            tqdm.write(" ".join(str(a) for a in args))

    def prepare(
        self,
        model: nn.Module,
        optimizers: Mapping[str, torch.optim.Optimizer],
        schedulers: Mapping[str, Any] | None = None,
        ema_kwargs: dict | None = None,
    ):
        """Wrap model and optimizers for the accelerator; `ema_kwargs` (None: no EMA) go to `ema_pytorch.EMA`.

        Schedulers are stepped by `optimizer_step` once per optimizer step and are not handed to accelerate
        (which would step them once per process).
        """
        if ema_kwargs is not None:
            from ema_pytorch import EMA

            # the EMA keeps its own copy; the online model stays out of its state dict (it is saved as "model")
            self.ema = EMA(model, include_online_model=False, **ema_kwargs).to(self.device)
        if self.is_sharded:
            plugin = self.accelerator.state.fsdp_plugin
            ignored = self.sharding_ignored_modules(model)
            if ignored and getattr(plugin, "ignored_modules", None) is None:
                plugin.ignored_modules = ignored
            if self.ema is None and self.is_main:
                # evaluation and export run on the main process alone and need whole weights
                self._full_copy = copy.deepcopy(model)
        names = list(optimizers)
        prepared = self.accelerator.prepare(model, *optimizers.values())
        prepared = prepared if names else (prepared,)
        self.model = prepared[0]
        self.optimizers = dict(zip(names, prepared[1:]))
        self.schedulers = dict(schedulers or {})

    # ------------------------------------------------------------------ data

    def set_data(
        self,
        dataset: Dataset,
        collate_fn: Callable,
        *,
        valid_frac: float | None,
        split_seed: int,
        valid_dataset: Dataset | None = None,
    ):
        """Training data (and validation data) from the trainer's arguments.

        A map-style `dataset` is shuffled and resumed by index; `valid_frac` (None: 0.05, or 0 when a
        `valid_dataset` is given) of it is held out. An `IterableDataset` (e.g. `ShardedDataset`) is read in its
        own order and shards itself across processes and workers: no held-out split is taken from it (`valid_frac`
        must be None or 0; pass `valid_dataset=` to validate).
        """
        if isinstance(dataset, IterableDataset):
            if valid_frac:
                raise ValueError(
                    f"valid_frac={valid_frac}: no validation split can be taken from an IterableDataset "
                    f"({type(dataset).__name__}); pass valid_frac=0 (or leave it None) and valid_dataset= to validate"
                )
            self.set_iterable_train_data(dataset, collate_fn)
        else:
            if valid_frac is None:
                valid_frac = 0.0 if valid_dataset is not None else 0.05
            self.set_data_with_validation(dataset, collate_fn, valid_frac, split_seed)
        if valid_dataset is not None:
            self.set_validation_data(valid_dataset)

    def set_data_with_validation(self, dataset: Dataset, collate_fn: Callable, valid_frac: float, split_seed: int):
        """Hold out a seeded `valid_frac` of `dataset` (at least one item when there are two or more) and
        train on the rest; `validation_batch()` then gives the first `batch_size` held-out items."""
        num_items = len(dataset)
        num_valid = int(num_items * valid_frac)
        if valid_frac > 0 and num_valid == 0 and num_items > 1:
            num_valid = 1  # a tiny dataset still gets one held-out item
        if num_items - num_valid < 1:
            raise ValueError(f"the dataset has {num_items} items: too few to train on after valid_frac={valid_frac}")
        order = torch.randperm(num_items, generator=torch.Generator().manual_seed(split_seed)).tolist()
        self.full_dataset, self.valid_indices, self._valid_batch = dataset, order[:num_valid], None
        self.set_train_data(dataset, order[num_valid:], collate_fn=collate_fn)

    def set_validation_data(self, dataset: Dataset):
        """Validate on the first `batch_size` items of `dataset` (map-style or iterable) instead of a split."""
        if not isinstance(dataset, IterableDataset) and not hasattr(dataset, "__getitem__"):
            raise TypeError(f"valid_dataset must be a torch Dataset, got {type(dataset).__name__}")
        self._valid_dataset, self._valid_batch = dataset, None

    def validation_batch(self) -> Any:
        if getattr(self, "_valid_batch", None) is None:
            items = None
            if self._valid_dataset is not None:
                dataset = self._valid_dataset
                if isinstance(dataset, IterableDataset):
                    items = list(itertools.islice(iter(dataset), self.batch_size))
                else:
                    items = [dataset[i] for i in range(min(len(dataset), self.batch_size))]
            elif getattr(self, "valid_indices", None):
                items = [self.full_dataset[i] for i in self.valid_indices[: self.batch_size]]
            if items:
                self._valid_batch = self._collate_fn(items) if self._collate_fn else items
        return getattr(self, "_valid_batch", None)

    def set_train_data(self, dataset: Dataset, indices: Sequence[int] | None = None, collate_fn: Callable = None):
        self._train_data = EpochSubset(dataset, indices)
        self._train_iterable = None
        self._collate_fn = collate_fn
        self._batches = None

    def set_iterable_train_data(self, dataset: IterableDataset, collate_fn: Callable = None):
        """Train on an `IterableDataset` read in its own order, `batch_size` items per micro-batch.

        The dataset splits itself across processes and DataLoader workers (accelerate never re-shards it). When
        an epoch's iterator is exhausted, `set_epoch(epoch + 1)` is called (if the dataset has it) and a new one
        is started. Checkpoints store each process's `(epoch, samples_consumed)`; on resume a dataset with
        `load_state_dict` is given it and continues exactly where it stopped, any other restarts the epoch it was
        in from its start.
        """
        self._train_iterable = dataset
        self._train_data = None
        self._collate_fn = collate_fn
        self._batches = None
        self.data_epoch, self.samples_consumed = 0, 0

    def first_train_item(self) -> Any:
        """One training item, read the way training reads them (to inspect its keys and shapes)."""
        if self._train_data is not None:
            return self._train_data[(0, 0)]
        if self._train_iterable is not None:
            if callable(getattr(self._train_iterable, "set_epoch", None)):
                self._train_iterable.set_epoch(self.data_epoch)
            try:
                return next(iter(self._train_iterable))
            except StopIteration:
                raise ValueError(f"the training dataset ({type(self._train_iterable).__name__}) is empty") from None
        raise RuntimeError("no training data: call set_data() in setup()")

    def _make_batches(self) -> Iterator:
        if self._train_iterable is not None:
            return self._iterable_batches()
        sampler = ResumableBatchSampler(
            len(self._train_data),
            self.batch_size,
            seed=self.seed,
            start_batch=self.step * self.grad_accum_every,
            rank=self.accelerator.process_index,
            world_size=self.accelerator.num_processes,
        )
        loader = DataLoader(
            self._train_data,
            batch_sampler=sampler,
            collate_fn=self._collate_fn,
            num_workers=self.num_workers,
            pin_memory=self.device.type == "cuda",
            generator=torch.Generator().manual_seed(self.seed),  # worker seeds never draw from the global RNG
        )
        return iter(loader)

    def _iterable_batches(self) -> Iterator:
        """Endless batches of the iterable dataset, epoch after epoch, counting what this process consumed."""
        dataset = self._train_iterable
        resume, self._data_resume = self._data_resume, None
        set_epoch = getattr(dataset, "set_epoch", None)
        load_state = getattr(dataset, "load_state_dict", None)
        resumed_mid_epoch = False
        if resume is not None and callable(load_state):
            self.data_epoch, self.samples_consumed = int(resume["epoch"]), int(resume["samples_consumed"])
            load_state({"epoch": self.data_epoch, "samples_consumed": self.samples_consumed})
            resumed_mid_epoch = self.samples_consumed > 0
        else:
            if resume is not None:  # no way to skip into the epoch: it restarts from its first item
                self.data_epoch = int(resume["epoch"])
            self.samples_consumed = 0
            if callable(set_epoch):
                set_epoch(self.data_epoch)
        while True:
            loader = DataLoader(
                dataset,
                batch_size=self.batch_size,
                collate_fn=self._collate_fn,
                num_workers=self.num_workers,
                pin_memory=self.device.type == "cuda",
                generator=torch.Generator().manual_seed(self.seed + self.data_epoch),
            )
            yielded = False
            for batch in loader:
                yielded = True
                self.samples_consumed += _batch_length(batch)
                yield batch
            if not yielded and not resumed_mid_epoch:
                raise ValueError(
                    f"the training dataset ({type(dataset).__name__}) yielded no items in epoch {self.data_epoch} "
                    f"on process {self.accelerator.process_index}"
                )
            resumed_mid_epoch = False
            self.data_epoch, self.samples_consumed = self.data_epoch + 1, 0
            if callable(set_epoch):
                set_epoch(self.data_epoch)

    def _data_position(self) -> dict[str, Any] | None:
        """Every process's iterable-data position (collective under several processes); None for map-style data."""
        if self._train_iterable is None:
            return None
        mine = {"epoch": self.data_epoch, "samples_consumed": self.samples_consumed}
        if self.accelerator.num_processes > 1 and dist.is_initialized():
            per_rank: list[Any] = [None] * self.accelerator.num_processes
            dist.all_gather_object(per_rank, mine)
        else:
            per_rank = [mine]
        return {"per_rank": per_rank}

    def _restore_data_position(self, saved: Mapping[str, Any] | None):
        if self._train_iterable is None or not saved:
            return
        per_rank = list(saved.get("per_rank", []))
        rank = self.accelerator.process_index
        if len(per_rank) == self.accelerator.num_processes:
            self._data_resume = dict(per_rank[rank])
        elif per_rank:
            warnings.warn(
                f"the checkpoint's data position was saved by {len(per_rank)} processes, this run has "
                f"{self.accelerator.num_processes}: the iterable dataset restarts epoch {per_rank[0]['epoch']} "
                "from its start",
                stacklevel=3,
            )
            self._data_resume = {"epoch": int(per_rank[0]["epoch"]), "samples_consumed": 0}

    def next_batches(self) -> list:
        """The `grad_accum_every` micro-batches of this step, on the device (the data position is step-derived)."""
        if self._train_data is None and self._train_iterable is None:
            raise RuntimeError("no training data: call set_train_data() in setup()")
        if self._batches is None:
            self._batches = self._make_batches()
        return [send_to_device(next(self._batches), self.device) for _ in range(self.grad_accum_every)]

    # ------------------------------------------------------------------ optimisation

    def optimizer_step(
        self,
        name: str,
        batches: Sequence[Any],
        compute_loss: Callable[[Any], Mapping[str, Tensor]],
        max_grad_norm: float | None = None,
    ) -> dict[str, float]:
        """Accumulate gradients over `batches`, clip, step optimizer `name` (and its scheduler).

        `compute_loss(batch)` returns a dict with the differentiable "loss" and any detached scalars to log;
        the returned dict holds their means over the micro-batches, plus "grad_norm" when clipping.
        Gradients are synchronised across processes only on the last micro-batch. A non-finite loss or gradient
        skips the update (see the module docstring): the returned dict then holds `nonfinite_skipped: 1.0`.
        """
        optimizer = self.optimizers[name]
        if not self._inputs_finite(batches):
            # a NaN / inf sample never reaches the model (which may reject it, or poison its buffers with it)
            optimizer.zero_grad(set_to_none=True)
            self._step_scheduler(name, skipped=True)
            logs = {"loss": float("nan"), "nonfinite_input": 1.0}
            self._count_nonfinite(name, logs, "non-finite input (NaN or inf in the batch)")
            return {**logs, "nonfinite_skipped": 1.0}
        buffers = self._snapshot_buffers()
        totals: dict[str, Tensor] = {}
        for i, batch in enumerate(batches):
            last = i == len(batches) - 1
            with nullcontext() if last else self.accelerator.no_sync(self.model), self.matmul_precision():
                outputs = compute_loss(batch)
                self.accelerator.backward(outputs["loss"] / len(batches))
            for key, value in outputs.items():
                value = torch.as_tensor(value).detach().float() / len(batches)
                totals[key] = totals[key] + value if key in totals else value
        params = [p for group in optimizer.param_groups for p in group["params"]]
        norm = None
        if max_grad_norm is not None:
            norm = self.accelerator.clip_grad_norm_(params, max_grad_norm)
            if norm is not None:
                totals["grad_norm"] = torch.as_tensor(norm)
        scaler = getattr(self.accelerator, "scaler", None)
        loss_finite, grads_finite = self._finite_everywhere(totals["loss"], norm, params, check_grads=scaler is None)
        if loss_finite and grads_finite:
            optimizer.step()  # under fp16 the grad scaler may still skip it for an overflow and lower its scale
        elif scaler is not None:
            optimizer.step()  # lets the scaler see the inf gradients, skip the step and update its state
        optimizer.zero_grad(set_to_none=True)
        self._step_scheduler(name, skipped=not (loss_finite and grads_finite))
        logs = {key: float(value) for key, value in totals.items()}
        if loss_finite and grads_finite:
            self.nonfinite_in_a_row[name] = 0
        else:
            self._restore_buffers(buffers)
            self._count_nonfinite(name, logs, "non-finite loss or gradient")
            logs["nonfinite_skipped"] = 1.0
        return logs

    def _finite_everywhere(
        self, loss: Tensor, norm: Tensor | float | None, params: list[Tensor], check_grads: bool
    ) -> tuple[bool, bool]:
        """(loss finite, gradients finite) on every process: one all-reduced pair of flags, one host sync."""
        flags = torch.ones(2, device=self.device)
        flags[0] = torch.isfinite(loss.to(self.device)).all().float()
        if check_grads:
            if norm is None:
                grads = [_local(p.grad) for p in params if p.grad is not None]
                norm = _total_norm(grads) if grads else torch.zeros((), device=self.device)
            flags[1] = torch.isfinite(torch.as_tensor(norm, device=self.device)).all().float()
        if self.accelerator.num_processes > 1 and dist.is_initialized():
            dist.all_reduce(flags, op=dist.ReduceOp.MIN)
        loss_ok, grads_ok = flags.tolist()
        return loss_ok > 0, grads_ok > 0

    def _step_scheduler(self, name: str, skipped: bool):
        if name not in self.schedulers:
            return
        with warnings.catch_warnings():
            if skipped:  # torch warns when a schedule moves before the first optimizer step: here that is intended
                warnings.filterwarnings("ignore", message=r"Detected call of `lr_scheduler.step\(\)` before")
            self.schedulers[name].step()

    def _inputs_finite(self, batches: Sequence[Any]) -> bool:
        """Whether every floating tensor in the micro-batches is finite, agreed by all processes."""
        flags = [torch.isfinite(t).all() for t in _floating_tensors(batches)]
        finite = torch.stack(flags).all().float().reshape(1) if flags else torch.ones(1)
        finite = finite.to(self.device)
        if self.accelerator.num_processes > 1 and dist.is_initialized():
            dist.all_reduce(finite, op=dist.ReduceOp.MIN)
        return bool(finite.item() > 0)

    def _count_nonfinite(self, name: str, logs: Mapping[str, float], cause: str):
        self.nonfinite_skipped[name] = self.nonfinite_skipped.get(name, 0) + 1
        in_a_row = self.nonfinite_in_a_row[name] = self.nonfinite_in_a_row.get(name, 0) + 1
        shown = ", ".join(f"{k}={logs[k]:.4g}" for k in ("loss", "grad_norm") if k in logs)
        step = self.step + 1  # the number this step is logged under
        if in_a_row >= self.max_nonfinite_in_a_row:
            raise NonFiniteTrainingError(
                f"{in_a_row} updates of optimizer {name!r} in a row had a NaN or inf batch, loss or gradient "
                f"(steps {step - in_a_row + 1} to {step}; the last: {cause}, {shown}): training stopped. Every one "
                f"was skipped, so the weights and the checkpoints are those of step {step - in_a_row}. Look for "
                "NaN / inf in the data, a learning rate that is too high, or fp16 overflow; max_nonfinite_in_a_row "
                "sets the limit"
            )
        message = (
            f"step {step}: {cause} for optimizer {name!r} ({shown}); the update was skipped "
            f"({in_a_row} in a row, {self.nonfinite_skipped[name]} in total, stopping at "
            f"{self.max_nonfinite_in_a_row} in a row)"
        )
        warnings.warn(message, RuntimeWarning, stacklevel=3)

    def _snapshot_buffers(self) -> list[tuple[Tensor, Tensor]]:
        # buffers the forward pass may move (a VQ codebook's EMA, its k-means init flag): restored on a skip
        return [(buffer, buffer.detach().clone()) for buffer in self.unwrapped_model.buffers()]

    @staticmethod
    @torch.no_grad()
    def _restore_buffers(snapshot: list[tuple[Tensor, Tensor]]):
        for buffer, saved in snapshot:
            buffer.copy_(saved)

    def finish_step(self):
        """End of a training step: re-sync mutated buffers, update the EMA, count the step."""
        self._broadcast_buffers()
        if self.ema is not None:
            self._update_ema()
        self.step += 1

    @torch.no_grad()
    def _update_ema(self):
        """One ema-pytorch update. Under FSDP the EMA is a whole, unsharded copy on every process, and it reads
        the online weights through `_GatheredWeights`: each sharded parameter is all-gathered (`full_tensor()`)
        when ema-pytorch asks for it. Whether it asks depends only on the EMA's step counter, the same on every
        process, so every process gathers the same parameters in the same order (the gathers are collective)."""
        if not self.is_sharded:
            self.ema.update()
            return
        online = self.ema.online_model  # [model]: the EMA is built with include_online_model=False
        self.ema.online_model = [_GatheredWeights(self.unwrapped_model)]
        try:
            self.ema.update()
        finally:
            self.ema.online_model = online

    def _broadcast_buffers(self):
        if self.accelerator.num_processes == 1 or not dist.is_initialized():
            return
        for buffer in self.unwrapped_model.buffers():
            if buffer.dtype == torch.bool:  # not every backend broadcasts bools
                as_int = buffer.to(torch.uint8)
                dist.broadcast(as_int, src=0)
                buffer.copy_(as_int.bool())
            else:
                dist.broadcast(buffer.data, src=0)

    # ------------------------------------------------------------------ loop

    def train(self):
        """Run until `num_train_steps`, logging, evaluating and checkpointing; exports the model at the end."""
        if self.log_with and not self._trackers_started:
            self.accelerator.init_trackers(self.project_name, config=self.hparams())
            self._trackers_started = True
        progress = tqdm(
            total=self.num_train_steps, initial=self.step, disable=not self.is_main, desc=type(self).__name__
        )
        while self.step < self.num_train_steps:
            logs = self.train_step()
            if self.nonfinite_skipped:
                logs["nonfinite_skipped_total"] = float(sum(self.nonfinite_skipped.values()))
            with self.matmul_precision():
                logs.update(self.after_step())
            self.log(logs)
            progress.set_postfix({k: f"{logs[k]:.4g}" for k in self.progress_keys if k in logs}, refresh=False)
            progress.update(1)
            if self.step % self.save_model_every == 0:
                self.save()
        progress.close()
        if self._checkpointed_step != self.step:
            self.save()
        self.on_train_end()
        self.accelerator.wait_for_everyone()
        if self._trackers_started:
            self.accelerator.end_training()
            self._trackers_started = False

    def log(self, logs: Mapping[str, float]):
        """Send to the trackers and append to `results_folder/metrics.jsonl` (main process)."""
        if not logs:
            return
        if self._trackers_started:
            self.accelerator.log(dict(logs), step=self.step)
        if self.is_main:
            with open(self.results_folder / "metrics.jsonl", "a") as file:
                file.write(json.dumps({"step": self.step, **{k: _finite(v) for k, v in logs.items()}}) + "\n")

    def log_videos(self, tag: str, videos: Tensor):
        """Send clips `(b, c, f, h, w)` in [0, 1] to the trackers as one image: a row per clip, a column per frame.

        TensorBoard and Weights & Biases get it through accelerate's `log_images` (no video encoder needed);
        other trackers with `log_images` are tried the same way. Logged at the current step, on the main process.
        """
        if not self._trackers_started or not self.is_main:
            return
        if videos.ndim != 5:
            raise ValueError(
                f"videos must be (batch, channels, frames, height, width), got shape {tuple(videos.shape)}"
            )
        clips = videos.detach().float().clamp(0.0, 1.0).cpu()
        if clips.shape[1] == 1:
            clips = clips.expand(-1, 3, -1, -1, -1)
        b, c, f, h, w = clips.shape
        # (b, c, f, h, w) -> (b * h, f * w, c): clips stacked downwards, frames side by side
        grid = clips.permute(0, 3, 2, 4, 1).reshape(b * h, f * w, c)
        grid = (grid * 255).round().to(torch.uint8).numpy()
        for tracker in self.accelerator.trackers:
            log_images = getattr(tracker, "log_images", None)
            if not callable(log_images):
                continue
            try:
                if tracker.name == "tensorboard":
                    log_images({tag: grid[None]}, step=self.step, dataformats="NHWC")
                else:
                    log_images({tag: [grid]}, step=self.step)
            except NotImplementedError:
                continue

    # ------------------------------------------------------------------ checkpoints

    def save(self, path: str | Path | None = None) -> Path | None:
        """Checkpoint everything needed to resume (collective: call on every process; the main one writes).

        `path=None` writes `results_folder/checkpoints/checkpoint-<step>.pt` and prunes old ones. Returns the
        path written (None on the other processes).
        """
        if self.is_sharded:
            return self._save_sharded(path)
        model_state = self.accelerator.get_state_dict(self.model)
        data_position = self._data_position()  # collective: every process's place in an iterable dataset
        rng_per_rank = self._rng_per_rank()  # collective too
        written = None
        if self.is_main:
            state = dict(
                model=model_state,
                ema=self.ema,
                optimizers=self.optimizers,
                schedulers=self.schedulers,
                config=getattr(self.unwrapped_model, "config", None),
                extra=self._checkpoint_extra(data_position, rng_per_rank),
            )
            if path is None:
                written = self.checkpoints.save(self.step, **state)
            else:
                written = save_checkpoint(path, step=self.step, **state)
        self._checkpointed_step = self.step
        self.accelerator.wait_for_everyone()
        return written

    def _checkpoint_extra(self, data_position: dict | None, rng_per_rank: list | None = None) -> dict[str, Any]:
        return {
            "trainer": type(self).__name__,
            "hparams": self.hparams(),
            "nonfinite": {"skipped": dict(self.nonfinite_skipped), "in_a_row": dict(self.nonfinite_in_a_row)},
            **({"data": data_position} if data_position is not None else {}),
            **({"rng_per_rank": rng_per_rank} if rng_per_rank is not None else {}),
        }

    def _rng_per_rank(self) -> list[dict[str, Any]] | None:
        """Every process's random states (collective; None with one process).

        The processes start from one seed but need not stay in step: a forward pass may draw a data-dependent
        number of random values (e.g. a VQ codebook re-seeding its dead codes from the local batch). The
        checkpoint's own "rng" entry is the main process's; these let each process resume its own.
        """
        if self.accelerator.num_processes == 1 or not dist.is_initialized():
            return None
        per_rank: list[Any] = [None] * self.accelerator.num_processes
        dist.all_gather_object(per_rank, get_rng_state())
        return per_rank

    def _sharded_state(self) -> dict[str, Any]:
        """Model and optimizer state dicts whose tensors are this process's shards (DTensors under FSDP)."""
        from torch.distributed.checkpoint.state_dict import get_model_state_dict, get_optimizer_state_dict

        return {
            "model": get_model_state_dict(self.model),
            "optimizers": {
                name: get_optimizer_state_dict(self.model, _inner_optimizer(optimizer))
                for name, optimizer in self.optimizers.items()
            },
        }

    def _save_sharded(self, path: str | Path | None) -> Path | None:
        """Every process writes its shards into one temporary folder; the main one adds the unsharded rest and
        the manifest, then renames the folder into place (see `phenaki_pytorch.training.checkpoint`)."""
        import torch.distributed.checkpoint as dcp
        from torch.distributed.checkpoint import FileSystemWriter

        from ..serialization import nonfinite_tensors

        state = self._sharded_state()
        local = {k: _local(v) for k, v in _flatten(state)}
        bad = nonfinite_tensors(local)
        flags = torch.tensor([float(len(bad))], device=self.device)
        if dist.is_initialized():
            dist.all_reduce(flags)
        if flags.item() > 0:
            raise ValueError(
                f"refusing to write a sharded checkpoint at step {self.step}: {int(flags.item())} tensor(s) hold NaN "
                f"or inf (here: {', '.join(bad[:5]) or 'none'}); the existing checkpoints are kept"
            )
        data_position = self._data_position()
        rng_per_rank = self._rng_per_rank()
        final = Path(path) if path is not None else self.checkpoints.sharded_path_for(self.step)
        token = [uuid.uuid4().hex[:12] if self.is_main else None]
        if dist.is_initialized():
            dist.broadcast_object_list(token, src=0)
        tmp = final.parent / f".tmp-{final.name}-{token[0]}"
        (tmp / SHARDS_DIR).mkdir(parents=True, exist_ok=True)  # every process: also when the folder is not shared
        self.accelerator.wait_for_everyone()
        try:
            dcp.save(state, storage_writer=FileSystemWriter(str(tmp / SHARDS_DIR), sync_files=True))
            written = None
            if self.is_main:
                save_checkpoint(
                    tmp / TRAINER_STATE_NAME,
                    model={},
                    ema=self.ema,
                    schedulers=self.schedulers,
                    step=self.step,
                    config=getattr(self.unwrapped_model, "config", None),
                    extra={**self._checkpoint_extra(data_position, rng_per_rank), "sharded": True},
                )
                write_sharded_manifest(tmp, self.step, self.accelerator.num_processes)
                from ..serialization import directory_lock, fsync_directory

                final.parent.mkdir(parents=True, exist_ok=True)
                with directory_lock(final.parent):
                    if final.exists():  # the same step saved again: the old folder goes, then the new one moves in
                        old = final.parent / f".tmp-{final.name}-replaced-{token[0]}"
                        os.replace(final, old)
                        shutil.rmtree(old, ignore_errors=True)
                    os.replace(tmp, final)
                    fsync_directory(final.parent)
                    if path is None:
                        self.checkpoints.prune()
                written = final
        except BaseException:
            if self.is_main:
                shutil.rmtree(tmp, ignore_errors=True)
            raise
        self._checkpointed_step = self.step
        self.accelerator.wait_for_everyone()
        return written

    def _load_sharded(self, folder: str | Path):
        """Load model and optimizer shards (resharded to this run's processes, or into an unsharded model)."""
        import torch.distributed.checkpoint as dcp
        from torch.distributed.checkpoint import FileSystemReader
        from torch.distributed.checkpoint.state_dict import set_model_state_dict, set_optimizer_state_dict

        state = self._sharded_state()
        dcp.load(state, storage_reader=FileSystemReader(str(folder)))
        set_model_state_dict(self.model, state["model"])
        for name, optimizer in self.optimizers.items():
            if name not in state["optimizers"]:
                raise ValueError(f"the sharded checkpoint has no optimizer {name!r}")
            set_optimizer_state_dict(self.model, _inner_optimizer(optimizer), state["optimizers"][name])

    def load(self, path: str | Path, checkpoint: Mapping[str, Any] | None = None):
        """Restore model, EMA, optimizers, schedulers, step and RNG from a checkpoint file (every process).

        `checkpoint` is the already loaded content of `path`, when the caller has read it. Lines of
        `metrics.jsonl` after the restored step are dropped (they belong to the run being replaced).
        """
        if checkpoint is None:
            if is_sharded_checkpoint(path):
                checkpoint = load_sharded_checkpoint(path, map_location="cpu")
            else:
                checkpoint = load_checkpoint(path, map_location="cpu")
        sharded = checkpoint.get("sharded")
        if sharded is None and self.is_sharded:
            raise ValueError(
                f"{str(path)!r} is an unsharded checkpoint and this run shards its state (FSDP): resume it without "
                "FSDP (a single process or DDP), whose next checkpoint it can then continue from; sharded "
                "checkpoints load under FSDP, DDP or a single process alike"
            )
        saved = checkpoint.get("extra", {}).get("hparams", {})
        current = self.hparams().get("optimizer")
        if current is not None and saved:
            before = saved.get("optimizer", "adamw")  # checkpoints from before the option held AdamW's state
            if before != current:
                raise ValueError(
                    f"{str(path)!r} holds the state of optimizer={before!r} and this run builds optimizer="
                    f"{current!r}: pass optimizer={before!r} (phenaki train --optimizer {before}) to resume it"
                )
        for key in ("batch_size", "grad_accum_every", "num_processes", "seed"):
            if key in saved and saved[key] != self.hparams()[key]:
                warnings.warn(
                    f"resuming {str(path)!r} with {key}={self.hparams()[key]} (saved with {saved[key]}): "
                    "training continues, but the data order no longer matches an uninterrupted run",
                    stacklevel=2,
                )
        if sharded is not None:
            self._load_sharded(sharded)
        self.step = restore_checkpoint(
            checkpoint,
            model=None if sharded is not None else self.unwrapped_model,
            ema=self.ema,
            optimizers=None if sharded is not None else self.optimizers,
            schedulers=self.schedulers,
            restore_rng=True,
        )
        per_rank = checkpoint.get("extra", {}).get("rng_per_rank")
        if per_rank is not None and len(per_rank) == self.accelerator.num_processes:
            set_rng_state(per_rank[self.accelerator.process_index])  # this process's own, not the main one's
        nonfinite = checkpoint.get("extra", {}).get("nonfinite", {})
        self.nonfinite_skipped = dict(nonfinite.get("skipped", {}))
        self.nonfinite_in_a_row = dict(nonfinite.get("in_a_row", {}))
        self._restore_data_position(checkpoint.get("extra", {}).get("data"))
        self._batches = None  # rebuilt at the restored data position on the next step
        self._checkpointed_step = self.step
        if self.is_main:
            self._truncate_metrics(self.step)
        self.accelerator.wait_for_everyone()
        return self

    def _truncate_metrics(self, step: int):
        """Keep the lines of `metrics.jsonl` logged at or before `step` (and drop a half-written last line)."""
        path = self.results_folder / "metrics.jsonl"
        if not path.is_file():
            return
        lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
        kept = []
        for line in lines:
            try:
                entry = json.loads(line)
            except json.JSONDecodeError:
                continue  # a line cut short by a kill
            if isinstance(entry, dict) and isinstance(entry.get("step"), int) and entry["step"] <= step:
                kept.append(line)
        if len(kept) != len(lines):
            atomic_write_text(path, "".join(line + "\n" for line in kept))

    def resume(self, resume: bool | str | Path):
        """`True`: the newest readable checkpoint in the results folder (a fresh start when there is none);
        a folder: the newest readable checkpoint in it; a file: that checkpoint.

        Newer checkpoints that are corrupt or unreadable are skipped with a warning naming each; when checkpoints
        exist but none is readable, a ValueError says why for each (it never silently starts fresh).
        """
        if resume is False or resume is None:
            return
        if resume is True:
            manager = self.checkpoints
        else:
            path = Path(resume)
            if is_sharded_checkpoint(path):
                self.load(path)
                self.print(f"resumed from {str(path)!r} at step {self.step}")
                return
            if path.is_dir():
                folder = path / "checkpoints" if (path / "checkpoints").is_dir() else path
                manager = CheckpointManager(folder)
                if not manager.checkpoints():
                    raise FileNotFoundError(f"resume={str(resume)!r}: no checkpoint-<step>.pt files in {str(folder)!r}")
            elif not path.is_file():
                raise FileNotFoundError(f"resume={str(resume)!r}: no such checkpoint file or folder")
            else:
                self.load(path)
                self.print(f"resumed from {str(path)!r} at step {self.step}")
                return
        found = manager.load_latest_readable(map_location="cpu")
        if found is None:
            self.print(f"resume=True: no checkpoint in {str(manager.folder)!r} yet, starting fresh")
            return
        checkpoint, path, skipped = found
        for bad, reason in skipped:
            warnings.warn(
                f"resume: skipped the unreadable checkpoint {str(bad)!r}: {reason}", RuntimeWarning, stacklevel=2
            )
        self.load(path, checkpoint)
        note = f" (skipped {len(skipped)} newer unreadable: {', '.join(p.name for p, _ in skipped)})" if skipped else ""
        self.print(f"resumed from {str(path)!r} at step {self.step}{note}")


def _floating_tensors(value: Any) -> Iterator[Tensor]:
    if isinstance(value, Tensor):
        if value.is_floating_point() or value.is_complex():
            yield value
    elif isinstance(value, Mapping):
        for item in value.values():
            yield from _floating_tensors(item)
    elif isinstance(value, (list, tuple)):
        for item in value:
            yield from _floating_tensors(item)


def fsdp_plugin(fsdp: bool | FullyShardedDataParallelPlugin | None) -> FullyShardedDataParallelPlugin | None:
    """The trainers' `fsdp=` argument as an accelerate plugin: True is FSDP2 with sharded state dicts."""
    if fsdp is None or fsdp is False:
        return None
    if fsdp is True:
        return FullyShardedDataParallelPlugin(fsdp_version=2, state_dict_type="SHARDED_STATE_DICT")
    if isinstance(fsdp, FullyShardedDataParallelPlugin):
        return fsdp
    raise TypeError(f"fsdp must be a bool, None or an accelerate FullyShardedDataParallelPlugin, got {fsdp!r}")


class _GatheredWeights:
    """The parts of a (possibly FSDP-sharded) module that ema-pytorch reads, as whole tensors.

    `named_parameters()` all-gathers each DTensor parameter into a plain tensor (collective: every process must
    iterate it the same way) and passes plain ones through; buffers are never sharded and are the module's own.
    """

    def __init__(self, module: nn.Module):
        self.module = module

    def named_parameters(self) -> Iterator[tuple[str, Tensor]]:
        for name, param in self.module.named_parameters():
            full_tensor = getattr(param, "full_tensor", None)
            yield name, (full_tensor() if callable(full_tensor) else param).detach()

    def named_buffers(self) -> Iterator[tuple[str, Tensor]]:
        return self.module.named_buffers()


def _flatten(value: Any, prefix: str = "") -> Iterator[tuple[str, Tensor]]:
    if isinstance(value, Tensor):
        yield prefix, value
    elif isinstance(value, Mapping):
        for key, item in value.items():
            yield from _flatten(item, f"{prefix}.{key}" if prefix else str(key))
    elif isinstance(value, (list, tuple)):
        for i, item in enumerate(value):
            yield from _flatten(item, f"{prefix}.{i}")


def _local(tensor: Tensor) -> Tensor:
    """A DTensor's local shard (a plain tensor passes through)."""
    to_local = getattr(tensor, "to_local", None)
    return to_local() if callable(to_local) else tensor


def _inner_optimizer(optimizer: Any) -> torch.optim.Optimizer:
    return getattr(optimizer, "optimizer", optimizer)  # accelerate's AcceleratedOptimizer wraps the torch one


def _batch_length(batch: Any) -> int:
    """Items in a collated batch: the leading size of its first tensor (or the length of a list of items)."""
    for tensor in _all_tensors(batch):
        return int(tensor.shape[0]) if tensor.ndim else 1
    return len(batch) if isinstance(batch, (list, tuple)) else 1


def _all_tensors(value: Any) -> Iterator[Tensor]:
    if isinstance(value, Tensor):
        yield value
    elif isinstance(value, Mapping):
        for item in value.values():
            yield from _all_tensors(item)
    elif isinstance(value, (list, tuple)):
        for item in value:
            yield from _all_tensors(item)


def _total_norm(grads: list[Tensor]) -> Tensor:
    if hasattr(torch.nn.utils, "get_total_norm"):
        return torch.nn.utils.get_total_norm(grads)
    norms = torch._foreach_norm(grads)
    return torch.linalg.vector_norm(torch.stack([n.to(grads[0].device) for n in norms]))


def _finite(value: float) -> float | None:
    return value if isinstance(value, (int, float)) and math.isfinite(value) else None
