"""argparse for the native commands, with udpkit's error contract: one line, exit status 2."""

from __future__ import annotations

import argparse
from typing import NoReturn

from udpkit.errors import UsageError

__all__ = ["Parser"]


class Parser(argparse.ArgumentParser):
    """An ArgumentParser whose errors are UsageErrors (one line on stderr, exit 2, via ``cli.main``)."""

    def __init__(self, prog: str, description: str, epilog: str) -> None:
        super().__init__(prog=prog, description=description, epilog=epilog,
                         formatter_class=argparse.RawDescriptionHelpFormatter, allow_abbrev=False)

    def error(self, message: str) -> NoReturn:
        raise UsageError(message)
