"""The contract: request bodies as text-embeddings-inference (TEI), OpenAI and the Hugging Face Inference API
define them, narrowed to the model this server runs, and every answer a route gives.

The request models are built for each server (`Limits`: its task, batch limit, vocabulary, ...): FastAPI
validates with them and writes /openapi.json from them, so the document and the validation are one thing.
Two rules the handlers keep themselves, to answer with TEI's statuses, are added to the document only
(`Doc`): a list of inputs is not empty (400) and holds at most --max-client-batch-size inputs (413).
What no schema can say is in the descriptions and answered 422 naming the field: a fill-mask text whose
[MASK] the model's maximum cuts off, a target with no word piece, a question too long for its windows.

Bodies are strict (a string is not a boolean nor a number), as TEI's serde types are, with one exception
JSON Schema makes: 3.0 is the integer 3. Unknown fields are ignored, as there, except in the Inference
API's `parameters`, where an unknown name is refused. A pattern here reads the same in ECMA-262 (JSON
Schema's) and in Python.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, create_model

ERROR_TYPES = ("Validation", "Empty", "Overloaded", "Unhealthy", "Unauthorized", "Backend")
POOLINGS = ("cls", "mean", "max", "none")
FUNCTIONS = ("softmax", "sigmoid", "none")
STRATEGIES = ("none", "simple", "first", "average", "max")
# POST /'s parameters for each task (besides truncate, truncation_direction and prompt_name), and the shapes
# its inputs take: what a 422 names
PARAMETERS = {
    "fill-mask": ("top_k", "targets"),
    "feature-extraction": ("pooling", "normalize"),
    "text-classification": ("top_k", "function_to_apply"),
    "token-classification": ("aggregation_strategy", "ignore_labels", "stride"),
    "question-answering": ("top_k", "max_answer_len", "max_question_len", "max_seq_len", "doc_stride",
                           "handle_impossible_answer", "align_to_words"),
}
SHAPES = {
    "fill-mask": "expected a text with [MASK] or a list of them",
    "feature-extraction": "expected a text or a list of texts",
    "text-classification": 'expected a text, {"text": "...", "text_pair": "..."}, or a list of them',
    "token-classification": "expected a text or a list of texts",
    "question-answering": 'expected {"question": "...", "context": "..."} or a list of them',
}
MAX_TOP_K = 100  # fill-mask: each prediction decodes the whole text again; 100 of them for 32 texts is 0.1 s


@dataclass(frozen=True)
class Limits:
    """What the contract depends on: the model's task and sizes, and the server's limits."""

    task: str
    batch: int  # --max-client-batch-size
    vocab_size: int
    dim: int
    max_length: int  # tokens the model reads
    mask_token: str
    api_key: bool


class Error(BaseModel):
    """Every answer other than 200 (text-embeddings-inference's ErrorResponse)."""

    error: str = Field(description="one line saying what was wrong and what to do")
    error_type: Literal[ERROR_TYPES]  # type: ignore[valid-type]


class Strict(BaseModel):
    model_config = ConfigDict(strict=True, extra="ignore", regex_engine="python-re")


class Parameters(BaseModel):
    model_config = ConfigDict(strict=True, extra="forbid", regex_engine="python-re")


class Doc:
    """JSON Schema keywords for the document alone: the handler enforces them, with TEI's status codes."""

    def __init__(self, **keywords):
        self.keywords = keywords

    def __get_pydantic_json_schema__(self, core_schema, handler):
        schema = handler(core_schema)
        schema.update(self.keywords)
        return schema


def _unicode(text: str) -> str:
    """JSON can carry half of a surrogate pair ("\\ud800"), which no tokenizer can read."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as e:
        raise ValueError(f"not Unicode text: a lone surrogate {text[e.start]!r} at character {e.start}") from None
    return text


def _whole(value: Any) -> Any:
    """3.0 is the integer 3 to JSON Schema (not 3.5, not "3", not true)."""
    return int(value) if isinstance(value, float) and value.is_integer() else value


# White space as both str.strip() (which the pipelines check texts with) and ECMA-262's \s count it, written
# out: `\s` alone is not the same set in Python and in JSON Schema (which has \ufeff and not \x1c-\x1f)
WHITE_SPACE = r"\t\n\v\f\r \x1c-\x1f\x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000\ufeff"
Text = Annotated[str, AfterValidator(_unicode)]
Word = Annotated[str, Field(pattern=f"[^{WHITE_SPACE}]"), AfterValidator(_unicode)]  # not blank


def whole(**bounds) -> Any:
    """An integer within `bounds` (ge, le); the bounds before the validator, so that the document has them."""
    return Annotated[int, Field(**bounds), BeforeValidator(_whole)]


Truncation = Literal["right", "Right"]  # TEI also takes "left"; our tokenizer truncates on the right only
TRUNCATE = "cut texts to the model's maximum (the default); false: answer 413 for a text over it"


def batch(limits: Limits, item: Any) -> Any:
    return Annotated[list[item], Doc(minItems=1, maxItems=limits.batch)]


def one_or_batch(limits: Limits, item: Any) -> Any:
    return item | batch(limits, item)


# --- requests ---------------------------------------------------------------------------------------


def tei_requests(limits: Limits) -> dict[str, type[BaseModel]]:
    texts = one_or_batch(limits, Text)
    common = dict(truncate=(bool | None, Field(None, description=TRUNCATE)),
                  truncation_direction=(Truncation, "right"), prompt_name=(None, None))
    dimensions = (Annotated[Literal[limits.dim], BeforeValidator(_whole)] | None,
                  Field(None, description="this model's embedding size, or leave it out"))
    token_id = whole(ge=0, le=limits.vocab_size - 1)
    pair = Annotated[list[Word], Field(min_length=1, max_length=2)]
    return {
        "embed": create_model("EmbedRequest", __base__=Strict,
                              inputs=(texts, Field(examples=["What is Deep Learning?"])),
                              normalize=(bool, True), dimensions=dimensions, **common),
        "embed_all": create_model("EmbedAllRequest", __base__=Strict,
                                  inputs=(texts, Field(examples=["What is Deep Learning?"])), **common),
        "predict": create_model(
            "PredictRequest", __base__=Strict, raw_scores=(bool, False),
            inputs=(Word | pair | batch(limits, pair), Field(
                description='a text, a pair ["text", "pair"], or a batch of ["text"] and ["text", "pair"] lists',
                examples=["I like you. I love you"])),
            **{k: v for k, v in common.items() if k != "prompt_name"}),
        "tokenize": create_model("TokenizeRequest", __base__=Strict, inputs=(texts, Field(examples=["test"])),
                                 add_special_tokens=(bool, True), prompt_name=(None, None)),
        "decode": create_model("DecodeRequest", __base__=Strict, skip_special_tokens=(bool, True), ids=(
            list[token_id] | batch(limits, list[token_id]), Field(
                description="token ids, or a batch of lists of them", examples=[[101, 7592, 102]]))),
        "openai": create_model("OpenAIEmbeddingsRequest", __base__=Strict,
                               input=(texts, Field(examples=["What is Deep Learning?"])), model=(Text | None, None),
                               user=(Text | None, None), encoding_format=(Literal["float", "base64"], "float"),
                               dimensions=dimensions),
    }


def inference_request(limits: Limits) -> type[BaseModel]:
    """POST / for this server's task: `inputs` and `parameters` as its pipeline reads them."""
    server = dict(truncate=(bool | None, Field(None, description=TRUNCATE)),
                  truncation_direction=(Truncation | None, None), prompt_name=(None, None))
    positive = whole(ge=1)
    task = limits.task
    if task == "fill-mask":
        mask = limits.mask_token

        def masked(text: str) -> str:  # the pipeline's own words, and the pattern in the document
            if mask not in text:
                raise ValueError(f"no {mask} in {text[:60]!r}: put {mask} where the word to predict goes")
            return text

        text = Annotated[str, Doc(pattern=_escape(mask), description=(
            f"a text with {mask} where the word to predict goes, within the first {limits.max_length - 2} "
            "tokens (a text is cut to the model's maximum)")), AfterValidator(_unicode), AfterValidator(masked)]
        inputs, example = one_or_batch(limits, text), f"Hello I'm a {limits.mask_token} model."
        parameters = dict(
            top_k=(whole(ge=1, le=MAX_TOP_K) | None, None),
            targets=(Word | Annotated[list[Word], Field(min_length=1)] | None, Field(None, description=(
                "score these words only (a word outside the vocabulary: its first word piece; one with no word "
                "piece is left out, and 422 when none is left)"))))
    elif task == "feature-extraction":
        inputs, example = one_or_batch(limits, Text), "What is Deep Learning?"
        parameters = dict(pooling=(Literal[POOLINGS] | None, Field(None, description=(  # type: ignore[valid-type]
                              "none: each token's features; default: the model's own pooling, else mean"))),
                          normalize=(bool | None, None))
    elif task == "text-classification":
        pair = create_model("TextPair", __base__=Parameters, text=(Word, ...), text_pair=(Word | None, None))
        item = Word | pair | Annotated[list[Word], Field(min_length=2, max_length=2)]
        inputs, example = Word | pair | batch(limits, item), "I like you. I love you"
        parameters = dict(top_k=(positive | None, Field(None, description="the best k labels (default: every label)")),
                          function_to_apply=(Literal[FUNCTIONS] | None, None))  # type: ignore[valid-type]
    elif task == "token-classification":
        room = limits.max_length - 2
        inputs, example = one_or_batch(limits, Word), "My name is Sarah and I live in London"
        parameters = dict(aggregation_strategy=(Literal[STRATEGIES] | None, None),  # type: ignore[valid-type]
                          ignore_labels=(list[Text] | None, Field(None, description="default: [\"O\"]")),
                          stride=(whole(ge=0, le=room - 1) | None, Field(None, description=(
                              "tokens two windows of a long text share (default a quarter of a window)"))))
    elif task == "question-answering":
        # the windows: max_seq_len at least `half`, doc_stride under half less the 3 special tokens of a pair, so
        # that a window always holds more than the overlap (and the tokenizer agrees)
        half = min(limits.max_length, 384) // 2
        question = create_model("Question", __base__=Parameters, question=(Word, ...), context=(Word, ...))
        inputs = one_or_batch(limits, question)
        example = {"question": "Where do I live?", "context": "My name is Clara and I live in Berkeley."}
        parameters = dict(
            top_k=(positive | None, None), max_answer_len=(positive | None, None),
            max_question_len=(positive | None, None),
            max_seq_len=(whole(ge=half) | None, Field(None, description=(
                f"tokens a window holds (default {min(limits.max_length, 384)}; at most the model's "
                f"{limits.max_length}); a question must leave more room for context than doc_stride"))),
            doc_stride=(whole(ge=0, le=half - 4) | None, Field(None, description=(
                "tokens two windows share (default min(max_seq_len / 2, 128))"))),
            handle_impossible_answer=(bool | None, None), align_to_words=(bool | None, None))
    else:
        raise ValueError(f"no contract for task {task!r}")
    assert tuple(parameters) == PARAMETERS[task], (task, tuple(parameters))
    params = create_model(f"{_camel(task)}Parameters", __base__=Parameters, **parameters, **server)
    return create_model(f"{_camel(task)}Request", __base__=Strict, inputs=(inputs, Field(examples=[example])),
                        parameters=(params | None, None),
                        options=(dict[str, Any] | None, Field(None, description="wait_for_model, use_cache: ignored")))


def _escape(token: str) -> str:
    return "".join("\\" + c if c in r"\^$.|?*+()[]{}" else c for c in token)


def _camel(task: str) -> str:
    return "".join(part.capitalize() for part in task.split("-"))


# --- answers ------------------------------------------------------------------------------------------


def array(items: dict, **keywords) -> dict:
    return {"type": "array", "items": items, **keywords}


def obj(required: dict[str, dict], **optional: dict) -> dict:
    return {"type": "object", "required": list(required), "properties": {**required, **optional}}


NUMBER, INTEGER, STRING, BOOLEAN = {"type": "number"}, {"type": "integer"}, {"type": "string"}, {"type": "boolean"}
NULLABLE_INTEGER = {"anyOf": [INTEGER, {"type": "null"}]}
SCORE = obj({"score": NUMBER, "label": STRING})
VECTOR = array(NUMBER)
PREDICTION = obj({"score": NUMBER, "token": INTEGER, "token_str": STRING, "sequence": STRING})
ENTITY = obj({"score": NUMBER, "word": STRING, "start": NULLABLE_INTEGER, "end": NULLABLE_INTEGER},
             entity=STRING, entity_group=STRING, index=INTEGER)
ANSWER = obj({"score": NUMBER, "start": INTEGER, "end": INTEGER, "answer": STRING})
TOKEN = obj({"id": INTEGER, "text": STRING, "special": BOOLEAN, "start": NULLABLE_INTEGER, "stop": NULLABLE_INTEGER})
INFERENCE_ANSWERS = {
    "fill-mask": {"anyOf": [array(PREDICTION), array({"anyOf": [array(PREDICTION), array(array(PREDICTION))]})],
                  "description": "its top_k tokens (several [MASK]s: a list per mask); a list per text for a "
                                 "list of texts"},
    "feature-extraction": {"anyOf": [VECTOR, array(VECTOR), array(array(VECTOR))],
                           "description": "a pooled vector per text (pooling none: a vector per token)"},
    "text-classification": {**array(array(SCORE)), "description": "per text, its labels, best first"},
    "token-classification": {"anyOf": [array(ENTITY), array(array(ENTITY))], "description": "entities per text"},
    "question-answering": {"anyOf": [ANSWER, array({"anyOf": [ANSWER, array(ANSWER)]})],
                           "description": "the answer (top_k > 1: a list of them), a list per question"},
}
EMBEDDINGS = obj({"object": {"const": "list"}, "model": STRING,
                  "data": array(obj({"object": {"const": "embedding"}, "index": INTEGER,
                                     "embedding": {"anyOf": [VECTOR, STRING]}})),
                  "usage": obj({"prompt_tokens": INTEGER, "total_tokens": INTEGER})})
INFO = obj({"model_id": STRING, "task": STRING, "max_input_length": INTEGER, "max_client_batch_size": INTEGER,
            "max_batch_tokens": INTEGER, "max_concurrent_requests": INTEGER, "payload_limit": INTEGER,
            "model_type": {"type": "object"}, "backend": STRING, "version": STRING})

ERROR_REF = {"$ref": "#/components/schemas/Error"}  # app.document() adds Error to the components
REASONS = {
    400: "Empty: the list of inputs is empty, or the body cannot be read",
    401: "Unauthorized: the server was started with --api-key, and the request has no 'Authorization: Bearer KEY'",
    404: "Validation: no task of that name",
    405: "Validation: the request asks for JSON (Accept), which POST / answers",
    413: "Validation: the body is over --payload-limit, or has more inputs than --max-client-batch-size, or "
         "(truncate: false) a text is over the model's maximum",
    422: "Validation: the body does not fit this schema, or the pipeline refused an input or parameter (the "
         "message names it)",
    424: "Backend: this route needs a model of another task",
    429: "Overloaded: more inputs in flight than --max-concurrent-requests; retry later",
    500: "Backend: the model failed on the inputs (a bug)",
    503: "Unhealthy: the server is shutting down",
}


def answers(limits: Limits, ok: dict | None, *statuses: int, media: str = "application/json",
            description: str = "the answer") -> dict[int | str, dict]:
    """The `responses` of a route: 200 (`ok`, None for no body) and each status given, plus what the gate
    answers on every route (413 for a body over the limit, 503 while shutting down, 401 with a key)."""
    return {200: {"description": description, **({"content": {media: {"schema": ok}}} if ok is not None else {})},
            **refusals(limits, *statuses)}


def unserved(limits: Limits) -> dict[int | str, dict]:
    """The `responses` of a route this server's task cannot serve: it stays in the document, answering 424 (the
    route's status_code, so that FastAPI writes no 200) to a valid body."""
    out = refusals(limits, 400, 422, 424)
    out[424]["description"] += f" (this server runs {limits.task})"
    return out


def refusals(limits: Limits, *statuses: int) -> dict[int | str, dict]:
    # JSON whatever the route's own answer is (the /metrics text, the page's HTML)
    return {status: {"description": REASONS[status], "content": {"application/json": {"schema": ERROR_REF}}}
            for status in sorted({*statuses, 413, 503, *((401,) if limits.api_key else ())})}


def validation_message(errors: list[dict], task: str | None = None) -> str:
    """Pydantic's errors as one line naming each field: "inputs: Input should be a valid string".

    An input of the wrong shape gets one message naming the shapes the task takes, not one per member of
    the union; an input the validators refused, their own words; an unknown parameter, the names there are.
    """
    parts = []
    if any(e.get("type") == "json_invalid" for e in errors):
        error = next(e for e in errors if e.get("type") == "json_invalid")
        return f"invalid JSON: {error.get('ctx', {}).get('error', error.get('msg'))}"
    refused = [e for e in errors if e.get("type") == "value_error"]
    for error in refused or errors:
        loc = [str(p) for p in error.get("loc", ()) if p != "body" and not _union_tag(p)]
        field, message = ".".join(loc) or "body", error.get("msg", "")
        if error.get("type") == "value_error":
            message = str(error.get("ctx", {}).get("error", message))
        elif error.get("type") == "extra_forbidden" and loc[:1] == ["parameters"] and task in PARAMETERS:
            message = (f"{task} has no parameter {loc[-1]!r}; it takes {', '.join([*PARAMETERS[task], 'truncate'])}")
        elif loc[:1] == ["inputs"] and task in SHAPES and error.get("type", "").endswith("_type"):
            field, message = "inputs", SHAPES[task]
        parts.append(f"{field}: {message}")
    return "; ".join(list(dict.fromkeys(parts))[:3])


def _union_tag(part) -> bool:
    # pydantic names the union member it tried ("str", "list[str]", "literal['right','Right']",
    # "function-after[_unicode(), str]", "constrained-str", "TextPair") in the location
    return isinstance(part, str) and (part in ("str", "int", "bool", "none", "constrained-str", "constrained-int",
                                               "TextPair", "Question") or "[" in part or part.startswith("literal"))
