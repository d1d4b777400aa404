//! Shape inference for every [`Op`].

use crate::error::{CompileError, Result};
use crate::ir::{Graph, Op, PadMode};

/// Shape error message, wrapped with node context by the callers.
pub type ShapeResult<T> = std::result::Result<T, String>;

/// Output shapes of `op` applied to inputs of the given shapes.
pub fn infer(op: &Op, inputs: &[&[usize]]) -> ShapeResult<Vec<Vec<usize>>> {
    let (lo, hi) = op.arity();
    if inputs.len() < lo || inputs.len() > hi {
        return Err(format!("expected {lo}..={hi} inputs, got {}", inputs.len()));
    }
    let x = inputs[0];
    let out = match op {
        Op::Gemm {
            trans_a, trans_b, ..
        } => gemm(x, inputs[1], inputs.get(2).copied(), *trans_a, *trans_b)?,
        Op::MatMul => matmul(x, inputs[1])?,
        Op::Binary(_) => broadcast(x, inputs[1])?,
        Op::Relu | Op::Clip { .. } | Op::Identity | Op::Dropout => x.to_vec(),
        Op::Flatten { axis } => flatten(x, *axis)?.to_vec(),
        Op::Reshape { shape, allowzero } => reshape_target(x, shape, *allowzero)?,
        Op::Softmax { axis, .. } => {
            check_axis(*axis, x.len())?;
            x.to_vec()
        }
        Op::Conv {
            stride,
            pads,
            dilation,
            groups,
        } => {
            if let Some(b) = inputs.get(2) {
                if b.len() != 1 || inputs[1].first() != b.first() {
                    return Err(format!(
                        "bias {b:?} does not match the weight {:?}",
                        inputs[1]
                    ));
                }
            }
            let w: [usize; 4] = inputs[1]
                .try_into()
                .map_err(|_| format!("weight must be 4-D, got {:?}", inputs[1]))?;
            conv2d(x, w, *stride, *pads, *dilation, *groups)?
        }
        Op::Conv2d {
            weight,
            bias,
            stride,
            pads,
            dilation,
            groups,
            ..
        } => {
            let (o, i, kh, kw) = weight.dim();
            if let Some(b) = bias {
                if b.len() != o {
                    return Err(format!(
                        "bias has {} values, weight has {o} output channels",
                        b.len()
                    ));
                }
            }
            conv2d(x, [o, i, kh, kw], *stride, *pads, *dilation, *groups)?
        }
        Op::BatchNorm { .. } => {
            let c = channels(x)?;
            for (i, p) in inputs[1..].iter().enumerate() {
                if *p != [c] {
                    return Err(format!(
                        "parameter #{} has shape {p:?}, expected [{c}]",
                        i + 1
                    ));
                }
            }
            x.to_vec()
        }
        Op::ChannelAffine { scale, shift } => {
            let c = channels(x)?;
            if scale.len() != c || shift.len() != c {
                return Err(format!(
                    "{} scales and {} shifts for {c} channels",
                    scale.len(),
                    shift.len()
                ));
            }
            x.to_vec()
        }
        Op::Pool2d {
            kernel,
            stride,
            pads,
            dilation,
            ceil_mode,
            ..
        } => {
            let &[n, c, h, w] = x else {
                return Err(format!("input must be 4-D (NCHW), got {x:?}"));
            };
            let oh = window_out(
                h,
                kernel[0],
                stride[0],
                pads[0],
                pads[2],
                dilation[0],
                *ceil_mode,
            )?;
            let ow = window_out(
                w,
                kernel[1],
                stride[1],
                pads[1],
                pads[3],
                dilation[1],
                *ceil_mode,
            )?;
            vec![n, c, oh, ow]
        }
        Op::GlobalAvgPool | Op::GlobalMaxPool => {
            channels(x)?;
            let mut out = x.to_vec();
            for d in &mut out[2..] {
                if *d == 0 {
                    return Err(format!("cannot pool over an empty axis of {x:?}"));
                }
                *d = 1;
            }
            out
        }
        Op::Lrn { size, .. } => {
            channels(x)?;
            if *size == 0 {
                return Err("size must be at least 1".into());
            }
            x.to_vec()
        }
        Op::LeakyRelu { .. } | Op::Sigmoid | Op::Tanh => x.to_vec(),
        Op::Concat { axis } => concat(inputs, *axis)?,
        Op::Transpose { perm } => {
            let mut seen = vec![false; x.len()];
            if perm.len() != x.len()
                || perm
                    .iter()
                    .any(|&p| p >= x.len() || std::mem::replace(&mut seen[p], true))
            {
                return Err(format!(
                    "perm {perm:?} is not a permutation of {} axes",
                    x.len()
                ));
            }
            perm.iter().map(|&p| x[p]).collect()
        }
        Op::Pad { pads, mode, .. } => {
            if pads.len() != x.len() {
                return Err(format!("{} pads for rank {}", pads.len(), x.len()));
            }
            x.iter()
                .zip(pads)
                .map(|(&d, &[b, e])| {
                    let grows = b > 0 || e > 0;
                    match mode {
                        PadMode::Reflect if grows && (b >= d || e >= d) => Err(format!(
                            "reflect padding by {b} and {e} needs more than {d} values"
                        )),
                        PadMode::Edge | PadMode::Wrap if grows && d == 0 => {
                            Err("edge or wrap padding of an empty axis".to_string())
                        }
                        _ => d
                            .checked_add(b)
                            .and_then(|v| v.checked_add(e))
                            .ok_or_else(|| "padded size overflows".to_string()),
                    }
                })
                .collect::<ShapeResult<Vec<usize>>>()?
        }
        Op::Slice { ranges } => {
            if ranges.len() != x.len() {
                return Err(format!("{} ranges for rank {}", ranges.len(), x.len()));
            }
            for (r, &d) in ranges.iter().zip(x) {
                if r.len > 0 {
                    let last = r.start as i128 + (r.len as i128 - 1) * r.step as i128;
                    if r.start >= d || last < 0 || last >= d as i128 {
                        return Err(format!("range {r:?} out of bounds for dim {d}"));
                    }
                }
            }
            ranges.iter().map(|r| r.len).collect()
        }
        Op::Expand { shape } => broadcast(x, shape)?,
        Op::Gather { axis, indices } => {
            check_axis(*axis, x.len())?;
            if let Some(&i) = indices.iter().find(|&&i| i >= x[*axis]) {
                return Err(format!("index {i} out of range for dim {}", x[*axis]));
            }
            let mut out = x[..*axis].to_vec();
            out.extend_from_slice(indices.shape());
            out.extend_from_slice(&x[axis + 1..]);
            out
        }
        Op::Dense { weight, bias, .. } => {
            let (k, n) = weight.dim();
            if let Some(b) = bias {
                if b.len() != n {
                    return Err(format!(
                        "bias has {} values, weight has {n} columns",
                        b.len()
                    ));
                }
            }
            match x.split_last() {
                Some((&xk, lead)) if xk == k => {
                    let mut out = lead.to_vec();
                    out.push(n);
                    out
                }
                _ => return Err(format!("input {x:?} does not end in {k} features")),
            }
        }
    };
    Ok(vec![out])
}

/// Recomputes the shape of every node output (and of the graph outputs) in topological order.
pub fn infer_graph(graph: &mut Graph) -> Result<()> {
    for t in &graph.inputs {
        graph.shapes.insert(t.name.clone(), t.shape.clone());
    }
    for i in 0..graph.nodes.len() {
        let node = &graph.nodes[i];
        let mut shapes = Vec::with_capacity(node.inputs.len());
        for input in &node.inputs {
            let s = graph.shape_of(input).ok_or_else(|| {
                CompileError::node(
                    &node.name,
                    node.op.name(),
                    format!("input '{input}' is undefined"),
                )
            })?;
            shapes.push(s.to_vec());
        }
        let refs: Vec<&[usize]> = shapes.iter().map(Vec::as_slice).collect();
        let outs = infer(&node.op, &refs)
            .map_err(|m| CompileError::shape(&node.name, node.op.name(), m))?;
        if outs.len() != node.outputs.len() {
            return Err(CompileError::node(
                &node.name,
                node.op.name(),
                format!(
                    "has {} outputs, expected {}",
                    node.outputs.len(),
                    outs.len()
                ),
            ));
        }
        let names = node.outputs.clone();
        for (name, shape) in names.into_iter().zip(outs) {
            graph.shapes.insert(name, shape);
        }
    }
    for t in &mut graph.outputs {
        if let Some(s) = graph.shapes.get(&t.name) {
            t.shape = s.clone();
        }
    }
    Ok(())
}

fn check_axis(axis: usize, rank: usize) -> ShapeResult<()> {
    if axis >= rank {
        Err(format!("axis {axis} out of range for rank {rank}"))
    } else {
        Ok(())
    }
}

/// Normalises a possibly negative ONNX axis for a tensor of `rank` dims (`rank` inclusive when
/// `inclusive`, as Flatten and Unsqueeze allow).
pub fn normalize_axis(axis: i64, rank: usize, inclusive: bool) -> ShapeResult<usize> {
    let r = rank as i64 + i64::from(inclusive);
    let a = if axis < 0 { axis + rank as i64 } else { axis };
    if a < 0 || a >= r {
        Err(format!("axis {axis} out of range for rank {rank}"))
    } else {
        Ok(a as usize)
    }
}

/// numpy multidirectional broadcasting.
pub fn broadcast(a: &[usize], b: &[usize]) -> ShapeResult<Vec<usize>> {
    let rank = a.len().max(b.len());
    let dim = |s: &[usize], i: usize| {
        let pad = rank - s.len();
        if i < pad {
            1
        } else {
            s[i - pad]
        }
    };
    (0..rank)
        .map(|i| match (dim(a, i), dim(b, i)) {
            (x, y) if x == y => Ok(x),
            (1, y) => Ok(y),
            (x, 1) => Ok(x),
            _ => Err(format!("shapes {a:?} and {b:?} do not broadcast")),
        })
        .collect()
}

/// Whether `from` broadcasts to exactly `to` (unidirectional broadcasting).
pub fn broadcasts_to(from: &[usize], to: &[usize]) -> bool {
    broadcast(from, to).is_ok_and(|s| s == to)
}

/// The two dims of a Flatten at `axis`.
pub fn flatten(x: &[usize], axis: usize) -> ShapeResult<[usize; 2]> {
    if axis > x.len() {
        return Err(format!("axis {axis} out of range for rank {}", x.len()));
    }
    Ok([x[..axis].iter().product(), x[axis..].iter().product()])
}

/// Output shape of an ONNX Reshape of `input` to `spec`.
pub fn reshape_target(input: &[usize], spec: &[i64], allowzero: bool) -> ShapeResult<Vec<usize>> {
    let total: usize = input.iter().product();
    let mut out = Vec::with_capacity(spec.len());
    let mut infer_at = None;
    for (i, &d) in spec.iter().enumerate() {
        match d {
            -1 if infer_at.is_some() => return Err(format!("shape {spec:?} has more than one -1")),
            -1 => {
                infer_at = Some(i);
                out.push(1);
            }
            0 if !allowzero => match input.get(i) {
                Some(&v) => out.push(v),
                None => return Err(format!("shape {spec:?} copies dim {i} of {input:?}")),
            },
            d if d >= 0 => out.push(d as usize),
            _ => return Err(format!("invalid dim {d} in shape {spec:?}")),
        }
    }
    let known: usize = out.iter().product();
    if let Some(i) = infer_at {
        if known == 0 || !total.is_multiple_of(known) {
            return Err(format!("cannot reshape {input:?} to {spec:?}"));
        }
        out[i] = total / known;
    } else if known != total {
        return Err(format!(
            "cannot reshape {input:?} ({total} values) to {spec:?}"
        ));
    }
    Ok(out)
}

fn gemm(
    a: &[usize],
    b: &[usize],
    c: Option<&[usize]>,
    trans_a: bool,
    trans_b: bool,
) -> ShapeResult<Vec<usize>> {
    let (&[a0, a1], &[b0, b1]) = (a, b) else {
        return Err(format!("Gemm needs 2-D inputs, got {a:?} and {b:?}"));
    };
    let (m, k) = if trans_a { (a1, a0) } else { (a0, a1) };
    let (kb, n) = if trans_b { (b1, b0) } else { (b0, b1) };
    if k != kb {
        return Err(format!(
            "inner dims differ: A {a:?} (transA={}) and B {b:?} (transB={})",
            u8::from(trans_a),
            u8::from(trans_b)
        ));
    }
    let out = vec![m, n];
    if let Some(c) = c {
        if !broadcasts_to(c, &out) {
            return Err(format!("C {c:?} does not broadcast to {out:?}"));
        }
    }
    Ok(out)
}

/// Number of channels (axis 1) of an `[N, C, ...]` tensor.
fn channels(x: &[usize]) -> ShapeResult<usize> {
    match x {
        [_, c, ..] => Ok(*c),
        _ => Err(format!("input {x:?} has no channel axis")),
    }
}

/// Output size of a sliding window along one axis:
/// `(input + pad_begin + pad_end - dilation*(kernel-1) - 1) / stride + 1`, rounded down, or up
/// with `ceil_mode` (then a last window that would start past `input + pad_begin` is dropped).
pub fn window_out(
    input: usize,
    kernel: usize,
    stride: usize,
    pad_begin: usize,
    pad_end: usize,
    dilation: usize,
    ceil_mode: bool,
) -> ShapeResult<usize> {
    if kernel == 0 || stride == 0 || dilation == 0 {
        return Err(format!(
            "kernel {kernel}, stride {stride} and dilation {dilation} must be positive"
        ));
    }
    let span = (kernel - 1)
        .checked_mul(dilation)
        .and_then(|v| v.checked_add(1))
        .ok_or("window too large")?;
    let padded = input
        .checked_add(pad_begin)
        .and_then(|v| v.checked_add(pad_end))
        .ok_or("padded size overflows")?;
    if padded < span {
        return Err(format!(
            "window of {span} does not fit the padded input of {padded}"
        ));
    }
    let n = padded - span;
    if !ceil_mode {
        return Ok(n / stride + 1);
    }
    let mut out = n.div_ceil(stride) + 1;
    if (out - 1) * stride >= input + pad_begin {
        out -= 1;
    }
    Ok(out)
}

/// Output shape of a 2-D convolution of `x: [N, C, H, W]` with a weight `[O, C/groups, kh, kw]`.
pub fn conv2d(
    x: &[usize],
    w: [usize; 4],
    stride: [usize; 2],
    pads: [usize; 4],
    dilation: [usize; 2],
    groups: usize,
) -> ShapeResult<Vec<usize>> {
    let &[n, c, h, wd] = x else {
        return Err(format!("input must be 4-D (NCHW), got {x:?}"));
    };
    let [o, ci, kh, kw] = w;
    if groups == 0 || c % groups != 0 || o % groups != 0 || c / groups != ci {
        return Err(format!(
            "weight {w:?} with {groups} groups does not fit {c} input channels"
        ));
    }
    if o == 0 {
        return Err("weight has no output channels".into());
    }
    let oh = window_out(h, kh, stride[0], pads[0], pads[2], dilation[0], false)?;
    let ow = window_out(wd, kw, stride[1], pads[1], pads[3], dilation[1], false)?;
    Ok(vec![n, o, oh, ow])
}

/// Output shape of a concatenation along `axis`.
pub fn concat(inputs: &[&[usize]], axis: usize) -> ShapeResult<Vec<usize>> {
    let first = inputs.first().ok_or("no inputs")?;
    check_axis(axis, first.len())?;
    let mut out = first.to_vec();
    out[axis] = 0;
    for s in inputs {
        let same_rest = s.len() == first.len()
            && s.iter()
                .zip(first.iter())
                .enumerate()
                .all(|(i, (a, b))| i == axis || a == b);
        if !same_rest {
            return Err(format!(
                "shapes {first:?} and {s:?} differ outside axis {axis}"
            ));
        }
        out[axis] += s[axis];
    }
    Ok(out)
}

/// numpy `matmul` output shape.
pub fn matmul(a: &[usize], b: &[usize]) -> ShapeResult<Vec<usize>> {
    if a.is_empty() || b.is_empty() {
        return Err("MatMul inputs must have rank >= 1".to_string());
    }
    let a2: Vec<usize> = if a.len() == 1 {
        vec![1, a[0]]
    } else {
        a.to_vec()
    };
    let b2: Vec<usize> = if b.len() == 1 {
        vec![b[0], 1]
    } else {
        b.to_vec()
    };
    let (ra, rb) = (a2.len(), b2.len());
    let (m, k) = (a2[ra - 2], a2[ra - 1]);
    let (kb, n) = (b2[rb - 2], b2[rb - 1]);
    if k != kb {
        return Err(format!("inner dims differ: {a:?} x {b:?}"));
    }
    let mut out = broadcast(&a2[..ra - 2], &b2[..rb - 2])?;
    if a.len() > 1 {
        out.push(m);
    }
    if b.len() > 1 {
        out.push(n);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn broadcasting() {
        assert_eq!(broadcast(&[2, 3], &[3]).unwrap(), vec![2, 3]);
        assert_eq!(broadcast(&[2, 1, 4], &[3, 1]).unwrap(), vec![2, 3, 4]);
        assert!(broadcast(&[2, 3], &[4]).is_err());
        assert!(broadcasts_to(&[1, 3], &[5, 3]));
        assert!(!broadcasts_to(&[5, 3], &[1, 3]));
    }

    #[test]
    fn reshape_semantics() {
        assert_eq!(
            reshape_target(&[2, 3, 4], &[0, -1], false).unwrap(),
            vec![2, 12]
        );
        assert_eq!(reshape_target(&[2, 3, 4], &[-1], false).unwrap(), vec![24]);
        assert_eq!(reshape_target(&[0, 3], &[0, 3], true).unwrap(), vec![0, 3]);
        assert!(reshape_target(&[2, 3], &[0, 3], true).is_err());
        assert!(reshape_target(&[2, 3], &[-1, -1], false).is_err());
        assert!(reshape_target(&[2, 3], &[4, -1], false).is_err());
        assert!(reshape_target(&[2, 3], &[7], false).is_err());
    }

    #[test]
    fn matmul_shapes() {
        assert_eq!(matmul(&[4, 8], &[8, 3]).unwrap(), vec![4, 3]);
        assert_eq!(matmul(&[2, 4, 8], &[8, 3]).unwrap(), vec![2, 4, 3]);
        assert_eq!(matmul(&[8], &[8, 3]).unwrap(), vec![3]);
        assert_eq!(matmul(&[4, 8], &[8]).unwrap(), vec![4]);
        assert_eq!(matmul(&[2, 1, 4, 8], &[3, 8, 5]).unwrap(), vec![2, 3, 4, 5]);
        assert!(matmul(&[4, 8], &[7, 3]).is_err());
    }

    #[test]
    fn axes() {
        assert_eq!(normalize_axis(-1, 3, false).unwrap(), 2);
        assert_eq!(normalize_axis(3, 3, true).unwrap(), 3);
        assert!(normalize_axis(3, 3, false).is_err());
        assert!(normalize_axis(-4, 3, false).is_err());
        assert_eq!(flatten(&[2, 3, 4], 0).unwrap(), [1, 24]);
    }
}
