"""Windows of one entity's events, the event-sequence encoder, its pretext task and the window head."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from obsad.features.sequences import EntityWindows, entity_windows, event_max, window_labels, window_tokens
from obsad.models import EventSequenceEncoder, MaskedEventObjective
from obsad.train.two_stage import TwoStageConfig, pretrain_sequence_encoder, train_head

HOUR = 3_600_000.0


@pytest.fixture(autouse=True)
def _one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def test_windows_follow_one_entity_in_time_order_cut_by_hour_and_count():
    events = pd.DataFrame({"user": ["a", "b", "a", "a", "a", None, "b", "a"],
                           "ip": ["x", "x", "y", "x", "x", "x", None, "x"]})
    ms = np.array([5, 1, 3, 2, 4, 6, 2, HOUR + 1], dtype=float)
    w = entity_windows(events, ["user", "ip", "absent"], ms, window="1h", max_len=2)
    rows = {(c, e, tuple(r[r >= 0])) for c, e, r in zip(w.column, w.entity, w.index)}
    # user a in the first hour: rows 3 (t=2), 2 (t=3), 4 (t=4), 0 (t=5) -> cut every 2 events
    assert ("user", "a", (3, 2)) in rows and ("user", "a", (4, 0)) in rows
    assert ("user", "a", (7,)) in rows  # the next hour is another window
    assert ("user", "b", (1, 6)) in rows
    assert not any(5 in r for c, _, r in rows if c == "user")  # no user: in no user window
    assert all(len(r) <= 2 for *_, r in rows)
    # every (column, event with a value and a time) is in exactly one window of that column
    for column in ("user", "ip"):
        members = w.index[w.column == column]
        members = members[members >= 0]
        assert len(members) == len(set(members)) == int(events[column].notna().sum())
    assert set(w.start_ms) <= {0.0, HOUR}


def test_events_without_time_are_in_no_window_and_bad_arguments_fail():
    events = pd.DataFrame({"user": ["a", "a", "a"]})
    w = entity_windows(events, ["user"], np.array([1.0, np.nan, 2.0]))
    assert sorted(w.index[w.index >= 0].tolist()) == [0, 2]
    with pytest.raises(ValueError):
        entity_windows(events, ["user"], np.zeros(3), max_len=0)
    with pytest.raises(ValueError):
        entity_windows(events, ["user"], np.zeros(2))
    empty = entity_windows(events, ["nothing"], np.zeros(3))
    assert len(empty) == 0


def test_window_labels_and_event_max():
    w = EntityWindows(np.array([[0, 1, -1], [1, 2, 3], [4, -1, -1]]), np.array(["u"] * 3, dtype=object),
                      np.array(["a", "b", "c"], dtype=object), np.zeros(3))
    labels = np.array([-1, 0, 2, -1, -1])
    assert window_labels(w, labels).tolist() == [0, 2, -1]
    best, which = event_max(w, np.array([0.1, 0.7, 0.3]), n_events=6)
    assert which.tolist() == [0, 1, 1, 1, 2, -1]
    assert best[:5].tolist() == [0.1, 0.7, 0.7, 0.7, 0.3] and np.isinf(best[5])
    tokens, valid = window_tokens(np.arange(10, dtype=np.float32).reshape(5, 2), w)
    assert tokens.shape == (3, 3, 2) and valid.sum() == 6
    assert (tokens[0, 2] == 0).all() and (tokens[1, 2] == [6, 7]).all()


def test_sequence_encoder_ignores_padding_and_pools_valid_tokens():
    torch.manual_seed(0)
    enc = EventSequenceEncoder(d_event=6, d_model=8, n_heads=2, max_len=5).eval()
    x = torch.randn(3, 5, 6)
    valid = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1], [1, 0, 0, 0, 0]], dtype=torch.bool)
    garbage = x.clone()
    garbage[~valid] = 100.0
    a = enc.pool(enc(x, valid), valid)
    b = enc.pool(enc(garbage, valid), valid)
    assert torch.allclose(a, b, atol=1e-5)  # padding never reaches a valid token
    assert torch.allclose(enc.embed(x, valid), a, atol=1e-6)
    index = torch.tensor([[0, 1, -1], [2, -1, -1]])
    table = torch.randn(3, 6)
    direct = enc.embed(torch.stack([torch.stack([table[0], table[1], torch.zeros(6)]),
                                    torch.stack([table[2], torch.zeros(6), torch.zeros(6)])]), index >= 0)
    assert torch.allclose(enc.embed_windows(table, index), direct, atol=1e-6)
    with pytest.raises(ValueError):
        EventSequenceEncoder(d_event=6, d_model=10, n_heads=4)


def test_masked_event_objective_hides_at_least_one_valid_event_per_window():
    torch.manual_seed(0)
    obj = MaskedEventObjective(EventSequenceEncoder(d_event=4, d_model=8, n_heads=2, max_len=4), mask_prob=0.01)
    valid = torch.tensor([[1, 0, 0, 0], [1, 1, 1, 1]] * 50, dtype=torch.bool)
    masked = obj.sample_mask(valid)
    assert masked.any(dim=1).all() and not (masked & ~valid).any()
    out = obj({"tokens": torch.randn(100, 4, 4), "valid": valid})
    assert out.loss.ndim == 0 and torch.isfinite(out.loss)


def test_pretraining_learns_a_predictable_sequence_and_the_window_head_separates_classes():
    rng = np.random.default_rng(0)
    n, length, d = 600, 6, 4
    base = rng.normal(size=(n, 1, d)).astype(np.float32)
    tokens = np.repeat(base, length, axis=1) + 0.05 * rng.normal(size=(n, length, d)).astype(np.float32)
    valid = np.ones((n, length), dtype=bool)
    config = TwoStageConfig(pretrain_steps=150, batch_size=64, base_lr=3e-3, seed=0)
    encoder, history = pretrain_sequence_encoder(tokens[:500], valid[:500], (tokens[500:], valid[500:]), config,
                                                 d_model=16, n_heads=4)
    baseline = tokens[500:][valid[500:]].var(axis=0).mean()
    assert history.best_val_loss < 0.5 * baseline  # the other events of a window say what the hidden one is
    reps = encoder.embed(tokens, valid).numpy()
    y = (base[:, 0, 0] > 0).astype(np.int64)
    head, _ = train_head(reps[:300], y[:300], 2, TwoStageConfig(head_steps=300, seed=0, base_lr=1e-2))
    with torch.no_grad():
        predicted = head(torch.as_tensor(reps[300:])).argmax(dim=1).numpy()
    assert (predicted == y[300:]).mean() > 0.8
    with pytest.raises(ValueError):
        train_head(reps[:5], np.array([0, 1, 2, 0, 1]), 2)
