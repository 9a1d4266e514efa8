"""A report as a list of blocks, rendered to Markdown (plots linked) and to self-contained HTML (plots inlined as
base64). Blocks: ("h", level, text) · ("p", text) · ("note", text) · ("table", headers, rows) · ("img", path, alt).
"""

from __future__ import annotations

import base64
import html
from pathlib import Path

Block = tuple


def to_markdown(blocks: list[Block]) -> str:
    out: list[str] = []
    for b in blocks:
        kind = b[0]
        if kind == "h":
            out.append(f"{'#' * b[1]} {b[2]}\n")
        elif kind == "p":
            out.append(f"{b[1]}\n")
        elif kind == "note":
            out.append(f"> **Note:** {b[1]}\n")
        elif kind == "table":
            headers, rows = b[1], b[2]
            cell = lambda v: str(v).replace("|", "\\|").replace("\n", " ")  # noqa: E731
            out.append("| " + " | ".join(cell(h) for h in headers) + " |")
            out.append("|" + "---|" * len(headers))
            out.extend("| " + " | ".join(cell(v) for v in r) + " |" for r in rows)
            out.append("")
        elif kind == "img":
            out.append(f"![{b[2]}]({b[1]})\n")
        else:
            raise ValueError(f"unknown report block {kind!r}")
    return "\n".join(out)


_CSS = """body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222}
table{border-collapse:collapse;margin:0.5em 0 1.2em;font-size:0.85em}td,th{border:1px solid #ccc;padding:3px 7px}
th{background:#f3f3f3}.note{background:#fff6dd;border-left:4px solid #e0a800;padding:4px 10px;margin:6px 0}
img{max-width:100%}code{background:#f3f3f3;padding:0 3px}"""


def to_html(blocks: list[Block], base_dir: Path, title: str) -> str:
    """Self-contained HTML: image paths (relative to base_dir) are read and embedded as data URIs."""
    e = html.escape
    out = [f"<!doctype html><html><head><meta charset='utf-8'><title>{e(title)}</title><style>{_CSS}</style>"
           "</head><body>"]
    for b in blocks:
        kind = b[0]
        if kind == "h":
            out.append(f"<h{b[1]}>{e(b[2])}</h{b[1]}>")
        elif kind == "p":
            out.append(f"<p>{e(b[1])}</p>")
        elif kind == "note":
            out.append(f"<div class='note'><b>Note:</b> {e(b[1])}</div>")
        elif kind == "table":
            out.append("<table><tr>" + "".join(f"<th>{e(str(h))}</th>" for h in b[1]) + "</tr>")
            out.extend("<tr>" + "".join(f"<td>{e(str(v))}</td>" for v in r) + "</tr>" for r in b[2])
            out.append("</table>")
        elif kind == "img":
            data = base64.b64encode((base_dir / b[1]).read_bytes()).decode("ascii")
            out.append(f"<p><img alt='{e(b[2])}' src='data:image/png;base64,{data}'></p>")
        else:
            raise ValueError(f"unknown report block {kind!r}")
    out.append("</body></html>")
    return "\n".join(out)
