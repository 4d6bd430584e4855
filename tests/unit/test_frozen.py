"""fast_constructor builds the same frozen object as the dataclass's own __init__."""

from __future__ import annotations

import dataclasses

import pytest

from otelbpf.frozen import fast_constructor
from otelbpf.protocols.http1 import RequestHead


def test_same_object_as_the_dataclass_init() -> None:
    values = ("GET", "/x", "1.1", "h", None, 3, None, None, True, 40, "vendor=a")
    built = fast_constructor(RequestHead)(*values)
    assert type(built) is RequestHead and built == RequestHead(*values)
    assert hash(built) == hash(RequestHead(*values))
    assert built.head_size == 40
    with pytest.raises(dataclasses.FrozenInstanceError):
        built.method = "POST"  # type: ignore[misc]


def test_every_field_must_be_given() -> None:
    with pytest.raises(TypeError):
        fast_constructor(RequestHead)("GET", "/x")
    assert fast_constructor(RequestHead).__name__ == "new_RequestHead"
