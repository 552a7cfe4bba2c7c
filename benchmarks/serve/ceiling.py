"""How far any server can outrun the reference at many clients in fp32 on this machine: the arithmetic bound.

usage: .venv/bin/python benchmarks/serve/ceiling.py [--results benchmarks/serve/results-...json]

At 64 clients both servers are compute-bound, so the ratio of their throughputs is at most the ratio of the
CPU time each spends on a request. This prints, for the texts of benchmarks/serve/run.py:
- the fp32 matrix-product rate of ONNX Runtime here (MLAS, all cores, the encoder's three weight shapes at
  1024 rows), and the best of them;
- the floating-point work of a text (the encoder's matrix products and attention; fill-mask: the head at the
  [MASK] alone) and its CPU time at that rate: no fp32 server can spend less on a request;
- our pipeline's CPU time per text in this process, batched as the server batches (no HTTP);
- with --results (a run.py results file holding 64-client runs), the reference's CPU time per request, and
  the highest ratio each of the two bounds allows.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np

import prepare  # benchmarks/serve/prepare.py, beside this script
import run


def matmul_rate(k: int, n: int, seconds: float = 2.0) -> float:
    """fp32 FLOP/s of ONNX Runtime's MatMul on every core, 1024 rows (a batch of the server's token budget) by a
    k x n weight."""
    import onnxruntime as ort
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    weight = numpy_helper.from_array(rng.standard_normal((k, n), dtype=np.float32), "w")  # (k, n)
    graph = helper.make_graph([helper.make_node("MatMul", ["x", "w"], ["y"])], "mm",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1024, k])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1024, n])], [weight])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    options = ort.SessionOptions()
    options.intra_op_num_threads = os.cpu_count() or 1
    session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    x = {"x": rng.standard_normal((1024, k), dtype=np.float32)}
    for _ in range(5):
        session.run(None, x)
    runs, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        session.run(None, x)
        runs += 1
    return runs * 2 * 1024 * k * n / (time.perf_counter() - start)


def flops(config: dict, lengths: list[int], fill_mask: bool) -> float:
    """Floating-point work of one text on average: 2 per multiply-add of the encoder's matrix products and its
    attention (scores and weighted sum), and for fill-mask the head at the one [MASK], where the last block's
    feed-forward runs too (at no other position: nothing reads the others' final states)."""
    dim, hidden, layers = config["dim"], config["hidden_dim"], config["n_layers"]
    per_token = layers * 2 * (4 * dim * dim + 2 * dim * hidden)
    total = sum(n * per_token + layers * 4 * n * n * dim for n in lengths) / len(lengths)
    if not fill_mask:
        return total
    unread = np.mean(lengths) - 1  # positions whose last feed-forward nobody reads
    return total - unread * 2 * 2 * dim * hidden + 2 * (dim * dim + dim * config["vocab_size"])


def pipeline_cpu(workload: str, inputs: list[str], rounds: int = 4):
    """Our fp32 ONNX pipeline, batched as the server batches (its default budget of 1024 padded tokens), and its
    CPU seconds per text over all the texts at once, the best of `rounds`."""
    import distilbert

    task, _, folder = run.WORKLOADS[workload]
    pipe = distilbert.pipeline(task, run.CACHE / folder, backend="onnx", precision="fp32", batch_size=1024,
                               max_batch_tokens=1024)
    params = {"pooling": "mean", "normalize": True} if task == "feature-extraction" else {}
    pipe(inputs, **params)
    best = float("inf")
    for _ in range(rounds):
        start = time.process_time()
        pipe(inputs, **params)
        best = min(best, (time.process_time() - start) / len(inputs))
    return pipe, best


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--results", help="a run.py results file with 64-client runs of the reference")
    args = p.parse_args()
    if not all(prepare.ready(run.CACHE / folder) for _, _, folder in run.WORKLOADS.values()):
        raise SystemExit("run benchmarks/serve/prepare.py first")
    cores = os.cpu_count() or 1
    config = json.loads((run.CACHE / "hf" / "config.json").read_text())
    dim, hidden = config["dim"], config["hidden_dim"]
    rates = {(k, n): matmul_rate(k, n) for k, n in ((dim, dim), (dim, hidden), (hidden, dim))}
    rate = max(rates.values())  # the most a server could hope for, everywhere
    print(f"fp32 MatMul, ONNX Runtime, {cores} threads, 1024 rows: "
          + ", ".join(f"{k} x {n}: {r / 1e9:.0f}" for (k, n), r in rates.items()) + " GFLOP/s")
    reference = {}
    if args.results:
        for r in json.loads(Path(args.results).read_text())["runs"]:
            if r["server"] == "reference" and r["clients"] == 64:
                reference[r["workload"]] = r["cpu_ms_per_request"]
    print("| workload | mean tokens | GFLOP a text | CPU ms at that rate | our pipeline, CPU ms | reference, CPU ms "
          "| ratio bound: arithmetic / our pipeline |")
    print("|---|---|---|---|---|---|---|")
    for workload in run.WORKLOADS:
        inputs = run.texts(workload)
        pipe, ours = pipeline_cpu(workload, inputs)
        lengths = [len(ids) for ids in pipe.tokenizer(inputs)["input_ids"]]
        work = flops(config, lengths, workload == "fill-mask")
        floor_ms = work / rate * cores * 1000
        ours_ms = ours * 1000
        ref = reference.get(workload)
        bounds = f"{ref / floor_ms:.2f}x / {ref / ours_ms:.2f}x" if ref else "(no --results)"
        print(f"| {workload} | {np.mean(lengths):.1f} | {work / 1e9:.2f} | {floor_ms:.1f} | {ours_ms:.1f} | "
              f"{ref if ref else '-'} | {bounds} |")


if __name__ == "__main__":
    main()
