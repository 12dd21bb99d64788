"""GNU-style option parsing for the ss- and nc-compatible commands: ``-4uln``, ``-fhelp``, ``--family=inet``.

Those commands must accept exactly their originals' syntax (grouped short flags, options anywhere
among the operands), which ``argparse`` does not reproduce, and start fast: the stdlib ``getopt``
pulls in ``gettext`` and ``re``. Errors are :class:`~udpkit.errors.UsageError` with one-line messages.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from udpkit.errors import UsageError

__all__ = ["getopt"]


def getopt(
    argv: Sequence[str], short: str, long: Mapping[str, bool]
) -> tuple[list[tuple[str, str | None]], list[str]]:
    """Split ``argv`` into ``(options, operands)``.

    ``short`` is a getopt string (``"f:"`` means ``-f`` takes a value); ``long`` maps a long name to
    whether it takes a value. Options are returned as (``"-f"`` or ``"--family"``, value or ``None``);
    ``--`` ends the options. Long names may be abbreviated when unambiguous, as with getopt_long.
    """
    takes_value = {ch: short[i + 1 : i + 2] == ":" for i, ch in enumerate(short) if ch != ":"}
    options: list[tuple[str, str | None]] = []
    operands: list[str] = []
    i = 0
    while i < len(argv):
        arg = argv[i]
        i += 1
        if arg == "--":
            operands.extend(argv[i:])
            break
        if arg.startswith("--"):
            name, eq, value = arg[2:].partition("=")
            full = _long_name(name, long)
            if long[full]:
                if not eq:
                    if i >= len(argv):
                        raise UsageError(f"option --{full} needs a value")
                    value = argv[i]
                    i += 1
                options.append((f"--{full}", value))
            elif eq:
                raise UsageError(f"option --{full} does not take a value")
            else:
                options.append((f"--{full}", None))
        elif arg.startswith("-") and len(arg) > 1:
            j = 1
            while j < len(arg):
                ch = arg[j]
                j += 1
                if ch not in takes_value:
                    raise UsageError(f"unknown option -{ch}")
                if takes_value[ch]:
                    if j < len(arg):
                        value = arg[j:]
                    elif i < len(argv):
                        value = argv[i]
                        i += 1
                    else:
                        raise UsageError(f"option -{ch} needs a value")
                    options.append((f"-{ch}", value))
                    break
                options.append((f"-{ch}", None))
        else:
            operands.append(arg)
    return options, operands


def _long_name(name: str, long: Mapping[str, bool]) -> str:
    if name in long:
        return name
    matches = [full for full in long if full.startswith(name)] if name else []
    if len(matches) == 1:
        return matches[0]
    if matches:
        raise UsageError(f"option --{name} is ambiguous ({', '.join('--' + m for m in sorted(matches))})")
    raise UsageError(f"unknown option --{name}")
