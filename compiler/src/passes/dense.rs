//! Formation of fully-connected layers ([`Op::Dense`]), fusion of their bias, and activation
//! fusion into Dense and [`Op::Conv2d`] layers.

use ndarray::{Array1, Array2, ArrayD, Ix2, IxDyn};

use super::{absorb_consumer, sole_consumer};
use crate::error::{CompileError, Result};
use crate::ir::{Activation, BinaryOp, Graph, Node, Op};

/// Rewrites `Gemm(A, const B, C)` as `Dense`, folding `alpha` and `transB` into the weight and
/// `beta * C` into the bias. `C` must be constant and vary only along the output features;
/// other Gemms are left alone. With `transA` (on a runtime `A`) an explicit `Transpose` of `A`
/// is inserted before the Dense. Returns the number of rewritten nodes.
pub fn gemm_to_dense(graph: &mut Graph) -> Result<usize> {
    let mut count = 0;
    let mut i = 0;
    while i < graph.nodes.len() {
        let node = &graph.nodes[i];
        let Op::Gemm {
            alpha,
            beta,
            trans_a,
            trans_b,
        } = node.op
        else {
            i += 1;
            continue;
        };
        let a = node.inputs[0].clone();
        let (Some(b), false) = (graph.constant(&node.inputs[1]), graph.is_constant(&a)) else {
            i += 1;
            continue;
        };
        let Ok(b) = b.view().into_dimensionality::<Ix2>() else {
            i += 1;
            continue;
        };
        let b = if trans_b { b.t() } else { b };
        let n = b.ncols();
        let bias = match node.inputs.get(2) {
            None => None,
            Some(c) => match graph.constant(c).and_then(|c| row_vector(c, n)) {
                Some(c) => Some(c * beta),
                None => {
                    i += 1;
                    continue;
                }
            },
        };
        let weight: Array2<f32> = b.mapv(|v| v * alpha);
        if trans_a {
            let node_name = node.name.clone();
            let [m, k] = match graph.shape_of(&a) {
                Some(&[m, k]) => [m, k],
                _ => {
                    return Err(CompileError::Pass {
                        pass: "gemm_to_dense",
                        node: node_name,
                        message: format!("input '{a}' is not 2-D"),
                    })
                }
            };
            let t_name = fresh(graph, &format!("{a}::transposed"), |g, s| {
                g.shape_of(s).is_some()
            });
            let t_node = fresh(graph, &format!("{node_name}::transpose_a"), |g, s| {
                g.node(s).is_some()
            });
            graph.shapes.insert(t_name.clone(), vec![k, m]);
            graph.nodes.insert(
                i,
                Node {
                    name: t_node,
                    op: Op::Transpose { perm: vec![1, 0] },
                    inputs: vec![a],
                    outputs: vec![t_name.clone()],
                },
            );
            i += 1;
            graph.nodes[i].inputs[0] = t_name;
        }
        let node = &mut graph.nodes[i];
        node.op = Op::Dense {
            weight,
            bias,
            activation: Activation::None,
        };
        node.inputs.truncate(1);
        count += 1;
        i += 1;
    }
    Ok(count)
}

/// `base`, or `base_<n>` for the first `n` such that `taken` says it is free.
fn fresh(graph: &Graph, base: &str, taken: impl Fn(&Graph, &str) -> bool) -> String {
    let mut name = base.to_string();
    let mut n = 1;
    while taken(graph, &name) {
        name = format!("{base}_{n}");
        n += 1;
    }
    name
}

/// Rewrites `MatMul(x, const W)` with a 2-D `W` as a `Dense` without bias.
/// Returns the number of rewritten nodes.
pub fn matmul_to_dense(graph: &mut Graph) -> usize {
    let mut count = 0;
    for i in 0..graph.nodes.len() {
        let node = &graph.nodes[i];
        if node.op != Op::MatMul || graph.is_constant(&node.inputs[0]) {
            continue;
        }
        let Some(w) = graph.constant(&node.inputs[1]) else {
            continue;
        };
        let Ok(w) = w.view().into_dimensionality::<Ix2>() else {
            continue;
        };
        let weight = w.to_owned();
        let node = &mut graph.nodes[i];
        node.op = Op::Dense {
            weight,
            bias: None,
            activation: Activation::None,
        };
        node.inputs.truncate(1);
        count += 1;
    }
    count
}

/// Folds `Add(dense, const b)`, `Add(const b, dense)` and `Sub(dense, const b)` into the bias of a
/// `Dense` without activation whose output has no other use, when `b` varies only along the
/// output features. Returns the number of fused nodes.
pub fn fuse_bias(graph: &mut Graph) -> usize {
    let mut count = 0;
    let mut i = 0;
    while i < graph.nodes.len() {
        if let Some((consumer, b)) = bias_candidate(graph, i) {
            if let Op::Dense { bias, .. } = &mut graph.nodes[i].op {
                *bias = Some(match bias.take() {
                    Some(old) => old + &b,
                    None => b,
                });
            }
            absorb_consumer(graph, i, consumer);
            count += 1;
        } else {
            i += 1;
        }
    }
    count
}

fn bias_candidate(graph: &Graph, i: usize) -> Option<(usize, Array1<f32>)> {
    let node = &graph.nodes[i];
    let Op::Dense {
        weight,
        activation: Activation::None,
        ..
    } = &node.op
    else {
        return None;
    };
    let out = &node.outputs[0];
    let c = sole_consumer(graph, out)?;
    let consumer = &graph.nodes[c];
    let (other, negate) = match (&consumer.op, consumer.inputs.as_slice()) {
        (Op::Binary(BinaryOp::Add), [x, y]) if x == out => (y, false),
        (Op::Binary(BinaryOp::Add), [x, y]) if y == out => (x, false),
        (Op::Binary(BinaryOp::Sub), [x, y]) if x == out => (y, true),
        _ => return None,
    };
    let value = graph.constant(other)?;
    let out_shape = graph.shape_of(out)?;
    if value.ndim() > out_shape.len() || graph.shape_of(&consumer.outputs[0]) != Some(out_shape) {
        return None;
    }
    let b = row_vector(value, weight.ncols())?;
    Some((c, if negate { -b } else { b }))
}

/// `c` as a `[n]` bias when it broadcasts along all but the last axis (`[]`, `[1]`, `[n]`,
/// `[1, n]`, `[1, 1, n]`, ...).
fn row_vector(c: &ArrayD<f32>, n: usize) -> Option<Array1<f32>> {
    let shape = c.shape();
    let (last, lead) = match shape.split_last() {
        Some((&last, lead)) => (last, lead),
        None => (1, &[][..]),
    };
    if lead.iter().any(|&d| d != 1) || (last != 1 && last != n) {
        return None;
    }
    let flat: Vec<f32> = c.iter().copied().collect();
    let row = ArrayD::from_shape_vec(IxDyn(&[last]), flat).ok()?;
    row.broadcast(IxDyn(&[n]))?
        .into_dimensionality()
        .ok()
        .map(|v: ndarray::ArrayView1<f32>| v.to_owned())
}

/// Fuses a `Relu` or `Clip` that is the only reader of a `Dense` or `Conv2d` output (without
/// activation) into that layer. Returns the number of fused nodes.
pub fn fuse_activation(graph: &mut Graph) -> usize {
    let mut count = 0;
    let mut i = 0;
    while i < graph.nodes.len() {
        let candidate = match &graph.nodes[i].op {
            Op::Dense {
                activation: Activation::None,
                ..
            }
            | Op::Conv2d {
                activation: Activation::None,
                ..
            } => sole_consumer(graph, &graph.nodes[i].outputs[0]).and_then(|c| {
                match graph.nodes[c].op {
                    Op::Relu => Some((c, Activation::Relu)),
                    Op::Clip { min, max } => Some((c, Activation::Clip { min, max })),
                    _ => None,
                }
            }),
            _ => None,
        };
        match candidate {
            Some((c, act)) => {
                if let Op::Dense { activation, .. } | Op::Conv2d { activation, .. } =
                    &mut graph.nodes[i].op
                {
                    *activation = act;
                }
                absorb_consumer(graph, i, c);
                count += 1;
            }
            None => i += 1,
        }
    }
    count
}
