"""Put a running stack's API and factor worker into CPU cgroups of their own, as systemd
units and containers do, so that `make bench` can show what the factor worker's CPU
weight in deploy/ and docker-compose.yml does to the API while it factors.

Niceness only orders processes within one scheduling group: a systemd service or a
container is a cgroup of its own, and cgroups share the CPU by their weights alone.
Needs root and the cgroup `cpu` controller (cgroup v2, or v1's `cpu` hierarchy).
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

ROOTS = (Path("/sys/fs/cgroup"), Path("/sys/fs/cgroup/cpu"))  # v2, then v1's cpu
NAMES = {"api": "backscope-bench-api", "factors": "backscope-bench-factors"}
# The factor worker's weight in each arrangement: the default (what an unconfigured
# systemd unit or container gets), systemd's CPUWeight=idle (cgroup v2's cpu.idle; on
# v1 systemd sets the lowest weight instead) and compose's cpu_shares: 2.
WEIGHTS = {
    "default": {"cpu.weight": "100", "cpu.shares": "1024", "cpu.idle": "0"},
    "idle": {"cpu.weight": "100", "cpu.shares": "2", "cpu.idle": "1"},
    "shares 2": {"cpu.weight": "1", "cpu.shares": "2", "cpu.idle": "0"},
}


def _root() -> Path | None:
    for root in ROOTS:
        if (root / "cgroup.procs").exists() and (
            (root / "cgroup.controllers").exists() or (root / "cpu.shares").exists()
        ):
            return root
    return None


def unavailable() -> str | None:
    """Why the cgroup rows cannot be measured here, or None when they can."""
    if os.geteuid() != 0:
        return "needs root"
    root = _root()
    if root is None:
        return "no cgroup cpu controller"
    controllers = root / "cgroup.controllers"
    if controllers.exists() and "cpu" not in controllers.read_text().split():
        return "no cgroup cpu controller"
    return None


def stack_processes() -> dict[str, list[int]]:
    """This machine's API (gunicorn) and factor worker (celery -Q factors) processes."""
    found: dict[str, list[int]] = {"api": [], "factors": []}
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ")
        except OSError:
            continue
        if b"gunicorn" in cmdline and b"api.gunicorn_conf" in cmdline:
            found["api"].append(int(proc.name))
        elif b"celery" in cmdline and b"-Q factors" in cmdline:
            found["factors"].append(int(proc.name))
    return found


class SeparateGroups:
    """While entered, the API and the factor worker each run in a cgroup of their own;
    on exit every process in them goes back to where it was and the groups are removed.
    Children started meanwhile (gp) are in their parent's group and go back with it."""

    def __init__(self) -> None:
        root = _root()
        assert root is not None, "check unavailable() first"
        self.root = root
        self.v2 = (root / "cgroup.controllers").exists()
        self.groups = {role: root / name for role, name in NAMES.items()}
        self.homes: dict[int, Path] = {}  # where each moved process was
        self.role_home: dict[str, Path] = {}  # where a child started meanwhile goes

    def __enter__(self) -> SeparateGroups:
        processes = stack_processes()
        if not processes["api"] or not processes["factors"]:
            raise SystemExit("no API or factor worker processes found: is the stack running?")
        if self.v2:
            (self.root / "cgroup.subtree_control").write_text("+cpu")
        try:
            for role, group in self.groups.items():
                group.mkdir(exist_ok=True)
                for pid in processes[role]:
                    self.homes[pid] = self._group_of(pid)
                    self.role_home.setdefault(role, self.homes[pid])
                    self._move(pid, group)
        except BaseException:
            self.__exit__()  # whatever was moved goes back
            raise
        return self

    def weigh_factors(self, arrangement: str) -> None:
        """Give the factor worker's group the weight of `arrangement` (WEIGHTS)."""
        group = self.groups["factors"]
        unused = "cpu.shares" if self.v2 else "cpu.weight"
        for name, value in WEIGHTS[arrangement].items():
            if name != unused and (group / name).exists():  # cpu.idle: Linux 5.15 and later
                (group / name).write_text(value)

    def __exit__(self, *exc: object) -> None:
        for role, group in self.groups.items():
            if not group.exists():
                continue
            for pid in map(int, (group / "cgroup.procs").read_text().split()):
                self._move(pid, self.homes.get(pid, self.role_home.get(role, self.root)))
            group.rmdir()

    def _group_of(self, pid: int) -> Path:
        for line in Path(f"/proc/{pid}/cgroup").read_text().splitlines():
            _, controllers, path = line.split(":", 2)
            if (self.v2 and controllers == "") or (not self.v2 and "cpu" in controllers.split(",")):
                return self.root / path.lstrip("/")
        return self.root

    @staticmethod
    def _move(pid: int, group: Path) -> None:
        with contextlib.suppress(ProcessLookupError):  # it exited meanwhile
            (group / "cgroup.procs").write_text(str(pid))
