"""The training side of the `zhijian` command: train, pretrain, evaluate, calibrate, data build, data check-leaks."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Optional

import numpy as np
import typer

from zhijian.cli import DEFAULT_MODEL, ModelOption, console, errors, fail, load_scorer, setup_logging
from zhijian.config import ConfigError, load_config
from zhijian.taxonomy import CHECK_BY_ID, LABEL_BY_ID

app = typer.Typer()

ConfigOption = Annotated[Path, typer.Option("--config", "-c", help="YAML config in configs/ (for pretrain, one with a `pretrain` section: configs/pretrain-offline.yaml).")]
SetOption = Annotated[Optional[list[str]], typer.Option("--set", help="Override a key: section.key=value (repeatable).")]
ResumeOption = Annotated[bool, typer.Option(help="Continue from the last complete checkpoint.")]


def _run_config(run, config: Path, set_: list[str] | None, resume: bool) -> Path:
    """Load the config with its overrides and run a training loop on it; every expected failure is one line."""
    from zhijian.model import HubUnreachable
    from zhijian.transcripts import TranscriptError

    setup_logging()
    try:
        return run(load_config(config, set_ or []), resume=resume)
    except (ConfigError, TranscriptError, HubUnreachable, ValueError, OSError) as error:
        fail(str(error))


@app.command()
def train(config: ConfigOption, set_: SetOption = None, resume: ResumeOption = False) -> None:
    """Train a model from a config; the model folder lands in <training.output_dir>/model."""
    from training.train import train as run_training

    console.print(f"Model saved to [bold]{_run_config(run_training, config, set_, resume)}[/]")


@app.command()
def pretrain(config: ConfigOption, set_: SetOption = None, resume: ResumeOption = False) -> None:
    """Masked-LM pre-training on unlabeled chats; the encoder folder lands in <training.output_dir>/model."""
    from training.pretrain import pretrain as run_pretraining

    model_dir = _run_config(run_pretraining, config, set_, resume)
    console.print(f"Encoder saved to [bold]{model_dir}[/]; fine-tune it with `zhijian train` and `model.base: {model_dir}`")


@app.command()
def evaluate(
    model: ModelOption = DEFAULT_MODEL,
    data: Annotated[Optional[list[Path]], typer.Option("--data", "-d", help="Labeled transcripts: .jsonl, .json, .csv (repeatable).")] = None,
    unlabeled: Annotated[Optional[list[Path]], typer.Option(help="Real dialogues assumed mostly clean (.jsonl read leniently, or .csv): the false-alarm rate.")] = None,
    report: Annotated[Optional[Path], typer.Option(help="Write report.html, metrics.json and PNG figures here.")] = None,
    baseline: Annotated[Optional[Path], typer.Option(help="Keyword baseline config (default: configs/baseline/keywords.yaml).")] = None,
    stc3: Annotated[Optional[Path], typer.Option(help="STC-3 train_data_cn.json: NMD and RSNOD of the quality head on the fixed benchmark test split.")] = None,
    audit: Annotated[Optional[Path], typer.Option(help="With --unlabeled: write every flagged turn here (JSON Lines, context and probabilities) with a `verdict` to fill in.")] = None,
    ngram: Annotated[bool, typer.Option(help="Also train and score the character n-gram baseline on the model's data.train/data.valid (about 15 s).")] = True,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
) -> None:
    """Per-label P/R/F1, PR-AUC, ROC-AUC, calibration, tone, against a keyword baseline and a character n-gram
    baseline; or false alarms on real chats; or dialogue quality on STC-3."""
    from training.evaluate import evaluate_stc3
    from zhijian.stc3 import Stc3FormatError

    if sum(map(bool, (data, unlabeled, stc3))) != 1:
        fail("give one of --data (labeled transcripts), --unlabeled (real dialogues) or --stc3 (rated dialogues)")
    if audit and not unlabeled:
        fail("--audit lists the turns flagged in --unlabeled chats: give --unlabeled")
    scorer = load_scorer(model)
    if stc3:
        if not scorer.has_quality:
            fail(f"{model} has no dialogue-quality head: train one with `data.quality` (configs/quality.yaml)")
        try:
            _print_stc3(evaluate_stc3(scorer, stc3), as_json)
        except (Stc3FormatError, ValueError, OSError) as error:
            fail(str(error))
    elif unlabeled:
        _evaluate_false_alarms(scorer, model, unlabeled, report, audit, as_json)
    else:
        _evaluate_labeled(scorer, model, data, report, baseline, ngram, as_json)


def _evaluate_false_alarms(scorer, model: Path, unlabeled: list[Path], report: Path | None, audit: Path | None, as_json: bool) -> None:
    from training.evaluate import evaluate_unlabeled
    from training.report import write_false_alarm_report
    from zhijian.transcripts import TranscriptError

    try:
        alarms = evaluate_unlabeled(scorer, unlabeled)
    except (TranscriptError, ValueError) as error:
        fail(str(error))
    if report:
        errors.print(f"report: {write_false_alarm_report(alarms, report, f'False alarms of {model} on {_names(unlabeled)}')}")
    if audit:
        rows = alarms.audit_rows()
        audit.write_text("".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows), encoding="utf-8")
        errors.print(f"audit: {len(rows)} flagged turns in {audit}; mark each `verdict` true, false or borderline")
    _print_false_alarms(alarms.metrics, as_json)


def _evaluate_labeled(scorer, model: Path, data: list[Path], report: Path | None, baseline: Path | None, ngram: bool, as_json: bool) -> None:
    from training.baseline import KeywordBaseline, NgramBaseline
    from training.evaluate import evaluate as run_evaluation
    from training.report import write_report
    from zhijian.transcripts import TranscriptError

    try:
        keywords = KeywordBaseline.load(baseline) if baseline else KeywordBaseline.load()
        bar = None
        if ngram:
            missing = [str(p) for p in scorer.config.data.train if not Path(p).is_file()]
            if missing:
                errors.print(f"n-gram baseline skipped: the model's data.train is not here ({', '.join(missing)}); --no-ngram silences this")
            else:
                bar = NgramBaseline.from_config(scorer.config)
        evaluation = run_evaluation(scorer, data, keywords, bar)
    except (TranscriptError, ValueError) as error:
        fail(str(error))
    if report:
        errors.print(f"report: {write_report(evaluation, report, f'{model} on {_names(data)}')}")
    if as_json:
        print(json.dumps(evaluation.metrics, ensure_ascii=False))
    else:
        _print_evaluation(evaluation.metrics, f"{model} on {_names(data)}")


def _names(files: list[Path]) -> str:
    return ", ".join(map(str, files))


def _print_evaluation(result: dict, title: str) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"{title} ({result['turns']} agent turns)")
    columns = ("label", "中文", "precision", "recall", "F1", "support", "PR-AUC", "ECE", "threshold", "F1@0.5", "keywords F1", "n-gram F1")
    for column in columns:
        table.add_column(column, justify="left" if column in ("label", "中文") else "right")
    for label, row in result["labels"].items():
        table.add_row(
            label, LABEL_BY_ID[label].zh,
            *(f"{row[key]:.3f}" if row[key] is not None else "—" for key in ("precision", "recall", "f1")),
            str(row["support"]), f"{row['pr_auc']:.3f}" if row["pr_auc"] is not None else "—", f"{row['ece']:.3f}",
            f"{row['threshold']:.2f}", f"{result['at_0.5']['labels'][label]['f1']:.3f}", f"{result['baseline']['labels'][label]['f1']:.3f}",
            f"{result['ngram_baseline']['labels'][label]['f1']:.3f}" if result["ngram_baseline"] else "—",
        )
    wide = Console(width=max(console.width, 140))  # the table stays whole when piped
    wide.print(table)
    console.print(
        f"macro F1 {result['macro_f1']:.3f} (at 0.5: {result['at_0.5']['macro_f1']:.3f}; keyword baseline: {result['baseline']['macro_f1']:.3f})   "
        f"micro F1 {result['micro_f1']:.3f}   exact set match {result['exact_match']:.3f}   ECE {result['ece']:.3f}"
    )
    if result["ngram_baseline"]:
        bar = result["ngram_baseline"]
        console.print(
            f"n-gram baseline (the bar): macro F1 {bar['macro_f1']:.3f}   exact set match {bar['exact_match']:.3f}   "
            f"model − n-gram: {result['macro_f1'] - bar['macro_f1']:+.3f} macro F1"
        )
    tone = result["tone"]
    if tone["mae"] is not None:
        console.print(f"tone MAE {tone['mae']:.2f} points (1–5)   Spearman {tone['spearman'] or float('nan'):.3f}")
    if result["dialogue_checks"]:
        checks = Table(title="dialogue checks against the check gold (meta.checks)")
        for column in ("check", "中文", "precision", "recall", "F1", "support", "dialogues", "not checked"):
            checks.add_column(column, justify="left" if column in ("check", "中文") else "right")
        for check, row in result["dialogue_checks"].items():
            checks.add_row(check, CHECK_BY_ID[check].zh, *(f"{row[k]:.3f}" for k in ("precision", "recall", "f1")),
                           *(str(row[k]) for k in ("support", "dialogues", "not_checked")))
        wide.print(checks)


def _print_stc3(result: dict, as_json: bool) -> None:
    if as_json:
        print(json.dumps(result, ensure_ascii=False))
        return
    from rich.table import Table

    table = Table(title=f"STC-3 benchmark test split ({result['dialogues']} dialogues; lower is better)")
    for column in ("predictor", "NMD A", "NMD S", "NMD E", "RSNOD A", "RSNOD S", "RSNOD E"):
        table.add_column(column, justify="left" if column == "predictor" else "right")
    for name in ("model", "prior", "uniform"):
        scores = result[name]
        table.add_row(name, *(f"{scores[s][m]:.4f}" for m in ("nmd", "rsnod") for s in ("A", "S", "E")))
    console.print(table)


def _print_false_alarms(metrics: dict, as_json: bool) -> None:
    if as_json:
        print(json.dumps(metrics, ensure_ascii=False))
        return
    console.print(
        f"{metrics['turns']} real agent turns: {metrics['flagged_rate']:.2%} flagged with at least one label, "
        f"{metrics['flagged_rate_without_perfunctory']:.2%} with one other than perfunctory 敷衍"
    )
    for label, rate in metrics["per_label"].items():
        console.print(f"  {label:<20} {LABEL_BY_ID[label].zh:<8} {rate:>7.2%}  ({metrics['per_label_count'][label]} turns)", highlight=False)


@app.command()
def calibrate(
    data: Annotated[Optional[list[Path]], typer.Option("--data", "-d", help="Labeled validation transcripts (never the evaluation set).")] = None,
    model: ModelOption = DEFAULT_MODEL,
    mode: Annotated[str, typer.Option(help="With --data: 'f1' (max F1) or 'precision' (lowest reaching --target-precision).")] = "f1",
    target_precision: Annotated[float, typer.Option(help="With --mode precision, or with --unlabeled and --prevalence.")] = 0.8,
    scaling: Annotated[str, typer.Option(help="Probability scaling per label: 'platt' (temperature and bias), 'temperature', or 'none'.")] = "platt",
    unlabeled: Annotated[
        Optional[list[Path]], typer.Option(help="Your shop's own chats, unlabeled (.jsonl, .csv): raise thresholds for --alert-rate or --target-precision.")
    ] = None,
    alert_rate: Annotated[Optional[float], typer.Option(help="With --unlabeled: at most this share of your agent turns flagged (e.g. 0.005).")] = None,
    prevalence: Annotated[
        Optional[float], typer.Option(help="With --unlabeled: how often a turn of yours truly carries a given label (an audit's estimate, e.g. 0.001).")
    ] = None,
) -> None:
    """Fit per-label thresholds (and temperatures) on labeled validation data; or, with --unlabeled, raise them
    to your shop's traffic: a target alert rate, or a target precision estimated from your chats. Written into the model folder."""
    if unlabeled:
        _calibrate_to_shop(model, unlabeled, alert_rate, target_precision, prevalence, data)
        return
    if not data:
        fail("give --data (labeled validation transcripts), or --unlabeled with --alert-rate or --prevalence")
    from training.data import gold_arrays
    from training.metrics import expected_calibration_error, fit_scaling, fit_thresholds, label_metrics
    from zhijian.scorer import Scorer
    from zhijian.taxonomy import LABEL_IDS
    from zhijian.transcripts import TranscriptError, read_transcripts

    if mode not in ("f1", "precision"):
        fail(f"--mode must be 'f1' or 'precision', not {mode!r}")
    if scaling not in ("platt", "temperature", "none"):
        fail(f"--scaling must be 'platt', 'temperature' or 'none', not {scaling!r}")
    scorer = load_scorer(model)
    try:
        dialogues = read_transcripts(data)
    except TranscriptError as error:
        fail(str(error))
    predictions = scorer.predict(dialogues)
    gold, _, labeled = gold_arrays(dialogues, predictions.features)
    if not labeled.any():
        fail("no agent turn has gold `labels` to calibrate on")
    gold, logits = gold[labeled], predictions.logits[labeled]
    config = scorer.config.model_copy(deep=True)
    temperatures, biases = fit_scaling(gold, logits, bias=scaling == "platt") if scaling != "none" else ({}, {})
    config.calibration = config.calibration.model_copy(update={"temperature": temperatures, "bias": biases})
    before = scorer.calibrated(logits)
    after = Scorer(scorer.model, scorer.tokenizer, config, scorer.device).calibrated(logits)
    config.thresholds.per_label = fit_thresholds(gold, after, mode, target_precision, config.thresholds.default)
    config.save(model)
    fitted = np.array([config.thresholds.for_label(label) for label in LABEL_IDS])
    console.print(
        f"{int(labeled.sum())} turns: ECE {expected_calibration_error(gold, before):.4f} -> {expected_calibration_error(gold, after):.4f}; "
        f"macro F1 at 0.5 {label_metrics(gold, after >= 0.5)['macro_f1']:.3f}, at fitted thresholds {label_metrics(gold, after >= fitted)['macro_f1']:.3f}"
    )
    console.print(f"written to {Path(model) / 'zhijian.yaml'}")


def _calibrate_to_shop(
    model: Path, unlabeled: list[Path], alert_rate: float | None, target_precision: float, prevalence: float | None, data: list[Path] | None
) -> None:
    """Thresholds raised (never lowered) to the shop's own chats; the alert rates before and after are printed per label."""
    from training.data import gold_arrays
    from training.metrics import thresholds_for_alert_rate, thresholds_for_precision
    from zhijian.taxonomy import LABEL_IDS
    from zhijian.transcripts import TranscriptError, read_real_dialogues, read_transcripts

    if (alert_rate is None) == (prevalence is None):
        fail("with --unlabeled give one of --alert-rate (share of turns flagged) or --prevalence (for --target-precision)")
    for name, value in (("--alert-rate", alert_rate), ("--prevalence", prevalence), ("--target-precision", target_precision)):
        if value is not None and not 0 < value < 1:
            fail(f"{name} must be between 0 and 1 (exclusive), not {value}")
    scorer = load_scorer(model)
    try:
        shop = scorer.predict(read_real_dialogues(unlabeled)).probs
        if prevalence is not None:
            labeled_files = data or [p for p in scorer.config.data.valid if Path(p).is_file()]
            if not labeled_files:
                fail("--target-precision needs recall measured on labeled turns: give --data (the model's data.valid is not here)")
            dialogues = read_transcripts(labeled_files)
    except TranscriptError as error:
        fail(str(error))
    if not len(shop):
        fail(f"{', '.join(map(str, unlabeled))}: no agent turns")
    current = scorer.thresholds
    if alert_rate is not None:
        fitted = thresholds_for_alert_rate(shop, current, alert_rate)
        goal = f"at most {alert_rate:.2%} of your turns flagged"
    else:
        predictions = scorer.predict(dialogues)
        gold, _, labeled = gold_arrays(dialogues, predictions.features)
        fitted = thresholds_for_precision(shop, gold[labeled], predictions.probs[labeled], current, target_precision, prevalence)
        goal = f"estimated precision {target_precision:.0%} at a prevalence of {prevalence:.2%} per label"
    config = scorer.config.model_copy(deep=True)
    config.thresholds.per_label = {label: float(fitted[k]) for k, label in enumerate(LABEL_IDS)}
    config.save(model)
    console.print(f"{len(shop)} agent turns of your chats, {goal}: flagged {(shop >= current).any(axis=1).mean():.2%} -> {(shop >= fitted).any(axis=1).mean():.2%}")
    for k, label in enumerate(LABEL_IDS):
        console.print(
            f"  {label:<20} {LABEL_BY_ID[label].zh:<8} threshold {current[k]:.3f} -> {fitted[k]:.4f}   "
            f"flagged {(shop[:, k] >= current[k]).mean():.2%} -> {(shop[:, k] >= fitted[k]).mean():.2%}",
            highlight=False,
        )
    console.print(f"written to {Path(model) / 'zhijian.yaml'}")


data_app = typer.Typer(no_args_is_help=True, help="Build and inspect the training corpus.")
app.add_typer(data_app, name="data")
HELD_OUT = Path("../shared/eval/dev.jsonl")
REAL_CHATS = Path("../shared/data")


@data_app.command("build")
def data_build(
    out: Annotated[Path, typer.Option(help="Folder for train.jsonl, valid.jsonl and stats.json.")] = Path("data/corpus"),
    seed: Annotated[int, typer.Option(help="Same seed, same corpus.")] = 0,
    recipe: Annotated[Path, typer.Option(help="The recipe folder (YAML banks).")] = Path("data/recipe"),
    held_out: Annotated[Path, typer.Option(help="Evaluation transcripts no agent turn may copy (checked when present).")] = HELD_OUT,
    scale: Annotated[float, typer.Option(help="Multiply every count of the build plan (e.g. 0.05 for a quick trial).")] = 1.0,
    real_chats: Annotated[Path, typer.Option(help="Real chats (csds/, stc3/) no turn of 8+ characters may copy (checked when present).")] = REAL_CHATS,
) -> None:
    """Compose the labeled corpus from the recipe: deterministic for a seed, guarded against leakage."""
    import time

    from training.corpus import LeakageError, RecipeError, build_corpus

    start = time.perf_counter()
    try:
        stats = build_corpus(recipe, out, seed, held_out, scale, real_chats)
    except (RecipeError, LeakageError) as error:
        fail(str(error))
    total = stats["all"]
    console.print(
        f"{total['dialogues']} dialogues, {total['agent_turns']} agent turns "
        f"({total['clean_share']:.0%} clean, {total['two_label_share_of_violating']:.0%} of violating turns with two labels) "
        f"in {time.perf_counter() - start:.1f} s -> {out}"
    )
    console.print("positives: " + ", ".join(f"{k} {v}" for k, v in total["labels"].items()), highlight=False)
    if stats["leakage_guard"] is None:
        errors.print(f"note: {held_out} not found, the leakage guard did not run")
    if stats["real_chat_guard"] is None:
        errors.print(f"note: {real_chats} not found, the guard against copying real chats did not run")


@data_app.command("check-leaks")
def data_check_leaks(
    files: Annotated[list[Path], typer.Argument(help="Recipe YAML files to check.")],
    real_chats: Annotated[Path, typer.Option(help="Folder of the real chats (csds/, stc3/) no text may copy.")] = REAL_CHATS,
) -> None:
    """List every text of 8+ characters in recipe files that nearly copies a real CSDS or STC-3 turn (char 3-gram Jaccard >= 0.8)."""
    from training.corpus import LeakageGuard, RecipeError, recipe_texts

    guard = LeakageGuard.from_real_chats(real_chats)
    if guard is None:
        fail(f"{real_chats}: no CSDS or STC-3 chats there")
    found = 0
    for path in files:
        try:
            leaks = guard.leaks(recipe_texts(path))
        except RecipeError as error:
            fail(str(error))
        for score, text, match in leaks:
            console.print(f"{path}: {score:.2f}  {text}  ~  {match}", highlight=False)
        found += len(leaks)
    if found:
        fail(f"{found} text(s) nearly copy a real turn: reword them", code=1)
    console.print(f"no text of {guard.min_chars}+ characters within Jaccard {guard.threshold} of the {len(guard.texts)} real turns")
