"""The Ray path's throughput against single-process `distilbert embed`, on W2's corpus (benchmarks/run.py).

usage: .venv/bin/python benchmarks/ray_embed.py [--texts N] [--actors 1,2] [--rounds R]

The model is W2's: a full-size random-weight distilbert-base-uncased exported with `--optimize` (made once
into benchmarks/.cache). Both sides are timed from the start of the work to the last embedding on disk:
  single  `distilbert embed corpus.txt --output x.npy` in a process of its own (model load included),
          with the machine's cores as ONNX Runtime threads
  ray     `run_job` on a local Ray started once beforehand (as a cluster is), from submission to the last
          Parquet file (actor start, model load and the Parquet write included); N actors of cores / N CPUs
Rounds alternate the two, and medians are reported (this machine's speed drifts over minutes). Prints each
time, rows/s, rows/s per core, the ratio ray / single, and the largest difference between the embeddings.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import run  # noqa: E402  (benchmarks/run.py: the W2 model and corpus)

PYTHON = sys.executable


def single(corpus: Path, model: Path, out: Path) -> float:
    start = time.perf_counter()
    subprocess.run([PYTHON, "-m", "distilbert.cli", "embed", str(corpus), "--model", str(model), "--pooling", "mean",
                    "--output", str(out)], check=True, stderr=subprocess.DEVNULL)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--texts", type=int, default=1000, help="corpus size (W2 uses 5000)")
    parser.add_argument("--actors", default="1,2", help="actor counts to run, comma-separated")
    parser.add_argument("--rounds", type=int, default=1)
    args = parser.parse_args()

    from distilbert import ray as on_ray
    from distilbert.backends.onnx import usable_cores

    run.prepare_ours(exports=("feature-extraction",))
    run._texts(args.texts)
    corpus, model = run.CACHE / "corpus.txt", run.CACHE / "ours-features"
    n = len(corpus.read_text(encoding="utf-8").splitlines())
    cores = usable_cores()
    actor_counts = [int(a) for a in args.actors.split(",")]
    print(f"{n} texts of W2's corpus, {cores} cores, distilbert-base (random weights) fp32 ONNX", file=sys.stderr)

    on_ray.connect(num_cpus=cores)
    times: dict[str, list[float]] = {"single": [], **{f"ray x{a}": [] for a in actor_counts}}
    for r in range(args.rounds):
        times["single"].append(single(corpus, model, run.CACHE / "ray-single.npy"))
        print(f"round {r + 1}: single {times['single'][-1]:.1f} s", file=sys.stderr)
        for a in actor_counts:
            out = run.CACHE / f"ray-x{a}.parquet"
            summary = on_ray.run_job("feature-extraction", str(corpus), str(out), model=str(model), num_actors=a,
                                     cpus_per_actor=cores // a, log=lambda line: None)
            assert summary.rows == n, summary
            times[f"ray x{a}"].append(summary.seconds)
            print(f"round {r + 1}: ray x{a} {summary.seconds:.1f} s", file=sys.stderr)

    import pyarrow.parquet as pq

    reference = np.load(run.CACHE / "ray-single.npy")
    base = n / statistics.median(times["single"])
    print(f"| path | seconds (median of {args.rounds}) | texts/s | texts/s per core | x single | max abs diff |")
    print("|---|---|---|---|---|---|")
    for name, seconds in times.items():
        rate = n / statistics.median(seconds)
        diff = ""
        if name != "single":
            table = pq.read_table(run.CACHE / f"ray-x{name.split('x')[1]}.parquet")
            got = np.array(table.column("embedding").to_pylist())
            diff = f"{np.abs(got - reference).max():.1e}"
        print(f"| {name} | {statistics.median(seconds):.1f} | {rate:.1f} | {rate / cores:.1f} | {rate / base:.2f} "
              f"| {diff} |")


if __name__ == "__main__":
    main()
