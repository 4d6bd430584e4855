"""TLS hooks: attach the uprobes of bpf/tls.c to the TLS libraries otelbpf.tlslibs finds.

One attachment per library file, whoever maps it: a uprobe lives on the file's inode and fires
in every process that maps it, and the pid filter in the kernel keeps untraced processes out.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from otelbpf.probes import bpf_calls
from otelbpf.probes.objects import LoadedObject
from otelbpf.tlslibs import HookKind, TlsLibrary

log = logging.getLogger(__name__)


@dataclass
class AttachedLibrary:
    library: TlsLibrary
    hooks: int = 0
    errors: list[str] = field(default_factory=list)


class TlsHooks:
    def __init__(self, bpf: LoadedObject) -> None:
        self._bpf = bpf
        self.attached: dict[tuple[int, int], AttachedLibrary] = {}

    def attach(self, library: TlsLibrary, pid: int) -> AttachedLibrary:
        known = self.attached.get(library.file_id)
        if known is not None:
            return known
        state = AttachedLibrary(library)
        offsets: dict[str, int] = {}
        for hook in library.hooks:
            try:
                if hook.symbol not in offsets:
                    offsets[hook.symbol] = bpf_calls.symbol_offset(library.path, hook.symbol)
                self._bpf.attach_uprobe(
                    library.path,
                    offsets[hook.symbol] + hook.offset,
                    hook.program,
                    on_return=hook.kind is HookKind.RETURN,
                )
                state.hooks += 1
            except OSError as error:  # one missing symbol must not cost the others
                state.errors.append(f"{hook.symbol}+{hook.offset}: {error}")
        self.attached[library.file_id] = state
        log.info(
            "TLS: hooked %s (%s%s) with %d uprobes%s%s",
            library.path,
            library.stack.value,
            f", {library.detail}" if library.detail else "",
            state.hooks,
            f" for pid {pid}" if pid else "",
            f"; {len(state.errors)} failed: {state.errors[0]}" if state.errors else "",
        )
        return state
