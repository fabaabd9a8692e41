"""Training loop for any objective: AdamW, warmup + cosine schedule, checkpoints, exact resume, early stopping.

An *objective* is an ``nn.Module`` that owns the encoder and its heads: ``objective(batch) -> out`` with
``batch = {"numeric": FloatTensor[b, d_num], "categorical": LongTensor[b, d_cat]}`` (every key of the training
dict is passed through), ``out.loss`` a scalar tensor and ``out.metrics`` a ``dict[str, float]``. It draws its
randomness (augmentation, masking) from the global torch RNG, which the trainer seeds and checkpoints.

How a run is made reproducible and resumable
- The data are moved to the device once; a batch is an ``index_select`` of every tensor (no DataLoader).
- The order of epoch ``e`` is ``torch.randperm`` from a dedicated generator seeded from ``(seed, e)``, so the
  position inside an epoch is enough to rebuild the order after a restart. Training batches drop the last
  partial batch (contrastive objectives need full batches) unless the whole set is smaller than one batch.
- At a fresh start the global torch RNG is seeded with ``config.seed`` (seed the objective's *construction*
  yourself, e.g. with :func:`obsad.runtime.seed_everything`). Validation runs under ``torch.random.fork_rng``
  with a fixed seed, so validation losses are comparable across epochs and runs and the training RNG stream is
  untouched by it.
- The learning rate is set per optimizer step: linear warmup to ``lr`` over ``warmup_fraction`` of the steps,
  then cosine decay to ``min_lr_ratio * lr`` at the last step (:func:`lr_factor`).
- A checkpoint holds everything the next step depends on (weights, AdamW moments, schedule position, RNG states,
  epoch and position in it, history, early-stopping state), so ``fit(..., resume=True)`` after an interruption
  gives bit-identical weights and losses on the CPU to a run that was never interrupted.

Checkpoint format: ``torch.save`` of a dict holding only tensors, lists, dicts, strings, numbers, booleans and
``None``, read back with ``torch.load(weights_only=True)`` (no arbitrary pickled objects), written atomically.
Files in ``checkpoint_dir``: ``last.pt`` (written every ``checkpoint_every_samples`` samples, at the end of every
epoch, on an interrupt and at the end), ``best_<name>_e<epoch>_<val_loss>.pt`` (only the current best is kept;
``Trainer(best_name=...)`` sets another pattern, e.g. the two-stage procedure's
``pretrain_<model>_<epoch>_<val_loss>``) and the index ``checkpoints.json`` naming both.

Interrupts: a Ctrl-C (SIGINT, also a Jupyter "interrupt kernel") during :meth:`Trainer.fit` is deferred to the end
of the current step; the trainer then writes ``last.pt`` and re-raises ``KeyboardInterrupt``. A second Ctrl-C
interrupts at once. A ``KeyboardInterrupt`` raised by the ``on_step`` callback is handled the same way.
"""

from __future__ import annotations

import dataclasses
import math
import os
import re
import signal
import sys
import threading
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping

import numpy as np
import pandas as pd
import torch
from torch import nn
from tqdm import tqdm

from obsad.io import atomic_path, read_json, write_json, write_parquet
from obsad.runtime import Device, pick_device, tune_allocator

__all__ = [
    "CHECKPOINT_FORMAT",
    "TrainConfig",
    "TrainHistory",
    "Trainer",
    "best_checkpoint_path",
    "load_checkpoint",
    "load_weights",
    "lr_factor",
]

CHECKPOINT_FORMAT = "obsad-checkpoint"
CHECKPOINT_VERSION = 1
INDEX_NAME = "checkpoints.json"
LAST_NAME = "last.pt"
#: The best checkpoint's file name (without ``.pt``); ``Trainer(best_name=...)`` changes it per run.
BEST_NAME = "best_{name}_e{epoch:03d}_{val_loss:.4f}"

#: Config fields that change the arithmetic of a run; a resume refuses a checkpoint written with other values.
_RESUME_FIELDS = ("epochs", "batch_size", "lr", "weight_decay", "warmup_fraction", "min_lr_ratio", "grad_clip", "seed")
#: Offset of the seed used for the validation randomness (kept apart from the training stream).
_VAL_SEED_OFFSET = 7_919


# ------------------------------------------------------------------------------------------------- configuration
@dataclass
class TrainConfig:
    """Hyper-parameters of a run; JSON-able (``to_dict`` / ``from_dict``).

    ``grad_clip``: max global gradient norm (``None`` or 0: no clipping). ``patience``: stop after that many epochs
    without a validation improvement (``None``: never). ``checkpoint_every_samples``: write ``last.pt`` each time
    that many more training samples have been seen. ``restore_best``: load the best epoch's weights at the end.
    ``device``: ``"cpu"``, ``"cuda"``, ``"cuda:1"`` or ``None`` (:func:`obsad.runtime.pick_device`).
    ``betas``: AdamW's moment decay rates (a lower second one, e.g. 0.98, adapts faster when fine-tuning).
    ``num_threads``: ``torch.set_num_threads`` for the run. ``eval_batch_size``: validation batch (default
    ``batch_size``). ``tune_allocator``: on the CPU, keep freed memory in the process between steps
    (:func:`obsad.runtime.tune_allocator`; glibc only, process-wide).
    """

    epochs: int = 10
    batch_size: int = 512
    lr: float = 1e-3
    betas: tuple[float, float] = (0.9, 0.999)
    weight_decay: float = 0.01
    warmup_fraction: float = 0.05
    min_lr_ratio: float = 0.01
    grad_clip: float | None = 1.0
    patience: int | None = None
    checkpoint_every_samples: int | None = None
    seed: int = 0
    device: str | None = None
    num_threads: int | None = None
    progress: bool = True
    restore_best: bool = False
    eval_batch_size: int | None = None
    tune_allocator: bool = True

    def __post_init__(self) -> None:
        if int(self.epochs) < 1:
            raise ValueError(f"epochs must be >= 1, got {self.epochs}")
        if int(self.batch_size) < 1:
            raise ValueError(f"batch_size must be >= 1, got {self.batch_size}")
        if not 0.0 <= float(self.warmup_fraction) <= 1.0:
            raise ValueError(f"warmup_fraction must be in [0, 1], got {self.warmup_fraction}")
        if not 0.0 <= float(self.min_lr_ratio) <= 1.0:
            raise ValueError(f"min_lr_ratio must be in [0, 1], got {self.min_lr_ratio}")
        if len(self.betas) != 2 or not all(0.0 <= float(b) < 1.0 for b in self.betas):
            raise ValueError(f"betas must be two numbers in [0, 1), got {self.betas}")
        self.betas = (float(self.betas[0]), float(self.betas[1]))
        if self.patience is not None and int(self.patience) < 1:
            raise ValueError(f"patience must be >= 1 or None, got {self.patience}")
        if self.checkpoint_every_samples is not None and int(self.checkpoint_every_samples) < 1:
            raise ValueError(f"checkpoint_every_samples must be >= 1 or None, got {self.checkpoint_every_samples}")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "TrainConfig":
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown TrainConfig fields: {unknown}")
        return cls(**dict(data))


def lr_factor(step: int, total_steps: int, warmup_steps: int, min_lr_ratio: float) -> float:
    """Multiplier of the base learning rate for optimizer step ``step`` (0-based) of ``total_steps``.

    Warmup: steps ``0 .. W-1`` rise linearly, ``(s + 1) / W``, reaching 1 at step ``W - 1``. Then cosine decay from
    that peak (step ``max(W - 1, 0)``) to exactly ``min_lr_ratio`` at the last step ``total_steps - 1``.
    """
    if warmup_steps > 0 and step < warmup_steps:
        return (step + 1) / warmup_steps
    peak = max(warmup_steps - 1, 0)
    span = total_steps - 1 - peak
    progress = 1.0 if span <= 0 else min(max((step - peak) / span, 0.0), 1.0)
    return min_lr_ratio + (1.0 - min_lr_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))


# ------------------------------------------------------------------------------------------------------ history
_STEP_COLUMNS = ["step", "epoch", "samples_seen", "loss", "lr", "grad_norm"]
_EPOCH_COLUMNS = [
    "epoch", "steps", "samples_seen", "train_loss", "val_loss", "lr", "improved",
    "train_seconds", "val_seconds", "seconds", "events_per_s",
]


@dataclass
class TrainHistory:
    """What a run did: one row per optimizer step and one per epoch.

    ``steps``: ``step`` (1-based), ``epoch`` (1-based), ``samples_seen`` (after the step), ``loss``, ``lr`` (used by
    the step), ``grad_norm`` (before clipping; NaN without clipping) and the objective's metrics.
    ``epochs``: ``epoch``, ``steps`` and ``samples_seen`` at its end, ``train_loss`` (mean step loss), ``val_loss``
    (NaN without validation), ``lr``, ``improved``, ``train_seconds``, ``val_seconds``, ``seconds``,
    ``events_per_s`` (training samples per training second) and ``val_<metric>`` columns.
    ``stop_reason``: ``completed`` | ``early_stopping`` | ``max_steps`` | ``interrupted``.
    """

    steps: pd.DataFrame = field(default_factory=lambda: pd.DataFrame(columns=_STEP_COLUMNS))
    epochs: pd.DataFrame = field(default_factory=lambda: pd.DataFrame(columns=_EPOCH_COLUMNS))
    stop_reason: str = "completed"
    restored_best: bool = False

    @property
    def best_epoch(self) -> int | None:
        """1-based epoch with the lowest validation loss (the first one on ties), ``None`` without validation."""
        if self.epochs.empty or "val_loss" not in self.epochs or self.epochs["val_loss"].isna().all():
            return None
        return int(self.epochs.loc[self.epochs["val_loss"].astype(float).idxmin(), "epoch"])

    @property
    def best_val_loss(self) -> float | None:
        if self.best_epoch is None:
            return None
        return float(self.epochs["val_loss"].astype(float).min())

    @property
    def stopped_early(self) -> bool:
        return self.stop_reason == "early_stopping"

    def save(self, path_prefix: str | os.PathLike) -> tuple[Path, Path]:
        """Write ``<prefix>_steps.parquet`` and ``<prefix>_epochs.parquet`` atomically; return both paths."""
        prefix = str(path_prefix)
        return (
            write_parquet(self.steps.reset_index(drop=True), f"{prefix}_steps.parquet"),
            write_parquet(self.epochs.reset_index(drop=True), f"{prefix}_epochs.parquet"),
        )

    @classmethod
    def load(cls, path_prefix: str | os.PathLike) -> "TrainHistory":
        prefix = str(path_prefix)
        return cls(pd.read_parquet(f"{prefix}_steps.parquet"), pd.read_parquet(f"{prefix}_epochs.parquet"))


def _frame_to_state(df: pd.DataFrame) -> dict[str, Any]:
    """A numeric DataFrame as plain tensors (weights_only-loadable, exact for float64 and int64)."""
    cols = [str(c) for c in df.columns]
    data = {}
    for c in cols:
        values = df[c].to_numpy()
        if values.dtype == bool:
            data[c] = torch.from_numpy(values.astype(np.bool_).copy())
        elif np.issubdtype(values.dtype, np.integer):
            data[c] = torch.from_numpy(values.astype(np.int64).copy())
        else:
            data[c] = torch.from_numpy(values.astype(np.float64).copy())
    return {"columns": cols, "data": data}


def _state_to_frame(state: Mapping[str, Any]) -> pd.DataFrame:
    return pd.DataFrame({c: state["data"][c].numpy() for c in state["columns"]}, columns=list(state["columns"]))


# -------------------------------------------------------------------------------------------------- checkpoints
def load_checkpoint(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Read a checkpoint written by :class:`Trainer` (``weights_only=True``: no arbitrary code runs).

    Raises ``FileNotFoundError`` when ``path`` does not exist and ``ValueError`` naming the file when it is corrupt,
    truncated, holds pickled Python objects or is not an obsad checkpoint.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} does not exist")
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as err:  # zip errors, unpickling refusals, truncated files, ...
        raise ValueError(f"{path} is not a readable obsad checkpoint ({type(err).__name__}: {err})") from None
    if not isinstance(ckpt, dict) or ckpt.get("format") != CHECKPOINT_FORMAT:
        raise ValueError(f"{path} is not an obsad checkpoint (no '{CHECKPOINT_FORMAT}' marker)")
    if int(ckpt.get("version", -1)) > CHECKPOINT_VERSION:
        raise ValueError(f"{path} has checkpoint version {ckpt.get('version')}, newer than this obsad understands")
    missing = [k for k in ("model", "optimizer", "step", "epoch", "config") if k not in ckpt]
    if missing:
        raise ValueError(f"{path} is an incomplete obsad checkpoint (missing {missing})")
    return ckpt


def load_weights(module: nn.Module, path: str | os.PathLike, strict: bool = True) -> dict[str, Any]:
    """Load the weights of checkpoint ``path`` into ``module`` (e.g. the best epoch); return the checkpoint."""
    ckpt = load_checkpoint(path)
    module.load_state_dict(ckpt["model"], strict=strict)
    return ckpt


def best_checkpoint_path(checkpoint_dir: str | os.PathLike) -> Path | None:
    """Path of the best checkpoint named by ``checkpoints.json`` in ``checkpoint_dir`` (``None`` if there is none)."""
    index = Path(checkpoint_dir) / INDEX_NAME
    if not index.is_file():
        return None
    best = read_json(index).get("best")
    return None if best is None else Path(checkpoint_dir) / best["file"]


# ------------------------------------------------------------------------------------------------------ helpers
def _as_tensors(data: Any, what: str) -> dict[str, torch.Tensor]:
    """A dict of equally long tensors from a mapping of arrays/tensors or an ``EncodedFeatures``-like object."""
    if not isinstance(data, Mapping):
        if hasattr(data, "numeric") and hasattr(data, "categorical"):
            data = {"numeric": data.numeric, "categorical": data.categorical}
        else:
            raise TypeError(f"{what} must be a dict of arrays/tensors or EncodedFeatures, got {type(data).__name__}")
    if not data:
        raise ValueError(f"{what} has no arrays")
    out: dict[str, torch.Tensor] = {}
    for key, value in data.items():
        if isinstance(value, torch.Tensor):
            t = value
        else:
            arr = np.ascontiguousarray(value)
            t = torch.from_numpy(arr if arr.flags.writeable else arr.copy())
        if t.dtype == torch.float64:
            t = t.float()
        if t.ndim == 0:
            raise ValueError(f"{what}[{key!r}] is a scalar; every entry needs one row per event")
        out[str(key)] = t
    lengths = {k: int(v.shape[0]) for k, v in out.items()}
    if len(set(lengths.values())) != 1:
        raise ValueError(f"{what} arrays have different numbers of rows: {lengths}")
    if next(iter(lengths.values())) == 0:
        raise ValueError(f"{what} has no rows")
    return out


def _shuffle_seed(seed: int, epoch: int) -> int:
    words = np.random.SeedSequence([int(seed) & 0xFFFFFFFF, int(epoch)]).generate_state(2, dtype=np.uint32)
    return (int(words[0]) << 31) ^ int(words[1])


def _safe_name(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", name).strip("-.") or "run"


class _DeferredInterrupt:
    """Turns the first SIGINT into a flag checked at step boundaries (main thread only); restores on exit."""

    def __init__(self) -> None:
        self.requested = False
        self._previous: Any = None
        self._installed = False

    def _handler(self, signum, frame):  # noqa: ARG002
        if self.requested:  # second Ctrl-C: stop now
            raise KeyboardInterrupt
        self.requested = True

    def __enter__(self) -> "_DeferredInterrupt":
        if threading.current_thread() is threading.main_thread():
            try:
                self._previous = signal.signal(signal.SIGINT, self._handler)
                self._installed = True
            except (ValueError, OSError):  # pragma: no cover - embedded interpreters
                self._installed = False
        return self

    def __exit__(self, *exc) -> None:
        if self._installed:
            signal.signal(signal.SIGINT, self._previous)


# ------------------------------------------------------------------------------------------------------ trainer
class Trainer:
    """Trains ``objective`` with :class:`TrainConfig`; see the module docstring for the guarantees.

    >>> history = Trainer(objective, TrainConfig(epochs=5), checkpoint_dir="ckpt", name="tabular").fit(train, val)

    After :meth:`fit`: ``trainer.history``, ``trainer.step``, ``trainer.samples_seen``, ``trainer.epoch`` (epochs
    completed), ``trainer.best_path`` (best checkpoint file or ``None``). One ``fit`` per Trainer.
    """

    def __init__(
        self,
        objective: nn.Module,
        config: TrainConfig | None = None,
        checkpoint_dir: str | os.PathLike | None = None,
        name: str = "run",
        best_name: str = BEST_NAME,
    ) -> None:
        self.config = config or TrainConfig()
        self.name = name
        self.best_name = best_name
        best_name.format(name="x", epoch=1, val_loss=0.5)  # a bad template fails here, not after the first epoch
        self.checkpoint_dir = None if checkpoint_dir is None else Path(checkpoint_dir)
        self.device: Device = pick_device(self.config.device)
        self.objective = objective.to(self.device.name)
        # an objective may train parts of itself at a fraction of the learning rate (a fine-tuned block):
        # ``parameter_groups()`` -> [(parameters, lr_scale), ...]; by default every parameter at scale 1
        scaled = (objective.parameter_groups() if hasattr(objective, "parameter_groups")
                  else [(list(objective.parameters()), 1.0)])
        groups = []
        for params, scale in scaled:
            decay = [p for p in params if p.requires_grad and p.ndim >= 2]  # no decay on biases and norm gains
            no_decay = [p for p in params if p.requires_grad and p.ndim < 2]
            groups += [g for g in ({"params": decay, "weight_decay": self.config.weight_decay, "lr_scale": scale},
                                   {"params": no_decay, "weight_decay": 0.0, "lr_scale": scale}) if g["params"]]
        if not groups:
            raise ValueError("the objective has no trainable parameters")
        # multi-tensor kernels: fused on CUDA, foreach on the CPU (far fewer Python calls per step than the default)
        self._adam_impl = {"fused": True, "foreach": None} if self.device.is_cuda else {"fused": None, "foreach": True}
        betas = tuple(float(b) for b in self.config.betas)
        self.optimizer = torch.optim.AdamW(groups, lr=self.config.lr, betas=betas, **self._adam_impl)
        self.scaler = (torch.amp.GradScaler("cuda")
                       if self.device.is_cuda and self.device.autocast_dtype == torch.float16 else None)
        self.step = 0  # optimizer steps done
        self.epoch = 0  # epochs completed
        self.batch_in_epoch = 0  # batches of the current epoch done
        self.samples_seen = 0
        self.total_steps = 0
        self.warmup_steps = 0
        self.steps_per_epoch = 0
        self.n_train = 0
        self.batch = 0
        self.best_val_loss: float | None = None
        self.best_epoch: int | None = None
        self.best_path: Path | None = None
        self.bad_epochs = 0
        self.history = TrainHistory()
        self._step_rows: dict[str, list] = {c: [] for c in _STEP_COLUMNS}
        self._metric_rows: list[dict[str, float]] = []
        self._pending_loss: list[torch.Tensor] = []
        self._pending_norm: list[torch.Tensor] = []
        self._epoch_rows: list[dict[str, Any]] = []
        self._epoch_train_seconds = 0.0
        self._shuffle = torch.Generator()
        self._best_state: dict[str, torch.Tensor] | None = None
        self._fitted = False
        self._finished = False

    # ---------------------------------------------------------------------------------------------- public API
    def fit(
        self,
        train: Any,
        val: Any | None = None,
        *,
        resume: bool = False,
        max_steps: int | None = None,
        on_step: Callable[["Trainer"], None] | None = None,
    ) -> TrainHistory:
        """Train on ``train`` (dict of ``[n, ...]`` arrays/tensors, or ``EncodedFeatures``), validating on ``val``.

        ``resume``: continue from ``checkpoint_dir/last.pt`` when it exists (else start fresh). ``max_steps``:
        stop after that global step (writes ``last.pt``; ``stop_reason == "max_steps"``), e.g. to split a run.
        ``on_step(trainer)``: called after every step; raising ``KeyboardInterrupt`` there is a clean interrupt.
        """
        if self._fitted:
            raise RuntimeError("this Trainer has already run fit(); create a new Trainer (resume=True continues)")
        self._fitted = True
        cfg = self.config
        if cfg.num_threads:
            torch.set_num_threads(int(cfg.num_threads))
        if cfg.tune_allocator and not self.device.is_cuda:
            tune_allocator()
        train_t = {k: v.to(self.device.name) for k, v in _as_tensors(train, "train").items()}
        val_t = None if val is None else {k: v.to(self.device.name) for k, v in _as_tensors(val, "val").items()}
        n = int(next(iter(train_t.values())).shape[0])
        self.n_train = n
        self.batch = min(cfg.batch_size, n)
        self.steps_per_epoch = n // self.batch
        self.total_steps = self.steps_per_epoch * cfg.epochs
        self.warmup_steps = int(round(cfg.warmup_fraction * self.total_steps))
        for group in self.optimizer.param_groups:
            group.setdefault("initial_lr", cfg.lr)

        resumed = False
        if resume:
            if self.checkpoint_dir is None:
                raise ValueError("resume=True needs a checkpoint_dir")
            if (self.checkpoint_dir / LAST_NAME).is_file():
                self._restore(load_checkpoint(self.checkpoint_dir / LAST_NAME), n)
                resumed = True
        if not resumed:
            torch.manual_seed(cfg.seed)
        if self._finished:
            return self._finalise(self.history.stop_reason)

        reason = "completed"
        bar = tqdm(total=self.total_steps, initial=self.step, disable=not cfg.progress, leave=False,
                   file=sys.stderr, desc=self.name, unit="step", dynamic_ncols=True)
        every = cfg.checkpoint_every_samples
        in_step = False
        try:
            with _DeferredInterrupt() as interrupt:
                self.objective.train()
                while self.epoch < cfg.epochs:
                    order = self._epoch_order(self.epoch).to(self.device.name)
                    t0 = time.perf_counter()
                    while self.batch_in_epoch < self.steps_per_epoch:
                        lo = self.batch_in_epoch * self.batch
                        idx = order[lo:lo + self.batch]
                        in_step = True
                        self._train_step({k: v.index_select(0, idx) for k, v in train_t.items()})
                        in_step = False
                        if every and (self.samples_seen // every) > ((self.samples_seen - self.batch) // every):
                            self._epoch_train_seconds += time.perf_counter() - t0
                            t0 = time.perf_counter()
                            self._save_last()
                        if self.step % 25 == 0 or self.batch_in_epoch == self.steps_per_epoch:
                            self._flush()  # one device sync per 25 steps: progress display and NaN check
                            bar.set_postfix(loss=f"{self._step_rows['loss'][-1]:.4f}",
                                            lr=f"{self._step_rows['lr'][-1]:.2e}", refresh=False)
                        bar.update(1)
                        if on_step is not None:
                            on_step(self)
                        if interrupt.requested:
                            raise KeyboardInterrupt
                        if max_steps is not None and self.step >= max_steps:
                            reason = "max_steps"
                            break
                    self._epoch_train_seconds += time.perf_counter() - t0
                    if reason == "max_steps":
                        break
                    stop = self._end_epoch(val_t)
                    self._save_last()
                    if interrupt.requested:
                        raise KeyboardInterrupt
                    if stop:
                        reason = "early_stopping"
                        break
        except KeyboardInterrupt:
            bar.close()
            self.history.stop_reason = "interrupted"
            if in_step:  # weights may be half-updated: keep the previous checkpoint
                warnings.warn(f"{self.name}: interrupted inside step {self.step + 1}; no checkpoint written for it",
                              stacklevel=2)
            else:
                self._save_last()
            self._flush()
            self.history = self._history()
            raise
        bar.close()
        if reason != "max_steps":
            self._finished = True
        self.history.stop_reason = reason
        self._save_last()
        return self._finalise(reason)

    # ------------------------------------------------------------------------------------------------ training
    def _epoch_order(self, epoch: int) -> torch.Tensor:
        self._shuffle.manual_seed(_shuffle_seed(self.config.seed, epoch))
        return torch.randperm(self.n_train, generator=self._shuffle)

    def _train_step(self, batch: dict[str, torch.Tensor]) -> None:
        cfg = self.config
        lr = cfg.lr * lr_factor(self.step, self.total_steps, self.warmup_steps, cfg.min_lr_ratio)
        for group in self.optimizer.param_groups:
            group["lr"] = lr * float(group.get("lr_scale", 1.0))
        self.optimizer.zero_grad(set_to_none=True)
        with self.device.autocast():
            out = self.objective(batch)
        loss = out.loss
        norm = None
        if self.scaler is not None:
            self.scaler.scale(loss).backward()
            if cfg.grad_clip:
                self.scaler.unscale_(self.optimizer)
                norm = nn.utils.clip_grad_norm_(self.objective.parameters(), cfg.grad_clip)
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            loss.backward()
            if cfg.grad_clip:
                norm = nn.utils.clip_grad_norm_(self.objective.parameters(), cfg.grad_clip)
            self.optimizer.step()
        self.step += 1
        self.batch_in_epoch += 1
        self.samples_seen += self.batch
        rows = self._step_rows
        rows["step"].append(self.step)
        rows["epoch"].append(self.epoch + 1)
        rows["samples_seen"].append(self.samples_seen)
        rows["lr"].append(lr)
        self._pending_loss.append(loss.detach().float())
        if norm is not None:
            self._pending_norm.append(norm.detach().float())
        metrics = getattr(out, "metrics", None) or {}
        self._metric_rows.append({str(k): float(v) for k, v in metrics.items()})

    def _flush(self) -> None:
        """Bring the losses recorded on the device to the host (one sync) and check them."""
        if not self._pending_loss:
            return
        losses = torch.stack(self._pending_loss).double().cpu().tolist()
        norms = (torch.stack(self._pending_norm).double().cpu().tolist() if self._pending_norm
                 else [float("nan")] * len(losses))
        self._pending_loss.clear()
        self._pending_norm.clear()
        first = len(self._step_rows["loss"])
        self._step_rows["loss"].extend(losses)
        self._step_rows["grad_norm"].extend(norms)
        for i, value in enumerate(losses):
            if not math.isfinite(value):
                raise FloatingPointError(f"{self.name}: loss is {value} at step {self._step_rows['step'][first + i]}")

    @torch.no_grad()
    def validate(self, val: Any) -> tuple[float, dict[str, float]]:
        """Mean loss (and metrics) over ``val``, in eval mode, with a fixed seed for the objective's randomness.

        Batches are drawn in a fixed random order, as training batches are: a batch of consecutive events (an
        hour of one day) holds far more look-alike events than a shuffled one, and a contrastive loss on it would
        not be comparable with the training loss. A last batch of one event joins the previous batch.
        The global RNG state (CPU and CUDA) is the same after the call as before.
        """
        data = {k: v.to(self.device.name) for k, v in _as_tensors(val, "val").items()}
        n = int(next(iter(data.values())).shape[0])
        order = torch.randperm(n, generator=torch.Generator().manual_seed(self.config.seed + _VAL_SEED_OFFSET))
        data = {k: v[order.to(v.device)] for k, v in data.items()}
        bs = int(self.config.eval_batch_size or self.config.batch_size)
        starts = list(range(0, n, bs))
        if len(starts) > 1 and n - starts[-1] < 2:
            starts.pop()
        was_training = self.objective.training
        devices = [torch.device(self.device.name).index or 0] if self.device.is_cuda else []
        total = None
        metric_sums: dict[str, float] = {}
        with torch.random.fork_rng(devices=devices):
            torch.manual_seed(self.config.seed + _VAL_SEED_OFFSET)
            self.objective.eval()
            try:
                for i, lo in enumerate(starts):
                    hi = starts[i + 1] if i + 1 < len(starts) else n
                    batch = {k: v[lo:hi] for k, v in data.items()}
                    b = int(next(iter(batch.values())).shape[0])
                    with self.device.autocast():
                        out = self.objective(batch)
                    term = out.loss.detach().double() * b
                    total = term if total is None else total + term
                    for k, v in (getattr(out, "metrics", None) or {}).items():
                        metric_sums[str(k)] = metric_sums.get(str(k), 0.0) + float(v) * b
            finally:
                self.objective.train(was_training)
        return float(total.item()) / n, {k: v / n for k, v in metric_sums.items()}

    def _end_epoch(self, val_t: dict[str, torch.Tensor] | None) -> bool:
        """Validate, record the epoch, update best / patience; True when early stopping triggers."""
        self._flush()
        cfg = self.config
        epoch = self.epoch + 1
        losses = self._step_rows["loss"]
        train_loss = float(np.mean(losses[len(losses) - self.steps_per_epoch:]))
        t0 = time.perf_counter()
        val_loss, val_metrics = (float("nan"), {}) if val_t is None else self.validate(val_t)
        val_seconds = time.perf_counter() - t0
        improved = val_t is not None and math.isfinite(val_loss) and (
            self.best_val_loss is None or val_loss < self.best_val_loss)
        self.epoch = epoch
        self.batch_in_epoch = 0
        train_seconds = self._epoch_train_seconds
        self._epoch_train_seconds = 0.0
        row = {
            "epoch": epoch, "steps": self.step, "samples_seen": self.samples_seen, "train_loss": train_loss,
            "val_loss": val_loss, "lr": self._step_rows["lr"][-1], "improved": bool(improved),
            "train_seconds": train_seconds, "val_seconds": val_seconds, "seconds": train_seconds + val_seconds,
            "events_per_s": self.steps_per_epoch * self.batch / train_seconds if train_seconds > 0 else float("nan"),
        }
        row.update({f"val_{k}": v for k, v in val_metrics.items()})
        self._epoch_rows.append(row)
        if val_t is None:
            return False
        if improved:
            self.best_val_loss, self.best_epoch, self.bad_epochs = val_loss, epoch, 0
            if cfg.restore_best:
                self._best_state = {k: v.detach().to("cpu", copy=True) for k, v in self.objective.state_dict().items()}
            self._save_best()
        else:
            self.bad_epochs += 1
        return cfg.patience is not None and self.bad_epochs >= cfg.patience

    def _finalise(self, reason: str) -> TrainHistory:
        self._flush()
        self.history = self._history()
        self.history.stop_reason = reason
        if self.config.restore_best and self.best_epoch is not None and reason in ("completed", "early_stopping"):
            if self._best_state is not None:
                self.objective.load_state_dict(self._best_state)
            elif self.best_path is not None and self.best_path.is_file():
                self.objective.load_state_dict(load_checkpoint(self.best_path, self.device.name)["model"])
            else:
                raise RuntimeError(f"{self.name}: restore_best asked but the best weights are not available")
            self.history.restored_best = True
        return self.history

    def _history(self) -> TrainHistory:
        steps = pd.DataFrame({c: self._step_rows[c] for c in _STEP_COLUMNS}, columns=_STEP_COLUMNS)
        steps = steps.astype({"step": "int64", "epoch": "int64", "samples_seen": "int64",
                              "loss": "float64", "lr": "float64", "grad_norm": "float64"})
        if self._metric_rows and any(self._metric_rows):
            metrics = pd.DataFrame(self._metric_rows).astype("float64")
            metrics.columns = [c if c not in _STEP_COLUMNS else f"metric_{c}" for c in metrics.columns]
            steps = pd.concat([steps, metrics], axis=1)
        epochs = pd.DataFrame(self._epoch_rows)
        if epochs.empty:
            epochs = pd.DataFrame(columns=_EPOCH_COLUMNS)
        return TrainHistory(steps=steps, epochs=epochs, stop_reason=self.history.stop_reason)

    # --------------------------------------------------------------------------------------------- checkpoints
    def _state(self, kind: str) -> dict[str, Any]:
        self._flush()
        history = self._history()
        cuda_rng = [s.cpu() for s in torch.cuda.get_rng_state_all()] if torch.cuda.is_available() else []
        return {
            "format": CHECKPOINT_FORMAT,
            "version": CHECKPOINT_VERSION,
            "kind": kind,
            "name": self.name,
            "config": self.config.to_dict(),
            "model": self.objective.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": {"step": self.step, "total_steps": self.total_steps, "warmup_steps": self.warmup_steps,
                          "base_lr": float(self.config.lr), "min_lr_ratio": float(self.config.min_lr_ratio)},
            "scaler": None if self.scaler is None else self.scaler.state_dict(),
            "step": self.step,
            "epoch": self.epoch,
            "batch_in_epoch": self.batch_in_epoch,
            "samples_seen": self.samples_seen,
            "n_train": self.n_train,
            "steps_per_epoch": self.steps_per_epoch,
            "finished": self._finished,
            "stop_reason": self.history.stop_reason,
            "epoch_train_seconds": self._epoch_train_seconds,
            "history": {"steps": _frame_to_state(history.steps), "epochs": _frame_to_state(history.epochs)},
            "rng": {"cpu": torch.get_rng_state(), "cuda": cuda_rng},
            "shuffle_generator": self._shuffle.get_state(),
            "best_val_loss": self.best_val_loss,
            "best_epoch": self.best_epoch,
            "best_file": None if self.best_path is None else self.best_path.name,
            "bad_epochs": self.bad_epochs,
        }

    def _write(self, state: dict[str, Any], path: Path) -> None:
        with atomic_path(path) as tmp:
            torch.save(state, tmp)

    def _save_last(self) -> None:
        if self.checkpoint_dir is None:
            return
        self._write(self._state("last"), self.checkpoint_dir / LAST_NAME)
        self._write_index()

    def _save_best(self) -> None:
        if self.checkpoint_dir is None:
            return
        old = self.best_path
        stem = self.best_name.format(name=_safe_name(self.name), epoch=self.epoch, val_loss=self.best_val_loss)
        path = self.checkpoint_dir / f"{stem}.pt"
        self.best_path = path
        self._write(self._state("best"), path)
        self._write_index()
        if old is not None and old != path and old.is_file():
            old.unlink()

    def _write_index(self) -> None:
        last = self.checkpoint_dir / LAST_NAME
        index = {
            "name": self.name,
            "last": {"file": LAST_NAME, "step": self.step, "epoch": self.epoch,
                     "samples_seen": self.samples_seen} if last.is_file() else None,
            "best": None if self.best_path is None else {
                "file": self.best_path.name, "epoch": self.best_epoch, "val_loss": self.best_val_loss},
            "config": self.config.to_dict(),
        }
        write_json(index, self.checkpoint_dir / INDEX_NAME)

    def _restore(self, ckpt: dict[str, Any], n_train: int) -> None:
        saved = ckpt["config"]
        diffs = {k: (saved.get(k), getattr(self.config, k)) for k in _RESUME_FIELDS
                 if saved.get(k) != getattr(self.config, k)}
        if diffs:
            raise ValueError(f"cannot resume from {self.checkpoint_dir / LAST_NAME}: config differs "
                             f"(checkpoint, now): {diffs}")
        if int(ckpt["n_train"]) != n_train:
            raise ValueError(f"cannot resume from {self.checkpoint_dir / LAST_NAME}: it was trained on "
                             f"{ckpt['n_train']} rows, the training set now has {n_train}")
        self.objective.load_state_dict(ckpt["model"])
        self.optimizer.load_state_dict(ckpt["optimizer"])
        for group in self.optimizer.param_groups:  # a checkpoint from another device keeps this device's kernels
            group.update(self._adam_impl)
        if self.scaler is not None and ckpt.get("scaler") is not None:
            self.scaler.load_state_dict(ckpt["scaler"])
        self.step = int(ckpt["step"])
        self.epoch = int(ckpt["epoch"])
        self.batch_in_epoch = int(ckpt["batch_in_epoch"])
        self.samples_seen = int(ckpt["samples_seen"])
        self._finished = bool(ckpt["finished"])
        self._epoch_train_seconds = float(ckpt["epoch_train_seconds"])
        self.best_val_loss = ckpt["best_val_loss"]
        self.best_epoch = ckpt["best_epoch"]
        self.bad_epochs = int(ckpt["bad_epochs"])
        self.best_path = None if ckpt["best_file"] is None else self.checkpoint_dir / ckpt["best_file"]
        steps = _state_to_frame(ckpt["history"]["steps"])
        for c in _STEP_COLUMNS:
            self._step_rows[c] = steps[c].tolist() if c in steps else []
        metric_cols = [c for c in steps.columns if c not in _STEP_COLUMNS]
        renamed = {c: (c[len("metric_"):] if c.startswith("metric_") and c[len("metric_"):] in _STEP_COLUMNS else c)
                   for c in metric_cols}
        self._metric_rows = ([{renamed[c]: v for c, v in row.items()}
                              for row in steps[metric_cols].to_dict("records")]
                             if metric_cols else [{} for _ in range(len(steps))])
        epochs = _state_to_frame(ckpt["history"]["epochs"])
        self._epoch_rows = epochs.to_dict("records")
        for row in self._epoch_rows:
            for key in ("epoch", "steps", "samples_seen"):
                row[key] = int(row[key])
            row["improved"] = bool(row["improved"])
        self.history.stop_reason = str(ckpt["stop_reason"])
        torch.set_rng_state(ckpt["rng"]["cpu"])
        if ckpt["rng"]["cuda"] and torch.cuda.is_available() and len(ckpt["rng"]["cuda"]) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(ckpt["rng"]["cuda"])
        self._shuffle.set_state(ckpt["shuffle_generator"])

    def __repr__(self) -> str:
        return (f"Trainer(name={self.name!r}, device={self.device}, step={self.step}/{self.total_steps}, "
                f"epoch={self.epoch}/{self.config.epochs})")
