//! Tensor operators with runtime forms (Concat, Transpose, Pad, Slice, Gather, Expand, Sum, Mean,
//! Neg as a multiplication by -1) and the
//! constant-only arithmetic real exporters emit around shapes (Range, Expand, Where,
//! comparisons, unary math), evaluated at import.

use ndarray::{ArrayD, Axis, IxDyn, Slice, Zip};

use super::{Const, Ctx, Importer, MAX_CONST_ELEMENTS};
use crate::error::Result;
use crate::ir::{BinaryOp, Op, PadMode, SliceRange};
use crate::shape;

/// One axis of an ONNX Slice of an axis of size `dim` (starts/ends clamped as the spec says).
pub(super) fn slice_range(
    dim: usize,
    start: i64,
    end: i64,
    step: i64,
) -> std::result::Result<SliceRange, String> {
    if step == 0 {
        return Err("slice step must not be 0".into());
    }
    let d = dim as i64;
    let empty = SliceRange {
        start: 0,
        step: step as isize,
        len: 0,
    };
    if dim == 0 {
        return Ok(empty);
    }
    let norm = |v: i64| if v < 0 { v.saturating_add(d) } else { v };
    let (s, e) = if step > 0 {
        (norm(start).clamp(0, d), norm(end).clamp(0, d))
    } else {
        (norm(start).clamp(0, d - 1), norm(end).clamp(-1, d - 1))
    };
    let len = if step > 0 && e > s {
        (e - s + step - 1) / step
    } else if step < 0 && s > e {
        (s - e - step - 1) / -step
    } else {
        0
    };
    if len == 0 {
        return Ok(empty);
    }
    Ok(SliceRange {
        start: s as usize,
        step: step as isize,
        len: len as usize,
    })
}

fn slice_array<T: Clone>(a: &ArrayD<T>, ranges: &[SliceRange]) -> ArrayD<T> {
    let mut v = a.view();
    for (axis, r) in ranges.iter().enumerate() {
        let s = if r.len == 0 {
            Slice::from(0..0)
        } else if r.step > 0 {
            let hi = r.start as isize + (r.len as isize - 1) * r.step + 1;
            Slice::new(r.start as isize, Some(hi), r.step)
        } else {
            let last = r.start as isize + (r.len as isize - 1) * r.step;
            Slice::new(last, Some(r.start as isize + 1), r.step)
        };
        v.slice_axis_inplace(Axis(axis), s);
    }
    v.as_standard_layout().into_owned()
}

fn permute<T: Clone>(a: &ArrayD<T>, perm: &[usize]) -> ArrayD<T> {
    a.view()
        .permuted_axes(IxDyn(perm))
        .as_standard_layout()
        .into_owned()
}

fn broadcast_to<T: Clone>(a: &ArrayD<T>, shape: &[usize]) -> Option<ArrayD<T>> {
    a.broadcast(IxDyn(shape)).map(|v| v.to_owned())
}

/// Scalar value of a one-element constant.
fn scalar(ctx: &Ctx, c: &Const, what: &str) -> Result<Const> {
    if c.len() != 1 {
        return Err(ctx.err(format!(
            "'{what}' must hold one value, got shape {:?}",
            c.shape()
        )));
    }
    c.reshape(&[]).map_err(|m| ctx.err(m))
}

impl Importer {
    /// The values of optional constant input `i`, `None` when omitted.
    fn opt_ints(&self, ctx: &Ctx, i: usize) -> Result<Option<Vec<i64>>> {
        match ctx.input(i) {
            Some(_) => Ok(Some(self.const_input(ctx, i)?.ints())),
            None => Ok(None),
        }
    }

    fn normalize_axes(&self, ctx: &Ctx, axes: &[i64], rank: usize) -> Result<Vec<usize>> {
        let norm = axes
            .iter()
            .map(|&a| shape::normalize_axis(a, rank, false))
            .collect::<std::result::Result<Vec<usize>, String>>()
            .map_err(|m| ctx.shape_err(m))?;
        let mut sorted = norm.clone();
        sorted.sort_unstable();
        if sorted.windows(2).any(|w| w[0] == w[1]) {
            return Err(ctx.err(format!("repeated axis in {axes:?}")));
        }
        Ok(norm)
    }

    pub(super) fn concat(&mut self, ctx: &Ctx) -> Result<()> {
        let names: Vec<&str> = ctx
            .node
            .input
            .iter()
            .map(String::as_str)
            .filter(|s| !s.is_empty())
            .collect();
        if names.is_empty() {
            return Err(ctx.err("has no inputs"));
        }
        let rank = self.dims_of(ctx, names[0])?.len();
        let axis = shape::normalize_axis(
            ctx.attr("axis", crate::onnx::proto::attribute_type::INT)?
                .ok_or_else(|| ctx.err("missing 'axis'"))?
                .i,
            rank,
            false,
        )
        .map_err(|m| ctx.shape_err(m))?;
        if !self.all_const(&names) {
            return self.emit(ctx, Op::Concat { axis }, &names);
        }
        let parts: Vec<&Const> = names.iter().map(|n| &self.consts[*n]).collect();
        let value = if parts.iter().all(|p| matches!(p, Const::I64(_))) {
            let arrays: Vec<ArrayD<i64>> = parts.iter().map(|p| p.to_i64()).collect();
            let views: Vec<_> = arrays.iter().map(|a| a.view()).collect();
            Const::I64(
                ndarray::concatenate(Axis(axis), &views)
                    .map_err(|e| ctx.shape_err(e.to_string()))?,
            )
        } else {
            let arrays: Vec<ArrayD<f32>> = parts.iter().map(|p| p.to_f32()).collect();
            let views: Vec<_> = arrays.iter().map(|a| a.view()).collect();
            Const::F32(
                ndarray::concatenate(Axis(axis), &views)
                    .map_err(|e| ctx.shape_err(e.to_string()))?,
            )
        };
        self.set_const(ctx, value)
    }

    pub(super) fn transpose(&mut self, ctx: &Ctx) -> Result<()> {
        let x = ctx.req_input(0)?;
        let rank = self.dims_of(ctx, x)?.len();
        let perm = match ctx.attr_ints("perm")? {
            Some(p) => p
                .iter()
                .map(|&a| usize::try_from(a).map_err(|_| ctx.err(format!("invalid perm {p:?}"))))
                .collect::<Result<Vec<usize>>>()?,
            None => (0..rank).rev().collect(),
        };
        let op = Op::Transpose { perm: perm.clone() };
        if let Some(Const::I64(a)) = self.consts.get(x) {
            shape::infer(&op, &[a.shape()]).map_err(|m| ctx.shape_err(m))?;
            let v = Const::I64(permute(a, &perm));
            return self.set_const(ctx, v);
        }
        self.emit(ctx, op, &[x])
    }

    pub(super) fn slice(&mut self, ctx: &Ctx) -> Result<()> {
        let x = ctx.req_input(0)?;
        let dims = self.dims_of(ctx, x)?;
        let (starts, ends, axes, steps) = if ctx.opset < 10 {
            (
                ctx.attr_ints("starts")?
                    .ok_or_else(|| ctx.err("missing 'starts'"))?,
                ctx.attr_ints("ends")?
                    .ok_or_else(|| ctx.err("missing 'ends'"))?,
                ctx.attr_ints("axes")?,
                None,
            )
        } else {
            (
                self.const_input(ctx, 1)?.ints(),
                self.const_input(ctx, 2)?.ints(),
                self.opt_ints(ctx, 3)?,
                self.opt_ints(ctx, 4)?,
            )
        };
        let axes = match axes {
            Some(a) => self.normalize_axes(ctx, &a, dims.len())?,
            None => (0..starts.len()).collect(),
        };
        let steps = steps.unwrap_or_else(|| vec![1; starts.len()]);
        if ends.len() != starts.len() || axes.len() != starts.len() || steps.len() != starts.len() {
            return Err(ctx.err(format!(
                "starts, ends, axes and steps differ in length ({}, {}, {}, {})",
                starts.len(),
                ends.len(),
                axes.len(),
                steps.len()
            )));
        }
        let mut ranges: Vec<SliceRange> = dims
            .iter()
            .map(|&d| SliceRange {
                start: 0,
                step: 1,
                len: d,
            })
            .collect();
        for (i, &a) in axes.iter().enumerate() {
            if a >= dims.len() {
                return Err(ctx.shape_err(format!("axis {a} out of range")));
            }
            ranges[a] =
                slice_range(dims[a], starts[i], ends[i], steps[i]).map_err(|m| ctx.err(m))?;
        }
        match self.consts.get(x) {
            Some(Const::I64(a)) => {
                let v = Const::I64(slice_array(a, &ranges));
                self.set_const(ctx, v)
            }
            Some(Const::F32(a)) => {
                let v = Const::F32(slice_array(a, &ranges));
                self.set_const(ctx, v)
            }
            None => self.emit(ctx, Op::Slice { ranges }, &[x]),
        }
    }

    /// Gather of a runtime tensor with constant indices.
    pub(super) fn gather_runtime(&mut self, ctx: &Ctx) -> Result<()> {
        let x = ctx.req_input(0)?;
        let dims = self.dims_of(ctx, x)?;
        let axis = shape::normalize_axis(ctx.attr_i("axis", 0)?, dims.len(), false)
            .map_err(|m| ctx.shape_err(m))?;
        let idx = self.const_input(ctx, 1)?;
        let d = dims[axis] as i64;
        let indices = idx
            .to_i64()
            .mapv(|i| if i < 0 { i + d } else { i })
            .mapv(|i| usize::try_from(i).unwrap_or(usize::MAX));
        if let Some(bad) = indices.iter().find(|&&i| i >= dims[axis]) {
            let _ = bad;
            return Err(ctx.err(format!(
                "index out of range for dim {} in {:?}",
                dims[axis],
                idx.ints()
            )));
        }
        self.emit(ctx, Op::Gather { axis, indices }, &[x])
    }

    pub(super) fn pad(&mut self, ctx: &Ctx) -> Result<()> {
        let x = ctx.req_input(0)?;
        let dims = self.dims_of(ctx, x)?;
        let rank = dims.len();
        let mode = match ctx.attr_s("mode")?.as_deref().unwrap_or("constant") {
            "constant" => PadMode::Constant,
            "reflect" => PadMode::Reflect,
            "edge" => PadMode::Edge,
            "wrap" => PadMode::Wrap,
            other => return Err(ctx.err(format!("pad mode '{other}' is not supported"))),
        };
        let (raw, value, axes) = if ctx.opset < 11 {
            (
                ctx.attr_ints("pads")?
                    .ok_or_else(|| ctx.err("missing 'pads'"))?,
                ctx.attr_f("value", 0.0)?,
                None,
            )
        } else {
            let value = match ctx.input(2) {
                Some(_) => {
                    let c = scalar(ctx, self.const_input(ctx, 2)?, "constant_value")?;
                    c.to_f32().iter().copied().next().unwrap_or(0.0)
                }
                None => 0.0,
            };
            let axes = if ctx.opset >= 18 {
                self.opt_ints(ctx, 3)?
            } else {
                None
            };
            (self.const_input(ctx, 1)?.ints(), value, axes)
        };
        let axes = match axes {
            Some(a) => self.normalize_axes(ctx, &a, rank)?,
            None => (0..rank).collect(),
        };
        if raw.len() != 2 * axes.len() {
            return Err(ctx.err(format!("{} pads for {} axes", raw.len(), axes.len())));
        }
        let mut pads = vec![[0usize; 2]; rank];
        let n = axes.len();
        for (i, &a) in axes.iter().enumerate() {
            let (b, e) = (raw[i], raw[n + i]);
            if b < 0 || e < 0 {
                return Err(ctx.err(format!("negative pads {raw:?} are not supported")));
            }
            pads[a] = [b as usize, e as usize];
        }
        let op = Op::Pad { pads, mode, value };
        self.emit(ctx, op, &[x])
    }

    /// Sum and Mean of one or more inputs: a chain of Adds (then a division by the count).
    pub(super) fn sum_mean(&mut self, ctx: &Ctx, mean: bool) -> Result<()> {
        let names: Vec<&str> = ctx
            .node
            .input
            .iter()
            .map(String::as_str)
            .filter(|s| !s.is_empty())
            .collect();
        let out = ctx.output()?.to_string();
        match names.as_slice() {
            [] => Err(ctx.err("has no inputs")),
            [x] => self.emit(ctx, Op::Identity, &[x]),
            [first, rest @ ..] => {
                let mut acc = first.to_string();
                for (i, name) in rest.iter().enumerate() {
                    let last = i + 1 == rest.len() && !mean;
                    let (node, target) = if last {
                        (ctx.name.clone(), out.clone())
                    } else {
                        (
                            self.temp_node_name(ctx, &format!("add{}", i + 1)),
                            self.temp_name(ctx, &format!("sum{}", i + 1))?,
                        )
                    };
                    self.emit_as(
                        ctx,
                        node,
                        Op::Binary(BinaryOp::Add),
                        &[&acc, name],
                        target.clone(),
                    )?;
                    acc = target;
                }
                if mean {
                    let count = self.temp_name(ctx, "count")?;
                    let n = names.len() as f32;
                    self.consts
                        .insert(count.clone(), Const::F32(ArrayD::from_elem(IxDyn(&[]), n)));
                    self.emit_as(
                        ctx,
                        ctx.name.clone(),
                        Op::Binary(BinaryOp::Div),
                        &[&acc, &count],
                        out,
                    )?;
                }
                Ok(())
            }
        }
    }

    pub(super) fn range(&mut self, ctx: &Ctx) -> Result<()> {
        let start = scalar(ctx, self.const_input(ctx, 0)?, "start")?;
        let limit = scalar(ctx, self.const_input(ctx, 1)?, "limit")?;
        let delta = scalar(ctx, self.const_input(ctx, 2)?, "delta")?;
        let first = |c: &Const| c.to_f32().iter().copied().next().unwrap_or(0.0);
        let value = match (&start, &limit, &delta) {
            (Const::I64(s), Const::I64(l), Const::I64(d)) => {
                let (s, l, d) = (s.sum(), l.sum(), d.sum());
                if d == 0 {
                    return Err(ctx.err("delta must not be 0"));
                }
                let n = if (d > 0 && l > s) || (d < 0 && l < s) {
                    ((l - s).unsigned_abs().div_ceil(d.unsigned_abs())) as usize
                } else {
                    0
                };
                if n > MAX_CONST_ELEMENTS {
                    return Err(ctx.err(format!("range of {n} values is too large")));
                }
                Const::I64(ArrayD::from_shape_fn(IxDyn(&[n]), |i| s + i[0] as i64 * d))
            }
            _ => {
                let (s, l, d) = (first(&start), first(&limit), first(&delta));
                let n = ((l - s) / d).ceil();
                if !n.is_finite() {
                    return Err(ctx.err("range size is not finite"));
                }
                let n = n.max(0.0) as usize;
                if n > MAX_CONST_ELEMENTS {
                    return Err(ctx.err(format!("range of {n} values is too large")));
                }
                Const::F32(ArrayD::from_shape_fn(IxDyn(&[n]), |i| s + i[0] as f32 * d))
            }
        };
        self.set_const(ctx, value)
    }

    pub(super) fn expand(&mut self, ctx: &Ctx) -> Result<()> {
        let x = ctx.req_input(0)?;
        let spec = self.const_input(ctx, 1)?.ints();
        let spec: Vec<usize> = spec
            .iter()
            .map(|&d| usize::try_from(d).map_err(|_| ctx.err(format!("negative dim in {spec:?}"))))
            .collect::<Result<_>>()?;
        let dims = self.dims_of(ctx, x)?;
        let target = shape::broadcast(&dims, &spec).map_err(|m| ctx.shape_err(m))?;
        if target.iter().product::<usize>() > MAX_CONST_ELEMENTS {
            return Err(ctx.err(format!("shape {target:?} is too large")));
        }
        let value = match self.consts.get(x) {
            Some(Const::I64(a)) => broadcast_to(a, &target).map(Const::I64),
            Some(Const::F32(a)) => broadcast_to(a, &target).map(Const::F32),
            None => return self.emit(ctx, Op::Expand { shape: spec }, &[x]),
        };
        let value = value.ok_or_else(|| ctx.shape_err("does not broadcast"))?;
        self.set_const(ctx, value)
    }

    /// Elementwise operators evaluated only at import (all inputs constant).
    pub(super) fn const_elementwise(&mut self, ctx: &Ctx) -> Result<()> {
        let names: Vec<&str> = ctx
            .node
            .input
            .iter()
            .map(String::as_str)
            .filter(|s| !s.is_empty())
            .collect();
        if let ("Neg", [x]) = (ctx.op_type(), names.as_slice()) {
            if !self.consts.contains_key(*x) {
                // -x == x * -1 exactly: a runtime Neg is a multiplication.
                let minus_one = self.temp_name(ctx, "minus_one")?;
                self.consts.insert(
                    minus_one.clone(),
                    Const::F32(ArrayD::from_elem(IxDyn(&[]), -1.0)),
                );
                return self.emit(ctx, Op::Binary(BinaryOp::Mul), &[x, &minus_one]);
            }
        }
        for (i, n) in names.iter().enumerate() {
            if !self.consts.contains_key(*n) {
                return Err(ctx.err(format!(
                    "input '{n}' (#{i}) must be a constant: {} is only evaluated at compile time",
                    ctx.op_type()
                )));
            }
        }
        let args: Vec<&Const> = names.iter().map(|n| &self.consts[*n]).collect();
        let all_int = args.iter().all(|a| matches!(a, Const::I64(_)));
        let unary = |f: fn(f32) -> f32, g: Option<fn(i64) -> i64>| -> Result<Const> {
            let a = args.first().ok_or_else(|| ctx.err("missing input"))?;
            Ok(match (a, g) {
                (Const::I64(v), Some(g)) => Const::I64(v.mapv(g)),
                _ => Const::F32(a.to_f32().mapv(f)),
            })
        };
        let binary = |f: fn(f64, f64) -> f64| -> Result<ArrayD<f64>> {
            let [a, b] = args.as_slice() else {
                return Err(ctx.err("expects two inputs"));
            };
            let out = shape::broadcast(a.shape(), b.shape()).map_err(|m| ctx.shape_err(m))?;
            let to64 = |c: &Const| match c {
                Const::I64(v) => v.mapv(|x| x as f64),
                Const::F32(v) => v.mapv(f64::from),
            };
            let (a, b) = (to64(a), to64(b));
            let a = a
                .broadcast(IxDyn(&out))
                .ok_or_else(|| ctx.shape_err("broadcast"))?;
            let b = b
                .broadcast(IxDyn(&out))
                .ok_or_else(|| ctx.shape_err("broadcast"))?;
            Ok(Zip::from(&a).and(&b).map_collect(|&p, &q| f(p, q)))
        };
        let as_bool = |a: ArrayD<f64>| Const::I64(a.mapv(|v| i64::from(v != 0.0)));
        let numeric = |a: ArrayD<f64>| {
            if all_int {
                Const::I64(a.mapv(|v| v as i64))
            } else {
                Const::F32(a.mapv(|v| v as f32))
            }
        };
        let value = match ctx.op_type() {
            "Neg" => unary(|v| -v, Some(|v: i64| v.wrapping_neg()))?,
            "Abs" => unary(f32::abs, Some(|v: i64| v.wrapping_abs()))?,
            "Floor" => unary(f32::floor, Some(|v| v))?,
            "Ceil" => unary(f32::ceil, Some(|v| v))?,
            "Sqrt" => unary(f32::sqrt, None)?,
            "Exp" => unary(f32::exp, None)?,
            "Log" => unary(f32::ln, None)?,
            "Reciprocal" => unary(|v| 1.0 / v, None)?,
            "Not" => unary(
                |v| f32::from(u8::from(v == 0.0)),
                Some(|v: i64| i64::from(v == 0)),
            )?,
            "Equal" => as_bool(binary(|a, b| f64::from(u8::from(a == b)))?),
            "Less" => as_bool(binary(|a, b| f64::from(u8::from(a < b)))?),
            "Greater" => as_bool(binary(|a, b| f64::from(u8::from(a > b)))?),
            "LessOrEqual" => as_bool(binary(|a, b| f64::from(u8::from(a <= b)))?),
            "GreaterOrEqual" => as_bool(binary(|a, b| f64::from(u8::from(a >= b)))?),
            "And" => as_bool(binary(|a, b| f64::from(u8::from(a != 0.0 && b != 0.0)))?),
            "Or" => as_bool(binary(|a, b| f64::from(u8::from(a != 0.0 || b != 0.0)))?),
            "Pow" => numeric(binary(f64::powf)?),
            "Max" | "Min" => {
                let max = ctx.op_type() == "Max";
                let mut acc = args
                    .first()
                    .map(|a| match a {
                        Const::I64(v) => v.mapv(|x| x as f64),
                        Const::F32(v) => v.mapv(f64::from),
                    })
                    .ok_or_else(|| ctx.err("has no inputs"))?;
                for a in &args[1..] {
                    let b = match a {
                        Const::I64(v) => v.mapv(|x| x as f64),
                        Const::F32(v) => v.mapv(f64::from),
                    };
                    let out =
                        shape::broadcast(acc.shape(), b.shape()).map_err(|m| ctx.shape_err(m))?;
                    let p = acc
                        .broadcast(IxDyn(&out))
                        .ok_or_else(|| ctx.shape_err("broadcast"))?;
                    let q = b
                        .broadcast(IxDyn(&out))
                        .ok_or_else(|| ctx.shape_err("broadcast"))?;
                    acc = Zip::from(&p).and(&q).map_collect(
                        |&p, &q| {
                            if max {
                                p.max(q)
                            } else {
                                p.min(q)
                            }
                        },
                    );
                }
                numeric(acc)
            }
            "Where" => {
                let [c, a, b] = args.as_slice() else {
                    return Err(ctx.err("expects three inputs"));
                };
                let out = shape::broadcast(c.shape(), a.shape())
                    .and_then(|s| shape::broadcast(&s, b.shape()))
                    .map_err(|m| ctx.shape_err(m))?;
                let cond = c.to_f32();
                let cond = cond
                    .broadcast(IxDyn(&out))
                    .ok_or_else(|| ctx.shape_err("broadcast"))?;
                match (a, b) {
                    (Const::I64(p), Const::I64(q)) => {
                        let p = p
                            .broadcast(IxDyn(&out))
                            .ok_or_else(|| ctx.shape_err("broadcast"))?;
                        let q = q
                            .broadcast(IxDyn(&out))
                            .ok_or_else(|| ctx.shape_err("broadcast"))?;
                        Const::I64(Zip::from(&cond).and(&p).and(&q).map_collect(|&c, &p, &q| {
                            if c != 0.0 {
                                p
                            } else {
                                q
                            }
                        }))
                    }
                    _ => {
                        let (p, q) = (a.to_f32(), b.to_f32());
                        let p = p
                            .broadcast(IxDyn(&out))
                            .ok_or_else(|| ctx.shape_err("broadcast"))?;
                        let q = q
                            .broadcast(IxDyn(&out))
                            .ok_or_else(|| ctx.shape_err("broadcast"))?;
                        Const::F32(Zip::from(&cond).and(&p).and(&q).map_collect(|&c, &p, &q| {
                            if c != 0.0 {
                                p
                            } else {
                                q
                            }
                        }))
                    }
                }
            }
            other => return Err(ctx.err(format!("'{other}' cannot be evaluated"))),
        };
        self.set_const(ctx, value)
    }

    pub(super) fn size(&mut self, ctx: &Ctx) -> Result<()> {
        let x = ctx.req_input(0)?;
        let n: usize = self.dims_of(ctx, x)?.iter().product();
        self.set_const(ctx, Const::I64(ArrayD::from_elem(IxDyn(&[]), n as i64)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slice_ranges_follow_onnx_clamping() {
        let r = slice_range(10, 1, 1000, 2).unwrap();
        assert_eq!((r.start, r.len), (1, 5));
        let r = slice_range(10, -1, i64::MIN, -1).unwrap();
        assert_eq!((r.start, r.len, r.step), (9, 10, -1));
        let r = slice_range(10, 20, 0, -3).unwrap();
        assert_eq!((r.start, r.len), (9, 3));
        assert_eq!(slice_range(10, 5, 2, 1).unwrap().len, 0);
        assert!(slice_range(10, 0, 1, 0).is_err());
        let a = ArrayD::from_shape_vec(IxDyn(&[5]), vec![0i64, 1, 2, 3, 4]).unwrap();
        let r = slice_range(5, -1, -6, -2).unwrap();
        assert_eq!(
            slice_array(&a, &[r]).iter().copied().collect::<Vec<_>>(),
            vec![4, 2, 0]
        );
    }
}
