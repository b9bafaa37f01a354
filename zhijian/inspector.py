"""Quality inspection of whole dialogues: the model's labels with evidence spans, the dialogue
checks and shop rules, and the scoring template's verdict, as one :class:`DialogueResult` each."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from zhijian.checks import FAILED, find_rule_hits, run_checks
from zhijian.evidence import locate
from zhijian.model import ModelFolder
from zhijian.result import Deduction, DialogueResult, LabelScore, QualityScore, TurnResult, Versions
from zhijian.scorer import Predictions, Scorer
from zhijian.stc3 import BINS, QUALITY
from zhijian.taxonomy import AGENT, LABEL_IDS
from zhijian.template import ScoringTemplate, assess, load_template
from zhijian.transcripts import Transcript


QUALITY_RATINGS = np.array(BINS, dtype=float)


class Inspector:
    def __init__(self, scorer: Scorer, template: ScoringTemplate, model: str = "unknown", evidence: str = "clause"):
        self.scorer = scorer
        self.template = template
        self.versions = Versions(model=model, template=template.version_tag)
        self.evidence = evidence

    @classmethod
    def load(
        cls, model_dir: ModelFolder | str | Path, template: str | Path | None = None, device: str | None = None,
        evidence: str = "clause", backend: str | None = None,
    ) -> Inspector:
        folder = ModelFolder.of(model_dir)  # opened once: the scorer and the version read the same folder
        return cls(Scorer.load(folder, device, backend), load_template(template), folder.version, evidence)

    def with_template(self, template: ScoringTemplate) -> Inspector:
        """The same loaded model under another template (a shop's rules changed; no reload of weights)."""
        inspector = Inspector(self.scorer, template, self.versions.model, self.evidence)
        return inspector

    def inspect(self, dialogues: Sequence[Transcript]) -> list[DialogueResult]:
        predictions = self.scorer.predict(dialogues)
        flagged = {row: np.flatnonzero(probs >= self.scorer.thresholds).tolist() for row, probs in enumerate(predictions.probs)}
        spans = locate(self.scorer, dialogues, predictions, flagged, self.evidence)
        rows = {(f.dialogue, f.turn): row for row, f in enumerate(predictions.features)}
        quality = self.scorer.quality(dialogues) if self.scorer.has_quality else None
        return [
            self._dialogue_result(d, dialogue, predictions, rows, flagged, spans, None if quality is None else quality[d])
            for d, dialogue in enumerate(dialogues)
        ]

    def _dialogue_result(self, d, dialogue, predictions: Predictions, rows, flagged, spans, quality) -> DialogueResult:
        turns, candidates, tones = [], [], []
        for t, turn in enumerate(dialogue.turns):
            result = TurnResult(index=t, role=turn.role, text=turn.text)
            if turn.role == AGENT:
                row = rows[(d, t)]
                probs = predictions.probs[row]
                labels = sorted(flagged[row], key=lambda k: -probs[k])
                evidence = spans.get(row, {})
                result.labels = [LabelScore(label=LABEL_IDS[k], prob=round(float(probs[k]), 4)) for k in labels]
                result.tone = round(float(predictions.tone[row]), 4)
                result.evidence = {LABEL_IDS[k]: evidence[k] for k in labels if k in evidence}
                tones.append(result.tone)
                candidates += [
                    Deduction(source="model", label=LABEL_IDS[k], turn=t, span=evidence.get(k), points=self.template.label_points_for(LABEL_IDS[k]))
                    for k in labels
                ]
            turns.append(result)
        checks = run_checks(dialogue, self.template.checks)
        candidates += [
            Deduction(source="check", label=c.check, turn=c.turn, points=self.template.check_points.get(c.check, 0.0))
            for c in checks
            if c.status == FAILED
        ]
        by_model = {(c.label, c.turn) for c in candidates if c.source == "model"}
        candidates += [
            Deduction(source="rule", label=hit.rule.label or hit.rule.id, turn=hit.turn, span=hit.span, points=self.template.rule_points_for(hit.rule))
            for hit in find_rule_hits(dialogue, self.template)
            if (hit.rule.label, hit.turn) not in by_model  # the model already deducted for this label here
        ]
        deductions, score, passed, fatal = assess(self.template, candidates)
        return DialogueResult(
            id=dialogue.id, turns=turns, score=score, passed=passed, fatal=fatal,
            tone=round(float(np.mean(tones)), 4) if tones else None,
            checks=checks, deductions=deductions, versions=self.versions, meta=dialogue.meta or None,
            quality=None if quality is None else {
                scale: QualityScore(distribution=[round(float(p), 4) for p in quality[k]], expected=round(float(quality[k] @ QUALITY_RATINGS), 3))
                for k, scale in enumerate(QUALITY)
            },
        )
