"""A loopback stand-in for the Hugging Face Hub's HTTP API, enough for ``HfApi.create_repo``
and ``HfApi.upload_folder`` / ``create_commit`` (what ``curate push`` calls). Point
``HF_ENDPOINT`` (or ``HfApi(endpoint=...)``) at :attr:`FakeHub.url`; never the real Hub.

Files arrive inline in the commit: the pre-upload answer says ``regular`` for every file, which
the real Hub also does for small text files, so no LFS or Xet transfer is involved. Every
request is recorded in :attr:`FakeHub.requests`; committed files are in :attr:`FakeHub.repos`.
"""

from __future__ import annotations

import base64
import hashlib
import json
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import unquote, urlparse


@dataclass
class FakeRepo:
    repo_id: str
    repo_type: str
    private: bool
    files: dict[str, bytes] = field(default_factory=dict)
    commits: list[dict[str, Any]] = field(default_factory=list)


class FakeHub:
    """``with FakeHub() as hub: ...`` serves on 127.0.0.1 (a free port) until the block ends."""

    def __init__(self, token: str = "hf_fake_token") -> None:
        self.token = token
        self.repos: dict[str, FakeRepo] = {}
        self.requests: list[tuple[str, str]] = []
        self.unknown: list[tuple[str, str]] = []
        self.cards_validated = 0
        self._lock = threading.Lock()
        hub = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:  # quiet
                pass

            def do_GET(self) -> None:
                hub._handle(self, "GET")

            def do_POST(self) -> None:
                hub._handle(self, "POST")

            def do_PUT(self) -> None:
                hub._handle(self, "PUT")

            def do_HEAD(self) -> None:
                hub._handle(self, "HEAD")

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def __enter__(self) -> FakeHub:
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._server.shutdown()
        self._server.server_close()

    # -- dispatch ---------------------------------------------------------------------------
    def _handle(self, req: BaseHTTPRequestHandler, method: str) -> None:
        parsed = urlparse(req.path)
        path = unquote(parsed.path)
        length = int(req.headers.get("Content-Length") or 0)
        body = req.rfile.read(length) if length else b""
        with self._lock:
            self.requests.append((method, path))
        if req.headers.get("Authorization") != f"Bearer {self.token}":
            return self._send(req, 401, {"error": "Invalid credentials in Authorization header"})
        parts = path.strip("/").split("/")
        try:
            if method == "POST" and path == "/api/repos/create":
                return self._create(req, json.loads(body or b"{}"))
            if method == "POST" and path == "/api/validate-yaml":
                return self._validate_yaml(req, json.loads(body)["content"])
            # /api/{datasets|models|spaces}/{owner}/{name}/{action}/{revision...}
            if len(parts) >= 5 and parts[0] == "api" and parts[1] in ("datasets", "models",
                                                                      "spaces"):
                repo_id = f"{parts[2]}/{parts[3]}"
                action = parts[4]
                repo = self.repos.get(repo_id)
                if repo is None:
                    return self._send(req, 404, {"error": f"Repository {repo_id} not found"},
                                      {"X-Error-Code": "RepoNotFound"})
                if method == "POST" and action == "preupload":
                    files = json.loads(body)["files"]
                    return self._send(req, 200, {"files": [
                        {"path": f["path"], "uploadMode": "regular", "shouldIgnore": False,
                         "oid": None} for f in files], "commitOid": self._head(repo)})
                if method == "GET" and action == "tree":
                    return self._send(req, 200, [
                        {"type": "file", "path": p, "size": len(b),
                         "oid": hashlib.sha1(b).hexdigest()} for p, b in sorted(repo.files.items())])
                if method == "POST" and action == "commit":
                    return self._commit(req, repo, body)
                if method == "GET" and action == "revision":
                    return self._send(req, 200, {"id": repo_id, "sha": self._head(repo),
                                                 "private": repo.private, "siblings": [
                                                     {"rfilename": p} for p in repo.files]})
        except (ValueError, KeyError) as exc:
            return self._send(req, 400, {"error": f"bad request: {exc}"})
        with self._lock:
            self.unknown.append((method, path))
        return self._send(req, 404, {"error": f"fake hub: no endpoint {method} {path}"})

    def _send(self, req: BaseHTTPRequestHandler, code: int, payload: Any,
              headers: dict[str, str] | None = None) -> None:
        data = json.dumps(payload).encode()
        req.send_response(code)
        req.send_header("Content-Type", "application/json")
        req.send_header("Content-Length", str(len(data)))
        for k, v in (headers or {}).items():
            req.send_header(k, v)
        req.end_headers()
        if req.command != "HEAD":
            req.wfile.write(data)

    @staticmethod
    def _head(repo: FakeRepo) -> str:
        return repo.commits[-1]["oid"] if repo.commits else "0" * 40

    def _create(self, req: BaseHTTPRequestHandler, payload: dict[str, Any]) -> None:
        name = payload["name"]
        owner = payload.get("organization") or "fake-user"
        repo_id = name if "/" in name else f"{owner}/{name}"
        repo_type = payload.get("type") or "model"
        prefix = {"dataset": "datasets/", "space": "spaces/"}.get(repo_type, "")
        url = f"{self.url}/{prefix}{repo_id}"
        if repo_id in self.repos:
            return self._send(req, 409, {"error": "You already created this repo", "url": url})
        private = bool(payload.get("private")) or payload.get("visibility") == "private"
        self.repos[repo_id] = FakeRepo(repo_id, repo_type, private)
        return self._send(req, 200, {"url": url, "name": repo_id})

    def _validate_yaml(self, req: BaseHTTPRequestHandler, content: str) -> None:
        """The card's front matter must be a YAML mapping (the Hub checks more)."""
        import yaml

        errors = []
        if not content.startswith("---\n"):
            errors.append({"message": "no YAML front matter"})
        else:
            try:
                meta = yaml.safe_load(content.split("---\n")[1])
                if not isinstance(meta, dict):
                    errors.append({"message": "front matter is not a mapping"})
            except yaml.YAMLError as exc:
                errors.append({"message": f"invalid YAML: {exc}"})
        self.cards_validated += 1
        return self._send(req, 400 if errors else 200, {"errors": errors, "warnings": []})

    def _commit(self, req: BaseHTTPRequestHandler, repo: FakeRepo, body: bytes) -> None:
        header: dict[str, Any] = {}
        added, deleted = {}, []
        for line in body.decode().splitlines():
            if not line.strip():
                continue
            item = json.loads(line)
            key, value = item["key"], item["value"]
            if key == "header":
                header = value
            elif key == "file":
                if value.get("encoding") != "base64":
                    raise ValueError(f"file {value.get('path')}: encoding {value.get('encoding')}")
                added[value["path"]] = base64.b64decode(value["content"])
            elif key in ("deletedFile", "deletedFolder"):
                deleted.append(value["path"])
            else:
                raise ValueError(f"commit operation {key!r} is not supported by the fake hub")
        for path in deleted:
            repo.files = {p: b for p, b in repo.files.items()
                          if p != path and not p.startswith(path.rstrip("/") + "/")}
        repo.files.update(added)
        oid = hashlib.sha1(f"{len(repo.commits)}{sorted(added)}".encode()).hexdigest()
        repo.commits.append({"oid": oid, "summary": header.get("summary"),
                             "added": sorted(added), "deleted": deleted})
        prefix = "datasets/" if repo.repo_type == "dataset" else ""
        return self._send(req, 200, {"commitUrl": f"{self.url}/{prefix}{repo.repo_id}/commit/{oid}",
                                     "commitOid": oid, "pullRequestUrl": None})
