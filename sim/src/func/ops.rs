//! Which instruction ranges of a run may execute as whole operations ([`super::window`]).
//!
//! A host describes the operations of the program it loaded ([`super::FuncSim::describe_ops`]).
//! When a run's instructions are decoded, each described range inside the run is taken as an
//! operation only if skipping its instructions cannot change anything else the run computes:
//!
//! - its instruction bytes are those it was described with;
//! - it is *self-contained*: every on-chip row it reads it has written itself first, so its
//!   result depends on DRAM alone;
//! - the instructions of the run that still execute one by one are self-contained too, so none
//!   of them reads a row an operation would have left behind;
//! - at run time, the tokens its pops need are there (else the instructions run and hang
//!   exactly as they would).
//!
//! Its effect on the token counts (pushes less pops per edge) is applied as a whole.

use super::window::{self, Prepared};
use sinter_isa::insn::{Instruction, INSN_BYTES};
use sinter_isa::timing;
use sinter_isa::window::WindowOp;
use sinter_isa::{Buffer, HwConfig};
use std::sync::Arc;

/// A described operation: instructions at DRAM bytes `lo..hi` compute `op`.
pub(crate) struct Described {
    pub lo: u64,
    pub hi: u64,
    pub op: WindowOp,
    /// A hash of the instruction bytes when described.
    pub fingerprint: u64,
}

/// An operation taking the place of instructions `start..end` of a run.
pub(crate) struct Planned {
    pub start: usize,
    pub end: usize,
    /// Tokens per edge `[from][to]` the range's pops need before it starts.
    pub need: [[u64; 3]; 3],
    /// Pushes and pops per edge over the whole range.
    pub pushed: [[u64; 3]; 3],
    pub popped: [[u64; 3]; 3],
    /// MAC cycles of the instructions it replaces.
    pub mac_cycles: u64,
    pub prepared: Arc<Prepared>,
}

impl Planned {
    /// Whether the tokens its pops need are there.
    pub fn ready(&self, tokens: &[[u64; 3]; 3]) -> bool {
        (0..3).all(|f| (0..3).all(|t| tokens[f][t] >= self.need[f][t]))
    }

    /// Applies its pushes and pops to the counts (which [`Planned::ready`] accepted).
    pub fn apply_tokens(&self, tokens: &mut [[u64; 3]; 3]) {
        for (f, row) in tokens.iter_mut().enumerate() {
            for (t, n) in row.iter_mut().enumerate() {
                *n = *n + self.pushed[f][t] - self.popped[f][t];
            }
        }
    }
}

/// A hash of instruction bytes (FNV-1a over 64-bit words: fast, and only guards against a
/// program overwritten after it was described).
pub(crate) fn fingerprint(bytes: &[u8]) -> u64 {
    let mut h = 0xcbf2_9ce4_8422_2325u64;
    for w in bytes.chunks(8) {
        let mut v = [0u8; 8];
        v[..w.len()].copy_from_slice(w);
        h = (h ^ u64::from_le_bytes(v)).wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

/// The operations that replace instructions of a run of `insns` fetched from `prog_base`, in
/// program order. Ranges that do not qualify (see the module docs) are left to the
/// instructions, with the reason logged.
pub(crate) fn plan(
    cfg: &HwConfig,
    dram: &[u8],
    described: &[Described],
    prog_base: u64,
    insns: &[Instruction],
) -> Vec<Planned> {
    let run_end = prog_base + (insns.len() * INSN_BYTES) as u64;
    let mut found: Vec<(usize, usize, &Described)> = described
        .iter()
        .filter(|d| d.lo >= prog_base && d.hi <= run_end && d.lo < d.hi)
        .filter(|d| (d.lo - prog_base).is_multiple_of(INSN_BYTES as u64))
        .map(|d| {
            let start = ((d.lo - prog_base) / INSN_BYTES as u64) as usize;
            let end = ((d.hi - prog_base) / INSN_BYTES as u64) as usize;
            (start, end, d)
        })
        .collect();
    found.sort_by_key(|f| f.0);
    let mut rows = Written::new(cfg);
    let mut planned: Vec<Planned> = Vec::new();
    let mut last_end = 0;
    for (start, end, d) in found {
        let why = if start < last_end {
            Some("it overlaps another operation".to_string())
        } else if fingerprint(&dram[d.lo as usize..d.hi as usize]) != d.fingerprint {
            Some("its instructions changed since it was described".into())
        } else if let Err(e) = d.op.validate(cfg, dram.len() as u64) {
            Some(e)
        } else if let Some(e) = window::unsupported(cfg, &d.op) {
            Some(e.into())
        } else if !rows.self_contained(&insns[start..end]) {
            Some("its instructions read on-chip rows they did not write".into())
        } else {
            None
        };
        if let Some(why) = why {
            tracing::debug!(op = %d.op.name, %why, "operation runs as instructions");
            continue;
        }
        let t = tokens(&insns[start..end]);
        planned.push(Planned {
            start,
            end,
            need: t.need,
            pushed: t.pushed,
            popped: t.popped,
            mac_cycles: insns[start..end].iter().map(|i| i.mac_cycles()).sum(),
            prepared: Arc::new(Prepared::new(cfg, &d.op, dram)),
        });
        last_end = end;
    }
    // What still runs as instructions must not read what an operation leaves on chip.
    let mut rest = Vec::new();
    let mut at = 0;
    for p in &planned {
        rest.extend_from_slice(&insns[at..p.start]);
        at = p.end;
    }
    rest.extend_from_slice(&insns[at..]);
    if !planned.is_empty() && !rows.self_contained(&rest) {
        tracing::debug!("instructions outside the operations read on-chip state: none used");
        planned.clear();
    }
    planned
}

/// The token effect of a range.
fn tokens(insns: &[Instruction]) -> TokenEffect {
    let mut e = TokenEffect::default();
    for insn in insns {
        let m = insn.module() as usize;
        let d = insn.deps();
        let (prev, next) = timing::neighbours(insn.module());
        for (flag, from) in [(d.pop_prev, prev), (d.pop_next, next)] {
            if let (true, Some(from)) = (flag, from) {
                let f = from as usize;
                e.popped[f][m] += 1;
                if e.popped[f][m] > e.pushed[f][m] {
                    e.need[f][m] = e.need[f][m].max(e.popped[f][m] - e.pushed[f][m]);
                }
            }
        }
        for (flag, to) in [(d.push_prev, prev), (d.push_next, next)] {
            if let (true, Some(to)) = (flag, to) {
                e.pushed[m][to as usize] += 1;
            }
        }
    }
    e
}

#[derive(Default)]
struct TokenEffect {
    need: [[u64; 3]; 3],
    pushed: [[u64; 3]; 3],
    popped: [[u64; 3]; 3],
}

/// On-chip rows `lo ..= hi` of a buffer.
type Rows = Option<(Buffer, (u64, u64))>;

/// Which on-chip rows a sequence of instructions has written so far: a stamp per row, equal to
/// the current generation when written within the sequence being checked.
struct Written {
    stamps: [Vec<u32>; 4],
    generation: u32,
}

impl Written {
    fn new(cfg: &HwConfig) -> Written {
        let depth = |b: Buffer| match b {
            Buffer::Act => cfg.act_depth,
            Buffer::Wgt => cfg.wgt_depth,
            Buffer::Acc => cfg.acc_depth,
            Buffer::Out => cfg.out_depth,
        } as usize;
        Written {
            stamps: Buffer::ALL.map(|b| vec![0; depth(b)]),
            generation: 0,
        }
    }

    /// Whether every row `insns` read was written earlier in `insns` (bounding intervals of the
    /// rows read; rows written counted only for dense walks, so the answer errs towards "no").
    fn self_contained(&mut self, insns: &[Instruction]) -> bool {
        self.generation += 1;
        let g = self.generation;
        let rows = |w: &sinter_isa::Walk, o: u16, i: u16| w.bounds(o, i);
        for insn in insns {
            let (reads, write): ([Rows; 3], Rows) = match insn {
                Instruction::Load(d) => ([None; 3], d.sram_bounds().map(|r| (d.buffer, r))),
                Instruction::Store(d) => (
                    [d.sram_bounds().map(|r| (Buffer::Out, r)), None, None],
                    None,
                ),
                Instruction::Gemm(m) => {
                    let acc = rows(&m.acc, m.n_outer, m.n_inner);
                    let reads = [
                        rows(&m.act, m.n_outer, m.n_inner).map(|r| (Buffer::Act, r)),
                        Some((Buffer::Wgt, (m.wgt as u64, m.wgt as u64))),
                        acc.filter(|_| m.mode.reads_acc()).map(|r| (Buffer::Acc, r)),
                    ];
                    let dense = m.acc.covers(m.n_outer, m.n_inner);
                    (reads, acc.filter(|_| dense).map(|r| (Buffer::Acc, r)))
                }
                Instruction::Vec(v) => {
                    let p = v.param as u64;
                    let reads = [
                        rows(&v.src, v.n_outer, v.n_inner).map(|r| (Buffer::Acc, r)),
                        Some((Buffer::Acc, (p, p + 2))),
                        None,
                    ];
                    let out = rows(&v.dst, v.n_outer, v.n_inner)
                        .filter(|_| v.dst.covers(v.n_outer, v.n_inner));
                    (reads, out.map(|r| (Buffer::Out, r)))
                }
                Instruction::Sync(_) => ([None; 3], None),
            };
            for (b, (lo, hi)) in reads.into_iter().flatten() {
                let s = &self.stamps[b as usize];
                if hi as usize >= s.len() || s[lo as usize..=hi as usize].iter().any(|&x| x != g) {
                    return false;
                }
            }
            if let Some((b, (lo, hi))) = write {
                let s = &mut self.stamps[b as usize];
                if hi as usize >= s.len() {
                    return false;
                }
                s[lo as usize..=hi as usize].fill(g);
            }
        }
        true
    }
}
