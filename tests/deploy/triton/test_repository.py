"""Triton repository: layout, batching rule, atomic writing, and every config parsed and checked against its file."""

from __future__ import annotations

import json
import os

import onnx
import pytest

from deploy.triton import (
    MARKER,
    TritonConfigError,
    add_version,
    batching_plan,
    check_repository,
    onnx_io,
    parse_config,
    validate_repository,
    write_repository,
)
from deploy.triton.config import Enum, check_config, to_pbtxt
from tests.deploy.triton.conftest import IMAGE, needs_tritonclient

CURVE = {1: 1.0, 8: 5.0, 16: 9.5, 64: 36.0}  # samples/s: 1000, 1600, 1684, 1778


# ---------------------------------------------------------------- batching rule


def test_batching_plan_prefers_only_sizes_that_are_clearly_faster():
    plan = batching_plan(CURVE)
    assert plan.max_batch_size == 64
    assert plan.preferred == [8]  # 16 is +5 % over 8, 64 is +5.6 % over 16: below the 10 % bar
    assert plan.throughput[8] == pytest.approx(1600.0)


def test_batching_plan_budget_caps_max_batch_and_preferred():
    plan = batching_plan(CURVE, latency_budget_ms=6.0)
    assert (plan.max_batch_size, plan.preferred) == (8, [8])
    flat = batching_plan({1: 1.0, 8: 8.0, 64: 64.0})
    assert flat.preferred == []  # a flat curve: no preferred size (Triton's advice)
    assert batching_plan(CURVE, min_gain=0.04, max_preferred=2).preferred == [16, 64]
    assert batching_plan(None, max_batch_size=32).max_batch_size == 32
    with pytest.raises(ValueError, match="batch"):
        batching_plan({0: 1.0})


# ---------------------------------------------------------------- ONNX side and text


def test_onnx_io_reads_names_types_and_dims(small_files):
    io = onnx_io(small_files["static"])
    assert io.batching
    assert [(t.name, t.data_type, t.dims) for t in io.inputs] == [("input", "TYPE_FP32", IMAGE)]
    assert [(t.name, t.data_type, t.dims) for t in io.outputs] == [("logits", "TYPE_FP32", (10,))]
    akp = onnx_io(small_files["live-akp"])
    assert [t.name for t in akp.inputs] == ["input"]  # AKPs (initializer-backed inputs) are not served
    assert akp.optional_inputs and all(".akp" in n for n in akp.optional_inputs)


def test_pbtxt_emitter_quotes_strings_and_writes_enums_bare():
    text = to_pbtxt({"name": 'a"b', "kind": Enum("KIND_CPU"), "flag": True, "empty": {}, "skip": None, "dims": []})
    assert text == 'name: "a\\"b"\nkind: KIND_CPU\nflag: true\nempty {\n}\n'


# ---------------------------------------------------------------- writing


def test_repository_layout_and_marker(small_files, tmp_path):
    info = write_repository(tmp_path / "repo", small_files, latency=CURVE, validate=False)
    repo = tmp_path / "repo"
    assert sorted(p.name for p in repo.iterdir()) == sorted([MARKER, "acl_onnxruntime", "acl_python"])
    assert (repo / "acl_onnxruntime/1/model.onnx").read_bytes() == small_files["static"].read_bytes()
    assert (repo / "acl_python/1/model.onnx").read_bytes() == small_files["static"].read_bytes()
    assert (repo / "acl_python/1/model.py").is_file()
    assert "KIND_GPU" in (repo / "acl_onnxruntime/config.pbtxt").read_text()
    assert "KIND_CPU" in (repo / "acl_onnxruntime/configs/cpu.pbtxt").read_text()
    assert "tensorrt" not in json.dumps(info.models)  # no engine given: no tensorrt_plan model
    meta = json.loads((repo / MARKER).read_text())
    assert meta["batching"]["preferred"] == [8] and meta["models"]["acl_python"]["backend"] == "python"
    assert not info.validated and info.validation.startswith("not validated")
    assert [p.name for p in tmp_path.iterdir()] == ["repo"]  # no temporary folder left


def test_an_unvalidated_repository_claims_no_protobuf_check(small_files, tmp_path):
    info = write_repository(tmp_path / "repo", small_files, latency=CURVE, validate=False)
    meta = json.loads((tmp_path / "repo" / MARKER).read_text())
    for text in (info.unverified, meta["unverified"]):
        assert "protobuf" not in text and "parsed" not in text, text  # whether it ran is `validated`, per run
        assert "never loaded by a server here" in text


def test_existing_folders_are_never_replaced_silently(small_files, tmp_path):
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    with pytest.raises(FileExistsError, match="not a repository written by acl-deploy"):
        write_repository(foreign, small_files, validate=False, overwrite=True)
    assert (foreign / "notes.txt").read_text() == "mine"

    repo = tmp_path / "repo"
    write_repository(repo, small_files, validate=False)
    with pytest.raises(FileExistsError, match="overwrite=True"):
        write_repository(repo, small_files, validate=False)
    write_repository(repo, small_files, latency={1: 1.0, 4: 2.0}, validate=False, overwrite=True)
    assert json.loads((repo / MARKER).read_text())["batching"]["max_batch_size"] == 4
    empty = tmp_path / "empty"
    empty.mkdir()
    write_repository(empty, small_files, validate=False)
    assert (empty / MARKER).is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["empty", "foreign", "repo"]


def test_the_current_folder_as_the_repository(small_files, tmp_path, monkeypatch):
    """``--triton-repo .`` (or ``""``) in an empty folder crashed after the whole job with an OSError traceback,
    ``Device or resource busy: '.' -> '..<random>.old'``: the staging folder was made inside ``.`` itself."""
    (tmp_path / "repo").mkdir()
    monkeypatch.chdir(tmp_path / "repo")
    write_repository(".", small_files, validate=False)
    assert (tmp_path / "repo" / MARKER).is_file()
    monkeypatch.chdir(tmp_path / "repo")  # the new folder: the one this process was in is replaced
    write_repository(".", small_files, latency={1: 1.0, 4: 2.0}, validate=False, overwrite=True)
    assert json.loads((tmp_path / "repo" / MARKER).read_text())["batching"]["max_batch_size"] == 4
    assert sorted(p.name for p in tmp_path.iterdir()) == ["repo"]


def test_a_failed_write_leaves_nothing(small_files, tmp_path):
    with pytest.raises(ValueError, match="live"):
        write_repository(tmp_path / "repo", {"static": small_files["static"]}, python_source="live", validate=False)
    assert list(tmp_path.iterdir()) == []


def test_engine_adds_a_tensorrt_model_capped_by_its_profile(small_files, tmp_path):
    engine = tmp_path / "static.fp32.engine"
    engine.write_bytes(b"not a real plan: the TensorRT backend cannot run here")
    engine.with_suffix(".engine.json").write_text(json.dumps({"profile": {"max": [16, *IMAGE]}}))
    info = write_repository(tmp_path / "repo", small_files, latency=CURVE, engine=engine, validate=False)
    text = (tmp_path / "repo/acl_tensorrt/config.pbtxt").read_text()
    assert 'platform: "tensorrt_plan"' in text and "KIND_GPU" in text and "max_batch_size: 16" in text
    assert info.models["acl_tensorrt"]["io_from"] == "acl_onnxruntime/1/model.onnx"


# ---------------------------------------------------------------- Triton's protobuf
# Marked `serve`: they need tritonclient (in the serve extra) and skip without it.


@pytest.mark.serve
def test_every_generated_config_parses_and_matches_its_onnx_file(small_files, tmp_path):
    needs_tritonclient()
    engine = tmp_path / "e.engine"
    engine.write_bytes(b"plan")
    info = write_repository(tmp_path / "repo", small_files, latency=CURVE, engine=engine, python_source="live")
    assert info.validated and "model_config.proto" in info.validation
    result = check_repository(tmp_path / "repo")
    assert set(result) == {
        "acl_onnxruntime/config.pbtxt",
        "acl_onnxruntime/configs/cpu.pbtxt",
        "acl_python/config.pbtxt",
        "acl_tensorrt/config.pbtxt",
    }
    assert all(problems == [] for problems in result.values()), result
    config = parse_config((tmp_path / "repo/acl_python/config.pbtxt").read_text())
    assert config.backend == "python" and config.max_batch_size == 64
    assert list(config.dynamic_batching.preferred_batch_size) == [8]
    assert [(w.batch_size, list(w.inputs)) for w in config.model_warmup] == [(1, ["input"]), (8, ["input"])]
    assert config.parameters["onnx_file"].string_value == "model.onnx"
    # the python model serves the live file here
    live = onnx.load(str(tmp_path / "repo/acl_python/1/model.onnx"))
    assert any(n.domain == "ai.acl" for n in live.graph.node)


@pytest.mark.serve
@pytest.mark.parametrize(
    "edit, message",
    [
        (
            lambda t: t.replace("dims: [ 3, 16, 16 ]", "dims: [ 3, 32, 32 ]", 1),
            "dims [3, 32, 32] in the config, [3, 16, 16]",
        ),
        (lambda t: t.replace('name: "logits"', 'name: "probs"'), "ONNX output 'logits' is missing"),
        (lambda t: t.replace("data_type: TYPE_FP32", "data_type: TYPE_FP16", 1), "TYPE_FP16 in the config, TYPE_FP32"),
        (
            lambda t: t.replace("preferred_batch_size: [ 8 ]", "preferred_batch_size: [ 128 ]"),
            "outside 1..max_batch_size",
        ),
        (
            lambda t: t.replace("max_batch_size: 64", "max_batch_size: 64\nmax_queue_size: 3"),
            "acl_python/config.pbtxt:4:1",
        ),
        (lambda t: t.replace("KIND_CPU", "KIND_TPU"), "KIND_TPU"),
    ],
    ids=["dims", "output-name", "dtype", "preferred", "unknown-field", "bad-enum"],
)
def test_check_names_what_is_wrong(small_files, tmp_path, edit, message):
    needs_tritonclient()
    write_repository(tmp_path / "repo", small_files, latency=CURVE)
    cfg = tmp_path / "repo/acl_python/config.pbtxt"
    cfg.write_text(edit(cfg.read_text()))
    problems = check_repository(tmp_path / "repo")["acl_python/config.pbtxt"]
    assert any(message in p for p in problems), problems
    with pytest.raises(TritonConfigError, match="problem"):
        validate_repository(tmp_path / "repo")


@pytest.mark.serve
def test_check_config_against_an_unbatched_file(small_files, tmp_path):
    needs_tritonclient()
    model = onnx.load(str(small_files["static"]))
    for vi in (*model.graph.input, *model.graph.output):
        vi.type.tensor_type.shape.dim[0].ClearField("dim_param")
        vi.type.tensor_type.shape.dim[0].dim_value = 4
    io = onnx_io(model)
    assert not io.batching and io.inputs[0].dims == (4, *IMAGE)
    write_repository(tmp_path / "repo", small_files)
    config = parse_config((tmp_path / "repo/acl_onnxruntime/config.pbtxt").read_text())
    problems = check_config(config, io)
    assert any("no dynamic batch dimension" in p for p in problems), problems


@pytest.mark.serve
def test_add_version_writes_a_complete_folder(small_files, tmp_path):
    info = write_repository(tmp_path / "repo", small_files)
    v2 = add_version(tmp_path / "repo", "acl_python", small_files["static"])
    assert v2.name == "2" and sorted(p.name for p in v2.iterdir()) == ["model.onnx", "model.py"]
    v2o = add_version(tmp_path / "repo", "acl_onnxruntime", onnx.load(str(small_files["static"])))
    assert sorted(p.name for p in v2o.iterdir()) == ["model.onnx"]
    assert not [p for p in (tmp_path / "repo/acl_python").iterdir() if p.name.startswith(".")]
    with pytest.raises(FileExistsError, match="version 2"):
        add_version(tmp_path / "repo", "acl_python", small_files["static"], version=2)
    if info.validated:  # a file with other inputs than the config is refused
        other = onnx.load(str(small_files["static"]))
        other.graph.input[0].name = "image"
        for node in other.graph.node:
            node.input[:] = ["image" if i == "input" else i for i in node.input]
        with pytest.raises(TritonConfigError, match="config input 'input' is not an ONNX input"):
            add_version(tmp_path / "repo", "acl_python", other)
        assert sorted(p.name for p in (tmp_path / "repo/acl_python").iterdir()) == ["1", "2", "config.pbtxt"]
        assert all(ps == [] for ps in check_repository(tmp_path / "repo").values())


def test_repository_files_are_readable_by_others(small_files, tmp_path):
    write_repository(tmp_path / "repo", small_files, validate=False)
    mode = os.stat(tmp_path / "repo").st_mode & 0o777
    assert mode & 0o055 == 0o055 & ~_umask()  # group/other read+execute as a plain mkdir gives


def _umask() -> int:
    m = os.umask(0)
    os.umask(m)
    return m
