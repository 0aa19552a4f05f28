"""`imagejobs batch sheet`: a batch's contact sheet, one self-contained HTML page.

One table row per job in line order: line, job id, thumbnails, prompt, status, credits and the
failure with its reasons. Every string from a record is escaped (prompts are user input). The page
has no external assets: images are data: URIs (or paths relative to the page, `--images`), and
its script only builds the status filter buttons (the filter is also the URL's `#status=S`) and
writes how many images loaded into `<body data-images-*>`. Without JavaScript every row is shown.
"""

from __future__ import annotations

import base64
import html
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from imagejobs_tools.jobcli.records import JobRecord
from imagejobs_tools.jobcli.render import format_credits


@dataclass(frozen=True)
class SheetImage:
    src: str  # a data: URI, or a path relative to the page
    alt: str


@dataclass(frozen=True)
class SheetRow:
    line: int
    job_id: str
    status: str
    prompt: str
    credits: str
    error: Mapping[str, Any] | None
    images: Sequence[SheetImage]


def data_uri(content_type: str | None, body: bytes) -> str:
    return f"data:{content_type or 'application/octet-stream'};base64,{base64.b64encode(body).decode()}"


def sheet_row(record: JobRecord, images: Sequence[SheetImage]) -> SheetRow:
    line = record.data.get("batchLine")
    return SheetRow(
        line=int(line) if isinstance(line, int) else 0,
        job_id=record.job_id,
        status=record.display_status,
        prompt=record.prompt or "",
        credits=format_credits(record),
        error=record.error,
        images=images,
    )


def _e(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _failure(error: Mapping[str, Any] | None) -> str:
    if not error:
        return ""
    code = f'<span class="code">{_e(error["code"])}</span> ' if error.get("code") else ""
    parts = [f'<div class="failure">{code}{_e(error.get("message") or "")}']
    field_errors = error.get("fieldErrors")
    if isinstance(field_errors, Mapping) and field_errors:
        parts.append('<ul class="field-errors">')
        for name, messages in field_errors.items():
            for message in messages if isinstance(messages, list) else [messages]:
                parts.append(f"<li><code>{_e(name)}</code>: {_e(message)}</li>")
        parts.append("</ul>")
    parts.append("</div>")
    return "".join(parts)


def _row(row: SheetRow) -> str:
    images = "".join(
        f'<img src="{_e(image.src)}" alt="{_e(image.alt)}" loading="eager">' for image in row.images
    )
    return (
        f'<tr data-status="{_e(row.status)}">'
        f'<td class="line">{row.line}</td>'
        f'<td class="job"><code>{_e(row.job_id)}</code></td>'
        f'<td class="images">{images}</td>'
        f'<td class="prompt">{_e(row.prompt)}</td>'
        f'<td class="status status-{_e(row.status)}">{_e(row.status)}</td>'
        f'<td class="credits">{_e(row.credits)}</td>'
        f'<td class="failure-cell">{_failure(row.error)}</td>'
        "</tr>\n"
    )


STYLE = """
body{font:14px/1.4 system-ui,sans-serif;margin:1.5em;color:#222}
h1{font-size:1.3em;margin:0 0 .3em}
.meta{color:#555;margin:0 0 1em}
#filters{margin:0 0 1em}
#filters button{margin:0 .4em .4em 0;padding:.3em .8em;border:1px solid #888;border-radius:4px}
#filters button[aria-pressed=true]{background:#333;color:#fff}
table{border-collapse:collapse;width:100%}
th,td{border-bottom:1px solid #ddd;padding:.4em .5em;text-align:left;vertical-align:top}
td.images img{width:160px;height:160px;object-fit:contain;background:#eee;margin:0 .3em .3em 0}
td.job{white-space:nowrap}
td.prompt{white-space:pre-wrap;max-width:32em;overflow-wrap:anywhere}
.status-COMPLETED{color:#17622b}.status-FAILED,.status-TIMED_OUT,.status-REJECTED,.status-SUBMIT_UNKNOWN{color:#a31515}
.failure .code{font-weight:bold}
.field-errors{margin:.2em 0 0 1.2em;padding:0}
"""

# ES5, no external assets. The filter is the URL fragment (#status=FAILED): a page opened with it
# shows that status only, and a button sets it.
SCRIPT = """
(function () {
  var rows = Array.prototype.slice.call(document.querySelectorAll("tr[data-status]"));
  var bar = document.getElementById("filters");
  var counts = {};
  rows.forEach(function (row) { counts[row.dataset.status] = (counts[row.dataset.status] || 0) + 1; });
  var buttons = ["ALL"].concat(Object.keys(counts).sort()).map(function (status) {
    var button = document.createElement("button");
    button.type = "button";
    button.dataset.filter = status;
    button.textContent = status + " (" + (status === "ALL" ? rows.length : counts[status]) + ")";
    button.addEventListener("click", function () { location.hash = "status=" + status; });
    bar.appendChild(button);
    return button;
  });
  function apply() {
    var match = /^#status=([A-Z_]+)$/.exec(location.hash);
    var status = match && counts[match[1]] ? match[1] : "ALL";
    var shown = 0;
    rows.forEach(function (row) {
      row.hidden = status !== "ALL" && row.dataset.status !== status;
      if (!row.hidden) { shown += 1; }
    });
    buttons.forEach(function (b) { b.setAttribute("aria-pressed", String(b.dataset.filter === status)); });
    document.body.dataset.filter = status;
    document.body.dataset.rowsShown = String(shown);
  }
  window.addEventListener("hashchange", apply);
  bar.hidden = false;
  apply();
  window.addEventListener("load", function () {
    var loaded = 0, broken = 0;
    Array.prototype.forEach.call(document.images, function (img) {
      if (img.complete && img.naturalWidth > 0) { loaded += 1; } else { broken += 1; }
    });
    document.body.dataset.imagesTotal = String(document.images.length);
    document.body.dataset.imagesLoaded = String(loaded);
    document.body.dataset.imagesBroken = String(broken);
  });
})();
"""


def render_sheet(batch_id: str, subtitle: str, rows: Iterable[SheetRow]) -> Iterator[str]:
    """The page, in pieces (rows are streamed: a batch's images never all sit in memory)."""
    yield (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>Batch {_e(batch_id)}</title><style>{STYLE}</style></head>\n"
        f"<body><h1>Batch <code>{_e(batch_id)}</code></h1>"
        f'<p class="meta">{_e(subtitle)}</p>'
        '<div id="filters" hidden></div>'
        "<noscript><p>Filters need JavaScript: every job is shown.</p></noscript>\n"
        "<table><thead><tr><th>line</th><th>job</th><th>outputs</th><th>prompt</th><th>status</th>"
        "<th>credits</th><th>failure</th></tr></thead><tbody>\n"
    )
    for row in rows:
        yield _row(row)
    yield f"</tbody></table>\n<script>{SCRIPT}</script></body></html>\n"
