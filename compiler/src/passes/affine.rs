//! Per-channel affine maps ([`Op::ChannelAffine`]): formed from constant batch normalization and
//! from Mul/Add/Sub/Div by per-channel constants, merged with each other and folded into the
//! weights of a preceding [`Op::Conv2d`] or [`Op::Dense`].

use ndarray::{Array1, ArrayD, Axis};

use super::{absorb_consumer, sole_consumer};
use crate::ir::{Activation, BinaryOp, Graph, Op};

/// Rewrites `BatchNorm(x, const scale, const B, const mean, const var)` as a `ChannelAffine`
/// with `scale' = scale / sqrt(var + epsilon)` and `shift' = B - mean * scale'`.
/// Returns the number of rewritten nodes.
pub fn batchnorm_to_affine(graph: &mut Graph) -> usize {
    let mut count = 0;
    for i in 0..graph.nodes.len() {
        let node = &graph.nodes[i];
        let Op::BatchNorm { epsilon } = node.op else {
            continue;
        };
        let params: Option<Vec<Vec<f32>>> = node.inputs[1..]
            .iter()
            .map(|n| graph.constant(n).map(|c| c.iter().copied().collect()))
            .collect();
        let Some(params) = params else {
            continue;
        };
        let [gamma, beta, mean, var] = params.as_slice() else {
            continue;
        };
        let scale: Array1<f32> = gamma
            .iter()
            .zip(var)
            .map(|(&g, &v)| g / (v + epsilon).sqrt())
            .collect();
        let shift: Array1<f32> = beta
            .iter()
            .zip(mean)
            .zip(&scale)
            .map(|((&b, &m), &a)| b - m * a)
            .collect();
        let node = &mut graph.nodes[i];
        node.op = Op::ChannelAffine { scale, shift };
        node.inputs.truncate(1);
        count += 1;
    }
    count
}

/// `c` as `[channels]` values when it broadcasts onto a rank-`rank` tensor varying only along
/// axis 1 (`[]`, `[1]`, `[C, 1, 1]`, `[1, C, 1, 1]`, ...).
fn per_channel(c: &ArrayD<f32>, rank: usize, channels: usize) -> Option<Array1<f32>> {
    if rank < 2 || c.ndim() > rank {
        return None;
    }
    let pad = rank - c.ndim();
    let mut along = None;
    for (i, &d) in c.shape().iter().enumerate() {
        let axis = pad + i;
        if d != 1 {
            if axis != 1 || d != channels {
                return None;
            }
            along = Some(i);
        }
    }
    Some(match along {
        Some(i) => c.lanes(Axis(i)).into_iter().next().map(|l| l.to_owned())?,
        None => Array1::from_elem(channels, c.iter().copied().next()?),
    })
}

/// Rewrites `Mul`, `Add`, `Sub` and `Div` of a runtime tensor `[N, C, ...]` and a per-channel
/// constant as a `ChannelAffine` (`x / c` becomes `x * (1 / c)`, which may differ in the last
/// bit). Returns the number of rewritten nodes.
pub fn binary_to_affine(graph: &mut Graph) -> usize {
    let mut count = 0;
    for i in 0..graph.nodes.len() {
        let node = &graph.nodes[i];
        let Op::Binary(op) = node.op else {
            continue;
        };
        let [a, b] = node.inputs.as_slice() else {
            continue;
        };
        let (x, c, const_first) = match (graph.constant(a), graph.constant(b)) {
            (None, Some(c)) => (a, c, false),
            (Some(c), None) => (b, c, true),
            _ => continue,
        };
        let Some(shape) = graph.shape_of(x) else {
            continue;
        };
        if graph.shape_of(&node.outputs[0]) != Some(shape) || shape.len() < 2 {
            continue;
        }
        let channels = shape[1];
        let Some(v) = per_channel(c, shape.len(), channels) else {
            continue;
        };
        let ones = Array1::from_elem(channels, 1.0f32);
        let zeros = Array1::zeros(channels);
        let (scale, shift) = match (op, const_first) {
            (BinaryOp::Add, _) => (ones, v),
            (BinaryOp::Mul, _) => (v, zeros),
            (BinaryOp::Sub, false) => (ones, -v),
            (BinaryOp::Sub, true) => (-ones, v),
            (BinaryOp::Div, false) => (v.mapv(|d| 1.0 / d), zeros),
            (BinaryOp::Div, true) => continue,
        };
        let x = x.clone();
        let node = &mut graph.nodes[i];
        node.op = Op::ChannelAffine { scale, shift };
        node.inputs = vec![x];
        count += 1;
    }
    count
}

/// Merges a `ChannelAffine` into the `ChannelAffine` that is its only reader, and folds a
/// `ChannelAffine` into the `Conv2d` (or `Dense` with a 2-D output) without activation whose
/// output it is the only reader of: `w'[o] = w[o] * scale[o]`, `b'[o] = b[o] * scale[o] +
/// shift[o]`. Returns the number of removed affine nodes.
pub fn fold_affine(graph: &mut Graph) -> usize {
    let mut count = 0;
    let mut i = 0;
    while i < graph.nodes.len() {
        let Some(c) = sole_consumer(graph, &graph.nodes[i].outputs[0]) else {
            i += 1;
            continue;
        };
        let Op::ChannelAffine { scale, shift } = &graph.nodes[c].op else {
            i += 1;
            continue;
        };
        let (scale, shift) = (scale.clone(), shift.clone());
        let out_rank = graph
            .shape_of(&graph.nodes[i].outputs[0])
            .map_or(0, <[usize]>::len);
        let folded = match &mut graph.nodes[i].op {
            Op::ChannelAffine {
                scale: s0,
                shift: b0,
            } => {
                *b0 = &*b0 * &scale + &shift;
                *s0 = &*s0 * &scale;
                true
            }
            Op::Conv2d {
                weight,
                bias,
                activation: Activation::None,
                ..
            } => {
                for (mut w, &a) in weight.outer_iter_mut().zip(&scale) {
                    w *= a;
                }
                *bias = Some(match bias.take() {
                    Some(b) => b * &scale + &shift,
                    None => shift,
                });
                true
            }
            Op::Dense {
                weight,
                bias,
                activation: Activation::None,
            } if out_rank == 2 => {
                for (mut col, &a) in weight.axis_iter_mut(Axis(1)).zip(&scale) {
                    col *= a;
                }
                *bias = Some(match bias.take() {
                    Some(b) => b * &scale + &shift,
                    None => shift,
                });
                true
            }
            _ => false,
        };
        if folded {
            absorb_consumer(graph, i, c);
            count += 1;
        } else {
            i += 1;
        }
    }
    count
}

/// Rewrites every `ChannelAffine` left on an image tensor (one that could not fold into a
/// producer, like a BatchNorm after a Concat) as a depthwise 1×1 `Conv2d`: the NPU runs it
/// as any other convolution, and a following Relu/Clip fuses into it. Returns the number of
/// rewritten nodes.
pub fn affine_to_depthwise(graph: &mut Graph) -> usize {
    let mut count = 0;
    for i in 0..graph.nodes.len() {
        let Op::ChannelAffine { scale, shift } = &graph.nodes[i].op else {
            continue;
        };
        let rank4 = graph
            .shape_of(&graph.nodes[i].inputs[0])
            .is_some_and(|s| s.len() == 4 && s[1] == scale.len());
        if !rank4 {
            continue;
        }
        let channels = scale.len();
        let weight = scale
            .clone()
            .into_shape_with_order((channels, 1, 1, 1))
            .expect("a 1-D array reshapes to [C, 1, 1, 1]");
        let bias = Some(shift.clone());
        graph.nodes[i].op = Op::Conv2d {
            weight,
            bias,
            stride: [1, 1],
            pads: [0; 4],
            dilation: [1, 1],
            groups: channels,
            activation: Activation::None,
        };
        count += 1;
    }
    count
}
