"""TabularResNet and its heads: shapes, the vectorised embedding, determinism, config and safe persistence."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from obsad.models import (
    DEFAULT_MODEL_CONFIG,
    FieldEmbedding,
    MaskedFeatureHead,
    ProjectionHead,
    TabularResNet,
    embedding_width,
    load_model,
    save_model,
)
from obsad.models.frozen import FrozenTabularResNet

pytestmark = pytest.mark.usefixtures("one_thread")


CARDS = [2, 3, 5, 9, 40, 300]
N_NUM = 4


def batch(n: int = 16, cards=CARDS, n_num: int = N_NUM, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    numeric = torch.randn(n, n_num, generator=g)
    categorical = torch.stack([torch.randint(0, c, (n,), generator=g) for c in cards], dim=1)
    return numeric, categorical


def small(**kw) -> TabularResNet:
    torch.manual_seed(0)
    cfg = dict(d_model=16, n_blocks=2, d_hidden=32)
    cfg.update(kw)
    return TabularResNet(N_NUM, CARDS, **cfg)


def test_embedding_width_rule():
    assert embedding_width(2) == 2 and embedding_width(3) >= 2
    assert embedding_width(514) == 16 and embedding_width(514, max_dim=32) == 32
    assert embedding_width(50) == round(1.6 * 50 ** 0.56)
    widths = [embedding_width(c) for c in range(2, 2000)]
    assert widths == sorted(widths)  # wider vocabularies never get narrower embeddings
    model = small()
    assert model.embedding_widths == [embedding_width(c, model.max_embedding_dim) for c in CARDS]
    assert small(embedding_dim=5).embedding_widths == [5] * len(CARDS)


def test_forward_shapes_and_input_checks():
    model = small()
    num, cat = batch()
    out = model(num, cat)
    assert out.shape == (16, 16) and out.dtype == torch.float32 and torch.isfinite(out).all()
    assert model.d_input == N_NUM + sum(model.embedding_widths)
    with pytest.raises(ValueError, match="out of range"):
        model(num, cat.clone().index_fill_(1, torch.tensor([0]), 2))  # field 0 has ids {0, 1} only
    with pytest.raises(ValueError, match="numeric must be"):
        model(num[:, :2], cat)
    with pytest.raises(ValueError, match="mask_token"):
        model(num, cat, numeric_mask=torch.zeros_like(num, dtype=torch.bool))
    # no numeric fields, or no categorical ones
    assert TabularResNet(0, CARDS, d_model=8)(num[:, :0], cat).shape == (16, 8)
    assert TabularResNet(N_NUM, [], d_model=8)(num, cat[:, :0]).shape == (16, 8)


def test_vectorised_embedding_matches_per_field_lookup():
    torch.manual_seed(0)
    widths = [embedding_width(c) for c in CARDS]
    emb = FieldEmbedding(CARDS, widths, mask_token=True)
    _, cat = batch(64)
    cat[0] = torch.tensor(CARDS)  # every field's [MASK] id
    out = emb(cat)
    ref = torch.cat([emb.table(j)[cat[:, j]] for j in range(len(CARDS))], dim=1)
    assert torch.equal(out, ref)
    # and its gradient is the per-field scatter-add
    g = torch.randn_like(out)
    (out * g).sum().backward()
    grad = emb.weight.grad.clone()
    emb.weight.grad = None
    ref = torch.cat([emb.table(j)[cat[:, j]] for j in range(len(CARDS))], dim=1)
    (ref * g).sum().backward()
    assert torch.allclose(grad, emb.weight.grad, atol=1e-6)


def test_mask_token_and_numeric_mask():
    model = small(mask_token=True)
    num, cat = batch()
    mask_ids = model.mask_ids.expand_as(cat)
    out = model(num, mask_ids, numeric_mask=torch.ones_like(num, dtype=torch.bool))
    assert out.shape == (16, 16)
    # a flagged numeric field is distinguishable from an unflagged 0
    zeros = torch.zeros_like(num)
    a = model(zeros, cat, numeric_mask=torch.zeros_like(num, dtype=torch.bool))
    b = model(zeros, cat, numeric_mask=torch.ones_like(num, dtype=torch.bool))
    assert not torch.allclose(a, b)
    assert torch.equal(a, model(zeros, cat))  # no mask given = nothing masked


def test_embed_batches_arrays_in_eval_mode():
    model = small(dropout=0.5)
    num, cat = batch(50)
    out = model.embed(num.numpy(), cat.numpy(), batch_size=16)
    assert out.shape == (50, 16) and model.training
    model.eval()
    assert torch.allclose(out, model(num, cat), atol=1e-6)


@pytest.mark.parametrize("kw, n_num, cards", [
    ({}, N_NUM, CARDS),
    ({"mask_token": True}, N_NUM, CARDS),  # the [MASK] rows and mask-indicator columns are not used in inference
    ({"embedding_dim": 3}, N_NUM, CARDS),
    ({}, 0, CARDS),  # categorical only
    ({}, N_NUM, []),  # numeric only
])
def test_embed_folds_the_input_projection_into_the_tables_exactly(kw, n_num, cards):
    torch.manual_seed(0)
    model = TabularResNet(n_num, cards, d_model=16, n_blocks=2, d_hidden=32, **kw).eval()
    with torch.no_grad():  # train the tables away from their init so that a wrong slice would show
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.1)
    num, cat = batch(300, cards=cards, n_num=n_num) if cards else (torch.randn(300, n_num), torch.zeros(300, 0).long())
    folded = model.embed(num, cat, batch_size=128)
    with torch.no_grad():
        assert torch.allclose(folded, model(num, cat), atol=1e-5)
    # the folded tables are kept between calls, and rebuilt once an optimiser step has changed the weights
    assert torch.equal(model.embed(num, cat, batch_size=128), folded)
    model.train()
    optimiser = torch.optim.AdamW(model.parameters(), lr=0.05)
    model(num, cat).pow(2).mean().backward()
    optimiser.step()
    model.eval()
    with torch.no_grad():
        assert torch.allclose(model.embed(num, cat, batch_size=128), model(num, cat), atol=1e-5)
    bad = cat.clone()
    if cards:
        bad[7, 0] = cards[0] + 5
        with pytest.raises(ValueError, match="out of range"):
            model.embed(num, bad)


def test_determinism_same_seed_same_outputs():
    num, cat = batch()
    a = small(dropout=0.2)
    b = small(dropout=0.2)
    for p, q in zip(a.parameters(), b.parameters()):
        assert torch.equal(p, q)
    torch.manual_seed(5)
    out_a = a(num, cat)
    torch.manual_seed(5)
    out_b = b(num, cat)
    assert torch.equal(out_a, out_b)  # train mode, dropout included
    a.eval()
    assert torch.equal(a(num, cat), a(num, cat))


def test_config_round_trip_and_parameter_count():
    model = small(mask_token=True, activation="gelu")
    cfg = model.to_config()
    assert json.loads(json.dumps(cfg)) == cfg == model.config
    rebuilt = TabularResNet.from_config(cfg)
    assert rebuilt.to_config() == cfg
    assert [p.shape for p in rebuilt.parameters()] == [p.shape for p in model.parameters()]
    d_in, d, h = model.d_input, 16, 32
    expected = (sum((c + 1) * w for c, w in zip(CARDS, model.embedding_widths))  # tables (+[MASK] rows)
                + d_in * d + d  # input projection
                + 2 * (2 * d + d * h + h + h * d + d)  # blocks
                + 2 * d)  # final LayerNorm
    assert model.count_parameters() == expected


def test_default_config_size():
    cards = [9, 17, 272, 5, 111, 4, 25, 14, 7, 3, 268, 20, 208, 215, 13, 514, 476, 486, 231, 2] * 4
    model = TabularResNet(43, cards, **DEFAULT_MODEL_CONFIG)
    assert model.d_model == DEFAULT_MODEL_CONFIG["d_model"]
    assert 50_000 < model.count_parameters() < 500_000


def test_save_load_round_trip(tmp_path):
    model = small(mask_token=True).eval()
    num, cat = batch()
    save_model(model, tmp_path / "enc")
    assert sorted(p.name for p in (tmp_path / "enc").iterdir()) == ["config.json", "weights.safetensors"]
    meta = json.loads((tmp_path / "enc" / "config.json").read_text())
    assert meta["class"] == "TabularResNet" and meta["config"] == model.to_config()
    loaded = load_model(tmp_path / "enc")
    assert isinstance(loaded, TabularResNet) and not loaded.training
    assert torch.equal(loaded(num, cat), model(num, cat))
    # heads too
    head = MaskedFeatureHead(16, N_NUM, CARDS)
    save_model(head, tmp_path / "head")
    h = torch.randn(3, 16)
    assert torch.equal(load_model(tmp_path / "head")(h).logits, head.eval()(h).logits)
    proj = ProjectionHead(16, 8)
    save_model(proj, tmp_path / "proj")
    assert torch.equal(load_model(tmp_path / "proj")(h), proj(h))


def test_load_refuses_missing_corrupt_or_mismatched_files(tmp_path):
    model = small()
    d = tmp_path / "m"
    save_model(model, d)
    weights = (d / "weights.safetensors").read_bytes()
    config = (d / "config.json").read_text()

    (d / "weights.safetensors").unlink()
    with pytest.raises(ValueError, match="missing"):
        load_model(d)
    with pytest.raises(ValueError, match="missing"):
        load_model(tmp_path / "nowhere")

    (d / "weights.safetensors").write_bytes(weights[: len(weights) // 2])  # truncated
    with pytest.raises(ValueError, match="safetensors"):
        load_model(d)
    (d / "weights.safetensors").write_bytes(b"\x80\x04garbage, maybe a pickle" * 10)
    with pytest.raises(ValueError, match="safetensors"):
        load_model(d)
    (d / "weights.safetensors").write_bytes(weights)
    assert isinstance(load_model(d), TabularResNet)

    (d / "config.json").write_text("{not json")
    with pytest.raises(ValueError, match="JSON"):
        load_model(d)
    (d / "config.json").write_text(json.dumps({"format": "something-else"}))
    with pytest.raises(ValueError, match="not an obsad model"):
        load_model(d)
    cfg = json.loads(config)
    cfg["config"]["cardinalities"] = [c + 1 for c in CARDS]  # weights no longer fit
    (d / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ValueError, match="shape"):
        load_model(d)
    cfg = json.loads(config)
    cfg["config"]["n_blocks"] = 3  # weights lack a block
    (d / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ValueError, match="missing"):
        load_model(d)
    cfg = json.loads(config)
    cfg["class"] = "Unpickler"
    (d / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ValueError, match="unknown model class"):
        load_model(d)


def test_masked_head_losses_match_references():
    torch.manual_seed(0)
    head = MaskedFeatureHead(16, N_NUM, CARDS)
    h = torch.randn(32, 16)
    num, cat = batch(32)
    pred = head(h)
    assert pred.mean.shape == (32, N_NUM) and pred.logvar.shape == (32, N_NUM)
    assert pred.logits.shape == (32, sum(CARDS))
    cat_nll = head.categorical_nll(pred, cat)
    start = 0
    for j, c in enumerate(CARDS):
        ref = F.cross_entropy(pred.logits[:, start:start + c], cat[:, j], reduction="none")
        assert torch.allclose(cat_nll[:, j], ref, atol=1e-5)
        start += c
    ref = 0.5 * (pred.logvar + (num - pred.mean) ** 2 / pred.logvar.exp() + math.log(2 * math.pi))
    assert torch.allclose(head.numeric_nll(pred, num), ref, atol=1e-5)
    # huge logits stay finite (per-field max shift)
    big = type(pred)(pred.mean, pred.logvar, pred.logits * 1e4)
    assert torch.isfinite(head.categorical_nll(big, cat)).all()
    # the one-field paths used by per-field surprise agree with the all-field losses
    losses = head.field_losses(pred, num, cat)
    hidden = head.hidden(h)
    for j in range(N_NUM):
        one = head.numeric_field_loss(hidden, torch.full((32,), j), num[:, j])
        assert torch.allclose(one, losses[:, j], atol=1e-5)
    for j in range(len(CARDS)):
        assert torch.allclose(head.categorical_field_loss(hidden, j, cat[:, j]), losses[:, N_NUM + j], atol=1e-5)
    mse = MaskedFeatureHead(16, N_NUM, CARDS, numeric_loss="mse")
    p = mse(h)
    assert p.logvar is None and torch.allclose(mse.numeric_nll(p, num), (num - p.mean) ** 2)


def test_saving_the_same_model_twice_gives_identical_bytes(tmp_path):
    torch.manual_seed(0)
    model = TabularResNet(3, CARDS, d_model=8, n_blocks=1)
    for _ in range(5):  # safetensors' metadata order used to vary from one save to the next
        save_model(model, tmp_path / "a")
        first = (tmp_path / "a" / "weights.safetensors").read_bytes()
        save_model(model, tmp_path / "b")
        assert (tmp_path / "b" / "weights.safetensors").read_bytes() == first
    assert torch.equal(load_model(tmp_path / "b").input_projection.weight, model.input_projection.weight)


def test_load_model_rebuilds_a_log_model_in_a_fresh_process(tmp_path):
    """load_model finds classes registered by obsad.logs.model without the caller importing it first."""
    import subprocess
    import sys

    from obsad.logs.model import NextTokenTransformer
    from obsad.models import save_model

    save_model(NextTokenTransformer(5, d_model=16, n_heads=2, n_layers=1, d_ff=32, max_len=8), tmp_path / "m")
    code = f"from obsad.models import load_model; print(type(load_model({str(tmp_path / 'm')!r})).__name__)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "NextTokenTransformer"


@pytest.mark.parametrize("kw, n_num, cards", [
    ({}, N_NUM, CARDS),
    ({"activation": "gelu"}, N_NUM, CARDS),
    ({"mask_token": True}, N_NUM, CARDS),
    ({"n_blocks": 0}, N_NUM, CARDS),
    ({}, 0, CARDS),  # categorical only
    ({}, N_NUM, []),  # numeric only
])
def test_frozen_numpy_network_computes_what_embed_computes(kw, n_num, cards):
    torch.manual_seed(1)
    model = TabularResNet(n_num, cards, d_model=16, n_blocks=kw.pop("n_blocks", 2), d_hidden=32, **kw)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.3)
    num, cat = batch(200, cards=cards, n_num=n_num) if cards else (torch.randn(200, n_num), torch.zeros(200, 0).long())
    frozen = FrozenTabularResNet(model)
    want = model.embed(num, cat).numpy()
    got = frozen.embed(num.numpy(), cat.numpy())
    assert got.dtype == np.float32 and got.shape == want.shape
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-5)
    one = np.concatenate([frozen.embed(num.numpy()[i:i + 1], cat.numpy()[i:i + 1]) for i in range(200)])
    np.testing.assert_allclose(one, want, rtol=0, atol=1e-5)  # one event at a time: what a service sends it
    # the weights were copied: training further does not change the frozen network
    with torch.no_grad():
        next(model.parameters()).add_(1.0)
    np.testing.assert_array_equal(frozen.embed(num.numpy(), cat.numpy()), got)
    with pytest.raises(ValueError, match="numeric must be"):
        frozen.embed(np.zeros((2, n_num + 1)), cat.numpy()[:2])
    if cards:
        bad = cat.numpy().copy()
        bad[3, 1] = cards[1] + 4
        with pytest.raises(ValueError, match="out of range for field 1"):
            frozen.embed(num.numpy(), bad)
        bad[3, 1] = -1
        with pytest.raises(ValueError, match="out of range"):
            frozen.embed(num.numpy(), bad)
