"""Accuracy control: the drop bound holds, by keeping the layers that hurt most in FP32."""

from __future__ import annotations

import onnx
import pytest

from deploy.int8.sensitivity import accuracy, controlled_int8, logits
from tests.deploy.int8.models import export_static, fragile, splits


@pytest.fixture(scope="module")
def fragile_file(tmp_path_factory):
    model = fragile()
    folder = tmp_path_factory.mktemp("fragile")
    static = export_static(model, folder / "model.static.onnx")
    calibration = splits()["calibration"][0]
    x_val, y_val = splits()["validation"]
    return model, static, calibration, x_val, y_val, folder


def test_a_fragile_layer_is_found_and_kept_in_fp32_until_the_bound_holds(fragile_file):
    _, static, calibration, x_val, y_val, folder = fragile_file
    said = []
    r = controlled_int8(static, folder / "int8.onnx", calibration, x_val, y_val, max_drop=1.0, log=said.append)
    names = [n.name for n in onnx.load(str(static)).graph.node if n.op_type in ("Conv", "Gemm")]
    # The 1x1 conv reading the activation whose channel 0 is 2000 times the others: its input's per-tensor
    # scale is what loses the other channels (the conv making that activation keeps float outputs when alone).
    big = names[2]
    assert r.tried[0]["fp32_layers"] == 0 and r.float_accuracy - r.tried[0]["accuracy"] > 1.0, "all-INT8 fails"
    assert said and "measuring" in said[0]
    assert max(r.sensitivity, key=r.sensitivity.get) == big
    assert r.excluded[0][0] == big and r.met_bound and r.drop <= 1.0
    assert len(r.excluded) < len(names), "some layers stay INT8"
    # The file written is the one measured: its accuracy, and its FP32 layers hold float weights.
    assert accuracy(logits(r.path, x_val), y_val) == pytest.approx(r.int8_accuracy)
    m = onnx.load(str(r.path))
    conv = next(n for n in m.graph.node if n.name == big)
    assert conv.input[1] in {i.name for i in m.graph.initializer}, "kept FP32: its weight is not dequantized"


def test_a_mix_that_keeps_accuracy_but_changes_answers_is_not_accepted(fragile_file):
    """The parity rows judge top-1 agreement with the float file; control must not accept a mix they would fail."""
    _, static, calibration, x_val, y_val, folder = fragile_file
    loose = controlled_int8(static, folder / "loose.onnx", calibration, x_val, y_val, max_drop=100.0, min_agreement=0.0)
    assert loose.met_bound and loose.excluded == [], "with no agreement bar, all-INT8 passes a 100 pp bound"
    bar = loose.agreement + 1e-6  # just above what all-INT8 agrees: control has to keep layers in FP32
    strict = controlled_int8(static, folder / "strict.onnx", calibration, x_val, y_val, max_drop=100.0, min_agreement=bar)
    assert strict.tried[0]["agreement"] == pytest.approx(loose.agreement)
    assert len(strict.excluded) >= 1, strict.tried
    if strict.met_bound:
        assert strict.agreement >= bar, strict.tried
    else:
        best = max(t["agreement"] for t in strict.tried)
        assert strict.agreement == best, strict.tried


def test_the_agreement_bar_defaults_to_the_int8_row_of_the_tolerance_table(fragile_file):
    from export.compare import TOLERANCES

    _, static, calibration, x_val, y_val, folder = fragile_file
    r = controlled_int8(static, folder / "default.onnx", calibration, x_val, y_val, max_drop=1.0)
    assert r.min_agreement == TOLERANCES["int8"].min_top1
    assert r.met_bound and r.agreement >= r.min_agreement, r.tried
