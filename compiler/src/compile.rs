//! The whole compiler: ONNX bytes and calibration samples in, a bundle out.
//!
//! import → optimise → calibrate → partition (CPU head / NPU / CPU tail) → quantize → place in
//! DRAM → lower to instructions → predict cycles → bundle.

use std::collections::HashMap;

use ndarray::ArrayD;
use sinter_isa::bundle::{
    Bundle, CpuSection, IoSpec, IoTensor, LayerInfo, Manifest, MemoryMap, TensorSig,
};
use sinter_isa::tail::{CpuNode, CpuOp, CpuProgram};
use sinter_isa::timing::{estimate, TimingParams};
use sinter_isa::{HwConfig, INSN_BYTES};

use crate::backend::dense::{self, DenseLayer, Pipeline};
use crate::backend::memory::{align_up, ActTensor, Arena, WeightsImage, REGION_ALIGN};
use crate::backend::sync::ProgramBuilder;
use crate::error::{CompileError, Result};
use crate::ir::{Activation, Graph, Node, Op};
use crate::onnx::import::{parse_model_with, ImportOptions};
use crate::passes;
use crate::quant::{quantize_dense, Calibration};

/// What to compile for.
#[derive(Clone, Debug)]
pub struct CompileOptions {
    pub hw: HwConfig,
    /// Rows (samples) the NPU program processes per run.
    pub batch: usize,
    /// Model name recorded in the bundle.
    pub name: String,
}

impl Default for CompileOptions {
    fn default() -> Self {
        CompileOptions {
            hw: HwConfig::DEFAULT,
            batch: 1,
            name: "model".into(),
        }
    }
}

/// Where a tensor is computed.
#[derive(Clone, Debug, PartialEq)]
enum Place {
    /// On the host before the NPU (graph inputs and the CPU head).
    Head,
    /// On the NPU; the name of the DRAM tensor that holds it (reshapes alias their input).
    Npu(String),
    /// On the host after the NPU.
    Tail,
}

/// Compiles an ONNX model.
pub fn compile(onnx: &[u8], calibration: &ArrayD<f32>, opts: &CompileOptions) -> Result<Bundle> {
    opts.hw
        .validate()
        .map_err(|e| CompileError::Quant(format!("hardware config: {e}")))?;
    if opts.batch == 0 {
        return Err(CompileError::Quant("batch must be at least 1".into()));
    }
    let samples = calibration.shape().first().copied().unwrap_or(0);
    let mut calib_graph = parse_model_with(
        onnx,
        &ImportOptions {
            batch: samples.max(1),
        },
    )?;
    passes::optimize(&mut calib_graph)?;
    let calib = Calibration::collect(&calib_graph, calibration)?;

    let mut graph = parse_model_with(onnx, &ImportOptions { batch: opts.batch })?;
    passes::optimize(&mut graph)?;
    lower(&graph, &calib, opts)
}

fn node_err(node: &Node, message: impl Into<String>) -> CompileError {
    CompileError::Partition {
        node: node.name.clone(),
        op_type: node.op.name().to_string(),
        message: message.into(),
    }
}

fn is_reshape(op: &Op) -> bool {
    matches!(
        op,
        Op::Flatten { .. } | Op::Reshape { .. } | Op::Identity | Op::Dropout
    )
}

/// Partitions, quantizes and lowers an optimised graph.
pub fn lower(graph: &Graph, calib: &Calibration, opts: &CompileOptions) -> Result<Bundle> {
    let cfg = &opts.hw;
    let shape = |name: &str| -> Result<Vec<usize>> {
        graph
            .shape_of(name)
            .map(|s| s.to_vec())
            .ok_or_else(|| CompileError::InvalidModel(format!("tensor '{name}' has no shape")))
    };

    // Partition.
    let mut place: HashMap<String, Place> = graph
        .inputs
        .iter()
        .map(|t| (t.name.clone(), Place::Head))
        .collect();
    let mut head = CpuProgram::default();
    let mut tail = CpuProgram::default();
    let mut dense_nodes: Vec<&Node> = Vec::new();
    // NPU tensors in order of creation: (name, tensor whose quantization parameters it has).
    let mut npu_inputs: Vec<String> = Vec::new();
    for node in &graph.nodes {
        let input = node
            .inputs
            .first()
            .ok_or_else(|| node_err(node, "node has no input"))?;
        let in_place = place
            .get(input)
            .cloned()
            .ok_or_else(|| node_err(node, format!("input '{input}' is not computed before")))?;
        let out = node
            .outputs
            .first()
            .ok_or_else(|| node_err(node, "node has no output"))?;
        let out_shape = shape(out)?;
        let new_place = match (&node.op, &in_place) {
            (Op::Dense { .. }, Place::Head) | (Op::Dense { .. }, Place::Npu(_)) => {
                if in_place == Place::Head && !npu_inputs.contains(input) {
                    npu_inputs.push(input.clone());
                }
                dense_nodes.push(node);
                Place::Npu(out.clone())
            }
            (Op::Dense { .. }, Place::Tail) => {
                return Err(node_err(
                    node,
                    "an NPU layer after CPU operators is not supported yet",
                ))
            }
            (op, Place::Head) if is_reshape(op) => {
                head.nodes
                    .push(cpu_node(node, CpuOp::Reshape { shape: out_shape }));
                Place::Head
            }
            (op, Place::Npu(base)) if is_reshape(op) && shape(input)? == out_shape => {
                Place::Npu(base.clone())
            }
            (op, _) if is_reshape(op) => {
                tail.nodes
                    .push(cpu_node(node, CpuOp::Reshape { shape: out_shape }));
                Place::Tail
            }
            (Op::Softmax { axis, coerce_2d }, Place::Npu(_) | Place::Tail) => {
                push_softmax(&mut tail, node, &shape(input)?, *axis, *coerce_2d);
                Place::Tail
            }
            (op, _) => {
                return Err(node_err(
                    node,
                    format!(
                        "operator {} cannot run on the NPU or the CPU tail yet",
                        op.name()
                    ),
                ))
            }
        };
        place.insert(out.clone(), new_place);
    }
    if dense_nodes.is_empty() {
        return Err(CompileError::Quant(
            "no operator of this model runs on the NPU".into(),
        ));
    }

    // NPU outputs: NPU tensors read by the tail or returned as graph outputs.
    let mut npu_outputs: Vec<(String, String)> = Vec::new(); // (visible name, DRAM tensor)
    let mut want_output = |name: &str| {
        if let Some(Place::Npu(base)) = place.get(name) {
            if !npu_outputs.iter().any(|(n, _)| n == name) {
                npu_outputs.push((name.to_string(), base.clone()));
            }
        }
    };
    for node in &tail.nodes {
        for i in &node.inputs {
            want_output(i);
        }
    }
    for o in &graph.outputs {
        want_output(&o.name);
        if matches!(place.get(&o.name), Some(Place::Head)) {
            return Err(CompileError::Quant(format!(
                "graph output '{}' does not pass through the NPU",
                o.name
            )));
        }
    }

    // Quantize and place weights.
    let mut weights = WeightsImage::default();
    let mut arena_tensors: HashMap<String, ActTensor> = HashMap::new();
    struct Placed {
        node_idx: usize,
        weights_addr: u32,
        params_addr: u32,
        zero_point: i8,
        clamp: (i8, i8),
        k: usize,
        n: usize,
    }
    let mut placed = Vec::new();
    for (i, node) in dense_nodes.iter().enumerate() {
        let Op::Dense {
            weight,
            bias,
            activation,
        } = &node.op
        else {
            unreachable!("only dense nodes are collected")
        };
        let input = &node.inputs[0];
        let in_q = calib.qparams(dram_name(&place, input))?;
        let out_q = calib.qparams(&node.outputs[0])?;
        let q = quantize_dense(weight, bias.as_ref(), *activation, in_q, out_q)
            .map_err(|e| node_err(node, e.to_string()))?;
        let weights_addr = weights.append(&dense::pack_weights(cfg, &q.weight));
        let params_addr = weights.append(&dense::pack_params(
            cfg,
            q.bias.as_slice().unwrap_or(&[]),
            q.mult.as_slice().unwrap_or(&[]),
            q.shift.as_slice().unwrap_or(&[]),
        ));
        placed.push(Placed {
            node_idx: i,
            weights_addr,
            params_addr,
            zero_point: q.out_zero_point,
            clamp: (q.clamp_lo, q.clamp_hi),
            k: weight.dim().0,
            n: weight.dim().1,
        });
    }

    // Place activations.
    let arena_base = align_up(weights.end(), 4096);
    let mut arena = Arena::new(arena_base);
    let mut alloc = |name: &str| -> Result<()> {
        if !arena_tensors.contains_key(name) {
            let t = arena.alloc(cfg, name, &shape(name)?);
            arena_tensors.insert(name.to_string(), t);
        }
        Ok(())
    };
    for name in &npu_inputs {
        alloc(name)?;
    }
    for node in &dense_nodes {
        alloc(&node.outputs[0])?;
    }
    let arena_bytes = arena.bytes();

    // Emit the program.
    let mut b = ProgramBuilder::new();
    let mut pipe = Pipeline::default();
    let mut layer_ranges = Vec::new();
    for p in &placed {
        let node = dense_nodes[p.node_idx];
        let input = &arena_tensors[dram_name(&place, &node.inputs[0])];
        let output = &arena_tensors[&node.outputs[0]];
        let start = b.len();
        dense::emit(
            &mut b,
            cfg,
            &mut pipe,
            &DenseLayer {
                name: &node.name,
                input,
                output,
                weights_addr: p.weights_addr,
                params_addr: p.params_addr,
                zero_point: p.zero_point,
                clamp_lo: p.clamp.0,
                clamp_hi: p.clamp.1,
            },
        )?;
        layer_ranges.push(start..b.len());
    }
    let program = b.finish();

    // Predict cycles.
    let sched = estimate(cfg, &TimingParams::default(), &program);
    let mut layers = Vec::new();
    let mut npu_macs = 0u64;
    for (p, range) in placed.iter().zip(&layer_ranges) {
        let node = dense_nodes[p.node_idx];
        let in_shape = shape(&node.inputs[0])?;
        let out_shape = shape(&node.outputs[0])?;
        let rows: usize = in_shape[..in_shape.len() - 1].iter().product();
        let macs = (rows * p.k * p.n) as u64;
        npu_macs += macs;
        let start = sched.start[range.clone()]
            .iter()
            .min()
            .copied()
            .unwrap_or(0);
        let end = sched.end[range.clone()].iter().max().copied().unwrap_or(0);
        let Op::Dense { activation, .. } = &node.op else {
            unreachable!()
        };
        layers.push(LayerInfo {
            name: node.name.clone(),
            op: match activation {
                Activation::None => "Dense".into(),
                Activation::Relu => "Dense+Relu".into(),
                Activation::Clip { .. } => "Dense+Clip".into(),
            },
            input_shape: in_shape,
            output_shape: out_shape,
            macs,
            insn_start: range.start as u32,
            insn_end: range.end as u32,
            predicted_cycles: end.saturating_sub(start),
        });
    }

    let program_base = align_up(arena_base + arena_bytes, REGION_ALIGN);
    let dram_bytes = align_up(program_base + (program.len() * INSN_BYTES) as u32, 4096);
    let io_tensor = |name: &str, base: &str| -> Result<IoTensor> {
        let t = &arena_tensors[base];
        Ok(IoTensor {
            name: name.to_string(),
            shape: t.shape.clone(),
            strides: t.strides(),
            dram_base: t.addr,
            bytes: t.bytes(),
            quant: calib.qparams(base)?,
        })
    };
    let io = IoSpec {
        model_inputs: graph
            .inputs
            .iter()
            .map(|t| TensorSig {
                name: t.name.clone(),
                shape: t.shape.clone(),
            })
            .collect(),
        model_outputs: graph
            .outputs
            .iter()
            .map(|t| TensorSig {
                name: t.name.clone(),
                shape: t.shape.clone(),
            })
            .collect(),
        npu_inputs: npu_inputs
            .iter()
            .map(|n| io_tensor(n, n))
            .collect::<Result<_>>()?,
        npu_outputs: npu_outputs
            .iter()
            .map(|(n, base)| io_tensor(n, base))
            .collect::<Result<_>>()?,
    };
    let manifest = Manifest {
        model_name: opts.name.clone(),
        compiler_version: env!("CARGO_PKG_VERSION").to_string(),
        batch: opts.batch as u32,
        memory: MemoryMap {
            program_base,
            weights_base: weights.base,
            arena_base,
            arena_bytes,
            dram_bytes,
        },
        layers,
        predicted_cycles: sched.total_cycles,
        npu_macs,
        cpu_macs: 0,
    };
    Ok(Bundle::new(
        *cfg,
        manifest,
        io,
        program,
        weights.bytes,
        CpuSection { head, tail },
    ))
}

/// The DRAM tensor holding `name` (reshapes on the NPU alias their input).
fn dram_name<'a>(place: &'a HashMap<String, Place>, name: &'a str) -> &'a str {
    match place.get(name) {
        Some(Place::Npu(base)) => base,
        _ => name,
    }
}

fn cpu_node(node: &Node, op: CpuOp) -> CpuNode {
    CpuNode {
        name: node.name.clone(),
        op,
        inputs: vec![node.inputs[0].clone()],
        outputs: vec![node.outputs[0].clone()],
    }
}

/// Softmax, with the opset < 13 semantics (normalise over all dims from `axis` on) expressed
/// as reshape → softmax over the last axis → reshape.
fn push_softmax(tail: &mut CpuProgram, node: &Node, shape: &[usize], axis: usize, coerce_2d: bool) {
    let single_axis = !coerce_2d || axis + 1 >= shape.len();
    if single_axis {
        tail.nodes
            .push(cpu_node(node, CpuOp::Softmax { axis: axis as i64 }));
        return;
    }
    let outer: usize = shape[..axis].iter().product();
    let inner: usize = shape[axis..].iter().product();
    let flat = format!("{}::flat", node.outputs[0]);
    let soft = format!("{}::softmax", node.outputs[0]);
    tail.nodes.push(CpuNode {
        name: format!("{}::to2d", node.name),
        op: CpuOp::Reshape {
            shape: vec![outer, inner],
        },
        inputs: vec![node.inputs[0].clone()],
        outputs: vec![flat.clone()],
    });
    tail.nodes.push(CpuNode {
        name: node.name.clone(),
        op: CpuOp::Softmax { axis: 1 },
        inputs: vec![flat],
        outputs: vec![soft.clone()],
    });
    tail.nodes.push(CpuNode {
        name: format!("{}::back", node.name),
        op: CpuOp::Reshape {
            shape: shape.to_vec(),
        },
        inputs: vec![soft],
        outputs: vec![node.outputs[0].clone()],
    });
}
