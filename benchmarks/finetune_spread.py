"""Seeds side by side: `distilbert finetune` and transformers' Trainer (benchmarks/finetune_trainer.py), every
task and seed, several runs at once on one machine (a GPU, or many cores), for the run-to-run spread that
recipes/finetune-minilm.sh measures too slowly on two cores.

Each run is bound by its own process's CPU, not by the GPU: on one H200 with 16 cores, MiniLM steps ran at
about 18 a second (batch 32, ours and the Trainer alike) whether 6 or 15 runs shared it. Set --deadline from
the longest run's steps at that rate (SST-2: 6,315 steps, about 6 minutes, plus its evaluations).

Each run is a fresh process. Ours is scored by its own validation every epoch: the last epoch's score is the
like-for-like figure (the Trainer keeps its last model), and the best epoch's, which is what ours keeps, is
reported beside it. The Trainer's GLUE runs are scored with distilbert.metrics, its NER and QA models with
`distilbert evaluate`. The distillation variant (a 3-layer student of MiniLM learning SST-2 from MiniLM
fine-tuned on SST-2, against the same student trained alone) runs as one chain beside the rest.

usage: finetune_spread.py MODEL --data DIR --out OUT [--seeds 42,43,44] [--tasks cola,mrpc,squad-runner,...]
                          [--jobs 8] [--deadline SECONDS] [--distil] [--max-steps N]
       finetune_spread.py --summary OUT
DIR holds glue/<Task>/{train,dev}.tsv, conll-train.txt, conll-valid.txt, squad-train.json, squad-dev.json.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
GLUE = {"cola": "CoLA", "sst2": "SST-2", "mrpc": "MRPC", "stsb": "STS-B", "rte": "RTE"}
CLI = [sys.executable, "-m", "distilbert"]
# A task named TASK-runner runs only ours, with the settings of the Trainer's script for TASK (run_glue's,
# run_ner's, run_qa's: no warm-up, no weight decay; run_ner: batch 8 at 5e-5; run_qa: 2 epochs at batch 12,
# 3e-5), beside the Trainer's runs of TASK.
RUNNER = {"glue": ["--warmup", "0", "--weight-decay", "0"],
          "ner": ["--batch-size", "8", "--learning-rate", "5e-5", "--warmup", "0", "--weight-decay", "0"],
          "squad": ["--epochs", "2", "--batch-size", "12", "--learning-rate", "3e-5", "--warmup", "0",
                    "--weight-decay", "0"]}
TRAINER = [sys.executable, str(ROOT / "benchmarks" / "finetune_trainer.py")]


def ours_command(model: str, data: Path, task: str, seed: int, out: Path, extra: list[str]) -> list[str]:
    if task.endswith("-runner"):
        task = task.removesuffix("-runner")
        extra = [*RUNNER["glue" if task in GLUE else task], *extra]
    common = ["--model", model, "--seed", str(seed), "--out", str(out), "--overwrite", *extra]
    if task in GLUE:
        return [*CLI, "finetune", "--glue", task, "--data-dir", str(data / "glue"), *common]
    if task == "ner":
        return [*CLI, "finetune", "--task", "token-classification", "--train", str(data / "conll-train.txt"),
                "--validation", str(data / "conll-valid.txt"), *common]
    return [*CLI, "finetune", "--task", "question-answering", "--train", str(data / "squad-train.json"),
            "--validation", str(data / "squad-dev.json"), *common]


def trainer_command(model: str, data: Path, task: str, seed: int, out: Path, extra: list[str]) -> list[str]:
    common = ["--seed", str(seed), "--out", str(out), *extra]
    if task in GLUE:
        return [*TRAINER, model, "--data-dir", str(data / "glue"), "--task", task, *common]
    if task == "ner":
        return [*TRAINER, model, "--task", "ner", "--train", str(data / "conll-train.txt"),
                "--validation", str(data / "conll-valid.txt"), *common]
    return [*TRAINER, model, "--task", "squad", "--train", str(data / "squad-train.json"),
            "--validation", str(data / "squad-dev.json"), *common]


def ours_result(out: Path, task: str) -> dict:
    from distilbert.data.glue import score

    task = task.removesuffix("-runner")
    results = json.loads((out / "eval_results.json").read_text())
    metric = results["metric"]

    def value(scores: dict) -> float:
        if task in GLUE:
            return score(task, scores)
        return 100 * scores[metric] if task == "ner" else scores[metric]

    return {"score": value(results["history"][-1]), "best_epoch_score": value(results["best"]),
            "history": results["history"]}


def evaluations_so_far(out: Path) -> list[dict]:
    """What a run stopped by the deadline had scored: our runs log each evaluation to log.jsonl as it ends."""
    try:
        lines = (json.loads(line) for line in (out / "log.jsonl").read_text().splitlines() if line.strip())
        return [line for line in lines if any(k.startswith("eval_") for k in line)]
    except (OSError, ValueError):
        return []


def run_one(job: dict, log_dir: Path, deadline: float) -> dict:
    started = time.perf_counter()
    log = log_dir / f"{job['name']}.log"
    left = deadline - time.time()
    if left < 30:
        return {**job, "status": "skipped (deadline)"}
    with open(log, "w") as f:
        try:
            code = subprocess.run(job["command"], stdout=f, stderr=subprocess.STDOUT, timeout=left, cwd=ROOT,
                                  env={**os.environ, "PYTHONPATH": str(ROOT)}).returncode
        except subprocess.TimeoutExpired:
            return {**job, "status": "stopped (deadline)", "seconds": time.perf_counter() - started,
                    "evaluations_so_far": evaluations_so_far(Path(job["out"]))}
    result = {**job, "status": "ok" if code == 0 else f"exit {code}", "seconds": time.perf_counter() - started}
    if code == 0:
        out = Path(job["out"])
        try:
            result.update(ours_result(out, job["task"]) if job["who"] != "trainer"
                          else {"score": json.loads((out / "results.json").read_text())["score"]})
        except (OSError, KeyError, ValueError) as e:
            result["status"] = f"no result: {e}"
    return result


def distil_chain(model: str, data: Path, out: Path, log_dir: Path, deadline: float, extra: list[str]) -> list[dict]:
    """MiniLM fine-tuned on SST-2 teaches a 3-layer copy of itself; the same copy also learns alone."""
    teacher = {"name": "ours-sst2-teacher", "who": "ours", "task": "sst2", "seed": 42, "out": str(out / "distil" / "teacher"),
               "command": ours_command(model, data, "sst2", 42, out / "distil" / "teacher", extra)}
    results = [run_one(teacher, log_dir, deadline)]
    if results[0]["status"] != "ok":
        return results
    student = out / "distil" / "student-init"
    if not (student / "config.json").is_file():
        made = subprocess.run([*CLI, "init-student", model, "--out", str(student), "--layers", "0,2,5"], cwd=ROOT,
                              env={**os.environ, "PYTHONPATH": str(ROOT)}, capture_output=True, text=True)
        if made.returncode:
            return results + [{"name": "student-init", "who": "student", "task": "sst2", "seed": 42,
                               "status": f"init-student: {made.stderr.strip()[-300:]}"}]
    jobs = [{"name": "student-distilled-sst2", "who": "student-distilled", "task": "sst2", "seed": 42,
             "out": str(out / "distil" / "distilled"),
             "command": ours_command(str(student), data, "sst2", 42, out / "distil" / "distilled",
                                     ["--teacher", teacher["out"], *extra])},
            {"name": "student-alone-sst2", "who": "student-alone", "task": "sst2", "seed": 42,
             "out": str(out / "distil" / "alone"),
             "command": ours_command(str(student), data, "sst2", 42, out / "distil" / "alone", extra)}]
    with ThreadPoolExecutor(2) as pool:
        results += list(pool.map(lambda j: run_one(j, log_dir, deadline), jobs))
    return results


def summary(out: Path) -> None:
    rows = [json.loads(line) for line in (out / "spread.jsonl").read_text().splitlines()]
    done = [r for r in rows if r["status"] == "ok"]
    print("| task | ours, last epoch: median (min-max, n) | ours, best epoch: median | Trainer: median (min-max, n) |")
    print("| --- | --- | --- | --- |")
    for task in dict.fromkeys(r["task"] for r in done):
        def cell(who: str, key: str = "score") -> str:
            xs = [r[key] for r in done if r["task"] == task and r["who"] == who and key in r]
            if not xs:
                return "-"
            return f"{statistics.median(xs):.1f} ({min(xs):.1f}-{max(xs):.1f}, {len(xs)})"
        print(f"| {task} | {cell('ours')} | {cell('ours', 'best_epoch_score')} | {cell('trainer')} |")
    for who in ("student-distilled", "student-alone"):
        for r in done:
            if r["who"] == who:
                print(f"{who} (3 layers) SST-2: last epoch {r['score']:.1f}, best epoch {r['best_epoch_score']:.1f}")
    for r in rows:
        if r["status"] != "ok":
            print(f"{r['name']}: {r['status']}", *r.get("evaluations_so_far", []))


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("model", nargs="?")
    p.add_argument("--data")
    p.add_argument("--out")
    p.add_argument("--seeds", default="42,43,44")
    p.add_argument("--tasks", default="cola,mrpc,stsb,rte,ner,squad")
    p.add_argument("--jobs", type=int, default=8)
    p.add_argument("--deadline", type=float, default=3600, help="seconds from now; later runs are stopped")
    p.add_argument("--distil", action="store_true", help="also the SST-2 distillation chain")
    p.add_argument("--max-steps", type=int, help="smoke test: stop every run early")
    p.add_argument("--summary")
    a = p.parse_args()
    if a.summary:
        return summary(Path(a.summary))
    out, data = Path(a.out), Path(a.data)
    log_dir = out / "logs"
    log_dir.mkdir(parents=True, exist_ok=True)
    deadline = time.time() + a.deadline
    ours_extra = ["--max-steps", str(a.max_steps)] if a.max_steps else []
    trainer_extra = ["--epochs", "0.02"] if a.max_steps else []
    jobs = []
    for seed in (int(s) for s in a.seeds.split(",")):
        for task in filter(None, a.tasks.split(",")):
            for who, command, extra in (("ours", ours_command, ours_extra), ("trainer", trainer_command, trainer_extra)):
                if who == "trainer" and task.endswith("-runner"):
                    continue
                run = out / who / task / f"seed-{seed}"
                jobs.append({"name": f"{who}-{task}-{seed}", "who": who, "task": task, "seed": seed, "out": str(run),
                             "command": command(a.model, data, task, seed, run, extra)})
    with open(out / "spread.jsonl", "a") as results, ThreadPoolExecutor(a.jobs) as pool:
        chain = pool.submit(distil_chain, a.model, data, out, log_dir, deadline, ours_extra) if a.distil else None
        for result in pool.map(lambda j: run_one(j, log_dir, deadline), jobs):
            results.write(json.dumps({k: v for k, v in result.items() if k != "command"}) + "\n")
            results.flush()
            print(result["name"], result["status"], f"{result.get('score', float('nan')):.2f}",
                  f"{result.get('seconds', 0):.0f} s", flush=True)
        for result in chain.result() if chain else []:
            results.write(json.dumps({k: v for k, v in result.items() if k != "command"}) + "\n")
    summary(out)


if __name__ == "__main__":
    main()
