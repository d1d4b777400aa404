//! Inference of the digits MLP on the functional model and on the RTL.

use std::collections::HashMap;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use ndarray::{ArrayD, Axis};
use sinter_compiler::compile::{compile, CompileOptions};
use sinter_host::runtime::open_runtime;
use sinter_host::transport::DeviceKind;
use sinter_isa::tensor::Tensor;
use sinter_isa::HwConfig;

fn bench_infer(c: &mut Criterion) {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/digits");
    let onnx = std::fs::read(dir.join("mlp.onnx")).unwrap();
    let calib: ArrayD<f32> = ndarray_npy::read_npy(dir.join("calib.npy")).unwrap();
    let x: ArrayD<f32> = ndarray_npy::read_npy(dir.join("test_x.npy")).unwrap();
    let mut group = c.benchmark_group("digits mlp");
    for (kind, hw, batch, rows) in [
        (DeviceKind::Func, HwConfig::DEFAULT, 1, 1),
        (DeviceKind::Func, HwConfig::DEFAULT, 64, 64),
        (DeviceKind::Rtl, HwConfig::DEFAULT, 1, 1),
        (DeviceKind::Rtl, HwConfig::SMALL, 1, 1),
    ] {
        let opts = CompileOptions {
            hw,
            batch,
            name: "digits".into(),
        };
        let bundle = compile(&onnx, &calib, &opts).unwrap();
        let mut rt = open_runtime(kind, bundle, Duration::from_secs(60)).unwrap();
        let sub = x.slice_axis(Axis(0), (0..rows).into()).to_owned();
        let input = Tensor::new(sub.shape().to_vec(), sub.iter().copied().collect()).unwrap();
        let inputs = HashMap::from([("input".to_string(), input)]);
        group.throughput(Throughput::Elements(rows as u64));
        group.bench_function(
            format!("{kind} {}x{} batch {batch}", hw.rows, hw.cols),
            |b| b.iter(|| rt.infer(&inputs).unwrap()),
        );
    }
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(20).measurement_time(Duration::from_secs(3));
    targets = bench_infer
}
criterion_main!(benches);
