"""A Hugging Face Hub on loopback for the Hub-loading tests: the route huggingface_hub's file downloads use,
served from local directories by a real HTTP server in a thread of the test process, on a free port.

``HEAD`` / ``GET /{owner}/{name}/resolve/{revision}/{file}`` answer as the Hub does: the file with its
``X-Repo-Commit`` (the revision's commit hash), ``ETag`` and ``Content-Length``, or a 404 whose
``X-Error-Code`` (``RepoNotFound``, ``RevisionNotFound``, ``EntryNotFound``) huggingface_hub turns into its
exception types. A repository has one revision, ``main``, also reachable by its commit hash.
"""

from __future__ import annotations

import contextlib
import hashlib
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Iterator
from urllib.parse import unquote, urlparse


class Hub:
    def __init__(self, url: str):
        self.url = url
        self.repositories: dict[str, Path] = {}
        self.downloads: list[str] = []  # "repo_id/file" of every GET, in order

    def add(self, repo_id: str, directory: Path) -> str:
        """Publish ``directory``'s files as the model ``repo_id``; returns its commit hash."""
        self.repositories[repo_id] = Path(directory)
        return commit_of(repo_id)


def commit_of(repo_id: str) -> str:
    return hashlib.sha1(repo_id.encode()).hexdigest()


def _handler(hub: Hub):
    class Handler(BaseHTTPRequestHandler):
        def do_HEAD(self):
            self._answer(body=False)

        def do_GET(self):
            self._answer(body=True)

        def _answer(self, body: bool):
            parts = unquote(urlparse(self.path).path).strip("/").split("/")
            if len(parts) < 5 or parts[2] != "resolve":
                return self._error(404, "RepoNotFound")
            repo_id, revision, file = "/".join(parts[:2]), parts[3], "/".join(parts[4:])
            if repo_id not in hub.repositories:
                return self._error(404, "RepoNotFound")
            if revision not in ("main", commit_of(repo_id)):
                return self._error(404, "RevisionNotFound")
            path = hub.repositories[repo_id] / file
            if not path.is_file():
                return self._error(404, "EntryNotFound")
            content = path.read_bytes()
            self.send_response(200)
            self.send_header("X-Repo-Commit", commit_of(repo_id))
            self.send_header("ETag", f'"{hashlib.sha256(content).hexdigest()}"')
            self.send_header("Content-Length", str(len(content)))
            self.end_headers()
            if body:
                hub.downloads.append(f"{repo_id}/{file}")
                self.wfile.write(content)

        def _error(self, status: int, code: str):
            self.send_response(status)
            self.send_header("X-Error-Code", code)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args):  # no line per request in the test output
            pass

    return Handler


@contextlib.contextmanager
def running_hub() -> Iterator[Hub]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), None)
    hub = Hub(f"http://127.0.0.1:{server.server_address[1]}")
    server.RequestHandlerClass = _handler(hub)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield hub
    finally:
        server.shutdown()
        server.server_close()
