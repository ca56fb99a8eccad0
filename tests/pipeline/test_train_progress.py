"""What training prints: ``progress`` turns the bar off, never the line per epoch."""

from __future__ import annotations

import io
import re

import pytest

from tests.pipeline.resume_job import tiny_net
from tests.pipeline.test_datasets import make_cifar

EPOCH_LINE = re.compile(r"^ {6}epoch (\d+)/2: loss \d+\.\d{4}, \d+ images/s$")


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    from pipeline.data import load_dataset

    root = tmp_path_factory.mktemp("cifar")
    make_cifar(root, n_train=8)
    return load_dataset(f"cifar10:{root}")


class _Terminal(io.StringIO):
    """stderr as a terminal, where tqdm draws its bar."""

    def isatty(self) -> bool:
        return True


def _train(data, progress: bool) -> list[str]:
    from pipeline.train import train

    lines: list[str] = []
    train(tiny_net(), data, epochs=2, batch_size=16, progress=progress, workers=0, log=lines.append)
    return lines


def test_no_progress_keeps_the_epoch_lines(data, monkeypatch):
    terminal = _Terminal()
    monkeypatch.setattr("sys.stderr", terminal)  # a bar would be drawn here if one were shown
    lines = _train(data, progress=False)
    assert [int(EPOCH_LINE.match(ln).group(1)) for ln in lines if EPOCH_LINE.match(ln)] == [1, 2], lines
    assert "train" not in terminal.getvalue(), "no bar with progress=False"


def test_the_bar_and_the_epoch_lines_are_both_shown_on_a_terminal(data, monkeypatch):
    terminal = _Terminal()
    monkeypatch.setattr("sys.stderr", terminal)
    lines = _train(data, progress=True)
    assert [int(EPOCH_LINE.match(ln).group(1)) for ln in lines if EPOCH_LINE.match(ln)] == [1, 2], lines
    assert "train: " in terminal.getvalue() and "img/s" in terminal.getvalue(), terminal.getvalue()[-500:]
