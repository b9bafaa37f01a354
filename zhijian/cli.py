"""The core's commands (`zhijian score`, `zhijian export`) and what every command shares: the consoles,
errors that end a command with a message, logging, and loading a model folder.

`training/cli.py` and `serving/cli.py` add their own commands on top; `zhijian_cli.py` composes the
three into the `zhijian` command. This module imports neither training nor serving.
"""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console

from zhijian.config import EVIDENCE_METHODS, ConfigError
from zhijian.taxonomy import CHECK_BY_ID, LABEL_BY_ID, ROLE_ZH, TONE_NAMES, unit_to_tone

app = typer.Typer()
console = Console()
errors = Console(stderr=True, soft_wrap=True)

DEFAULT_MODEL = Path("runs/quickstart/model")
ModelOption = Annotated[Path, typer.Option("--model", "-m", help="A trained model folder.")]


def setup_logging() -> None:
    from rich.logging import RichHandler

    logging.basicConfig(level=logging.INFO, format="%(message)s", handlers=[RichHandler(console=errors, show_path=False)])
    for noisy in ("httpx", "urllib3", "filelock"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def fail(message: str, code: int = 2) -> None:
    errors.print(f"[bold red]error:[/] {message}", highlight=False)
    raise typer.Exit(code)


def load_scorer(model: Path, device: str | None = None):
    from zhijian.model import ModelFolderError
    from zhijian.scorer import Scorer

    try:
        return Scorer.load(model, device)
    except (ModelFolderError, FileNotFoundError, RuntimeError, ConfigError) as error:  # ONNX not exported, no GPU, ...
        fail(str(error))


def load_inspector(model: Path, template: Path | None, evidence: str = "clause", device: str | None = None):
    from zhijian.inspector import Inspector
    from zhijian.template import load_template

    try:
        rules = load_template(template)
    except ConfigError as error:
        fail(str(error))
    scorer = load_scorer(model, device)
    return Inspector(scorer, rules, scorer.folder.version, evidence)


@app.command()
def export(
    model: ModelOption = DEFAULT_MODEL,
    format_: Annotated[str, typer.Option("--format", help="Only 'onnx' for now.")] = "onnx",
    quantize: Annotated[Optional[str], typer.Option(help="'int8': also a dynamic int8 model (serving.backend: onnx-int8).")] = None,
    check: Annotated[
        Optional[list[Path]],
        typer.Option(help="Transcripts to measure int8 against fp32 on (default: the model's data.valid files that exist)."),
    ] = None,
) -> None:
    """Write an ONNX Runtime model into the model folder (onnx/model.onnx; onnx/model.int8.onnx with --quantize int8).

    With --quantize int8 the quantized model is checked against fp32 on the first 500 agent turns of the
    check transcripts; `serving.backend: auto` serves it only when no probability moved by more than 0.02.
    """
    from zhijian.model import ModelFolderError
    from zhijian.transcripts import TranscriptError

    if format_ != "onnx":
        fail(f"--format must be 'onnx', not {format_!r}")
    try:
        from zhijian.backends import INT8_AUTO_MAX_PROB_DIFF, auto_backend, read_manifest
        from zhijian.export import check_transcripts, default_check_files, export_onnx

        files = check or (default_check_files(model) if quantize == "int8" else [])
        for path in files:
            if not Path(path).is_file():
                fail(f"--check {path}: no such file")
        written = export_onnx(model, quantize, check=check_transcripts(files) if files else None)
    except (ModelFolderError, ValueError, TranscriptError) as error:
        fail(str(error))
    except ImportError as error:
        fail(f"{error}; install the onnx extra: pip install -e '.[onnx]'")
    for path in written:
        console.print(f"wrote {path}")
    result = read_manifest(model).get("int8_check")
    if result and result["turns"]:
        within = "within" if result["max_prob_diff"] <= INT8_AUTO_MAX_PROB_DIFF else "beyond"
        console.print(
            f"int8 vs fp32 on {result['turns']} agent turns: largest probability change {result['max_prob_diff']:.4f} "
            f"({within} {INT8_AUTO_MAX_PROB_DIFF}), label sets unchanged for {result['label_sets_unchanged']:.1%} of turns"
        )
    elif quantize == "int8":
        console.print("int8 not checked (no --check transcripts and no data.valid file with agent turns)")
    console.print(f"`serving.backend: auto` (the default) now serves {auto_backend(model, 'cpu')} on CPU.")


def _print_readable(result) -> None:
    """The transcript with the violating spans highlighted, then the checks, the deductions and the score."""
    from rich.table import Table
    from rich.text import Text

    verdict = "[green]PASS[/]" if result.passed else "[red]FAIL[/]" + (" (fatal item)" if result.fatal else "")
    tone = f"   mean tone {unit_to_tone(result.tone):.1f}/5" if result.tone is not None else ""
    console.print(f"[bold]{result.id}[/]   score [bold]{result.score:g}[/]/100 {verdict}{tone}   [dim]{result.versions.model} · {result.versions.template}[/]")
    for turn in result.turns:
        text = Text(f"  [{turn.index}] {ROLE_ZH[turn.role]}: ")
        offset = len(text)
        text.append(turn.text)
        for start, end in (turn.evidence or {}).values():
            text.stylize("bold red underline", offset + start, offset + end)
        console.print(text, highlight=False)
        if turn.role != "agent":
            continue
        tone_points = unit_to_tone(turn.tone)
        console.print(f"      tone {tone_points:.1f}/5 ({TONE_NAMES[round(tone_points)]})", style="dim")
        for hit in turn.labels:
            label = LABEL_BY_ID[hit.label]
            span = (turn.evidence or {}).get(hit.label)
            where = f" «{turn.text[span[0]:span[1]]}»" if span else ""
            console.print(f"      [red]✗ {label.id}[/] {label.zh} ({label.severity.value}) p={hit.prob:.2f}{where}", highlight=False)
    if result.quality:
        names = {"A": "task accomplished", "S": "customer satisfied", "E": "effective"}
        console.print("  quality (-2..2): " + ", ".join(f"{names[k]} {q.expected:+.2f}" for k, q in result.quality.items()), highlight=False)
    unchecked = [c.check for c in result.checks if c.status == "not_checked"]
    if unchecked:
        console.print(f"  [dim]not checked: {', '.join(unchecked)}[/]")
    if result.deductions:
        table = Table(box=None, padding=(0, 2), header_style="bold")
        for column in ("turn", "source", "item", "points", "evidence"):
            table.add_column(column, justify="right" if column in ("turn", "points") else "left")
        for deduction in result.deductions:
            item = LABEL_BY_ID.get(deduction.label) or CHECK_BY_ID.get(deduction.label)
            evidence = ""
            if deduction.turn is not None and deduction.span:
                evidence = f"«{result.turns[deduction.turn].text[deduction.span[0]:deduction.span[1]]}»"
            elif deduction.source == "check":
                evidence = next((c.detail for c in result.checks if c.check == deduction.label and c.turn == deduction.turn), None) or ""
            points = f"-{deduction.points:g}" + (" (capped)" if deduction.capped else "") + (" [red]fatal[/]" if deduction.fatal else "")
            turn = "" if deduction.turn is None else str(deduction.turn)
            table.add_row(turn, deduction.source, f"{deduction.label} {item.zh if item else ''}", points, evidence)
        Console(width=max(console.width, 120)).print(table, highlight=False)  # rows stay whole when piped
    console.print()


@app.command()
def score(
    file: Annotated[Path, typer.Argument(help="Transcripts: .jsonl, .json, .csv or a 客服:/买家: .txt file.")],
    model: ModelOption = DEFAULT_MODEL,
    template: Annotated[Optional[Path], typer.Option(help="Scoring template with checks and shop rules (default: configs/scoring/default.yaml).")] = None,
    evidence: Annotated[str, typer.Option(help="Evidence spans: 'clause' (occlusion over clauses), 'window' (over character windows) or 'none'.")] = "clause",
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object per dialogue, one per line.")] = False,
    output: Annotated[Optional[Path], typer.Option("--output", "-o", help="Write JSON Lines here, streaming, with a progress bar.")] = None,
    chunk: Annotated[int, typer.Option(help="Dialogues scored per step when streaming.")] = 64,
    resume: Annotated[bool, typer.Option(help="With --output: keep the dialogues already written there (a run that was killed) and score the rest.")] = False,
) -> None:
    """Inspect dialogues: labels, evidence spans and tone per agent turn; checks, deductions and a 0–100 score per dialogue."""
    from zhijian.transcripts import ReadProblem, TranscriptError, iter_transcripts

    if not file.is_file():
        fail(f"{file}: no such file")
    if evidence not in EVIDENCE_METHODS:
        fail(f"--evidence must be one of {', '.join(EVIDENCE_METHODS)}, not {evidence!r}")
    inspector = load_inspector(model, template, evidence)
    problems: list[ReadProblem] = []
    try:
        if output is None:
            for result in inspector.inspect(list(iter_transcripts(file))):
                if as_json:
                    print(json.dumps(result.to_json(), ensure_ascii=False))
                else:
                    _print_readable(result)
            return
        _stream(inspector, file, output, chunk, problems, resume)
    except TranscriptError as error:
        fail(str(error))
    if problems:
        for problem in problems[:20]:
            errors.print(f"skipped {problem.error}", highlight=False)
        fail(f"{len(problems)} dialogue(s) could not be read and were skipped; the rest are in {output}", code=1)


def _finished_ids(output: Path) -> set[str]:
    """Ids of the complete lines of an earlier, killed run; a torn last line is cut off."""
    done, keep = set(), 0
    with output.open("rb") as handle:
        for line in handle:
            try:
                done.add(json.loads(line)["id"])
            except (ValueError, KeyError, TypeError):
                break  # the line a kill tore in half, and nothing after it
            if not line.endswith(b"\n"):
                done.discard(json.loads(line)["id"])
                break
            keep += len(line)
    with output.open("r+b") as handle:
        handle.truncate(keep)
    return done


def _stream(inspector, file: Path, output: Path, chunk: int, problems, resume: bool = False) -> None:
    from tqdm import tqdm

    from zhijian.transcripts import iter_transcripts

    output.parent.mkdir(parents=True, exist_ok=True)
    done = _finished_ids(output) if resume and output.is_file() else set()
    if done:
        errors.print(f"resuming: {len(done)} dialogue(s) already in {output} are kept, not scored again")
    # Each chunk is written and flushed whole, so a kill loses at most the chunk being scored.
    with output.open("a" if done else "w", encoding="utf-8") as sink, tqdm(unit=" dialogues", file=sys.stderr) as bar:
        pending = []
        for dialogue in iter_transcripts(file, on_error=problems):
            if dialogue.id in done:
                continue
            pending.append(dialogue)
            if len(pending) == chunk:
                _write(inspector.inspect(pending), sink, bar)
                pending = []
        if pending:
            _write(inspector.inspect(pending), sink, bar)


def _write(results, sink, bar) -> None:
    for result in results:
        sink.write(json.dumps(result.to_json(), ensure_ascii=False) + "\n")
    sink.flush()
    bar.update(len(results))
