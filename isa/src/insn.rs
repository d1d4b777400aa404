//! The instruction set: four memory/compute instructions and a sync, each 256 bits.
//!
//! The machine is decoupled access/execute: a fetch unit reads the program from DRAM and
//! dispatches every instruction to one of three in-order modules — load, compute, store — that run
//! concurrently. Ordering between modules is explicit: each instruction may *pop* a dependency
//! token from a neighbouring module before it starts and *push* one when it is done. Tokens flow
//! load ⇄ compute ⇄ store, so "prev" and "next" name the neighbours in that chain.
//!
//! Encoding: little-endian 256-bit word; bit 0 is bit 0 of the first byte. Every format is listed
//! once in [`FORMATS`]; the encoder, decoder and the generated SystemVerilog package all read
//! that table, so a field cannot move in one place and not the other. Reserved bits must be zero.

use crate::{Buffer, HwConfig};
use serde::{Deserialize, Serialize};
use std::fmt;

/// Instruction width in bytes.
pub const INSN_BYTES: usize = 32;
/// Instruction width in bits.
pub const INSN_BITS: u32 = 256;

/// The three concurrent modules of the NPU.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Module {
    Load = 0,
    #[default]
    Compute = 1,
    Store = 2,
}

impl Module {
    pub const ALL: [Module; 3] = [Module::Load, Module::Compute, Module::Store];
    pub fn from_bits(v: u64) -> Option<Module> {
        Some(match v {
            0 => Module::Load,
            1 => Module::Compute,
            2 => Module::Store,
            _ => return None,
        })
    }
    pub fn name(self) -> &'static str {
        match self {
            Module::Load => "load",
            Module::Compute => "compute",
            Module::Store => "store",
        }
    }
}

/// Dependency-token flags carried by every instruction.
///
/// `pop_*`: wait until the named neighbour has pushed a token (and consume it) before starting.
/// `push_*`: signal the named neighbour when this instruction has completed. The load module has
/// no "prev" and the store module no "next"; setting those flags is an illegal instruction.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Deps {
    pub pop_prev: bool,
    pub pop_next: bool,
    pub push_prev: bool,
    pub push_next: bool,
}

impl Deps {
    pub const NONE: Deps = Deps {
        pop_prev: false,
        pop_next: false,
        push_prev: false,
        push_next: false,
    };
    fn bits(self) -> u64 {
        self.pop_prev as u64
            | (self.pop_next as u64) << 1
            | (self.push_prev as u64) << 2
            | (self.push_next as u64) << 3
    }
    fn from_bits(b: u64) -> Deps {
        Deps {
            pop_prev: b & 1 != 0,
            pop_next: b & 2 != 0,
            push_prev: b & 4 != 0,
            push_next: b & 8 != 0,
        }
    }
    pub fn is_none(self) -> bool {
        self == Deps::NONE
    }
}

/// Opcodes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Opcode {
    Load = 0,
    Gemm = 1,
    Vec = 2,
    Store = 3,
    Sync = 4,
}

impl Opcode {
    pub const ALL: [Opcode; 5] = [
        Opcode::Load,
        Opcode::Gemm,
        Opcode::Vec,
        Opcode::Store,
        Opcode::Sync,
    ];
    pub fn from_bits(v: u64) -> Option<Opcode> {
        Opcode::ALL.into_iter().find(|o| *o as u64 == v)
    }
    pub fn name(self) -> &'static str {
        match self {
            Opcode::Load => "load",
            Opcode::Gemm => "gemm",
            Opcode::Vec => "vec",
            Opcode::Store => "store",
            Opcode::Sync => "sync",
        }
    }
}

/// A 2-D strided DMA transfer between DRAM and an on-chip buffer.
///
/// The transfer moves `y_size × x_size` elements, an element being one row of the buffer
/// ([`HwConfig::element_bytes`]). Element `(y, x)` lives in DRAM at
/// `dram_base + y·y_stride + x·x_stride` (bytes). On chip the (padded) block is dense: with
/// `w = pad_left + x_size + pad_right`, position `(py, px)` of the padded block is row
/// `sram_base + py·w + px`. Positions in the padding (loads only) get `pad_value` in every int8
/// lane (accumulator loads pad with 0). Stores have no padding.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Dma {
    pub deps: Deps,
    pub buffer: Buffer,
    pub dram_base: u32,
    pub sram_base: u16,
    pub y_size: u16,
    pub x_size: u16,
    pub y_stride: u32,
    pub x_stride: u32,
    pub pad_top: u8,
    pub pad_bottom: u8,
    pub pad_left: u8,
    pub pad_right: u8,
    pub pad_value: i8,
}

impl Dma {
    /// Rows written on chip, padding included (computed wide: fields are unchecked here).
    pub fn sram_rows(&self) -> u64 {
        (self.pad_top as u64 + self.y_size as u64 + self.pad_bottom as u64)
            * (self.pad_left as u64 + self.x_size as u64 + self.pad_right as u64)
    }
    pub fn has_padding(&self) -> bool {
        self.pad_top | self.pad_bottom | self.pad_left | self.pad_right != 0
    }
    /// The on-chip rows written or read, `base ..= last` (`None` for an empty transfer).
    pub fn sram_bounds(&self) -> Option<(u64, u64)> {
        let rows = self.sram_rows();
        (rows > 0).then(|| (self.sram_base as u64, self.sram_base as u64 + rows - 1))
    }
}

/// The DRAM bytes a transfer touches: `elem` bytes at `base + y·y_stride + x·x_stride` for
/// every `y < y_size`, `x < x_size`.
#[derive(Clone, Copy, Debug)]
pub struct DramRegion {
    base: u64,
    y_size: u64,
    x_size: u64,
    y_stride: u64,
    x_stride: u64,
    elem: u64,
    /// The bounding byte range `lo..hi`.
    pub lo: u64,
    pub hi: u64,
}

impl DramRegion {
    /// The bytes `d` touches with `elem`-byte elements (fields unchecked: computed wide; an
    /// empty transfer touches none).
    pub fn of(d: &Dma, elem: u32) -> DramRegion {
        let (y_size, x_size, elem) = (d.y_size as u64, d.x_size as u64, elem as u64);
        let lo = d.dram_base as u64;
        let hi = if y_size == 0 || x_size == 0 {
            lo
        } else {
            lo + (y_size - 1) * d.y_stride as u64 + (x_size - 1) * d.x_stride as u64 + elem
        };
        DramRegion {
            base: lo,
            y_size,
            x_size,
            // A single row has no row stride; any multiple of the element stride stands in.
            y_stride: if y_size == 1 { 0 } else { d.y_stride as u64 },
            x_stride: if x_size == 1 { 0 } else { d.x_stride as u64 },
            elem,
            lo,
            hi,
        }
    }

    /// Whether the two certainly share no byte, cheaply: beyond disjoint bounding ranges this
    /// knows one case, elements on the same lattice (equal element strides, row strides
    /// multiples of them) whose offsets keep them apart — the blocks of channels of one tensor
    /// that different output blocks store.
    pub fn apart(&self, o: &DramRegion) -> bool {
        if self.hi <= o.lo || o.hi <= self.lo {
            return true;
        }
        let xs = self.x_stride;
        let lattice = xs > 0
            && o.x_stride == xs
            && self.y_stride.is_multiple_of(xs)
            && o.y_stride.is_multiple_of(xs)
            && self.elem == o.elem;
        if !lattice {
            return false;
        }
        let r = (o.base as i64 - self.base as i64).rem_euclid(xs as i64) as u64;
        r >= self.elem && r + self.elem <= xs
    }

    /// Whether the two share a byte, exactly (element by element where [`Self::apart`] cannot
    /// tell).
    pub fn overlaps(&self, o: &DramRegion) -> bool {
        if self.apart(o) {
            return false;
        }
        let (a, b) = (self.ranges(), o.ranges());
        let (mut i, mut j) = (0, 0);
        while i < a.len() && j < b.len() {
            if a[i].1 <= b[j].0 {
                i += 1;
            } else if b[j].1 <= a[i].0 {
                j += 1;
            } else {
                return true;
            }
        }
        false
    }

    /// The element byte ranges `lo..hi`, sorted.
    fn ranges(&self) -> Vec<(u64, u64)> {
        let mut r = Vec::with_capacity((self.y_size * self.x_size) as usize);
        for y in 0..self.y_size {
            for x in 0..self.x_size {
                let lo = self.base + y * self.y_stride + x * self.x_stride;
                r.push((lo, lo + self.elem));
            }
        }
        r.sort_unstable();
        r
    }
}

impl Walk {
    /// The rows an `outer × inner` loop touches, as a bounding interval `base ..= last`
    /// (`None` for an empty loop).
    pub fn bounds(&self, outer: u16, inner: u16) -> Option<(u64, u64)> {
        (outer > 0 && inner > 0).then(|| (self.base as u64, self.max_row(outer, inner)))
    }

    /// Whether an `outer × inner` loop visits every row of its bounding interval.
    pub fn covers(&self, outer: u16, inner: u16) -> bool {
        let (so, si) = (self.stride_outer as usize, self.stride_inner as usize);
        let (no, ni) = (outer as usize, inner as usize);
        (ni == 1 || si == 1) && (no == 1 || so == ni || (ni == 1 && so == 1))
    }
}

/// A two-level affine loop over buffer rows: iteration `(o, i)` touches row
/// `base + o·stride_outer + i·stride_inner`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Walk {
    pub base: u16,
    pub stride_outer: u16,
    pub stride_inner: u16,
}

impl Walk {
    pub const fn contiguous(base: u16) -> Walk {
        Walk {
            base,
            stride_outer: 0,
            stride_inner: 1,
        }
    }
    /// Row of iteration `(o, i)`; only meaningful for validated instructions, whose rows all
    /// fit the buffers.
    #[inline]
    pub fn row(&self, o: u32, i: u32) -> u32 {
        self.base as u32 + o * self.stride_outer as u32 + i * self.stride_inner as u32
    }
    /// The largest row touched by an `outer × inner` loop (both at least 1), computed wide so
    /// that any field values give the exact answer.
    pub fn max_row(&self, outer: u16, inner: u16) -> u64 {
        self.base as u64
            + (outer as u64 - 1) * self.stride_outer as u64
            + (inner as u64 - 1) * self.stride_inner as u64
    }
}

/// How a GEMM combines its product `p` with the accumulator row `a`, lane by lane.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum GemmMode {
    /// `a = p`
    #[default]
    Overwrite = 0,
    /// `a = a + p` (wrapping): matrix products, convolutions, average pooling.
    Add = 1,
    /// `a = max(a, p)` (signed): max pooling with an identity tile.
    Max = 2,
}

impl GemmMode {
    pub const ALL: [GemmMode; 3] = [GemmMode::Overwrite, GemmMode::Add, GemmMode::Max];
    pub fn from_bits(v: u64) -> Option<GemmMode> {
        GemmMode::ALL.into_iter().find(|m| *m as u64 == v)
    }
    /// Whether the accumulator row is read before it is written.
    pub fn reads_acc(self) -> bool {
        self != GemmMode::Overwrite
    }
    /// Combines one lane.
    #[inline]
    pub fn apply(self, acc: i32, product: i32) -> i32 {
        match self {
            GemmMode::Overwrite => product,
            GemmMode::Add => acc.wrapping_add(product),
            GemmMode::Max => acc.max(product),
        }
    }
}

/// Matrix multiply on the MAC array: for every `(o, i)` of the `n_outer × n_inner` loop,
/// `acc[acc.row(o,i)] = mode(acc[acc.row(o,i)], act[act.row(o,i)] · W[wgt])`, where `W[wgt]` is
/// the `rows × cols` weight tile and lane `c` of the product is `Σ_r act[r]·W[r][c]` in int32
/// (wrapping), combined with the accumulator as [`GemmMode`] says. Iterations run strictly in
/// order (an iteration sees the accumulator rows every earlier one wrote).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Gemm {
    pub deps: Deps,
    pub mode: GemmMode,
    pub wgt: u16,
    pub n_outer: u16,
    pub n_inner: u16,
    pub acc: Walk,
    pub act: Walk,
}

/// Vector-unit operations on accumulator rows.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum VecOp {
    /// `out = clamp(requantize(acc + bias, mult, shift) + zero_point, lo, hi)` per lane, with
    /// `bias`, `mult` and `shift` read from accumulator rows `param`, `param+1`, `param+2`
    /// (see [`crate::numeric::requantize`]).
    #[default]
    Requant = 0,
}

impl VecOp {
    pub fn from_bits(v: u64) -> Option<VecOp> {
        match v {
            0 => Some(VecOp::Requant),
            _ => None,
        }
    }
}

/// A vector-unit instruction: for every `(o, i)`, reads accumulator row `src.row(o,i)` and writes
/// output row `dst.row(o,i)`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct VecInsn {
    pub deps: Deps,
    pub op: VecOp,
    pub param: u16,
    pub n_outer: u16,
    pub n_inner: u16,
    pub src: Walk,
    pub dst: Walk,
    pub zero_point: i8,
    pub clamp_lo: i8,
    pub clamp_hi: i8,
}

/// Does nothing but exchange tokens, in the named module (barriers, draining token counts).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Sync {
    pub deps: Deps,
    pub module: Module,
}

/// One decoded instruction.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Instruction {
    /// DRAM → buffer. Loads into the activation or weight buffer run on the load module; loads
    /// into the accumulator buffer (bias and requantization parameters) run on the compute module.
    Load(Dma),
    Gemm(Gemm),
    Vec(VecInsn),
    /// Output buffer → DRAM, on the store module.
    Store(Dma),
    Sync(Sync),
}

impl Instruction {
    pub fn opcode(&self) -> Opcode {
        match self {
            Instruction::Load(_) => Opcode::Load,
            Instruction::Gemm(_) => Opcode::Gemm,
            Instruction::Vec(_) => Opcode::Vec,
            Instruction::Store(_) => Opcode::Store,
            Instruction::Sync(_) => Opcode::Sync,
        }
    }

    pub fn deps(&self) -> Deps {
        match self {
            Instruction::Load(d) | Instruction::Store(d) => d.deps,
            Instruction::Gemm(g) => g.deps,
            Instruction::Vec(v) => v.deps,
            Instruction::Sync(s) => s.deps,
        }
    }

    pub fn deps_mut(&mut self) -> &mut Deps {
        match self {
            Instruction::Load(d) | Instruction::Store(d) => &mut d.deps,
            Instruction::Gemm(g) => &mut g.deps,
            Instruction::Vec(v) => &mut v.deps,
            Instruction::Sync(s) => &mut s.deps,
        }
    }

    /// The module this instruction is dispatched to.
    pub fn module(&self) -> Module {
        match self {
            Instruction::Load(d) => match d.buffer {
                Buffer::Act | Buffer::Wgt => Module::Load,
                Buffer::Acc | Buffer::Out => Module::Compute,
            },
            Instruction::Gemm(_) | Instruction::Vec(_) => Module::Compute,
            Instruction::Store(_) => Module::Store,
            Instruction::Sync(s) => s.module,
        }
    }

    /// Multiply-accumulate cycles (array-active cycles) this instruction takes.
    pub fn mac_cycles(&self) -> u64 {
        match self {
            Instruction::Gemm(g) => g.n_outer as u64 * g.n_inner as u64,
            _ => 0,
        }
    }

    /// Checks everything the hardware checks before running an instruction: legal buffers and
    /// dependency flags, non-empty loops, on-chip rows in range and DRAM alignment.
    pub fn validate(&self, cfg: &HwConfig) -> Result<(), InsnFault> {
        let m = self.module();
        let d = self.deps();
        if (m == Module::Load && (d.pop_prev || d.push_prev))
            || (m == Module::Store && (d.pop_next || d.push_next))
        {
            return Err(InsnFault::Illegal(
                "dependency flag names a missing neighbour",
            ));
        }
        match self {
            Instruction::Load(dma) | Instruction::Store(dma) => {
                let store = matches!(self, Instruction::Store(_));
                if store && dma.buffer != Buffer::Out {
                    return Err(InsnFault::Illegal("store reads only the output buffer"));
                }
                if !store && dma.buffer == Buffer::Out {
                    return Err(InsnFault::Illegal("load cannot write the output buffer"));
                }
                if store && (dma.has_padding() || dma.pad_value != 0) {
                    return Err(InsnFault::Illegal("store has no padding"));
                }
                if dma.x_size == 0 || dma.y_size == 0 {
                    return Err(InsnFault::Illegal("empty transfer"));
                }
                let end = dma.sram_base as u64 + dma.sram_rows();
                if end > cfg.depth(dma.buffer) as u64 {
                    return Err(InsnFault::SramBounds);
                }
                let align = cfg.dram_alignment(dma.buffer);
                if dma.dram_base % align != 0
                    || dma.x_stride % align != 0
                    || dma.y_stride % align != 0
                {
                    return Err(InsnFault::Misaligned);
                }
            }
            Instruction::Gemm(g) => {
                if g.n_outer == 0 || g.n_inner == 0 {
                    return Err(InsnFault::Illegal("empty loop"));
                }
                if g.wgt as u32 >= cfg.wgt_depth
                    || g.acc.max_row(g.n_outer, g.n_inner) >= cfg.acc_depth as u64
                    || g.act.max_row(g.n_outer, g.n_inner) >= cfg.act_depth as u64
                {
                    return Err(InsnFault::SramBounds);
                }
            }
            Instruction::Vec(v) => {
                if v.n_outer == 0 || v.n_inner == 0 {
                    return Err(InsnFault::Illegal("empty loop"));
                }
                if v.param as u32 + 2 >= cfg.acc_depth
                    || v.src.max_row(v.n_outer, v.n_inner) >= cfg.acc_depth as u64
                    || v.dst.max_row(v.n_outer, v.n_inner) >= cfg.out_depth as u64
                {
                    return Err(InsnFault::SramBounds);
                }
            }
            Instruction::Sync(_) => {}
        }
        Ok(())
    }
}

/// Why the hardware refuses an instruction; the code is what the ERROR_CODE register shows.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum InsnFault {
    #[error("illegal instruction: {0}")]
    Illegal(&'static str),
    #[error("on-chip buffer row out of range")]
    SramBounds,
    #[error("DRAM address or stride not aligned to the element/beat size")]
    Misaligned,
}

impl InsnFault {
    pub fn code(&self) -> u32 {
        match self {
            InsnFault::Illegal(_) => crate::regs::ERR_ILLEGAL_INSN,
            InsnFault::SramBounds => crate::regs::ERR_SRAM_BOUNDS,
            InsnFault::Misaligned => crate::regs::ERR_MISALIGNED,
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Bit layout
// ---------------------------------------------------------------------------------------------

/// One field of an instruction format.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Field {
    pub name: &'static str,
    pub lo: u32,
    pub width: u32,
}

const fn f(name: &'static str, lo: u32, width: u32) -> Field {
    Field { name, lo, width }
}

/// Fields shared by every format.
pub const COMMON: [Field; 2] = [f("opcode", 0, 4), f("deps", 4, 4)];

/// Field layouts of every instruction format (after the common opcode and deps fields).
pub const DMA_FIELDS: [Field; 12] = [
    f("buffer", 8, 2),
    f("dram_base", 32, 32),
    f("sram_base", 64, 16),
    f("y_size", 80, 16),
    f("x_size", 96, 16),
    f("y_stride", 112, 32),
    f("x_stride", 144, 32),
    f("pad_top", 176, 8),
    f("pad_bottom", 184, 8),
    f("pad_left", 192, 8),
    f("pad_right", 200, 8),
    f("pad_value", 208, 8),
];
pub const GEMM_FIELDS: [Field; 10] = [
    f("mode", 8, 2),
    f("wgt", 16, 16),
    f("n_outer", 32, 16),
    f("n_inner", 48, 16),
    f("acc_base", 64, 16),
    f("acc_stride_outer", 80, 16),
    f("acc_stride_inner", 96, 16),
    f("act_base", 112, 16),
    f("act_stride_outer", 128, 16),
    f("act_stride_inner", 144, 16),
];
pub const VEC_FIELDS: [Field; 13] = [
    f("op", 8, 4),
    f("param", 16, 16),
    f("n_outer", 32, 16),
    f("n_inner", 48, 16),
    f("src_base", 64, 16),
    f("src_stride_outer", 80, 16),
    f("src_stride_inner", 96, 16),
    f("dst_base", 112, 16),
    f("dst_stride_outer", 128, 16),
    f("dst_stride_inner", 144, 16),
    f("zero_point", 160, 8),
    f("clamp_lo", 168, 8),
    f("clamp_hi", 176, 8),
];
pub const SYNC_FIELDS: [Field; 1] = [f("target", 8, 2)];

/// Every format: (name used in the SystemVerilog package, fields).
pub const FORMATS: [(&str, &[Field]); 4] = [
    ("dma", &DMA_FIELDS),
    ("gemm", &GEMM_FIELDS),
    ("vec", &VEC_FIELDS),
    ("sync", &SYNC_FIELDS),
];

fn fields_of(op: Opcode) -> &'static [Field] {
    match op {
        Opcode::Load | Opcode::Store => &DMA_FIELDS,
        Opcode::Gemm => &GEMM_FIELDS,
        Opcode::Vec => &VEC_FIELDS,
        Opcode::Sync => &SYNC_FIELDS,
    }
}

/// A raw 256-bit instruction word as four little-endian 64-bit limbs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Word([u64; 4]);

impl Word {
    fn put(&mut self, lo: u32, width: u32, v: u64) {
        debug_assert!(width == 64 || v >> width == 0, "value does not fit field");
        for bit in 0..width {
            if v >> bit & 1 != 0 {
                let p = lo + bit;
                self.0[(p / 64) as usize] |= 1 << (p % 64);
            }
        }
    }
    fn get(&self, lo: u32, width: u32) -> u64 {
        let mut v = 0;
        for bit in 0..width {
            let p = lo + bit;
            v |= (self.0[(p / 64) as usize] >> (p % 64) & 1) << bit;
        }
        v
    }
    fn clear(&mut self, lo: u32, width: u32) {
        for bit in 0..width {
            let p = lo + bit;
            self.0[(p / 64) as usize] &= !(1 << (p % 64));
        }
    }
    fn to_bytes(self) -> [u8; INSN_BYTES] {
        let mut b = [0; INSN_BYTES];
        for (i, limb) in self.0.iter().enumerate() {
            b[i * 8..i * 8 + 8].copy_from_slice(&limb.to_le_bytes());
        }
        b
    }
    fn from_bytes(b: &[u8; INSN_BYTES]) -> Word {
        let mut w = [0u64; 4];
        for (i, limb) in w.iter_mut().enumerate() {
            *limb = u64::from_le_bytes(b[i * 8..i * 8 + 8].try_into().unwrap());
        }
        Word(w)
    }
}

/// Why a 256-bit word is not an instruction.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("unknown opcode {0}")]
    Opcode(u64),
    #[error("field {field} has invalid value {value}")]
    Field { field: &'static str, value: u64 },
    #[error("reserved bits are not zero")]
    Reserved,
    #[error("program length {0} is not a multiple of {INSN_BYTES} bytes")]
    Length(usize),
}

fn field(fields: &[Field], name: &str) -> Field {
    *fields
        .iter()
        .find(|f| f.name == name)
        .unwrap_or_else(|| panic!("no field {name}"))
}

struct Writer {
    word: Word,
    fields: &'static [Field],
}

impl Writer {
    fn new(op: Opcode, deps: Deps) -> Writer {
        let mut word = Word::default();
        word.put(0, 4, op as u64);
        word.put(4, 4, deps.bits());
        Writer {
            word,
            fields: fields_of(op),
        }
    }
    fn set(&mut self, name: &str, v: u64) -> &mut Self {
        let f = field(self.fields, name);
        self.word.put(f.lo, f.width, v);
        self
    }
}

struct Reader {
    word: Word,
    fields: &'static [Field],
}

impl Reader {
    /// Reads a field and clears it, so that whatever is left at the end is reserved bits.
    fn take(&mut self, name: &str) -> u64 {
        let f = field(self.fields, name);
        let v = self.word.get(f.lo, f.width);
        self.word.clear(f.lo, f.width);
        v
    }
    fn walk(&mut self, prefix: &str) -> Walk {
        Walk {
            base: self.take(&format!("{prefix}_base")) as u16,
            stride_outer: self.take(&format!("{prefix}_stride_outer")) as u16,
            stride_inner: self.take(&format!("{prefix}_stride_inner")) as u16,
        }
    }
}

impl Instruction {
    /// Encodes into the 256-bit little-endian word.
    pub fn encode(&self) -> [u8; INSN_BYTES] {
        let mut w = Writer::new(self.opcode(), self.deps());
        match self {
            Instruction::Load(d) | Instruction::Store(d) => {
                w.set("buffer", d.buffer as u64)
                    .set("dram_base", d.dram_base as u64)
                    .set("sram_base", d.sram_base as u64)
                    .set("y_size", d.y_size as u64)
                    .set("x_size", d.x_size as u64)
                    .set("y_stride", d.y_stride as u64)
                    .set("x_stride", d.x_stride as u64)
                    .set("pad_top", d.pad_top as u64)
                    .set("pad_bottom", d.pad_bottom as u64)
                    .set("pad_left", d.pad_left as u64)
                    .set("pad_right", d.pad_right as u64)
                    .set("pad_value", d.pad_value as u8 as u64);
            }
            Instruction::Gemm(g) => {
                w.set("mode", g.mode as u64)
                    .set("wgt", g.wgt as u64)
                    .set("n_outer", g.n_outer as u64)
                    .set("n_inner", g.n_inner as u64);
                set_walk(&mut w, "acc", g.acc);
                set_walk(&mut w, "act", g.act);
            }
            Instruction::Vec(v) => {
                w.set("op", v.op as u64)
                    .set("param", v.param as u64)
                    .set("n_outer", v.n_outer as u64)
                    .set("n_inner", v.n_inner as u64)
                    .set("zero_point", v.zero_point as u8 as u64)
                    .set("clamp_lo", v.clamp_lo as u8 as u64)
                    .set("clamp_hi", v.clamp_hi as u8 as u64);
                set_walk(&mut w, "src", v.src);
                set_walk(&mut w, "dst", v.dst);
            }
            Instruction::Sync(s) => {
                w.set("target", s.module as u64);
            }
        }
        w.word.to_bytes()
    }

    /// Decodes a 256-bit word; unknown opcodes, invalid enum values and non-zero reserved bits
    /// are errors, so decode(encode(i)) == i and encode(decode(w)) == w for every valid word.
    pub fn decode(bytes: &[u8; INSN_BYTES]) -> Result<Instruction, DecodeError> {
        let mut word = Word::from_bytes(bytes);
        let op_bits = word.get(0, 4);
        let op = Opcode::from_bits(op_bits).ok_or(DecodeError::Opcode(op_bits))?;
        let deps = Deps::from_bits(word.get(4, 4));
        word.clear(0, 8);
        let mut r = Reader {
            word,
            fields: fields_of(op),
        };
        let insn = match op {
            Opcode::Load | Opcode::Store => {
                let b = r.take("buffer");
                let dma = Dma {
                    deps,
                    buffer: Buffer::from_bits(b).ok_or(DecodeError::Field {
                        field: "buffer",
                        value: b,
                    })?,
                    dram_base: r.take("dram_base") as u32,
                    sram_base: r.take("sram_base") as u16,
                    y_size: r.take("y_size") as u16,
                    x_size: r.take("x_size") as u16,
                    y_stride: r.take("y_stride") as u32,
                    x_stride: r.take("x_stride") as u32,
                    pad_top: r.take("pad_top") as u8,
                    pad_bottom: r.take("pad_bottom") as u8,
                    pad_left: r.take("pad_left") as u8,
                    pad_right: r.take("pad_right") as u8,
                    pad_value: r.take("pad_value") as u8 as i8,
                };
                if op == Opcode::Load {
                    Instruction::Load(dma)
                } else {
                    Instruction::Store(dma)
                }
            }
            Opcode::Gemm => Instruction::Gemm(Gemm {
                deps,
                mode: {
                    let m = r.take("mode");
                    GemmMode::from_bits(m).ok_or(DecodeError::Field {
                        field: "mode",
                        value: m,
                    })?
                },
                wgt: r.take("wgt") as u16,
                n_outer: r.take("n_outer") as u16,
                n_inner: r.take("n_inner") as u16,
                acc: r.walk("acc"),
                act: r.walk("act"),
            }),
            Opcode::Vec => {
                let o = r.take("op");
                Instruction::Vec(VecInsn {
                    deps,
                    op: VecOp::from_bits(o).ok_or(DecodeError::Field {
                        field: "op",
                        value: o,
                    })?,
                    param: r.take("param") as u16,
                    n_outer: r.take("n_outer") as u16,
                    n_inner: r.take("n_inner") as u16,
                    src: r.walk("src"),
                    dst: r.walk("dst"),
                    zero_point: r.take("zero_point") as u8 as i8,
                    clamp_lo: r.take("clamp_lo") as u8 as i8,
                    clamp_hi: r.take("clamp_hi") as u8 as i8,
                })
            }
            Opcode::Sync => {
                let m = r.take("target");
                Instruction::Sync(Sync {
                    deps,
                    module: Module::from_bits(m).ok_or(DecodeError::Field {
                        field: "target",
                        value: m,
                    })?,
                })
            }
        };
        if r.word != Word::default() {
            return Err(DecodeError::Reserved);
        }
        Ok(insn)
    }
}

fn set_walk(w: &mut Writer, prefix: &str, walk: Walk) {
    w.set(&format!("{prefix}_base"), walk.base as u64)
        .set(&format!("{prefix}_stride_outer"), walk.stride_outer as u64)
        .set(&format!("{prefix}_stride_inner"), walk.stride_inner as u64);
}

/// Encodes a whole program.
pub fn encode_program(program: &[Instruction]) -> Vec<u8> {
    program.iter().flat_map(|i| i.encode()).collect()
}

/// Decodes a whole program; the error names the instruction index.
pub fn decode_program(bytes: &[u8]) -> Result<Vec<Instruction>, (usize, DecodeError)> {
    if !bytes.len().is_multiple_of(INSN_BYTES) {
        return Err((bytes.len() / INSN_BYTES, DecodeError::Length(bytes.len())));
    }
    bytes
        .chunks_exact(INSN_BYTES)
        .enumerate()
        .map(|(i, c)| Instruction::decode(c.try_into().unwrap()).map_err(|e| (i, e)))
        .collect()
}

// ---------------------------------------------------------------------------------------------
// Disassembly
// ---------------------------------------------------------------------------------------------

impl fmt::Display for Deps {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (on, s) in [
            (self.pop_prev, " pop.prev"),
            (self.pop_next, " pop.next"),
            (self.push_prev, " push.prev"),
            (self.push_next, " push.next"),
        ] {
            if on {
                f.write_str(s)?;
            }
        }
        Ok(())
    }
}

impl fmt::Display for Walk {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}+{}o+{}i",
            self.base, self.stride_outer, self.stride_inner
        )
    }
}

impl fmt::Display for Instruction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Instruction::Load(d) | Instruction::Store(d) => {
                write!(
                    f,
                    "{:<5} {}[{}] dram=0x{:08x} y={}x{} x={}x{}",
                    self.opcode().name(),
                    d.buffer.name(),
                    d.sram_base,
                    d.dram_base,
                    d.y_size,
                    d.y_stride,
                    d.x_size,
                    d.x_stride
                )?;
                if d.has_padding() {
                    write!(
                        f,
                        " pad=t{},b{},l{},r{} val={}",
                        d.pad_top, d.pad_bottom, d.pad_left, d.pad_right, d.pad_value
                    )?;
                }
            }
            Instruction::Gemm(g) => write!(
                f,
                "gemm{} w[{}] {}x{} acc[{}] act[{}]",
                match g.mode {
                    GemmMode::Overwrite => "",
                    GemmMode::Add => ".add",
                    GemmMode::Max => ".max",
                },
                g.wgt,
                g.n_outer,
                g.n_inner,
                g.acc,
                g.act
            )?,
            Instruction::Vec(v) => write!(
                f,
                "vec.{:?} p={} {}x{} out[{}] <- acc[{}] zp={} clamp=[{},{}]",
                v.op,
                v.param,
                v.n_outer,
                v.n_inner,
                v.dst,
                v.src,
                v.zero_point,
                v.clamp_lo,
                v.clamp_hi
            )?,
            Instruction::Sync(s) => write!(f, "sync  {}", s.module.name())?,
        }
        write!(f, "{}", self.deps())
    }
}

/// A listing of a program, one instruction a line with its index and module.
pub fn disassemble(program: &[Instruction]) -> String {
    let mut s = String::new();
    for (i, insn) in program.iter().enumerate() {
        s.push_str(&format!("{i:6}  {:<7} {insn}\n", insn.module().name()));
    }
    s
}
