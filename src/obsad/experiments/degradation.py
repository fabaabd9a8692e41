"""Plain versus residual deep MLPs: the degradation problem, small enough to run while the book builds.

He et al. (2016) observed that a deeper *plain* network (layers simply stacked) can reach a *higher training
loss* than a shallower one: an optimisation failure, not overfitting. Identity shortcuts, so that each block
computes ``x + F(x)``, removed the gap. This module reproduces the observation on scikit-learn's digits
(1,797 8x8 images, shipped with scikit-learn, no download) with fully connected networks, in seconds on a CPU:

- :class:`PlainBlock` and :class:`ResidualBlock`, the two ways of stacking layers that are compared;
- :class:`DeepMLP`, a stem, a stack of blocks and a linear head, depth counted in weight layers;
- :func:`stream_scale`, the size of the hidden representation after every block (does the stream stay bounded?);
- :func:`gradient_norms`, the norm of the loss gradient at every weight layer (does the signal reach the input?);
- :func:`gradient_correlation`, how similar the input gradients of two nearby inputs are (is it still a signal?);
- :func:`train`, a deterministic minibatch (or full-batch) SGD loop that records the curves;
- :func:`run_experiment`, what Part 1 of the book runs: data, a learning-rate grid, curves, gradients.

Everything is seeded through :func:`obsad.runtime.seed_everything`, runs on the CPU in float32 on one thread
with deterministic kernels, so one seed gives the same numbers on every run of the same machine.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import torch
from torch import nn

from obsad.runtime import seed_everything

__all__ = [
    "PlainBlock",
    "ResidualBlock",
    "DeepMLP",
    "load_digits_split",
    "deterministic_cpu",
    "stream_scale",
    "gradient_norms",
    "gradient_correlation",
    "train",
    "ExperimentResult",
    "run_experiment",
]


def _norm_layer(kind: str, width: int) -> nn.Module:
    """The normalisation named by ``kind``: ``"none"`` (identity) or ``"layer"`` (LayerNorm)."""
    if kind == "none":
        return nn.Identity()
    if kind == "layer":
        return nn.LayerNorm(width)
    raise ValueError(f"unknown norm {kind!r}: expected 'none' or 'layer'")


class PlainBlock(nn.Module):
    """One weight layer of a plain network: ``h -> relu(norm(W h + b))``.

    Without a shortcut every layer must transform its input, and the only path from the loss back to an early
    layer runs through every later layer's weights, normalisation and activation.

    Parameters
    ----------
    width : int
        Input and output width.
    norm : {"layer", "none"}
        Normalisation after the linear map, the conventional position in a plain network.
    """

    def __init__(self, width: int, norm: str = "layer") -> None:
        super().__init__()
        self.linear = nn.Linear(width, width)
        self.norm = _norm_layer(norm, width)
        self.act = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.norm(self.linear(x)))


class ResidualBlock(nn.Module):
    """A pre-activation residual block of two weight layers: ``x + F(x)``.

    The residual branch is ``F(x) = W2 relu(norm2(W1 relu(norm1(x))))``. Normalisation and activation come
    *before* each linear map ("pre-activation", or "pre-norm"), so nothing is applied after the addition and
    the shortcut carries ``x`` unchanged from one block to the next. Two consequences:

    - if the branch outputs zero, the block is exactly the identity: a deeper stack can always do at least as
      well as a shallower one by silencing blocks, so adding blocks cannot make the best reachable fit worse;
    - the block's Jacobian is ``I + dF/dx``: the gradient reaching a block is the gradient leaving it plus a
      correction, instead of a product of per-layer factors that can shrink, grow or scramble it.

    The normalisation inside the branch matters. Without it (``norm="none"``) each block adds a branch of the
    same scale as its input under He initialisation, so the stream's variance roughly doubles per block and a
    deep stack overflows; pre-norm keeps every branch's input at unit scale, so each block adds a bounded amount
    and the stream's variance grows only linearly with the number of blocks.

    Parameters
    ----------
    width : int
        Width of the stream the shortcut carries (input and output).
    norm : {"layer", "none"}
        Normalisation at the start of each half of the branch.
    """

    def __init__(self, width: int, norm: str = "layer") -> None:
        super().__init__()
        self.norm1 = _norm_layer(norm, width)
        self.linear1 = nn.Linear(width, width)
        self.norm2 = _norm_layer(norm, width)
        self.linear2 = nn.Linear(width, width)
        self.act = nn.ReLU()

    def branch(self, x: torch.Tensor) -> torch.Tensor:
        """The residual function ``F(x)``: what the block adds to its input."""
        h = self.linear1(self.act(self.norm1(x)))
        return self.linear2(self.act(self.norm2(h)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.branch(x)


def _model_name(depth: int, residual: bool) -> str:
    return f"{'residual' if residual else 'plain'}-{depth}"


class DeepMLP(nn.Module):
    """A classifier of ``depth`` weight layers, plain or residual.

    ``depth`` counts linear layers as the ResNet paper counts weight layers: a stem (``in_dim -> width``),
    ``depth - 2`` hidden layers and a head (``width -> n_classes``). The plain variant follows the stem and
    every hidden layer with ``relu(norm(.))``. The residual variant groups the hidden layers into two-layer
    :class:`ResidualBlock` s (so ``depth`` must be even) and applies one ``relu(norm(.))`` before the head, as
    pre-activation networks do. Both variants then have exactly the same parameters, LayerNorm ones included;
    they differ only by the shortcuts.

    Weights use He (Kaiming) normal initialisation for ReLU and zero biases: the initialisation designed to keep
    a plain ReLU network's activations at a constant scale, so that a failure of the deep plain network cannot be
    blamed on a careless initialisation.

    Parameters
    ----------
    in_dim, n_classes : int
        Input features and output classes.
    depth : int
        Number of weight layers, at least 2.
    width : int
        Width of every hidden layer.
    residual : bool
        Stack :class:`ResidualBlock` s instead of :class:`PlainBlock` s.
    norm : {"layer", "none"}
        Normalisation used after the stem and inside the blocks.
    """

    def __init__(self, in_dim: int, n_classes: int, depth: int, width: int = 64, residual: bool = False,
                 norm: str = "layer") -> None:
        super().__init__()
        if depth < 2:
            raise ValueError(f"depth must be at least 2 (a stem and a head), got {depth}")
        hidden = depth - 2
        if residual and hidden % 2:
            raise ValueError(f"a residual DeepMLP needs an even depth (two layers per block), got {depth}")
        self.depth, self.width, self.residual, self.norm = depth, width, residual, norm
        self.stem = nn.Linear(in_dim, width)
        if residual:
            self.stem_act = nn.Identity()  # the stream starts raw; every branch normalises its own input
            self.blocks = nn.Sequential(*[ResidualBlock(width, norm) for _ in range(hidden // 2)])
            self.final = nn.Sequential(_norm_layer(norm, width), nn.ReLU())
        else:
            self.stem_act = nn.Sequential(_norm_layer(norm, width), nn.ReLU())
            self.blocks = nn.Sequential(*[PlainBlock(width, norm) for _ in range(hidden)])
            self.final = nn.Identity()
        self.head = nn.Linear(width, n_classes)
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.kaiming_normal_(module.weight, nonlinearity="relu")
                nn.init.zeros_(module.bias)

    @property
    def name(self) -> str:
        """``"plain-32"``, ``"residual-32"``: how tables and plots name the model."""
        return _model_name(self.depth, self.residual)

    def linear_layers(self) -> list[nn.Linear]:
        """The ``depth`` weight layers, in the order data flows through them (stem first, head last)."""
        return [m for m in self.modules() if isinstance(m, nn.Linear)]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.stem_act(self.stem(x))
        h = self.final(self.blocks(h))
        return self.head(h)


def load_digits_split(test_size: float = 0.25, seed: int = 0):
    """scikit-learn's digits as float32 tensors, split (stratified) and standardised on the training part.

    Returns ``(X_train, y_train, X_test, y_test)``; the scaling statistics come from the training part only.
    """
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    X, y = load_digits(return_X_y=True)
    X_train, X_test, y_train, y_test = train_test_split(X, y, test_size=test_size, random_state=seed, stratify=y)
    mean, std = X_train.mean(axis=0), X_train.std(axis=0)
    std[std == 0] = 1.0  # a few border pixels are blank in every training image
    X_train, X_test = (X_train - mean) / std, (X_test - mean) / std

    def features(a):
        return torch.as_tensor(a, dtype=torch.float32)

    def labels(a):
        return torch.as_tensor(a, dtype=torch.long)

    return features(X_train), labels(y_train), features(X_test), labels(y_test)


@contextlib.contextmanager
def deterministic_cpu() -> Iterator[None]:
    """Run the enclosed code on one CPU thread with deterministic kernels, then restore the settings.

    Reductions split across threads add numbers in an order that depends on the thread count, so two machines
    (or two runs under different load settings) could disagree in the last bits, and a deep network amplifies
    those bits. One thread is also the fastest choice for matrices this small.
    """
    threads = torch.get_num_threads()
    deterministic = torch.are_deterministic_algorithms_enabled()
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    try:
        yield
    finally:
        torch.set_num_threads(threads)
        torch.use_deterministic_algorithms(deterministic)


def _loss(model: nn.Module, X: torch.Tensor, y: torch.Tensor, reduction: str = "mean") -> torch.Tensor:
    return nn.functional.cross_entropy(model(X), y, reduction=reduction)


@torch.no_grad()
def stream_scale(model: DeepMLP, X: torch.Tensor) -> np.ndarray:
    """Root-mean-square of the hidden representation after the stem and after every block, on a batch.

    For a residual model this is the scale of the stream the shortcuts carry. With pre-norm blocks its variance
    grows linearly with the number of blocks (the RMS like a square root); without normalisation the variance
    roughly doubles per block, which is why an unnormalised deep residual stack overflows at He initialisation.
    """
    h = model.stem_act(model.stem(X))
    scales = [h.pow(2).mean().sqrt().item()]
    for block in model.blocks:
        h = block(h)
        scales.append(h.pow(2).mean().sqrt().item())
    return np.array(scales)


def gradient_norms(model: DeepMLP, X: torch.Tensor, y: torch.Tensor) -> np.ndarray:
    """The Frobenius norm of ``dLoss/dW`` for every weight layer, input side first, on one batch.

    A vanishing gradient shows as first-layer norms orders of magnitude below the last layers'. The model's
    stored gradients are not touched (the gradients are computed with :func:`torch.autograd.grad`).
    """
    weights = [layer.weight for layer in model.linear_layers()]
    grads = torch.autograd.grad(_loss(model, X, y), weights)
    return np.array([g.norm().item() for g in grads])


def gradient_correlation(model: nn.Module, X: torch.Tensor, y: torch.Tensor, scales: Sequence[float],
                         seed: int = 0) -> np.ndarray:
    """Mean cosine similarity between the loss gradient at ``x`` and at ``x + s * |x| * u``, for each scale ``s``.

    ``u`` is a random unit direction per example (seeded), so ``s`` is the size of the nudge relative to the
    input's own norm. In a network whose gradient is a useful signal, nearby inputs have similar gradients and the
    similarity stays near 1 for small nudges. Balduzzi et al. (2017) showed that in deep plain networks the
    gradient *shatters*: it varies so fast with the input that it looks like noise, and the similarity falls
    quickly even when the gradient's norm is healthy. Gradients are taken with respect to the input, the quantity
    they studied; the model is put in evaluation mode and restored.
    """
    was_training = model.training
    model.eval()
    generator = torch.Generator().manual_seed(seed)
    direction = torch.randn(X.shape, generator=generator)
    direction = direction / direction.norm(dim=1, keepdim=True) * X.norm(dim=1, keepdim=True)

    def input_gradient(inputs: torch.Tensor) -> torch.Tensor:
        inputs = inputs.detach().requires_grad_(True)
        (grad,) = torch.autograd.grad(_loss(model, inputs, y, reduction="sum"), inputs)
        return grad

    base = input_gradient(X)
    similarity = [nn.functional.cosine_similarity(base, input_gradient(X + s * direction), dim=1).mean().item()
                  for s in scales]
    model.train(was_training)
    return np.array(similarity)


@torch.no_grad()
def _evaluate(model: nn.Module, X: torch.Tensor, y: torch.Tensor) -> tuple[float, float]:
    was_training = model.training
    model.eval()
    logits = model(X)
    model.train(was_training)
    return nn.functional.cross_entropy(logits, y).item(), (logits.argmax(dim=1) == y).float().mean().item()


def train(model: nn.Module, X: torch.Tensor, y: torch.Tensor, *, epochs: int = 20, lr: float = 0.01,
          momentum: float = 0.9, batch_size: int | None = 128, X_test: torch.Tensor | None = None,
          y_test: torch.Tensor | None = None, seed: int = 0) -> pd.DataFrame:
    """Train ``model`` with cross-entropy and SGD with momentum, and record one row per epoch.

    Parameters
    ----------
    epochs, lr, momentum :
        The optimisation budget. Comparisons keep it identical across models, so differences come from the model.
    batch_size : int or None
        Minibatch size; ``None`` trains full-batch (one step per epoch). Minibatches are drawn by a generator
        seeded with ``seed``, so two runs see the same order.
    X_test, y_test :
        Optional held-out data, evaluated after every epoch (never used for a decision here).

    Returns
    -------
    pandas.DataFrame
        ``epoch``, ``train_loss``, ``train_acc`` (on the whole training set, after the epoch) and ``test_loss``,
        ``test_acc`` when a test set is given. Row 0 is the untrained model. A diverged run (non-finite loss)
        stops early; its remaining rows are absent.
    """
    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=momentum)
    generator = torch.Generator().manual_seed(seed)
    n = len(X)
    rows = []

    def record(epoch: int) -> None:
        row = {"epoch": epoch}
        row["train_loss"], row["train_acc"] = _evaluate(model, X, y)
        if X_test is not None:
            row["test_loss"], row["test_acc"] = _evaluate(model, X_test, y_test)
        rows.append(row)

    record(0)
    model.train()
    for epoch in range(1, epochs + 1):
        if batch_size is None:
            batches = [torch.arange(n)]
        else:
            order = torch.randperm(n, generator=generator)
            batches = list(order.split(batch_size))
        for idx in batches:
            opt.zero_grad(set_to_none=True)
            _loss(model, X[idx], y[idx]).backward()
            opt.step()
        record(epoch)
        if not np.isfinite(rows[-1]["train_loss"]):
            break
    return pd.DataFrame(rows)


@dataclass
class ExperimentResult:
    """Everything :func:`run_experiment` measured, as tidy tables.

    Attributes
    ----------
    curves : DataFrame
        One row per model, learning rate, seed and epoch: ``model``, ``lr``, ``seed``, ``epoch``, ``train_loss``,
        ``train_acc``, ``test_loss``, ``test_acc``.
    gradients : DataFrame
        Per-layer gradient norms on the whole training set: ``model``, ``stage`` (``"init"`` or ``"trained"``),
        ``lr`` (NaN at initialisation), ``layer`` (1 = stem), ``grad_norm``. First seed only.
    correlation : DataFrame
        :func:`gradient_correlation` at initialisation: ``model``, ``scale``, ``cosine``. First seed only.
    best_lr : dict
        Model name -> the learning rate of the grid with the lowest final training loss (first seed).
    settings : dict
        The arguments of the run, for the record.
    seconds : float
        Wall time of the whole experiment.
    """

    curves: pd.DataFrame
    gradients: pd.DataFrame
    correlation: pd.DataFrame
    best_lr: dict
    settings: dict = field(default_factory=dict)
    seconds: float = 0.0

    @property
    def models(self) -> list[str]:
        """Model names in the order they were run."""
        return list(dict.fromkeys(self.curves["model"]))

    def final(self) -> pd.DataFrame:
        """The last recorded epoch of every run."""
        last = self.curves.groupby(["model", "lr", "seed"], sort=False)["epoch"].transform("max")
        return self.curves[self.curves["epoch"] == last].reset_index(drop=True)

    def grid(self, metric: str = "train_loss") -> pd.DataFrame:
        """``metric`` at the end of training, models by learning rate, for the first seed."""
        final = self.final()
        final = final[final["seed"] == self.settings["seed"]]
        table = final.pivot(index="model", columns="lr", values=metric)
        return table.loc[self.models]

    def best(self) -> pd.DataFrame:
        """Each model at its best learning rate, summarised over all seeds run there."""
        final = self.final()
        rows = []
        for model in self.models:
            runs = final[(final["model"] == model) & (final["lr"] == self.best_lr[model])]
            rows.append({
                "model": model,
                "best lr": self.best_lr[model],
                "seeds": len(runs),
                "train loss (mean)": runs["train_loss"].mean(),
                "train loss (min)": runs["train_loss"].min(),
                "train loss (max)": runs["train_loss"].max(),
                "train acc (mean)": runs["train_acc"].mean(),
                "test acc (mean)": runs["test_acc"].mean(),
            })
        return pd.DataFrame(rows).set_index("model")


def run_experiment(seed: int = 0, plain_depths: Sequence[int] = (2, 8, 32), residual_depths: Sequence[int] = (32,),
                   width: int = 64, lrs: Sequence[float] = (0.001, 0.003, 0.01, 0.03, 0.1), epochs: int = 20,
                   batch_size: int | None = 128, extra_seeds: Sequence[int] = (1, 2),
                   scales: Sequence[float] = (0.01, 0.03, 0.1, 0.3), norm: str = "layer") -> ExperimentResult:
    """Train plain and residual MLPs of several depths on digits under one budget, and measure their gradients.

    Every model is trained with the same optimiser, epochs and batch size at every learning rate of ``lrs``, so no
    model is judged at a learning rate that only suits another; each model's best learning rate is then trained
    again with ``extra_seeds`` to show the spread a seed causes. Gradient norms are measured at initialisation and
    at the end of every run of the first seed; the gradient correlation at initialisation.

    Returns
    -------
    ExperimentResult
    """
    clock = time.perf_counter()
    settings = dict(seed=seed, plain_depths=tuple(plain_depths), residual_depths=tuple(residual_depths),
                    width=width, lrs=tuple(lrs), epochs=epochs, batch_size=batch_size, extra_seeds=tuple(extra_seeds),
                    scales=tuple(scales), norm=norm, optimizer="SGD, momentum 0.9")
    X, y, X_test, y_test = load_digits_split(seed=seed)
    specs = [(d, False) for d in plain_depths] + [(d, True) for d in residual_depths]

    def build(depth: int, residual: bool, run_seed: int) -> DeepMLP:
        seed_everything(run_seed)
        return DeepMLP(X.shape[1], int(y.max()) + 1, depth, width, residual, norm)

    curves, gradients, correlation = [], [], []

    def fit(depth: int, residual: bool, lr: float, run_seed: int) -> DeepMLP:
        model = build(depth, residual, run_seed)
        history = train(model, X, y, epochs=epochs, lr=lr, batch_size=batch_size, X_test=X_test, y_test=y_test,
                        seed=run_seed)
        curves.append(history.assign(model=model.name, lr=lr, seed=run_seed))
        return model

    with deterministic_cpu():
        for depth, residual in specs:
            model = build(depth, residual, seed)
            for layer, g in enumerate(gradient_norms(model, X, y), start=1):
                gradients.append(dict(model=model.name, stage="init", lr=np.nan, layer=layer, grad_norm=g))
            for s, c in zip(scales, gradient_correlation(model, X, y, scales, seed=seed)):
                correlation.append(dict(model=model.name, scale=s, cosine=c))
            for lr in lrs:
                model = fit(depth, residual, lr, seed)
                for layer, g in enumerate(gradient_norms(model, X, y), start=1):
                    gradients.append(dict(model=model.name, stage="trained", lr=lr, layer=layer, grad_norm=g))
        first = pd.concat(curves, ignore_index=True)
        final = first[first["epoch"] == first.groupby(["model", "lr"])["epoch"].transform("max")]
        # A diverged run (NaN loss) must never be "best": fill NaN with +inf before picking the minimum.
        best_lr = {m: float(g.set_index("lr")["train_loss"].fillna(np.inf).idxmin())
                   for m, g in final.groupby("model", sort=False)}
        for depth, residual in specs:
            for extra in extra_seeds:
                fit(depth, residual, best_lr[_model_name(depth, residual)], extra)

    columns = ["model", "lr", "seed", "epoch", "train_loss", "train_acc", "test_loss", "test_acc"]
    return ExperimentResult(
        curves=pd.concat(curves, ignore_index=True)[columns],
        gradients=pd.DataFrame(gradients),
        correlation=pd.DataFrame(correlation),
        best_lr=best_lr,
        settings=settings,
        seconds=time.perf_counter() - clock,
    )
