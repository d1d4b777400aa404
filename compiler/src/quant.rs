//! Calibration and int8 quantization.
//!
//! Activations are quantized per tensor with affine int8 parameters calibrated by running the
//! fp32 interpreter over sample inputs and recording every tensor's range; weights are quantized
//! symmetrically per output channel. The integer arithmetic that follows is defined in
//! `sinter_isa::numeric`, which the functional model and the RTL share.

use std::collections::HashMap;

use ndarray::{Array1, Array2, ArrayD, Axis};
use sinter_isa::numeric::{quantize_multiplier, QParams};

use crate::error::{CompileError, Result};
use crate::interp;
use crate::ir::{Activation, Graph};

/// Observed value range of a tensor.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Range {
    pub min: f32,
    pub max: f32,
}

/// Ranges of every tensor computed by the graph, from calibration samples.
#[derive(Clone, Debug, Default)]
pub struct Calibration {
    pub ranges: HashMap<String, Range>,
    pub samples: usize,
}

impl Calibration {
    /// Runs `graph` on `samples` (the first axis indexes samples of the single graph input), one
    /// batch of the graph's input at a time, and records min/max of every tensor.
    pub fn collect(graph: &Graph, samples: &ArrayD<f32>) -> Result<Calibration> {
        let input = match graph.inputs.as_slice() {
            [one] => one,
            _ => {
                return Err(CompileError::Quant(format!(
                    "calibration supports models with exactly one input, this one has {}",
                    graph.inputs.len()
                )))
            }
        };
        if samples.ndim() != input.shape.len() || samples.shape()[1..] != input.shape[1..] {
            return Err(CompileError::Quant(format!(
                "calibration data has shape {:?}, but input '{}' is {:?} (first axis: samples)",
                samples.shape(),
                input.name,
                input.shape
            )));
        }
        let n = samples.shape()[0];
        if n == 0 {
            return Err(CompileError::Quant(
                "calibration data holds no samples".into(),
            ));
        }
        // Models with a fixed batch (shapes folded at export) run one batch at a time; the last
        // chunk is topped up with copies of its first sample, which leaves every range as is.
        let b = input.shape[0].max(1);
        let mut ranges: HashMap<String, Range> = HashMap::new();
        for chunk in samples.axis_chunks_iter(Axis(0), b) {
            let mut batch = chunk.to_owned();
            while batch.shape()[0] < b {
                let first = batch.index_axis(Axis(0), 0).insert_axis(Axis(0)).to_owned();
                batch = ndarray::concatenate(Axis(0), &[batch.view(), first.view()])
                    .map_err(|e| CompileError::Quant(e.to_string()))?;
            }
            let inputs = HashMap::from([(input.name.clone(), batch)]);
            for (name, value) in interp::run_all(graph, &inputs)? {
                let (lo, hi) = value
                    .iter()
                    .fold((f32::INFINITY, f32::NEG_INFINITY), |(lo, hi), &v| {
                        (lo.min(v), hi.max(v))
                    });
                if !(lo.is_finite() && hi.is_finite()) {
                    return Err(CompileError::Quant(format!(
                        "tensor '{name}' takes non-finite values on the calibration data"
                    )));
                }
                ranges
                    .entry(name)
                    .and_modify(|r| {
                        r.min = r.min.min(lo);
                        r.max = r.max.max(hi);
                    })
                    .or_insert(Range { min: lo, max: hi });
            }
        }
        Ok(Calibration { ranges, samples: n })
    }

    /// Quantization parameters of a tensor.
    pub fn qparams(&self, tensor: &str) -> Result<QParams> {
        let r = self.ranges.get(tensor).ok_or_else(|| {
            CompileError::Quant(format!("no calibration range for tensor '{tensor}'"))
        })?;
        Ok(QParams::from_range(r.min, r.max))
    }

    /// Quantization parameters of a tensor with zero point 0 (see [`QParams::symmetric`]).
    pub fn symmetric_qparams(&self, tensor: &str) -> Result<QParams> {
        let r = self.ranges.get(tensor).ok_or_else(|| {
            CompileError::Quant(format!("no calibration range for tensor '{tensor}'"))
        })?;
        Ok(QParams::symmetric(r.min, r.max))
    }
}

/// A fully-connected layer in integers, ready for the NPU.
#[derive(Clone, Debug)]
pub struct QuantDense {
    /// `[K, N]` int8 weights.
    pub weight: Array2<i8>,
    /// Per output channel: int32 bias (input zero point folded in), multiplier and shift.
    pub bias: Array1<i32>,
    pub mult: Array1<i32>,
    pub shift: Array1<i32>,
    pub out_zero_point: i8,
    pub clamp_lo: i8,
    pub clamp_hi: i8,
    /// Per-channel weight scales (for reports).
    pub weight_scale: Array1<f32>,
}

/// Quantizes `y = act(x W + b)` given the input and output activation parameters.
///
/// With `x = s_in (q_x - z_in)` and `W[:, n] = s_w[n] q_w[:, n]`, the int32 accumulator
/// `Σ_k q_x[k] q_w[k, n]` differs from the exact product by `z_in Σ_k q_w[k, n]`, a constant
/// per channel that is folded into the bias. The output is requantized by
/// `s_in s_w[n] / s_out`, then offset by `z_out` and clamped by the fused activation.
pub fn quantize_dense(
    weight: &Array2<f32>,
    bias: Option<&Array1<f32>>,
    activation: Activation,
    input: QParams,
    output: QParams,
) -> Result<QuantDense> {
    let (_, n) = weight.dim();
    let mut q = Array2::<i8>::zeros(weight.dim());
    let mut scales = Array1::<f32>::zeros(n);
    let mut qbias = Array1::<i32>::zeros(n);
    let mut mult = Array1::<i32>::zeros(n);
    let mut shift = Array1::<i32>::zeros(n);
    for c in 0..n {
        let col = weight.column(c);
        let max_abs = col.iter().fold(0f32, |m, v| m.max(v.abs()));
        if !max_abs.is_finite() {
            return Err(CompileError::Quant(format!(
                "weight column {c} holds non-finite values"
            )));
        }
        let s_w = if max_abs > 0.0 { max_abs / 127.0 } else { 1.0 };
        scales[c] = s_w;
        let mut sum_q: i64 = 0;
        for (k, w) in col.iter().enumerate() {
            let v = (w / s_w).round().clamp(-127.0, 127.0) as i8;
            q[[k, c]] = v;
            sum_q += v as i64;
        }
        let acc_scale = input.scale as f64 * s_w as f64;
        let b = bias.map_or(0.0, |b| b[c] as f64);
        let folded = (b / acc_scale).round() - input.zero_point as f64 * sum_q as f64;
        qbias[c] = folded.clamp(i32::MIN as f64, i32::MAX as f64) as i32;
        let (m, s) = quantize_multiplier(acc_scale / output.scale as f64)
            .map_err(|e| CompileError::Quant(format!("output channel {c}: {e}")))?;
        mult[c] = m;
        shift[c] = s;
    }
    let (clamp_lo, clamp_hi) = match activation {
        Activation::None => (i8::MIN, i8::MAX),
        Activation::Relu => (output.quantize(0.0), i8::MAX),
        Activation::Clip { min, max } => (output.quantize(min), output.quantize(max)),
    };
    Ok(QuantDense {
        weight: q,
        bias: qbias,
        mult,
        shift,
        out_zero_point: output.zero_point,
        clamp_lo,
        clamp_hi,
        weight_scale: scales,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::array;
    use sinter_isa::numeric::requant_lane;

    /// The integer layer reproduces the float layer within a couple of output steps.
    #[test]
    fn quantized_dense_tracks_float() {
        let w = array![[0.5f32, -1.0, 0.0], [0.25, 0.75, 0.0], [-0.125, 0.5, 0.0]];
        let b = array![0.1f32, -0.2, 0.3];
        let x_q = QParams::from_range(-1.0, 1.0);
        let y_q = QParams::from_range(-2.0, 2.0);
        let l = quantize_dense(&w, Some(&b), Activation::None, x_q, y_q).unwrap();
        for xs in [[0.3f32, -0.7, 0.9], [1.0, 1.0, -1.0], [0.0, 0.0, 0.0]] {
            let qx: Vec<i8> = xs.iter().map(|v| x_q.quantize(*v)).collect();
            for c in 0..3 {
                let acc: i32 = (0..3).map(|k| qx[k] as i32 * l.weight[[k, c]] as i32).sum();
                let q = requant_lane(
                    acc,
                    l.bias[c],
                    l.mult[c],
                    l.shift[c],
                    l.out_zero_point,
                    l.clamp_lo,
                    l.clamp_hi,
                );
                let real: f32 = (0..3).map(|k| xs[k] * w[[k, c]]).sum::<f32>() + b[c];
                let got = y_q.dequantize(q);
                assert!(
                    (got - real).abs() < 2.5 * y_q.scale,
                    "c={c} got {got} want {real}"
                );
            }
        }
        // The all-zero channel is exact: its output is the bias.
        assert_eq!(l.weight.column(2).iter().filter(|v| **v != 0).count(), 0);
    }

    #[test]
    fn relu_clamps_at_the_zero_point() {
        let w = array![[1.0f32]];
        let q = QParams::from_range(-1.0, 1.0);
        let out = QParams::from_range(0.0, 1.0);
        let l = quantize_dense(&w, None, Activation::Relu, q, out).unwrap();
        assert_eq!(l.clamp_lo, out.zero_point);
        let acc = q.quantize(-0.5) as i32 * l.weight[[0, 0]] as i32;
        let y = requant_lane(
            acc,
            l.bias[0],
            l.mult[0],
            l.shift[0],
            l.out_zero_point,
            l.clamp_lo,
            l.clamp_hi,
        );
        assert_eq!(out.dequantize(y), 0.0);
    }
}
