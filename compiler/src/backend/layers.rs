//! From IR nodes to windowed layers: the sources, weight tiles and requantization parameters of
//! every operator the NPU runs (see [`super::conv`] for the mechanism they share).

use ndarray::Array2;
use sinter_isa::numeric::{quantize_multiplier, QParams};
use sinter_isa::{GemmMode, HwConfig};

use super::conv::{pack_params, pack_tile, Geometry, Source};
use super::memory::ActTensor;
use crate::error::{CompileError, Result};
use crate::ir::{Node, Op, PoolKind};
use crate::quant::quantize_dense;

/// Everything of a windowed layer but its DRAM placement.
pub struct LayerPlan {
    pub geometry: Geometry,
    pub sources: Vec<Vec<Source>>,
    pub combine: GemmMode,
    pub tiles: Vec<u8>,
    pub params: Vec<u8>,
    pub zero_point: i8,
    pub clamp_lo: i8,
    pub clamp_hi: i8,
    /// Value each input's padding reads as.
    pub pad_values: Vec<i8>,
    /// The output pixels `[y0, x0, height, width]` this plan computes (`None`: all).
    pub region: Option<[usize; 4]>,
}

/// Whether the NPU can run `node` (the partitioner asks before planning).
pub fn npu_supports(cfg: &HwConfig, node: &Node, input_shapes: &[&[usize]]) -> bool {
    let square = cfg.rows == cfg.cols;
    let half_act = cfg.act_depth as usize / 2;
    let half_wgt = cfg.wgt_depth as usize / 2;
    match &node.op {
        Op::Dense { .. } => true,
        Op::Conv2d { weight, .. } => {
            let (_, _, kh, kw) = weight.dim();
            kh * kw <= half_wgt && input_shapes.first().is_some_and(|s| s.len() == 4)
        }
        // Pools share one identity tile over all kernel positions; one output pixel's window
        // must fit half the activation buffer.
        Op::Pool2d {
            kernel, ceil_mode, ..
        } => square && !ceil_mode && kernel[0] * kernel[1] <= half_act,
        Op::GlobalAvgPool => {
            square
                && input_shapes
                    .first()
                    .is_some_and(|s| s.len() == 4 && s[2] * s[3] <= half_act)
        }
        Op::Binary(crate::ir::BinaryOp::Add) => {
            square && input_shapes.len() == 2 && input_shapes[0] == input_shapes[1]
        }
        // Lane-wise maps: one diagonal tile per lane block.
        Op::Relu | Op::Clip { .. } => square && input_shapes.len() == 1,
        // max(x, αx) needs 0 ≤ α ≤ 1.
        Op::LeakyRelu { alpha } => square && input_shapes.len() == 1 && (0.0..=1.0).contains(alpha),
        // Channel concatenation of images: producers write into their slices (the partitioner
        // checks that every input is a runtime tensor).
        Op::Concat { axis: 1 } => {
            square
                && !input_shapes.is_empty()
                && input_shapes.iter().all(|s| {
                    let r = input_shapes[0];
                    s.len() == 4 && s[0] == r[0] && s[2] == r[2] && s[3] == r[3]
                })
        }
        _ => false,
    }
}

/// The weight LeakyRelu's negative side gets against 127 on the positive side.
pub fn leaky_weight(alpha: f32) -> i8 {
    (alpha as f64 * 127.0).round().clamp(0.0, 127.0) as i8
}

fn identity_tile(cfg: &HwConfig, out: &mut Vec<u8>, w: i8) {
    pack_tile(cfg, out, |r, c| if r == c { w } else { 0 });
}

/// One source per output lane block: input `input`, the same block, tile `tile`.
fn same_block_sources(n_blocks: usize, input: usize, tiles: &[usize]) -> Vec<Vec<Source>> {
    (0..n_blocks)
        .map(|nb| {
            tiles
                .iter()
                .map(|&tile| Source {
                    input,
                    block: nb,
                    tile,
                    ky: 0,
                    kx: 0,
                })
                .collect()
        })
        .collect()
}

/// A lane-wise requantizing copy `y = clamp(requant(x))` of a tensor into a tensor of the same
/// layout: a Relu, a Clip, or an input of a Concat that cannot be written in place.
pub fn copy_plan(
    cfg: &HwConfig,
    layer: &str,
    out_lanes: usize,
    q_in: QParams,
    q_out: QParams,
    clamp: (i8, i8),
) -> Result<LayerPlan> {
    let mut tiles = Vec::new();
    identity_tile(cfg, &mut tiles, 1);
    Ok(LayerPlan {
        geometry: Geometry::POINTWISE,
        sources: same_block_sources(out_lanes / cfg.cols as usize, 0, &[0]),
        combine: GemmMode::Add,
        tiles,
        params: uniform_params(
            cfg,
            out_lanes,
            -(q_in.zero_point as i32),
            q_in.scale as f64 / q_out.scale as f64,
            layer,
        )?,
        zero_point: q_out.zero_point,
        clamp_lo: clamp.0,
        clamp_hi: clamp.1,
        pad_values: vec![q_in.zero_point],
        region: None,
    })
}

/// Per-tensor requantization parameters for every lane block of `lanes` lanes.
fn uniform_params(
    cfg: &HwConfig,
    lanes: usize,
    bias: i32,
    factor: f64,
    layer: &str,
) -> Result<Vec<u8>> {
    let (m, s) = quantize_multiplier(factor)
        .map_err(|e| CompileError::Quant(format!("layer '{layer}': {e}")))?;
    let n = lanes;
    Ok(pack_params(cfg, &vec![bias; n], &vec![m; n], &vec![s; n]))
}

/// Plans a node as one or more windowed layers: average pooling that excludes padding from
/// its count divides by a different count near the edges, so it runs one region of output
/// pixels per divisor; everything else is one layer (see [`plan`]).
pub fn plans(
    cfg: &HwConfig,
    node: &Node,
    inputs: &[&ActTensor],
    q_in: &[QParams],
    q_out: QParams,
    output: &ActTensor,
) -> Result<Vec<LayerPlan>> {
    let Op::Pool2d {
        kind: PoolKind::Avg {
            count_include_pad: false,
        },
        kernel,
        stride,
        pads,
        dilation,
        ..
    } = &node.op
    else {
        return Ok(vec![plan(cfg, node, inputs, q_in, q_out, output)?]);
    };
    let t = inputs[0];
    // Runs of output positions along one axis with the same number of kernel taps inside the
    // input: (first, length, taps).
    let runs = |out: usize, inp: usize, k: usize, s: usize, d: usize, pad: usize| {
        let mut runs: Vec<(usize, usize, usize)> = Vec::new();
        for o in 0..out {
            let taps = (0..k)
                .filter(|&j| {
                    let at = (o * s + j * d) as isize - pad as isize;
                    at >= 0 && (at as usize) < inp
                })
                .count();
            match runs.last_mut() {
                Some(r) if r.2 == taps => r.1 += 1,
                _ => runs.push((o, 1, taps)),
            }
        }
        runs
    };
    let ys = runs(
        output.height,
        t.height,
        kernel[0],
        stride[0],
        dilation[0],
        pads[0],
    );
    let xs = runs(
        output.width,
        t.width,
        kernel[1],
        stride[1],
        dilation[1],
        pads[1],
    );
    let positions = (kernel[0] * kernel[1]) as i32;
    let mut out = Vec::new();
    for &(y0, h, ty) in &ys {
        for &(x0, w, tx) in &xs {
            let taps = ty * tx;
            if taps == 0 {
                return Err(CompileError::Lower {
                    layer: node.name.clone(),
                    message: "an output pixel's window lies entirely in the padding".into(),
                });
            }
            // Padding reads as the zero point, so the sum over all positions minus
            // positions·zero point is the sum over the taps inside the image.
            let mut p = pool_plan(
                cfg,
                Geometry {
                    kernel: *kernel,
                    stride: *stride,
                    dilation: *dilation,
                    pads: *pads,
                },
                output.lanes / cfg.cols as usize,
                GemmMode::Add,
                q_in[0].zero_point,
                uniform_params(
                    cfg,
                    output.lanes,
                    -positions * q_in[0].zero_point as i32,
                    q_in[0].scale as f64 / (taps as f64 * q_out.scale as f64),
                    &node.name,
                )?,
                q_out.zero_point,
            )?;
            p.region = Some([y0, x0, h, w]);
            out.push(p);
        }
    }
    Ok(out)
}

/// Plans a node. `inputs` are the DRAM views the node reads (for a dense layer after a Flatten,
/// the flattened view), `q_in`/`q_out` the activation parameters, `output` the tensor it
/// writes. Lane-wise operators (pooling, adds, activations) keep their first input's layout.
pub fn plan(
    cfg: &HwConfig,
    node: &Node,
    inputs: &[&ActTensor],
    q_in: &[QParams],
    q_out: QParams,
    output: &ActTensor,
) -> Result<LayerPlan> {
    let (rows, cols) = (cfg.rows as usize, cfg.cols as usize);
    let out_lanes = output.lanes;
    let n_blocks = out_lanes / cols;
    let name = node.name.as_str();
    match &node.op {
        Op::Dense {
            weight,
            bias,
            activation,
        } => {
            let inp = inputs[0];
            let q = quantize_dense(weight, bias.as_ref(), *activation, q_in[0], q_out)?;
            let k_blocks = inp.lanes / rows;
            let lane_of = |k: usize| inp.channel_lanes[k];
            // Physical weight matrix [lanes, out]; holes stay zero.
            let (k, n) = q.weight.dim();
            let mut phys = Array2::<i8>::zeros((inp.lanes, n));
            for kk in 0..k {
                phys.row_mut(lane_of(kk)).assign(&q.weight.row(kk));
            }
            let mut tiles = Vec::new();
            let mut sources = Vec::new();
            for nb in 0..n_blocks {
                let mut list = Vec::new();
                for kb in 0..k_blocks {
                    list.push(Source {
                        input: 0,
                        block: kb,
                        tile: nb * k_blocks + kb,
                        ky: 0,
                        kx: 0,
                    });
                    pack_tile(cfg, &mut tiles, |r, c| {
                        let (row, col) = (kb * rows + r, nb * cols + c);
                        if col < n {
                            phys[[row, col]]
                        } else {
                            0
                        }
                    });
                }
                sources.push(list);
            }
            Ok(LayerPlan {
                geometry: Geometry::POINTWISE,
                sources,
                combine: GemmMode::Add,
                tiles,
                params: pack_params(
                    cfg,
                    q.bias.as_slice().unwrap_or(&[]),
                    q.mult.as_slice().unwrap_or(&[]),
                    q.shift.as_slice().unwrap_or(&[]),
                ),
                zero_point: q.out_zero_point,
                clamp_lo: q.clamp_lo,
                clamp_hi: q.clamp_hi,
                pad_values: vec![q_in[0].zero_point],
                region: None,
            })
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
            let (o, cg, kh, kw) = weight.dim();
            let og = o / groups;
            // As a dense layer over (c, ky, kx) per output channel, for the per-channel scales
            // and the zero-point fold; the tiles are then cut from it.
            let flat = weight
                .view()
                .into_shape_with_order((o, cg * kh * kw))
                .map_err(|e| CompileError::Quant(format!("layer '{name}': {e}")))?
                .t()
                .to_owned();
            let q = quantize_dense(&flat, bias.as_ref(), *activation, q_in[0], q_out)?;
            let inp = inputs[0];
            let in_blocks = inp.lanes / rows;
            let lane_channel = inp.lane_channels();
            // The output's channel in each lane: in order, or (a depthwise convolution keeps
            // its input's layout) wherever the layout put it.
            let out_channel = output.lane_channels();
            let mut tiles = Vec::new();
            let mut sources = Vec::new();
            for nb in 0..n_blocks {
                let outs: Vec<usize> = (nb * cols..(nb + 1) * cols)
                    .filter_map(|l| out_channel[l])
                    .collect();
                // Input blocks holding any channel of the groups of these outputs.
                let mut needed: Vec<usize> = outs
                    .iter()
                    .flat_map(|&oc| {
                        let g = oc / og;
                        (g * cg..(g + 1) * cg).map(|c| inp.channel_lanes[c] / rows)
                    })
                    .collect();
                needed.sort_unstable();
                needed.dedup();
                let mut list = Vec::new();
                for &kb in needed.iter().filter(|kb| **kb < in_blocks) {
                    for ky in 0..kh {
                        for kx in 0..kw {
                            list.push(Source {
                                input: 0,
                                block: kb,
                                tile: tiles.len() / (rows * cols),
                                ky,
                                kx,
                            });
                            pack_tile(cfg, &mut tiles, |r, c| {
                                let (Some(ci), Some(oc)) =
                                    (lane_channel[kb * rows + r], out_channel[nb * cols + c])
                                else {
                                    return 0;
                                };
                                let g = oc / og;
                                if ci < g * cg || ci >= (g + 1) * cg {
                                    return 0;
                                }
                                q.weight[[((ci - g * cg) * kh + ky) * kw + kx, oc]]
                            });
                        }
                    }
                }
                sources.push(list);
            }
            // Per-lane requantization parameters (padding lanes: all zero).
            let per_lane = |v: &ndarray::Array1<i32>| -> Vec<i32> {
                out_channel.iter().map(|c| c.map_or(0, |c| v[c])).collect()
            };
            Ok(LayerPlan {
                geometry: Geometry {
                    kernel: [kh, kw],
                    stride: *stride,
                    dilation: *dilation,
                    pads: *pads,
                },
                sources,
                combine: GemmMode::Add,
                tiles,
                params: pack_params(
                    cfg,
                    &per_lane(&q.bias),
                    &per_lane(&q.mult),
                    &per_lane(&q.shift),
                ),
                zero_point: q.out_zero_point,
                clamp_lo: q.clamp_lo,
                clamp_hi: q.clamp_hi,
                pad_values: vec![q_in[0].zero_point],
                region: None,
            })
        }
        Op::Pool2d {
            kind,
            kernel,
            stride,
            pads,
            dilation,
            ..
        } => {
            let positions = kernel[0] * kernel[1];
            let (combine, pad, bias, factor) = match kind {
                // Max over the raw int8 values (order is kept by the affine map to the output's
                // parameters, usually the input's own).
                PoolKind::Max => (
                    GemmMode::Max,
                    i8::MIN,
                    -(q_in[0].zero_point as i32),
                    q_in[0].scale as f64 / q_out.scale as f64,
                ),
                PoolKind::Avg { .. } => (
                    GemmMode::Add,
                    q_in[0].zero_point,
                    -(positions as i32) * q_in[0].zero_point as i32,
                    q_in[0].scale as f64 / (positions as f64 * q_out.scale as f64),
                ),
            };
            let zero_point = q_out.zero_point;
            pool_plan(
                cfg,
                Geometry {
                    kernel: *kernel,
                    stride: *stride,
                    dilation: *dilation,
                    pads: *pads,
                },
                n_blocks,
                combine,
                pad,
                uniform_params(cfg, out_lanes, bias, factor, name)?,
                zero_point,
            )
        }
        Op::GlobalAvgPool => {
            let t = inputs[0];
            let positions = t.height * t.width;
            pool_plan(
                cfg,
                Geometry {
                    kernel: [t.height, t.width],
                    stride: [1, 1],
                    dilation: [1, 1],
                    pads: [0; 4],
                },
                n_blocks,
                GemmMode::Add,
                0,
                uniform_params(
                    cfg,
                    out_lanes,
                    -(positions as i32) * q_in[0].zero_point as i32,
                    q_in[0].scale as f64 / (positions as f64 * q_out.scale as f64),
                    name,
                )?,
                q_out.zero_point,
            )
        }
        Op::Binary(crate::ir::BinaryOp::Add) => {
            // Bring both inputs to a common step s = max(sA, sB)/127 with int8 weights
            // wA = sA/s, wB = sB/s; the zero points fold into the bias. The output has A's
            // layout; B's channels are routed to A's lanes by its tiles.
            let (a, b) = (q_in[0], q_in[1]);
            let s = a.scale.max(b.scale) as f64 / 127.0;
            let wa = (a.scale as f64 / s).round().clamp(1.0, 127.0) as i8;
            let wb = (b.scale as f64 / s).round().clamp(1.0, 127.0) as i8;
            let (ta, tb) = (inputs[0], inputs[1]);
            let mut tiles = Vec::new();
            identity_tile(cfg, &mut tiles, wa);
            let sources: Vec<Vec<Source>> = if ta.channel_lanes == tb.channel_lanes {
                identity_tile(cfg, &mut tiles, wb);
                same_block_sources(n_blocks, 0, &[0])
                    .into_iter()
                    .zip(same_block_sources(n_blocks, 1, &[1]))
                    .map(|(mut x, y)| {
                        x.extend(y);
                        x
                    })
                    .collect()
            } else {
                let a_channel = ta.lane_channels();
                (0..n_blocks)
                    .map(|nb| {
                        let mut list = vec![Source {
                            input: 0,
                            block: nb,
                            tile: 0,
                            ky: 0,
                            kx: 0,
                        }];
                        let chans: Vec<usize> = (nb * cols..(nb + 1) * cols)
                            .filter_map(|l| a_channel[l])
                            .collect();
                        let mut blocks: Vec<usize> =
                            chans.iter().map(|&c| tb.channel_lanes[c] / rows).collect();
                        blocks.sort_unstable();
                        blocks.dedup();
                        for kb in blocks {
                            list.push(Source {
                                input: 1,
                                block: kb,
                                tile: tiles.len() / (rows * cols),
                                ky: 0,
                                kx: 0,
                            });
                            pack_tile(cfg, &mut tiles, |r, c| match a_channel[nb * cols + c] {
                                Some(ch) if tb.channel_lanes[ch] == kb * rows + r => wb,
                                _ => 0,
                            });
                        }
                        list
                    })
                    .collect()
            };
            let bias = -(wa as i32 * a.zero_point as i32 + wb as i32 * b.zero_point as i32);
            Ok(LayerPlan {
                geometry: Geometry::POINTWISE,
                sources,
                combine: GemmMode::Add,
                tiles,
                params: uniform_params(cfg, out_lanes, bias, s / q_out.scale as f64, name)?,
                zero_point: q_out.zero_point,
                clamp_lo: i8::MIN,
                clamp_hi: i8::MAX,
                pad_values: vec![a.zero_point, b.zero_point],
                region: None,
            })
        }
        Op::Relu => copy_plan(
            cfg,
            name,
            out_lanes,
            q_in[0],
            q_out,
            (q_out.quantize(0.0), i8::MAX),
        ),
        Op::Clip { min, max } => copy_plan(
            cfg,
            name,
            out_lanes,
            q_in[0],
            q_out,
            (q_out.quantize(*min), q_out.quantize(*max)),
        ),
        Op::LeakyRelu { alpha } => {
            // y = max(127·x, w·x) / 127 with w = 127·α: exact on the positive side, α to within
            // 1/254 on the negative side. Needs a symmetric input (zero point 0), which the
            // partitioner arranges.
            if q_in[0].zero_point != 0 {
                return Err(CompileError::Lower {
                    layer: name.to_string(),
                    message: "LeakyRelu needs an input quantized with zero point 0".into(),
                });
            }
            let mut tiles = Vec::new();
            identity_tile(cfg, &mut tiles, 127);
            identity_tile(cfg, &mut tiles, leaky_weight(*alpha));
            Ok(LayerPlan {
                geometry: Geometry::POINTWISE,
                sources: same_block_sources(n_blocks, 0, &[0, 1]),
                combine: GemmMode::Max,
                tiles,
                params: uniform_params(
                    cfg,
                    out_lanes,
                    0,
                    q_in[0].scale as f64 / (127.0 * q_out.scale as f64),
                    name,
                )?,
                zero_point: q_out.zero_point,
                clamp_lo: i8::MIN,
                clamp_hi: i8::MAX,
                pad_values: vec![0],
                region: None,
            })
        }
        other => Err(CompileError::Lower {
            layer: name.to_string(),
            message: format!("{} does not run on the NPU", other.name()),
        }),
    }
}

fn pool_plan(
    cfg: &HwConfig,
    geometry: Geometry,
    n_blocks: usize,
    combine: GemmMode,
    pad_value: i8,
    params: Vec<u8>,
    zero_point: i8,
) -> Result<LayerPlan> {
    let mut tiles = Vec::new();
    identity_tile(cfg, &mut tiles, 1);
    let sources = (0..n_blocks)
        .map(|nb| {
            (0..geometry.kernel[0])
                .flat_map(|ky| {
                    (0..geometry.kernel[1]).map(move |kx| Source {
                        input: 0,
                        block: nb,
                        tile: 0,
                        ky,
                        kx,
                    })
                })
                .collect()
        })
        .collect();
    Ok(LayerPlan {
        geometry,
        sources,
        combine,
        tiles,
        params,
        zero_point,
        clamp_lo: i8::MIN,
        clamp_hi: i8::MAX,
        pad_values: vec![pad_value],
        region: None,
    })
}
