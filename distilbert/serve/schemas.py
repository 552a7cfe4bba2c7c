"""Request bodies as text-embeddings-inference (TEI), OpenAI and the Hugging Face Inference API define them,
and the one error shape every route answers with: {"error": ..., "error_type": ...}.

Bodies are strict (a string is not a boolean, 1.0 is not an integer), as TEI's serde types are; unknown
fields are ignored, as there.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field


class Strict(BaseModel):
    model_config = ConfigDict(strict=True, extra="ignore")


Truncation = Literal["right", "Right"]  # TEI also takes "left"; our tokenizer truncates on the right only


class EmbedRequest(Strict):
    inputs: str | list[str] = Field(examples=["What is Deep Learning?"])
    normalize: bool = True
    truncate: bool | None = Field(None, description="cut texts to the model's maximum (default); false: 413 instead")
    truncation_direction: Truncation = "right"
    prompt_name: None = None
    dimensions: int | None = None


class EmbedAllRequest(Strict):
    inputs: str | list[str] = Field(examples=["What is Deep Learning?"])
    truncate: bool | None = None
    truncation_direction: Truncation = "right"
    prompt_name: None = None


class PredictRequest(Strict):
    inputs: str | list[str] | list[list[str]] = Field(
        description='a text, a pair ["text", "pair"], or a batch of [text] and [text, pair] lists',
        examples=["I like you. I love you"])
    truncate: bool | None = None
    truncation_direction: Truncation = "right"
    raw_scores: bool = False


class TokenizeRequest(Strict):
    inputs: str | list[str] = Field(examples=["test"])
    add_special_tokens: bool = True
    prompt_name: None = None


class DecodeRequest(Strict):
    ids: list[int] | list[list[int]] = Field(examples=[[101, 3231, 102]])
    skip_special_tokens: bool = True


class OpenAIEmbeddingsRequest(Strict):
    input: str | list[str] = Field(examples=["What is Deep Learning?"])
    model: str | None = None
    user: str | None = None
    encoding_format: Literal["float", "base64"] = "float"
    dimensions: int | None = None


class InferenceRequest(BaseModel):
    """The Hugging Face Inference API: the model's task reads `inputs` and `parameters` as its pipeline does."""

    model_config = ConfigDict(extra="ignore")
    inputs: Any = Field(examples=["Hello I'm a [MASK] model."])
    parameters: dict[str, Any] | None = None
    options: dict[str, Any] | None = None  # wait_for_model, use_cache: nothing to do here


def validation_message(errors: list[dict]) -> str:
    """Pydantic's errors as one line naming each field: "inputs: Input should be a valid string"."""
    parts = []
    for error in errors[:3]:
        if error.get("type") == "json_invalid":
            return f"invalid JSON: {error.get('ctx', {}).get('error', error.get('msg'))}"
        loc = [str(p) for p in error.get("loc", ()) if p != "body" and not _union_tag(p)]
        field = ".".join(loc) or "body"
        parts.append(f"{field}: {error.get('msg')}")
    return "; ".join(dict.fromkeys(parts))


def _union_tag(part) -> bool:
    # pydantic names the union member it tried ("str", "list[str]", "literal['right','Right']") in the location
    return isinstance(part, str) and (part in ("str", "int", "bool") or "[" in part or part.startswith("literal"))
