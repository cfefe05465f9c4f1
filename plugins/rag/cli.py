"""`flask rag ...`: index a directory from the shell, rebuild indexes, show statistics."""
from __future__ import annotations

import json
import os
import uuid
from pathlib import Path

import click
import sqlalchemy as sa
from flask import current_app
from flask.cli import AppGroup

from app.extensions import db

from . import indexing, runtime, service
from .models import RagChunk, RagCollection, RagDocument
from .sources.files import looks_binary

rag_cli = AppGroup("rag", help="Index directories, rebuild indexes and show retrieval statistics.")
ALWAYS_SKIPPED = {".git", ".hg", ".svn", "node_modules", "__pycache__", ".venv", "venv", ".tox", ".mypy_cache",
                  ".pytest_cache", ".ruff_cache", "dist", "build", ".idea", ".vscode"}


def _owner(email: str) -> str:
    from plugins.auth import service as auth

    user = auth.find_by_email(email)
    if user is None:
        raise click.ClickException(f"no user with email {email!r}")
    return user.id


class _Ignore:
    """.gitignore files of a tree, each applying below its own directory."""

    def __init__(self, root: Path):
        self.root = root
        self.specs: dict[str, object] = {}

    def load(self, directory: Path) -> None:
        import pathspec

        ignore = directory / ".gitignore"
        if ignore.is_file():
            lines = ignore.read_text(encoding="utf-8", errors="replace").splitlines()
            self.specs[directory.relative_to(self.root).as_posix()] = pathspec.GitIgnoreSpec.from_lines(lines)

    def ignored(self, relative: str, is_dir: bool) -> bool:
        for base, spec in self.specs.items():
            prefix = "" if base == "." else base + "/"
            if prefix and not relative.startswith(prefix):
                continue
            candidate = relative[len(prefix):] + ("/" if is_dir else "")
            if spec.match_file(candidate):  # type: ignore[attr-defined]
                return True
        return False


def scan(root: Path, globs: tuple[str, ...], use_gitignore: bool, max_bytes: int, max_files: int
         ) -> tuple[list[tuple[str, str]], dict[str, int]]:
    """(relative path, text) of the indexable files under root, and counts of what was skipped."""
    import pathspec

    wanted = pathspec.PathSpec.from_lines("gitignore", globs) if globs else None
    skipped = {"ignored": 0, "binary": 0, "too_large": 0, "unreadable": 0, "over_limit": 0}
    found: list[tuple[str, str]] = []
    if root.is_file():
        entries = [(root.parent, root.name)]
        base = root.parent
    else:
        entries, base = [], root
        ignore = _Ignore(root)
        for directory, dirnames, filenames in os.walk(root):
            current = Path(directory)
            if use_gitignore:
                ignore.load(current)
            relative_dir = current.relative_to(root).as_posix()
            keep = []
            for name in sorted(dirnames):
                relative = name if relative_dir == "." else f"{relative_dir}/{name}"
                hidden = name.startswith(".") and name != ".github"
                if name in ALWAYS_SKIPPED or hidden or (use_gitignore and ignore.ignored(relative, True)):
                    skipped["ignored"] += 1
                    continue
                keep.append(name)
            dirnames[:] = keep
            for name in sorted(filenames):
                relative = name if relative_dir == "." else f"{relative_dir}/{name}"
                if name.startswith(".") or (use_gitignore and ignore.ignored(relative, False)):
                    skipped["ignored"] += 1
                    continue
                entries.append((current, name))
    for directory, name in entries:
        path = directory / name
        relative = path.relative_to(base).as_posix()
        if wanted is not None and not wanted.match_file(relative):
            continue
        try:
            if path.is_symlink() or not path.is_file():
                continue
            size = path.stat().st_size
            if size > max_bytes:
                skipped["too_large"] += 1
                continue
            data = path.read_bytes()
        except OSError:
            skipped["unreadable"] += 1
            continue
        if not data.strip():
            continue
        if looks_binary(data):
            skipped["binary"] += 1
            continue
        if len(found) >= max_files:
            skipped["over_limit"] += 1
            continue
        found.append((relative, data.decode("utf-8", errors="replace").replace("\r\n", "\n")))
    return found, skipped


@rag_cli.command("index")
@click.argument("path", type=click.Path(exists=True, file_okay=True, dir_okay=True, path_type=Path))
@click.option("--user", "email", required=True, help="Owner of the indexed content (email).")
@click.option("--collection", default=None, help="Collection name or id (default: the owner's `default`).")
@click.option("--glob", "globs", multiple=True, help="Only paths matching this pattern, e.g. '*.py' (repeatable).")
@click.option("--chunking", type=click.Choice(["code", "recursive", "semantic", "fixed"]), default=None,
              help="Chunking strategy (default: code for source files, recursive for the rest).")
@click.option("--no-gitignore", is_flag=True, help="Index files that .gitignore excludes.")
@click.option("--prune", is_flag=True, help="Remove documents of files no longer present under PATH.")
def index_command(path: Path, email: str, collection: str | None, globs: tuple[str, ...], chunking: str | None,
                  no_gitignore: bool, prune: bool) -> None:
    """Index the files under PATH; unchanged files are skipped, changed ones re-indexed."""
    owner_id = _owner(email)
    config = current_app.config
    files, skipped = scan(path.resolve(), globs, not no_gitignore, int(config["RAG_MAX_FILE_BYTES"]),
                          int(config["RAG_MAX_FILES"]))
    target = service.collection_for_write(owner_id, collection)
    _all, changed, unchanged = service.upsert_files(owner_id, target, [(p, t, None, {}) for p, t in files], "code",
                                                    chunking)
    db.session.commit()
    changed_ids = [d.id for d in changed]
    summary = f"{len(files)} files: {len(changed_ids)} new or changed, {len(unchanged)} unchanged"
    if any(skipped.values()):
        summary += "; skipped " + ", ".join(f"{v} {k.replace('_', ' ')}" for k, v in skipped.items() if v)
    click.echo(summary)
    stats = None
    if changed_ids:
        with click.progressbar(length=1000, label="indexing", show_percent=True, show_eta=True) as bar:
            done = [0]

            def report(fraction: float, message: str) -> None:
                target_steps = int(fraction * 1000)
                if target_steps > done[0]:
                    bar.update(target_steps - done[0])
                    done[0] = target_steps

            stats = indexing.run(target.id, changed_ids, f"cli_{uuid.uuid4().hex[:12]}",
                                 indexing.Progress(report=report))
    if prune:
        import pathspec

        present = {p for p, _ in files}
        wanted = pathspec.PathSpec.from_lines("gitignore", globs) if globs else None
        stale = [d for d in db.session.scalars(sa.select(RagDocument).where(
            RagDocument.collection_id == target.id, RagDocument.source_type == "code"))
            if d.path not in present and (wanted is None or wanted.match_file(d.path or ""))]
        if stale:
            indexing.publish(target.id, None, [d.id for d in stale], deleting=True)
            click.echo(f"removed {len(stale)} documents of deleted files")
    if stats is not None:
        click.echo(f"indexed into {target.name} ({target.id}): {stats.chunks} chunks, {stats.embedded} embedded, "
                   f"{stats.reused} reused")
        for document_id in stats.failed_documents:
            document = db.session.get(RagDocument, document_id)
            click.echo(f"  failed {document.path if document else document_id}: "
                       f"{document.error if document else ''}", err=True)
        for document in db.session.scalars(sa.select(RagDocument).where(RagDocument.id.in_(changed_ids))):
            for failure in document.failures or []:
                click.echo(f"  skipped {failure.get('path')}: {failure.get('error')}", err=True)


def _collections(collection: str | None, email: str | None) -> list[RagCollection]:
    statement = sa.select(RagCollection).order_by(RagCollection.created_at)
    if email:
        statement = statement.where(RagCollection.owner_id == _owner(email))
    if collection:
        column = RagCollection.id if collection.startswith("col_") else RagCollection.name
        statement = statement.where(column == collection)
    return list(db.session.scalars(statement))


@rag_cli.command("reindex")
@click.option("--collection", default=None, help="Only this collection (id, or name with --user).")
@click.option("--user", "email", default=None, help="Only this owner's collections.")
@click.option("--rechunk", is_flag=True, help="Chunk every document again (after changing chunk settings); "
                                              "embeddings of unchanged chunks are reused.")
def reindex_command(collection: str | None, email: str | None, rechunk: bool) -> None:
    """Rebuild collections' FAISS and BM25 indexes from the database (no embedding unless text changed)."""
    found = _collections(collection, email)
    if not found:
        raise click.ClickException("no matching collection")
    for item in found:
        if rechunk:
            ids = list(db.session.scalars(sa.select(RagDocument.id).where(RagDocument.collection_id == item.id)))
            stats = indexing.run(item.id, ids, f"cli_{uuid.uuid4().hex[:12]}")
            click.echo(f"{item.id} {item.name}: {stats.chunks} chunks ({stats.embedded} embedded, "
                       f"{stats.reused} reused)")
        version = indexing.rebuild(item.id)
        click.echo(f"{item.id} {item.name}: index version {version}")


@rag_cli.command("stats")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
def stats_command(as_json: bool) -> None:
    """Collections with their owners, documents, chunks, index versions and sizes on disk."""
    store = runtime.store()
    collections = list(db.session.scalars(sa.select(RagCollection).order_by(RagCollection.created_at)))
    counts = service.collection_stats(c.id for c in collections)
    staged = dict(db.session.execute(sa.select(RagChunk.collection_id, sa.func.count())
                                     .where(RagChunk.active.is_(False)).group_by(RagChunk.collection_id)).all())
    rows = [{"id": c.id, "owner_id": c.owner_id, "name": c.name, "embedder": c.embedder,
             "documents": counts[c.id]["documents"], "chunks": counts[c.id]["chunks"],
             "staged": staged.get(c.id, 0), "index_version": c.index_version,
             "disk_bytes": store.disk_bytes(c.id, c.index_version)} for c in collections]
    if as_json:
        click.echo(json.dumps({"collections": rows, "index_dir": str(store.root)}, indent=2))
        return
    click.echo(f"index directory: {store.root}")
    click.echo(f"{'COLLECTION':<32} {'NAME':<20} {'OWNER':<32} {'DOCS':>6} {'CHUNKS':>8} {'DISK':>10}")
    for row in rows:
        click.echo(f"{row['id']:<32} {row['name'][:20]:<20} {row['owner_id']:<32} {row['documents']:>6} "
                   f"{row['chunks']:>8} {_size(row['disk_bytes']):>10}")
    click.echo(f"total: {len(rows)} collections, {sum(r['documents'] for r in rows)} documents, "
               f"{sum(r['chunks'] for r in rows)} chunks")


def _size(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024:
            return f"{n:.0f} {unit}"
        n /= 1024  # type: ignore[assignment]
    return f"{n:.1f} TiB"
