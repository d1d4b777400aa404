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
use crate::{Buffer, DramRegion, HwConfig, Instruction, Module};

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

/// One access: on-chip rows `lo ..= hi`, or the bytes of a DRAM region.
#[derive(Clone, Copy)]
struct Access {
    resource: Resource,
    lo: u64,
    hi: u64,
    dram: Option<DramRegion>,
    write: bool,
}

impl Access {
    fn rows(buffer: Buffer, (lo, hi): (u64, u64), write: bool) -> Access {
        Access {
            resource: Resource::Buf(buffer),
            lo,
            hi,
            dram: None,
            write,
        }
    }

    /// Whether the two touch a common row or byte.
    fn overlaps(&self, o: &Access) -> bool {
        self.resource == o.resource
            && match (&self.dram, &o.dram) {
                (Some(a), Some(b)) => a.overlaps(b),
                _ => self.lo <= o.hi && o.lo <= self.hi,
            }
    }
}

/// The resources `insn` reads and writes, outside the accumulator buffer.
fn accesses(cfg: &HwConfig, insn: &Instruction) -> Vec<Access> {
    match insn {
        Instruction::Load(d) | Instruction::Store(d) => {
            let Some(rows) = d.sram_bounds().filter(|_| d.y_size > 0 && d.x_size > 0) else {
                return Vec::new();
            };
            let load = matches!(insn, Instruction::Load(_));
            let region = DramRegion::of(d, cfg.element_bytes(d.buffer));
            let dram = Access {
                resource: Resource::Dram,
                lo: region.lo,
                hi: region.hi - 1,
                dram: Some(region),
                write: !load,
            };
            if d.buffer == Buffer::Acc {
                vec![dram]
            } else {
                vec![dram, Access::rows(d.buffer, rows, load)]
            }
        }
        Instruction::Gemm(g) => g
            .act
            .bounds(g.n_outer, g.n_inner)
            .map(|act| {
                let wgt = (g.wgt as u64, g.wgt as u64);
                vec![
                    Access::rows(Buffer::Act, act, false),
                    Access::rows(Buffer::Wgt, wgt, false),
                ]
            })
            .unwrap_or_default(),
        Instruction::Vec(v) => v
            .dst
            .bounds(v.n_outer, v.n_inner)
            .map(|out| vec![Access::rows(Buffer::Out, out, true)])
            .unwrap_or_default(),
        Instruction::Sync(_) => Vec::new(),
    }
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
                if p.module == m || !(a.write || access.write) {
                    continue;
                }
                if known[p.module as usize] <= p.nth && a.overlaps(&access) {
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
