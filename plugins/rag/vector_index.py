"""FAISS vector index of one collection: exact below a size, approximate above it.

- `flat`: `IndexIDMap2` over `IndexFlatIP` (exact cosine on unit vectors); removals are native.
- `hnsw`: `IndexIDMap2` over `IndexHNSWFlat`; HNSW cannot remove, so removed ids become tombstones
  (filtered out of every search) until they pass `tombstone_ratio` of the index, then it is rebuilt.
- `ivf`: `IndexIVFFlat` (trained k-means lists, `nprobe` probed); removals are native; retrained when
  the collection has grown 4x since training.

Objects are never changed in place once built: a search in another thread may be using them.
"""
from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

EXACT_FILTER_LIMIT = 4096  # below this many allowed ids, approximate indexes score them exactly


@dataclass(frozen=True)
class IndexSettings:
    ann_threshold: int = 100_000  # vectors from which an approximate index is used
    ann_kind: str = "hnsw"  # hnsw | ivf
    hnsw_m: int = 32
    hnsw_ef_construction: int = 64
    hnsw_ef_search: int = 96
    ivf_nprobe: int = 32
    tombstone_ratio: float = 0.2

    def kind_for(self, count: int, current: str | None = None) -> str:
        if count >= self.ann_threshold:
            return current if current in ("hnsw", "ivf") and current == self.ann_kind else self.ann_kind
        if current in ("hnsw", "ivf") and count >= self.ann_threshold // 2:
            return current  # hysteresis: no flip-flopping around the threshold
        return "flat"


LiveSource = Callable[[], tuple[np.ndarray, np.ndarray]]  # every live (ids, vectors) after the change


def _faiss():
    import faiss

    return faiss


def _ids(values: Iterable[int]) -> np.ndarray:
    return np.ascontiguousarray(np.fromiter((int(v) for v in values), dtype=np.int64))


class VectorIndex:
    def __init__(self, index, kind: str, dimension: int, ids: np.ndarray, tombstones: np.ndarray | None = None,
                 trained_on: int = 0):
        self.index = index
        self.kind = kind
        self.dimension = dimension
        self.ids = np.asarray(ids, dtype=np.int64)  # live ids
        self.tombstones = np.zeros(0, dtype=np.int64) if tombstones is None else np.asarray(tombstones, np.int64)
        self.trained_on = trained_on

    def __len__(self) -> int:
        return len(self.ids)

    # building --------------------------------------------------------------------------------
    @classmethod
    def build(cls, dimension: int, ids: np.ndarray, vectors: np.ndarray, settings: IndexSettings,
              kind: str | None = None) -> VectorIndex:
        faiss = _faiss()
        ids = np.ascontiguousarray(ids, dtype=np.int64)
        vectors = np.ascontiguousarray(vectors, dtype=np.float32).reshape(-1, dimension)
        kind = kind or settings.kind_for(len(ids))
        trained_on = 0
        if kind == "flat":
            index = faiss.IndexIDMap2(faiss.IndexFlatIP(dimension))
        elif kind == "hnsw":
            inner = faiss.IndexHNSWFlat(dimension, settings.hnsw_m, faiss.METRIC_INNER_PRODUCT)
            inner.hnsw.efConstruction = settings.hnsw_ef_construction
            index = faiss.IndexIDMap2(inner)
        elif kind == "ivf":
            lists = int(min(max(4 * math.sqrt(max(len(ids), 1)), 16), 65536))
            index = faiss.IndexIVFFlat(faiss.IndexFlatIP(dimension), dimension, lists, faiss.METRIC_INNER_PRODUCT)
            sample = vectors
            if len(vectors) > lists * 64:  # k-means on a sample: as good, far faster
                rng = np.random.default_rng(0)
                sample = vectors[rng.choice(len(vectors), lists * 64, replace=False)]
            index.train(sample)
            index.set_direct_map_type(faiss.DirectMap.Hashtable)
            trained_on = len(ids)
        else:
            raise ValueError(f"unknown index kind {kind!r}")
        if len(ids):
            index.add_with_ids(vectors, ids)
        return cls(index, kind, dimension, ids, trained_on=trained_on)

    def changed(self, add_ids: np.ndarray, add_vectors: np.ndarray, remove_ids: Iterable[int],
                settings: IndexSettings, live: LiveSource) -> VectorIndex:
        """A new index with `remove_ids` gone and `add_vectors` added (this one is left as it was)."""
        faiss = _faiss()
        add_ids = np.ascontiguousarray(add_ids, dtype=np.int64)
        add_vectors = np.ascontiguousarray(add_vectors, dtype=np.float32).reshape(-1, self.dimension)
        removing = _ids(remove_ids)
        removing = removing[np.isin(removing, self.ids)]
        live_ids = np.concatenate([self.ids[~np.isin(self.ids, removing)], add_ids])
        kind = settings.kind_for(len(live_ids), self.kind)
        tombstones = np.union1d(self.tombstones, removing) if self.kind == "hnsw" else self.tombstones
        stale = (kind != self.kind
                 or (kind == "hnsw" and len(tombstones) > settings.tombstone_ratio * max(len(live_ids), 1))
                 or (kind == "ivf" and len(live_ids) > 4 * max(self.trained_on, 1)))
        if stale:
            ids, vectors = live()
            return VectorIndex.build(self.dimension, ids, vectors, settings, kind)
        index = faiss.deserialize_index(faiss.serialize_index(self.index))
        if self.kind == "ivf":
            index.set_direct_map_type(faiss.DirectMap.Hashtable)
        if len(removing) and self.kind != "hnsw":
            # IVF with a hashtable direct map removes only through an IDSelectorArray.
            selector = faiss.IDSelectorArray(removing) if self.kind == "ivf" else faiss.IDSelectorBatch(removing)
            index.remove_ids(selector)
        if len(add_ids):
            index.add_with_ids(add_vectors, add_ids)
        return VectorIndex(index, self.kind, self.dimension, live_ids, tombstones, self.trained_on)

    # searching -------------------------------------------------------------------------------
    def search(self, query: np.ndarray, k: int, settings: IndexSettings,
               allowed: np.ndarray | None = None) -> list[tuple[int, float]]:
        """Best k (id, inner product) for one query vector; `allowed` restricts to those ids."""
        faiss = _faiss()
        if not len(self.ids) or k <= 0:
            return []
        query = np.ascontiguousarray(query, dtype=np.float32).reshape(1, self.dimension)
        if allowed is not None:
            allowed = np.intersect1d(np.asarray(allowed, dtype=np.int64), self.ids)
            if not len(allowed):
                return []
            if self.kind != "flat" and len(allowed) <= EXACT_FILTER_LIMIT:
                vectors = np.vstack([self.index.reconstruct(int(i)) for i in allowed])
                scores = vectors @ query[0]
                order = np.argsort(-scores, kind="stable")[:k]
                return [(int(allowed[i]), float(scores[i])) for i in order]
        k = min(k, len(self.ids))
        selector = None
        if allowed is not None:
            selector = faiss.IDSelectorBatch(allowed)
        elif len(self.tombstones):
            selector = faiss.IDSelectorNot(faiss.IDSelectorBatch(self.tombstones))
        if self.kind == "hnsw":
            params = faiss.SearchParametersHNSW(efSearch=max(settings.hnsw_ef_search, k))
        elif self.kind == "ivf":
            params = faiss.SearchParametersIVF(nprobe=settings.ivf_nprobe)
        else:
            params = faiss.SearchParameters()
        if selector is not None:
            params.sel = selector
        scores, labels = self.index.search(query, k, params=params)
        return [(int(i), float(s)) for i, s in zip(labels[0], scores[0], strict=True) if i >= 0]

    # persistence -------------------------------------------------------------------------------
    def save(self, directory: Path) -> None:
        faiss = _faiss()
        faiss.write_index(self.index, str(directory / "vectors.faiss"))
        np.save(directory / "ids.npy", self.ids)
        np.save(directory / "tombstones.npy", self.tombstones)
        (directory / "vectors.json").write_text(json.dumps({
            "kind": self.kind, "dimension": self.dimension, "count": len(self.ids), "trained_on": self.trained_on,
        }))

    @classmethod
    def load(cls, directory: Path) -> VectorIndex:
        faiss = _faiss()
        meta = json.loads((directory / "vectors.json").read_text())
        index = faiss.read_index(str(directory / "vectors.faiss"))
        if meta["kind"] == "ivf":
            index.set_direct_map_type(faiss.DirectMap.Hashtable)
        return cls(index, meta["kind"], int(meta["dimension"]), np.load(directory / "ids.npy"),
                   np.load(directory / "tombstones.npy"), int(meta.get("trained_on", 0)))
