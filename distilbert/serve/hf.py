"""The Hugging Face Inference API: POST / (and POST /pipeline/{task}) with {"inputs": ..., "parameters": {...}}.

The model's task reads `inputs` and `parameters` exactly as its pipeline does, and the answer is the
pipeline's answer, in the shapes `huggingface_hub`'s InferenceClient parses: fill-mask [{score, token,
token_str, sequence}], text-classification [[{label, score}]] (every label, best first, unless top_k),
token-classification [{entity_group | entity, score, word, start, end}], question-answering {answer,
score, start, end}, feature-extraction the pooled embedding (or, with "pooling": "none", token features).

Parameters are the pipeline's own (fill-mask top_k, targets; text-classification top_k,
function_to_apply; token-classification aggregation_strategy, ignore_labels; question-answering top_k,
doc_stride, ...), plus `truncate` (false: 413 for a text the model would have to cut; token classification
and question answering cut nothing, they read a long text in windows) for every task.
"""

from __future__ import annotations

import functools
import inspect
from typing import Any

from fastapi import APIRouter

from .. import tasks
from ..errors import UserError
from .core import ApiError, Server, count_characters, respond
from .schemas import InferenceRequest

SERVER_PARAMETERS = ("truncate", "truncation_direction", "prompt_name")


def routes(server: Server) -> APIRouter:
    router = APIRouter(tags=["Hugging Face Inference API"])

    @router.post("/", summary="The model's task, as the Hugging Face Inference API calls it")
    async def inference(body: InferenceRequest):
        return await answer(server, body)

    @router.post("/pipeline/{task}", summary="The same, naming the task (an error if the model runs another)")
    async def inference_for_task(task: str, body: InferenceRequest):
        try:
            name = tasks.get(task).name
        except UserError as e:
            raise ApiError(404, "Validation", str(e)) from None
        server.require(name, f"/pipeline/{task}")
        return await answer(server, body)

    return router


async def answer(server: Server, body: InferenceRequest):
    params = dict(body.parameters or {})
    truncate = params.pop("truncate", None)
    if truncate is not None and not isinstance(truncate, bool):
        raise ApiError(422, "Validation", f"parameters.truncate: expected true or false, got {truncate!r}")
    if params.pop("truncation_direction", None) not in (None, "right", "Right"):
        raise ApiError(422, "Validation", "parameters.truncation_direction: only right truncation is supported")
    if params.pop("prompt_name", None) is not None:
        raise ApiError(422, "Validation", "parameters.prompt_name: this server has no prompts; leave it out")
    check_parameters(server, params)
    single, items = inputs_of(server.task, body.inputs)
    server.check_batch(items)
    if server.task == "feature-extraction":
        params.setdefault("pooling", server.pooling)  # "none": token features, also where the folder pools
    if server.task == "text-classification":
        params.setdefault("top_k", None)  # every label, best first, as the Inference API answers
    inputs = items[0] if single else items
    result, meta = await server.run(len(items), count_characters(items),
                                    lambda: server.pipe.preprocess(inputs, **params), truncate)
    if server.task == "text-classification" and single:
        result = [result]  # the Inference API's [[{label, score}]] for one text
    return respond(result, meta)


def check_parameters(server: Server, params: dict[str, Any]) -> None:
    accepted = accepted_parameters(type(server.pipe).preprocess)
    if accepted is None:
        return
    unknown = [name for name in params if name not in accepted]
    if unknown:
        raise ApiError(422, "Validation", f"parameters.{unknown[0]}: {server.task} has no parameter {unknown[0]!r}; "
                       f"it takes {', '.join([*accepted, 'truncate'])}")


@functools.cache
def accepted_parameters(preprocess) -> tuple[str, ...] | None:
    """The keyword parameters a pipeline's `preprocess` takes (None: any), read once, not on every request."""
    signature = inspect.signature(preprocess)
    if any(p.kind == p.VAR_KEYWORD for p in signature.parameters.values()):
        return None
    return tuple(name for name, p in list(signature.parameters.items())[2:]  # self, inputs
                 if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY))


def inputs_of(task: str, inputs: Any) -> tuple[bool, list]:
    """(one input?, the inputs as a list), or a 422 naming the field."""
    if task == "question-answering":
        single = isinstance(inputs, dict)
        items = [inputs] if single else inputs
        if not isinstance(items, list) or not all(_is_question(x) for x in items):
            raise ApiError(422, "Validation", 'inputs: expected {"question": "...", "context": "..."} or a list of them')
        return single, items
    if task == "text-classification":
        single = isinstance(inputs, (str, dict))
        items = [inputs] if single else inputs
        if not isinstance(items, list) or not all(_is_sequence(x) for x in items):
            raise ApiError(422, "Validation", 'inputs: expected a text, {"text": "...", "text_pair": "..."}, or a list of them')
        return single, items
    single = isinstance(inputs, str)
    items = [inputs] if single else inputs
    if not isinstance(items, list) or not all(isinstance(x, str) for x in items):
        raise ApiError(422, "Validation", "inputs: expected a text or a list of texts")
    return single, items


def _is_question(x) -> bool:
    return isinstance(x, dict) and isinstance(x.get("question"), str) and isinstance(x.get("context"), str)


def _is_sequence(x) -> bool:
    if isinstance(x, str):
        return True
    if isinstance(x, dict):
        return isinstance(x.get("text"), str) and isinstance(x.get("text_pair", ""), (str, type(None)))
    return isinstance(x, list) and len(x) == 2 and all(isinstance(t, str) for t in x)
