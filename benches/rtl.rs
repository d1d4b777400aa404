//! One fixed convolution layer on the 16×16 RTL, in simulated cycles per second: the digits
//! CNN's largest convolution (by MACs), compiled for batch 8, run alone as the per-layer
//! mode of the runtime runs it.

use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use ndarray::{ArrayD, IxDyn};
use sinter_compiler::compile::{compile, CompileOptions};
use sinter_host::runtime::open_runtime;
use sinter_host::sample::sample_inputs;
use sinter_host::transport::DeviceKind;
use sinter_isa::HwConfig;

fn bench_conv_layer(c: &mut Criterion) {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/digits");
    let onnx = std::fs::read(dir.join("cnn.onnx")).unwrap();
    let calib: ArrayD<f32> = ndarray_npy::read_npy(dir.join("calib.npy")).unwrap();
    // The CNN takes the digits' 64 pixels as 1×8×8 images.
    let n = calib.shape()[0];
    let calib = calib.into_shape_with_order(IxDyn(&[n, 1, 8, 8])).unwrap();
    let opts = CompileOptions {
        hw: HwConfig::DEFAULT,
        batch: 8,
        name: "digits-cnn".into(),
    };
    let bundle = compile(&onnx, &calib, &opts).unwrap();
    let layer = bundle
        .manifest
        .layers
        .iter()
        .filter(|l| l.op.starts_with("Conv") && l.insn_start < l.insn_end)
        .max_by_key(|l| l.macs)
        .expect("the digits CNN has a convolution on the NPU")
        .clone();
    let inputs = sample_inputs(&bundle.io.model_inputs, bundle.manifest.batch as usize);
    let mut rt = open_runtime(DeviceKind::Rtl, bundle, Duration::from_secs(60)).unwrap();
    // One whole inference leaves the layer's input in device memory; the layer only reads it
    // and overwrites its own output, so it can run again and again.
    rt.infer(&inputs).unwrap();
    let cycles = rt
        .driver()
        .run_range(layer.insn_start, layer.insn_end)
        .unwrap()
        .cycles;

    let mut group = c.benchmark_group("rtl 16x16 layer");
    group.throughput(Throughput::Elements(cycles));
    group.bench_function(
        format!("{} ({}, batch 8) cycles", layer.name, layer.op),
        |b| {
            b.iter(|| {
                rt.driver()
                    .run_range(layer.insn_start, layer.insn_end)
                    .unwrap()
            })
        },
    );
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(20).measurement_time(Duration::from_secs(3));
    targets = bench_conv_layer
}
criterion_main!(benches);
