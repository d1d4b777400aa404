//! The typed graph IR.
//!
//! A [`Graph`] holds named f32 tensors with concrete shapes: graph inputs, constants (weights) and
//! the outputs of [`Node`]s. Nodes are kept in topological order. Every tensor name is produced
//! exactly once (by a graph input, a constant or one node output).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt::{self, Write as _};

use ndarray::{Array1, Array2, Array4, ArrayD};

use crate::error::{CompileError, Result};

/// Element type of a tensor. Only f32 flows through the float graph today.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, Hash, Default, serde::Serialize, serde::Deserialize,
)]
pub enum DType {
    #[default]
    F32,
}

/// Name, element type and concrete shape of a tensor.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct TensorInfo {
    pub name: String,
    pub dtype: DType,
    pub shape: Vec<usize>,
}

impl TensorInfo {
    pub fn new(name: impl Into<String>, shape: Vec<usize>) -> Self {
        TensorInfo {
            name: name.into(),
            dtype: DType::F32,
            shape,
        }
    }
}

/// Activation fused into a [`Op::Dense`] or an [`Op::Conv2d`].
#[derive(Clone, Copy, Debug, PartialEq, Default, serde::Serialize, serde::Deserialize)]
pub enum Activation {
    #[default]
    None,
    Relu,
    /// Clamp to `[min, max]`; an absent bound is `±inf`.
    Clip {
        min: f32,
        max: f32,
    },
}

impl Activation {
    /// Applies the activation to one value.
    #[inline]
    pub fn apply(self, x: f32) -> f32 {
        match self {
            Activation::None => x,
            Activation::Relu => x.max(0.0),
            Activation::Clip { min, max } => x.max(min).min(max),
        }
    }
}

/// Elementwise binary operators (numpy-style multidirectional broadcasting).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub enum BinaryOp {
    Add,
    Sub,
    Mul,
    Div,
}

impl BinaryOp {
    pub fn name(self) -> &'static str {
        match self {
            BinaryOp::Add => "Add",
            BinaryOp::Sub => "Sub",
            BinaryOp::Mul => "Mul",
            BinaryOp::Div => "Div",
        }
    }

    #[inline]
    pub fn apply(self, a: f32, b: f32) -> f32 {
        match self {
            BinaryOp::Add => a + b,
            BinaryOp::Sub => a - b,
            BinaryOp::Mul => a * b,
            BinaryOp::Div => a / b,
        }
    }
}

/// How a 2-D pooling window combines the values it covers.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub enum PoolKind {
    /// Maximum over the window; padding never wins.
    Max,
    /// Mean over the window. With `count_include_pad` the divisor counts the explicit padding
    /// positions the window covers (never the extra positions `ceil_mode` adds past the padded
    /// input); without it, only the input positions.
    Avg { count_include_pad: bool },
}

/// How [`Op::Pad`] fills the border.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub enum PadMode {
    /// A constant value.
    Constant,
    /// Mirror without repeating the edge value (`[1, 2, 3]` padded by 2: `3 2 [1 2 3] 2 1`).
    Reflect,
    /// Repeat the edge value.
    Edge,
    /// Wrap around (`[1, 2, 3]` padded by 2: `2 3 [1 2 3] 1 2`).
    Wrap,
}

impl PadMode {
    pub fn name(self) -> &'static str {
        match self {
            PadMode::Constant => "constant",
            PadMode::Reflect => "reflect",
            PadMode::Edge => "edge",
            PadMode::Wrap => "wrap",
        }
    }
}

/// An operator. Runtime inputs are listed in [`Node::inputs`]; everything resolved at import
/// (attributes, constant shape/bound inputs) lives in the variant.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub enum Op {
    /// `Y = alpha * A' B' + beta * C`; inputs `[A, B]` or `[A, B, C]`.
    Gemm {
        alpha: f32,
        beta: f32,
        trans_a: bool,
        trans_b: bool,
    },
    /// numpy `matmul`; inputs `[A, B]`.
    MatMul,
    /// Elementwise binary op; inputs `[A, B]`, numpy broadcasting. A residual connection is
    /// `Binary(BinaryOp::Add)` of two runtime tensors; ONNX `Sum` and `Mean` of several inputs
    /// are imported as chains of Adds (then a Div by the count). With one per-channel constant
    /// operand the passes turn it into an [`Op::ChannelAffine`].
    Binary(BinaryOp),
    Relu,
    /// Clamp to `[min, max]`; an absent bound is `±inf`.
    Clip {
        min: f32,
        max: f32,
    },
    /// Flatten to 2-D: `[prod(d[..axis]), prod(d[axis..])]`.
    Flatten {
        axis: usize,
    },
    /// Reshape with ONNX semantics: `0` copies the input dim (unless `allowzero`), `-1` is inferred.
    Reshape {
        shape: Vec<i64>,
        allowzero: bool,
    },
    Identity,
    /// Inference-mode dropout (an identity); only the first output.
    Dropout,
    /// Softmax along `axis`. With `coerce_2d` (opset < 13) the input is viewed as
    /// `[prod(d[..axis]), prod(d[axis..])]` and normalised over the second dim.
    Softmax {
        axis: usize,
        coerce_2d: bool,
    },
    /// Fully-connected layer over the last axis: `y = act(x W + b)`.
    /// `weight` is `[K, N]` (row k = input feature k), `bias` is `[N]`.
    Dense {
        weight: Array2<f32>,
        bias: Option<Array1<f32>>,
        activation: Activation,
    },
    /// ONNX-style 2-D convolution on NCHW tensors with runtime operands; inputs `[X, W]` or
    /// `[X, W, B]` with `X: [N, C, H, W]`, `W: [O, C/groups, kh, kw]`, `B: [O]`.
    /// `pads` are `[top, left, bottom, right]` (auto_pad is resolved at import). The pass
    /// [`crate::passes::conv_to_conv2d`] turns a convolution with constant `W` (and `B`) into
    /// [`Op::Conv2d`].
    Conv {
        stride: [usize; 2],
        pads: [usize; 4],
        dilation: [usize; 2],
        groups: usize,
    },
    /// 2-D convolution layer with its weights: `y = act(conv(x, weight) + bias)` on NCHW tensors.
    /// `weight` is `[O, C/groups, kh, kw]`, `bias` is `[O]`; `pads` are
    /// `[top, left, bottom, right]` (zero padding). Output
    /// `[N, O, (H + top + bottom - dilation_h*(kh-1) - 1) / stride_h + 1, ...]`.
    /// `groups == C == O` is a depthwise convolution.
    Conv2d {
        weight: Array4<f32>,
        bias: Option<Array1<f32>>,
        stride: [usize; 2],
        pads: [usize; 4],
        dilation: [usize; 2],
        groups: usize,
        activation: Activation,
    },
    /// Inference-mode batch normalization over axis 1 with runtime operands;
    /// inputs `[X, scale, B, mean, var]` (each parameter `[C]`):
    /// `y = (x - mean) / sqrt(var + epsilon) * scale + B`.
    BatchNorm {
        epsilon: f32,
    },
    /// Per-channel affine map over axis 1: `y[n, c, ...] = x[n, c, ...] * scale[c] + shift[c]`.
    /// Formed from a constant [`Op::BatchNorm`] and from Mul/Add/Sub/Div by per-channel
    /// constants; folded into a preceding [`Op::Conv2d`] or [`Op::Dense`] when possible.
    ChannelAffine {
        scale: Array1<f32>,
        shift: Array1<f32>,
    },
    /// 2-D pooling on NCHW tensors. `pads` are `[top, left, bottom, right]`. The output size
    /// along an axis is `(in + pad_begin + pad_end - dilation*(kernel-1) - 1) / stride + 1`,
    /// rounded down, or up with `ceil_mode` (a last window starting past `in + pad_begin` is
    /// dropped).
    Pool2d {
        kind: PoolKind,
        kernel: [usize; 2],
        stride: [usize; 2],
        pads: [usize; 4],
        dilation: [usize; 2],
        ceil_mode: bool,
    },
    /// Mean over all axes after the first two (`[N, C, ...]` to `[N, C, 1, ...]`).
    GlobalAvgPool,
    /// Maximum over all axes after the first two (`[N, C, ...]` to `[N, C, 1, ...]`).
    GlobalMaxPool,
    /// Local response normalization across channels (axis 1):
    /// `y = x / (bias + alpha / size * sum(x[c']^2))^beta` over
    /// `c' in [c - (size-1)/2, c + size/2]` (clipped to the channels).
    Lrn {
        size: usize,
        alpha: f32,
        beta: f32,
        bias: f32,
    },
    /// `x` for `x >= 0`, `alpha * x` otherwise.
    LeakyRelu {
        alpha: f32,
    },
    Sigmoid,
    Tanh,
    /// Concatenation of all inputs (one or more) along `axis`.
    Concat {
        axis: usize,
    },
    /// Axis permutation: output axis `i` is input axis `perm[i]`.
    Transpose {
        perm: Vec<usize>,
    },
    /// Padding of every axis by `pads[axis] = [begin, end]` values.
    Pad {
        pads: Vec<[usize; 2]>,
        mode: PadMode,
        /// Fill value of [`PadMode::Constant`].
        value: f32,
    },
    /// Strided slice with one range per input axis: output index `i` along an axis reads input
    /// index `start + i * step`, for `i < len`.
    Slice {
        ranges: Vec<SliceRange>,
    },
    /// numpy broadcast of the input to `shape` (the output shape is the broadcast of both).
    Expand {
        shape: Vec<usize>,
    },
    /// numpy `take` along `axis` with constant indices (negative indices already resolved).
    Gather {
        axis: usize,
        indices: ArrayD<usize>,
    },
}

/// One axis of an [`Op::Slice`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub struct SliceRange {
    pub start: usize,
    pub step: isize,
    pub len: usize,
}

impl Op {
    /// Operator name as shown in summaries and errors.
    pub fn name(&self) -> &'static str {
        match self {
            Op::Gemm { .. } => "Gemm",
            Op::MatMul => "MatMul",
            Op::Binary(b) => b.name(),
            Op::Relu => "Relu",
            Op::Clip { .. } => "Clip",
            Op::Flatten { .. } => "Flatten",
            Op::Reshape { .. } => "Reshape",
            Op::Identity => "Identity",
            Op::Dropout => "Dropout",
            Op::Softmax { .. } => "Softmax",
            Op::Dense { .. } => "Dense",
            Op::Conv { .. } => "Conv",
            Op::Conv2d { .. } => "Conv2d",
            Op::BatchNorm { .. } => "BatchNorm",
            Op::ChannelAffine { .. } => "ChannelAffine",
            Op::Pool2d {
                kind: PoolKind::Max,
                ..
            } => "MaxPool2d",
            Op::Pool2d {
                kind: PoolKind::Avg { .. },
                ..
            } => "AvgPool2d",
            Op::GlobalAvgPool => "GlobalAvgPool",
            Op::GlobalMaxPool => "GlobalMaxPool",
            Op::Lrn { .. } => "Lrn",
            Op::LeakyRelu { .. } => "LeakyRelu",
            Op::Sigmoid => "Sigmoid",
            Op::Tanh => "Tanh",
            Op::Concat { .. } => "Concat",
            Op::Transpose { .. } => "Transpose",
            Op::Pad { .. } => "Pad",
            Op::Slice { .. } => "Slice",
            Op::Gather { .. } => "Gather",
            Op::Expand { .. } => "Expand",
        }
    }

    /// Number of runtime inputs accepted: (min, max).
    pub fn arity(&self) -> (usize, usize) {
        match self {
            Op::Gemm { .. } | Op::Conv { .. } => (2, 3),
            Op::MatMul | Op::Binary(_) => (2, 2),
            Op::BatchNorm { .. } => (5, 5),
            Op::Concat { .. } => (1, usize::MAX),
            _ => (1, 1),
        }
    }
}

impl fmt::Display for Op {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Op::Gemm {
                alpha,
                beta,
                trans_a,
                trans_b,
            } => write!(
                f,
                "Gemm(alpha={alpha}, beta={beta}, transA={}, transB={})",
                u8::from(*trans_a),
                u8::from(*trans_b)
            ),
            Op::Clip { min, max } => write!(f, "Clip({min}, {max})"),
            Op::Flatten { axis } => write!(f, "Flatten(axis={axis})"),
            Op::Reshape { shape, allowzero } => {
                write!(f, "Reshape({shape:?}")?;
                if *allowzero {
                    write!(f, ", allowzero")?;
                }
                write!(f, ")")
            }
            Op::Softmax { axis, coerce_2d } => {
                write!(f, "Softmax(axis={axis}")?;
                if *coerce_2d {
                    write!(f, ", 2-D")?;
                }
                write!(f, ")")
            }
            Op::Dense {
                weight,
                bias,
                activation,
            } => {
                let (k, n) = weight.dim();
                write!(f, "Dense({k}x{n}")?;
                if bias.is_some() {
                    write!(f, ", bias")?;
                }
                write_activation(f, *activation)?;
                write!(f, ")")
            }
            Op::Conv {
                stride,
                pads,
                dilation,
                groups,
            } => {
                write!(f, "Conv(")?;
                write_geometry(f, *stride, *pads, *dilation)?;
                if *groups != 1 {
                    write!(f, ", groups={groups}")?;
                }
                write!(f, ")")
            }
            Op::Conv2d {
                weight,
                bias,
                stride,
                pads,
                dilation,
                groups,
                activation,
            } => {
                let (o, i, kh, kw) = weight.dim();
                write!(f, "Conv2d({o}x{i}x{kh}x{kw}, ")?;
                write_geometry(f, *stride, *pads, *dilation)?;
                if *groups != 1 {
                    write!(f, ", groups={groups}")?;
                }
                if bias.is_some() {
                    write!(f, ", bias")?;
                }
                write_activation(f, *activation)?;
                write!(f, ")")
            }
            Op::BatchNorm { epsilon } => write!(f, "BatchNorm(epsilon={epsilon})"),
            Op::ChannelAffine { scale, .. } => write!(f, "ChannelAffine({})", scale.len()),
            Op::Pool2d {
                kind,
                kernel,
                stride,
                pads,
                dilation,
                ceil_mode,
            } => {
                write!(f, "{}({}x{}, ", self.name(), kernel[0], kernel[1])?;
                write_geometry(f, *stride, *pads, *dilation)?;
                if let PoolKind::Avg {
                    count_include_pad: true,
                } = kind
                {
                    write!(f, ", count_include_pad")?;
                }
                if *ceil_mode {
                    write!(f, ", ceil")?;
                }
                write!(f, ")")
            }
            Op::Lrn {
                size,
                alpha,
                beta,
                bias,
            } => write!(
                f,
                "Lrn(size={size}, alpha={alpha}, beta={beta}, bias={bias})"
            ),
            Op::LeakyRelu { alpha } => write!(f, "LeakyRelu({alpha})"),
            Op::Concat { axis } => write!(f, "Concat(axis={axis})"),
            Op::Transpose { perm } => write!(f, "Transpose({perm:?})"),
            Op::Pad { pads, mode, value } => {
                write!(f, "Pad({pads:?}, {}", mode.name())?;
                if *mode == PadMode::Constant && *value != 0.0 {
                    write!(f, ", {value}")?;
                }
                write!(f, ")")
            }
            Op::Slice { ranges } => {
                let r: Vec<String> = ranges
                    .iter()
                    .map(|r| format!("{}+{}*{}", r.start, r.step, r.len))
                    .collect();
                write!(f, "Slice({})", r.join(", "))
            }
            Op::Gather { axis, indices } => {
                write!(f, "Gather(axis={axis}, indices {:?})", indices.shape())
            }
            Op::Expand { shape } => write!(f, "Expand({shape:?})"),
            other => f.write_str(other.name()),
        }
    }
}

fn write_activation(f: &mut fmt::Formatter<'_>, activation: Activation) -> fmt::Result {
    match activation {
        Activation::None => Ok(()),
        Activation::Relu => write!(f, ", relu"),
        Activation::Clip { min, max } => write!(f, ", clip[{min}, {max}]"),
    }
}

fn write_geometry(
    f: &mut fmt::Formatter<'_>,
    stride: [usize; 2],
    pads: [usize; 4],
    dilation: [usize; 2],
) -> fmt::Result {
    write!(f, "stride={}x{}", stride[0], stride[1])?;
    if pads != [0; 4] {
        write!(f, ", pads={pads:?}")?;
    }
    if dilation != [1, 1] {
        write!(f, ", dilation={}x{}", dilation[0], dilation[1])?;
    }
    Ok(())
}

/// One operator application.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Node {
    /// Unique, human-readable node name (from the model, or generated).
    pub name: String,
    pub op: Op,
    pub inputs: Vec<String>,
    pub outputs: Vec<String>,
}

/// Where a tensor comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Producer {
    Input,
    Constant,
    /// Output of the node at this index of [`Graph::nodes`].
    Node(usize),
}

/// A typed dataflow graph.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Graph {
    pub name: String,
    /// Runtime inputs, in model order.
    pub inputs: Vec<TensorInfo>,
    /// Graph outputs, in model order.
    pub outputs: Vec<TensorInfo>,
    /// Named constant tensors (weights, biases) used as node inputs.
    pub constants: BTreeMap<String, ArrayD<f32>>,
    /// Nodes in topological order.
    pub nodes: Vec<Node>,
    /// Shape of every non-constant tensor (inputs and node outputs).
    pub shapes: HashMap<String, Vec<usize>>,
}

impl Graph {
    /// Graph inputs as (name, shape).
    pub fn input_shapes(&self) -> Vec<(&str, &[usize])> {
        self.inputs
            .iter()
            .map(|t| (t.name.as_str(), t.shape.as_slice()))
            .collect()
    }

    /// Graph outputs as (name, shape).
    pub fn output_shapes(&self) -> Vec<(&str, &[usize])> {
        self.outputs
            .iter()
            .map(|t| (t.name.as_str(), t.shape.as_slice()))
            .collect()
    }

    /// Shape of any tensor: input, constant or node output.
    pub fn shape_of(&self, name: &str) -> Option<&[usize]> {
        self.shapes
            .get(name)
            .map(Vec::as_slice)
            .or_else(|| self.constants.get(name).map(|c| c.shape()))
    }

    pub fn is_constant(&self, name: &str) -> bool {
        self.constants.contains_key(name)
    }

    pub fn constant(&self, name: &str) -> Option<&ArrayD<f32>> {
        self.constants.get(name)
    }

    pub fn is_graph_input(&self, name: &str) -> bool {
        self.inputs.iter().any(|t| t.name == name)
    }

    pub fn is_graph_output(&self, name: &str) -> bool {
        self.outputs.iter().any(|t| t.name == name)
    }

    /// Where `name` comes from, if it exists.
    pub fn producer(&self, name: &str) -> Option<Producer> {
        if self.is_graph_input(name) {
            Some(Producer::Input)
        } else if self.is_constant(name) {
            Some(Producer::Constant)
        } else {
            self.producer_node(name).map(Producer::Node)
        }
    }

    /// Index of the node producing `name`.
    pub fn producer_node(&self, name: &str) -> Option<usize> {
        self.nodes
            .iter()
            .position(|n| n.outputs.iter().any(|o| o == name))
    }

    /// Indices of the nodes reading `name` (each node once).
    pub fn consumers(&self, name: &str) -> Vec<usize> {
        self.nodes
            .iter()
            .enumerate()
            .filter(|(_, n)| n.inputs.iter().any(|i| i == name))
            .map(|(i, _)| i)
            .collect()
    }

    /// Number of uses of `name`: node input slots plus graph outputs.
    pub fn use_count(&self, name: &str) -> usize {
        let node_uses: usize = self
            .nodes
            .iter()
            .map(|n| n.inputs.iter().filter(|i| *i == name).count())
            .sum();
        node_uses + usize::from(self.is_graph_output(name))
    }

    /// Node by name.
    pub fn node(&self, name: &str) -> Option<&Node> {
        self.nodes.iter().find(|n| n.name == name)
    }

    /// Multiset of operator names in node order, e.g. `["Dense", "Dense", "Softmax"]`.
    pub fn op_names(&self) -> Vec<&'static str> {
        self.nodes.iter().map(|n| n.op.name()).collect()
    }

    /// Renames every use of tensor `from` (node inputs) to `to`.
    pub fn replace_uses(&mut self, from: &str, to: &str) {
        for node in &mut self.nodes {
            for input in &mut node.inputs {
                if input == from {
                    *input = to.to_string();
                }
            }
        }
    }

    /// Checks the structural invariants: unique producers, every input defined before use,
    /// shapes known for every runtime tensor, arities respected, outputs produced.
    pub fn validate(&self) -> Result<()> {
        let invalid = |msg: String| Err(CompileError::InvalidModel(msg));
        let mut defined: HashSet<&str> = HashSet::new();
        for t in &self.inputs {
            if self.constants.contains_key(&t.name) {
                return invalid(format!("'{}' is both a graph input and a constant", t.name));
            }
            if !defined.insert(&t.name) {
                return invalid(format!("graph input '{}' declared twice", t.name));
            }
            if self.shapes.get(&t.name) != Some(&t.shape) {
                return invalid(format!("graph input '{}' has no recorded shape", t.name));
            }
        }
        for name in self.constants.keys() {
            defined.insert(name);
        }
        let mut node_names = HashSet::new();
        for node in &self.nodes {
            if !node_names.insert(node.name.as_str()) {
                return invalid(format!("node name '{}' is not unique", node.name));
            }
            let (lo, hi) = node.op.arity();
            if node.inputs.len() < lo || node.inputs.len() > hi {
                return invalid(format!(
                    "node '{}' ({}) has {} inputs, expected {lo}..={hi}",
                    node.name,
                    node.op.name(),
                    node.inputs.len()
                ));
            }
            for input in &node.inputs {
                if !defined.contains(input.as_str()) {
                    return invalid(format!(
                        "node '{}' reads '{input}' before it is defined",
                        node.name
                    ));
                }
            }
            for output in &node.outputs {
                if !defined.insert(output) {
                    return invalid(format!("tensor '{output}' is produced more than once"));
                }
                if !self.shapes.contains_key(output) {
                    return invalid(format!("tensor '{output}' has no recorded shape"));
                }
            }
        }
        for t in &self.outputs {
            if !defined.contains(t.name.as_str()) || self.is_constant(&t.name) {
                return invalid(format!("graph output '{}' is not computed", t.name));
            }
            if self.shapes.get(&t.name) != Some(&t.shape) {
                return invalid(format!("graph output '{}' has a stale shape", t.name));
            }
        }
        Ok(())
    }

    /// Human-readable listing of inputs, constants, nodes and outputs.
    pub fn summary(&self) -> String {
        let mut s = String::new();
        let shape = |name: &str| match self.shape_of(name) {
            Some(sh) => format!("{sh:?}"),
            None => "?".to_string(),
        };
        let _ = writeln!(s, "graph '{}'", self.name);
        for t in &self.inputs {
            let _ = writeln!(s, "  input  {} {:?}", t.name, t.shape);
        }
        let params: usize = self.constants.values().map(ArrayD::len).sum::<usize>()
            + self
                .nodes
                .iter()
                .map(|n| match &n.op {
                    Op::Dense { weight, bias, .. } => {
                        weight.len() + bias.as_ref().map_or(0, Array1::len)
                    }
                    Op::Conv2d { weight, bias, .. } => {
                        weight.len() + bias.as_ref().map_or(0, Array1::len)
                    }
                    Op::ChannelAffine { scale, shift } => scale.len() + shift.len(),
                    _ => 0,
                })
                .sum::<usize>();
        let _ = writeln!(
            s,
            "  {} constants, {} nodes, {} parameters",
            self.constants.len(),
            self.nodes.len(),
            params
        );
        for node in &self.nodes {
            let ins: Vec<String> = node
                .inputs
                .iter()
                .map(|i| {
                    if self.is_constant(i) {
                        format!("{i}(const {})", shape(i))
                    } else {
                        i.clone()
                    }
                })
                .collect();
            let outs: Vec<String> = node
                .outputs
                .iter()
                .map(|o| format!("{o} {}", shape(o)))
                .collect();
            let _ = writeln!(
                s,
                "  {}: {}({}) -> {}",
                node.name,
                node.op,
                ins.join(", "),
                outs.join(", ")
            );
        }
        for t in &self.outputs {
            let _ = writeln!(s, "  output {} {:?}", t.name, t.shape);
        }
        s
    }
}
