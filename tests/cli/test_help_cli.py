"""The first five minutes' small things: help with examples, --version, shell completion."""

from __future__ import annotations

import io
import subprocess
import sys

from udpkit.cli import main


def run_cli(*argv: str) -> tuple[str, str, int]:
    out, err = io.StringIO(), io.StringIO()
    status = main(list(argv), stdout=out, stderr=err)
    return out.getvalue(), err.getvalue(), status


def test_help_version_and_completion() -> None:
    out, _err, status = run_cli("--version")
    assert status == 0 and out.startswith("udpkit ")
    for command in ("tour", "probe", "listen", "nc", "ss", "socat"):
        shown = subprocess.run([sys.executable, "-m", "udpkit", command, "--help" if command != "nc" else "-h"],
                               capture_output=True, text=True, timeout=30)
        assert shown.returncode == 0 and "examples:" in shown.stdout, command
    out, _err, status = run_cli("completion", "bash")
    assert status == 0 and "complete -o default -F _udpkit udpkit" in out and "tour" in out
    bash = subprocess.run(["bash", "-c", out + '\nCOMP_WORDS=(udpkit pro); COMP_CWORD=1; _udpkit; echo "${COMPREPLY[@]}"'],
                          capture_output=True, text=True, timeout=10)
    assert bash.stdout.strip() == "probe"
    out, _err, status = run_cli("completion", "zsh")
    assert status == 0 and "compdef _udpkit udpkit" in out
    _out, err, status = run_cli("completion", "fish")
    assert status == 2 and err.count("\n") == 1
