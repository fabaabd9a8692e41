"""The next-template Transformer: a causal language model over sessions of log-template ids, and its scores.

A session (the template ids of one HDFS block or one OpenStack instance, in time order) is read as a sentence.
The model learns ``p(next template | templates so far)`` on normal sessions; a session is then as anomalous as its
templates are surprising (mean / max negative log-likelihood, DeepLog's top-k miss rate) or unknown.

Token layout (:data:`PAD`, :data:`UNK`, :data:`BOS`, :data:`EOS` = 0, 1, 2, 3): template id ``t >= 0`` is token
``t + 4``; template id ``-1`` (a template the parser never saw in training) is :data:`UNK`. Every session is
encoded as ``BOS t_1 ... t_n EOS`` and right-padded with :data:`PAD`. The model predicts every token after
``BOS``, ``EOS`` included: a session that stops too early is as anomalous as one with a wrong step.

- :func:`encode_sessions` — sessions -> ``[n_chunks, max_len]`` tokens and the chunk -> session index;
- :class:`NextTokenTransformer` — token + learned position embeddings, pre-norm causal Transformer, LayerNorm,
  output layer over the whole vocabulary;
- :class:`NextTemplateObjective` — the :class:`~obsad.train.Trainer` objective (next-token cross-entropy);
- :func:`train_next_template` — encode, wrap and train with the project's trainer;
- :func:`resize_vocabulary` — carry a pretrained model (HDFS) over to another template vocabulary (OpenStack);
- :func:`score_sessions`, :func:`next_token_accuracy`, :func:`loss_by_position` — scores and diagnostics.

Persistence: both modules are registered, so :func:`obsad.models.save_model` / :func:`~obsad.models.load_model`
write and read them as ``config.json`` + safetensors (import this module before loading).
"""

from __future__ import annotations

import itertools
import os
from dataclasses import dataclass
from typing import Any, Iterable, Iterator, Sequence

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..models.tabular import register_model
from ..train.objectives import ObjectiveOutput
from ..train.trainer import TrainConfig, Trainer, TrainHistory

__all__ = [
    "PAD",
    "UNK",
    "BOS",
    "EOS",
    "N_SPECIAL",
    "SPECIAL_TOKENS",
    "EncodedSessions",
    "template_ids_to_tokens",
    "encode_sessions",
    "NextTokenTransformer",
    "NextTemplateObjective",
    "next_token_log_probs",
    "train_next_template",
    "resize_vocabulary",
    "score_sessions",
    "next_token_accuracy",
    "loss_by_position",
]

PAD, UNK, BOS, EOS = 0, 1, 2, 3
N_SPECIAL = 4
SPECIAL_TOKENS = ("<pad>", "<unk>", "<bos>", "<eos>")
#: Tokens that are never a next token: PAD only fills, BOS only starts a chunk.
_NEVER_NEXT = (PAD, BOS)


# ------------------------------------------------------------------------------------------------- encoding
def template_ids_to_tokens(template_ids: Any) -> Tensor:
    """Template ids (``-1`` = unseen) -> tokens (``UNK`` for ``-1``, ``t + 4`` otherwise), as a LongTensor."""
    ids = torch.as_tensor(np.asarray(template_ids, dtype=np.int64))
    if ids.numel() and int(ids.min()) < -1:
        raise ValueError(f"template ids must be >= -1 (-1 = unseen), got {int(ids.min())}")
    return torch.where(ids < 0, UNK, ids + N_SPECIAL)


@dataclass
class EncodedSessions:
    """Sessions as fixed-width chunks: ``tokens[c]`` is chunk ``c``, from session ``session[c]``, the
    ``part[c]``-th chunk (0-based) of that session; ``lengths[s]`` is the number of events of session ``s``."""

    tokens: Tensor
    session: Tensor
    part: Tensor
    lengths: Tensor

    @property
    def n_sessions(self) -> int:
        return int(self.lengths.shape[0])

    def __iter__(self) -> Iterator[Tensor]:
        """``tokens, session = encode_sessions(...)`` unpacks the two most used fields."""
        return iter((self.tokens, self.session))


def _flatten(sequences: Iterable[Sequence[int]]) -> tuple[np.ndarray, np.ndarray]:
    """All template ids concatenated, and the length of every session (one pass; no per-token Python work)."""
    seqs = list(sequences.tolist() if isinstance(sequences, pd.Series) else sequences)
    lengths = np.fromiter(map(len, seqs), dtype=np.int64, count=len(seqs))
    flat = np.fromiter(itertools.chain.from_iterable(seqs), dtype=np.int64, count=int(lengths.sum()))
    return flat, lengths


def _starts(counts: np.ndarray) -> np.ndarray:
    """Offset of each group in a concatenation of groups of ``counts`` items (exclusive cumulative sum)."""
    return np.cumsum(counts) - counts


def encode_sessions(sequences: Iterable[Sequence[int]], max_len: int) -> EncodedSessions:
    """Encode sessions of template ids as ``BOS t_1 ... t_n EOS`` chunks of ``max_len`` tokens, right-padded.

    A session longer than ``max_len - 2`` events is cut into consecutive chunks: the stream ``t_1 ... t_n EOS`` is
    split into pieces of ``max_len - 1`` tokens and every piece gets its own ``BOS``, so every event (and the EOS)
    is predicted exactly once and every chunk looks like what the model sees in training. The price: a chunk after
    the first has lost its left context, so its first predictions are made as at a session start (pessimistic, so
    those events score a little higher). Choose ``max_len`` above nearly all session lengths to keep that rare;
    overlapping windows would avoid it but count events twice or need a per-position target mask.
    """
    if max_len < 3:
        raise ValueError(f"max_len must be >= 3 (BOS, one event, EOS), got {max_len}")
    flat, lengths = _flatten(sequences)
    body = max_len - 1
    n_sessions = len(lengths)
    stream_len = lengths + 1  # events + EOS
    n_chunks = -(-stream_len // body)
    chunk_start = _starts(n_chunks)
    total_chunks = int(n_chunks.sum())
    stream = np.full(int(stream_len.sum()), EOS, dtype=np.int64)
    stream_start = _starts(stream_len)
    # event j of session s sits at stream slot (its flat index) + s: every earlier session added one EOS slot
    session_of_event = np.repeat(np.arange(n_sessions), lengths)
    stream[np.arange(len(flat)) + session_of_event] = template_ids_to_tokens(flat).numpy()
    pos_in_session = np.arange(len(stream)) - np.repeat(stream_start, stream_len)
    session_of_token = np.repeat(np.arange(n_sessions), stream_len)
    row = chunk_start[session_of_token] + pos_in_session // body
    col = 1 + pos_in_session % body
    tokens = np.full((total_chunks, max_len), PAD, dtype=np.int64)
    tokens[:, 0] = BOS
    tokens[row, col] = stream
    session = np.repeat(np.arange(n_sessions), n_chunks)
    part = np.arange(total_chunks) - np.repeat(chunk_start, n_chunks)
    return EncodedSessions(torch.from_numpy(tokens), torch.from_numpy(session), torch.from_numpy(part),
                           torch.from_numpy(lengths))


# ---------------------------------------------------------------------------------------------------- model
@register_model
class NextTokenTransformer(nn.Module):
    """Causal Transformer over tokens: ``forward(tokens [b, L]) -> logits [b, L, vocab_size]``.

    Position ``i`` of the output is the distribution of token ``i + 1`` given tokens ``0 .. i`` (a causal mask, so
    padding after ``EOS`` never influences earlier positions and needs no key mask). Pre-norm layers
    (``norm_first``) and a final LayerNorm train stably without a learning-rate warmup dance on small data.
    ``vocab_size = n_templates + 4``; the output layer covers all tokens, :func:`next_token_log_probs` excludes
    the impossible ones.
    """

    def __init__(self, n_templates: int, d_model: int = 64, n_heads: int = 4, n_layers: int = 2, d_ff: int = 128,
                 max_len: int = 64, dropout: float = 0.1) -> None:
        super().__init__()
        if n_templates < 0:
            raise ValueError(f"n_templates must be >= 0, got {n_templates}")
        if d_model % n_heads:
            raise ValueError(f"d_model ({d_model}) must be divisible by n_heads ({n_heads})")
        if max_len < 2:
            raise ValueError(f"max_len must be >= 2, got {max_len}")
        self.n_templates = int(n_templates)
        self.d_model = int(d_model)
        self.n_heads = int(n_heads)
        self.n_layers = int(n_layers)
        self.d_ff = int(d_ff)
        self.max_len = int(max_len)
        self.dropout = float(dropout)
        self.token_embedding = nn.Embedding(self.vocab_size, self.d_model)
        self.position_embedding = nn.Embedding(self.max_len, self.d_model)
        self.embedding_dropout = nn.Dropout(self.dropout)
        self.layers = nn.ModuleList(
            nn.TransformerEncoderLayer(self.d_model, self.n_heads, dim_feedforward=self.d_ff, dropout=self.dropout,
                                       activation="gelu", batch_first=True, norm_first=True)
            for _ in range(self.n_layers))
        self.norm = nn.LayerNorm(self.d_model)
        self.output = nn.Linear(self.d_model, self.vocab_size)
        causal = torch.triu(torch.full((self.max_len, self.max_len), float("-inf")), diagonal=1)
        self.register_buffer("causal_mask", causal, persistent=False)
        # GPT-style small init: the residual stream starts near the embeddings' scale, logits near uniform.
        for emb in (self.token_embedding, self.position_embedding):
            nn.init.normal_(emb.weight, std=0.02)
        nn.init.normal_(self.output.weight, std=0.02)
        nn.init.zeros_(self.output.bias)

    @property
    def vocab_size(self) -> int:
        return self.n_templates + N_SPECIAL

    def to_config(self) -> dict[str, Any]:
        return {"n_templates": self.n_templates, "d_model": self.d_model, "n_heads": self.n_heads,
                "n_layers": self.n_layers, "d_ff": self.d_ff, "max_len": self.max_len, "dropout": self.dropout}

    @property
    def config(self) -> dict[str, Any]:
        return self.to_config()

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> "NextTokenTransformer":
        return cls(**dict(config))

    def count_parameters(self, trainable_only: bool = True) -> int:
        return sum(p.numel() for p in self.parameters() if p.requires_grad or not trainable_only)

    def forward(self, tokens: Tensor) -> Tensor:
        if tokens.ndim != 2:
            raise ValueError(f"tokens must be [batch, length], got {list(tokens.shape)}")
        length = tokens.shape[1]
        if length > self.max_len:
            raise ValueError(f"sequence length {length} exceeds the model's max_len {self.max_len}")
        positions = torch.arange(length, device=tokens.device)
        x = self.embedding_dropout(self.token_embedding(tokens) + self.position_embedding(positions))
        mask = self.causal_mask[:length, :length]
        for layer in self.layers:
            x = layer(x, src_mask=mask, is_causal=True)
        return self.output(self.norm(x))


def next_token_log_probs(logits: Tensor) -> Tensor:
    """Log-probabilities of the next token, with ``PAD`` and ``BOS`` (never a next token) given probability 0."""
    never = torch.zeros(logits.shape[-1], dtype=torch.bool, device=logits.device)
    never[list(_NEVER_NEXT)] = True
    return torch.log_softmax(logits.float().masked_fill(never, float("-inf")), dim=-1)


def _trim(tokens: Tensor) -> Tensor:
    """Drop the all-PAD columns at the right of a batch (causal model: the other positions are unchanged)."""
    width = int((tokens != PAD).sum(dim=1).max()) if tokens.numel() else 1
    return tokens[:, :max(width, 2)]


# ------------------------------------------------------------------------------------------------ objective
@register_model
class NextTemplateObjective(nn.Module):
    """Next-token prediction for :class:`~obsad.train.Trainer`: ``batch = {"tokens": LongTensor[b, max_len]}``.

    Loss: mean cross-entropy of token ``i + 1`` given tokens ``<= i`` over the non-PAD targets (PAD is never a
    target, BOS never is either since it only opens a chunk; both get probability 0). Metric: top-1 accuracy.
    ``unk_prob`` replaces that share of the *input* template tokens by ``UNK`` (targets untouched, drawn from the
    global RNG), so the model learns to carry on after a template it has never seen, as it will meet at scoring
    time; 0 (default) leaves the inputs as they are.
    """

    def __init__(self, model: NextTokenTransformer, unk_prob: float = 0.0) -> None:
        super().__init__()
        if not 0.0 <= unk_prob < 1.0:
            raise ValueError(f"unk_prob must be in [0, 1), got {unk_prob}")
        self.model = model
        self.unk_prob = float(unk_prob)

    def to_config(self) -> dict[str, Any]:
        return {"model": self.model.to_config(), "unk_prob": self.unk_prob}

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> "NextTemplateObjective":
        return cls(NextTokenTransformer.from_config(config["model"]), unk_prob=config.get("unk_prob", 0.0))

    def forward(self, batch: dict[str, Tensor]) -> ObjectiveOutput:
        tokens = _trim(batch["tokens"])
        inputs, targets = tokens[:, :-1], tokens[:, 1:]
        if self.training and self.unk_prob > 0.0:
            hide = (torch.rand(inputs.shape, device=inputs.device) < self.unk_prob) & (inputs >= N_SPECIAL)
            inputs = inputs.masked_fill(hide, UNK)
        log_probs = next_token_log_probs(self.model(inputs))
        loss = F.nll_loss(log_probs.reshape(-1, log_probs.shape[-1]), targets.reshape(-1), ignore_index=PAD)
        with torch.no_grad():
            valid = targets != PAD
            hits = (log_probs.argmax(dim=-1) == targets) & valid
            accuracy = hits.sum() / valid.sum().clamp_min(1)
        return ObjectiveOutput(loss, {"accuracy": float(accuracy)})


def train_next_template(model: NextTokenTransformer, train_sequences: Iterable[Sequence[int]],
                        val_sequences: Iterable[Sequence[int]] | None, config: TrainConfig,
                        checkpoint_dir: str | os.PathLike | None = None, *, unk_prob: float = 0.0,
                        name: str = "next-template", resume: bool = False,
                        max_steps: int | None = None) -> tuple[NextTokenTransformer, TrainHistory]:
    """Encode the sessions with ``model.max_len``, train with :class:`~obsad.train.Trainer`; return the model
    (trained in place, on the config's device) and the history. Seed the model's construction yourself."""
    objective = NextTemplateObjective(model, unk_prob=unk_prob)
    train = {"tokens": encode_sessions(train_sequences, model.max_len).tokens}
    val = None if val_sequences is None else {"tokens": encode_sessions(val_sequences, model.max_len).tokens}
    trainer = Trainer(objective, config, checkpoint_dir=checkpoint_dir, name=name)
    history = trainer.fit(train, val, resume=resume, max_steps=max_steps)
    return objective.model, history


# ----------------------------------------------------------------------------------------------- resizing
def resize_vocabulary(model: NextTokenTransformer, old_templates: Sequence[str], new_templates: Sequence[str],
                      seed: int = 0, noise_std: float = 0.02) -> tuple[NextTokenTransformer, dict[str, Any]]:
    """A copy of ``model`` for the vocabulary ``new_templates`` (e.g. HDFS-pretrained -> OpenStack fine-tuning).

    Templates are matched by exact text. The special tokens and the templates in both lists keep their pretrained
    embedding and output rows (weight and bias) bit for bit; every other parameter is copied. A template only in
    ``new_templates`` starts as "an average template": embedding = mean of the pretrained template embeddings +
    ``N(0, noise_std)`` noise (seeded; it only lets the layers tell new templates apart from the first step),
    output weight and bias = the means of the pretrained template rows. The pretrained layers have only ever
    seen inputs near the pretrained embeddings, and a mean row gives a new template the logit of a typical
    template; a random row would feed the layers inputs they never saw and start with arbitrary logits, and the
    fine-tuning's first steps would be spent undoing that instead of adapting.

    Report: ``n_old``, ``n_new``, ``n_kept``, ``n_added``, ``n_dropped``, ``new_to_old`` (old template id of
    every new template id, ``-1`` when added), ``added`` (new ids), ``dropped`` (old ids).
    """
    old_templates, new_templates = list(old_templates), list(new_templates)
    if len(old_templates) != model.n_templates:
        raise ValueError(f"old_templates has {len(old_templates)} entries, the model has {model.n_templates}")
    for what, names in (("old_templates", old_templates), ("new_templates", new_templates)):
        if len(set(names)) != len(names):
            raise ValueError(f"{what} has duplicate template texts; matching by text would be ambiguous")
    if model.n_templates == 0:
        raise ValueError("the model has no pretrained templates to average over")
    old_index = {text: i for i, text in enumerate(old_templates)}
    new_to_old = torch.tensor([old_index.get(text, -1) for text in new_templates], dtype=torch.long)
    kept = new_to_old >= 0

    config = model.to_config() | {"n_templates": len(new_templates)}
    resized = NextTokenTransformer.from_config(config)
    vocab_keys = {"token_embedding.weight", "output.weight", "output.bias"}
    pretrained = {k: v.detach() for k, v in model.state_dict().items()}
    result = resized.load_state_dict({k: v for k, v in pretrained.items() if k not in vocab_keys}, strict=False)
    if set(result.missing_keys) != vocab_keys or result.unexpected_keys:  # a new vocabulary-sized parameter?
        raise RuntimeError(f"unexpected parameters when resizing: missing {result.missing_keys}, "
                           f"unexpected {result.unexpected_keys}")
    resized.to(next(model.parameters()).device)

    generator = torch.Generator().manual_seed(int(seed))
    with torch.no_grad():
        rows = torch.cat([torch.arange(N_SPECIAL), torch.where(kept, new_to_old + N_SPECIAL, -1)])
        source = rows >= 0
        old_rows = rows.clamp_min(0)
        for name, target in (("token_embedding.weight", resized.token_embedding.weight),
                             ("output.weight", resized.output.weight), ("output.bias", resized.output.bias)):
            old = pretrained[name]
            mean = old[N_SPECIAL:].mean(dim=0)
            fresh = mean.expand_as(target).clone()
            if name == "token_embedding.weight":
                fresh += noise_std * torch.randn(fresh.shape, generator=generator).to(fresh)
            mask = source.to(target.device).view(-1, *([1] * (target.ndim - 1)))
            target.copy_(torch.where(mask, old[old_rows.to(old.device)], fresh))
    resized.train(model.training)
    report = {
        "n_old": len(old_templates), "n_new": len(new_templates), "n_kept": int(kept.sum()),
        "n_added": int((~kept).sum()), "n_dropped": len(old_templates) - int(kept.sum()),
        "new_to_old": new_to_old.tolist(), "added": torch.nonzero(~kept).flatten().tolist(),
        "dropped": sorted(set(range(len(old_templates))) - set(new_to_old[kept].tolist())),
    }
    return resized, report


# ---------------------------------------------------------------------------------------------------- scoring
def _device(model: nn.Module) -> torch.device:
    return next(model.parameters()).device


def _target_stats(model: NextTokenTransformer, encoded: EncodedSessions,
                  batch_size: int) -> Iterator[tuple[Tensor, Tensor, Tensor, Tensor]]:
    """Per batch of chunks: chunk ids ``[b]``, NLL ``[b, w]``, rank ``[b, w]`` (tokens strictly more likely than
    the target) and the valid-target mask ``[b, w]``. Chunks are batched by length (less padding); ``w`` varies."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    tokens = encoded.tokens
    lengths = (tokens != PAD).sum(dim=1)
    order = torch.argsort(lengths, descending=True, stable=True)
    device = _device(model)
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode():
            for lo in range(0, len(order), batch_size):
                ids = order[lo:lo + batch_size]
                batch = _trim(tokens[ids].to(device))
                target = batch[:, 1:]
                log_probs = next_token_log_probs(model(batch[:, :-1]))
                target_lp = log_probs.gather(-1, target.unsqueeze(-1)).squeeze(-1)
                rank = (log_probs > target_lp.unsqueeze(-1)).sum(dim=-1)
                yield ids, (-target_lp).cpu(), rank.cpu(), (target != PAD).cpu()
    finally:
        model.train(was_training)


def score_sessions(model: NextTokenTransformer, sequences: Iterable[Sequence[int]], k: int = 5,
                   batch_size: int = 256) -> pd.DataFrame:
    """Anomaly scores of every session (rows in input order; a ``pd.Series`` input keeps its index).

    Every event and the final EOS are predicted (``n_events + 1`` predictions; an early stop is a surprise):
    ``mean_nll`` and ``max_nll`` (nats), ``perplexity = exp(mean_nll)``, ``topk_miss_rate`` (share of predictions
    whose true token is not among the ``k`` most likely — DeepLog's rule) and ``unseen_rate`` (share of events
    with template id -1; 0 for an empty session). Long sessions are scored chunk by chunk (see
    :func:`encode_sessions`) and aggregated per session.
    """
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    index = sequences.index if isinstance(sequences, pd.Series) else None
    encoded = encode_sessions(sequences, model.max_len)
    n = encoded.n_sessions
    nll_sum = torch.zeros(n, dtype=torch.float64)
    nll_max = torch.full((n,), float("-inf"), dtype=torch.float64)
    misses = torch.zeros(n, dtype=torch.float64)
    count = torch.zeros(n, dtype=torch.float64)
    for ids, nll, rank, valid in _target_stats(model, encoded, batch_size):
        session = encoded.session[ids].unsqueeze(1).expand_as(nll)[valid]
        values = nll[valid].double()
        nll_sum.index_add_(0, session, values)
        nll_max.scatter_reduce_(0, session, values, reduce="amax")
        misses.index_add_(0, session, (rank[valid] >= k).double())
        count.index_add_(0, session, torch.ones_like(values))
    unk_per_chunk = (encoded.tokens == UNK).sum(dim=1).double()  # UNK tokens are exactly the ids -1
    unseen = torch.zeros(n, dtype=torch.float64).index_add_(0, encoded.session, unk_per_chunk)
    mean_nll = nll_sum / count
    return pd.DataFrame({
        "n_events": encoded.lengths.numpy(),
        "mean_nll": mean_nll.numpy(),
        "max_nll": nll_max.numpy(),
        "perplexity": torch.exp(mean_nll).numpy(),
        "topk_miss_rate": (misses / count).numpy(),
        "unseen_rate": (unseen / encoded.lengths.clamp_min(1).double()).numpy(),
    }, index=index)


def next_token_accuracy(model: NextTokenTransformer, sequences: Iterable[Sequence[int]],
                        ks: Sequence[int] = (1, 3, 5, 10), batch_size: int = 256) -> dict[str, float]:
    """Share of next tokens (events and EOS) among the ``k`` most likely, for each ``k``: ``{"top1": ..., ...}``,
    plus ``n_predictions``."""
    hits = torch.zeros(len(ks), dtype=torch.float64)
    total = 0
    k_values = torch.tensor(list(ks), dtype=torch.long)
    for _, _, rank, valid in _target_stats(model, encode_sessions(sequences, model.max_len), batch_size):
        ranks = rank[valid]
        hits += (ranks.unsqueeze(0) < k_values.unsqueeze(1)).sum(dim=1).double()
        total += int(ranks.numel())
    out = {f"top{k}": float(h) / max(total, 1) for k, h in zip(ks, hits.tolist())}
    out["n_predictions"] = total
    return out


def loss_by_position(model: NextTokenTransformer, sequences: Iterable[Sequence[int]],
                     batch_size: int = 256) -> pd.DataFrame:
    """Mean NLL of the prediction of the event at each position of a session (0 = first event, predicted from
    BOS alone; the EOS of a session of ``n`` events is position ``n``): ``position``, ``mean_nll``, ``count``.
    Shows how much context the model needs, and whether chunk boundaries of long sessions cost accuracy."""
    encoded = encode_sessions(sequences, model.max_len)
    body = model.max_len - 1
    max_positions = int(encoded.lengths.max()) + 1 if encoded.n_sessions else 0
    nll_sum = torch.zeros(max_positions, dtype=torch.float64)
    count = torch.zeros(max_positions, dtype=torch.float64)
    for ids, nll, _, valid in _target_stats(model, encoded, batch_size):
        position = encoded.part[ids].unsqueeze(1) * body + torch.arange(nll.shape[1]).unsqueeze(0)
        nll_sum.index_add_(0, position[valid], nll[valid].double())
        count.index_add_(0, position[valid], torch.ones(int(valid.sum()), dtype=torch.float64))
    seen = count > 0
    return pd.DataFrame({"position": torch.nonzero(seen).flatten().numpy(),
                         "mean_nll": (nll_sum[seen] / count[seen]).numpy(),
                         "count": count[seen].long().numpy()})
