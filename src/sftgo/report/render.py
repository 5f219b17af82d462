"""report.md (figures as PNG files beside it) and a self-contained report.html (figures embedded as base64 PNG)."""

from __future__ import annotations

import base64
import html
from dataclasses import dataclass, field

from .tables import Table


@dataclass
class Figure:
    filename: str
    png: bytes
    caption: str


@dataclass
class Section:
    title: str
    text: list[str] = field(default_factory=list)
    table: Table | None = None
    figure: Figure | None = None


def _md_cell(s: str) -> str:
    # A line break inside a table cell is <br> (GitHub / CommonMark tables are one line per row).
    return str(s).replace("|", "\\|").replace("\r\n", "\n").replace("\n", "<br>")


def to_markdown(title: str, intro: list[str], sections: list[Section]) -> str:
    out = [f"# {title}", ""]
    out += [*intro, ""]
    for sec in sections:
        out += [f"## {sec.title}", ""]
        for t in sec.text:
            out += [t, ""]
        if sec.table is not None:
            t = sec.table
            out += [f"**{t.title}**", ""]
            out.append("| " + " | ".join(_md_cell(h) for h in t.header) + " |")
            out.append("|" + "|".join("---" for _ in t.header) + "|")
            for i, row in enumerate(t.rows):
                # Generated text may hold markup: escaped, so a model's "<b>" shows as text, not as formatting.
                row = [html.escape(str(c), quote=False) for c in row] if t.text else row
                cells = [f"**{_md_cell(c)}**" if (i, j) in t.bold else _md_cell(c) for j, c in enumerate(row)]
                out.append("| " + " | ".join(cells) + " |")
            out.append("")
            out += [*(f"_{n}_" for n in t.notes), ""] if t.notes else []
        if sec.figure is not None:
            out += [f"![{sec.figure.caption}]({sec.figure.filename})", "", f"_{sec.figure.caption}_", ""]
    return "\n".join(out).rstrip() + "\n"


CSS = """
body { font-family: -apple-system, 'Segoe UI', Helvetica, Arial, sans-serif; margin: 2em auto; max-width: 1500px;
       color: #222; padding: 0 1em; }
h1 { font-size: 1.6em; } h2 { font-size: 1.25em; margin-top: 1.8em; border-bottom: 1px solid #ddd; }
table { border-collapse: collapse; margin: 0.6em 0; font-size: 0.86em; }
th, td { border: 1px solid #ccc; padding: 0.3em 0.55em; text-align: right; white-space: nowrap; }
th { background: #f3f3f3; } td:first-child, th:first-child { text-align: left; }
td.wrap { white-space: normal; text-align: left; }
/* generated answers side by side: prose cells that wrap, keep their line breaks and line up at the top */
table.text td { white-space: pre-wrap; text-align: left; vertical-align: top; min-width: 12em; max-width: 34em; }
table.text th { text-align: left; }
.tw { overflow-x: auto; }
.caption { font-weight: 600; margin: 0.5em 0 0.2em; }
.note { color: #555; font-size: 0.85em; margin: 0.2em 0; }
figure { margin: 0.8em 0; } figure img { max-width: 100%; border: 1px solid #eee; }
figcaption { color: #555; font-size: 0.85em; }
"""


def to_html(title: str, intro: list[str], sections: list[Section]) -> str:
    e = html.escape
    out = ["<!DOCTYPE html>", "<html lang='en'><head><meta charset='utf-8'>", f"<title>{e(title)}</title>",
           f"<style>{CSS}</style></head><body>", f"<h1>{e(title)}</h1>"]
    out += [f"<p>{e(p)}</p>" for p in intro]
    for sec in sections:
        out.append(f"<h2>{e(sec.title)}</h2>")
        out += [f"<p>{e(p)}</p>" for p in sec.text]
        if sec.table is not None:
            t = sec.table
            out.append(f"<p class='caption'>{e(t.title)}</p>")
            out.append(f"<div class='tw'><table{' class=text' if t.text else ''}><thead><tr>" + "".join(f"<th>{e(h)}</th>" for h in t.header) + "</tr></thead><tbody>")
            for i, row in enumerate(t.rows):
                cells = []
                for j, c in enumerate(row):
                    txt = f"<b>{e(str(c))}</b>" if (i, j) in t.bold else e(str(c))
                    cls = " class='wrap'" if len(str(c)) > 60 and not t.text else ""
                    cells.append(f"<td{cls}>{txt}</td>")
                out.append("<tr>" + "".join(cells) + "</tr>")
            out.append("</tbody></table></div>")
            out += [f"<p class='note'>{e(n)}</p>" for n in t.notes]
        if sec.figure is not None:
            b64 = base64.b64encode(sec.figure.png).decode("ascii")
            out.append(f"<figure><img alt='{e(sec.figure.caption)}' src='data:image/png;base64,{b64}'>"
                       f"<figcaption>{e(sec.figure.caption)}</figcaption></figure>")
    out.append("</body></html>")
    return "\n".join(out) + "\n"
