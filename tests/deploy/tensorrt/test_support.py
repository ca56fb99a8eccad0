import subprocess
import sys

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from deploy.tensorrt import check_onnx
from export.passes import IR_VERSION, require_akp_inputs
from tests.in_process import run_main


def tiny(nodes, inputs=None, outputs=None, inits=(), opset=18, ir=IR_VERSION, functions=()):
    inputs = inputs or [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 1, 8, 8])]
    outputs = outputs or [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)]
    g = helper.make_graph(nodes, "g", inputs, outputs, initializer=list(inits))
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)], functions=list(functions))
    m.ir_version = ir
    return m


@pytest.mark.parametrize("mode", ["static", "live"])
def test_exports_pass(exported, mode):
    assert check_onnx(exported[mode]) == []


def test_live_akp_file_is_named_and_its_tensorrt_variant_passes(exported):
    problems = check_onnx(exported["live-akp"])
    assert problems and all("also has an initializer" in p for p in problems)
    assert any("'0.akp0_G'" in p for p in problems)
    variant = require_akp_inputs(onnx.load(str(exported["live-akp"])))
    assert check_onnx(variant) == []
    assert not ({t.name for t in variant.graph.initializer} & {i.name for i in variant.graph.input})


def test_live_file_with_its_function_removed_is_named(exported):
    m = onnx.load(str(exported["live"]))
    kept = [f for f in m.functions if f.name != "Gabor"]
    del m.functions[:]
    m.functions.extend(kept)
    problems = check_onnx(m)
    assert any(
        "(ai.acl.Gabor): custom-domain op with neither a model-local function nor a known TensorRT plugin" in p
        for p in problems
    )


def test_function_bodies_are_checked_after_inlining(exported):
    """A body op TensorRT lacks is found inside the ai.acl functions."""
    m = onnx.load(str(exported["live"]))
    for f in m.functions:
        if f.name == "LoG":
            for n in f.node:
                if n.op_type == "Exp":
                    n.op_type = "Det"  # unsupported by TensorRT
    assert any("op Det is not supported" in p for p in check_onnx(m))


def const(name, value):
    return helper.make_node("Constant", [], [name], value=onnx.numpy_helper.from_array(np.asarray(value)))


PLANTED = [
    ("ir", tiny([helper.make_node("Relu", ["x"], ["y"])], ir=11), "IR version 11 is newer than 10"),
    ("opset", tiny([helper.make_node("Relu", ["x"], ["y"])], opset=22), "opset 22 is outside 9-20"),
    ("op", tiny([helper.make_node("Det", ["x"], ["y"], name="d")]), "node 0 'd' (Det): op Det is not supported"),
    (
        "custom",
        tiny([helper.make_node("Sobel", ["x"], ["y"], domain="vision.ops", name="s")]),
        "(vision.ops.Sobel): custom-domain op",
    ),
    (
        "indices",
        tiny(
            [helper.make_node("MaxPool", ["x"], ["y", "idx"], kernel_shape=[2, 2], name="p")],
            outputs=[
                helper.make_tensor_value_info("y", TensorProto.FLOAT, None),
                helper.make_tensor_value_info("idx", TensorProto.INT64, None),
            ],
        ),
        "the Indices output is unsupported",
    ),
    ("1d pool", tiny([helper.make_node("MaxPool", ["x"], ["y"], kernel_shape=[2], name="p")]), "1D pooling"),
    (
        "dilated pool",
        tiny([helper.make_node("MaxPool", ["x"], ["y"], kernel_shape=[2, 2], dilations=[2, 2], name="p")]),
        "dilations [2, 2]",
    ),
    (
        "dynamic axes",
        tiny(
            [helper.make_node("ReduceSum", ["x", "axes"], ["y"], name="r")],
            inputs=[
                helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3]),
                helper.make_tensor_value_info("axes", TensorProto.INT64, [1]),
            ],
        ),
        "input 'axes' ('axes') must be a build-time constant",
    ),
    (
        "resize",
        tiny(
            [
                const("sc", np.array([1, 1, 2, 2], np.float32)),
                helper.make_node("Resize", ["x", "", "sc"], ["y"], mode="cubic", name="rs"),
            ]
        ),
        "resize mode 'cubic'",
    ),
    (
        "bad type",
        tiny(
            [helper.make_node("Sqrt", ["x"], ["y"], name="q")],
            inputs=[helper.make_tensor_value_info("x", TensorProto.INT32, [2])],
        ),
        "input 'x' has type INT32; TensorRT supports FP32, FP16, BF16",
    ),
    (
        "string",
        tiny(
            [helper.make_node("Identity", ["x"], ["y"], name="i")],
            inputs=[helper.make_tensor_value_info("x", TensorProto.STRING, [2])],
            outputs=[helper.make_tensor_value_info("y", TensorProto.STRING, [2])],
        ),
        "type STRING",
    ),
]


@pytest.mark.parametrize("name, model, expected", PLANTED, ids=[p[0] for p in PLANTED])
def test_planted_problems_are_named(name, model, expected):
    problems = check_onnx(model)
    assert any(expected in p for p in problems), problems


def test_constant_axes_from_a_constant_node_are_fine():
    m = tiny(
        [const("axes", np.array([1], np.int64)), helper.make_node("ReduceSum", ["x", "axes"], ["y"])],
        inputs=[helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3])],
    )
    assert check_onnx(m) == []


def run_cli(*args):
    return subprocess.run([sys.executable, "-m", "deploy.tensorrt", *args], capture_output=True, text=True, timeout=120)


def test_cli_exit_codes(exported, tmp_path, capsys):
    # Real processes where the interpreter's exit status is the point: 1 for problems, 2 for a usage error.
    bad = run_cli("check", str(exported["live-akp"]))
    assert bad.returncode == 1 and "problem(s)" in bad.stdout and "also has an initializer" in bad.stdout
    empty = tmp_path / "empty.onnx"
    empty.write_bytes(b"")
    usage = run_cli("chek", str(empty))
    assert usage.returncode == 2 and len(usage.stderr.strip().splitlines()) == 1 and "invalid choice" in usage.stderr
    # The rest in process (tests/in_process.py): each subprocess paid the imports again.
    code, out, _ = run_main(capsys, ["check", str(exported["static"]), str(exported["live"])], "deploy.tensorrt")
    assert code == 0 and out.count("ok for TensorRT's ONNX parser") == 2
    junk = tmp_path / "junk.onnx"
    junk.write_bytes(b"\x00not onnx")
    code, _, err = run_main(capsys, ["check", str(junk)], "deploy.tensorrt")
    assert code == 2 and "not a readable ONNX file" in err and "Traceback" not in err
    code, _, err = run_main(capsys, ["check", str(tmp_path / "none.onnx")], "deploy.tensorrt")
    assert code == 2 and "no such file" in err
    code, _, err = run_main(capsys, ["check", str(empty)], "deploy.tensorrt")
    assert code == 2 and err.strip() == f"error: {empty}: the file is empty (0 bytes), expected an ONNX model"


def test_cli_works_without_tensorrt_or_onnxruntime(exported):
    code = (
        "import sys; sys.modules['tensorrt'] = None; sys.modules['onnxruntime'] = None; sys.modules['torch'] = None\n"
        f"sys.argv = ['x', 'check', {str(exported['static'])!r}]\n"
        "import runpy; runpy.run_module('deploy.tensorrt', run_name='__main__')"
    )
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
