"""What this machine really gives LiteRT (``resnet-edge doctor``): a one-op model (a Relu), written with the
flatbuffers package LiteRT itself depends on, is loaded and run by the interpreter."""

from __future__ import annotations

from typing import Any

import numpy as np

from ..._lazy import lazy_import
from ..._quiet import quiet
from ...errors import first_line

RELU = 19  # tflite BuiltinOperator.RELU
FLOAT32 = 0  # tflite TensorType.FLOAT32
SCHEMA_VERSION = 3


def one_op_model() -> bytes:
    """A valid ``.tflite`` flatbuffer: input [1, 4] float32 -> RELU -> output (the schema's fields by slot number)."""
    import flatbuffers

    b = flatbuffers.Builder(512)

    def int_vector(values: list[int]) -> int:
        b.StartVector(4, len(values), 4)
        for value in reversed(values):
            b.PrependInt32(value)
        return b.EndVector()

    def table_vector(offsets: list[int]) -> int:
        b.StartVector(4, len(offsets), 4)
        for offset in reversed(offsets):
            b.PrependUOffsetTRelative(offset)
        return b.EndVector()

    tensors = []
    for name in ("x", "y"):
        label, shape = b.CreateString(name), int_vector([1, 4])
        b.StartObject(4)  # Tensor: shape, type, buffer, name
        b.PrependUOffsetTRelativeSlot(0, shape, 0)
        b.PrependInt8Slot(1, FLOAT32, -1)
        b.PrependUint32Slot(2, 0, 1)  # buffer 0: the empty sentinel
        b.PrependUOffsetTRelativeSlot(3, label, 0)
        tensors.append(b.EndObject())
    inputs, outputs = int_vector([0]), int_vector([1])
    b.StartObject(3)  # Operator: opcode_index, inputs, outputs
    b.PrependUint32Slot(0, 0, 1)
    b.PrependUOffsetTRelativeSlot(1, inputs, 0)
    b.PrependUOffsetTRelativeSlot(2, outputs, 0)
    operator = b.EndObject()
    tensor_list, operator_list = table_vector(tensors), table_vector([operator])
    graph_inputs, graph_outputs, graph_name = int_vector([0]), int_vector([1]), b.CreateString("main")
    b.StartObject(5)  # SubGraph: tensors, inputs, outputs, operators, name
    b.PrependUOffsetTRelativeSlot(0, tensor_list, 0)
    b.PrependUOffsetTRelativeSlot(1, graph_inputs, 0)
    b.PrependUOffsetTRelativeSlot(2, graph_outputs, 0)
    b.PrependUOffsetTRelativeSlot(3, operator_list, 0)
    b.PrependUOffsetTRelativeSlot(4, graph_name, 0)
    subgraph = b.EndObject()
    b.StartObject(4)  # OperatorCode: deprecated_builtin_code, custom_code, version, builtin_code
    b.PrependInt8Slot(0, RELU, 0)
    b.PrependInt32Slot(2, 1, 1)
    b.PrependInt32Slot(3, RELU, 0)
    code = b.EndObject()
    b.StartObject(1)  # Buffer (empty)
    buffer = b.EndObject()
    codes, subgraphs, buffers = table_vector([code]), table_vector([subgraph]), table_vector([buffer])
    description = b.CreateString("resnet-edge doctor probe")
    b.StartObject(5)  # Model: version, operator_codes, subgraphs, description, buffers
    b.PrependUint32Slot(0, SCHEMA_VERSION, 0)
    b.PrependUOffsetTRelativeSlot(1, codes, 0)
    b.PrependUOffsetTRelativeSlot(2, subgraphs, 0)
    b.PrependUOffsetTRelativeSlot(3, description, 0)
    b.PrependUOffsetTRelativeSlot(4, buffers, 0)
    b.Finish(b.EndObject(), file_identifier=b"TFL3")
    return bytes(b.Output())


def probe() -> dict[str, Any]:
    """The interpreter loads and runs a one-op model on the CPU."""
    interpreter_module = lazy_import("ai_edge_litert.interpreter", extra="tflite")
    x = np.array([[-1.0, 0.5, 2.0, -3.0]], dtype=np.float32)
    try:
        with quiet():  # the interpreter announces its XNNPACK delegate on stderr
            interpreter = interpreter_module.Interpreter(model_content=one_op_model(), num_threads=1)
            interpreter.allocate_tensors()
            interpreter.set_tensor(interpreter.get_input_details()[0]["index"], x)
            interpreter.invoke()
            y = interpreter.get_tensor(interpreter.get_output_details()[0]["index"])
    except Exception as exc:
        return {"devices": {"cpu": {"ok": False, "detail": f"cannot load or run a model: {first_line(exc, 200)}"}}}
    if not np.array_equal(y, np.maximum(x, 0)):
        return {"devices": {"cpu": {"ok": False, "detail": f"ran a one-op model but returned {y.tolist()}"}}}
    return {"devices": {"cpu": {"ok": True, "detail": "ran a one-op model (LiteRT interpreter)"}}}
