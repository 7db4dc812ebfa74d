"""Evaluation metrics against values computed by hand on a tiny fixed prediction set."""

from __future__ import annotations

import numpy as np
import pytest

from tasks.common import UserError
from tasks.evaluate import (
    comparison_row,
    compute_metrics,
    confident_errors,
    confused_pairs,
    confusion,
    find_models,
    heldout_classes,
    holdout_metrics,
    metrics_table,
    per_class,
    phase_seconds,
)
from tasks.params import load_params
from tests.helpers import params_yaml

# 6 images, 3 classes; predictions 0 1 0 1 2 2 -> 4 of 6 right
Y = np.array([0, 0, 0, 1, 1, 2])
P = np.array(
    [
        [0.7, 0.2, 0.1],  # 0 -> 0
        [0.4, 0.5, 0.1],  # 0 -> 1  (wrong, 50 %)
        [0.6, 0.3, 0.1],  # 0 -> 0
        [0.1, 0.8, 0.1],  # 1 -> 1
        [0.3, 0.1, 0.6],  # 1 -> 2  (wrong, 60 %; true class not even in the top 2)
        [0.1, 0.1, 0.8],
    ]
)  # 2 -> 2
CLASSES = ["cat", "dog", "truck"]


def test_scalar_metrics_match_hand_computed_values():
    m = compute_metrics(Y, P, top_k=2)
    # per class (P, R, F1, support): cat (1, 2/3, .8, 3), dog (.5, .5, .5, 2), truck (.5, 1, 2/3, 1)
    expected = {
        "accuracy": 4 / 6,
        "top2_accuracy": 5 / 6,
        "loss": -np.log([0.7, 0.4, 0.6, 0.8, 0.1, 0.8]).mean(),
        "precision_macro": (1 + 0.5 + 0.5) / 3,
        "recall_macro": (2 / 3 + 0.5 + 1) / 3,
        "f1_macro": (0.8 + 0.5 + 2 / 3) / 3,
        "precision_weighted": (3 * 1 + 2 * 0.5 + 0.5) / 6,
        "recall_weighted": 4 / 6,
        "f1_weighted": (3 * 0.8 + 2 * 0.5 + 2 / 3) / 6,
        "n_images": 6,
    }
    assert m.keys() == expected.keys()
    for k, v in expected.items():
        assert m[k] == pytest.approx(v), k


def test_a_class_absent_from_the_test_split_is_still_a_class():
    # no truck in this test split; the model still has 3 outputs (predictions 0 1 1 2)
    m = compute_metrics(np.array([0, 0, 1, 1]), P[[0, 1, 3, 4]], top_k=2)
    assert m["accuracy"] == pytest.approx(2 / 4)
    assert m["top2_accuracy"] == pytest.approx(3 / 4)  # only dog -> truck misses the top 2
    assert m["loss"] == pytest.approx(-np.log([0.7, 0.4, 0.8, 0.1]).mean())
    assert m["recall_macro"] == pytest.approx((1 / 2 + 1 / 2 + 0) / 3)  # truck: no support


def test_a_sure_miss_costs_what_keras_reports():
    # probability 0 for the true class: clipped at Keras's 1e-7, not at float64's eps
    m = compute_metrics(np.array([0, 1]), np.array([[0.0, 1.0], [0.0, 1.0]]), top_k=5)
    assert m["loss"] == pytest.approx(-np.log(1e-7) / 2)


def test_top_k_is_only_reported_with_more_than_k_classes():
    assert "top5_accuracy" not in compute_metrics(Y, P, top_k=5)  # 3 classes


def test_per_class_table_and_confusion_rows_sum_to_supports():
    rows = per_class(Y, P.argmax(1), CLASSES)
    assert [(r["class"], r["support"]) for r in rows] == [("cat", 3), ("dog", 2), ("truck", 1)]
    assert [r["precision"] for r in rows] == pytest.approx([1, 0.5, 0.5])
    assert [r["recall"] for r in rows] == pytest.approx([2 / 3, 0.5, 1])
    cm = confusion(Y, P.argmax(1), 3)
    assert cm.tolist() == [[2, 1, 0], [0, 1, 1], [0, 0, 1]]
    rng = np.random.default_rng(0)
    y, pred = rng.integers(0, 7, 500), rng.integers(0, 7, 500)
    assert confusion(y, pred, 7).sum(axis=1).tolist() == np.bincount(y, minlength=7).tolist()


def test_holdout_metrics_are_the_held_out_class_own_recall_precision_f1():
    from sklearn.metrics import f1_score, precision_score, recall_score

    pred = P.argmax(1)  # 0 1 0 1 2 2
    held = holdout_metrics(Y, pred, CLASSES, ["dog"])
    # dog: 2 images, 1 found (recall 1/2); predicted twice, once right (precision 1/2);
    # the other 4 images (cat, cat, cat, truck): 3 right (cat 0->1 is the miss)
    assert held == {
        "classes": ["dog"],
        "recall": pytest.approx(0.5),
        "precision": pytest.approx(0.5),
        "f1": pytest.approx(0.5),
        "support": 2,
        "others_accuracy": pytest.approx(3 / 4),
    }
    for k, fn in (("recall", recall_score), ("precision", precision_score), ("f1", f1_score)):
        assert held[k] == pytest.approx(fn(Y, pred, labels=[1], average=None)[0]), k
    # two held-out classes pool their images: cat 2/3 and truck 1/1 -> 3 of 4 found
    two = holdout_metrics(Y, pred, CLASSES, ["truck", "cat"])
    assert (two["classes"], two["recall"], two["support"]) == (["cat", "truck"], 0.75, 4)
    assert two["others_accuracy"] == pytest.approx(1 / 2)  # dog
    assert holdout_metrics(Y, pred, CLASSES, []) is None


def test_held_out_classes_come_from_backbone_json():
    assert heldout_classes({"weights": "source", "holdout": ["truck"]}, CLASSES) == ["truck"]
    # a source trained on data without dog (prepare.exclude) names only what it saw
    assert heldout_classes({"classes": ["cat", "truck"], "holdout": []}, CLASSES) == ["dog"]
    assert heldout_classes({"weights": "imagenet"}, CLASSES) == []
    assert heldout_classes({}, CLASSES) == []


def test_confused_pairs_rank_both_directions_together():
    cm = np.array(
        [
            [10, 1, 4],  # cat as truck 4
            [0, 9, 2],
            [3, 2, 8],
        ]
    )  # truck as cat 3 -> cat/truck 7 errors, dog/truck 4, cat/dog 1
    pairs = confused_pairs(cm, CLASSES, k=2)
    assert [(p["a"], p["b"], p["a_as_b"], p["b_as_a"], p["total"]) for p in pairs] == [
        ("cat", "truck", 4, 3, 7),
        ("dog", "truck", 2, 2, 4),
    ]
    assert confused_pairs(np.eye(3, dtype=int), CLASSES, k=5) == []


def test_most_confident_errors_come_first():
    assert confident_errors(Y, P, 5).tolist() == [4, 1]  # 60 % then 50 %, right ones left out
    assert confident_errors(Y, P, 1).tolist() == [4]


def test_phase_seconds_sum_each_phase():
    history = {
        "phases": [
            {"name": "head", "epochs": [{"seconds": 1.5}, {"seconds": 2.0}]},
            {"name": "fine_tune", "epochs": [{"seconds": 4.25}]},
        ]
    }
    assert phase_seconds(history) == {"seconds_head": 3.5, "seconds_fine_tune": 4.25}
    # train.json's totals (they include what history leaves out) win when present
    assert phase_seconds(history, {"seconds": {"head": 9.0}}) == {"seconds_head": 9.0}


def test_comparison_rows_from_train_json():
    m = compute_metrics(Y, P)
    fe = comparison_row(
        "feature_extraction",
        m,
        {"strategy": "feature_extraction", "augment": False, "unfreeze": None},
    )
    assert (fe["unfreeze"], fe["unfrozen_layers"], fe["trainable_params"], fe["augmentation"]) == (
        "none",
        0,
        0,
        "no",
    )
    ft = comparison_row(
        "unfreeze-10-aug-yes",
        m,
        {
            "strategy": "fine_tune",
            "augment": True,
            "val_accuracy": 0.9,
            "unfreeze": {
                "spec": "10",
                "layers": 10,
                "weighted_layers": 3,
                "trainable_params": 1_054_720,
            },
        },
    )
    assert (
        ft["unfreeze"],
        ft["unfrozen_layers"],
        ft["trainable_params"],
        ft["augmentation"],
        ft["accuracy"],
    ) == ("10", 3, 1_054_720, "yes", pytest.approx(4 / 6))
    unknown = comparison_row("hand_made", m, {})
    assert (unknown["trainable_params"], unknown["augmentation"]) == (None, "?")
    assert unknown["holdout_recall"] is None  # no held-out class
    held = comparison_row(
        "fe", m | {"holdout": holdout_metrics(Y, P.argmax(1), CLASSES, ["dog"])}, {}
    )
    assert held["holdout_recall"] == pytest.approx(0.5)


def test_find_models_names_folders_and_skips_empty_globs(tmp_path):
    for name in ("feature_extraction", "sweep/unfreeze-10-aug-yes", "sweep/unfreeze-0-aug-no"):
        (tmp_path / name).mkdir(parents=True)
        (tmp_path / name / "model.keras").write_bytes(b"x")
    found = find_models(("feature_extraction", "sweep/*", "nothing/*"), tmp_path)
    assert list(found) == ["feature_extraction", "unfreeze-0-aug-no", "unfreeze-10-aug-yes"]
    assert found["unfreeze-0-aug-no"] == tmp_path / "sweep/unfreeze-0-aug-no"
    with pytest.raises(UserError, match="fine_tune/model.keras not found"):
        find_models(("fine_tune",), tmp_path)


def test_summary_lists_every_model():
    text = metrics_table(
        {"feature_extraction": compute_metrics(Y, P), "fine_tune": {"accuracy": 1.0}}
    )
    assert "feature_extraction" in text and "0.6667" in text and "1.0000" in text
    assert "holdout_recall" not in text
    held = {"accuracy": 1.0, "holdout": {"classes": ["dog"], "recall": 0.25}}
    assert "holdout_recall" in metrics_table({"fine_tune": held}) and "0.2500" in (
        metrics_table({"fine_tune": held})
    )


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("evaluate.top_k", 1, "evaluate.top_k: 1 is out of range: must be >= 2"),
        ("evaluate.split", "train", "evaluate.split: 'train' is not allowed"),
        ("visualize.dpi", 10, "visualize.dpi: 10 is out of range: must be >= 30"),
        ("visualize.misclassified", 0, "visualize.misclassified: 0 is out of range"),
        ("visualize.activation_layers", [], "visualize.activation_layers: name at least one"),
    ],
)
def test_bad_params_name_the_key(tmp_path, key, value, message):
    f = tmp_path / "params.yaml"
    f.write_text(params_yaml())
    with pytest.raises(UserError, match=message.replace("(", r"\(")):
        load_params(f, {key: value})
