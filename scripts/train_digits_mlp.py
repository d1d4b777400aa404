#!/usr/bin/env python3
"""Train a small MLP on scikit-learn's bundled digits data set and export it to ONNX.

Writes to fixtures/digits/ (relative to the repository root):
  mlp.onnx           64 -> 64 (ReLU) -> 10 -> softmax, opset 13, input `input` [N, 64], output `probs`
  calib.npy          float32 [256, 64] calibration samples from the training split
  test_x.npy         float32 [M, 64] held-out samples
  test_y.npy         int64 [M] held-out labels
  mlp_ref_probs.npy  float32 [M, 10] onnxruntime output on test_x (independent float reference)

Deterministic: fixed seeds for the split, the training and the calibration sample.
"""

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split
from sklearn.neural_network import MLPClassifier

SEED = 20240601
HIDDEN = 64
CALIB_ROWS = 256
OPSET = 13

OUT_DIR = Path(__file__).resolve().parent.parent / "fixtures" / "digits"


def train():
    digits = load_digits()
    x = (digits.data / 16.0).astype(np.float32)
    y = digits.target.astype(np.int64)
    x_train, x_test, y_train, y_test = train_test_split(
        x, y, test_size=0.3, stratify=y, random_state=SEED
    )
    clf = MLPClassifier(
        hidden_layer_sizes=(HIDDEN,),
        activation="relu",
        solver="adam",
        max_iter=400,
        random_state=SEED,
    )
    clf.fit(x_train, y_train)
    return clf, x_train, x_test, y_train, y_test


def build_onnx(clf):
    w1, w2 = (w.astype(np.float32) for w in clf.coefs_)  # [64, H], [H, 10]
    b1, b2 = (b.astype(np.float32) for b in clf.intercepts_)
    n_in, n_hidden = w1.shape
    n_out = w2.shape[1]

    initializers = [
        numpy_helper.from_array(w1, "fc1.weight"),
        numpy_helper.from_array(b1, "fc1.bias"),
        # Gemm with transB=1 takes the weight as [out, in], as PyTorch's Linear does.
        numpy_helper.from_array(np.ascontiguousarray(w2.T), "fc2.weight"),
        numpy_helper.from_array(b2, "fc2.bias"),
    ]
    nodes = [
        helper.make_node("MatMul", ["input", "fc1.weight"], ["fc1.matmul"], name="fc1_matmul"),
        helper.make_node("Add", ["fc1.matmul", "fc1.bias"], ["fc1.out"], name="fc1_add"),
        helper.make_node("Relu", ["fc1.out"], ["relu1.out"], name="relu1"),
        helper.make_node(
            "Gemm", ["relu1.out", "fc2.weight", "fc2.bias"], ["logits"], name="fc2", transB=1
        ),
        helper.make_node("Softmax", ["logits"], ["probs"], name="softmax", axis=1),
    ]
    graph = helper.make_graph(
        nodes,
        "digits_mlp",
        inputs=[helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", n_in])],
        outputs=[helper.make_tensor_value_info("probs", TensorProto.FLOAT, ["N", n_out])],
        initializer=initializers,
    )
    assert n_hidden == HIDDEN
    model = helper.make_model(
        graph,
        producer_name="sinter-train-digits-mlp",
        opset_imports=[helper.make_opsetid("", OPSET)],
    )
    model.ir_version = 8
    onnx.checker.check_model(model, full_check=True)
    return model


def main():
    clf, x_train, x_test, y_train, y_test = train()
    model = build_onnx(clf)

    OUT_DIR.mkdir(parents=True, exist_ok=True)
    model_path = OUT_DIR / "mlp.onnx"
    onnx.save(model, str(model_path))

    sess = ort.InferenceSession(str(model_path), providers=["CPUExecutionProvider"])
    probs = sess.run(["probs"], {"input": x_test})[0].astype(np.float32)

    sk_probs = clf.predict_proba(x_test)
    max_diff = float(np.abs(sk_probs - probs).max())
    assert max_diff < 1e-4, f"onnxruntime disagrees with scikit-learn: {max_diff}"

    rng = np.random.default_rng(SEED)
    calib_idx = rng.choice(len(x_train), size=CALIB_ROWS, replace=False)
    calib = np.ascontiguousarray(x_train[calib_idx], dtype=np.float32)

    np.save(OUT_DIR / "calib.npy", calib)
    np.save(OUT_DIR / "test_x.npy", np.ascontiguousarray(x_test, dtype=np.float32))
    np.save(OUT_DIR / "test_y.npy", y_test.astype(np.int64))
    np.save(OUT_DIR / "mlp_ref_probs.npy", probs)

    ort_acc = float((probs.argmax(axis=1) == y_test).mean())
    sk_acc = float(clf.score(x_test, y_test))
    print(f"train samples: {len(x_train)}, test samples: {len(x_test)}")
    print(f"float accuracy (onnxruntime): {ort_acc:.4f}  (scikit-learn: {sk_acc:.4f})")
    print(f"max |onnxruntime - scikit-learn| probability difference: {max_diff:.2e}")
    total = sum(p.stat().st_size for p in OUT_DIR.iterdir() if p.is_file())
    print(f"wrote {OUT_DIR} ({total / 1024:.1f} KiB)")


if __name__ == "__main__":
    main()
