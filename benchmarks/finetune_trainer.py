"""transformers' Trainer on a GLUE task with run_glue's settings, beside `distilbert glue` on the same files.

run_glue (transformers/examples/pytorch/text-classification) as its README runs it: max_seq_length 128,
padded to it (its default pad_to_max_length), batch 32, learning rate 2e-5, 3 epochs, the Trainer's
defaults otherwise (AdamW, linear decay, no warm-up, no weight decay). Scored with distilbert.metrics.glue,
the same code that scores ours, so the numbers differ by training alone.

usage: finetune_trainer.py MODEL --data-dir DIR --task sst2 --seed 42 --out OUT [--epochs N]
       finetune_trainer.py --summary RUN_DIR     (the table of recipes/finetune-minilm.sh)
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from distilbert import metrics  # noqa: E402
from distilbert.data import read  # noqa: E402
from distilbert.data.glue import get, files, score  # noqa: E402


def trainer_run(model: str, data_dir: str, task: str, seed: int, out: Path, epochs: float) -> dict:
    import numpy as np
    import torch
    import transformers

    glue = get(task)
    train, dev = (read("text-classification", p, glue=task) for p in files(task, data_dir))
    labels = list(glue.labels) if glue.labels else None
    transformers.set_seed(seed)
    tokenizer = transformers.AutoTokenizer.from_pretrained(model)
    net = transformers.AutoModelForSequenceClassification.from_pretrained(model, num_labels=len(labels) if labels else 1)

    class Data(torch.utils.data.Dataset):
        def __init__(self, examples):
            pairs = [e.text_pair for e in examples] if examples[0].text_pair is not None else None
            self.enc = tokenizer([e.text for e in examples], pairs, padding="max_length", max_length=128, truncation=True)
            self.labels = [labels.index(e.label) if labels else float(e.label) for e in examples]

        def __len__(self):
            return len(self.labels)

        def __getitem__(self, i):
            return {**{k: v[i] for k, v in self.enc.items()}, "labels": self.labels[i]}

    args = transformers.TrainingArguments(output_dir=str(out / "trainer"), per_device_train_batch_size=32,
                                          per_device_eval_batch_size=32, learning_rate=2e-5, num_train_epochs=epochs,
                                          seed=seed, save_strategy="no", report_to=[], logging_steps=50)
    trainer = transformers.Trainer(model=net, args=args, train_dataset=Data(train))
    started = time.perf_counter()
    trainer.train()
    seconds = time.perf_counter() - started
    predictions = trainer.predict(Data(dev)).predictions
    predicted = predictions[:, 0] if not labels else np.argmax(predictions, -1)
    references = [labels.index(e.label) if labels else float(e.label) for e in dev]
    result = metrics.glue(task, predicted, references)
    return {"task": task, "seed": seed, "metrics": result, "score": score(task, result), "train_seconds": seconds}


def summary(run: Path) -> None:
    times = {}
    if (run / "times.tsv").is_file():
        for line in (run / "times.tsv").read_text().splitlines():
            name, seconds = line.split("\t")
            times[name] = times.get(name, 0) + int(seconds)
    ours = json.loads((run / "glue" / "glue_results.json").read_text())
    print(f"| task | ours (median) | Trainer (median) | ours spread | Trainer spread |")
    print("| --- | --- | --- | --- | --- |")
    for task, runs in ours["runs"].items():
        theirs = [json.loads(p.read_text())["score"] for p in sorted((run / "trainer" / task).glob("seed-*/results.json"))]
        mine = [r["score"] for r in runs]
        spread = lambda xs: f"{min(xs):.1f}-{max(xs):.1f}" if len(xs) > 1 else "-"  # noqa: E731
        print(f"| {task} | {statistics.median(mine):.1f} | {statistics.median(theirs):.1f} | {spread(mine)} | "
              f"{spread(theirs) if theirs else '-'} |" if theirs else f"| {task} | {statistics.median(mine):.1f} | - | - | - |")
    trainer_seconds = sum(v for k, v in times.items() if k.startswith("trainer-"))
    print(f"\nwall time: ours (glue) {times.get('glue', 0)} s, Trainer {trainer_seconds} s")
    for name in ("ner", "qa"):
        path = run / f"{name}-eval.json"
        if path.is_file():
            print(f"{name}: {path.read_text().strip()} ({times.get(name, '?')} s)")
    for name in ("sst2-student", "sst2-alone"):
        path = run / name / "eval_results.json"
        if path.is_file():
            print(f"{name}: accuracy {json.loads(path.read_text())['best']['accuracy']:.4f}")


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("model", nargs="?")
    p.add_argument("--data-dir")
    p.add_argument("--task")
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--out")
    p.add_argument("--epochs", type=float, default=3.0)
    p.add_argument("--summary", help="a run folder of recipes/finetune-minilm.sh: print its table")
    a = p.parse_args()
    if a.summary:
        return summary(Path(a.summary))
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    result = trainer_run(a.model, a.data_dir, a.task, a.seed, out, a.epochs)
    (out / "results.json").write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
