"""`distilbert serve` against the server a user would otherwise write: FastAPI + a `transformers` pipeline, and for
embeddings also FastAPI + sentence-transformers (where it is installed: pip install -r
benchmarks/serve/requirements.txt).

usage: .venv/bin/python benchmarks/serve/run.py [--seconds 10] [--clients 1,8,64] [--backend onnx|torch]

Same full-size random-weight distilbert-base-uncased on both sides (benchmarks/serve/prepare.py makes it and
our ONNX exports of it). A load generator on loopback: N concurrent clients, each sending one text per
request back to back, for a fixed time (and at most --max-requests requests), then it stops. Texts are
WikiText-2 paragraphs cut to 8-120 words (fill-mask: a [MASK] in the middle). Reports throughput and
p50 / p99 latency per workload and client count, the ratios ours / reference, and, at one client, our
pipeline called directly in this process (what the server adds: the server's p50 minus the pipeline's, round
by round, and, apart from how fast each process runs the model, the time outside the model in each, see
`around_model`), and the CPU time each server used per request (from /proc): on a machine shared with other
work the OS shares the cores out per thread, so a server running more threads gets more of them and
wall-clock figures flatter it; CPU per request does not depend on that. At every client count the servers
take turns over --rounds short windows, so that the machine's drift hits both alike; the figures pool the
rounds. Writes benchmarks/serve/results-WORKLOADS.json.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib.util
import json
import os
import platform
import random
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import numpy as np

import prepare  # benchmarks/serve/prepare.py, beside this script

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
CACHE = ROOT / "benchmarks" / ".cache" / "serve"
DATA = Path(os.environ.get("DISTILBERT_DATA", ROOT.parent / "shared" / "data"))
PYTHON = ROOT / ".venv" / "bin" / "python"
WORKLOADS = {"embeddings": ("feature-extraction", "/embed", "onnx-features"),
             "fill-mask": ("fill-mask", "/", "onnx-fill-mask")}


def texts(workload: str, n: int = 64) -> list[str]:
    rng = random.Random(0)
    lines = [line.strip() for line in (DATA / "text" / "wikitext-2-valid.txt").read_text(encoding="utf-8").splitlines()
             if len(line.split()) >= 12 and not line.strip().startswith("=")]
    out = []
    for line in rng.sample(lines, n):
        words = line.split()[: rng.randint(8, 120)]
        if workload == "fill-mask":
            words[len(words) // 2] = "[MASK]"
        out.append(" ".join(words))
    return out


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def server(command: list[str], port: int):
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 600
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"{command[:4]} exited: {process.stderr.read()[-2000:]}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"{command[:4]} did not come up")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"http://127.0.0.1:{port}/health", timeout=5).status_code == 200:
                    break
            time.sleep(0.5)
        yield f"http://127.0.0.1:{port}", process.pid
    finally:
        process.terminate()
        try:
            process.wait(60)
        except subprocess.TimeoutExpired:
            process.kill()


def cpu_seconds(pid: int) -> float:
    """CPU time a process has used, all its threads together (utime + stime from /proc/PID/stat)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class Connection:
    """One keep-alive HTTP/1.1 connection that POSTs JSON: the least a client can spend per request.

    httpx spends 1-2 ms of Python per request; on two cores shared with the server, a load generator that heavy
    is part of what it measures. This one only writes the request and reads back the status line, the headers
    and a Content-Length body (both servers answer so)."""

    def __init__(self, host: str, port: int):
        self.host, self.port = host, port
        self.reader = self.writer = None

    async def post(self, route: str, payload) -> tuple[int, bytes]:
        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
        body = json.dumps(payload).encode()
        self.writer.write(f"POST {route} HTTP/1.1\r\nhost: {self.host}\r\ncontent-type: application/json\r\n"
                          f"content-length: {len(body)}\r\n\r\n".encode() + body)
        head = (await self.reader.readuntil(b"\r\n\r\n")).decode("latin-1").split("\r\n")
        status = int(head[0].split()[1])
        headers = dict(line.split(":", 1) for line in head[1:] if ":" in line)
        length = next(int(v) for k, v in headers.items() if k.strip().lower() == "content-length")
        return status, await self.reader.readexactly(length)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


def model_seconds(url: str) -> tuple[float, float] | None:
    """Our server's model time so far, from /metrics: (seconds, batches); None for a server without it."""
    text = httpx.get(url + "/metrics", timeout=30).text
    found = {name: float(value) for name, value in
             (line.split() for line in text.splitlines() if line.startswith("te_batch_inference_duration_"))
             if name.endswith(("_sum", "_count"))}
    return (found["te_batch_inference_duration_sum"], found["te_batch_inference_duration_count"]) if found else None


async def load(url: str, pid: int, route: str, inputs: list[str], clients: int, seconds: float,
               max_requests: int) -> dict:
    latencies: list[float] = []
    errors = 0
    sent = 0
    host, port = url.removeprefix("http://").split(":")
    connections = [Connection(host, int(port)) for _ in range(clients)]
    try:
        for text in inputs[:3]:  # warm-up
            await connections[0].post(route, {"inputs": text})
        model_start = model_seconds(url) if clients == 1 else None
        start, cpu_start = time.perf_counter(), cpu_seconds(pid)
        deadline = start + seconds

        async def worker(k: int):
            nonlocal errors, sent
            i = k
            while time.perf_counter() < deadline and sent < max_requests:
                sent += 1
                t = time.perf_counter()
                status, _ = await connections[k].post(route, {"inputs": inputs[i % len(inputs)]})
                if status == 200:
                    latencies.append(time.perf_counter() - t)
                else:
                    errors += 1
                i += clients

        await asyncio.wait_for(asyncio.gather(*(worker(k) for k in range(clients))), seconds + 300)
        elapsed, cpu = time.perf_counter() - start, cpu_seconds(pid) - cpu_start
        model_end = model_seconds(url) if model_start else None
    finally:
        for connection in connections:
            connection.close()
    out = measured(latencies, elapsed, cpu, errors)
    if model_end and not errors and model_end[1] - model_start[1] == len(latencies):  # one client: a batch a request
        out["model"] = model_end[0] - model_start[0]
    return out


def measured(latencies: list[float], elapsed: float, cpu: float, errors: int = 0) -> dict:
    """Throughput, CPU per request and latency percentiles of one measurement (or of several pooled)."""
    ms = np.asarray(latencies) * 1000
    return {"requests": len(latencies), "errors": errors, "seconds": round(elapsed, 2),
            "cpu_ms_per_request": round(cpu * 1000 / max(1, len(latencies)), 1),
            "throughput": round(len(latencies) / elapsed, 2),
            "p50_ms": round(float(np.percentile(ms, 50)), 1) if len(ms) else None,
            "p99_ms": round(float(np.percentile(ms, 99)), 1) if len(ms) else None,
            "mean_ms": round(float(ms.mean()), 2) if len(ms) else None,
            "latencies": latencies, "cpu": cpu}


def pooled(parts: list[dict]) -> dict:
    """Several measurements of one server as one; `round_p50_ms` keeps each part's median."""
    out = measured([x for p in parts for x in p["latencies"]], sum(p["seconds"] for p in parts),
                   sum(p["cpu"] for p in parts), sum(p["errors"] for p in parts))
    out["round_p50_ms"] = [p["p50_ms"] for p in parts]
    out["round_throughput"] = [p["throughput"] for p in parts]
    if all("model" in p for p in parts):
        out["around_model_ms"] = round(around_model(out["latencies"], sum(p["model"] for p in parts)), 2)
        out["round_around_model_ms"] = [round(around_model(p["latencies"], p["model"]), 2) for p in parts]
    return out


def around_model(latencies: list[float], model: float) -> float:
    """Milliseconds a request spent outside the model, on average: its latency less the model's own time.

    Each side's model time is measured in its own process, so this is free of how fast each process happens to
    run the model (two fresh processes running the same model took up to 11% apart for it on two shared cores,
    which moves the difference of two p50s by a few ms)."""
    return (sum(latencies) - model) * 1000 / len(latencies)


def in_process(workload: str, backend: str, precision: str):
    """Our pipeline, loaded in this process: what a user calls without the server."""
    sys.path.insert(0, str(ROOT))
    import distilbert

    task, _, folder = WORKLOADS[workload]
    model = CACHE / folder if backend == "onnx" else CACHE / "hf"
    pipe = distilbert.pipeline(task, model=model, backend=backend, precision=precision)
    return pipe, ({"pooling": "mean", "normalize": True} if task == "feature-extraction" else {})


def direct(pipe, params: dict, inputs: list[str], seconds: float) -> dict:
    """Our pipeline called in this process, one text at a time: the floor the server adds to. Its three steps
    as `pipe(text)` runs them, the model's step timed apart."""
    def call(text: str) -> float:
        job = pipe.preprocess(text, **params)
        t = time.perf_counter()
        outputs = pipe.forward(job.features)
        forward = time.perf_counter() - t
        pipe.postprocess(job, outputs)
        return forward

    for text in inputs[:3]:
        call(text)
    latencies, model, start, cpu_start, i = [], 0.0, time.perf_counter(), time.process_time(), 0
    while time.perf_counter() - start < seconds:
        t = time.perf_counter()
        model += call(inputs[i % len(inputs)])
        latencies.append(time.perf_counter() - t)
        i += 1
    out = measured(latencies, time.perf_counter() - start, time.process_time() - cpu_start)
    out["model"] = model
    return out


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--seconds", type=float, default=10.0, help="per measurement (default 10)")
    p.add_argument("--clients", default="1,8,64")
    p.add_argument("--backend", choices=("onnx", "torch"), default="onnx", help="ours (default onnx: our fp32 export)")
    p.add_argument("--precision", choices=("fp32", "int8", "bf16"), default="fp32",
                   help="ours: int8 is the dynamic int8 export (onnx), bf16 the weights in bfloat16 (torch); "
                        "the reference stays fp32")
    p.add_argument("--compile", action="store_true",
                   help="torch: also our server with --compile, in the same turns (\"ours, compiled\")")
    p.add_argument("--max-requests", type=int, default=20000)
    p.add_argument("--only", default="embeddings,fill-mask")
    p.add_argument("--rounds", type=int, default=3,
                   help="our server and the reference (and at 1 client our pipeline in process) take turns this many "
                        "times at each client count, --seconds shared out, so that the machine's drift hits them "
                        "alike (default 3)")
    args = p.parse_args()
    clients = [int(c) for c in args.clients.split(",")]
    rounds = max(1, args.rounds)
    if (args.backend, args.precision) in (("onnx", "bf16"), ("torch", "int8")):
        p.error(f"--precision {args.precision} does not run on --backend {args.backend}: int8 is onnx, bf16 torch")
    if args.compile and args.backend != "torch":
        p.error("--compile is for --backend torch")
    if not all(prepare.ready(CACHE / WORKLOADS[w][2]) for w in args.only.split(",")):
        subprocess.run([str(PYTHON), str(HERE / "prepare.py")], check=True)
    results: dict = {"machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs (shared)",
                     "seconds": args.seconds, "backend": args.backend, "precision": args.precision,
                     "compile": args.compile, "date": time.strftime("%Y-%m-%d"), "runs": []}
    for workload in args.only.split(","):
        task, route, folder = WORKLOADS[workload]
        inputs = texts(workload)
        model = CACHE / folder if args.backend == "onnx" else CACHE / "hf"
        ours = [str(PYTHON), "-m", "distilbert.cli", "serve", str(model), "--task", task,
                "--backend", args.backend, "--precision", args.precision]
        commands = {"ours": ours, **({"ours, compiled": [*ours, "--compile"]} if args.compile else {}),
                    "reference": [str(PYTHON), str(HERE / "reference_server.py"), str(CACHE / "hf"), "--task", task]}
        if workload == "embeddings":
            if importlib.util.find_spec("sentence_transformers"):
                commands["reference, sentence-transformers"] = [*commands["reference"], "--sentence-transformers"]
            else:
                print("sentence-transformers is not installed, so it is not measured: "
                      "pip install -r benchmarks/serve/requirements.txt", flush=True)
        pipe = in_process(workload, args.backend, args.precision) if 1 in clients else None
        # all up at once (an idle server costs nothing), measured in turns, so the machine's drift hits them alike
        with contextlib.ExitStack() as stack:
            up = {}
            for name, command in commands.items():
                port = free_port()
                up[name] = stack.enter_context(server([*command, "--port", str(port)], port))
            for n in clients:
                parts: dict[str, list[dict]] = {name: [] for name in up} | {"pipeline, in process": []}
                for _ in range(rounds):
                    for name, (url, pid) in up.items():
                        parts[name].append(asyncio.run(load(url, pid, route, inputs, n, args.seconds / rounds,
                                                            args.max_requests)))
                    if n == 1:
                        parts["pipeline, in process"].append(direct(*pipe, inputs, args.seconds / rounds))
                for name, measurements in parts.items():
                    if measurements:
                        run = pooled(measurements)
                        del run["latencies"], run["cpu"]
                        run.update(workload=workload, server=name, clients=n)
                        results["runs"].append(run)
                        print(json.dumps(run), flush=True)
    suffix = "" if (args.backend, args.precision) == ("onnx", "fp32") else f"-{args.backend}-{args.precision}"
    suffix += "-compile" if args.compile else ""
    suffix += "" if args.clients == "1,8,64" else f"-clients-{args.clients.replace(',', '-')}"
    out = HERE / f"results-{args.only.replace(',', '-')}{suffix}.json"
    out.write_text(json.dumps(results, indent=2) + "\n")
    print(table(results))


def table(results: dict) -> str:
    runs = {(r["workload"], r["server"], r["clients"]): r for r in results["runs"]}
    lines = ["| workload | clients | ours req/s | reference req/s | x throughput (rounds) | ours p50 / p99 ms | reference p50 / p99 ms "
             "| CPU ms per request, ours / reference | x CPU efficiency |", "|---|---|---|---|---|---|---|---|---|"]
    references = [s for s in dict.fromkeys(server for _, server, _ in runs) if s.startswith("reference")]
    for (workload, server, n), ours in runs.items():
        if not server.startswith("ours"):
            continue
        for name in references:
            ref = runs.get((workload, name, n))
            if ref is None:
                continue
            ratio = f"{ours['throughput'] / ref['throughput']:.2f}" if ref["throughput"] else "-"
            rounds = list(zip(ours.get("round_throughput", []), ref.get("round_throughput", [])))
            if len(rounds) > 1 and all(r for _, r in rounds):
                each = [a / r for a, r in rounds]
                ratio += f" ({min(each):.2f}-{max(each):.2f})"
            label = workload if server == "ours" else f"{workload} ({server})"
            label += f", against {name.split(', ', 1)[1]}" if ", " in name else ""
            lines.append(f"| {label} | {n} | {ours['throughput']} | {ref['throughput']} | {ratio} | "
                         f"{ours['p50_ms']} / {ours['p99_ms']} | {ref['p50_ms']} / {ref['p99_ms']} | "
                         f"{ours['cpu_ms_per_request']} / {ref['cpu_ms_per_request']} | "
                         f"{ref['cpu_ms_per_request'] / ours['cpu_ms_per_request']:.2f} |")
    for (workload, server, n), r in runs.items():
        if server.startswith("pipeline"):
            lines.append(f"| {workload}: our pipeline in process | 1 | - | - | - | {r['p50_ms']} / {r['p99_ms']} | - | "
                         f"{r['cpu_ms_per_request']} | - |")
    for (workload, server, n), r in runs.items():
        ours = runs.get((workload, "ours", 1))
        if server.startswith("pipeline") and ours and "round_p50_ms" in r:
            added = [round(a - b, 1) for a, b in zip(ours["round_p50_ms"], r["round_p50_ms"])]
            lines.append(f"\n{workload}: at 1 client the server's p50 minus our pipeline's, round by round: "
                         f"{', '.join(f'{x:+}' for x in added)} ms (median {np.median(added):+.1f})")
    for (workload, server, n), r in runs.items():
        mine = runs.get((workload, "pipeline, in process", 1))
        if server.startswith("ours") and n == 1 and mine and "around_model_ms" in r and "around_model_ms" in mine:
            rounds = [a - b for a, b in zip(r["round_around_model_ms"], mine["round_around_model_ms"])]
            lines.append(f"\n{workload}, {server}: at 1 client, a request's time outside the model, on average: "
                         f"{r['around_model_ms']} ms in the server (HTTP, validation, tokenising, hand-over, "
                         f"post-processing) against {mine['around_model_ms']} ms in our pipeline (tokenising, "
                         f"post-processing): the server adds {r['around_model_ms'] - mine['around_model_ms']:+.2f} ms "
                         f"(rounds {', '.join(f'{x:+.2f}' for x in rounds)})")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
