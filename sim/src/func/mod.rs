//! The functional model: the golden reference of the NPU and the fast default inference device.
//!
//! [`FuncSim`] implements the register map of [`sinter_isa::regs`] and the instruction semantics
//! documented in [`sinter_isa::insn`] bit for bit, without modelling time. Writing
//! `CONTROL_START` latches the program; the next [`Npu::advance`] fetches, decodes, checks and
//! executes it in one go and leaves the registers as the hardware would at the end of the run.
//!
//! # Execution order
//!
//! Instructions run in program order. A valid program is race-free — every pair of accesses to the
//! same buffer row or DRAM byte by two different modules is ordered by dependency tokens — so any
//! token-respecting interleaving of the three modules gives the result of program order. Large
//! programs on more than one thread get that result faster: independent compute instructions
//! run in parallel, on private copies of the rows they use (see `batch`).
//!
//! Tokens are counted per directed edge (load→compute, compute→load, compute→store,
//! store→compute). A pop on an edge that has received no push earlier in program order can never
//! be satisfied by the hardware (the fetch unit dispatches in program order): the model then stays
//! `STATUS_BUSY` forever, exactly like a hung device, and [`FuncSim::diagnostic`] says which
//! instruction waits for which module. A host must catch this with its timeout and reset.
//!
//! # Decoding once
//!
//! A model runs the same program ranges (its stages) over and over, so a range is decoded and
//! checked once and kept, with its cycle estimate, until DRAM under it is written — by the host
//! or by a STORE. A range is decoded as a whole when it starts: a run that overwrites its own
//! later instructions executes them as they were at its start (on the hardware, which fetches
//! ahead, such a program has no defined result anyway).
//!
//! # Layers as operations
//!
//! A host that knows what ranges of its program compute ([`sinter_isa::window`]) can say so
//! with [`FuncSim::describe_ops`]; the model then runs each such range as one operation on DRAM
//! (an int8 matrix product over padded input planes, see `window`) instead of instruction by
//! instruction, when that cannot change anything the run computes (see `ops`). DRAM, the
//! registers and the token accounting end as the instructions would leave them; the on-chip
//! buffers hold whatever the last instructions executed one by one left there.
//!
//! # Faults
//!
//! The first instruction that fails to decode or [`Instruction::validate`] stops the run with
//! `STATUS_ERROR`, `ERROR_CODE` and `ERROR_PC`; every instruction before it has executed, none
//! after it. `PROG_BASE` not 32-byte aligned stops the run before the first fetch with
//! [`regs::ERR_PROG_ALIGN`] at pc 0. An earlier hang wins over a later fault (the faulting
//! instruction is only reported once everything before it has drained).
//!
//! A DMA or instruction fetch that reaches past the end of the simulated DRAM has no defined
//! hardware behaviour (the real memory port would return garbage or wrap). The model refuses it
//! instead: the instruction does not execute, the run stops with `STATUS_ERROR`, `ERROR_CODE` =
//! [`ERR_DRAM_RANGE`] (`0xFF`, a code the ISA does not define and the RTL never reports) and
//! `ERROR_PC` at that instruction, and [`FuncSim::diagnostic`] describes the access. Programs
//! that can trigger this are outside the architecture's contract.

mod batch;
mod exec;
mod gemm;
mod lanewise;
mod ops;
mod requant;
mod window;

use crate::{Npu, SimError};
use sinter_isa::insn::{Instruction, INSN_BYTES};
use sinter_isa::regs;
use sinter_isa::timing::{self, TimingParams};
use sinter_isa::{HwConfig, Module, ARCH_VERSION};

/// `ERROR_CODE` of a DRAM access outside the simulated memory (model only, see the module docs).
pub const ERR_DRAM_RANGE: u32 = 0xFF;

/// Read-only views of the four on-chip buffers, row-major.
#[derive(Clone, Copy, Debug)]
pub struct Buffers<'a> {
    /// `act_depth × rows` int8 values.
    pub act: &'a [i8],
    /// `wgt_depth` tiles of `rows × cols` int8 values; byte `r·cols + c` of a tile is `W[r][c]`.
    pub wgt: &'a [i8],
    /// `acc_depth × cols` int32 values.
    pub acc: &'a [i32],
    /// `out_depth × cols` int8 values.
    pub out: &'a [i8],
}

impl Buffers<'_> {
    /// Row `row` of `buffer` as bytes, exactly as a DMA store of that element would write it
    /// (accumulator lanes little-endian).
    pub fn row_bytes(&self, cfg: &HwConfig, buffer: sinter_isa::Buffer, row: usize) -> Vec<u8> {
        use sinter_isa::Buffer;
        match buffer {
            Buffer::Act => i8_bytes(&self.act[row * cfg.rows as usize..][..cfg.rows as usize]),
            Buffer::Wgt => {
                let e = (cfg.rows * cfg.cols) as usize;
                i8_bytes(&self.wgt[row * e..][..e])
            }
            Buffer::Acc => self.acc[row * cfg.cols as usize..][..cfg.cols as usize]
                .iter()
                .flat_map(|v| v.to_le_bytes())
                .collect(),
            Buffer::Out => i8_bytes(&self.out[row * cfg.cols as usize..][..cfg.cols as usize]),
        }
    }
}

fn i8_bytes(v: &[i8]) -> Vec<u8> {
    v.iter().map(|&x| x as u8).collect()
}

/// The on-chip state the instructions operate on.
pub(crate) struct State {
    pub cfg: HwConfig,
    pub dram: Vec<u8>,
    pub act: Vec<i8>,
    pub wgt: Vec<i8>,
    pub acc: Vec<i32>,
    pub out: Vec<i8>,
    /// DRAM bytes `lo..hi` written by STORE since the last start (empty when `lo >= hi`).
    pub stored: (usize, usize),
    /// For each weight buffer slot, the DRAM address its tile was loaded from (`None` for
    /// padding).
    pub wgt_src: Vec<Option<u32>>,
    /// Weight tiles packed for the GEMM kernels, by DRAM address: a model's weights are
    /// loaded again on every run, and packing them each time would cost as much as using them.
    pub packed: rustc_hash::FxHashMap<u32, std::sync::Arc<gemm::Pairs>>,
    /// DRAM bytes `lo..hi` the packed tiles came from.
    pub packed_span: (usize, usize),
}

impl State {
    /// Notes DRAM bytes `lo..hi` as written by this run (by a store or an operation): what was
    /// derived from them is forgotten, and decoded programs under them are dropped after it.
    pub fn note_written(&mut self, lo: usize, hi: usize) {
        self.stored = (self.stored.0.min(lo), self.stored.1.max(hi));
        self.dram_written(lo, hi);
    }

    /// Forgets packed tiles when DRAM bytes `lo..hi` change.
    pub fn dram_written(&mut self, lo: usize, hi: usize) {
        let (min, max) = self.packed_span;
        if lo < max && min < hi {
            self.packed.clear();
            self.packed_span = (usize::MAX, 0);
        }
    }
}

/// A program range decoded and checked once, with its cycle estimate: a model runs the same
/// stages again and again, and decoding is a fifth of the work of running them.
struct Decoded {
    insns: std::sync::Arc<[Instruction]>,
    /// Ranges that run as operations, in program order.
    ops: std::sync::Arc<[ops::Planned]>,
    cycles: u64,
    /// Multiply-accumulates of the whole program.
    macs: u64,
}

/// Smallest program (in MACs) batched by default: below, moving the run to the thread pool
/// costs more than parallel chains gain.
const BATCH_MACS: u64 = 1 << 22;

/// The functional model of one NPU with its DRAM.
pub struct FuncSim {
    st: State,
    timing: TimingParams,
    prog_base: u32,
    prog_len: u32,
    status: u32,
    error_code: u32,
    error_pc: u32,
    cycles: u64,
    mac_active: u64,
    insns_done: u32,
    /// A start was written and the run has not been executed yet.
    pending: bool,
    /// The last run waits for a token that never comes.
    hung: bool,
    diagnostic: Option<String>,
    /// Decoded programs by `(PROG_BASE, PROG_LEN)`. A write over a program's bytes (by the
    /// host or by a STORE) drops it.
    decoded: std::collections::HashMap<(u32, u32), Decoded>,
    /// Compute instructions held back within a run (empty between runs).
    batch: batch::Batch,
    /// Whether compute instructions are batched ([`FuncSim::with_batching`]).
    batched: Option<bool>,
    /// Operations the host described ([`FuncSim::describe_ops`]).
    described: Vec<ops::Described>,
    /// Padded input planes of operations, kept between runs.
    scratch: Vec<Vec<u8>>,
    /// Operations run in place of their instructions since the model was made.
    ops_done: u64,
}

/// Decoded programs kept at most (one per NPU stage, or per layer when layers run alone).
const MAX_DECODED: usize = 4096;

impl FuncSim {
    /// A model of `cfg` with `dram_bytes` of zeroed DRAM and zeroed buffers.
    pub fn new(cfg: HwConfig, dram_bytes: u64) -> FuncSim {
        let rows = cfg.rows as usize;
        let cols = cfg.cols as usize;
        FuncSim {
            st: State {
                cfg,
                dram: vec![0; dram_bytes as usize],
                act: vec![0; cfg.act_depth as usize * rows],
                wgt: vec![0; cfg.wgt_depth as usize * rows * cols],
                acc: vec![0; cfg.acc_depth as usize * cols],
                out: vec![0; cfg.out_depth as usize * cols],
                stored: (0, 0),
                wgt_src: vec![None; cfg.wgt_depth as usize],
                packed: rustc_hash::FxHashMap::default(),
                packed_span: (usize::MAX, 0),
            },
            timing: TimingParams::default(),
            prog_base: 0,
            prog_len: 0,
            status: 0,
            error_code: regs::ERR_NONE,
            error_pc: 0,
            cycles: 0,
            mac_active: 0,
            insns_done: 0,
            pending: false,
            hung: false,
            diagnostic: None,
            decoded: std::collections::HashMap::new(),
            batch: batch::Batch::default(),
            batched: None,
            described: Vec::new(),
            scratch: Vec::new(),
            ops_done: 0,
        }
    }

    /// Drops decoded programs that the DRAM bytes `lo..hi` overlap, with the constants of
    /// their operations.
    fn dram_written(&mut self, lo: u64, hi: u64) {
        let apart = |(c0, c1): (u64, u64)| hi <= c0 || c1 <= lo;
        self.decoded.retain(|&(base, len), d| {
            apart((base as u64, base as u64 + len as u64 * INSN_BYTES as u64))
                && d.ops
                    .iter()
                    .all(|p| p.prepared.constant_spans().into_iter().all(apart))
        });
    }

    /// How many described operations ran in place of their instructions since the model was
    /// made.
    pub fn ops_done(&self) -> u64 {
        self.ops_done
    }

    /// Says that instructions `op.insn_start..op.insn_end` of the program at `program_base`
    /// (already in DRAM) compute `op`, for every op of `ops`, replacing what was described
    /// before. Ranges that qualify then run as operations (see the module docs); results are
    /// the same either way, provided no later run reads on-chip rows an earlier run left
    /// behind without writing them itself (each run is checked on its own; compiled programs
    /// start every stage from an empty chip).
    pub fn describe_ops(&mut self, program_base: u64, ops: &[sinter_isa::window::WindowOp]) {
        let dram = &self.st.dram;
        self.described = ops
            .iter()
            .filter_map(|op| {
                let lo = program_base + op.insn_start as u64 * INSN_BYTES as u64;
                let hi = program_base + op.insn_end as u64 * INSN_BYTES as u64;
                let bytes = dram.get(lo as usize..hi as usize)?;
                Some(ops::Described {
                    lo,
                    hi,
                    op: op.clone(),
                    fingerprint: ops::fingerprint(bytes),
                })
            })
            .collect();
        self.decoded.clear();
    }

    /// Batches compute instructions and runs independent ones in parallel, and batches on
    /// other threads while it goes on, even small ones (`true`), or runs every instruction at
    /// once in program order (`false`). The results are the same. By default the model
    /// batches when rayon has more than one thread, and goes parallel only where batches are
    /// large enough to gain from it.
    pub fn with_batching(mut self, on: bool) -> FuncSim {
        self.batched = Some(on);
        self
    }

    /// Uses `timing` for the `CYCLES` counter instead of the default timing parameters.
    pub fn with_timing(mut self, timing: TimingParams) -> FuncSim {
        self.timing = timing;
        self
    }

    /// Why the last run hung or was refused, if it did (e.g. "instruction 12 (compute) pops a
    /// token from load that is never pushed").
    pub fn diagnostic(&self) -> Option<String> {
        self.diagnostic.clone()
    }

    /// The whole DRAM.
    pub fn dram(&self) -> &[u8] {
        &self.st.dram
    }

    /// The whole DRAM, writable (the host's view of device memory).
    pub fn dram_mut(&mut self) -> &mut [u8] {
        self.st.packed.clear();
        self.st.packed_span = (usize::MAX, 0);
        self.decoded.clear();
        &mut self.st.dram
    }

    /// The on-chip buffers.
    pub fn buffers(&self) -> Buffers<'_> {
        Buffers {
            act: &self.st.act,
            wgt: &self.st.wgt,
            acc: &self.st.acc,
            out: &self.st.out,
        }
    }

    /// `true` while a run is latched or hung.
    pub fn is_busy(&self) -> bool {
        self.status & regs::STATUS_BUSY != 0
    }

    /// Convenience for tests and tools: writes `program` at `prog_base`, starts it and runs it to
    /// the end. Returns the `STATUS` register.
    pub fn run_program(
        &mut self,
        prog_base: u64,
        program: &[Instruction],
    ) -> Result<u32, SimError> {
        let bytes = sinter_isa::insn::encode_program(program);
        self.write_dram(prog_base, &bytes)?;
        self.write_reg(regs::PROG_BASE, prog_base as u32);
        self.write_reg(regs::PROG_LEN, program.len() as u32);
        self.write_reg(regs::CONTROL, regs::CONTROL_START);
        self.advance(u64::MAX);
        Ok(self.read_reg(regs::STATUS))
    }

    fn reset(&mut self) {
        self.status = 0;
        self.error_code = regs::ERR_NONE;
        self.error_pc = 0;
        self.cycles = 0;
        self.mac_active = 0;
        self.insns_done = 0;
        self.pending = false;
        self.hung = false;
        self.diagnostic = None;
    }

    fn start(&mut self) {
        if self.is_busy() {
            return;
        }
        self.reset();
        self.status = regs::STATUS_BUSY;
        self.pending = true;
    }

    fn fault(&mut self, code: u32, pc: u32, diagnostic: String) {
        self.status = regs::STATUS_ERROR;
        self.error_code = code;
        self.error_pc = pc;
        self.diagnostic = Some(diagnostic);
    }

    /// Fetches, checks and executes the latched program.
    fn run(&mut self) {
        // A program's first run decodes it and runs unbatched.
        let key = (self.prog_base, self.prog_len);
        let big = self.decoded.get(&key).is_some_and(|d| d.macs >= BATCH_MACS);
        let batched = self
            .batched
            .unwrap_or(big && rayon::current_num_threads() > 1);
        // Batching asked for explicitly runs in parallel whatever it can, however small.
        self.batch.configure(batched, self.batched.is_some());
        if batched && rayon::current_thread_index().is_none() {
            // On a worker thread, so that this thread runs chains too while it waits for
            // the others.
            rayon::scope(|_| self.run_here());
        } else {
            self.run_here();
        }
    }

    fn run_here(&mut self) {
        self.pending = false;
        let cfg = self.st.cfg;
        if !self.prog_base.is_multiple_of(INSN_BYTES as u32) {
            self.fault(
                regs::ERR_PROG_ALIGN,
                0,
                format!("PROG_BASE {:#x} is not 32-byte aligned", self.prog_base),
            );
            return;
        }
        // Decode and check the whole range (or take it from the cache); the first bad
        // instruction ends the run after the ones before it executed, as on the hardware.
        let key = (self.prog_base, self.prog_len);
        let (insns, planned, mut outcome, cached_cycles) = match self.decoded.get(&key) {
            Some(d) => (d.insns.clone(), d.ops.clone(), None, Some(d.cycles)),
            None => {
                let (insns, outcome) = self.decode(&cfg);
                let planned: std::sync::Arc<[ops::Planned]> = if self.described.is_empty() {
                    Vec::new().into()
                } else {
                    ops::plan(
                        &cfg,
                        &self.st.dram,
                        &self.described,
                        self.prog_base as u64,
                        &insns,
                    )
                    .into()
                };
                (insns.into(), planned, outcome, None)
            }
        };
        let mut next_op = planned.iter().peekable();
        // tokens[from][to]: pushed and not yet popped, in program order.
        let mut tokens = [[0u64; 3]; 3];
        self.st.stored = (usize::MAX, 0);
        let mut done = 0;
        let batch = &mut self.batch;
        let mut at = 0;
        while at < insns.len() {
            if let Some(op) = next_op.next_if(|p| p.start == at) {
                if op.ready(&tokens) {
                    // Whatever is pending reads or writes DRAM the operation may touch.
                    batch.flush(&mut self.st);
                    op.prepared.run(&mut self.st.dram, &mut self.scratch);
                    self.ops_done += 1;
                    let (lo, hi) = op.prepared.out_span();
                    self.st.note_written(lo as usize, hi as usize);
                    op.apply_tokens(&mut tokens);
                    let n = op.end - op.start;
                    self.insns_done = self.insns_done.wrapping_add(n as u32);
                    self.mac_active += op.mac_cycles;
                    done += n;
                    at = op.end;
                    continue;
                }
            }
            let insn = &insns[at];
            let pc = at as u32;
            at += 1;
            let m = insn.module();
            let d = insn.deps();
            let (prev, next) = timing::neighbours(m);
            for (flag, from) in [(d.pop_prev, prev), (d.pop_next, next)] {
                // validate() guarantees the neighbour exists when the flag is set.
                if let (true, Some(from)) = (flag, from) {
                    let t = &mut tokens[from as usize][m as usize];
                    if *t == 0 {
                        self.batch.flush(&mut self.st);
                        self.after_stores();
                        self.hang(pc, m, from, &insns[..done]);
                        return;
                    }
                    *t -= 1;
                }
            }
            if let Err(msg) = batch.step(&mut self.st, insn) {
                outcome = Some((
                    ERR_DRAM_RANGE,
                    pc,
                    format!("instruction {pc} ({insn}): {msg}"),
                ));
                break;
            }
            for (flag, to) in [(d.push_prev, prev), (d.push_next, next)] {
                if let (true, Some(to)) = (flag, to) {
                    tokens[m as usize][to as usize] += 1;
                }
            }
            self.insns_done = self.insns_done.wrapping_add(1);
            self.mac_active += insn.mac_cycles();
            done += 1;
        }
        batch.flush(&mut self.st);
        self.after_stores();
        self.cycles = match (cached_cycles, &outcome) {
            (Some(c), None) => c,
            _ => timing::estimate(&cfg, &self.timing, &insns[..done]).total_cycles,
        };
        match outcome {
            Some((code, pc, msg)) => self.fault(code, pc, msg),
            None => {
                self.status = regs::STATUS_DONE;
                if cached_cycles.is_none() && self.decoded.len() < MAX_DECODED {
                    self.decoded.insert(
                        key,
                        Decoded {
                            ops: planned,
                            macs: insns.iter().map(|i| i.mac_cycles()).sum::<u64>()
                                * (cfg.rows * cfg.cols) as u64,
                            insns,
                            cycles: self.cycles,
                        },
                    );
                }
            }
        }
    }

    /// Decodes and checks the latched program up to its first bad instruction.
    #[allow(clippy::type_complexity)]
    fn decode(&self, cfg: &HwConfig) -> (Vec<Instruction>, Option<(u32, u32, String)>) {
        let mut insns = Vec::with_capacity(self.prog_len.min(1 << 16) as usize);
        for pc in 0..self.prog_len {
            let addr = self.prog_base as u64 + pc as u64 * INSN_BYTES as u64;
            let Some(word) = self
                .st
                .dram
                .get(addr as usize..)
                .and_then(|s| s.get(..INSN_BYTES))
            else {
                let msg = format!("instruction {pc} is fetched from {addr:#x}, beyond the DRAM");
                return (insns, Some((ERR_DRAM_RANGE, pc, msg)));
            };
            let insn = match Instruction::decode(word.try_into().unwrap()) {
                Ok(i) => i,
                Err(e) => {
                    let msg = format!("instruction {pc} does not decode: {e}");
                    return (insns, Some((regs::ERR_ILLEGAL_INSN, pc, msg)));
                }
            };
            if let Err(f) = insn.validate(cfg) {
                let msg = format!("instruction {pc} ({insn}): {f}");
                return (insns, Some((f.code(), pc, msg)));
            }
            insns.push(insn);
        }
        (insns, None)
    }

    /// Drops decoded programs the last run's stores overwrote.
    fn after_stores(&mut self) {
        let (lo, hi) = self.st.stored;
        if lo < hi {
            self.dram_written(lo as u64, hi as u64);
        }
    }

    fn hang(&mut self, pc: u32, m: Module, from: Module, executed: &[Instruction]) {
        self.hung = true;
        self.cycles = timing::estimate(&self.st.cfg, &self.timing, executed).total_cycles;
        self.diagnostic = Some(format!(
            "instruction {pc} ({}) pops a token from {} that is never pushed",
            m.name(),
            from.name()
        ));
    }
}

impl Npu for FuncSim {
    fn config(&self) -> HwConfig {
        self.st.cfg
    }

    fn dram_bytes(&self) -> u64 {
        self.st.dram.len() as u64
    }

    fn write_reg(&mut self, offset: u32, value: u32) {
        match offset {
            regs::CONTROL => {
                if value & regs::CONTROL_RESET != 0 {
                    // Like the hardware: every register returns to its power-on value.
                    self.reset();
                    self.prog_base = 0;
                    self.prog_len = 0;
                }
                if value & regs::CONTROL_START != 0 {
                    self.start();
                }
            }
            regs::PROG_BASE => self.prog_base = value,
            regs::PROG_LEN => self.prog_len = value,
            _ => {}
        }
    }

    fn read_reg(&mut self, offset: u32) -> u32 {
        let cfg = &self.st.cfg;
        match offset {
            regs::VERSION => ARCH_VERSION,
            regs::STATUS => self.status,
            regs::ERROR_CODE => self.error_code,
            regs::PROG_BASE => self.prog_base,
            regs::PROG_LEN => self.prog_len,
            regs::CYCLES_LO => self.cycles as u32,
            regs::CYCLES_HI => (self.cycles >> 32) as u32,
            regs::MAC_ACTIVE_LO => self.mac_active as u32,
            regs::MAC_ACTIVE_HI => (self.mac_active >> 32) as u32,
            regs::INSNS_DONE => self.insns_done,
            regs::ERROR_PC => self.error_pc,
            regs::CONFIG_ARRAY => regs::config_array_word(cfg),
            regs::CONFIG_ACT_DEPTH => cfg.act_depth,
            regs::CONFIG_WGT_DEPTH => cfg.wgt_depth,
            regs::CONFIG_ACC_DEPTH => cfg.acc_depth,
            regs::CONFIG_OUT_DEPTH => cfg.out_depth,
            _ => 0,
        }
    }

    fn write_dram(&mut self, addr: u64, data: &[u8]) -> Result<(), SimError> {
        let range = dram_range(self.st.dram.len(), addr, data.len())?;
        self.dram_written(range.start as u64, range.end as u64);
        self.st.dram_written(range.start, range.end);
        self.st.dram[range].copy_from_slice(data);
        Ok(())
    }

    fn read_dram(&mut self, addr: u64, out: &mut [u8]) -> Result<(), SimError> {
        let range = dram_range(self.st.dram.len(), addr, out.len())?;
        out.copy_from_slice(&self.st.dram[range]);
        Ok(())
    }

    fn describe_ops(&mut self, program_base: u64, ops: &[sinter_isa::window::WindowOp]) {
        FuncSim::describe_ops(self, program_base, ops);
    }

    /// Runs a latched program to its end and returns its estimated cycles (at most
    /// `max_cycles`); a hung run consumes every cycle it is given.
    fn advance(&mut self, max_cycles: u64) -> u64 {
        if max_cycles == 0 {
            return 0;
        }
        if self.pending {
            self.run();
            if !self.hung {
                return self.cycles.clamp(1, max_cycles);
            }
        }
        if self.hung {
            self.cycles = self.cycles.saturating_add(max_cycles);
            return max_cycles;
        }
        0
    }
}

fn dram_range(size: usize, addr: u64, len: usize) -> Result<std::ops::Range<usize>, SimError> {
    match addr.checked_add(len as u64) {
        Some(end) if end <= size as u64 => Ok(addr as usize..end as usize),
        _ => Err(SimError::DramRange {
            addr,
            len: len as u64,
            size: size as u64,
        }),
    }
}
