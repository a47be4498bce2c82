"""`textrace report` against `perf report` on the same real recordings."""

from __future__ import annotations

import json
import re
import subprocess
import sys

import pytest

from oracle import run_perf

_ROW = re.compile(r"^\s+([\d.]+)%\s+(\S.*?)\s+\[([.k])\]\s+(.*?)\s*$")


def perf_report(path) -> dict[tuple[str, str], float]:
    out = run_perf("report", "--stdio", "--no-children", "-g", "none", "--sort", "dso,sym",
                   "-i", str(path))
    rows = {}
    for line in out.splitlines():
        m = _ROW.match(line)
        if m:
            pct, dso, _mode, sym = m.groups()
            rows[(dso, sym)] = float(pct)
    return rows


def textrace_report(path, *extra) -> list[dict]:
    r = subprocess.run([sys.executable, "-m", "textrace", "report", "-i", str(path), "--json",
                        *extra], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    return [json.loads(line) for line in r.stdout.splitlines()]


@pytest.mark.parametrize("name", ["callchain", "system-wide"])
def test_overheads_match_perf_report(corpus, name):
    path = corpus.path(name)
    theirs = perf_report(path)
    ours = {(r["dso"], r["symbol"]): r["percent"] for r in textrace_report(path)}
    assert abs(sum(ours.values()) - 100) < 0.5
    significant = {k: v for k, v in theirs.items() if v >= 1.0 and "[unknown]" not in k[1]
                   and not k[1].startswith("0x")}
    assert significant, theirs
    for key, pct in significant.items():
        assert key in ours, (key, sorted(ours, key=ours.get, reverse=True)[:10])
        assert ours[key] == pytest.approx(pct, abs=0.011), key


def test_sort_by_dso_sums_symbols(corpus):
    path = corpus.path("callchain")
    by_sym = textrace_report(path)
    by_dso = textrace_report(path, "--sort", "dso")
    totals: dict[str, int] = {}
    for r in by_sym:
        totals[r["dso"]] = totals.get(r["dso"], 0) + r["samples"]
    assert {r["dso"]: r["samples"] for r in by_dso} == totals
