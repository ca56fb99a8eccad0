"""``deploy.cli``: the shared conventions, and ``python -m deploy.cli``, which is no command and says so."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "deploy.cli", *args], cwd=ROOT, capture_output=True, text=True, timeout=120
    )


def test_running_it_refuses_in_one_line_and_names_the_commands():
    from deploy.cli import COMMANDS

    res = _run()
    assert res.returncode == 2 and res.stdout == ""
    lines = res.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: deploy.cli is not a command, expected one of: "), lines
    for command in COMMANDS:
        assert command in lines[0]


def test_help_lists_the_commands_and_every_one_exists():
    from deploy.cli import COMMANDS

    res = _run("--help")
    assert res.returncode == 0 and "commands:" in res.stdout
    for command, what in COMMANDS.items():
        assert command in res.stdout and what in res.stdout
        module = command.split()[2]
        assert importlib.util.find_spec(module) is not None, command
    bad = _run("--typo")
    assert bad.returncode == 2 and bad.stderr.startswith("error: unrecognized arguments: --typo")


def test_help_formatter_states_a_default_once_and_as_typed():
    import argparse

    from deploy.cli import HelpFormatter

    p = argparse.ArgumentParser(formatter_class=HelpFormatter)
    p.add_argument("--sizes", type=str, default=(1, 8, 64), help="sizes")
    p.add_argument("--seed", type=int, default=0, help="seed")
    p.add_argument("--rate", type=float, default=0.5, help="rate, 5%% of it")
    p.add_argument("--lr", type=float, default=None, help="rate (default: 2e-3 for adam)")
    p.add_argument("--flag", action="store_true", help="a flag")
    p.add_argument("--named", default="x", help="named (default: x, the usual)")
    text = " ".join(p.format_help().split())
    assert "sizes (default: 1,8,64)" in text and "seed (default: 0)" in text
    assert "rate, 5% of it (default: 0.5)" in text
    assert "rate (default: 2e-3 for adam) --flag" in text and "a flag --named" in text
    assert text.count("(default") == 5
