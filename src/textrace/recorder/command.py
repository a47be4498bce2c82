"""The command being recorded: forked at once, run only once the events are enabled, so
it is recorded whole."""

from __future__ import annotations

import os
import sys


def start_command(command: list[str]) -> tuple[int, int] | None:
    """Fork `command`, held until a byte is written to the returned pipe end; (pid, that
    end), or None with no command."""
    if not command:
        return None
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # child: wait until the events are enabled, then exec
        os.close(w)
        os.read(r, 1)
        try:
            os.execvp(command[0], command)
        except OSError as e:
            print(f"textrace: cannot run {command[0]}: {e.strerror}", file=sys.stderr)
            os._exit(127)
    os.close(r)
    return pid, w
