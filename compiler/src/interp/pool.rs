//! Pooling and local response normalization, parallel over (batch, channel) planes.

use rayon::prelude::*;

use crate::ir::PoolKind;

/// Input taps of every output position along one axis.
struct AxisTaps {
    /// Valid input indices of output position `o`: `taps[starts[o]..starts[o + 1]]`.
    starts: Vec<usize>,
    taps: Vec<usize>,
    /// Number of window positions inside the explicitly padded extent (for
    /// `count_include_pad`).
    padded_count: Vec<usize>,
}

impl AxisTaps {
    #[allow(clippy::too_many_arguments)]
    fn new(
        input: usize,
        out: usize,
        kernel: usize,
        stride: usize,
        pad_begin: usize,
        pad_end: usize,
        dilation: usize,
    ) -> Self {
        let mut starts = Vec::with_capacity(out + 1);
        let mut taps = Vec::new();
        let mut padded_count = Vec::with_capacity(out);
        starts.push(0);
        for o in 0..out {
            let mut counted = 0;
            for k in 0..kernel {
                // Position in padded coordinates.
                let q = o * stride + k * dilation;
                if q < input + pad_begin + pad_end {
                    counted += 1;
                }
                if let Some(i) = q.checked_sub(pad_begin).filter(|&i| i < input) {
                    taps.push(i);
                }
            }
            starts.push(taps.len());
            padded_count.push(counted);
        }
        AxisTaps {
            starts,
            taps,
            padded_count,
        }
    }

    #[inline]
    fn of(&self, o: usize) -> &[usize] {
        &self.taps[self.starts[o]..self.starts[o + 1]]
    }
}

/// 2-D pooling of `x: [N, C, H, W]` (standard layout) into `out: [N, C, oh, ow]`.
#[allow(clippy::too_many_arguments)]
pub(crate) fn pool2d(
    x: &[f32],
    [h, w]: [usize; 2],
    kind: PoolKind,
    kernel: [usize; 2],
    stride: [usize; 2],
    pads: [usize; 4],
    dilation: [usize; 2],
    out: &mut [f32],
    [oh, ow]: [usize; 2],
) {
    if oh * ow == 0 || h * w == 0 {
        out.fill(match kind {
            PoolKind::Max => f32::NEG_INFINITY,
            PoolKind::Avg { .. } => f32::NAN,
        });
        return;
    }
    let ty = AxisTaps::new(h, oh, kernel[0], stride[0], pads[0], pads[2], dilation[0]);
    let tx = AxisTaps::new(w, ow, kernel[1], stride[1], pads[1], pads[3], dilation[1]);
    out.par_chunks_mut(oh * ow)
        .zip(x.par_chunks(h * w))
        .for_each(|(y, plane)| {
            for oy in 0..oh {
                let rows = ty.of(oy);
                for ox in 0..ow {
                    let cols = tx.of(ox);
                    let v = match kind {
                        PoolKind::Max => {
                            let mut m = f32::NEG_INFINITY;
                            for &iy in rows {
                                let row = &plane[iy * w..][..w];
                                for &ix in cols {
                                    // NaN propagates like numpy's max.
                                    let v = row[ix];
                                    if v > m || v.is_nan() {
                                        m = v;
                                    }
                                }
                            }
                            m
                        }
                        PoolKind::Avg { count_include_pad } => {
                            let mut s = 0.0f32;
                            for &iy in rows {
                                let row = &plane[iy * w..][..w];
                                for &ix in cols {
                                    s += row[ix];
                                }
                            }
                            let n = if count_include_pad {
                                ty.padded_count[oy] * tx.padded_count[ox]
                            } else {
                                rows.len() * cols.len()
                            };
                            s / n as f32
                        }
                    };
                    y[oy * ow + ox] = v;
                }
            }
        });
}

/// Global pooling: one value per plane of `plane` values.
pub(crate) fn global_pool(x: &[f32], plane: usize, max: bool, out: &mut [f32]) {
    out.par_iter_mut()
        .zip(x.par_chunks(plane.max(1)))
        .for_each(|(y, p)| {
            *y = if max {
                p.iter().fold(
                    f32::NEG_INFINITY,
                    |m, &v| {
                        if v > m || v.is_nan() {
                            v
                        } else {
                            m
                        }
                    },
                )
            } else {
                // Pairwise-friendly accumulation in f64 keeps large planes accurate.
                (p.iter().map(|&v| f64::from(v)).sum::<f64>() / p.len() as f64) as f32
            };
        });
}

/// Local response normalization across channels of `x: [N, C, S]` (standard layout).
pub(crate) fn lrn(
    x: &[f32],
    [n, c, s]: [usize; 3],
    size: usize,
    alpha: f32,
    beta: f32,
    bias: f32,
    out: &mut [f32],
) {
    let before = (size - 1) / 2;
    let after = size / 2;
    let scale = alpha / size as f32;
    out.par_chunks_mut(s.max(1))
        .enumerate()
        .take(n * c)
        .for_each(|(plane, y)| {
            let (ni, ci) = (plane / c, plane % c);
            let lo = ci.saturating_sub(before);
            let hi = (ci + after).min(c - 1);
            let base = ni * c * s;
            for (j, yv) in y.iter_mut().enumerate() {
                let mut sq = 0.0f32;
                for cc in lo..=hi {
                    let v = x[base + cc * s + j];
                    sq += v * v;
                }
                *yv = x[base + ci * s + j] / (bias + scale * sq).powf(beta);
            }
        });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn taps_with_padding_and_ceil() {
        // in 5, kernel 3, stride 2, pads 1/1: outputs at padded 0, 2, 4.
        let t = AxisTaps::new(5, 3, 3, 2, 1, 1, 1);
        assert_eq!(t.of(0), &[0, 1]);
        assert_eq!(t.of(1), &[1, 2, 3]);
        assert_eq!(t.of(2), &[3, 4]);
        assert_eq!(t.padded_count, vec![3, 3, 3]);
        // ceil_mode extra window: in 4, kernel 2, stride 2 no pads, out 3 (last starts at 4).
        let t = AxisTaps::new(5, 3, 2, 2, 0, 0, 1);
        assert_eq!(t.of(2), &[4]);
        assert_eq!(t.padded_count[2], 1);
    }
}
