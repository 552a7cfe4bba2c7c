"""transformers' Trainer with the example scripts' settings, beside `distilbert finetune` on the same files.

- GLUE: run_glue (transformers/examples/pytorch/text-classification) as its README runs it: max_seq_length
  128, padded to it (its default pad_to_max_length), batch 32, learning rate 2e-5, 3 epochs, the Trainer's
  defaults otherwise (AdamW, linear decay, no warm-up, no weight decay); `--pad-per-batch` pads each batch to its
  longest row instead (run_glue's `--pad_to_max_length False`). Scored with distilbert.metrics.glue,
  the same code that scores ours, so the numbers differ by training alone.
- NER (`--task ner --train FILE --validation FILE`): run_ner as its README runs it on CoNLL-2003: the
  Trainer's defaults (batch 8, learning rate 5e-5, 3 epochs), the tokenizer's maximum length, padded per
  batch (DataCollatorForTokenClassification), the first piece of each word labelled and the rest ignored.
- QA (`--task squad --train FILE --validation FILE`): run_qa as its README runs it on SQuAD v1.1: batch
  12, learning rate 3e-5, 2 epochs, 384 tokens with stride 128, padded to 384; a window that does not hold
  the whole answer points at [CLS].
NER and QA models are saved and scored by `distilbert evaluate`, as ours are (seqeval's entities; run_qa's
20 best starts and ends, answers of at most 30 tokens).

usage: finetune_trainer.py MODEL --data-dir DIR --task sst2 --seed 42 --out OUT [--epochs N]
       finetune_trainer.py MODEL --task ner|squad --train FILE --validation FILE --seed 42 --out OUT
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


def trainer_run(model: str, data_dir: str, task: str, seed: int, out: Path, epochs: float,
                max_steps: int = -1, pad_per_batch: bool = False) -> dict:
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
            self.enc = tokenizer([e.text for e in examples], pairs, padding=False if pad_per_batch else "max_length",
                                 max_length=128, truncation=True)
            self.labels = [labels.index(e.label) if labels else float(e.label) for e in examples]

        def __len__(self):
            return len(self.labels)

        def __getitem__(self, i):
            return {**{k: v[i] for k, v in self.enc.items()}, "labels": self.labels[i]}

    trainer, seconds = _train(net, dict(output_dir=str(out / "trainer"), per_device_train_batch_size=32,
                                        per_device_eval_batch_size=32, learning_rate=2e-5, num_train_epochs=epochs,
                                        seed=seed), Data(train),
                              transformers.DataCollatorWithPadding(tokenizer) if pad_per_batch else None, max_steps)
    predictions = trainer.predict(Data(dev)).predictions
    predicted = predictions[:, 0] if not labels else np.argmax(predictions, -1)
    references = [labels.index(e.label) if labels else float(e.label) for e in dev]
    result = metrics.glue(task, predicted, references)
    return {"task": task, "seed": seed, "metrics": result, "score": score(task, result), "train_seconds": seconds}


def _train(net, args_kwargs: dict, dataset, collator=None, max_steps: int = -1) -> tuple:
    """Train; with `max_steps` > 0, time that many steps, print the estimate for the whole run and exit (padded to
    a fixed length, every step costs the same; padded per batch, the estimate is only as good as the sample)."""
    import transformers

    args = transformers.TrainingArguments(save_strategy="no", report_to=[], logging_steps=50, max_steps=max_steps,
                                          **args_kwargs)
    trainer = transformers.Trainer(model=net, args=args, train_dataset=dataset, data_collator=collator)
    started = time.perf_counter()
    trainer.train()
    seconds = time.perf_counter() - started
    if max_steps > 0:
        steps = -(-len(dataset) // args.per_device_train_batch_size) * args.num_train_epochs
        print(json.dumps({"timed_steps": max_steps, "seconds_per_step": seconds / max_steps, "full_run_steps": steps,
                          "full_run_seconds_estimate": seconds / max_steps * steps}))
        sys.exit(0)
    return trainer, seconds


class _Rows:
    """A list of feature dicts as a torch-style dataset."""

    def __init__(self, rows: list[dict]):
        self.rows = rows

    def __len__(self):
        return len(self.rows)

    def __getitem__(self, i):
        return self.rows[i]


def ner_run(model: str, train_file: str, dev_file: str, seed: int, out: Path, epochs: float,
            max_steps: int = -1, group_by_length: bool = False) -> dict:
    import transformers

    from distilbert.evaluate import evaluate

    train = read("token-classification", train_file)
    labels = sorted({t for e in train for t in e.tags})
    transformers.set_seed(seed)
    tokenizer = transformers.AutoTokenizer.from_pretrained(model)
    net = transformers.AutoModelForTokenClassification.from_pretrained(
        model, num_labels=len(labels), id2label=dict(enumerate(labels)), label2id={t: i for i, t in enumerate(labels)})
    rows = []
    for e in train:
        enc = tokenizer(e.tokens, is_split_into_words=True, truncation=True)
        previous, tags = None, []
        for word in enc.word_ids():  # run_ner, label_all_tokens False: the first piece of a word only
            tags.append(-100 if word is None or word == previous else labels.index(e.tags[word]))
            previous = word
        rows.append({**enc, "labels": tags})
    args = dict(output_dir=str(out / "trainer"), num_train_epochs=epochs, seed=seed)
    if group_by_length:
        args["train_sampling_strategy"] = "group_by_length"  # its LengthGroupedSampler
    trainer, seconds = _train(net, args, _Rows(rows), transformers.DataCollatorForTokenClassification(tokenizer),
                              max_steps)
    trainer.save_model(str(out / "model"))
    tokenizer.save_pretrained(str(out / "model"))
    result = evaluate(str(out / "model"), "token-classification", dev_file, progress=False)["metrics"]
    return {"task": "ner", "seed": seed, "group_by_length": group_by_length, "metrics": result,
            "score": 100 * result["overall_f1"], "train_seconds": seconds}


def squad_run(model: str, train_file: str, dev_file: str, seed: int, out: Path, epochs: float,
              max_steps: int = -1) -> dict:
    import transformers

    from distilbert.evaluate import evaluate

    train = read("question-answering", train_file)
    transformers.set_seed(seed)
    tokenizer = transformers.AutoTokenizer.from_pretrained(model)
    net = transformers.AutoModelForQuestionAnswering.from_pretrained(model)
    enc = tokenizer([e.question.lstrip() for e in train], [e.context for e in train], truncation="only_second",
                    max_length=384, stride=128, return_overflowing_tokens=True, return_offsets_mapping=True,
                    padding="max_length")
    rows = []
    for i, offsets in enumerate(enc["offset_mapping"]):  # run_qa's prepare_train_features
        example = train[enc["overflow_to_sample_mapping"][i]]
        sequence = enc.sequence_ids(i)
        start_char = example.answers["answer_start"][0]
        end_char = start_char + len(example.answers["text"][0])
        first = sequence.index(1)
        last = len(sequence) - 1 - sequence[::-1].index(1)
        if not (offsets[first][0] <= start_char and offsets[last][1] >= end_char):
            start = end = 0
        else:
            start = first
            while start <= last and offsets[start][0] <= start_char:
                start += 1
            end = last
            while offsets[end][1] >= end_char:
                end -= 1
            start, end = start - 1, end + 1
        rows.append({"input_ids": enc["input_ids"][i], "attention_mask": enc["attention_mask"][i],
                     **({"token_type_ids": enc["token_type_ids"][i]} if "token_type_ids" in enc else {}),
                     "start_positions": start, "end_positions": end})
    trainer, seconds = _train(net, dict(output_dir=str(out / "trainer"), per_device_train_batch_size=12,
                                        learning_rate=3e-5, num_train_epochs=epochs, seed=seed), _Rows(rows),
                              max_steps=max_steps)
    trainer.save_model(str(out / "model"))
    tokenizer.save_pretrained(str(out / "model"))
    result = evaluate(str(out / "model"), "question-answering", dev_file, progress=False)["metrics"]
    return {"task": "squad", "seed": seed, "metrics": result, "score": result["f1"], "train_seconds": seconds}


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
    trainer_seconds = sum(v for k, v in times.items() if k.startswith("trainer-") and k.split("-")[1] in ours["runs"])
    print(f"\nwall time: ours (glue) {times.get('glue', 0)} s, Trainer {trainer_seconds} s")
    for name, theirs in (("ner", "ner"), ("ner-b32", None), ("qa", "squad")):  # the Trainer's NER once, beside "ner"
        path = run / f"{name}-eval.json"
        if path.is_file():
            print(f"{name}, ours: {path.read_text().strip()} ({times.get(name, '?')} s)")
        for result in [] if theirs is None else sorted((run / "trainer" / theirs).glob("seed-*/results.json")):
            r = json.loads(result.read_text())
            seconds = times.get(f"trainer-{theirs}-{r['seed']}", "?")
            print(f"{name}, Trainer seed {r['seed']}: score {r['score']:.1f} ({seconds} s)")
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
    p.add_argument("--train", help="NER: a CoNLL file; squad: a SQuAD JSON file")
    p.add_argument("--validation")
    p.add_argument("--epochs", type=float, help="default 3 (squad: 2, as run_qa's README)")
    p.add_argument("--max-steps", type=int, default=-1, help="time this many steps, print the estimate and stop")
    p.add_argument("--group-by-length", action="store_true",
                   help="NER: the Trainer's own length grouping (LengthGroupedSampler, megabatches of 50 batches)")
    p.add_argument("--pad-per-batch", action="store_true",
                   help="GLUE: pad each batch to its longest row (run_glue's --pad_to_max_length False), not to 128: "
                        "the same step in less time")
    p.add_argument("--summary", help="a run folder of recipes/finetune-minilm.sh: print its table")
    a = p.parse_args()
    if a.summary:
        return summary(Path(a.summary))
    if a.group_by_length and a.task != "ner":
        p.error(f"--group-by-length is for --task ner (run_ner's Trainer), not {a.task}")
    if a.pad_per_batch and a.task in ("ner", "squad"):
        p.error(f"--pad-per-batch is for the GLUE tasks (run_glue's Trainer), not {a.task}")
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    if a.task == "ner":
        result = ner_run(a.model, a.train, a.validation, a.seed, out, a.epochs or 3.0, a.max_steps, a.group_by_length)
    elif a.task == "squad":
        result = squad_run(a.model, a.train, a.validation, a.seed, out, a.epochs or 2.0, a.max_steps)
    else:
        result = trainer_run(a.model, a.data_dir, a.task, a.seed, out, a.epochs or 3.0, a.max_steps, a.pad_per_batch)
    (out / "results.json").write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
