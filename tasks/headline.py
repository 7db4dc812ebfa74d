"""The run's answer in a few sentences: the report's first section, `make run`'s last lines.

    answer(metrics, metric="accuracy", study=None) -> {"sentences", "winner", ...}

Feature extraction against fine-tuning on `metric` (publish.metric: what the champion gate
compares too), the held-out classes' recall under each (the classes the backbone never saw:
what transfer had to bring back), and the unfreezing study's recommendation when it ran.
The champion decision is publish's: `visualize` leaves it pending, between two markers, and
`publish` fills it into the copy it uploads (`with_decision`), from the decision its manifest
records, so publishing the same run twice uploads the same bytes. Pure: no files, no
TensorFlow.
"""

from __future__ import annotations

from typing import Any

from tasks import templates

STRATEGIES = {"feature_extraction": "feature extraction", "fine_tune": "fine-tuning"}
DECISION_START, DECISION_END = "<!-- decision -->", "<!-- /decision -->"
TIE = 0.0005  # a smaller difference prints as a tie: metrics.json rounds to no finer


def answer(metrics: dict[str, dict], *, metric: str = "accuracy", study: dict | None = None):
    """What the run found, from metrics.json (and study.json when the study ran)."""
    ran = {m: metrics[m] for m in STRATEGIES if m in metrics and metric in metrics[m]}
    out: dict[str, Any] = {
        "metric": metric,
        "scores": {m: float(v[metric]) for m, v in ran.items()},
        "winner": None,
        "margin": None,
        "holdout": holdout(ran),
        "study": study.get("headline") if study else None,
    }
    sentences = []
    if len(ran) == 2:
        fe, ft = out["scores"]["feature_extraction"], out["scores"]["fine_tune"]
        out["margin"] = abs(ft - fe)
        if out["margin"] < TIE:
            sentences.append(f"Fine-tuning and feature extraction tie on {metric} ({ft:.4f}).")
        else:
            win = "fine_tune" if ft > fe else "feature_extraction"
            lose = next(m for m in STRATEGIES if m != win)
            out["winner"] = win
            sentences.append(
                f"{STRATEGIES[win].capitalize()} wins on {metric}: "
                f"{out['scores'][win]:.4f} against {out['scores'][lose]:.4f} for "
                f"{STRATEGIES[lose]} ({_points(out['margin'])})."
            )
    elif ran:
        name, value = next(iter(out["scores"].items()))
        sentences.append(f"Only {STRATEGIES[name]} was scored: {metric} {value:.4f}.")
    if held := out["holdout"]:
        sentences.append(_holdout_sentence(held))
    if out["study"]:
        sentences.append(f"Unfreezing study: {out['study']}.")
    out["sentences"] = sentences
    return out


def holdout(metrics: dict[str, dict]) -> dict | None:
    """{classes, recall: {model: r}, gain: fine_tune - feature_extraction} or None."""
    held = {m: v["holdout"] for m, v in metrics.items() if v.get("holdout")}
    if not held:
        return None
    recall = {m: float(h["recall"]) for m, h in held.items()}
    gain = (
        recall["fine_tune"] - recall["feature_extraction"]
        if {"fine_tune", "feature_extraction"} <= recall.keys()
        else None
    )
    first = next(iter(held.values()))
    return {
        "classes": first["classes"],
        "support": first.get("support"),
        "recall": recall,
        "gain": gain,
    }


def decision_html(decision: dict | None) -> str:
    """The champion line between the markers: publish's decision, or pending."""
    body = templates.render("decision.html.j2", decision=decision)
    return f"{DECISION_START}{body}{DECISION_END}"


def with_decision(html: str, decision: dict) -> str:
    """The report with its pending champion line replaced by `decision` (publish's)."""
    start, end = html.find(DECISION_START), html.find(DECISION_END)
    if start < 0 or end < start:
        return html  # a report from before the headline: published as it is
    return html[:start] + decision_html(decision) + html[end + len(DECISION_END) :]


def _holdout_sentence(held: dict) -> str:
    names = ", ".join(f"'{c}'" for c in held["classes"])
    what = f"held-out class {names}" if len(held["classes"]) == 1 else f"held-out classes {names}"
    parts = [f"{r:.2f} with {STRATEGIES.get(m, m)}" for m, r in held["recall"].items()]
    images = f", {held['support']} test images" if held.get("support") else ""
    text = f"Recall of the {what} (never seen by the backbone{images}): {', '.join(parts)}"
    if held["gain"] is not None:
        text += f"; fine-tuning {'adds' if held['gain'] >= 0 else 'loses'} {_points(held['gain'])}"
    return text + "."


def _points(delta: float) -> str:
    return f"{abs(delta) * 100:.1f} points"
