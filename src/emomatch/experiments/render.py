"""The report's blocks (headings, paragraphs, tables, figures, folded details) as Markdown with
figures beside it, or as one self-contained HTML page with the figures embedded."""

from __future__ import annotations

import base64
import html
from collections.abc import Sequence
from typing import Any

Block = tuple[str, Any]


def render_markdown(blocks: Sequence[Block]) -> str:
    out = []
    for kind, value in blocks:
        if kind in ("h1", "h2"):
            out.append(f"{'#' * int(kind[1])} {value}\n")
        elif kind == "p":
            out.append(f"{value}\n")
        elif kind == "list":
            out.append("\n".join(f"- {item}" for item in value) + "\n")
        elif kind == "table":
            head, body = value
            lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
            lines += ["| " + " | ".join(row) + " |" for row in body]
            out.append("\n".join(lines) + "\n")
        elif kind == "figure":
            out.append(f"![{value.caption}](figures/{value.name}.png)\n\n*{value.caption}*\n")
        elif kind == "details":
            title, text = value
            out.append(
                f"<details><summary>{title}</summary>\n\n```yaml\n{text.rstrip()}\n```\n\n"
                "</details>\n"
            )
    return "\n".join(out)


def _inline(text: str) -> str:
    """The two Markdown marks the blocks use (**bold**, `code`) as HTML, the rest escaped."""
    escaped = html.escape(str(text))
    parts = escaped.split("`")
    for i in range(1, len(parts), 2):
        parts[i] = f"<code>{parts[i]}</code>"
    joined = "".join(parts)
    bold = joined.split("**")
    for i in range(1, len(bold), 2):
        bold[i] = f"<b>{bold[i]}</b>"
    return "".join(bold)


STYLE = """body{font-family:sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222}
table{border-collapse:collapse;margin:1em 0;font-size:14px}
td,th{border:1px solid #ccc;padding:4px 8px;text-align:right}
td:first-child,th:first-child{text-align:left}
th{background:#f3f3f3}figure{margin:1em 0}figcaption{font-size:13px;color:#555}
img{max-width:100%}pre{background:#f6f6f6;padding:8px;overflow-x:auto;font-size:12px}"""


def render_html(blocks: Sequence[Block]) -> str:
    title = next((v for k, v in blocks if k == "h1"), "emomatch report")
    out = [
        "<!DOCTYPE html>",
        '<html><head><meta charset="utf-8">',
        f"<title>{html.escape(title)}</title><style>{STYLE}</style></head><body>",
    ]
    for kind, value in blocks:
        if kind in ("h1", "h2"):
            out.append(f"<{kind}>{html.escape(value)}</{kind}>")
        elif kind == "p":
            out.append(f"<p>{_inline(value)}</p>")
        elif kind == "list":
            out.append("<ul>" + "".join(f"<li>{_inline(i)}</li>" for i in value) + "</ul>")
        elif kind == "table":
            head, body = value
            out.append("<table><tr>" + "".join(f"<th>{html.escape(h)}</th>" for h in head))
            out.append("</tr>")
            for row in body:
                out.append("<tr>" + "".join(f"<td>{html.escape(x)}</td>" for x in row) + "</tr>")
            out.append("</table>")
        elif kind == "figure":
            data = base64.b64encode(value.png).decode("ascii")
            out.append(
                f'<figure><img alt="{html.escape(value.caption)}" '
                f'src="data:image/png;base64,{data}"><figcaption>'
                f"{html.escape(value.caption)}</figcaption></figure>"
            )
        elif kind == "details":
            t, text = value
            out.append(
                f"<details><summary>{html.escape(t)}</summary>"
                f"<pre>{html.escape(text)}</pre></details>"
            )
    out.append("</body></html>")
    return "\n".join(out)
