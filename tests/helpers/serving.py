"""A real `distilbert serve` in a subprocess on 127.0.0.1: start it on a free port, wait until it answers,
stop it; and what the server tests read off it (its Prometheus metrics, its resident memory)."""

from __future__ import annotations

import contextlib
import os
import random
import re
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

from helpers.models import ROOT

WORDS = ("the quick brown fox jumps over the lazy dog while a small cat sleeps on a warm mat near the old "
         "river and people walk by talking about music books rain and tomorrow").split()


def text_of(n: int, seed: int = 0) -> str:
    rng = random.Random(seed)
    return " ".join(rng.choice(WORDS) for _ in range(n))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Served:
    def __init__(self, process: subprocess.Popen, url: str, log: Path):
        self.process, self.url, self.log = process, url, log

    def client(self, **kwargs) -> httpx.Client:
        return httpx.Client(base_url=self.url, timeout=60, **kwargs)

    def metrics(self, headers=None) -> str:
        return httpx.get(self.url + "/metrics", headers=headers, timeout=30).text


def start(tmp_path: Path, model, *args: str, prefix: list[str] | None = None) -> Served:
    """`distilbert serve MODEL ARGS` on a free port, started (not yet ready: see `ready`)."""
    port = free_port()
    log = tmp_path / f"server-{port}.log"
    command = prefix or [sys.executable, "-m", "distilbert.cli"]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_DISABLE_TELEMETRY": "1"}
    with open(log, "w") as out:
        process = subprocess.Popen([*command, "serve", str(model), "--port", str(port), *args],
                                   stdout=out, stderr=subprocess.STDOUT, env=env)
    return Served(process, f"http://127.0.0.1:{port}", log)


def ready(served: Served, budget: float = 240) -> Served:
    """Wait (bounded) until /health answers 200."""
    deadline = time.monotonic() + budget
    while True:
        assert served.process.poll() is None, f"the server exited: {served.log.read_text()[-3000:]}"
        assert time.monotonic() < deadline, f"the server did not come up: {served.log.read_text()[-3000:]}"
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(served.url + "/health", timeout=5).status_code == 200:
                return served
        time.sleep(0.2)


def stop(served: Served) -> None:
    if served.process.poll() is None:
        served.process.terminate()
        try:
            served.process.wait(60)
        except subprocess.TimeoutExpired:
            served.process.kill()
            served.process.wait(10)


@contextlib.contextmanager
def serve(tmp_path: Path, model, *args: str, prefix: list[str] | None = None):
    served = start(tmp_path, model, *args, prefix=prefix)
    try:
        yield ready(served)
    finally:
        stop(served)


def metric(text: str, name: str) -> float:
    return sum(float(v) for v in re.findall(rf"^{re.escape(name)}(?:{{[^}}]*}})? (\S+)$", text, re.M))


def rss(pid: int) -> int:
    status = Path(f"/proc/{pid}/status").read_text()
    return int(re.search(r"VmRSS:\s+(\d+) kB", status).group(1)) * 1024
