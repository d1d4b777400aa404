//! End to end on the digits CNN (Conv+BatchNorm+ReLU, MaxPool, Flatten, Gemm) and the small
//! residual network (residual Add, Concat branch, GlobalAveragePool): ONNX → int8 bundle →
//! functional model and RTL.

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::Duration;

use ndarray::{ArrayD, Axis, IxDyn};
use ndarray_npy::read_npy;
use sinter_compiler::compile::{compile, CompileOptions};
use sinter_compiler::{interp, onnx};
use sinter_host::runtime::open_runtime;
use sinter_host::transport::DeviceKind;
use sinter_isa::bundle::{Bundle, Stage};
use sinter_isa::tensor::Tensor;
use sinter_isa::HwConfig;

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures/digits")
        .join(name)
}

/// Digits as images `[N, 1, 8, 8]`.
fn images(name: &str) -> ArrayD<f32> {
    let x: ArrayD<f32> = read_npy(fixture(name)).unwrap();
    let n = x.shape()[0];
    x.into_shape_with_order(IxDyn(&[n, 1, 8, 8])).unwrap()
}

fn labels() -> Vec<i64> {
    let y: ArrayD<i64> = read_npy(fixture("test_y.npy")).unwrap();
    y.iter().copied().collect()
}

fn bundle(model: &str, hw: HwConfig, batch: usize) -> Bundle {
    let onnx = std::fs::read(fixture(model)).unwrap();
    compile(
        &onnx,
        &images("calib.npy"),
        &CompileOptions {
            hw,
            batch,
            name: model.into(),
        },
    )
    .unwrap_or_else(|e| panic!("{model} compiles: {e}"))
}

fn tensor(a: &ArrayD<f32>) -> Tensor {
    Tensor::new(a.shape().to_vec(), a.iter().copied().collect()).unwrap()
}

fn accuracy(probs: &[f32], labels: &[i64]) -> f64 {
    let hits = probs
        .chunks(10)
        .zip(labels)
        .filter(|(row, &y)| {
            let best = row
                .iter()
                .enumerate()
                .fold(
                    (0, f32::NEG_INFINITY),
                    |b, (i, &v)| if v > b.1 { (i, v) } else { b },
                );
            best.0 as i64 == y
        })
        .count();
    100.0 * hits as f64 / labels.len() as f64
}

fn npu_ops(b: &Bundle) -> Vec<String> {
    b.manifest.layers.iter().map(|l| l.op.clone()).collect()
}

/// int8 top-1 within 1 point of fp32 on the held-out split, with every conv and dense MAC on
/// the NPU.
#[test]
fn cnn_and_resnet_int8_accuracy_within_one_point() {
    let x = images("test_x.npy");
    let y = labels();
    for model in ["cnn.onnx", "resnet.onnx"] {
        let graph = onnx::import::parse_model(&std::fs::read(fixture(model)).unwrap()).unwrap();
        let input = graph.inputs[0].name.clone();
        let float = interp::run(&graph, &HashMap::from([(input.clone(), x.clone())])).unwrap();
        let float_acc = accuracy(float[&graph.outputs[0].name].as_slice().unwrap(), &y);

        let b = bundle(model, HwConfig::DEFAULT, 8);
        assert_eq!(
            b.manifest.cpu_macs,
            0,
            "{model}: every MAC on the NPU: {:?}",
            npu_ops(&b)
        );
        let mut rt = open_runtime(DeviceKind::Func, b, Duration::from_secs(60)).unwrap();
        let out = rt.infer(&HashMap::from([(input, tensor(&x))])).unwrap();
        let int8_acc = accuracy(&out.outputs[0].1.data, &y);
        eprintln!("{model}: fp32 {float_acc:.2}%  int8 {int8_acc:.2}%");
        assert!(float_acc > 95.0, "{model}: float {float_acc}");
        assert!(
            int8_acc >= float_acc - 1.0,
            "{model}: int8 {int8_acc:.2}% vs fp32 {float_acc:.2}%"
        );
    }
}

/// The RTL and the functional model agree bit for bit on both networks, at 8×8 and 16×16.
#[test]
fn cnn_and_resnet_rtl_matches_functional_model() {
    let x = images("test_x.npy");
    for (model, hw, batch, n) in [
        ("cnn.onnx", HwConfig::SMALL, 2, 4),
        ("cnn.onnx", HwConfig::DEFAULT, 1, 2),
        ("resnet.onnx", HwConfig::SMALL, 1, 2),
        ("resnet.onnx", HwConfig::DEFAULT, 2, 4),
    ] {
        let b = bundle(model, hw, batch);
        assert!(
            b.io.stages.iter().any(|s| matches!(s, Stage::Npu { .. })),
            "{model} runs on the NPU"
        );
        let sub = x.slice_axis(Axis(0), (0..n).into()).to_owned();
        let input = b.io.model_inputs[0].name.clone();
        let inputs = HashMap::from([(input, tensor(&sub))]);
        let mut outs = Vec::new();
        for kind in [DeviceKind::Func, DeviceKind::Rtl] {
            let mut rt = open_runtime(kind, b.clone(), Duration::from_secs(300)).unwrap();
            let out = rt.infer(&inputs).unwrap();
            let mut image = vec![0u8; b.manifest.memory.dram_bytes as usize];
            rt.driver().read(0, &mut image).unwrap();
            outs.push((out.outputs[0].1.data.clone(), image));
        }
        assert_eq!(
            outs[0].0, outs[1].0,
            "{model} {}x{}: outputs differ",
            hw.rows, hw.cols
        );
        if let Some(at) = outs[0].1.iter().zip(&outs[1].1).position(|(a, b)| a != b) {
            panic!("{model} {}x{}: DRAM differs at {at:#x}", hw.rows, hw.cols);
        }
    }
}

/// Every layer's instructions form a program of their own: run layer by layer on the RTL, the
/// network gives the same answer, the same MAC-active cycles, and about the same total cycles
/// as in one run; each layer's measurement is reported against the compiler's prediction.
#[test]
fn layers_run_and_measure_one_by_one() {
    let x = images("test_x.npy");
    let b = bundle("resnet.onnx", HwConfig::SMALL, 2);
    let sub = x.slice_axis(Axis(0), (0..2).into()).to_owned();
    let inputs = HashMap::from([(b.io.model_inputs[0].name.clone(), tensor(&sub))]);
    let mut rt = open_runtime(DeviceKind::Rtl, b.clone(), Duration::from_secs(300)).unwrap();
    let whole = rt.infer(&inputs).unwrap();
    assert!(whole.layers.is_empty());
    rt.set_per_layer(true);
    let split = rt.infer(&inputs).unwrap();
    assert_eq!(whole.outputs[0].1.data, split.outputs[0].1.data);
    assert_eq!(split.layers.len(), b.manifest.layers.len());
    let mac = |r: &[sinter_host::RunStats]| r.iter().map(|s| s.mac_active).sum::<u64>();
    assert_eq!(mac(&whole.runs), mac(&split.layers));
    let cycles = |r: &[sinter_host::RunStats]| r.iter().map(|s| s.cycles).sum::<u64>() as f64;
    let ratio = cycles(&split.layers) / cycles(&whole.runs);
    assert!(
        (0.9..1.2).contains(&ratio),
        "layer-by-layer / whole cycles = {ratio}"
    );
    for (l, st) in b.manifest.layers.iter().zip(&split.layers) {
        assert!(st.cycles > 0, "layer {} measured", l.name);
        let err = (st.cycles as f64 - l.predicted_cycles as f64).abs() / st.cycles as f64;
        eprintln!(
            "{:>14}: predicted {:>7}, measured {:>7} (error {:.1}%)",
            l.name,
            l.predicted_cycles,
            st.cycles,
            100.0 * err
        );
    }
}
