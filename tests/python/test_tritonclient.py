"""The real tritonclient.http against a live `sinter serve` of the digits MLP.

Started by tests/serve_tritonclient.rs, which passes the server as SINTER_URL (host:port), the
model name as SINTER_MODEL and the fixtures folder as SINTER_FIXTURES. Runs under pytest or as
a plain script.
"""

import os
import sys
import threading
import time

import numpy as np
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException

URL = os.environ.get("SINTER_URL", "127.0.0.1:8000")
MODEL = os.environ.get("SINTER_MODEL", "mlp")
FIXTURES = os.environ.get("SINTER_FIXTURES", "fixtures/digits")

X = np.load(os.path.join(FIXTURES, "test_x.npy")).astype(np.float32)
REF = np.load(os.path.join(FIXTURES, "mlp_ref_probs.npy")).argmax(axis=1)


def client(concurrency=1):
    return httpclient.InferenceServerClient(URL, concurrency=concurrency, network_timeout=120)


def metadata(c):
    m = c.get_model_metadata(MODEL)
    return m["inputs"][0], m["outputs"][0]


def infer(c, x, binary=True, compression=None):
    inp, out = metadata(c)
    t = httpclient.InferInput(inp["name"], list(x.shape), "FP32")
    t.set_data_from_numpy(x, binary_data=binary)
    o = httpclient.InferRequestedOutput(out["name"], binary_data=binary)
    r = c.infer(MODEL, [t], outputs=[o], request_compression_algorithm=compression)
    return r.as_numpy(out["name"])


def test_health_and_metadata():
    c = client()
    assert c.is_server_live()
    assert c.is_server_ready()
    assert c.is_model_ready(MODEL)
    assert not c.is_model_ready("no_such_model")
    server = c.get_server_metadata()
    assert "binary_tensor_data" in server["extensions"]
    inp, out = metadata(c)
    assert inp["datatype"] == "FP32" and inp["shape"] == [-1, 64], inp
    assert out["shape"] == [-1, 10], out
    cfg = c.get_model_config(MODEL)
    assert cfg["max_batch_size"] > 0
    assert "dynamic_batching" in cfg
    index = c.get_model_repository_index()
    assert any(m["name"] == MODEL and m["state"] == "READY" for m in index), index


def test_binary_and_json_infer_are_correct():
    c = client()
    n = 64
    probs_bin = infer(c, X[:n], binary=True)
    probs_json = infer(c, X[:n], binary=False)
    assert probs_bin.shape == (n, 10) and probs_bin.dtype == np.float32
    np.testing.assert_allclose(probs_bin, probs_json, rtol=0, atol=1e-6)
    # The whole test set, 32 rows per request, against the float reference.
    got = np.concatenate([infer(c, X[i:i + 32]) for i in range(0, len(X), 32)]).argmax(axis=1)
    agree = (got == REF).mean()
    assert agree >= 0.97, f"int8 answers agree with the float reference on {agree:.3f}"
    # Compressed request bodies.
    for algo in ("gzip", "deflate"):
        np.testing.assert_allclose(infer(c, X[:8], compression=algo), probs_bin[:8], atol=1e-6)


def test_errors_on_bad_input():
    c = client()
    inp, _ = metadata(c)
    cases = [
        (httpclient.InferInput(inp["name"], [1, 63], "FP32"), np.zeros((1, 63), np.float32), "shape"),
        (httpclient.InferInput("nope", [1, 64], "FP32"), np.zeros((1, 64), np.float32), "nope"),
        (httpclient.InferInput(inp["name"], [1, 64], "BYTES"), np.array([[b"x"] * 64], dtype=np.object_), inp["name"]),
    ]
    for t, data, needle in cases:
        t.set_data_from_numpy(data)
        try:
            c.infer(MODEL, [t])
        except InferenceServerException as e:
            assert needle in str(e), str(e)
            assert e.status() in ("400", 400, None), e.status()
        else:
            raise AssertionError(f"no error for {needle}")
    try:
        c.infer("no_such_model", [cases[0][0]])
    except InferenceServerException as e:
        assert "unknown model" in str(e), str(e)
    else:
        raise AssertionError("no error for an unknown model")


def test_statistics_count_inferences():
    c = client()
    before = c.get_inference_statistics(MODEL)["model_stats"][0]
    infer(c, X[:3])
    after = c.get_inference_statistics(MODEL)["model_stats"][0]
    assert int(after["inference_count"]) >= int(before["inference_count"]) + 3
    assert int(after["inference_stats"]["success"]["count"]) >= int(before["inference_stats"]["success"]["count"]) + 1


def test_bounded_load_every_answer_correct():
    """32 concurrent clients, a few thousand requests in all: none lost, every answer right."""
    c = client()
    expected = np.concatenate([infer(c, X[i:i + 32]) for i in range(0, len(X), 32)])
    clients, per_client = 32, 100
    results = {}
    errors = []

    def worker(k):
        c = client()
        try:
            for i in range(per_client):
                row = (k * per_client + i) % len(X)
                rows = 1 + (i % 3)
                idx = [(row + j) % len(X) for j in range(rows)]
                got = infer(c, X[idx])
                results[(k, i)] = (idx, got)
        except Exception as e:  # noqa: BLE001 - reported below
            errors.append(repr(e))
        finally:
            c.close()

    started = time.time()
    threads = [threading.Thread(target=worker, args=(k,)) for k in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=600)
    took = time.time() - started
    assert not errors, errors[:3]
    assert len(results) == clients * per_client, f"{len(results)} answers"
    for idx, got in results.values():
        np.testing.assert_allclose(got, expected[idx], atol=1e-6)
    print(f"load: {clients * per_client} requests in {took:.1f} s", file=sys.stderr)


if __name__ == "__main__":
    failed = 0
    tests = [(k, v) for k, v in sorted(globals().items()) if k.startswith("test_") and callable(v)]
    for name, fn in tests:
        try:
            fn()
            print(f"PASS {name}")
        except Exception as e:  # noqa: BLE001 - reported
            failed += 1
            print(f"FAIL {name}: {e!r}")
    print(f"{len(tests) - failed} passed, {failed} failed")
    sys.exit(1 if failed else 0)
