"""Token embeddings initialised from co-occurrence statistics (PPMI + SVD) of the training text.

A from-scratch encoder starts with random embeddings, so 薇信 and 微信, 退款 and 退货, know nothing of each
other until many steps have passed. Positive pointwise mutual information over a small window, reduced
by a truncated SVD (Levy & Goldberg, 2014: the factorisation word2vec performs implicitly), gives every
token a starting vector in which tokens used alike lie close. It costs seconds and reads only the
training dialogues.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import scipy.sparse as sp
import torch
from sklearn.utils.extmath import randomized_svd


def ppmi_vectors(token_rows: Sequence[Sequence[int]], vocab_size: int, dim: int, window: int = 2, alpha: float = 0.75, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(vectors (vocab, dim), mask of tokens seen): SVD of the PPMI matrix of tokens within `window`.

    `alpha` smooths the context distribution (word2vec's 0.75), which keeps rare contexts from
    dominating PMI.
    """
    rows, cols = [], []
    for ids in token_rows:
        ids = list(ids)
        for offset in range(1, window + 1):
            rows += ids[:-offset] + ids[offset:]
            cols += ids[offset:] + ids[:-offset]
    counts = sp.coo_matrix((np.ones(len(rows), dtype=np.float64), (rows, cols)), shape=(vocab_size, vocab_size)).tocsr()
    counts.sum_duplicates()
    total = counts.sum()
    word = np.asarray(counts.sum(axis=1)).ravel() / total
    context = np.asarray(counts.sum(axis=0)).ravel() ** alpha
    context /= context.sum()
    coo = counts.tocoo()
    pmi = np.log(coo.data / total / (word[coo.row] * context[coo.col]))
    keep = pmi > 0
    ppmi = sp.csr_matrix((pmi[keep], (coo.row[keep], coo.col[keep])), shape=counts.shape)
    u, s, _ = randomized_svd(ppmi, n_components=min(dim, vocab_size - 1), random_state=seed)
    vectors = u * np.sqrt(s)  # symmetric weighting of the singular values
    return vectors, word > 0


def init_embeddings(model, token_rows: Sequence[Sequence[int]], std: float = 0.02) -> int:
    """Overwrite the word embeddings of tokens seen in `token_rows` with PPMI vectors scaled to BERT's
    initialisation (std 0.02); returns how many tokens got one."""
    embeddings = model.get_input_embeddings().weight
    vectors, seen = ppmi_vectors(token_rows, embeddings.shape[0], embeddings.shape[1])
    vectors = vectors[seen]
    vectors = (vectors - vectors.mean(axis=0)) / (vectors.std() + 1e-12) * std
    with torch.no_grad():
        embeddings[torch.from_numpy(np.flatnonzero(seen))] = torch.from_numpy(vectors).to(embeddings.dtype)
    return int(seen.sum())
