"""BM25, the FAISS indexes (flat, HNSW with tombstones, IVF) and versioned index directories."""
from __future__ import annotations

import numpy as np
import pytest

from plugins.rag.index_store import IndexStore, Snapshot
from plugins.rag.lexical import Bm25Index, document_terms, tokenize
from plugins.rag.vector_index import IndexSettings, VectorIndex


def unit(rows: np.ndarray) -> np.ndarray:
    return (rows / np.linalg.norm(rows, axis=1, keepdims=True)).astype(np.float32)


def test_tokenizer_understands_code_identifiers():
    tokens = tokenize("def getUserName(user_id): return HTTPServer.parse_queries()")
    assert {"get", "user", "name", "getusername", "id", "http", "server", "parse", "query"} <= set(tokens)
    assert "the" not in tokenize("the user and the server")


CONFIG_CODE = [
    "def parse_config_file(path):\n    with open(path) as handle:\n        return yaml.safe_load(handle)\n",
    # the same words, in the body of functions named for something else
    "def load_settings(path):\n    # parse the config file, then the environment\n"
    "    config = parse_config_file(path)\n    config.update(parse_environment())\n    return config\n",
    "def read_file(path):\n    data = open(path).read()  # file contents, parse later\n    return data\n",
    "def write_config(config, path):\n    with open(path, 'w') as file:\n        yaml.dump(config, file)\n",
    "class ConfigFileError(Exception):\n    pass\n",
    "def parse_arguments(argv):\n    parser = make_parser()\n    return parser.parse_args(argv)\n",
]


def test_a_query_in_words_finds_the_function_named_for_it():
    index = Bm25Index().add_remove(list(range(1, len(CONFIG_CODE) + 1)), CONFIG_CODE, ())
    assert index.search("parse config file", 3)[0][0] == 1
    assert index.search("parseConfigFile", 3)[0][0] == 1  # camelCase finds snake_case
    assert index.search("config file error", 3)[0][0] == 5


def test_definition_names_weigh_more_but_prose_is_left_alone():
    assert document_terms("def parse_config(path):\n    pass").count("config") == 3
    assert document_terms("func (s *Server) Open() error {").count("open") == 3
    assert document_terms("class HTTPServer extends Base {").count("server") == 3
    prose = "This function returns the class of a module in the given order"
    assert document_terms(prose) == tokenize(prose)


def test_bm25_ranks_adds_removes_and_filters():
    index = Bm25Index().add_remove([1, 2, 3], ["parse the input file", "open a network socket",
                                              "config loader: parse yaml config"], ())
    hits = index.search("parse config", 10)
    assert [i for i, _ in hits][:2] == [3, 1]  # both query terms beat one
    assert all(score > 0 for _, score in hits)
    assert index.search("parse config", 10, index.mask([1, 2])) == [(1, pytest.approx(hits[1][1]))]
    smaller = index.add_remove([4], ["socket timeout while reading"], [3])
    assert {i for i, _ in smaller.search("parse config", 10)} == {1}
    assert smaller.search("yaml", 10) == []
    assert {i for i, _ in smaller.search("socket", 10)} == {2, 4}
    assert {i for i, _ in index.search("parse config", 10)} == {1, 3}  # the old one is unchanged
    assert index.search("nothing matches this", 5) == []


def test_bm25_survives_a_save_and_load(tmp_path):
    index = Bm25Index().add_remove([7, 8], ["alpha beta", "beta gamma"], ())
    index.save(tmp_path)
    again = Bm25Index.load(tmp_path)
    assert again.search("gamma", 3) == index.search("gamma", 3)


@pytest.mark.parametrize("kind", ["flat", "hnsw", "ivf"])
def test_vector_index_adds_removes_and_filters(kind):
    rng = np.random.default_rng(1)
    vectors = unit(rng.normal(size=(600, 16)))
    ids = np.arange(1000, 1600, dtype=np.int64)
    settings = IndexSettings(ann_threshold=100 if kind != "flat" else 10_000,
                             ann_kind="ivf" if kind == "ivf" else "hnsw")
    index = VectorIndex.build(16, ids, vectors, settings)
    assert index.kind == kind
    hits = index.search(vectors[5], 3, settings)
    assert hits[0][0] == 1005 and hits[0][1] == pytest.approx(1.0, abs=1e-4)
    allowed = np.array([1100, 1200, 1300], dtype=np.int64)
    assert {i for i, _ in index.search(vectors[5], 10, settings, allowed)} == {1100, 1200, 1300}

    def live():
        keep = ids != 1005
        return np.concatenate([ids[keep], [9999]]), np.vstack([vectors[keep], vectors[5:6]])

    changed = index.changed(np.array([9999]), vectors[5:6], [1005], settings, live)
    top = changed.search(vectors[5], 3, settings)
    assert top[0][0] == 9999 and 1005 not in {i for i, _ in top}
    assert len(changed) == 600
    assert index.search(vectors[5], 1, settings)[0][0] == 1005  # the original is untouched


def test_hnsw_tombstones_are_filtered_then_compacted_by_a_rebuild():
    rng = np.random.default_rng(2)
    vectors = unit(rng.normal(size=(300, 8)))
    ids = np.arange(300, dtype=np.int64) + 1
    settings = IndexSettings(ann_threshold=100, ann_kind="hnsw", tombstone_ratio=0.2)
    index = VectorIndex.build(8, ids, vectors, settings)
    removed = ids[:30]
    rebuilt = []

    def live():
        rebuilt.append(True)
        return ids[60:], vectors[60:]

    step = index.changed(np.zeros(0, np.int64), np.zeros((0, 8), np.float32), removed, settings, live)
    assert set(step.tombstones) == set(removed) and not rebuilt
    assert not set(i for i, _ in step.search(vectors[0], 50, settings)) & set(removed)
    compacted = step.changed(np.zeros(0, np.int64), np.zeros((0, 8), np.float32), ids[30:60], settings, live)
    assert rebuilt and len(compacted.tombstones) == 0 and len(compacted) == 240


def test_crossing_the_threshold_switches_to_an_approximate_index_and_back():
    rng = np.random.default_rng(3)
    vectors = unit(rng.normal(size=(200, 8)))
    ids = np.arange(200, dtype=np.int64) + 1
    settings = IndexSettings(ann_threshold=150, ann_kind="hnsw")
    small = VectorIndex.build(8, ids[:100], vectors[:100], settings)
    assert small.kind == "flat"
    grown = small.changed(ids[100:], vectors[100:], [], settings, lambda: (ids, vectors))
    assert grown.kind == "hnsw" and len(grown) == 200
    shrunk = grown.changed(np.zeros(0, np.int64), np.zeros((0, 8), np.float32), ids[:150], settings,
                           lambda: (ids[150:], vectors[150:]))
    assert shrunk.kind == "flat" and len(shrunk) == 50


def test_versions_are_written_atomically_and_reloaded_or_rebuilt(tmp_path):
    settings = IndexSettings()
    rng = np.random.default_rng(4)
    vectors = unit(rng.normal(size=(20, 8)))
    ids = np.arange(20, dtype=np.int64) + 1
    texts = [f"chunk number {i}" for i in range(20)]
    writer = IndexStore(tmp_path, settings)
    version = writer.next_version(0)
    snapshot = writer.build("col_x", version, 8, ids, vectors, texts)
    path = writer.write(snapshot)
    assert path.name == f"v{version}" and not [p for p in path.parent.iterdir() if p.name.startswith(".tmp")]

    def never():
        raise AssertionError("must load from disk")

    reader = IndexStore(tmp_path, settings)  # another process: loads the files
    loaded = reader.get("col_x", version, 8, never)
    assert loaded.vectors.search(vectors[3], 1, settings)[0][0] == 4
    assert loaded.lexical.search("number", 30)
    elsewhere = IndexStore(tmp_path / "other-host", settings)  # no files there: rebuilt from the database rows
    rebuilt = elsewhere.get("col_x", version, 8, lambda: (ids, vectors, texts))
    assert rebuilt.count == 20 and (tmp_path / "other-host" / "col_x" / f"v{version}").is_dir()
    newer = writer.next_version(version)
    assert newer > version
    writer.write(Snapshot("col_x", newer, snapshot.vectors, snapshot.lexical))
    writer.prune("col_x", keep={newer})
    assert [p.name for p in (tmp_path / "col_x").iterdir()] == [f"v{newer}"]


def test_fusion_rewards_agreement_between_dense_and_lexical():
    from plugins.rag.search import fuse, fuse_weighted

    dense = [(1, 0.9), (2, 0.8), (3, 0.1)]
    lexical = [(2, 12.0), (4, 9.0), (1, 1.0)]
    assert [i for i, _ in fuse([dense, lexical])][:2] == [2, 1]  # in both lists, near the top of both
    weighted = fuse_weighted(dense, lexical, 0.6)
    assert weighted[0][0] == 2 and {i for i, _ in weighted} == {1, 2, 3, 4}


def test_weighted_fusion_keeps_score_gaps_and_follows_the_weight():
    from plugins.rag.search import fuse, fuse_weighted, hybrid

    # Dense barely prefers 1 over 2; lexical strongly prefers 2: scores decide what ranks alone cannot.
    dense = [(1, 0.61), (2, 0.60), (3, 0.30), (4, 0.29)]
    lexical = [(2, 20.0), (1, 5.0), (4, 4.5), (3, 4.0)]
    assert fuse([dense, lexical])[0][1] == fuse([dense, lexical])[1][1]  # a tie for ranks
    assert fuse_weighted(dense, lexical, 0.6)[0][0] == 2
    assert fuse_weighted(dense, lexical, 1.0)[0][0] == 1 and fuse_weighted(dense, lexical, 0.0)[0][0] == 2
    assert [i for i, _ in fuse_weighted(dense, [], 0.6)] == [1, 2, 3, 4]  # one ranker only: its order
    assert fuse_weighted([], [], 0.6) == []
    assert hybrid(dense, lexical)[0][0] == 2  # the default: weighted
    assert hybrid(dense, lexical, "rrf") == fuse([dense, lexical])
