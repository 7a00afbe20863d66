"""Generates the tiny ONNX models engine/ort's tests use (run by hand:
`pip install onnx==1.17.0 && python3 gen.py`; the outputs are committed).

cast_fp16.onnx     x float32 [2,3] -> y = Cast(x, float16) [2,3]
cast_fp16_dyn.onnx x float32 [N,3] -> y = Cast(x, float16) [N,3]
ops_dyn.onnx       a, b float32 [N,4], n int64 [N] -> sum = a+b float32 [N,4],
                   sq = n*n int64 [N], gt = a>b bool [N,4]
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


def ops_model(path):
    a = helper.make_tensor_value_info("a", TensorProto.FLOAT, ["N", 4])
    b = helper.make_tensor_value_info("b", TensorProto.FLOAT, ["N", 4])
    n = helper.make_tensor_value_info("n", TensorProto.INT64, ["N"])
    outs = [
        helper.make_tensor_value_info("sum", TensorProto.FLOAT, ["N", 4]),
        helper.make_tensor_value_info("sq", TensorProto.INT64, ["N"]),
        helper.make_tensor_value_info("gt", TensorProto.BOOL, ["N", 4]),
    ]
    nodes = [
        helper.make_node("Add", ["a", "b"], ["sum"]),
        helper.make_node("Mul", ["n", "n"], ["sq"]),
        helper.make_node("Greater", ["a", "b"], ["gt"]),
    ]
    graph = helper.make_graph(nodes, "ops", [a, b, n], outs)
    m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)], producer_name="falocal-gen")
    m.ir_version = 8
    onnx.checker.check_model(m)
    onnx.save(m, path)


ops_model("ops_dyn.onnx")
