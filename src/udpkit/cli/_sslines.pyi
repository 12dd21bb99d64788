# The optional C extension's interface (src/udpkit/cli/_sslines.c), for type checkers.
def lines(
    segments: tuple[str, ...], columns: tuple[list[object], ...], widths: tuple[int, ...], rights: tuple[bool, ...],
    start: int, stop: int, /,
) -> str | None: ...
