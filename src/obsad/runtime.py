"""Where code runs and how reproducibly: device, mixed precision, worker threads, seeds, the book's scale, timers.

Everything that depends on the machine goes through here, so a notebook reads the same on a laptop
(CPU, float32) and on a GPU box (CUDA with bf16 or fp16 autocast).
"""

from __future__ import annotations

import contextlib
import gc
import os
import random
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np

#: Multiplier on every dataset size and epoch count the book uses. ``1.0`` is the full book (the size
#: whose numbers the text discusses); smaller values make quick smoke runs. Set ``OBSAD_BOOK_SCALE``.
BOOK_SCALE: float = float(os.environ.get("OBSAD_BOOK_SCALE", "1.0"))


def scaled(n: int, minimum: int = 1) -> int:
    """``n`` multiplied by :data:`BOOK_SCALE`, never below ``minimum``."""
    return max(minimum, int(round(n * BOOK_SCALE)))


def seed_everything(seed: int) -> np.random.Generator:
    """Seed Python, NumPy and torch (CPU and CUDA) and return a fresh NumPy generator.

    torch is optional here so that data-only code does not pay its import cost.
    """
    random.seed(seed)
    np.random.seed(seed % (2**32))
    os.environ["PYTHONHASHSEED"] = str(seed)
    try:
        import torch
    except ImportError:  # pragma: no cover - torch is a declared dependency
        pass
    else:
        torch.manual_seed(seed)
        if torch.cuda.is_available():
            torch.cuda.manual_seed_all(seed)
    return np.random.default_rng(seed)


@dataclass(frozen=True)
class Device:
    """The chosen device and the mixed-precision dtype to use with it (``None``: full precision)."""

    name: str
    autocast_dtype: object | None

    @property
    def is_cuda(self) -> bool:
        return self.name.startswith("cuda")

    def autocast(self):
        """A context manager that enables autocast on CUDA and does nothing on the CPU."""
        import torch

        if self.autocast_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type="cuda", dtype=self.autocast_dtype)

    def __str__(self) -> str:
        precision = "float32" if self.autocast_dtype is None else str(self.autocast_dtype).replace("torch.", "")
        return f"{self.name} ({precision})"


def worker_pool(name: str) -> ThreadPoolExecutor:
    """A one-thread pool whose thread searches with FAISS on as many threads as the calling thread does.

    OpenMP's thread count (``faiss.omp_set_num_threads``) is a setting of the thread that makes it: a thread
    started later begins from the default, every core. ``obsad serve --threads 1`` set it on the main thread,
    and the batches scored on a worker thread searched on every core anyway."""
    import faiss

    return ThreadPoolExecutor(max_workers=1, thread_name_prefix=name, initializer=faiss.omp_set_num_threads,
                              initargs=(faiss.omp_get_max_threads(),))


def freeze_loaded_objects() -> None:
    """Leave the objects alive now (a service's loaded packages: hundreds of thousands of small vocabulary and
    lookup objects) out of the cyclic garbage collector's passes from now on.

    A request of a thousand events allocates a few hundred thousand objects, which sets off the collector's full
    passes; each one walked every object of the packages too (~200 ms on a 2-core machine, a tenth of a batch
    request's time on average, and a pause for whatever request was running). Objects made later are collected
    as usual; what is frozen and later dropped is still freed by its reference count. Call it again after a
    reload: it first takes the earlier freeze back and collects, so an old package's cycles are not kept."""
    gc.unfreeze()
    gc.collect()
    gc.freeze()


@contextlib.contextmanager
def collector_paused():
    """Run a block without the cyclic garbage collector's passes; they resume (and catch up) after it.

    For one request in a single-threaded scoring process: a batch of a thousand events allocates hundreds of
    thousands of objects, nearly all freed by their reference count when the request ends, yet they set off a
    collector pass every 700 allocations while alive (measured over HTTP: 4-6 ms of a scoring process's
    75-80 ms per 1,000-event request). What the request leaves in cycles waits for the next pass, so memory
    stays bounded by one request. The collector is a setting of the whole process: meant for a process that
    runs one such block at a time (two threads pausing it at once would turn it back on early)."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def pick_device(prefer: str | None = None) -> Device:
    """CUDA when available (bf16 autocast where supported, else fp16), otherwise the CPU.

    ``prefer`` (or ``OBSAD_DEVICE``) forces a device, e.g. ``"cpu"`` to reproduce CPU numbers on a GPU box.
    """
    import torch

    choice = prefer or os.environ.get("OBSAD_DEVICE")
    if choice is None:
        choice = "cuda" if torch.cuda.is_available() else "cpu"
    if choice.startswith("cuda"):
        if not torch.cuda.is_available():
            raise RuntimeError(f"device {choice!r} requested but CUDA is not available")
        dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return Device(choice, dtype)
    return Device("cpu", None)


def tune_allocator() -> bool:
    """Keep freed memory in the process so training steps stop paying page faults; ``True`` if applied.

    A training step allocates and frees the same large tensors every time. glibc returns blocks above its
    thresholds to the kernel on free, so the next step maps and faults them in again (10-30 % of a CPU step on
    the book's models). Raising ``M_TRIM_THRESHOLD`` (1 GiB) and ``M_MMAP_THRESHOLD`` (32 MiB) keeps them.
    Process-wide and glibc-only (a no-op elsewhere); the trainer calls it for CPU runs.
    """
    import ctypes
    import ctypes.util

    name = ctypes.util.find_library("c")
    if not name or "libc" not in name:
        return False
    try:
        libc = ctypes.CDLL(name)
        m_trim_threshold, m_mmap_threshold = -1, -3
        return bool(libc.mallopt(m_trim_threshold, 1 << 30)) and bool(libc.mallopt(m_mmap_threshold, 32 << 20))
    except (OSError, AttributeError):
        return False


class Stopwatch:
    """Measures a notebook's or a step's wall time; ``str()`` gives a one-line report."""

    def __init__(self, label: str = "runtime") -> None:
        self.label = label
        self.start = time.perf_counter()

    @property
    def seconds(self) -> float:
        return time.perf_counter() - self.start

    def __str__(self) -> str:
        return f"{self.label}: {self.seconds:.1f} s"
