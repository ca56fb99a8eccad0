import inspect
import re
import sys
from pathlib import Path

import pytest

from acl.families import FAMILIES, family

ACL_DOCS = Path(__file__).resolve().parents[2] / "docs" / "acl.md"


def test_registry_is_complete_and_consistent():
    from acl.fixed_families import _DRAW

    assert list(FAMILIES) == ["G", "Lg", "Lt", "Tf", "Ts", "M", "P", "D", "H", "S", "O", "U"]
    assert len({f.colour for f in FAMILIES.values()}) == len(FAMILIES)
    assert [s for s, f in FAMILIES.items() if f.fixed] == list(_DRAW), "every fixed family draws its kernels"
    for f in FAMILIES.values():
        if f.symbol == "P" or f.fixed:
            assert f.op is None and f.formula is None and not f.is_analytic and f.stores_kernels
            assert f.num_akps(3) == (9 if f.symbol == "P" else 0)  # eq. 25: a fixed kernel learns nothing
            continue
        assert f.op and f.formula is not None
        # a formula takes its AKP columns by name, then the samples
        assert list(inspect.signature(f.formula).parameters)[-1] == "s"
        assert len(inspect.signature(f.formula).parameters) == len(f.akps) + 1
        for akp in f.akps:
            assert akp.unit in ("px", "rad")
            for s in (1, 3, 7):
                lo, hi = akp.init(s)
                assert lo < hi, (f.symbol, akp.name, s)


def test_docs_family_table_matches_the_registry():
    rows = re.findall(r"^\| `(\w+)` \| [^|]+ \| ([^|]+) \|", ACL_DOCS.read_text(), flags=re.M)
    table = {sym: names.strip() for sym, names in rows if sym in FAMILIES}
    for sym, f in FAMILIES.items():
        if f.akps:
            assert table[sym] == ", ".join(f.akp_names), sym


def test_unknown_symbol_is_named():
    with pytest.raises(
        ValueError, match="unknown kernel family 'Q'; expected one of G, Lg, Lt, Tf, Ts, M, P, D, H, S, O, U"
    ):
        family("Q")


def test_registry_imports_without_pytorch():
    import subprocess

    code = "import sys; sys.modules['torch'] = None\nimport acl.families, acl.spec, export.functions\n"
    subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True)
