//! The nine "light" architectures shipped with the `onnx` Python package (ResNet-50,
//! DenseNet-121, Inception v1/v2, SqueezeNet, ShuffleNet, VGG-19, AlexNet, ZFNet-512): each
//! compiles with every convolution and dense MAC on the NPU, and its int8 result on the
//! functional model stays close to the reference `output_0.pb`. Its layers run there as whole
//! operations, and the result must equal, bit for bit, that of running every instruction.
//!
//! Tolerance: these test models carry constant-filled weights, so their outputs are softmax
//! probabilities near 1/1000. An int8 network carries relative errors of a few quantization
//! steps in its logits; for near-equal logits a logit error δ moves a probability p by about
//! p·δ. We allow 5% of the largest reference probability per element (`|Δp| ≤ 0.05·max p`),
//! which is far above the float-vs-float differences (< 1e-6) yet catches any wrong layer, which
//! moves probabilities by their own magnitude.

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use ndarray::{ArrayD, IxDyn};
use prost::Message;
use sinter_compiler::compile::{compile, CompileOptions};
use sinter_compiler::onnx::import::{parse_model, tensor_to_f32};
use sinter_compiler::onnx::proto::TensorProto;
use sinter_host::driver::Driver;
use sinter_host::runtime::{Inference, Runtime};
use sinter_host::transport::FuncTransport;
use sinter_isa::bundle::Bundle;
use sinter_isa::tensor::Tensor;
use sinter_isa::HwConfig;

fn light_dir() -> PathBuf {
    let out = Command::new("python3")
        .args([
            "-c",
            "import onnx, os; print(os.path.dirname(onnx.__file__))",
        ])
        .output()
        .expect("python3 is required for this test (then `pip install onnx`)");
    assert!(
        out.status.success(),
        "the onnx Python package is required: `pip install onnx`"
    );
    PathBuf::from(String::from_utf8_lossy(&out.stdout).trim()).join("backend/test/data/light")
}

/// Runs `bundle` on the functional model with its layers as whole operations, checks that every
/// layer took that path and that running every instruction instead gives the same bits, and
/// returns the inference and the number of stages.
fn infer_both_ways(
    name: &str,
    bundle: &Bundle,
    feed: &HashMap<String, Tensor>,
) -> (Inference, usize) {
    let open = |b: &Bundle| {
        let dev = FuncTransport::func(b.config, b.manifest.memory.dram_bytes as u64).unwrap();
        let driver = Driver::new(dev)
            .unwrap()
            .with_timeout(Duration::from_secs(300));
        Runtime::new(driver, b.clone()).unwrap()
    };
    let mut rt = open(bundle);
    let out = rt.infer(feed).unwrap_or_else(|e| panic!("{name}: {e}"));
    let ops = rt.driver().transport().npu().ops_done();
    assert!(
        !bundle.ops.is_empty(),
        "{name}: the compiler describes its layers"
    );
    assert_eq!(
        ops,
        bundle.ops.len() as u64,
        "{name}: every layer ran as one operation"
    );
    let mut plain = bundle.clone();
    plain.ops.clear();
    let by_insns = open(&plain)
        .infer(feed)
        .unwrap_or_else(|e| panic!("{name}: {e}"));
    assert_eq!(
        out.outputs, by_insns.outputs,
        "{name}: operations and instructions disagree"
    );
    (out, bundle.io.stages.len())
}

fn check(name: &str) {
    let dir = light_dir();
    let onnx = std::fs::read(dir.join(format!("light_{name}.onnx"))).unwrap();
    // The backend runner's input: arange(n)/n in the model's input shape.
    let graph = parse_model(&onnx).unwrap_or_else(|e| panic!("{name}: {e}"));
    let input = graph.inputs[0].clone();
    let shape = input.shape.clone();
    let n: usize = shape.iter().product();
    let x = ArrayD::from_shape_vec(
        IxDyn(&shape),
        (0..n).map(|i| (i as f64 / n as f64) as f32).collect(),
    )
    .unwrap();

    let t0 = Instant::now();
    let bundle = compile(
        &onnx,
        &x,
        &CompileOptions {
            hw: HwConfig::DEFAULT,
            batch: 1,
            name: name.into(),
        },
    )
    .unwrap_or_else(|e| panic!("{name}: {e}"));
    let compile_time = t0.elapsed();
    assert_eq!(
        bundle.manifest.cpu_macs, 0,
        "{name}: every MAC runs on the NPU"
    );
    assert!(bundle.manifest.npu_macs > 0);

    let feed = HashMap::from([(
        input.name.clone(),
        Tensor::new(shape.clone(), x.iter().copied().collect()).unwrap(),
    )]);
    let t1 = Instant::now();
    let (out, stages) = infer_both_ways(name, &bundle, &feed);
    let run_time = t1.elapsed();
    let got = &out.outputs[0].1;
    let bytes = std::fs::read(dir.join(format!("light_{name}_output_0.pb"))).unwrap();
    let want = tensor_to_f32(&TensorProto::decode(bytes.as_slice()).unwrap()).unwrap();
    assert_eq!(got.data.len(), want.len(), "{name}: output size");
    let max_p = want.iter().fold(0f32, |m, v| m.max(v.abs()));
    let worst = got
        .data
        .iter()
        .zip(want.iter())
        .map(|(a, b)| (a - b).abs())
        .fold(0f32, f32::max);
    eprintln!(
        "{name:>14}: compile {compile_time:.2?}, int8 run {run_time:.2?}, max |Δ| {worst:.2e} \
         (max p {max_p:.2e}), {} stages",
        stages
    );
    assert!(
        worst <= 0.05 * max_p,
        "{name}: int8 output differs from output_0.pb by {worst} (max p {max_p})"
    );
}

#[test]
fn light_resnet50() {
    check("resnet50");
}
#[test]
fn light_densenet121() {
    check("densenet121");
}
#[test]
fn light_inception_v1() {
    check("inception_v1");
}
#[test]
fn light_inception_v2() {
    check("inception_v2");
}
#[test]
fn light_squeezenet() {
    check("squeezenet");
}
#[test]
fn light_shufflenet() {
    check("shufflenet");
}
#[test]
fn light_vgg19() {
    check("vgg19");
}
#[test]
fn light_bvlc_alexnet() {
    check("bvlc_alexnet");
}
#[test]
fn light_zfnet512() {
    check("zfnet512");
}

/// The stronger check: six of the architectures with random weights
/// (`scripts/onnx_conformance.py --light-random`, onnxruntime's outputs as the reference, logits
/// exposed), calibrated on their one input and run in int8 on the functional model.
///
/// Tolerance: every output keeps its top-1 class, has cosine similarity ≥ 0.99 with the float
/// reference, and its largest error is at most 15% of its largest value. Measured: cosine
/// 0.993–1.000, largest error 0–10% (inception_v2's softmax over near-tied classes is the
/// worst); a broken layer gives cosines near 0.
#[test]
fn light_models_with_random_weights_stay_close_in_int8() {
    const NAMES: [&str; 6] = [
        "squeezenet",
        "shufflenet",
        "inception_v1",
        "inception_v2",
        "resnet50",
        "densenet121",
    ];
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("light-random-int8");
    let missing: Vec<&str> = NAMES
        .iter()
        .copied()
        .filter(|n| !dir.join(format!("{n}.onnx")).is_file())
        .collect();
    if !missing.is_empty() {
        let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("scripts/onnx_conformance.py");
        let status = Command::new("python3")
            .arg(&script)
            .arg("--light-random")
            .arg(&dir)
            .args(&missing)
            .status()
            .expect("python3 is required (then `pip install onnx onnxruntime`)");
        assert!(
            status.success(),
            "{} failed: `pip install onnx onnxruntime`",
            script.display()
        );
    }
    let read = |p: PathBuf| {
        let bytes = std::fs::read(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
        tensor_to_f32(&TensorProto::decode(bytes.as_slice()).unwrap()).unwrap()
    };
    for name in NAMES {
        let onnx = std::fs::read(dir.join(format!("{name}.onnx"))).unwrap();
        let x = read(dir.join(format!("{name}_input_0.pb")));
        let bundle = compile(
            &onnx,
            &x,
            &CompileOptions {
                hw: HwConfig::DEFAULT,
                batch: 1,
                name: name.into(),
            },
        )
        .unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(bundle.manifest.cpu_macs, 0, "{name}: every MAC on the NPU");
        let input = bundle.io.model_inputs[0].name.clone();
        let feed = HashMap::from([(
            input,
            Tensor::new(x.shape().to_vec(), x.iter().copied().collect()).unwrap(),
        )]);
        let (out, _) = infer_both_ways(name, &bundle, &feed);
        for (i, (oname, got)) in out.outputs.iter().enumerate() {
            let want = read(dir.join(format!("{name}_output_{i}.pb")));
            let w: Vec<f32> = want.iter().copied().collect();
            let g = &got.data;
            assert_eq!(g.len(), w.len(), "{name}/{oname}");
            let dot: f64 = g.iter().zip(&w).map(|(a, b)| *a as f64 * *b as f64).sum();
            let norm = |v: &[f32]| v.iter().map(|a| (*a as f64).powi(2)).sum::<f64>().sqrt();
            let cos = dot / (norm(g) * norm(&w)).max(f64::MIN_POSITIVE);
            let scale = w.iter().fold(0f32, |m, v| m.max(v.abs()));
            let err = g
                .iter()
                .zip(&w)
                .map(|(a, b)| (a - b).abs())
                .fold(0f32, f32::max)
                / scale;
            let argmax = |v: &[f32]| {
                v.iter()
                    .enumerate()
                    .fold(
                        (0, f32::NEG_INFINITY),
                        |b, (i, &x)| if x > b.1 { (i, x) } else { b },
                    )
                    .0
            };
            eprintln!(
                "{name:>14}/{oname}: cosine {cos:.5}, max error {:.1}%",
                100.0 * err
            );
            assert_eq!(argmax(g), argmax(&w), "{name}/{oname}: top-1 changed");
            assert!(cos >= 0.99, "{name}/{oname}: cosine {cos}");
            assert!(err <= 0.15, "{name}/{oname}: max error {err}");
        }
    }
}
