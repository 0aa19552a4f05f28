from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from imagejobs_tools.cli import main
from imagejobs_tools.jobcli.client import ChecksumMismatch, output_extension
from imagejobs_tools.jobcli.records import JobRecord, OutputObject
from tests.unit.jobcli.conftest import MockStack
from tests.unit.jobcli.support import make_record, put_output

PNG = b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 40
JPEG = b"\xff\xd8\xff\xe0" + b"jpeg-body" * 500


def test_download_streams_each_output_to_job_dir_and_verifies_sha256(
    stack: MockStack, capsys: pytest.CaptureFixture[str]
) -> None:
    bucket = stack.resources.bucket_name
    outputs = [
        put_output(stack.s3, bucket, "outputs/d1/0.png", PNG),
        put_output(stack.s3, bucket, "outputs/d1/image-1", JPEG, content_type="image/jpeg"),
    ]
    stack.put(make_record("d1", "COMPLETED", outputs=outputs))

    assert main(["download", "d1", "--out", "dl", *stack.resources.target_args()]) == 0

    assert Path("dl/d1/0.png").read_bytes() == PNG
    assert Path("dl/d1/1.jpg").read_bytes() == JPEG
    assert sorted(p.name for p in Path("dl/d1").iterdir()) == ["0.png", "1.jpg"]  # no .part files left
    out = capsys.readouterr().out
    assert f"dl/d1/0.png\t{len(PNG)} bytes, sha256 ok" in out

    # A second run finds the verified files already there.
    assert main(["download", "d1", "--out", "dl", *stack.resources.target_args()]) == 0
    assert "dl/d1/0.png\talready there, sha256 ok" in capsys.readouterr().out


def test_download_checksum_mismatch_fails_and_leaves_no_file(
    stack: MockStack, capsys: pytest.CaptureFixture[str]
) -> None:
    output = put_output(stack.s3, stack.resources.bucket_name, "outputs/bad/0.png", PNG)
    output["sha256"] = hashlib.sha256(b"something else").hexdigest()
    stack.put(make_record("bad", "COMPLETED", outputs=[output]))

    assert main(["download", "bad", "--out", "dl", *stack.resources.target_args()]) == 1

    err = capsys.readouterr().err
    assert "bad: s3 object outputs/bad/0.png: sha256" in err and "does not match the record's" in err
    assert list(Path("dl/bad").iterdir()) == []

    with pytest.raises(ChecksumMismatch) as excinfo:
        list(
            stack.client().download(
                JobRecord.from_item(make_record("bad", "COMPLETED", outputs=[output])), Path("x")
            )
        )
    assert excinfo.value.actual == hashlib.sha256(PNG).hexdigest()


def test_download_skips_jobs_without_outputs_and_fails_for_unknown_jobs(
    stack: MockStack, capsys: pytest.CaptureFixture[str]
) -> None:
    stack.put(make_record("pending", "SUBMITTED"))
    output = put_output(stack.s3, stack.resources.bucket_name, "outputs/fine/0.png", PNG)
    output.pop("sha256")
    stack.put(make_record("fine", "COMPLETED", outputs=[output]))

    assert main(["download", "pending", "fine", "--out", "dl", *stack.resources.target_args()]) == 0
    captured = capsys.readouterr()
    assert "pending: skipped, no outputs (status SUBMITTED)" in captured.err
    assert "dl/fine/0.png\t" in captured.out and "no sha256 recorded" in captured.out
    assert Path("dl/fine/0.png").read_bytes() == PNG

    assert main(["download", "ghost", "--out", "dl", *stack.resources.target_args()]) == 1
    assert "ghost: no record" in capsys.readouterr().err


def test_download_reports_a_missing_object_and_goes_on(
    stack: MockStack, capsys: pytest.CaptureFixture[str]
) -> None:
    missing = {"bucket": stack.resources.bucket_name, "key": "outputs/gone/0.png", "sha256": "00"}
    stack.put(make_record("gone", "COMPLETED", outputs=[missing]))
    stack.put(
        make_record(
            "ok", "COMPLETED", outputs=[put_output(stack.s3, stack.resources.bucket_name, "o.png", PNG)]
        )
    )

    assert main(["download", "gone", "ok", "--out", "dl", *stack.resources.target_args()]) == 1

    assert "downloading the outputs of gone failed" in capsys.readouterr().err
    assert Path("dl/ok/0.png").read_bytes() == PNG


@pytest.mark.parametrize(
    ("key", "content_type", "extension"),
    [
        ("a/b/0.png", None, ".png"),
        ("a/b/0.WEBP", "image/png", ".webp"),
        ("a/b/0", "image/jpeg", ".jpg"),
        ("a/b/0", "video/mp4", ".mp4"),
        ("a/b.dir/0", None, ".bin"),
    ],
)
def test_output_extension(key: str, content_type: str | None, extension: str) -> None:
    output = OutputObject(bucket="b", key=key, uri=None, bytes=None, sha256=None, content_type=content_type)
    assert output_extension(output) == extension


def test_without_a_recorded_sha256_a_file_of_the_recorded_size_is_kept_and_a_partial_one_fetched(
    stack: MockStack,
) -> None:
    output = put_output(stack.s3, stack.resources.bucket_name, "outputs/n/0.png", PNG)
    del output["sha256"]
    record = JobRecord.from_item(make_record("n", "COMPLETED", outputs=[output]))
    client = stack.client()
    Path("dl/n").mkdir(parents=True)
    Path("dl/n/0.png").write_bytes(PNG[:100])  # an interrupted download

    [fetched] = list(client.download(record, Path("dl")))
    assert (fetched.skipped, fetched.verified) == (False, False)
    assert Path("dl/n/0.png").read_bytes() == PNG

    [kept] = list(client.download(record, Path("dl")))
    assert kept.skipped and kept.bytes == len(PNG)
