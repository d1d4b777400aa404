//! Compile time of the digits MLP (import, calibration, quantization, lowering, bundle).

use criterion::{criterion_group, criterion_main, Criterion};
use ndarray::ArrayD;
use sinter_compiler::compile::{compile, CompileOptions};
use sinter_isa::HwConfig;

fn bench_compile(c: &mut Criterion) {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/digits");
    let onnx = std::fs::read(dir.join("mlp.onnx")).unwrap();
    let calib: ArrayD<f32> = ndarray_npy::read_npy(dir.join("calib.npy")).unwrap();
    for hw in [HwConfig::SMALL, HwConfig::DEFAULT] {
        let opts = CompileOptions {
            hw,
            batch: 1,
            name: "digits".into(),
        };
        c.bench_function(
            &format!("compile digits mlp {}x{}", hw.rows, hw.cols),
            |b| b.iter(|| compile(&onnx, &calib, &opts).unwrap()),
        );
    }
}

criterion_group!(benches, bench_compile);
criterion_main!(benches);
