"""`evaluate --report DIR`: a self-contained HTML report with PNG figures, and metrics.json.

Figures use label ids (ASCII), so they render without a CJK font; Chinese text lives in the HTML.
"""

from __future__ import annotations

import base64
import html
import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only, no display
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from sklearn.calibration import calibration_curve  # noqa: E402
from sklearn.metrics import precision_recall_curve  # noqa: E402

from training.evaluate import Evaluation, FalseAlarms  # noqa: E402
from zhijian.taxonomy import LABEL_BY_ID, LABEL_IDS, ROLE_ZH, unit_to_tone  # noqa: E402

WORST = 20
STYLE = """
body{font-family:system-ui,'PingFang SC','Noto Sans CJK SC',sans-serif;margin:2em;max-width:1200px;color:#222}
table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:4px 8px;font-size:14px}
th{background:#f3f3f3}td.num{text-align:right;font-variant-numeric:tabular-nums}
.ctx{color:#777;font-size:13px}img{max-width:100%;border:1px solid #eee;margin:.5em 0}
.bad{color:#b00}.good{color:#070}
"""


def _fmt(value, digits: int = 3) -> str:
    return "—" if value is None else f"{value:.{digits}f}" if isinstance(value, float) else str(value)


def _save(fig, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def pr_curves(evaluation: Evaluation, path: Path) -> Path:
    fig, axes = plt.subplots(3, 4, figsize=(14, 10))
    for k, (ax, label) in enumerate(zip(axes.ravel(), LABEL_IDS)):
        truth, probs = evaluation.gold[:, k], evaluation.predictions.probs[:, k]
        row = evaluation.metrics["labels"][label]
        if truth.sum():
            precision, recall, _ = precision_recall_curve(truth, probs)
            ax.plot(recall, precision, label=f"model (AP {row['pr_auc']:.2f})")
            ax.scatter([row["recall"]], [row["precision"]], marker="o", color="C0", zorder=3, label=f"threshold {row['threshold']:.2f}")
            base = evaluation.metrics["baseline"]["labels"][label]
            ax.scatter([base["recall"]], [base["precision"]], marker="x", color="C3", zorder=3, label="keyword baseline")
            if evaluation.metrics.get("ngram_baseline"):
                bar = evaluation.metrics["ngram_baseline"]["labels"][label]
                ax.scatter([bar["recall"]], [bar["precision"]], marker="^", color="C2", zorder=3, label="n-gram baseline")
            ax.axhline(truth.mean(), color="#999", lw=0.8, ls=":")
            ax.legend(fontsize=7, loc="lower left")
        else:
            ax.text(0.5, 0.5, "no gold positives", ha="center", va="center")
        ax.set(title=f"{label} (n={int(truth.sum())})", xlim=(0, 1.02), ylim=(0, 1.05), xlabel="recall", ylabel="precision")
    return _save(fig, path)


def reliability(evaluation: Evaluation, path: Path) -> Path:
    truth, probs = evaluation.gold.ravel(), evaluation.predictions.probs.ravel()
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(6, 7), gridspec_kw={"height_ratios": [3, 1]}, sharex=True)
    top.plot([0, 1], [0, 1], color="#999", ls="--", label="perfect calibration")
    if 0 < truth.sum() < len(truth):
        frequency, confidence = calibration_curve(truth, probs, n_bins=10, strategy="uniform")
        top.plot(confidence, frequency, marker="o", label=f"model (ECE {evaluation.metrics['ece']:.3f})")
    top.set(ylabel="observed frequency", title="Reliability, all labels pooled", xlim=(0, 1), ylim=(0, 1))
    top.legend()
    bottom.hist(probs, bins=np.linspace(0, 1, 11), color="C0", alpha=0.7)
    bottom.set(xlabel="predicted probability", ylabel="label decisions", yscale="log")
    return _save(fig, path)


def confusion(evaluation: Evaluation, path: Path) -> Path:
    """Gold label (rows, plus ok) against predicted label (columns, plus ok), counted per agent turn."""
    names = [*LABEL_IDS, "ok"]
    matrix = np.zeros((len(names), len(names)), dtype=int)
    predicted = evaluation.predictions.probs >= evaluation.thresholds
    for gold_row, pred_row in zip(evaluation.gold.astype(bool), predicted):
        gold_set = np.flatnonzero(gold_row).tolist() or [len(LABEL_IDS)]
        pred_set = np.flatnonzero(pred_row).tolist() or [len(LABEL_IDS)]
        for g in gold_set:
            for p in pred_set:
                matrix[g, p] += 1
    fig, ax = plt.subplots(figsize=(10, 8.5))
    ax.imshow(np.log1p(matrix), cmap="Blues")
    for (g, p), count in np.ndenumerate(matrix):
        if count:
            ax.text(p, g, str(count), ha="center", va="center", fontsize=8, color="white" if count > matrix.max() / 3 else "black")
    ax.set_xticks(range(len(names)), names, rotation=60, ha="right", fontsize=8)
    ax.set_yticks(range(len(names)), names, fontsize=8)
    ax.set(xlabel="predicted", ylabel="gold", title="Which labels the model gives to which gold labels (turns)")
    return _save(fig, path)


def tone_scatter(evaluation: Evaluation, path: Path) -> Path:
    known = evaluation.gold_tone >= 0
    gold = np.array([unit_to_tone(v) for v in evaluation.gold_tone[known]])
    predicted = np.array([unit_to_tone(v) for v in evaluation.predictions.tone[known]])
    jitter = np.random.default_rng(0).uniform(-0.15, 0.15, len(gold))
    fig, ax = plt.subplots(figsize=(6, 5))
    ax.scatter(gold + jitter, predicted, s=10, alpha=0.5)
    ax.plot([1, 5], [1, 5], color="#999", ls="--")
    tone = evaluation.metrics["tone"]
    ax.set(xlabel="gold tone (1 hostile … 5 warm)", ylabel="predicted tone", xlim=(0.5, 5.5), ylim=(0.5, 5.5),
           title=f"Tone: MAE {_fmt(tone['mae'], 2)}, Spearman {_fmt(tone['spearman'], 2)}")
    return _save(fig, path)


def _turn_cell(dialogues, feature, context_turns: int = 2) -> str:
    dialogue = dialogues[feature.dialogue]
    start = max(0, feature.turn - context_turns)
    context = "<br>".join(
        f"{ROLE_ZH[t.role]}: {html.escape(t.text)}" for t in dialogue.turns[start : feature.turn]
    )
    text = html.escape(dialogue.turns[feature.turn].text)
    return f"<div class=ctx>{context}</div><div>客服: <b>{text}</b></div>"


def _errors(evaluation: Evaluation, false_positive: bool) -> str:
    probs = evaluation.predictions.probs
    predicted = probs >= evaluation.thresholds
    wrong = predicted & (evaluation.gold == 0) if false_positive else ~predicted & (evaluation.gold == 1)
    rows, labels = np.nonzero(wrong)
    order = np.argsort(-probs[rows, labels] if false_positive else probs[rows, labels])[:WORST]
    lines = []
    for i in order:
        row, k = rows[i], labels[i]
        feature = evaluation.predictions.features[row]
        gold = [l for j, l in enumerate(LABEL_IDS) if evaluation.gold[row, j]] or ["ok"]
        lines.append(
            f"<tr><td>{html.escape(evaluation.dialogues[feature.dialogue].id)}#{feature.turn}</td>"
            f"<td>{LABEL_IDS[k]} {LABEL_BY_ID[LABEL_IDS[k]].zh}</td><td class=num>{probs[row, k]:.2f}</td>"
            f"<td>{', '.join(gold)}</td><td>{_turn_cell(evaluation.dialogues, feature)}</td></tr>"
        )
    head = "<tr><th>dialogue#turn</th><th>label</th><th>prob</th><th>gold</th><th>context and turn</th></tr>"
    return f"<table>{head}{''.join(lines)}</table>" if lines else "<p>None.</p>"


def _img(path: Path) -> str:
    data = base64.b64encode(path.read_bytes()).decode()
    return f'<img src="data:image/png;base64,{data}" alt="{path.stem}">'


def _page(title: str, body: str) -> str:
    return f"<!doctype html><html lang=zh><head><meta charset=utf-8><title>{html.escape(title)}</title><style>{STYLE}</style></head><body><h1>{html.escape(title)}</h1>{body}</body></html>"


def write_report(evaluation: Evaluation, out: Path, title: str) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    metrics = evaluation.metrics
    figures = [
        pr_curves(evaluation, out / "pr_curves.png"),
        reliability(evaluation, out / "reliability.png"),
        confusion(evaluation, out / "confusion.png"),
        tone_scatter(evaluation, out / "tone.png"),
    ]
    summary = "".join(
        f"<tr><td>{name}</td><td class=num>{_fmt(m['macro_f1'])}</td><td class=num>{_fmt(m['micro_f1'])}</td><td class=num>{_fmt(m['exact_match'])}</td></tr>"
        for name, m in (("model, fitted thresholds", metrics), ("model at 0.5", metrics["at_0.5"]), ("keyword baseline", metrics["baseline"]),
                        ("n-gram baseline (the bar)", metrics.get("ngram_baseline")))
        if m
    )
    ngram = metrics.get("ngram_baseline")
    per_label = "".join(
        f"<tr><td>{label}</td><td>{LABEL_BY_ID[label].zh}</td>"
        + "".join(f"<td class=num>{_fmt(row[key])}</td>" for key in ("precision", "recall", "f1"))
        + f"<td class=num>{row['support']}</td>"
        + "".join(f"<td class=num>{_fmt(row[key])}</td>" for key in ("pr_auc", "roc_auc", "ece", "brier", "threshold"))
        + f"<td class=num>{_fmt(metrics['at_0.5']['labels'][label]['f1'])}</td><td class=num>{_fmt(metrics['baseline']['labels'][label]['f1'])}</td>"
        + f"<td class=num>{_fmt(ngram['labels'][label]['f1']) if ngram else '—'}</td></tr>"
        for label, row in metrics["labels"].items()
    )
    tone = metrics["tone"]
    body = f"""
<p>{metrics['turns']} labeled agent turns in {metrics['dialogues']} dialogues. ECE (all labels pooled): {_fmt(metrics['ece'])}.
Tone: MAE {_fmt(tone['mae'], 2)} points on the 1–5 scale, Spearman {_fmt(tone['spearman'])}.
Dialogue checks: not measured yet (they arrive with dialogue scoring).</p>
<h2>Summary</h2><table><tr><th></th><th>macro F1</th><th>micro F1</th><th>exact set match</th></tr>{summary}</table>
<h2>Per label</h2><table><tr><th>label</th><th>中文</th><th>precision</th><th>recall</th><th>F1</th><th>support</th><th>PR-AUC</th><th>ROC-AUC</th><th>ECE</th><th>Brier</th><th>threshold</th><th>F1 at 0.5</th><th>keyword F1</th><th>n-gram F1</th></tr>{per_label}</table>
<h2>Figures</h2>{''.join(_img(f) for f in figures)}
<h2>The {WORST} most confident false positives</h2>{_errors(evaluation, True)}
<h2>The {WORST} most missed false negatives</h2>{_errors(evaluation, False)}
"""
    (out / "metrics.json").write_text(json.dumps(metrics, ensure_ascii=False, indent=2), encoding="utf-8")
    path = out / "report.html"
    path.write_text(_page(title, body), encoding="utf-8")
    return path


def write_false_alarm_report(alarms: FalseAlarms, out: Path, title: str, per_label_examples: int = 20) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    rates = alarms.metrics["per_label"]
    fig, ax = plt.subplots(figsize=(8, 4.5))
    ax.barh(list(rates), [100 * r for r in rates.values()])
    ax.invert_yaxis()
    ax.set(xlabel="% of real agent turns flagged", title=f"False-alarm candidates on {alarms.metrics['turns']} real agent turns")
    figure = _save(fig, out / "false_alarms.png")
    probs = alarms.predictions.probs
    sections = []
    for k, label in enumerate(LABEL_IDS):
        rows = np.flatnonzero(alarms.flagged[:, k])
        rows = rows[np.argsort(-probs[rows, k])][:per_label_examples]
        items = "".join(
            f"<tr><td class=num>{probs[r, k]:.2f}</td><td>{_turn_cell(alarms.dialogues, alarms.predictions.features[r])}</td></tr>"
            for r in rows
        )
        sections.append(
            f"<h3>{label} {LABEL_BY_ID[label].zh}: {100 * rates[label]:.2f}% flagged</h3>"
            + (f"<table><tr><th>prob</th><th>context and turn</th></tr>{items}</table>" if items else "<p>None.</p>")
        )
    body = (
        f"<p>{alarms.metrics['turns']} agent turns in {alarms.metrics['dialogues']} real dialogues, assumed mostly clean; "
        f"{100 * alarms.metrics['flagged_rate']:.2f}% have at least one label over threshold, "
        f"{100 * alarms.metrics['flagged_rate_without_perfunctory']:.2f}% one other than perfunctory 敷衍. The most confident flagged turns are listed "
        "for a person to audit: some are real violations, the rest are false alarms.</p>"
        + _img(figure) + "".join(sections)
    )
    (out / "metrics.json").write_text(json.dumps(alarms.metrics, ensure_ascii=False, indent=2), encoding="utf-8")
    path = out / "report.html"
    path.write_text(_page(title, body), encoding="utf-8")
    return path
