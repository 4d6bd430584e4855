"""One BPF map seen from Python: typed keys and values over the map's file descriptor.

The key and value types are the ctypes mirrors of otelbpf.abi (checked against the compiler's
layout by tests/unit/test_abi.py); their sizes are checked against the map's own at creation,
so a mismatch is an error here, never memory the kernel writes past.
"""

from __future__ import annotations

import ctypes
from collections.abc import Iterator
from functools import cache

from otelbpf.probes import bpf_calls

# enum bpf_map_type values whose lookups return one value per possible CPU
PERCPU_TYPES = frozenset({5, 6, 10})  # PERCPU_HASH, PERCPU_ARRAY, LRU_PERCPU_HASH


@cache
def possible_cpus() -> int:
    """How many values a per-CPU map returns: one per possible CPU, not per online one."""
    text = open("/sys/devices/system/cpu/possible").read().strip()  # noqa: SIM115
    count = 0
    for part in text.split(","):
        low, _, high = part.partition("-")
        count += int(high or low) - int(low) + 1
    return count


class BpfMap:
    def __init__(
        self,
        name: str,
        fd: int,
        kind: int,
        key_type: type,
        value_type: type,
        key_size: int,
        value_size: int,
    ) -> None:
        if ctypes.sizeof(key_type) != key_size or ctypes.sizeof(value_type) != value_size:
            raise ValueError(
                f"map {name}: key/value are {key_size}/{value_size} bytes in the kernel, "
                f"{ctypes.sizeof(key_type)}/{ctypes.sizeof(value_type)} in the mirror"
            )
        self.name = name
        self.fd = fd
        self.Key = key_type
        self.Leaf = value_type
        self.per_cpu = kind in PERCPU_TYPES

    def _key(self, key: object) -> object:
        return key if isinstance(key, self.Key) else self.Key(key)

    def get(self, key: object) -> object | None:
        """The value, a list of one value per possible CPU for per-CPU maps, or None."""
        if self.per_cpu:
            values = (self.Leaf * possible_cpus())()
            return list(values) if bpf_calls.lookup(self.fd, self._key(key), values) else None
        value = self.Leaf()
        return value if bpf_calls.lookup(self.fd, self._key(key), value) else None

    def __getitem__(self, key: object) -> object:
        value = self.get(key)
        if value is None:
            raise KeyError(key)
        return value

    def __setitem__(self, key: object, value: object) -> None:
        if self.per_cpu:
            raise TypeError(f"map {self.name}: per-CPU values are written by the kernel only")
        bpf_calls.update(
            self.fd, self._key(key), value if isinstance(value, self.Leaf) else self.Leaf(value)
        )

    def __delitem__(self, key: object) -> None:
        if not bpf_calls.delete(self.fd, self._key(key)):
            raise KeyError(key)

    def keys(self) -> Iterator[object]:
        """Every key, as the key type; a key deleted meanwhile may end the walk early."""
        key = None
        while True:
            following = self.Key()
            if not bpf_calls.next_key(self.fd, key, following):
                return
            yield following
            key = following
