//! The fp32 reference interpreter.
//!
//! Runs the raw imported graph as well as the optimised one. Matrix products go through
//! ndarray's `dot`; convolutions are im2col plus matrix products on chunks of output positions
//! (direct loops for depthwise ones), pools tight loops, both parallel with rayon; elementwise
//! work uses whole-array operations.

mod conv;
mod pool;
mod tensor;

use std::collections::HashMap;

use ndarray::{Array2, ArrayD, ArrayView1, ArrayView4, ArrayViewD, Axis, Ix2, Ix4, IxDyn, Zip};

use crate::error::{CompileError, Result};
use crate::ir::{Activation, Graph, Op};
use crate::shape;

/// Runs `graph` and returns its outputs by name.
///
/// Every graph input must be given. Its shape must equal the declared one, except that the
/// leading (batch) dim may differ; batch-dependent constants folded at import then surface as
/// shape errors.
pub fn run(
    graph: &Graph,
    inputs: &HashMap<String, ArrayD<f32>>,
) -> Result<HashMap<String, ArrayD<f32>>> {
    let mut values = run_all(graph, inputs)?;
    graph
        .outputs
        .iter()
        .map(|t| {
            values
                .remove(&t.name)
                .map(|v| (t.name.clone(), v))
                .ok_or_else(|| CompileError::Interp(format!("output '{}' not computed", t.name)))
        })
        .collect()
}

/// Runs `graph` and returns every tensor it computes: the graph inputs and each node's outputs
/// (constants are not included).
pub fn run_all(
    graph: &Graph,
    inputs: &HashMap<String, ArrayD<f32>>,
) -> Result<HashMap<String, ArrayD<f32>>> {
    let mut values: HashMap<String, ArrayD<f32>> = HashMap::new();
    for t in &graph.inputs {
        let v = inputs
            .get(&t.name)
            .ok_or_else(|| CompileError::Interp(format!("missing graph input '{}'", t.name)))?;
        let ok = v.ndim() == t.shape.len() && (v.ndim() == 0 || v.shape()[1..] == t.shape[1..]);
        if !ok {
            return Err(CompileError::Interp(format!(
                "graph input '{}' has shape {:?}, expected {:?}",
                t.name,
                v.shape(),
                t.shape
            )));
        }
        values.insert(t.name.clone(), v.clone());
    }
    for node in &graph.nodes {
        let outs = {
            let mut args = Vec::with_capacity(node.inputs.len());
            for name in &node.inputs {
                let v = values
                    .get(name)
                    .or_else(|| graph.constants.get(name))
                    .ok_or_else(|| {
                        CompileError::Interp(format!(
                            "node '{}' reads undefined tensor '{name}'",
                            node.name
                        ))
                    })?;
                args.push(v.view());
            }
            eval_op(&node.op, &args).map_err(|e| match e {
                CompileError::Interp(m) => {
                    CompileError::Interp(format!("node '{}' ({}): {m}", node.name, node.op.name()))
                }
                other => other,
            })?
        };
        for (name, v) in node.outputs.iter().zip(outs) {
            values.insert(name.clone(), v);
        }
    }
    Ok(values)
}

/// Evaluates one operator on concrete inputs.
pub fn eval_op(op: &Op, inputs: &[ArrayViewD<'_, f32>]) -> Result<Vec<ArrayD<f32>>> {
    let shapes: Vec<&[usize]> = inputs.iter().map(|a| a.shape()).collect();
    let out_shapes = shape::infer(op, &shapes).map_err(CompileError::Interp)?;
    let x = &inputs[0];
    let y = match op {
        Op::Gemm {
            alpha,
            beta,
            trans_a,
            trans_b,
        } => {
            let a = as_2d(x)?;
            let b = as_2d(&inputs[1])?;
            let a = if *trans_a { a.reversed_axes() } else { a };
            let b = if *trans_b { b.reversed_axes() } else { b };
            let mut y = a.dot(&b);
            if *alpha != 1.0 {
                y *= *alpha;
            }
            if let Some(c) = inputs.get(2) {
                let c = c.broadcast(y.raw_dim()).ok_or_else(|| {
                    CompileError::Interp("C does not broadcast to the output".into())
                })?;
                let beta = *beta;
                Zip::from(&mut y).and(&c).for_each(|y, &c| *y += beta * c);
            }
            y.into_dyn()
        }
        Op::MatMul => matmul(x, &inputs[1], &out_shapes[0])?,
        Op::Binary(b) => {
            let b = *b;
            let out = &out_shapes[0];
            let lhs = x.broadcast(out.as_slice()).ok_or_else(bcast_err)?;
            let rhs = inputs[1].broadcast(out.as_slice()).ok_or_else(bcast_err)?;
            Zip::from(&lhs)
                .and(&rhs)
                .map_collect(|&p, &q| b.apply(p, q))
        }
        Op::Relu => x.mapv(|v| v.max(0.0)),
        Op::Clip { min, max } => {
            let act = Activation::Clip {
                min: *min,
                max: *max,
            };
            x.mapv(|v| act.apply(v))
        }
        Op::Identity | Op::Dropout => x.to_owned(),
        Op::Flatten { .. } | Op::Reshape { .. } => reshaped(x, &out_shapes[0])?,
        Op::Softmax { axis, coerce_2d } => {
            if *coerce_2d {
                let [rows, cols] =
                    shape::flatten(x.shape(), *axis).map_err(CompileError::Interp)?;
                let mut y = reshaped(x, &[rows, cols])?;
                softmax_in_place(&mut y, 1);
                y.into_shape_with_order(IxDyn(x.shape()))
                    .map_err(interp_err)?
            } else {
                let mut y = x.to_owned();
                softmax_in_place(&mut y, *axis);
                y
            }
        }
        Op::Dense {
            weight,
            bias,
            activation,
        } => {
            let k = weight.nrows();
            let rows = x.len() / k.max(1);
            let x2 = reshaped(x, &[rows, k])?
                .into_dimensionality::<Ix2>()
                .map_err(interp_err)?;
            let mut y = x2.dot(weight);
            if let Some(b) = bias {
                y += b;
            }
            let act = *activation;
            if act != Activation::None {
                y.mapv_inplace(|v| act.apply(v));
            }
            y.into_shape_with_order(IxDyn(&out_shapes[0]))
                .map_err(interp_err)?
        }
        Op::Conv {
            stride,
            pads,
            dilation,
            groups,
        } => {
            let w = inputs[1]
                .view()
                .into_dimensionality::<Ix4>()
                .map_err(interp_err)?;
            let b = match inputs.get(2) {
                Some(b) => Some(
                    b.view()
                        .into_shape_with_order(b.len())
                        .map_err(interp_err)?,
                ),
                None => None,
            };
            let geom = conv::ConvGeometry {
                stride: *stride,
                pads: *pads,
                dilation: *dilation,
                groups: *groups,
            };
            conv2d(x, w, b, geom, Activation::None, &out_shapes[0])?
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
            let geom = conv::ConvGeometry {
                stride: *stride,
                pads: *pads,
                dilation: *dilation,
                groups: *groups,
            };
            conv2d(
                x,
                weight.view(),
                bias.as_ref().map(|b| b.view()),
                geom,
                *activation,
                &out_shapes[0],
            )?
        }
        Op::BatchNorm { epsilon } => {
            let c = x.shape()[1];
            let (mut scale, mut shift) = (vec![0.0f32; c], vec![0.0f32; c]);
            let param = |i: usize| inputs[i].iter().copied().collect::<Vec<f32>>();
            let (gamma, beta, mean, var) = (param(1), param(2), param(3), param(4));
            for ch in 0..c {
                let a = gamma[ch] / (var[ch] + epsilon).sqrt();
                scale[ch] = a;
                shift[ch] = beta[ch] - mean[ch] * a;
            }
            tensor::channel_affine(x, &scale, &shift)
        }
        Op::ChannelAffine { scale, shift } => tensor::channel_affine(
            x,
            scale.as_slice().unwrap_or(&scale.to_vec()),
            shift.as_slice().unwrap_or(&shift.to_vec()),
        ),
        Op::Pool2d {
            kind,
            kernel,
            stride,
            pads,
            dilation,
            ..
        } => {
            let out = &out_shapes[0];
            let xs = x.as_standard_layout();
            let mut y = ArrayD::<f32>::zeros(IxDyn(out));
            pool::pool2d(
                xs.as_slice().ok_or_else(|| interp_err("input layout"))?,
                [x.shape()[2], x.shape()[3]],
                *kind,
                *kernel,
                *stride,
                *pads,
                *dilation,
                y.as_slice_mut()
                    .ok_or_else(|| interp_err("output layout"))?,
                [out[2], out[3]],
            );
            y
        }
        Op::GlobalAvgPool | Op::GlobalMaxPool => {
            let xs = x.as_standard_layout();
            let plane: usize = x.shape()[2..].iter().product();
            let mut y = ArrayD::<f32>::zeros(IxDyn(&out_shapes[0]));
            pool::global_pool(
                xs.as_slice().ok_or_else(|| interp_err("input layout"))?,
                plane,
                matches!(op, Op::GlobalMaxPool),
                y.as_slice_mut()
                    .ok_or_else(|| interp_err("output layout"))?,
            );
            y
        }
        Op::Lrn {
            size,
            alpha,
            beta,
            bias,
        } => {
            let xs = x.as_standard_layout();
            let (n, c) = (x.shape()[0], x.shape()[1]);
            let s: usize = x.shape()[2..].iter().product();
            let mut y = ArrayD::<f32>::zeros(x.raw_dim());
            pool::lrn(
                xs.as_slice().ok_or_else(|| interp_err("input layout"))?,
                [n, c, s],
                *size,
                *alpha,
                *beta,
                *bias,
                y.as_slice_mut()
                    .ok_or_else(|| interp_err("output layout"))?,
            );
            y
        }
        Op::LeakyRelu { alpha } => {
            let a = *alpha;
            x.mapv(|v| if v < 0.0 { a * v } else { v })
        }
        Op::Sigmoid => x.mapv(|v| 1.0 / (1.0 + (-v).exp())),
        Op::Tanh => x.mapv(f32::tanh),
        Op::Concat { axis } => tensor::concat(inputs, *axis)?,
        Op::Transpose { perm } => tensor::transpose(x, perm),
        Op::Pad { pads, mode, value } => tensor::pad(x, pads, *mode, *value, &out_shapes[0]),
        Op::Slice { ranges } => tensor::slice(x, ranges),
        Op::Gather { axis, indices } => tensor::gather(x, *axis, indices, &out_shapes[0])?,
        Op::Expand { .. } => x
            .broadcast(IxDyn(&out_shapes[0]))
            .ok_or_else(bcast_err)?
            .as_standard_layout()
            .into_owned(),
    };
    Ok(vec![y])
}

/// Runs a 2-D convolution on an NCHW input; shapes were checked by shape inference.
fn conv2d(
    x: &ArrayViewD<'_, f32>,
    weight: ArrayView4<'_, f32>,
    bias: Option<ArrayView1<'_, f32>>,
    geom: conv::ConvGeometry,
    activation: Activation,
    out_shape: &[usize],
) -> Result<ArrayD<f32>> {
    let xs = x.as_standard_layout();
    let dims: [usize; 4] = x
        .shape()
        .try_into()
        .map_err(|_| interp_err("convolution input must be 4-D"))?;
    let mut y = ArrayD::<f32>::zeros(IxDyn(out_shape));
    conv::conv2d(
        xs.as_slice().ok_or_else(|| interp_err("input layout"))?,
        dims,
        weight,
        bias,
        geom,
        activation,
        y.as_slice_mut()
            .ok_or_else(|| interp_err("output layout"))?,
        [out_shape[2], out_shape[3]],
    );
    Ok(y)
}

fn interp_err(e: impl std::fmt::Display) -> CompileError {
    CompileError::Interp(e.to_string())
}

fn bcast_err() -> CompileError {
    CompileError::Interp("operands do not broadcast".into())
}

fn as_2d<'a>(a: &ArrayViewD<'a, f32>) -> Result<ndarray::ArrayView2<'a, f32>> {
    a.clone().into_dimensionality::<Ix2>().map_err(interp_err)
}

/// Copies `x` into a standard-layout array of `shape` (same number of elements).
fn reshaped(x: &ArrayViewD<'_, f32>, shape: &[usize]) -> Result<ArrayD<f32>> {
    x.to_shape(IxDyn(shape))
        .map(|c| c.into_owned())
        .map_err(interp_err)
}

/// Numerically stable softmax of every lane along `axis`.
fn softmax_in_place(y: &mut ArrayD<f32>, axis: usize) {
    for mut lane in y.lanes_mut(Axis(axis)) {
        let max = lane.fold(f32::NEG_INFINITY, |m, &v| m.max(v));
        let max = if max.is_finite() { max } else { 0.0 };
        lane.mapv_inplace(|v| (v - max).exp());
        let sum = lane.sum();
        lane.mapv_inplace(|v| v / sum);
    }
}

/// numpy `matmul` with batch broadcasting and 1-D promotion.
fn matmul(
    a: &ArrayViewD<'_, f32>,
    b: &ArrayViewD<'_, f32>,
    out_shape: &[usize],
) -> Result<ArrayD<f32>> {
    let a2: Vec<usize> = if a.ndim() == 1 {
        vec![1, a.len()]
    } else {
        a.shape().to_vec()
    };
    let b2: Vec<usize> = if b.ndim() == 1 {
        vec![b.len(), 1]
    } else {
        b.shape().to_vec()
    };
    let (ra, rb) = (a2.len(), b2.len());
    let (m, k, n) = (a2[ra - 2], a2[ra - 1], b2[rb - 1]);
    let bmat = reshaped(b, &b2)?;

    // A batched matrix times one shared matrix: a single large product.
    if rb == 2 {
        let rows = a.len() / k.max(1);
        let a_flat = reshaped(a, &[rows, k])?
            .into_dimensionality::<Ix2>()
            .map_err(interp_err)?;
        let bm = bmat.into_dimensionality::<Ix2>().map_err(interp_err)?;
        let y = a_flat.dot(&bm);
        return y
            .into_shape_with_order(IxDyn(out_shape))
            .map_err(interp_err);
    }

    let batch = shape::broadcast(&a2[..ra - 2], &b2[..rb - 2]).map_err(CompileError::Interp)?;
    let nb: usize = batch.iter().product();
    let full = |mk: [usize; 2]| -> Vec<usize> {
        let mut s = batch.clone();
        s.extend_from_slice(&mk);
        s
    };
    let amat = reshaped(a, &a2)?;
    let a3 = amat
        .broadcast(IxDyn(&full([m, k])))
        .ok_or_else(bcast_err)?
        .to_shape(IxDyn(&[nb, m, k]))
        .map_err(interp_err)?
        .into_owned();
    let b3 = bmat
        .broadcast(IxDyn(&full([k, n])))
        .ok_or_else(bcast_err)?
        .to_shape(IxDyn(&[nb, k, n]))
        .map_err(interp_err)?
        .into_owned();
    let mut y = ndarray::Array3::<f32>::zeros((nb, m, n));
    for (i, mut out) in y.outer_iter_mut().enumerate() {
        let ai: Array2<f32> = a3
            .index_axis(Axis(0), i)
            .into_dimensionality::<Ix2>()
            .map_err(interp_err)?
            .to_owned();
        let bi = b3
            .index_axis(Axis(0), i)
            .into_dimensionality::<Ix2>()
            .map_err(interp_err)?;
        out.assign(&ai.dot(&bi));
    }
    y.into_shape_with_order(IxDyn(out_shape))
        .map_err(interp_err)
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::{array, ArrayD};

    fn eval1(op: &Op, inputs: &[&ArrayD<f32>]) -> ArrayD<f32> {
        let views: Vec<_> = inputs.iter().map(|a| a.view()).collect();
        eval_op(op, &views).unwrap().remove(0)
    }

    #[test]
    fn softmax_is_stable_and_normalised() {
        let x = array![[1000.0f32, 1001.0, 1002.0], [-5.0, 0.0, 5.0]].into_dyn();
        let y = eval1(
            &Op::Softmax {
                axis: 1,
                coerce_2d: false,
            },
            &[&x],
        );
        for row in y.outer_iter() {
            assert!((row.sum() - 1.0).abs() < 1e-6);
            assert!(row.iter().all(|v| v.is_finite()));
        }
        assert!((y[[0, 2]] - 0.665_240_94).abs() < 1e-6);
    }

    #[test]
    fn batched_matmul_matches_loop() {
        let a = ArrayD::from_shape_fn(IxDyn(&[2, 1, 3, 4]), |i| {
            (i[0] * 7 + i[2] * 3 + i[3]) as f32 * 0.1
        });
        let b = ArrayD::from_shape_fn(IxDyn(&[3, 4, 2]), |i| {
            (i[0] + 2 * i[1] + i[2]) as f32 * 0.2 - 1.0
        });
        let y = eval1(&Op::MatMul, &[&a, &b]);
        assert_eq!(y.shape(), &[2, 3, 3, 2]);
        for p in 0..2 {
            for q in 0..3 {
                for i in 0..3 {
                    for j in 0..2 {
                        let want: f32 = (0..4).map(|t| a[[p, 0, i, t]] * b[[q, t, j]]).sum();
                        assert!((y[[p, q, i, j]] - want).abs() < 1e-5);
                    }
                }
            }
        }
        let v = array![1.0f32, 2.0, 3.0, 4.0].into_dyn();
        let bm = b.index_axis(Axis(0), 0).to_owned();
        let y = eval1(&Op::MatMul, &[&v, &bm]);
        assert_eq!(y.shape(), &[2]);
    }

    #[test]
    fn binary_broadcasts_both_ways() {
        let a = array![[1.0f32], [2.0]].into_dyn();
        let b = array![10.0f32, 20.0, 30.0].into_dyn();
        let y = eval1(&Op::Binary(crate::ir::BinaryOp::Sub), &[&a, &b]);
        assert_eq!(
            y,
            array![[-9.0f32, -19.0, -29.0], [-8.0, -18.0, -28.0]].into_dyn()
        );
        let bad = array![1.0f32, 2.0].into_dyn();
        let views = [b.view(), bad.view()];
        assert!(eval_op(&Op::Binary(crate::ir::BinaryOp::Add), &views).is_err());
    }
}
