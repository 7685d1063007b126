"""A tiny ONNX embedding model with the default contract's I/O, for tests.

It average-pools the normalized input to 16x16x3 = 768 values, centres them
and scales to unit norm: a crude but real image embedding that separates
distinct synthetic cards.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import onnx
from onnx import TensorProto, helper

from pokedge.contract import default_contract, file_sha256

MODEL_ID = "tests-tiny-pool16:1"


def build_tiny_model(folder: Path, model_id: str = MODEL_ID, dim: int = 768) -> Path:
    """Write tiny.onnx and tiny.contract.json into `folder`; return the contract path."""
    folder.mkdir(parents=True, exist_ok=True)
    side = 224 // 14  # 16
    nodes = [
        helper.make_node("AveragePool", ["input"], ["pooled"], kernel_shape=[14, 14], strides=[14, 14]),
        helper.make_node("Flatten", ["pooled"], ["flat"], axis=1),
    ]
    if dim != 3 * side * side:
        nodes.append(helper.make_node("Slice", ["flat", "starts", "ends", "axes"], ["cut"]))
        last = "cut"
    else:
        last = "flat"
    nodes += [
        helper.make_node("ReduceMean", [last], ["mean"], axes=[1], keepdims=1),
        helper.make_node("Sub", [last, "mean"], ["centred"]),
        helper.make_node("LpNormalization", ["centred"], ["embeddings"], axis=1, p=2),
    ]
    initializers = []
    if last == "cut":
        initializers = [
            helper.make_tensor("starts", TensorProto.INT64, [1], [0]),
            helper.make_tensor("ends", TensorProto.INT64, [1], [dim]),
            helper.make_tensor("axes", TensorProto.INT64, [1], [1]),
        ]
    graph = helper.make_graph(
        nodes, "tiny",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 3, 224, 224])],
        [helper.make_tensor_value_info("embeddings", TensorProto.FLOAT, ["N", dim])],
        initializers,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    model_path = folder / "tiny.onnx"
    onnx.save(model, model_path)

    contract = default_contract(model_id=model_id, file="tiny.onnx")
    contract = replace(contract, sha256=file_sha256(model_path), output=replace(contract.output, dim=dim))
    contract_path = folder / "tiny.contract.json"
    contract.save(contract_path)
    return contract_path
