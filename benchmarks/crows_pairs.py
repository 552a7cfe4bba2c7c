"""CrowS-Pairs over all 1,508 pairs on a full-size DistilBERT: wall time per backend.

usage: .venv/bin/python benchmarks/crows_pairs.py [--limit N]

On run.py's full-size random-weight distilbert-base-uncased (made here if missing, with our fused fp32 and
int8 exports), each peer runs `distilbert bias MODEL --probes crows-pairs` in a process of its own, one after
the other, and the wall time of that whole command (start-up, model load, every masked copy, the report)
is printed beside the pairs and masked copies per second. Random weights make the metric itself meaningless;
the work per pair is the same as for the real model. Writes benchmarks/results-crows-pairs.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import run  # noqa: E402  (benchmarks/run.py: the checkpoint and our exports)

PEERS = {
    "ours-onnx-fp32": ("ours-fill-mask", ["--backend", "onnx"]),
    "ours-onnx-int8": ("ours-fill-mask", ["--backend", "onnx", "--precision", "int8"]),
    "ours-torch-fp32": ("hf", ["--backend", "torch"]),
}
MASKED_COPIES = 42_508  # all 1,508 pairs (the README's count)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--limit", type=int, help="the first N pairs only (a quick check of the script)")
    args = parser.parse_args()
    run.prepare_ours(exports=("fill-mask",))
    results = {"machine": f"{platform.processor() or platform.machine()}, {len(os.sched_getaffinity(0))} cores",
               "date": time.strftime("%Y-%m-%d"), "pairs": args.limit or 1508, "peers": {}}
    for peer, (folder, flags) in PEERS.items():
        with tempfile.TemporaryDirectory() as out:
            command = [str(run.OURS), "-m", "distilbert.cli", "bias", str(run.CACHE / folder), "--probes", "crows-pairs",
                       "--out", out, *flags, *(["--limit", str(args.limit)] if args.limit else [])]
            start = time.perf_counter()
            subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
            seconds = time.perf_counter() - start
            summary = json.loads((Path(out) / "crows_pairs.json").read_text())
        results["peers"][peer] = {"seconds": round(seconds, 1), "n": summary["n"], "metric": summary["metric"]}
        print(f"{peer}: {seconds:.1f} s for {summary['n']} pairs", flush=True)
    torch_seconds = results["peers"]["ours-torch-fp32"]["seconds"]
    print("\n| backend | seconds | pairs/s | masked copies/s | x PyTorch fp32 |\n|---|---|---|---|---|")
    for peer, row in results["peers"].items():
        copies = MASKED_COPIES * row["n"] / 1508 if not args.limit else float("nan")
        print(f"| {peer} | {row['seconds']:.1f} | {row['n'] / row['seconds']:.1f} | {copies / row['seconds']:.0f} "
              f"| {torch_seconds / row['seconds']:.2f} |")
    if not args.limit:
        (Path(__file__).parent / "results-crows-pairs.json").write_text(json.dumps(results, indent=1) + "\n")


if __name__ == "__main__":
    main()
