"""python3 -m testbed [--kernel 5.10|6.1|6.12|7.2] [--shared DIR] [--timeout S] -- CMD...

Runs CMD in a fresh guest, prints its stdout and stderr, and exits with its exit code.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from . import DEFAULT_SERIES, KERNELS, TestbedError, prepare, run


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python3 -m testbed", description=__doc__.splitlines()[2])
    p.add_argument("--prepare", action="store_true",
                   help="fetch the kernel and build the initramfs, then exit")
    p.add_argument("--refresh", action="store_true",
                   help="with --prepare: ask apt for a newer kernel than the cached one")
    p.add_argument("--kernel", default=DEFAULT_SERIES, choices=[*KERNELS, "all"],
                   help=f"Debian's stock kernel of this series (default {DEFAULT_SERIES}); "
                        "'all' with --prepare")
    p.add_argument("--perf", action="append", default=[],
                   help="with --prepare: also make the root of perf 6.12, 7.2 or 'all' "
                        "(test oracles; repeatable)")
    p.add_argument("--shared", type=Path, help="host directory the guest may write (same path)")
    p.add_argument("--cwd", help="working directory in the guest (default: the shared directory)")
    p.add_argument("--timeout", type=float, default=180, help="seconds (default 180)")
    p.add_argument("--console", action="store_true", help="print the serial console too")
    p.add_argument("command", nargs=argparse.REMAINDER)
    args = p.parse_args(argv)
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    try:
        if args.prepare:
            for name in KERNELS if args.kernel == "all" else [args.kernel]:
                k = prepare(name, refresh=args.refresh)
                print(f"testbed: kernel {k.release} at {k.root}")
            from . import perfroot
            wanted = [v for w in args.perf
                      for v in ([v for v in perfroot.PERFS if perfroot.PERFS[v]]
                                if w == "all" else [w])]
            for version in wanted:
                root = perfroot.perf_root(version)
                print(f"testbed: perf {version} at {root}")
            return 0
        if not command:
            p.error("no command given (python3 -m testbed -- CMD...)")
        if args.kernel == "all":
            p.error("--kernel all is for --prepare; a command runs on one kernel")
        r = run(command, shared=args.shared, cwd=args.cwd, timeout=args.timeout,
                kernel=args.kernel)
    except TestbedError as e:
        print(f"testbed: {e}", file=sys.stderr)
        return 125
    if args.console:
        sys.stderr.write(r.console)
    sys.stdout.write(r.stdout)
    sys.stderr.write(r.stderr)
    print(f"testbed: {r.kernel_release}, exit {r.returncode}, {r.seconds:.1f} s, "
          f"shared {r.shared}", file=sys.stderr)
    return r.returncode


if __name__ == "__main__":
    sys.exit(main())
