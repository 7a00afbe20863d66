"""Generates the tiny ONNX models engine/ort's tests use (run by hand:
`pip install onnx==1.17.0 && python3 gen.py`; the outputs are committed).

cast_fp16.onnx     x float32 [2,3] -> y = Cast(x, float16) [2,3]
cast_fp16_dyn.onnx x float32 [N,3] -> y = Cast(x, float16) [N,3]
"""
import onnx
from onnx import TensorProto, helper


def cast_model(dims, path):
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, dims)
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT16, dims)
    node = helper.make_node("Cast", ["x"], ["y"], to=TensorProto.FLOAT16)
    graph = helper.make_graph([node], "cast", [x], [y])
    m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)], producer_name="falocal-gen")
    m.ir_version = 8
    onnx.checker.check_model(m)
    onnx.save(m, path)


cast_model([2, 3], "cast_fp16.onnx")
cast_model(["N", 3], "cast_fp16_dyn.onnx")
