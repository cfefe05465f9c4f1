"""Retrieval benchmarks: search quality, indexing throughput, search latency over HTTP, approximate recall.

    python -m bench.rag                                  # every table at the default sizes (~15 min on 2 cores)
    python -m bench.rag --only quality --packages flask,click --functions 3000
    python -m bench.rag --only latency --latency-sizes 10000,100000
    python -m bench.rag --only ann --ann-size 1000000    # 1M vectors: needs ~6 GB of memory and a while

1. Quality: a CodeSearchNet-style set built from Python packages installed here (`--packages`): the
   query is a function's first docstring paragraph, the document the function without its docstring.
   MRR@10 and recall@1/5/10 for lexical (BM25), dense (MiniLM + FAISS) and hybrid (both fusions the plugin
   offers, with its default settings: RAG_SEARCH_CANDIDATES from each ranker, then fused).
2. Throughput: chunks/s through the whole pipeline (chunk, embed, stage, publish) against the raw
   `model.encode` of the same chunks in the same run; then a re-index of unchanged files.
3. Latency: p50/p95 of `POST /v1/rag/search` (hybrid, end to end: query embedding, FAISS, BM25, fusion,
   database) on gunicorn (2 gevent workers, PostgreSQL, Redis) at each `--latency-sizes` chunk count
   (synthetic vectors and text); and recall@10 of the approximate index against exact search.

Goals (issue 5): hybrid above lexical and dense by a clear margin; pipeline >= 90% of raw encode; a
no-change re-index of 10,000 chunks under 10 s; p50 <= 50 ms at 100k chunks; recall@10 >= 0.95 at 1M.
"""
from __future__ import annotations

import argparse
import ast
import importlib.util
import json
import os
import random
import re
import statistics
import sys
import tempfile
import textwrap
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_PACKAGES = "flask,werkzeug,click,jinja2,requests,marshmallow,sqlalchemy,rq"
os.environ.setdefault("HF_HUB_OFFLINE", "1")


SECRETS = {"SECRET_KEY": "bench-secret-" + "s" * 40, "JWT_SECRET_KEY": "bench-jwt-" + "j" * 40,
           "KEYS_PEPPER": "bench-pepper-" + "p" * 40}


def _app(database_url: str, instance: Path, **config: Any) -> Any:
    os.environ["LUNAOS_INSTANCE_PATH"] = str(instance)
    from app import create_app

    return create_app({"DATABASE_URL": database_url, **SECRETS, "LOG_LEVEL": "WARNING", **config})


def _migrate(app: Any) -> None:
    from flask_migrate import upgrade

    with app.app_context():
        upgrade(revision="heads")


def _user(app: Any, email: str) -> str:
    from plugins.auth import service as auth

    with app.app_context():
        found = auth.find_by_email(email)
        return found.id if found else auth.create_user(email, "Quasar-Nebula-7731-Orbit").id


# ============================================================================ 1. quality

@dataclass
class Pair:
    query: str
    code: str
    name: str


def _first_paragraph(docstring: str) -> str:
    paragraph = textwrap.dedent(docstring).strip().split("\n\n")[0]
    return " ".join(paragraph.split())


def functions_of(packages: list[str]) -> list[Pair]:
    """Every documented function of these packages: (first docstring paragraph, code without docstring)."""
    pairs: list[Pair] = []
    seen: set[str] = set()
    for package in packages:
        spec = importlib.util.find_spec(package)
        if spec is None or not spec.submodule_search_locations:
            print(f"  (skipping {package}: not an installed package)", file=sys.stderr)
            continue
        for directory in spec.submodule_search_locations:
            for path in sorted(Path(directory).rglob("*.py")):
                if "/tests/" in str(path) or "/testing/" in str(path):
                    continue
                try:
                    source = path.read_text(encoding="utf-8")
                    tree = ast.parse(source)
                except (SyntaxError, UnicodeDecodeError, ValueError):
                    continue
                lines = source.split("\n")
                for node in ast.walk(tree):
                    if not isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                        continue
                    docstring = ast.get_docstring(node)
                    if not docstring or not node.body or len(node.body) < 2:
                        continue
                    query = _first_paragraph(docstring)
                    if len(query.split()) < 4 or query in seen:
                        continue
                    doc_node = node.body[0]
                    start = min([node.lineno, *(d.lineno for d in node.decorator_list)])
                    kept = lines[start - 1:doc_node.lineno - 1] + lines[doc_node.end_lineno:node.end_lineno]
                    code = textwrap.dedent("\n".join(kept)).strip()
                    if code.count("\n") < 2:
                        continue
                    seen.add(query)
                    pairs.append(Pair(query, code, f"{path.stem}.{node.name}"))
    return pairs


def _metrics(ranks: list[int | None]) -> dict[str, float]:
    n = len(ranks)
    return {"mrr@10": sum(1.0 / r for r in ranks if r and r <= 10) / n,
            "r@1": sum(1 for r in ranks if r == 1) / n, "r@5": sum(1 for r in ranks if r and r <= 5) / n,
            "r@10": sum(1 for r in ranks if r and r <= 10) / n}


def quality(args: argparse.Namespace) -> str:
    from plugins.rag import embedders, runtime
    from plugins.rag.lexical import Bm25Index
    from plugins.rag.search import hybrid
    from plugins.rag.vector_index import IndexSettings, VectorIndex

    pairs = functions_of(args.packages.split(","))
    random.Random(7).shuffle(pairs)
    pairs = pairs[:args.functions]
    print(f"[quality] {len(pairs)} documented functions from {args.packages}", file=sys.stderr)
    model = embedders.get("minilm", {"RAG_EMBED_BATCH_SIZE": 32})
    started = time.perf_counter()
    documents = model.encode([p.code for p in pairs])
    queries = model.encode([p.query for p in pairs])
    print(f"[quality] embedded in {time.perf_counter() - started:.0f} s", file=sys.stderr)
    ids = np.arange(len(pairs), dtype=np.int64)
    settings = IndexSettings()
    dense_index = VectorIndex.build(documents.shape[1], ids, documents, settings, "flat")
    lexical_index = Bm25Index().add_remove(list(ids), [p.code for p in pairs], ())
    weight, rrf_k = runtime.DEFAULTS["RAG_HYBRID_DENSE_WEIGHT"], runtime.DEFAULTS["RAG_RRF_K"]
    candidates = runtime.DEFAULTS["RAG_SEARCH_CANDIDATES"]
    fusions = {f"hybrid, weighted {weight} (z-scores)": ("weighted", weight, rrf_k),
               f"hybrid, rrf k={rrf_k}": ("rrf", weight, rrf_k)}
    default = runtime.DEFAULTS["RAG_HYBRID_FUSION"]
    fusions = {(f"{name} (default)" if spec[0] == default else name): spec for name, spec in fusions.items()}
    ranks: dict[str, list[int | None]] = {"lexical (BM25)": [], "dense (MiniLM)": [], **{name: [] for name in fusions}}
    for i, pair in enumerate(pairs):
        dense = dense_index.search(queries[i], candidates, settings)
        lexical = lexical_index.search(pair.query, candidates)
        rankings = {"dense (MiniLM)": dense, "lexical (BM25)": lexical}
        rankings.update({name: hybrid(dense, lexical, *spec) for name, spec in fusions.items()})
        for name, ranking in rankings.items():
            order = [doc for doc, _ in ranking[:10]]
            ranks[name].append(order.index(i) + 1 if i in order else None)
    rows = [(name, _metrics(r)) for name, r in ranks.items()]
    out = [f"Quality: {len(pairs)} functions of {args.packages} (query: first docstring paragraph; "
           "document: the function without it)", "",
           "| mode | MRR@10 | recall@1 | recall@5 | recall@10 |", "|---|---|---|---|---|"]
    for name, m in rows:
        out.append(f"| {name} | {m['mrr@10']:.3f} | {m['r@1']:.3f} | {m['r@5']:.3f} | {m['r@10']:.3f} |")
    return "\n".join(out)


# ============================================================================ 2. throughput

class HashEmbedder:
    """Set-up only: fills a collection fast (hashed bag of words). The no-change path embeds nothing."""

    name = "bench-hash"
    dimension = 384
    max_tokens = 256

    def __init__(self, config: Any):
        from plugins.rag import embedders

        self._tokens = embedders.get("minilm", config)

    @property
    def tokenizer(self) -> Any:
        return self._tokens.tokenizer

    def count_tokens(self, text: str) -> int:
        return self._tokens.count_tokens(text)

    def encode(self, texts: Any) -> np.ndarray:
        out = np.zeros((len(texts), self.dimension), dtype=np.float32)
        for row, text in enumerate(texts):
            for word in re.findall(r"\w+", text.lower()):
                out[row, hash(word) % self.dimension] += 1.0
        out /= np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-9)
        return out


def source_files(packages: list[str], limit_chunks: int | None = None) -> list[tuple[str, str]]:
    files: list[tuple[str, str]] = []
    for package in packages:
        spec = importlib.util.find_spec(package)
        if spec is None or not spec.submodule_search_locations:
            continue
        for directory in spec.submodule_search_locations:
            for path in sorted(Path(directory).rglob("*.py")):
                text = path.read_text(encoding="utf-8", errors="replace")
                if text.strip():
                    files.append((f"{package}/{path.relative_to(directory).as_posix()}", text))
    return files


def throughput(args: argparse.Namespace) -> str:
    from app.extensions import db
    from plugins.rag import chunking, embedders, indexing, runtime, service

    tmp = Path(tempfile.mkdtemp(prefix="bench-rag-"))
    app = _app(f"sqlite:///{tmp / 'bench.db'}", tmp, RAG_INDEX_DIR=str(tmp / "idx"))
    _migrate(app)
    owner = _user(app, "bench@example.com")
    files = source_files(args.packages.split(","))
    random.Random(3).shuffle(files)
    rows = []
    with app.app_context():
        # The real pipeline on files until about --throughput-chunks chunks.
        collection = service.collection_for_write(owner, "throughput")
        model = embedders.get("minilm", app.config)
        model.encode(["warm up the model"])
        chosen, total = [], 0
        for path, text in files:
            if total >= args.throughput_chunks:
                break
            chosen.append((path, text, None, {}))
            total += max(1, len(text) // 700)
        _all, changed, _same = service.upsert_files(owner, collection, chosen, "code")
        db.session.commit()
        # Raw encode before and after the pipeline (their mean): the machine's load drifts during a run.
        texts = [c.content for _p, text, _l, _m in chosen
                 for c in chunking.chunk(text, "code", language="python", budget=runtime.budget(), embedder=model)]
        started = time.perf_counter()
        model.encode(texts)
        raw_seconds = time.perf_counter() - started
        started = time.perf_counter()
        stats = indexing.run(collection.id, [d.id for d in changed], "bench-pipeline")
        pipeline_seconds = time.perf_counter() - started
        started = time.perf_counter()
        model.encode(texts)
        raw_seconds = (raw_seconds + time.perf_counter() - started) / 2
        pipeline_rate, raw_rate = stats.chunks / pipeline_seconds, len(texts) / raw_seconds
        rows.append(("pipeline: chunk + embed + stage + publish", f"{stats.chunks} chunks, {stats.files} files",
                     f"{pipeline_rate:.1f} chunks/s", f"{pipeline_rate / raw_rate:.0%} of raw"))
        rows.append(("raw `model.encode` of the same chunks", f"{len(texts)} chunks", f"{raw_rate:.1f} chunks/s",
                     "1.00"))

        # A no-change re-index at --reindex-chunks chunks (set up with a hashing embedder: minutes saved).
        embedders.register("bench-hash", HashEmbedder)
        app.config["RAG_EMBEDDER"] = "bench-hash"
        big = service.collection_for_write(owner, "reindex")
        chosen, files_in = [], 0
        for path, text in files * 20:
            if files_in >= args.reindex_chunks:
                break
            chosen.append((f"copy{len(chosen) // len(files)}/{path}", text, None, {}))
            files_in += max(1, len(text) // 700)
        _all, changed, _same = service.upsert_files(owner, big, chosen, "code")
        db.session.commit()
        set_up = time.perf_counter()
        big_stats = indexing.run(big.id, [d.id for d in changed], "bench-setup")
        set_up = time.perf_counter() - set_up
        started = time.perf_counter()
        _all, changed_again, unchanged = service.upsert_files(owner, big, chosen, "code")
        db.session.commit()
        noop_seconds = time.perf_counter() - started
        rows.append((f"re-index, nothing changed ({len(chosen)} files)", f"{big_stats.chunks} chunks",
                     f"{noop_seconds:.2f} s", f"{len(changed_again)} files re-indexed"))
        started = time.perf_counter()
        indexing.rebuild(big.id)
        rows.append(("`flask rag reindex` (rebuild FAISS + BM25 from the database)", f"{big_stats.chunks} chunks",
                     f"{time.perf_counter() - started:.2f} s", "no embedding"))
        print(f"[throughput] set-up of {big_stats.chunks} chunks took {set_up:.0f} s", file=sys.stderr)
    out = ["Indexing throughput (MiniLM on CPU; same chunks for pipeline and raw encode)", "",
           "| what | size | rate / time | note |", "|---|---|---|---|"]
    out += [f"| {a} | {b} | {c} | {d} |" for a, b, c, d in rows]
    return "\n".join(out)


# ============================================================================ 3. latency + ANN recall

def clustered(n: int, dimension: int, rng: np.random.Generator, centers: int = 2000, latent: int = 48) -> np.ndarray:
    """Unit vectors shaped like sentence embeddings: topics (clusters) in a space of low intrinsic dimension
    (`latent`), mapped into `dimension`, plus a little isotropic noise. Uniform noise in all 384 dimensions
    would be no test of an approximate index: there, every neighbour is as far as every other."""
    projection = rng.normal(size=(latent, dimension)).astype(np.float32) / np.sqrt(latent)
    middle = rng.normal(size=(centers, latent)).astype(np.float32)
    out = np.empty((n, dimension), dtype=np.float32)
    for start in range(0, n, 100_000):
        size = min(100_000, n - start)
        points = middle[rng.integers(0, centers, size)] + 0.7 * rng.normal(size=(size, latent)).astype(np.float32)
        block = points @ projection + 0.05 * rng.normal(size=(size, dimension)).astype(np.float32)
        out[start:start + size] = block / np.linalg.norm(block, axis=1, keepdims=True)
    return out


WORDS = ("request response session token cache index query vector search rank score chunk document parse "
         "config server client worker queue retry timeout error handler router model embed tensor batch user "
         "account billing invoice payment stripe webhook event signal thread process socket stream file path "
         "json yaml schema field validate migrate table column row commit rollback lock version deploy build "
         "test assert fixture mock proxy header cookie origin policy secret vault key rotate expire").split()


def synthetic_text(rng: random.Random) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(rng.randint(30, 90)))


def fill(app: Any, owner: str, name: str, size: int, rng: np.random.Generator) -> str:
    """A collection of `size` synthetic chunks, written the way the pipeline writes them, then published."""
    import sqlalchemy as sa

    from app.extensions import db
    from app.ids import new_id, utcnow
    from plugins.rag import indexing, service
    from plugins.rag.models import RagChunk, RagDocument

    words = random.Random(size)
    with app.app_context():
        collection = service.collection_for_write(owner, name)
        document = RagDocument(owner_id=owner, collection_id=collection.id, source_type="code", source="synthetic",
                               path="synthetic.txt", status="ready", failures=[], chunk_count=size, meta={})
        db.session.add(document)
        db.session.commit()
        vectors = clustered(size, 384, rng)
        for start in range(0, size, 5000):
            db.session.execute(sa.insert(RagChunk), [
                {"id": new_id("chk"), "vector_id": size * 100 + start + i, "owner_id": owner,
                 "collection_id": collection.id, "document_id": document.id, "active": True, "ordinal": start + i,
                 "content": synthetic_text(words),
                 "content_hash": f"{start + i:064x}", "embedding": vectors[start + i].tobytes(), "token_count": 60,
                 "source_type": "code", "path": f"src/module_{(start + i) % 500}.py", "language": "python",
                 "meta": {}, "created_at": utcnow()}
                for i in range(min(5000, size - start))])
            db.session.commit()
        started = time.perf_counter()
        indexing.rebuild(collection.id)
        print(f"[latency] {size} chunks published in {time.perf_counter() - started:.0f} s", file=sys.stderr)
        return collection.id


def _post(url: str, body: dict[str, Any], token: str) -> tuple[float, dict[str, Any]]:
    request = urllib.request.Request(url, data=json.dumps(body).encode(), method="POST",
                                     headers={"Content-Type": "application/json", "Authorization": f"Bearer {token}"})
    started = time.perf_counter()
    with urllib.request.urlopen(request, timeout=120) as response:
        data = json.loads(response.read())
    return time.perf_counter() - started, data


def latency(args: argparse.Namespace) -> str:
    from bench.http import Resources, Server

    settings = argparse.Namespace(redis_url=args.redis_url, database="postgresql", pg_admin_dsn=args.pg_admin_dsn,
                                  anonymous_limit="10000000/minute", lease=0.01, keep=False)
    resources = Resources(settings)
    resources.open()
    rows = []
    try:
        instance = resources.tmp / "instance"
        app = _app(resources.database_url, instance)
        _migrate(app)
        owner = _user(app, f"bench-{resources.token}@example.com")
        with app.app_context():
            from plugins.keys import service as keys

            _key, token = keys.create_for_user(owner, name="bench", scopes=["rag:read"],
                                               rate_limit="10000000/minute")
        rng = np.random.default_rng(11)
        sizes = [int(s) for s in args.latency_sizes.split(",") if s]
        collections = {size: fill(app, owner, f"synthetic-{size}", size, rng) for size in sizes}
        server = Server("wsgi:app", "gevent", 2, resources)
        server.env["LUNAOS_RATELIMIT_TIERS"] = json.dumps({t: "10000000/minute" for t in ("free", "pro", "team")})
        for name, value in SECRETS.items():  # the server must verify the key this process issued
            server.env[f"LUNAOS_{name}"] = value
        server.start(timeout=120)
        try:
            queries = [" ".join(random.Random(i).sample(WORDS, 4)) for i in range(args.requests)]
            for size, collection_id in collections.items():
                for _ in range(6):  # both workers load the model and this collection's index before timing
                    _post(server.base + "/v1/rag/search", {"query": "warm up", "collection": collection_id}, token)
                times, query_times = [], []
                for query in queries:
                    elapsed, data = _post(server.base + "/v1/rag/search",
                                          {"query": query, "collection": collection_id, "limit": 10}, token)
                    assert data["data"]["results"], data
                    times.append(elapsed * 1000)
                    query_times.append(data["data"]["query_time"] * 1000)
                times.sort()
                rows.append((f"{size:,} chunks", "hybrid", f"{statistics.median(times):.1f}",
                             f"{times[int(len(times) * 0.95) - 1]:.1f}", f"{statistics.median(query_times):.1f}"))
        finally:
            server.stop()
    finally:
        resources.close()
    out = [f"Search latency over HTTP (gunicorn, 2 gevent workers, PostgreSQL, Redis; {args.requests} sequential "
           "requests, limit 10)", "",
           "| collection | mode | p50 ms | p95 ms | server query_time p50 ms |", "|---|---|---|---|---|"]
    out += [f"| {a} | {b} | {c} | {d} | {e} |" for a, b, c, d, e in rows]
    return "\n".join(out)


def ann(args: argparse.Namespace) -> str:
    from plugins.rag.vector_index import IndexSettings, VectorIndex

    rng = np.random.default_rng(5)
    size = args.ann_size
    vectors = clustered(size, 384, rng)
    ids = np.arange(size, dtype=np.int64) + 1
    picks = rng.choice(size, args.ann_queries, replace=False)
    queries = vectors[picks] + 0.02 * rng.normal(size=(args.ann_queries, 384)).astype(np.float32)
    queries /= np.linalg.norm(queries, axis=1, keepdims=True)
    exact = VectorIndex.build(384, ids, vectors, IndexSettings(), "flat")
    truth, flat_times = [], []
    for q in queries:
        started = time.perf_counter()
        truth.append({i for i, _ in exact.search(q, 10, IndexSettings())})
        flat_times.append((time.perf_counter() - started) * 1000)
    del exact
    rows = [(f"flat (exact), {size:,}", "-", "1.000", f"{statistics.median(flat_times):.2f}")]
    for kind in args.ann_kinds.split(","):
        settings = IndexSettings(ann_threshold=1, ann_kind=kind)
        started = time.perf_counter()
        index = VectorIndex.build(384, ids, vectors, settings, kind)
        build = time.perf_counter() - started
        knobs = [("nprobe", n) for n in (16, 32, 64)] if kind == "ivf" else [("efSearch", e) for e in (64, 96, 160)]
        for knob, value in knobs:
            tuned = IndexSettings(ann_threshold=1, ann_kind=kind, ivf_nprobe=value if knob == "nprobe" else 32,
                                  hnsw_ef_search=value if knob == "efSearch" else 96)
            recalls, times = [], []
            for q, expected in zip(queries, truth, strict=True):
                started = time.perf_counter()
                found = {i for i, _ in index.search(q, 10, tuned)}
                times.append((time.perf_counter() - started) * 1000)
                recalls.append(len(found & expected) / 10)
            rows.append((f"{kind} {knob}={value}, {size:,}", f"{build:.0f} s", f"{statistics.mean(recalls):.3f}",
                         f"{statistics.median(times):.2f}"))
        del index
    out = [f"Approximate index against exact search ({size:,} clustered 384-d vectors, {args.ann_queries} queries, "
           "one thread of FAISS per query)", "",
           "| index | build | recall@10 | p50 ms |", "|---|---|---|---|"]
    out += [f"| {a} | {b} | {c} | {d} |" for a, b, c, d in rows]
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", default="quality,throughput,latency,ann",
                        help="comma-separated tables: quality, throughput, latency, ann")
    parser.add_argument("--packages", default=DEFAULT_PACKAGES, help="installed packages to take functions from")
    parser.add_argument("--functions", type=int, default=1500, help="functions in the quality set")
    parser.add_argument("--throughput-chunks", type=int, default=400)
    parser.add_argument("--reindex-chunks", type=int, default=10_000)
    parser.add_argument("--latency-sizes", default="10000,100000")
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--ann-size", type=int, default=100_000)
    parser.add_argument("--ann-kinds", default="hnsw,ivf")
    parser.add_argument("--ann-queries", type=int, default=200)
    parser.add_argument("--redis-url", default=os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/0"))
    parser.add_argument("--pg-admin-dsn", default=os.environ.get("BENCH_PG_ADMIN_DSN",
                                                                 "host=127.0.0.1 port=5432 dbname=test"))
    args = parser.parse_args(argv)
    tables = {"quality": quality, "throughput": throughput, "latency": latency, "ann": ann}
    wanted = [t.strip() for t in args.only.split(",") if t.strip()]
    unknown = [t for t in wanted if t not in tables]
    if unknown:
        parser.error(f"unknown table(s): {', '.join(unknown)}")
    for name in wanted:
        started = time.perf_counter()
        print(tables[name](args), flush=True)
        print(f"({name}: {time.perf_counter() - started:.0f} s)\n", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
