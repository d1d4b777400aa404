//! `sinter serve` in operation: keys, queue limits, metrics, dynamic batching, hung devices,
//! the model repository and configuration routes, compressed bodies, graceful shutdown.

use reqwest::blocking::Client;
use serde_json::{json, Value};
use sinter_host::sample::{dense, hanging, DenseSample};
use sinter_host::Tensor;
use sinter_isa::bundle::Bundle;
use sinter_isa::HwConfig;
use std::io::Write;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

mod common;
use common::{spawn_server, Server, TempDir};

fn sinter(ws: &Path) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_sinter"));
    c.arg("--workspace").arg(ws).env("SINTER_LOG", "warn");
    c
}

fn start(ws: &Path, bundle: &Bundle, extra: &[&str]) -> Server {
    let path = ws.join(format!(
        "model-{}.sntr",
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos()
    ));
    bundle.save(&path).unwrap();
    let mut cmd = sinter(ws);
    cmd.arg("serve")
        .arg(&path)
        .args(["--port", "0"])
        .args(extra);
    spawn_server(cmd, None)
}

fn sample() -> DenseSample {
    dense(HwConfig::SMALL, 2, 6, 5, true)
}

fn rows(n: usize, seed: usize) -> Vec<f32> {
    (0..n * 6)
        .map(|i| (((i + seed * 11) * 37) % 41) as f32 * 0.2 - 4.0)
        .collect()
}

fn request(x: &[f32]) -> Value {
    json!({"inputs": [{"name": "x", "shape": [x.len() / 6, 6], "datatype": "FP32", "data": x}]})
}

fn reference(s: &DenseSample, x: &[f32]) -> Vec<f32> {
    s.reference(&Tensor::new(vec![x.len() / 6, 6], x.to_vec()).unwrap())
        .data
}

fn as_f32s(v: &Value) -> Vec<f32> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap() as f32)
        .collect()
}

/// The value of a Prometheus sample for the model `dense_softmax`.
fn metric(text: &str, name: &str) -> f64 {
    let prefix = format!("{name}{{model=\"dense_softmax\",version=\"1\"}} ");
    text.lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .unwrap_or_else(|| panic!("{name} missing from\n{text}"))
        .trim()
        .parse()
        .unwrap()
}

fn regenerate(ws: &Path, slot: &str) -> String {
    let out = sinter(ws)
        .args(["keys", "regenerate", slot])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let key = String::from_utf8(out.stdout).unwrap().trim().to_string();
    assert_eq!(key.len(), 64, "{key}");
    key
}

#[test]
fn keys_guard_scoring_and_regenerate_without_restart() {
    let dir = TempDir::new("keys");
    let s = sample();
    // Auth on and no keys: refused with the way out.
    let path = dir.0.join("m.sntr");
    s.bundle.save(&path).unwrap();
    let out = sinter(&dir.0)
        .arg("serve")
        .arg(&path)
        .args(["--port", "0", "--auth", "on"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("keys regenerate"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let primary = regenerate(&dir.0, "primary");
    let secondary = regenerate(&dir.0, "secondary");
    let srv = start(&dir.0, &s.bundle, &["--auth", "on"]);
    let c = Client::new();
    let infer = format!("{}/v2/models/dense_softmax/infer", srv.base);
    let x = rows(1, 0);
    let send = |key: Option<&str>| {
        let mut r = c.post(&infer).json(&request(&x));
        if let Some(k) = key {
            r = r.bearer_auth(k);
        }
        r.send().unwrap()
    };
    // Health stays open; scoring, metrics and control need a key.
    assert_eq!(
        c.get(format!("{}/v2/health/ready", srv.base))
            .send()
            .unwrap()
            .status(),
        200
    );
    assert_eq!(
        c.get(format!("{}/v2/health/live", srv.base))
            .send()
            .unwrap()
            .status(),
        200
    );
    let r = send(None);
    assert_eq!(r.status(), 401);
    assert!(r.json::<Value>().unwrap()["error"].is_string());
    assert_eq!(send(Some("0123")).status(), 401);
    assert_eq!(send(Some(&"ab".repeat(32))).status(), 401);
    assert_eq!(send(Some(&primary)).status(), 200);
    assert_eq!(send(Some(&secondary)).status(), 200);
    for path in ["/metrics", "/v2/models/dense_softmax"] {
        assert_eq!(
            c.get(format!("{}{path}", srv.base))
                .send()
                .unwrap()
                .status(),
            401
        );
    }
    let r = c
        .post(format!("{}/score", srv.base))
        .json(&json!({"data": [x.clone()]}))
        .send()
        .unwrap();
    assert_eq!(r.status(), 401);
    let r = c
        .post(format!("{}/v2/repository/index", srv.base))
        .send()
        .unwrap();
    assert_eq!(r.status(), 401);

    // A new primary key works and the old one stops working, without a restart.
    let new_primary = regenerate(&dir.0, "primary");
    let deadline = Instant::now() + Duration::from_secs(10);
    while send(Some(&primary)).status() != 401 {
        assert!(Instant::now() < deadline, "the old key still works");
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(send(Some(&new_primary)).status(), 200);
    assert_eq!(send(Some(&secondary)).status(), 200);

    // `keys show` never prints a key.
    let out = sinter(&dir.0)
        .args(["--json", "keys", "show"])
        .output()
        .unwrap();
    let shown = String::from_utf8(out.stdout).unwrap();
    let v: Value = serde_json::from_str(&shown).unwrap();
    assert_eq!(v.as_array().unwrap().len(), 2);
    assert!(!shown.contains(&new_primary) && !shown.contains(&secondary));
}

#[test]
fn a_full_queue_answers_503() {
    let dir = TempDir::new("queue");
    let s = sample();
    let srv = start(
        &dir.0,
        &hanging(&s.bundle),
        &[
            "--max-queue-size",
            "1",
            "--timeout-ms",
            "1500",
            "--dynamic-batching",
            "off",
        ],
    );
    let url = format!("{}/v2/models/dense_softmax/infer", srv.base);
    let x = rows(1, 0);
    std::thread::scope(|scope| {
        // The first request occupies the device, the second waits in the queue...
        let first = scope.spawn(|| Client::new().post(&url).json(&request(&x)).send().unwrap());
        std::thread::sleep(Duration::from_millis(300));
        let second = scope.spawn(|| Client::new().post(&url).json(&request(&x)).send().unwrap());
        std::thread::sleep(Duration::from_millis(300));
        // ...and the third finds the queue full at once.
        let t = Instant::now();
        let r = Client::new().post(&url).json(&request(&x)).send().unwrap();
        assert_eq!(r.status(), 503);
        assert!(
            t.elapsed() < Duration::from_millis(500),
            "{:?}",
            t.elapsed()
        );
        let e = r.json::<Value>().unwrap()["error"]
            .as_str()
            .unwrap()
            .to_string();
        assert!(e.contains("queue"), "{e}");
        for h in [first, second] {
            let r = h.join().unwrap();
            assert_eq!(r.status(), 503);
            let e = r.json::<Value>().unwrap()["error"]
                .as_str()
                .unwrap()
                .to_string();
            assert!(e.contains("hung"), "{e}");
        }
    });
}

#[test]
fn a_hung_device_fails_its_request_and_returns_to_the_pool() {
    let dir = TempDir::new("hung");
    let s = sample();
    let timeout = Duration::from_millis(1000);
    let srv = start(
        &dir.0,
        &hanging(&s.bundle),
        &[
            "--devices",
            "2",
            "--timeout-ms",
            "1000",
            "--dynamic-batching",
            "off",
        ],
    );
    let c = Client::new();
    let url = format!("{}/v2/models/dense_softmax/infer", srv.base);
    let x = rows(1, 0);
    std::thread::scope(|scope| {
        let a = scope.spawn(|| {
            let t = Instant::now();
            (
                Client::new().post(&url).json(&request(&x)).send().unwrap(),
                t.elapsed(),
            )
        });
        std::thread::sleep(Duration::from_millis(150));
        // The second request goes to the other device instead of waiting behind the hung one.
        let b = scope.spawn(|| {
            let t = Instant::now();
            (
                Client::new().post(&url).json(&request(&x)).send().unwrap(),
                t.elapsed(),
            )
        });
        // Meanwhile the server answers everything else at once.
        let t = Instant::now();
        assert_eq!(
            c.get(format!("{}/v2/health/ready", srv.base))
                .send()
                .unwrap()
                .status(),
            200
        );
        assert_eq!(
            c.get(format!("{}/metrics", srv.base))
                .send()
                .unwrap()
                .status(),
            200
        );
        assert!(t.elapsed() < Duration::from_millis(300));
        for h in [a, b] {
            let (r, took) = h.join().unwrap();
            assert_eq!(r.status(), 503);
            let e = r.json::<Value>().unwrap()["error"]
                .as_str()
                .unwrap()
                .to_string();
            assert!(e.contains("hung") && e.contains("reset"), "{e}");
            assert!(took >= timeout && took < timeout * 17 / 10, "{took:?}");
        }
    });
    // Both devices are back: two more requests again take one timeout, not two.
    std::thread::scope(|scope| {
        let hs: Vec<_> = (0..2)
            .map(|_| {
                scope.spawn(|| {
                    let t = Instant::now();
                    let r = Client::new().post(&url).json(&request(&x)).send().unwrap();
                    (r.status(), t.elapsed())
                })
            })
            .collect();
        for h in hs {
            let (status, took) = h.join().unwrap();
            assert_eq!(status, 503);
            assert!(took < timeout * 17 / 10, "{took:?}");
        }
    });
    let text = c
        .get(format!("{}/metrics", srv.base))
        .send()
        .unwrap()
        .text()
        .unwrap();
    assert_eq!(metric(&text, "nv_inference_request_failure"), 4.0);
    assert_eq!(metric(&text, "nv_inference_pending_request_count"), 0.0);
}

#[test]
fn metrics_count_and_dynamic_batching_merges_requests() {
    let dir = TempDir::new("batching");
    let s = sample();
    let srv = start(
        &dir.0,
        &s.bundle,
        &["--max-batch-size", "16", "--max-queue-delay-us", "20000"],
    );
    let url = format!("{}/v2/models/dense_softmax/infer", srv.base);
    let (clients, each) = (16usize, 8usize);
    std::thread::scope(|scope| {
        for t in 0..clients {
            let (url, s) = (&url, &s);
            scope.spawn(move || {
                let c = Client::new();
                for i in 0..each {
                    // Every request its own rows, so a mix-up when merging shows.
                    let x = rows(1, t * 100 + i);
                    let r = c.post(url).json(&request(&x)).send().unwrap();
                    assert_eq!(r.status(), 200);
                    let v: Value = r.json().unwrap();
                    let got = as_f32s(&v["outputs"][0]["data"]);
                    let want = reference(s, &x);
                    for (a, b) in got.iter().zip(&want) {
                        assert!(
                            (a - b).abs() <= 1e-6,
                            "client {t} request {i}: {got:?} vs {want:?}"
                        );
                    }
                }
            });
        }
    });
    let c = Client::new();
    let r = c.get(format!("{}/metrics", srv.base)).send().unwrap();
    assert!(r.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/plain"));
    let text = r.text().unwrap();
    let n = (clients * each) as f64;
    assert_eq!(metric(&text, "nv_inference_request_success"), n);
    assert_eq!(metric(&text, "nv_inference_request_failure"), 0.0);
    assert_eq!(metric(&text, "nv_inference_count"), n);
    let execs = metric(&text, "nv_inference_exec_count");
    assert!(
        execs >= 1.0 && execs < n,
        "{execs} executions for {n} requests"
    );
    assert_eq!(metric(&text, "nv_inference_pending_request_count"), 0.0);
    for name in [
        "nv_inference_request_duration_us",
        "nv_inference_queue_duration_us",
        "nv_inference_compute_input_duration_us",
        "nv_inference_compute_infer_duration_us",
        "nv_inference_compute_output_duration_us",
        "sinter_npu_cycles_total",
        "sinter_npu_mac_active_total",
    ] {
        assert!(metric(&text, name) > 0.0, "{name}");
    }
    let u = metric(&text, "sinter_npu_utilization");
    assert!(u > 0.0 && u <= 1.0, "{u}");

    // The statistics extension agrees.
    let v: Value = c
        .get(format!("{}/v2/models/dense_softmax/stats", srv.base))
        .send()
        .unwrap()
        .json()
        .unwrap();
    let m = &v["model_stats"][0];
    assert_eq!(m["name"], "dense_softmax");
    assert_eq!(m["version"], "1");
    assert_eq!(m["inference_count"].as_f64().unwrap(), n);
    assert_eq!(m["execution_count"].as_f64().unwrap(), execs);
    assert_eq!(
        m["inference_stats"]["success"]["count"].as_f64().unwrap(),
        n
    );
    assert!(m["inference_stats"]["queue"]["ns"].as_u64().unwrap() > 0);
    assert!(!m["batch_stats"].as_array().unwrap().is_empty());
}

#[test]
fn protocol_routes_repository_compression_and_validation() {
    let dir = TempDir::new("protocol");
    let s = sample();
    let srv = start(
        &dir.0,
        &s.bundle,
        &["--max-batch-size", "8", "--max-queue-delay-us", "100"],
    );
    let c = Client::new();
    let url = |p: &str| format!("{}{p}", srv.base);
    let infer = url("/v2/models/dense_softmax/infer");

    let v: Value = c.get(url("/v2")).send().unwrap().json().unwrap();
    for ext in [
        "binary_tensor_data",
        "statistics",
        "model_repository",
        "model_configuration",
    ] {
        assert!(
            v["extensions"].as_array().unwrap().contains(&json!(ext)),
            "{ext}"
        );
    }
    let cfg: Value = c
        .get(url("/v2/models/dense_softmax/config"))
        .send()
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(cfg["max_batch_size"], 8);
    assert_eq!(cfg["input"][0]["dims"], json!([6]));
    assert_eq!(cfg["dynamic_batching"]["max_queue_delay_microseconds"], 100);
    let cfg1: Value = c
        .get(url("/v2/models/dense_softmax/versions/1/config"))
        .send()
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(cfg, cfg1);
    assert_eq!(
        c.get(url("/v2/models/dense_softmax/versions/2/config"))
            .send()
            .unwrap()
            .status(),
        404
    );
    let sw: Value = c.get(url("/swagger.json")).send().unwrap().json().unwrap();
    assert!(sw["paths"]["/score"]["post"].is_object());
    assert_eq!(
        sw["definitions"]["ServiceInput"]["properties"]["data"]["items"]["maxItems"],
        6
    );

    // Request ids: the client's is echoed in the header, the body's in the body.
    let r = c
        .post(&infer)
        .header("x-request-id", "trace-7")
        .json(&json!({"id": "abc", "inputs": request(&rows(2, 1))["inputs"]}))
        .send()
        .unwrap();
    assert_eq!(r.headers()["x-request-id"], "trace-7");
    assert_eq!(r.json::<Value>().unwrap()["id"], "abc");

    // gzip and deflate bodies.
    let x = rows(3, 2);
    let body = serde_json::to_vec(&request(&x)).unwrap();
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(&body).unwrap();
    let mut zl = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
    zl.write_all(&body).unwrap();
    for (enc, bytes) in [
        ("gzip", gz.finish().unwrap()),
        ("deflate", zl.finish().unwrap()),
    ] {
        let r = c
            .post(&infer)
            .header("content-encoding", enc)
            .header("content-type", "application/json")
            .body(bytes)
            .send()
            .unwrap();
        assert_eq!(r.status(), 200, "{enc}");
        let v: Value = r.json().unwrap();
        let got = as_f32s(&v["outputs"][0]["data"]);
        let want = reference(&s, &x);
        assert!(
            got.iter().zip(&want).all(|(a, b)| (a - b).abs() <= 1e-6),
            "{enc}"
        );
    }

    // Validation: 400 naming the tensor.
    let bad = |req: Value, needle: &str| {
        let r = c.post(&infer).json(&req).send().unwrap();
        assert_eq!(r.status(), 400, "{req}");
        let e = r.json::<Value>().unwrap()["error"]
            .as_str()
            .unwrap()
            .to_string();
        assert!(e.contains(needle), "{e} lacks {needle}");
    };
    bad(
        json!({"inputs": [{"name": "x", "shape": [1, 5], "datatype": "FP32", "data": [0, 0, 0, 0, 0]}]}),
        "'x'",
    );
    bad(
        json!({"inputs": [{"name": "x", "shape": [1, 6], "datatype": "BYTES", "data": ["a"]}]}),
        "'x'",
    );
    bad(
        json!({"inputs": [{"name": "y", "shape": [1, 6], "datatype": "FP32", "data": [0, 0, 0, 0, 0, 0]}]}),
        "'y'",
    );
    bad(json!({"inputs": []}), "'x'");
    bad(request(&rows(9, 0)), "batch-size");
    bad(
        json!({"inputs": request(&rows(1, 0))["inputs"], "outputs": [{"name": "nope"}]}),
        "'nope'",
    );
    let nan: Vec<u8> = [f32::NAN; 6].iter().flat_map(|v| v.to_le_bytes()).collect();
    let head = serde_json::to_vec(
        &json!({"inputs": [{"name": "x", "shape": [1, 6], "datatype": "FP32",
        "parameters": {"binary_data_size": 24}}]}),
    )
    .unwrap();
    let mut body = head.clone();
    body.extend(nan);
    let r = c
        .post(&infer)
        .header("inference-header-content-length", head.len())
        .body(body)
        .send()
        .unwrap();
    assert_eq!(r.status(), 400);
    let r = c.get(url("/v2/nothing/here")).send().unwrap();
    assert_eq!(r.status(), 404);
    assert!(r.json::<Value>().unwrap()["error"].is_string());

    // Repository: unload makes the model unavailable, load brings it back.
    let idx: Value = c
        .post(url("/v2/repository/index"))
        .send()
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(
        idx,
        json!([{"name": "dense_softmax", "version": "1", "state": "READY", "reason": ""}])
    );
    assert_eq!(
        c.post(url("/v2/repository/models/other/load"))
            .send()
            .unwrap()
            .status(),
        400
    );
    let r = c
        .post(url("/v2/repository/models/dense_softmax/unload"))
        .json(&json!({"parameters": {"unload_dependents": false}}))
        .send()
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(
        c.get(url("/v2/models/dense_softmax/ready"))
            .send()
            .unwrap()
            .status(),
        400
    );
    assert_eq!(
        c.post(&infer).json(&request(&x)).send().unwrap().status(),
        503
    );
    let idx: Value = c
        .post(url("/v2/repository/index"))
        .json(&json!({"ready": true}))
        .send()
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(idx, json!([]));
    assert_eq!(
        c.post(url("/v2/repository/models/dense_softmax/load"))
            .send()
            .unwrap()
            .status(),
        200
    );
    assert_eq!(
        c.get(url("/v2/models/dense_softmax/ready"))
            .send()
            .unwrap()
            .status(),
        200
    );
    assert_eq!(
        c.post(&infer).json(&request(&x)).send().unwrap().status(),
        200
    );
}

#[test]
fn fixed_shape_without_batching_and_graceful_shutdown() {
    let dir = TempDir::new("fixed");
    let s = sample();
    let mut srv = start(&dir.0, &s.bundle, &["--max-batch-size", "0"]);
    let c = Client::new();
    let meta: Value = c
        .get(format!("{}/v2/models/dense_softmax", srv.base))
        .send()
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(meta["inputs"][0]["shape"], json!([2, 6]));
    let url = format!("{}/v2/models/dense_softmax/infer", srv.base);
    assert_eq!(
        c.post(&url)
            .json(&request(&rows(1, 0)))
            .send()
            .unwrap()
            .status(),
        400
    );
    assert_eq!(
        c.post(&url)
            .json(&request(&rows(2, 0)))
            .send()
            .unwrap()
            .status(),
        200
    );
    drop(c);

    // SIGTERM while requests are in flight: they are answered, then the server exits cleanly.
    let dir2 = TempDir::new("drain");
    let mut slow = start(&dir2.0, &hanging(&s.bundle), &["--timeout-ms", "800"]);
    let url = format!("{}/v2/models/dense_softmax/infer", slow.base);
    let x = rows(1, 0);
    let pending = std::thread::spawn(move || Client::new().post(&url).json(&request(&x)).send());
    std::thread::sleep(Duration::from_millis(200));
    let pid = slow.child.id().to_string();
    assert!(Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap()
        .success());
    let r = pending
        .join()
        .unwrap()
        .expect("the request in flight got an answer");
    assert_eq!(r.status(), 503);
    let status = slow.child.wait().unwrap();
    assert!(status.success(), "{status:?}");
    let _ = srv.child.kill();
    let _ = srv.child.wait();
}
