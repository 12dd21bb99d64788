"""Socket owners from a /proc tree: every descriptor of every process, in ss's order, skipping the unreadable."""

from __future__ import annotations

import os
from pathlib import Path

from udpkit.inventory._owners import comm_from_stat, socket_owners
from udpkit.inventory._records import Process


def fake_proc(root: Path, pid: int, comm: str, fds: dict[int, str]) -> None:
    (root / str(pid) / "fd").mkdir(parents=True)
    (root / str(pid) / "stat").write_text(f"{pid} ({comm}) S 1 1 1 0 -1\n")
    for fd, target in fds.items():
        os.symlink(target, root / str(pid) / "fd" / str(fd))


def test_comm_is_read_up_to_the_first_parenthesis_like_ss() -> None:
    assert comm_from_stat("1234 (socat) S 1") == "socat"
    assert comm_from_stat("1 (a) b) S 1") == "a"
    assert comm_from_stat("garbage") == ""


def test_owners_map_inodes_to_every_holder(tmp_path: Path) -> None:
    fake_proc(tmp_path, 100, "socat", {3: "socket:[555]", 4: "/dev/null", 5: "socket:[777]"})
    fake_proc(tmp_path, 200, "socat", {3: "socket:[555]"})  # a forked child shares the socket
    fake_proc(tmp_path, 300, "bash", {0: "/dev/pts/0"})
    (tmp_path / "self").mkdir()
    (tmp_path / "400").mkdir()  # a process whose fd directory we may not read (or that exited)
    owners = socket_owners(str(tmp_path))
    # ss inserts at the head of a hash chain, so the last holder found is listed first.
    assert owners[555] == (Process("socat", 200, 3), Process("socat", 100, 3))
    assert owners[777] == (Process("socat", 100, 5),)
    assert set(owners) == {555, 777}


def test_an_empty_proc_has_no_owners(tmp_path: Path) -> None:
    assert socket_owners(str(tmp_path)) == {}
