//! The lane-wise and layout operators on the NPU, on a network built for them: a channel
//! shuffle (lanes relabelled, no copy), a channel Concat
//! whose inputs are written in place (and a graph input copied into its slice), a BatchNorm
//! after the Concat (a depthwise 1×1 convolution), LeakyRelu, a residual Add of two tensors
//! whose channels sit in different lanes, average pooling that leaves the padding out of its
//! count, a pool larger than the weight buffer, and a convolution reading the segmented
//! layout. Channel counts are deliberately not multiples of the array size.
//!
//! A second network exercises the tiling choices: 1×1 convolutions with stride 2 (with and
//! without padding) whose windows the DMA fetches subsampled, and 1×1 convolutions with more
//! input blocks than half the activation buffer holds for one tile. A third has a 1×1
//! convolution whose windows do not fit the activation buffer at all, so that several output
//! blocks share each load of them.
//!
//! The whole network must run on the NPU; its int8 result must stay close to the float
//! interpreter; and the RTL must agree with the functional model bit for bit.

use std::collections::HashMap;
use std::time::Duration;

use ndarray::{ArrayD, IxDyn};
use prost::Message;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use sinter_compiler::compile::{compile, CompileOptions};
use sinter_compiler::onnx::proto::{
    attribute_type, data_type, tensor_shape_proto, type_proto, AttributeProto, GraphProto,
    ModelProto, NodeProto, OperatorSetIdProto, TensorProto, TensorShapeProto, TypeProto,
    ValueInfoProto,
};
use sinter_compiler::{interp, onnx};
use sinter_host::driver::Driver;
use sinter_host::runtime::{open_runtime, Runtime};
use sinter_host::transport::{DeviceKind, FuncTransport, Transport};
use sinter_isa::bundle::{Bundle, Stage};
use sinter_isa::insn::{Dma, Instruction};
use sinter_isa::tensor::Tensor;
use sinter_isa::{Buffer, HwConfig};

struct Builder {
    rng: StdRng,
    nodes: Vec<NodeProto>,
    inits: Vec<TensorProto>,
}

enum Attr {
    I(i64),
    F(f32),
    Ints(Vec<i64>),
}

impl Builder {
    fn new() -> Builder {
        Builder {
            rng: StdRng::seed_from_u64(7),
            nodes: Vec::new(),
            inits: Vec::new(),
        }
    }

    fn weight(&mut self, name: &str, dims: &[usize], lo: f32, hi: f32) -> String {
        let n: usize = dims.iter().product();
        self.inits.push(TensorProto {
            name: name.into(),
            dims: dims.iter().map(|&d| d as i64).collect(),
            data_type: data_type::FLOAT,
            float_data: (0..n).map(|_| self.rng.gen_range(lo..hi)).collect(),
            ..Default::default()
        });
        name.into()
    }

    fn shape(&mut self, name: &str, dims: &[i64]) -> String {
        self.inits.push(TensorProto {
            name: name.into(),
            dims: vec![dims.len() as i64],
            data_type: data_type::INT64,
            int64_data: dims.to_vec(),
            ..Default::default()
        });
        name.into()
    }

    fn node(&mut self, op: &str, name: &str, inputs: &[&str], attrs: &[(&str, Attr)]) -> String {
        self.nodes.push(NodeProto {
            op_type: op.into(),
            name: name.into(),
            input: inputs.iter().map(|s| s.to_string()).collect(),
            output: vec![name.into()],
            attribute: attrs
                .iter()
                .map(|(k, v)| match v {
                    Attr::I(i) => AttributeProto {
                        name: k.to_string(),
                        r#type: attribute_type::INT,
                        i: *i,
                        ..Default::default()
                    },
                    Attr::F(f) => AttributeProto {
                        name: k.to_string(),
                        r#type: attribute_type::FLOAT,
                        f: *f,
                        ..Default::default()
                    },
                    Attr::Ints(v) => AttributeProto {
                        name: k.to_string(),
                        r#type: attribute_type::INTS,
                        ints: v.clone(),
                        ..Default::default()
                    },
                })
                .collect(),
            ..Default::default()
        });
        name.into()
    }

    /// A `k × k` convolution with "same" padding.
    fn conv(
        &mut self,
        name: &str,
        x: &str,
        cin: usize,
        cout: usize,
        k: usize,
        stride: i64,
    ) -> String {
        let p = (k / 2) as i64;
        self.conv_padded(name, x, [cin, cout, k], stride, [p; 4])
    }

    /// A convolution of `[cin, cout, k]` with explicit `[top, left, bottom, right]` padding.
    fn conv_padded(
        &mut self,
        name: &str,
        x: &str,
        [cin, cout, k]: [usize; 3],
        stride: i64,
        pads: [i64; 4],
    ) -> String {
        let w = self.weight(&format!("{name}_w"), &[cout, cin, k, k], -0.4, 0.4);
        let b = self.weight(&format!("{name}_b"), &[cout], -0.2, 0.2);
        self.node(
            "Conv",
            name,
            &[x, &w, &b],
            &[
                ("pads", Attr::Ints(pads.to_vec())),
                ("strides", Attr::Ints(vec![stride; 2])),
            ],
        )
    }

    fn model(self, input: (&str, &[usize]), output: (&str, &[usize])) -> Vec<u8> {
        let vi = |name: &str, shape: &[usize]| ValueInfoProto {
            name: name.into(),
            r#type: Some(TypeProto {
                value: Some(type_proto::Value::TensorType(type_proto::Tensor {
                    elem_type: data_type::FLOAT,
                    shape: Some(TensorShapeProto {
                        dim: shape
                            .iter()
                            .map(|&d| tensor_shape_proto::Dimension {
                                value: Some(tensor_shape_proto::dimension::Value::DimValue(
                                    d as i64,
                                )),
                                ..Default::default()
                            })
                            .collect(),
                    }),
                })),
                ..Default::default()
            }),
            ..Default::default()
        };
        ModelProto {
            ir_version: 8,
            opset_import: vec![OperatorSetIdProto {
                domain: String::new(),
                version: 13,
            }],
            graph: Some(GraphProto {
                name: "npu_ops".into(),
                node: self.nodes,
                initializer: self.inits,
                input: vec![vi(input.0, input.1)],
                output: vec![vi(output.0, output.1)],
                ..Default::default()
            }),
            ..Default::default()
        }
        .encode_to_vec()
    }
}

const SIDE: usize = 10;

/// The network: see the module documentation.
fn network() -> Vec<u8> {
    let mut b = Builder::new();
    let c1 = b.conv("c1", "x", 3, 24, 3, 1);
    let r1 = b.node("Relu", "r1", &[&c1], &[]);
    // A channel shuffle (3 groups of 8): the NPU relabels lanes instead of moving bytes.
    let s5 = b.shape("s5", &[1, 3, 8, SIDE as i64, SIDE as i64]);
    let s4 = b.shape("s4", &[1, 24, SIDE as i64, SIDE as i64]);
    let g = b.node("Reshape", "g", &[&r1, &s5], &[]);
    let gt = b.node(
        "Transpose",
        "gt",
        &[&g],
        &[("perm", Attr::Ints(vec![0, 2, 1, 3, 4]))],
    );
    let shuf = b.node("Reshape", "shuf", &[&gt, &s4], &[]);
    let b1 = b.conv("b1", &shuf, 24, 20, 1, 1);
    let b2 = b.node(
        "MaxPool",
        "b2",
        &[&r1],
        &[
            ("kernel_shape", Attr::Ints(vec![3, 3])),
            ("pads", Attr::Ints(vec![1; 4])),
        ],
    );
    // b1 and b2 are written into `cat` in place; x, a graph input, is copied into its slice.
    let cat = b.node("Concat", "cat", &[&b1, &b2, "x"], &[("axis", Attr::I(1))]);
    // The same channels in another order: every part is copied.
    let cat2 = b.node("Concat", "cat2", &[&b2, &b1, "x"], &[("axis", Attr::I(1))]);
    let sum = b.node("Add", "sum", &[&cat, &cat2], &[]);
    let c = 47;
    let scale = b.weight("bn_scale", &[c], 0.5, 1.5);
    let bias = b.weight("bn_bias", &[c], -0.3, 0.3);
    let mean = b.weight("bn_mean", &[c], -0.5, 0.5);
    let var = b.weight("bn_var", &[c], 0.5, 2.0);
    let bn = b.node(
        "BatchNormalization",
        "bn",
        &[&sum, &scale, &bias, &mean, &var],
        &[],
    );
    let lr = b.node("LeakyRelu", "lr", &[&bn], &[("alpha", Attr::F(0.1))]);
    let ap = b.node(
        "AveragePool",
        "ap",
        &[&lr],
        &[
            ("kernel_shape", Attr::Ints(vec![3, 3])),
            ("pads", Attr::Ints(vec![1; 4])),
            ("count_include_pad", Attr::I(0)),
        ],
    );
    let c3 = b.conv("c3", &ap, c, 18, 3, 2);
    // A 5×5 average over the whole image: 25 kernel positions, more than half the weight
    // buffer of the 8×8 array.
    let big = b.node(
        "AveragePool",
        "big",
        &[&c3],
        &[("kernel_shape", Attr::Ints(vec![5, 5]))],
    );
    let flat = b.node("Flatten", "flat", &[&big], &[]);
    let wf = b.weight("fc_w", &[18, 10], -0.4, 0.4);
    let bf = b.weight("fc_b", &[10], -0.1, 0.1);
    b.node("Gemm", "y", &[&flat, &wf, &bf], &[]);
    b.model(("x", &[1, 3, SIDE, SIDE]), ("y", &[1, 10]))
}

/// Input channels and side of [`projections`].
const PROJ_C: usize = 40;
const PROJ_SIDE: usize = 15;

/// The tiling network: see the module documentation.
fn projections() -> Vec<u8> {
    let mut b = Builder::new();
    // 15×15 → 8×8 both ways: every other pixel from the first, or from the padding on top and
    // left with the first row and column of the image.
    let p1 = b.conv_padded("p1", "x", [PROJ_C, 24, 1], 2, [0; 4]);
    let p2 = b.conv_padded("p2", "x", [PROJ_C, 24, 1], 2, [1, 1, 0, 0]);
    let sum = b.node("Add", "sum", &[&p1, &p2], &[]);
    let r = b.node("Relu", "r", &[&sum], &[]);
    let wide = b.conv("wide", &r, 24, 136, 1, 1);
    let rw = b.node("Relu", "rw", &[&wide], &[]);
    // 136 channels of 8×8 pixels: more than half the activation buffer of either array.
    let narrow = b.conv("narrow", &rw, 136, 72, 1, 1);
    let pool = b.node(
        "AveragePool",
        "pool",
        &[&narrow],
        &[("kernel_shape", Attr::Ints(vec![8, 8]))],
    );
    let flat = b.node("Flatten", "flat", &[&pool], &[]);
    let wf = b.weight("fc_w", &[72, 10], -0.3, 0.3);
    let bf = b.weight("fc_b", &[10], -0.1, 0.1);
    b.node("Gemm", "y", &[&flat, &wf, &bf], &[]);
    b.model(("x", &[1, PROJ_C, PROJ_SIDE, PROJ_SIDE]), ("y", &[1, 10]))
}

/// Input channels and side of [`wide_pointwise`].
const WIDE_C: usize = 2304;
const WIDE_SIDE: usize = 4;

/// A 1×1 convolution over more input channels than the activation buffer holds windows for,
/// on a map small enough that loading a window costs about what computing on it does.
fn wide_pointwise() -> Vec<u8> {
    let mut b = Builder::new();
    let c = b.conv("wide", "x", WIDE_C, 72, 1, 1);
    let r = b.node("Relu", "r", &[&c], &[]);
    let pool = b.node(
        "AveragePool",
        "pool",
        &[&r],
        &[("kernel_shape", Attr::Ints(vec![WIDE_SIDE as i64; 2]))],
    );
    let flat = b.node("Flatten", "flat", &[&pool], &[]);
    let wf = b.weight("fc_w", &[72, 10], -0.3, 0.3);
    let bf = b.weight("fc_b", &[10], -0.1, 0.1);
    b.node("Gemm", "y", &[&flat, &wf, &bf], &[]);
    b.model(("x", &[1, WIDE_C, WIDE_SIDE, WIDE_SIDE]), ("y", &[1, 10]))
}

fn inputs(n: usize, seed: u64) -> ArrayD<f32> {
    inputs_shaped(&[n, 3, SIDE, SIDE], seed)
}

fn inputs_shaped(shape: &[usize], seed: u64) -> ArrayD<f32> {
    let mut rng = StdRng::seed_from_u64(seed);
    ArrayD::from_shape_fn(IxDyn(shape), |_| rng.gen_range(-1.0..1.0))
}

/// The input shape `onnx` declares.
fn input_shape(onnx: &[u8]) -> Vec<usize> {
    let graph = onnx::parse_model(onnx).unwrap();
    graph.inputs[0].shape.clone()
}

fn bundle(onnx: &[u8], hw: HwConfig) -> Bundle {
    let mut calib = input_shape(onnx);
    calib[0] = 16;
    compile(
        onnx,
        &inputs_shaped(&calib, 1),
        &CompileOptions {
            hw,
            batch: 1,
            name: "npu_ops".into(),
        },
    )
    .unwrap()
}

fn run(b: &Bundle, kind: DeviceKind, x: &ArrayD<f32>) -> (Vec<f32>, Vec<u8>) {
    let mut rt = open_runtime(kind, b.clone(), Duration::from_secs(120)).unwrap();
    infer_and_dump(&mut rt, x)
}

/// Runs `x` and returns the model's output and the device's whole DRAM.
fn infer_and_dump<T: Transport>(rt: &mut Runtime<T>, x: &ArrayD<f32>) -> (Vec<f32>, Vec<u8>) {
    let out = rt
        .infer(&HashMap::from([(
            "x".to_string(),
            Tensor::new(x.shape().to_vec(), x.iter().copied().collect()).unwrap(),
        )]))
        .unwrap();
    let mut image = vec![0u8; rt.bundle().manifest.memory.dram_bytes as usize];
    rt.driver().read(0, &mut image).unwrap();
    (out.outputs[0].1.data.clone(), image)
}

#[test]
fn every_operator_runs_on_the_npu_and_concat_inputs_are_written_in_place() {
    let b = bundle(&network(), HwConfig::DEFAULT);
    let stages: Vec<&Stage> = b.io.stages.iter().collect();
    assert_eq!(stages.len(), 1, "one NPU stage: {stages:?}");
    assert!(matches!(stages[0], Stage::Npu { .. }));
    let ops: Vec<&str> = b.manifest.layers.iter().map(|l| l.op.as_str()).collect();
    for op in ["LeakyRelu", "Add", "AvgPool2d", "MaxPool2d"] {
        assert!(ops.contains(&op), "{op} among the NPU layers {ops:?}");
    }
    let insns = |name: &str| {
        b.manifest
            .layers
            .iter()
            .find(|l| l.name == name)
            .map(|l| l.insn_end - l.insn_start)
    };
    // `cat` copies only x (3 channels); `cat2` copies all three parts.
    let (cat, cat2) = (insns("cat").unwrap(), insns("cat2").unwrap());
    assert!(cat * 2 < cat2, "cat {cat} instructions, cat2 {cat2}");
}

#[test]
fn int8_stays_close_to_float() {
    for onnx in [network(), projections(), wide_pointwise()] {
        int8_close_to_float(&onnx);
    }
}

fn int8_close_to_float(onnx: &[u8]) {
    let b = bundle(onnx, HwConfig::DEFAULT);
    let graph = onnx::parse_model(onnx).unwrap();
    let shape = input_shape(onnx);
    let mut worst = 0f32;
    for seed in 10..14 {
        let x = inputs_shaped(&shape, seed);
        let want = interp::run(&graph, &HashMap::from([("x".to_string(), x.clone())])).unwrap();
        let want: Vec<f32> = want["y"].iter().copied().collect();
        let (got, _) = run(&b, DeviceKind::Func, &x);
        let scale = want.iter().fold(0f32, |m, v| m.max(v.abs()));
        let err = got
            .iter()
            .zip(&want)
            .map(|(a, b)| (a - b).abs())
            .fold(0f32, f32::max);
        // Eight int8 layers deep, a few steps of the output scale: a broken layout or a wrong
        // divisor gives errors of the order of the outputs themselves.
        assert!(
            err <= 0.08 * scale,
            "seed {seed}: error {err}, outputs up to {scale}"
        );
        worst = worst.max(err / scale);
    }
    eprintln!("largest error: {:.1}% of the largest output", worst * 100.0);
}

/// The three test networks, each with an input of `images` images (the first network) drawn
/// from `seed`.
fn networks_with_inputs(images: usize, seed: u64) -> [(Vec<u8>, ArrayD<f32>); 3] {
    [
        (network(), inputs(images, seed)),
        (
            projections(),
            inputs_shaped(&[1, PROJ_C, PROJ_SIDE, PROJ_SIDE], seed),
        ),
        (
            wide_pointwise(),
            inputs_shaped(&[1, WIDE_C, WIDE_SIDE, WIDE_SIDE], seed),
        ),
    ]
}

#[test]
fn rtl_matches_the_functional_model() {
    for (onnx, x) in networks_with_inputs(1, 99) {
        rtl_matches_func(&onnx, &x);
    }
}

fn rtl_matches_func(onnx: &[u8], x: &ArrayD<f32>) {
    for hw in [HwConfig::SMALL, HwConfig::DEFAULT] {
        let b = bundle(onnx, hw);
        let x = x.clone();
        let (f_out, f_dram) = run(&b, DeviceKind::Func, &x);
        let (r_out, r_dram) = run(&b, DeviceKind::Rtl, &x);
        assert_eq!(f_out, r_out, "{}x{}: outputs differ", hw.rows, hw.cols);
        if let Some(at) = f_dram.iter().zip(&r_dram).position(|(a, b)| a != b) {
            panic!("{}x{}: DRAM differs at {at:#x}", hw.rows, hw.cols);
        }
    }
}

/// Runs `b` on the functional model through the driver and returns the output, the DRAM image
/// and how many layers ran as whole operations.
fn run_func(b: &Bundle, x: &ArrayD<f32>) -> (Vec<f32>, Vec<u8>, u64) {
    let dev = FuncTransport::func(b.config, b.manifest.memory.dram_bytes as u64).unwrap();
    let mut rt = Runtime::new(Driver::new(dev).unwrap(), b.clone()).unwrap();
    let (out, image) = infer_and_dump(&mut rt, x);
    (out, image, rt.driver().transport().npu().ops_done())
}

#[test]
fn layers_run_as_operations_give_the_instructions_results() {
    for (onnx, x) in networks_with_inputs(2, 5) {
        for hw in [HwConfig::SMALL, HwConfig::DEFAULT] {
            let with_ops = bundle(&onnx, hw);
            assert!(
                !with_ops.ops.is_empty(),
                "the compiler describes its layers"
            );
            let mut plain = with_ops.clone();
            plain.ops.clear();
            let (want, want_dram, none) = run_func(&plain, &x);
            assert_eq!(none, 0);
            let (got, got_dram, ops) = run_func(&with_ops, &x);
            // Every layer of every run (the warm-up and the inference) took the fast path.
            let runs = x.shape()[0] as u64;
            assert_eq!(
                ops,
                with_ops.ops.len() as u64 * runs,
                "{}x{}",
                hw.rows,
                hw.cols
            );
            assert_eq!(got, want, "{}x{}: outputs differ", hw.rows, hw.cols);
            if let Some(at) = got_dram.iter().zip(&want_dram).position(|(a, b)| a != b) {
                panic!("{}x{}: DRAM differs at {at:#x}", hw.rows, hw.cols);
            }
        }
    }
}

#[test]
fn strided_pointwise_convolutions_fetch_only_the_pixels_they_read() {
    for hw in [HwConfig::SMALL, HwConfig::DEFAULT] {
        let b = bundle(&projections(), hw);
        assert_eq!(b.io.stages.len(), 1, "one NPU stage: {:?}", b.io.stages);
        for name in ["p1", "p2"] {
            let l = b.manifest.layers.iter().find(|l| l.name == name).unwrap();
            let loads: Vec<&Dma> = b.program[l.insn_start as usize..l.insn_end as usize]
                .iter()
                .filter_map(|i| match i {
                    Instruction::Load(d) if d.buffer == Buffer::Act => Some(d),
                    _ => None,
                })
                .collect();
            assert!(!loads.is_empty());
            for d in loads {
                // A window of at most the 8×8 output pixels (padding included), every other
                // input pixel: not the 15-pixel-wide span of the input.
                let (h, w) = (
                    d.pad_top as usize + d.y_size as usize + d.pad_bottom as usize,
                    d.pad_left as usize + d.x_size as usize + d.pad_right as usize,
                );
                assert!(h <= 8 && w <= 8, "{name}: window {h}×{w}: {d:?}");
                assert!(d.x_stride >= 2 * hw.rows, "{name}: {d:?}");
            }
        }
    }
}

/// When a layer's windows do not all stay on chip, output blocks that read the same windows
/// share each load of them instead of reloading every window for every block.
#[test]
fn output_blocks_share_window_loads_when_the_windows_do_not_fit() {
    for hw in [HwConfig::SMALL, HwConfig::DEFAULT] {
        let b = bundle(&wide_pointwise(), hw);
        let l = b.manifest.layers.iter().find(|l| l.name == "wide").unwrap();
        let program = &b.program[l.insn_start as usize..l.insn_end as usize];
        let act_loads = program
            .iter()
            .filter(|i| matches!(i, Instruction::Load(d) if d.buffer == Buffer::Act))
            .count();
        let in_blocks = WIDE_C.div_ceil(hw.rows as usize);
        let out_blocks = 72usize.div_ceil(hw.cols as usize);
        assert!(
            in_blocks * WIDE_SIDE * WIDE_SIDE > hw.act_depth as usize,
            "the windows must not fit the buffer for this test to mean anything"
        );
        // One window per input block per load; sharing needs fewer than one load of every
        // window per output block.
        assert!(
            act_loads < in_blocks * out_blocks,
            "{}x{}: {act_loads} window loads for {in_blocks} windows and {out_blocks} blocks",
            hw.rows,
            hw.cols
        );
    }
}
