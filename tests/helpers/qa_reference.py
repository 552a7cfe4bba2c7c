"""Run in Optimum's own virtual environment (.venv-optimum, transformers 4.57): the reference answers of
transformers' QuestionAnsweringPipeline, which transformers 5 removed.

usage: qa_reference.py CALLS.json ANSWERS.json

CALLS.json is a list of {"folder", "inputs" (optional), "kwargs"}; each call is
pipeline(inputs, **kwargs) (or pipeline(**kwargs)) on that model folder. ANSWERS.json gets one entry per
call: the pipeline's answer, or {"error": message}.
"""

import json
import sys
import warnings

import torch
import transformers

torch.set_num_threads(1)  # tiny models: more threads only wait on each other
warnings.simplefilter("ignore")  # 4.57 warns that positional inputs are deprecated
transformers.logging.set_verbosity_error()

calls_path, answers_path = sys.argv[1:]
pipes = {}


def load(folder):
    if folder not in pipes:
        config = transformers.AutoConfig.from_pretrained(folder)
        model, info = transformers.AutoModelForQuestionAnswering.from_pretrained(folder, output_loading_info=True)
        bad = {k: v for k, v in info.items() if v}
        assert not bad, f"{folder} does not load cleanly in transformers {transformers.__version__}: {bad}"
        # A real DistilBERT checkpoint ships DistilBertTokenizer, whose inputs have no token_type_ids
        if config.model_type == "distilbert":
            tokenizer = transformers.DistilBertTokenizerFast.from_pretrained(folder)
        else:
            tokenizer = transformers.BertTokenizerFast.from_pretrained(folder)
        assert len(tokenizer) == config.vocab_size, f"the reference tokenizer has {len(tokenizer)} tokens"
        # 4.57 takes max_seq_len's default from the tokenizer; a real checkpoint's says the model's maximum
        tokenizer.model_max_length = min(tokenizer.model_max_length, config.max_position_embeddings)
        pipes[folder] = transformers.pipeline("question-answering", model=model, tokenizer=tokenizer)
    return pipes[folder]


answers = []
for call in json.load(open(calls_path, encoding="utf-8")):
    pipe = load(call["folder"])
    try:
        args = (call["inputs"],) if "inputs" in call else ()
        answers.append(pipe(*args, **call.get("kwargs", {})))
    except Exception as e:  # noqa: BLE001 - reported to the test, which decides
        answers.append({"error": f"{type(e).__name__}: {e}"})
json.dump(answers, open(answers_path, "w", encoding="utf-8"), ensure_ascii=False)
