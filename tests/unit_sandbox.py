"""Run a command under the seccomp rules nightear.service asks of systemd, as systemd 252 builds
them: `unit_sandbox.py UNIT PROGRAM ARGS...` (with the system python, which has libseccomp's
bindings: apt-get install python3-seccomp).

From the unit it takes `SystemCallFilter=` (the allow list, minus the `~` lines; the groups
expanded by `systemd-analyze syscall-filter`, the same tables systemd uses), `SystemCallErrorNumber=`,
`RestrictAddressFamilies=` (socket() of another family fails) and `MemoryDenyWriteExecute=`
(no mapping both writable and executable, no mprotect() to executable, no executable shared
memory: systemd's own rules). Then it executes PROGRAM, which inherits the filter.
"""

from __future__ import annotations

import errno
import os
import socket
import subprocess
import sys
from pathlib import Path

import seccomp  # type: ignore[import-not-found]

PROT_WRITE, PROT_EXEC, SHM_EXEC = 0x2, 0x4, 0o100000


def directives(unit: Path) -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    for line in unit.read_text().splitlines():
        if "=" in line and not line.startswith(("#", "[")):
            key, value = line.split("=", 1)
            found.setdefault(key.strip(), []).append(value.strip())
    return found


def syscall_groups() -> dict[str, list[str]]:
    out = subprocess.run(["systemd-analyze", "syscall-filter"], capture_output=True, text=True,
                         check=True).stdout
    groups: dict[str, list[str]] = {}
    name = ""
    for line in out.splitlines():
        if line.startswith("@"):
            name = line.split()[0]
            groups[name] = []
        elif name and line.strip() and not line.lstrip().startswith("#"):
            groups[name].append(line.strip())
    return groups


def expand(groups: dict[str, list[str]], entries: list[str]) -> set[str]:
    names: set[str] = set()
    for entry in entries:
        names |= expand(groups, groups.get(entry, [])) if entry.startswith("@") else {entry}
    return names


def allowed_syscalls(unit: dict[str, list[str]]) -> set[str]:
    groups = syscall_groups()
    allow: set[str] = set()
    deny: set[str] = set()
    for value in unit.get("SystemCallFilter", []):
        if value.startswith("~"):
            deny |= expand(groups, value[1:].split())
        else:
            allow |= expand(groups, value.split())
    return allow - deny


def guards(unit: dict[str, list[str]]) -> dict[str, list[tuple[int, int, int]]]:
    """Syscalls allowed only when (argument & mask) == value, for one of the listed triples."""
    rules: dict[str, list[tuple[int, int, int]]] = {}
    if unit.get("MemoryDenyWriteExecute", ["no"])[-1] == "yes":
        wx = PROT_WRITE | PROT_EXEC
        rules["mmap"] = [(2, wx, 0), (2, wx, PROT_WRITE), (2, wx, PROT_EXEC)]
        rules["mprotect"] = rules["pkey_mprotect"] = [(2, PROT_EXEC, 0)]
        rules["shmat"] = [(2, SHM_EXEC, 0)]
    families = " ".join(unit.get("RestrictAddressFamilies", [])).split()
    if families:
        rules["socket"] = [(0, 0xFFFFFFFF, int(getattr(socket, name))) for name in families]
    return rules


def main() -> None:
    unit = directives(Path(sys.argv[1]))
    error = getattr(errno, unit.get("SystemCallErrorNumber", ["EPERM"])[-1])
    rules = seccomp.SyscallFilter(defaction=seccomp.ERRNO(error))
    guarded = guards(unit)
    for name in sorted(allowed_syscalls(unit)):
        try:
            if name in guarded:
                for arg, mask, value in guarded[name]:
                    rules.add_rule(seccomp.ALLOW, name, seccomp.Arg(arg, seccomp.MASKED_EQ, mask, value))
            else:
                rules.add_rule(seccomp.ALLOW, name)
        except (RuntimeError, ValueError, OSError):
            pass  # not a system call on this architecture
    rules.load()
    os.execv(sys.argv[2], sys.argv[2:])


if __name__ == "__main__":
    main()
