//! Front-end tests for convolutional networks: import of Conv, BatchNormalization, pools, LRN,
//! Concat, Transpose, Pad, Slice, Sum/Mean and friends across opsets; the interpreter against
//! naive reference loops; and the CNN passes (Conv2d formation, BatchNorm / per-channel affine
//! folding, activation fusion) checked by interpreting before and after.

use std::collections::HashMap;

use ndarray::{Array4, ArrayD, IxDyn};
use proptest::prelude::*;
use prost::Message;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use sinter_compiler::error::CompileError;
use sinter_compiler::interp;
use sinter_compiler::ir::{Activation, Graph, Op, PadMode, PoolKind};
use sinter_compiler::onnx::proto::{
    attribute_type, data_type, tensor_shape_proto, type_proto, AttributeProto, GraphProto,
    ModelProto, NodeProto, OperatorSetIdProto, TensorProto, TensorShapeProto, TypeProto,
    ValueInfoProto,
};
use sinter_compiler::onnx::{parse_model, parse_model_with, ImportOptions};
use sinter_compiler::passes;

// ---------------------------------------------------------------------------------------------
// Building ONNX models.

fn array_tensor(name: &str, a: &ArrayD<f32>) -> TensorProto {
    TensorProto {
        name: name.into(),
        dims: a.shape().iter().map(|&d| d as i64).collect(),
        data_type: data_type::FLOAT,
        float_data: a.iter().copied().collect(),
        ..Default::default()
    }
}

fn tensor_i64(name: &str, dims: &[i64], data: &[i64]) -> TensorProto {
    TensorProto {
        name: name.into(),
        dims: dims.to_vec(),
        data_type: data_type::INT64,
        int64_data: data.to_vec(),
        ..Default::default()
    }
}

fn scalar_f32(name: &str, v: f32) -> TensorProto {
    TensorProto {
        name: name.into(),
        data_type: data_type::FLOAT,
        float_data: vec![v],
        ..Default::default()
    }
}

fn attr_i(name: &str, i: i64) -> AttributeProto {
    AttributeProto {
        name: name.into(),
        r#type: attribute_type::INT,
        i,
        ..Default::default()
    }
}

fn attr_f(name: &str, f: f32) -> AttributeProto {
    AttributeProto {
        name: name.into(),
        r#type: attribute_type::FLOAT,
        f,
        ..Default::default()
    }
}

fn attr_s(name: &str, s: &str) -> AttributeProto {
    AttributeProto {
        name: name.into(),
        r#type: attribute_type::STRING,
        s: s.as_bytes().to_vec(),
        ..Default::default()
    }
}

fn attr_ints(name: &str, ints: &[i64]) -> AttributeProto {
    AttributeProto {
        name: name.into(),
        r#type: attribute_type::INTS,
        ints: ints.to_vec(),
        ..Default::default()
    }
}

fn node(
    name: &str,
    op: &str,
    inputs: &[&str],
    outputs: &[&str],
    attrs: Vec<AttributeProto>,
) -> NodeProto {
    NodeProto {
        name: name.into(),
        op_type: op.into(),
        input: inputs.iter().map(|s| s.to_string()).collect(),
        output: outputs.iter().map(|s| s.to_string()).collect(),
        attribute: attrs,
        ..Default::default()
    }
}

/// A float value with a symbolic batch dim followed by the given dims.
fn value(name: &str, dims: &[usize]) -> ValueInfoProto {
    let mut dim = vec![tensor_shape_proto::Dimension {
        value: Some(tensor_shape_proto::dimension::Value::DimParam("N".into())),
        ..Default::default()
    }];
    dim.extend(dims.iter().map(|&d| tensor_shape_proto::Dimension {
        value: Some(tensor_shape_proto::dimension::Value::DimValue(d as i64)),
        ..Default::default()
    }));
    ValueInfoProto {
        name: name.into(),
        r#type: Some(TypeProto {
            value: Some(type_proto::Value::TensorType(type_proto::Tensor {
                elem_type: data_type::FLOAT,
                shape: Some(TensorShapeProto { dim }),
            })),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// An output of unknown shape (rank only).
fn out(name: &str, rank: usize) -> ValueInfoProto {
    let dim = (0..rank)
        .map(|i| tensor_shape_proto::Dimension {
            value: Some(tensor_shape_proto::dimension::Value::DimParam(format!(
                "d{i}"
            ))),
            ..Default::default()
        })
        .collect();
    ValueInfoProto {
        name: name.into(),
        r#type: Some(TypeProto {
            value: Some(type_proto::Value::TensorType(type_proto::Tensor {
                elem_type: data_type::FLOAT,
                shape: Some(TensorShapeProto { dim }),
            })),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn model(
    opset: i64,
    nodes: Vec<NodeProto>,
    initializers: Vec<TensorProto>,
    inputs: Vec<ValueInfoProto>,
    outputs: Vec<ValueInfoProto>,
) -> Vec<u8> {
    ModelProto {
        ir_version: 8,
        opset_import: vec![OperatorSetIdProto {
            domain: String::new(),
            version: opset,
        }],
        graph: Some(GraphProto {
            name: "cnn_test".into(),
            node: nodes,
            initializer: initializers,
            input: inputs,
            output: outputs,
            ..Default::default()
        }),
        ..Default::default()
    }
    .encode_to_vec()
}

// ---------------------------------------------------------------------------------------------
// Helpers.

fn random(rng: &mut StdRng, shape: &[usize]) -> ArrayD<f32> {
    ArrayD::from_shape_simple_fn(IxDyn(shape), || rng.gen_range(-2.0f32..2.0))
}

fn run1(graph: &Graph, x: &ArrayD<f32>) -> ArrayD<f32> {
    let feed = HashMap::from([(graph.inputs[0].name.clone(), x.clone())]);
    let mut outs = interp::run(graph, &feed).expect("interpreter failed");
    outs.remove(&graph.outputs[0].name).unwrap()
}

fn max_abs_diff(a: &ArrayD<f32>, b: &ArrayD<f32>) -> f32 {
    assert_eq!(a.shape(), b.shape());
    a.iter()
        .zip(b.iter())
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

fn assert_close(a: &ArrayD<f32>, b: &ArrayD<f32>, tol: f32) {
    let d = max_abs_diff(a, b);
    assert!(d <= tol, "max abs diff {d} > {tol}");
}

/// Optimises a copy of `graph` and checks it computes the same outputs on random inputs.
fn optimize_and_compare(graph: &Graph, seed: u64, tol: f32) -> Graph {
    let mut opt = graph.clone();
    passes::optimize(&mut opt).expect("optimize failed");
    let mut rng = StdRng::seed_from_u64(seed);
    for _ in 0..3 {
        let feed: HashMap<String, ArrayD<f32>> = graph
            .inputs
            .iter()
            .map(|t| (t.name.clone(), random(&mut rng, &t.shape)))
            .collect();
        let before = interp::run(graph, &feed).unwrap();
        let after = interp::run(&opt, &feed).unwrap();
        for (name, v) in &before {
            assert_close(v, &after[name], tol);
        }
    }
    opt
}

/// Naive NCHW convolution, straight from the definition.
#[allow(clippy::too_many_arguments)]
fn naive_conv(
    x: &ArrayD<f32>,
    w: &ArrayD<f32>,
    b: Option<&[f32]>,
    stride: [usize; 2],
    pads: [usize; 4],
    dilation: [usize; 2],
    groups: usize,
) -> ArrayD<f32> {
    let (n, c, h, wd) = (x.shape()[0], x.shape()[1], x.shape()[2], x.shape()[3]);
    let (o, cg, kh, kw) = (w.shape()[0], w.shape()[1], w.shape()[2], w.shape()[3]);
    let og = o / groups;
    let oh = (h + pads[0] + pads[2] - dilation[0] * (kh - 1) - 1) / stride[0] + 1;
    let ow = (wd + pads[1] + pads[3] - dilation[1] * (kw - 1) - 1) / stride[1] + 1;
    assert_eq!(c, cg * groups);
    let mut y = ArrayD::zeros(IxDyn(&[n, o, oh, ow]));
    for ni in 0..n {
        for oc in 0..o {
            let g = oc / og;
            for oy in 0..oh {
                for ox in 0..ow {
                    let mut s = b.map_or(0.0, |b| b[oc]) as f64;
                    for ci in 0..cg {
                        for ky in 0..kh {
                            for kx in 0..kw {
                                let iy =
                                    (oy * stride[0] + ky * dilation[0]) as isize - pads[0] as isize;
                                let ix =
                                    (ox * stride[1] + kx * dilation[1]) as isize - pads[1] as isize;
                                if iy < 0 || ix < 0 || iy >= h as isize || ix >= wd as isize {
                                    continue;
                                }
                                s += f64::from(
                                    x[[ni, g * cg + ci, iy as usize, ix as usize]]
                                        * w[[oc, ci, ky, kx]],
                                );
                            }
                        }
                    }
                    y[[ni, oc, oy, ox]] = s as f32;
                }
            }
        }
    }
    y
}

// ---------------------------------------------------------------------------------------------
// Convolution.

#[derive(Debug, Clone)]
struct ConvCase {
    n: usize,
    groups: usize,
    cg: usize,
    og: usize,
    h: usize,
    w: usize,
    k: [usize; 2],
    stride: [usize; 2],
    pads: [usize; 4],
    dilation: [usize; 2],
    bias: bool,
}

fn conv_case() -> impl Strategy<Value = ConvCase> {
    (
        (1usize..3, 1usize..4, 1usize..4, 1usize..4),
        (1usize..10, 1usize..10, 1usize..4, 1usize..4),
        (1usize..3, 1usize..3, 1usize..3, 1usize..3),
        (0usize..3, 0usize..3, 0usize..3, 0usize..3, any::<bool>()),
    )
        .prop_filter_map(
            "window must fit",
            |((n, groups, cg, og), (h, w, kh, kw), (sh, sw, dh, dw), (pt, pl, pb, pr, bias))| {
                let c = ConvCase {
                    n,
                    groups,
                    cg,
                    og,
                    h,
                    w,
                    k: [kh, kw],
                    stride: [sh, sw],
                    pads: [pt, pl, pb, pr],
                    dilation: [dh, dw],
                    bias,
                };
                let fits = h + pt + pb > dh * (kh - 1) && w + pl + pr > dw * (kw - 1);
                fits.then_some(c)
            },
        )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(96))]

    /// The im2col/GEMM (and depthwise) convolution equals the naive loops for random geometry.
    #[test]
    fn conv_matches_naive_loops(case in conv_case(), seed in 0u64..1000) {
        let mut rng = StdRng::seed_from_u64(seed);
        let c = case.groups * case.cg;
        let o = case.groups * case.og;
        let x = random(&mut rng, &[case.n, c, case.h, case.w]);
        let w = random(&mut rng, &[o, case.cg, case.k[0], case.k[1]]);
        let b: Vec<f32> = (0..o).map(|_| rng.gen_range(-1.0f32..1.0)).collect();
        let want = naive_conv(&x, &w, case.bias.then_some(&b[..]), case.stride, case.pads,
            case.dilation, case.groups);
        let op = Op::Conv2d {
            weight: w.clone().into_dimensionality().unwrap(),
            bias: case.bias.then(|| b.iter().copied().collect()),
            stride: case.stride,
            pads: case.pads,
            dilation: case.dilation,
            groups: case.groups,
            activation: Activation::None,
        };
        let got = interp::eval_op(&op, &[x.view()]).unwrap().remove(0);
        prop_assert!(max_abs_diff(&got, &want) < 1e-4, "{case:?}");
        // The runtime-weight form agrees.
        let bias_arr = ArrayD::from_shape_vec(IxDyn(&[o]), b.clone()).unwrap();
        let mut args = vec![x.view(), w.view()];
        if case.bias {
            args.push(bias_arr.view());
        }
        let raw = Op::Conv { stride: case.stride, pads: case.pads, dilation: case.dilation,
            groups: case.groups };
        let got_raw = interp::eval_op(&raw, &args).unwrap().remove(0);
        prop_assert!(max_abs_diff(&got_raw, &want) < 1e-4, "{case:?}");
    }
}

#[test]
fn large_conv_uses_many_chunks_and_matches() {
    // Big enough for several position chunks per plane and both im2col and pointwise paths.
    let mut rng = StdRng::seed_from_u64(5);
    let x = random(&mut rng, &[2, 16, 37, 29]);
    for (k, stride, pads) in [(3, 1, 1), (1, 1, 0), (5, 2, 2), (1, 2, 0)] {
        let w = random(&mut rng, &[24, 16, k, k]);
        let want = naive_conv(&x, &w, None, [stride; 2], [pads; 4], [1, 1], 1);
        let op = Op::Conv2d {
            weight: w.into_dimensionality().unwrap(),
            bias: None,
            stride: [stride; 2],
            pads: [pads; 4],
            dilation: [1, 1],
            groups: 1,
            activation: Activation::Relu,
        };
        let got = interp::eval_op(&op, &[x.view()]).unwrap().remove(0);
        assert_close(&got, &want.mapv(|v| v.max(0.0)), 1e-4);
    }
}

/// Builds `Conv` with the given attributes on an input `[N, 3, 7, 6]` and weight `[4, 3, 3, 3]`.
fn conv_model(attrs: Vec<AttributeProto>, opset: i64, seed: u64) -> (Vec<u8>, ArrayD<f32>) {
    let mut rng = StdRng::seed_from_u64(seed);
    let w = random(&mut rng, &[4, 3, 3, 3]);
    let b = random(&mut rng, &[4]);
    let bytes = model(
        opset,
        vec![node("conv", "Conv", &["x", "w", "b"], &["y"], attrs)],
        vec![array_tensor("w", &w), array_tensor("b", &b)],
        vec![value("x", &[3, 7, 6])],
        vec![out("y", 4)],
    );
    (bytes, w)
}

#[test]
fn conv_auto_pad_modes() {
    let cases: Vec<(Vec<AttributeProto>, [usize; 4], [usize; 2])> = vec![
        (vec![], [0, 0, 0, 0], [5, 4]),
        (vec![attr_ints("pads", &[1, 1, 1, 1])], [1, 1, 1, 1], [7, 6]),
        (vec![attr_s("auto_pad", "VALID")], [0, 0, 0, 0], [5, 4]),
        // stride 2 on 7x6: out 4x3, total pad (3*2+3-7)=2 and (2*2+3-6)=1.
        (
            vec![
                attr_s("auto_pad", "SAME_UPPER"),
                attr_ints("strides", &[2, 2]),
            ],
            [1, 0, 1, 1],
            [4, 3],
        ),
        (
            vec![
                attr_s("auto_pad", "SAME_LOWER"),
                attr_ints("strides", &[2, 2]),
            ],
            [1, 1, 1, 0],
            [4, 3],
        ),
        (
            vec![
                attr_ints("dilations", &[2, 1]),
                attr_ints("pads", &[2, 0, 1, 0]),
            ],
            [2, 0, 1, 0],
            [6, 4],
        ),
    ];
    for (i, (attrs, pads, hw)) in cases.into_iter().enumerate() {
        let (bytes, _) = conv_model(attrs, 11, i as u64);
        let g = parse_model(&bytes).unwrap();
        match &g.nodes[0].op {
            Op::Conv { pads: p, .. } => assert_eq!(*p, pads, "case {i}"),
            other => panic!("{other:?}"),
        }
        assert_eq!(g.outputs[0].shape, vec![1, 4, hw[0], hw[1]], "case {i}");
        let opt = optimize_and_compare(&g, i as u64, 1e-5);
        assert_eq!(opt.op_names(), vec!["Conv2d"]);
    }
}

#[test]
fn conv_kernel_shape_and_weight_must_agree() {
    let (bytes, _) = conv_model(vec![attr_ints("kernel_shape", &[2, 2])], 11, 0);
    let err = parse_model(&bytes).unwrap_err().to_string();
    assert!(
        err.contains("'conv'") && err.contains("kernel_shape"),
        "{err}"
    );
    let (bytes, _) = conv_model(vec![attr_i("group", 2)], 11, 0);
    let err = parse_model(&bytes).unwrap_err().to_string();
    assert!(err.contains("'conv'") && err.contains("groups"), "{err}");
    let (bytes, _) = conv_model(vec![attr_s("auto_pad", "SAME_SIDEWAYS")], 11, 0);
    let err = parse_model(&bytes).unwrap_err().to_string();
    assert!(err.contains("auto_pad"), "{err}");
    let (bytes, _) = conv_model(vec![attr_ints("strides", &[0, 1])], 11, 0);
    let err = parse_model(&bytes).unwrap_err().to_string();
    assert!(err.contains("strides"), "{err}");
    let (bytes, _) = conv_model(vec![attr_ints("pads", &[1, 1])], 11, 0);
    let err = parse_model(&bytes).unwrap_err().to_string();
    assert!(err.contains("pads"), "{err}");
}

#[test]
fn conv_1d_runs_as_2d() {
    let mut rng = StdRng::seed_from_u64(11);
    let w = random(&mut rng, &[5, 2, 3]);
    let bytes = model(
        13,
        vec![node(
            "conv1d",
            "Conv",
            &["x", "w"],
            &["y"],
            vec![attr_ints("pads", &[1, 2]), attr_ints("strides", &[2])],
        )],
        vec![array_tensor("w", &w)],
        vec![value("x", &[2, 9])],
        vec![out("y", 3)],
    );
    let g = parse_model_with(&bytes, &ImportOptions { batch: 2 }).unwrap();
    assert_eq!(g.outputs[0].shape, vec![2, 5, 5]);
    let x = random(&mut rng, &[2, 2, 9]);
    let y = run1(&g, &x);
    let x4 = x.to_shape(IxDyn(&[2, 2, 1, 9])).unwrap().to_owned();
    let w4 = w.to_shape(IxDyn(&[5, 2, 1, 3])).unwrap().to_owned();
    let want = naive_conv(&x4, &w4, None, [1, 2], [0, 1, 0, 2], [1, 1], 1);
    assert_close(
        &y,
        &want.to_shape(IxDyn(&[2, 5, 5])).unwrap().to_owned(),
        1e-5,
    );
    let opt = optimize_and_compare(&g, 3, 1e-5);
    assert!(opt.op_names().contains(&"Conv2d"), "{}", opt.summary());
}

#[test]
fn depthwise_and_grouped_conv_import() {
    let mut rng = StdRng::seed_from_u64(12);
    let w = random(&mut rng, &[6, 1, 3, 3]);
    let bytes = model(
        13,
        vec![node(
            "dw",
            "Conv",
            &["x", "w"],
            &["y"],
            vec![attr_i("group", 6), attr_ints("pads", &[1, 1, 1, 1])],
        )],
        vec![array_tensor("w", &w)],
        vec![value("x", &[6, 5, 5])],
        vec![out("y", 4)],
    );
    let g = parse_model(&bytes).unwrap();
    let x = random(&mut rng, &[1, 6, 5, 5]);
    let want = naive_conv(&x, &w, None, [1, 1], [1; 4], [1, 1], 6);
    assert_close(&run1(&g, &x), &want, 1e-5);
}

// ---------------------------------------------------------------------------------------------
// Pools, LRN, activations.

/// Naive pooling in padded coordinates.
#[allow(clippy::too_many_arguments)]
fn naive_pool(
    x: &ArrayD<f32>,
    kind: PoolKind,
    kernel: [usize; 2],
    stride: [usize; 2],
    pads: [usize; 4],
    dilation: [usize; 2],
    out_hw: [usize; 2],
) -> ArrayD<f32> {
    let (n, c, h, w) = (x.shape()[0], x.shape()[1], x.shape()[2], x.shape()[3]);
    let mut y = ArrayD::zeros(IxDyn(&[n, c, out_hw[0], out_hw[1]]));
    for ni in 0..n {
        for ci in 0..c {
            for oy in 0..out_hw[0] {
                for ox in 0..out_hw[1] {
                    let (mut m, mut s, mut valid, mut counted) = (f32::NEG_INFINITY, 0.0, 0, 0);
                    for ky in 0..kernel[0] {
                        for kx in 0..kernel[1] {
                            let py = oy * stride[0] + ky * dilation[0];
                            let px = ox * stride[1] + kx * dilation[1];
                            if py < h + pads[0] + pads[2] && px < w + pads[1] + pads[3] {
                                counted += 1;
                            }
                            let (iy, ix) = (
                                py as isize - pads[0] as isize,
                                px as isize - pads[1] as isize,
                            );
                            if iy >= 0 && ix >= 0 && (iy as usize) < h && (ix as usize) < w {
                                let v = x[[ni, ci, iy as usize, ix as usize]];
                                m = m.max(v);
                                s += v;
                                valid += 1;
                            }
                        }
                    }
                    y[[ni, ci, oy, ox]] = match kind {
                        PoolKind::Max => m,
                        PoolKind::Avg {
                            count_include_pad: true,
                        } => s / counted as f32,
                        PoolKind::Avg {
                            count_include_pad: false,
                        } => s / valid as f32,
                    };
                }
            }
        }
    }
    y
}

#[test]
fn pools_match_naive_loops_with_ceil_mode_and_count_include_pad() {
    let mut rng = StdRng::seed_from_u64(21);
    let x = random(&mut rng, &[2, 3, 9, 8]);
    let kinds = [
        PoolKind::Max,
        PoolKind::Avg {
            count_include_pad: false,
        },
        PoolKind::Avg {
            count_include_pad: true,
        },
    ];
    for kind in kinds {
        for (kernel, stride, pads, dilation, ceil_mode) in [
            ([3, 3], [2, 2], [1, 1, 1, 1], [1, 1], false),
            ([3, 3], [2, 2], [1, 1, 1, 1], [1, 1], true),
            ([2, 3], [2, 3], [0, 0, 0, 0], [1, 1], true),
            ([3, 2], [1, 2], [0, 1, 2, 0], [2, 1], true),
            ([2, 2], [3, 3], [1, 0, 1, 0], [1, 2], true),
        ] {
            let op = Op::Pool2d {
                kind,
                kernel,
                stride,
                pads,
                dilation,
                ceil_mode,
            };
            let got = interp::eval_op(&op, &[x.view()]).unwrap().remove(0);
            let hw = [got.shape()[2], got.shape()[3]];
            let want = naive_pool(&x, kind, kernel, stride, pads, dilation, hw);
            assert_close(&got, &want, 1e-5);
        }
    }
    // ceil_mode: 9 rows, kernel 2, stride 2: 5 windows with ceil, 4 without.
    let shape = |ceil_mode| {
        let op = Op::Pool2d {
            kind: PoolKind::Max,
            kernel: [2, 2],
            stride: [2, 2],
            pads: [0; 4],
            dilation: [1, 1],
            ceil_mode,
        };
        sinter_compiler::shape::infer(&op, &[&[1, 1, 9, 8]]).unwrap()[0].clone()
    };
    assert_eq!(shape(false), vec![1, 1, 4, 4]);
    assert_eq!(shape(true), vec![1, 1, 5, 4]);
    // A last window that would start in the right padding is dropped.
    assert_eq!(
        sinter_compiler::shape::window_out(3, 2, 2, 1, 1, 1, true).unwrap(),
        2
    );
}

#[test]
fn pool_import_across_opsets() {
    let build = |op: &str, opset: i64, attrs: Vec<AttributeProto>| {
        parse_model(&model(
            opset,
            vec![node("pool", op, &["x"], &["y"], attrs)],
            vec![],
            vec![value("x", &[2, 7, 7])],
            vec![out("y", 4)],
        ))
    };
    let k = || attr_ints("kernel_shape", &[3, 3]);
    // Opset 7 AveragePool reads count_include_pad, ignores nothing else.
    let g = build(
        "AveragePool",
        7,
        vec![
            k(),
            attr_i("count_include_pad", 1),
            attr_ints("pads", &[1, 1, 1, 1]),
        ],
    )
    .unwrap();
    assert!(matches!(
        g.nodes[0].op,
        Op::Pool2d {
            kind: PoolKind::Avg {
                count_include_pad: true
            },
            ceil_mode: false,
            ..
        }
    ));
    // ceil_mode exists from opset 10.
    let g = build(
        "MaxPool",
        10,
        vec![k(), attr_ints("strides", &[2, 2]), attr_i("ceil_mode", 1)],
    )
    .unwrap();
    assert_eq!(g.outputs[0].shape, vec![1, 2, 3, 3]);
    let g = build(
        "MaxPool",
        12,
        vec![
            k(),
            attr_s("auto_pad", "SAME_UPPER"),
            attr_ints("strides", &[2, 2]),
        ],
    )
    .unwrap();
    assert_eq!(g.outputs[0].shape, vec![1, 2, 4, 4]);
    // MaxPool's Indices output is not supported when used.
    let err = parse_model(&model(
        12,
        vec![
            node("pool", "MaxPool", &["x"], &["y", "idx"], vec![k()]),
            node("r", "Relu", &["idx"], &["z"], vec![]),
        ],
        vec![],
        vec![value("x", &[2, 7, 7])],
        vec![out("z", 4)],
    ))
    .unwrap_err()
    .to_string();
    assert!(err.contains("'pool'") && err.contains("idx"), "{err}");
    // Missing kernel_shape.
    let err = build("MaxPool", 12, vec![]).unwrap_err().to_string();
    assert!(err.contains("kernel_shape"), "{err}");
    // 3-D pooling is reported, not mis-run.
    let err = parse_model(&model(
        12,
        vec![node(
            "pool",
            "MaxPool",
            &["x"],
            &["y"],
            vec![attr_ints("kernel_shape", &[2, 2, 2])],
        )],
        vec![],
        vec![value("x", &[2, 4, 4, 4])],
        vec![out("y", 5)],
    ))
    .unwrap_err()
    .to_string();
    assert!(err.contains("rank 5"), "{err}");
}

#[test]
fn global_pools_lrn_and_activations() {
    let mut rng = StdRng::seed_from_u64(31);
    let x = random(&mut rng, &[2, 5, 3, 4]);
    let gap = interp::eval_op(&Op::GlobalAvgPool, &[x.view()])
        .unwrap()
        .remove(0);
    let gmp = interp::eval_op(&Op::GlobalMaxPool, &[x.view()])
        .unwrap()
        .remove(0);
    assert_eq!(gap.shape(), &[2, 5, 1, 1]);
    for n in 0..2 {
        for c in 0..5 {
            let plane = x.slice(ndarray::s![n, c, .., ..]);
            assert!((gap[[n, c, 0, 0]] - plane.mean().unwrap()).abs() < 1e-6);
            let m = plane.fold(f32::MIN, |m, &v| m.max(v));
            assert_eq!(gmp[[n, c, 0, 0]], m);
        }
    }
    // LRN from the definition.
    let (size, alpha, beta, bias) = (3, 1e-2, 0.75, 2.0);
    let y = interp::eval_op(
        &Op::Lrn {
            size,
            alpha,
            beta,
            bias,
        },
        &[x.view()],
    )
    .unwrap()
    .remove(0);
    for idx in [[0usize, 0, 1, 2], [1, 4, 2, 3], [0, 2, 0, 0]] {
        let c = idx[1];
        let lo = c.saturating_sub(1);
        let hi = (c + 1).min(4);
        let sq: f32 = (lo..=hi)
            .map(|cc| x[[idx[0], cc, idx[2], idx[3]]].powi(2))
            .sum();
        let want = x[idx] / (bias + alpha / size as f32 * sq).powf(beta);
        assert!((y[idx] - want).abs() < 1e-6);
    }
    let lr = interp::eval_op(&Op::LeakyRelu { alpha: 0.1 }, &[x.view()])
        .unwrap()
        .remove(0);
    assert_close(&lr, &x.mapv(|v| if v < 0.0 { 0.1 * v } else { v }), 0.0);
    let s = interp::eval_op(&Op::Sigmoid, &[x.view()])
        .unwrap()
        .remove(0);
    assert_close(&s, &x.mapv(|v| 1.0 / (1.0 + (-v).exp())), 1e-7);
    let t = interp::eval_op(&Op::Tanh, &[x.view()]).unwrap().remove(0);
    assert_close(&t, &x.mapv(f32::tanh), 0.0);
}

// ---------------------------------------------------------------------------------------------
// Tensor operators.

#[test]
fn concat_transpose_pad_slice_gather() {
    let mut rng = StdRng::seed_from_u64(41);
    let w = random(&mut rng, &[1, 2, 3]);
    let bytes = model(
        13,
        vec![
            node(
                "cat",
                "Concat",
                &["x", "w", "x"],
                &["c"],
                vec![attr_i("axis", 1)],
            ),
            node(
                "tr",
                "Transpose",
                &["c"],
                &["t"],
                vec![attr_ints("perm", &[2, 0, 1])],
            ),
            node("pad", "Pad", &["t", "pads", "pv"], &["p"], vec![]),
            node(
                "sl",
                "Slice",
                &["p", "starts", "ends", "axes", "steps"],
                &["s"],
                vec![],
            ),
            node(
                "ga",
                "Gather",
                &["s", "idx"],
                &["y"],
                vec![attr_i("axis", 2)],
            ),
        ],
        vec![
            array_tensor("w", &w),
            tensor_i64("pads", &[6], &[1, 0, 0, 0, 0, 2]),
            scalar_f32("pv", -7.0),
            tensor_i64("starts", &[2], &[-1, 0]),
            tensor_i64("ends", &[2], &[i64::MIN, 100]),
            tensor_i64("axes", &[2], &[0, 2]),
            tensor_i64("steps", &[2], &[-2, 1]),
            tensor_i64("idx", &[2], &[-1, 0]),
        ],
        vec![value("x", &[2, 3])],
        vec![out("y", 3)],
    );
    let g = parse_model(&bytes).unwrap();
    assert_eq!(
        g.op_names(),
        vec!["Concat", "Transpose", "Pad", "Slice", "Gather"]
    );
    let x = random(&mut rng, &[1, 2, 3]);
    let y = run1(&g, &x);
    // Reference with ndarray.
    let c = ndarray::concatenate(ndarray::Axis(1), &[x.view(), w.view(), x.view()]).unwrap();
    let t = c.view().permuted_axes(IxDyn(&[2, 0, 1])).to_owned(); // [3, 1, 6]
    let mut p = ArrayD::from_elem(IxDyn(&[4, 1, 8]), -7.0f32);
    p.slice_mut(ndarray::s![1..4, .., 0..6]).assign(&t);
    let s = p.slice(ndarray::s![..;-2, .., ..]).to_owned(); // rows 3, 1
    let want = ndarray::stack(
        ndarray::Axis(2),
        &[
            s.slice(ndarray::s![.., .., 7]),
            s.slice(ndarray::s![.., .., 0]),
        ],
    )
    .unwrap()
    .into_dyn();
    assert_eq!(y, want);

    // Pad before opset 11 (attributes), reflect and edge modes.
    for (mode, want) in [
        ("reflect", vec![3.0f32, 2.0, 1.0, 2.0, 3.0, 2.0]),
        ("edge", vec![1.0f32, 1.0, 1.0, 2.0, 3.0, 3.0]),
        ("constant", vec![0.5f32, 0.5, 1.0, 2.0, 3.0, 0.5]),
    ] {
        let bytes = model(
            7,
            vec![node(
                "pad",
                "Pad",
                &["x"],
                &["y"],
                vec![
                    attr_ints("pads", &[0, 2, 0, 1]),
                    attr_s("mode", mode),
                    attr_f("value", 0.5),
                ],
            )],
            vec![],
            vec![value("x", &[3])],
            vec![out("y", 2)],
        );
        let g = parse_model(&bytes).unwrap();
        let x = ArrayD::from_shape_vec(IxDyn(&[1, 3]), vec![1.0f32, 2.0, 3.0]).unwrap();
        assert_eq!(
            run1(&g, &x).iter().copied().collect::<Vec<_>>(),
            want,
            "{mode}"
        );
    }
}

#[test]
fn sum_mean_and_constant_folding_of_range_expand_where() {
    let bytes = model(
        13,
        vec![
            node("sum", "Sum", &["x", "x", "x"], &["s"], vec![]),
            node("mean", "Mean", &["s", "x"], &["m"], vec![]),
            // Constant arithmetic: Range(0, 3, 1) == [0, 1, 2]; Where picks; Expand to [1, 3].
            node("r", "Range", &["zero", "three", "one"], &["rg"], vec![]),
            node("eq", "Equal", &["rg", "one"], &["mask"], vec![]),
            node("wh", "Where", &["mask", "ten", "rgf"], &["sel"], vec![]),
            node("cast", "Cast", &["rg"], &["rgf"], vec![attr_i("to", 1)]),
            node("ex", "Expand", &["sel", "shape13"], &["bias"], vec![]),
            node("add", "Add", &["m", "bias"], &["y"], vec![]),
        ],
        vec![
            tensor_i64("zero", &[], &[0]),
            tensor_i64("three", &[], &[3]),
            tensor_i64("one", &[], &[1]),
            scalar_f32("ten", 10.0),
            tensor_i64("shape13", &[2], &[1, 3]),
        ],
        vec![value("x", &[3])],
        vec![out("y", 2)],
    );
    // Cast is listed after its reader: the importer needs topological order.
    let err = parse_model(&bytes).unwrap_err().to_string();
    assert!(err.contains("'wh'") && err.contains("rgf"), "{err}");

    let bytes = model(
        13,
        vec![
            node("sum", "Sum", &["x", "x", "x"], &["s"], vec![]),
            node("mean", "Mean", &["s", "x"], &["m"], vec![]),
            node("r", "Range", &["zero", "three", "one"], &["rg"], vec![]),
            node("cast", "Cast", &["rg"], &["rgf"], vec![attr_i("to", 1)]),
            node("eq", "Equal", &["rg", "one"], &["mask"], vec![]),
            node("wh", "Where", &["mask", "ten", "rgf"], &["sel"], vec![]),
            node("ex", "Expand", &["sel", "shape13"], &["bias"], vec![]),
            node("add", "Add", &["m", "bias"], &["y"], vec![]),
        ],
        vec![
            tensor_i64("zero", &[], &[0]),
            tensor_i64("three", &[], &[3]),
            tensor_i64("one", &[], &[1]),
            scalar_f32("ten", 10.0),
            tensor_i64("shape13", &[2], &[1, 3]),
        ],
        vec![value("x", &[3])],
        vec![out("y", 2)],
    );
    let g = parse_model(&bytes).unwrap();
    assert_eq!(g.op_names(), vec!["Add", "Add", "Add", "Div", "Add"]);
    assert_eq!(
        g.constant("bias")
            .unwrap()
            .iter()
            .copied()
            .collect::<Vec<_>>(),
        vec![0.0, 10.0, 2.0]
    );
    let x = ArrayD::from_shape_vec(IxDyn(&[1, 3]), vec![1.0f32, 2.0, 3.0]).unwrap();
    // mean(3x, x) = 2x.
    assert_eq!(
        run1(&g, &x).iter().copied().collect::<Vec<_>>(),
        vec![2.0, 14.0, 8.0]
    );
}

#[test]
fn constant_graph_outputs_are_computed() {
    let bytes = model(
        13,
        vec![
            node("shape", "Shape", &["x"], &["s"], vec![]),
            node("cast", "Cast", &["s"], &["y"], vec![attr_i("to", 1)]),
        ],
        vec![],
        vec![value("x", &[3, 4])],
        vec![out("y", 1)],
    );
    let g = parse_model(&bytes).unwrap();
    g.validate().unwrap();
    let x = ArrayD::zeros(IxDyn(&[1, 3, 4]));
    assert_eq!(
        run1(&g, &x).iter().copied().collect::<Vec<_>>(),
        vec![1.0, 3.0, 4.0]
    );
}

// ---------------------------------------------------------------------------------------------
// BatchNormalization and the CNN passes.

/// Conv → BN → Mul(per-channel) → Add(per-channel) → Relu → MaxPool → Conv(dw) → Clip →
/// residual Add → Concat → GlobalAveragePool → Flatten → Gemm → Softmax.
fn cnn_model(opset: i64) -> Vec<u8> {
    let mut rng = StdRng::seed_from_u64(51);
    let mut r = |s: &[usize]| random(&mut rng, s);
    let var = r(&[8]).mapv(|v| v.abs() + 0.1);
    let inits = vec![
        array_tensor("w1", &r(&[8, 3, 3, 3])),
        array_tensor("b1", &r(&[8])),
        array_tensor("bn_s", &r(&[8])),
        array_tensor("bn_b", &r(&[8])),
        array_tensor("bn_m", &r(&[8])),
        array_tensor("bn_v", &var),
        array_tensor("mul_c", &r(&[8, 1, 1])),
        array_tensor("add_c", &r(&[1, 8, 1, 1])),
        array_tensor("w2", &r(&[8, 1, 3, 3])),
        array_tensor("w3", &r(&[4, 8, 1, 1])),
        array_tensor("fc_w", &r(&[5, 12])),
        array_tensor("fc_b", &r(&[5])),
    ];
    let clip = if opset >= 11 {
        node("clip", "Clip", &["dw", "lo", "hi"], &["dwc"], vec![])
    } else {
        node(
            "clip",
            "Clip",
            &["dw"],
            &["dwc"],
            vec![attr_f("min", 0.0), attr_f("max", 6.0)],
        )
    };
    let mut inits = inits;
    if opset >= 11 {
        inits.push(scalar_f32("lo", 0.0));
        inits.push(scalar_f32("hi", 6.0));
    }
    let nodes = vec![
        node(
            "conv1",
            "Conv",
            &["x", "w1", "b1"],
            &["c1"],
            vec![attr_ints("pads", &[1, 1, 1, 1])],
        ),
        node(
            "bn1",
            "BatchNormalization",
            &["c1", "bn_s", "bn_b", "bn_m", "bn_v"],
            &["n1"],
            vec![attr_f("epsilon", 1e-3)],
        ),
        node("mul1", "Mul", &["n1", "mul_c"], &["m1"], vec![]),
        node("add1", "Add", &["add_c", "m1"], &["a1"], vec![]),
        node("relu1", "Relu", &["a1"], &["r1"], vec![]),
        node(
            "pool1",
            "MaxPool",
            &["r1"],
            &["p1"],
            vec![
                attr_ints("kernel_shape", &[2, 2]),
                attr_ints("strides", &[2, 2]),
            ],
        ),
        node(
            "dw",
            "Conv",
            &["p1", "w2"],
            &["dw"],
            vec![attr_i("group", 8), attr_s("auto_pad", "SAME_UPPER")],
        ),
        clip,
        node("res", "Add", &["dwc", "p1"], &["res"], vec![]),
        node("pw", "Conv", &["res", "w3"], &["pw"], vec![]),
        node(
            "cat",
            "Concat",
            &["res", "pw"],
            &["cat"],
            vec![attr_i("axis", 1)],
        ),
        node("gap", "GlobalAveragePool", &["cat"], &["gap"], vec![]),
        node("flat", "Flatten", &["gap"], &["flat"], vec![]),
        node(
            "fc",
            "Gemm",
            &["flat", "fc_w", "fc_b"],
            &["logits"],
            vec![attr_i("transB", 1)],
        ),
        node(
            "sm",
            "Softmax",
            &["logits"],
            &["probs"],
            vec![attr_i("axis", 1)],
        ),
    ];
    model(
        opset,
        nodes,
        inits,
        vec![value("x", &[3, 8, 8])],
        vec![out("probs", 2)],
    )
}

#[test]
fn cnn_passes_fold_batchnorm_affine_and_activations() {
    for opset in [9, 13] {
        let g = parse_model_with(&cnn_model(opset), &ImportOptions { batch: 3 }).unwrap();
        assert_eq!(g.outputs[0].shape, vec![3, 5]);
        let opt = optimize_and_compare(&g, opset as u64, 2e-5);
        assert_eq!(
            opt.op_names(),
            vec![
                "Conv2d",
                "MaxPool2d",
                "Conv2d",
                "Add",
                "Conv2d",
                "Concat",
                "GlobalAvgPool",
                "Flatten",
                "Dense",
                "Softmax"
            ],
            "{}",
            opt.summary()
        );
        let acts: Vec<Activation> = opt
            .nodes
            .iter()
            .filter_map(|n| match &n.op {
                Op::Conv2d { activation, .. } => Some(*activation),
                _ => None,
            })
            .collect();
        assert_eq!(
            acts,
            vec![
                Activation::Relu,
                Activation::Clip { min: 0.0, max: 6.0 },
                Activation::None
            ]
        );
        match &opt.nodes[2].op {
            Op::Conv2d {
                groups,
                pads,
                weight,
                ..
            } => {
                assert_eq!(*groups, 8);
                assert_eq!(*pads, [1, 1, 1, 1]);
                assert_eq!(weight.dim(), (8, 1, 3, 3));
            }
            other => panic!("{other:?}"),
        }
        assert!(opt.constants.is_empty(), "{:?}", opt.constants.keys());
    }
}

#[test]
fn standalone_batchnorm_and_affine_maps() {
    let mut rng = StdRng::seed_from_u64(61);
    let var = random(&mut rng, &[4]).mapv(|v| v.abs() + 0.5);
    let p = |rng: &mut StdRng| random(rng, &[4]);
    let (s, b, m) = (p(&mut rng), p(&mut rng), p(&mut rng));
    let scale3 = random(&mut rng, &[4, 1, 1]);
    let bytes = model(
        15,
        vec![
            // BN on a graph input: stays an affine map.
            node(
                "bn",
                "BatchNormalization",
                &["x", "s", "b", "m", "v"],
                &["n"],
                vec![],
            ),
            node("div", "Div", &["n", "scale3"], &["d"], vec![]),
            node("sub", "Sub", &["one", "d"], &["y1"], vec![]),
            // Relu after an affine map is not fused (no layer to fuse into).
            node("relu", "Relu", &["y1"], &["y"], vec![]),
        ],
        vec![
            array_tensor("s", &s),
            array_tensor("b", &b),
            array_tensor("m", &m),
            array_tensor("v", &var),
            array_tensor("scale3", &scale3),
            scalar_f32("one", 1.0),
        ],
        vec![value("x", &[4, 3, 2])],
        vec![out("y", 4)],
    );
    let g = parse_model(&bytes).unwrap();
    let x = random(&mut rng, &[2, 4, 3, 2]);
    let y = run1(&g, &x);
    // Reference from the BN formula.
    let mut want = x.clone();
    for ((n, c, h, w), v) in want
        .view_mut()
        .into_dimensionality::<ndarray::Ix4>()
        .unwrap()
        .indexed_iter_mut()
    {
        let _ = (n, h, w);
        let bn = (*v - m[[c]]) / (var[[c]] + 1e-5).sqrt() * s[[c]] + b[[c]];
        *v = (1.0 - bn / scale3[[c, 0, 0]]).max(0.0);
    }
    assert_close(&y, &want, 1e-5);
    let opt = optimize_and_compare(&g, 1, 1e-5);
    // The merged affine map has no producer to fold into: a depthwise 1×1 convolution that
    // takes the Relu.
    assert_eq!(opt.op_names(), vec!["Conv2d"], "{}", opt.summary());

    // BatchNorm with runtime statistics stays a BatchNorm; training mode is rejected.
    let bytes = model(
        15,
        vec![node(
            "bn",
            "BatchNormalization",
            &["x", "s", "b", "m", "x2"],
            &["y"],
            vec![],
        )],
        vec![
            array_tensor("s", &s),
            array_tensor("b", &b),
            array_tensor("m", &m),
        ],
        vec![value("x", &[4]), value("x2", &[])],
        vec![out("y", 2)],
    );
    let _ = bytes;
    let bytes = model(
        15,
        vec![node(
            "bn",
            "BatchNormalization",
            &["x", "s", "b", "m", "v"],
            &["y", "rm", "rv"],
            vec![attr_i("training_mode", 1)],
        )],
        vec![
            array_tensor("s", &s),
            array_tensor("b", &b),
            array_tensor("m", &m),
            array_tensor("v", &var),
        ],
        vec![value("x", &[4, 3, 2])],
        vec![out("y", 4)],
    );
    let err = parse_model(&bytes).unwrap_err().to_string();
    assert!(
        err.contains("'bn'") && err.contains("training_mode"),
        "{err}"
    );
    // Opset 7 spatial=0 is rejected.
    let bytes = model(
        7,
        vec![node(
            "bn",
            "BatchNormalization",
            &["x", "s", "b", "m", "v"],
            &["y"],
            vec![attr_i("spatial", 0)],
        )],
        vec![
            array_tensor("s", &s),
            array_tensor("b", &b),
            array_tensor("m", &m),
            array_tensor("v", &var),
        ],
        vec![value("x", &[4, 3, 2])],
        vec![out("y", 4)],
    );
    let err = parse_model(&bytes).unwrap_err().to_string();
    assert!(err.contains("spatial"), "{err}");
}

#[test]
fn batchnorm_and_mul_fold_into_dense() {
    let mut rng = StdRng::seed_from_u64(71);
    let w = random(&mut rng, &[6, 4]);
    let var = random(&mut rng, &[4]).mapv(|v| v.abs() + 0.5);
    let p = |rng: &mut StdRng| random(rng, &[4]);
    let (s, b, m, k) = (p(&mut rng), p(&mut rng), p(&mut rng), p(&mut rng));
    let bytes = model(
        13,
        vec![
            node("mm", "MatMul", &["x", "w"], &["h"], vec![]),
            node(
                "bn",
                "BatchNormalization",
                &["h", "s", "b", "m", "v"],
                &["n"],
                vec![],
            ),
            node("mul", "Mul", &["n", "k"], &["y0"], vec![]),
            node("relu", "Relu", &["y0"], &["y"], vec![]),
        ],
        vec![
            array_tensor("w", &w),
            array_tensor("s", &s),
            array_tensor("b", &b),
            array_tensor("m", &m),
            array_tensor("v", &var),
            array_tensor("k", &k),
        ],
        vec![value("x", &[6])],
        vec![out("y", 2)],
    );
    let g = parse_model_with(&bytes, &ImportOptions { batch: 4 }).unwrap();
    let opt = optimize_and_compare(&g, 2, 1e-5);
    assert_eq!(opt.op_names(), vec!["Dense"], "{}", opt.summary());
}

#[test]
fn affine_not_folded_through_shared_or_activated_outputs() {
    let mut rng = StdRng::seed_from_u64(81);
    let w = random(&mut rng, &[4, 2, 1, 1]);
    let c = random(&mut rng, &[4, 1, 1]);
    let bytes = model(
        13,
        vec![
            node("conv", "Conv", &["x", "w"], &["h"], vec![]),
            node("relu", "Relu", &["h"], &["r"], vec![]),
            // The Mul reads the Relu output: folding it into the conv would be wrong.
            node("mul", "Mul", &["r", "c"], &["m"], vec![]),
            // h has a second reader: the conv keeps no activation.
            node("add", "Add", &["m", "h"], &["y"], vec![]),
        ],
        vec![array_tensor("w", &w), array_tensor("c", &c)],
        vec![value("x", &[2, 3, 3])],
        vec![out("y", 4)],
    );
    let g = parse_model(&bytes).unwrap();
    let opt = optimize_and_compare(&g, 3, 1e-5);
    assert_eq!(
        opt.op_names(),
        vec!["Conv2d", "Relu", "Conv2d", "Add"],
        "{}",
        opt.summary()
    );
}

// ---------------------------------------------------------------------------------------------
// Robustness.

#[test]
fn malformed_cnn_nodes_are_errors_naming_the_node() {
    let x = || vec![value("x", &[3, 6, 6])];
    let cases: Vec<(Vec<NodeProto>, Vec<TensorProto>, &str)> = vec![
        (
            vec![node("c", "Conv", &["x", "w"], &["y"], vec![])],
            vec![array_tensor("w", &ArrayD::zeros(IxDyn(&[4, 3, 3])))],
            "'c'",
        ),
        (
            vec![node("c", "Conv", &["x", "w"], &["y"], vec![])],
            vec![array_tensor("w", &ArrayD::zeros(IxDyn(&[4, 3, 9, 9])))],
            "'c'",
        ),
        (
            vec![node(
                "p",
                "MaxPool",
                &["x"],
                &["y"],
                vec![attr_ints("kernel_shape", &[3])],
            )],
            vec![],
            "'p'",
        ),
        (
            vec![node("l", "LRN", &["x"], &["y"], vec![])],
            vec![],
            "'l'",
        ),
        (
            vec![node(
                "t",
                "Transpose",
                &["x"],
                &["y"],
                vec![attr_ints("perm", &[0, 1, 1, 2])],
            )],
            vec![],
            "'t'",
        ),
        (
            vec![node(
                "cat",
                "Concat",
                &["x", "w"],
                &["y"],
                vec![attr_i("axis", 1)],
            )],
            vec![array_tensor("w", &ArrayD::zeros(IxDyn(&[1, 3, 5, 6])))],
            "'cat'",
        ),
        (
            vec![node(
                "pad",
                "Pad",
                &["x", "pads"],
                &["y"],
                vec![attr_s("mode", "reflect")],
            )],
            vec![tensor_i64("pads", &[8], &[0, 0, 6, 0, 0, 0, 0, 0])],
            "'pad'",
        ),
        (
            vec![node(
                "bn",
                "BatchNormalization",
                &["x", "s", "s", "s"],
                &["y"],
                vec![],
            )],
            vec![array_tensor("s", &ArrayD::zeros(IxDyn(&[3])))],
            "'bn'",
        ),
        (
            vec![node(
                "sl",
                "Slice",
                &["x", "st", "st", "ax", "zero"],
                &["y"],
                vec![],
            )],
            vec![
                tensor_i64("st", &[1], &[0]),
                tensor_i64("ax", &[1], &[1]),
                tensor_i64("zero", &[1], &[0]),
            ],
            "'sl'",
        ),
        (
            vec![node(
                "g",
                "Gather",
                &["x", "i"],
                &["y"],
                vec![attr_i("axis", 1)],
            )],
            vec![tensor_i64("i", &[1], &[3])],
            "'g'",
        ),
    ];
    for (i, (nodes, inits, needle)) in cases.into_iter().enumerate() {
        let err = parse_model(&model(13, nodes, inits, x(), vec![out("y", 4)]))
            .unwrap_err()
            .to_string();
        assert!(err.contains(needle), "case {i}: {err}");
    }
    // Interpreter shape errors instead of panics.
    let bad = ArrayD::zeros(IxDyn(&[1, 3, 4]));
    let conv = Op::Conv2d {
        weight: Array4::zeros((2, 3, 3, 3)),
        bias: None,
        stride: [1, 1],
        pads: [0; 4],
        dilation: [1, 1],
        groups: 1,
        activation: Activation::None,
    };
    assert!(interp::eval_op(&conv, &[bad.view()]).is_err());
    let pad = Op::Pad {
        pads: vec![[0, 0]; 2],
        mode: PadMode::Constant,
        value: 0.0,
    };
    assert!(interp::eval_op(&pad, &[bad.view()]).is_err());
    assert!(matches!(
        interp::eval_op(&Op::GlobalAvgPool, &[ArrayD::zeros(IxDyn(&[3])).view()]),
        Err(CompileError::Interp(_))
    ));
}

// ---------------------------------------------------------------------------------------------
// The digits CNN fixtures (scripts/train_digits_cnn.py).

fn fixture(name: &str) -> std::path::PathBuf {
    std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../fixtures/digits")
        .join(name)
}

/// The test split as `[M, 1, 8, 8]` images.
fn digit_images(file: &str) -> ArrayD<f32> {
    let x: ArrayD<f32> = ndarray_npy::read_npy(fixture(file)).unwrap();
    let m = x.shape()[0];
    x.into_shape_with_order(IxDyn(&[m, 1, 8, 8])).unwrap()
}

fn accuracy(probs: &ArrayD<f32>) -> f64 {
    let y: ArrayD<i64> = ndarray_npy::read_npy(fixture("test_y.npy")).unwrap();
    let correct = probs
        .outer_iter()
        .zip(y.iter())
        .filter(|(row, &t)| {
            let best = row
                .iter()
                .enumerate()
                .fold((0, f32::MIN), |b, (i, &v)| if v > b.1 { (i, v) } else { b });
            best.0 as i64 == t
        })
        .count();
    correct as f64 / y.len() as f64
}

fn check_digits_model(onnx: &str, reference: &str, optimised_ops: &[&str]) {
    let x = digit_images("test_x.npy");
    let reference: ArrayD<f32> = ndarray_npy::read_npy(fixture(reference)).unwrap();
    let m = x.shape()[0];
    let raw =
        sinter_compiler::onnx::load_model_with(fixture(onnx), &ImportOptions { batch: m }).unwrap();
    assert_eq!(raw.inputs[0].shape, vec![m, 1, 8, 8]);
    let probs = run1(&raw, &x);
    assert_close(&probs, &reference, 1e-4);

    let mut opt = raw.clone();
    passes::optimize(&mut opt).unwrap();
    assert_eq!(opt.op_names(), optimised_ops, "{}", opt.summary());
    assert!(opt.constants.is_empty());
    let probs_opt = run1(&opt, &x);
    assert_close(&probs_opt, &reference, 1e-4);
    assert!(
        accuracy(&probs_opt) >= 0.95,
        "{onnx}: {}",
        accuracy(&probs_opt)
    );

    // Imported for batch 1, the graph still runs any batch; every tensor is there for
    // calibration.
    let g1 = sinter_compiler::onnx::load_model(fixture(onnx)).unwrap();
    assert_close(&run1(&g1, &x), &reference, 1e-4);
    let calib = digit_images("calib.npy");
    let feed = HashMap::from([("input".to_string(), calib)]);
    let all = interp::run_all(&opt, &feed).unwrap();
    assert!(all.values().all(|v| v.shape()[0] == 256));
}

#[test]
fn digits_cnn_matches_onnxruntime() {
    check_digits_model(
        "cnn.onnx",
        "cnn_ref_probs.npy",
        &[
            "Conv2d",
            "Conv2d",
            "MaxPool2d",
            "Flatten",
            "Dense",
            "Softmax",
        ],
    );
    let g = sinter_compiler::onnx::load_model(fixture("cnn.onnx")).unwrap();
    let mut opt = g.clone();
    passes::optimize(&mut opt).unwrap();
    for n in &opt.nodes[..2] {
        assert!(
            matches!(
                n.op,
                Op::Conv2d {
                    activation: Activation::Relu,
                    bias: Some(_),
                    ..
                }
            ),
            "{}",
            opt.summary()
        );
    }
}

#[test]
fn digits_resnet_matches_onnxruntime() {
    check_digits_model(
        "resnet.onnx",
        "resnet_ref_probs.npy",
        &[
            "Conv2d",
            "Conv2d",
            "Conv2d",
            "Add",
            "Relu",
            "Conv2d",
            "Conv2d",
            "Concat",
            "GlobalAvgPool",
            "Flatten",
            "Dense",
            "Softmax",
        ],
    );
}

#[test]
fn corrupted_cnn_models_never_panic() {
    for file in ["cnn.onnx", "resnet.onnx"] {
        let bytes = std::fs::read(fixture(file)).unwrap();
        let x = digit_images("test_x.npy")
            .slice_move(ndarray::s![..2, .., .., ..])
            .into_dyn();
        let mut imported = 0;
        for i in (0..bytes.len()).step_by(7) {
            let mut b = bytes.clone();
            b[i] ^= 0x5a;
            let Ok(g) = parse_model(&b) else {
                continue;
            };
            g.validate().unwrap();
            imported += 1;
            // Run corrupted graphs that stay small; errors are fine, panics are not.
            let small = g
                .shapes
                .values()
                .map(|s| s.iter().product::<usize>())
                .sum::<usize>()
                < 1 << 22;
            if small && g.inputs.len() == 1 && g.inputs[0].shape[1..] == [1, 8, 8] {
                let feed = HashMap::from([(g.inputs[0].name.clone(), x.clone())]);
                let _ = interp::run(&g, &feed);
                let mut opt = g.clone();
                if passes::optimize(&mut opt).is_ok() {
                    let _ = interp::run(&opt, &feed);
                }
            }
        }
        assert!(imported > 0, "{file}");
    }
}
