"""The provider's model table (kept as data in ``data/models.json``) and request validation.

``validate_generation_request`` checks a provider request body *before* it is sent, so a bad
job is rejected with a clear per-field error instead of a provider 400 (or, worse, a charge).
Models the table does not know pass with the generic checks only: the provider adds models
faster than we update the table, and it validates again anyway.
"""

from __future__ import annotations

import difflib
import json
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from functools import cache
from importlib import resources
from typing import Any, Literal

Kind = Literal["image", "video"]

KINDS: tuple[Kind, ...] = ("image", "video")
VIDEO_INPUT_MODES: tuple[str, ...] = ("text_to_video", "image_to_video")

# Provider field names (the error keys are these, so provider 400s and ours look alike).
PROMPT = "prompt"
MODEL = "model"
ASPECT_RATIO = "aspectRatio"
INPUT_IMAGE_URLS = "inputImageUrls"
INPUT_MODE = "inputMode"
DURATION = "duration"
PROVIDER_INPUT = "providerInput"

AddError = Callable[[str, str], None]


@dataclass(frozen=True)
class ModelSpec:
    """One row of the provider's model table."""

    name: str
    kind: Kind
    modes: tuple[str, ...]
    max_input_images: int | None  # None: not documented, not checked locally
    prompt_max_chars: int | None  # None: not documented, not checked locally
    aspect_ratios: tuple[str, ...]
    credits: Mapping[str, int] | None  # informational only: the provider's creditsUsed is authoritative
    input_modes: tuple[str, ...] = ()  # video only
    durations: tuple[int, ...] = ()  # video only, seconds
    # FirstPollAfter=auto's cold start: how long to wait before the first poll with no recent jobs.
    first_poll_after_seconds: int = 0


@cache
def _catalog_data() -> dict[str, Any]:
    data: dict[str, Any] = json.loads(
        resources.files("imagejobs").joinpath("data/models.json").read_text("utf-8")
    )
    return data


def _load_table() -> dict[str, ModelSpec]:
    raw = _catalog_data()
    default_ratios = tuple(raw["defaultAspectRatios"])
    first_poll_defaults = raw["defaultFirstPollAfterSeconds"]
    table: dict[str, ModelSpec] = {}
    for name, row in raw["models"].items():
        kind = row["kind"]
        if kind not in KINDS:
            raise ValueError(f"models.json: {name}: kind must be image or video (got {kind!r})")
        input_modes = tuple(row.get("inputModes") or ())
        if any(mode not in VIDEO_INPUT_MODES for mode in input_modes):
            raise ValueError(f"models.json: {name}: unknown inputModes {input_modes!r}")
        if kind == "video" and not (input_modes and row.get("durations")):
            raise ValueError(f"models.json: {name}: video models need inputModes and durations")
        table[name] = ModelSpec(
            name=name,
            kind=kind,
            modes=tuple(row["modes"]),
            max_input_images=row.get("maxInputImages"),
            prompt_max_chars=row.get("promptMaxChars"),
            aspect_ratios=tuple(row.get("aspectRatios") or default_ratios),
            credits=dict(row["credits"]) if row.get("credits") else None,
            input_modes=input_modes,
            durations=tuple(int(d) for d in row.get("durations") or ()),
            first_poll_after_seconds=int(row.get("firstPollAfterSeconds", first_poll_defaults[kind])),
        )
    return table


@cache
def model_table() -> Mapping[str, ModelSpec]:
    """All known models, loaded once from the packaged JSON."""
    return _load_table()


def cold_start_first_poll_seconds(model: str, kind: str) -> int:
    """FirstPollAfter=auto with too few recent jobs: the model's row, else its kind's default."""
    spec = get_model(model)
    if spec is not None:
        return spec.first_poll_after_seconds
    defaults = _catalog_data()["defaultFirstPollAfterSeconds"]
    return int(defaults.get(kind, defaults["image"]))


def get_model(name: str) -> ModelSpec | None:
    """The spec of a known model, or None (unknown models are allowed: generic checks only)."""
    return model_table().get(name)


def model_hint(name: str) -> str | None:
    """A "did you mean gpt-image-2?" hint for an unknown model whose name is close to a known one.

    Unknown models still go to the provider (it may know models we do not): this is a hint, kept
    on the record and in the log, never a rejection.
    """
    if name in model_table():
        return None
    close = difflib.get_close_matches(name.lower(), list(model_table()), n=1, cutoff=0.75)
    return f"{name!r} is not in the model catalog; did you mean {close[0]}?" if close else None


def implied_input_mode(spec: ModelSpec | None) -> str | None:
    """The video input mode a model implies (its only mode), or None."""
    if spec is not None and len(spec.input_modes) == 1:
        return spec.input_modes[0]
    return None


def prompt_length(prompt: str) -> int:
    """Length as the provider counts it.

    The provider (a JavaScript service, zod-style errors) counts UTF-16 code units, so an emoji
    counts as 2; counting the same way keeps our cap from passing prompts it would reject.
    """
    return len(prompt.encode("utf-16-le", "surrogatepass")) // 2


def _is_int(value: Any) -> bool:
    if isinstance(value, bool):
        return False
    if isinstance(value, int):
        return True
    return isinstance(value, float) and math.isfinite(value) and value.is_integer()


def _is_array(value: Any) -> bool:
    return isinstance(value, Sequence) and not isinstance(value, str | bytes | bytearray)


def _shown(value: Any, limit: int = 40) -> str:
    """repr of a user value for an error message, clipped (the value may be huge)."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 4] + "...'"


def _type_name(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, Mapping):
        return "object"
    if _is_array(value):
        return "array"
    return type(value).__name__


def validate_generation_request(body: Mapping[str, Any], kind: Kind) -> dict[str, list[str]]:
    """Field errors for a provider generation body (empty dict = valid).

    Keys are the provider's field names. Fields the provider may add are passed through
    unchecked.
    """
    errors: dict[str, list[str]] = {}

    def add(field: str, message: str) -> None:
        errors.setdefault(field, []).append(message)

    if kind not in KINDS:
        raise ValueError(f"kind must be 'image' or 'video' (got {kind!r})")
    if not isinstance(body, Mapping):
        return {"body": [f"must be a JSON object (got {_type_name(body)})"]}

    spec = _check_model(body, kind, add)

    prompt = body.get(PROMPT)
    if prompt is None:
        add(PROMPT, "is required")
    elif not isinstance(prompt, str):
        add(PROMPT, f"must be a string (got {_type_name(prompt)})")
    elif not prompt.strip():
        add(PROMPT, "must not be blank")
    elif spec is not None and spec.prompt_max_chars is not None:
        length = prompt_length(prompt)
        if length > spec.prompt_max_chars:
            add(PROMPT, f"must be at most {spec.prompt_max_chars} characters (got {length})")

    if ASPECT_RATIO in body:
        ratio = body[ASPECT_RATIO]
        if not isinstance(ratio, str) or not ratio:
            add(ASPECT_RATIO, f"must be a non-empty string (got {_type_name(ratio)})")
        elif spec is not None and ratio not in spec.aspect_ratios:
            add(ASPECT_RATIO, f"must be one of {', '.join(spec.aspect_ratios)} (got {_shown(ratio)})")

    _check_input_images(body, spec, add)

    if kind == "video":
        _check_video(body, spec, add)
    else:
        for field in (INPUT_MODE, DURATION):
            if field in body:
                add(field, "only applies to video models")

    if PROVIDER_INPUT in body and not isinstance(body[PROVIDER_INPUT], Mapping):
        add(PROVIDER_INPUT, f"must be an object (got {_type_name(body[PROVIDER_INPUT])})")

    return errors


def _check_model(body: Mapping[str, Any], kind: Kind, add: AddError) -> ModelSpec | None:
    model = body.get(MODEL)
    if model is None:
        add(MODEL, "is required")
        return None
    if not isinstance(model, str) or not model.strip():
        add(MODEL, f"must be a non-empty string (got {_type_name(model)})")
        return None
    spec = get_model(model)
    if spec is not None and spec.kind != kind:
        add(MODEL, f"{model!r} is for {spec.kind} generation, not {kind}")
        return None  # the other rules would only add noise
    return spec


def _check_input_images(body: Mapping[str, Any], spec: ModelSpec | None, add: AddError) -> None:
    if INPUT_IMAGE_URLS not in body:
        return
    urls = body[INPUT_IMAGE_URLS]
    if not _is_array(urls):
        add(INPUT_IMAGE_URLS, f"must be an array of strings (got {_type_name(urls)})")
        return
    if not urls:
        add(INPUT_IMAGE_URLS, "must not be empty (omit it for text-only generation)")
        return
    for index, url in enumerate(urls):
        if not isinstance(url, str) or not url.strip():
            add(INPUT_IMAGE_URLS, f"item {index} must be a non-empty string (got {_type_name(url)})")
    if spec is not None and spec.max_input_images is not None and len(urls) > spec.max_input_images:
        if spec.max_input_images == 0:
            add(INPUT_IMAGE_URLS, f"is not accepted by {spec.name!r} (a text-only model)")
        else:
            limit = spec.max_input_images
            items = "item" if limit == 1 else "items"
            add(INPUT_IMAGE_URLS, f"must have at most {limit} {items} for {spec.name!r} (got {len(urls)})")


def _check_video(body: Mapping[str, Any], spec: ModelSpec | None, add: AddError) -> None:
    mode = body.get(INPUT_MODE)
    if mode is None:
        # A single-mode model implies its mode (ProviderClient sends it anyway, see
        # implied_input_mode); models with both modes must be told which.
        if spec is not None and len(spec.input_modes) > 1:
            add(INPUT_MODE, f"is required for {spec.name!r} (one of {', '.join(spec.input_modes)})")
    elif not isinstance(mode, str) or not mode:
        add(INPUT_MODE, f"must be a non-empty string (got {_type_name(mode)})")
    elif spec is not None and mode not in spec.input_modes:
        add(INPUT_MODE, f"must be {' or '.join(spec.input_modes)} for {spec.name!r} (got {_shown(mode)})")

    effective_mode = mode if mode is not None else implied_input_mode(spec)
    if effective_mode == "image_to_video" and INPUT_IMAGE_URLS not in body:
        add(INPUT_IMAGE_URLS, "is required (at least one image) for image_to_video")
    if (
        effective_mode == "text_to_video"
        and INPUT_IMAGE_URLS in body
        and (spec is None or len(spec.input_modes) > 1)
    ):
        add(INPUT_IMAGE_URLS, "is not used with inputMode text_to_video (omit it, or use image_to_video)")

    if DURATION in body:
        duration = body[DURATION]
        if not _is_int(duration) or duration <= 0:
            add(DURATION, f"must be a positive whole number of seconds (got {_shown(duration)})")
        elif spec is not None and int(duration) not in spec.durations:
            allowed = ", ".join(str(d) for d in spec.durations)
            add(DURATION, f"must be one of {allowed} seconds for {spec.name!r} (got {_shown(duration)})")
