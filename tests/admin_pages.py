"""Reading an admin changelist as its users see it: the rows' cells as text, by column."""

from __future__ import annotations

from html.parser import HTMLParser


class ResultTable(HTMLParser):
    """The cells' text of `<table id="result_list">`, row by row (a <div> or <br> inside a cell reads as a space,
    a <wbr> as nothing, as on screen)."""

    def __init__(self):
        super().__init__()
        self.rows: list[list[str]] = []
        self.inside = False
        self.cell: list[str] | None = None

    def handle_starttag(self, tag, attrs):
        if tag == "table" and ("id", "result_list") in attrs:
            self.inside = True
        elif self.inside and tag == "tr":
            self.rows.append([])
        elif self.inside and tag in ("td", "th"):
            self.cell = []
        elif self.cell is not None and tag in ("div", "br"):
            self.cell.append(" ")

    def handle_endtag(self, tag):
        if tag == "table":
            self.inside = False
        elif self.inside and tag in ("td", "th") and self.cell is not None:
            self.rows[-1].append(" ".join("".join(self.cell).split()))
            self.cell = None

    def handle_data(self, data):
        if self.cell is not None:
            self.cell.append(data)


def result_rows(response) -> list[dict[str, str]]:
    """The changelist's rows, each {column of `list_display` (with `action_checkbox`): its text}."""
    table = ResultTable()
    table.feed(response.content.decode())
    columns = list(response.context["cl"].list_display)
    return [dict(zip(columns, cells, strict=True)) for cells in table.rows[1:]]
