"""Okapi BM25 over a sparse term-frequency matrix: incremental, filterable, saved next to the FAISS index.

Why not a database's full-text search: PostgreSQL's `ts_rank` is not BM25 and
ranks every matching row (slow at 100k chunks for common words), SQLite FTS5
is SQLite-only, and `bm25s` precomputes scores with global IDF, so every
change rebuilds it. Keeping raw term frequencies instead makes adds and
removals cheap (IDF is computed at query time from document frequencies), and
one tokenizer that understands code (`snake_case`, `camelCase`) serves both
backends. The measured comparison is in the README.

Two code-aware choices, both measured on docstring -> function retrieval
(bench/rag.py): the name a definition introduces (`def parse_config_file`,
`class HTTPServer`, `func Open`) counts its words `DEFINITION_BOOST` more times
in that document, since a function's name is the best summary of what it does
(MRR@10 of BM25 0.52 -> 0.55); and the per-entry BM25 term weights are
computed once per index version, so a query only sums the columns of its own
terms (a few ms at 100k chunks).
"""
from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
import scipy.sparse as sp

K1, B = 1.2, 0.75
_WORD = re.compile(r"[^\W_]+(?:_+[^\W_]+)*|[^\W\d_]+", re.UNICODE)
_CAMEL = re.compile(r"[A-Z]+(?=[A-Z][a-z])|[A-Z]?[a-z]+|[A-Z]+|\d+")
# A definition's keyword, then the name it defines (Python, JavaScript/TypeScript, Go with or without a method
# receiver, Rust, Ruby, Java/C# types, C structs and enums). What follows the name must look like code (a parameter
# list, a body, a base class, the end of the line), so prose ("this function returns ...") is left alone.
_DEFINITION = re.compile(r"\b(?:def|class|function|func|fn|struct|enum|interface|trait|module)\s+"
                         r"(?:\([^()]*\)\s*)?([A-Za-z_$][\w$]*)"
                         r"(?=\s*[(:{<\[]|\s+(?:extends|implements)\b|[ \t]*$)", re.MULTILINE)
DEFINITION_BOOST = 2
STOPWORDS = frozenset("""a an and are as at be but by for from has have if in into is it its of on or that the
their then there these this to was were will with which who what when where why how can do does not no we you
your our they them he she his her i me my""".split())


def _stem(word: str) -> str:
    """A light plural/tense folding: 'returns' ~ 'return', 'queries' ~ 'query'."""
    if len(word) > 4 and word.endswith("ies"):
        return word[:-3] + "y"
    if len(word) > 3 and word.endswith("s") and not word.endswith(("ss", "us", "is")):
        return word[:-1]
    return word


def tokenize(text: str) -> list[str]:
    """Words of prose and identifiers of code: `getUserName` and `get_user_name` both give get, user, name
    (and the whole identifier, so an exact name still ranks first)."""
    tokens: list[str] = []
    for match in _WORD.finditer(text):
        word = match.group()
        parts = [p for piece in word.split("_") for p in _CAMEL.findall(piece)] if len(word) > 2 else [word]
        lowered = [p.lower() for p in parts if p]
        if len(lowered) > 1:
            tokens.append(word.lower())
        for part in lowered:
            if len(part) > 1 and part not in STOPWORDS:
                tokens.append(_stem(part))
    return tokens


def document_terms(text: str) -> list[str]:
    """A document's terms: `tokenize`, plus the words of every name it defines counted `DEFINITION_BOOST` more
    times (the whole identifier is left at its own count: an exact-name query already matches it)."""
    tokens = tokenize(text)
    for match in _DEFINITION.finditer(text):
        name = match.group(1).strip("$_")
        words = [t for t in tokenize(name) if t != name.lower()] or tokenize(name)
        tokens.extend(words * DEFINITION_BOOST)
    return tokens


class Bm25Index:
    """Rows are documents (chunks, keyed by int64 id), columns are terms."""

    def __init__(self, terms: list[str] | None = None, ids: np.ndarray | None = None,
                 matrix: sp.csr_matrix | None = None):
        self.terms = list(terms or [])
        self.vocabulary = {term: i for i, term in enumerate(self.terms)}
        self.ids = np.zeros(0, dtype=np.int64) if ids is None else np.asarray(ids, dtype=np.int64)
        self.matrix = sp.csr_matrix((len(self.ids), len(self.terms)), dtype=np.float32) if matrix is None else matrix
        self._prepare()

    def _prepare(self) -> None:
        self.lengths = np.asarray(self.matrix.sum(axis=1)).ravel().astype(np.float32)
        self.average = float(self.lengths.mean()) if len(self.lengths) else 0.0
        self.columns = self.matrix.tocsc()
        self.document_frequency = np.diff(self.columns.indptr).astype(np.float32)
        # Each entry's saturated, length-normalised term frequency (the index never changes once built): a
        # query then costs one gather-add per query term.
        norm = K1 * (1 - B + B * self.lengths / (self.average or 1.0))
        frequency = self.columns.data
        self.weights = (frequency * (K1 + 1) / (frequency + norm[self.columns.indices])).astype(np.float32)

    def __len__(self) -> int:
        return len(self.ids)

    def add_remove(self, add_ids: Sequence[int], texts: Sequence[str], remove_ids: Iterable[int]) -> Bm25Index:
        """A new index: this one without `remove_ids`, plus `texts` under `add_ids`."""
        removing = np.fromiter({int(i) for i in remove_ids} | {int(i) for i in add_ids}, dtype=np.int64)
        keep = ~np.isin(self.ids, removing) if len(removing) else None
        matrix, ids = self.matrix, self.ids
        if keep is not None and not keep.all():
            matrix, ids = matrix[keep], ids[keep]
        terms = list(self.terms)
        vocabulary = dict(self.vocabulary)
        rows, cols, values = [], [], []
        for row, text in enumerate(texts):
            for term, frequency in Counter(document_terms(text)).items():
                column = vocabulary.get(term)
                if column is None:
                    column = vocabulary[term] = len(terms)
                    terms.append(term)
                rows.append(row)
                cols.append(column)
                values.append(frequency)
        added = sp.csr_matrix((np.asarray(values, dtype=np.float32), (rows, cols)), shape=(len(texts), len(terms)))
        matrix = sp.csr_matrix(matrix, shape=(matrix.shape[0], len(terms)))  # widen to the new vocabulary
        merged = sp.vstack([matrix, added], format="csr") if len(texts) else matrix
        return Bm25Index(terms, np.concatenate([ids, np.asarray(list(add_ids), dtype=np.int64)]), merged)

    def search(self, query: str, k: int, allowed: np.ndarray | None = None) -> list[tuple[int, float]]:
        """The k best (id, score) pairs; `allowed` is a boolean mask over rows (None: every row)."""
        if not len(self.ids):
            return []
        columns = [self.vocabulary[t] for t in dict.fromkeys(tokenize(query)) if t in self.vocabulary]
        if not columns:
            return []
        total = len(self.ids)
        scores = np.zeros(total, dtype=np.float32)
        indptr, indices = self.columns.indptr, self.columns.indices
        for column in columns:
            start, end = indptr[column], indptr[column + 1]
            df = self.document_frequency[column]
            idf = np.float32(np.log1p((total - df + 0.5) / (df + 0.5)))
            scores[indices[start:end]] += idf * self.weights[start:end]  # rows of a column are unique
        if allowed is not None:
            scores[~allowed] = 0.0
        hits = np.flatnonzero(scores > 0)
        if not len(hits):
            return []
        if len(hits) > k:
            hits = hits[np.argpartition(-scores[hits], k - 1)[:k]]
        hits = hits[np.argsort(-scores[hits], kind="stable")]
        return [(int(self.ids[i]), float(scores[i])) for i in hits]

    def mask(self, ids: Iterable[int]) -> np.ndarray:
        """The boolean row mask of these ids (ids not in the index are ignored)."""
        wanted = np.fromiter((int(i) for i in ids), dtype=np.int64) if not isinstance(ids, np.ndarray) else ids
        return np.isin(self.ids, np.asarray(wanted, dtype=np.int64))

    # persistence -------------------------------------------------------------------------------
    def save(self, directory: Path) -> None:
        matrix = self.matrix.tocsr()
        np.savez(directory / "lexical.npz", ids=self.ids, data=matrix.data, indices=matrix.indices,
                 indptr=matrix.indptr, shape=np.asarray(matrix.shape, dtype=np.int64))
        (directory / "terms.json").write_text(json.dumps(self.terms), encoding="utf-8")

    @classmethod
    def load(cls, directory: Path) -> Bm25Index:
        with np.load(directory / "lexical.npz") as arrays:
            shape = tuple(int(x) for x in arrays["shape"])
            matrix = sp.csr_matrix((arrays["data"], arrays["indices"], arrays["indptr"]), shape=shape)
            ids = arrays["ids"]
        terms = json.loads((directory / "terms.json").read_text(encoding="utf-8"))
        return cls(terms, ids, matrix)
