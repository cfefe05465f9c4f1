"""Published index versions on disk, and this process's cache of them.

A collection's index at version V is the directory `<RAG_INDEX_DIR>/<collection id>/v<V>/` holding the
FAISS index and the BM25 matrix. A version is written into a temporary directory, flushed, and renamed
into place (atomic), and only then named in the collection row. A process compares the row's version
with the one it has loaded and reloads when they differ, so every worker and host follows a change on
its next search. A host that lacks the directory (a fresh host, a wiped instance directory) rebuilds it
from the chunks' stored embeddings.
"""
from __future__ import annotations

import errno
import os
import shutil
import threading
import time
import uuid
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .lexical import Bm25Index
from .vector_index import IndexSettings, VectorIndex

_TMP_MAX_AGE = 3600.0


@dataclass
class Snapshot:
    collection_id: str
    version: int
    vectors: VectorIndex
    lexical: Bm25Index

    @property
    def count(self) -> int:
        return len(self.vectors)


Rebuild = Callable[[], tuple[np.ndarray, np.ndarray, list[str]]]  # (ids, vectors, texts) of live chunks


class IndexStore:
    def __init__(self, root: Path, settings: IndexSettings, cache_size: int = 32):
        self.root = Path(root)
        self.settings = settings
        self.cache_size = cache_size
        self._cache: OrderedDict[str, Snapshot] = OrderedDict()
        self._lock = threading.Lock()
        self._loading: dict[tuple[str, int], threading.Lock] = {}

    def directory(self, collection_id: str, version: int) -> Path:
        return self.root / collection_id / f"v{version}"

    @staticmethod
    def next_version(current: int) -> int:
        # Unique across writers (milliseconds + randomness), always above the current one, and below 2**53
        # so JavaScript clients read it exactly.
        return max(current + 1, time.time_ns() // 1_000_000 * 1000 + uuid.uuid4().int % 1000)

    def empty(self, collection_id: str, dimension: int) -> Snapshot:
        return Snapshot(collection_id, 0, VectorIndex.build(dimension, np.zeros(0, np.int64),
                                                            np.zeros((0, dimension), np.float32), self.settings,
                                                            "flat"), Bm25Index())

    # reading -----------------------------------------------------------------------------------
    def cached(self, collection_id: str) -> Snapshot | None:
        with self._lock:
            return self._cache.get(collection_id)

    def get(self, collection_id: str, version: int, dimension: int, rebuild: Rebuild) -> Snapshot:
        """The snapshot at `version`: from this process's cache, from disk, or rebuilt from the database."""
        if version == 0:
            return self.empty(collection_id, dimension)
        with self._lock:
            snapshot = self._cache.get(collection_id)
            if snapshot is not None and snapshot.version == version:
                self._cache.move_to_end(collection_id)
                return snapshot
            gate = self._loading.setdefault((collection_id, version), threading.Lock())
        with gate:  # one load per version per process, however many searches arrive at once
            with self._lock:
                snapshot = self._cache.get(collection_id)
                if snapshot is not None and snapshot.version == version:
                    return snapshot
            directory = self.directory(collection_id, version)
            try:
                snapshot = Snapshot(collection_id, version, VectorIndex.load(directory), Bm25Index.load(directory))
            except (OSError, ValueError, RuntimeError, KeyError):
                ids, vectors, texts = rebuild()
                snapshot = self.build(collection_id, version, dimension, ids, vectors, texts)
                self.write(snapshot, replace=False)
            self.remember(snapshot)
        with self._lock:
            self._loading.pop((collection_id, version), None)
        return snapshot

    def build(self, collection_id: str, version: int, dimension: int, ids: np.ndarray, vectors: np.ndarray,
              texts: list[str]) -> Snapshot:
        vectors_index = VectorIndex.build(dimension, ids, vectors, self.settings)
        lexical = Bm25Index().add_remove([int(i) for i in ids], texts, ())
        return Snapshot(collection_id, version, vectors_index, lexical)

    def remember(self, snapshot: Snapshot) -> None:
        with self._lock:
            current = self._cache.get(snapshot.collection_id)
            if current is not None and current.version > snapshot.version:
                return  # a newer one is already here
            self._cache[snapshot.collection_id] = snapshot
            self._cache.move_to_end(snapshot.collection_id)
            while len(self._cache) > self.cache_size:
                self._cache.popitem(last=False)

    def forget(self, collection_id: str) -> None:
        with self._lock:
            self._cache.pop(collection_id, None)

    # writing -----------------------------------------------------------------------------------
    def write(self, snapshot: Snapshot, replace: bool = True) -> Path:
        """Write a version atomically: a temporary directory, flushed, then renamed into place."""
        final = self.directory(snapshot.collection_id, snapshot.version)
        parent = final.parent
        parent.mkdir(parents=True, exist_ok=True)
        temporary = parent / f".tmp-v{snapshot.version}-{uuid.uuid4().hex[:8]}"
        temporary.mkdir()
        try:
            snapshot.vectors.save(temporary)
            snapshot.lexical.save(temporary)
            for item in temporary.iterdir():
                with open(item, "rb") as handle:
                    os.fsync(handle.fileno())
            if final.exists():
                if not replace:
                    shutil.rmtree(temporary, ignore_errors=True)
                    return final
                shutil.rmtree(final, ignore_errors=True)
            os.rename(temporary, final)
            _fsync_directory(parent)
        except OSError as error:
            shutil.rmtree(temporary, ignore_errors=True)
            if error.errno not in (errno.EEXIST, errno.ENOTEMPTY):
                raise
            # someone else wrote the same version meanwhile: theirs is as good
        except BaseException:
            shutil.rmtree(temporary, ignore_errors=True)
            raise
        return final

    def discard(self, collection_id: str, version: int) -> None:
        shutil.rmtree(self.directory(collection_id, version), ignore_errors=True)

    def prune(self, collection_id: str, keep: set[int]) -> None:
        """Remove versions no longer named (the previous one is kept for readers still loading it)."""
        parent = self.root / collection_id
        if not parent.is_dir():
            return
        now = time.time()
        for entry in parent.iterdir():
            name = entry.name
            if name.startswith("v") and name[1:].isdigit() and int(name[1:]) not in keep:
                shutil.rmtree(entry, ignore_errors=True)
            elif name.startswith(".tmp-"):
                try:
                    if now - entry.stat().st_mtime > _TMP_MAX_AGE:  # left by a killed writer
                        shutil.rmtree(entry, ignore_errors=True)
                except OSError:
                    pass

    def delete(self, collection_id: str) -> None:
        self.forget(collection_id)
        shutil.rmtree(self.root / collection_id, ignore_errors=True)

    def disk_bytes(self, collection_id: str, version: int) -> int:
        directory = self.directory(collection_id, version)
        if not directory.is_dir():
            return 0
        return sum(f.stat().st_size for f in directory.iterdir() if f.is_file())


def _fsync_directory(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
