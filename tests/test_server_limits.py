"""What a slow, idle or greedy client can hold on the server, over real sockets: request heads
that dribble in are cut at --header-timeout, bodies that never finish (or lie about their
Content-Length) get 408 and a close at --body-timeout, idle keep-alive connections close at
--keep-alive-timeout, no more than --max-connections are open at once, and bodies beyond
--max-body-bytes-in-flight get 429 with Retry-After. Normal requests keep being answered
throughout.

The timeouts are set short (about a second) so the tests run quickly; each bound is checked
with room to spare, since the point is that a connection is closed, not how promptly.
"""

from __future__ import annotations

import json
import socket
import threading
import time
from typing import List, Tuple

import pytest

from fixture_models import GQA
from test_server import Server, assert_error, post

HEADER_TIMEOUT = 1.0
BODY_TIMEOUT = 1.0
KEEP_ALIVE = 1.5
# Every "closed within" bound below: the timeout, plus this much slack for a loaded CI machine.
SLACK = 8.0


@pytest.fixture(scope="module")
def server():
    srv = Server("-m", str(GQA), "--header-timeout", str(HEADER_TIMEOUT), "--body-timeout", str(BODY_TIMEOUT),
                 "--keep-alive-timeout", str(KEEP_ALIVE), "--max-connections", "400",
                 "--max-concurrent-requests", "400")
    yield srv
    srv.stop()


def connect(server: Server) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", server.port), timeout=30)
    return sock


def closed_by_peer(sock: socket.socket, within: float) -> Tuple[bool, bytes]:
    """Reads until the server closes the connection or `within` seconds pass; returns whether it
    closed, and what it sent."""
    received = b""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        sock.settimeout(max(deadline - time.monotonic(), 0.01))
        try:
            data = sock.recv(65536)
        except socket.timeout:
            break
        except ConnectionResetError:
            return True, received
        if not data:
            return True, received
        received += data
    return False, received


def embed_ok(server: Server) -> None:
    status, body = post(server, {"input": "a normal request"}, timeout=30)
    assert status == 200, body


def test_heads_sent_a_byte_at_a_time_are_cut_while_normal_requests_proceed(server):
    slow: List[socket.socket] = []
    for _ in range(200):
        sock = connect(server)
        sock.sendall(b"POST /v1/embeddings HTTP/1.1\r\n")
        slow.append(sock)
    open_ = list(slow)
    deadline = time.monotonic() + HEADER_TIMEOUT + SLACK
    while open_ and time.monotonic() < deadline:
        still = []
        for sock in open_:
            try:
                sock.sendall(b"x")  # one more header byte, never a whole head
                still.append(sock)
            except OSError:
                pass  # closed by the server
        open_ = still
        embed_ok(server)
        time.sleep(0.2)
    # A send can succeed into a socket the server has just closed; one more read settles it.
    leftover = [s for s in open_ if not closed_by_peer(s, 1.0)[0]]
    for sock in slow:
        sock.close()
    assert not leftover, f"{len(leftover)} of 200 slow connections still open after {HEADER_TIMEOUT + SLACK} s"
    embed_ok(server)


def test_a_body_shorter_than_its_content_length_gets_408_and_a_close(server):
    sock = connect(server)
    body = b'{"input": "hi"}'
    sock.sendall(b"POST /v1/embeddings HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n"
                 b"Content-Length: 100\r\n\r\n" + body)
    closed, answer = closed_by_peer(sock, BODY_TIMEOUT + SLACK)
    sock.close()
    assert closed, answer
    head, _, payload = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 408"), answer
    assert b"connection: close" in head.lower(), head
    error = json.loads(payload)["error"]
    assert "--body-timeout" in error["message"] and error["code"] == "request_timeout", error


def test_an_idle_keep_alive_connection_is_closed(server):
    sock = connect(server)
    sock.sendall(b"GET /health HTTP/1.1\r\nHost: t\r\n\r\n")
    closed, answer = closed_by_peer(sock, KEEP_ALIVE + SLACK)
    sock.close()
    assert answer.startswith(b"HTTP/1.1 200"), answer
    assert closed, "the idle connection was not closed"


def test_a_silent_connection_is_closed(server):
    sock = connect(server)
    closed, answer = closed_by_peer(sock, KEEP_ALIVE + SLACK)
    sock.close()
    assert closed and answer == b"", answer


def test_a_connection_that_keeps_sending_requests_stays_open(server):
    # Keep-alive is about idleness: requests one after another, each within the timeout, share
    # one connection for longer than the timeout.
    import http.client

    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
    started = time.monotonic()
    while time.monotonic() - started < KEEP_ALIVE * 2:
        conn.request("GET", "/health")
        answer = conn.getresponse()
        answer.read()
        assert answer.status == 200
        time.sleep(KEEP_ALIVE / 4)
    assert conn.sock is not None
    conn.close()


def test_connections_beyond_the_cap_wait_for_a_free_slot(tmp_path):
    srv = Server("-m", str(GQA), "--max-connections", "2", "--keep-alive-timeout", "1", "--header-timeout", "1")
    try:
        # Server() polled /health on connections that are closed by now; give the slots time
        # to be returned, then take both with silent connections.
        time.sleep(0.5)
        holders = [connect(srv), connect(srv)]
        time.sleep(0.3)
        result: dict = {}

        def third() -> None:
            status, _ = post(srv, {"input": "third"}, timeout=60)
            result["status"], result["at"] = status, time.monotonic()

        worker = threading.Thread(target=third)
        worker.start()
        closed_at = []
        for sock in holders:
            closed, _ = closed_by_peer(sock, 1 + SLACK)
            assert closed
            closed_at.append(time.monotonic())
            sock.close()
        worker.join(60)
        assert result.get("status") == 200, result
        # Served only once a holder's slot was free: without the cap it would have been answered
        # about 0.7 s before the holders were closed; 0.3 s allows for the two client threads
        # noticing at different moments.
        assert result["at"] >= min(closed_at) - 0.3, (result, closed_at)
    finally:
        srv.stop()


def test_bodies_beyond_the_byte_budget_get_429_with_retry_after():
    srv = Server("-m", str(GQA), "--payload-limit", "1000", "--max-body-bytes-in-flight", "1500",
                 "--body-timeout", "20")
    try:
        # One client holds 900 bytes of budget by sending its body slowly; a second 900-byte
        # body cannot fit beside it and is refused after the admission wait.
        body = json.dumps({"input": "x" * 840, "truncate_sequence": True}).encode()
        assert 850 < len(body) <= 1000
        holder = connect(srv)
        holder.sendall(b"POST /v1/embeddings HTTP/1.1\r\nHost: t\r\nConnection: close\r\n"
                       b"Content-Type: application/json\r\n"
                       + f"Content-Length: {len(body)}\r\n\r\n".encode() + body[:10])
        time.sleep(0.3)
        headers: dict = {}
        status, answer = post(srv, None, raw=body, headers={"Content-Type": "application/json"},
                              response_headers=headers, timeout=30)
        assert_error(status, answer, 429)
        assert "--max-body-bytes-in-flight" in answer["error"]["message"], answer
        assert headers.get("retry-after") == "1", headers
        # The held request still completes, and gives its bytes back.
        holder.sendall(body[10:])
        closed, reply = closed_by_peer(holder, 3)
        holder.close()
        assert reply.startswith(b"HTTP/1.1 200"), reply[:200]
        status, answer = post(srv, None, raw=body, headers={"Content-Type": "application/json"}, timeout=30)
        assert status == 200, answer
    finally:
        srv.stop()
