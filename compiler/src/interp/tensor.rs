//! Data movement and per-channel arithmetic: concat, transpose, pad, slice, gather, affine maps.

use ndarray::{ArrayD, ArrayViewD, Axis, IxDyn, Slice};

use crate::error::{CompileError, Result};
use crate::ir::{PadMode, SliceRange};

fn interp_err(e: impl std::fmt::Display) -> CompileError {
    CompileError::Interp(e.to_string())
}

/// `y[n, c, ...] = x[n, c, ...] * scale[c] + shift[c]`.
pub(crate) fn channel_affine(x: &ArrayViewD<'_, f32>, scale: &[f32], shift: &[f32]) -> ArrayD<f32> {
    let mut y = x.as_standard_layout().into_owned();
    let c = x.shape().get(1).copied().unwrap_or(1);
    let inner: usize = x.shape().iter().skip(2).product();
    if let Some(data) = y.as_slice_mut() {
        for (i, chunk) in data.chunks_mut(inner.max(1)).enumerate() {
            let ch = i % c.max(1);
            let (a, b) = (scale[ch], shift[ch]);
            for v in chunk {
                *v = *v * a + b;
            }
        }
    }
    y
}

/// Permutes axes into a new standard-layout array.
pub(crate) fn transpose(x: &ArrayViewD<'_, f32>, perm: &[usize]) -> ArrayD<f32> {
    x.view()
        .permuted_axes(IxDyn(perm))
        .as_standard_layout()
        .into_owned()
}

/// Concatenation along `axis`.
pub(crate) fn concat(inputs: &[ArrayViewD<'_, f32>], axis: usize) -> Result<ArrayD<f32>> {
    ndarray::concatenate(Axis(axis), inputs).map_err(interp_err)
}

/// Pads every axis by `pads[axis] = [begin, end]`.
pub(crate) fn pad(
    x: &ArrayViewD<'_, f32>,
    pads: &[[usize; 2]],
    mode: PadMode,
    value: f32,
    out_shape: &[usize],
) -> ArrayD<f32> {
    if mode == PadMode::Constant {
        let mut y = ArrayD::from_elem(IxDyn(out_shape), value);
        y.slice_each_axis_mut(|ax| {
            let [b, _] = pads[ax.axis.index()];
            Slice::from(b..b + x.shape()[ax.axis.index()])
        })
        .assign(x);
        return y;
    }
    let mut y = x.to_owned();
    for (axis, &[b, e]) in pads.iter().enumerate() {
        if b == 0 && e == 0 {
            continue;
        }
        let d = y.shape()[axis] as isize;
        let index: Vec<usize> = (-(b as isize)..d + e as isize)
            .map(|i| {
                let j = match mode {
                    PadMode::Edge => i.clamp(0, d - 1),
                    PadMode::Wrap => i.rem_euclid(d),
                    // Reflect: -1 -> 1, d -> d - 2 (shape inference keeps pads below d).
                    _ => {
                        if i < 0 {
                            -i
                        } else if i >= d {
                            2 * (d - 1) - i
                        } else {
                            i
                        }
                    }
                };
                j as usize
            })
            .collect();
        y = y.select(Axis(axis), &index);
    }
    y
}

/// Strided slice with one range per axis.
pub(crate) fn slice(x: &ArrayViewD<'_, f32>, ranges: &[SliceRange]) -> ArrayD<f32> {
    let mut v = x.view();
    for (axis, r) in ranges.iter().enumerate() {
        if r.len == 0 {
            v.slice_axis_inplace(Axis(axis), Slice::from(0..0));
            continue;
        }
        let (lo, hi) = if r.step > 0 {
            (
                r.start as isize,
                r.start as isize + (r.len as isize - 1) * r.step + 1,
            )
        } else {
            let last = r.start as isize + (r.len as isize - 1) * r.step;
            (last, r.start as isize + 1)
        };
        v.slice_axis_inplace(Axis(axis), Slice::new(lo, Some(hi), r.step));
    }
    v.as_standard_layout().into_owned()
}

/// numpy `take` along `axis`.
pub(crate) fn gather(
    x: &ArrayViewD<'_, f32>,
    axis: usize,
    indices: &ArrayD<usize>,
    out_shape: &[usize],
) -> Result<ArrayD<f32>> {
    let flat: Vec<usize> = indices.iter().copied().collect();
    let picked = x.select(Axis(axis), &flat);
    picked
        .to_shape(IxDyn(out_shape))
        .map(|v| v.into_owned())
        .map_err(interp_err)
}
