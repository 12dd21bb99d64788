"""ss's column layout (iproute2 ``misc/ss.c``: ``render_calc_width`` and ``render``), reproduced.

Every field of every line is measured first; a column is as wide as its longest field plus its left
delimiter. Right-aligned columns (the addresses) are padded on the left, the rest on the right, so
``Local Address:Port`` reads ``   127.0.0.1:53``. On a terminal, spare width is shared out between
the columns of each screen line; otherwise (a pipe, a file) output stays compact.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from itertools import chain

TYPE_CHECKING = False  # typing is not imported at run time: see udpkit._typing
if TYPE_CHECKING:
    from typing import NamedTuple
else:
    from udpkit._typing import NamedTuple

__all__ = ["BLOCK", "Column", "NETID_COLUMN", "SS_COLUMNS", "render_blocks"]

_lines: Callable[..., str | None] | None
try:  # the lines laid out in C, where the optional extension was built (see _sslines.c)
    from udpkit.cli._sslines import lines as _lines
except ImportError:  # pragma: no cover - a build without a C compiler
    _lines = None


class Column(NamedTuple):
    header: str
    delimiter: str
    right: bool


#: ss's first column, shown only when more than one protocol's table is selected (``-tu``, ``-f inet``).
NETID_COLUMN = Column("Netid", "", False)

# state, Recv-Q, Send-Q, local address, local port, peer address, peer port, process (ss's COL_* order
# after Netid; COL_EXT is always empty for inet sockets).
SS_COLUMNS = (
    Column("State", " ", False),
    Column("Recv-Q", " ", False),
    Column("Send-Q", " ", False),
    Column("Local Address:", " ", True),
    Column("Port", "", False),
    Column("Peer Address:", " ", True),
    Column("Port", "", False),
    Column("Process", "", False),
)


def _widths(columns: Sequence[Column], max_len: Sequence[int], screen: int | None) -> list[int]:
    widths = []
    first = True
    for col, length in zip(columns, max_len):
        width = length + len(col.delimiter) if (not first and length) else length
        if screen is not None:
            width = min(width, screen)
        if width:
            first = False
        widths.append(width)
    if screen is None:
        return widths
    # Second pass: break into screen lines and share the spare width out, right to left.
    line_len = line_cols = 0
    eol = -1
    i = 0
    while i < len(widths):
        if not widths[i]:
            i += 1
            continue
        line_cols += 1
        line_len += widths[i]
        last = not any(widths[i + 1 :])
        if not last and line_len < screen:
            i += 1
            continue
        if line_len != screen:
            if line_len > screen:
                line_len -= widths[i]
                i -= 1
                line_cols -= 1
            pad = screen - line_len
            spacing, rem = divmod(pad, line_cols) if line_cols else (0, 0)
            for j in range(i, eol, -1):
                if not widths[j]:
                    continue
                widths[j] += spacing
                if rem:
                    widths[j] += 1
                    rem -= 1
        eol = i
        line_len = line_cols = 0
        i += 1
    return widths


BLOCK = 4096  # lines per block: big enough to amortise, small enough that memory is reused


def render_blocks(
    columns: Sequence[Column],
    fields: Sequence[Sequence[object]],
    *,
    header: bool,
    screen: int | None,
    max_len: Sequence[int | None] | None = None,
    constant: Sequence[bool] | None = None,
) -> Iterator[str]:
    """Lay out ``fields`` as ss does, yielding blocks of lines.

    Fields are printed with ``%s``, so a column may hold numbers; ``max_len`` then must give its
    longest field (``None``: measure the strings). Blocks keep the peak memory of a 50,000-line
    table small: the page faults of one big string cost more than formatting it. ``constant``:
    the columns whose every field is the same (``-uln``'s State, Recv-Q and Send-Q, as a rule):
    each is written once, padded, into the line's format, and not formatted line by line.
    """
    known = max_len or [None] * len(columns)
    lengths = [
        max(m if m is not None else max(map(len, col), default=0), len(c.header) if header else 0)  # type: ignore[arg-type]
        for col, c, m in zip(fields, columns, known)
    ]
    widths = _widths(columns, lengths, screen)
    # Each field: ss prints the delimiter (after the first column), then pads the field to the width.
    parts = []
    for i, (col, width) in enumerate(zip(columns, widths)):
        delim = col.delimiter.replace("%", "%%") if i else ""
        inner = max(width - (len(col.delimiter) if i else 0), 0)
        parts.append(f"{delim}%{'' if col.right else '-'}{inner}s" if inner else f"{delim}%s")
    fmt = "".join(parts) + "\n"
    if header:
        yield fmt % tuple(c.header for c in columns)
    fixed = [bool(c) and len(f) > 0 for c, f in zip(constant or [False] * len(columns), fields)]
    if fixed and all(fixed):
        fixed[-1] = False  # one column is kept line by line: it is what says how many lines there are
    # The text between variable fields: delimiters, and each constant column's padded text once.
    segments: list[str] = []
    pads: list[int] = []
    right: list[bool] = []
    between = ""
    for i, (col, part) in enumerate(zip(columns, parts)):
        if fixed[i]:
            between += part % fields[i][0]
        else:
            segments.append(between + (col.delimiter if i else ""))
            between = ""
            pads.append(max(widths[i] - (len(col.delimiter) if i else 0), 0))
            right.append(col.right)
    segments.append(between + "\n")
    if any(fixed):  # each constant column's padded text becomes part of the format itself
        fmt = "".join((part % fields[i][0]).replace("%", "%%") if fixed[i] else part
                      for i, part in enumerate(parts)) + "\n"
    variable = [f if type(f) is list else list(f) for f, constant_column in zip(fields, fixed) if not constant_column]
    if not variable:
        return
    rows = min(map(len, variable))
    c_args = (tuple(segments), tuple(variable), tuple(pads), tuple(right))
    block_fmt = fmt * BLOCK
    for start in range(0, rows, BLOCK):
        stop = min(start + BLOCK, rows)
        text = _lines(*c_args, start, stop) if _lines is not None else None
        if text is None:
            # One ``%`` over the block's lines' format repeated: the per-line call and argument tuple
            # of ``fmt % row`` cost a fifth of the layout at 50,000 lines.
            values = tuple(chain.from_iterable(zip(*(f[start:stop] for f in variable))))
            text = (block_fmt if stop - start == BLOCK else fmt * (stop - start)) % values
        yield text
