//! The nine "light" architectures shipped with the `onnx` Python package (ResNet-50,
//! DenseNet-121, Inception v1/v2, SqueezeNet, ShuffleNet, VGG-19, AlexNet, ZFNet-512): each
//! compiles with every convolution and dense MAC on the NPU, and its int8 result on the
//! functional model stays close to the reference `output_0.pb`.
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
use sinter_compiler::onnx::import::tensor_to_f32;
use sinter_compiler::onnx::proto::{ModelProto, TensorProto};
use sinter_host::runtime::open_runtime;
use sinter_host::transport::DeviceKind;
use sinter_isa::tensor::Tensor;
use sinter_isa::HwConfig;

fn light_dir() -> PathBuf {
    let out = Command::new("python3")
        .args(["-c", "import onnx, os; print(os.path.dirname(onnx.__file__))"])
        .output()
        .expect("python3 is required for this test (then `pip install onnx`)");
    assert!(
        out.status.success(),
        "the onnx Python package is required: `pip install onnx`"
    );
    PathBuf::from(String::from_utf8_lossy(&out.stdout).trim()).join("backend/test/data/light")
}

fn check(name: &str) {
    let dir = light_dir();
    let onnx = std::fs::read(dir.join(format!("light_{name}.onnx"))).unwrap();
    let model = ModelProto::decode(onnx.as_slice()).unwrap();
    // The backend runner's input: arange(n)/n in the model's input shape.
    let graph = model.graph.as_ref().unwrap();
    let init: Vec<&str> = graph.initializer.iter().map(|t| t.name.as_str()).collect();
    let input = graph
        .input
        .iter()
        .find(|i| !init.contains(&i.name.as_str()))
        .unwrap();
    let shape: Vec<usize> = input
        .r#type
        .as_ref()
        .and_then(|t| t.tensor_type.as_ref())
        .and_then(|t| t.shape.as_ref())
        .map(|s| s.dim.iter().map(|d| d.dim_value.max(1) as usize).collect())
        .unwrap();
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
    assert_eq!(bundle.manifest.cpu_macs, 0, "{name}: every MAC runs on the NPU");
    assert!(bundle.manifest.npu_macs > 0);

    let mut rt = open_runtime(DeviceKind::Func, bundle, Duration::from_secs(300)).unwrap();
    let t1 = Instant::now();
    let out = rt
        .infer(&HashMap::from([(
            input.name.clone(),
            Tensor::new(shape.clone(), x.iter().copied().collect()).unwrap(),
        )]))
        .unwrap_or_else(|e| panic!("{name}: {e}"));
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
        rt.bundle().io.stages.len()
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
