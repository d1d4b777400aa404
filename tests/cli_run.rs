//! The `sinter` command line on a hand-built bundle.

use ndarray::{Array2, ArrayD};
use sinter_host::sample::dense;
use sinter_host::Tensor;
use sinter_isa::HwConfig;
use std::process::{Command, Output};

mod common;
use common::{text, TempDir};

fn sinter(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_sinter"))
        .args(args)
        .env("SINTER_LOG", "warn")
        .output()
        .expect("run sinter")
}

#[test]
fn run_writes_outputs_and_reports_cycles() {
    let dir = TempDir::new("cli-run");
    let s = dense(HwConfig::SMALL, 2, 6, 5, false);
    let model = dir.path("m.sntr");
    s.bundle.save(&model).unwrap();
    let x = Array2::from_shape_fn((3, 6), |(i, j)| (i as f64 - 1.0) * 1.5 + j as f64 * 0.4);
    let xin = dir.path("x.npy");
    ndarray_npy::write_npy(&xin, &x).unwrap(); // float64 input is accepted
    let yout = dir.path("y.npy");

    let o = sinter(&[
        "run",
        model.to_str().unwrap(),
        "--input",
        xin.to_str().unwrap(),
        "--output",
        yout.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", text(&o.stderr));
    let out = text(&o.stdout);
    assert!(out.contains("predicted"), "{out}");
    assert!(out.contains("MAC utilization"), "{out}");
    assert!(out.contains("total"), "{out}");

    let y: ArrayD<f32> = ndarray_npy::read_npy(&yout).unwrap();
    assert_eq!(y.shape(), &[3, 5]);
    let xt = Tensor::new(vec![3, 6], x.iter().map(|v| *v as f32).collect()).unwrap();
    let want = s.reference(&xt);
    for (a, b) in y.iter().zip(&want.data) {
        assert!((a - b).abs() <= 1e-6, "{a} vs {b}");
    }

    // JSON report.
    let o = sinter(&[
        "run",
        model.to_str().unwrap(),
        "--input",
        xin.to_str().unwrap(),
        "--json",
    ]);
    assert!(o.status.success(), "{}", text(&o.stderr));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["cycle_source"], "predicted");
    assert_eq!(v["runs"].as_array().unwrap().len(), 2);
    assert_eq!(v["outputs"][0]["shape"], serde_json::json!([3, 5]));
    assert!(v["total"]["cycles"].as_u64().unwrap() > 0);
}

#[test]
fn run_rejects_a_bad_input_shape() {
    let dir = TempDir::new("cli-bad");
    let s = dense(HwConfig::SMALL, 1, 6, 5, false);
    let model = dir.path("m.sntr");
    s.bundle.save(&model).unwrap();
    let xin = dir.path("x.npy");
    ndarray_npy::write_npy(&xin, &Array2::<f32>::zeros((2, 4))).unwrap();
    let o = sinter(&[
        "run",
        model.to_str().unwrap(),
        "--input",
        xin.to_str().unwrap(),
    ]);
    assert!(!o.status.success());
    let err = text(&o.stderr);
    assert!(err.contains("shape"), "{err}");
}

#[test]
fn disasm_and_info_describe_the_bundle() {
    let dir = TempDir::new("cli-info");
    let s = dense(HwConfig::SMALL, 1, 6, 5, true);
    let model = dir.path("m.sntr");
    s.bundle.save(&model).unwrap();
    let o = sinter(&["disasm", model.to_str().unwrap()]);
    assert!(o.status.success());
    let listing = text(&o.stdout);
    assert!(
        listing.contains("gemm") && listing.contains("store"),
        "{listing}"
    );
    let o = sinter(&["info", model.to_str().unwrap()]);
    assert!(o.status.success());
    let info = text(&o.stdout);
    assert!(
        info.contains("dense") && info.contains("total") && info.contains("CPU"),
        "{info}"
    );
    let o = sinter(&[
        "run",
        dir.path("missing.sntr").to_str().unwrap(),
        "--input",
        "x.npy",
    ]);
    assert!(!o.status.success());
    assert!(text(&o.stderr).contains("missing.sntr"));
}
