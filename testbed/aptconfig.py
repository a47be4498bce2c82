"""Where the testbed's kernel packages come from: the machine's apt for its own release's
kernel, a private apt configuration for the other releases'.

The private configuration names the other suites (bullseye, trixie, sid) in the same Debian
archive the machine's sources name, with its own sources.list, package lists and download
cache under ~/.cache/textrace/testbed/apt: the machine's sources, lists and installed
packages are never touched (its dpkg status is not even read: an empty one stands in).
"""

from __future__ import annotations

import glob
import re
import subprocess
from dataclasses import dataclass
from pathlib import Path

from .errors import TestbedError

SOURCES = ("/etc/apt/sources.list", *sorted(glob.glob("/etc/apt/sources.list.d/*.list")),
           *sorted(glob.glob("/etc/apt/sources.list.d/*.sources")))
KEYRING = "/usr/share/keyrings/debian-archive-keyring.gpg"
ARCHIVE = "http://deb.debian.org/debian"
SECURITY = "http://deb.debian.org/debian-security"


@dataclass(frozen=True)
class Entry:
    """One `deb` source of the machine's: archive URI, suites, the keyring it trusts."""
    uri: str
    suites: tuple[str, ...]
    signed_by: str | None


def machine_entries(paths=SOURCES) -> list[Entry]:
    """The machine's binary package sources, one-line (.list) and deb822 (.sources) alike."""
    entries = []
    for path in paths:
        try:
            text = Path(path).read_text()
        except OSError:
            continue
        if path.endswith(".sources"):
            for stanza in re.split(r"\n\s*\n", text):
                fields = {}
                for line in stanza.splitlines():
                    if line.startswith("#") or ":" not in line or line[0].isspace():
                        continue
                    key, value = line.split(":", 1)
                    fields[key.strip().lower()] = value.strip()
                if "deb" in fields.get("types", "").split() and fields.get("enabled") != "no":
                    for uri in fields.get("uris", "").split():
                        entries.append(Entry(uri.rstrip("/"), tuple(fields.get("suites", "")
                                                                    .split()),
                                             fields.get("signed-by")))
        else:
            for line in text.splitlines():
                m = re.match(r"\s*deb\s+(?:\[([^\]]*)\]\s+)?(\S+)\s+(\S+)", line)
                if m:
                    opts = dict(o.split("=", 1) for o in (m.group(1) or "").split() if "=" in o)
                    entries.append(Entry(m.group(2).rstrip("/"), (m.group(3),),
                                         opts.get("signed-by")))
    return entries


def registry(entries: list[Entry]) -> tuple[str, str, str]:
    """(archive URI, security archive URI, keyring) as the machine's sources name them."""
    archive = next((e for e in entries if any(re.fullmatch(r"[a-z]+", s) for s in e.suites)),
                   None)
    security = next((e for e in entries if any(s.endswith("-security") for s in e.suites)),
                    None)
    keyring = (archive and archive.signed_by) or KEYRING
    return (archive.uri if archive else ARCHIVE, security.uri if security else SECURITY,
            keyring if keyring.startswith("/") else KEYRING)


class MachineApt:
    """The machine's own apt (Debian 12's bookworm for the 6.1 kernel), as today."""
    options: list[str] = []
    where = "is this Debian 12 with bookworm's main and security archives?"

    def stale(self) -> bool:
        return False  # search first; update only when nothing is found

    def update(self) -> None:
        subprocess.run(["apt-get", "update", "-qq"], check=True)

    def download(self, packages: list[str], into: Path) -> list[Path]:
        return _download(self.options, packages, into)


class PrivateApt:
    """A private apt configuration naming suites of the machine's Debian archive."""

    def __init__(self, root: Path, suites: tuple[str, ...]) -> None:
        self.root = root
        self.suites = suites
        self.where = f"private apt configuration {root} ({' '.join(suites)})"
        self.options = [
            "-o", f"Dir::Etc::sourcelist={root / 'sources.list'}",
            "-o", f"Dir::Etc::sourceparts={root / 'sources.list.d'}",
            "-o", f"Dir::Etc::preferencesparts={root / 'preferences.d'}",
            "-o", f"Dir::State={root / 'state'}",
            "-o", f"Dir::State::status={root / 'state' / 'status'}",
            "-o", f"Dir::Cache={root / 'cache'}",
        ]

    def sources(self) -> str:
        archive, security, keyring = registry(machine_entries())
        lines = []
        for suite in self.suites:
            uri = security if suite.endswith("-security") else archive
            lines.append(f"deb [signed-by={keyring}] {uri} {suite} main")
        return "\n".join(lines) + "\n"

    def stale(self) -> bool:
        """True until update() has fetched lists for exactly these sources."""
        sources = self.root / "sources.list"
        lists = list((self.root / "state" / "lists").glob("*_Packages*"))
        return not lists or not sources.exists() or sources.read_text() != self.sources()

    def update(self) -> None:
        for d in ("sources.list.d", "preferences.d", "state/lists/partial",
                  "cache/archives/partial"):
            (self.root / d).mkdir(parents=True, exist_ok=True)
        (self.root / "state" / "status").touch()
        (self.root / "sources.list").write_text(self.sources())
        # apt's sandbox user (_apt) cannot enter root's cache, and says so in a warning that
        # would read as a failure here: stay root, as for downloads
        r = subprocess.run(["apt-get", "-q", *self.options, "-o", "APT::Sandbox::User=root",
                            "update"], capture_output=True, text=True)
        if r.returncode != 0 or "\nE: " in "\n" + r.stderr or "\nW: " in "\n" + r.stderr:
            raise TestbedError(f"apt-get update ({self.where}) failed: "
                               f"{r.stderr.strip()[-500:]}")

    def download(self, packages: list[str], into: Path) -> list[Path]:
        return _download(self.options, packages, into)


def _download(options: list[str], packages: list[str], into: Path) -> list[Path]:
    # apt's download sandbox user (_apt) cannot write into root's cache: stay root
    r = subprocess.run(["apt-get", "-q", *options, "-o", "APT::Sandbox::User=root", "download",
                        *packages], cwd=into, capture_output=True, text=True)
    if r.returncode != 0:
        raise TestbedError(f"apt-get download {' '.join(packages)} failed: "
                           f"{r.stderr.strip()[-500:]}")
    return sorted(into.glob("*.deb"))


def for_series(series) -> MachineApt | PrivateApt:
    """The apt that knows the series' packages."""
    if not series.suites:
        return MachineApt()
    from .kernel import SERIES, cache_dir
    # one configuration for every series: one `apt-get update` serves them all
    suites = tuple(dict.fromkeys(s for other in SERIES.values() for s in other.suites))
    return PrivateApt(cache_dir() / "apt", suites)
