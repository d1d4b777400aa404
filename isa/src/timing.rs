//! The timing model: how many cycles each instruction takes and how the three modules overlap.
//!
//! The compiler's cost model and the functional simulator's cycle estimate both come from here;
//! the RTL measures the truth, and `sinter bench` shows prediction and measurement side by side.

use crate::{HwConfig, Instruction, Module};

/// Instructions each module's queue holds between dispatch and start. Dispatch is in program
/// order, so a full queue holds up every instruction behind it, whatever its module.
pub const QUEUE_DEPTH: u32 = 32;
/// Instructions the fetch unit buffers ahead of dispatch.
pub const FETCH_DEPTH: u32 = 32;
/// Instructions per fetch request.
pub const FETCH_BURST: u32 = 8;
/// Read beats one DMA keeps in flight: enough to stream over the memory latency, few enough
/// that an instruction fetch queued behind them is not held up long.
pub const DMA_MAX_BEATS: u32 = 32;

/// Latencies of the memory system and pipelines the model assumes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TimingParams {
    /// Cycles from a read request to its first beat.
    pub mem_latency: u32,
    /// Fixed cycles to decode and start any instruction.
    pub issue: u32,
    /// Depth of the GEMM pipeline (cycles after the last row enters until it is written back).
    pub gemm_pipeline: u32,
    /// Depth of the vector-unit pipeline.
    pub vec_pipeline: u32,
    /// Cycles a VEC holds the compute module to read its parameter rows, after its issue
    /// cycles, before the vector unit takes its rows and the module accepts the next instruction.
    pub vec_params: u32,
}

impl Default for TimingParams {
    fn default() -> Self {
        TimingParams {
            mem_latency: 16,
            issue: 2,
            gemm_pipeline: 3,
            vec_pipeline: 4,
            vec_params: 3,
        }
    }
}

/// Cycles `insn` occupies its module, ignoring waits for tokens.
pub fn busy_cycles(cfg: &HwConfig, p: &TimingParams, insn: &Instruction) -> u64 {
    let issue = p.issue as u64;
    match insn {
        Instruction::Load(d) | Instruction::Store(d) => {
            let e = cfg.element_bytes(d.buffer) as u64;
            let beats_per_elem = e.div_ceil(cfg.bus_bytes as u64).max(1);
            let data = d.y_size as u64 * d.x_size as u64 * beats_per_elem;
            let pad = d.sram_rows() - d.y_size as u64 * d.x_size as u64;
            let latency = if matches!(insn, Instruction::Load(_)) {
                p.mem_latency as u64
            } else {
                0
            };
            issue + latency + data + pad
        }
        Instruction::Gemm(g) => {
            issue + g.n_outer as u64 * g.n_inner as u64 + p.gemm_pipeline as u64
        }
        Instruction::Vec(v) => {
            issue
                + p.vec_params as u64
                + v.n_outer as u64 * v.n_inner as u64
                + p.vec_pipeline as u64
        }
        Instruction::Sync(_) => 1,
    }
}

/// The accumulator rows an instruction on the compute module touches, as a bounding interval:
/// a GEMM's accumulator walk, a VEC's source walk (its parameter rows are read before the
/// vector unit runs), an accumulator load's rows. `None` for everything else, and for an
/// empty loop (which a valid program never has).
pub fn acc_rows(insn: &Instruction) -> Option<(u64, u64)> {
    match insn {
        Instruction::Gemm(g) => g.acc.bounds(g.n_outer, g.n_inner),
        Instruction::Vec(v) => v.src.bounds(v.n_outer, v.n_inner),
        Instruction::Load(d) if d.buffer == crate::Buffer::Acc => d.sram_bounds(),
        _ => None,
    }
}

/// The accumulator bank of a row: the buffer is two banks (its lower and upper half), each with
/// its own read port.
pub fn acc_bank(cfg: &HwConfig, row: u64) -> u64 {
    row / (cfg.acc_depth as u64 / 2)
}

/// A VEC whose rows are still on the vector unit.
#[derive(Clone, Copy, Debug)]
struct VectorUnit {
    /// The cycle the vector unit is free again (and the VEC's tokens are pushed).
    end: u64,
    rows: (u64, u64),
    pushes_prev: bool,
}

/// Whether a compute-module instruction must wait for the VEC on the vector unit instead of
/// starting beside it: it needs the vector unit, reads a bank the VEC reads, overwrites rows it
/// reads, pushes to the store module (which may then read the VEC's output), or pushes to the
/// load module as the VEC will (one push per edge and cycle).
fn waits_for_vector_unit(cfg: &HwConfig, insn: &Instruction, vu: &VectorUnit) -> bool {
    let d = insn.deps();
    if d.push_next || (d.push_prev && vu.pushes_prev) {
        return true;
    }
    let (lo, hi) = vu.rows;
    match (insn, acc_rows(insn)) {
        (Instruction::Vec(_), _) => true,
        (Instruction::Gemm(_), Some((a, b))) => {
            !(acc_bank(cfg, b) < acc_bank(cfg, lo) || acc_bank(cfg, a) > acc_bank(cfg, hi))
        }
        (Instruction::Load(_), Some((a, b))) => !(b < lo || a > hi),
        _ => false,
    }
}

/// Start and end cycle of every instruction, and the total.
#[derive(Clone, Debug, Default)]
pub struct Schedule {
    pub start: Vec<u64>,
    pub end: Vec<u64>,
    pub total_cycles: u64,
    pub mac_cycles: u64,
}

/// Cycles to fetch one instruction over the memory port.
pub fn fetch_cycles(cfg: &HwConfig) -> u64 {
    (crate::INSN_BYTES as u64).div_ceil(cfg.bus_bytes as u64)
}

/// Predicts the schedule of a (valid) program: every module runs its instructions in order; an
/// instruction starts when its module is free, when it has been fetched, and when each token it
/// pops has been pushed (the k-th pop from a neighbour waits for that neighbour's k-th push).
///
/// Back-to-back GEMMs overlap: the compute module accepts a GEMM in the cycle the previous one
/// issues its last row, if everything the new one waits for is there by then, instead of after
/// the previous one has drained. A GEMM accepted that way blocks the next overlap until its
/// predecessor has completed, which takes three of its own rows.
///
/// A VEC holds the compute module for its issue and parameter cycles only; its rows then run on
/// the vector unit beside the following instructions, except those [`waits_for_vector_unit`]
/// names, which start when it is done.
///
/// Instructions are dispatched in program order into per-module queues of [`QUEUE_DEPTH`], so a
/// module whose queue is full holds up the others; fetch runs at most [`FETCH_DEPTH`] ahead.
/// Instructions are fetched over the read port the load module's DMA uses, so a load is
/// charged the fetch beats of the instructions since the load module's previous one: those are
/// about the ones fetched while it streams.
pub fn estimate(cfg: &HwConfig, p: &TimingParams, program: &[Instruction]) -> Schedule {
    // Push times of tokens on each directed edge, indexed [from][to].
    let mut pushes: [[Vec<u64>; 3]; 3] = Default::default();
    let mut pops = [[0usize; 3]; 3];
    let mut free = [0u64; 3];
    // The cycle the last GEMM on the compute module issues its last row, while a following GEMM
    // may still overlap it.
    let mut overlap_at: Option<u64> = None;
    let mut vector_unit: Option<VectorUnit> = None;
    // Program index just after the load module's previous instruction.
    let mut after_last_load = 0usize;
    // Dispatch cycle of every instruction so far, and the start cycles of each module's.
    let mut dispatched: Vec<u64> = Vec::with_capacity(program.len());
    let mut starts: [Vec<u64>; 3] = Default::default();
    let mut s = Schedule {
        start: Vec::with_capacity(program.len()),
        end: Vec::with_capacity(program.len()),
        ..Schedule::default()
    };
    let fetch = fetch_cycles(cfg);
    for (i, insn) in program.iter().enumerate() {
        let m = insn.module() as usize;
        let d = insn.deps();
        // Fetched: streaming, but at most FETCH_DEPTH instructions ahead of dispatch.
        let mut fetched = p.mem_latency as u64 + (i as u64 + 1) * fetch;
        if let Some(&d) = i
            .checked_sub(FETCH_DEPTH as usize)
            .and_then(|k| dispatched.get(k))
        {
            fetched = fetched.max(d + p.mem_latency as u64 + fetch);
        }
        // Dispatched in program order, one per cycle, once the module's queue has room: the
        // instruction QUEUE_DEPTH earlier in the same module has started.
        let mut ready = fetched.max(dispatched.last().map_or(0, |d| d + 1));
        let q = &starts[m];
        if q.len() >= QUEUE_DEPTH as usize {
            ready = ready.max(q[q.len() - QUEUE_DEPTH as usize]);
        }
        dispatched.push(ready);
        let (prev, next) = neighbours(insn.module());
        for (flag, from) in [(d.pop_prev, prev), (d.pop_next, next)] {
            if let (true, Some(from)) = (flag, from) {
                let k = pops[from as usize][m];
                pops[from as usize][m] += 1;
                if let Some(&at) = pushes[from as usize][m].get(k) {
                    ready = ready.max(at);
                }
            }
        }
        let mut t = free[m].max(ready);
        // The cycle the foreground of the compute module is free again, when not `end`.
        let mut foreground_end = None;
        if m == Module::Compute as usize {
            // The cycle the vector unit lets this instruction start, if it has to wait.
            let vu_wait = vector_unit
                .filter(|vu| waits_for_vector_unit(cfg, insn, vu))
                .map(|vu| vu.end);
            let gemm_rows = match insn {
                Instruction::Gemm(g) => Some(g.n_outer as u64 * g.n_inner as u64),
                _ => None,
            };
            let overlapped = match (gemm_rows, overlap_at) {
                (Some(_), Some(at)) if ready <= at && vu_wait.is_none_or(|e| e <= at) => {
                    t = at;
                    true
                }
                _ => false,
            };
            if !overlapped {
                t = t.max(vu_wait.unwrap_or(0));
            }
            if let Instruction::Vec(_) = insn {
                foreground_end = Some(t + p.issue as u64 + p.vec_params as u64);
            }
            // Accept (issue) cycles come first, then one row per cycle.
            overlap_at = gemm_rows
                .filter(|&rows| !overlapped || rows >= 3)
                .map(|rows| t + p.issue as u64 - 1 + rows);
        }
        let mut end = t + busy_cycles(cfg, p, insn);
        if m == Module::Load as usize {
            // The instruction fetch shares the read port: the instructions fetched while this
            // load streams (about those since the load module's previous instruction) take
            // beats from it.
            if matches!(insn, Instruction::Load(_)) {
                end += (i - after_last_load) as u64 * fetch;
            }
            after_last_load = i + 1;
        }
        for (flag, to) in [(d.push_prev, prev), (d.push_next, next)] {
            if let (true, Some(to)) = (flag, to) {
                pushes[m][to as usize].push(end);
            }
        }
        if let (Some(fg), Some((lo, hi))) = (foreground_end, acc_rows(insn)) {
            vector_unit = Some(VectorUnit {
                end,
                rows: (lo, hi),
                pushes_prev: d.push_prev,
            });
            s.total_cycles = s.total_cycles.max(end);
            free[m] = fg;
        } else {
            free[m] = end;
        }
        starts[m].push(t);
        s.start.push(t);
        s.end.push(end);
        s.mac_cycles += insn.mac_cycles();
    }
    s.total_cycles = s.total_cycles.max(free.iter().copied().max().unwrap_or(0));
    s
}

/// The (prev, next) neighbours of a module in the load ⇄ compute ⇄ store chain.
pub fn neighbours(m: Module) -> (Option<Module>, Option<Module>) {
    match m {
        Module::Load => (None, Some(Module::Compute)),
        Module::Compute => (Some(Module::Load), Some(Module::Store)),
        Module::Store => (Some(Module::Compute), None),
    }
}
