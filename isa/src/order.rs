//! Whether a program's tokens order every pair of conflicting accesses of different modules.
//!
//! The functional model runs a program in program order, so a missing token never shows in its
//! results; the hardware runs the three modules concurrently and would read a row or a DRAM byte
//! before it is written. This check finds such races without running anything: it replays the
//! tokens as vector clocks (what each module knows to have completed when an instruction
//! starts: its own earlier instructions, and through every pop, all that the pushing
//! instruction knew when it completed) and requires, for every two accesses of the same
//! resource by different modules where at least one writes, that the earlier is known to have
//! completed when the later starts.
//!
//! On-chip accesses are bounding intervals of rows (a transfer's rows, the rows a walk can
//! reach): conservative, never optimistic. DRAM accesses are compared by their bounding byte
//! intervals first and, where those overlap, element by element, so that transfers that
//! interleave (channel blocks of one tensor) are not taken for a race. The accumulator buffer is
//! the compute module's alone and is not checked.

use crate::timing::neighbours;
use crate::{Buffer, HwConfig, Instruction, Module};

/// Two accesses the tokens leave unordered.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error(
    "instructions {first} and {second} both touch {what} {lo:#x}..={hi:#x}, at least one \
     writing, and no token orders {second} after {first}"
)]
pub struct Race {
    pub first: usize,
    pub second: usize,
    pub what: &'static str,
    /// Where the two accesses overlap.
    pub lo: u64,
    pub hi: u64,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Resource {
    Dram,
    Buf(Buffer),
}

impl Resource {
    fn name(self) -> &'static str {
        match self {
            Resource::Dram => "DRAM bytes",
            Resource::Buf(Buffer::Act) => "activation rows",
            Resource::Buf(Buffer::Wgt) => "weight tiles",
            Resource::Buf(Buffer::Acc) => "accumulator rows",
            Resource::Buf(Buffer::Out) => "output rows",
        }
    }
}

#[derive(Clone, Copy)]
struct Access {
    resource: Resource,
    lo: u64,
    hi: u64,
    write: bool,
}

/// The resources `insn` reads and writes, outside the accumulator buffer.
fn accesses(cfg: &HwConfig, insn: &Instruction) -> Vec<Access> {
    let rows = |buffer, lo: u64, hi: u64, write| Access {
        resource: Resource::Buf(buffer),
        lo,
        hi,
        write,
    };
    let empty = |outer: u16, inner: u16| outer == 0 || inner == 0;
    match insn {
        Instruction::Load(d) | Instruction::Store(d) => {
            if d.y_size == 0 || d.x_size == 0 {
                return Vec::new();
            }
            let elem = cfg.element_bytes(d.buffer) as u64;
            let last = d.dram_base as u64
                + (d.y_size as u64 - 1) * d.y_stride as u64
                + (d.x_size as u64 - 1) * d.x_stride as u64
                + elem
                - 1;
            let load = matches!(insn, Instruction::Load(_));
            let dram = Access {
                resource: Resource::Dram,
                lo: d.dram_base as u64,
                hi: last,
                write: !load,
            };
            let base = d.sram_base as u64;
            let on_chip = rows(d.buffer, base, base + d.sram_rows() - 1, load);
            if d.buffer == Buffer::Acc {
                vec![dram]
            } else {
                vec![dram, on_chip]
            }
        }
        Instruction::Gemm(g) if !empty(g.n_outer, g.n_inner) => vec![
            rows(
                Buffer::Act,
                g.act.base as u64,
                g.act.max_row(g.n_outer, g.n_inner),
                false,
            ),
            rows(Buffer::Wgt, g.wgt as u64, g.wgt as u64, false),
        ],
        Instruction::Vec(v) if !empty(v.n_outer, v.n_inner) => vec![rows(
            Buffer::Out,
            v.dst.base as u64,
            v.dst.max_row(v.n_outer, v.n_inner),
            true,
        )],
        _ => Vec::new(),
    }
}

/// The DRAM byte ranges of a transfer, sorted.
fn dram_ranges(cfg: &HwConfig, d: &crate::Dma) -> Vec<(u64, u64)> {
    let elem = cfg.element_bytes(d.buffer) as u64;
    let mut r = Vec::with_capacity(d.y_size as usize * d.x_size as usize);
    for y in 0..d.y_size as u64 {
        for x in 0..d.x_size as u64 {
            let lo = d.dram_base as u64 + y * d.y_stride as u64 + x * d.x_stride as u64;
            r.push((lo, lo + elem - 1));
        }
    }
    r.sort_unstable();
    r
}

/// Whether two transfers touch a common DRAM byte (their bounding intervals already overlap).
fn dram_overlap(cfg: &HwConfig, a: &Instruction, b: &Instruction) -> bool {
    let (
        Instruction::Load(a) | Instruction::Store(a),
        Instruction::Load(b) | Instruction::Store(b),
    ) = (a, b)
    else {
        return true;
    };
    let (ra, rb) = (dram_ranges(cfg, a), dram_ranges(cfg, b));
    let (mut i, mut j) = (0, 0);
    while i < ra.len() && j < rb.len() {
        if ra[i].1 < rb[j].0 {
            i += 1;
        } else if rb[j].1 < ra[i].0 {
            j += 1;
        } else {
            return true;
        }
    }
    false
}

/// An access already made: by which instruction, its index within its module.
struct Made {
    access: Access,
    insn: usize,
    module: Module,
    nth: usize,
}

/// Checks that the tokens of `program` (in program order a valid sequential execution) order
/// every conflicting pair of accesses of different modules; see the module docs.
pub fn check(cfg: &HwConfig, program: &[Instruction]) -> Result<(), Race> {
    // know[m][k]: instructions of module k that module m knows to have completed.
    let mut know = [[0usize; 3]; 3];
    // What each token carries, per directed edge [from][to], in push order.
    let mut tokens: [[Vec<[usize; 3]>; 3]; 3] = Default::default();
    let mut popped = [[0usize; 3]; 3];
    let mut made: Vec<Made> = Vec::new();
    for (i, insn) in program.iter().enumerate() {
        let m = insn.module();
        let d = insn.deps();
        let (prev, next) = neighbours(m);
        for (flag, from) in [(d.pop_prev, prev), (d.pop_next, next)] {
            if let (true, Some(from)) = (flag, from) {
                let (f, t) = (from as usize, m as usize);
                // A program whose pops outrun its pushes is not valid: nothing to order.
                let Some(k) = tokens[f][t].get(popped[f][t]).copied() else {
                    continue;
                };
                popped[f][t] += 1;
                for (a, b) in know[t].iter_mut().zip(k) {
                    *a = (*a).max(b);
                }
            }
        }
        let known = know[m as usize];
        for access in accesses(cfg, insn) {
            for p in &made {
                let a = &p.access;
                if p.module == m
                    || a.resource != access.resource
                    || !(a.write || access.write)
                    || a.hi < access.lo
                    || access.hi < a.lo
                {
                    continue;
                }
                if known[p.module as usize] <= p.nth
                    && (access.resource != Resource::Dram
                        || dram_overlap(cfg, &program[p.insn], insn))
                {
                    return Err(Race {
                        first: p.insn,
                        second: i,
                        what: access.resource.name(),
                        lo: a.lo.max(access.lo),
                        hi: a.hi.min(access.hi),
                    });
                }
            }
            made.push(Made {
                access,
                insn: i,
                module: m,
                nth: known[m as usize],
            });
        }
        know[m as usize][m as usize] += 1;
        for (flag, to) in [(d.push_prev, prev), (d.push_next, next)] {
            if let (true, Some(to)) = (flag, to) {
                tokens[m as usize][to as usize].push(know[m as usize]);
            }
        }
        // Forget accesses every other module knows to be complete: nothing later can race
        // with them (it starts after what its module knows).
        if i % 64 == 63 {
            made.retain(|p| {
                (0..3).any(|k| k != p.module as usize && know[k][p.module as usize] <= p.nth)
            });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Deps, Dma, Sync};

    fn dma(buffer: Buffer, dram_base: u32, deps: Deps) -> Dma {
        Dma {
            deps,
            buffer,
            dram_base,
            y_size: 1,
            x_size: 4,
            x_stride: HwConfig::SMALL.element_bytes(buffer),
            ..Dma::default()
        }
    }

    fn deps(pop_prev: bool, pop_next: bool, push_prev: bool, push_next: bool) -> Deps {
        Deps {
            pop_prev,
            pop_next,
            push_prev,
            push_next,
        }
    }

    /// A store, then a load of the same bytes: racing unless a token chain orders them.
    fn store_then_load(chain: bool) -> Vec<Instruction> {
        let cfg = HwConfig::SMALL;
        let out = cfg.element_bytes(Buffer::Out);
        vec![
            Instruction::Store(dma(Buffer::Out, 0x100, deps(false, false, chain, false))),
            Instruction::Sync(Sync {
                deps: deps(false, chain, chain, false),
                module: Module::Compute,
            }),
            Instruction::Load(Dma {
                x_stride: out,
                ..dma(Buffer::Act, 0x100, deps(false, chain, false, false))
            }),
        ]
    }

    #[test]
    fn a_load_of_stored_bytes_needs_a_token_chain() {
        let cfg = HwConfig::SMALL;
        assert_eq!(check(&cfg, &store_then_load(true)), Ok(()));
        let race = check(&cfg, &store_then_load(false)).unwrap_err();
        assert_eq!((race.first, race.second, race.what), (0, 2, "DRAM bytes"));
    }

    /// Interleaved channel blocks of one tensor: bounding intervals overlap, bytes do not.
    #[test]
    fn interleaved_transfers_do_not_race() {
        let cfg = HwConfig::SMALL;
        let out = cfg.element_bytes(Buffer::Out);
        let block = |base| Dma {
            x_stride: 2 * out,
            ..dma(Buffer::Out, base, Deps::NONE)
        };
        let load = |base| Dma {
            x_stride: 2 * out,
            ..dma(Buffer::Act, base, Deps::NONE)
        };
        let program = [
            Instruction::Store(block(0x100)),
            Instruction::Load(load(0x100 + out)),
        ];
        assert_eq!(check(&cfg, &program), Ok(()));
        let program = [
            Instruction::Store(block(0x100)),
            Instruction::Load(load(0x100)),
        ];
        assert!(check(&cfg, &program).is_err());
    }

    #[test]
    fn reads_do_not_race_with_reads() {
        let cfg = HwConfig::SMALL;
        let program = [
            Instruction::Load(dma(Buffer::Act, 0x100, Deps::NONE)),
            Instruction::Load(dma(Buffer::Acc, 0x100, Deps::NONE)),
        ];
        assert_eq!(check(&cfg, &program), Ok(()));
    }
}
