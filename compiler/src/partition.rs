//! Partitioning a graph into NPU and CPU stages, and lowering the NPU stages to a program.
//!
//! Walking the optimised graph in topological order, every node goes to the NPU when the NPU can
//! run it and to the CPU otherwise; consecutive nodes on the same side form a *stage*. An NPU
//! stage's inputs are quantized by the host into DRAM, its layers run as one slice of the
//! program, and its outputs are dequantized for the stages after it; a CPU stage runs on the
//! host with the fp32 interpreter ([`crate::cpu`]). So a model runs end to end whatever mix of
//! operators it has, and `sinter compile` can say exactly which MACs run where.

use std::collections::{BTreeMap, HashMap, HashSet};

use sinter_isa::bundle::{
    Bundle, IoSpec, IoTensor, LayerInfo, Manifest, MemoryMap, Stage, TensorSig,
};
use sinter_isa::timing::{estimate, TimingParams};
use sinter_isa::{Instruction, INSN_BYTES};

use crate::backend::dense::{self, DenseLayer, Pipeline};
use crate::backend::memory::{align_up, ActTensor, Arena, WeightsImage, REGION_ALIGN};
use crate::backend::sync::ProgramBuilder;
use crate::compile::CompileOptions;
use crate::cpu::CpuProgram;
use crate::error::{CompileError, Result};
use crate::ir::{Activation, Graph, Node, Op};
use crate::quant::{quantize_dense, Calibration};

/// Which side runs a node.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Side {
    Npu,
    Cpu,
}

struct StagePlan<'g> {
    side: Side,
    nodes: Vec<&'g Node>,
}

fn is_reshape(op: &Op) -> bool {
    matches!(
        op,
        Op::Flatten { .. } | Op::Reshape { .. } | Op::Identity | Op::Dropout
    )
}

/// MACs of a node (for the NPU/CPU split in reports).
pub fn node_macs(graph: &Graph, node: &Node) -> u64 {
    let out_elems = |g: &Graph| {
        node.outputs
            .first()
            .and_then(|o| g.shape_of(o))
            .map(|s| s.iter().product::<usize>() as u64)
            .unwrap_or(0)
    };
    match &node.op {
        Op::Dense { weight, .. } => out_elems(graph) * weight.dim().0 as u64,
        Op::Conv2d { weight, .. } => {
            let (_, ci, kh, kw) = weight.dim();
            out_elems(graph) * (ci * kh * kw) as u64
        }
        Op::Gemm { .. } | Op::MatMul => {
            let k = node
                .inputs
                .first()
                .and_then(|i| graph.shape_of(i))
                .and_then(|s| s.last().copied())
                .unwrap_or(0);
            out_elems(graph) * k as u64
        }
        _ => 0,
    }
}

/// Partitions, quantizes and lowers an optimised graph into a bundle.
pub fn lower(graph: &Graph, calib: &Calibration, opts: &CompileOptions) -> Result<Bundle> {
    let cfg = &opts.hw;
    let shape = |name: &str| -> Result<Vec<usize>> {
        graph
            .shape_of(name)
            .map(|s| s.to_vec())
            .ok_or_else(|| CompileError::InvalidModel(format!("tensor '{name}' has no shape")))
    };

    // 1. Assign sides and cut stages. A reshape that keeps the shape of a tensor the current
    //    NPU stage produced is a rename on the NPU (`alias`); every other reshape is CPU work.
    let mut alias: HashMap<String, String> = HashMap::new();
    let mut stages: Vec<StagePlan> = Vec::new();
    let mut produced_here: HashSet<String> = HashSet::new();
    for node in &graph.nodes {
        let input = node.inputs.first();
        let out = node.outputs.first();
        let side = match &node.op {
            Op::Dense { .. } => Side::Npu,
            op if is_reshape(op) => {
                let npu_stage = stages.last().is_some_and(|s| s.side == Side::Npu);
                match (input, out) {
                    (Some(i), Some(o))
                        if npu_stage && produced_here.contains(i) && shape(i)? == shape(o)? =>
                    {
                        let base = alias.get(i).cloned().unwrap_or_else(|| i.clone());
                        alias.insert(o.clone(), base);
                        Side::Npu
                    }
                    _ => Side::Cpu,
                }
            }
            _ => Side::Cpu,
        };
        if stages.last().map(|s| s.side) != Some(side) {
            stages.push(StagePlan {
                side,
                nodes: Vec::new(),
            });
            produced_here.clear();
        }
        stages.last_mut().unwrap().nodes.push(node);
        produced_here.extend(node.outputs.iter().cloned());
    }
    if !stages.iter().any(|s| s.side == Side::Npu) {
        return Err(CompileError::Quant(
            "no operator of this model runs on the NPU".into(),
        ));
    }
    let base_of = |name: &str| -> String { alias.get(name).cloned().unwrap_or(name.to_string()) };

    // Tensors needed after each stage: read by a later stage or returned.
    let graph_outputs: HashSet<&str> = graph.outputs.iter().map(|t| t.name.as_str()).collect();
    let read_by = |from: usize| -> HashSet<&str> {
        stages[from..]
            .iter()
            .flat_map(|s| {
                s.nodes
                    .iter()
                    .flat_map(|n| n.inputs.iter().map(|i| i.as_str()))
            })
            .collect()
    };

    // 2. Quantize the NPU layers and place weights.
    let mut weights = WeightsImage::default();
    struct Placed<'g> {
        node: &'g Node,
        weights_addr: u32,
        params_addr: u32,
        zero_point: i8,
        clamp: (i8, i8),
    }
    let mut placed: HashMap<&str, Placed> = HashMap::new();
    for node in stages
        .iter()
        .filter(|s| s.side == Side::Npu)
        .flat_map(|s| s.nodes.iter())
    {
        let Op::Dense {
            weight,
            bias,
            activation,
        } = &node.op
        else {
            continue;
        };
        let in_q = calib.qparams(&base_of(&node.inputs[0]))?;
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
        placed.insert(
            node.name.as_str(),
            Placed {
                node,
                weights_addr,
                params_addr,
                zero_point: q.out_zero_point,
                clamp: (q.clamp_lo, q.clamp_hi),
            },
        );
    }

    // 3. Place every NPU tensor (stage inputs and layer outputs) in the activation arena.
    let arena_base = align_up(weights.end(), 4096);
    let mut arena = Arena::new(arena_base);
    let mut tensors: HashMap<String, ActTensor> = HashMap::new();
    for stage in stages.iter().filter(|s| s.side == Side::Npu) {
        for node in &stage.nodes {
            if !matches!(node.op, Op::Dense { .. }) {
                continue;
            }
            for name in [base_of(&node.inputs[0]), node.outputs[0].clone()] {
                if !tensors.contains_key(&name) {
                    let t = arena.alloc(cfg, &name, &shape(&name)?);
                    tensors.insert(name, t);
                }
            }
        }
    }
    let arena_bytes = arena.bytes();

    // 4. Lower: NPU stages to program slices, CPU stages to serialized programs.
    let mut program: Vec<Instruction> = Vec::new();
    let mut cpu_bytes: Vec<u8> = Vec::new();
    let mut io_stages = Vec::new();
    let mut layers = Vec::new();
    let (mut npu_macs, mut cpu_macs, mut predicted_total) = (0u64, 0u64, 0u64);
    for (si, stage) in stages.iter().enumerate() {
        let produced: HashSet<&str> = stage
            .nodes
            .iter()
            .flat_map(|n| n.outputs.iter().map(|o| o.as_str()))
            .collect();
        let mut inputs: Vec<String> = Vec::new();
        for n in &stage.nodes {
            for i in &n.inputs {
                if !produced.contains(i.as_str()) && !graph.is_constant(i) && !inputs.contains(i) {
                    inputs.push(i.clone());
                }
            }
        }
        let later = read_by(si + 1);
        let mut outputs: Vec<String> = Vec::new();
        for n in &stage.nodes {
            for o in &n.outputs {
                if (later.contains(o.as_str()) || graph_outputs.contains(o.as_str()))
                    && !outputs.contains(o)
                {
                    outputs.push(o.clone());
                }
            }
        }
        let name = format!("stage{si}");
        match stage.side {
            Side::Cpu => {
                cpu_macs += stage.nodes.iter().map(|n| node_macs(graph, n)).sum::<u64>();
                let constants: BTreeMap<String, _> = stage
                    .nodes
                    .iter()
                    .flat_map(|n| n.inputs.iter())
                    .filter_map(|i| graph.constant(i).map(|c| (i.clone(), c.clone())))
                    .collect();
                let bytes = CpuProgram {
                    nodes: stage.nodes.iter().map(|n| (*n).clone()).collect(),
                    constants,
                }
                .encode();
                io_stages.push(Stage::Cpu {
                    name,
                    inputs,
                    outputs,
                    offset: cpu_bytes.len() as u64,
                    len: bytes.len() as u64,
                });
                cpu_bytes.extend_from_slice(&bytes);
            }
            Side::Npu => {
                let start = program.len();
                let mut b = ProgramBuilder::new();
                let mut pipe = Pipeline::default();
                let mut ranges = Vec::new();
                for node in &stage.nodes {
                    let Some(p) = placed.get(node.name.as_str()) else {
                        continue; // a rename
                    };
                    let first = b.len();
                    dense::emit(
                        &mut b,
                        cfg,
                        &mut pipe,
                        &DenseLayer {
                            name: &node.name,
                            input: &tensors[&base_of(&node.inputs[0])],
                            output: &tensors[&node.outputs[0]],
                            weights_addr: p.weights_addr,
                            params_addr: p.params_addr,
                            zero_point: p.zero_point,
                            clamp_lo: p.clamp.0,
                            clamp_hi: p.clamp.1,
                        },
                    )?;
                    ranges.push((p.node, first..b.len()));
                }
                let slice = b.finish();
                let sched = estimate(cfg, &TimingParams::default(), &slice);
                predicted_total += sched.total_cycles;
                for (node, r) in ranges {
                    let macs = node_macs(graph, node);
                    npu_macs += macs;
                    let t0 = sched.start[r.clone()].iter().min().copied().unwrap_or(0);
                    let t1 = sched.end[r.clone()].iter().max().copied().unwrap_or(0);
                    layers.push(LayerInfo {
                        name: node.name.clone(),
                        op: layer_op_name(&node.op),
                        input_shape: shape(&node.inputs[0])?,
                        output_shape: shape(&node.outputs[0])?,
                        macs,
                        insn_start: (start + r.start) as u32,
                        insn_end: (start + r.end) as u32,
                        predicted_cycles: t1.saturating_sub(t0),
                    });
                }
                program.extend(slice);
                let io = |n: &String| -> Result<IoTensor> {
                    let base = base_of(n);
                    let t = &tensors[&base];
                    Ok(IoTensor {
                        name: n.clone(),
                        shape: t.shape.clone(),
                        strides: t.strides(),
                        dram_base: t.addr,
                        bytes: t.bytes(),
                        quant: calib.qparams(&base)?,
                    })
                };
                io_stages.push(Stage::Npu {
                    name,
                    insn_start: start as u32,
                    insn_end: program.len() as u32,
                    inputs: inputs.iter().map(io).collect::<Result<_>>()?,
                    outputs: outputs.iter().map(io).collect::<Result<_>>()?,
                });
            }
        }
    }

    let program_base = align_up(arena_base + arena_bytes, REGION_ALIGN);
    let dram_bytes = align_up(program_base + (program.len() * INSN_BYTES) as u32, 4096);
    let sigs = |ts: &[crate::ir::TensorInfo]| -> Vec<TensorSig> {
        ts.iter()
            .map(|t| TensorSig {
                name: t.name.clone(),
                shape: t.shape.clone(),
            })
            .collect()
    };
    let io = IoSpec {
        model_inputs: sigs(&graph.inputs),
        model_outputs: sigs(&graph.outputs),
        stages: io_stages,
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
        predicted_cycles: predicted_total,
        npu_macs,
        cpu_macs,
    };
    Ok(Bundle::new(
        *cfg,
        manifest,
        io,
        program,
        weights.bytes,
        cpu_bytes,
    ))
}

fn layer_op_name(op: &Op) -> String {
    let act = |a: &Activation| match a {
        Activation::None => "",
        Activation::Relu => "+Relu",
        Activation::Clip { .. } => "+Clip",
    };
    match op {
        Op::Dense { activation, .. } => format!("Dense{}", act(activation)),
        other => other.name().to_string(),
    }
}

fn node_err(node: &Node, message: impl Into<String>) -> CompileError {
    CompileError::Partition {
        node: node.name.clone(),
        op_type: node.op.name().to_string(),
        message: message.into(),
    }
}
