//! Compute instructions held back until a DMA needs their results, then run as independent
//! chains in parallel, with K-reductions split over GEMMs fused into one.
//!
//! The NPU's compute module runs one small GEMM after another (16 input channels into 16
//! output channels over a few hundred pixels). One by one they are too small to share among
//! threads, and each pays an accumulator update per row. But a layer computes one block of
//! output channels after another — GEMMs into a range of accumulator rows, a requantization of
//! those rows into output rows, a store of the output rows — and the blocks depend on each
//! other only through the rows they reuse.
//!
//! # Chains and renaming
//!
//! Pending instructions form *chains*, in the order they started. Each chain works on private
//! copies of the accumulator rows and output rows it touches (its *spans*), and the stores in
//! it write DRAM bytes no other chain's stores touch. An instruction joins the chain whose span
//! holds the rows it uses; one that uses no pending rows starts a chain with copies of the
//! current rows. Like register renaming in a CPU, an instruction that overwrites every row of
//! a span — a GEMM that overwrites a dense walk, a requantization into a dense walk — starts a
//! *new version* of those rows in a new chain; an older chain whose span it covers is *sealed*
//! for that buffer (no later instruction joins it through those rows, and its copy is not
//! written back). Anything else that would span two chains first runs the batch.
//!
//! When the batch runs, the chains execute in parallel; then their unsealed copies are written
//! back and the elements their stores logged are written to DRAM, in chain order: each row gets
//! the value of its last writer in program order.
//!
//! # Overlapping batches with what follows
//!
//! A batch that has grown large is handed to another thread at the next store (the end of a
//! block of output channels) and the model goes on batching the next blocks — and running
//! their window loads — meanwhile. The batch on the other thread reads copies of the
//! activation rows its GEMMs use and writes only its own copies and logs, so it shares nothing
//! mutable with the model; an instruction that would read or write rows or DRAM bytes it will
//! write first waits for it and applies its results.
//!
//! # Why the reordering is exact
//!
//! A GEMM's weight tile and a requantization's parameters are taken when it joins, in program
//! order (after whatever writes the parameter rows has run), so later weight or parameter
//! loads cannot affect it. DMAs run at once, in program order. A load into activation rows a
//! pending GEMM reads first gives those GEMMs a copy of the rows; a load into accumulator rows
//! a chain holds, or from DRAM bytes a pending store writes, first runs the batch. Within a
//! chain, program order is kept; across chains, instructions touch disjoint private copies
//! and disjoint DRAM bytes. Every instruction therefore sees what it would in program order,
//! and after the batch the buffers and DRAM are the sequential ones. A run ends by running
//! what is pending.

use super::gemm::{self, Pairs};
use super::{exec, requant, State};
use rayon::prelude::*;
use sinter_isa::insn::{Dma, Gemm, GemmMode, Instruction, VecInsn, VecOp, Walk};
use sinter_isa::{Buffer, DramRegion, HwConfig};
use std::sync::Arc;

/// Smallest batch (in MACs) worth spreading over threads.
const PAR_MACS: usize = 1 << 18;
/// Batch size (in MACs) from which a batch is handed to another thread at the next store,
/// while this one goes on with the next instructions.
const DISPATCH_MACS: usize = 1 << 24;

/// Rows (or bytes) `lo..hi`; empty when `lo >= hi`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Span {
    lo: usize,
    hi: usize,
}

impl Span {
    const EMPTY: Span = Span {
        lo: usize::MAX,
        hi: 0,
    };

    /// The rows an `n_outer × n_inner` walk touches, as a bounding range.
    fn of(w: &Walk, n_outer: u16, n_inner: u16) -> Span {
        Span {
            lo: w.base as usize,
            hi: w.max_row(n_outer, n_inner) as usize + 1,
        }
    }

    fn overlaps(self, o: Span) -> bool {
        self.lo < o.hi && o.lo < self.hi
    }

    fn contains(self, o: Span) -> bool {
        self.lo <= o.lo && o.hi <= self.hi
    }

    fn union(self, o: Span) -> Span {
        Span {
            lo: self.lo.min(o.lo),
            hi: self.hi.max(o.hi),
        }
    }

    fn len(self) -> usize {
        self.hi.saturating_sub(self.lo)
    }
}

/// A pending instruction with what it took from the buffers when it joined.
enum Item {
    /// A GEMM, its packed weights, and the activation rows it reads when a load has since
    /// overwritten them (else it reads the buffer).
    Gemm(Gemm, Arc<Pairs>, Option<Arc<Snapshot>>),
    /// A requantization and its parameter rows (bias, multiplier, shift).
    Requant(VecInsn, Box<[i32]>),
    Store(Dma),
}

/// Activation rows `lo..` as they were before a load overwrote them.
struct Snapshot {
    lo: usize,
    rows: Vec<i8>,
}

/// A chain's rows of one buffer: their span and its private copy.
struct Rows<T> {
    span: Span,
    copy: Vec<T>,
    /// A newer chain holds a newer version of every row of the span.
    sealed: bool,
}

impl<T: Copy + Default> Rows<T> {
    fn none() -> Self {
        Rows {
            span: Span::EMPTY,
            copy: Vec::new(),
            sealed: false,
        }
    }

    /// The rows `span` of `buf` (`cols` lanes each), copied unless `fresh` (the first
    /// instruction writes them all), in a vector from `spare`.
    fn take(buf: &[T], span: Span, cols: usize, fresh: bool, spare: &mut Vec<Vec<T>>) -> Self {
        let mut copy = spare.pop().unwrap_or_default();
        copy.clear();
        if fresh {
            copy.resize(span.len() * cols, T::default());
        } else {
            copy.extend_from_slice(&buf[span.lo * cols..span.hi * cols]);
        }
        Rows {
            span,
            copy,
            sealed: false,
        }
    }

    fn write_back(&self, buf: &mut [T], cols: usize) {
        if !self.sealed && self.span.len() > 0 {
            buf[self.span.lo * cols..self.span.hi * cols].copy_from_slice(&self.copy);
        }
    }
}

/// Pending instructions that share rows, in program order.
struct Chain {
    items: Vec<Item>,
    acc: Rows<i32>,
    out: Rows<i8>,
    /// What the chain's stores write.
    stores: Vec<DramRegion>,
    /// The elements they wrote, with their DRAM addresses, for the DRAM once the chain ran.
    written: Vec<usize>,
    written_bytes: Vec<u8>,
}

/// Which chain holds a span of rows.
enum Owner {
    /// No pending instruction touches the rows.
    Free,
    Chain(usize),
    /// Rows of more than one chain, or more than the chain holds.
    Split,
}

/// A batch running on another thread: where its results will go.
struct Inflight {
    done: std::sync::mpsc::Receiver<Vec<Chain>>,
    /// Accumulator and output rows its chains hold (bounding ranges).
    acc: Span,
    out: Span,
    /// What its stores write.
    regions: Vec<DramRegion>,
}

/// The pending instructions of a run.
pub(crate) struct Batch {
    chains: Vec<Chain>,
    /// Activation rows pending GEMMs read from the buffer.
    act_reads: Span,
    /// Those GEMMs, as (chain, item) indices.
    act_readers: Vec<(usize, usize)>,
    /// Copies of activation rows pending GEMMs read.
    snapshots: Vec<Arc<Snapshot>>,
    macs: usize,
    /// The chain the last compute instruction joined: the next one usually joins it too.
    last: Option<usize>,
    /// Vectors of finished chains, for the next ones (a layer starts thousands of chains).
    spare: Spare,
    /// Hold compute instructions back; else run every instruction at once.
    batched: bool,
    /// Smallest batch (in MACs) run in parallel.
    par_macs: usize,
    /// Smallest batch (in MACs) handed to another thread at a store.
    dispatch_macs: usize,
    inflight: Option<Inflight>,
}

#[derive(Default)]
struct Spare {
    acc: Vec<Vec<i32>>,
    out: Vec<Vec<i8>>,
    act: Vec<Vec<i8>>,
    items: Vec<Vec<Item>>,
}

impl Default for Batch {
    fn default() -> Self {
        Batch {
            chains: Vec::new(),
            act_reads: Span::EMPTY,
            act_readers: Vec::new(),
            snapshots: Vec::new(),
            macs: 0,
            last: None,
            spare: Spare::default(),
            batched: true,
            par_macs: PAR_MACS,
            dispatch_macs: DISPATCH_MACS,
            inflight: None,
        }
    }
}

impl Batch {
    /// Executes `insn`, which has passed [`Instruction::validate`], or holds it back. Fails
    /// (without side effects) only when a DMA reaches past the end of the DRAM.
    pub(crate) fn step(&mut self, st: &mut State, insn: &Instruction) -> Result<(), String> {
        if !self.batched {
            return run_now(st, insn);
        }
        match insn {
            Instruction::Gemm(g) => {
                self.gemm(st, g);
                Ok(())
            }
            Instruction::Vec(v) => {
                match v.op {
                    VecOp::Requant => self.requant(st, v),
                }
                Ok(())
            }
            Instruction::Load(d) => {
                let region = DramRegion::of(d, st.cfg.element_bytes(d.buffer));
                if self.load_conflicts(d, &region) {
                    self.flush(st);
                } else if d.buffer == Buffer::Act && self.act_reads.overlaps(load_rows(d)) {
                    self.snapshot_act(st);
                }
                if d.buffer == Buffer::Acc {
                    self.settle_acc(st, load_rows(d));
                }
                self.settle_dram(st, &region);
                exec::load(st, d)
            }
            Instruction::Store(d) => self.store(st, d),
            Instruction::Sync(_) => Ok(()),
        }
    }

    fn gemm(&mut self, st: &mut State, g: &Gemm) {
        let w = gemm::packed(st, g.wgt);
        let cols = st.cfg.cols as usize;
        let acc = Span::of(&g.acc, g.n_outer, g.n_inner);
        let renames = g.mode == GemmMode::Overwrite && g.acc.covers(g.n_outer, g.n_inner);
        let chain = if renames {
            self.renaming(st, acc, |c| &mut c.acc);
            self.start(st, acc, true, Span::EMPTY)
        } else {
            match self.acc_owner(acc) {
                Owner::Chain(k) => k,
                Owner::Free => self.start(st, acc, false, Span::EMPTY),
                Owner::Split => {
                    self.flush(st);
                    self.start(st, acc, false, Span::EMPTY)
                }
            }
        };
        self.act_reads = self.act_reads.union(Span::of(&g.act, g.n_outer, g.n_inner));
        self.macs += (g.n_outer as usize * g.n_inner as usize) * (st.cfg.rows as usize * cols);
        let items = &mut self.chains[chain].items;
        self.act_readers.push((chain, items.len()));
        items.push(Item::Gemm(*g, w, None));
        self.last = Some(chain);
    }

    fn requant(&mut self, st: &mut State, v: &VecInsn) {
        let cols = st.cfg.cols as usize;
        // The parameters are read now: first run whatever writes them.
        let param_rows = Span {
            lo: v.param as usize,
            hi: v.param as usize + 3,
        };
        if self.chains.iter().any(|c| c.acc.span.overlaps(param_rows)) {
            self.flush(st);
        }
        self.settle_acc(st, param_rows);
        let p = v.param as usize * cols;
        let params: Box<[i32]> = st.acc[p..p + 3 * cols].into();
        let src = Span::of(&v.src, v.n_outer, v.n_inner);
        let dst = Span::of(&v.dst, v.n_outer, v.n_inner);
        let fresh = v.dst.covers(v.n_outer, v.n_inner);
        let chain = loop {
            let k = match self.acc_owner(src) {
                Owner::Chain(k) => k,
                Owner::Free => {
                    if !self.out_ready(dst, fresh) {
                        self.flush(st);
                    }
                    self.renaming(st, dst, |c| &mut c.out);
                    break self.start(st, src, false, dst);
                }
                Owner::Split => {
                    self.flush(st);
                    continue;
                }
            };
            let c = &self.chains[k];
            // Into the chain's own output rows, or new rows no one else holds (or whose
            // holders it overwrites entirely).
            if c.out.span.contains(dst) && !c.out.sealed {
                break k;
            }
            if c.out.span.len() == 0 && self.out_ready(dst, fresh) {
                self.renaming(st, dst, |c| &mut c.out);
                if !fresh {
                    self.settle_out(st, dst);
                }
                self.chains[k].out = Rows::take(&st.out, dst, cols, fresh, &mut self.spare.out);
                break k;
            }
            self.flush(st);
        };
        self.chains[chain].items.push(Item::Requant(*v, params));
        self.last = Some(chain);
    }

    /// Holds compute instructions back (`true`) or runs every instruction at once; `eager`
    /// runs every batch of two or more chains in parallel and hands every batch to another
    /// thread at the first chance, however small (else only batches large enough to gain
    /// from it). Only between runs.
    pub(crate) fn configure(&mut self, batched: bool, eager: bool) {
        debug_assert!(self.chains.is_empty() && self.inflight.is_none());
        self.batched = batched;
        (self.par_macs, self.dispatch_macs) = if eager {
            (0, 0)
        } else {
            (PAR_MACS, DISPATCH_MACS)
        };
    }

    /// Whether output rows `dst` can become a new version: no chain holds them, or the new
    /// writer overwrites all of them and every chain holding some holds only those.
    fn out_ready(&self, dst: Span, fresh: bool) -> bool {
        self.chains.iter().all(|c| {
            c.out.sealed || !c.out.span.overlaps(dst) || (fresh && dst.contains(c.out.span))
        })
    }

    fn store(&mut self, st: &mut State, d: &Dma) -> Result<(), String> {
        let rows = Span {
            lo: d.sram_base as usize,
            hi: d.sram_base as usize + d.y_size as usize * d.x_size as usize,
        };
        let owner = owner(&self.chains, rows, |c| &c.out);
        if matches!(owner, Owner::Split) {
            self.flush(st);
        }
        if let Err(e) = exec::note_store(st, d) {
            self.flush(st);
            return Err(e);
        }
        let elem = st.cfg.element_bytes(Buffer::Out) as usize;
        let region = DramRegion::of(d, elem as u32);
        let apart = |chains: &[Chain], k: Option<usize>| {
            chains
                .iter()
                .enumerate()
                .all(|(j, c)| Some(j) == k || c.stores.iter().all(|r| r.apart(&region)))
        };
        if let Owner::Chain(k) = owner {
            if apart(&self.chains, Some(k)) {
                self.settle_dram(st, &region);
                let c = &mut self.chains[k];
                c.stores.push(region);
                c.items.push(Item::Store(*d));
                if self.macs >= self.dispatch_macs {
                    self.dispatch(st);
                }
                return Ok(());
            }
            self.flush(st);
        } else if !apart(&self.chains, None) {
            self.flush(st);
        }
        self.settle_out(st, rows);
        self.settle_dram(st, &region);
        let out = &st.out[d.sram_base as usize * elem..];
        let dram = &mut st.dram;
        exec::store_elements(d, elem, out, |a, e| {
            exec::copy_element(&mut dram[a..a + e.len()], e)
        });
        Ok(())
    }

    /// Gives the pending GEMMs that read activation rows from the buffer a copy of those rows
    /// to read instead, so that a load may overwrite them: in a layer whose windows do not all
    /// fit on chip, every block of output channels reloads them into the same rows.
    fn snapshot_act(&mut self, st: &State) {
        let r = st.cfg.rows as usize;
        let span = self.act_reads;
        let mut rows = self.spare.act.pop().unwrap_or_default();
        rows.clear();
        rows.extend_from_slice(&st.act[span.lo * r..span.hi * r]);
        let snap = Arc::new(Snapshot { lo: span.lo, rows });
        self.snapshots.push(snap.clone());
        for (c, i) in self.act_readers.drain(..) {
            if let Item::Gemm(_, _, act) = &mut self.chains[c].items[i] {
                *act = Some(snap.clone());
            }
        }
        self.act_reads = Span::EMPTY;
    }

    /// Whether load `d` writes accumulator rows a chain holds or reads DRAM bytes a pending
    /// store writes.
    fn load_conflicts(&self, d: &Dma, region: &DramRegion) -> bool {
        // Activation rows are handled by `snapshot_act`; pending GEMMs hold their packed
        // weight tiles, and nothing else reads weights.
        let rows_used = d.buffer == Buffer::Acc
            && self
                .chains
                .iter()
                .any(|c| c.acc.span.overlaps(load_rows(d)));
        rows_used
            || self
                .chains
                .iter()
                .any(|c| c.stores.iter().any(|r| !r.apart(region)))
    }

    /// Seals, for the buffer `rows` picks, every chain whose rows `span` covers: a new
    /// version of those rows is starting.
    fn renaming<T>(
        &mut self,
        st: &mut State,
        span: Span,
        rows: impl Fn(&mut Chain) -> &mut Rows<T>,
    ) {
        let split = self.chains.iter_mut().any(|c| {
            let r = rows(c);
            !r.sealed && r.span.overlaps(span) && !span.contains(r.span)
        });
        if split {
            self.flush(st);
            return;
        }
        for c in &mut self.chains {
            let r = rows(c);
            if r.span.overlaps(span) {
                r.sealed = true;
            }
        }
    }

    /// Starts a chain holding accumulator rows `acc` (not copied when `fresh`) and output rows
    /// `out`, and returns its index.
    fn start(&mut self, st: &mut State, acc: Span, fresh: bool, out: Span) -> usize {
        let cols = st.cfg.cols as usize;
        if !fresh {
            self.settle_acc(st, acc);
        }
        if out.len() > 0 {
            self.settle_out(st, out);
        }
        let out = if out.len() > 0 {
            Rows::take(&st.out, out, cols, false, &mut self.spare.out)
        } else {
            Rows::none()
        };
        let mut items = self.spare.items.pop().unwrap_or_default();
        items.clear();
        self.chains.push(Chain {
            items,
            acc: Rows::take(&st.acc, acc, cols, fresh, &mut self.spare.acc),
            out,
            stores: Vec::new(),
            written: Vec::new(),
            written_bytes: Vec::new(),
        });
        self.chains.len() - 1
    }

    /// Runs every pending instruction, here or on another thread.
    pub(crate) fn flush(&mut self, st: &mut State) {
        self.join(st);
        let mut chains = self.take_chains();
        if chains.is_empty() {
            return;
        }
        let parallel =
            chains.len() > 1 && self.macs >= self.par_macs && rayon::current_num_threads() > 1;
        self.macs = 0;
        let cfg = st.cfg;
        let elem = cfg.element_bytes(Buffer::Out) as usize;
        let act = &st.act;
        if parallel {
            chains
                .par_iter_mut()
                .for_each(|c| run_chain(&cfg, c, act, elem, false));
        } else {
            for c in &mut chains {
                run_chain(&cfg, c, act, elem, true);
            }
        }
        self.finish(st, chains);
    }

    /// Starts running the pending instructions on another thread and goes on with an empty
    /// batch: the next block of output channels is batched while this one computes. Until
    /// the batch has finished ([`Batch::join`]), instructions that touch its rows or DRAM
    /// bytes wait for it.
    fn dispatch(&mut self, st: &mut State) {
        self.join(st);
        if rayon::current_num_threads() < 2 || self.chains.is_empty() {
            return self.flush(st);
        }
        // The chains run on copies of what they read, so loads may go on.
        if !self.act_readers.is_empty() {
            self.snapshot_act(st);
        }
        let mut chains = self.take_chains();
        self.macs = 0;
        let mut acc = Span::EMPTY;
        let mut out = Span::EMPTY;
        let mut regions = Vec::new();
        for c in &chains {
            acc = acc.union(c.acc.span);
            out = out.union(c.out.span);
            regions.extend_from_slice(&c.stores);
        }
        let cfg = st.cfg;
        let elem = cfg.element_bytes(Buffer::Out) as usize;
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        rayon::spawn(move || {
            chains
                .par_iter_mut()
                .for_each(|c| run_chain(&cfg, c, &[], elem, false));
            // The receiver is gone only if the model was dropped mid-run.
            let _ = tx.send(chains);
        });
        self.inflight = Some(Inflight {
            done: rx,
            acc,
            out,
            regions,
        });
    }

    /// Waits for the batch running on another thread, helping with its work meanwhile, and
    /// applies its results.
    fn join(&mut self, st: &mut State) {
        let Some(f) = self.inflight.take() else {
            return;
        };
        let chains = loop {
            match f.done.try_recv() {
                Ok(chains) => break chains,
                Err(std::sync::mpsc::TryRecvError::Empty) => {
                    if rayon::yield_now() != Some(rayon::Yield::Executed) {
                        std::thread::yield_now();
                    }
                }
                Err(std::sync::mpsc::TryRecvError::Disconnected) => {
                    panic!("a batch of NPU instructions failed on a worker thread")
                }
            }
        };
        self.finish(st, chains);
    }

    /// Waits for the batch on another thread if it holds accumulator rows `span`.
    fn settle_acc(&mut self, st: &mut State, span: Span) {
        if self.inflight.as_ref().is_some_and(|f| f.acc.overlaps(span)) {
            self.join(st);
        }
    }

    /// Waits for the batch on another thread if it holds output rows `span`.
    fn settle_out(&mut self, st: &mut State, span: Span) {
        if self.inflight.as_ref().is_some_and(|f| f.out.overlaps(span)) {
            self.join(st);
        }
    }

    /// Waits for the batch on another thread if it may write a byte of `region`.
    fn settle_dram(&mut self, st: &mut State, region: &DramRegion) {
        let touches = |f: &Inflight| f.regions.iter().any(|r| !r.apart(region));
        if self.inflight.as_ref().is_some_and(touches) {
            self.join(st);
        }
    }

    /// The pending chains, leaving an empty batch.
    fn take_chains(&mut self) -> Vec<Chain> {
        self.act_reads = Span::EMPTY;
        self.act_readers.clear();
        self.last = None;
        std::mem::take(&mut self.chains)
    }

    /// Writes what finished chains computed into the buffers and DRAM, in chain order, and
    /// keeps their vectors for the next chains.
    fn finish(&mut self, st: &mut State, chains: Vec<Chain>) {
        let cols = st.cfg.cols as usize;
        let elem = st.cfg.element_bytes(Buffer::Out) as usize;
        for mut c in chains {
            c.acc.write_back(&mut st.acc, cols);
            c.out.write_back(&mut st.out, cols);
            for (&a, e) in c.written.iter().zip(c.written_bytes.chunks_exact(elem)) {
                exec::copy_element(&mut st.dram[a..a + elem], e);
            }
            c.items.clear();
            self.spare.items.push(c.items);
            self.spare.acc.push(c.acc.copy);
            self.spare.out.push(c.out.copy);
        }
        // Copies no pending GEMM reads any more go back to the spares.
        for snap in std::mem::take(&mut self.snapshots) {
            match Arc::try_unwrap(snap) {
                Ok(s) => self.spare.act.push(s.rows),
                Err(snap) => self.snapshots.push(snap),
            }
        }
    }

    /// Which chain holds accumulator rows `span`.
    fn acc_owner(&self, span: Span) -> Owner {
        // Unsealed chains hold disjoint rows, so the last one used is the owner if it holds
        // them all.
        if let Some(k) = self.last {
            let r = &self.chains[k].acc;
            if !r.sealed && r.span.contains(span) {
                return Owner::Chain(k);
            }
        }
        owner(&self.chains, span, |c| &c.acc)
    }
}

/// Runs `insn` at once, as [`Batch::step`] without batching.
fn run_now(st: &mut State, insn: &Instruction) -> Result<(), String> {
    let cols = st.cfg.cols as usize;
    match insn {
        Instruction::Gemm(g) => {
            let w = gemm::packed(st, g.wgt);
            gemm::run(&st.cfg, &[(*g, w)], &st.act, &mut st.acc, true);
        }
        Instruction::Vec(v) => match v.op {
            VecOp::Requant => {
                let p = v.param as usize * cols;
                let (acc, out) = (&st.acc, &mut st.out);
                requant_rows(v, &acc[p..p + 3 * cols], acc, out, 0, 0, cols);
            }
        },
        Instruction::Load(d) => exec::load(st, d)?,
        Instruction::Store(d) => {
            exec::note_store(st, d)?;
            let elem = st.cfg.element_bytes(Buffer::Out) as usize;
            let out = &st.out[d.sram_base as usize * elem..];
            let dram = &mut st.dram;
            exec::store_elements(d, elem, out, |a, e| {
                exec::copy_element(&mut dram[a..a + e.len()], e)
            });
        }
        Instruction::Sync(_) => {}
    }
    Ok(())
}

/// Requantizes the rows of `v` with `params` (bias, multiplier, shift), where `acc` holds
/// accumulator rows from `acc_lo` on and `out` output rows from `out_lo` on.
fn requant_rows(
    v: &VecInsn,
    params: &[i32],
    acc: &[i32],
    out: &mut [i8],
    acc_lo: usize,
    out_lo: usize,
    cols: usize,
) {
    let (bias, rest) = params.split_at(cols);
    let (mult, shift) = rest.split_at(cols);
    let params = requant::Params {
        bias,
        mult,
        shift,
        zero_point: v.zero_point,
        lo: v.clamp_lo,
        hi: v.clamp_hi,
    };
    let (src, dst) = (rebased(&v.src, acc_lo), rebased(&v.dst, out_lo));
    for o in 0..v.n_outer as u32 {
        for i in 0..v.n_inner as u32 {
            let s = src.row(o, i) as usize * cols;
            let d = dst.row(o, i) as usize * cols;
            requant::row(&params, &acc[s..s + cols], &mut out[d..d + cols]);
        }
    }
}

/// The on-chip rows load `d` writes.
fn load_rows(d: &Dma) -> Span {
    Span {
        lo: d.sram_base as usize,
        hi: d.sram_base as usize + d.sram_rows() as usize,
    }
}

/// Which chain holds rows `span` of the buffer `rows` picks.
fn owner<T>(chains: &[Chain], span: Span, rows: impl Fn(&Chain) -> &Rows<T>) -> Owner {
    let mut found = Owner::Free;
    for (k, c) in chains.iter().enumerate() {
        let r = rows(c);
        if r.sealed || !r.span.overlaps(span) {
            continue;
        }
        if !r.span.contains(span) || !matches!(found, Owner::Free) {
            return Owner::Split;
        }
        found = Owner::Chain(k);
    }
    found
}

/// A walk moved down by `lo` rows (its rows are all at least `lo`).
fn rebased(w: &Walk, lo: usize) -> Walk {
    Walk {
        base: (w.base as usize - lo) as u16,
        ..*w
    }
}

/// Runs one chain's instructions in order on its private rows; its stores write `dram`.
fn run_chain(cfg: &HwConfig, c: &mut Chain, act: &[i8], elem: usize, parallel: bool) {
    let cols = cfg.cols as usize;
    let (acc_lo, out_lo) = (c.acc.span.lo, c.out.span.lo);
    let acc = &mut c.acc.copy[..];
    let out = &mut c.out.copy[..];
    // GEMMs that run as one, and the activation rows they read (from row 0 on).
    let mut group: Vec<(Gemm, Arc<Pairs>)> = Vec::new();
    let mut group_act: &[i8] = act;
    let run_group = |group: &mut Vec<(Gemm, Arc<Pairs>)>, act: &[i8], acc: &mut [i32]| {
        if !group.is_empty() {
            gemm::run(cfg, group, act, acc, parallel);
            group.clear();
        }
    };
    for item in &c.items {
        match item {
            Item::Gemm(g, w, snap) => {
                let (rows, act_walk) = match snap {
                    Some(s) => (&s.rows[..], rebased(&g.act, s.lo)),
                    None => (act, g.act),
                };
                let g = Gemm {
                    acc: rebased(&g.acc, acc_lo),
                    act: act_walk,
                    ..*g
                };
                if let Some((first, _)) = group.first() {
                    if !gemm::fusable(first, &g) || !std::ptr::eq(rows, group_act) {
                        run_group(&mut group, group_act, acc);
                    }
                }
                group_act = rows;
                group.push((g, w.clone()));
            }
            Item::Requant(v, params) => {
                run_group(&mut group, group_act, acc);
                requant_rows(v, params, acc, out, acc_lo, out_lo, cols);
            }
            Item::Store(d) => {
                run_group(&mut group, group_act, acc);
                let rows = &out[(d.sram_base as usize - out_lo) * elem..];
                let (written, bytes) = (&mut c.written, &mut c.written_bytes);
                exec::store_elements(d, elem, rows, |a, e| {
                    written.push(a);
                    bytes.extend_from_slice(e);
                });
            }
        }
    }
    run_group(&mut group, group_act, acc);
}
