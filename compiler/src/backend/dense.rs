//! Lowering a quantized fully-connected layer to NPU instructions.
//!
//! `Y[M, N] = X[M, K] · W[K, N]` is cut into blocks of the array: `K` into blocks of `rows`
//! (the reduction lanes), `N` into blocks of `cols`, and `M` into tiles of `tm` rows that fit
//! the accumulator and output buffers. A *step* computes one `(m-tile, n-block, k-chunk)`: the
//! load module brings the activation rows and weight tiles of the chunk into one half of the
//! activation and weight buffers while the compute module works on the other half; after the
//! last k-chunk the vector unit requantizes the accumulators into one half of the output buffer
//! and the store module writes them back while the next tile computes.
//!
//! When the whole reduction fits in one chunk, the activation rows of an m-tile stay on chip
//! across all its n-blocks and only weights stream.

use sinter_isa::{Buffer, Dma, Gemm, GemmMode, HwConfig, Instruction, VecInsn, VecOp, Walk};

use super::memory::ActTensor;
use super::sync::{Edge, Event, ProgramBuilder};
use crate::error::{CompileError, Result};

/// Accumulator rows reserved at the top of the buffer for bias, multiplier and shift.
pub const PARAM_ROWS: u32 = 3;

/// How a layer is cut to the buffers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Tiling {
    /// Rows per m-tile.
    pub tm: usize,
    /// K-blocks per chunk.
    pub tk: usize,
    pub m_tiles: usize,
    pub k_blocks: usize,
    pub n_blocks: usize,
    pub k_chunks: usize,
}

impl Tiling {
    pub fn plan(cfg: &HwConfig, m: usize, k: usize, n: usize) -> Tiling {
        let k_blocks = k.div_ceil(cfg.rows as usize);
        let n_blocks = n.div_ceil(cfg.cols as usize);
        let act_half = cfg.act_depth as usize / 2;
        let wgt_half = cfg.wgt_depth as usize / 2;
        let out_half = cfg.out_depth as usize / 2;
        let acc_rows = (cfg.acc_depth - PARAM_ROWS) as usize;
        let tm = m
            .min(out_half)
            .min(acc_rows)
            .min(act_half)
            .min(u16::MAX as usize)
            .max(1);
        let tk = k_blocks.min(wgt_half).min(act_half / tm).max(1);
        Tiling {
            tm,
            tk,
            m_tiles: m.div_ceil(tm),
            k_blocks,
            n_blocks,
            k_chunks: k_blocks.div_ceil(tk),
        }
    }
}

/// A quantized dense layer placed in DRAM.
pub struct DenseLayer<'a> {
    pub name: &'a str,
    pub input: &'a ActTensor,
    pub output: &'a ActTensor,
    /// Weight tiles in `[n_block][k_block]` order, each `rows × cols` bytes.
    pub weights_addr: u32,
    /// Per n-block: bias, multiplier and shift rows (int32 × cols each).
    pub params_addr: u32,
    pub zero_point: i8,
    pub clamp_lo: i8,
    pub clamp_hi: i8,
}

/// Which buffer halves were last read by which compute event; carried across layers so that a
/// layer never overwrites a half the previous one still reads.
#[derive(Debug, Default)]
pub struct Pipeline {
    act_reader: [Option<Event>; 2],
    wgt_reader: [Option<Event>; 2],
    out_reader: [Option<Event>; 2],
    act_turn: usize,
    wgt_turn: usize,
    out_turn: usize,
    /// The store event after which the last layer's output is in DRAM.
    last_store: Option<Event>,
}

struct Step {
    m0: usize,
    tm: usize,
    nb: usize,
    kb0: usize,
    tk: usize,
    load_act: bool,
    first_k: bool,
    last_k: bool,
}

fn to_u16(v: usize, what: &str, layer: &str) -> Result<u16> {
    u16::try_from(v).map_err(|_| CompileError::Lower {
        layer: layer.to_string(),
        message: format!("{what} {v} exceeds the 16-bit instruction field"),
    })
}

/// Emits the instructions of one dense layer.
pub fn emit(
    b: &mut ProgramBuilder,
    cfg: &HwConfig,
    pipe: &mut Pipeline,
    layer: &DenseLayer,
) -> Result<()> {
    let (m, k, n) = (
        layer.input.rows,
        layer.input.features,
        layer.output.features,
    );
    if layer.output.rows != m {
        return Err(CompileError::Lower {
            layer: layer.name.into(),
            message: format!("input has {m} rows, output {}", layer.output.rows),
        });
    }
    let t = Tiling::plan(cfg, m, k, n);
    let (rows, cols) = (cfg.rows as usize, cfg.cols as usize);

    // The previous layer's stores must reach DRAM before this layer loads: the store module
    // tells compute, which tells load.
    if let Some(ev) = pipe.last_store.take() {
        b.wait(Edge::STORE_TO_COMPUTE, ev);
        b.flush_waits(sinter_isa::Module::Compute);
        let barrier = b.signal(Edge::COMPUTE_TO_LOAD);
        b.wait(Edge::COMPUTE_TO_LOAD, barrier);
    }

    let mut steps = Vec::new();
    for mt in 0..t.m_tiles {
        let m0 = mt * t.tm;
        let tm = t.tm.min(m - m0);
        for nb in 0..t.n_blocks {
            for kc in 0..t.k_chunks {
                let kb0 = kc * t.tk;
                steps.push(Step {
                    m0,
                    tm,
                    nb,
                    kb0,
                    tk: t.tk.min(t.k_blocks - kb0),
                    load_act: t.k_chunks > 1 || nb == 0,
                    first_k: kc == 0,
                    last_k: kc + 1 == t.k_chunks,
                });
            }
        }
    }

    let act_half = cfg.act_depth as usize / 2;
    let wgt_half = cfg.wgt_depth as usize / 2;
    let out_half = cfg.out_depth as usize / 2;
    let param_row = to_u16(
        (cfg.acc_depth - PARAM_ROWS) as usize,
        "param row",
        layer.name,
    )?;
    let name = layer.name;

    // Buffer halves chosen per step (decided when its loads are emitted).
    let mut act_base = vec![0usize; steps.len()];
    let mut act_half_of = vec![0usize; steps.len()];
    let mut wgt_half_of = vec![0usize; steps.len()];
    let mut loaded: Vec<Event> = Vec::with_capacity(steps.len());

    let emit_loads = |b: &mut ProgramBuilder,
                      pipe: &mut Pipeline,
                      i: usize,
                      act_base: &mut [usize],
                      act_half_of: &mut [usize],
                      wgt_half_of: &mut [usize]|
     -> Result<Event> {
        let s = &steps[i];
        if s.load_act {
            let h = pipe.act_turn % 2;
            pipe.act_turn += 1;
            if let Some(ev) = pipe.act_reader[h] {
                b.wait(Edge::COMPUTE_TO_LOAD, ev);
            }
            act_base[i] = h * act_half;
            act_half_of[i] = h;
            b.emit(Instruction::Load(Dma {
                buffer: Buffer::Act,
                dram_base: layer.input.addr
                    + (s.m0 as u32) * layer.input.row_bytes
                    + (s.kb0 * rows) as u32,
                sram_base: to_u16(h * act_half, "act row", name)?,
                y_size: to_u16(s.tk, "k blocks", name)?,
                y_stride: rows as u32,
                x_size: to_u16(s.tm, "rows", name)?,
                x_stride: layer.input.row_bytes,
                ..Dma::default()
            }));
        } else {
            // Reuse the activation rows of the previous step of this m-tile.
            act_base[i] = act_base[i - 1];
            act_half_of[i] = act_half_of[i - 1];
        }
        let h = pipe.wgt_turn % 2;
        pipe.wgt_turn += 1;
        if let Some(ev) = pipe.wgt_reader[h] {
            b.wait(Edge::COMPUTE_TO_LOAD, ev);
        }
        wgt_half_of[i] = h;
        let tile = (rows * cols) as u32;
        b.emit(Instruction::Load(Dma {
            buffer: Buffer::Wgt,
            dram_base: layer.weights_addr + ((s.nb * t.k_blocks + s.kb0) as u32) * tile,
            sram_base: to_u16(h * wgt_half, "weight tile", name)?,
            y_size: 1,
            x_size: to_u16(s.tk, "k blocks", name)?,
            x_stride: tile,
            ..Dma::default()
        }));
        Ok(b.signal(Edge::LOAD_TO_COMPUTE))
    };

    if !steps.is_empty() {
        loaded.push(emit_loads(
            b,
            pipe,
            0,
            &mut act_base,
            &mut act_half_of,
            &mut wgt_half_of,
        )?);
    }
    for i in 0..steps.len() {
        // Loads run one step ahead of compute.
        if i + 1 < steps.len() {
            loaded.push(emit_loads(
                b,
                pipe,
                i + 1,
                &mut act_base,
                &mut act_half_of,
                &mut wgt_half_of,
            )?);
        }
        let s = &steps[i];
        b.wait(Edge::LOAD_TO_COMPUTE, loaded[i]);
        if s.first_k {
            b.emit(Instruction::Load(Dma {
                buffer: Buffer::Acc,
                dram_base: layer.params_addr + (s.nb * PARAM_ROWS as usize * cols * 4) as u32,
                sram_base: param_row,
                y_size: 1,
                x_size: PARAM_ROWS as u16,
                x_stride: (cols * 4) as u32,
                ..Dma::default()
            }));
        }
        let tm = to_u16(s.tm, "rows", name)?;
        for kl in 0..s.tk {
            b.emit(Instruction::Gemm(Gemm {
                mode: if s.first_k && kl == 0 {
                    GemmMode::Overwrite
                } else {
                    GemmMode::Add
                },
                wgt: to_u16(wgt_half_of[i] * wgt_half + kl, "weight tile", name)?,
                n_outer: 1,
                n_inner: tm,
                acc: Walk::contiguous(0),
                act: Walk::contiguous(to_u16(act_base[i] + kl * s.tm, "act row", name)?),
                ..Gemm::default()
            }));
        }
        let mut vec_event = None;
        let mut out_half_used = 0;
        if s.last_k {
            let h = pipe.out_turn % 2;
            pipe.out_turn += 1;
            out_half_used = h;
            if let Some(ev) = pipe.out_reader[h] {
                b.wait(Edge::STORE_TO_COMPUTE, ev);
            }
            b.emit(Instruction::Vec(VecInsn {
                op: VecOp::Requant,
                param: param_row,
                n_outer: 1,
                n_inner: tm,
                src: Walk::contiguous(0),
                dst: Walk::contiguous(to_u16(h * out_half, "out row", name)?),
                zero_point: layer.zero_point,
                clamp_lo: layer.clamp_lo,
                clamp_hi: layer.clamp_hi,
                ..VecInsn::default()
            }));
        }
        let done = b.signal(Edge::COMPUTE_TO_LOAD);
        pipe.act_reader[act_half_of[i]] = Some(done);
        pipe.wgt_reader[wgt_half_of[i]] = Some(done);
        if s.last_k {
            vec_event = Some(b.signal(Edge::COMPUTE_TO_STORE));
        }
        if let Some(ev) = vec_event {
            b.wait(Edge::COMPUTE_TO_STORE, ev);
            b.emit(Instruction::Store(Dma {
                buffer: Buffer::Out,
                dram_base: layer.output.addr
                    + (s.m0 as u32) * layer.output.row_bytes
                    + (s.nb * cols) as u32,
                sram_base: to_u16(out_half_used * out_half, "out row", name)?,
                y_size: 1,
                x_size: tm,
                x_stride: layer.output.row_bytes,
                ..Dma::default()
            }));
            let stored = b.signal(Edge::STORE_TO_COMPUTE);
            pipe.out_reader[out_half_used] = Some(stored);
            pipe.last_store = Some(stored);
        }
    }
    Ok(())
}

/// Packs `[K, N]` int8 weights into `[n_block][k_block]` tiles of `rows × cols` bytes
/// (byte `r·cols + c` of a tile is the weight of input lane `r` for output lane `c`), zero
/// padded at the edges.
pub fn pack_weights(cfg: &HwConfig, w: &ndarray::Array2<i8>) -> Vec<u8> {
    let (k, n) = w.dim();
    let (rows, cols) = (cfg.rows as usize, cfg.cols as usize);
    let (kb, nb) = (k.div_ceil(rows), n.div_ceil(cols));
    let mut out = vec![0u8; kb * nb * rows * cols];
    for j in 0..nb {
        for i in 0..kb {
            let tile = &mut out[(j * kb + i) * rows * cols..][..rows * cols];
            for r in 0..rows.min(k - i * rows) {
                for c in 0..cols.min(n - j * cols) {
                    tile[r * cols + c] = w[[i * rows + r, j * cols + c]] as u8;
                }
            }
        }
    }
    out
}

/// Packs per-channel bias, multiplier and shift into `[n_block][3][cols]` int32 rows.
pub fn pack_params(cfg: &HwConfig, bias: &[i32], mult: &[i32], shift: &[i32]) -> Vec<u8> {
    let cols = cfg.cols as usize;
    let nb = bias.len().div_ceil(cols);
    let mut out = Vec::with_capacity(nb * 3 * cols * 4);
    for j in 0..nb {
        for lane in [bias, mult, shift] {
            for c in 0..cols {
                let v = lane.get(j * cols + c).copied().unwrap_or(0);
                out.extend_from_slice(&v.to_le_bytes());
            }
        }
    }
    out
}
