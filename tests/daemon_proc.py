"""The daemon as the tests run it: a real `textrace daemon` process on a store."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time


class DaemonProc:
    def __init__(self, store: str, *extra: str, wait_ready: bool = True):
        self.store = store
        self.log = open(os.path.join(os.path.dirname(store) or ".",
                                     f"daemon-{os.path.basename(store)}.log"), "a+")
        self.proc = subprocess.Popen([sys.executable, "-m", "textrace", "daemon", "--store",
                                      store, *extra], stderr=subprocess.PIPE, text=True)
        self.lines: list[str] = []
        if wait_ready:
            self.wait_ready()

    def wait_ready(self, timeout: float = 60) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            line = self.proc.stderr.readline()
            if not line:
                raise AssertionError(f"daemon exited {self.proc.wait()}: {self.lines}")
            self.lines.append(line)
            if "ready" in line:
                return line
        raise AssertionError(f"daemon not ready in {timeout} s: {self.lines}")

    def settle(self, seconds: float = 1.5) -> None:
        """Long enough for a round (0.5 s) and its commit to pass."""
        time.sleep(seconds)

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30) -> tuple[int, str]:
        self.proc.send_signal(sig)
        try:
            _out, err = self.proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            raise
        self.lines.append(err)
        return self.proc.returncode, "".join(self.lines)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
