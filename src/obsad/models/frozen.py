"""A trained :class:`~obsad.models.tabular.TabularResNet`'s inference in numpy, for a service's single events.

``FrozenTabularResNet(model).embed(numeric, categorical)`` computes what ``model.embed`` computes (eval mode:
the input projection folded into the embedding tables, the residual blocks, the output norm), in float32, equal
up to float rounding (~1e-6). Why a second route: in a service answering one event every few milliseconds,
each request finds the process's caches cold again, and a one-event forward through torch then pays for
torch's dispatch code being read back from memory, one operator after another; the same arithmetic in numpy
touches far less code, and costs about half as much after a pause (``python bench/bench_cold_calls.py``;
notebook 09 measures it when the book builds). Batches stay with torch (one dispatch per operator
for thousands of events, and the GPU when there is one).

The weights are copied when freezing: a model trained further must be frozen again.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from .tabular import TabularResNet, check_ids_in_range


def _layer_norm(x: np.ndarray, weight: np.ndarray, bias: np.ndarray, eps: float) -> np.ndarray:
    centred = x - x.mean(axis=-1, keepdims=True)
    variance = np.mean(centred * centred, axis=-1, keepdims=True)  # biased, as torch's layer_norm
    return centred / np.sqrt(variance + np.float32(eps)) * weight + bias


def _gelu(x: np.ndarray) -> np.ndarray:
    from scipy.special import erf  # the exact GELU (torch's default), not the tanh approximation

    return (np.float32(0.5) * x * (np.float32(1.0) + erf(x / np.float32(math.sqrt(2.0))))).astype(np.float32)


def _relu(x: np.ndarray) -> np.ndarray:
    return np.maximum(x, np.float32(0.0))


class FrozenTabularResNet:
    """The eval-mode function of a trained :class:`TabularResNet`, as numpy arrays (weights copied)."""

    def __init__(self, model: TabularResNet) -> None:
        def array(tensor: torch.Tensor) -> np.ndarray:
            return np.ascontiguousarray(tensor.detach().to("cpu", torch.float32).numpy())

        with torch.no_grad():
            table, offsets, w_num, bias = model._folded_input()
        self.n_numeric = int(model.n_numeric)
        self.cardinalities = list(model.cardinalities)
        self.d_model = int(model.d_model)
        self.table = array(table) if table is not None else None
        self.offsets = offsets.detach().cpu().numpy().astype(np.int64) if offsets is not None else None
        self.max_ids = model.max_ids.detach().cpu().numpy().astype(np.int64)
        self.check_inputs = bool(model.check_inputs)
        self.numeric_weight = np.ascontiguousarray(array(w_num).T)  # [n_numeric, d_model]
        self.bias = array(bias)
        self.activation = {"relu": _relu, "gelu": _gelu}[model.activation]
        self.blocks = [(array(b.norm.weight), array(b.norm.bias), float(b.norm.eps),
                        np.ascontiguousarray(array(b.linear1.weight).T), array(b.linear1.bias),
                        np.ascontiguousarray(array(b.linear2.weight).T), array(b.linear2.bias))
                       for b in model.blocks]
        norm = model.output_norm
        self.output_norm = (array(norm.weight), array(norm.bias), float(norm.eps))

    def embed(self, numeric, categorical) -> np.ndarray:
        """Representations ``[n, d_model]`` (float32) of ``numeric [n, n_numeric]`` and ``categorical [n,
        n_categorical]`` (ids), as :meth:`TabularResNet.embed` gives them (to float rounding)."""
        numeric = np.asarray(numeric, dtype=np.float32)
        categorical = np.asarray(categorical, dtype=np.int64)
        n = numeric.shape[0] if numeric.ndim == 2 else -1
        if numeric.ndim != 2 or numeric.shape[1] != self.n_numeric:
            raise ValueError(f"numeric must be [n, {self.n_numeric}], got {list(numeric.shape)}")
        if categorical.shape != (n, len(self.cardinalities)):
            raise ValueError(f"categorical must be [{n}, {len(self.cardinalities)}], got {list(categorical.shape)}")
        if self.check_inputs:
            check_ids_in_range(categorical, self.max_ids, self.cardinalities)
        x = np.broadcast_to(self.bias, (n, self.d_model))
        if self.table is not None:
            x = x + self.table[categorical + self.offsets].sum(axis=1)
        if self.n_numeric:
            x = x + numeric @ self.numeric_weight
        for norm_weight, norm_bias, eps, w1, b1, w2, b2 in self.blocks:
            x = x + (self.activation(_layer_norm(x, norm_weight, norm_bias, eps) @ w1 + b1) @ w2 + b2)
        return np.ascontiguousarray(_layer_norm(x, *self.output_norm), dtype=np.float32)
