//! The random program generator against the functional model: valid programs complete, are
//! race-free under the token happens-before relation, and give the same result under any
//! token-respecting interleaving; invalid programs raise the promised fault.

use sinter_isa::insn::{Instruction, INSN_BYTES};
use sinter_isa::timing::neighbours;
use sinter_isa::{regs, Buffer, HwConfig};
use sinter_sim::func::FuncSim;
use sinter_sim::randprog::{generate, generate_invalid, Expected, GenOptions, RandProgram, Rng};
use sinter_sim::Npu;
use std::collections::HashSet;

const CONFIGS: [HwConfig; 3] = [
    HwConfig::SMALL,
    HwConfig::DEFAULT,
    HwConfig::with_array(4, 8),
];

fn run(p: &RandProgram) -> FuncSim {
    run_on(FuncSim::new(p.config, p.dram.len() as u64), p)
}

/// Loads `p` into `s` and runs it to the end.
fn run_on(mut s: FuncSim, p: &RandProgram) -> FuncSim {
    s.write_dram(0, &p.dram).unwrap();
    s.write_reg(regs::PROG_BASE, p.prog_base);
    s.write_reg(regs::PROG_LEN, p.prog_len());
    s.write_reg(regs::CONTROL, regs::CONTROL_START);
    s.advance(u64::MAX);
    s
}

#[test]
fn valid_programs_complete_and_are_deterministic() {
    for (cfg, opts) in CONFIGS
        .iter()
        .map(|c| (*c, GenOptions::for_config(c)))
        .chain([HwConfig::SMALL, HwConfig::DEFAULT].map(|c| (c, GenOptions::large(&c))))
    {
        let mut stats = [0usize; 5];
        for seed in 0..300 {
            let p = generate(&cfg, seed, &opts);
            assert_eq!(p.expected, Expected::Done);
            assert!(p.prog_len() as usize <= opts.max_insns, "seed {seed}");
            let again = generate(&cfg, seed, &opts);
            assert_eq!(p.words, again.words);
            assert_eq!(p.dram, again.dram);
            let mut s = run(&p);
            assert_eq!(
                s.read_reg(regs::STATUS),
                regs::STATUS_DONE,
                "seed {seed}: {:?}\n{}",
                s.diagnostic(),
                p.disassembly()
            );
            for i in p.instructions() {
                stats[i.opcode() as usize] += 1;
            }
        }
        // Every opcode shows up.
        assert!(stats.iter().all(|&n| n > 50), "{cfg}: {stats:?}");
    }
}

#[test]
fn invalid_programs_fault_where_promised() {
    for cfg in CONFIGS {
        let opts = GenOptions::for_config(&cfg);
        let mut codes = HashSet::new();
        for seed in 0..400 {
            let p = generate_invalid(&cfg, seed, &opts);
            let Expected::Fault { code, pc } = p.expected else {
                panic!("seed {seed}: not a fault")
            };
            codes.insert(code);
            let mut s = run(&p);
            let got = (
                s.read_reg(regs::STATUS),
                s.read_reg(regs::ERROR_CODE),
                s.read_reg(regs::ERROR_PC),
            );
            assert_eq!(
                got,
                (regs::STATUS_ERROR, code, pc),
                "seed {seed}: {:?}\n{}",
                s.diagnostic(),
                p.disassembly()
            );
        }
        assert_eq!(codes.len(), 4, "{codes:?}");
    }
}

// ---------------------------------------------------------------------------------------------
// Race freedom: every conflicting pair of accesses from two modules is ordered by tokens.
// ---------------------------------------------------------------------------------------------

/// Resources an instruction reads and writes, as (space, index) keys.
fn key(space: u64, index: u64) -> u64 {
    space << 48 | index
}

const DRAM: u64 = 4;

fn space(b: Buffer) -> u64 {
    b as u64
}

fn accesses(cfg: &HwConfig, insn: &Instruction) -> (HashSet<u64>, HashSet<u64>) {
    let mut r = HashSet::new();
    let mut w = HashSet::new();
    let dram = |d: &sinter_isa::Dma, set: &mut HashSet<u64>| {
        let e = cfg.element_bytes(d.buffer) as u64;
        for y in 0..d.y_size as u64 {
            for x in 0..d.x_size as u64 {
                let a = d.dram_base as u64 + y * d.y_stride as u64 + x * d.x_stride as u64;
                for b in a..a + e {
                    set.insert(key(DRAM, b));
                }
            }
        }
    };
    match insn {
        Instruction::Load(d) => {
            dram(d, &mut r);
            for row in d.sram_base as u32..d.sram_base as u32 + d.sram_rows() as u32 {
                w.insert(key(space(d.buffer), row as u64));
            }
        }
        Instruction::Store(d) => {
            dram(d, &mut w);
            for row in d.sram_base as u32..d.sram_base as u32 + d.sram_rows() as u32 {
                r.insert(key(space(Buffer::Out), row as u64));
            }
        }
        Instruction::Gemm(g) => {
            r.insert(key(space(Buffer::Wgt), g.wgt as u64));
            for o in 0..g.n_outer as u32 {
                for i in 0..g.n_inner as u32 {
                    r.insert(key(space(Buffer::Act), g.act.row(o, i) as u64));
                    r.insert(key(space(Buffer::Acc), g.acc.row(o, i) as u64));
                    w.insert(key(space(Buffer::Acc), g.acc.row(o, i) as u64));
                }
            }
        }
        Instruction::Vec(v) => {
            for p in 0..3 {
                r.insert(key(space(Buffer::Acc), v.param as u64 + p));
            }
            for o in 0..v.n_outer as u32 {
                for i in 0..v.n_inner as u32 {
                    r.insert(key(space(Buffer::Acc), v.src.row(o, i) as u64));
                    w.insert(key(space(Buffer::Out), v.dst.row(o, i) as u64));
                }
            }
        }
        Instruction::Sync(_) => {}
    }
    (r, w)
}

/// Vector clocks of the happens-before order the tokens and in-order modules create.
fn vector_clocks(program: &[Instruction]) -> Vec<[u32; 3]> {
    let mut last = [[0u32; 3]; 3];
    let mut pushes: [[Vec<[u32; 3]>; 3]; 3] = Default::default();
    let mut pops = [[0usize; 3]; 3];
    let mut out = Vec::new();
    for insn in program {
        let m = insn.module() as usize;
        let d = insn.deps();
        let (prev, next) = neighbours(insn.module());
        let mut vc = last[m];
        vc[m] += 1;
        for (flag, from) in [(d.pop_prev, prev), (d.pop_next, next)] {
            if let (true, Some(from)) = (flag, from) {
                let f = from as usize;
                let k = pops[f][m];
                pops[f][m] += 1;
                let at = pushes[f][m][k];
                for j in 0..3 {
                    vc[j] = vc[j].max(at[j]);
                }
            }
        }
        for (flag, to) in [(d.push_prev, prev), (d.push_next, next)] {
            if let (true, Some(to)) = (flag, to) {
                pushes[m][to as usize].push(vc);
            }
        }
        last[m] = vc;
        out.push(vc);
    }
    out
}

#[test]
fn valid_programs_are_race_free() {
    for (cfg, opts) in CONFIGS
        .iter()
        .map(|c| (*c, GenOptions::for_config(c)))
        .chain([HwConfig::SMALL, HwConfig::DEFAULT].map(|c| (c, GenOptions::large(&c))))
    {
        let seeds = if opts.max_insns > 64 { 25 } else { 150 };
        for seed in 0..seeds {
            let p = generate(&cfg, seed, &opts);
            let prog = p.instructions();
            let vcs = vector_clocks(&prog);
            let acc: Vec<_> = prog.iter().map(|i| accesses(&cfg, i)).collect();
            // Nothing writes the program.
            let words = p.prog_base as u64..p.prog_base as u64 + (prog.len() * INSN_BYTES) as u64;
            for (i, (_, w)) in acc.iter().enumerate() {
                assert!(
                    words.clone().all(|b| !w.contains(&key(DRAM, b))),
                    "seed {seed}: instruction {i} writes the program"
                );
            }
            for a in 0..prog.len() {
                for b in a + 1..prog.len() {
                    let (ma, mb) = (prog[a].module() as usize, prog[b].module() as usize);
                    if ma == mb || vcs[b][ma] >= vcs[a][ma] {
                        continue; // ordered: a happens before b
                    }
                    let (ra, wa) = &acc[a];
                    let (rb, wb) = &acc[b];
                    let conflict = wa.iter().any(|k| rb.contains(k) || wb.contains(k))
                        || wb.iter().any(|k| ra.contains(k));
                    assert!(
                        !conflict,
                        "{cfg} seed {seed}: instructions {a} and {b} race\n{}",
                        p.disassembly()
                    );
                }
            }
        }
    }
}

/// Runs the program one instruction at a time in a random order that respects tokens (each
/// instruction as its own one-instruction program, its token flags cleared).
fn run_interleaved(p: &RandProgram, rng: &mut Rng) -> Vec<u8> {
    let prog = p.instructions();
    let mut s = FuncSim::new(p.config, p.dram.len() as u64);
    s.write_dram(0, &p.dram).unwrap();
    let queues: Vec<Vec<usize>> = (0..3)
        .map(|m| {
            (0..prog.len())
                .filter(|&i| prog[i].module() as usize == m)
                .collect()
        })
        .collect();
    let mut head = [0usize; 3];
    let mut tokens = [[0u32; 3]; 3];
    loop {
        let ready: Vec<usize> = (0..3)
            .filter(|&m| {
                let Some(&i) = queues[m].get(head[m]) else {
                    return false;
                };
                let d = prog[i].deps();
                let (prev, next) = neighbours(prog[i].module());
                [(d.pop_prev, prev), (d.pop_next, next)]
                    .iter()
                    .all(|&(f, from)| !f || tokens[from.unwrap() as usize][m] > 0)
            })
            .collect();
        if ready.is_empty() {
            assert!(
                head.iter().zip(&queues).all(|(&h, q)| h == q.len()),
                "deadlock"
            );
            break;
        }
        let m = rng.pick(&ready);
        let i = queues[m][head[m]];
        head[m] += 1;
        let insn = prog[i];
        let d = insn.deps();
        let (prev, next) = neighbours(insn.module());
        for (f, from) in [(d.pop_prev, prev), (d.pop_next, next)] {
            if f {
                tokens[from.unwrap() as usize][m] -= 1;
            }
        }
        let mut bare = insn;
        *bare.deps_mut() = Default::default();
        let at = p.prog_base as u64 + (i * INSN_BYTES) as u64;
        s.write_dram(at, &bare.encode()).unwrap();
        s.write_reg(regs::PROG_BASE, at as u32);
        s.write_reg(regs::PROG_LEN, 1);
        s.write_reg(regs::CONTROL, regs::CONTROL_START);
        s.advance(u64::MAX);
        assert_eq!(s.read_reg(regs::STATUS), regs::STATUS_DONE);
        s.write_dram(at, &p.words[i]).unwrap();
        for (f, to) in [(d.push_prev, prev), (d.push_next, next)] {
            if f {
                tokens[m][to.unwrap() as usize] += 1;
            }
        }
    }
    s.dram().to_vec()
}

#[test]
fn any_token_respecting_order_gives_the_same_dram() {
    let mut rng = Rng::new(7);
    for (cfg, opts) in CONFIGS
        .iter()
        .map(|c| (*c, GenOptions::for_config(c)))
        .chain([HwConfig::SMALL, HwConfig::DEFAULT].map(|c| (c, GenOptions::large(&c))))
    {
        let seeds = if opts.max_insns > 64 { 15 } else { 60 };
        for seed in 0..seeds {
            let p = generate(&cfg, seed, &opts);
            let want = run(&p).dram().to_vec();
            for _ in 0..4 {
                let got = run_interleaved(&p, &mut rng);
                assert!(got == want, "{cfg} seed {seed}: interleaving changes DRAM");
            }
        }
    }
}

#[test]
fn programs_write_outputs() {
    // The outputs differ from the initial image in most programs (stores happen).
    let cfg = HwConfig::SMALL;
    let opts = GenOptions::for_config(&cfg);
    let changed = (0..100)
        .filter(|&seed| {
            let p = generate(&cfg, seed, &opts);
            run(&p).dram() != &p.dram[..]
        })
        .count();
    assert!(changed > 80, "{changed}");
}

#[test]
fn race_check_notices_missing_tokens() {
    // Without tokens, the same programs race: the check above is not vacuous.
    let cfg = HwConfig::SMALL;
    let opts = GenOptions::for_config(&cfg);
    let racy = (0..50)
        .filter(|&seed| {
            let mut prog = generate(&cfg, seed, &opts).instructions();
            for i in &mut prog {
                *i.deps_mut() = Default::default();
            }
            let vcs = vector_clocks(&prog);
            let acc: Vec<_> = prog.iter().map(|i| accesses(&cfg, i)).collect();
            (0..prog.len()).any(|a| {
                (a + 1..prog.len()).any(|b| {
                    let (ma, mb) = (prog[a].module() as usize, prog[b].module() as usize);
                    ma != mb
                        && vcs[b][ma] < vcs[a][ma]
                        && (acc[a]
                            .1
                            .iter()
                            .any(|k| acc[b].0.contains(k) || acc[b].1.contains(k))
                            || acc[b].1.iter().any(|k| acc[a].0.contains(k)))
                })
            })
        })
        .count();
    assert!(racy > 40, "{racy}");
}

/// Runs `p` on a model that batches compute instructions (`true`) or runs each at once, on a
/// pool of three threads, so that batches run in parallel whenever they can.
fn run_batching(p: &RandProgram, batching: bool) -> FuncSim {
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(3)
        .build()
        .unwrap();
    pool.install(|| {
        let s = FuncSim::new(p.config, p.dram.len() as u64).with_batching(batching);
        run_on(s, p)
    })
}

/// Everything a program can observe of the model after a run.
fn observed(s: &mut FuncSim) -> (Vec<u32>, Vec<u8>, [Vec<u8>; 4]) {
    let regs = [
        regs::STATUS,
        regs::ERROR_CODE,
        regs::ERROR_PC,
        regs::INSNS_DONE,
        regs::CYCLES_LO,
        regs::MAC_ACTIVE_LO,
    ]
    .map(|r| s.read_reg(r))
    .to_vec();
    let b = s.buffers();
    let bytes = |v: &[i8]| v.iter().map(|&x| x as u8).collect::<Vec<u8>>();
    let acc = b.acc.iter().flat_map(|v| v.to_le_bytes()).collect();
    let buffers = [bytes(b.act), bytes(b.wgt), acc, bytes(b.out)];
    (regs, s.dram().to_vec(), buffers)
}

#[test]
fn batched_and_parallel_runs_match_program_order() {
    for (cfg, opts) in CONFIGS
        .iter()
        .map(|c| (*c, GenOptions::for_config(c)))
        .chain([HwConfig::SMALL, HwConfig::DEFAULT].map(|c| (c, GenOptions::large(&c))))
    {
        for seed in 0..200 {
            for p in [
                generate(&cfg, seed, &opts),
                generate_invalid(&cfg, seed, &opts),
            ] {
                let want = observed(&mut run_batching(&p, false));
                let got = observed(&mut run_batching(&p, true));
                assert_eq!(want.0, got.0, "{cfg} seed {seed}: registers");
                assert!(want.1 == got.1, "{cfg} seed {seed}: DRAM differs");
                for (name, (w, g)) in ["act", "wgt", "acc", "out"]
                    .iter()
                    .zip(want.2.iter().zip(&got.2))
                {
                    assert!(
                        w == g,
                        "{cfg} seed {seed}: {name} buffer differs\n{}",
                        p.disassembly()
                    );
                }
            }
        }
    }
}
