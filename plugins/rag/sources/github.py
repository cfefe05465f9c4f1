"""The `github` source: a repository's tarball through the GitHub REST API.

`source` is `owner/repo`, `owner/repo@ref` or `https://github.com/owner/repo[/tree/ref]`.
The API base URL (GitHub Enterprise, a mirror) and token are settings; the API
host is trusted and gets the token, a redirect elsewhere (codeload) is checked
by the SSRF guard and gets no token.
"""
from __future__ import annotations

import io
import posixpath
import re
import tarfile
from urllib.parse import quote, urlsplit

from app.errors import ValidationFailed

from .. import ssrf
from ..chunking import detect_language
from . import Extracted, SourceFile
from .files import decode_text, looks_binary

_REPO = re.compile(r"^(?P<owner>[A-Za-z0-9_.-]{1,100})/(?P<repo>[A-Za-z0-9_.-]{1,100})(?:@(?P<ref>[^\s]{1,200}))?$")
_URL = re.compile(r"^https?://(?:www\.)?github\.com/(?P<owner>[A-Za-z0-9_.-]+)/(?P<repo>[A-Za-z0-9_.-]+?)"
                  r"(?:\.git)?(?:/tree/(?P<ref>[^\s]+?))?/?$")
SKIPPED_DIRS = {".git", "node_modules", "vendor", "dist", "build", "__pycache__", ".venv", "venv", ".tox"}


def parse(source: str) -> tuple[str, str, str | None]:
    source = source.strip()
    match = _REPO.match(source) or _URL.match(source)
    if not match:
        raise ValidationFailed({"source": ["Use owner/repo, owner/repo@ref or https://github.com/owner/repo."]})
    return match["owner"], match["repo"], match["ref"]


def tarball_url(api_url: str, owner: str, repo: str, ref: str | None) -> str:
    base = api_url.rstrip("/")
    url = f"{base}/repos/{quote(owner)}/{quote(repo)}/tarball"
    return f"{url}/{quote(ref, safe='')}" if ref else url


def extract(source: str, *, api_url: str, token: str, limits: ssrf.Limits, allowed_hosts: list[str],
            max_file_bytes: int, max_files: int) -> Extracted:
    owner, repo, ref = parse(source)
    api = urlsplit(api_url)
    trusted = [f"{api.hostname}:{api.port or (443 if api.scheme == 'https' else 80)}"]
    headers = {"Accept": "application/vnd.github+json", "X-GitHub-Api-Version": "2022-11-28"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    fetched = ssrf.fetch(tarball_url(api_url, owner, repo, ref), limits, allowed_hosts=allowed_hosts,
                         headers=headers, trusted_hosts=trusted)
    return read_tarball(fetched.body, max_file_bytes=max_file_bytes, max_files=max_files,
                        meta={"repository": f"{owner}/{repo}", "ref": ref})


def read_tarball(data: bytes, *, max_file_bytes: int, max_files: int, meta: dict) -> Extracted:
    out = Extracted(meta=meta)
    try:
        archive = tarfile.open(fileobj=io.BytesIO(data), mode="r:*")
    except tarfile.TarError as error:
        raise ssrf.FetchFailed(f"The repository archive could not be read: {error}.") from None
    with archive:
        for member in archive:
            if not member.isfile():
                continue  # directories, links (never followed), devices
            parts = member.name.split("/", 1)  # the archive's top directory is owner-repo-sha/
            path = posixpath.normpath(parts[1] if len(parts) == 2 else parts[0])
            if path.startswith(("/", "..")) or any(p in SKIPPED_DIRS for p in path.split("/")[:-1]):
                continue
            if len(out.files) >= max_files:
                out.failures.append({"path": path, "error": f"skipped: more than {max_files} files"})
                continue
            if member.size > max_file_bytes:
                out.failures.append({"path": path, "error": f"skipped: larger than {max_file_bytes} bytes"})
                continue
            handle = archive.extractfile(member)
            if handle is None:
                continue
            content = handle.read()
            if not content.strip() or looks_binary(content):
                continue  # images, archives, empty files: nothing to search
            out.files.append(SourceFile(path=path, text=decode_text(content).replace("\r\n", "\n"),
                                        language=detect_language(path)))
    return out
