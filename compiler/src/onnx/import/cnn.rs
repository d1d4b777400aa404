//! Convolutional operators: Conv, BatchNormalization, MaxPool/AveragePool, the global pools and
//! LRN. 1-D convolutions and pools run as 2-D ones over a height of 1 (the input is reshaped to
//! `[N, C, 1, L]` and the result back to `[N, C', L']`).

use super::{Ctx, Importer};
use crate::error::Result;
use crate::ir::{Op, PoolKind};

/// Window geometry of one ONNX Conv/Pool node over `spatial` axes, auto_pad resolved.
struct Window {
    kernel: Vec<usize>,
    stride: Vec<usize>,
    /// `[begin..., end...]` as ONNX orders them.
    pads: Vec<usize>,
    dilation: Vec<usize>,
}

impl Window {
    /// 2-D geometry: `(kernel, stride, [top, left, bottom, right], dilation)`; a 1-D window
    /// becomes `1 x k`.
    fn to_2d(&self) -> ([usize; 2], [usize; 2], [usize; 4], [usize; 2]) {
        let s = self.kernel.len();
        if s == 1 {
            (
                [1, self.kernel[0]],
                [1, self.stride[0]],
                [0, self.pads[0], 0, self.pads[1]],
                [1, self.dilation[0]],
            )
        } else {
            (
                [self.kernel[0], self.kernel[1]],
                [self.stride[0], self.stride[1]],
                [self.pads[0], self.pads[1], self.pads[2], self.pads[3]],
                [self.dilation[0], self.dilation[1]],
            )
        }
    }
}

fn positive(ctx: &Ctx, name: &str, values: Vec<i64>, len: usize) -> Result<Vec<usize>> {
    if values.len() != len {
        return Err(ctx.err(format!(
            "'{name}' has {} values, expected {len}",
            values.len()
        )));
    }
    values
        .iter()
        .map(|&v| {
            usize::try_from(v)
                .ok()
                .filter(|&v| v > 0)
                .ok_or_else(|| ctx.err(format!("'{name}' must be positive, got {values:?}")))
        })
        .collect()
}

/// Reads kernel (given or from the weight), strides, dilations, pads and auto_pad.
fn window(
    ctx: &Ctx,
    input: &[usize],
    weight_kernel: Option<&[usize]>,
    has_dilations: bool,
) -> Result<Window> {
    let spatial = input.len().saturating_sub(2);
    let kernel = match (ctx.attr_ints("kernel_shape")?, weight_kernel) {
        (Some(k), Some(w)) => {
            let k = positive(ctx, "kernel_shape", k, spatial)?;
            if k != w {
                return Err(ctx.shape_err(format!(
                    "kernel_shape {k:?} differs from the weight's kernel {w:?}"
                )));
            }
            k
        }
        (Some(k), None) => positive(ctx, "kernel_shape", k, spatial)?,
        (None, Some(w)) => w.to_vec(),
        (None, None) => return Err(ctx.err("missing 'kernel_shape'")),
    };
    let ones = || vec![1i64; spatial];
    let stride = positive(
        ctx,
        "strides",
        ctx.attr_ints("strides")?.unwrap_or_else(ones),
        spatial,
    )?;
    let dilation = if has_dilations {
        positive(
            ctx,
            "dilations",
            ctx.attr_ints("dilations")?.unwrap_or_else(ones),
            spatial,
        )?
    } else {
        vec![1; spatial]
    };
    let auto_pad = ctx.attr_s("auto_pad")?.unwrap_or_default();
    let pads = match auto_pad.as_str() {
        "" | "NOTSET" => {
            let pads = ctx
                .attr_ints("pads")?
                .unwrap_or_else(|| vec![0; 2 * spatial]);
            if pads.len() != 2 * spatial {
                return Err(ctx.err(format!(
                    "'pads' has {} values, expected {}",
                    pads.len(),
                    2 * spatial
                )));
            }
            pads.iter()
                .map(|&p| {
                    usize::try_from(p)
                        .map_err(|_| ctx.err(format!("negative pads {pads:?} are not supported")))
                })
                .collect::<Result<Vec<usize>>>()?
        }
        "VALID" => vec![0; 2 * spatial],
        mode @ ("SAME_UPPER" | "SAME_LOWER") => {
            let mut pads = vec![0; 2 * spatial];
            for i in 0..spatial {
                let size = input[2 + i];
                let span = (kernel[i] - 1) * dilation[i] + 1;
                let out = size.div_ceil(stride[i]);
                let total = ((out.max(1) - 1) * stride[i] + span).saturating_sub(size);
                let (small, large) = (total / 2, total - total / 2);
                if mode == "SAME_UPPER" {
                    pads[i] = small;
                    pads[spatial + i] = large;
                } else {
                    pads[i] = large;
                    pads[spatial + i] = small;
                }
            }
            pads
        }
        other => return Err(ctx.err(format!("auto_pad '{other}' is not supported"))),
    };
    Ok(Window {
        kernel,
        stride,
        pads,
        dilation,
    })
}

impl Importer {
    /// Checks a convolution/pool input is 1-D or 2-D spatial.
    fn spatial_input(&self, ctx: &Ctx, name: &str) -> Result<Vec<usize>> {
        let shape = self.dims_of(ctx, name)?;
        match shape.len() {
            3 | 4 => Ok(shape),
            r => Err(ctx.err(format!(
                "input '{name}' has rank {r}: only 1-D and 2-D windows (rank 3 and 4) are supported"
            ))),
        }
    }

    /// Emits `op` on `inputs` where the first input (and the second, for a convolution weight)
    /// may be 1-D: those are reshaped to `[N, C, 1, L]` first and the result back.
    fn emit_spatial(
        &mut self,
        ctx: &Ctx,
        op: Op,
        inputs: &[&str],
        lift: usize,
        one_d: bool,
    ) -> Result<()> {
        if !one_d {
            return self.emit(ctx, op, inputs);
        }
        self.check_extra_outputs(ctx)?;
        let mut lifted = Vec::with_capacity(inputs.len());
        for (i, &name) in inputs.iter().enumerate() {
            if i >= lift {
                lifted.push(name.to_string());
                continue;
            }
            let s = self.dims_of(ctx, name)?;
            let spec: Vec<i64> = vec![
                if i == 0 { 0 } else { s[0] as i64 },
                s[1] as i64,
                1,
                s[2] as i64,
            ];
            let tmp = self.temp_name(ctx, &format!("in{i}_2d"))?;
            let node = self.temp_node_name(ctx, &format!("in{i}_2d"));
            self.emit_as(
                ctx,
                node,
                Op::Reshape {
                    shape: spec,
                    allowzero: false,
                },
                &[name],
                tmp.clone(),
            )?;
            lifted.push(tmp);
        }
        let refs: Vec<&str> = lifted.iter().map(String::as_str).collect();
        let out2d = self.temp_name(ctx, "2d")?;
        self.emit_as(ctx, ctx.name.clone(), op, &refs, out2d.clone())?;
        let s = self.dims_of(ctx, &out2d)?;
        let node = self.temp_node_name(ctx, "1d");
        self.emit_as(
            ctx,
            node,
            Op::Reshape {
                shape: vec![0, s[1] as i64, s[3] as i64],
                allowzero: false,
            },
            &[&out2d],
            ctx.output()?.to_string(),
        )
    }

    pub(super) fn conv(&mut self, ctx: &Ctx) -> Result<()> {
        let x = ctx.req_input(0)?;
        let w = ctx.req_input(1)?;
        let xs = self.spatial_input(ctx, x)?;
        let ws = self.dims_of(ctx, w)?;
        if ws.len() != xs.len() {
            return Err(ctx.shape_err(format!("weight {ws:?} does not match the input {xs:?}")));
        }
        let groups = usize::try_from(ctx.attr_i("group", 1)?)
            .ok()
            .filter(|&g| g > 0)
            .ok_or_else(|| ctx.err("'group' must be positive"))?;
        let win = window(ctx, &xs, Some(&ws[2..]), true)?;
        let (_, stride, pads, dilation) = win.to_2d();
        let op = Op::Conv {
            stride,
            pads,
            dilation,
            groups,
        };
        let mut inputs = vec![x, w];
        inputs.extend(ctx.input(2));
        self.emit_spatial(ctx, op, &inputs, 2, xs.len() == 3)
    }

    pub(super) fn pool(&mut self, ctx: &Ctx, max: bool) -> Result<()> {
        let x = ctx.req_input(0)?;
        let xs = self.spatial_input(ctx, x)?;
        let has_dilations = if max {
            ctx.opset >= 10
        } else {
            ctx.opset >= 19
        };
        let win = window(ctx, &xs, None, has_dilations)?;
        let (kernel, stride, pads, dilation) = win.to_2d();
        let ceil_mode = ctx.opset >= 10 && ctx.attr_i("ceil_mode", 0)? != 0;
        let kind = if max {
            PoolKind::Max
        } else {
            PoolKind::Avg {
                count_include_pad: ctx.attr_i("count_include_pad", 0)? != 0,
            }
        };
        let op = Op::Pool2d {
            kind,
            kernel,
            stride,
            pads,
            dilation,
            ceil_mode,
        };
        self.emit_spatial(ctx, op, &[x], 1, xs.len() == 3)
    }

    pub(super) fn batch_norm(&mut self, ctx: &Ctx) -> Result<()> {
        if ctx.opset < 9 && ctx.attr_i("spatial", 1)? == 0 {
            return Err(ctx.err("spatial=0 (per-activation statistics) is not supported"));
        }
        if ctx.opset >= 14 && ctx.attr_i("training_mode", 0)? != 0 {
            return Err(ctx.err("training_mode=1 is not supported (inference only)"));
        }
        let epsilon = ctx.attr_f("epsilon", 1e-5)?;
        let inputs = [
            ctx.req_input(0)?,
            ctx.req_input(1)?,
            ctx.req_input(2)?,
            ctx.req_input(3)?,
            ctx.req_input(4)?,
        ];
        self.emit(ctx, Op::BatchNorm { epsilon }, &inputs)
    }

    pub(super) fn lrn(&mut self, ctx: &Ctx) -> Result<()> {
        let x = ctx.req_input(0)?;
        let size = ctx
            .attr("size", crate::onnx::proto::attribute_type::INT)?
            .ok_or_else(|| ctx.err("missing 'size'"))?
            .i;
        let size = usize::try_from(size)
            .ok()
            .filter(|&s| s > 0)
            .ok_or_else(|| ctx.err(format!("'size' must be positive, got {size}")))?;
        let op = Op::Lrn {
            size,
            alpha: ctx.attr_f("alpha", 1e-4)?,
            beta: ctx.attr_f("beta", 0.75)?,
            bias: ctx.attr_f("bias", 1.0)?,
        };
        self.emit(ctx, op, &[x])
    }
}
