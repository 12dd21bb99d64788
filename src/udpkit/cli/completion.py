"""``udpkit completion bash|zsh``: a completion script for the shell (``source <(udpkit completion bash)``)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TextIO

from udpkit.errors import UsageError

__all__ = ["run"]

FLAGS = {
    "ss": "-4 -6 -u -l -a -n -p -e -m -H -O -f -A -F -o -i --cgroup --json --backend -h --help",
    "listen": "-4 -6 --respond --dual-stack --ipv6only --reuseaddr --reuseport --bind-device --rcvbuf --out "
              "--format --fork --idle-timeout --max-peers --allow --relay --user --workers --count --duration "
              "--stratum --refid --leap --root-delay --root-dispersion --sync-state --rate-limit --zone --origin -h --help",
    "socat": "-v -T -t -h UDP4-LISTEN: UDP6-LISTEN: UDP-RECVFROM: UDP4: UDP6: STDIO /dev/null",
    "nc": "-4 -6 -u -v -z -n -w -s -p -l -d -q -h",
    "probe": "-p -4 -6 --timeout --retries --rate --service --query --payload --payload-hex --payload-file "
             "--json --jsonl --open -h --help",
    "tour": "--port --no-color --json --step -h --help",
    "completion": "bash zsh",
}

BASH = """\
# bash completion for udpkit: source <(udpkit completion bash)
_udpkit() {{
    local cur=${{COMP_WORDS[COMP_CWORD]}}
    if [ "$COMP_CWORD" -eq 1 ]; then
        COMPREPLY=($(compgen -W "{commands} --help --version" -- "$cur"))
        return
    fi
    case ${{COMP_WORDS[1]}} in
{cases}
    esac
}}
complete -o default -F _udpkit udpkit
"""

ZSH = """\
#compdef udpkit
# zsh completion for udpkit: source <(udpkit completion zsh)
_udpkit() {{
    if (( CURRENT == 2 )); then
        compadd -- {commands} --help --version
        return
    fi
    case $words[2] in
{cases}
    esac
    _files
}}
compdef _udpkit udpkit
"""


def run(argv: Sequence[str], out: TextIO, err: TextIO) -> int:
    if list(argv) in (["-h"], ["--help"]):
        out.write("usage: udpkit completion bash|zsh\n\nexamples:\n  source <(udpkit completion bash)\n"
                  "  udpkit completion zsh > ~/.zfunc/_udpkit\n")
        return 0
    if len(argv) != 1 or argv[0] not in ("bash", "zsh"):
        raise UsageError("expected one shell: bash or zsh")
    from udpkit.cli import COMMANDS

    commands = " ".join(COMMANDS)
    if argv[0] == "bash":
        cases = "\n".join(f'        {name}) COMPREPLY=($(compgen -W "{flags}" -- "$cur")) ;;'
                          for name, flags in FLAGS.items())
        out.write(BASH.format(commands=commands, cases=cases))
    else:
        cases = "\n".join(f"        {name}) compadd -- {flags} ;;" for name, flags in FLAGS.items())
        out.write(ZSH.format(commands=commands, cases=cases))
    return 0
