"""Objectives: augmentation, NT-Xent with duplicates, masked-feature loss, overfitting, per-field surprise."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from obsad.models import TabularResNet, load_model, save_model
from obsad.train import (
    ContrastiveObjective,
    FieldAugmentation,
    MaskedFeatureObjective,
    ObjectiveOutput,
    duplicate_groups,
    nt_xent,
)

pytestmark = pytest.mark.usefixtures("one_thread")


CARDS = [2, 4, 7, 12, 30]
N_NUM = 3


def data(n: int = 256, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    numeric = torch.randn(n, N_NUM, generator=g) * torch.tensor([1.0, 5.0, 0.1])
    # skewed, and field 3 never takes ids 5 and 6
    categorical = torch.stack([torch.randint(0, c, (n,), generator=g) for c in CARDS], dim=1)
    categorical[:, 3] = torch.where(torch.isin(categorical[:, 3], torch.tensor([5, 6])), 2, categorical[:, 3])
    return numeric, categorical


def encoder(mask_token: bool = False, seed: int = 0, **kw) -> TabularResNet:
    torch.manual_seed(seed)
    cfg = dict(d_model=32, n_blocks=1, d_hidden=64)
    cfg.update(kw)
    return TabularResNet(N_NUM, CARDS, **cfg, mask_token=mask_token)


# --------------------------------------------------------------------------------------------- augmentation
def test_augmentation_never_touches_protected_fields_and_draws_from_each_fields_vocabulary():
    num, cat = data(2000)
    aug = FieldAugmentation(numeric_noise=0.5, categorical_replace_prob=0.6, field_dropout=0.3,
                            protected_numeric=["n1"], protected_categorical=[0, "c2"])
    aug.fit(num, cat, numeric_names=["n0", "n1", "n2"], categorical_names=[f"c{j}" for j in range(5)])
    torch.manual_seed(0)
    v_num, v_cat = aug(num, cat)
    assert torch.equal(v_num[:, 1], num[:, 1])
    assert torch.equal(v_cat[:, 0], cat[:, 0]) and torch.equal(v_cat[:, 2], cat[:, 2])
    changed = v_cat != cat
    assert changed[:, [1, 3, 4]].float().mean() > 0.4  # the others do change
    for j in range(len(CARDS)):
        observed = set(cat[:, j].tolist())
        assert set(v_cat[:, j].tolist()) <= observed | {0}  # a replacement, or missing (field dropout)
        assert set(aug.observed_values(j).tolist()) == observed
    assert not ({5, 6} & set(v_cat[:, 3].tolist()))
    # numeric noise is scaled by each field's own spread
    moved = (v_num - num).abs()
    kept = v_num != 0  # ignore dropped values
    assert moved[:, 0][kept[:, 0]].median() > 5 * moved[:, 2][kept[:, 2]].median()  # std 1 vs std 0.1


def test_replacements_follow_the_fields_distribution():
    g = torch.Generator().manual_seed(1)
    n = 20000
    probs = torch.tensor([0.0, 0.05, 0.6, 0.3, 0.05])
    cat = torch.multinomial(probs, n, replacement=True, generator=g)[:, None]
    num = torch.zeros(n, 0)
    aug = FieldAugmentation(numeric_noise=0.0, categorical_replace_prob=1.0, field_dropout=0.0).fit(num, cat)
    torch.manual_seed(0)
    _, v = aug(num, cat)
    freq = torch.bincount(v[:, 0], minlength=5).float() / n
    empirical = torch.bincount(cat[:, 0], minlength=5).float() / n
    assert (freq - empirical).abs().max() < 0.015 and freq[0] == 0


def test_unfitted_augmentation_uses_the_batch_and_global_rng():
    num, cat = data(64)
    aug = FieldAugmentation(categorical_replace_prob=0.9, field_dropout=0.0, protected_categorical=[4])
    torch.manual_seed(3)
    a = aug(num, cat)
    torch.manual_seed(3)
    b = aug(num, cat)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    for j in range(len(CARDS)):
        assert set(a[1][:, j].tolist()) <= set(cat[:, j].tolist())
    assert torch.equal(a[1][:, 4], cat[:, 4])


def test_augmentation_state_survives_a_state_dict_round_trip():
    num, cat = data()
    obj = ContrastiveObjective(encoder(), augmentation=FieldAugmentation().fit(num, cat))
    fresh = ContrastiveObjective(encoder(), augmentation=FieldAugmentation())  # unfitted: empty buffers
    fresh.load_state_dict(obj.state_dict())
    assert fresh.augmentation.is_fitted
    torch.manual_seed(0)
    a = obj.augmentation(num, cat)
    torch.manual_seed(0)
    b = fresh.augmentation(num, cat)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])


# --------------------------------------------------------------------------------------------- NT-Xent
def reference_nt_xent(z1, z2, temperature, groups=None):
    """Plain SimCLR loss with cross_entropy; same-group entries (other than the positive) left out."""
    b = z1.shape[0]
    z = F.normalize(torch.cat([z1, z2]), dim=1)
    logits = z @ z.T / temperature
    n = 2 * b
    pos = (torch.arange(n) + b) % n
    g = torch.cat([groups, groups]) if groups is not None else torch.arange(n)
    exclude = g[:, None] == g[None, :]
    exclude[torch.arange(n), pos] = False
    return F.cross_entropy(logits.masked_fill(exclude, float("-inf")), pos, reduction="none")


@pytest.mark.parametrize("temperature", [0.1, 0.5, 0.01])
def test_nt_xent_matches_reference_values_and_gradients(temperature):
    torch.manual_seed(0)
    z1 = torch.randn(8, 6, dtype=torch.float64, requires_grad=True)
    z2 = torch.randn(8, 6, dtype=torch.float64, requires_grad=True)
    groups = torch.tensor([0, 1, 2, 0, 4, 5, 2, 7])
    for grp in (None, groups):
        ours = nt_xent(z1, z2, temperature, grp, reduction="none")
        ref = reference_nt_xent(z1, z2, temperature, grp)
        assert torch.allclose(ours, ref, atol=1e-10)
        w = torch.randn(16, dtype=torch.float64)
        g_ours = torch.autograd.grad((ours * w).sum(), [z1, z2])
        g_ref = torch.autograd.grad((ref * w).sum(), [z1, z2])
        for a, b in zip(g_ours, g_ref):
            assert torch.allclose(a, b, atol=1e-9)
    assert torch.allclose(nt_xent(z1, z2, temperature), reference_nt_xent(z1, z2, temperature).mean(), atol=1e-10)


def test_duplicates_are_not_negatives():
    num, cat = data(8)
    num[5], cat[5] = num[2], cat[2]  # row 5 is an exact copy of row 2
    num[6] = -0.0 * num[6]  # -0.0 and 0.0 are the same value
    num[7], cat[7] = num[6].abs(), cat[6]
    groups = duplicate_groups(num, cat)
    assert groups.tolist() == [0, 1, 2, 3, 4, 2, 6, 6]
    assert duplicate_groups(num[:5], cat[:5]).tolist() == [0, 1, 2, 3, 4]

    torch.manual_seed(0)
    z1 = torch.randn(8, 4, requires_grad=True)
    z2 = torch.randn(8, 4, requires_grad=True)
    loss = nt_xent(z1, z2, 0.1, groups, reduction="none")
    # same loss as the SimCLR loss with the duplicates removed from each other's denominators...
    assert torch.allclose(loss, reference_nt_xent(z1, z2, 0.1, groups), atol=1e-5)
    # ...which differs from treating them as negatives
    assert not torch.allclose(loss, reference_nt_xent(z1, z2, 0.1), atol=1e-3)
    # row 2's loss (both views) does not depend on its duplicate's embeddings at all
    g1, g2 = torch.autograd.grad(loss[2] + loss[8 + 2], [z1, z2])
    assert g1[5].abs().max() == 0 and g2[5].abs().max() == 0
    assert g1[4].abs().max() > 0  # a real negative does matter


def test_nt_xent_graphs_alive_together_keep_their_own_similarities():
    torch.manual_seed(0)
    zs = [torch.randn(6, 4, requires_grad=True) for _ in range(4)]
    a = nt_xent(zs[0], zs[1], 0.1)
    with torch.no_grad():
        nt_xent(zs[2], zs[3], 0.1)  # an evaluation in between
    b = nt_xent(zs[2], zs[3], 0.1)  # a second graph before the first one's backward
    (a + 2 * b).backward()
    ref = reference_nt_xent(zs[0], zs[1], 0.1).mean() + 2 * reference_nt_xent(zs[2], zs[3], 0.1).mean()
    grads = [z.grad.clone() for z in zs]
    for z in zs:
        z.grad = None
    ref.backward()
    for g, z in zip(grads, zs):
        assert torch.allclose(g, z.grad, atol=1e-5)
    c = nt_xent(zs[0], zs[1], 0.1)  # after the backward, the buffer is reused: still right
    assert torch.allclose(c, a.detach())


def test_contrastive_objective_masks_duplicates_end_to_end():
    num, cat = data(16)
    num[9], cat[9] = num[3], cat[3]
    obj = ContrastiveObjective(encoder(), augmentation=FieldAugmentation().fit(*data()))
    torch.manual_seed(0)
    out = obj({"numeric": num, "categorical": cat})
    assert out.metrics["duplicates"] == 1.0
    # the same forward, computed by hand with the duplicate-masking reference loss
    torch.manual_seed(0)
    groups = duplicate_groups(num, cat)
    n2, c2 = obj.views(num, cat)
    z = obj.projection(obj.encoder(n2, c2))
    ref = reference_nt_xent(z[:16], z[16:], obj.temperature, groups).mean()
    assert torch.allclose(out.loss, ref, atol=1e-5)


def test_contrastive_objective_interface_and_determinism():
    num, cat = data(32)
    batch = {"numeric": num, "categorical": cat}
    losses = []
    for _ in range(2):
        obj = ContrastiveObjective(encoder(), augmentation=FieldAugmentation().fit(num, cat))
        torch.manual_seed(11)
        out = obj(batch)
        assert isinstance(out, ObjectiveOutput) and out.loss.dim() == 0 and out.loss.requires_grad
        assert all(isinstance(v, float) for v in out.metrics.values())
        assert obj.encoder is obj.encoder and isinstance(obj.encoder, TabularResNet)
        out.loss.backward()
        losses.append(out.loss.item())
        rng = torch.get_rng_state()
        next_loss = obj(batch).loss.item()
        torch.set_rng_state(rng)
        assert obj(batch).loss.item() == next_loss  # the global RNG state is the whole random state
    assert losses[0] == losses[1]


# --------------------------------------------------------------------------------------------- masked features
def test_masked_loss_only_sees_masked_fields():
    num, cat = data(32)
    obj = MaskedFeatureObjective(encoder(mask_token=True), mask_prob=0.3).eval()
    n_f = N_NUM + len(CARDS)
    torch.manual_seed(0)
    mask = obj.sample_mask(32)
    mask[0] = False
    mask[0, 1] = mask[0, N_NUM + 2] = True  # row 0: numeric 1 and categorical 2 hidden
    loss, _ = obj.masked_loss(num, cat, mask)
    # other targets for every unmasked field: same loss
    t_num = torch.where(mask[:, :N_NUM], num, num + 100.0)
    t_cat = torch.where(mask[:, N_NUM:], cat, torch.zeros_like(cat))
    loss2, _ = obj.masked_loss(num, cat, mask, target_numeric=t_num, target_categorical=t_cat)
    assert torch.equal(loss, loss2)
    # another target for a masked field: another loss
    t_cat[0, 2] = (cat[0, 2] + 1) % CARDS[2]
    loss3, _ = obj.masked_loss(num, cat, mask, target_categorical=t_cat)
    assert not torch.equal(loss, loss3)
    # the encoder never sees a masked input's value
    num_b, cat_b = num.clone(), cat.clone()
    num_b[0, 1] += 50.0
    cat_b[0, 2] = (cat[0, 2] + 1) % CARDS[2]
    out_a = obj.field_losses(num, cat, mask)
    out_b = obj.field_losses(num_b, cat_b, mask, target_numeric=num, target_categorical=cat)
    assert torch.equal(out_a, out_b)
    # the loss is the mean over masked fields of the per-field losses
    assert torch.allclose(loss, out_a[mask].mean())
    # scoring other fields than the hidden ones (the replaced fields of a training step)
    scored = mask.clone()
    scored[1] = True
    loss4, _ = obj.masked_loss(num, cat, mask, loss_mask=scored)
    assert torch.allclose(loss4, out_a[scored].mean())
    # forward with an explicit mask is masked_loss
    assert torch.equal(obj({"numeric": num, "categorical": cat}, mask=mask).loss, loss)
    assert obj.field_losses(num, cat, torch.zeros(32, n_f, dtype=torch.bool)).shape == (32, n_f)


def test_masked_objective_interface():
    num, cat = data(32)
    with pytest.raises(ValueError, match="mask_token"):
        MaskedFeatureObjective(encoder())
    obj = MaskedFeatureObjective(encoder(mask_token=True))
    torch.manual_seed(2)
    out = obj({"numeric": num, "categorical": cat})
    torch.manual_seed(2)
    again = obj({"numeric": num, "categorical": cat})
    assert out.loss.dim() == 0 and torch.equal(out.loss, again.loss)
    assert set(out.metrics) >= {"loss", "numeric_loss", "categorical_loss", "masked_fraction"}
    out.loss.backward()
    assert obj.encoder.embeddings.weight.grad is not None


def evaluate(obj, batch, seed=123) -> float:
    """The loss on fixed random draws (augmentations / masks), without touching the caller's RNG stream."""
    state = torch.get_rng_state()
    torch.manual_seed(seed)
    with torch.no_grad():
        loss = sum(obj(batch).loss.item() for _ in range(4)) / 4
    torch.set_rng_state(state)
    return loss


def overfit(obj, num, cat, steps=200, lr=1e-2) -> tuple[float, float]:
    opt = torch.optim.AdamW(obj.parameters(), lr=lr)
    batch = {"numeric": num, "categorical": cat}
    before = evaluate(obj, batch)
    for _ in range(steps):
        out = obj(batch)
        opt.zero_grad()
        out.loss.backward()
        opt.step()
    return before, evaluate(obj, batch)


def tiny_batch():
    num, cat = data(16, seed=3)
    return num / num.std(0), cat


def test_tiny_model_overfits_a_tiny_batch_contrastive():
    torch.manual_seed(0)
    num, cat = tiny_batch()
    aug = FieldAugmentation(numeric_noise=0.02, categorical_replace_prob=0.05, field_dropout=0.02).fit(*data())
    obj = ContrastiveObjective(encoder(d_model=32), augmentation=aug, temperature=0.1)
    before, after = overfit(obj, num, cat)
    assert after < before / 5, (before, after)


def test_tiny_model_overfits_a_tiny_batch_masked():
    torch.manual_seed(0)
    num, cat = tiny_batch()
    # pure masking (random replacements hide which row a field came from: a 16-row memoriser fits them slower)
    obj = MaskedFeatureObjective(encoder(mask_token=True, d_model=32), mask_prob=0.2, numeric_loss="mse",
                                 replace_prob=0.0)
    before, after = overfit(obj, num, cat)
    assert after < before / 5, (before, after)


# --------------------------------------------------------------------------------------------- per-field surprise
def correlated(n: int, seed: int = 0):
    """Every field follows a latent class k (6 classes), a few are pure noise."""
    g = torch.Generator().manual_seed(seed)
    k = torch.randint(0, 6, (n,), generator=g)
    kf = k.float()
    numeric = torch.stack([(kf - 2.5) / 1.7 + 0.05 * torch.randn(n, generator=g),
                           torch.randn(n, generator=g),  # noise
                           torch.cos(kf) + 0.05 * torch.randn(n, generator=g)], dim=1)
    categorical = torch.stack([k + 2, k % 3 + 2, torch.randint(0, 7, (n,), generator=g), (k * 5) % 12,
                               (k // 2) * 7 + 2 + torch.randint(0, 2, (n,), generator=g)], dim=1)
    return numeric, categorical


CORR_CARDS = [8, 5, 7, 12, 30]


def test_per_field_surprise_points_at_the_corrupted_field():
    torch.manual_seed(0)
    num, cat = correlated(4096)
    enc = TabularResNet(3, CORR_CARDS, d_model=32, n_blocks=1, d_hidden=64, mask_token=True)
    obj = MaskedFeatureObjective(enc, mask_prob=0.25)  # replace_prob=0.2 (default): without it, 0 of 6 seeds pass
    opt = torch.optim.AdamW(obj.parameters(), lr=3e-3)
    for step in range(300):
        idx = torch.randint(0, 4096, (256,))
        out = obj({"numeric": num[idx], "categorical": cat[idx]})
        opt.zero_grad()
        out.loss.backward()
        opt.step()
    test_num, test_cat = correlated(8, seed=1)
    base = obj.per_field_surprise(test_num, test_cat)
    assert base.shape == (8, 3 + 5) and obj.training  # mode restored
    k = test_cat[:, 0] - 2
    bad_num, bad_cat = test_num.clone(), test_cat.clone()
    bad_cat[0, 0] = 2 + (k[0] + 3) % 6  # an inconsistent class id
    bad_cat[1, 3] = (5 * ((k[1] + 2) % 6)) % 12
    bad_num[2, 0] = (2.5 - (k[2] - 2.5)) / 1.7 + (0.5 if k[2] in (2, 3) else 0.0)  # mirrored value
    bad_num[3, 2] = -3.0
    surprise = obj.per_field_surprise(bad_num, bad_cat)
    assert int(surprise[0].argmax()) == 3 + 0
    assert int(surprise[1].argmax()) == 3 + 3
    assert int(surprise[2].argmax()) == 0
    assert int(surprise[3].argmax()) == 2
    assert torch.allclose(surprise[4:], base[4:], atol=1e-4)  # untouched rows are unchanged
    # equals the loss of each field when it alone is masked
    obj.eval()
    for j in (0, 4, 6):
        mask = torch.zeros(8, 8, dtype=torch.bool)
        mask[:, j] = True
        with torch.no_grad():
            assert torch.allclose(obj.field_losses(bad_num, bad_cat, mask)[:, j], surprise[:, j], atol=1e-4)
    # groups: fewer passes, same shape; chunking does not change the result
    grouped = obj.per_field_surprise(bad_num, bad_cat, groups=[[0, 1, 2], [3, 4], [5, 6, 7]])
    assert grouped.shape == (8, 8)
    assert torch.allclose(obj.per_field_surprise(bad_num, bad_cat, batch_size=10), surprise, atol=1e-4)
    with pytest.raises(ValueError, match="exactly once"):
        obj.per_field_surprise(bad_num, bad_cat, groups=[[0, 1], [1, 2]])


def test_objectives_save_and_load(tmp_path):
    num, cat = data()
    obj = MaskedFeatureObjective(encoder(mask_token=True)).eval()
    save_model(obj, tmp_path / "mfm")
    loaded = load_model(tmp_path / "mfm")
    assert isinstance(loaded, MaskedFeatureObjective)
    assert torch.allclose(loaded.per_field_surprise(num[:4], cat[:4]), obj.per_field_surprise(num[:4], cat[:4]))
    con = ContrastiveObjective(encoder(), augmentation=FieldAugmentation(protected_numeric=[0]).fit(num, cat))
    save_model(con, tmp_path / "con")
    back = load_model(tmp_path / "con")
    assert back.augmentation.is_fitted and back.augmentation.protected_numeric == [0]
    assert torch.equal(back.encoder(num, cat), con.eval().encoder(num, cat))


# --------------------------------------------------------------------------------------------- CUDA (skipped on CPU)
cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


@cuda
def test_cuda_matches_cpu():
    import copy

    num, cat = data(64)
    obj = MaskedFeatureObjective(encoder(mask_token=True)).eval()
    gpu = copy.deepcopy(obj).cuda()
    mask = obj.sample_mask(64)
    cpu_loss, _ = obj.masked_loss(num, cat, mask)
    gpu_loss, _ = gpu.masked_loss(num.cuda(), cat.cuda(), mask.cuda())
    assert torch.allclose(cpu_loss, gpu_loss.cpu(), atol=1e-4)
    assert torch.allclose(obj.per_field_surprise(num[:8], cat[:8]), gpu.per_field_surprise(num[:8], cat[:8]),
                          atol=1e-3)
    z1, z2 = torch.randn(16, 8), torch.randn(16, 8)
    groups = torch.tensor([0, 1, 2, 0] + list(range(4, 16)))
    assert torch.allclose(nt_xent(z1, z2, 0.1, groups), nt_xent(z1.cuda(), z2.cuda(), 0.1, groups.cuda()).cpu(),
                          atol=1e-4)
    assert torch.equal(duplicate_groups(num, cat), duplicate_groups(num.cuda(), cat.cuda()).cpu())


@cuda
@pytest.mark.parametrize("amp", [False, True])
def test_cuda_training_steps(amp, tmp_path):
    num, cat = data(256)
    num[7], cat[7] = num[3], cat[3]
    batch = {"numeric": num.cuda(), "categorical": cat.cuda()}
    for obj in (ContrastiveObjective(encoder(), augmentation=FieldAugmentation().fit(num, cat)),
                ContrastiveObjective(encoder()),  # unfitted augmentation: batch marginals
                MaskedFeatureObjective(encoder(mask_token=True))):
        obj = obj.cuda()
        opt = torch.optim.AdamW(obj.parameters(), lr=3e-3)
        losses = []
        for _ in range(30):
            with torch.autocast("cuda", dtype=torch.bfloat16, enabled=amp):
                out = obj(batch)
            opt.zero_grad()
            out.loss.backward()
            opt.step()
            losses.append(out.loss.item())
            assert all(isinstance(v, float) for v in out.metrics.values())
        assert all(torch.isfinite(torch.tensor(losses))) and min(losses[-5:]) < losses[0]
        if isinstance(obj, ContrastiveObjective):
            assert out.metrics["duplicates"] == 1.0
        save_model(obj, tmp_path / type(obj).__name__)
        back = load_model(tmp_path / type(obj).__name__)
        assert torch.allclose(back.encoder(num[:5], cat[:5]), obj.eval().encoder(num[:5].cuda(), cat[:5].cuda()).cpu(),
                              atol=1e-4)


def test_fitted_augmentation_leaves_two_valued_columns_alone():
    import torch

    from obsad.train import FieldAugmentation

    torch.manual_seed(0)
    numeric = torch.randn(500, 3)
    numeric[:, 1] = (torch.rand(500) < 0.3).float()  # a missing flag
    categorical = torch.randint(2, 6, (500, 2))
    aug = FieldAugmentation(numeric_noise=0.5, categorical_replace_prob=0.0, field_dropout=0.0).fit(numeric, categorical)
    view, _ = aug(numeric, categorical)
    assert torch.equal(view[:, 1], numeric[:, 1])
    assert not torch.equal(view[:, 0], numeric[:, 0])
