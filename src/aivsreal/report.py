"""The run report as Markdown and as a self-contained HTML page (figures embedded).

Both are rendered from one list of blocks, so they always say the same thing.
"""

from __future__ import annotations

import base64
import html
from dataclasses import dataclass
from pathlib import Path


@dataclass
class Heading:
    text: str
    level: int = 2


@dataclass
class Paragraph:
    text: str


@dataclass
class Table:
    header: list[str]
    rows: list[list[object]]


@dataclass
class Figure:
    path: Path  # PNG file; Markdown links it relative to the report, HTML embeds it
    caption: str


@dataclass
class Alert:
    text: str


Block = Heading | Paragraph | Table | Figure | Alert


def _cell(value: object) -> str:
    return f"{value:.4f}" if isinstance(value, float) else str(value)


def to_markdown(blocks: list[Block], report_dir: Path) -> str:
    lines: list[str] = []
    for block in blocks:
        if isinstance(block, Heading):
            lines += ["#" * block.level + " " + block.text, ""]
        elif isinstance(block, Paragraph):
            lines += [block.text, ""]
        elif isinstance(block, Table):
            lines.append("| " + " | ".join(block.header) + " |")
            lines.append("|" + "---|" * len(block.header))
            lines += ["| " + " | ".join(_cell(v) for v in row) + " |" for row in block.rows]
            lines.append("")
        elif isinstance(block, Figure):
            relative = Path(block.path).resolve().relative_to(Path(report_dir).resolve())
            lines += [f"![{block.caption}]({relative.as_posix()})", ""]
        elif isinstance(block, Alert):
            lines += [f"> **Warning:** {block.text}", ""]
    return "\n".join(lines)


def inline_html(text: str) -> str:
    """Escaped text with Markdown code spans (`like this`) as <code>, as the Markdown report shows them."""
    parts = html.escape(text).split("`")
    if len(parts) % 2 == 0:  # an unpaired backtick: show it as written
        return html.escape(text)
    return "".join(f"<code>{part}</code>" if i % 2 else part for i, part in enumerate(parts))


def to_html(blocks: list[Block], title: str) -> str:
    body: list[str] = []
    for block in blocks:
        if isinstance(block, Heading):
            body.append(f"<h{block.level}>{html.escape(block.text)}</h{block.level}>")
        elif isinstance(block, Paragraph):
            body.append(f"<p>{inline_html(block.text)}</p>")
        elif isinstance(block, Table):
            head = "".join(f"<th>{html.escape(h)}</th>" for h in block.header)
            rows = "".join(
                "<tr>" + "".join(f"<td>{html.escape(_cell(v))}</td>" for v in row) + "</tr>" for row in block.rows
            )
            body.append(f"<table><thead><tr>{head}</tr></thead><tbody>{rows}</tbody></table>")
        elif isinstance(block, Figure):
            data = base64.b64encode(Path(block.path).read_bytes()).decode("ascii")
            body.append(
                f'<figure><img alt="{html.escape(block.caption)}" src="data:image/png;base64,{data}">'
                f"<figcaption>{html.escape(block.caption)}</figcaption></figure>"
            )
        elif isinstance(block, Alert):
            body.append(f'<div class="warning"><strong>Warning:</strong> {inline_html(block.text)}</div>')
    style = (
        "body{font-family:system-ui,sans-serif;max-width:60em;margin:2em auto;padding:0 1em;color:#222}"
        "table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:.3em .7em;text-align:right}"
        "th{background:#f3f3f3}td:first-child,th:first-child{text-align:left}"
        "figure{display:inline-block;margin:.5em 1em .5em 0}img{max-width:100%}figcaption{color:#666;font-size:.9em}"
        ".warning{border-left:6px solid #e0a800;background:#fff8e1;padding:.8em 1em;margin:1em 0}"
        "code{background:#f3f3f3;padding:0 .25em;border-radius:3px}"
    )
    return (
        f'<!doctype html>\n<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>'
        f"<style>{style}</style></head><body>\n" + "\n".join(body) + "\n</body></html>\n"
    )
