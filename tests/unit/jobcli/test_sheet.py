"""The contact sheet's HTML (pure): every record string escaped, failures with their reasons."""

from __future__ import annotations

import re
from html.parser import HTMLParser

from imagejobs_tools.jobcli.records import JobRecord
from imagejobs_tools.jobcli.sheet import SheetImage, data_uri, render_sheet, sheet_row

HOSTILE = '<script>alert("x")</script><img src=x onerror=alert(1)> & "quotes"'


class _Tags(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, list[tuple[str, str | None]]]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, attrs))


def _tags(page: str) -> list[tuple[str, list[tuple[str, str | None]]]]:
    """The page's elements as a browser's parser sees them (escaped text makes none)."""
    parser = _Tags()
    parser.feed(page)
    return parser.tags


def _page(*records: JobRecord, images: list[SheetImage] | None = None) -> str:
    return "".join(render_sheet("b-1", "OPEN: 1 COMPLETED", [sheet_row(r, images or []) for r in records]))


def test_every_string_from_a_record_is_escaped() -> None:
    record = JobRecord(
        {
            "jobId": "b-1-1",
            "batchLine": 1,
            "status": "FAILED",
            "prompt": HOSTILE,
            "error": {"code": "<b>CODE</b>", "message": HOSTILE, "fieldErrors": {"<f>": [HOSTILE]}},
        }
    )
    page = _page(record, images=[SheetImage('x" onerror="alert(1)', HOSTILE)])

    # The page's own script is the only one, and no record string became markup.
    assert page.count("<script>") == 1
    tags = _tags(page)
    assert not [attr for _, attrs in tags for attr, _ in attrs if attr.startswith("on")]
    assert [tag for tag, _ in tags].count("script") == 1
    assert 'src="x&quot; onerror=&quot;alert(1)"' in page
    assert "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;" in page
    assert "&lt;b&gt;CODE&lt;/b&gt;" in page and "<code>&lt;f&gt;</code>" in page


def test_a_row_shows_line_status_credits_and_the_failure_with_its_field_errors() -> None:
    rejected = JobRecord(
        {
            "jobId": "b-1-4",
            "batchLine": 4,
            "status": "REJECTED",
            "prompt": "",
            "error": {
                "code": "VALIDATION_FAILED",
                "message": "batch line 4 is not a valid job",
                "fieldErrors": {
                    "prompt": ["must not be empty"],
                    "model": ["unknown model", "try gpt-image-2"],
                },
            },
        }
    )
    error = {"code": "TASK_FAILED", "message": "nsfw"}
    failed = JobRecord(
        {
            "jobId": "b-1-5",
            "batchLine": 5,
            "status": "FAILED",
            "creditsUsed": 3,
            "creditsRefunded": True,
            "error": error,
        }
    )

    page = _page(rejected, failed)

    rows = re.findall(r'<tr data-status="([A-Z_]+)">(.*?)</tr>', page)
    assert [status for status, _ in rows] == ["REJECTED", "FAILED"]
    assert '<td class="line">4</td>' in rows[0][1]
    assert "<li><code>model</code>: try gpt-image-2</li>" in rows[0][1]
    assert '<span class="code">TASK_FAILED</span> nsfw' in rows[1][1]
    assert '<td class="credits">3 (refunded)</td>' in rows[1][1]


def test_images_are_data_uris_and_the_page_loads_nothing_from_elsewhere() -> None:
    record = JobRecord({"jobId": "j", "batchLine": 1, "status": "COMPLETED"})
    page = _page(record, images=[SheetImage(data_uri("image/png", b"\x89PNG"), "j output 0")])

    assert '<img src="data:image/png;base64,iVBORw==" alt="j output 0"' in page
    assert not re.search(r"""(src|href)=["']?(https?:)?//""", page)
    # The filters are built by the script; without it the bar stays hidden and every row shows.
    assert '<div id="filters" hidden></div>' in page and "<tr hidden" not in page
