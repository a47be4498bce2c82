"""Installed as Python tools are: the wheel is the whole tool, with no compiler at run time.

A wheel built from the checkout (`pip wheel .`, as a user would) is installed into a fresh
venv (its dependencies from the package index, through pip's cache); there, with clang
and llvm hidden from PATH, an empty HOME and cache, and no network, `textrace record`
captures every program of bpftool's feature probe in the kernel with the object the wheel
shipped.
`pipx install .` gives the same.  The sdist builds the object with clang, and says why
it cannot when clang is absent.
"""

from __future__ import annotations

import glob
import json
import os
import shutil
import subprocess
import sys
import zipfile

import pytest

from textrace.bpf.capture import build as capture_build

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CAPTURE_DIR = os.path.join(ROOT, "src", "textrace", "bpf", "capture")

pytestmark = [pytest.mark.root, pytest.mark.slow]


def clean_env(**extra) -> dict:
    """The environment without this suite's PYTHONPATH (which points at the checkout)."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env.update(extra)
    return env


def run(cmd: list[str], timeout: int = 600, **kw) -> subprocess.CompletedProcess:
    kw.setdefault("env", clean_env())
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout,
                          stdin=subprocess.DEVNULL, **kw)


def ok(cmd: list[str], **kw) -> subprocess.CompletedProcess:
    r = run(cmd, **kw)
    assert r.returncode == 0, f"{' '.join(cmd)}: {r.stderr[-3000:]}"
    return r


def no_compiler_path(tmp, *dirs: str) -> str:
    """A PATH with `dirs` and bpftool (the workload) and nothing else: no clang, no llvm."""
    shim = tmp / "shim-bin"
    shim.mkdir(exist_ok=True)
    if not (shim / "bpftool").exists():
        os.symlink(shutil.which("bpftool"), shim / "bpftool")
    path = os.pathsep.join([*dirs, str(shim)])
    assert [t for t in ("clang", "llc", "llvm-objdump") if shutil.which(t, path=path)] == []
    return path


@pytest.fixture(scope="module")
def tree(tmp_path_factory):
    """The checkout's package sources as a fresh clone has them (no build products)."""
    dst = tmp_path_factory.mktemp("install") / "textrace"
    dst.mkdir()
    for name in ("pyproject.toml", "setup.py", "README.md"):
        shutil.copy(os.path.join(ROOT, name), dst / name)
    shutil.copytree(os.path.join(ROOT, "src"), dst / "src", ignore=shutil.ignore_patterns(
        "__pycache__", "*.egg-info", "*.bpf.o", "*.pyc", "*.so"))
    return dst


@pytest.fixture(scope="module")
def wheel(tree) -> str:
    out = tree.parent / "dist"
    ok([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(out), str(tree)],
       cwd=str(tree))
    (path,) = glob.glob(str(out / "textrace-*.whl"))
    return path


def feature_probe_recorded_in_kernel(tmp, textrace: list[str], python: str, bindir: str):
    """Record the feature probe where clang is absent, the cache empty and no network
    reachable, then check
    that every program it saw was captured in the kernel and nothing was built."""
    home = tmp / "home"
    home.mkdir()
    env = clean_env(PATH=no_compiler_path(tmp, bindir), HOME=str(home),
                    XDG_CACHE_HOME=str(home / ".cache"))
    out = tmp / "probe.data"
    # in a network namespace of its own (no network), as in a fresh one nothing is fetched
    r = ok([shutil.which("unshare"), "--net", *textrace, "record", "-a", "-o", str(out), "--",
            "bpftool", "feature", "probe", "kernel"], env=env)
    assert "unavailable" not in r.stderr and "(kernel capture)" in r.stderr, r.stderr
    rows = [json.loads(l) for l in ok([python, "-m", "textrace", "progs", "-i", str(out),
                                       "--json"], env=env).stdout.splitlines()]
    # programs loaded before the recording (other loaders on the machine) are taken from
    # user space at the start; every one loaded while it ran must be the kernel's capture
    loaded = [r for r in rows if r["loaded_ns"] is not None]
    assert len(loaded) > 300  # the probe loads 383 programs on 6.18
    assert [r for r in loaded if not r["captured"] or r["capture"] != "kernel"] == []
    assert list(home.rglob("*")) == []  # no object built, nothing cached
    # the object it loaded is the packaged one
    where = ok([python, "-c", "from textrace.bpf.capture.build import build; print(build())"],
               env=env).stdout.strip()
    assert where.startswith(os.path.dirname(bindir) + os.sep) and where.endswith(".bpf.o"), \
        where


def test_the_wheel_ships_the_capture_objects_their_sources_the_unit_and_py_typed(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    sources = capture_build.sources(CAPTURE_DIR)
    assert sources  # capture.bpf.c at least, and every kernel variant's
    for src in sources:
        assert f"textrace/bpf/capture/{os.path.basename(src)}" in names
        assert f"textrace/bpf/capture/{capture_build.object_name(src)}" in names
    assert not any(n.endswith(".bpf.o") and n.rsplit("/", 1)[-1] not in
                   {capture_build.object_name(s) for s in sources} for n in names)
    assert "textrace/py.typed" in names
    # the compiled loops (textrace/compiled.c) and perf's demangler (demangler.c), built
    # by the package build, and their types
    for ext in ("compiled", "demangler"):
        assert [n for n in names if n.startswith(f"textrace/{ext}.") and n.endswith(".so")]
        assert f"textrace/{ext}.pyi" in names
    src = os.path.join(ROOT, "src")
    for unit in glob.glob(os.path.join(src, "textrace", "**", "*.service"), recursive=True):
        assert os.path.relpath(unit, src) in names  # the daemon's systemd unit
    (entry,) = [n for n in names if n.endswith(".dist-info/entry_points.txt")]
    scripts = zipfile.ZipFile(wheel).read(entry).decode()
    assert "[console_scripts]" in scripts and "textrace = textrace.cli:main" in scripts


def test_installed_from_the_wheel_it_captures_in_the_kernel_without_clang(wheel, tmp_path):
    venv = tmp_path / "venv"
    ok([sys.executable, "-m", "venv", str(venv)])
    py = str(venv / "bin" / "python")
    ok([py, "-m", "pip", "install", "-q", "--disable-pip-version-check", wheel])
    installed = ok([py, "-c", "import textrace; print(textrace.__file__)"]).stdout.strip()
    assert installed.startswith(str(venv))  # the venv's textrace, not the checkout's
    assert "usage: textrace" in ok([py, "-m", "textrace", "--help"]).stdout
    feature_probe_recorded_in_kernel(tmp_path, [str(venv / "bin" / "textrace")], py,
                                     str(venv / "bin"))


def test_pipx_install_gives_the_same(tree, tmp_path):
    pipx = shutil.which("pipx")
    assert pipx, "pipx is missing (scripts/setup.sh installs it)"
    home, bindir = tmp_path / "pipx", tmp_path / "pipx-bin"
    ok([pipx, "install", str(tree)], env=clean_env(PIPX_HOME=str(home),
                                                   PIPX_BIN_DIR=str(bindir)))
    py = str(home / "venvs" / "textrace" / "bin" / "python")
    feature_probe_recorded_in_kernel(tmp_path, [str(bindir / "textrace")], py,
                                     str(home / "venvs" / "textrace" / "bin"))


def test_the_sdist_builds_the_object_and_says_why_not_without_clang(tree, tmp_path):
    r = ok([sys.executable, "-c", "import sys; from setuptools import build_meta; "
            "print(build_meta.build_sdist(sys.argv[1]))", str(tmp_path)], cwd=str(tree))
    sdist = str(tmp_path / r.stdout.split()[-1])
    with __import__("tarfile").open(sdist) as t:
        members = {m.split("/", 1)[1] for m in t.getnames() if "/" in m}
    assert {"setup.py", "src/textrace/bpf/capture/capture.bpf.c",
            "src/textrace/py.typed"} <= members
    pip = [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w"]
    r = run([*pip, str(tmp_path / "no-clang"), sdist],
            env=clean_env(PATH=no_compiler_path(tmp_path, os.path.dirname(sys.executable))))
    assert r.returncode != 0
    assert "textrace: cannot build the in-kernel capture program (clang is not on PATH); " \
           "building textrace needs clang, libbpf-dev and linux-libc-dev" in r.stderr, r.stderr
    ok([*pip, str(tmp_path / "clang"), sdist])
    (built,) = glob.glob(str(tmp_path / "clang" / "textrace-*.whl"))
    assert "textrace/bpf/capture/" + capture_build.object_name(
        os.path.join(CAPTURE_DIR, "capture.bpf.c")) in zipfile.ZipFile(built).namelist()


def checkout_without_object(tmp) -> dict:
    """This checkout run as is (no packaged object), clang hidden, the cache empty: kernel
    capture cannot run."""
    home = tmp / "home"
    home.mkdir()
    return dict(os.environ, PATH=no_compiler_path(tmp, os.path.dirname(sys.executable)),
                HOME=str(home), XDG_CACHE_HOME=str(home / ".cache"))


def test_without_kernel_capture_the_reason_comes_first_and_in_the_summary(tmp_path):
    out = tmp_path / "sleep.data"
    p = subprocess.Popen([sys.executable, "-m", "textrace", "record", "-o", str(out), "--",
                          sys.executable, "-c", "import time; time.sleep(3)"],
                         stderr=subprocess.PIPE, text=True, env=checkout_without_object(tmp_path))
    first = p.stderr.readline()
    running = p.poll() is None  # said at the start, while the command still runs
    rest = p.stderr.read().splitlines()
    assert p.wait(timeout=60) == 0 and running
    note = ("textrace: kernel capture unavailable: no capture object is installed and none "
            "could be built (clang is not on PATH): install textrace from its wheel (it ships "
            "the object), or install clang, libbpf-dev and linux-libc-dev; capturing from "
            "user space instead, which misses programs that live microseconds (--capture "
            "user: no warning)\n")
    assert first == note
    (wrote,) = [i for i, line in enumerate(rest) if line.startswith("textrace: wrote ")]
    assert rest[wrote - 1] == note.rstrip("\n") and rest[wrote].endswith("(user capture)")


def test_capture_kernel_fails_instead_of_falling_back(tmp_path):
    out = tmp_path / "never.data"
    r = subprocess.run([sys.executable, "-m", "textrace", "record", "--capture", "kernel",
                        "-o", str(out), "--", sys.executable, "-c", ""], capture_output=True,
                       text=True, timeout=60, env=checkout_without_object(tmp_path))
    assert r.returncode == 2
    assert r.stderr.splitlines() == [
        "textrace: --capture kernel: kernel capture unavailable: no capture object is "
        "installed and none could be built (clang is not on PATH): install textrace from its "
        "wheel (it ships the object), or install clang, libbpf-dev and linux-libc-dev"]
    assert not out.exists()
