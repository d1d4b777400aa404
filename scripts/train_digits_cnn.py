#!/usr/bin/env python3
"""Train two small convolutional networks on scikit-learn's digits and export them to ONNX.

The networks are trained with plain numpy (forward and backward passes written out below, Adam),
so no deep-learning framework is needed. Images are the 8x8 digits as [N, 1, 8, 8], scaled by
1/16, with the same stratified 70/30 split and seed as train_digits_mlp.py, so the existing
fixtures test_x.npy / test_y.npy / calib.npy reshaped to [N, 1, 8, 8] are this script's test and
calibration images (checked below).

Writes to fixtures/digits/ (relative to the repository root):
  cnn.onnx             Conv(1->8)+BN+ReLU, Conv(8->16)+BN+ReLU, MaxPool 2x2, Flatten, Gemm, Softmax
  resnet.onnx          Conv(1->16)+BN+ReLU, a residual block (two Conv+BN, Add, ReLU), a
                       Concat of a 1x1 and a 3x3 Conv+BN+ReLU branch, GlobalAveragePool,
                       Flatten, Gemm, Softmax
  cnn_ref_probs.npy    float32 [M, 10] onnxruntime output on the test images
  resnet_ref_probs.npy float32 [M, 10] onnxruntime output on the test images

Both models: opset 13, input `input` [N, 1, 8, 8] (dynamic batch), output `probs` [N, 10];
BatchNormalization is exported as its own node (inference mode, running statistics).
Deterministic: fixed seeds for the split, the initialisation and the batch order.
"""

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split

SEED = 20240601  # the split seed of train_digits_mlp.py
OPSET = 13
EPOCHS = 40
BATCH = 64
LR = 3e-3
BN_EPS = 1e-5
BN_MOMENTUM = 0.1

OUT_DIR = Path(__file__).resolve().parent.parent / "fixtures" / "digits"


# ----------------------------------------------------------------------------------------------
# Layers: forward(x, train) caches what backward(dy) needs; params/grads are parallel lists.


class Conv:
    """Stride-1 convolution with `pad` zero padding, via im2col."""

    def __init__(self, rng, c_in, c_out, k, pad, name):
        fan_in = c_in * k * k
        self.w = (rng.standard_normal((c_out, c_in, k, k)) * np.sqrt(2.0 / fan_in)).astype(
            np.float64
        )
        self.b = np.zeros(c_out)
        self.k, self.pad, self.name = k, pad, name

    @property
    def params(self):
        return [self.w, self.b]

    def _cols(self, x):
        n, c, h, w = x.shape
        k, p = self.k, self.pad
        xp = np.pad(x, ((0, 0), (0, 0), (p, p), (p, p)))
        oh, ow = h + 2 * p - k + 1, w + 2 * p - k + 1
        win = np.lib.stride_tricks.sliding_window_view(xp, (k, k), axis=(2, 3))
        # win: [n, c, oh, ow, k, k] -> cols [n, c*k*k, oh*ow]
        cols = win.transpose(0, 1, 4, 5, 2, 3).reshape(n, c * k * k, oh * ow)
        return cols, (oh, ow)

    def forward(self, x, train):
        cols, (oh, ow) = self._cols(x)
        self.x_shape, self.cols = x.shape, cols
        wm = self.w.reshape(self.w.shape[0], -1)
        y = np.einsum("ok,nkp->nop", wm, cols) + self.b[None, :, None]
        return y.reshape(x.shape[0], -1, oh, ow)

    def backward(self, dy):
        n, c, h, w = self.x_shape
        k, p = self.k, self.pad
        o = dy.shape[1]
        dyf = dy.reshape(n, o, -1)
        wm = self.w.reshape(o, -1)
        self.grads = [
            np.einsum("nop,nkp->ok", dyf, self.cols).reshape(self.w.shape),
            dyf.sum(axis=(0, 2)),
        ]
        dcols = np.einsum("ok,nop->nkp", wm, dyf).reshape(n, c, k, k, dy.shape[2], dy.shape[3])
        dxp = np.zeros((n, c, h + 2 * p, w + 2 * p))
        for i in range(k):
            for j in range(k):
                dxp[:, :, i : i + dy.shape[2], j : j + dy.shape[3]] += dcols[:, :, i, j]
        return dxp[:, :, p : p + h, p : p + w]


class BatchNorm:
    def __init__(self, c, name):
        self.gamma, self.beta = np.ones(c), np.zeros(c)
        self.mean, self.var = np.zeros(c), np.ones(c)
        self.name = name

    @property
    def params(self):
        return [self.gamma, self.beta]

    def forward(self, x, train):
        if train:
            mu = x.mean(axis=(0, 2, 3))
            var = x.var(axis=(0, 2, 3))
            m = x.shape[0] * x.shape[2] * x.shape[3]
            self.mean = (1 - BN_MOMENTUM) * self.mean + BN_MOMENTUM * mu
            self.var = (1 - BN_MOMENTUM) * self.var + BN_MOMENTUM * var * m / (m - 1)
        else:
            mu, var = self.mean, self.var
        self.inv = 1.0 / np.sqrt(var + BN_EPS)
        self.xhat = (x - mu[None, :, None, None]) * self.inv[None, :, None, None]
        return self.gamma[None, :, None, None] * self.xhat + self.beta[None, :, None, None]

    def backward(self, dy):
        m = dy.shape[0] * dy.shape[2] * dy.shape[3]
        self.grads = [(dy * self.xhat).sum(axis=(0, 2, 3)), dy.sum(axis=(0, 2, 3))]
        dxhat = dy * self.gamma[None, :, None, None]
        return (
            self.inv[None, :, None, None]
            / m
            * (
                m * dxhat
                - dxhat.sum(axis=(0, 2, 3))[None, :, None, None]
                - self.xhat * (dxhat * self.xhat).sum(axis=(0, 2, 3))[None, :, None, None]
            )
        )


class Relu:
    params = []

    def forward(self, x, train):
        self.mask = x > 0
        return x * self.mask

    def backward(self, dy):
        self.grads = []
        return dy * self.mask


class MaxPool2:
    params = []

    def forward(self, x, train):
        n, c, h, w = x.shape
        r = x.reshape(n, c, h // 2, 2, w // 2, 2)
        y = r.max(axis=(3, 5))
        self.mask = r == y[:, :, :, None, :, None]
        self.shape = x.shape
        return y

    def backward(self, dy):
        self.grads = []
        d = self.mask * dy[:, :, :, None, :, None]
        return d.reshape(self.shape)


class Dense:
    """Gemm with transB=1: y = x W^T + b, W [out, in]."""

    def __init__(self, rng, n_in, n_out, name):
        self.w = rng.standard_normal((n_out, n_in)) * np.sqrt(1.0 / n_in)
        self.b = np.zeros(n_out)
        self.name = name

    @property
    def params(self):
        return [self.w, self.b]

    def forward(self, x, train):
        self.x = x
        return x @ self.w.T + self.b

    def backward(self, dy):
        self.grads = [dy.T @ self.x, dy.sum(axis=0)]
        return dy @ self.w


def softmax(z):
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


# ----------------------------------------------------------------------------------------------
# The two networks.


class Cnn:
    def __init__(self, rng):
        self.conv1, self.bn1 = Conv(rng, 1, 8, 3, 1, "conv1"), BatchNorm(8, "bn1")
        self.conv2, self.bn2 = Conv(rng, 8, 16, 3, 1, "conv2"), BatchNorm(16, "bn2")
        self.relu1, self.relu2, self.pool = Relu(), Relu(), MaxPool2()
        self.fc = Dense(rng, 16 * 4 * 4, 10, "fc")
        self.seq = [self.conv1, self.bn1, self.relu1, self.conv2, self.bn2, self.relu2, self.pool]

    @property
    def layers(self):
        return [*self.seq, self.fc]

    def forward(self, x, train=False):
        for layer in self.seq:
            x = layer.forward(x, train)
        self.pooled_shape = x.shape
        return self.fc.forward(x.reshape(x.shape[0], -1), train)

    def backward(self, dlogits):
        d = self.fc.backward(dlogits).reshape(self.pooled_shape)
        for layer in reversed(self.seq):
            d = layer.backward(d)

    def onnx_graph(self):
        inits, nodes = [], []
        conv_bn(inits, nodes, "input", self.conv1, self.bn1, "r1", relu=True)
        conv_bn(inits, nodes, "r1", self.conv2, self.bn2, "r2", relu=True)
        nodes.append(
            helper.make_node(
                "MaxPool", ["r2"], ["pool"], name="pool", kernel_shape=[2, 2], strides=[2, 2]
            )
        )
        nodes.append(helper.make_node("Flatten", ["pool"], ["flat"], name="flatten", axis=1))
        head(inits, nodes, "flat", self.fc)
        return "digits_cnn", nodes, inits


class ResNet:
    def __init__(self, rng):
        self.conv0, self.bn0 = Conv(rng, 1, 16, 3, 1, "conv0"), BatchNorm(16, "bn0")
        self.conv1, self.bn1 = Conv(rng, 16, 16, 3, 1, "conv1"), BatchNorm(16, "bn1")
        self.conv2, self.bn2 = Conv(rng, 16, 16, 3, 1, "conv2"), BatchNorm(16, "bn2")
        self.conv3a, self.bn3a = Conv(rng, 16, 8, 1, 0, "conv3a"), BatchNorm(8, "bn3a")
        self.conv3b, self.bn3b = Conv(rng, 16, 8, 3, 1, "conv3b"), BatchNorm(8, "bn3b")
        self.relu0, self.relu1, self.relu2 = Relu(), Relu(), Relu()
        self.relu3a, self.relu3b = Relu(), Relu()
        self.fc = Dense(rng, 16, 10, "fc")

    @property
    def layers(self):
        return [
            self.conv0, self.bn0, self.conv1, self.bn1, self.conv2, self.bn2,
            self.conv3a, self.bn3a, self.conv3b, self.bn3b, self.fc,
        ]  # fmt: skip

    def forward(self, x, train=False):
        a0 = self.relu0.forward(self.bn0.forward(self.conv0.forward(x, train), train), train)
        h = self.relu1.forward(self.bn1.forward(self.conv1.forward(a0, train), train), train)
        h = self.bn2.forward(self.conv2.forward(h, train), train)
        a2 = self.relu2.forward(h + a0, train)
        b1 = self.relu3a.forward(self.bn3a.forward(self.conv3a.forward(a2, train), train), train)
        b2 = self.relu3b.forward(self.bn3b.forward(self.conv3b.forward(a2, train), train), train)
        cat = np.concatenate([b1, b2], axis=1)
        self.cat_shape = cat.shape
        return self.fc.forward(cat.mean(axis=(2, 3)), train)

    def backward(self, dlogits):
        dg = self.fc.backward(dlogits)
        n, c, h, w = self.cat_shape
        dcat = np.broadcast_to(dg[:, :, None, None] / (h * w), self.cat_shape)
        db1, db2 = dcat[:, :8], dcat[:, 8:]
        da2 = self.conv3a.backward(self.bn3a.backward(self.relu3a.backward(db1)))
        da2 = da2 + self.conv3b.backward(self.bn3b.backward(self.relu3b.backward(db2)))
        dsum = self.relu2.backward(da2)
        dh = self.conv1.backward(
            self.bn1.backward(self.relu1.backward(self.conv2.backward(self.bn2.backward(dsum))))
        )
        da0 = dh + dsum
        self.conv0.backward(self.bn0.backward(self.relu0.backward(da0)))

    def onnx_graph(self):
        inits, nodes = [], []
        conv_bn(inits, nodes, "input", self.conv0, self.bn0, "a0", relu=True)
        conv_bn(inits, nodes, "a0", self.conv1, self.bn1, "h1", relu=True)
        conv_bn(inits, nodes, "h1", self.conv2, self.bn2, "h2", relu=False)
        nodes.append(helper.make_node("Add", ["h2", "a0"], ["res"], name="residual_add"))
        nodes.append(helper.make_node("Relu", ["res"], ["a2"], name="relu2"))
        conv_bn(inits, nodes, "a2", self.conv3a, self.bn3a, "b1", relu=True)
        conv_bn(inits, nodes, "a2", self.conv3b, self.bn3b, "b2", relu=True)
        nodes.append(helper.make_node("Concat", ["b1", "b2"], ["cat"], name="concat", axis=1))
        nodes.append(helper.make_node("GlobalAveragePool", ["cat"], ["gap"], name="gap"))
        nodes.append(helper.make_node("Flatten", ["gap"], ["flat"], name="flatten", axis=1))
        head(inits, nodes, "flat", self.fc)
        return "digits_resnet", nodes, inits


# ----------------------------------------------------------------------------------------------
# ONNX export.


def f32(a, name):
    return numpy_helper.from_array(np.asarray(a, dtype=np.float32), name)


def conv_bn(inits, nodes, x, conv, bn, out, relu):
    k = conv.k
    inits += [f32(conv.w, f"{conv.name}.weight"), f32(conv.b, f"{conv.name}.bias")]
    nodes.append(
        helper.make_node(
            "Conv",
            [x, f"{conv.name}.weight", f"{conv.name}.bias"],
            [f"{conv.name}.out"],
            name=conv.name,
            kernel_shape=[k, k],
            pads=[conv.pad] * 4,
        )
    )
    names = [f"{bn.name}.{p}" for p in ("scale", "bias", "mean", "var")]
    inits += [f32(v, n) for v, n in zip((bn.gamma, bn.beta, bn.mean, bn.var), names)]
    bn_out = f"{bn.name}.out" if relu else out
    nodes.append(
        helper.make_node(
            "BatchNormalization",
            [f"{conv.name}.out", *names],
            [bn_out],
            name=bn.name,
            epsilon=BN_EPS,
        )
    )
    if relu:
        nodes.append(helper.make_node("Relu", [bn_out], [out], name=f"{bn.name}_relu"))


def head(inits, nodes, x, fc):
    inits += [f32(fc.w, "fc.weight"), f32(fc.b, "fc.bias")]
    nodes.append(
        helper.make_node("Gemm", [x, "fc.weight", "fc.bias"], ["logits"], name="fc", transB=1)
    )
    nodes.append(helper.make_node("Softmax", ["logits"], ["probs"], name="softmax", axis=1))


def build_onnx(net):
    name, nodes, inits = net.onnx_graph()
    graph = helper.make_graph(
        nodes,
        name,
        inputs=[helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 1, 8, 8])],
        outputs=[helper.make_tensor_value_info("probs", TensorProto.FLOAT, ["N", 10])],
        initializer=inits,
    )
    model = helper.make_model(
        graph,
        producer_name="sinter-train-digits-cnn",
        opset_imports=[helper.make_opsetid("", OPSET)],
    )
    model.ir_version = 8
    onnx.checker.check_model(model, full_check=True)
    return model


# ----------------------------------------------------------------------------------------------
# Training.


def train(net, x, y, seed):
    rng = np.random.default_rng(seed)
    params = [p for layer in net.layers for p in layer.params]
    m = [np.zeros_like(p) for p in params]
    v = [np.zeros_like(p) for p in params]
    step = 0
    for _epoch in range(EPOCHS):
        order = rng.permutation(len(x))
        for start in range(0, len(x), BATCH):
            idx = order[start : start + BATCH]
            if len(idx) < 2:
                continue
            logits = net.forward(x[idx], train=True)
            p = softmax(logits)
            p[np.arange(len(idx)), y[idx]] -= 1.0
            net.backward(p / len(idx))
            grads = [g for layer in net.layers for g in layer.grads]
            step += 1
            for i, (w, g) in enumerate(zip(params, grads)):
                m[i] = 0.9 * m[i] + 0.1 * g
                v[i] = 0.999 * v[i] + 0.001 * g * g
                mh = m[i] / (1 - 0.9**step)
                vh = v[i] / (1 - 0.999**step)
                w -= LR * mh / (np.sqrt(vh) + 1e-8)


def accuracy(probs, y):
    return float((probs.argmax(axis=1) == y).mean())


def main():
    digits = load_digits()
    x = (digits.data / 16.0).astype(np.float32)
    y = digits.target.astype(np.int64)
    x_train, x_test, y_train, y_test = train_test_split(
        x, y, test_size=0.3, stratify=y, random_state=SEED
    )
    # The MLP fixtures hold the same split: reuse them as images.
    fixture_x = np.load(OUT_DIR / "test_x.npy")
    fixture_y = np.load(OUT_DIR / "test_y.npy")
    assert np.array_equal(fixture_x, x_test) and np.array_equal(fixture_y, y_test), (
        "fixtures/digits/test_x.npy does not hold this split; rerun train_digits_mlp.py"
    )
    img_train = x_train.reshape(-1, 1, 8, 8).astype(np.float64)
    img_test = x_test.reshape(-1, 1, 8, 8)

    for name, cls, seed in (("cnn", Cnn, SEED + 1), ("resnet", ResNet, SEED + 2)):
        net = cls(np.random.default_rng(seed))
        train(net, img_train, y_train, seed)
        model = build_onnx(net)
        path = OUT_DIR / f"{name}.onnx"
        onnx.save(model, str(path))

        sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        probs = sess.run(["probs"], {"input": img_test})[0].astype(np.float32)
        np_probs = softmax(net.forward(img_test.astype(np.float64)))
        max_diff = float(np.abs(np_probs - probs).max())
        assert max_diff < 1e-4, f"{name}: onnxruntime disagrees with the numpy model: {max_diff}"
        np.save(OUT_DIR / f"{name}_ref_probs.npy", probs)
        train_acc = accuracy(softmax(net.forward(img_train)), y_train)
        print(
            f"{name}: float accuracy (onnxruntime) {accuracy(probs, y_test):.4f} on "
            f"{len(y_test)} test images (train {train_acc:.4f}); "
            f"max |onnxruntime - numpy| {max_diff:.2e}; {path.stat().st_size / 1024:.1f} KiB"
        )
        assert accuracy(probs, y_test) >= 0.95, f"{name}: accuracy below 95%"

    total = sum(p.stat().st_size for p in OUT_DIR.iterdir() if p.is_file())
    print(f"wrote {OUT_DIR} ({total / 1024:.1f} KiB in total)")


if __name__ == "__main__":
    main()
