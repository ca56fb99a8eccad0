"""``write_outputs`` of the paper grids: an interrupted plot leaves no file behind."""

from __future__ import annotations

import pytest

from pipeline.experiments import explainfix_tables, tables

PLOTS = {tables: ("_plot_compact", "_plot_ablation"), explainfix_tables: ("_plot_sanity",)}


@pytest.mark.parametrize("module, plot", [(m, p) for m, plots in PLOTS.items() for p in plots])
def test_an_interrupted_plot_leaves_no_temporary_file(module, plot, tmp_path, monkeypatch):
    """Ctrl-C during a plot left ``.<name>.png.<random>.png`` in ``--out``, which no later run removed."""

    def plotted(doc, path):
        path.write_bytes(b"\x89PNG")

    def interrupted(doc, path):
        path.write_bytes(b"\x89PNG half")  # matplotlib has started writing
        raise KeyboardInterrupt

    monkeypatch.setattr(module, "to_markdown", lambda doc, wall_seconds=None: "# results\n")
    for name in PLOTS[module]:
        monkeypatch.setattr(module, name, interrupted if name == plot else plotted)
    with pytest.raises(KeyboardInterrupt):
        module.write_outputs({}, tmp_path)
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []
