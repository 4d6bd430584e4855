"""otelbpf's benchmark suite: what the agent costs a traced process, side by side.

Run it with ``.venv/bin/python -m bench`` (full) or ``.venv/bin/python -m bench --quick``
(CI smoke). See bench/README.md for what each number means.
"""
