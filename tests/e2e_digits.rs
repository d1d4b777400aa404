//! End to end on the digits MLP: ONNX → int8 bundle → host runtime → functional model and RTL.

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::Duration;

use ndarray::{ArrayD, Axis};
use ndarray_npy::read_npy;
use sinter_compiler::compile::{compile, CompileOptions};
use sinter_compiler::{interp, onnx};
use sinter_host::runtime::open_runtime;
use sinter_host::transport::DeviceKind;
use sinter_isa::bundle::Bundle;
use sinter_isa::tensor::Tensor;
use sinter_isa::HwConfig;

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures/digits")
        .join(name)
}

fn load_f32(name: &str) -> ArrayD<f32> {
    read_npy(fixture(name)).unwrap_or_else(|e| panic!("{name}: {e}"))
}

fn digits_bundle(hw: HwConfig, batch: usize) -> Bundle {
    let onnx = std::fs::read(fixture("mlp.onnx")).unwrap();
    compile(
        &onnx,
        &load_f32("calib.npy"),
        &CompileOptions {
            hw,
            batch,
            name: "digits".into(),
        },
    )
    .expect("the digits MLP compiles")
}

fn argmax(row: &[f32]) -> usize {
    row.iter()
        .enumerate()
        .fold((0, f32::NEG_INFINITY), |(bi, bv), (i, &v)| {
            if v > bv {
                (i, v)
            } else {
                (bi, bv)
            }
        })
        .0
}

fn accuracy(probs: &[f32], classes: usize, labels: &[i64]) -> f64 {
    let hits = probs
        .chunks(classes)
        .zip(labels)
        .filter(|(row, &y)| argmax(row) as i64 == y)
        .count();
    100.0 * hits as f64 / labels.len() as f64
}

fn tensor(a: &ArrayD<f32>) -> Tensor {
    Tensor::new(a.shape().to_vec(), a.iter().copied().collect()).unwrap()
}

/// The int8 model on the functional device keeps top-1 accuracy within 1 point of fp32 on the
/// held-out split, for a batch-1 and a batched program.
#[test]
fn int8_accuracy_within_one_point_of_float() {
    let x = load_f32("test_x.npy");
    let labels: ndarray::ArrayD<i64> = read_npy(fixture("test_y.npy")).unwrap();
    let labels: Vec<i64> = labels.iter().copied().collect();

    let graph = onnx::import::parse_model(&std::fs::read(fixture("mlp.onnx")).unwrap()).unwrap();
    let float = interp::run(&graph, &HashMap::from([("input".to_string(), x.clone())])).unwrap();
    let float_acc = accuracy(float["probs"].as_slice().unwrap(), 10, &labels);

    for (hw, batch) in [(HwConfig::DEFAULT, 1), (HwConfig::SMALL, 16)] {
        let bundle = digits_bundle(hw, batch);
        let mut rt = open_runtime(DeviceKind::Func, bundle, Duration::from_secs(30)).unwrap();
        let out = rt
            .infer(&HashMap::from([("input".to_string(), tensor(&x))]))
            .unwrap();
        let probs = out.output("probs").expect("probs output");
        assert_eq!(probs.shape, vec![labels.len(), 10]);
        let int8_acc = accuracy(&probs.data, 10, &labels);
        eprintln!(
            "{}x{} batch {batch}: fp32 {float_acc:.2}%  int8 {int8_acc:.2}%",
            hw.rows, hw.cols
        );
        assert!(
            float_acc > 90.0,
            "the float model itself is good: {float_acc}"
        );
        assert!(
            int8_acc >= float_acc - 1.0,
            "int8 accuracy {int8_acc:.2}% is more than 1 point below fp32 {float_acc:.2}%"
        );
    }
}

/// The RTL and the functional model give identical outputs and leave identical DRAM.
#[test]
fn rtl_and_functional_model_agree_on_the_compiled_mlp() {
    let x = load_f32("test_x.npy");
    for (hw, batch, samples) in [
        (HwConfig::SMALL, 1, 6),
        (HwConfig::SMALL, 8, 16),
        (HwConfig::DEFAULT, 4, 8),
    ] {
        let sub = x.slice_axis(Axis(0), (0..samples).into()).to_owned();
        let inputs = HashMap::from([("input".to_string(), tensor(&sub))]);
        let bundle = digits_bundle(hw, batch);
        let dram = bundle.manifest.memory.dram_bytes as usize;
        let mut results = Vec::new();
        for kind in [DeviceKind::Func, DeviceKind::Rtl] {
            let mut rt = open_runtime(kind, bundle.clone(), Duration::from_secs(120)).unwrap();
            let out = rt.infer(&inputs).unwrap();
            let mut image = vec![0u8; dram];
            rt.driver().read(0, &mut image).unwrap();
            let mac_active: u64 = out.runs.iter().map(|r| r.mac_active).sum();
            results.push((out.output("probs").unwrap().data.clone(), image, mac_active));
        }
        let (func, rtl) = (&results[0], &results[1]);
        assert_eq!(
            func.0, rtl.0,
            "{}x{} batch {batch}: outputs differ",
            hw.rows, hw.cols
        );
        if let Some(at) = func.1.iter().zip(&rtl.1).position(|(a, b)| a != b) {
            panic!(
                "{}x{} batch {batch}: DRAM differs first at byte {at:#x}",
                hw.rows, hw.cols
            );
        }
        assert_eq!(func.2, rtl.2, "MAC-active cycles differ");
    }
}
