"""Which tests pytest-xdist must keep on one worker: those sharing a fixture wider than a test.

Under ``--dist loadgroup`` (``make test``) tests are spread one by one, except those
with the same ``xdist_group`` mark, which go to one worker together. A module- or
class-scoped fixture (a trained model, an exported file, a job run) is built once
per process that uses it, so tests sharing one are grouped by their file; a
package-scoped one groups its folder. Session-scoped fixtures are not grouped:
``tests.built_once`` shares their folders between workers instead. Tests using
none of these, like most, stay free to balance the workers.
"""

from __future__ import annotations

from pathlib import PurePosixPath

__all__ = ["group_of"]

_FILE_SCOPES = {"class", "module"}


def group_of(item) -> str | None:
    """The group of a collected test, or ``None`` when it may run on any worker."""
    if any(item.iter_markers("xdist_group")):
        return None  # grouped by hand
    info = getattr(item, "_fixtureinfo", None)  # doctests have none; pytest keeps no public view of scopes
    if info is None:
        return None
    scopes = {d.scope for defs in info.name2fixturedefs.values() for d in defs}
    path = item.nodeid.split("::", 1)[0]
    if "package" in scopes:
        return str(PurePosixPath(path).parent)
    return path if scopes & _FILE_SCOPES else None
