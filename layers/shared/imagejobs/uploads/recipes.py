"""An image upload's job: a recipe < its sidecar < the object's metadata, and what is wrong with it."""

from __future__ import annotations

import re
import string
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from imagejobs.config import S3IntakeSettings, TriggerPrefixSettings
from imagejobs.uploads.events import SIDECAR_SUFFIX, S3ObjectRef, derived_job_id, trigger_prefix_problem
from imagejobs.uploads.objects import OUTPUT_MARKER_METADATA, read_small_json

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

MAX_SIDECAR_BYTES = 64 * 1024
# Metadata keys that set job options rather than travel as job metadata.
OPTION_METADATA = {
    "prompt": "prompt",
    "model": "model",
    "aspect-ratio": "aspectRatio",
    "output-prefix": "outputPrefix",
    "webhook-url": "webhookUrl",
}
RECIPE_METADATA = "recipe"
RECIPE_NAME_RE = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")
RECIPE_FIELDS = ("prompt", "model", "aspectRatio", "providerInput", "outputPrefix", "metadata")
SIDECAR_FIELDS = (*RECIPE_FIELDS, "jobId", "recipe", "inputImageUrls", "inputMode", "duration", "webhookUrl")


@dataclass
class ResolvedJob:
    message: dict[str, Any]
    errors: dict[str, list[str]] = field(default_factory=dict)

    def fail(self, name: str, reason: str) -> None:
        self.errors.setdefault(name, []).append(reason)


def _recipe_name(
    ref: S3ObjectRef,
    metadata: Mapping[str, str],
    sidecar: Mapping[str, Any] | None,
    settings: TriggerPrefixSettings,
) -> tuple[str | None, bool]:
    """(recipe name, explicitly named): metadata beats sidecar beats the first sub-prefix."""
    if metadata.get(RECIPE_METADATA):
        return metadata[RECIPE_METADATA], True
    if sidecar and isinstance(sidecar.get("recipe"), str):
        return str(sidecar["recipe"]), True
    rest = ref.key[len(settings.inputs_prefix) :]
    if "/" in rest:
        candidate = rest.split("/", 1)[0]
        if RECIPE_NAME_RE.match(candidate):
            return candidate, False
    return None, False


@dataclass(frozen=True)
class _Recipe:
    name: str | None = None
    fields: dict[str, Any] | None = None  # None: no recipe, or one that cannot be used
    missing: bool = False  # named (or implied by the prefix) but not uploaded


def resolve_image_job(
    ref: S3ObjectRef, metadata: Mapping[str, str], *, s3: S3Client, settings: S3IntakeSettings
) -> ResolvedJob:
    """The job message for an image upload (recipe < sidecar < object metadata), and what is wrong with it."""
    resolved = ResolvedJob({})
    sidecar, sidecar_etag = _read_sidecar(ref, s3, resolved)
    recipe = _read_recipe(ref, metadata, sidecar, s3, settings, resolved)
    job_metadata, prompt_from_recipe = _layer(resolved, recipe.fields, sidecar, metadata)
    if prompt_from_recipe and isinstance(resolved.message.get("prompt"), str):
        _fill_prompt_template(ref, job_metadata, resolved)
    _check_upload(ref, recipe, settings, resolved)
    message = resolved.message
    if "jobId" not in message:
        message["jobId"] = derived_job_id("up", ref.bucket, ref.key, ref.identity, sidecar_etag, message)
    return resolved


def _read_sidecar(
    ref: S3ObjectRef, s3: S3Client, resolved: ResolvedJob
) -> tuple[dict[str, Any] | None, str | None]:
    """``<key>.job.json`` beside the image, when there is a usable one; and its ETag (part of the job id,
    so that a new sidecar makes a new job)."""
    sidecar_key = ref.key + SIDECAR_SUFFIX
    sidecar, sidecar_etag, problem = read_small_json(s3, ref.bucket, sidecar_key, MAX_SIDECAR_BYTES)
    if problem:
        resolved.fail("sidecar", f"{sidecar_key} {problem}")
        return None, sidecar_etag
    if sidecar is not None and not isinstance(sidecar, dict):
        resolved.fail("sidecar", f"{sidecar_key} must be a JSON object")
        return None, sidecar_etag
    for name in sidecar or ():
        if name not in SIDECAR_FIELDS:
            resolved.fail(
                "sidecar", f"{sidecar_key}: unknown field {name!r} (allowed: {', '.join(SIDECAR_FIELDS)})"
            )
    return sidecar, sidecar_etag


def _read_recipe(
    ref: S3ObjectRef,
    metadata: Mapping[str, str],
    sidecar: Mapping[str, Any] | None,
    s3: S3Client,
    settings: S3IntakeSettings,
    resolved: ResolvedJob,
) -> _Recipe:
    """The recipe the upload names (metadata, sidecar) or its sub-prefix implies; a missing recipe is
    an error only when named."""
    name, explicit = _recipe_name(ref, metadata, sidecar, settings)
    if name is None:
        return _Recipe()
    recipe_key = f"{settings.recipes_prefix}{name}.json"
    if not RECIPE_NAME_RE.match(name):
        resolved.fail("recipe", f"{name!r} is not a recipe name ({RECIPE_NAME_RE.pattern})")
        return _Recipe(name)
    document, _, problem = read_small_json(s3, ref.bucket, recipe_key, MAX_SIDECAR_BYTES)
    if problem:
        resolved.fail("recipe", f"{recipe_key} {problem}")
        return _Recipe(name)
    if document is None:
        if explicit:
            resolved.fail("recipe", f"{recipe_key} does not exist")
        return _Recipe(name, missing=True)
    if not isinstance(document, dict):
        resolved.fail("recipe", f"{recipe_key} must be a JSON object")
        return _Recipe(name)
    unknown = [n for n in document if n not in RECIPE_FIELDS]
    if unknown:
        resolved.fail(
            "recipe", f"{recipe_key}: unknown fields {unknown} (allowed: {', '.join(RECIPE_FIELDS)})"
        )
    return _Recipe(name, {k: v for k, v in document.items() if k in RECIPE_FIELDS})


def _layer(
    resolved: ResolvedJob,
    recipe: Mapping[str, Any] | None,
    sidecar: Mapping[str, Any] | None,
    metadata: Mapping[str, str],
) -> tuple[dict[str, str], bool]:
    """Recipe, then sidecar, then the object's metadata into the message, each over the one before;
    the job metadata they add up to, and whether the prompt is the recipe's (a template)."""
    message = resolved.message
    job_metadata: dict[str, str] = {}
    prompt_from_recipe = False
    for layer in (recipe, sidecar):
        if not layer:
            continue
        for name in SIDECAR_FIELDS:
            if name in layer and name not in ("recipe", "metadata"):
                message[name] = layer[name]
        if isinstance(layer.get("metadata"), dict):
            job_metadata.update(layer["metadata"])
        elif "metadata" in layer:
            resolved.fail("metadata", "recipe/sidecar metadata must be an object of string to string")
        if "prompt" in layer:
            prompt_from_recipe = layer is recipe
    for name, value in metadata.items():
        if name in OPTION_METADATA:
            message[OPTION_METADATA[name]] = value
            prompt_from_recipe = prompt_from_recipe and name != "prompt"
        elif name not in (RECIPE_METADATA, OUTPUT_MARKER_METADATA):
            job_metadata[name] = value
    if job_metadata:
        message["metadata"] = job_metadata
    return job_metadata, prompt_from_recipe


def _fill_prompt_template(ref: S3ObjectRef, job_metadata: Mapping[str, str], resolved: ResolvedJob) -> None:
    """A recipe's prompt is a template: ${key}, ${filename}, ${stem} and the job metadata fill it."""
    filename = ref.key.rsplit("/", 1)[-1]
    variables = {
        "key": ref.key,
        "filename": filename,
        "stem": filename.rsplit(".", 1)[0],
        **{str(k).replace("-", "_"): str(v) for k, v in job_metadata.items()},
    }
    try:
        resolved.message["prompt"] = string.Template(resolved.message["prompt"]).substitute(variables)
    except KeyError as missing:
        name = str(missing.args[0])
        resolved.fail("recipe", f"prompt template needs ${{{name}}}: set x-amz-meta-{name.replace('_', '-')}")
    except ValueError as exc:
        resolved.fail("recipe", f"prompt template is invalid ({exc})")


def _check_upload(
    ref: S3ObjectRef, recipe: _Recipe, settings: S3IntakeSettings, resolved: ResolvedJob
) -> None:
    """The upload is the job's first input image; a usable prompt, key and output prefix."""
    message = resolved.message
    extra_inputs = message.get("inputImageUrls")
    message["inputImageUrls"] = [ref.uri, *(extra_inputs if isinstance(extra_inputs, list) else [])]
    if not isinstance(message.get("prompt"), str) or not message["prompt"].strip():
        hint = (
            f"no usable prompt: set x-amz-meta-prompt, upload {ref.key}{SIDECAR_SUFFIX} (a sidecar uploaded "
            f"later starts the job), or upload under {settings.inputs_prefix}<recipe>/"
        )
        if recipe.missing:
            hint += f" (no recipe {settings.recipes_prefix}{recipe.name}.json)"
        resolved.fail("prompt", hint)
    if any(ch in ref.key for ch in "?#") or any(ord(ch) < 0x20 or ord(ch) == 0x7F for ch in ref.key):
        resolved.fail("key", "object keys with ?, # or control characters cannot be job inputs; rename it")
    prefix_problem = trigger_prefix_problem(message.get("outputPrefix"), settings)
    if prefix_problem and isinstance(message.get("outputPrefix"), str):
        resolved.fail("outputPrefix", prefix_problem)
