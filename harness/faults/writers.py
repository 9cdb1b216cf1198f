"""The durability drill's writers: threads that keep writing to one stateful service each and keep a
ledger of what the service acknowledged.

Each write is one of three outcomes, and only the first is a promise the service made:

* **acknowledged** — the service answered success (201/200/202) with what it stored: that write must
  be there after any crash;
* **in doubt** — the request may have reached the service but no answer came (connection cut, a
  timeout, a 5xx while it died): it may or may not be there, but if it is, it must be whole and
  there once;
* **refused** — a definite no (connection refused before anything was sent, a 4xx, a 429): nothing
  was written.

A writer never retries a write whose fate it does not know (that is how a client makes duplicates
an API did not promise); it moves on to the next one. Writers pace themselves (``pace_s``) and back
off on refusals, so a service that is down is not hammered.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import Any

import httpx

from harness.httpclient import client
from suite.settings import Settings

TIMEOUT = httpx.Timeout(60.0, connect=3.0)
ACKED, IN_DOUBT, REFUSED = "acknowledged", "in doubt", "refused"


@dataclass
class Write:
    """One write and its outcome; ``key`` is what the verification looks it up by."""

    n: int
    key: str
    outcome: str
    at: float  # epoch seconds, when the request was sent
    detail: dict[str, Any] = field(default_factory=dict)
    error: str = ""


def classify(exc: Exception | None, resp: httpx.Response | None, ok: tuple[int, ...]) -> tuple[str, str]:
    """(outcome, error) of a request that raised ``exc`` or answered ``resp``."""
    if exc is not None:
        if isinstance(exc, httpx.ConnectError):  # nothing was sent
            return REFUSED, f"{type(exc).__name__}: {exc}"[:200]
        return IN_DOUBT, f"{type(exc).__name__}: {exc}"[:200]
    assert resp is not None
    if resp.status_code in ok:
        return ACKED, ""
    outcome = IN_DOUBT if resp.status_code >= 500 else REFUSED
    return outcome, f"HTTP {resp.status_code}: {resp.text[:160]}"


class Writer:
    """A thread writing to ``service`` every ``pace_s`` until ``stop``; ``writes`` is its ledger."""

    service = ""

    def __init__(self, settings: Settings, tag: str, headers: dict[str, dict[str, str]], pace_s: float) -> None:
        self.settings, self.tag, self.headers, self.pace_s = settings, tag, headers, pace_s
        self.writes: list[Write] = []
        self.errors: list[str] = []  # unexpected failures of the writer itself
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name=f"durability-{self.service}", daemon=True)
        self._n = 0

    @property
    def place(self) -> str:
        """The drill's own project, collection and sandbox folder: nothing of anyone else's is touched."""
        return f"durability-{self.tag}"

    def url(self, path: str, service: str | None = None) -> str:
        return self.settings.url(service or self.service) + path

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=120)

    def _loop(self) -> None:
        while not self._stop.is_set():
            t0 = time.monotonic()
            try:
                write = self.write_one(self._n)
            except Exception as exc:  # a bug in a writer must show, not hang the drill
                self.errors.append(f"{type(exc).__name__}: {exc}"[:300])
                write = None
            if write is not None:
                self.writes.append(write)
                self._n += 1
            pause = self.pace_s if write is None or write.outcome == ACKED else max(self.pace_s, 0.5)
            self._stop.wait(max(0.0, pause - (time.monotonic() - t0)))

    def post(self, path: str, body: dict, role: str, ok: tuple[int, ...], service: str | None = None,
             request_id: str | None = None) -> tuple[str, str, httpx.Response | None]:
        headers = dict(self.headers[role])
        if request_id:
            headers["X-Request-Id"] = request_id
        try:
            resp = client().post(self.url(path, service), json=body, headers=headers, timeout=TIMEOUT)
        except httpx.HTTPError as exc:
            outcome, error = classify(exc, None, ok)
            return outcome, error, None
        outcome, error = classify(None, resp, ok)
        return outcome, error, resp

    def write_one(self, n: int) -> Write | None:
        raise NotImplementedError

    def counts(self) -> dict[str, int]:
        out = {ACKED: 0, IN_DOUBT: 0, REFUSED: 0}
        for w in self.writes:
            out[w.outcome] += 1
        return out


class MemoryWriter(Writer):
    """Notes, each with a text of its own; acknowledged = 201 with the note's id."""

    service = "memory"

    @property
    def project(self) -> str:
        return self.place

    def text(self, n: int) -> str:
        return f"durability drill {self.tag} note {n:05d}: acknowledged means it is still here after kill -9"

    def write_one(self, n: int) -> Write:
        at = time.time()
        outcome, error, resp = self.post("/v1/memory/notes", {"project": self.project, "text": self.text(n),
                                                              "tags": ["durability"]}, "developer", (201,))
        detail = {"id": resp.json()["id"]} if outcome == ACKED and resp is not None else {}
        return Write(n, self.text(n), outcome, at, detail, error)


class RagWriter(Writer):
    """Documents of several chunks. Every fourth write re-indexes an earlier document shorter (a new
    version with fewer chunks: the store's riskiest replacement). Every chunk of a version carries the
    version's token and the last one its end marker, so the check can tell a whole version from a
    cut one or a mix of two, whatever the chunking."""

    service = "rag"

    def __init__(self, *args, chunks: tuple[int, int] = (2, 6), **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.chunks = chunks
        self.versions: dict[str, int] = {}  # doc id -> newest version sent

    @property
    def collection(self) -> str:
        return self.place

    @staticmethod
    def token(doc_id: str, version: int) -> str:
        return f"{doc_id}v{version}"

    def text(self, doc_id: str, version: int, chunks: int) -> str:
        """About ``chunks`` chunks of ``rag.chunk_chars`` each; the version's token in every sentence."""
        size = self.settings.rag.chunk_chars
        sentence = f"Sentence of {self.token(doc_id, version)} about restarts and recovery. "
        body = sentence * max(1, (chunks * (size - self.settings.rag.chunk_overlap)) // len(sentence))
        return body + f"END-{self.token(doc_id, version)}"

    def write_one(self, n: int) -> Write:
        done = [d for d, v in self.versions.items() if v == 1]
        if n % 4 == 3 and done:  # shrink an earlier document: version 2, two chunks fewer or one
            doc_id = done[n % len(done)]
            version, chunks = 2, 1
        else:
            doc_id, version = f"d{n:05d}", 1
            chunks = self.chunks[0] + n % (self.chunks[1] - self.chunks[0] + 1)
        self.versions[doc_id] = max(version, self.versions.get(doc_id, 0))
        at = time.time()
        body = {"collection": self.collection,
                "documents": [{"id": doc_id, "text": self.text(doc_id, version, chunks), "metadata": {"v": version}}]}
        outcome, error, resp = self.post("/index", body, "developer", (200,))
        detail: dict[str, Any] = {"doc": doc_id, "version": version}
        if outcome == ACKED and resp is not None:
            detail["chunks"] = resp.json()["per_document"][0]["chunks"]
        return Write(n, f"{doc_id}@{version}", outcome, at, detail, error)


class AuditWriter(Writer):
    """Audited tool calls (``system_info``: read-only, so they never need an approval), each with a
    request id of its own that its audit row carries; acknowledged = 200."""

    service = "tools"

    def write_one(self, n: int) -> Write:
        rid = f"dur-{self.tag}-t{n:05d}"
        at = time.time()
        outcome, error, _ = self.post("/tools/system_info", {}, "developer", (200,), request_id=rid)
        return Write(n, rid, outcome, at, {}, error)


class ApprovalWriter(Writer):
    """Destructive calls that wait for an admin: the admin writes a file ``X``, the developer asks to
    edit it to ``X+`` (202: the approval request is acknowledged), the admin approves (200 with
    ``executed``: the execution is acknowledged). Every execution adds one ``+``, so the file itself
    counts how often the call ran."""

    service = "tools"

    @property
    def folder(self) -> str:
        return self.place

    def path(self, n: int) -> str:
        return f"{self.folder}/a{n:05d}.txt"

    def write_one(self, n: int) -> Write | None:
        outcome, _, _ = self.post("/tools/write_file", {"path": self.path(n), "content": "X", "create_dirs": True},
                                  "admin", (200,))
        if outcome != ACKED:
            return None  # no file to edit yet: try this number again
        at = time.time()
        outcome, error, resp = self.post("/tools/edit_file", {"path": self.path(n), "old_text": "X", "new_text": "X+"},
                                         "developer", (202,))
        if outcome != ACKED or resp is None:
            return Write(n, self.path(n), outcome, at, {}, error)
        approval = resp.json()["approval_id"]
        decided, derror, dresp = self.post(f"/approvals/{approval}/approve", {"reason": "durability drill"},
                                           "admin", (200,))
        executed = decided == ACKED and dresp is not None and dresp.json().get("status") == "executed"
        return Write(n, self.path(n), ACKED, at,
                     {"approval": approval, "execution": ACKED if executed else (IN_DOUBT if decided != REFUSED
                                                                                 else REFUSED),
                      "status": dresp.json().get("status") if dresp is not None and decided == ACKED else None},
                     derror)
