"""Read a table back out of a rendered report (the HTML as a browser gets it), to hold what other
outputs say against what the report says."""

from __future__ import annotations

import html
from html.parser import HTMLParser


class _Tables(HTMLParser):
    def __init__(self, cls: str) -> None:
        super().__init__(convert_charrefs=True)
        self.cls, self.depth, self.tables = cls, 0, []
        self.cell: list[str] | None = None
        self.row: list[str] | None = None

    def handle_starttag(self, tag, attrs):
        classes = (dict(attrs).get("class") or "").split()
        if tag == "table" and (self.depth or self.cls in classes):
            self.depth += 1
            if self.depth == 1:
                self.tables.append({"columns": [], "rows": []})
        elif self.depth == 1 and tag == "tr":
            self.row = []
        elif self.depth == 1 and tag in ("td", "th"):
            self.cell = []

    def handle_endtag(self, tag):
        if not self.depth:
            return
        if tag == "table":
            self.depth -= 1
        elif tag in ("td", "th") and self.cell is not None and self.row is not None:
            self.row.append("".join(self.cell))
            self.cell = None
        elif tag == "tr" and self.row is not None:
            table = self.tables[-1]
            if table["columns"]:
                table["rows"].append(self.row)
            else:
                table["columns"] = self.row
            self.row = None

    def handle_data(self, data):
        if self.cell is not None:
            self.cell.append(data)


def html_tables(page: str, cls: str) -> list[dict[str, list]]:
    """Every ``<table class="cls">`` of ``page``: its header cells and body rows, as text (entities
    decoded, whitespace as written)."""
    parser = _Tables(cls)
    parser.feed(page)
    return parser.tables


def squash(text: str) -> str:
    """Text with runs of whitespace (a line break in a cell included) as one space."""
    return " ".join(html.unescape(str(text)).split())
