"""The simulated provider's model table and request validation.

Mirrors docs/provider-api.md. Where the provider documents nothing
(aspect ratios of the non-gpt models, video credits and durations), the values
here are the simulator's own plausible choices, listed in docs/simulator.md.
Validation errors use the provider's zod-style shape:
``{"formErrors": [...], "fieldErrors": {"field": ["message", ...]}}``.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

Kind = Literal["image", "video"]

IMAGE_ASPECT_RATIOS: tuple[str, ...] = (
    "auto",
    "1:1",
    "16:9",
    "9:16",
    "4:3",
    "3:4",
    "3:2",
    "2:3",
    "4:5",
    "5:4",
    "21:9",
)
VIDEO_ASPECT_RATIOS: tuple[str, ...] = ("16:9", "9:16", "1:1")
TEXT_TO_VIDEO = "text_to_video"
IMAGE_TO_VIDEO = "image_to_video"

# Output size per aspect ratio at the "1K" tier; every ratio is exact (w * b == h * a).
IMAGE_SIZES: dict[str, tuple[int, int]] = {
    "auto": (1024, 1024),
    "1:1": (1024, 1024),
    "16:9": (1344, 756),
    "9:16": (756, 1344),
    "4:3": (1152, 864),
    "3:4": (864, 1152),
    "3:2": (1248, 832),
    "2:3": (832, 1248),
    "4:5": (896, 1120),
    "5:4": (1120, 896),
    "21:9": (1512, 648),
}

MAX_URL_LENGTH = 4096
MAX_SIM_OUTPUT_BYTES = 8 * 1024**3
MAX_SIM_OUTPUT_COUNT = 4
MAX_SIM_LATENCY_SECONDS = 3600.0
ERROR_CODE_PATTERN = re.compile(r"^[A-Z][A-Z0-9_]{0,63}$")


@dataclass(frozen=True)
class ModelSpec:
    name: str
    kind: Kind
    prompt_cap: int
    max_reference_images: int
    aspect_ratios: tuple[str, ...]
    # image models: credits per resolution tier ("1K"/"2K"/"4K"); the first key is the default tier
    credits_by_resolution: Mapping[str, int] = field(default_factory=dict)
    # video models
    input_modes: tuple[str, ...] = ()
    durations: tuple[int, ...] = ()
    credits_per_second: int = 0

    @property
    def default_resolution(self) -> str | None:
        return next(iter(self.credits_by_resolution), None)

    def credits_for(self, resolution: str | None, duration: int | None) -> int:
        if self.kind == "image":
            tier = resolution or self.default_resolution
            return self.credits_by_resolution[tier] if tier else 0
        return self.credits_per_second * (duration or self.durations[0])


def _image(name: str, refs: int, cap: int, credits: dict[str, int]) -> ModelSpec:
    return ModelSpec(name, "image", cap, refs, IMAGE_ASPECT_RATIOS, credits_by_resolution=credits)


def _video(name: str, modes: tuple[str, ...], durations: tuple[int, ...], per_second: int) -> ModelSpec:
    return ModelSpec(
        name,
        "video",
        prompt_cap=5000,
        max_reference_images=4 if IMAGE_TO_VIDEO in modes else 0,
        aspect_ratios=VIDEO_ASPECT_RATIOS,
        input_modes=modes,
        durations=durations,
        credits_per_second=per_second,
    )


_T2V = (TEXT_TO_VIDEO,)
_I2V = (IMAGE_TO_VIDEO,)
_BOTH = (TEXT_TO_VIDEO, IMAGE_TO_VIDEO)

MODELS: dict[str, ModelSpec] = {
    spec.name: spec
    for spec in (
        _image("gpt-image-2", 4, 20_000, {"1K": 3}),
        _image("nano-banana-2", 14, 20_000, {"1K": 4, "2K": 6, "4K": 8}),
        _image("nano-banana-pro", 8, 10_000, {"2K": 12, "4K": 20}),
        _image("google/nano-banana", 10, 5_000, {"1K": 3}),
        _video("kling/v2-1-standard", _I2V, (5, 10), 5),
        _video("kling/v2-1-pro", _I2V, (5, 10), 9),
        _video("kling/v2-1-master-text-to-video", _T2V, (5, 10), 32),
        _video("sora-2-text-to-video", _T2V, (10, 15), 3),
        _video("sora-2-pro-text-to-video", _T2V, (10, 15), 9),
        _video("sora-2-image-to-video", _I2V, (10, 15), 3),
        _video("hailuo/02-text-to-video-standard", _T2V, (6, 10), 4),
        _video("hailuo/02-image-to-video-standard", _I2V, (6, 10), 4),
        _video("hailuo/02-text-to-video-pro", _T2V, (6,), 9),
        _video("hailuo/02-image-to-video-pro", _I2V, (6,), 9),
        _video("veo3_fast", _BOTH, (8,), 8),
        _video("veo3", _BOTH, (8,), 30),
        _video("veo3_lite", _BOTH, (8,), 5),
        _video("wan/2-6-text-to-video", _T2V, (5, 10, 15), 6),
        _video("wan/2-6-image-to-video", _I2V, (5, 10, 15), 6),
        _video("bytedance/seedance-1.5-pro", _BOTH, (5, 10), 4),
    )
}
DEFAULT_IMAGE_MODEL = "gpt-image-2"


@dataclass(frozen=True)
class SimOptions:
    """Simulator-only knobs read from ``providerInput`` (the provider passes it through unvalidated)."""

    output_bytes: int | None = None  # pad the (first) output to about this many bytes
    output_count: int = 1
    output_format: str | None = None  # "png" | "jpeg"; None = the simulator's default
    latency_seconds: float | None = None
    fail_code: str | None = None
    refund_delay_seconds: float = 0.0  # a failed task shows its refund only this long after failing


@dataclass(frozen=True)
class GenerationRequest:
    """A submission that passed validation."""

    model: ModelSpec
    prompt: str
    aspect_ratio: str | None
    input_image_urls: tuple[str, ...]
    input_mode: str | None
    duration: int | None
    resolution: str | None
    credits: int
    sim: SimOptions


@dataclass
class ValidationErrors:
    form_errors: list[str] = field(default_factory=list)
    field_errors: dict[str, list[str]] = field(default_factory=dict)

    def add(self, name: str, message: str) -> None:
        self.field_errors.setdefault(name, []).append(message)

    def __bool__(self) -> bool:
        return bool(self.form_errors or self.field_errors)

    def as_details(self) -> dict[str, Any]:
        return {"formErrors": list(self.form_errors), "fieldErrors": dict(self.field_errors)}


def invalid_request_body(errors: ValidationErrors) -> dict[str, Any]:
    """The documented 400 body."""
    return {"error": "Invalid request", "details": errors.as_details()}


def form_error(message: str) -> dict[str, Any]:
    return invalid_request_body(ValidationErrors(form_errors=[message]))


def type_name(value: object) -> str:
    """zod's names for JSON types, for "Expected X, received Y" messages."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    return "object"


def has_lone_surrogate(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


def json_depth(value: object) -> int:
    """Nesting depth of a parsed JSON value (iterative, so it cannot blow the stack)."""
    deepest = 0
    stack: list[tuple[object, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict):
            deepest = max(deepest, depth)
            stack.extend((child, depth + 1) for child in item.values())
        elif isinstance(item, list):
            deepest = max(deepest, depth)
            stack.extend((child, depth + 1) for child in item)
    return deepest


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: object) -> bool:
    return (_is_int(value) or isinstance(value, float)) and math.isfinite(float(value))  # type: ignore[arg-type]


def _validate_prompt(body: Mapping[str, Any], spec: ModelSpec | None, errors: ValidationErrors) -> str:
    prompt = body.get("prompt")
    if prompt is None:
        errors.add("prompt", "Prompt is required")
        return ""
    if not isinstance(prompt, str):
        errors.add("prompt", f"Expected string, received {type_name(prompt)}")
        return ""
    if not prompt.strip():
        errors.add("prompt", "Prompt is required")
    elif has_lone_surrogate(prompt):
        errors.add("prompt", "Prompt contains invalid Unicode (an unpaired surrogate)")
    elif spec is not None and len(prompt) > spec.prompt_cap:
        errors.add("prompt", f"Prompt must be at most {spec.prompt_cap} characters for {spec.name}")
    return prompt


def _validate_model(body: Mapping[str, Any], kind: Kind, errors: ValidationErrors) -> ModelSpec | None:
    name = body.get("model", DEFAULT_IMAGE_MODEL if kind == "image" else None)
    if name is None:
        errors.add("model", "Model is required")
        return None
    if not isinstance(name, str):
        errors.add("model", f"Expected string, received {type_name(name)}")
        return None
    spec = MODELS.get(name)
    if spec is None:
        errors.add("model", f"Unknown model '{name[:100]}'")
        return None
    if spec.kind != kind:
        endpoint = "/api/ai/video/generate" if spec.kind == "video" else "/api/ai/image/generate"
        errors.add("model", f"'{name}' is a {spec.kind} model; submit it to {endpoint}")
        return None
    return spec


def _validate_aspect_ratio(
    body: Mapping[str, Any], spec: ModelSpec | None, errors: ValidationErrors
) -> str | None:
    ratio = body.get("aspectRatio")
    if ratio is None:
        return None
    if not isinstance(ratio, str):
        errors.add("aspectRatio", f"Expected string, received {type_name(ratio)}")
        return None
    if spec is not None and ratio not in spec.aspect_ratios:
        allowed = ", ".join(spec.aspect_ratios)
        errors.add(
            "aspectRatio", f"Invalid aspect ratio '{ratio[:40]}' for {spec.name}; expected one of: {allowed}"
        )
        return None
    return ratio


def _validate_input_urls(
    body: Mapping[str, Any], spec: ModelSpec | None, errors: ValidationErrors
) -> tuple[str, ...]:
    urls = body.get("inputImageUrls")
    if urls is None:
        return ()
    if not isinstance(urls, list):
        errors.add("inputImageUrls", f"Expected array, received {type_name(urls)}")
        return ()
    for index, url in enumerate(urls):
        if not isinstance(url, str):
            errors.add("inputImageUrls", f"Item {index}: expected string, received {type_name(url)}")
        elif len(url) > MAX_URL_LENGTH or has_lone_surrogate(url):
            errors.add("inputImageUrls", f"Item {index}: invalid URL")
        elif not re.match(r"^https?://[^\s/]+", url):
            errors.add("inputImageUrls", f"Item {index}: must be an http(s) URL")
    if spec is not None and len(urls) > spec.max_reference_images:
        errors.add("inputImageUrls", f"At most {spec.max_reference_images} reference images for {spec.name}")
    return tuple(url for url in urls if isinstance(url, str))


def _validate_resolution(
    body: Mapping[str, Any], spec: ModelSpec | None, errors: ValidationErrors
) -> str | None:
    provider_input = body.get("providerInput")
    resolution = body.get("resolution")
    if resolution is None and isinstance(provider_input, dict):
        resolution = provider_input.get("resolution")
    if resolution is None or spec is None:
        return None
    if spec.kind != "image":
        return None
    if not isinstance(resolution, str) or resolution not in spec.credits_by_resolution:
        allowed = ", ".join(spec.credits_by_resolution)
        errors.add("resolution", f"Invalid resolution for {spec.name}; expected one of: {allowed}")
        return None
    return resolution


def _validate_sim_options(provider_input: Mapping[str, Any], errors: ValidationErrors) -> SimOptions:
    def bad(message: str) -> None:
        errors.add("providerInput", message)

    output_bytes = provider_input.get("simOutputBytes")
    if output_bytes is not None and (
        not _is_int(output_bytes) or not 0 <= output_bytes <= MAX_SIM_OUTPUT_BYTES
    ):
        bad(f"simOutputBytes must be an integer between 0 and {MAX_SIM_OUTPUT_BYTES}")
        output_bytes = None
    count = provider_input.get("simOutputCount", 1)
    if not _is_int(count) or not 1 <= count <= MAX_SIM_OUTPUT_COUNT:
        bad(f"simOutputCount must be an integer between 1 and {MAX_SIM_OUTPUT_COUNT}")
        count = 1
    output_format = provider_input.get("simOutputFormat")
    if output_format is not None and output_format not in ("png", "jpeg"):
        bad("simOutputFormat must be 'png' or 'jpeg'")
        output_format = None
    latency = provider_input.get("simLatencySeconds")
    if latency is not None and (not _is_number(latency) or not 0 <= latency <= MAX_SIM_LATENCY_SECONDS):
        bad(f"simLatencySeconds must be a number between 0 and {MAX_SIM_LATENCY_SECONDS:g}")
        latency = None
    fail_code = provider_input.get("simFailCode")
    if fail_code is not None and (not isinstance(fail_code, str) or not ERROR_CODE_PATTERN.match(fail_code)):
        bad("simFailCode must be an upper-case error code such as STORAGE_ERROR")
        fail_code = None
    refund_delay = provider_input.get("simRefundDelaySeconds", 0)
    if not _is_number(refund_delay) or not 0 <= refund_delay <= MAX_SIM_LATENCY_SECONDS:
        bad(f"simRefundDelaySeconds must be a number between 0 and {MAX_SIM_LATENCY_SECONDS:g}")
        refund_delay = 0
    return SimOptions(
        output_bytes=output_bytes,
        output_count=count,
        output_format=output_format,
        latency_seconds=float(latency) if latency is not None else None,
        fail_code=fail_code,
        refund_delay_seconds=float(refund_delay),
    )


def _validate_video_fields(
    body: Mapping[str, Any], spec: ModelSpec | None, urls: tuple[str, ...], errors: ValidationErrors
) -> tuple[str | None, int | None]:
    mode = body.get("inputMode")
    duration = body.get("duration")
    if mode is not None and not isinstance(mode, str):
        errors.add("inputMode", f"Expected string, received {type_name(mode)}")
        mode = None
    elif mode is not None and mode not in (TEXT_TO_VIDEO, IMAGE_TO_VIDEO):
        errors.add("inputMode", f"Invalid inputMode '{mode[:40]}'; expected text_to_video or image_to_video")
        mode = None
    if duration is not None and not _is_int(duration):
        errors.add("duration", f"Expected integer, received {type_name(duration)}")
        duration = None
    if spec is None:
        return mode, duration
    if mode is None and "inputMode" not in errors.field_errors:
        if len(spec.input_modes) == 1:
            mode = spec.input_modes[0]
        else:
            errors.add(
                "inputMode", f"inputMode is required for {spec.name} (text_to_video or image_to_video)"
            )
    if mode is not None and mode not in spec.input_modes:
        errors.add("inputMode", f"{spec.name} supports {' and '.join(spec.input_modes)} only")
    if mode == IMAGE_TO_VIDEO and not urls:
        errors.add("inputImageUrls", "image_to_video needs at least one inputImageUrls entry")
    if mode == TEXT_TO_VIDEO and urls:
        errors.add("inputImageUrls", "inputImageUrls is not allowed with text_to_video")
    if duration is None and "duration" not in errors.field_errors:
        duration = spec.durations[0]
    elif duration is not None and duration not in spec.durations:
        allowed = ", ".join(str(d) for d in spec.durations)
        errors.add(
            "duration", f"Invalid duration {duration} for {spec.name}; expected one of: {allowed} seconds"
        )
    return mode, duration


def validate_submission(kind: Kind, body: object) -> tuple[GenerationRequest | None, ValidationErrors]:
    """Validate a parsed JSON body for ``POST /api/ai/{kind}/generate``."""
    errors = ValidationErrors()
    if not isinstance(body, dict):
        errors.form_errors.append(f"Expected object, received {type_name(body)}")
        return None, errors
    spec = _validate_model(body, kind, errors)
    prompt = _validate_prompt(body, spec, errors)
    aspect_ratio = _validate_aspect_ratio(body, spec, errors)
    urls = _validate_input_urls(body, spec, errors)
    provider_input = body.get("providerInput")
    sim = SimOptions()
    if provider_input is not None:
        if isinstance(provider_input, dict):
            sim = _validate_sim_options(provider_input, errors)
        else:
            errors.add("providerInput", f"Expected object, received {type_name(provider_input)}")
    resolution = _validate_resolution(body, spec, errors)
    mode: str | None = None
    duration: int | None = None
    if kind == "video":
        mode, duration = _validate_video_fields(body, spec, urls, errors)
    if errors or spec is None:
        return None, errors
    request = GenerationRequest(
        model=spec,
        prompt=prompt,
        aspect_ratio=aspect_ratio,
        input_image_urls=urls,
        input_mode=mode,
        duration=duration,
        resolution=resolution or spec.default_resolution,
        credits=spec.credits_for(resolution, duration),
        sim=sim,
    )
    return request, errors


MAX_JSON_DEPTH = 32


class BodyError(ValueError):
    """A request body that is not a JSON document we accept; the message says why."""


def _reject_constant(name: str) -> object:
    raise BodyError(f"Malformed JSON: {name} is not a valid JSON number")


def parse_json_body(raw: bytes) -> object:
    """Decode a request body as strict UTF-8 JSON with bounded nesting; raises BodyError."""
    if not raw.strip():
        raise BodyError("Request body is empty; expected a JSON object")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as error:
        raise BodyError(f"Request body is not valid UTF-8 (invalid byte at offset {error.start})") from None
    try:
        value = json.loads(text, parse_constant=_reject_constant)
    except RecursionError:
        raise BodyError(f"JSON nesting is deeper than {MAX_JSON_DEPTH} levels") from None
    except BodyError:
        raise
    except ValueError as error:  # JSONDecodeError, or an integer literal over Python's digit limit
        raise BodyError(f"Malformed JSON: {error}") from None
    if json_depth(value) > MAX_JSON_DEPTH:
        raise BodyError(f"JSON nesting is deeper than {MAX_JSON_DEPTH} levels")
    return value
