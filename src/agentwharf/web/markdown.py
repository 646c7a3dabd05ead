"""Review instructions are Markdown written by an endpoint's managers and read by reviewers:
rendered with CommonMark, raw HTML off (shown as text, never run) and links limited to what
markdown-it's own check lets through (no ``javascript:`` or ``data:`` URLs)."""

from __future__ import annotations

from markdown_it import MarkdownIt
from markupsafe import Markup

_RENDERER = MarkdownIt("commonmark", {"html": False, "linkify": False, "typographer": False}).enable("table")


def render_markdown(text: str) -> Markup:
    return Markup(_RENDERER.render(text or ""))
