#!/usr/bin/env bash
# A real run on a CPU in under an hour: pretrain a small BERT teacher (4 layers, 256 wide) on the corpora
# in ../shared/data/text, distil a 2-layer student from it, and compare both on held-out WikiText-2 with a
# unigram model of the training text (token frequencies, no context): the floor a model must clear.
# Masking is uniform (mlm_smoothing 0), as evaluate-mlm's is: the original's smoothing 0.7 blanks rare
# tokens far more often, and a model trained on those blanks under-predicts the frequent words that most
# uniform blanks are (see the recipes' README section).
# usage: recipes/cpu-run.sh [RUN_DIR]   (default runs/cpu; add --resume to continue an interrupted run)
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/venv.sh
data="${DISTILBERT_DATA:-../shared/data}"
run="${1:-runs/cpu}"
resume="${2:-}"
mkdir -p "$run/vocab"
cp "$data/vocab/bert-base-uncased-vocab.txt" "$run/vocab/vocab.txt"

# WikiText-2: the last 10% of its paragraphs are held out for evaluation; the rest, PTB and Shakespeare train.
python - "$data" "$run" <<'PY'
import sys
from pathlib import Path
data, run = Path(sys.argv[1]), Path(sys.argv[2])
lines = (data / "text" / "wikitext-2-valid.txt").read_text(encoding="utf-8").splitlines()
cut = int(len(lines) * 0.9)
(run / "wikitext-train.txt").write_text("\n".join(lines[:cut]) + "\n", encoding="utf-8")
held = [l.strip() for l in lines[cut:] if len(l.split()) >= 8 and not l.strip().startswith("=")]
(run / "heldout.txt").write_text("\n".join(held) + "\n", encoding="utf-8")
PY

[ -f "$run/data/meta.json" ] || distilbert prepare-data "$run/wikitext-train.txt" "$data/text/ptb-valid.txt" \
  "$data/text/tinyshakespeare.txt" --tokenizer "$run/vocab" --out "$run/data" --max-length 128 --unit paragraph
[ -f "$run/teacher-init/config.json" ] || distilbert new-model "$run/teacher-init" --tokenizer "$run/vocab" \
  --family bert --dim 256 --layers 4 --heads 4 --max-positions 128
start=$(date +%s)
if [ ! -f "$run/teacher/model.safetensors" ]; then
  distilbert pretrain --model "$run/teacher-init" --data "$run/data" --out "$run/teacher" \
    --recipe recipes/cpu-teacher.json $([ -f "$run/teacher/checkpoint.pt" ] && echo --resume)
fi
teacher_done=$(date +%s)
[ -f "$run/student-init/config.json" ] || distilbert init-student "$run/teacher" --out "$run/student-init"
if [ ! -f "$run/student/model.safetensors" ]; then
  distilbert distill --teacher "$run/teacher" --student "$run/student-init" --data "$run/data" --out "$run/student" \
    --recipe recipes/cpu-student.json $([ -f "$run/student/checkpoint.pt" ] && echo --resume)
fi
student_done=$(date +%s)
distilbert evaluate-mlm "$run/teacher" --text "$run/heldout.txt" --data "$run/data" --json > "$run/teacher-eval.json"
distilbert evaluate-mlm "$run/student" --text "$run/heldout.txt" --data "$run/data" --json > "$run/student-eval.json"
distilbert plot-run "$run/teacher" && distilbert plot-run "$run/student"
python - "$run" $((teacher_done - start)) $((student_done - teacher_done)) <<'PY'
import json, sys
run, t_min, s_min = sys.argv[1], int(sys.argv[2]) / 60, int(sys.argv[3]) / 60
rows = [("teacher (BERT, 4 layers)", json.load(open(f"{run}/teacher-eval.json")), t_min),
        ("student (DistilBERT, 2 layers)", json.load(open(f"{run}/student-eval.json")), s_min)]
print("| model | parameters | MLM accuracy | perplexity | tokens/s (eval) | training minutes |")
print("| --- | --- | --- | --- | --- | --- |")
for name, r, minutes in rows:
    print(f"| {name} | {r['parameters']:,} | {r['accuracy']:.3f} | {r['perplexity']:.1f} | {r['tokens_per_second']:,.0f} | {minutes:.0f} |")
u = rows[0][1]
print(f"| unigram model of the training text (no context) | | {u['unigram_accuracy']:.3f} | {u['unigram_perplexity']:.1f} | | |")
PY
