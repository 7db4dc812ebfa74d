"""The report's answer (tasks.headline): who won, the held-out class, the champion line."""

from __future__ import annotations

from tasks.headline import DECISION_END, DECISION_START, answer, decision_html, with_decision


def metrics(fe: float, ft: float, *, fe_recall: float = 0.80, ft_recall: float = 0.86) -> dict:
    def one(acc, recall):
        return {
            "accuracy": acc,
            "f1_macro": acc - 0.01,
            "holdout": {
                "classes": ["ship"],
                "recall": recall,
                "support": 50,
                "others_accuracy": acc,
            },
        }

    return {"feature_extraction": one(fe, fe_recall), "fine_tune": one(ft, ft_recall)}


def test_the_answer_names_the_winner_its_margin_and_the_held_out_class() -> None:
    a = answer(metrics(0.9210, 0.9330), metric="accuracy")
    assert a["winner"] == "fine_tune" and round(a["margin"], 4) == 0.012
    first, second = a["sentences"]
    assert first == (
        "Fine-tuning wins on accuracy: 0.9330 against 0.9210 for feature extraction (1.2 points)."
    )
    assert "held-out class 'ship' (never seen by the backbone, 50 test images)" in second
    assert "0.80 with feature extraction" in second
    assert "0.86 with fine-tuning" in second and "fine-tuning adds 6.0 points" in second

    worse = answer(metrics(0.9330, 0.9210, fe_recall=0.9, ft_recall=0.7), metric="accuracy")
    assert worse["winner"] == "feature_extraction"
    assert worse["sentences"][0].startswith("Feature extraction wins on accuracy: 0.9330")
    assert "fine-tuning loses 20.0 points" in worse["sentences"][1]


def test_the_answer_compares_on_the_gate_metric_and_says_a_tie() -> None:
    m = metrics(0.9, 0.9)
    m["fine_tune"]["f1_macro"] = 0.95
    assert answer(m, metric="f1_macro")["winner"] == "fine_tune"
    tie = answer(m, metric="accuracy")
    assert tie["winner"] is None and "tie on accuracy (0.9000)" in tie["sentences"][0]


def test_the_answer_without_a_held_out_class_or_a_second_model_and_with_the_study() -> None:
    only = {"fine_tune": {"accuracy": 0.5}}
    a = answer(only, study={"headline": "unfreeze 6, augment yes: accuracy 0.9400"})
    assert a["holdout"] is None and a["winner"] is None
    assert a["sentences"] == [
        "Only fine-tuning was scored: accuracy 0.5000.",
        "Unfreezing study: unfreeze 6, augment yes: accuracy 0.9400.",
    ]
    assert answer({})["sentences"] == []


def test_the_decision_replaces_the_pending_line_and_nothing_else() -> None:
    page = f"<h1>Run r</h1>{decision_html(None)}<p>rest</p>"
    assert "not decided yet" in page
    promoted = {
        "status": "champion",
        "promoted": True,
        "reason": "accuracy 0.93 beats the champion's 0.92 by more than 0.0",
        "champion_run": "r0",
    }
    filled = with_decision(page, promoted)
    assert filled.startswith("<h1>Run r</h1>") and filled.endswith("<p>rest</p>")
    assert "not decided yet" not in filled and "New champion:" in filled
    assert "the previous champion: run r0" in filled
    assert with_decision(page, promoted) == filled  # deterministic: the same bytes twice
    lost = {
        "status": "challenger",
        "promoted": False,
        "reason": "0.5 does not beat 0.9",
        "champion_run": "r0",
    }
    assert "Challenger:" in with_decision(filled, lost)  # the markers survive a fill
    assert filled.count(DECISION_START) == filled.count(DECISION_END) == 1
    assert with_decision("<p>old report</p>", promoted) == "<p>old report</p>"
