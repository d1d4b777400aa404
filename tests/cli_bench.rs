//! `sinter bench` and `--trace` through the command line, on the digits MLP compiled for the
//! 8×8 array (small enough for the RTL to run it in well under a second).

use serde_json::Value;
use sinter_isa::bundle::Bundle;
use std::path::Path;
use std::process::{Command, Output};

mod common;
use common::{fixture, succeeded, text, TempDir};

/// Runs `sinter` with no workspace unless `--workspace` is among `args`.
fn sinter(dir: &TempDir, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_sinter"))
        .current_dir(&dir.0)
        .args(args)
        .env("SINTER_LOG", "warn")
        .env_remove("SINTER_WORKSPACE")
        .output()
        .expect("run sinter")
}

fn ok(dir: &TempDir, args: &[&str]) -> String {
    succeeded(args, sinter(dir, args))
}

fn json(dir: &TempDir, args: &[&str]) -> Value {
    let out = ok(dir, args);
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("sinter {args:?}: {e}\n{out}"))
}

fn fails(dir: &TempDir, args: &[&str]) -> String {
    let o = sinter(dir, args);
    assert!(
        !o.status.success(),
        "sinter {args:?} should have failed:\n{}",
        text(&o.stdout)
    );
    text(&o.stderr)
}

/// Compiles the digits MLP for the 8×8 array into `dir`; returns its path and the bundle.
fn digits_8x8(dir: &TempDir) -> (String, Bundle) {
    let path = dir.path("mlp8.sntr");
    let p = path.to_str().unwrap();
    ok(
        dir,
        &[
            "compile",
            &fixture("mlp.onnx"),
            "--calib",
            &fixture("calib.npy"),
            "--hw",
            "8x8",
            "-o",
            p,
        ],
    );
    let bundle = Bundle::open(&path).unwrap();
    (p.to_string(), bundle)
}

fn u64_of(v: &Value, key: &str) -> u64 {
    v[key]
        .as_u64()
        .unwrap_or_else(|| panic!("'{key}' is not an integer in {v}"))
}

fn f64_of(v: &Value, key: &str) -> f64 {
    v[key]
        .as_f64()
        .unwrap_or_else(|| panic!("'{key}' is not a number in {v}"))
}

/// Checks an FST file's header block: block type 0 (header), its fixed 329-byte section
/// length (big-endian), and the endianness probe, the double `e`, after start and end time.
fn assert_fst(path: &Path) {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    assert!(bytes.len() > 330, "{} bytes", bytes.len());
    assert_eq!(bytes[0], 0, "not an FST header block");
    assert_eq!(u64::from_be_bytes(bytes[1..9].try_into().unwrap()), 329);
    let end_time = u64::from_be_bytes(bytes[17..25].try_into().unwrap());
    assert!(end_time > 0, "the waveform covers no time");
    let e = f64::from_le_bytes(bytes[25..33].try_into().unwrap());
    assert!((e - std::f64::consts::E).abs() < 1e-12, "endian probe {e}");
}

#[test]
fn rtl_bench_measures_every_layer_and_the_whole_model() {
    let dir = TempDir::new("bench-rtl");
    let (model, bundle) = digits_8x8(&dir);
    let m = &bundle.manifest;
    // Three rows on a batch-1 bundle: three device runs per inference.
    let r = json(
        &dir,
        &["bench", &model, "--device", "rtl", "--batch", "3", "--json"],
    );
    assert_eq!(r["device"], "rtl");
    assert_eq!(r["hw"], "8x8");
    assert_eq!(u64_of(&r, "batch"), 3);
    assert_eq!(u64_of(&r, "runs_per_inference"), 3);
    assert_eq!(u64_of(&r, "iterations"), 1);
    assert_eq!(r["cycle_source"], "measured");

    let layers = r["layers"].as_array().unwrap();
    assert_eq!(layers.len(), m.layers.len());
    let mut macs = 0;
    for (l, info) in layers.iter().zip(&m.layers) {
        assert_eq!(l["name"], info.name.as_str());
        assert_eq!(l["op"], info.op.as_str());
        assert_eq!(u64_of(l, "predicted_cycles"), 3 * info.predicted_cycles);
        let measured = u64_of(l, "measured_cycles");
        assert!(measured > 0, "{l}");
        assert_eq!(measured, u64_of(l, "cycles"));
        let util = f64_of(l, "mac_utilization");
        assert!(util > 0.0 && util <= 1.0, "{l}");
        macs += u64_of(l, "macs");
    }
    assert_eq!(macs, 3 * m.npu_macs);
    assert_eq!(u64_of(&r, "npu_macs"), 3 * m.npu_macs);

    let total = u64_of(&r, "total_cycles");
    assert!(total > 0);
    assert_eq!(u64_of(&r, "measured_cycles"), total);
    assert_eq!(u64_of(&r, "predicted_cycles"), 3 * m.predicted_cycles);
    let util = f64_of(&r, "mac_utilization");
    assert!(util > 0.0 && util <= 1.0, "{util}");
    // A MAC-active cycle does at most ROWS×COLS useful MACs (fewer on padded tiles).
    assert!(u64_of(&r, "mac_active") * 64 >= 3 * m.npu_macs, "{r}");
    assert!(f64_of(&r, "sim_cycles_per_second") > 0.0);
    assert!(f64_of(&r, "inferences_per_second") > 0.0);
}

#[test]
fn func_bench_reports_predicted_cycles_and_no_measurement() {
    let dir = TempDir::new("bench-func");
    let (model, bundle) = digits_8x8(&dir);
    let m = &bundle.manifest;
    let r = json(&dir, &["bench", &model, "--iterations", "2", "--json"]);
    assert_eq!(r["device"], "func");
    assert_eq!(r["cycle_source"], "predicted");
    assert_eq!(u64_of(&r, "iterations"), 2);
    assert_eq!(u64_of(&r, "batch"), m.batch as u64);
    assert!(r["measured_cycles"].is_null(), "{r}");
    assert!(u64_of(&r, "total_cycles") > 0);
    assert_eq!(u64_of(&r, "predicted_cycles"), m.predicted_cycles);
    let layers = r["layers"].as_array().unwrap();
    assert_eq!(layers.len(), m.layers.len());
    for l in layers {
        assert!(l["measured_cycles"].is_null(), "{l}");
        assert!(u64_of(l, "cycles") > 0, "{l}");
    }

    // The human table names every layer and ends with a totals line.
    let out = ok(&dir, &["bench", &model, "--iterations", "1"]);
    for l in &m.layers {
        assert!(out.contains(&l.name), "{out}");
    }
    assert!(out.contains("total"), "{out}");
    assert!(out.contains("inferences/s"), "{out}");
}

#[test]
fn bench_filters_layers_by_name_and_rejects_unknown_ones() {
    let dir = TempDir::new("bench-layers");
    let (model, bundle) = digits_8x8(&dir);
    let last = &bundle.manifest.layers.last().unwrap().name;
    let r = json(&dir, &["bench", &model, "--layers", last, "--json"]);
    let layers = r["layers"].as_array().unwrap();
    assert_eq!(layers.len(), 1);
    assert_eq!(layers[0]["name"], last.as_str());

    let err = fails(&dir, &["bench", &model, "--layers", "no_such_layer"]);
    assert!(err.contains("unknown layer 'no_such_layer'"), "{err}");
    for l in &bundle.manifest.layers {
        assert!(err.contains(&l.name), "valid names missing: {err}");
    }
}

#[test]
fn bench_is_recorded_as_a_bench_run() {
    let dir = TempDir::new("bench-ws");
    let (model, _) = digits_8x8(&dir);
    let ws = dir.path("ws");
    let ws = ws.to_str().unwrap();
    ok(&dir, &["--workspace", ws, "init"]);
    let r = json(
        &dir,
        &[
            "--workspace",
            ws,
            "bench",
            &model,
            "--iterations",
            "1",
            "--json",
        ],
    );
    let id = r["run_id"].as_str().expect("a recorded run id");
    let runs = json(
        &dir,
        &[
            "--workspace",
            ws,
            "runs",
            "list",
            "--kind",
            "bench",
            "--json",
        ],
    );
    assert_eq!(runs.as_array().unwrap().len(), 1, "{runs}");
    assert_eq!(runs[0]["id"], id);
    assert_eq!(runs[0]["status"], "finished");
    let show = json(&dir, &["--workspace", ws, "runs", "show", id, "--json"]);
    let metric = |k: &str| show["last_metrics"][k]["value"].as_f64();
    assert_eq!(metric("total_cycles"), Some(f64_of(&r, "total_cycles")));
    assert_eq!(
        metric("inferences_per_second"),
        Some(f64_of(&r, "inferences_per_second"))
    );
    assert_eq!(show["params"]["device"], "func");
}

#[test]
fn trace_writes_an_fst_waveform_on_the_rtl_only() {
    let dir = TempDir::new("trace");
    let (model, _) = digits_8x8(&dir);
    let x = dir.path("x.npy");
    ndarray_npy::write_npy(&x, &ndarray::Array2::<f32>::ones((2, 64))).unwrap();
    let x = x.to_str().unwrap();

    let wave = dir.path("run.fst");
    ok(
        &dir,
        &[
            "run",
            &model,
            "-i",
            x,
            "--device",
            "rtl",
            "--trace",
            wave.to_str().unwrap(),
        ],
    );
    assert_fst(&wave);

    let wave = dir.path("bench.fst");
    let r = json(
        &dir,
        &[
            "bench",
            &model,
            "--device",
            "rtl",
            "--no-layers",
            "--trace",
            wave.to_str().unwrap(),
            "--json",
        ],
    );
    assert_eq!(r["trace"], wave.to_str().unwrap());
    assert_fst(&wave);

    let wave = dir.path("func.fst");
    let err = fails(
        &dir,
        &["run", &model, "-i", x, "--trace", wave.to_str().unwrap()],
    );
    assert!(err.contains("--trace needs --device rtl"), "{err}");
    assert!(!wave.exists());
    let err = fails(&dir, &["bench", &model, "--trace", wave.to_str().unwrap()]);
    assert!(err.contains("--trace needs --device rtl"), "{err}");
}
