"""The compiled-program cache: the compile runs once, in a child process; later starts reuse it.

Real compiles with bcc (as root), into a cache folder of the test's own.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import pytest

from otelbpf import preflight
from otelbpf.abi import AbiLayout
from otelbpf.config import OTELBPF_CACHE_DIR
from otelbpf.errors import SetupError
from otelbpf.probes import compiled
from otelbpf.probes.loader import ProbeSettings

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root: bcc compiles")

CFLAGS = ProbeSettings(layout=AbiLayout(256, 128)).cflags


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv(OTELBPF_CACHE_DIR, str(tmp_path))
    headers = preflight.run_all()  # what the agent does before it loads anything
    if headers is not None:
        monkeypatch.setenv("BCC_KERNEL_SOURCE", str(headers))
    return tmp_path / "programs"


def test_the_second_load_comes_from_the_cache(cache: Path) -> None:
    first, from_cache = compiled.load_or_compile(CFLAGS)
    assert from_cache is False
    files = list(cache.iterdir())
    assert [f.name for f in files] == [f"{compiled.cache_key(CFLAGS)}.json"]
    again, from_cache = compiled.load_or_compile(CFLAGS)
    assert from_cache is True
    assert again == first
    assert len(first.programs) > 40


def test_a_damaged_cache_file_is_compiled_again(cache: Path, caplog) -> None:
    cache.mkdir(parents=True)
    path = cache / f"{compiled.cache_key(CFLAGS)}.json"
    path.write_text('{"format": 1, "maps": [')  # cut short, as by a full disk
    with caplog.at_level(logging.WARNING):
        program, from_cache = compiled.load_or_compile(CFLAGS)
    assert from_cache is False
    assert f"compiled-program cache {path} is unreadable" in caplog.text
    assert compiled.CompiledObject.from_json(path.read_text()) == program  # replaced whole


def test_an_unwritable_cache_costs_only_the_next_compile(cache: Path, caplog) -> None:
    cache.parent.mkdir(parents=True, exist_ok=True)
    cache.write_text("a file where the folder should be")
    with caplog.at_level(logging.WARNING):
        program, from_cache = compiled.load_or_compile(CFLAGS)
    assert from_cache is False and len(program.programs) > 40
    assert "cannot cache the compiled programs" in caplog.text


def test_a_compile_error_is_reported_with_clangs_message(cache: Path) -> None:
    broken = [flag for flag in CFLAGS if not flag.startswith("-DMAX_CONNS=")]
    broken.append("-DMAX_CONNS=(")
    with pytest.raises(SetupError) as raised:
        compiled.load_or_compile(broken)
    assert "bcc could not compile" in raised.value.message
    assert "error" in raised.value.message  # clang's own words, from the child's stderr
    assert not cache.exists() or list(cache.iterdir()) == []


def test_the_key_follows_every_input(monkeypatch: pytest.MonkeyPatch) -> None:
    key = compiled.cache_key(CFLAGS)
    assert compiled.cache_key(list(CFLAGS)) == key
    assert compiled.cache_key([*CFLAGS, "-DEXTRA=1"]) != key
    monkeypatch.setenv("BCC_KERNEL_SOURCE", "/elsewhere")
    assert compiled.cache_key(CFLAGS) != key
