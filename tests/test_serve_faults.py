"""`distilbert serve` under load and under faults, each a named test with its outcome.

A soak: 64 clients sending a mix of every route's requests for two minutes (errors, p99, the server's
resident memory at start and end). Faults: a body over the payload limit written whole before the answer is
read (the 413 arrives, 100 times of 100); a client that goes away mid-request; a body sent a byte at a time;
a body that is not UTF-8; a 100 MB body; SIGTERM with 64 requests in flight; --workers 2 with one worker
killed. Every loop is bounded in count and time.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import signal
import socket
import time
import urllib.error
import urllib.request
from pathlib import Path

import httpx
import numpy as np
import pytest

import distilbert
from helpers.models import data_file
from helpers.serving import metric, ready, rss, serve, start, stop, text_of

pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")

TINY = dict(max_position_embeddings=512)
BIG = dict(dim=192, n_heads=3, n_layers=4, hidden_dim=768, max_position_embeddings=512)
LIMIT = 2_000_000  # the default --payload-limit


@pytest.fixture(scope="module")
def folder(checkpoint_factory):
    data_file("vocab", "bert-base-uncased-vocab.txt")
    return checkpoint_factory("distilbert", "Model", vocab="real", **TINY)[0]


@pytest.fixture(scope="module")
def embedder(folder, tmp_path_factory):
    served = start(tmp_path_factory.mktemp("faults"), folder)
    yield ready(served)
    stop(served)


def raw_request(url: str, head: str, body: bytes = b"") -> socket.socket:
    """A connected socket with `head` (request line and headers, no blank line) and `body` written."""
    host, port = url.removeprefix("http://").split(":")
    s = socket.create_connection((host, int(port)), timeout=30)
    s.sendall(head.encode() + b"\r\nHost: " + host.encode() + b"\r\n\r\n" + body)
    return s


def status_of(s: socket.socket) -> tuple[int, bytes]:
    """The status and whatever of the answer arrives before the server closes or 30 s pass."""
    data = b""
    while b"\r\n\r\n" not in data or len(data) < data.index(b"\r\n\r\n") + 4 + _length(data):
        chunk = s.recv(65536)
        if not chunk:
            break
        data += chunk
    return int(data.split(b" ", 2)[1]), data.partition(b"\r\n\r\n")[2]


def _length(data: bytes) -> int:
    head = data.partition(b"\r\n\r\n")[0].lower()
    for line in head.split(b"\r\n"):
        if line.startswith(b"content-length:"):
            return int(line.split(b":")[1])
    return 0


def assert_still_serving(served, text: str = "still here") -> None:
    with served.client() as client:
        assert client.get("/health").status_code == 200
        r = client.post("/embed", json={"inputs": text})
        assert r.status_code == 200 and len(r.json()[0]) == 39
    log = served.log.read_text()
    assert "Traceback" not in log and "ERROR" not in log, log[-3000:]


# --- faults ------------------------------------------------------------------------------------------


def test_a_body_over_the_limit_written_whole_gets_its_413_every_time(embedder):
    """urllib writes the whole body before it reads the answer. The server reads and drops a refused body before
    it answers (gate.py): closing with the body unread would send a reset, which can overtake the 413."""
    body = json.dumps({"inputs": ["x" * 1000] * 3000}).encode()  # 3 MB
    assert len(body) > LIMIT
    statuses = []
    for _ in range(100):
        request = urllib.request.Request(embedder.url + "/embed", data=body,
                                         headers={"Content-Type": "application/json"})
        try:
            urllib.request.urlopen(request, timeout=30)
            statuses.append(200)
        except urllib.error.HTTPError as e:
            statuses.append(e.code)
            assert "--payload-limit" in json.loads(e.read())["error"]
        except OSError as e:  # a reset instead of the answer
            statuses.append(type(e).__name__)
    print(f"413 received {statuses.count(413)} times of 100")
    assert statuses == [413] * 100, [s for s in statuses if s != 413][:5]
    assert_still_serving(embedder)


def test_a_client_that_goes_away_mid_request(embedder):
    """Gone while sending its body, and gone while the model runs: the server logs no error, frees what the
    request held, and answers the next ones."""
    body = json.dumps({"inputs": [text_of(200, i) for i in range(32)]}).encode()
    for _ in range(10):
        s = raw_request(embedder.url, f"POST /embed HTTP/1.1\r\nContent-Type: application/json\r\n"
                                      f"Content-Length: {len(body)}", body[: len(body) // 2])
        s.close()  # half the body sent
        s = raw_request(embedder.url, f"POST /embed HTTP/1.1\r\nContent-Type: application/json\r\n"
                                      f"Content-Length: {len(body)}", body)
        s.close()  # the whole request sent, the answer never read
    deadline = time.monotonic() + 30
    while metric(embedder.metrics(), "te_inputs_in_flight") > 0 and time.monotonic() < deadline:
        time.sleep(0.1)
    assert metric(embedder.metrics(), "te_inputs_in_flight") == 0
    assert_still_serving(embedder)


def test_a_body_sent_a_byte_at_a_time(embedder, folder):
    """A slow client holds its connection, not the server: /health answers at once meanwhile."""
    text = "a slow sentence"
    body = json.dumps({"inputs": text}).encode()
    s = raw_request(embedder.url, f"POST /embed HTTP/1.1\r\nContent-Type: application/json\r\n"
                                  f"Content-Length: {len(body)}")
    slowest = 0.0
    for i, byte in enumerate(body):
        s.sendall(bytes([byte]))
        time.sleep(0.02)
        if i % 10 == 0:
            started = time.perf_counter()
            assert httpx.get(embedder.url + "/health", timeout=10).status_code == 200
            slowest = max(slowest, time.perf_counter() - started)
    status, answer = status_of(s)
    s.close()
    assert status == 200
    expected = distilbert.pipeline("feature-extraction", model=folder)(text, pooling="mean", normalize=True)
    np.testing.assert_allclose(json.loads(answer)[0], expected, atol=1e-5)
    assert slowest < 1.0, f"/health took {slowest:.2f} s while a body trickled in"


def test_a_body_that_is_not_utf8(embedder):
    """Latin-1, a broken sequence, and UTF-8's encoding of a surrogate (which Python's json decodes, as
    surrogatepass, into a lone surrogate): each one line, 422."""
    for body in (b'{"inputs": "caf\xe9"}', b'{"inputs": "\xc3\x28"}', b'{"inputs": "\xed\xa0\x80"}'):
        r = httpx.post(embedder.url + "/embed", content=body, headers={"Content-Type": "application/json"}, timeout=30)
        assert r.status_code == 422 and r.json()["error_type"] == "Validation", (body, r.text)
        assert "not UTF-8" in r.json()["error"] or "not Unicode" in r.json()["error"], r.json()["error"]
    assert_still_serving(embedder)


def test_a_100_mb_body(embedder):
    """Written whole before the answer is read: the 413 arrives, and the server drops the body as it comes
    (its memory does not grow by the body)."""
    before = rss(embedder.process.pid)
    body = b'{"inputs": "' + b"x" * 100_000_000 + b'"}'
    request = urllib.request.Request(embedder.url + "/embed", data=body, headers={"Content-Type": "application/json"})
    started = time.perf_counter()
    with pytest.raises(urllib.error.HTTPError) as e:
        urllib.request.urlopen(request, timeout=60)
    seconds = time.perf_counter() - started
    assert e.value.code == 413 and "--payload-limit" in json.loads(e.value.read())["error"]
    grown = rss(embedder.process.pid) - before
    print(f"100 MB body: 413 after {seconds:.2f} s; server memory {grown / 2**20:+.1f} MiB")
    assert grown < 20 * 2**20
    # without Content-Length (chunked): read up to the limit, the rest dropped
    def chunks():
        for _ in range(100):
            yield b"y" * 1_000_000
    r = httpx.post(embedder.url + "/embed", content=chunks(), headers={"Content-Type": "application/json"}, timeout=60)
    assert r.status_code == 413
    assert rss(embedder.process.pid) - before < 20 * 2**20
    assert_still_serving(embedder)


@pytest.mark.slow
def test_sigterm_with_64_requests_in_flight_answers_all_of_them(checkpoint_factory, tmp_path):
    data_file("vocab", "bert-base-uncased-vocab.txt")
    folder = checkpoint_factory("distilbert", "Model", vocab="real", **BIG)[0]
    texts = [text_of(200, i) for i in range(64)]
    expected = distilbert.pipeline("feature-extraction", model=folder)(texts, pooling="mean", normalize=True)
    served = ready(start(tmp_path, folder))

    async def burst():
        limits = httpx.Limits(max_connections=64, max_keepalive_connections=64)
        async with httpx.AsyncClient(base_url=served.url, timeout=120, limits=limits) as client:
            async def one(i):
                try:
                    r = await client.post("/embed", json={"inputs": texts[i]})
                    return r.status_code, r.json()
                except httpx.TransportError as e:
                    return None, repr(e)
            load = [asyncio.create_task(one(i)) for i in range(64)]
            in_flight = 0
            async with httpx.AsyncClient(base_url=served.url, timeout=30) as watcher:
                for _ in range(600):  # until all 64 are in (bounded: 30 s)
                    in_flight = metric((await watcher.get("/metrics")).text, "te_inputs_in_flight")
                    if in_flight >= 64:
                        break
                    await asyncio.sleep(0.05)
            served.process.send_signal(signal.SIGTERM)
            return in_flight, await asyncio.gather(*load)

    try:
        in_flight, answers = asyncio.run(burst())
        code = served.process.wait(120)
    finally:
        stop(served)
    statuses = [a[0] for a in answers]
    print(f"SIGTERM with {in_flight:.0f} requests in flight: {statuses.count(200)} answered 200, exit {code}")
    assert in_flight == 64
    assert statuses == [200] * 64, [a for a in answers if a[0] != 200][:3]
    for (_, got), want in zip(answers, expected):
        np.testing.assert_allclose(got[0], want, atol=1e-4)
    assert code in (0, -signal.SIGTERM, 128 + signal.SIGTERM)


def children(pid: int) -> list[int]:
    """The processes whose parent is `pid` (read from /proc)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat.rpartition(")")[2].split()[1]) == pid:
                found.append(int(entry.name))
    return found


def workers_of(pid: int) -> list[int]:
    """uvicorn's worker processes (multiprocessing's spawn children, not its resource tracker)."""
    return sorted(c for c in children(pid) if b"spawn_main" in Path(f"/proc/{c}/cmdline").read_bytes())


@pytest.mark.slow
def test_two_workers_one_killed_the_other_keeps_answering(folder, tmp_path):
    """uvicorn's supervisor (uvicorn/supervisors/multiprocess.py, 0.30 and later) checks its workers every half
    second; one that is dead (or does not answer its ping within --timeout-worker-healthcheck) is killed,
    joined, and a new worker process started in its place, which loads the model again. Meanwhile the listening
    socket stays open in the surviving worker, which takes every new connection: no request is refused."""
    with serve(tmp_path, folder, "--workers", "2") as served:
        deadline = time.monotonic() + 60
        while len(workers_of(served.process.pid)) < 2 and time.monotonic() < deadline:
            time.sleep(0.2)
        before = workers_of(served.process.pid)
        assert len(before) == 2, before
        victim = random.Random(0).choice(before)
        os.kill(victim, signal.SIGKILL)
        statuses, replaced = [], None
        fresh = httpx.Limits(max_keepalive_connections=0)  # a new connection a request: the kernel picks a worker
        with httpx.Client(base_url=served.url, timeout=30, limits=fresh) as client:
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline and (replaced is None or len(statuses) < 200):
                try:
                    statuses.append(client.post("/embed", json={"inputs": text_of(8, len(statuses))}).status_code)
                except httpx.TransportError as e:
                    statuses.append(repr(e))
                now = workers_of(served.process.pid)
                if replaced is None and len(now) == 2 and victim not in now:
                    replaced = time.monotonic()
        after = workers_of(served.process.pid)
        print(f"--workers 2, worker {victim} killed: {statuses.count(200)} of {len(statuses)} requests answered 200; "
              f"workers before {before}, after {after}")
        assert statuses and all(s == 200 for s in statuses), [s for s in statuses if s != 200][:5]
        assert replaced is not None and len(after) == 2 and victim not in after  # uvicorn started a new one


# --- soak ----------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_soak_64_clients_every_route(folder, tmp_path, capsys):
    """64 clients, each sending requests drawn from every route the server serves (for a feature-extraction
    model: all but /predict, which answers 424 here), for WARM_UP + SOAK seconds. Errors: anything but 200 (or
    429 past capacity); memory: the server's resident set after the warm-up and at the end."""
    warm_up, soak, clients = 15, 120, 64
    texts = [text_of(n, seed) for seed, n in enumerate((1, 3, 8, 15, 30, 60, 120, 250))]
    pipe = distilbert.pipeline("feature-extraction", model=folder)
    pooled = {t: pipe(t, pooling="mean", normalize=True) for t in texts}
    ids = pipe.tokenizer(texts[3])["input_ids"]
    rng = random.Random(0)

    def request():
        some = rng.sample(texts, rng.randint(1, 4))
        return rng.choice([
            ("POST", "/embed", {"inputs": some}), ("POST", "/embed_all", {"inputs": some[:2]}),
            ("POST", "/v1/embeddings", {"input": some}), ("POST", "/", {"inputs": some[0]}),
            ("POST", "/pipeline/feature-extraction", {"inputs": some, "parameters": {"normalize": True}}),
            ("POST", "/tokenize", {"inputs": some}), ("POST", "/decode", {"ids": [ids, ids[:3]]}),
            ("GET", "/info", None), ("GET", "/health", None), ("GET", "/metrics", None), ("GET", "/", None),
        ])

    async def load(seconds: float):
        stats = {"requests": 0, "errors": [], "overloaded": 0, "latencies": [], "checked": 0}
        end = time.monotonic() + seconds
        limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
        async with httpx.AsyncClient(base_url=served.url, timeout=60, limits=limits) as client:
            async def worker():
                while time.monotonic() < end:
                    method, path, body = request()
                    started = time.perf_counter()
                    try:
                        r = await client.request(method, path, json=body)
                        status = r.status_code
                    except httpx.TransportError as e:
                        status = repr(e)
                    stats["requests"] += 1
                    stats["latencies"].append(time.perf_counter() - started)
                    if status == 429:
                        stats["overloaded"] += 1
                    elif status != 200:
                        stats["errors"].append((path, status))
                    elif path == "/embed" and stats["checked"] < 200:  # the answers stay right under load
                        stats["checked"] += 1
                        for got, text in zip(r.json(), body["inputs"]):
                            np.testing.assert_allclose(got, pooled[text], atol=1e-4)
            await asyncio.gather(*(worker() for _ in range(clients)))
        return stats

    with serve(tmp_path, folder) as served:
        asyncio.run(load(warm_up))
        rss_start = rss(served.process.pid)
        started = time.monotonic()
        stats = asyncio.run(load(soak))
        wall = time.monotonic() - started
        rss_end = rss(served.process.pid)
        log = served.log.read_text()
    latencies = np.sort(stats["latencies"])
    p50, p99 = latencies[len(latencies) // 2], latencies[int(len(latencies) * 0.99)]
    growth = (rss_end - rss_start) / rss_start
    with capsys.disabled():
        print(f"\nsoak: {clients} clients, {wall:.0f} s after a {warm_up} s warm-up: {stats['requests']} requests "
              f"({stats['requests'] / wall:.0f}/s), errors {len(stats['errors'])}, 429 {stats['overloaded']}, "
              f"p50 {p50 * 1000:.0f} ms, p99 {p99 * 1000:.0f} ms; server RSS {rss_start / 2**20:.1f} -> "
              f"{rss_end / 2**20:.1f} MiB ({growth:+.1%}); {stats['checked']} /embed answers checked")
    assert not stats["errors"], stats["errors"][:5]
    assert growth < 0.05, f"resident memory grew by {growth:.1%}"
    assert "Traceback" not in log, log[-3000:]
