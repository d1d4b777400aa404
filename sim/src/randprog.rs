//! Seeded random programs for differential testing: valid, race-free programs with their initial
//! DRAM image, and invalid programs with the fault they must raise.
//!
//! # Shape of a valid program
//!
//! DRAM holds, in order: the program (at a random 32-byte aligned `PROG_BASE`), a read-only
//! *input* region (random bytes, starting with a table of requantization parameter triples), and
//! one *output* region per stretch. Nothing else is touched.
//!
//! A program is a sequence of *stretches*; a stretch is a sequence of *phases* `p = 0..n`, each
//! made of three blocks: `L_p` (load module: DMA into the activation and weight buffers),
//! `C_p` (compute module: accumulator loads, GEMMs, vector ops) and `S_p` (store module: DMA of
//! output rows to DRAM). A stretch uses `nb` ∈ {1, 2} *regions*: phase `p` only touches region
//! `p mod nb` of the activation, weight and output buffers (with `nb = 2`, two disjoint windows
//! in the two halves of each buffer — double buffering; with `nb = 1`, a single window, i.e. a
//! fully synchronised stretch). Blocks are empty-safe: a block without work is a `SYNC` that
//! only carries its tokens.
//!
//! Tokens (first instruction of a block pops, last one pushes):
//! - every `L_p` pushes load→compute; `C_p` pops it;
//! - every `C_p` pushes compute→load; `L_p` pops it for `p ≥ nb`;
//! - every `C_p` pushes compute→store; `S_p` pops it;
//! - every `S_p` pushes store→compute; `C_p` pops it for `p ≥ nb`.
//!
//! Tokens on an edge are counted, so the k-th pop waits for the k-th push; with the pops above
//! that is exactly the pairing written, because each edge has one pushing and one popping module
//! and both run in order. Blocks are emitted in a random interleaving that keeps every push
//! before the pop it pairs with (so the program never hangs, whatever the queue depths).
//!
//! # Why the result is independent of timing
//!
//! Two modules conflict only on shared state:
//! - activation/weight rows: written by `L_*`, read by `C_*`. `C_p` reads only region
//!   `p mod nb` and only rows that a load emitted earlier has initialised; every such load is
//!   `L_q` with `q ≤ p` in the same region (a later `L_{p+nb}` pops `C_p`'s token and is
//!   therefore emitted after `C_p`), so it completed before `C_p` started (`L_q` precedes `L_p`
//!   in the load module, and `C_p` waits for `L_p`). Conversely `L_{p+nb}`, the next writer of
//!   that region, waits for `C_p` to complete;
//! - output rows: written by `C_*` (VEC), read by `S_*`: the same argument with `S_p` waiting for
//!   `C_p`, and `C_{p+nb}` waiting for `S_p`;
//! - accumulator rows are touched only by the compute module (accumulator loads run there);
//! - DRAM: loads (load module and accumulator loads) read only the input region and the output
//!   regions of *earlier* stretches; stores of stretch `s` write only output region `s`; the
//!   program region is never written. Between stretches a *drain* makes everything before it
//!   happen-before everything after it: `SYNC compute` instructions pop every outstanding
//!   store→compute token (so all stores completed), the last one pushes compute→load, and
//!   `SYNC load` instructions pop every outstanding compute→load token including that one. After
//!   the drain every edge holds zero tokens, so the next stretch starts from a clean slate, and
//!   the bytes the previous stretch stored become readable.
//!
//! Within one module, instructions complete in order. A store never writes the same DRAM byte
//! twice within one instruction (its element lattice is non-overlapping); overlapping stores of
//! different instructions are ordered by the store module. GEMM and VEC loops may revisit rows
//! (stride 0, accumulate chains); their result is defined by the sequential iteration order.
//!
//! Every on-chip row a program reads was written earlier in the same program, so a run does not
//! depend on buffer contents left by a previous run.

use sinter_isa::insn::{
    Deps, Dma, Gemm, Instruction, Module, Sync, VecInsn, VecOp, Walk, COMMON, FORMATS, INSN_BYTES,
};
use sinter_isa::{regs, Buffer, GemmMode, HwConfig};
use std::ops::Range;

/// A small, fast, seedable generator (SplitMix64); stable across platforms and versions.
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed ^ 0x5851_F42D_4C95_7F2D)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (`n > 0`).
    pub fn below(&mut self, n: u64) -> u64 {
        assert!(n > 0);
        ((self.next_u64() as u128 * n as u128) >> 64) as u64
    }

    /// Uniform in `lo..=hi`.
    pub fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.below(hi - lo + 1)
    }

    /// `true` with probability `percent`/100.
    pub fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }

    pub fn pick<T: Copy>(&mut self, items: &[T]) -> T {
        items[self.below(items.len() as u64) as usize]
    }

    pub fn fill(&mut self, out: &mut [u8]) {
        for chunk in out.chunks_mut(8) {
            let v = self.next_u64().to_le_bytes();
            chunk.copy_from_slice(&v[..chunk.len()]);
        }
    }
}

/// Size knobs of generated programs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GenOptions {
    /// DRAM size every program is laid out in.
    pub dram_bytes: u64,
    /// Upper bound on the program length in instructions.
    pub max_insns: usize,
    /// Upper bound on stretches (drain-separated sequences of phases).
    pub max_stretches: usize,
    /// Upper bound on phases per stretch.
    pub max_phases: usize,
    /// Upper bound on a DMA's `y_size` and `x_size`.
    pub max_dma_dim: u16,
    /// Upper bound on a GEMM/VEC `n_inner` (and a quarter of it, at least 1, on `n_outer`).
    pub max_inner: u16,
    /// Rows of the activation, accumulator and output windows a stretch works in.
    pub window_rows: u32,
}

impl GenOptions {
    /// Defaults sized for a differential test of `cfg` (smaller transfers on bigger arrays).
    pub fn for_config(cfg: &HwConfig) -> GenOptions {
        let big = cfg.rows * cfg.cols > 64;
        GenOptions {
            dram_bytes: 1 << 16,
            max_insns: 64,
            max_stretches: 3,
            max_phases: 4,
            max_dma_dim: if big { 3 } else { 4 },
            max_inner: if big { 8 } else { 12 },
            window_rows: 40,
        }
    }

    /// Larger programs (up to 512 instructions and tens of thousands of cycles).
    pub fn large(cfg: &HwConfig) -> GenOptions {
        let big = cfg.rows * cfg.cols > 64;
        GenOptions {
            dram_bytes: 1 << 17,
            max_insns: 512,
            max_stretches: 8,
            max_phases: 12,
            max_dma_dim: if big { 6 } else { 8 },
            max_inner: if big { 24 } else { 32 },
            window_rows: 96,
        }
    }
}

/// What a correct NPU must report at the end of a program.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Expected {
    /// `STATUS_DONE`.
    Done,
    /// `STATUS_ERROR` with this `ERROR_CODE` and `ERROR_PC`.
    Fault { code: u32, pc: u32 },
}

/// A generated program with the DRAM image to run it on.
#[derive(Clone, Debug)]
pub struct RandProgram {
    pub seed: u64,
    pub config: HwConfig,
    /// The complete initial DRAM, program included.
    pub dram: Vec<u8>,
    /// Value for `PROG_BASE`.
    pub prog_base: u32,
    /// The program words (`PROG_LEN` = `words.len()`), also present in `dram` at `prog_base`.
    pub words: Vec<[u8; INSN_BYTES]>,
    pub expected: Expected,
    /// The read-only input bytes (random data and requantization parameters).
    pub input: Range<u32>,
    /// The bytes stores may write (one region per stretch).
    pub output: Range<u32>,
}

impl RandProgram {
    pub fn prog_len(&self) -> u32 {
        self.words.len() as u32
    }

    /// The words that decode, in order (all of them for a valid program).
    pub fn instructions(&self) -> Vec<Instruction> {
        self.words
            .iter()
            .filter_map(|w| Instruction::decode(w).ok())
            .collect()
    }

    /// A listing: [`sinter_isa::insn::disassemble`] for valid programs; for invalid ones every
    /// word, with undecodable words in hex.
    pub fn disassembly(&self) -> String {
        let decoded: Vec<_> = self.words.iter().map(Instruction::decode).collect();
        if decoded.iter().all(|d| d.is_ok()) {
            let insns: Vec<_> = decoded.into_iter().map(|d| d.unwrap()).collect();
            return sinter_isa::insn::disassemble(&insns);
        }
        let mut s = String::new();
        for (i, (w, d)) in self.words.iter().zip(decoded).enumerate() {
            match d {
                Ok(insn) => s.push_str(&format!("{i:6}  {:<7} {insn}\n", insn.module().name())),
                Err(e) => {
                    let hex: String = w.iter().rev().map(|b| format!("{b:02x}")).collect();
                    s.push_str(&format!("{i:6}  ??????? 0x{hex} ({e})\n"));
                }
            }
        }
        s
    }
}

/// A random valid, race-free program (see the module docs) for `cfg`.
pub fn generate(cfg: &HwConfig, seed: u64, opts: &GenOptions) -> RandProgram {
    let mut g = Gen::new(cfg, seed, opts);
    g.build();
    g.finish(seed, None)
}

/// A random program that must fault: a valid prefix, then one refused instruction (or a
/// misaligned `PROG_BASE`), then more instructions that must not run.
pub fn generate_invalid(cfg: &HwConfig, seed: u64, opts: &GenOptions) -> RandProgram {
    let mut g = Gen::new(cfg, seed, opts);
    g.opts.max_insns = (g.opts.max_insns / 4).max(16);
    g.build();
    let k = g.rng.below(g.prog.len() as u64 + 1) as usize;
    let kind = g.rng.below(12);
    if kind == 0 {
        // Misaligned program base; nothing runs.
        return g.finish(
            seed,
            Some(Bad {
                at: None,
                code: regs::ERR_PROG_ALIGN,
            }),
        );
    }
    let (word, code) = g.bad_word(kind);
    g.finish(
        seed,
        Some(Bad {
            at: Some((k, word)),
            code,
        }),
    )
}

struct Bad {
    at: Option<(usize, [u8; INSN_BYTES])>,
    code: u32,
}

/// A window of buffer rows `[start, start + len)`.
#[derive(Clone, Copy, Debug)]
struct Win {
    start: u32,
    len: u32,
}

/// Per-stretch placement of the regions.
struct Regions {
    act: Vec<Win>,
    wgt: Vec<Win>,
    out: Vec<Win>,
    acc: Win,
}

struct Gen {
    cfg: HwConfig,
    opts: GenOptions,
    rng: Rng,
    prog: Vec<Instruction>,
    dram: Vec<u8>,
    prog_base: u32,
    /// Readable DRAM: `[input_start, readable_end)`.
    input_start: u32,
    readable_end: u32,
    /// Requantization parameter triples: DRAM address of each (3 accumulator elements).
    param_table: Vec<u32>,
    /// End of the input region, start of the first output region.
    input_end: u32,
    /// Start of the next output region and its size.
    next_out: u32,
    out_region_bytes: u32,
    /// Rows written so far (in program order), per buffer.
    act_init: Vec<bool>,
    wgt_init: Vec<bool>,
    acc_init: Vec<bool>,
    out_init: Vec<bool>,
    /// Accumulator rows holding a parameter triple.
    params: Vec<u32>,
    /// Instructions the block being built may hold (keeps the program within `max_insns`).
    cap: usize,
}

/// Instructions of one block before its tokens are attached.
type Block = Vec<Instruction>;

impl Gen {
    fn new(cfg: &HwConfig, seed: u64, opts: &GenOptions) -> Gen {
        let mut rng = Rng::new(seed);
        let mut dram = vec![0u8; opts.dram_bytes as usize];
        rng.fill(&mut dram);
        let prog_base = 32 * rng.below(16) as u32;
        let prog_end = prog_base + opts.max_insns as u32 * INSN_BYTES as u32;
        let input_start = prog_end.next_multiple_of(256);
        let acc_e = cfg.element_bytes(Buffer::Acc);
        let wgt_e = cfg.element_bytes(Buffer::Wgt);
        // Input: the parameter table, then enough random bytes for a few weight tiles.
        let n_params = 6u32;
        let input_bytes = (n_params * 3 * acc_e + 16 * wgt_e).max(8192);
        // Room for the largest store (see `store`): d² elements of at most e + 2a bytes each.
        let d = opts.max_dma_dim as u32;
        let (e, a) = (
            cfg.element_bytes(Buffer::Out),
            cfg.dram_alignment(Buffer::Out),
        );
        let out_region_bytes = ((d * d + 2 * d) * (e + 2 * a))
            .next_multiple_of(256)
            .max(2048);
        let need = input_start as u64
            + input_bytes as u64
            + out_region_bytes as u64 * opts.max_stretches as u64;
        assert!(
            need <= opts.dram_bytes,
            "DRAM of {} bytes is too small for the layout ({need} bytes)",
            opts.dram_bytes
        );
        let mut param_table = Vec::new();
        for j in 0..n_params {
            let at = input_start + j * 3 * acc_e;
            let cols = cfg.cols as usize;
            for c in 0..cols {
                let bias = rng.range(0, 4000) as i32 - 2000;
                let (mult, shift) = match rng.below(10) {
                    0 => (rng.next_u64() as i32, rng.next_u64() as i32),
                    1 => (rng.next_u64() as i32, rng.range(0, 70) as i32),
                    2 => (rng.range(0, 1 << 31) as i32, rng.pick(&[0, 1, 62, 63, -1])),
                    _ => (
                        rng.range(1 << 29, (1 << 31) - 1) as i32,
                        rng.range(28, 40) as i32,
                    ),
                };
                for (row, v) in [bias, mult, shift].into_iter().enumerate() {
                    let a = (at + row as u32 * acc_e) as usize + 4 * c;
                    dram[a..a + 4].copy_from_slice(&v.to_le_bytes());
                }
            }
            param_table.push(at);
        }
        let readable_end = input_start + input_bytes;
        Gen {
            cfg: *cfg,
            opts: *opts,
            rng,
            prog: Vec::new(),
            dram,
            prog_base,
            input_start,
            readable_end,
            param_table,
            input_end: readable_end,
            next_out: readable_end,
            out_region_bytes,
            act_init: vec![false; cfg.act_depth as usize],
            wgt_init: vec![false; cfg.wgt_depth as usize],
            acc_init: vec![false; cfg.acc_depth as usize],
            out_init: vec![false; cfg.out_depth as usize],
            params: Vec::new(),
            cap: 0,
        }
    }

    fn finish(mut self, seed: u64, bad: Option<Bad>) -> RandProgram {
        for insn in &self.prog {
            if let Err(e) = insn.validate(&self.cfg) {
                panic!("generator produced an invalid instruction {insn}: {e}");
            }
        }
        let mut words: Vec<[u8; INSN_BYTES]> = self.prog.iter().map(|i| i.encode()).collect();
        let mut prog_base = self.prog_base;
        let expected = match bad {
            None => Expected::Done,
            Some(Bad {
                at: Some((k, w)),
                code,
            }) => {
                words.insert(k, w);
                Expected::Fault { code, pc: k as u32 }
            }
            Some(Bad { at: None, code }) => {
                prog_base += 4 * self.rng.range(1, 7) as u32;
                Expected::Fault { code, pc: 0 }
            }
        };
        // The reserved program area holds max_insns words; an inserted bad word may need one more.
        let limit = self.input_start - prog_base;
        assert!(
            words.len() * INSN_BYTES <= limit as usize,
            "program overflows its area"
        );
        for (i, w) in words.iter().enumerate() {
            let a = prog_base as usize + i * INSN_BYTES;
            self.dram[a..a + INSN_BYTES].copy_from_slice(w);
        }
        RandProgram {
            seed,
            config: self.cfg,
            dram: self.dram,
            prog_base,
            words,
            expected,
            input: self.input_start..self.input_end,
            output: self.input_end..self.next_out,
        }
    }

    // -----------------------------------------------------------------------------------------
    // Program structure
    // -----------------------------------------------------------------------------------------

    /// Instructions kept free for a drain and a final sync.
    const TAIL: usize = 6;

    fn build(&mut self) {
        let stretches = self.rng.range(1, self.opts.max_stretches as u64) as usize;
        for s in 0..stretches {
            let room = self
                .opts
                .max_insns
                .saturating_sub(self.prog.len() + Self::TAIL);
            let max_phases = (room / 9).min(self.opts.max_phases);
            if max_phases == 0 {
                break;
            }
            let phases = self.rng.range(1, max_phases as u64) as usize;
            let nb = if self.rng.chance(65) { 2 } else { 1 };
            self.stretch(phases, nb);
            let last = s + 1 == stretches;
            if !last || self.rng.chance(50) {
                self.drain(phases, nb);
            }
        }
        if self.rng.chance(20) && self.prog.len() < self.opts.max_insns {
            let module = self.rng.pick(&Module::ALL);
            self.prog.push(Instruction::Sync(Sync {
                deps: Deps::NONE,
                module,
            }));
        }
    }

    fn window(&mut self, lo: u32, hi: u32, want: u32) -> Win {
        let len = want.min(hi - lo);
        let start = lo + self.rng.below((hi - lo - len + 1) as u64) as u32;
        Win { start, len }
    }

    fn regions(&mut self, nb: usize) -> Regions {
        let c = self.cfg;
        let per_buffer = |g: &mut Gen, depth: u32, want: u32| -> Vec<Win> {
            (0..nb)
                .map(|h| {
                    let part = depth / nb as u32;
                    g.window(h as u32 * part, (h as u32 + 1) * part, want)
                })
                .collect()
        };
        let w = self.opts.window_rows;
        let act = per_buffer(self, c.act_depth, w);
        let wgt = per_buffer(self, c.wgt_depth, 10);
        let out = per_buffer(self, c.out_depth, w);
        let acc = self.window(0, c.acc_depth, w + 8);
        Regions { act, wgt, out, acc }
    }

    fn stretch(&mut self, n: usize, nb: usize) {
        let reg = self.regions(nb);
        let out_region = (self.next_out, self.next_out + self.out_region_bytes);
        // Next block index of each module; emit in a random order that keeps every push before
        // the pop it pairs with.
        let mut next = [0usize; 3];
        while next.iter().any(|&k| k < n) {
            let ready: Vec<usize> = (0..3)
                .filter(|&m| {
                    let p = next[m];
                    p < n
                        && match m {
                            0 => p < nb || next[1] > p - nb,
                            1 => next[0] > p && (p < nb || next[2] > p - nb),
                            _ => next[1] > p,
                        }
                })
                .collect();
            let m = self.rng.pick(&ready);
            let p = next[m];
            let blocks_left = 3 * n - next.iter().sum::<usize>();
            self.cap = self
                .opts
                .max_insns
                .saturating_sub(self.prog.len() + blocks_left + Self::TAIL + 2);
            let h = p % nb;
            let mut deps = Deps::NONE;
            let (block, module) = match m {
                0 => {
                    deps.pop_next = p >= nb;
                    deps.push_next = true;
                    (
                        self.load_block(reg.act[h], reg.wgt[h], p < nb),
                        Module::Load,
                    )
                }
                1 => {
                    deps.pop_prev = true;
                    deps.pop_next = p >= nb;
                    deps.push_prev = true;
                    deps.push_next = true;
                    let b = self.compute_block(reg.act[h], reg.wgt[h], reg.acc, reg.out[h]);
                    (b, Module::Compute)
                }
                _ => {
                    deps.pop_prev = true;
                    deps.push_prev = true;
                    (self.store_block(reg.out[h], out_region), Module::Store)
                }
            };
            self.emit(block, module, deps);
            next[m] += 1;
        }
        self.next_out += self.out_region_bytes;
    }

    /// Appends a block with its tokens: pops on the first instruction, pushes on the last
    /// (sometimes on separate SYNCs; a SYNC alone when the block is empty).
    fn emit(&mut self, mut block: Block, module: Module, deps: Deps) {
        let pops = Deps {
            pop_prev: deps.pop_prev,
            pop_next: deps.pop_next,
            ..Deps::NONE
        };
        let pushes = Deps {
            push_prev: deps.push_prev,
            push_next: deps.push_next,
            ..Deps::NONE
        };
        let sync = |deps| Instruction::Sync(Sync { deps, module });
        if block.is_empty() {
            block.push(sync(Deps::NONE));
        }
        if block.len() < self.cap && self.rng.chance(12) {
            block.insert(0, sync(Deps::NONE));
        }
        if block.len() < self.cap && self.rng.chance(12) {
            block.push(sync(Deps::NONE));
        }
        debug_assert!(block.len() <= self.cap.max(1));
        let first = block[0].deps_mut();
        first.pop_prev |= pops.pop_prev;
        first.pop_next |= pops.pop_next;
        let last = block.last_mut().unwrap().deps_mut();
        last.push_prev |= pushes.push_prev;
        last.push_next |= pushes.push_next;
        self.prog.extend(block);
    }

    /// Makes everything before happen-before everything after and leaves every edge empty.
    fn drain(&mut self, n: usize, nb: usize) {
        let outstanding = n.min(nb);
        for k in 0..outstanding {
            let last = k + 1 == outstanding;
            self.prog.push(Instruction::Sync(Sync {
                deps: Deps {
                    pop_next: true,
                    push_prev: last,
                    ..Deps::NONE
                },
                module: Module::Compute,
            }));
        }
        for _ in 0..outstanding + 1 {
            self.prog.push(Instruction::Sync(Sync {
                deps: Deps {
                    pop_next: true,
                    ..Deps::NONE
                },
                module: Module::Load,
            }));
        }
        // The stores of the stretch are now readable.
        self.readable_end = self.next_out;
    }

    // -----------------------------------------------------------------------------------------
    // Blocks
    // -----------------------------------------------------------------------------------------

    fn load_block(&mut self, act: Win, wgt: Win, must: bool) -> Block {
        let mut block = Vec::new();
        let n_act = self.rng.range(must as u64, 2);
        let n_wgt = self.rng.range(must as u64, 2);
        for _ in 0..n_act {
            if block.len() < self.cap {
                block.push(self.load(Buffer::Act, act));
            }
        }
        for _ in 0..n_wgt {
            if block.len() < self.cap {
                block.push(self.load(Buffer::Wgt, wgt));
            }
        }
        // Random order within the module.
        for i in (1..block.len()).rev() {
            let j = self.rng.below(i as u64 + 1) as usize;
            block.swap(i, j);
        }
        block
    }

    /// A random DMA load of `buffer` into `win` (which it initialises).
    fn load(&mut self, buffer: Buffer, win: Win) -> Instruction {
        let e = self.cfg.element_bytes(buffer);
        let a = self.cfg.dram_alignment(buffer);
        let maxd = self.opts.max_dma_dim as u64;
        let big = e >= 128;
        let mut y = self.rng.range(1, if big { 2 } else { maxd }) as u32;
        let mut x = self.rng.range(1, if big { 2 } else { maxd }) as u32;
        let mut pads = [0u32; 4];
        if self.rng.chance(50) {
            for p in &mut pads {
                *p = self.rng.range(0, 2) as u32;
            }
        }
        // Shrink until the padded block fits the window.
        while (pads[0] + y + pads[1]) * (pads[2] + x + pads[3]) > win.len {
            if pads.iter().any(|&p| p > 0) {
                pads = [0; 4];
            } else if y > 1 {
                y -= 1;
            } else {
                x -= 1;
            }
        }
        let x_stride = match self.rng.below(4) {
            0 => 0,
            1 => e,
            _ => a * self.rng.range(0, (2 * e / a) as u64) as u32,
        };
        let y_stride = match self.rng.below(4) {
            0 => 0,
            1 => x * x_stride.max(e),
            _ => a * self.rng.range(0, (3 * e / a) as u64) as u32,
        };
        let span = (y - 1) * y_stride + (x - 1) * x_stride + e;
        let room = self.readable_end - self.input_start - span;
        let dram_base = self.input_start + a * self.rng.below((room / a) as u64 + 1) as u32;
        let rows = (pads[0] + y + pads[1]) * (pads[2] + x + pads[3]);
        let sram_base = win.start + self.rng.below((win.len - rows + 1) as u64) as u32;
        let init = match buffer {
            Buffer::Act => &mut self.act_init,
            Buffer::Wgt => &mut self.wgt_init,
            Buffer::Acc => &mut self.acc_init,
            Buffer::Out => &mut self.out_init,
        };
        init[sram_base as usize..(sram_base + rows) as usize].fill(true);
        Instruction::Load(Dma {
            deps: Deps::NONE,
            buffer,
            dram_base,
            sram_base: sram_base as u16,
            y_size: y as u16,
            x_size: x as u16,
            y_stride,
            x_stride,
            pad_top: pads[0] as u8,
            pad_bottom: pads[1] as u8,
            pad_left: pads[2] as u8,
            pad_right: pads[3] as u8,
            pad_value: self.rng.next_u64() as i8,
        })
    }

    /// A parameter triple (bias, mult, shift) into three accumulator rows of `win`.
    fn load_params(&mut self, win: Win) -> Instruction {
        let e = self.cfg.element_bytes(Buffer::Acc);
        let dram_base = self.rng.pick(&self.param_table);
        let start = win.start + self.rng.below((win.len - 3 + 1) as u64) as u32;
        self.acc_init[start as usize..start as usize + 3].fill(true);
        self.params.retain(|&p| p + 3 <= start || p >= start + 3);
        self.params.push(start);
        // Either three elements along x or along y.
        let (y, x, ys, xs) = if self.rng.chance(50) {
            (1, 3, 0, e)
        } else {
            (3, 1, e, self.rng.pick(&[0, e]))
        };
        Instruction::Load(Dma {
            deps: Deps::NONE,
            buffer: Buffer::Acc,
            dram_base,
            sram_base: start as u16,
            y_size: y,
            x_size: x,
            y_stride: ys,
            x_stride: xs,
            ..Dma::default()
        })
    }

    fn compute_block(&mut self, act: Win, wgt: Win, acc: Win, out: Win) -> Block {
        let mut block = Vec::new();
        if self.cap > 0 && (self.params.is_empty() || self.rng.chance(25)) {
            block.push(self.load_params(acc));
        }
        if block.len() < self.cap && self.rng.chance(30) {
            let l = self.load(Buffer::Acc, acc);
            // An accumulator load overwrites parameter rows it touches.
            if let Instruction::Load(d) = l {
                let (s, r) = (d.sram_base as u32, d.sram_rows() as u32);
                self.params.retain(|&p| p + 3 <= s || p >= s + r);
            }
            block.push(l);
        }
        let n_gemm = self.rng.range(0, 4);
        for _ in 0..n_gemm {
            // Leave room for a vector op.
            let room = self.cap.saturating_sub(block.len() + 1);
            if let Some(chain) = self.gemm_chain(act, wgt, acc, room) {
                block.extend(chain);
            }
        }
        let n_vec = self.rng.range(0, 2) + (n_gemm > 0) as u64;
        for _ in 0..n_vec {
            if block.len() < self.cap {
                if let Some(v) = self.vec(acc, out) {
                    block.push(v);
                }
            }
        }
        if block.len() < self.cap && self.rng.chance(10) {
            block.push(Instruction::Sync(Sync {
                deps: Deps::NONE,
                module: Module::Compute,
            }));
        }
        block
    }

    /// Loop counts `(n_outer, n_inner)`.
    fn loop_counts(&mut self) -> (u32, u32) {
        let mi = self.opts.max_inner as u64;
        let mo = (mi / 4).max(1);
        (self.rng.range(1, mo) as u32, self.rng.range(1, mi) as u32)
    }

    /// A random walk of `no × ni` iterations inside `win`, or `None` if it does not fit.
    fn walk_in(&mut self, win: Win, no: u32, ni: u32) -> Option<Walk> {
        let (so, si) = match self.rng.below(5) {
            0 => (ni, 1),                          // contiguous
            1 => (1, 0),                           // one row per outer iteration
            2 => (0, 0),                           // a single row
            3 => (self.rng.range(0, 6) as u32, 1), // sliding windows (convolutions)
            _ => (self.rng.range(0, 4) as u32, self.rng.range(0, 3) as u32),
        };
        let span = (no - 1) * so + (ni - 1) * si;
        if span >= win.len {
            return None;
        }
        let base = win.start + self.rng.below((win.len - span) as u64) as u32;
        Some(Walk {
            base: base as u16,
            stride_outer: so as u16,
            stride_inner: si as u16,
        })
    }

    fn rows_of(w: &Walk, no: u32, ni: u32) -> impl Iterator<Item = usize> + '_ {
        (0..no).flat_map(move |o| (0..ni).map(move |i| w.row(o, i) as usize))
    }

    /// A walk of `no × ni` iterations anywhere in `win` (a single row if nothing else fits).
    fn any_walk(&mut self, win: Win, no: u32, ni: u32) -> Walk {
        for _ in 0..8 {
            if let Some(w) = self.walk_in(win, no, ni) {
                return w;
            }
        }
        Walk {
            base: (win.start + self.rng.below(win.len as u64) as u32) as u16,
            stride_outer: 0,
            stride_inner: 0,
        }
    }

    fn init(&self, buffer: Buffer) -> &[bool] {
        match buffer {
            Buffer::Act => &self.act_init,
            Buffer::Wgt => &self.wgt_init,
            Buffer::Acc => &self.acc_init,
            Buffer::Out => &self.out_init,
        }
    }

    /// A walk over initialised rows of `win`, trying a few random shapes, then a single row.
    fn init_walk(&mut self, win: Win, buffer: Buffer) -> Option<(Walk, u32, u32)> {
        for _ in 0..24 {
            let (no, ni) = self.loop_counts();
            if let Some(w) = self.walk_in(win, no, ni) {
                if Self::rows_of(&w, no, ni).all(|r| self.init(buffer)[r]) {
                    return Some((w, no, ni));
                }
            }
        }
        let rows: Vec<u32> = (win.start..win.start + win.len)
            .filter(|&r| self.init(buffer)[r as usize])
            .collect();
        if rows.is_empty() {
            return None;
        }
        let r = self.rng.pick(&rows);
        let n = self.rng.range(1, 3) as u32;
        Some((
            Walk {
                base: r as u16,
                stride_outer: 0,
                stride_inner: 0,
            },
            1,
            n,
        ))
    }

    /// One GEMM, or an accumulate chain of GEMMs over the same accumulator rows.
    fn gemm_chain(&mut self, act: Win, wgt: Win, acc: Win, room: usize) -> Option<Block> {
        if room == 0 {
            return None;
        }
        let (act_walk, no, ni) = self.init_walk(act, Buffer::Act)?;
        let tiles: Vec<u32> = (wgt.start..wgt.start + wgt.len)
            .filter(|&t| self.wgt_init[t as usize])
            .collect();
        if tiles.is_empty() {
            return None;
        }
        let acc_walk = self.any_walk(acc, no, ni);
        let rows: Vec<usize> = Self::rows_of(&acc_walk, no, ni).collect();
        let initialised = rows.iter().all(|&r| self.acc_init[r]);
        let chain = if self.rng.chance(30) {
            self.rng.range(2, 4)
        } else {
            1
        }
        .min(room as u64);
        let mut out = Vec::new();
        for k in 0..chain {
            let act_walk = if k == 0 {
                act_walk
            } else {
                // Same loop shape, another activation walk over initialised rows if one is found.
                let mut found = act_walk;
                for _ in 0..8 {
                    if let Some(w) = self.walk_in(act, no, ni) {
                        if Self::rows_of(&w, no, ni).all(|r| self.act_init[r]) {
                            found = w;
                            break;
                        }
                    }
                }
                found
            };
            // Combining modes read the accumulator row, so they need it initialised.
            let mode = if k > 0 || (initialised && self.rng.chance(60)) {
                if self.rng.chance(25) {
                    GemmMode::Max
                } else {
                    GemmMode::Add
                }
            } else {
                GemmMode::Overwrite
            };
            out.push(Instruction::Gemm(Gemm {
                deps: Deps::NONE,
                mode,
                wgt: self.rng.pick(&tiles) as u16,
                n_outer: no as u16,
                n_inner: ni as u16,
                acc: acc_walk,
                act: act_walk,
            }));
        }
        for r in rows {
            self.acc_init[r] = true;
        }
        // GEMMs overwrite any parameter triple they touch.
        let touched: Vec<u32> = Self::rows_of(&acc_walk, no, ni).map(|r| r as u32).collect();
        self.params
            .retain(|&p| !touched.iter().any(|&r| r >= p && r < p + 3));
        Some(out)
    }

    fn vec(&mut self, acc: Win, out: Win) -> Option<Instruction> {
        let param = if !self.params.is_empty() && self.rng.chance(90) {
            self.rng.pick(&self.params)
        } else {
            let cands: Vec<u32> = (acc.start..acc.start + acc.len - 2)
                .filter(|&p| (p..p + 3).all(|r| self.acc_init[r as usize]))
                .collect();
            if cands.is_empty() {
                return None;
            }
            self.rng.pick(&cands)
        };
        let (src, no, ni) = self.init_walk(acc, Buffer::Acc)?;
        let dst = self.any_walk(out, no, ni);
        for r in Self::rows_of(&dst, no, ni).collect::<Vec<_>>() {
            self.out_init[r] = true;
        }
        let zero_point = self.rng.next_u64() as i8;
        let (clamp_lo, clamp_hi) = match self.rng.below(4) {
            0 => (-128, 127),
            1 => (0, 127),
            2 => (self.rng.next_u64() as i8, self.rng.next_u64() as i8),
            _ => {
                let a = self.rng.next_u64() as i8;
                let b = self.rng.next_u64() as i8;
                (a.min(b), a.max(b))
            }
        };
        Some(Instruction::Vec(VecInsn {
            deps: Deps::NONE,
            op: VecOp::Requant,
            param: param as u16,
            n_outer: no as u16,
            n_inner: ni as u16,
            src,
            dst,
            zero_point,
            clamp_lo,
            clamp_hi,
        }))
    }

    fn store_block(&mut self, out: Win, region: (u32, u32)) -> Block {
        let mut block = Vec::new();
        for _ in 0..self.rng.range(0, 2).min(self.cap as u64) {
            if let Some(s) = self.store(out, region) {
                block.push(s);
            }
        }
        block
    }

    /// A store of initialised output rows into the output region, its elements never
    /// overlapping each other.
    fn store(&mut self, out: Win, (lo, hi): (u32, u32)) -> Option<Instruction> {
        let e = self.cfg.element_bytes(Buffer::Out);
        let a = self.cfg.dram_alignment(Buffer::Out);
        let maxd = self.opts.max_dma_dim as u64;
        let mut found = None;
        for _ in 0..16 {
            let y = self.rng.range(1, maxd) as u32;
            let x = self.rng.range(1, maxd) as u32;
            if y * x > out.len {
                continue;
            }
            let base = out.start + self.rng.below((out.len - y * x + 1) as u64) as u32;
            if (base..base + y * x).all(|r| self.out_init[r as usize]) {
                found = Some((base, y, x));
                break;
            }
        }
        let (base, y, x) = match found {
            Some(f) => f,
            None => {
                let rows: Vec<u32> = (out.start..out.start + out.len)
                    .filter(|&r| self.out_init[r as usize])
                    .collect();
                if rows.is_empty() {
                    return None;
                }
                (self.rng.pick(&rows), 1, 1)
            }
        };
        let gap = |g: &mut Gen| a * g.rng.range(0, 2) as u32;
        let (ys, xs) = if self.rng.chance(70) {
            // Row-major: x_stride ≥ e, y_stride ≥ x·x_stride.
            let xs = e + gap(self);
            (x * xs + gap(self), xs)
        } else {
            // Column-major: y_stride ≥ e, x_stride ≥ y·y_stride.
            let ys = e + gap(self);
            (ys, y * ys + gap(self))
        };
        let span = (y - 1) * ys + (x - 1) * xs + e;
        if span > hi - lo {
            return None;
        }
        let dram_base = lo + a * self.rng.below(((hi - lo - span) / a) as u64 + 1) as u32;
        Some(Instruction::Store(Dma {
            deps: Deps::NONE,
            buffer: Buffer::Out,
            dram_base,
            sram_base: base as u16,
            y_size: y as u16,
            x_size: x as u16,
            y_stride: ys,
            x_stride: xs,
            ..Dma::default()
        }))
    }

    // -----------------------------------------------------------------------------------------
    // Faults
    // -----------------------------------------------------------------------------------------

    /// A word that the hardware must refuse, with the error code it raises.
    fn bad_word(&mut self, kind: u64) -> ([u8; INSN_BYTES], u32) {
        let c = self.cfg;
        let act = Win {
            start: 0,
            len: c.act_depth,
        };
        let base_load = |g: &mut Gen| match g.load(Buffer::Act, act) {
            Instruction::Load(d) => d,
            _ => unreachable!(),
        };
        let gemm = Gemm {
            deps: Deps::NONE,
            mode: GemmMode::Overwrite,
            wgt: 0,
            n_outer: 1,
            n_inner: 2,
            acc: Walk::contiguous(0),
            act: Walk::contiguous(0),
        };
        let illegal = regs::ERR_ILLEGAL_INSN;
        match kind {
            1 => {
                // Unknown opcode.
                let mut w = [0u8; INSN_BYTES];
                self.rng.fill(&mut w);
                w[0] = (w[0] & 0xF0) | self.rng.range(5, 15) as u8;
                (w, illegal)
            }
            2 => {
                // A reserved bit set in an otherwise valid instruction.
                let insn = self
                    .prog
                    .first()
                    .copied()
                    .unwrap_or(Instruction::Gemm(gemm));
                let mut w = insn.encode();
                let bit = self.reserved_bit(insn);
                w[bit / 8] |= 1 << (bit % 8);
                (w, illegal)
            }
            3 => {
                // Invalid enum values: sync target 3, vector op ≠ requant.
                let mut w = Instruction::Sync(Sync::default()).encode();
                if self.rng.chance(50) {
                    w[1] |= 3;
                } else {
                    w = Instruction::Vec(VecInsn {
                        n_outer: 1,
                        n_inner: 1,
                        ..VecInsn::default()
                    })
                    .encode();
                    w[1] |= self.rng.range(1, 15) as u8;
                }
                (w, illegal)
            }
            4 => {
                // A dependency flag naming a missing neighbour.
                let mut d = base_load(self);
                if self.rng.chance(50) {
                    d.deps.pop_prev = true;
                    (Instruction::Load(d).encode(), illegal)
                } else {
                    let s = Sync {
                        deps: Deps {
                            push_next: true,
                            ..Deps::NONE
                        },
                        module: Module::Store,
                    };
                    (Instruction::Sync(s).encode(), illegal)
                }
            }
            5 => {
                // Empty loops and transfers.
                if self.rng.chance(50) {
                    let mut g = gemm;
                    g.n_inner = 0;
                    (Instruction::Gemm(g).encode(), illegal)
                } else {
                    let mut d = base_load(self);
                    d.x_size = 0;
                    (Instruction::Load(d).encode(), illegal)
                }
            }
            6 => {
                // Wrong buffer for the direction, or a padded store.
                let mut d = base_load(self);
                match self.rng.below(3) {
                    0 => {
                        d.buffer = Buffer::Out;
                        (Instruction::Load(d).encode(), illegal)
                    }
                    1 => (Instruction::Store(d).encode(), illegal),
                    _ => {
                        d.buffer = Buffer::Out;
                        d.dram_base = 0;
                        d.x_stride = 0;
                        d.y_stride = 0;
                        d.pad_left = 1;
                        (Instruction::Store(d).encode(), illegal)
                    }
                }
            }
            7 | 8 => {
                // On-chip rows out of range.
                let insn = match self.rng.below(4) {
                    0 => {
                        let mut g = gemm;
                        g.act.base = (c.act_depth - 1) as u16;
                        Instruction::Gemm(g)
                    }
                    1 => {
                        let mut g = gemm;
                        g.wgt = c.wgt_depth as u16;
                        Instruction::Gemm(g)
                    }
                    2 => Instruction::Vec(VecInsn {
                        param: (c.acc_depth - 2) as u16,
                        n_outer: 1,
                        n_inner: 1,
                        ..VecInsn::default()
                    }),
                    _ => {
                        let mut d = base_load(self);
                        d.sram_base = (c.act_depth as u64 - d.sram_rows() + 1) as u16;
                        Instruction::Load(d)
                    }
                };
                (insn.encode(), regs::ERR_SRAM_BOUNDS)
            }
            _ => {
                // Misaligned DRAM address or stride.
                let mut d = base_load(self);
                let a = c.dram_alignment(Buffer::Act);
                let off = self.rng.range(1, a as u64 - 1) as u32;
                match self.rng.below(3) {
                    0 => d.dram_base += off,
                    1 => d.x_stride += off,
                    _ => d.y_stride += off,
                }
                (Instruction::Load(d).encode(), regs::ERR_MISALIGNED)
            }
        }
    }

    /// A bit that no field of `insn`'s format uses.
    fn reserved_bit(&mut self, insn: Instruction) -> usize {
        let name = match insn {
            Instruction::Load(_) | Instruction::Store(_) => "dma",
            Instruction::Gemm(_) => "gemm",
            Instruction::Vec(_) => "vec",
            Instruction::Sync(_) => "sync",
        };
        let fields = FORMATS.iter().find(|(n, _)| *n == name).unwrap().1;
        let mut used = [false; INSN_BYTES * 8];
        for f in COMMON.iter().chain(fields) {
            used[f.lo as usize..(f.lo + f.width) as usize].fill(true);
        }
        let free: Vec<usize> = (0..used.len()).filter(|&b| !used[b]).collect();
        self.rng.pick(&free)
    }
}
