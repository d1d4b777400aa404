//! Building a program with dependency tokens.
//!
//! The NPU runs three in-order modules (load, compute, store) concurrently; the only ordering
//! between them is the tokens an instruction pops before it starts and pushes when it ends. This
//! builder turns "wait until event E of module A has happened" into the exact pops, so the code
//! generator speaks of events, never of flags:
//!
//! - [`ProgramBuilder::signal`] makes the last instruction of a module push a token to a
//!   neighbour; the pushes on each directed edge are numbered 0, 1, 2, … and the call returns the
//!   number, the *event*.
//! - [`ProgramBuilder::wait`] makes the next instruction of the neighbour wait for that event:
//!   since pops consume pushes in order, the k-th pop returns only after the k-th push, so waiting
//!   for event `e` means popping until `e + 1` tokens have been popped on that edge.
//!
//! Program order is always a valid sequential execution (every pop follows its push), which is
//! what the functional model checks and what keeps the fetch unit free of deadlocks.

use sinter_isa::timing::neighbours;
use sinter_isa::{Deps, Instruction, Module, Sync};

/// A directed token edge between neighbouring modules.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Edge {
    pub from: Module,
    pub to: Module,
}

impl Edge {
    pub const LOAD_TO_COMPUTE: Edge = Edge {
        from: Module::Load,
        to: Module::Compute,
    };
    pub const COMPUTE_TO_LOAD: Edge = Edge {
        from: Module::Compute,
        to: Module::Load,
    };
    pub const COMPUTE_TO_STORE: Edge = Edge {
        from: Module::Compute,
        to: Module::Store,
    };
    pub const STORE_TO_COMPUTE: Edge = Edge {
        from: Module::Store,
        to: Module::Compute,
    };

    fn index(self) -> usize {
        self.from as usize * 3 + self.to as usize
    }

    /// Whether `to` is the "next" neighbour of `from` (else the "prev").
    fn is_next(self) -> bool {
        neighbours(self.from).1 == Some(self.to)
    }
}

/// The event number of a push on an edge.
pub type Event = u32;

#[derive(Default)]
pub struct ProgramBuilder {
    program: Vec<Instruction>,
    /// Tokens pushed and popped so far on each edge (indexed by `Edge::index`).
    pushed: [u32; 9],
    popped: [u32; 9],
    /// Pops the next instruction of each module must perform, per edge.
    pending: [u32; 9],
    /// Index of the last instruction dispatched to each module.
    last: [Option<usize>; 3],
}

impl ProgramBuilder {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn len(&self) -> usize {
        self.program.len()
    }

    pub fn is_empty(&self) -> bool {
        self.program.is_empty()
    }

    /// Appends an instruction (its dependency flags are set by the builder), first emitting the
    /// pops that pending waits require.
    pub fn emit(&mut self, mut insn: Instruction) {
        *insn.deps_mut() = Deps::NONE;
        let module = insn.module();
        let (prev, next) = neighbours(module);
        for (nb, is_next) in [(prev, false), (next, true)] {
            let Some(from) = nb else { continue };
            let e = Edge { from, to: module }.index();
            while self.pending[e] > 0 {
                let deps = insn.deps_mut();
                let flag = if is_next {
                    &mut deps.pop_next
                } else {
                    &mut deps.pop_prev
                };
                if self.pending[e] == 1 && !*flag {
                    *flag = true;
                } else {
                    // Extra pops on the same edge go into syncs ahead of the instruction.
                    let mut sync = Instruction::Sync(Sync {
                        deps: Deps::NONE,
                        module,
                    });
                    if is_next {
                        sync.deps_mut().pop_next = true;
                    } else {
                        sync.deps_mut().pop_prev = true;
                    }
                    self.push_raw(sync);
                }
                self.pending[e] -= 1;
                self.popped[e] += 1;
            }
        }
        self.push_raw(insn);
    }

    fn push_raw(&mut self, insn: Instruction) {
        self.last[insn.module() as usize] = Some(self.program.len());
        self.program.push(insn);
    }

    /// Makes everything `edge.from` has issued so far signal `edge.to`; returns the event.
    pub fn signal(&mut self, edge: Edge) -> Event {
        let is_next = edge.is_next();
        let free = self.last[edge.from as usize].filter(|&i| {
            let d = self.program[i].deps();
            !(if is_next { d.push_next } else { d.push_prev })
        });
        let at = match free {
            Some(i) => i,
            None => {
                self.push_raw(Instruction::Sync(Sync {
                    deps: Deps::NONE,
                    module: edge.from,
                }));
                self.program.len() - 1
            }
        };
        let d = self.program[at].deps_mut();
        if is_next {
            d.push_next = true;
        } else {
            d.push_prev = true;
        }
        let e = edge.index();
        self.pushed[e] += 1;
        self.pushed[e] - 1
    }

    /// Makes the next instruction of `edge.to` wait until `event` has been signalled.
    pub fn wait(&mut self, edge: Edge, event: Event) {
        let e = edge.index();
        assert!(
            event < self.pushed[e],
            "waiting for an event not yet signalled"
        );
        let have = self.popped[e] + self.pending[e];
        if have <= event {
            self.pending[e] += event + 1 - have;
        }
    }

    /// Emits a sync in `module` that performs any pending pops (a barrier).
    pub fn flush_waits(&mut self, module: Module) {
        let (prev, next) = neighbours(module);
        let pending = [prev, next]
            .into_iter()
            .flatten()
            .any(|from| self.pending[Edge { from, to: module }.index()] > 0);
        if pending {
            self.emit(Instruction::Sync(Sync {
                deps: Deps::NONE,
                module,
            }));
        }
    }

    /// Makes every module consume every token pushed to it so far: afterwards all token counts
    /// are zero and no module starts what follows before every module has finished what came
    /// before. The program from here on runs the same whether or not what came before ran in
    /// the same start (layers can be run and measured one by one).
    ///
    /// The compute module first waits for the last loads and stores, then tells the load and
    /// store modules: the load module's own tokens from compute say nothing about the stores,
    /// and the next layer's loads read what the last stores wrote.
    pub fn drain(&mut self) {
        for edge in [Edge::LOAD_TO_COMPUTE, Edge::STORE_TO_COMPUTE] {
            let e = edge.index();
            if self.pushed[e] > 0 {
                self.wait(edge, self.pushed[e] - 1);
            }
        }
        self.emit(Instruction::Sync(Sync {
            deps: Deps::NONE,
            module: Module::Compute,
        }));
        for edge in [Edge::COMPUTE_TO_LOAD, Edge::COMPUTE_TO_STORE] {
            let done = self.signal(edge);
            self.wait(edge, done);
        }
        for m in [Module::Load, Module::Store] {
            self.flush_waits(m);
        }
    }

    /// Whether every token pushed has been popped.
    pub fn is_drained(&self) -> bool {
        self.pushed == self.popped && self.pending.iter().all(|p| *p == 0)
    }

    pub fn finish(self) -> Vec<Instruction> {
        debug_assert!(self.pending.iter().all(|p| *p == 0), "unflushed waits");
        self.program
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sinter_isa::{Buffer, Dma};

    fn load() -> Instruction {
        Instruction::Load(Dma {
            buffer: Buffer::Act,
            y_size: 1,
            x_size: 1,
            ..Dma::default()
        })
    }

    #[test]
    fn waits_turn_into_pops_in_order() {
        let mut b = ProgramBuilder::new();
        b.emit(load());
        let e0 = b.signal(Edge::LOAD_TO_COMPUTE);
        b.emit(load());
        let e1 = b.signal(Edge::LOAD_TO_COMPUTE);
        assert_eq!((e0, e1), (0, 1));
        // Waiting for event 1 needs two pops: one sync plus the flag.
        b.wait(Edge::LOAD_TO_COMPUTE, e1);
        b.emit(Instruction::Sync(Sync {
            deps: Deps::NONE,
            module: Module::Compute,
        }));
        // Waiting again for an already-consumed event costs nothing.
        b.wait(Edge::LOAD_TO_COMPUTE, e0);
        let p = b.finish();
        assert_eq!(p.len(), 4);
        assert!(p[0].deps().push_next && p[1].deps().push_next);
        assert!(p[2].deps().pop_prev && p[3].deps().pop_prev);
    }

    /// For every instruction, how many instructions of each module are known to have completed
    /// when it starts, through the tokens it and its module's earlier instructions popped (each
    /// module taken as completing its instructions in order).
    fn known_at_start(program: &[Instruction]) -> Vec<[usize; 3]> {
        let mut know = [[0usize; 3]; 3];
        let mut done = [0usize; 3];
        // Knowledge carried by each token on each edge, in push order.
        let mut tokens: [Vec<[usize; 3]>; 9] = Default::default();
        let mut taken = [0usize; 9];
        let mut out = Vec::new();
        for insn in program {
            let m = insn.module();
            let (prev, next) = neighbours(m);
            let d = insn.deps();
            for (flag, from) in [(d.pop_prev, prev), (d.pop_next, next)] {
                if let (true, Some(from)) = (flag, from) {
                    let e = Edge { from, to: m }.index();
                    let k = tokens[e][taken[e]];
                    taken[e] += 1;
                    for (a, b) in know[m as usize].iter_mut().zip(k) {
                        *a = (*a).max(b);
                    }
                }
            }
            out.push(know[m as usize]);
            done[m as usize] += 1;
            know[m as usize][m as usize] = done[m as usize];
            for (flag, to) in [(d.push_prev, prev), (d.push_next, next)] {
                if let (true, Some(to)) = (flag, to) {
                    tokens[Edge { from: m, to }.index()].push(know[m as usize]);
                }
            }
        }
        out
    }

    /// After a drain, the load module starts nothing before the stores ahead of it have
    /// finished: the next layer's loads read what they wrote.
    #[test]
    fn drain_orders_the_next_loads_after_the_stores() {
        let mut b = ProgramBuilder::new();
        b.emit(load());
        let loaded = b.signal(Edge::LOAD_TO_COMPUTE);
        b.wait(Edge::LOAD_TO_COMPUTE, loaded);
        b.emit(Instruction::Sync(Sync {
            deps: Deps::NONE,
            module: Module::Compute,
        }));
        // The compute module is done with the windows before the store has even started.
        b.signal(Edge::COMPUTE_TO_LOAD);
        let computed = b.signal(Edge::COMPUTE_TO_STORE);
        b.wait(Edge::COMPUTE_TO_STORE, computed);
        b.emit(Instruction::Store(Dma {
            buffer: Buffer::Out,
            y_size: 1,
            x_size: 1,
            ..Dma::default()
        }));
        b.signal(Edge::STORE_TO_COMPUTE);
        b.drain();
        assert!(b.is_drained());
        b.emit(load());
        let p = b.finish();
        let know = known_at_start(&p);
        let last = p.len() - 1;
        assert_eq!(p[last].module(), Module::Load);
        assert!(
            know[last][Module::Store as usize] >= 1,
            "the load after the drain does not wait for the store: {p:#?}"
        );
    }

    #[test]
    fn second_signal_on_same_instruction_adds_a_sync() {
        let mut b = ProgramBuilder::new();
        b.emit(load());
        b.signal(Edge::LOAD_TO_COMPUTE);
        b.signal(Edge::LOAD_TO_COMPUTE);
        let p = b.finish();
        assert_eq!(p.len(), 2);
        assert!(
            matches!(p[1], Instruction::Sync(s) if s.module == Module::Load && s.deps.push_next)
        );
    }
}
