"""Text from events made safe for where it is shown, without changing what is stored.

Subscription, user, deployment, product and api names come from requests (a deployment name from
the client's URL), so a report must not let them act:

* ``spreadsheet_text`` — in a spreadsheet (report CSV and XLSX, FOCUS CSV), a cell that begins with
  ``=``, ``+``, ``-``, ``@``, tab or carriage return (also after leading spaces) is a formula to
  Excel, LibreOffice and Google Sheets. Following OWASP's CSV-injection guidance it gets a leading
  single quote, which spreadsheets show as text. Only text is touched: numbers and money are not
  strings here. In XLSX (``neutralise_sheet_cells``) such a cell is a string cell with Excel's quote
  prefix, so the sheet shows the stored value and never a formula. JSON and Parquet are data formats
  read by programs, and HTML escapes markup itself, so their values stay exactly as stored.
* ``terminal_text`` — on a terminal, ESC, BEL and other C0/C1 control characters (and DEL) can
  move the cursor, rewrite earlier lines or set the window title, and the Unicode bidirectional
  controls (U+202A–U+202E, U+2066–U+2069, U+200E/F) can show the rest of a line reordered: each is
  shown as a visible escape (``\\x1b``, ``\\u009b``, ``\\u202e``) instead.
* ``chat_text`` — in a Slack message (and Slack-compatible receivers), ``<!channel>``, ``<@U123>`` and
  ``<https://x|label>`` are mentions and links: ``&``, ``<`` and ``>`` are escaped as Slack documents
  ("Escaping text"), so a business unit called ``<!channel>`` is shown, never notifies anyone.
* ``markdown_literal`` — where Teams reads Markdown (Adaptive Card facts), markup characters are
  backslash-escaped so ``[Approve](https://…)`` stays text.
* Cost-export names (resource ids, meter names in ``reconcile`` and ``bill import``) follow the same
  rules as names from events: ``spreadsheet_text`` in CSV, ``sheet_value`` and
  ``neutralise_sheet_cells`` in XLSX, ``terminal_line`` on a terminal.
"""

from __future__ import annotations

import re
from typing import Any

FORMULA_TRIGGERS = ("=", "+", "-", "@", "\t", "\r")
# Leading characters spreadsheets skip before looking for a formula trigger.
_LEADING = " \t\r\n\u00a0"
# C0 and C1 controls and DEL; and the bidirectional overrides, embeddings and isolates, which make a
# terminal show the rest of a line in another order (a name that reverses the amounts after it).
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f\u200e\u200f\u202a-\u202e\u2066-\u2069]")


def formula_like(value: Any) -> bool:
    """Whether ``value`` is text that a spreadsheet would read as a formula."""
    if not isinstance(value, str) or not value:
        return False
    return value[0] in FORMULA_TRIGGERS or value.lstrip(_LEADING)[:1] in FORMULA_TRIGGERS


def spreadsheet_text(value: Any) -> Any:
    """``value`` prefixed with ``'`` when it is text a spreadsheet would read as a formula (for CSV);
    any other value (numbers, ``None``, harmless text) is returned unchanged."""
    return "'" + value if formula_like(value) else value


def sheet_value(value: Any) -> Any:
    """A value for an XLSX cell: text with its control characters (which XLSX cannot hold, and
    openpyxl refuses) shown as visible escapes; anything else unchanged."""
    return terminal_text(value) if isinstance(value, str) else value


def neutralise_sheet_cells(book: Any) -> None:
    """Every formula-like text cell of an openpyxl workbook becomes a string cell with Excel's
    quote prefix (the XLSX form of a leading ``'``: shown as typed, kept as text when edited). The
    reports write no formulas, so no cell of theirs may be one, whichever code wrote it."""
    for sheet in book.worksheets:
        for row in sheet.iter_rows():
            for cell in row:
                if cell.data_type == "f" or formula_like(cell.value):
                    cell.data_type = "s"
                    cell.quotePrefix = True


def terminal_text(value: str) -> str:
    """``value`` with every control character but tab and newline shown as a visible escape."""
    if value.isprintable():
        return value
    return _CONTROL.sub(lambda m: m.group().encode("unicode_escape").decode("ascii"), value)


def terminal_line(value: str) -> str:
    """One line for a terminal: control characters, tabs and line breaks all shown escaped."""
    return terminal_text(value).replace("\t", "\\t").replace("\n", "\\n")


_MARKDOWN = re.compile(r"([\\`*_{}\[\]<>#|~])")
_LIST_START = re.compile(r"^([-+]|\d{1,9}(?=[.)](\s|$)))")  # a list item: "- x", "+ x", "1. x", "2) x"


def chat_text(value: str) -> str:
    """Text for a Slack(-compatible) message: one line per line of ``value``, control characters
    escaped, and ``&``, ``<``, ``>`` as entities so no mention, channel ping or link can be formed."""
    return terminal_text(value).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def markdown_literal(value: object) -> str:
    """``value`` as text Markdown shows as it is: one line, markup characters backslash-escaped,
    no list marker at its start, no ``{{DATE(…)}}`` substitution."""
    line = _MARKDOWN.sub(r"\\\1", " ".join(str(value).split()))
    start = _LIST_START.match(line)
    if start is None:
        return line
    return "\\" + line if start.group(1) in "-+" else line[:start.end()] + "\\" + line[start.end():]
