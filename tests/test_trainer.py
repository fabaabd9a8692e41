"""The training loop: exact resume, determinism, schedule, early stopping, checkpoints, history files."""

from __future__ import annotations

import json
import math
import os
import signal
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

from obsad.train.trainer import (
    TrainConfig,
    TrainHistory,
    Trainer,
    best_checkpoint_path,
    load_checkpoint,
    load_weights,
    lr_factor,
)


# ------------------------------------------------------------------------------------------- a toy objective
@dataclass
class Out:
    loss: torch.Tensor
    metrics: dict = field(default_factory=dict)


class ToyObjective(nn.Module):
    """Regression of a fixed function of the inputs, with random input noise and dropout (global torch RNG)."""

    def __init__(self, d_num: int = 6, card: int = 7, d_cat: int = 2, hidden: int = 16, flip: bool = False):
        super().__init__()
        self.emb = nn.Embedding(card, 3)
        self.net = nn.Sequential(nn.Linear(d_num + 3 * d_cat, hidden), nn.ReLU(), nn.Dropout(0.2),
                                 nn.Linear(hidden, 1))

    def forward(self, batch):
        x = batch["numeric"]
        noisy = x + 0.1 * torch.randn_like(x)
        h = torch.cat([noisy, self.emb(batch["categorical"]).flatten(1)], dim=1)
        pred = self.net(h).squeeze(1)
        target = batch["target"] if "target" in batch else x[:, 0] * 2.0 - x[:, 1]
        loss = ((pred - target) ** 2).mean()
        return Out(loss, {"mae": float((pred - target).detach().abs().mean())})


def make_data(n: int, seed: int = 0, d_num: int = 6, card: int = 7) -> dict[str, np.ndarray]:
    g = np.random.default_rng(seed)
    return {"numeric": g.normal(size=(n, d_num)).astype(np.float32),
            "categorical": g.integers(0, card, size=(n, 2)).astype(np.int64)}


def make_objective(init_seed: int = 0) -> ToyObjective:
    torch.manual_seed(init_seed)
    return ToyObjective()


pytestmark = pytest.mark.usefixtures("one_thread")


def cfg(**kw) -> TrainConfig:
    base = dict(epochs=3, batch_size=32, lr=3e-3, warmup_fraction=0.2, progress=False, seed=5, device="cpu")
    base.update(kw)
    return TrainConfig(**base)


def assert_same_weights(a: nn.Module, b: nn.Module) -> None:
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    for k in sa:
        assert torch.equal(sa[k], sb[k]), k


def assert_same_history(h1: TrainHistory, h2: TrainHistory) -> None:
    cols = ["step", "epoch", "samples_seen", "loss", "lr", "grad_norm", "mae"]
    pd.testing.assert_frame_equal(h1.steps[cols], h2.steps[cols], check_exact=True)
    ecols = ["epoch", "steps", "samples_seen", "train_loss", "val_loss", "lr", "improved", "val_mae"]
    pd.testing.assert_frame_equal(h1.epochs[ecols], h2.epochs[ecols], check_exact=True)


TRAIN, VAL = make_data(200, seed=1), make_data(64, seed=2)  # 200 // 32 = 6 steps per epoch (8 rows dropped)


# ------------------------------------------------------------------------------------------------------ tests
def test_resume_after_mid_epoch_interrupt_equals_uninterrupted_run(tmp_path):
    config = cfg(checkpoint_every_samples=64)
    full_obj = make_objective()
    full = Trainer(full_obj, config, checkpoint_dir=tmp_path / "full").fit(TRAIN, VAL)
    assert len(full.steps) == 18 and full.stop_reason == "completed"

    def interrupt_at_step_8(trainer):  # step 8 = batch 2 of epoch 2: between two periodic checkpoints
        if trainer.step == 8:
            raise KeyboardInterrupt

    ckpt_dir = tmp_path / "split"
    with pytest.raises(KeyboardInterrupt):
        Trainer(make_objective(), config, checkpoint_dir=ckpt_dir).fit(TRAIN, VAL, on_step=interrupt_at_step_8)
    last = load_checkpoint(ckpt_dir / "last.pt")
    assert (last["step"], last["epoch"], last["batch_in_epoch"], last["samples_seen"]) == (8, 1, 2, 256)

    resumed_obj = make_objective(init_seed=99)  # different initial weights: everything must come from the checkpoint
    resumed = Trainer(resumed_obj, config, checkpoint_dir=ckpt_dir).fit(TRAIN, VAL, resume=True)
    assert_same_weights(full_obj, resumed_obj)
    assert_same_history(full, resumed)
    assert resumed.stop_reason == "completed"


def test_resume_in_two_hops_with_max_steps_equals_uninterrupted_run(tmp_path):
    config = cfg()
    full_obj = make_objective()
    full = Trainer(full_obj, config).fit(TRAIN, VAL)
    h1 = Trainer(make_objective(), config, checkpoint_dir=tmp_path).fit(TRAIN, VAL, max_steps=6)  # an epoch's end
    assert h1.stop_reason == "max_steps" and len(h1.steps) == 6 and h1.epochs.empty
    h2 = Trainer(make_objective(), config, checkpoint_dir=tmp_path).fit(TRAIN, VAL, resume=True, max_steps=11)
    assert len(h2.steps) == 11 and len(h2.epochs) == 1
    obj = make_objective(3)
    h3 = Trainer(obj, config, checkpoint_dir=tmp_path).fit(TRAIN, VAL, resume=True)
    assert_same_weights(full_obj, obj)
    assert_same_history(full, h3)
    # a finished run resumes to itself without training further
    again = make_objective(4)
    h4 = Trainer(again, config, checkpoint_dir=tmp_path).fit(TRAIN, VAL, resume=True)
    assert_same_weights(full_obj, again)
    assert_same_history(full, h4)


def test_sigint_is_deferred_to_the_step_boundary_and_checkpointed(tmp_path):
    def send_sigint(trainer):
        if trainer.step == 4:
            os.kill(os.getpid(), signal.SIGINT)

    previous = signal.getsignal(signal.SIGINT)
    with pytest.raises(KeyboardInterrupt):
        Trainer(make_objective(), cfg(), checkpoint_dir=tmp_path).fit(TRAIN, VAL, on_step=send_sigint)
    assert signal.getsignal(signal.SIGINT) is previous
    assert load_checkpoint(tmp_path / "last.pt")["step"] == 4


def test_resume_refuses_a_different_config_or_dataset(tmp_path):
    Trainer(make_objective(), cfg(), checkpoint_dir=tmp_path).fit(TRAIN, VAL, max_steps=3)
    with pytest.raises(ValueError, match="lr"):
        Trainer(make_objective(), cfg(lr=1e-2), checkpoint_dir=tmp_path).fit(TRAIN, VAL, resume=True)
    with pytest.raises(ValueError, match="rows"):
        Trainer(make_objective(), cfg(), checkpoint_dir=tmp_path).fit(make_data(150), VAL, resume=True)


def test_same_seed_same_run_and_other_seed_other_run():
    runs = []
    for seed in (5, 5, 6):
        obj = make_objective()
        runs.append((obj, Trainer(obj, cfg(seed=seed)).fit(TRAIN, VAL)))
    assert_same_weights(runs[0][0], runs[1][0])
    assert_same_history(runs[0][1], runs[1][1])
    assert not torch.equal(runs[0][0].net[0].weight, runs[2][0].net[0].weight)
    assert not np.array_equal(runs[0][1].steps["loss"], runs[2][1].steps["loss"])


def test_validation_does_not_disturb_training_randomness_and_is_repeatable():
    with_val, without_val = make_objective(), make_objective()
    h1 = Trainer(with_val, cfg()).fit(TRAIN, VAL)
    h2 = Trainer(without_val, cfg()).fit(TRAIN)
    assert_same_weights(with_val, without_val)
    assert np.array_equal(h1.steps["loss"], h2.steps["loss"])
    assert h2.epochs["val_loss"].isna().all() and h2.best_epoch is None
    trainer = Trainer(with_val, cfg())
    state = torch.get_rng_state()
    first, second = trainer.validate(VAL), trainer.validate(VAL)
    assert first == second and torch.equal(state, torch.get_rng_state())
    assert first[0] == pytest.approx(h1.epochs["val_loss"].iloc[-1], rel=0, abs=0)


def test_warmup_then_cosine_schedule():
    # the function: steps 0..W-1 rise linearly, peak at W-1, cosine to min_lr_ratio at the last step
    assert lr_factor(0, 100, 10, 0.01) == pytest.approx(0.1)
    assert lr_factor(4, 100, 10, 0.01) == pytest.approx(0.5)
    assert lr_factor(9, 100, 10, 0.01) == pytest.approx(1.0)
    assert lr_factor(99, 100, 10, 0.01) == pytest.approx(0.01)
    mid = 9 + (99 - 9) / 2
    assert lr_factor(int(mid), 100, 10, 0.0) == pytest.approx(0.5)
    assert lr_factor(0, 100, 0, 0.1) == pytest.approx(1.0) and lr_factor(99, 100, 0, 0.1) == pytest.approx(0.1)
    values = [lr_factor(s, 100, 10, 0.01) for s in range(100)]
    assert all(a < b for a, b in zip(values[:9], values[1:10]))
    assert all(a > b for a, b in zip(values[9:-1], values[10:]))
    # the trainer applies it per step: 5 epochs x 6 steps, 20 % warmup = 6 steps
    h = Trainer(make_objective(), cfg(epochs=5, lr=1e-2, min_lr_ratio=0.05)).fit(TRAIN)
    lr = h.steps["lr"].to_numpy()
    assert len(lr) == 30
    assert lr[0] == pytest.approx(1e-2 / 6)
    assert lr.max() == pytest.approx(1e-2) and int(lr.argmax()) == 5
    assert lr[-1] == pytest.approx(1e-2 * 0.05)


def test_early_stopping_and_restore_best(tmp_path):
    # validation targets are the negation of what is learnt, so validation gets worse after the first epoch
    val = make_data(64, seed=2)
    val["target"] = -(val["numeric"][:, 0] * 2.0 - val["numeric"][:, 1])
    config = cfg(epochs=20, patience=2, lr=1e-2, warmup_fraction=0.0)
    h = Trainer(make_objective(), config).fit(TRAIN, val)
    assert h.stopped_early and h.best_epoch == 1 and len(h.epochs) == 3
    assert h.epochs["improved"].tolist() == [True, False, False]

    obj = make_objective()
    trainer = Trainer(obj, TrainConfig(**{**config.to_dict(), "restore_best": True}), checkpoint_dir=tmp_path)
    hb = trainer.fit(TRAIN, val)
    assert hb.restored_best and hb.best_epoch == 1
    assert trainer.validate(val)[0] == pytest.approx(hb.best_val_loss, rel=1e-12)
    best = load_checkpoint(best_checkpoint_path(tmp_path))
    for k, v in obj.state_dict().items():
        assert torch.equal(v, best["model"][k]), k
    last = load_checkpoint(tmp_path / "last.pt")  # the last checkpoint keeps the weights training ended with
    assert not torch.equal(last["model"]["net.0.weight"], obj.net[0].weight.detach())
    # restore_best after a resume reads the best weights from disk
    obj2 = make_objective(7)
    Trainer(obj2, TrainConfig(**{**config.to_dict(), "restore_best": True}), checkpoint_dir=tmp_path).fit(
        TRAIN, val, resume=True)
    assert_same_weights(obj, obj2)


def test_checkpoint_files_index_and_corrupt_files(tmp_path):
    ckdir = tmp_path / "ck"
    h = Trainer(make_objective(), cfg(epochs=4, checkpoint_every_samples=100), checkpoint_dir=ckdir,
                name="toy run").fit(TRAIN, VAL)
    index = json.loads((ckdir / "checkpoints.json").read_text())
    best_files = sorted(p.name for p in ckdir.glob("best_*.pt"))
    assert best_files == [index["best"]["file"]]  # only the current best is kept
    assert best_files[0] == f"best_toy-run_e{h.best_epoch:03d}_{h.best_val_loss:.4f}.pt"
    assert index["best"]["epoch"] == h.best_epoch and index["last"]["step"] == 24
    assert not list(ckdir.glob("*.tmp")) and not list(ckdir.glob(".*"))
    for name in ("last.pt", best_files[0]):
        raw = torch.load(ckdir / name, weights_only=True)  # plain containers only
        assert raw["format"] == "obsad-checkpoint" and raw["config"]["checkpoint_every_samples"] == 100
        assert set(raw["rng"]) == {"cpu", "cuda"} and isinstance(raw["shuffle_generator"], torch.Tensor)
    obj = make_objective(11)
    load_weights(obj, ckdir / "last.pt")
    assert obj.state_dict().keys() == load_checkpoint(ckdir / "last.pt")["model"].keys()

    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes((ckdir / "last.pt").read_bytes()[:500])
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"not a checkpoint at all" * 10)
    foreign = tmp_path / "foreign.pt"
    torch.save({"weights": torch.zeros(3)}, foreign)
    pickled = tmp_path / "pickled.pt"
    torch.save({"format": "obsad-checkpoint", "payload": Out(torch.zeros(1))}, pickled)  # arbitrary object
    for bad in (truncated, garbage, foreign, pickled):
        with pytest.raises(ValueError, match=bad.name):
            load_checkpoint(bad)
    with pytest.raises(FileNotFoundError):
        load_checkpoint(tmp_path / "missing.pt")


def test_history_files_and_columns(tmp_path):
    h = Trainer(make_objective(), cfg()).fit(TRAIN, VAL)
    steps_path, epochs_path = h.save(tmp_path / "data" / "toy_history")
    assert steps_path.name == "toy_history_steps.parquet" and epochs_path.name == "toy_history_epochs.parquet"
    back = TrainHistory.load(tmp_path / "data" / "toy_history")
    pd.testing.assert_frame_equal(back.steps, h.steps)
    pd.testing.assert_frame_equal(back.epochs, h.epochs)
    assert back.best_epoch == h.best_epoch and back.best_val_loss == h.best_val_loss
    assert h.steps["samples_seen"].tolist() == [32 * i for i in range(1, 19)]
    assert h.epochs["epoch"].tolist() == [1, 2, 3] and (h.epochs["events_per_s"] > 0).all()
    assert h.epochs["train_loss"].iloc[0] == pytest.approx(h.steps["loss"].iloc[:6].mean())
    assert (h.steps["grad_norm"] > 0).all() and "val_mae" in h.epochs
    assert h.best_val_loss == h.epochs["val_loss"].min()
    assert h.epochs["train_loss"].iloc[-1] < h.epochs["train_loss"].iloc[0]


def test_dataset_smaller_than_a_batch_still_trains():
    data = make_data(20, seed=3)
    obj = make_objective()
    before = obj.net[0].weight.detach().clone()
    h = Trainer(obj, cfg(epochs=30, batch_size=512, lr=1e-2)).fit(data)
    assert len(h.steps) == 30 and h.steps["samples_seen"].iloc[-1] == 600
    assert not torch.equal(before, obj.net[0].weight)
    assert h.steps["loss"].iloc[-5:].mean() < h.steps["loss"].iloc[:5].mean()


def test_config_round_trips_through_json_and_validates():
    config = cfg(patience=3, checkpoint_every_samples=1000)
    assert TrainConfig.from_dict(json.loads(json.dumps(config.to_dict()))) == config
    with pytest.raises(ValueError, match="unknown"):
        TrainConfig.from_dict({"epochs": 2, "learning_rate": 1.0})
    with pytest.raises(ValueError):
        TrainConfig(epochs=0)
    with pytest.raises(ValueError):
        TrainConfig(warmup_fraction=1.5)


def test_non_finite_loss_is_reported():
    data = make_data(64)
    data["numeric"][:, 0] = np.nan
    with pytest.raises(FloatingPointError, match="step"):
        Trainer(make_objective(), cfg(epochs=1)).fit(data)


def test_fit_accepts_tensors_and_encoded_features_like_objects():
    class Encoded:  # what obsad.features.EncodedFeatures exposes
        numeric = TRAIN["numeric"]
        categorical = TRAIN["categorical"]

    obj_a, obj_b = make_objective(), make_objective()
    ha = Trainer(obj_a, cfg(epochs=1)).fit(Encoded())
    hb = Trainer(obj_b, cfg(epochs=1)).fit({k: torch.from_numpy(v) for k, v in TRAIN.items()})
    assert_same_weights(obj_a, obj_b)
    assert math.isfinite(ha.steps["loss"].iloc[-1]) and np.array_equal(ha.steps["loss"], hb.steps["loss"])
    with pytest.raises(ValueError, match="rows"):
        Trainer(make_objective(), cfg()).fit({"numeric": TRAIN["numeric"], "categorical": TRAIN["categorical"][:5]})


class BatchRecorder(ToyObjective):
    """Records the validation batches it sees; refuses batches of one event, as a contrastive loss must."""

    def __init__(self):
        super().__init__()
        self.seen: list[torch.Tensor] = []

    def forward(self, batch):
        if batch["numeric"].shape[0] < 2:
            raise ValueError("needs at least 2 events per batch")
        if not self.training:
            self.seen.append(batch["numeric"][:, 0].clone())
        return super().forward(batch)


def test_validation_batches_are_shuffled_and_never_a_single_event():
    torch.manual_seed(0)
    objective = BatchRecorder()
    trainer = Trainer(objective, cfg(batch_size=32))
    val = make_data(32 * 3 + 1, seed=3)
    loss, _ = trainer.validate(val)
    assert np.isfinite(loss)
    sizes = [len(b) for b in objective.seen]
    assert sum(sizes) == 97 and min(sizes) >= 2
    first = objective.seen[0].numpy()
    assert not np.array_equal(first, val["numeric"][:32, 0]), "validation batches must not be consecutive events"


def test_betas_reach_the_optimizer_and_bad_betas_are_refused():
    model = torch.nn.Linear(3, 1)

    class Objective(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.model = model

    trainer = Trainer(Objective(), TrainConfig(betas=(0.9, 0.98), progress=False, device="cpu"))
    assert trainer.optimizer.param_groups[0]["betas"] == (0.9, 0.98)
    assert TrainConfig.from_dict(TrainConfig(betas=[0.8, 0.95]).to_dict()).betas == (0.8, 0.95)
    with pytest.raises(ValueError, match="betas"):
        TrainConfig(betas=(0.9, 1.0))
