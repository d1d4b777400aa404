//! 2-D convolution: im2col on chunks of output positions and a matrix product per chunk, run in
//! parallel over (batch, group, chunk); depthwise convolutions use a direct loop per channel.

use ndarray::{linalg::general_mat_mul, ArrayView1, ArrayView2, ArrayView4, ArrayViewMut2, Axis};
use rayon::prelude::*;

use crate::ir::Activation;

/// Geometry of a 2-D convolution (see [`crate::ir::Op::Conv2d`]).
#[derive(Clone, Copy, Debug)]
pub(crate) struct ConvGeometry {
    pub stride: [usize; 2],
    pub pads: [usize; 4],
    pub dilation: [usize; 2],
    pub groups: usize,
}

/// Target size of one im2col chunk in f32 values (2 MiB).
const CHUNK_VALUES: usize = 1 << 19;

/// Convolves `x: [N, C, H, W]` (standard layout, as a slice) with `weight: [O, C/g, kh, kw]`.
/// `out` is `[N, O, oh, ow]` in standard layout. Shapes were checked by shape inference.
#[allow(clippy::too_many_arguments)]
pub(crate) fn conv2d(
    x: &[f32],
    x_shape: [usize; 4],
    weight: ArrayView4<'_, f32>,
    bias: Option<ArrayView1<'_, f32>>,
    geom: ConvGeometry,
    activation: Activation,
    out: &mut [f32],
    out_hw: [usize; 2],
) {
    let [n, c, h, w] = x_shape;
    let (o, cg, kh, kw) = weight.dim();
    let g = geom.groups;
    let og = o / g;
    let [oh, ow] = out_hw;
    let p = oh * ow;
    if n == 0 || p == 0 || o == 0 {
        return;
    }
    let finish = |o_index: usize, values: &mut [f32]| {
        let b = bias.map_or(0.0, |b| b[o_index]);
        if b != 0.0 || activation != Activation::None {
            for v in values {
                *v = activation.apply(*v + b);
            }
        }
    };

    if cg == 1 && og == 1 {
        // Depthwise: one input channel per output channel.
        let weight = weight.as_standard_layout();
        let wflat = weight.as_slice().unwrap_or(&[]);
        out.par_chunks_mut(p).enumerate().for_each(|(plane, y)| {
            let (ni, oc) = (plane / o, plane % o);
            let ic = oc; // cg == 1, og == 1: channel oc reads input channel oc
            let xin = &x[(ni * c + ic) * h * w..][..h * w];
            y.fill(0.0);
            for ki in 0..kh {
                for kj in 0..kw {
                    let wv = wflat[(oc * kh + ki) * kw + kj];
                    let (lo, hi) =
                        valid_range(ow, w, geom.stride[1], kj * geom.dilation[1], geom.pads[1]);
                    if lo >= hi {
                        continue;
                    }
                    for oy in 0..oh {
                        let Some(iy) =
                            in_index(oy, geom.stride[0], ki * geom.dilation[0], geom.pads[0], h)
                        else {
                            continue;
                        };
                        let row = &xin[iy * w..][..w];
                        let yrow = &mut y[oy * ow..][lo..hi];
                        let first = lo * geom.stride[1] + kj * geom.dilation[1] - geom.pads[1];
                        for (j, yv) in yrow.iter_mut().enumerate() {
                            *yv += wv * row[first + j * geom.stride[1]];
                        }
                    }
                }
            }
            finish(oc, y);
        });
        return;
    }

    let k = cg * kh * kw;
    let weight = weight.as_standard_layout();
    let wmat = weight
        .view()
        .into_shape_with_order((o, k))
        .expect("standard-layout weight reshapes to [O, K]");
    let pointwise =
        kh == 1 && kw == 1 && geom.stride == [1, 1] && geom.pads == [0; 4] && (oh, ow) == (h, w);

    // Chunk width: about CHUNK_VALUES im2col values, and enough chunks to keep every thread busy.
    let threads = rayon::current_num_threads().max(1);
    let mut pc = (CHUNK_VALUES / k.max(1)).clamp(32, p.max(32)).min(p);
    let planes = n * g;
    let per_plane = (2 * threads).div_ceil(planes);
    if p.div_ceil(pc) < per_plane {
        pc = p.div_ceil(per_plane).max(16).min(p);
    }

    // Disjoint output views: (batch, group, first position, [og, len] view).
    let mut tasks: Vec<(usize, usize, usize, ArrayViewMut2<'_, f32>)> = Vec::new();
    for (ni, plane) in out.chunks_mut(o * p).enumerate() {
        let mut rest = ArrayViewMut2::from_shape((o, p), plane).expect("output plane");
        for gi in 0..g {
            let (group, tail) = rest.split_at(Axis(0), og);
            rest = tail;
            let mut cols = group;
            let mut p0 = 0;
            while p0 < p {
                let len = pc.min(p - p0);
                let (chunk, tail) = cols.split_at(Axis(1), len);
                cols = tail;
                tasks.push((ni, gi, p0, chunk));
                p0 += len;
            }
        }
    }

    tasks.into_par_iter().for_each(|(ni, gi, p0, mut y)| {
        let len = y.ncols();
        let wg = wmat.slice(ndarray::s![gi * og..(gi + 1) * og, ..]);
        let xn = &x[ni * c * h * w..][..c * h * w];
        if pointwise {
            let xg = ArrayView2::from_shape((cg, h * w), &xn[gi * cg * h * w..][..cg * h * w])
                .expect("input plane");
            let cols = xg.slice(ndarray::s![.., p0..p0 + len]);
            general_mat_mul(1.0, &wg, &cols, 0.0, &mut y);
        } else {
            let mut col = vec![0.0f32; k * len];
            im2col(
                xn,
                [h, w],
                gi * cg,
                cg,
                [kh, kw],
                geom,
                ow,
                p0,
                &mut col,
                len,
            );
            let cols = ArrayView2::from_shape((k, len), &col).expect("im2col buffer");
            general_mat_mul(1.0, &wg, &cols, 0.0, &mut y);
        }
        for (oi, mut row) in y.outer_iter_mut().enumerate() {
            if let Some(values) = row.as_slice_mut() {
                finish(gi * og + oi, values);
            } else {
                let b = bias.map_or(0.0, |b| b[gi * og + oi]);
                row.mapv_inplace(|v| activation.apply(v + b));
            }
        }
    });
}

/// Input index `o * stride + offset - pad` when it lies in `0..size`.
#[inline]
fn in_index(o: usize, stride: usize, offset: usize, pad: usize, size: usize) -> Option<usize> {
    let i = (o * stride + offset).checked_sub(pad)?;
    (i < size).then_some(i)
}

/// Range of output positions `lo..hi` (of `out`) whose input index
/// `o * stride + offset - pad` lies in `0..size`.
#[inline]
fn valid_range(
    out: usize,
    size: usize,
    stride: usize,
    offset: usize,
    pad: usize,
) -> (usize, usize) {
    // o * stride + offset >= pad
    let lo = pad.saturating_sub(offset).div_ceil(stride);
    // o * stride + offset - pad <= size - 1
    let hi = if size + pad > offset {
        ((size + pad - offset - 1) / stride + 1).min(out)
    } else {
        0
    };
    (lo.min(hi), hi)
}

/// Writes the `[cg * kh * kw, len]` im2col matrix of output positions `p0..p0 + len` into `col`.
#[allow(clippy::too_many_arguments)]
fn im2col(
    xn: &[f32],
    [h, w]: [usize; 2],
    c0: usize,
    cg: usize,
    [kh, kw]: [usize; 2],
    geom: ConvGeometry,
    ow: usize,
    p0: usize,
    col: &mut [f32],
    len: usize,
) {
    let [sh, sw] = geom.stride;
    let [dh, dw] = geom.dilation;
    let (pt, pl) = (geom.pads[0], geom.pads[1]);
    for ci in 0..cg {
        let plane = &xn[(c0 + ci) * h * w..][..h * w];
        for ki in 0..kh {
            for kj in 0..kw {
                let r = (ci * kh + ki) * kw + kj;
                let dst = &mut col[r * len..][..len];
                let (lo, hi) = valid_range(ow, w, sw, kj * dw, pl);
                let mut idx = 0;
                let mut pos = p0;
                while idx < len {
                    let oy = pos / ow;
                    let ox0 = pos % ow;
                    let ox1 = ow.min(ox0 + (len - idx));
                    let seg = &mut dst[idx..idx + (ox1 - ox0)];
                    match in_index(oy, sh, ki * dh, pt, h) {
                        None => seg.fill(0.0),
                        Some(iy) => {
                            let row = &plane[iy * w..][..w];
                            let a = lo.clamp(ox0, ox1);
                            let b = hi.clamp(a, ox1);
                            seg[..a - ox0].fill(0.0);
                            seg[b - ox0..].fill(0.0);
                            if a < b {
                                let first = a * sw + kj * dw - pl;
                                let out = &mut seg[a - ox0..b - ox0];
                                if sw == 1 {
                                    out.copy_from_slice(&row[first..first + out.len()]);
                                } else {
                                    for (j, v) in out.iter_mut().enumerate() {
                                        *v = row[first + j * sw];
                                    }
                                }
                            }
                        }
                    }
                    idx += ox1 - ox0;
                    pos += ox1 - ox0;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn valid_ranges() {
        // stride 1, pad 1, offset 0: ox = 0 reads -1.
        assert_eq!(valid_range(5, 5, 1, 0, 1), (1, 5));
        // offset 2 (third tap), pad 1: ox = 4 reads 5.
        assert_eq!(valid_range(5, 5, 1, 2, 1), (0, 4));
        // stride 2.
        assert_eq!(valid_range(3, 5, 2, 0, 1), (1, 3));
        // everything out of range.
        assert_eq!(valid_range(2, 1, 1, 5, 0), (0, 0));
    }
}
