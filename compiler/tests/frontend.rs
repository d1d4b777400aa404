//! Front-end tests: ONNX import, the fp32 interpreter and the graph passes.

use std::collections::HashMap;
use std::path::PathBuf;

use ndarray::{array, Array2, ArrayD, Axis, IxDyn};
use prost::Message;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use sinter_compiler::error::CompileError;
use sinter_compiler::interp;
use sinter_compiler::ir::{Activation, Graph, Op};
use sinter_compiler::onnx::proto::{
    attribute_type, data_type, tensor_shape_proto, type_proto, AttributeProto, GraphProto,
    ModelProto, NodeProto, OperatorSetIdProto, TensorProto, TensorShapeProto, TypeProto,
    ValueInfoProto,
};
use sinter_compiler::onnx::{
    load_model, load_model_with, parse_model, parse_model_with, ImportOptions,
};
use sinter_compiler::passes;

// ---------------------------------------------------------------------------------------------
// Building ONNX models from our own protobuf structs.

fn tensor_f32(name: &str, dims: &[i64], data: &[f32]) -> TensorProto {
    TensorProto {
        name: name.into(),
        dims: dims.to_vec(),
        data_type: data_type::FLOAT,
        raw_data: data.iter().flat_map(|v| v.to_le_bytes()).collect(),
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

fn array_tensor(name: &str, a: &ArrayD<f32>) -> TensorProto {
    let dims: Vec<i64> = a.shape().iter().map(|&d| d as i64).collect();
    TensorProto {
        name: name.into(),
        dims,
        data_type: data_type::FLOAT,
        float_data: a.iter().copied().collect(),
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

fn attr_ints(name: &str, ints: &[i64]) -> AttributeProto {
    AttributeProto {
        name: name.into(),
        r#type: attribute_type::INTS,
        ints: ints.to_vec(),
        ..Default::default()
    }
}

fn attr_t(name: &str, t: TensorProto) -> AttributeProto {
    AttributeProto {
        name: name.into(),
        r#type: attribute_type::TENSOR,
        t: Some(t),
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

/// A dim of a declared value: `Some(n)` concrete, `None` symbolic `N`.
fn value(name: &str, dims: &[Option<i64>]) -> ValueInfoProto {
    let dim = dims
        .iter()
        .map(|d| tensor_shape_proto::Dimension {
            value: Some(match d {
                Some(v) => tensor_shape_proto::dimension::Value::DimValue(*v),
                None => tensor_shape_proto::dimension::Value::DimParam("N".into()),
            }),
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
            name: "test".into(),
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

/// Output dims unknown to the test: declare rank only through symbolic dims.
fn out(name: &str, rank: usize) -> ValueInfoProto {
    value(name, &vec![None; rank])
}

// ---------------------------------------------------------------------------------------------
// Helpers.

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../fixtures/digits")
        .join(name)
}

fn random(rng: &mut StdRng, shape: &[usize]) -> ArrayD<f32> {
    ArrayD::from_shape_simple_fn(IxDyn(shape), || rng.gen_range(-2.0f32..2.0))
}

fn run1(graph: &Graph, inputs: &[(&str, ArrayD<f32>)]) -> ArrayD<f32> {
    let feed: HashMap<String, ArrayD<f32>> = inputs
        .iter()
        .map(|(n, a)| (n.to_string(), a.clone()))
        .collect();
    let mut outs = interp::run(graph, &feed).expect("interpreter failed");
    assert_eq!(outs.len(), 1);
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
    assert!(d <= tol, "max abs diff {d} > {tol}\n{a:?}\n{b:?}");
}

/// Optimises a copy of `graph` and checks it computes the same outputs on random inputs.
fn optimize_and_compare(graph: &Graph, seed: u64) -> Graph {
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
            assert_close(v, &after[name], 1e-5);
        }
    }
    opt
}

// ---------------------------------------------------------------------------------------------
// The digits MLP fixture.

#[test]
fn digits_model_imports() {
    let g = load_model(fixture("mlp.onnx")).unwrap();
    assert_eq!(g.input_shapes(), vec![("input", &[1usize, 64][..])]);
    assert_eq!(g.output_shapes(), vec![("probs", &[1usize, 10][..])]);
    assert_eq!(
        g.op_names(),
        vec!["MatMul", "Add", "Relu", "Gemm", "Softmax"]
    );
    assert_eq!(g.constants.len(), 4);
    let fc2 = g.node("fc2").unwrap();
    assert!(matches!(
        fc2.op,
        Op::Gemm {
            trans_b: true,
            trans_a: false,
            ..
        }
    ));
    assert_eq!(g.producer_node("logits"), Some(3));
    assert_eq!(g.consumers("relu1.out"), vec![3]);
    let summary = g.summary();
    assert!(
        summary.contains("fc1_matmul") && summary.contains("probs [1, 10]"),
        "{summary}"
    );

    let g = load_model_with(fixture("mlp.onnx"), &ImportOptions { batch: 32 }).unwrap();
    assert_eq!(g.inputs[0].shape, vec![32, 64]);
    assert_eq!(g.shape_of("fc1.out"), Some(&[32usize, 64][..]));
}

#[test]
fn digits_interpreter_matches_onnxruntime() {
    let x: ArrayD<f32> = ndarray_npy::read_npy(fixture("test_x.npy")).unwrap();
    let reference: ArrayD<f32> = ndarray_npy::read_npy(fixture("mlp_ref_probs.npy")).unwrap();
    let n = x.shape()[0];
    let g = load_model_with(fixture("mlp.onnx"), &ImportOptions { batch: n }).unwrap();
    let probs = run1(&g, &[("input", x.clone())]);
    assert_close(&probs, &reference, 1e-5);

    // A graph imported for batch 1 still runs a larger batch (no batch-dependent constants).
    let g1 = load_model(fixture("mlp.onnx")).unwrap();
    assert_close(&run1(&g1, &[("input", x)]), &reference, 1e-5);

    // Every intermediate tensor is available for calibration.
    let feed = HashMap::from([(
        "input".to_string(),
        ndarray_npy::read_npy::<_, ArrayD<f32>>(fixture("calib.npy")).unwrap(),
    )]);
    let all = interp::run_all(&g1, &feed).unwrap();
    for name in [
        "input",
        "fc1.matmul",
        "fc1.out",
        "relu1.out",
        "logits",
        "probs",
    ] {
        assert_eq!(all[name].shape()[0], 256, "{name}");
    }
    assert!(all["relu1.out"].iter().all(|&v| v >= 0.0));
}

#[test]
fn digits_passes_produce_dense_layers() {
    let x: ArrayD<f32> = ndarray_npy::read_npy(fixture("test_x.npy")).unwrap();
    let y: ArrayD<i64> = ndarray_npy::read_npy(fixture("test_y.npy")).unwrap();
    let reference: ArrayD<f32> = ndarray_npy::read_npy(fixture("mlp_ref_probs.npy")).unwrap();
    let raw = load_model_with(
        fixture("mlp.onnx"),
        &ImportOptions {
            batch: x.shape()[0],
        },
    )
    .unwrap();
    let mut g = raw.clone();
    passes::optimize(&mut g).unwrap();
    assert_eq!(
        g.op_names(),
        vec!["Dense", "Dense", "Softmax"],
        "{}",
        g.summary()
    );
    assert!(g.constants.is_empty());
    match &g.nodes[0].op {
        Op::Dense {
            weight,
            bias,
            activation,
        } => {
            assert_eq!(weight.dim(), (64, 64));
            assert_eq!(bias.as_ref().map(|b| b.len()), Some(64));
            assert_eq!(*activation, Activation::Relu);
        }
        other => panic!("expected Dense, got {other:?}"),
    }
    match &g.nodes[1].op {
        Op::Dense {
            weight,
            bias,
            activation,
        } => {
            // The Gemm's [10, 64] weight (transB=1) is stored as [K=64, N=10].
            assert_eq!(weight.dim(), (64, 10));
            assert!(bias.is_some());
            assert_eq!(*activation, Activation::None);
        }
        other => panic!("expected Dense, got {other:?}"),
    }
    assert_eq!(g.nodes[1].inputs, vec![g.nodes[0].outputs[0].clone()]);
    assert_eq!(g.outputs[0].name, "probs");

    let before = run1(&raw, &[("input", x.clone())]);
    let after = run1(&g, &[("input", x)]);
    assert!(max_abs_diff(&before, &after) <= 1e-6);
    assert_close(&after, &reference, 1e-5);
    let predicted = after.map_axis(Axis(1), |row| {
        row.iter()
            .enumerate()
            .fold(
                (0, f32::MIN),
                |best, (i, &v)| if v > best.1 { (i, v) } else { best },
            )
            .0 as i64
    });
    let correct = predicted
        .iter()
        .zip(y.iter())
        .filter(|(p, t)| p == t)
        .count();
    let accuracy = correct as f64 / y.len() as f64;
    assert!(accuracy > 0.95, "accuracy {accuracy}");
}

// ---------------------------------------------------------------------------------------------
// Opset variants.

#[test]
fn clip_attributes_and_inputs_agree() {
    let x = array![[-3.0f32, -0.5, 0.0, 0.5, 3.0, 7.0]].into_dyn();
    let want = array![[-1.0f32, -0.5, 0.0, 0.5, 3.0, 6.0]].into_dyn();
    let v7 = model(
        7,
        vec![node(
            "clip",
            "Clip",
            &["x"],
            &["y"],
            vec![attr_f("min", -1.0), attr_f("max", 6.0)],
        )],
        vec![],
        vec![value("x", &[None, Some(6)])],
        vec![out("y", 2)],
    );
    let v13 = model(
        13,
        vec![node("clip", "Clip", &["x", "lo", "hi"], &["y"], vec![])],
        vec![
            tensor_f32("lo", &[], &[-1.0]),
            tensor_f32("hi", &[], &[6.0]),
        ],
        vec![value("x", &[None, Some(6)])],
        vec![out("y", 2)],
    );
    for bytes in [v7, v13] {
        let g = parse_model(&bytes).unwrap();
        assert_eq!(
            g.nodes[0].op,
            Op::Clip {
                min: -1.0,
                max: 6.0
            }
        );
        assert_eq!(run1(&g, &[("x", x.clone())]), want);
    }

    // Opset 13 with the min input omitted: only an upper bound.
    let only_max = model(
        13,
        vec![node("clip", "Clip", &["x", "", "hi"], &["y"], vec![])],
        vec![tensor_f32("hi", &[], &[6.0])],
        vec![value("x", &[None, Some(6)])],
        vec![out("y", 2)],
    );
    let g = parse_model(&only_max).unwrap();
    assert_eq!(
        g.nodes[0].op,
        Op::Clip {
            min: f32::NEG_INFINITY,
            max: 6.0
        }
    );

    // A runtime bound is not supported.
    let dynamic = model(
        13,
        vec![node("clip", "Clip", &["x", "x"], &["y"], vec![])],
        vec![],
        vec![value("x", &[None, Some(6)])],
        vec![out("y", 2)],
    );
    let err = parse_model(&dynamic).unwrap_err().to_string();
    assert!(err.contains("'clip'") && err.contains("constant"), "{err}");
}

#[test]
fn softmax_opset_11_coerces_to_2d_and_13_uses_one_axis() {
    let mut rng = StdRng::seed_from_u64(7);
    let x = random(&mut rng, &[2, 3, 4]);
    let build = |opset: i64, axis: Option<i64>| {
        let attrs = axis.map(|a| vec![attr_i("axis", a)]).unwrap_or_default();
        parse_model(&model(
            opset,
            vec![node("sm", "Softmax", &["x"], &["y"], attrs)],
            vec![],
            vec![value("x", &[Some(2), Some(3), Some(4)])],
            vec![out("y", 3)],
        ))
        .unwrap()
    };
    // Opset 11, axis=1: each batch row of 12 values sums to one.
    let y11 = run1(&build(11, Some(1)), &[("x", x.clone())]);
    for row in y11.outer_iter() {
        assert!((row.sum() - 1.0).abs() < 1e-5);
    }
    let e = x.mapv(f32::exp);
    let want11 = &e
        / &e.sum_axis(Axis(2))
            .sum_axis(Axis(1))
            .insert_axis(Axis(1))
            .insert_axis(Axis(2));
    assert_close(&y11, &want11, 1e-6);
    // Opset 13, axis=1: normalised along axis 1 only.
    let y13 = run1(&build(13, Some(1)), &[("x", x.clone())]);
    let want13 = &e / &e.sum_axis(Axis(1)).insert_axis(Axis(1));
    assert_close(&y13, &want13, 1e-6);
    assert!(max_abs_diff(&y11, &y13) > 1e-3);
    // Defaults: axis 1 (coerced) before 13, -1 from 13 on.
    assert_eq!(
        build(11, None).nodes[0].op,
        Op::Softmax {
            axis: 1,
            coerce_2d: true
        }
    );
    assert_eq!(
        build(13, None).nodes[0].op,
        Op::Softmax {
            axis: 2,
            coerce_2d: false
        }
    );
    let want_last = &e / &e.sum_axis(Axis(2)).insert_axis(Axis(2));
    assert_close(&run1(&build(13, None), &[("x", x)]), &want_last, 1e-6);
}

#[test]
fn reshape_zero_and_minus_one() {
    let mut rng = StdRng::seed_from_u64(3);
    let x = random(&mut rng, &[2, 3, 4]);
    let build = |spec: &[i64], allowzero: bool, opset: i64| {
        let attrs = if allowzero {
            vec![attr_i("allowzero", 1)]
        } else {
            vec![]
        };
        parse_model(&model(
            opset,
            vec![node("rs", "Reshape", &["x", "shape"], &["y"], attrs)],
            vec![tensor_i64("shape", &[spec.len() as i64], spec)],
            vec![value("x", &[Some(2), Some(3), Some(4)])],
            vec![out("y", spec.len())],
        ))
    };
    let g = build(&[0, -1], false, 13).unwrap();
    assert_eq!(g.outputs[0].shape, vec![2, 12]);
    let y = run1(&g, &[("x", x.clone())]);
    assert_eq!(y, x.to_shape(IxDyn(&[2, 12])).unwrap().to_owned());
    let g = build(&[-1, 0, 2], false, 13).unwrap();
    assert_eq!(g.outputs[0].shape, vec![4, 3, 2]);
    let g = build(&[4, 0, 2], false, 13).unwrap();
    assert_eq!(g.outputs[0].shape, vec![4, 3, 2]);
    // With allowzero a 0 is a literal zero: 24 values do not fit.
    let err = build(&[0, -1], true, 14).unwrap_err();
    assert!(matches!(err, CompileError::Shape { .. }), "{err}");
    assert!(err.to_string().contains("'rs'"), "{err}");
    let err = build(&[5, -1], false, 13).unwrap_err().to_string();
    assert!(err.contains("cannot reshape"), "{err}");
}

/// PyTorch-style flatten (`Shape → Gather → Unsqueeze → Concat → Reshape`) and weights built with
/// `ConstantOfShape`, `Mul`, `Reshape`, `Cast`, `Squeeze` are folded into constants at import.
#[test]
fn shape_and_weight_chains_are_folded() {
    let nodes = vec![
        node("shape", "Shape", &["x"], &["s"], vec![]),
        node(
            "gather",
            "Gather",
            &["s", "zero"],
            &["n"],
            vec![attr_i("axis", 0)],
        ),
        node("unsq", "Unsqueeze", &["n", "axes0"], &["n1"], vec![]),
        node(
            "concat",
            "Concat",
            &["n1", "minus_one"],
            &["target"],
            vec![attr_i("axis", 0)],
        ),
        node("flatten", "Reshape", &["x", "target"], &["flat"], vec![]),
        node(
            "fill",
            "ConstantOfShape",
            &["wshape"],
            &["ones"],
            vec![attr_t("value", tensor_f32("", &[1], &[0.5]))],
        ),
        node("scale", "Mul", &["ones", "ramp"], &["w_flat"], vec![]),
        node(
            "wshape2",
            "Constant",
            &[],
            &["w_dims"],
            vec![attr_t("value", tensor_i64("", &[2], &[12, 3]))],
        ),
        node(
            "w_reshape",
            "Reshape",
            &["w_flat", "w_dims"],
            &["w"],
            vec![],
        ),
        node(
            "bias_sq",
            "Squeeze",
            &["bias2d", "axes0"],
            &["bias"],
            vec![],
        ),
        node(
            "cast",
            "Cast",
            &["bias"],
            &["bias_f"],
            vec![attr_i("to", data_type::FLOAT as i64)],
        ),
        node("mm", "MatMul", &["flat", "w"], &["h"], vec![]),
        node("add", "Add", &["h", "bias_f"], &["y"], vec![]),
    ];
    let ramp: Vec<f32> = (0..36).map(|i| i as f32 / 10.0).collect();
    let inits = vec![
        tensor_i64("zero", &[], &[0]),
        tensor_i64("axes0", &[1], &[0]),
        tensor_i64("minus_one", &[1], &[-1]),
        tensor_i64("wshape", &[1], &[36]),
        tensor_f32("ramp", &[36], &ramp),
        tensor_f32("bias2d", &[1, 3], &[1.0, -1.0, 0.25]),
    ];
    let bytes = model(
        13,
        nodes,
        inits,
        vec![value("x", &[None, Some(3), Some(4)])],
        vec![out("y", 2)],
    );
    let g = parse_model_with(&bytes, &ImportOptions { batch: 2 }).unwrap();
    assert_eq!(
        g.op_names(),
        vec!["Reshape", "MatMul", "Add"],
        "{}",
        g.summary()
    );
    assert_eq!(
        g.nodes[0].op,
        Op::Reshape {
            shape: vec![2, -1],
            allowzero: false
        }
    );
    assert_eq!(g.constant("w").unwrap().shape(), &[12, 3]);
    assert_eq!(g.constant("bias_f").unwrap().shape(), &[3]);
    assert_eq!(g.constants.len(), 2);

    let mut rng = StdRng::seed_from_u64(11);
    let x = random(&mut rng, &[2, 3, 4]);
    let w = Array2::from_shape_vec((12, 3), ramp.iter().map(|v| v * 0.5).collect()).unwrap();
    let flat = x.to_shape((2, 12)).unwrap().to_owned();
    let want = (flat.dot(&w) + &array![1.0f32, -1.0, 0.25]).into_dyn();
    assert_close(&run1(&g, &[("x", x)]), &want, 1e-5);

    // The flatten on the graph input stays; MatMul + Add become one Dense.
    let opt = optimize_and_compare(&g, 5);
    assert_eq!(opt.op_names(), vec!["Reshape", "Dense"]);
}

/// Unsqueeze/Squeeze take `axes` as an attribute before opset 13 and as an input from 13 on; on
/// runtime tensors they become reshapes. `Shape` honours `start`/`end` from opset 15.
#[test]
fn squeeze_unsqueeze_and_shape_slices() {
    let mut rng = StdRng::seed_from_u64(8);
    let x = random(&mut rng, &[2, 3]);
    let v11 = model(
        11,
        vec![
            node(
                "unsq",
                "Unsqueeze",
                &["x"],
                &["u"],
                vec![attr_ints("axes", &[1, -1])],
            ),
            node(
                "sq",
                "Squeeze",
                &["u"],
                &["y"],
                vec![attr_ints("axes", &[3])],
            ),
        ],
        vec![],
        vec![value("x", &[None, Some(3)])],
        vec![out("y", 3)],
    );
    let v13 = model(
        13,
        vec![
            node("unsq", "Unsqueeze", &["x", "axes"], &["u"], vec![]),
            node("sq", "Squeeze", &["u", "last"], &["y"], vec![]),
        ],
        vec![
            tensor_i64("axes", &[2], &[1, -1]),
            tensor_i64("last", &[1], &[3]),
        ],
        vec![value("x", &[None, Some(3)])],
        vec![out("y", 3)],
    );
    for bytes in [v11, v13] {
        let g = parse_model_with(&bytes, &ImportOptions { batch: 2 }).unwrap();
        assert_eq!(g.shape_of("u"), Some(&[2usize, 1, 3, 1][..]));
        assert_eq!(g.outputs[0].shape, vec![2, 1, 3]);
        let y = run1(&g, &[("x", x.clone())]);
        assert_eq!(y, x.to_shape(IxDyn(&[2, 1, 3])).unwrap().to_owned());
    }
    let err = parse_model(&model(
        13,
        vec![node("sq", "Squeeze", &["x", "zero"], &["y"], vec![])],
        vec![tensor_i64("zero", &[1], &[1])],
        vec![value("x", &[None, Some(3)])],
        vec![out("y", 1)],
    ))
    .unwrap_err()
    .to_string();
    assert!(err.contains("cannot squeeze"), "{err}");

    // Shape(start=1) of [B, 3, 4] is [3, 4]; [3, 4] * [4, 3] = [12, 12]; Reshape(x, [-1, 12]).
    let g = parse_model_with(
        &model(
            15,
            vec![
                node("shape", "Shape", &["x"], &["s"], vec![attr_i("start", 1)]),
                node("prod", "Mul", &["s", "s_rev"], &["p"], vec![]),
                node("last", "Gather", &["p", "one"], &["p_last"], vec![]),
                node(
                    "cat",
                    "Concat",
                    &["minus_one", "p_last"],
                    &["target"],
                    vec![attr_i("axis", 0)],
                ),
                node("rs", "Reshape", &["x", "target"], &["y"], vec![]),
            ],
            vec![
                tensor_i64("s_rev", &[2], &[4, 3]),
                tensor_i64("one", &[1], &[1]),
                tensor_i64("minus_one", &[1], &[-1]),
            ],
            vec![value("x", &[None, Some(3), Some(4)])],
            vec![out("y", 2)],
        ),
        &ImportOptions { batch: 2 },
    )
    .unwrap();
    assert_eq!(g.op_names(), vec!["Reshape"]);
    assert_eq!(g.outputs[0].shape, vec![2, 12]);
}

#[test]
fn gemm_attributes() {
    let mut rng = StdRng::seed_from_u64(21);
    let a = random(&mut rng, &[3, 4]);
    let b = random(&mut rng, &[5, 4]); // used with transB=1
    let c = random(&mut rng, &[5]);
    let (alpha, beta) = (0.5f32, 2.0f32);
    let a2 = a.clone().into_dimensionality::<ndarray::Ix2>().unwrap();
    let b2 = b.clone().into_dimensionality::<ndarray::Ix2>().unwrap();
    let c1 = c.clone().into_dimensionality::<ndarray::Ix1>().unwrap();
    let want = (a2.dot(&b2.t()) * alpha + &(&c1 * beta)).into_dyn();

    let gemm_model =
        |a_input: &str, trans_a: i64, c_tensor: TensorProto, a_dims: &[Option<i64>]| {
            model(
                13,
                vec![node(
                    "gemm",
                    "Gemm",
                    &[a_input, "B", "C"],
                    &["y"],
                    vec![
                        attr_f("alpha", alpha),
                        attr_f("beta", beta),
                        attr_i("transA", trans_a),
                        attr_i("transB", 1),
                    ],
                )],
                vec![array_tensor("B", &b), c_tensor],
                vec![value(a_input, a_dims)],
                vec![out("y", 2)],
            )
        };

    // transB, alpha, beta and a [N] bias fold into a Dense.
    let g = parse_model_with(
        &gemm_model("a", 0, array_tensor("C", &c), &[None, Some(4)]),
        &ImportOptions { batch: 3 },
    )
    .unwrap();
    assert_close(&run1(&g, &[("a", a.clone())]), &want, 1e-5);
    let opt = optimize_and_compare(&g, 1);
    assert_eq!(opt.op_names(), vec!["Dense"]);
    assert_close(&run1(&opt, &[("a", a.clone())]), &want, 1e-5);

    // A [1, N] bias folds too; a per-row [M, N] bias keeps the Gemm.
    let c_row = c.to_shape(IxDyn(&[1, 5])).unwrap().to_owned();
    let g = parse_model_with(
        &gemm_model("a", 0, array_tensor("C", &c_row), &[None, Some(4)]),
        &ImportOptions { batch: 3 },
    )
    .unwrap();
    assert_eq!(optimize_and_compare(&g, 2).op_names(), vec!["Dense"]);
    let c_full = random(&mut rng, &[3, 5]);
    let g = parse_model_with(
        &gemm_model("a", 0, array_tensor("C", &c_full), &[None, Some(4)]),
        &ImportOptions { batch: 3 },
    )
    .unwrap();
    assert_eq!(optimize_and_compare(&g, 3).op_names(), vec!["Gemm"]);

    // transA: the interpreter computes it; the Dense reads an explicit Transpose of A.
    let at = a.t().to_owned();
    let g = parse_model(&gemm_model(
        "at",
        1,
        array_tensor("C", &c),
        &[Some(4), Some(3)],
    ))
    .unwrap();
    assert_close(&run1(&g, &[("at", at.clone())]), &want, 1e-5);
    let opt = optimize_and_compare(&g, 4);
    assert_eq!(opt.op_names(), vec!["Transpose", "Dense"]);
    assert_close(&run1(&opt, &[("at", at)]), &want, 1e-5);

    // Inner dims that do not match are a shape error naming the node.
    let bad = model(
        13,
        vec![node("gemm", "Gemm", &["a", "B"], &["y"], vec![])],
        vec![array_tensor("B", &b)],
        vec![value("a", &[None, Some(4)])],
        vec![out("y", 2)],
    );
    let err = parse_model(&bad).unwrap_err();
    assert!(matches!(err, CompileError::Shape { .. }), "{err}");
    assert!(err.to_string().contains("'gemm'"), "{err}");
}

// ---------------------------------------------------------------------------------------------
// Passes on a graph with every fusible pattern.

#[test]
fn passes_preserve_semantics() {
    let mut rng = StdRng::seed_from_u64(99);
    let w1 = random(&mut rng, &[8, 6]);
    let b1 = random(&mut rng, &[1, 6]);
    let w2 = random(&mut rng, &[4, 6]);
    let b2 = random(&mut rng, &[4]);
    let w3 = random(&mut rng, &[4, 3]);
    let b3 = random(&mut rng, &[3]);
    let nodes = vec![
        node("id", "Identity", &["x"], &["x_id"], vec![]),
        node("mm1", "MatMul", &["x_id", "w1"], &["h1"], vec![]),
        node("add1", "Add", &["b1", "h1"], &["h1b"], vec![]),
        node("drop", "Dropout", &["h1b"], &["h1d", "mask"], vec![]),
        node("relu", "Relu", &["h1d"], &["a1"], vec![]),
        node(
            "flat",
            "Flatten",
            &["a1"],
            &["a1f"],
            vec![attr_i("axis", 1)],
        ),
        node(
            "fc2",
            "Gemm",
            &["a1f", "w2", "b2"],
            &["h2"],
            vec![
                attr_i("transB", 1),
                attr_f("alpha", 1.5),
                attr_f("beta", 0.5),
            ],
        ),
        node("clip", "Clip", &["h2", "lo", "hi"], &["a2"], vec![]),
        // h3 has two readers: its Relu must not be fused.
        node("mm3", "MatMul", &["a2", "w3"], &["h3"], vec![]),
        node("sub3", "Sub", &["h3", "b3"], &["h3b"], vec![]),
        node("relu3", "Relu", &["h3b"], &["a3"], vec![]),
        node("mix", "Mul", &["a3", "h3b"], &["m"], vec![]),
        node("sm", "Softmax", &["m"], &["probs"], vec![]),
        node("unused", "Relu", &["h1b"], &["dead"], vec![]),
        node("out_id", "Identity", &["probs"], &["y"], vec![]),
    ];
    let inits = vec![
        array_tensor("w1", &w1),
        array_tensor("b1", &b1),
        array_tensor("w2", &w2),
        array_tensor("b2", &b2),
        array_tensor("w3", &w3),
        array_tensor("b3", &b3),
        tensor_f32("lo", &[], &[-0.5]),
        tensor_f32("hi", &[], &[1.0]),
    ];
    let bytes = model(
        13,
        nodes,
        inits,
        vec![value("x", &[None, Some(8)])],
        vec![out("y", 2)],
    );
    let g = parse_model_with(&bytes, &ImportOptions { batch: 5 }).unwrap();
    assert_eq!(g.nodes.len(), 15);
    let opt = optimize_and_compare(&g, 42);
    assert_eq!(
        opt.op_names(),
        vec!["Dense", "Dense", "Dense", "Relu", "Mul", "Softmax"],
        "{}",
        opt.summary()
    );
    let acts: Vec<Activation> = opt
        .nodes
        .iter()
        .filter_map(|n| match &n.op {
            Op::Dense {
                activation, bias, ..
            } => {
                assert!(bias.is_some(), "{}", n.name);
                Some(*activation)
            }
            _ => None,
        })
        .collect();
    assert_eq!(
        acts,
        vec![
            Activation::Relu,
            Activation::Clip {
                min: -0.5,
                max: 1.0
            },
            Activation::None
        ]
    );
    assert_eq!(opt.outputs[0].name, "y");
    assert!(opt.constants.is_empty());
    assert_eq!(passes::eliminate_dead_code(&mut opt.clone()), 0);
}

#[test]
fn identity_between_input_and_output_is_kept() {
    let bytes = model(
        13,
        vec![node("id", "Identity", &["x"], &["y"], vec![])],
        vec![],
        vec![value("x", &[None, Some(3)])],
        vec![out("y", 2)],
    );
    let g = parse_model(&bytes).unwrap();
    let opt = optimize_and_compare(&g, 0);
    assert_eq!(opt.op_names(), vec!["Identity"]);
}

#[test]
fn flatten_on_graph_input_stays() {
    let w = ArrayD::from_elem(IxDyn(&[12, 2]), 0.1f32);
    let bytes = model(
        13,
        vec![
            node("flat", "Flatten", &["x"], &["f"], vec![]),
            node("fc", "Gemm", &["f", "w"], &["y"], vec![]),
        ],
        vec![array_tensor("w", &w)],
        vec![value("x", &[None, Some(3), Some(4)])],
        vec![out("y", 2)],
    );
    let g = parse_model(&bytes).unwrap();
    let opt = optimize_and_compare(&g, 0);
    assert_eq!(opt.op_names(), vec!["Flatten", "Dense"]);
}

// ---------------------------------------------------------------------------------------------
// Errors.

#[test]
fn unsupported_operator_names_node_and_op() {
    let bytes = model(
        13,
        vec![node("lstm_1", "LSTM", &["x"], &["y"], vec![])],
        vec![],
        vec![value("x", &[None, Some(3)])],
        vec![out("y", 2)],
    );
    let err = parse_model(&bytes).unwrap_err();
    assert!(matches!(err, CompileError::UnsupportedOp { .. }));
    assert_eq!(
        err.to_string(),
        "unsupported operator 'LSTM' at node 'lstm_1'"
    );
}

#[test]
fn truncated_or_garbage_files_are_errors() {
    let bytes = std::fs::read(fixture("mlp.onnx")).unwrap();
    for len in (0..bytes.len()).step_by(97).chain([bytes.len() - 1]) {
        assert!(
            parse_model(&bytes[..len]).is_err(),
            "prefix of {len} bytes accepted"
        );
    }
    let mut rng = StdRng::seed_from_u64(1);
    for _ in 0..200 {
        let n = rng.gen_range(0..512);
        let garbage: Vec<u8> = (0..n).map(|_| rng.gen()).collect();
        let _ = parse_model(&garbage); // must not panic
    }
    // Flipped bytes inside a valid model: errors or a valid graph, never a panic.
    for i in (0..bytes.len()).step_by(13) {
        let mut b = bytes.clone();
        b[i] ^= 0x5a;
        if let Ok(g) = parse_model(&b) {
            g.validate().unwrap();
        }
    }
    let err = load_model("/nonexistent/model.onnx").unwrap_err();
    assert!(matches!(err, CompileError::Io { .. }), "{err}");
    assert!(matches!(
        parse_model(b"\xff\xff\xff"),
        Err(CompileError::Decode(_))
    ));
}

#[test]
fn model_level_errors() {
    let relu = || vec![node("r", "Relu", &["x"], &["y"], vec![])];
    let x = || vec![value("x", &[None, Some(3)])];
    let y = || vec![out("y", 2)];

    let err = parse_model(&model(6, relu(), vec![], x(), y())).unwrap_err();
    assert!(
        matches!(err, CompileError::UnsupportedOpset { version: 6, .. }),
        "{err}"
    );
    let err = parse_model(&model(22, relu(), vec![], x(), y())).unwrap_err();
    assert!(err.to_string().contains("opset 22"), "{err}");

    // Only the leading dim may be symbolic.
    let err = parse_model(&model(
        13,
        relu(),
        vec![],
        vec![value("x", &[None, None])],
        y(),
    ))
    .unwrap_err();
    assert!(err.to_string().contains("only the leading"), "{err}");

    // A missing input is an error naming the node.
    let nodes = vec![node("mm", "MatMul", &["x", "w_missing"], &["y"], vec![])];
    let err = parse_model(&model(13, nodes, vec![], x(), y()))
        .unwrap_err()
        .to_string();
    assert!(err.contains("'mm'") && err.contains("w_missing"), "{err}");

    // An output nobody computes.
    let err = parse_model(&model(13, relu(), vec![], x(), vec![out("z", 2)])).unwrap_err();
    assert!(err.to_string().contains("'z'"), "{err}");

    // External data.
    let ext = TensorProto {
        data_location: 1,
        ..tensor_f32("w", &[3, 3], &[])
    };
    let nodes = vec![node("mm", "MatMul", &["x", "w"], &["y"], vec![])];
    let err = parse_model(&model(13, nodes, vec![ext], x(), y()))
        .unwrap_err()
        .to_string();
    assert!(err.contains("external data"), "{err}");

    // Dropout whose mask is used.
    let nodes = vec![
        node("drop", "Dropout", &["x"], &["d", "mask"], vec![]),
        node("r", "Relu", &["mask"], &["y"], vec![]),
    ];
    let err = parse_model(&model(13, nodes, vec![], x(), y()))
        .unwrap_err()
        .to_string();
    assert!(err.contains("'drop'") && err.contains("mask"), "{err}");

    // Initializers listed as graph inputs are constants.
    let w = ArrayD::from_elem(IxDyn(&[3, 2]), 1.0f32);
    let nodes = vec![node("mm", "MatMul", &["x", "w"], &["y"], vec![])];
    let mut inputs = x();
    inputs.push(value("w", &[Some(3), Some(2)]));
    let g = parse_model(&model(13, nodes, vec![array_tensor("w", &w)], inputs, y())).unwrap();
    assert_eq!(g.inputs.len(), 1);
    assert!(g.is_constant("w"));

    // Interpreter input errors.
    let g = parse_model(&model(13, relu(), vec![], x(), y())).unwrap();
    assert!(interp::run(&g, &HashMap::new()).is_err());
    let wrong = HashMap::from([("x".to_string(), ArrayD::zeros(IxDyn(&[1, 4])))]);
    assert!(interp::run(&g, &wrong).is_err());
}
