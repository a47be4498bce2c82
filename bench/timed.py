"""Run a command and append its wall seconds to a file: the workload's own time, inside
whatever recorder runs it.   python3 bench/timed.py OUT -- CMD [ARGS...]"""

import subprocess
import sys
import time

out, cmd = sys.argv[1], sys.argv[3:]
t0 = time.perf_counter()
rc = subprocess.run(cmd, stdout=subprocess.DEVNULL).returncode
with open(out, "a") as f:
    f.write(f"{time.perf_counter() - t0:.6f}\n")
sys.exit(rc)
