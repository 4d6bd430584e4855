"""TLS coverage: finds the TLS libraries of traced processes, has them hooked, and reports.

Traced processes are scanned at start-up, after exec, and whenever the kernel says one mapped a
file as code (dlopen; Python's `import ssl`): through its mmap() hook, or, where no system call
is hooked, through a hook on the dynamic loader, which this module has the probes set on each
loader it finds. Each library file is hooked once. What is hooked,
and which processes send TLS no hook decrypts, is written to a status file that
`otelbpf coverage` reads (one file per agent, in status_dir()).
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Protocol

from otelbpf.config import DEFAULT_STATUS_DIR, OTELBPF_STATUS_DIR
from otelbpf.tlslibs import LOADER_PATTERNS, TlsLibrary, inspect_file, libraries_of, loaders_of

log = logging.getLogger(__name__)


def status_dir() -> Path:
    """Where running agents describe their TLS hooks: one file per agent (a host agent and a
    sidecar may run side by side). OTELBPF_STATUS_DIR moves it."""
    return Path(os.environ.get(OTELBPF_STATUS_DIR) or DEFAULT_STATUS_DIR)


def status_path_of(pid: int) -> Path:
    return status_dir() / f"status-{pid}.json"


# Where the distribution keeps shared TLS libraries: hooked at start-up, before any traced
# process maps them, so a short-lived client that starts later is covered from its first call.
SYSTEM_LIBRARY_DIRS = (
    "/lib/x86_64-linux-gnu",
    "/usr/lib/x86_64-linux-gnu",
    "/lib/aarch64-linux-gnu",
    "/usr/lib/aarch64-linux-gnu",
    "/usr/lib64",
    "/lib64",
    "/usr/lib",
    "/usr/local/lib",
)
SYSTEM_LIBRARY_PATTERNS = ("libssl.so*", "libgnutls.so*")


def _system_files(patterns: tuple[str, ...]) -> Iterator[tuple[Path, tuple[int, int]]]:
    """Files of the system library folders matching patterns: (resolved path, file id)."""
    for directory in SYSTEM_LIBRARY_DIRS:
        for pattern in patterns:
            for path in Path(directory).glob(pattern):
                try:
                    real = path.resolve(strict=True)
                    stat = real.stat()
                except OSError:
                    continue
                yield real, (stat.st_dev, stat.st_ino)


class Attachment(Protocol):
    """What attaching a library's hooks gave (otelbpf.probes.tls.AttachedLibrary)."""

    hooks: int  # uprobes attached
    errors: list[str]  # one line for each that failed


class TlsWatcher:
    def __init__(
        self,
        attach: Callable[[TlsLibrary, int], Attachment] | None,
        status_path: Path | None = None,
        watch_loader: Callable[[str, tuple[int, int]], object] | None = None,
    ) -> None:
        self._attach = attach  # None: TLS hooking is off (--no-tls)
        # hooks a dynamic loader (path, file id); None: mmap() tells of libraries loaded later
        self._watch_loader = watch_loader
        self._status_path = status_path or status_path_of(os.getpid())
        self._due: dict[int, float] = {}
        self.libraries: dict[tuple[int, int], TlsLibrary] = {}
        # what attaching each gave (uprobes attached, and those that failed), for the status
        self.attachments: dict[tuple[int, int], Attachment] = {}
        self.users: dict[tuple[int, int], set[int]] = {}
        self.unhooked_tls: Counter[int] = Counter()  # pid -> TLS exchanges no hook decrypted
        self._status_dirty = True

    def schedule(self, pid: int, delay_s: float = 0.0) -> None:
        due = time.monotonic() + delay_s
        self._due[pid] = min(due, self._due.get(pid, due))

    def run_due(self) -> None:
        if self._due:
            now = time.monotonic()
            for pid in [pid for pid, due in self._due.items() if due <= now]:
                del self._due[pid]
                self.scan(pid)
        if self._status_dirty:
            self.write_status()

    def scan(self, pid: int) -> list[TlsLibrary]:
        if self._watch_loader is not None:
            # the loader first: a library it loads after the maps are read below is told
            for path, file_id in loaders_of(pid):
                self._watch_loader(path, file_id)
        found = libraries_of(pid)
        for library in found:
            users = self.users.setdefault(library.file_id, set())
            if pid not in users:
                users.add(pid)
                self._status_dirty = True
            if library.file_id not in self.libraries:
                self.libraries[library.file_id] = library
                self._status_dirty = True
            if self._attach is not None:
                self.attachments[library.file_id] = self._attach(library, pid)
        return found

    def hook_system_libraries(self) -> int:
        """Hook the TLS libraries installed on the host (and its dynamic loaders, where they
        are watched); returns how many TLS library files."""
        if self._watch_loader is not None:
            for real, file_id in _system_files(LOADER_PATTERNS):
                self._watch_loader(str(real), file_id)
        hooked = 0
        for real, file_id in _system_files(SYSTEM_LIBRARY_PATTERNS):
            if file_id in self.libraries:
                continue
            library = inspect_file(str(real), file_id)
            if library is None:
                continue
            self.libraries[file_id] = library
            self._status_dirty = True
            if self._attach is not None:
                self.attachments[file_id] = self._attach(library, 0)
            hooked += 1
        return hooked

    def forget(self, pid: int) -> None:
        """A process exited: keep no state for it (pids are reused; hosts churn processes)."""
        self._due.pop(pid, None)
        self.unhooked_tls.pop(pid, None)
        for users in self.users.values():
            users.discard(pid)
        self._status_dirty = True

    def count_unhooked(self, pid: int) -> None:
        self.unhooked_tls[pid] += 1
        self._status_dirty = True

    def status(self) -> dict[str, object]:
        attachments = self.attachments
        return {
            "agent_pid": os.getpid(),
            "tls_hooking": self._attach is not None,
            "libraries": [
                {
                    "path": library.path,
                    "stack": library.stack.value,
                    "detail": library.detail,
                    "hooks": sorted({hook.symbol for hook in library.hooks}),
                    # hooked means uprobes attached, not the library found
                    "uprobes": attachments[file_id].hooks if file_id in attachments else 0,
                    "uprobe_errors": attachments[file_id].errors if file_id in attachments else [],
                    "pids": sorted(self.users.get(file_id, ())),
                }
                for file_id, library in self.libraries.items()
            ],
            "unhooked_tls_exchanges": {str(pid): n for pid, n in self.unhooked_tls.items()},
        }

    def write_status(self) -> None:
        self._status_dirty = False
        if self._status_path is None:
            return
        try:
            self._status_path.parent.mkdir(parents=True, exist_ok=True)
            tmp = self._status_path.with_suffix(".tmp")
            tmp.write_text(json.dumps(self.status(), indent=1))
            tmp.replace(self._status_path)
        except OSError as error:
            log.debug("cannot write %s: %s", self._status_path, error)

    def remove_status(self) -> None:
        if self._status_path is not None:
            self._status_path.unlink(missing_ok=True)
