"""TLS hooks: attach the uprobes of bpf/tls.c to the TLS libraries otelbpf.tlslibs finds.

One attachment per library file, whoever maps it: a uprobe lives on the file's inode and fires
in every process that maps it, and the pid filter in the kernel keeps untraced processes out.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from otelbpf.tlslibs import HookKind, TlsLibrary

log = logging.getLogger(__name__)


@dataclass
class AttachedLibrary:
    library: TlsLibrary
    hooks: int = 0
    errors: list[str] = field(default_factory=list)


class TlsHooks:
    def __init__(self, bpf: object) -> None:
        self._bpf = bpf
        self.attached: dict[tuple[int, int], AttachedLibrary] = {}

    def attach(self, library: TlsLibrary, pid: int) -> AttachedLibrary:
        known = self.attached.get(library.file_id)
        if known is not None:
            return known
        state = AttachedLibrary(library)
        path = library.path.encode()
        for hook in library.hooks:
            symbol = hook.symbol.encode()
            program = hook.program.encode()
            try:
                if hook.kind is HookKind.RETURN:
                    self._bpf.attach_uretprobe(name=path, sym=symbol, fn_name=program)
                else:
                    self._bpf.attach_uprobe(
                        name=path, sym=symbol, fn_name=program, sym_off=hook.offset
                    )
                state.hooks += 1
            except Exception as error:  # one missing symbol must not cost the others
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
