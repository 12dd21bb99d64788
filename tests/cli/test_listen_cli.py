"""``udpkit listen`` usage errors: one line, exit 2."""

from __future__ import annotations

import io

import pytest

from udpkit.cli import main


@pytest.mark.parametrize(
    "argv, message",
    [
        (["listen", "127.0.0.1:99999"], "out of range"),
        (["listen", "not-an-address"], "bad address"),
        (["listen", "9", "--respond", "chargen"], "invalid choice"),
        (["listen", "9", "--format", "hex"], "--format needs --out"),
        (["listen", "9", "--count", "0"], "positive whole number"),
        (["listen", "9", "--duration", "0"], "positive number of seconds"),
        (["listen", "-4", "[::1]:9"], "is not an IPv4 address"),
        (["listen", "-4", "-6", "9"], "not allowed with argument"),
        (["listen", "--bogus"], "unrecognized arguments"),
    ],
)
def test_bad_listen_input_is_one_line_and_exit_2(argv: list[str], message: str) -> None:
    out, err = io.StringIO(), io.StringIO()
    assert main(argv, stdout=out, stderr=err) == 2
    assert err.getvalue().count("\n") == 1 and message in err.getvalue(), err.getvalue()


def test_listen_help_ends_with_examples() -> None:
    out = io.StringIO()
    with pytest.raises(SystemExit) as exit_info:
        main(["listen", "--help"], stdout=out)
    assert exit_info.value.code == 0
