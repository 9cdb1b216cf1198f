"""The request guard (``suite.web.guard``) on a real uvicorn server: sizes, JSON shape, text encoding.

A small instrumented app stands for every service (``instrument`` installs the guard everywhere);
the attacks against the real services are in ``test_input_attacks.py``.
"""

from __future__ import annotations

import json
import socket

import httpx
import pytest
from fastapi import FastAPI, Request

from suite.instrument import instrument
from suite.settings import Settings
from suite.testing import ServerThread
from suite.web.guard import BadRequest, RequestLimits, check_json

LIMITS = RequestLimits(max_body_bytes=64 * 1024, max_json_depth=8, max_json_values=1000)


@pytest.fixture(scope="module")
def echo(tmp_path_factory):
    """An app whose route answers with the body it received, byte for byte (as ``/embed`` of an
    'embedding' service, so the policy table lets the anonymous caller of a keyless stack in)."""
    settings = Settings(data_dir=tmp_path_factory.mktemp("guard"), auth={"enabled": False},
                        guard={"max_body_bytes": LIMITS.max_body_bytes, "service_max_body_bytes": {},
                               "max_json_depth": LIMITS.max_json_depth, "max_json_values": LIMITS.max_json_values})
    app = FastAPI()
    instrument(app, "embedding", settings=settings)

    @app.post("/embed")
    async def echo_route(request: Request) -> dict:
        return {"received": (await request.body()).decode("utf-8")}

    with ServerThread(app) as server:
        yield server.url


@pytest.mark.parametrize("body,code", [
    (b"[" * 3000, "json_too_deep"),                        # past the C parser's recursion limit
    (b'{"a":' * 9 + b"1" + b"}" * 9, "json_too_deep"),      # past max_json_depth
    (b"\xff", "invalid_utf8"),
    (b'"\xed\xa0\x80"', "invalid_utf8"),                   # a surrogate encoded as UTF-8
    (b'{"temperature": NaN}', "non_finite_number"),
    (b'{"t": -Infinity}', "non_finite_number"),
    (b"[1e400]", "non_finite_number"),                     # overflows a float
    (b"[18446744073709551616]", "number_out_of_range"),    # past int64
    (b"[" + b"9" * 5000 + b"]", "number_out_of_range"),    # past Python's digit limit
    (b'{"path": "\\ud800"}', "invalid_text"),              # a lone surrogate, escaped
    (b'{"\\udfff": 1}', "invalid_text"),                   # ... in a key
    (b"[" + b"0," * 1500 + b"0]", "json_too_large"),       # more values than allowed
    (b"[" + b"[]," * 5000 + b"0]", "json_too_large"),      # ... refused before parsing
    (b'{"a" 1}', "invalid_json"),
])
def test_check_json_refuses(body, code):
    with pytest.raises(BadRequest) as info:
        check_json(body, LIMITS)
    assert info.value.status == 400 and info.value.code == code


def test_check_json_accepts_real_text_and_numbers():
    check_json('{"ok": "\\ud83d\\ude00 안녕", "n": [-9223372036854775808, 2.5e300, 0]}'.encode(), LIMITS)


def test_a_valid_body_reaches_the_route_unchanged(echo):
    body = json.dumps({"text": "안녕 \U0001F600", "n": [1, 2.5]}, ensure_ascii=False).encode()
    r = httpx.post(echo + "/embed", content=body, headers={"content-type": "application/json"})
    assert r.status_code == 200 and r.json()["received"].encode() == body
    assert httpx.get(echo + "/health").status_code == 200  # no body: untouched


@pytest.mark.parametrize("body,code", [(b"\xff", "invalid_utf8"), (b'{"a": NaN}', "non_finite_number"),
                                       (b"[" * 3000, "json_too_deep"), (b'["\\ud800"]', "invalid_text")])
def test_bad_bodies_are_400_in_the_common_shape(echo, body, code):
    r = httpx.post(echo + "/embed", content=body, headers={"content-type": "application/json"})
    assert r.status_code == 400
    assert set(r.json()["error"]) == {"message", "type", "code"} and r.json()["error"]["code"] == code
    assert r.headers["x-request-id"]  # refused inside the access log / metrics layer


def test_oversized_body_is_413_before_it_is_sent(echo):
    """Only the headers go out: the answer comes while 50 MB of body are still unsent."""
    host, port = echo.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(b"POST /embed HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                     b"Content-Length: 50000000\r\n\r\n")
        answer = b""
        while chunk := sock.recv(4096):  # the server closes the connection after answering
            answer += chunk
    assert answer.startswith(b"HTTP/1.1 413"), answer
    assert b'"body_too_large"' in answer


def test_chunked_body_is_cut_off_at_the_limit(echo):
    sent = []

    def chunks():
        for _ in range(1000):  # 1000 x 1 KiB would be 1 MB; the limit is 64 KiB
            sent.append(1)
            yield b" " * 1024

    try:
        r = httpx.post(echo + "/embed", content=chunks(), headers={"content-type": "application/json"})
        assert r.status_code == 413 and r.json()["error"]["code"] == "body_too_large"
    except httpx.TransportError:
        pass  # the server may close the connection while the client still sends: refused either way
    assert len(sent) < 1000


@pytest.mark.integration
def test_without_a_key_nothing_of_the_body_is_read(tmp_path):
    """Auth comes before the body guard: a caller without a valid key gets 401 from the headers alone,
    while 50 MB of a body that would be malformed are still unsent (it cannot buy a body read)."""
    settings = Settings(data_dir=tmp_path, guard={"max_body_bytes": LIMITS.max_body_bytes,
                                                  "service_max_body_bytes": {}})
    app = FastAPI()
    instrument(app, "embedding", settings=settings)

    @app.post("/embed")
    async def route(request: Request) -> dict:
        return {"received": len(await request.body())}

    with ServerThread(app) as server:
        host, port = server.url.removeprefix("http://").split(":")
        for auth_header in (b"", b"Authorization: Bearer sk_suite_000000000000_" + b"x" * 43 + b"\r\n"):
            with socket.create_connection((host, int(port)), timeout=10) as sock:
                sock.sendall(b"POST /embed HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                             + auth_header + b"Content-Length: 50000000\r\n\r\n" + b"[" * 1000)
                answer = b""
                while chunk := sock.recv(4096):
                    answer += chunk
            assert answer.startswith(b"HTTP/1.1 401"), answer[:200]
