"""The README's and every docs page's examples run, and their commands parse.

- Each fenced ``python`` block runs, in page order, in one namespace per page (as
  a reader pasting them in order would), in an empty working folder. A block can be
  left out only by an HTML comment ``<!-- no-run: <reason> -->`` on the line before
  its fence; the reason is shown as the skip reason.
- Each line of a ``bash`` block that calls ``python -m pipeline.export``,
  ``python -m pipeline.reproduce`` or ``make TARGET`` is checked without running the
  job: its options are parsed by the command's own parser (and its range checks),
  and a make target must exist in the Makefile. A documented command that the
  parser would refuse fails here, naming page and line.
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
FENCE = re.compile(r"^```(\w*)\s*$")
NO_RUN = re.compile(r"<!--\s*no-run:\s*(.+?)\s*-->")


def blocks(page: Path) -> list[tuple[str, int, str, str | None]]:
    """``(language, first line number, code, no-run reason)`` for each fenced block."""
    out, lang, start, body, reason = [], None, 0, [], None
    lines = page.read_text().splitlines()
    for i, line in enumerate(lines, 1):
        m = FENCE.match(line)
        if m and lang is None:
            lang, start, body = m.group(1) or "text", i + 1, []
            prev = lines[i - 2] if i >= 2 else ""
            reason = (NO_RUN.search(prev) or [None, None])[1]
        elif line.strip() == "```" and lang is not None:
            out.append((lang, start, "\n".join(body), reason))
            lang = None
        elif lang is not None:
            body.append(line)
    assert lang is None, f"{page.name}: a code fence opened at line {start - 1} is never closed"
    return out


def _id(page: Path) -> str:
    return page.relative_to(ROOT).as_posix()


def _has(page: Path, langs: tuple[str, ...]) -> bool:
    return any(lang in langs for lang, *_ in blocks(page))


SHELL = ("bash", "sh", "shell")


@pytest.mark.parametrize("page", [p for p in PAGES if _has(p, ("python",))], ids=_id)
def test_python_examples_run(page: Path, tmp_path, monkeypatch) -> None:
    code = [(line, src, why) for lang, line, src, why in blocks(page) if lang == "python"]
    monkeypatch.chdir(tmp_path)
    namespace: dict = {"__name__": "__docs__"}
    skipped = []
    for line, src, why in code:
        if why:
            skipped.append(f"line {line}: {why}")
            continue
        try:
            exec(compile(src, f"{_id(page)}:{line}", "exec"), namespace)
        except Exception as e:
            pytest.fail(f"{_id(page)}, python block at line {line} raised {type(e).__name__}: {e}")
    if skipped and len(skipped) == len(code):
        pytest.skip("; ".join(skipped))


def _commands(page: Path) -> list[tuple[int, list[str]]]:
    out = []
    for lang, start, src, _ in blocks(page):
        if lang not in SHELL:
            continue
        pending, first = "", 0
        for k, raw in enumerate(src.splitlines()):
            text = raw.split(" #", 1)[0].strip()
            if not pending:
                first = start + k
            if text.endswith("\\"):  # a command continued on the next line
                pending += text[:-1] + " "
                continue
            text, pending = pending + text, ""
            if text and not text.startswith("#"):
                out.append((first, shlex.split(text)))
    return out


def _check_python_module(argv: list[str]) -> str | None:
    """Parse a documented ``python -m MODULE ARGS`` with the module's own parser."""
    module, args = argv[2], argv[3:]
    if module == "pipeline.export":
        from pipeline.export import check_args, parser
    elif module == "pipeline.reproduce":
        from pipeline.reproduce import parser

        check_args = None
    else:
        return None
    try:
        ns = parser().parse_args(args)
    except SystemExit:
        return f"the parser refuses {shlex.join(args)}"
    return check_args(ns) if check_args else None


def _make_targets() -> set[str]:
    text = (ROOT / "Makefile").read_text()
    return set(re.findall(r"^([\w-]+):", text, flags=re.M))


@pytest.mark.parametrize("page", [p for p in PAGES if _has(p, SHELL)], ids=_id)
def test_documented_commands_parse(page: Path, capsys) -> None:
    checked = 0
    targets = _make_targets()
    for line, argv in _commands(page):
        if argv[:2] == ["python", "-m"] and len(argv) > 2:
            problem = _check_python_module(argv)
            checked += 1
        elif argv and argv[0] == "make":
            wanted = [a for a in argv[1:] if "=" not in a]
            problem = next((f"no make target {t!r}" for t in wanted if t not in targets), None)
            checked += 1
        else:
            continue
        assert problem is None, f"{_id(page)}:{line}: {shlex.join(argv)}: {problem}"
    capsys.readouterr()  # argparse's usage text of a refused command is in the failure message
    if not checked:
        pytest.skip(f"{_id(page)}'s shell blocks hold no python -m or make command")


LINK = re.compile(r"\]\(([^)#\s]+)(?:#[^)]*)?\)")


@pytest.mark.parametrize("page", PAGES, ids=_id)
def test_links_point_at_files(page: Path) -> None:
    """Every relative link (pages, images, source files) names a file of the repository."""
    missing = []
    for target in LINK.findall(page.read_text()):
        if "://" in target:
            continue
        path = (page.parent / target).resolve()
        if not path.is_relative_to(ROOT):  # the papers beside the checkout, not part of it
            continue
        if not path.exists():
            missing.append(target)
    assert not missing, f"{_id(page)} links to missing files: {', '.join(missing)}"
