"""The package's layering, read from its source: dependencies point inwards only.

Every module of src/textrace is parsed with `ast`; every import counts, at module level or
inside a function, absolute or relative.  The layers and what each may import are declared
once, in LAYERS; a module in no layer fails the test, so a new module has to be placed.
The history's calls are read too: it opens, maps or looks for no file and forks nothing.
"""

from __future__ import annotations

import ast
import os

import pytest

SRC = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "src")
PACKAGE = "textrace"

# layer: (its modules, by name under textrace: a package name covers its submodules;
#         "" is the package itself, textrace/__init__.py),
#        the other layers it may import.  A layer may import itself, except the views.
LAYERS: dict[str, tuple[tuple[str, ...], frozenset[str]]] = {
    # exceptions, the version string, the compiled loops (compiled.c, an extension module:
    # pure functions over buffers) and perf's demangler (demangler.c): imported by
    # everything, import nothing
    "base": (("errors", "version", "compiled", "demangler"), frozenset()),
    # the ABIs: perf's binary formats and the bpf syscall.  Neither imports the other.
    "perf": (("perf",), frozenset({"base"})),
    "bpf": (("bpf",), frozenset({"base"})),
    # the centre: records in, versions out; pure (no fork, no file opened or searched:
    # checked apart, test_history_opens_no_file)
    "history": (("history",), frozenset({"base", "perf", "bpf"})),
    # the live kernel and the files as sources: kernel memory, /proc/kallsyms (read by a
    # child or in place), the user-space id scanner, the ELF files samples name with their
    # debug files.  The ABIs below it, and the history's pure parsers (kallsyms, ELF)
    "sources": (("sources",), frozenset({"base", "perf", "bpf", "history"})),
    # textrace's own section and stream in a recording: the codecs of its entries
    "recording": (("recorded", "entries", "capture", "json_entry"),
                  frozenset({"base", "perf", "bpf"})),
    # the daemon's code store (SQLite): it rebuilds history regions and program infos
    "store": (("store",), frozenset({"base", "perf", "bpf", "history"})),
    # the one loader: a recording -> history, programs, captures, kernel symbols.  It does
    # not read a store yet (tables.StoreSource does, by itself).
    "load": (("load",), frozenset({"base", "perf", "bpf", "history", "recording",
                                   "sources"})),
    # one module per view; never one view from another (checked apart)
    "views": (("views",), frozenset({"base", "perf", "bpf", "history", "load"})),
    # the recorder: live sources -> perf.data (record, recover/finish) or the store (daemon);
    # one job a module, orchestration alone in recorder.recorder
    "recorder": (("recorder",),
                 frozenset({"base", "perf", "bpf", "history", "recording", "store",
                            "sources"})),
    # tables over several views, for export and sql; inject (a perf.data's features
    # completed from a store or another recording: no live source)
    "outputs": (("tables", "export", "sql", "texttable", "inject"),
                frozenset({"base", "perf", "bpf", "history", "recording", "store", "load",
                           "views"})),
    # the scripting entry: textrace.open() -> api.Recording (its programs are progs' rows)
    "api": (("", "api"), frozenset({"base", "perf", "bpf", "history", "load", "views"})),
    # the CLI on top of everything; only __main__ imports it (checked apart)
    "cli": (("cli",), frozenset({"base", "perf", "bpf", "history", "recording", "store",
                                 "sources", "load", "views", "recorder", "outputs", "api"})),
    "main": (("__main__",), frozenset({"cli"})),
}


def modules() -> dict[str, tuple[str, bool]]:
    """Every module of the package: dotted name -> (path, is a package's __init__)."""
    out = {}
    root = os.path.join(SRC, PACKAGE)
    for dirpath, _dirs, files in os.walk(root):
        for f in files:
            if not f.endswith(".py"):
                continue
            rel = os.path.relpath(os.path.join(dirpath, f), SRC)[:-3].split(os.sep)
            init = rel[-1] == "__init__"
            out[".".join(rel[:-1] if init else rel)] = (os.path.join(dirpath, f), init)
    return out


def imports(mods: dict[str, tuple[str, bool]]) -> dict[str, set[tuple[str, str | None]]]:
    """module -> {(imported module, name taken from it or None)}, textrace's own only."""
    out: dict[str, set[tuple[str, str | None]]] = {}
    for name, (path, init) in mods.items():
        with open(path) as f:
            tree = ast.parse(f.read(), path)
        package = name if init else name.rpartition(".")[0]
        found: set[tuple[str, str | None]] = set()
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                for alias in node.names:
                    if alias.name == PACKAGE or alias.name.startswith(PACKAGE + "."):
                        found.add((alias.name, None))
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = package.split(".")[:len(package.split(".")) - (node.level - 1)]
                    target = ".".join(base + ([node.module] if node.module else []))
                else:
                    target = node.module or ""
                if target != PACKAGE and not target.startswith(PACKAGE + "."):
                    continue
                for alias in node.names:
                    sub = f"{target}.{alias.name}"
                    found.add((sub, None) if sub in mods else (target, alias.name))
        out[name] = found
    return out


def layer_of(module: str) -> str | None:
    rel = module[len(PACKAGE) + 1:] if module != PACKAGE else ""
    for layer, (names, _allowed) in LAYERS.items():
        for n in names:
            if rel == n or (n and rel.startswith(n + ".")):
                return layer
    return None


@pytest.fixture(scope="module")
def graph():
    mods = modules()
    return mods, imports(mods)


def test_every_module_has_a_layer(graph):
    mods, _ = graph
    loose = sorted(m for m in mods if layer_of(m) is None)
    assert not loose, "modules in no layer of LAYERS (place them): " + ", ".join(loose)


def test_no_import_cycle(graph):
    _mods, edges = graph
    arrows = {m: {t for t, _ in to if t != m} for m, to in edges.items()}
    cycles = [c for c in _strongly_connected(arrows) if len(c) > 1]
    assert not cycles, "import cycles:\n" + "\n".join(
        "  " + "; ".join(f"{a} -> {b}" for a in sorted(c) for b in sorted(arrows[a] & c))
        for c in cycles)


def test_arrows_point_inwards(graph):
    _mods, edges = graph
    bad = []
    for m, to in sorted(edges.items()):
        mine = layer_of(m)
        allowed = LAYERS[mine][1] | {mine}
        for t in sorted({t for t, _name in to}):
            theirs = layer_of(t)
            if theirs not in allowed:
                bad.append(f"  {m} ({mine}) -> {t} ({theirs})")
    assert not bad, "imports pointing outwards:\n" + "\n".join(bad)


def test_no_view_imports_another(graph):
    _mods, edges = graph
    bad = [f"  {m} -> {t}" for m, to in sorted(edges.items()) if layer_of(m) == "views"
           for t in sorted({t for t, _name in to}) if layer_of(t) == "views" and t != m]
    assert not bad, "views importing views:\n" + "\n".join(bad)


def test_only_main_imports_the_cli(graph):
    _mods, edges = graph
    bad = [f"  {m} -> {PACKAGE}.cli" for m, to in sorted(edges.items())
           if m != f"{PACKAGE}.__main__" and f"{PACKAGE}.cli" in {t for t, _name in to}]
    assert not bad, "the CLI imported by:\n" + "\n".join(bad)


def test_no_private_name_imported_from_another_module(graph):
    _mods, edges = graph
    bad = [f"  {m} takes {name} from {t}" for m, to in sorted(edges.items())
           for t, name in sorted(to, key=str)
           if name and name.startswith("_") and not name.startswith("__")]
    assert not bad, "private names imported across modules:\n" + "\n".join(bad)


# calls the history must not make: opening, mapping or looking for a file, forking.  By
# the dotted name called, after the module's imports (`from os.path import exists` too).
FILE_CALLS = frozenset({
    "open", "io.open", "os.open", "os.fdopen", "mmap.mmap",
    "os.path.exists", "os.path.isfile", "os.path.isdir", "os.path.lexists", "os.stat",
    "os.lstat", "os.access", "os.listdir", "os.scandir", "os.walk", "glob.glob",
    "glob.iglob", "pathlib.Path", "os.fork", "os.forkpty", "os.system", "os.popen",
    "subprocess.run", "subprocess.Popen", "subprocess.check_output", "subprocess.call",
    "subprocess.check_call"})


def _called_names(tree: ast.AST):
    """(line, dotted name) of every call in `tree`, its first part taken back to what the
    module imported under that name."""
    origin: dict[str, str] = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.asname:
                    origin[alias.asname] = alias.name
                else:
                    top = alias.name.split(".")[0]
                    origin[top] = top
        elif isinstance(node, ast.ImportFrom) and not node.level and node.module:
            for alias in node.names:
                origin[alias.asname or alias.name] = f"{node.module}.{alias.name}"
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        parts, f = [], node.func
        while isinstance(f, ast.Attribute):
            parts.append(f.attr)
            f = f.value
        if not isinstance(f, ast.Name):
            continue
        parts.append(origin.get(f.id, f.id))
        yield node, ".".join(reversed(parts))


def test_history_opens_no_file(graph):
    """The history is pure: it parses what the sources read (sources/) and never opens,
    maps or looks for a file itself, nor forks; an anonymous mapping (mmap.mmap(-1, ...))
    is memory, not a file."""
    mods, _ = graph
    bad = []
    for name, (path, _init) in sorted(mods.items()):
        if layer_of(name) != "history":
            continue
        with open(path) as f:
            tree = ast.parse(f.read(), path)
        for call, called in _called_names(tree):
            if called == "mmap.mmap" and call.args and isinstance(call.args[0], ast.UnaryOp) \
                    and isinstance(call.args[0].operand, ast.Constant) \
                    and call.args[0].operand.value == 1:
                continue
            if called in FILE_CALLS:
                bad.append((os.path.relpath(path, SRC), call.lineno, called))
    assert not bad, ("the history opens, maps or looks for files, or forks (move that to "
                     "sources/ and pass the history bytes or a callable):\n"
                     + "\n".join(f"  {p}:{line}: {called}(...)" for p, line, called in
                                 sorted(bad)))


def test_every_public_definition_has_a_docstring(graph):
    """Public classes, functions and methods (of public classes) say why they exist."""
    mods, _ = graph
    bare = []

    def walk(body, path, prefix=""):
        for node in body:
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)) \
                    and not node.name.startswith("_"):
                if ast.get_docstring(node) is None:
                    bare.append(f"  {path}:{node.lineno}: {prefix}{node.name}")
                if isinstance(node, ast.ClassDef):
                    walk(node.body, path, f"{node.name}.")

    for _name, (path, _init) in sorted(mods.items()):
        with open(path) as f:
            walk(ast.parse(f.read(), path).body, os.path.relpath(path, SRC))
    assert not bare, "public definitions without a docstring:\n" + "\n".join(bare)


def _strongly_connected(arrows: dict[str, set[str]]) -> list[set[str]]:
    """Tarjan's strongly connected components, iteratively (no recursion limit)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[set[str]] = []
    for root in sorted(arrows):
        if root in index:
            continue
        work = [(root, iter(sorted(arrows.get(root, ()))))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            for child in children:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(arrows.get(child, ())))))
                    break
                if child in on_stack:
                    low[node] = min(low[node], index[child])
            else:
                work.pop()
                if work:
                    parent = work[-1][0]
                    low[parent] = min(low[parent], low[node])
                if low[node] == index[node]:
                    component = set()
                    while True:
                        w = stack.pop()
                        on_stack.discard(w)
                        component.add(w)
                        if w == node:
                            break
                    out.append(component)
    return out
