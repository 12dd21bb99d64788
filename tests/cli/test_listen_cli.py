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


ZONE = "tests/data/example.zone"


@pytest.mark.parametrize(
    "argv, message",
    [
        (["listen", "9", "--rcvbuf", "99999999999999999999"], "positive whole number up to"),
        (["listen", "9", "--rcvbuf", "2147483648"], "--rcvbuf must be from 1 to 2147483647 bytes"),
        (["listen", "9", "--duration", "1e400"], "expected a number"),
        (["listen", "9", "--duration", "nan"], "expected a number"),
        (["listen", "9", "--respond", "ntp", "--root-delay", "nan"], "expected a number"),
        (["listen", "9", "--respond", "ntp", "--root-dispersion", "inf"], "expected a number"),
        (["listen", "9", "--respond", "ntp", "--root-delay", "70000"], "root delay"),
        (["listen", "9", "--respond", "ntp", "--stratum", "99"], "stratum"),
        (["listen", "9", "--respond", "dns", "--zone", ZONE, "--origin", "a..b"], "not a domain name"),
        (["listen", "9", "--respond", "dns", "--zone", "/bin/ls"], "not UTF-8"),
        (["listen", "9", "--respond", "dns", "--zone", "/dev/zero"], "not a regular file"),
        (["listen", "9", "--respond", "dns", "--zone", "/nonexistent.zone"], "No such file"),
        (["listen", "9", "--respond", "echo", "--rate-limit=-1"], "expected a number"),
        (["listen", "9", "--rate-limit", "5"], "discard never answers"),
        (["listen", "9", "--user", ""], "empty one would stay root"),
        (["listen", "9", "--user", "no-such-user-udpkit"], "no such user"),
        (["listen", "9", "--fork", "--max-peers", "2147483648"], "open-files limit"),
        (["listen", "9", "--workers", "65"], "at most 64"),
        (["listen", "9", "--respond", "echo", "--busy-poll", "1001"], "--busy-poll must be from 0 to 1000"),
        (["listen", "9", "--respond", "echo", "--busy-poll", "1.5"], "expected a whole number"),
        (["listen", "9", "--respond", "echo", "--busy-poll", "99999999999999999999"], "expected a whole number"),
        (["listen", "9", "--busy-poll", "50"], "discard never does"),
        (["socat", "-T", "nan", "UDP4-LISTEN:9", "/dev/null"], "positive number"),
        (["socat", "UDP4-LISTEN:9,rcvbuf=99999999999", "/dev/null"], "--rcvbuf"),
        (["socat", "UDP4-LISTEN:9,rcvbuf=2147483648", "/dev/null"], "--rcvbuf"),
    ],
)
def test_bad_option_values_are_one_line_and_exit_2(argv: list[str], message: str) -> None:
    out, err = io.StringIO(), io.StringIO()
    assert main(argv, stdout=out, stderr=err) == 2, err.getvalue()
    assert err.getvalue().count("\n") == 1 and message in err.getvalue(), err.getvalue()
    assert "Traceback" not in err.getvalue()


def test_a_fifo_as_a_zone_is_refused_at_once(tmp_path: object) -> None:
    import os
    from pathlib import Path

    fifo = Path(str(tmp_path)) / "zone.fifo"
    os.mkfifo(fifo)
    err = io.StringIO()
    assert main(["listen", "9", "--respond", "dns", "--zone", str(fifo)], stdout=io.StringIO(), stderr=err) == 2
    assert "not a regular file" in err.getvalue()
