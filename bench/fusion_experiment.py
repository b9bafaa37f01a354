"""An experiment of issue 16 (bench/results/experiments.json, e4): late fusion of an encoder trained alone
(no n-gram head) and a logistic regression on the same hashed character n-grams, their logits summed with
a weight; thresholds fitted on the corpus validation split. Run from the repository root:

    python bench/fusion_experiment.py runs/e4/model 4

It prints macro-F1/exact match per set for weights 0, 0.5, 1, 2 and for the n-gram model alone. Measured:
the sum is no better than the jointly trained n-gram head, so the shipped model trains them together.
"""
import sys, time, numpy as np, scipy.sparse as sp
from pathlib import Path as _Path
sys.path.insert(0, str(_Path(__file__).resolve().parents[1]))
from pathlib import Path
from sklearn.linear_model import LogisticRegression
from sklearn.multiclass import OneVsRestClassifier
from zhijian.scorer import Scorer
from zhijian.transcripts import read_transcripts
from zhijian.featurize import ngram_ids, normalize, to_simplified
from zhijian.taxonomy import LABEL_IDS
from training.data import gold_arrays
from training.metrics import label_metrics, tune_thresholds
from training.evaluate import exact_match
B = 262144
SETS = {'valid': 'data/corpus/valid.jsonl', 'dev': '../shared/eval/dev.jsonl', 'heldout': 'data/heldout/chats.jsonl', 'long': 'data/probes/long.jsonl', 'traditional': 'data/probes/traditional.jsonl'}
def feats(texts):
    rows, cols, vals = [], [], []
    for r, t in enumerate(texts):
        ids = ngram_ids(to_simplified(normalize(t)).lower(), B, (1, 2, 3))
        rows += [r] * len(ids); cols += ids; vals += [1 / np.sqrt(max(1, len(ids)))] * len(ids)
    return sp.csr_matrix((vals, (rows, cols)), shape=(len(texts), B))
scorer = Scorer.load(sys.argv[1], 'cpu', 'torch')
C = float(sys.argv[2]) if len(sys.argv) > 2 else 4.0
train = read_transcripts([Path('data/corpus/train.jsonl')])
tt = [(t.text, t.labels) for d in train for t in d.turns if t.role == 'agent' and t.labels is not None]
Y = np.array([[l in labels for l in LABEL_IDS] for _, labels in tt], dtype=int)
t0 = time.time()
lr = OneVsRestClassifier(LogisticRegression(C=C, class_weight='balanced', max_iter=2000), n_jobs=2).fit(feats([x for x, _ in tt]), Y)
print('LR fit', round(time.time() - t0, 1), 's', flush=True)
out = {}
for name, path in SETS.items():
    d = read_transcripts([Path(path)]); p = scorer.predict(d)
    gold, _, labeled = gold_arrays(d, p.features)
    texts = [d[f.dialogue].turns[f.turn].text for f in p.features]
    ng = lr.decision_function(feats(texts))
    out[name] = (gold[labeled], p.logits[labeled], ng[labeled])
def sig(x): return 1 / (1 + np.exp(-x))
for wn in (0.0, 0.5, 1.0, 2.0, None):
    def fuse(enc, ng): return sig(ng) if wn is None else sig(enc + wn * ng)
    g, e, n = out['valid']; th = tune_thresholds(g, fuse(e, n)); thr = np.array([th.get(l, .5) for l in LABEL_IDS])
    row = []
    for name, (g, e, n) in out.items():
        pr = fuse(e, n) >= thr
        row.append(f"{name} {label_metrics(g, pr)['macro_f1']:.3f}/{exact_match(g, pr):.3f}")
    print('ngram-only' if wn is None else f'enc + {wn}*ngram', ' | '.join(row), flush=True)
