"""The Hugging Face Inference API: POST / (and POST /pipeline/{task}) with {"inputs": ..., "parameters": {...}}.

The body is the server's task's own (schemas.inference_request): `inputs` and `parameters` as its pipeline
reads them, and the answer is the pipeline's answer, in the shapes `huggingface_hub`'s InferenceClient
parses: fill-mask [{score, token, token_str, sequence}], text-classification [[{label, score}]] (every
label, best first, unless top_k), token-classification [{entity_group | entity, score, word, start, end}],
question-answering {answer, score, start, end}, feature-extraction the pooled embedding (or, with
"pooling": "none", token features).

Parameters are the pipeline's own (fill-mask top_k, targets; text-classification top_k,
function_to_apply; token-classification aggregation_strategy, ignore_labels, stride; question-answering
top_k, doc_stride, ...), plus `truncate` (false: 413 for a text the model would have to cut; token
classification and question answering cut nothing, they read a long text in windows) for every task.
A parameter given as null is left to its default.
"""

# no `from __future__ import annotations`: FastAPI reads each handler's body model from its annotation, a
# class made for this server (schemas.py), which a string annotation could not name

from fastapi import APIRouter
from fastapi import Path as PathParameter

from .. import tasks
from ..errors import UserError
from .core import ApiError, Server, count_characters, respond
from .schemas import INFERENCE_ANSWERS, answers, inference_request

SERVER_PARAMETERS = ("truncate", "truncation_direction", "prompt_name")


def routes(server: Server) -> APIRouter:
    router = APIRouter(tags=["Hugging Face Inference API"])
    InferenceRequest = inference_request(server.limits)
    spec = tasks.TASKS[server.task]
    ok = INFERENCE_ANSWERS[server.task]

    @router.post("/", summary=f"The model's task ({server.task}), as the Hugging Face Inference API calls it",
                 responses=answers(server.limits, ok, 400, 413, 422, 429, 500))
    async def inference(body: InferenceRequest):
        return await answer(server, body)

    names = [spec.name, *spec.aliases]
    task_parameter = PathParameter(description=f"this server's task: {' or '.join(names)} (another task: 424, "
                                               "a name that is no task: 404)", json_schema_extra={"enum": names})

    @router.post("/pipeline/{task}", summary="The same, naming the task (an error if the model runs another)",
                 responses=answers(server.limits, ok, 400, 404, 413, 422, 424, 429, 500))
    async def inference_for_task(body: InferenceRequest, task: str = task_parameter):
        try:
            name = tasks.get(task).name
        except UserError as e:
            raise ApiError(404, "Validation", str(e)) from None
        server.require(name, f"/pipeline/{task}")
        return await answer(server, body)

    return router


async def answer(server: Server, body):
    params = body.parameters.model_dump(exclude_none=True) if body.parameters is not None else {}
    truncate = params.pop("truncate", None)
    for name in SERVER_PARAMETERS:
        params.pop(name, None)
    single = not isinstance(body.inputs, list)
    items = [body.inputs] if single else body.inputs
    items = [item.model_dump(exclude_none=True) if hasattr(item, "model_dump") else item for item in items]
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
