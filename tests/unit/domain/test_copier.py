from __future__ import annotations

import hashlib
import io
from collections.abc import Iterator
from typing import Any

import boto3
import pytest
import requests
from imagejobs.copier import (
    MIB,
    OutputCopier,
    OutputCopyError,
    StoredOutput,
    TransientCopyError,
    sanitise_metadata,
    sniff,
)
from moto import mock_aws
from requests.adapters import BaseAdapter

from tests.unit.domain.test_urls import PUBLIC

BUCKET = "outputs"
PNG = b"\x89PNG\r\n\x1a\n" + b"\x00" * 100
JPEG = b"\xff\xd8\xff\xe0" + b"\x01" * 100
WEBP = b"RIFF\x00\x00\x00\x00WEBPVP8 " + b"\x02" * 100
GIF = b"GIF89a" + b"\x03" * 100
MP4 = b"\x00\x00\x00\x18ftypmp42" + b"\x04" * 100


class FailingReader(io.RawIOBase):
    """Yields ``data`` then raises, like a connection reset mid-download."""

    def __init__(self, data: bytes) -> None:
        self.data = data

    def read(self, size: int = -1) -> bytes:
        if self.data:
            chunk, self.data = self.data[:size], self.data[size:]
            return chunk
        raise requests.ConnectionError("connection reset by peer")


class FakeHttp(BaseAdapter):
    """Serves url -> (status, headers, body bytes or raw reader) and records requests."""

    def __init__(self, routes: dict[str, tuple[int, dict[str, str], Any]]) -> None:
        super().__init__()
        self.routes = routes
        self.requests: list[requests.PreparedRequest] = []

    def send(self, request: requests.PreparedRequest, **kwargs: Any) -> requests.Response:  # type: ignore[override]
        self.requests.append(request)
        status, headers, body = self.routes[str(request.url)]
        response = requests.Response()
        response.status_code = status
        response.headers.update(headers)
        response.raw = io.BytesIO(body) if isinstance(body, bytes) else body
        response.url = str(request.url)
        response.request = request
        return response

    def close(self) -> None:
        pass


@pytest.fixture
def s3() -> Iterator[Any]:
    with mock_aws():
        client = boto3.client("s3", region_name="us-east-1")
        client.create_bucket(Bucket=BUCKET)
        yield client


def make_copier(
    s3: Any, routes: dict[str, tuple[int, dict[str, str], Any]], **kwargs: Any
) -> tuple[OutputCopier, FakeHttp]:
    session = requests.Session()
    adapter = FakeHttp(routes)
    session.mount("https://", adapter)
    session.mount("http://", adapter)
    kwargs.setdefault("max_bytes", 20 * MIB)
    kwargs.setdefault("part_size", 5 * MIB)
    kwargs.setdefault("chunk_size", 64 * 1024)
    return OutputCopier(session, s3, BUCKET, resolver=PUBLIC, **kwargs), adapter


@pytest.mark.parametrize(
    ("head", "expected"),
    [
        (PNG, ("image/png", "png")),
        (JPEG, ("image/jpeg", "jpg")),
        (WEBP, ("image/webp", "webp")),
        (GIF, ("image/gif", "gif")),
        (MP4, ("video/mp4", "mp4")),
        (b"\x00\x00\x00\x14ftypqt  ", ("video/quicktime", "mov")),
        (b"<html>", None),
        (b"", None),
        (b"RIFF\x00\x00\x00\x00WAVE", None),
    ],
)
def test_sniff(head: bytes, expected: tuple[str, str] | None) -> None:
    assert sniff(head) == expected


@pytest.mark.parametrize(
    ("body", "ext", "ctype"),
    [
        (PNG, "png", "image/png"),
        (JPEG, "jpg", "image/jpeg"),
        (WEBP, "webp", "image/webp"),
        (GIF, "gif", "image/gif"),
    ],
)
def test_small_image_is_stored_with_sniffed_type_key_and_checksum(
    s3: Any, body: bytes, ext: str, ctype: str
) -> None:
    copier, _ = make_copier(s3, {"https://cdn.example.com/x": (200, {"Content-Type": "text/plain"}, body)})
    [stored] = copier.copy_outputs(
        "job-1", "outputs/", ["https://cdn.example.com/x"], metadata={"team": "A b"}
    )
    assert stored == StoredOutput(
        uri=f"s3://{BUCKET}/outputs/job-1/0.{ext}",
        bucket=BUCKET,
        key=f"outputs/job-1/0.{ext}",
        bytes=len(body),
        sha256=hashlib.sha256(body).hexdigest(),
        content_type=ctype,
    )
    obj = s3.get_object(Bucket=BUCKET, Key=stored.key)
    assert obj["Body"].read() == body
    assert obj["ContentType"] == ctype
    assert obj["Metadata"] == {"team": "A b", "job-id": "job-1"}


def test_keys_are_deterministic_and_a_retry_overwrites(s3: Any) -> None:
    routes = {"https://cdn.example.com/a": (200, {}, PNG), "https://cdn.example.com/b": (200, {}, JPEG)}
    copier, _ = make_copier(s3, routes)
    first = copier.copy_outputs("job-1", "out", ["https://cdn.example.com/a", "https://cdn.example.com/b"])
    second = copier.copy_outputs("job-1", "out", ["https://cdn.example.com/a", "https://cdn.example.com/b"])
    assert [o.key for o in first] == ["out/job-1/0.png", "out/job-1/1.jpg"] == [o.key for o in second]
    listed = s3.list_objects_v2(Bucket=BUCKET)["Contents"]
    assert sorted(o["Key"] for o in listed) == ["out/job-1/0.png", "out/job-1/1.jpg"]
    assert [o.to_record()["contentType"] for o in first] == ["image/png", "image/jpeg"]


def test_large_output_uses_multipart_streaming(s3: Any) -> None:
    body = PNG + bytes(range(256)) * (11 * MIB // 256)
    copier, _ = make_copier(s3, {"https://cdn.example.com/big": (200, {}, body)})
    calls: list[str] = []
    original = s3.upload_part

    def counting_upload_part(**kwargs: Any) -> Any:
        calls.append(kwargs["Key"])
        return original(**kwargs)

    s3.upload_part = counting_upload_part
    [stored] = copier.copy_outputs("job-1", "o/", ["https://cdn.example.com/big"])
    assert len(calls) == 3  # 5 MiB + 5 MiB + remainder
    assert stored.bytes == len(body)
    assert stored.sha256 == hashlib.sha256(body).hexdigest()
    assert s3.get_object(Bucket=BUCKET, Key="o/job-1/0.png")["Body"].read() == body


def test_size_cap_from_content_length_refuses_before_streaming(s3: Any) -> None:
    copier, _ = make_copier(s3, {"https://cdn.example.com/x": (200, {"Content-Length": str(30 * MIB)}, PNG)})
    with pytest.raises(OutputCopyError) as excinfo:
        copier.copy_outputs("job-1", "o/", ["https://cdn.example.com/x"])
    assert excinfo.value.code == "OUTPUT_TOO_LARGE"
    assert s3.list_objects_v2(Bucket=BUCKET).get("KeyCount") == 0


def test_size_cap_enforced_mid_stream_and_multipart_aborted(s3: Any) -> None:
    body = PNG + b"\x00" * (12 * MIB)  # no Content-Length: only the stream tells
    copier, _ = make_copier(s3, {"https://cdn.example.com/x": (200, {}, body)}, max_bytes=11 * MIB)
    with pytest.raises(OutputCopyError) as excinfo:
        copier.copy_outputs("job-1", "o/", ["https://cdn.example.com/x"])
    assert excinfo.value.code == "OUTPUT_TOO_LARGE"
    assert s3.list_objects_v2(Bucket=BUCKET).get("KeyCount") == 0
    assert s3.list_multipart_uploads(Bucket=BUCKET).get("Uploads", []) == []


def test_small_cap_mid_stream_single_put(s3: Any) -> None:
    copier, _ = make_copier(s3, {"https://cdn.example.com/x": (200, {}, PNG * 10)}, max_bytes=500)
    with pytest.raises(OutputCopyError, match="OUTPUT_TOO_LARGE"):
        copier.copy_outputs("job-1", "o/", ["https://cdn.example.com/x"])


def test_non_image_output_for_image_job_is_refused(s3: Any) -> None:
    copier, _ = make_copier(
        s3, {"https://cdn.example.com/v": (200, {}, MP4), "https://cdn.example.com/h": (200, {}, b"<html>")}
    )
    for url in ("https://cdn.example.com/v", "https://cdn.example.com/h"):
        with pytest.raises(OutputCopyError) as excinfo:
            copier.copy_outputs("job-1", "o/", [url], kind="image")
        assert excinfo.value.code == "UNEXPECTED_CONTENT"
    assert s3.list_objects_v2(Bucket=BUCKET).get("KeyCount") == 0


def test_video_job_accepts_mp4(s3: Any) -> None:
    copier, _ = make_copier(s3, {"https://cdn.example.com/v": (200, {}, MP4)})
    [stored] = copier.copy_outputs("v-1", "o/", ["https://cdn.example.com/v"], kind="video")
    assert (stored.key, stored.content_type) == ("o/v-1/0.mp4", "video/mp4")


def test_unsafe_output_url_is_refused_without_a_request(s3: Any) -> None:
    copier, adapter = make_copier(s3, {})
    with pytest.raises(OutputCopyError) as excinfo:
        copier.copy_outputs("job-1", "o/", ["https://169.254.169.254/latest/meta-data/"])
    assert excinfo.value.code == "UNSAFE_OUTPUT_URL"
    assert adapter.requests == []


def test_redirect_to_private_address_is_refused(s3: Any) -> None:
    routes = {"https://cdn.example.com/x": (302, {"Location": "https://10.0.0.8/secret"}, b"")}
    copier, adapter = make_copier(s3, routes)
    with pytest.raises(OutputCopyError, match="UNSAFE_OUTPUT_URL"):
        copier.copy_outputs("job-1", "o/", ["https://cdn.example.com/x"])
    assert len(adapter.requests) == 1


def test_allow_listed_local_host_is_fetched_over_http(s3: Any) -> None:
    copier, _ = make_copier(
        s3, {"http://127.0.0.1:9000/o.png": (200, {}, PNG)}, allow_hosts=["127.0.0.1:9000"]
    )
    [stored] = copier.copy_outputs("job-1", "o/", ["http://127.0.0.1:9000/o.png"])
    assert stored.bytes == len(PNG)


@pytest.mark.parametrize(
    ("status", "error"),
    [(503, TransientCopyError), (429, TransientCopyError), (404, OutputCopyError), (403, OutputCopyError)],
)
def test_http_errors_are_classified(s3: Any, status: int, error: type[Exception]) -> None:
    copier, _ = make_copier(s3, {"https://cdn.example.com/x": (status, {}, b"nope")})
    with pytest.raises(error):
        copier.copy_outputs("job-1", "o/", ["https://cdn.example.com/x"])


def test_connection_reset_mid_stream_is_transient(s3: Any) -> None:
    copier, _ = make_copier(s3, {"https://cdn.example.com/x": (200, {}, FailingReader(PNG))})
    with pytest.raises(TransientCopyError):
        copier.copy_outputs("job-1", "o/", ["https://cdn.example.com/x"])


def test_overall_deadline_is_enforced(s3: Any) -> None:
    ticks = iter(range(0, 10_000, 100))
    copier, _ = make_copier(
        s3,
        {"https://cdn.example.com/x": (200, {}, PNG * 1000)},
        deadline_seconds=150,
        chunk_size=16,
        clock=lambda: float(next(ticks)),
    )
    with pytest.raises(TransientCopyError, match="deadline"):
        copier.copy_outputs("job-1", "o/", ["https://cdn.example.com/x"])


def test_metadata_is_sanitised_for_s3() -> None:
    cleaned = sanitise_metadata({"Team_Name": "Zoë", "ok-key": "v", "___": "dropped"})
    assert cleaned == {"team-name": "Zo%C3%AB", "ok-key": "v"}
    assert all(value.isascii() for value in cleaned.values())


def test_time_budget_spans_all_outputs(s3: Any) -> None:
    ticks = iter(range(0, 10_000, 10))
    routes = {
        "https://cdn.example.com/a": (200, {}, PNG * 50),
        "https://cdn.example.com/b": (200, {}, PNG * 50),
    }
    copier, adapter = make_copier(s3, routes, chunk_size=512, clock=lambda: float(next(ticks)))
    with pytest.raises(TransientCopyError, match="deadline"):
        copier.copy_outputs(
            "job-1", "o/", ["https://cdn.example.com/a", "https://cdn.example.com/b"], time_budget_seconds=150
        )
    # Without the shared budget each file alone would fit in the copier's 600 s default.
    assert [str(r.url) for r in adapter.requests][-1] == "https://cdn.example.com/b"


def orphan_tags(s3: Any) -> dict[str, list[dict[str, str]]]:
    """Every object's tags, by key."""
    found = s3.list_objects_v2(Bucket=BUCKET).get("Contents", [])
    return {o["Key"]: s3.get_object_tagging(Bucket=BUCKET, Key=o["Key"])["TagSet"] for o in found}


ORPHAN = [{"Key": "imagejobs-orphan", "Value": "true"}]


@pytest.mark.parametrize(
    ("second", "error"),
    [
        ((200, {}, b"<html>not an image</html>"), OutputCopyError),  # permanent
        ((503, {}, b"busy"), TransientCopyError),  # retried by Step Functions
        ((200, {}, FailingReader(PNG)), TransientCopyError),
    ],
)
def test_outputs_of_a_failed_copy_are_tagged_for_expiry(
    s3: Any, second: tuple[int, dict[str, str], Any], error: type[Exception]
) -> None:
    routes = {"https://cdn.example.com/a": (200, {}, PNG), "https://cdn.example.com/b": second}
    copier, _ = make_copier(s3, routes)
    with pytest.raises(error):
        copier.copy_outputs("job-1", "o/", ["https://cdn.example.com/a", "https://cdn.example.com/b"])
    assert orphan_tags(s3) == {"o/job-1/0.png": ORPHAN}


def test_a_successful_retry_writes_fresh_untagged_outputs(s3: Any) -> None:
    routes = {"https://cdn.example.com/a": (200, {}, PNG), "https://cdn.example.com/b": (503, {}, b"")}
    copier, adapter = make_copier(s3, routes)
    urls = ["https://cdn.example.com/a", "https://cdn.example.com/b"]
    with pytest.raises(TransientCopyError):
        copier.copy_outputs("job-1", "o/", urls)
    adapter.routes["https://cdn.example.com/b"] = (200, {}, JPEG)
    copier.copy_outputs("job-1", "o/", urls)
    assert orphan_tags(s3) == {"o/job-1/0.png": [], "o/job-1/1.jpg": []}


def test_outputs_that_cannot_be_tagged_are_reported_and_the_copy_error_still_raised(s3: Any) -> None:
    routes = {"https://cdn.example.com/a": (200, {}, PNG), "https://cdn.example.com/b": (404, {}, b"")}
    copier, _ = make_copier(s3, routes)

    def refuse(**kwargs: Any) -> None:
        raise RuntimeError("AccessDenied")

    copier.s3 = type(
        "NoTagging", (), {"put_object": s3.put_object, "put_object_tagging": staticmethod(refuse)}
    )()
    with pytest.raises(OutputCopyError, match="404"):
        copier.copy_outputs("job-1", "o/", ["https://cdn.example.com/a", "https://cdn.example.com/b"])
    assert orphan_tags(s3) == {"o/job-1/0.png": []}
    stored = StoredOutput(
        uri="s3://outputs/o/job-1/0.png",
        bucket=BUCKET,
        key="o/job-1/0.png",
        bytes=1,
        sha256="",
        content_type="",
    )
    assert copier.mark_orphaned([stored]) == ["o/job-1/0.png"]
