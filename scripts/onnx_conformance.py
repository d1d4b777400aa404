#!/usr/bin/env python3
"""Write the ONNX backend node tests of the installed `onnx` package to a directory.

Recent `onnx` wheels no longer ship `onnx/backend/test/data/node/`; the test cases are still
defined in `onnx.backend.test.case.node` (models plus numpy reference inputs and outputs). This
script materialises them in the upstream layout, which compiler/tests/onnx_conformance.rs reads:

  OUT/<test name>/model.onnx
  OUT/<test name>/test_data_set_0/input_<i>.pb, output_<i>.pb

When the package does ship `backend/test/data/node/`, the Rust test reads that directly and this
script is not needed.

Usage: onnx_conformance.py OUT [--ops Conv,Relu,...]   (--ops keeps cases whose every node has
one of the listed op types; default: all cases)

       onnx_conformance.py --light-random OUT NAME...
  The backend suite's "light" models carry constant-filled weights, so most of their reference
  outputs are uniform softmaxes. This mode writes OUT/<NAME>.onnx with random weights (every
  ConstantOfShape weight replaced by a random initializer: He-scaled convolution and
  fully-connected weights, batch-norm statistics near 1, small biases), OUT/<NAME>_input_0.pb
  (uniform [0, 1) input) and OUT/<NAME>_output_<i>.pb (onnxruntime's outputs on it; the input of
  a final Softmax is added as a second graph output).
"""

import argparse
import os
import shutil
import sys
import warnings

import numpy as np
import onnx
from onnx import numpy_helper


def tensor_proto(value, name):
    if isinstance(value, onnx.TensorProto):
        return value
    return numpy_helper.from_array(np.asarray(value), name)


def randomize_light(name, out_dir):
    import onnxruntime as ort

    ort.set_default_logger_severity(3)
    path = os.path.join(os.path.dirname(onnx.__file__), "backend/test/data/light", f"light_{name}.onnx")
    model = onnx.load(path)
    graph = model.graph
    rng = np.random.default_rng(sum(name.encode()) * 7919)
    inits = {t.name: numpy_helper.to_array(t) for t in graph.initializer}
    consumers = {}
    for n in graph.node:
        for i, x in enumerate(n.input):
            consumers.setdefault(x, []).append((n, i))

    def role(tensor):
        for n, i in consumers.get(tensor, []):
            if n.op_type in ("Unsqueeze", "Reshape", "Squeeze"):
                r = role(n.output[0])
                if r:
                    return r
                continue
            if n.op_type == "BatchNormalization":
                return ("bn_scale", "bn_bias", "bn_mean", "bn_var")[i - 1]
            if n.op_type in ("Conv", "Gemm", "MatMul"):
                return "weight" if i == 1 else "bias"
            if n.op_type in ("Mul",):
                return "scale"
            if n.op_type in ("Add", "Sum", "Sub"):
                return "bias"
        return None

    nodes = []
    for n in graph.node:
        if n.op_type != "ConstantOfShape" or n.input[0] not in inits:
            nodes.append(n)
            continue
        shape = [int(d) for d in inits[n.input[0]]]
        r = role(n.output[0])
        if r == "weight":
            fan_in = int(np.prod(shape[1:])) if len(shape) > 1 else shape[0]
            value = rng.standard_normal(shape) * np.sqrt(2.0 / max(fan_in, 1))
            if len(shape) == 2 and any(
                c.op_type == "Gemm" and any(a.name == "transB" and a.i == 1 for a in c.attribute)
                for c, _ in consumers.get(n.output[0], [])
            ):
                value = rng.standard_normal(shape) * np.sqrt(2.0 / shape[1])
        elif r in ("bn_scale", "scale", "bn_var"):
            value = rng.uniform(0.8, 1.2, shape)
        else:
            value = rng.standard_normal(shape) * 0.1
        graph.initializer.append(numpy_helper.from_array(value.astype(np.float32), n.output[0]))
    del graph.node[:]
    graph.node.extend(nodes)

    # Expose the logits: a saturated softmax says little.
    last = graph.node[-1]
    if last.op_type == "Softmax":
        graph.output.append(onnx.helper.make_empty_tensor_value_info(last.input[0]))
    inp = [i for i in graph.input if i.name not in {t.name for t in graph.initializer}][0]
    shape = [d.dim_value or 1 for d in inp.type.tensor_type.shape.dim]
    x = rng.random(shape, dtype=np.float32)
    data = model.SerializeToString()
    sess = ort.InferenceSession(data, providers=["CPUExecutionProvider"])
    ys = sess.run(None, {inp.name: x})
    tmp = os.path.join(out_dir, f"{name}.partial")
    with open(tmp, "wb") as f:
        f.write(data)
    with open(os.path.join(out_dir, f"{name}_input_0.pb"), "wb") as f:
        f.write(numpy_helper.from_array(x, inp.name).SerializeToString())
    for i, y in enumerate(ys):
        with open(os.path.join(out_dir, f"{name}_output_{i}.pb"), "wb") as f:
            f.write(numpy_helper.from_array(y).SerializeToString())
    os.rename(tmp, os.path.join(out_dir, f"{name}.onnx"))
    print(f"{name}: outputs {[y.shape for y in ys]}, max {[float(np.abs(y).max()) for y in ys]}")


def main():
    if len(sys.argv) > 2 and sys.argv[1] == "--light-random":
        os.makedirs(sys.argv[2], exist_ok=True)
        for name in sys.argv[3:]:
            randomize_light(name, sys.argv[2])
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out")
    parser.add_argument("--ops", default="", help="comma-separated op types to keep")
    args = parser.parse_args()
    keep = {o for o in args.ops.split(",") if o}

    warnings.simplefilter("ignore")
    import onnx.backend.test.case.node as node_cases

    cases = node_cases.collect_testcases()
    tmp = args.out + ".partial"
    shutil.rmtree(tmp, ignore_errors=True)
    os.makedirs(tmp)
    written = 0
    for case in cases:
        model = case.model
        if keep and not all(n.op_type in keep for n in model.graph.node):
            continue
        graph_inputs = [i for i in model.graph.input]
        graph_outputs = [o for o in model.graph.output]
        inputs, outputs = case.data_sets[0]
        # Only plain tensors: sequences, maps and optionals are out of scope.
        if not all(i.type.HasField("tensor_type") for i in graph_inputs + graph_outputs):
            continue
        try:
            in_protos = [tensor_proto(v, i.name) for v, i in zip(inputs, graph_inputs)]
            out_protos = [tensor_proto(v, o.name) for v, o in zip(outputs, graph_outputs)]
        except Exception as e:  # noqa: BLE001 (unrepresentable values: skip the case)
            print(f"skipping {case.name}: {e}", file=sys.stderr)
            continue
        d = os.path.join(tmp, case.name)
        data = os.path.join(d, "test_data_set_0")
        os.makedirs(data)
        with open(os.path.join(d, "model.onnx"), "wb") as f:
            f.write(model.SerializeToString())
        for j, t in enumerate(in_protos):
            with open(os.path.join(data, f"input_{j}.pb"), "wb") as f:
                f.write(t.SerializeToString())
        for j, t in enumerate(out_protos):
            with open(os.path.join(data, f"output_{j}.pb"), "wb") as f:
                f.write(t.SerializeToString())
        written += 1
    with open(os.path.join(tmp, "SUMMARY"), "w") as f:
        f.write(f"onnx {onnx.__version__}: {written} of {len(cases)} node tests written\n")
    shutil.rmtree(args.out, ignore_errors=True)
    os.rename(tmp, args.out)
    print(f"wrote {written} node tests of onnx {onnx.__version__} to {args.out}")


if __name__ == "__main__":
    main()
