"""The metadata document (schema 2), its two encodings (ONNX metadata_props and the JSON
sidecar), and the sidecar beside every exported model."""

from __future__ import annotations

import json
import subprocess
import sys
from contextlib import nullcontext as does_not_raise
from pathlib import Path

import onnx
import onnxruntime as ort
import pytest

from runtime import Detector, MetadataError, ModelMetadata, Preprocessing
from runtime.contract import INPUTS, OUTPUTS
from runtime.metadata import RESAMPLE_FILTERS, SCHEMA_KEY
from runtime.sidecar import (
    file_sha256,
    read_sidecar,
    record_runtime,
    sidecar_path,
    write_sidecar,
)

ROOT = Path(__file__).resolve().parents[1]

METADATA = ModelMetadata(
    id2label={0: "cat", 1: "dog", 10: "bird"},
    preprocessing=Preprocessing(
        height=96, width=160, resample=3, do_normalize=True, image_mean=(0.5, 0.4, 0.3)
    ),
    source_checkpoint="/runs/pets/best",
    opset=18,
    toolkit_version="0.1.0",
    precision="int8",
    num_top_queries=50,
    extra={"quantization": "static QDQ"},
)


@pytest.mark.unit
def test_document_round_trips_through_props_and_json():
    document = METADATA.to_document()
    assert ModelMetadata.from_document(json.loads(json.dumps(document))) == METADATA
    props = METADATA.to_props()
    assert ModelMetadata.from_props(props) == METADATA
    # metadata_props hold the same information: every key, values JSON-encoded unless text
    assert props[SCHEMA_KEY] == "2" and set(props) - {SCHEMA_KEY} == set(document) - {"schema"}
    for key, value in document.items():
        if key != "schema":
            assert props[key] == (value if isinstance(value, str) else json.dumps(value))


@pytest.mark.unit
def test_document_spells_out_what_a_client_needs():
    document = METADATA.to_document()
    assert document["id2label"] == {"0": "cat", "1": "dog", "10": "bird"}
    assert document["input_size"] == [96, 160]  # [height, width]
    pre = document["preprocessing"]
    assert pre["resample"] == "bicubic" and pre["antialias"] is True
    assert pre["size"] == {"height": 96, "width": 160}
    assert pre["do_normalize"] and pre["image_mean"] == [0.5, 0.4, 0.3]
    assert (pre["color"], pre["exif_transpose"], pre["alpha_background"], pre["layout"]) == (
        "RGB", True, [255, 255, 255], "NCHW"
    )  # fmt: skip
    assert [t["name"] for t in document["inputs"]] == ["images", "orig_target_sizes"]
    assert [t["name"] for t in document["outputs"]] == ["labels", "boxes", "scores"]
    shapes = {t["name"]: (t["dtype"], t["shape"]) for t in document["inputs"] + document["outputs"]}
    assert shapes == {
        "images": ("float32", ["batch", 3, 96, 160]),
        "orig_target_sizes": ("int64", ["batch", 2]),
        "labels": ("int64", ["batch", 50]),
        "boxes": ("float32", ["batch", 50, 4]),
        "scores": ("float32", ["batch", 50]),
    }
    assert document["quantization"] == "static QDQ"


@pytest.mark.unit
@pytest.mark.parametrize(("name", "code"), sorted(RESAMPLE_FILTERS.items()))
def test_every_resample_filter_by_name(name, code):
    pre = Preprocessing(height=8, width=8, resample=code)
    assert pre.to_dict()["resample"] == name
    assert pre.to_dict()["antialias"] is (name != "nearest")
    assert Preprocessing.from_dict(pre.to_dict()) == pre


@pytest.mark.unit
def test_schema_1_files_are_still_read():
    props = {
        SCHEMA_KEY: "1",
        "id2label": json.dumps({"0": "cat"}),
        "input_size": "[64, 64]",
        "preprocessing": json.dumps({"size": {"height": 64, "width": 64}, "resample": 2}),
        "opset": "17",
        "precision": "fp32",
        "num_top_queries": "20",
        "orig_target_sizes": "int64 [N, 2] as (width, height)",
    }
    meta = ModelMetadata.from_props(props)
    assert meta.id2label == {0: "cat"} and meta.preprocessing.resample_name == "bilinear"
    assert meta.num_top_queries == 20 and meta.extra == {}


def _broken(**changes):
    document = METADATA.to_document()
    for key, value in changes.items():
        if key.startswith("pre_"):
            document["preprocessing"][key[4:]] = value
        elif value is None:
            del document[key]
        else:
            document[key] = value
    return document


@pytest.mark.unit
@pytest.mark.parametrize(
    ("document", "exception"),
    [
        (_broken(), does_not_raise()),
        (_broken(schema=3), pytest.raises(MetadataError, match="schema 3 is not supported")),
        (_broken(pre_resample="area"), pytest.raises(MetadataError, match="'area' is not one")),
        (_broken(pre_antialias=False), pytest.raises(MetadataError, match="contradicts")),
        (_broken(pre_exif_transpose=False), pytest.raises(MetadataError, match="exif_transpose")),
        (_broken(pre_color="BGR"), pytest.raises(MetadataError, match="color")),
        (_broken(input_size=[160, 96]), pytest.raises(MetadataError, match="input_size")),
        (_broken(id2label=None), pytest.raises(MetadataError, match="missing key 'id2label'")),
        (_broken(id2label={"cat": "0"}), pytest.raises(MetadataError, match="malformed")),
    ],
)
def test_bad_documents_say_what_is_wrong(document, exception):
    with exception:
        assert ModelMetadata.from_document(document, source="m.json") == METADATA


# --- the sidecar file ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def exported(tiny_checkpoint: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    from export import export_checkpoint

    output = tmp_path_factory.mktemp("sidecar") / "model.onnx"
    return Path(export_checkpoint(tiny_checkpoint, output, verify=False).path)


@pytest.mark.model
def test_export_writes_the_sidecar_equal_to_the_onnx_metadata(exported):
    path = sidecar_path(exported)
    assert path.name == "model.json"
    document = json.loads(path.read_text())
    assert document["schema"] == 2
    assert document["model"] == {
        "file": "model.onnx",
        "sha256": file_sha256(exported),
        "bytes": exported.stat().st_size,
    }
    assert "verified" not in document  # verify=False: nothing was compared with PyTorch
    props = {p.key: p.value for p in onnx.load(str(exported)).metadata_props}
    assert read_sidecar(path) == ModelMetadata.from_props(props) == Detector(exported).metadata


@pytest.mark.model
def test_sidecar_tensors_are_the_graphs(exported):
    """Names, dtypes and shapes in the sidecar are what onnxruntime reports; K is named."""
    document = json.loads(sidecar_path(exported).read_text())
    session = ort.InferenceSession(str(exported), providers=["CPUExecutionProvider"])
    k = document["num_top_queries"]
    assert [o.shape for o in session.get_outputs()] == [["batch", "K"], ["batch", "K", 4],
                                                         ["batch", "K"]]  # fmt: skip
    dtypes = {"tensor(float)": "float32", "tensor(int64)": "int64"}
    for specs, values, contract in (
        (document["inputs"], session.get_inputs(), INPUTS),
        (document["outputs"], session.get_outputs(), OUTPUTS),
    ):
        assert [s["name"] for s in specs] == [v.name for v in values] == [c.name for c in contract]
        for spec, value in zip(specs, values, strict=True):
            assert spec["dtype"] == dtypes[value.type]
            graph = [k if d == "K" else d for d in value.shape]
            height, width = document["input_size"]
            graph = [{"height": height, "width": width}.get(d, d) for d in graph]
            assert spec["shape"] == graph


@pytest.mark.model
def test_stale_missing_and_rewritten_sidecar(exported, tmp_path):
    model = tmp_path / "model.onnx"
    model.write_bytes(exported.read_bytes())
    with pytest.raises(FileNotFoundError, match=r"model\.json: no such sidecar"):
        read_sidecar(sidecar_path(model))
    sidecar_path(model).write_text(sidecar_path(exported).read_text())
    assert read_sidecar(sidecar_path(model)) == Detector(model).metadata
    onnx_model = onnx.load(str(model))
    onnx_model.producer_name = "edited"  # another file under the same name
    onnx.save(onnx_model, str(model))
    with pytest.raises(MetadataError, match=r"another version of model\.onnx"):
        read_sidecar(sidecar_path(model))
    sidecar_path(model).write_text("{not json")
    with pytest.raises(MetadataError, match="not a JSON sidecar"):
        read_sidecar(sidecar_path(model))
    # python -m runtime.sidecar rewrites it from the file's own metadata, torch-free
    done = subprocess.run(
        [sys.executable, "-m", "runtime.sidecar", str(model), str(tmp_path / "missing.onnx")],
        capture_output=True, text=True, cwd=ROOT, timeout=120,
    )  # fmt: skip
    assert done.returncode == 2, done.stderr  # one of the two files does not exist
    assert "missing.onnx: no such model file" in done.stderr and "Traceback" not in done.stderr
    assert read_sidecar(sidecar_path(model)) == Detector(model).metadata


@pytest.mark.model
def test_write_sidecar_refuses_a_foreign_model(tmp_path):
    from runtime_fixtures import write_plain_onnx

    plain = write_plain_onnx(tmp_path / "plain.onnx")
    with pytest.raises(MetadataError, match="no rtdetr-deploy metadata"):
        write_sidecar(plain)
    assert not sidecar_path(plain).exists()


@pytest.mark.model
def test_record_runtime_replaces_its_own_entry_and_refuses_a_stale_sidecar(exported, tmp_path):
    """The browser check's record (runtime.web --verify): one entry per runtime and provider,
    other keys and entries kept, the model still readable; never into a stale sidecar."""
    model = tmp_path / "model.onnx"
    model.write_bytes(exported.read_bytes())
    document = json.loads(sidecar_path(exported).read_text())
    export_entry = {"runtime": "onnxruntime 1.32.0", "provider": "CPUExecutionProvider"}
    document["verified"] = {"report": "model.verify.json", "runtimes": [export_entry]}
    sidecar_path(model).write_text(json.dumps(document))
    web = {"runtime": "onnxruntime-web 1.30.0", "provider": "wasm", "passed": False}
    record_runtime(model, web)
    record_runtime(model, {**web, "provider": "webgpu"})
    record_runtime(model, {**web, "passed": True})  # a rerun replaces the earlier outcome
    verified = json.loads(sidecar_path(model).read_text())["verified"]
    assert verified["report"] == "model.verify.json"
    assert verified["runtimes"] == [
        export_entry,
        {**web, "provider": "webgpu"},
        {**web, "passed": True},
    ]
    assert read_sidecar(sidecar_path(model)) == Detector(model).metadata
    before = sidecar_path(model).read_text()
    model.write_bytes(exported.read_bytes() + b"\0")  # another file under the same name
    with pytest.raises(MetadataError, match="another version"):
        record_runtime(model, web)
    assert sidecar_path(model).read_text() == before
