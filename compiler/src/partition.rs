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

use crate::backend::conv::{self, Pipeline, WindowInput, WindowLayer};
use crate::backend::layers;
use crate::backend::memory::{
    align_up, channels_of, ActTensor, Arena, Layout, WeightsImage, REGION_ALIGN,
};
use crate::backend::sync::ProgramBuilder;
use crate::compile::CompileOptions;
use crate::cpu::CpuProgram;
use crate::error::{CompileError, Result};
use crate::ir::{Activation, Graph, Node, Op};
use crate::quant::Calibration;
use sinter_isa::numeric::QParams;

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
    // Flattens of an image tensor read only by dense layers: the dense layer reads the image
    // bytes directly, with its weights permuted to the NHWC order.
    let mut flat: HashSet<String> = HashSet::new();
    // Activations folded into the clamp of an NPU layer: producer node → (activation, tensor
    // the activation outputs).
    let mut fused: HashMap<String, (Activation, String)> = HashMap::new();
    let base_of_now = |alias: &HashMap<String, String>, i: &String| -> String {
        alias.get(i).cloned().unwrap_or_else(|| i.clone())
    };
    let shuffles = channel_shuffles(graph);
    // The Reshape and Transpose inside a shuffle the NPU does by relabelling lanes.
    let mut shuffle_inner: HashSet<String> = HashSet::new();
    let mut stages: Vec<StagePlan> = Vec::new();
    let mut produced_here: HashSet<String> = HashSet::new();
    let runtime_inputs = |node: &Node| -> Vec<String> {
        node.inputs
            .iter()
            .filter(|i| !graph.is_constant(i))
            .cloned()
            .collect()
    };
    for node in &graph.nodes {
        let input = node.inputs.first();
        let out = node.outputs.first();
        let npu_stage = stages.last().is_some_and(|s| s.side == Side::Npu);
        let side = match &node.op {
            // A channel shuffle of a tensor this NPU stage made: its lanes are relabelled, no
            // byte moves.
            _ if npu_stage
                && out.is_some_and(|o| {
                    shuffles
                        .get(o.as_str())
                        .is_some_and(|s| produced_here.contains(&s.input))
                }) =>
            {
                let s = &shuffles[out.unwrap().as_str()];
                shuffle_inner.extend(s.inner.iter().cloned());
                Side::Npu
            }
            _ if npu_stage
                && out.is_some_and(|o| {
                    shuffles
                        .values()
                        .any(|s| s.inner.contains(o) && produced_here.contains(&s.input))
                }) =>
            {
                Side::Npu
            }
            op if is_reshape(op) => match (input, out) {
                (Some(i), Some(o)) if npu_stage && produced_here.contains(i) => {
                    let (si, so) = (shape(i)?, shape(o)?);
                    let base = alias.get(i).cloned().unwrap_or_else(|| i.clone());
                    let dense_readers = graph.consumers(o).iter().all(|&c| {
                        matches!(graph.nodes[c].op, Op::Dense { .. })
                            && layers::npu_supports(cfg, &graph.nodes[c], &[&so])
                    }) && !graph_outputs_contains(graph, o);
                    if si == so {
                        alias.insert(o.clone(), base);
                        Side::Npu
                    } else if si.len() == 4
                        && so.len() == 2
                        && so[0] == si[0]
                        && !flat.contains(i)
                        && !alias.contains_key(i)
                        && dense_readers
                    {
                        alias.insert(o.clone(), base);
                        flat.insert(o.clone());
                        Side::Npu
                    } else {
                        Side::Cpu
                    }
                }
                _ => Side::Cpu,
            },
            Op::Relu | Op::Clip { .. }
                if npu_stage
                    && input.is_some_and(|i| {
                        produced_here.contains(i)
                            && graph.use_count(i) == 1
                            && !graph_outputs_contains(graph, i)
                            && graph.producer_node(i).is_some_and(|p| {
                                matches!(
                                    graph.nodes[p].op,
                                    Op::Binary(crate::ir::BinaryOp::Add)
                                        | Op::Pool2d { .. }
                                        | Op::GlobalAvgPool
                                )
                            })
                    }) =>
            {
                // Fused into the producer's requantization clamp.
                let (i, o) = (&node.inputs[0], &node.outputs[0]);
                let producer = &graph.nodes[graph.producer_node(i).unwrap()];
                let act = match node.op {
                    Op::Clip { min, max } => Activation::Clip { min, max },
                    _ => Activation::Relu,
                };
                fused.insert(producer.name.clone(), (act, o.clone()));
                alias.insert(o.clone(), base_of_now(&alias, i));
                Side::Npu
            }
            _ => {
                let ins = runtime_inputs(node);
                let shapes: Vec<Vec<usize>> =
                    ins.iter().map(|i| shape(i)).collect::<Result<_>>()?;
                let refs: Vec<&[usize]> = shapes.iter().map(|s| s.as_slice()).collect();
                // A flattened view may only feed dense layers.
                let reads_flat = ins.iter().any(|i| flat.contains(i));
                // A Concat with a constant part would need that part in DRAM: CPU.
                let all_runtime =
                    ins.len() == node.inputs.len() || !matches!(node.op, Op::Concat { .. });
                if layers::npu_supports(cfg, node, &refs)
                    && all_runtime
                    && (!reads_flat || matches!(node.op, Op::Dense { .. }))
                {
                    Side::Npu
                } else {
                    Side::Cpu
                }
            }
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

    // 2. Layouts. Every NPU tensor gets a channel→lane layout: convolutions and dense layers
    //    write their channels in order, lane-wise operators keep their input's, and a Concat
    //    lays its inputs' lanes side by side. An input of a Concat made by a layer of the same
    //    stage becomes a view into the Concat's tensor (`placed`), so its producer writes
    //    straight into its slice; any other input is copied into its slice (`copies`).
    let planned_node = |node: &Node| {
        !is_reshape(&node.op)
            && !node
                .outputs
                .first()
                .is_some_and(|o| alias.contains_key(o) || shuffle_inner.contains(o))
    };
    // Channel shuffles on the NPU: output → (tensor shuffled, input channel of each channel).
    let mut permuted: HashMap<String, (String, Vec<usize>)> = HashMap::new();
    let mut layouts: HashMap<String, Layout> = HashMap::new();
    let mut order: Vec<String> = Vec::new();
    let mut placed: HashMap<String, (String, usize)> = HashMap::new();
    let mut copies: HashMap<&str, Vec<(usize, String)>> = HashMap::new();
    // Roots whose parameters must have zero point 0 (inputs of LeakyRelu).
    let mut symmetric: HashSet<String> = HashSet::new();
    for stage in stages.iter().filter(|s| s.side == Side::Npu) {
        let mut made: HashSet<String> = HashSet::new();
        for node in &stage.nodes {
            if let Some(sh) = node
                .outputs
                .first()
                .and_then(|o| shuffles.get(o.as_str()))
                .filter(|sh| shuffle_inner.contains(&sh.inner[0]))
            {
                let out = node.outputs[0].clone();
                let base = base_of(&sh.input);
                let from = layouts.get(&base).ok_or_else(|| {
                    node_err(node, format!("shuffled tensor '{base}' has no layout"))
                })?;
                let layout = Layout {
                    lanes: from.lanes,
                    channel_lanes: sh.source.iter().map(|&c| from.channel_lanes[c]).collect(),
                };
                // A relabelled view of the same bytes: never a Concat slice of its own.
                layouts.insert(out.clone(), layout);
                order.push(out.clone());
                permuted.insert(out, (base, sh.source.clone()));
                continue;
            }
            if !planned_node(node) {
                continue;
            }
            let ins: Vec<String> = runtime_inputs(node).iter().map(|i| base_of(i)).collect();
            for i in &ins {
                if !layouts.contains_key(i) {
                    layouts.insert(i.clone(), Layout::dense(cfg, channels_of(&shape(i)?)));
                    order.push(i.clone());
                }
            }
            let out = node.outputs[0].clone();
            let layout = match &node.op {
                // A depthwise convolution is lane-wise: it keeps its input's layout, so a
                // shuffled or concatenated input needs no routing across lane blocks.
                Op::Conv2d { weight, groups, .. }
                    if *groups > 1 && weight.dim().0 == *groups && weight.dim().1 == 1 =>
                {
                    layouts[&ins[0]].clone()
                }
                Op::Conv2d { .. } | Op::Dense { .. } => {
                    Layout::dense(cfg, channels_of(&shape(&out)?))
                }
                Op::Concat { .. } => {
                    let mut offset = 0;
                    for (k, i) in ins.iter().enumerate() {
                        let once = ins.iter().filter(|j| *j == i).count() == 1;
                        if made.contains(i) && once && !placed.contains_key(i) {
                            placed.insert(i.clone(), (out.clone(), offset));
                        } else {
                            copies.entry(&node.name).or_default().push((k, i.clone()));
                        }
                        offset += layouts[i].lanes;
                    }
                    Layout::concat(ins.iter().map(|i| &layouts[i]))
                }
                _ => layouts[&ins[0]].clone(),
            };
            if let Op::LeakyRelu { .. } = node.op {
                let x = permuted.get(&ins[0]).map_or(&ins[0], |(base, _)| base);
                symmetric.insert(x.clone());
            }
            layouts.insert(out.clone(), layout);
            order.push(out.clone());
            made.insert(out);
        }
    }
    let root_of = |name: &str| -> String {
        let mut r = name.to_string();
        while let Some((parent, _)) = placed.get(&r) {
            r = parent.clone();
        }
        r
    };
    // A symmetric view makes its whole concatenation symmetric.
    let symmetric: HashSet<String> = symmetric.iter().map(|n| root_of(n)).collect();

    // 3. Addresses: roots from the arena, views inside their parents (parents come later in
    //    `order`, so walk it backwards).
    let mut arena = Arena::new(0);
    let mut tensors: HashMap<String, ActTensor> = HashMap::new();
    for name in order.iter().rev().filter(|n| !permuted.contains_key(*n)) {
        let t = match placed.get(name) {
            Some((parent, offset)) => {
                tensors[parent].view(name, &shape(name)?, *offset, &layouts[name])
            }
            None => arena.alloc(name, &shape(name)?, &layouts[name]),
        };
        tensors.insert(name.clone(), t);
    }
    // Shuffles: the same bytes, channels relabelled.
    for name in order.iter().filter(|n| permuted.contains_key(*n)) {
        let (base, _) = &permuted[name];
        let from = &tensors[base];
        let t = ActTensor {
            name: name.clone(),
            shape: shape(name)?,
            channel_lanes: layouts[name].channel_lanes.clone(),
            ..from.clone()
        };
        tensors.insert(name.clone(), t);
    }

    // 4. Quantization parameters: a view shares its root's; max pooling keeps its input's
    //    (unless the tensor must be symmetric); a fused activation's output is what is stored.
    let producer_of: HashMap<&str, &Node> = stages
        .iter()
        .filter(|s| s.side == Side::Npu)
        .flat_map(|s| s.nodes.iter())
        .filter_map(|n| n.outputs.first().map(|o| (o.as_str(), *n)))
        .collect();
    // Parameters from the calibration range of `range_of` for tensor `name`.
    let calib_q = |name: &str, range_of: &str| -> Result<QParams> {
        if symmetric.contains(name) {
            calib.symmetric_qparams(range_of)
        } else {
            calib.qparams(range_of)
        }
    };
    let mut qp: HashMap<String, QParams> = HashMap::new();
    for name in &order {
        let root = root_of(name);
        let producer = producer_of.get(name.as_str());
        let q = if let Some((base, _)) = permuted.get(name) {
            qp[base]
        } else if root != *name {
            calib_q(&root, &root)?
        } else if let Some(p) = producer.filter(|p| {
            matches!(
                p.op,
                Op::Pool2d {
                    kind: crate::ir::PoolKind::Max,
                    ..
                }
            ) && !symmetric.contains(name)
        }) {
            qp[&base_of(&p.inputs[0])]
        } else if let Some((_, after)) = producer.and_then(|p| fused.get(&p.name)) {
            calib_q(name, after)?
        } else {
            calib_q(name, name)?
        };
        qp.insert(name.clone(), q);
    }

    // 5. Plan every NPU layer: quantize, cut weight tiles.
    let mut weights = WeightsImage::default();
    let mut planned: HashMap<&str, Vec<Part>> = HashMap::new();
    for stage in stages.iter().filter(|s| s.side == Side::Npu) {
        for node in stage.nodes.iter().filter(|n| planned_node(n)) {
            let raw = runtime_inputs(node);
            let ins: Vec<String> = raw.iter().map(|i| base_of(i)).collect();
            let views: Vec<ActTensor> = raw
                .iter()
                .zip(&ins)
                .map(|(r, i)| {
                    if flat.contains(r) {
                        tensors[i].flattened()
                    } else {
                        tensors[i].clone()
                    }
                })
                .collect();
            let out = &node.outputs[0];
            let output = &tensors[out];
            let q_in: Vec<QParams> = ins.iter().map(|i| qp[i]).collect();
            let q_out = qp[out];
            let mut parts = Vec::new();
            if let Op::Concat { .. } = node.op {
                for (k, i) in copies.get(node.name.as_str()).into_iter().flatten() {
                    let offset: usize = ins[..*k].iter().map(|j| layouts[j].lanes).sum();
                    let slot = output.view(i, &shape(i)?, offset, &layouts[i]);
                    let plan = layers::copy_plan(
                        cfg,
                        &node.name,
                        slot.lanes,
                        qp[i],
                        q_out,
                        (i8::MIN, i8::MAX),
                    )
                    .map_err(|e| node_err(node, e.to_string()))?;
                    parts.push(Part::new(&mut weights, plan, vec![views[*k].clone()], slot));
                }
            } else {
                let refs: Vec<&ActTensor> = views.iter().collect();
                let plans = layers::plans(cfg, node, &refs, &q_in, q_out, output)
                    .map_err(|e| node_err(node, e.to_string()))?;
                for mut plan in plans {
                    if let Some((act, _)) = fused.get(&node.name) {
                        let (lo, hi) = match *act {
                            Activation::Clip { min, max } => {
                                (q_out.quantize(min), q_out.quantize(max))
                            }
                            _ => (q_out.quantize(0.0), i8::MAX),
                        };
                        plan.clamp_lo = plan.clamp_lo.max(lo);
                        plan.clamp_hi = plan.clamp_hi.min(hi);
                    }
                    parts.push(Part::new(&mut weights, plan, views.clone(), output.clone()));
                }
            }
            planned.insert(node.name.as_str(), parts);
        }
    }

    // 6. The activation arena follows the weights.
    let arena_base = align_up(weights.end(), 4096);
    for t in tensors.values_mut() {
        t.addr += arena_base;
    }
    for part in planned.values_mut().flatten() {
        for t in part.inputs.iter_mut().chain([&mut part.output]) {
            t.addr += arena_base;
        }
    }
    let arena_bytes = arena.bytes();

    // 7. Lower: NPU stages to program slices, CPU stages to serialized programs.
    let mut program: Vec<Instruction> = Vec::new();
    let mut cpu_bytes: Vec<u8> = Vec::new();
    let mut io_stages = Vec::new();
    let mut layers = Vec::new();
    let mut ops = Vec::new();
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
                    // Renames and Concats written in place have no instructions.
                    let Some(parts) = planned.get(node.name.as_str()).filter(|p| !p.is_empty())
                    else {
                        continue;
                    };
                    let first = b.len();
                    for p in parts {
                        let layer = WindowLayer {
                            name: &node.name,
                            inputs: p
                                .inputs
                                .iter()
                                .zip(&p.plan.pad_values)
                                .map(|(tensor, &pad_value)| WindowInput { tensor, pad_value })
                                .collect(),
                            output: &p.output,
                            geometry: p.plan.geometry,
                            sources: p.plan.sources.clone(),
                            combine: p.plan.combine,
                            tiles_addr: p.tiles_addr,
                            params_addr: p.params_addr,
                            zero_point: p.plan.zero_point,
                            clamp_lo: p.plan.clamp_lo,
                            clamp_hi: p.plan.clamp_hi,
                            region: p.plan.region,
                        };
                        let at = b.len();
                        conv::emit(&mut b, cfg, &mut pipe, &layer)?;
                        ops.push(layer.as_op((start + at) as u32, (start + b.len()) as u32));
                    }
                    ranges.push((*node, first..b.len()));
                }
                let slice = b.finish();
                // The compiler's own verifier: a token missing between two modules would race
                // on the hardware while every result in program order stayed right.
                sinter_isa::order::check(cfg, &slice).map_err(|race| {
                    let layer = ranges
                        .iter()
                        .find(|(_, r)| r.contains(&race.second))
                        .map_or("?", |(node, _)| node.name.as_str());
                    CompileError::Lower {
                        layer: layer.to_string(),
                        message: format!("internal error: {race}"),
                    }
                })?;
                let sched = estimate(cfg, &TimingParams::default(), &slice);
                predicted_total += sched.total_cycles;
                for (node, r) in ranges {
                    let node: &Node = node;
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
                    let channel_lanes = if t.has_identity_lanes() {
                        None
                    } else if t.is_image() {
                        Some(t.channel_lanes.iter().map(|&l| l as u32).collect())
                    } else {
                        return Err(CompileError::Quant(format!(
                            "tensor '{base}' has its features out of order"
                        )));
                    };
                    Ok(IoTensor {
                        name: n.clone(),
                        shape: t.shape.clone(),
                        strides: t.strides(),
                        dram_base: t.addr,
                        bytes: t.extent(),
                        channel_lanes,
                        quant: *qp.get(&base).ok_or_else(|| {
                            CompileError::Quant(format!("no parameters for NPU tensor '{base}'"))
                        })?,
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
        // The model's own batch when its export fixed one.
        batch: graph
            .inputs
            .first()
            .and_then(|t| t.shape.first())
            .copied()
            .unwrap_or(opts.batch) as u32,
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
    let mut bundle = Bundle::new(*cfg, manifest, io, program, weights.bytes, cpu_bytes);
    bundle.ops = ops;
    Ok(bundle)
}

/// One windowed layer of a node (a Concat has one per input it copies) with its weights placed.
struct Part {
    plan: layers::LayerPlan,
    tiles_addr: u32,
    params_addr: u32,
    inputs: Vec<ActTensor>,
    output: ActTensor,
}

impl Part {
    fn new(
        weights: &mut WeightsImage,
        plan: layers::LayerPlan,
        inputs: Vec<ActTensor>,
        output: ActTensor,
    ) -> Part {
        let tiles_addr = weights.append(&plan.tiles);
        let params_addr = weights.append(&plan.params);
        Part {
            plan,
            tiles_addr,
            params_addr,
            inputs,
            output,
        }
    }
}

/// A channel shuffle `Reshape [N, g, C/g, H, W] → Transpose (0, 2, 1, 3, 4) → Reshape
/// [N, C, H, W]` (ShuffleNet's): output channel `c` is input channel
/// `(c mod g)·C/g + c div g`.
struct Shuffle {
    /// The shuffled tensor.
    input: String,
    /// The outputs of the first Reshape and of the Transpose.
    inner: Vec<String>,
    /// Input channel of each output channel.
    source: Vec<usize>,
}

/// Every channel shuffle of the graph, by output tensor.
fn channel_shuffles(graph: &Graph) -> HashMap<String, Shuffle> {
    let sole = |name: &str| -> Option<&Node> {
        (graph.use_count(name) == 1 && !graph_outputs_contains(graph, name))
            .then(|| graph.consumers(name).first().map(|&i| &graph.nodes[i]))
            .flatten()
    };
    let mut out = HashMap::new();
    for r1 in &graph.nodes {
        let (Op::Reshape { .. }, [x], [y1]) = (&r1.op, &r1.inputs[..], &r1.outputs[..]) else {
            continue;
        };
        let (Some(xs), Some(s1)) = (graph.shape_of(x), graph.shape_of(y1)) else {
            continue;
        };
        let [n, c, h, w] = *xs else { continue };
        let [n1, g, cg, h1, w1] = *s1 else { continue };
        if (n1, h1, w1) != (n, h, w) || g * cg != c || g < 2 || cg < 2 {
            continue;
        }
        let Some(t) = sole(y1) else { continue };
        let Op::Transpose { perm } = &t.op else {
            continue;
        };
        if perm[..] != [0, 2, 1, 3, 4] {
            continue;
        }
        let Some(r2) = sole(&t.outputs[0]) else {
            continue;
        };
        if !matches!(r2.op, Op::Reshape { .. })
            || graph.shape_of(&r2.outputs[0]) != Some(&[n, c, h, w][..])
        {
            continue;
        }
        out.insert(
            r2.outputs[0].clone(),
            Shuffle {
                input: x.clone(),
                inner: vec![y1.clone(), t.outputs[0].clone()],
                source: (0..c).map(|k| (k % g) * cg + k / g).collect(),
            },
        );
    }
    out
}

fn graph_outputs_contains(graph: &Graph, name: &str) -> bool {
    graph.outputs.iter().any(|t| t.name == name)
}

fn layer_op_name(op: &Op) -> String {
    let act = |a: &Activation| match a {
        Activation::None => "",
        Activation::Relu => "+Relu",
        Activation::Clip { .. } => "+Clip",
    };
    match op {
        Op::Dense { activation, .. } => format!("Dense{}", act(activation)),
        Op::Conv2d { activation, .. } => format!("Conv{}", act(activation)),
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
