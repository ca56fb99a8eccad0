"""``pipeline.experiments.cluster``: what a grid on a cluster says when the cluster goes away."""

from __future__ import annotations

import pytest

pytest.importorskip("distributed", reason="Dask distributed is not installed (the cluster extra)")


def test_a_lost_scheduler_is_one_line_saying_the_finished_runs_are_kept(tmp_path, monkeypatch):
    """A killed scheduler cancels every future: that was three tracebacks, not the one line a lost worker gives."""
    import distributed
    from distributed.client import FutureCancelledError

    from pipeline.errors import UserError
    from pipeline.experiments import cluster
    from pipeline.experiments.grid import build_grid

    class Lost:
        def result(self):
            raise FutureCancelledError("acl-run-x", "scheduler-connection-lost")

    class Client:
        loop = None

        def submit(self, *args, **kwargs):
            return Lost()

        def cancel(self, futures):
            raise AssertionError("nothing to cancel once the scheduler is gone")

    monkeypatch.setattr(distributed, "as_completed", lambda futures, loop=None: iter(futures))
    grid = build_grid("digits", quick=True, epochs=1, limit=40)
    todo = [(grid.cells[0], grid.seeds[0])]
    with pytest.raises(UserError, match="scheduler was lost .*scheduler-connection-lost.*finished runs are kept"):
        cluster.ClusterExecutor(Client(), print)(grid.to_json(), todo, tmp_path, lambda rec: None)
