"""The `textrace` command: one subcommand per view.  Parses arguments and prints; the work
is in the views and the library."""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys

from .errors import TextraceError


def _add_input(p: argparse.ArgumentParser) -> None:
    p.add_argument("-i", "--input", default="perf.data",
                   help="perf.data file to read ('-' for a pipe-mode stream on stdin)")
    p.add_argument("--salvage", action="store_true",
                   help="read a damaged or unfinished file up to the damage")


def _open(args):
    from .perf.reader import PerfData
    return PerfData.open(args.input, salvage=args.salvage)


def _warn_damage(data) -> None:
    for w in data.warnings:
        print(f"textrace: warning: {w}", file=sys.stderr)


def cmd_events(args) -> int:
    from .views.events import event_rows, format_row
    data = _open(args)
    out = sys.stdout
    rows = event_rows(data, order="file" if args.file_order else "time")
    if args.json:
        for row in rows:
            out.write(json.dumps(row, separators=(",", ":")) + "\n")
    else:
        for row in rows:
            out.write(format_row(row) + "\n")
    out.flush()
    _warn_damage(data)
    st = data.stats
    if st.lost or st.lost_samples:
        print(f"textrace: {st.lost} events and {st.lost_samples} samples were lost by the "
              f"kernel (LOST/LOST_SAMPLES records)", file=sys.stderr)
    return 0


def cmd_report(args) -> int:
    from .views.report import report_rows
    data = _open(args)
    rows = report_rows(data, sort=args.sort)
    if args.limit:
        rows = rows[:args.limit]
    if args.json:
        for row in rows:
            sys.stdout.write(json.dumps(row.to_dict(), separators=(",", ":")) + "\n")
    else:
        from rich.console import Console
        from rich.table import Table
        table = Table(box=None, pad_edge=False, show_edge=False)
        table.add_column("Overhead", justify="right")
        table.add_column("Samples", justify="right")
        table.add_column("Shared Object")
        table.add_column("Symbol")
        for row in rows:
            tag = "[.]" if row.kind in ("user", "unknown") and not row.dso.startswith("[k") \
                else "[k]"
            table.add_row(f"{row.percent:.2f}%", str(row.samples), row.dso,
                          f"{tag} {row.symbol}")
        Console(soft_wrap=True, markup=False, highlight=False).print(table)
    _warn_damage(data)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="textrace",
        description="Trace the Linux kernel's changing code: BPF programs, JIT images, "
                    "text pokes, perf.data.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("events", help="every record of a perf.data file, in time order")
    _add_input(p)
    p.add_argument("--json", action="store_true", help="one JSON object per line")
    p.add_argument("--file-order", action="store_true",
                   help="records in the order they are stored, not by time")
    p.set_defaults(func=cmd_events)

    p = sub.add_parser("report", help="samples attributed to symbols as of each sample's time")
    _add_input(p)
    p.add_argument("--sort", choices=("symbol", "program", "dso"), default="symbol")
    p.add_argument("--json", action="store_true", help="one JSON object per row")
    p.add_argument("--limit", type=int, default=0, help="show only the first N rows")
    p.set_defaults(func=cmd_report)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except TextraceError as e:
        print(f"textrace: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # `textrace events | head`: the reader went away; leave quietly as perf does.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 0


if __name__ == "__main__":
    sys.exit(main())
