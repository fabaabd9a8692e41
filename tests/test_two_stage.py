"""Two-stage training with a few analyst labels: frozen / partly unfrozen encoder, learning rates, the package
round trip, checkpoint names, the temporal hold-out, and the label-efficiency helpers."""

from __future__ import annotations

import copy
import json
import re
import shutil

import numpy as np
import pandas as pd
import pytest
import torch
from sklearn.metrics import f1_score

import obsad.train.two_stage as ts
from obsad.experiments.label_efficiency import TreeClassifier, evaluate_run, majority_run, simulated_analyst
from obsad.features import FeatureEncoder
from obsad.models import ClassificationHead, EventClassifier, TabularResNet
from obsad.package import PackageError
from obsad.runtime import seed_everything
from obsad.train.trainer import TrainConfig, Trainer, lr_factor
from obsad.train.two_stage import (
    ClassificationObjective,
    TwoStageConfig,
    balanced_class_weights,
    decide_classes,
    encode_labels,
    fit_two_stage,
    load_two_stage_model,
    predict_anomalies,
    pretrain_encoder,
    train_classifier,
)

CFG = TwoStageConfig(pretrain_steps=5, head_steps=20, batch_size=64, head_batch_size=16)
COLUMNS = ["predicted_class", "class_probability", "anomaly_score", "is_anomaly"]


# ------------------------------------------------------------------------------------------------ tiny data
@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    """Tiny models on a shared machine: one torch thread is fastest (as ``conftest.one_thread``, per module)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def make_events(n: int = 600, seed: int = 0) -> tuple[pd.DataFrame, pd.Series]:
    """A small event table over two days, rows *shuffled* (row order is not time order), and the true class
    of each event: ``normal``, ``exfil`` (huge byte counts) or ``scan`` (its own action)."""
    g = np.random.default_rng(seed)
    times = pd.Timestamp("2026-03-02", tz="UTC") + pd.to_timedelta(np.sort(g.integers(0, 2 * 86_400_000, n)),
                                                                   unit="ms")
    cls = np.full(n, "normal", dtype=object)
    cls[g.choice(n, n // 15, replace=False)] = "exfil"
    normal = np.flatnonzero(cls == "normal")
    cls[g.choice(normal, n // 15, replace=False)] = "scan"
    nbytes = g.lognormal(8.0, 1.0, n)
    nbytes[cls == "exfil"] *= 200.0
    action = g.choice(["read", "write", "list"], n).astype(object)
    action[cls == "scan"] = "probe"
    df = pd.DataFrame({"time": times, "bytes": nbytes, "duration": g.gamma(2.0, 50.0, n), "action": action,
                       "user": g.choice([f"u{i}" for i in range(8)], n)})
    perm = g.permutation(n)
    return df.iloc[perm].reset_index(drop=True), pd.Series(cls[perm])


def analyst_labels(truth: pd.Series, share: float = 0.4, seed: int = 1) -> pd.Series:
    """Every anomaly and ``share`` of the normal events labelled; the rest missing."""
    labels = truth.where(np.random.default_rng(seed).random(len(truth)) < share)
    labels[truth != "normal"] = truth[truth != "normal"]
    return labels.astype(object)


@pytest.fixture(scope="module")
def data():
    events, truth = make_events()
    labels = analyst_labels(truth)
    encoder = FeatureEncoder().fit(events)
    features = encoder.transform(events)
    rows, y, classes = encode_labels(labels)
    return {"events": events, "truth": truth, "labels": labels, "encoder": encoder, "features": features,
            "rows": rows, "y": y, "classes": classes}


@pytest.fixture(scope="module")
def pretrained(data):
    encoder, history = pretrain_encoder(data["features"], None, CFG)
    return encoder


@pytest.fixture(scope="module")
def fitted(data, tmp_path_factory):
    config = TwoStageConfig(model_name="mini", pretrain_steps=5, head_steps=20, batch_size=64, head_batch_size=16)
    ckpt = tmp_path_factory.mktemp("ckpt")
    model = fit_two_stage(data["events"], data["labels"], config, checkpoint_dir=ckpt)
    path = model.save(tmp_path_factory.mktemp("pkg") / "model")
    return model, config, ckpt, path


def _state(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return copy.deepcopy({k: v.detach().clone() for k, v in module.state_dict().items()})


def _recording_head(monkeypatch) -> list[dict[str, torch.Tensor]]:
    """Record the initial weights of every head ``train_classifier`` builds."""
    initial: list[dict[str, torch.Tensor]] = []

    def make(*args, **kwargs):
        head = ClassificationHead(*args, **kwargs)
        initial.append(_state(head))
        return head

    monkeypatch.setattr(ts, "ClassificationHead", make)
    return initial


def _recording_trainer(monkeypatch) -> list[Trainer]:
    made: list[Trainer] = []

    class Recording(Trainer):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            made.append(self)

    monkeypatch.setattr(ts, "Trainer", Recording)
    return made


# ------------------------------------------------------------------------------------------------ stage 2
def test_frozen_encoder_is_bit_identical_and_the_given_encoder_untouched(data, pretrained, monkeypatch):
    before = _state(pretrained)
    heads = _recording_head(monkeypatch)
    clf, history = train_classifier(pretrained, data["features"], data["rows"], data["y"], len(data["classes"]),
                                    CFG)
    assert clf.encoder is not pretrained
    assert clf.trainable_blocks == 0
    assert not any(p.requires_grad for p in clf.encoder.parameters())
    after = clf.encoder.state_dict()
    assert set(after) == set(before)
    for k, v in before.items():
        assert torch.equal(after[k], v), f"frozen encoder parameter {k} changed"
        assert torch.equal(pretrained.state_dict()[k], v), f"the pretrained encoder given was modified: {k}"
    assert len(heads) == 1 and len(history.steps) >= CFG.head_steps
    head_after = clf.head.state_dict()
    for k, v in heads[0].items():
        assert not torch.equal(head_after[k], v), f"head parameter {k} did not train"


def test_head_lr_is_a_tenth_of_the_base_rate():
    assert TwoStageConfig(base_lr=2e-3).head_lr == pytest.approx(2e-4, rel=1e-12)
    assert TwoStageConfig(base_lr=1e-2, head_lr_ratio=0.5).head_lr == pytest.approx(5e-3)
    assert TwoStageConfig(base_lr=2e-3, use_two_stage=False).head_lr == pytest.approx(2e-3)
    with pytest.raises(ValueError, match="head_lr_ratio"):
        TwoStageConfig(head_lr_ratio=0.0)
    with pytest.raises(ValueError, match="unfreeze_lr_ratio"):
        TwoStageConfig(unfreeze_lr_ratio=1.5)


def test_trainer_sets_each_group_to_the_scheduled_lr_times_its_scale(data, pretrained):
    seed_everything(0)
    encoder = TabularResNet.from_config(pretrained.to_config())
    encoder.load_state_dict(pretrained.state_dict())
    clf = EventClassifier(encoder, ClassificationHead(encoder.d_model, len(data["classes"]))).freeze(1)
    objective = ClassificationObjective(clf, None, block_lr_scale=0.25)
    config = TrainConfig(epochs=2, batch_size=16, lr=1e-3, warmup_fraction=0.25, progress=False)
    trainer = Trainer(objective, config, name="lr")
    seen: list[list[tuple[float, float]]] = []
    history = trainer.fit(ts._labelled(data["features"], data["rows"], data["y"]),
                          on_step=lambda tr: seen.append([(g["lr_scale"], g["lr"])
                                                          for g in tr.optimizer.param_groups]))
    assert len(seen) == trainer.total_steps > 4 and trainer.warmup_steps > 1
    scheduled = history.steps["lr"].to_numpy()
    for s, groups in enumerate(seen):
        expected = 1e-3 * lr_factor(s, trainer.total_steps, trainer.warmup_steps, config.min_lr_ratio)
        assert scheduled[s] == pytest.approx(expected, rel=1e-12)
        assert {scale for scale, _ in groups} == {1.0, 0.25}
        for scale, lr in groups:
            assert lr == pytest.approx(expected * scale, rel=1e-12)
    # the groups hold exactly the head (scale 1) and the last block + output norm (scale 0.25)
    by_scale: dict[float, set[int]] = {}
    for g in trainer.optimizer.param_groups:
        by_scale.setdefault(g["lr_scale"], set()).update(id(p) for p in g["params"])
    assert by_scale[1.0] == {id(p) for p in clf.head.parameters()}
    unfrozen = [*encoder.blocks[-1].parameters(), *encoder.output_norm.parameters()]
    assert by_scale[0.25] == {id(p) for p in unfrozen}


def test_train_classifier_uses_head_lr_and_unfreeze_ratio(data, pretrained, monkeypatch):
    made = _recording_trainer(monkeypatch)
    config = TwoStageConfig(base_lr=2e-3, unfreeze_last_block=True, unfreeze_lr_ratio=0.1, head_steps=20,
                            head_batch_size=16)
    clf, history = train_classifier(pretrained, data["features"], data["rows"], data["y"], len(data["classes"]),
                                    config)
    (trainer,) = made
    assert trainer.config.lr == pytest.approx(2e-4)
    # the peak of the schedule (end of warmup) is the head's rate, a tenth of the base rate
    assert history.steps["lr"].max() == pytest.approx(2e-4)
    last = history.steps["lr"].iloc[-1]
    head_ids = {id(p) for p in clf.head.parameters()}
    scales = set()
    for g in trainer.optimizer.param_groups:
        scales.add(g["lr_scale"])
        is_head = {id(p) for p in g["params"]} <= head_ids
        assert g["lr_scale"] == (1.0 if is_head else 0.1)
        assert g["lr"] == pytest.approx(last * g["lr_scale"], rel=1e-12)
    assert scales == {1.0, 0.1}


def test_unfreeze_last_block_trains_only_the_last_block(data, pretrained):
    before = _state(pretrained)
    config = TwoStageConfig(head_steps=20, head_batch_size=16, unfreeze_last_block=True)
    clf, _ = train_classifier(pretrained, data["features"], data["rows"], data["y"], len(data["classes"]), config)
    last = f"blocks.{len(clf.encoder.blocks) - 1}."
    assert len(clf.encoder.blocks) >= 2
    after = clf.encoder.state_dict()
    changed = {k for k, v in before.items() if not torch.equal(after[k], v)}
    last_keys = {k for k in before if k.startswith(last)}
    assert last_keys and last_keys <= changed, f"last block not trained: {sorted(last_keys - changed)}"
    for k in changed:
        assert k.startswith(last) or k.startswith("output_norm."), f"{k} should be frozen"
    assert any(k.startswith("blocks.0.") for k in before)
    assert any(k.startswith("input_projection.") for k in before) and any(k.startswith("embeddings.") for k in before)
    for k, v in pretrained.state_dict().items():
        assert torch.equal(v, before[k]), f"the pretrained encoder given was modified: {k}"


def test_single_stage_trains_everything_without_an_encoder(data, monkeypatch):
    initial: list[dict[str, torch.Tensor]] = []
    real = ts._new_encoder

    def recording(*args, **kwargs):
        enc = real(*args, **kwargs)
        initial.append(_state(enc))
        return enc

    monkeypatch.setattr(ts, "_new_encoder", recording)
    config = TwoStageConfig(head_steps=20, head_batch_size=16, use_two_stage=False)
    clf, history = train_classifier(None, data["features"], data["rows"], data["y"], len(data["classes"]), config)
    assert len(initial) == 1
    assert clf.trainable_blocks is None and all(p.requires_grad for p in clf.parameters())
    after = clf.encoder.state_dict()
    params = {name for name, _ in clf.encoder.named_parameters()}
    for k in params:
        assert not torch.equal(after[k], initial[0][k]), f"single-stage left encoder parameter {k} untouched"
    assert history.steps["lr"].max() == pytest.approx(config.base_lr)
    with pytest.raises(ValueError, match="pretrained encoder"):
        train_classifier(None, data["features"], data["rows"], data["y"], len(data["classes"]), CFG)


def test_fit_single_stage_end_to_end_has_no_pretraining(data, tmp_path):
    config = TwoStageConfig(pretrain_steps=5, head_steps=20, batch_size=64, head_batch_size=16, use_two_stage=False)
    model = fit_two_stage(data["events"], data["labels"], config, checkpoint_dir=tmp_path)
    assert "pretrain_epochs" not in model.summary
    assert not (tmp_path / "pretrain").exists()
    assert list((tmp_path / "finetune").glob("finetune_tabular_resnet_*.pt"))
    out = predict_anomalies(model, data["events"].iloc[:50])
    assert len(out) == 50


# ------------------------------------------------------------------------------------------------ package
def test_package_round_trip_keeps_classes_config_and_scores(fitted, data):
    model, config, _, path = fitted
    loaded, loaded_config, classes = load_two_stage_model(path)
    assert classes == model.classes == ["normal", "exfil", "scan"]
    assert loaded.classes == model.classes and loaded.normal_class == "normal"
    assert {k: v for k, v in loaded_config.items() if k not in ("format", "format_version")} == config.to_dict()
    assert loaded.config == loaded_config and "summary" not in loaded_config
    assert loaded.summary == model.summary
    assert loaded.threshold_ == model.threshold_ and loaded.threshold_percentile == model.threshold_percentile
    assert loaded.package_name == model.package_name
    events = data["events"]
    diff = np.abs(loaded.score_samples(events) - model.score_samples(events)).max()
    assert diff <= 1e-6
    pd.testing.assert_frame_equal(predict_anomalies(loaded, events), predict_anomalies(model, events),
                                  check_exact=False, atol=1e-6)


def test_predict_anomalies_rows_in_input_order(fitted, data):
    model = fitted[0]
    events = data["events"].iloc[:300]
    shuffled = events.sample(frac=1.0, random_state=5)
    shuffled.index = shuffled.index + 1000  # an index that is not 0..n-1
    out = predict_anomalies(model, shuffled)
    assert list(out.columns) == COLUMNS
    assert len(out) == len(shuffled) and list(out.index) == list(shuffled.index)
    ref = predict_anomalies(model, events)
    ref.index = ref.index + 1000
    pd.testing.assert_frame_equal(out, ref.loc[out.index], check_exact=False, atol=1e-6)
    assert set(out["predicted_class"]) <= set(model.classes)
    assert out["is_anomaly"].dtype == bool
    assert (out["is_anomaly"] == (out["anomaly_score"] > model.threshold_)).all()
    assert ((out["predicted_class"] == "normal") == ~out["is_anomaly"]).all()
    proba = model.predict_proba(shuffled)
    ids = [model.classes.index(c) for c in out["predicted_class"]]
    np.testing.assert_allclose(out["class_probability"], proba[np.arange(len(ids)), ids], atol=1e-7)
    np.testing.assert_allclose(out["anomaly_score"], 1.0 - proba[:, model.normal_id], atol=1e-7)
    empty = predict_anomalies(model, events.iloc[:0])
    assert list(empty.columns) == COLUMNS and len(empty) == 0
    with pytest.raises(TypeError):
        predict_anomalies(model, shuffled.to_dict("records"))


def test_checkpoint_and_package_names(fitted):
    model, config, ckpt, _ = fitted
    assert model.summary["n_validation_labels"] > 0  # >= min_val_labels labels, both parts with 2+ classes
    pre = [p.name for p in (ckpt / "pretrain").glob("*.pt") if p.name != "last.pt"]
    fine = [p.name for p in (ckpt / "finetune").glob("*.pt") if p.name != "last.pt"]
    assert len(pre) == 1 and re.fullmatch(r"pretrain_mini_\d+_\d+\.\d{4}\.pt", pre[0]), pre
    assert len(fine) == 1 and re.fullmatch(r"finetune_mini_\d+_\d+\.\d{4}\.pt", fine[0]), fine
    assert pre[0].endswith(f"_{model.summary['pretrain_best_val_loss']:.4f}.pt")
    assert fine[0].endswith(f"_{model.summary['selection_value']:.4f}.pt")
    index = json.loads((ckpt / "finetune" / "checkpoints.json").read_text())
    assert index["best"]["file"] == fine[0] and fine[0].startswith(f"finetune_mini_{index['best']['epoch']}_")
    assert model.summary["selection_metric"] == "val_loss"
    assert model.package_name.startswith("two_stage_mini_")
    assert model.package_name == f"two_stage_mini_val_loss_{model.summary['selection_value']:.4f}"


@pytest.mark.parametrize("target", ["model/weights.safetensors", "classes.json"])
def test_tampered_package_is_refused(fitted, tmp_path, target):
    copy_path = tmp_path / "pkg"
    shutil.copytree(fitted[3], copy_path)
    load_two_stage_model(copy_path)  # intact copy loads
    f = copy_path / target
    raw = bytearray(f.read_bytes())
    i = len(raw) - 3 if target.endswith("safetensors") else raw.index(b"exfil")
    raw[i] ^= 0x01
    f.write_bytes(bytes(raw))
    with pytest.raises(PackageError):
        load_two_stage_model(copy_path)


def test_consistently_rewritten_classes_with_wrong_count_are_refused(fitted, tmp_path):
    """Checksums updated too: the class names must still match the head."""
    import hashlib

    copy_path = tmp_path / "pkg"
    shutil.copytree(fitted[3], copy_path)
    f = copy_path / "classes.json"
    f.write_text(json.dumps({"classes": ["normal", "exfil"], "normal_class": "normal"}))
    manifest = json.loads((copy_path / "manifest.json").read_text())
    manifest["files"]["classes.json"] = {"sha256": hashlib.sha256(f.read_bytes()).hexdigest(),
                                         "bytes": f.stat().st_size}
    (copy_path / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(PackageError, match="classes.json"):
        load_two_stage_model(copy_path)


# ------------------------------------------------------------------------------------------------ labels
def test_encode_labels_orders_normal_first_and_skips_missing():
    rows, y, classes = encode_labels(pd.Series([None, "scan", "normal", np.nan, "exfil", "normal"]))
    assert classes == ["normal", "exfil", "scan"]
    assert rows.tolist() == [1, 2, 4, 5] and y.tolist() == [2, 0, 1, 0]


def test_label_errors(data):
    with pytest.raises(ValueError, match="normal"):
        encode_labels(pd.Series(["scan", "exfil", None]))
    with pytest.raises(ValueError, match="normal"):
        encode_labels(pd.Series([None, None]))
    with pytest.raises(ValueError, match="two classes"):
        encode_labels(pd.Series(["normal", None, "normal"]))
    events = data["events"]
    only_anomalies = data["labels"].where(data["labels"] != "normal")
    with pytest.raises(ValueError, match="normal"):
        fit_two_stage(events, only_anomalies, CFG)
    only_normal = data["labels"].where(data["labels"] == "normal")
    with pytest.raises(ValueError, match="two classes"):
        fit_two_stage(events, only_normal, CFG)
    with pytest.raises(ValueError, match="one entry per event"):
        fit_two_stage(events, data["labels"].iloc[:-1], CFG)
    with pytest.raises(ValueError):
        train_classifier(None, data["features"], data["rows"], data["y"][:-1], 3,
                         TwoStageConfig(use_two_stage=False))


def test_balanced_class_weights():
    w = balanced_class_weights(np.array([0, 0, 0, 1]), 3)
    assert w.dtype == np.float32
    np.testing.assert_allclose(w, [4 / (2 * 3), 4 / (2 * 1), 0.0], rtol=1e-6)
    w = balanced_class_weights(np.array([0] * 6 + [2] * 3 + [3]), 4)
    np.testing.assert_allclose(w * np.array([6, 1, 3, 1]), [10 / 3, 0, 10 / 3, 10 / 3], rtol=1e-6)
    assert w[1] == 0.0


def test_decide_classes_uses_threshold_then_most_probable_anomalous_class():
    proba = np.array([[0.90, 0.06, 0.04],    # score 0.1: at or below threshold -> normal
                      [0.60, 0.10, 0.30],    # score 0.4: above, normal is the argmax, yet class 2 is chosen
                      [0.20, 0.70, 0.10],    # score 0.8: above -> 1
                      [0.70, 0.20, 0.10]])   # score exactly at the threshold -> normal
    scores = np.array([0.1, 0.4, 0.8, 0.3])
    assert decide_classes(proba, scores, 0.3).tolist() == [0, 2, 1, 0]
    assert decide_classes(proba, scores, 0.0).tolist() == [1, 2, 1, 1]
    # another normal id
    p2 = proba[:, [1, 0, 2]]
    assert decide_classes(p2, scores, 0.3, normal_id=1).tolist() == [1, 2, 0, 1]
    with pytest.raises(ValueError):
        decide_classes(np.ones((3, 1)), np.zeros(3), 0.5)


# ------------------------------------------------------------------------------------------------ baselines
def test_majority_baseline_and_macro_f1_over_given_classes():
    true = np.array(["normal"] * 16 + ["exfil"] * 3 + ["scan"], dtype=object)
    classes = ["normal", "exfil", "scan"]
    out = majority_run(true, classes)
    share = 4 / 20
    assert out["AUPRC"] == pytest.approx(share)
    p_normal = 16 / 20
    f1_normal = 2 * p_normal / (1 + p_normal)
    assert out["macro-F1"] == pytest.approx(f1_normal / 3)
    assert out["F1"] == 0.0 and out["flagged"] == 0.0
    assert out["recall:normal"] == 1.0 and out["recall:exfil"] == 0.0
    # one more class the data never show: counted as a zero in the macro average
    assert majority_run(true, classes + ["lateral"])["macro-F1"] == pytest.approx(f1_normal / 4)
    pred = np.array(["normal"] * 15 + ["exfil"] * 4 + ["normal"], dtype=object)
    res = evaluate_run(true, pred, np.r_[np.zeros(15), np.ones(5)], 0.5, classes)
    assert res["macro-F1"] == pytest.approx(f1_score(true, pred, labels=classes, average="macro",
                                                     zero_division=0))
    assert res["recall:exfil"] == 1.0 and res["recall:scan"] == 0.0
    assert res["F1"] == pytest.approx(2 * 4 / (2 * 4 + 1 + 0))  # tp=4, fp=1, fn=0
    assert "macro-F1" not in evaluate_run(true, None, np.zeros(20), 0.0, classes)


def test_simulated_analyst():
    n = 200
    truth = np.where(np.arange(n) % 10 == 0, "exfil", "normal").astype(object)
    scores = np.zeros(n)
    scores[:60] = 1.0  # 60 alerts
    rows, lab = simulated_analyst(truth, scores, 0.5, 20, alert_share=0.8, seed=3)
    assert len(rows) == 20 and len(set(rows.tolist())) == 20
    assert (scores[rows] > 0.5).sum() >= 16  # 80 % from the queue, the rest may hit alerts by chance
    assert lab.tolist() == truth[rows].tolist()
    again, _ = simulated_analyst(truth, scores, 0.5, 20, alert_share=0.8, seed=3)
    assert again.tolist() == rows.tolist()
    other, _ = simulated_analyst(truth, scores, 0.5, 20, alert_share=0.8, seed=4)
    assert other.tolist() != rows.tolist()
    # short queue: every alert, the rest at random
    short = np.zeros(n)
    short[[5, 7, 9]] = 1.0
    rows, _ = simulated_analyst(truth, short, 0.5, 20, alert_share=0.8, seed=0)
    assert len(set(rows.tolist())) == 20 and {5, 7, 9} <= set(rows.tolist())
    rows, _ = simulated_analyst(truth, scores, 0.5, n, seed=0)
    assert sorted(rows.tolist()) == list(range(n))
    with pytest.raises(ValueError, match="budget"):
        simulated_analyst(truth, scores, 0.5, 0)
    with pytest.raises(ValueError, match="budget"):
        simulated_analyst(truth, scores, 0.5, n + 1)


# ------------------------------------------------------------------------------------------------ temporal split
def test_latest_labels_are_held_out(data, monkeypatch):
    calls = []
    real = ts.train_classifier

    def recording(encoder, features, rows, y, n_classes, config=None, val=None, checkpoint_dir=None):
        calls.append((np.asarray(rows).copy(), None if val is None else np.asarray(val[0]).copy()))
        return real(encoder, features, rows, y, n_classes, config, val=val, checkpoint_dir=checkpoint_dir)

    monkeypatch.setattr(ts, "train_classifier", recording)
    events = data["events"]
    model = fit_two_stage(events, data["labels"], CFG)
    (fit_rows, val_rows), = calls
    n_labels = int(data["labels"].notna().sum())
    assert model.summary["n_labels"] == n_labels
    assert model.summary["n_validation_labels"] == len(val_rows) == round(CFG.val_fraction * n_labels)
    assert len(fit_rows) + len(val_rows) == n_labels and not set(fit_rows) & set(val_rows)
    times = events["time"].to_numpy()
    assert times[val_rows].min() >= times[fit_rows].max(), "a validation label is earlier than a training label"
    # the rows are shuffled: row order alone would not give this
    assert not (val_rows >= fit_rows.max()).all()


def test_no_validation_when_too_few_labels_or_one_class_in_the_latest(data, tmp_path):
    events, truth = data["events"], data["truth"]
    few = pd.Series([None] * len(events), dtype=object)
    picked = np.r_[np.flatnonzero(truth == "normal")[:20], np.flatnonzero(truth != "normal")[:10]]
    few[picked] = truth[picked]
    model = fit_two_stage(events, few, CFG, checkpoint_dir=tmp_path / "few")
    assert model.summary["n_validation_labels"] == 0 and model.summary["selection_metric"] == "train_loss"
    assert model.package_name.startswith("two_stage_tabular_resnet_train_loss_")
    assert not list((tmp_path / "few" / "finetune").glob("finetune_*.pt"))
    # enough labels, but every late label is normal: the held-out part has one class, nothing is held out
    times = events["time"]
    early = times <= times.quantile(0.5)
    labels = truth.where((truth == "normal") | early).astype(object)
    assert labels.notna().sum() >= CFG.min_val_labels
    model = fit_two_stage(events, labels, CFG)
    assert model.summary["n_validation_labels"] == 0


# ------------------------------------------------------------------------------------------------ trees
def test_tree_classifier_with_ten_labels(data):
    truth = data["truth"].to_numpy()
    rows = np.r_[np.flatnonzero(truth == "normal")[:5], np.flatnonzero(truth == "exfil")[:3],
                 np.flatnonzero(truth == "scan")[:2]]
    y = pd.Index(["normal", "exfil", "scan"]).get_indexer(truth[rows])
    tree = TreeClassifier(max_iter=10).fit(data["features"], rows, y)
    proba = tree.predict_proba(data["features"])
    assert proba.shape == (len(truth), len(tree.classes_)) and len(tree.classes_) == 3
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, atol=1e-6)


def test_stack_scores_learns_to_trust_the_informative_detector():
    from obsad.experiments.label_efficiency import stack_scores

    rng = np.random.default_rng(0)
    n = 2000
    y = rng.random(n) < 0.05
    useful = y * 3.0 + rng.normal(size=n)  # separates anomalies
    noise = rng.normal(size=n)  # says nothing
    rows = np.r_[np.flatnonzero(y)[:20], np.flatnonzero(~y)[:40]]
    (combined,) = stack_scores([useful, noise], [useful[rows], noise[rows]], y[rows], [[useful, noise]])
    from sklearn.metrics import roc_auc_score

    assert roc_auc_score(y, combined) > 0.95
    assert roc_auc_score(y, combined) > roc_auc_score(y, (useful + noise) / 2) - 1e-9
    # one kind of label only: the mean of the log-odds, still a usable ranking
    (fallback,) = stack_scores([useful, noise], [useful[:5], noise[:5]], np.zeros(5, bool), [[useful, noise]])
    assert fallback.shape == (n,) and np.isfinite(fallback).all()


def test_head_proba_matches_the_full_forward():
    from obsad.models import ClassificationHead, EventClassifier, TabularResNet

    torch.manual_seed(0)
    encoder = TabularResNet(3, [5, 4])
    clf = EventClassifier(encoder, ClassificationHead(encoder.d_model, 3)).freeze()
    num = torch.randn(50, 3)
    cat = torch.randint(0, 4, (50, 2))
    direct = clf.predict_proba(num, cat)
    via = clf.head_proba(encoder.embed(num, cat))
    assert torch.allclose(direct, via, atol=1e-6)
