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
        Op::Pool2d {
            kind,
            kernel,
            pads,
            ceil_mode,
            ..
        } => {
            let avg_ok = match kind {
                PoolKind::Max => true,
                PoolKind::Avg { count_include_pad } => {
                    *count_include_pad || pads.iter().all(|p| *p == 0)
                }
            };
            square && avg_ok && !ceil_mode && kernel[0] * kernel[1] <= half_wgt
        }
        Op::GlobalAvgPool => {
            square
                && input_shapes
                    .first()
                    .is_some_and(|s| s.len() == 4 && s[2] * s[3] <= half_wgt.min(half_act))
        }
        Op::Binary(crate::ir::BinaryOp::Add) => {
            square && input_shapes.len() == 2 && input_shapes[0] == input_shapes[1]
        }
        _ => false,
    }
}

fn identity_tile(cfg: &HwConfig, out: &mut Vec<u8>, w: i8) {
    pack_tile(cfg, out, |r, c| if r == c { w } else { 0 });
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

/// Plans a node. `inputs` are the DRAM views the node reads (for a dense layer after a Flatten,
/// the flattened view, with `flat_of` the image tensor behind it), `q_in`/`q_out` the
/// activation parameters, `out_lanes` the output's padded channels.
pub fn plan(
    cfg: &HwConfig,
    node: &Node,
    inputs: &[&ActTensor],
    flat_of: Option<&ActTensor>,
    q_in: &[QParams],
    q_out: QParams,
    out_lanes: usize,
) -> Result<LayerPlan> {
    let (rows, cols) = (cfg.rows as usize, cfg.cols as usize);
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
            let lane_of = |k: usize| flat_of.map_or(k, |t| t.flat_lane(k));
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
            let in_blocks = inputs[0].lanes / rows;
            let mut tiles = Vec::new();
            let mut sources = Vec::new();
            for nb in 0..n_blocks {
                let outs: Vec<usize> = (nb * cols..((nb + 1) * cols).min(o)).collect();
                // Input blocks holding any channel of the groups of these outputs.
                let mut needed: Vec<usize> = outs
                    .iter()
                    .flat_map(|&oc| {
                        let g = oc / og;
                        (g * cg..(g + 1) * cg).map(|c| c / rows)
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
                                let (ci, oc) = (kb * rows + r, nb * cols + c);
                                if oc >= o {
                                    return 0;
                                }
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
                    q.bias.as_slice().unwrap_or(&[]),
                    q.mult.as_slice().unwrap_or(&[]),
                    q.shift.as_slice().unwrap_or(&[]),
                ),
                zero_point: q.out_zero_point,
                clamp_lo: q.clamp_lo,
                clamp_hi: q.clamp_hi,
                pad_values: vec![q_in[0].zero_point],
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
                // Max over the raw int8 values; the output keeps the input's parameters.
                PoolKind::Max => (GemmMode::Max, i8::MIN, -(q_in[0].zero_point as i32), 1.0),
                PoolKind::Avg { .. } => (
                    GemmMode::Add,
                    q_in[0].zero_point,
                    -(positions as i32) * q_in[0].zero_point as i32,
                    q_in[0].scale as f64 / (positions as f64 * q_out.scale as f64),
                ),
            };
            let zero_point = if matches!(kind, PoolKind::Max) {
                q_in[0].zero_point
            } else {
                q_out.zero_point
            };
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
            // wA = sA/s, wB = sB/s; the zero points fold into the bias.
            let (a, b) = (q_in[0], q_in[1]);
            let s = a.scale.max(b.scale) as f64 / 127.0;
            let wa = (a.scale as f64 / s).round().clamp(1.0, 127.0) as i8;
            let wb = (b.scale as f64 / s).round().clamp(1.0, 127.0) as i8;
            let mut tiles = Vec::new();
            identity_tile(cfg, &mut tiles, wa);
            identity_tile(cfg, &mut tiles, wb);
            let sources = (0..n_blocks)
                .map(|nb| {
                    vec![
                        Source {
                            input: 0,
                            block: nb,
                            tile: 0,
                            ky: 0,
                            kx: 0,
                        },
                        Source {
                            input: 1,
                            block: nb,
                            tile: 1,
                            ky: 0,
                            kx: 0,
                        },
                    ]
                })
                .collect();
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
    })
}
