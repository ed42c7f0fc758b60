"""MediaPipe's BlazePose person detector (pose_detection.tflite) as ONNX, for the embedded detector.

    pip download mediapipe==0.10.14 --no-deps -d /tmp/mp      # the last wheels that ship the model
    unzip -j /tmp/mp/mediapipe-0.10.14-*.whl mediapipe/modules/pose_detection/pose_detection.tflite -d /tmp/mp
    pip install ai-edge-litert tflite                          # conversion only, not the runtime
    python -m engine_build.blazepose_onnx /tmp/mp/pose_detection.tflite hkmr_ros/data/blazepose_detector.onnx

The model (Apache-2.0, see THIRD_PARTY_LICENSES.md) stores fp16 weights behind DEQUANTIZE ops and
sparse ones behind DENSIFY, which no TFLite-to-ONNX converter handles; so the constants are read
from the TFLite interpreter (without its XNNPACK delegate, which hides them) after one run, kept
as fp16 initializers with a Cast, and the compute ops (Conv, depthwise Conv, Pad, Add,
DepthToSpace, bilinear Resize, Reshape, Concat) are rewritten in NCHW. Input `image_nhwc`
1x224x224x3 RGB in [-1, 1]; outputs `boxes` 1x2254x12 (face box and four body keypoints per
anchor, 224-pixel units) and `scores` 1x2254x1 (logits). The conversion checks the ONNX graph
against the TFLite interpreter on a random input and fails if they differ.
"""

import sys

import numpy as np
import onnx
import tflite
from ai_edge_litert.interpreter import Interpreter, OpResolverType
from onnx import TensorProto, helper, numpy_helper

OPS = {v: k for k, v in tflite.BuiltinOperator.__dict__.items() if not k.startswith("_")}


def options(op, cls):
    o = cls()
    t = op.BuiltinOptions()
    o.Init(t.Bytes, t.Pos)
    return o


def convert(src, dst):
    buf = open(src, "rb").read()
    model = tflite.Model.GetRootAsModel(buf, 0)
    g = model.Subgraphs(0)
    it = Interpreter(model_path=src, experimental_preserve_all_tensors=True, num_threads=1,
                     experimental_op_resolver_type=OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES)
    it.allocate_tensors()
    inp = it.get_input_details()[0]
    it.set_tensor(inp["index"], np.zeros(inp["shape"], np.float32))
    it.invoke()

    def tval(i):
        return np.array(it.get_tensor(i))

    consts = set()
    for k in range(g.OperatorsLength()):
        op = g.Operators(k)
        code = model.OperatorCodes(op.OpcodeIndex())
        name = OPS[max(code.BuiltinCode(), code.DeprecatedBuiltinCode())]
        if name in ("DEQUANTIZE", "DENSIFY"):
            consts.add(op.Outputs(0))
    for t in range(g.TensorsLength()):
        b = g.Tensors(t).Buffer()
        if b > 0 and model.Buffers(b).DataLength() > 0:
            consts.add(t)

    nodes, inits = [], []
    names = {}

    def tname(i):
        return names.setdefault(i, f"t{i}")

    def const(arr, hint):
        n = f"c_{hint}_{len(inits)}"
        arr = np.ascontiguousarray(arr)
        if arr.dtype == np.float32 and arr.size > 16:     # the weights are fp16 in the source
            inits.append(numpy_helper.from_array(arr.astype(np.float16), n + "_h"))
            nodes.append(helper.make_node("Cast", [n + "_h"], [n], to=TensorProto.FLOAT))
        else:
            inits.append(numpy_helper.from_array(arr, n))
        return n

    def act(out, fused, src_name):
        if fused == 0:
            nodes.append(helper.make_node("Identity", [src_name], [out]))
        elif fused == 1:
            nodes.append(helper.make_node("Relu", [src_name], [out]))
        elif fused == 3:
            nodes.append(helper.make_node("Clip", [src_name, const(np.float32(0), "lo"), const(np.float32(6), "hi")], [out]))
        else:
            raise NotImplementedError(f"fused activation {fused}")

    in_idx = g.Inputs(0)
    nodes.append(helper.make_node("Transpose", ["image_nhwc"], [tname(in_idx)], perm=[0, 3, 1, 2]))
    layout_nchw = {in_idx}          # tensors held in NCHW inside the graph
    for k in range(g.OperatorsLength()):
        op = g.Operators(k)
        code = model.OperatorCodes(op.OpcodeIndex())
        name = OPS[max(code.BuiltinCode(), code.DeprecatedBuiltinCode())]
        if name in ("DEQUANTIZE", "DENSIFY"):
            continue
        ins = [op.Inputs(i) for i in range(op.InputsLength())]
        out = op.Outputs(0)
        if name in ("CONV_2D", "DEPTHWISE_CONV_2D"):
            w = tval(ins[1]).astype(np.float32)
            b = tval(ins[2]).astype(np.float32) if len(ins) > 2 and ins[2] >= 0 else None
            if name == "CONV_2D":
                o = options(op, tflite.Conv2DOptions)
                wk = w.transpose(0, 3, 1, 2)          # OHWI -> OIHW
                group = 1
            else:
                o = options(op, tflite.DepthwiseConv2DOptions)
                wk = w.transpose(3, 0, 1, 2)          # 1HWC -> C1HW
                group = w.shape[3] // o.DepthMultiplier()
            pad = "SAME_UPPER" if o.Padding() == tflite.Padding.SAME else "VALID"
            inputs = [tname(ins[0]), const(wk, "w")] + ([const(b, "b")] if b is not None else [])
            tmp = f"conv{k}"
            nodes.append(helper.make_node("Conv", inputs, [tmp], strides=[o.StrideH(), o.StrideW()],
                                          dilations=[o.DilationHFactor(), o.DilationWFactor()],
                                          group=group, auto_pad=pad, kernel_shape=list(wk.shape[2:])))
            act(tname(out), o.FusedActivationFunction(), tmp)
            layout_nchw.add(out)
        elif name == "PAD":
            p = tval(ins[1]).astype(np.int64)            # NHWC [[b,a],...]
            p = p[[0, 3, 1, 2]]
            pads = np.concatenate([p[:, 0], p[:, 1]])
            nodes.append(helper.make_node("Pad", [tname(ins[0]), const(pads, "pads")], [tname(out)], mode="constant"))
            layout_nchw.add(out)
        elif name == "ADD":
            o = options(op, tflite.AddOptions)
            tmp = f"add{k}"
            nodes.append(helper.make_node("Add", [tname(ins[0]), tname(ins[1])], [tmp]))
            act(tname(out), o.FusedActivationFunction(), tmp)
            layout_nchw.add(out)
        elif name == "DEPTH_TO_SPACE":
            o = options(op, tflite.DepthToSpaceOptions)
            nodes.append(helper.make_node("DepthToSpace", [tname(ins[0])], [tname(out)], blocksize=o.BlockSize(), mode="DCR"))
            layout_nchw.add(out)
        elif name == "RESIZE_BILINEAR":
            o = options(op, tflite.ResizeBilinearOptions)
            size = tval(ins[1]).astype(np.int64)
            c = int(g.Tensors(ins[0]).ShapeAsNumpy()[3])
            mode = "align_corners" if o.AlignCorners() else ("half_pixel" if o.HalfPixelCenters() else "asymmetric")
            nodes.append(helper.make_node("Resize", [tname(ins[0]), "", "", const(np.array([1, c, size[0], size[1]], np.int64), "size")],
                                          [tname(out)], mode="linear", coordinate_transformation_mode=mode))
            layout_nchw.add(out)
        elif name == "RESHAPE":
            shape = tval(ins[1]).astype(np.int64)
            src_name = tname(ins[0])
            if ins[0] in layout_nchw:
                nodes.append(helper.make_node("Transpose", [src_name], [f"nhwc{k}"], perm=[0, 2, 3, 1]))
                src_name = f"nhwc{k}"
            nodes.append(helper.make_node("Reshape", [src_name, const(shape, "shape")], [tname(out)]))
        elif name == "CONCATENATION":
            o = options(op, tflite.ConcatenationOptions)
            assert not any(i in layout_nchw for i in ins)
            nodes.append(helper.make_node("Concat", [tname(i) for i in ins], [tname(out)], axis=o.Axis()))
        else:
            raise NotImplementedError(name)
        for i in ins:
            if i in consts and i not in names and name not in ("PAD", "RESHAPE", "RESIZE_BILINEAR", "CONV_2D", "DEPTHWISE_CONV_2D"):
                inits.append(numpy_helper.from_array(tval(i).astype(np.float32), tname(i)))
    outs = [g.Outputs(i) for i in range(g.OutputsLength())]
    out_names = ["boxes", "scores"]
    shapes = {o: [int(v) for v in g.Tensors(o).ShapeAsNumpy()] for o in outs}
    order = sorted(outs, key=lambda o: -shapes[o][2])     # 12-wide regressors first
    for o, n in zip(order, out_names):
        nodes.append(helper.make_node("Identity", [tname(o)], [n]))
    graph = helper.make_graph(
        nodes, "blazepose_detector",
        [helper.make_tensor_value_info("image_nhwc", TensorProto.FLOAT, [1, 224, 224, 3])],
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, shapes[o]) for o, n in zip(order, out_names)],
        inits)
    m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)], producer_name="hkmr_ros")
    m.ir_version = 8
    onnx.checker.check_model(m)
    onnx.save(m, dst)
    return it, order


def check(it, order, onnx_path, tol: float = 1e-2) -> None:
    """ONNX Runtime against the TFLite interpreter on a random input; raises if they differ."""
    import onnxruntime as ort
    sess = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    x = np.random.default_rng(0).uniform(-1, 1, (1, 224, 224, 3)).astype(np.float32)
    it.set_tensor(it.get_input_details()[0]["index"], x)
    it.invoke()
    for o, got in zip(order, sess.run(None, {"image_nhwc": x})):
        ref = it.get_tensor(o)
        err = float(np.abs(ref - got).max())
        print(f"output {list(got.shape)}: largest difference {err:.2e} (values up to {float(np.abs(ref).max()):.1f})")
        if err > tol * max(1.0, float(np.abs(ref).max())):
            raise SystemExit(f"ONNX and TFLite differ by {err} on output {list(got.shape)}")


def main(argv=None) -> int:
    import argparse
    from pathlib import Path
    ap = argparse.ArgumentParser(description="pose_detection.tflite -> ONNX")
    ap.add_argument("tflite", type=Path)
    ap.add_argument("onnx", type=Path)
    args = ap.parse_args(argv)
    if not args.tflite.is_file():
        raise FileNotFoundError(f"TFLite model not found: {args.tflite}")
    it, order = convert(str(args.tflite), str(args.onnx))
    check(it, order, args.onnx)
    print(f"wrote {args.onnx}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
