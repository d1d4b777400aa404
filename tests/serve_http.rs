//! `sinter serve` end to end: the binary on an ephemeral port, driven over HTTP.

use reqwest::blocking::Client;
use serde_json::{json, Value};
use sinter_host::sample::{dense, DenseSample};
use sinter_host::Tensor;
use sinter_isa::HwConfig;
use std::process::Command;
use std::time::Duration;

mod common;
use common::{spawn_server, Server, TempDir};

fn sample() -> DenseSample {
    dense(HwConfig::SMALL, 2, 6, 5, true)
}

fn start(s: &DenseSample) -> Server {
    start_with(s, &[])
}

fn start_with(s: &DenseSample, extra: &[&str]) -> Server {
    let dir = TempDir::new("serve");
    let path = dir.0.join("model.sntr");
    s.bundle.save(&path).unwrap();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_sinter"));
    cmd.args([
        "serve",
        path.to_str().unwrap(),
        "--port",
        "0",
        "--device",
        "func",
    ])
    .args(extra)
    .env("SINTER_LOG", "warn");
    spawn_server(cmd, Some(dir))
}

fn rows(n: usize, k: usize) -> Vec<f32> {
    (0..n * k)
        .map(|i| ((i * 37) % 41) as f32 * 0.2 - 4.0)
        .collect()
}

fn reference(s: &DenseSample, data: &[f32], n: usize) -> Vec<f32> {
    s.reference(&Tensor::new(vec![n, s.k], data.to_vec()).unwrap())
        .data
}

fn as_f32s(v: &Value) -> Vec<f32> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap() as f32)
        .collect()
}

fn assert_close(got: &[f32], want: &[f32]) {
    assert_eq!(got.len(), want.len());
    for (i, (a, b)) in got.iter().zip(want).enumerate() {
        assert!((a - b).abs() <= 1e-6, "element {i}: got {a}, want {b}");
    }
}

#[test]
fn serves_health_metadata_infer_and_score() {
    let s = sample();
    let srv = start(&s);
    let c = Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap();
    let url = |p: &str| format!("{}{p}", srv.base);

    assert_eq!(c.get(url("/v2/health/ready")).send().unwrap().status(), 200);
    assert_eq!(c.get(url("/v2/health/live")).send().unwrap().status(), 200);
    assert_eq!(
        c.get(url("/v2/models/dense_softmax/ready"))
            .send()
            .unwrap()
            .status(),
        200
    );

    let meta: Value = c
        .get(url("/v2/models/dense_softmax"))
        .send()
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(meta["name"], "dense_softmax");
    assert_eq!(
        meta["inputs"][0],
        json!({"name": "x", "datatype": "FP32", "shape": [-1, 6]})
    );
    assert_eq!(meta["outputs"][0]["name"], "probs");

    // v2 infer, flat FP32 data, a batch of 3 (two device runs of batch 2).
    let x = rows(3, 6);
    let req = json!({
        "id": "req-42",
        "inputs": [{"name": "x", "shape": [3, 6], "datatype": "FP32", "data": x}],
    });
    let r = c
        .post(url("/v2/models/dense_softmax/infer"))
        .json(&req)
        .send()
        .unwrap();
    assert_eq!(r.status(), 200);
    let v: Value = r.json().unwrap();
    assert_eq!(v["id"], "req-42");
    assert_eq!(v["model_name"], "dense_softmax");
    let out = &v["outputs"][0];
    assert_eq!(out["name"], "probs");
    assert_eq!(out["datatype"], "FP32");
    assert_eq!(out["shape"], json!([3, 5]));
    assert_close(&as_f32s(&out["data"]), &reference(&s, &x, 3));
    assert_eq!(v["parameters"]["npu_runs"], 2);
    assert_eq!(v["parameters"]["npu_cycle_source"], "predicted");

    // Versioned route, nested FP64 data.
    let nested: Vec<Vec<f64>> = x
        .chunks(6)
        .map(|r| r.iter().map(|v| *v as f64).collect())
        .collect();
    let req = json!({
        "inputs": [{"name": "x", "shape": [3, 6], "datatype": "FP64", "data": nested}],
        "outputs": [{"name": "probs"}],
    });
    let v: Value = c
        .post(url("/v2/models/dense_softmax/versions/1/infer"))
        .json(&req)
        .send()
        .unwrap()
        .json()
        .unwrap();
    assert!(v.get("id").is_none());
    assert_close(&as_f32s(&v["outputs"][0]["data"]), &reference(&s, &x, 3));

    // Errors: JSON {"error"} with Triton's status codes.
    let bad = c
        .post(url("/v2/models/dense_softmax/infer"))
        .body("{not json")
        .send()
        .unwrap();
    assert_eq!(bad.status(), 400);
    assert!(bad.json::<Value>().unwrap()["error"].is_string());
    let wrong_shape = json!({"inputs": [{"name": "x", "shape": [1, 7], "datatype": "FP32",
                                        "data": [0, 0, 0, 0, 0, 0, 0]}]});
    let r = c
        .post(url("/v2/models/dense_softmax/infer"))
        .json(&wrong_shape)
        .send()
        .unwrap();
    assert_eq!(r.status(), 400);
    assert!(r.json::<Value>().unwrap()["error"]
        .as_str()
        .unwrap()
        .contains("shape"));
    let short =
        json!({"inputs": [{"name": "x", "shape": [1, 6], "datatype": "FP32", "data": [1, 2]}]});
    let r = c
        .post(url("/v2/models/dense_softmax/infer"))
        .json(&short)
        .send()
        .unwrap();
    assert_eq!(r.status(), 400);
    let r = c
        .post(url("/v2/models/nope/infer"))
        .json(&req)
        .send()
        .unwrap();
    assert_eq!(r.status(), 404);
    assert!(r.json::<Value>().unwrap()["error"].is_string());
    let r = c
        .post(url("/v2/models/dense_softmax/versions/7/infer"))
        .json(&req)
        .send()
        .unwrap();
    assert_eq!(r.status(), 404);

    // Azure-style /score.
    let x2 = rows(2, 6);
    let data: Vec<Vec<f32>> = x2.chunks(6).map(|r| r.to_vec()).collect();
    let v: Value = c
        .post(url("/score"))
        .json(&json!({ "data": data }))
        .send()
        .unwrap()
        .json()
        .unwrap();
    let probs: Vec<f32> = v["outputs"]["probs"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(as_f32s)
        .collect();
    assert_close(&probs, &reference(&s, &x2, 2));
    let r = c
        .post(url("/score"))
        .json(&json!({"data": [[1, 2, 3]]}))
        .send()
        .unwrap();
    assert_eq!(r.status(), 400);
    assert!(r.json::<Value>().unwrap()["error"].is_string());
    let r = c
        .post(url("/score"))
        .json(&json!({"rows": []}))
        .send()
        .unwrap();
    assert_eq!(r.status(), 400);
}

#[test]
fn binary_tensor_extension_round_trips() {
    let s = sample();
    let srv = start(&s);
    let c = Client::new();
    let x = rows(2, 6);
    let raw: Vec<u8> = x.iter().flat_map(|v| v.to_le_bytes()).collect();
    let header = json!({
        "inputs": [{"name": "x", "shape": [2, 6], "datatype": "FP32",
                    "parameters": {"binary_data_size": raw.len()}}],
        "parameters": {"binary_data_output": true},
    });
    let head = serde_json::to_vec(&header).unwrap();
    let mut body = head.clone();
    body.extend_from_slice(&raw);
    let r = c
        .post(format!("{}/v2/models/dense_softmax/infer", srv.base))
        .header("Inference-Header-Content-Length", head.len())
        .header("Content-Type", "application/octet-stream")
        .body(body)
        .send()
        .unwrap();
    assert_eq!(r.status(), 200);
    let n: usize = r.headers()["inference-header-content-length"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    let bytes = r.bytes().unwrap();
    let meta: Value = serde_json::from_slice(&bytes[..n]).unwrap();
    let out = &meta["outputs"][0];
    assert_eq!(out["parameters"]["binary_data_size"], 2 * 5 * 4);
    assert!(out.get("data").is_none());
    let got: Vec<f32> = bytes[n..]
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
        .collect();
    assert_close(&got, &reference(&s, &x, 2));
}

#[test]
fn concurrent_requests_get_their_own_answers() {
    let s = sample();
    let srv = start(&s);
    let url = format!("{}/v2/models/dense_softmax/infer", srv.base);
    std::thread::scope(|scope| {
        for t in 0..8usize {
            let (url, s) = (&url, &s);
            scope.spawn(move || {
                let c = Client::new();
                for i in 0..5usize {
                    let n = 1 + (t + i) % 4;
                    let x: Vec<f32> = rows(n, 6).iter().map(|v| v + t as f32 * 0.3).collect();
                    let id = format!("{t}-{i}");
                    let req = json!({"id": id, "inputs": [
                        {"name": "x", "shape": [n, 6], "datatype": "FP32", "data": x}]});
                    let v: Value = c.post(url).json(&req).send().unwrap().json().unwrap();
                    assert_eq!(v["id"], id);
                    assert_close(&as_f32s(&v["outputs"][0]["data"]), &reference(s, &x, n));
                }
            });
        }
    });
}

#[test]
fn oversized_bodies_are_refused() {
    let s = sample();
    let srv = start_with(&s, &["--max-body", "256", "--name", "tiny"]);
    let c = Client::new();
    let x = rows(64, 6);
    let req = json!({"inputs": [{"name": "x", "shape": [64, 6], "datatype": "FP32", "data": x}]});
    let r = c
        .post(format!("{}/v2/models/tiny/infer", srv.base))
        .json(&req)
        .send()
        .unwrap();
    assert_eq!(r.status(), 413);
    assert!(r.json::<Value>().unwrap()["error"].is_string());
    let small = json!({"inputs": [{"name": "x", "shape": [1, 6], "datatype": "FP32",
                                   "data": [0, 1, 2, 3, 4, 5]}]});
    let r = c
        .post(format!("{}/v2/models/tiny/infer", srv.base))
        .json(&small)
        .send()
        .unwrap();
    assert_eq!(r.status(), 200);
}
