"""The next-template Transformer: token layout, causality, training on a session grammar, anomaly scores,
vocabulary resizing for fine-tuning, persistence."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F

from obsad.logs.model import (
    BOS,
    EOS,
    PAD,
    UNK,
    NextTemplateObjective,
    NextTokenTransformer,
    encode_sessions,
    loss_by_position,
    next_token_accuracy,
    next_token_log_probs,
    resize_vocabulary,
    score_sessions,
    template_ids_to_tokens,
    train_next_template,
)
from obsad.models import load_model, save_model
from obsad.train import TrainConfig

pytestmark = pytest.mark.usefixtures("one_thread")

# Deterministic lifecycles that share a start (0) and a middle (3, 4), so the next template depends on more than
# the previous one; each has one optional step (probability 0.3) at a fixed point.
# (steps, probability, optional step inserted after this index, optional template)
LIFECYCLES = [
    ([0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11], 0.6, 4, 20),
    ([0, 1, 12, 13, 14, 3, 4, 15, 16, 11], 0.25, 3, 21),
    ([0, 17, 18, 19, 5, 6, 7, 22, 11], 0.15, 5, 23),
]
N_TEMPLATES = 24
MAX_LEN = 16


def grammar_sessions(n: int, seed: int, lifecycles=LIFECYCLES) -> list[list[int]]:
    rng = np.random.default_rng(seed)
    probs = np.array([p for _, p, _, _ in lifecycles])
    out = []
    for life in rng.choice(len(lifecycles), size=n, p=probs / probs.sum()):
        steps, _, after, optional = lifecycles[life]
        session = list(steps)
        if rng.random() < 0.3:
            session.insert(after + 1, optional)
        out.append(session)
    return out


def tiny_model(n_templates: int = N_TEMPLATES, seed: int = 0, **kw) -> NextTokenTransformer:
    torch.manual_seed(seed)
    cfg = dict(d_model=32, n_heads=2, n_layers=2, d_ff=64, max_len=MAX_LEN, dropout=0.0)
    cfg.update(kw)
    return NextTokenTransformer(n_templates, **cfg)


def config(**kw) -> TrainConfig:
    cfg = dict(epochs=8, batch_size=64, lr=3e-3, progress=False, num_threads=1, device="cpu")
    cfg.update(kw)
    return TrainConfig(**cfg)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A tiny model trained ~250 steps on the grammar (a few seconds on one thread)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    model, history = train_next_template(tiny_model(), grammar_sessions(2000, 0), grammar_sessions(200, 1),
                                         config(), checkpoint_dir=tmp_path_factory.mktemp("ckpt"))
    torch.set_num_threads(before)
    return model.eval(), history


# ------------------------------------------------------------------------------------------------- encoding
def test_template_ids_to_tokens():
    assert template_ids_to_tokens([0, 5, -1]).tolist() == [4, 9, UNK]
    with pytest.raises(ValueError, match=">= -1"):
        template_ids_to_tokens([0, -2])


def test_encode_layout_and_chunks():
    enc = encode_sessions([[0, 1, 2], [], [5, -1, 7, 8, 9, 10, 11]], max_len=5)
    assert enc.tokens.tolist() == [
        [BOS, 4, 5, 6, EOS],
        [BOS, EOS, PAD, PAD, PAD],
        [BOS, 9, UNK, 11, 12],  # a long session: pieces of max_len - 1 tokens, each after its own BOS
        [BOS, 13, 14, 15, EOS],
    ]
    assert enc.session.tolist() == [0, 1, 2, 2]
    assert enc.part.tolist() == [0, 0, 0, 1]
    assert enc.lengths.tolist() == [3, 0, 7]
    tokens, session = enc
    assert tokens is enc.tokens and session is enc.session


def test_encode_chunk_boundaries():
    # max_len - 2 events fit one chunk; one more spills the EOS into a second chunk
    fits, spills = encode_sessions([list(range(4))], 6), encode_sessions([list(range(5))], 6)
    assert fits.tokens.tolist() == [[BOS, 4, 5, 6, 7, EOS]]
    assert spills.tokens.tolist() == [[BOS, 4, 5, 6, 7, 8], [BOS, EOS, PAD, PAD, PAD, PAD]]
    long = encode_sessions(pd.Series([list(range(12))]), 6)
    assert long.tokens.shape == (3, 6) and (long.tokens[:, 0] == BOS).all()
    stream = long.tokens[:, 1:].flatten()
    assert stream[stream != PAD].tolist() == [t + 4 for t in range(12)] + [EOS]
    with pytest.raises(ValueError):
        encode_sessions([[0]], 2)


# ---------------------------------------------------------------------------------------------------- model
@pytest.mark.parametrize("mode", ["train", "eval"])
def test_causality(mode):
    model = tiny_model(dropout=0.0 if mode == "train" else 0.1, max_len=12)
    model.train(mode == "train")
    g = torch.Generator().manual_seed(1)
    tokens = torch.randint(0, model.vocab_size, (3, 12), generator=g)
    changed = tokens.clone()
    changed[:, 7:] = (changed[:, 7:] + 5) % model.vocab_size
    with torch.no_grad():
        a, b = model(tokens), model(changed)
    assert a.shape == (3, 12, model.vocab_size)
    assert torch.equal(a[:, :7], b[:, :7])
    assert not torch.allclose(a[:, 7:], b[:, 7:])


def test_rejects_too_long_input():
    model = tiny_model(max_len=8)
    with pytest.raises(ValueError, match="max_len"):
        model(torch.full((1, 9), BOS))


def test_objective_loss_ignores_pad_and_never_predicts_pad_or_bos():
    model = tiny_model().eval()
    objective = NextTemplateObjective(model)
    tokens = encode_sessions([[0, 1, 2], [3], [4, 5, 6, 7, 8]], MAX_LEN).tokens
    out = objective({"tokens": tokens})
    log_probs = next_token_log_probs(model(tokens[:, :-1]))
    assert torch.isneginf(log_probs[..., [PAD, BOS]]).all()
    targets = tokens[:, 1:]
    valid = targets != PAD
    manual = -log_probs.gather(-1, targets.unsqueeze(-1)).squeeze(-1)[valid].mean()
    torch.testing.assert_close(out.loss, manual, rtol=1e-6, atol=1e-6)
    assert 0.0 <= out.metrics["accuracy"] <= 1.0
    # more or fewer PAD columns change nothing (the objective drops all-PAD columns; the model is causal)
    for width in (8, 24):
        resized = torch.cat([tokens, torch.full((3, 8), PAD)], dim=1)[:, :width]
        torch.testing.assert_close(objective({"tokens": resized}).loss, out.loss, rtol=1e-6, atol=1e-6)


def test_objective_unk_replacement_only_in_training():
    model = tiny_model()
    tokens = encode_sessions(grammar_sessions(32, 5), MAX_LEN).tokens
    plain = NextTemplateObjective(model).eval()({"tokens": tokens}).loss
    noisy = NextTemplateObjective(model, unk_prob=0.5)
    torch.manual_seed(0)
    assert not torch.allclose(noisy.train()({"tokens": tokens}).loss, plain)
    torch.testing.assert_close(noisy.eval()({"tokens": tokens}).loss, plain)


# ------------------------------------------------------------------------------------------------- training
def test_training_learns_the_grammar(trained):
    model, history = trained
    assert history.epochs["val_loss"].iloc[-1] < history.epochs["val_loss"].iloc[0]
    acc = next_token_accuracy(model, grammar_sessions(300, 2))
    assert acc["top1"] > 0.9
    assert acc["top1"] <= acc["top3"] <= acc["top5"] <= acc["top10"] == pytest.approx(1.0)
    untrained = next_token_accuracy(tiny_model(seed=3), grammar_sessions(300, 2))
    assert untrained["top1"] < 0.5


def test_anomalous_sessions_score_higher(trained):
    model, _ = trained
    normal_sessions = grammar_sessions(200, 3)
    normal = score_sessions(model, normal_sessions)
    swapped = score_sessions(model, [s[:5] + [s[6], s[5]] + s[7:] for s in normal_sessions])
    truncated = score_sessions(model, [s[: len(s) // 2] for s in normal_sessions])
    unseen = score_sessions(model, [s[:3] + [-1] + s[4:] for s in normal_sessions])

    assert (swapped["mean_nll"] > normal["mean_nll"]).all()
    assert swapped["mean_nll"].min() > normal["mean_nll"].quantile(0.95)
    assert (truncated["topk_miss_rate"] > normal["topk_miss_rate"]).all()
    assert truncated["topk_miss_rate"].mean() > normal["topk_miss_rate"].quantile(0.95)
    assert (normal["unseen_rate"] == 0).all()
    np.testing.assert_allclose(unseen["unseen_rate"], 1.0 / unseen["n_events"])
    assert (unseen["mean_nll"] > normal["mean_nll"]).all()


def test_score_columns_and_chunk_aggregation(trained):
    model, _ = trained
    sessions = pd.Series([[0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11], [], [0, 1, -1]], index=["a", "b", "c"])
    scores = score_sessions(model, sessions, k=3)
    assert list(scores.index) == ["a", "b", "c"]
    assert list(scores.columns) == ["n_events", "mean_nll", "max_nll", "perplexity", "topk_miss_rate", "unseen_rate"]
    assert scores["n_events"].tolist() == [12, 0, 3]
    np.testing.assert_allclose(scores["perplexity"], np.exp(scores["mean_nll"]), rtol=1e-12)
    assert (scores["max_nll"] >= scores["mean_nll"]).all()
    assert scores.loc["c", "unseen_rate"] == pytest.approx(1 / 3)
    # every token in the top-|vocab|: no misses
    assert (score_sessions(model, sessions, k=model.vocab_size)["topk_miss_rate"] == 0).all()

    # a session spanning three chunks: aggregated over exactly its 13 predictions
    small = tiny_model(max_len=6, seed=4).eval()
    session = [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11]
    tokens = encode_sessions([session], 6).tokens
    with torch.no_grad():
        lp = next_token_log_probs(small(tokens[:, :-1]))
    targets = tokens[:, 1:]
    nll = -lp.gather(-1, targets.unsqueeze(-1)).squeeze(-1)[targets != PAD]
    assert nll.numel() == len(session) + 1
    for k in (1, 2, 5):
        in_topk = (lp.topk(k, dim=-1).indices == targets.unsqueeze(-1)).any(dim=-1)[targets != PAD]
        row = score_sessions(small, [session], k=k).iloc[0]
        assert row["mean_nll"] == pytest.approx(float(nll.double().mean()), rel=1e-6)
        assert row["max_nll"] == pytest.approx(float(nll.max()), rel=1e-6)
        assert row["topk_miss_rate"] == pytest.approx(1.0 - float(in_topk.double().mean()))
        assert 0 < row["topk_miss_rate"] < 1  # an untrained model: the check sees both hits and misses
    by_batch = score_sessions(model, grammar_sessions(50, 4), batch_size=7)
    pd.testing.assert_frame_equal(by_batch, score_sessions(model, grammar_sessions(50, 4)), rtol=1e-5)


def test_loss_by_position(trained):
    model, _ = trained
    sessions = grammar_sessions(100, 6)
    table = loss_by_position(model, sessions)
    assert list(table.columns) == ["position", "mean_nll", "count"]
    assert table["count"].sum() == sum(len(s) + 1 for s in sessions)
    assert table.loc[table["position"] == 0, "count"].item() == 100
    # the lifecycle choice (position 1) is uncertain, a deterministic middle step (position 8) is not
    nll = table.set_index("position")["mean_nll"]
    assert nll[1] > 5 * nll[8]


# ----------------------------------------------------------------------------------------------- resizing
def test_resize_vocabulary_keeps_shared_rows_and_averages_new(trained):
    model, _ = trained
    old = [f"template {i}" for i in range(N_TEMPLATES)]
    rng = np.random.default_rng(0)
    kept = [old[i] for i in rng.permutation(20)]  # templates 20..23 dropped, the rest reordered
    new = kept[:10] + ["new A", "new B"] + kept[10:] + ["new C"]
    resized, report = resize_vocabulary(model, old, new, seed=1)
    assert resized.n_templates == len(new) and resized.vocab_size == len(new) + 4
    assert (report["n_kept"], report["n_added"], report["n_dropped"]) == (20, 3, 4)
    assert report["added"] == [10, 11, 22] and report["dropped"] == [20, 21, 22, 23]

    new_rows = torch.tensor([4 + new.index(t) for t in kept] + [0, 1, 2, 3])
    old_rows = torch.tensor([4 + old.index(t) for t in kept] + [0, 1, 2, 3])
    for name in ("token_embedding.weight", "output.weight", "output.bias"):
        assert torch.equal(resized.state_dict()[name][new_rows], model.state_dict()[name][old_rows]), name
    added = torch.tensor(report["added"]) + 4
    for name in ("output.weight", "output.bias"):
        mean = model.state_dict()[name][4:].mean(dim=0)
        assert torch.equal(resized.state_dict()[name][added], mean.expand_as(resized.state_dict()[name][added]))
    emb_mean = model.token_embedding.weight[4:].mean(dim=0)
    noise = resized.token_embedding.weight[added] - emb_mean
    assert 0 < noise.abs().max() < 0.1
    for name, value in model.state_dict().items():
        if name not in ("token_embedding.weight", "output.weight", "output.bias"):
            assert torch.equal(resized.state_dict()[name], value), name

    again, _ = resize_vocabulary(model, old, new, seed=1)
    other, _ = resize_vocabulary(model, old, new, seed=2)
    assert torch.equal(again.token_embedding.weight, resized.token_embedding.weight)
    assert not torch.equal(other.token_embedding.weight, resized.token_embedding.weight)

    # a session of shared templates: the same hidden states, so the shared logits are unchanged
    session = [old.index(t) for t in kept[:6]]
    with torch.no_grad():
        before = model(encode_sessions([session], MAX_LEN).tokens)
        after = resized(encode_sessions([[new.index(old[i]) for i in session]], MAX_LEN).tokens)
    torch.testing.assert_close(after[..., new_rows], before[..., old_rows], rtol=1e-5, atol=1e-5)

    with pytest.raises(ValueError, match="entries"):
        resize_vocabulary(model, old[:-1], new)
    with pytest.raises(ValueError, match="duplicate"):
        resize_vocabulary(model, old, new + ["new A"])


def test_resized_model_fine_tunes(trained):
    model, _ = trained
    old = [f"template {i}" for i in range(N_TEMPLATES)]
    new = old[:12] + [f"other {i}" for i in range(8)]  # a target system: 12 shared templates, 8 new ones
    lifecycles = [([0, 1, 12, 13, 14, 15, 6, 7, 11], 0.7, 3, 16), ([0, 17, 18, 2, 3, 19, 11], 0.3, 2, 16)]
    train, val = grammar_sessions(640, 7, lifecycles), grammar_sessions(128, 8, lifecycles)
    resized, _ = resize_vocabulary(model, old, new, seed=0)
    before = next_token_accuracy(resized, val)["top1"]
    tuned, history = train_next_template(resized, train, val, config(epochs=6, betas=(0.9, 0.98), lr=2e-3))
    after = next_token_accuracy(tuned, val)["top1"]
    assert history.epochs["val_loss"].iloc[-1] < history.epochs["val_loss"].iloc[0]
    assert after > 0.85 and after > before


# -------------------------------------------------------------------------------------------- persistence
def test_save_load_round_trip(trained, tmp_path):
    model, _ = trained
    tokens = encode_sessions(grammar_sessions(20, 9), MAX_LEN).tokens
    save_model(model, tmp_path / "model")
    loaded = load_model(tmp_path / "model")
    assert isinstance(loaded, NextTokenTransformer) and loaded.to_config() == model.to_config()
    with torch.no_grad():
        assert torch.equal(loaded(tokens), model(tokens))

    objective = NextTemplateObjective(model, unk_prob=0.1)
    save_model(objective, tmp_path / "objective")
    rebuilt = load_model(tmp_path / "objective")
    assert isinstance(rebuilt, NextTemplateObjective) and rebuilt.unk_prob == 0.1
    with torch.no_grad():
        assert torch.equal(rebuilt.model(tokens), model(tokens))


def test_manual_loss_matches_cross_entropy_on_targets():
    """Sanity check of the masking: over valid targets, the loss is plain cross-entropy with PAD/BOS removed."""
    model = tiny_model().eval()
    tokens = encode_sessions(grammar_sessions(8, 10), MAX_LEN).tokens
    logits = model(tokens[:, :-1])
    keep = torch.ones(model.vocab_size, dtype=torch.bool)
    keep[[PAD, BOS]] = False
    targets = tokens[:, 1:]
    valid = targets != PAD
    remap = torch.cumsum(keep.long(), 0) - 1  # target index among the kept tokens
    expected = F.cross_entropy(logits[..., keep][valid], remap[targets[valid]])
    got = NextTemplateObjective(model)({"tokens": tokens}).loss
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-6)
