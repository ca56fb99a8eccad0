"""An ablated model (acl.ablate: Mean segments in place of a family) exports like any ACL model."""

from __future__ import annotations

import numpy as np
import onnx
import pytest

import acl
import export
from export.passes import layers_from_metadata
from tests.conftest import ort_out, small_anann, torch_out


@pytest.mark.parametrize(("family", "mode"), [("G", "static"), ("P", "live")])
def test_ablated_model_exports_and_verifies(tmp_path, family, mode, fresh_input):
    ablated = acl.ablate(small_anann(), family)
    assert all(family not in layer.spec.counts() for _, layer in acl.acl_layers(ablated))
    path = export.to_onnx(ablated, tmp_path / f"ablated-{family}.{mode}.onnx", (1, 1, 12, 12), mode=mode, verify=True)
    m = onnx.load(str(path))
    # the file records the ablated specs, with their Mean segments
    assert layers_from_metadata(m) == {n: str(layer.spec) for n, layer in acl.acl_layers(ablated)}
    if mode == "live":
        ops = {n.op_type for n in m.graph.node} | {f.name for f in m.functions}
        assert "MeanKernel" in ops
    np.testing.assert_allclose(ort_out(path, fresh_input), torch_out(ablated, fresh_input), atol=1e-4, rtol=1e-3)
