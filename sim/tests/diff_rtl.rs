//! Differential test: seeded random programs on the functional model and on the RTL must leave
//! identical DRAM and identical STATUS / ERROR_CODE / ERROR_PC / INSNS_DONE / MAC_ACTIVE.
//!
//! Valid programs are race-free (see `sinter_sim::randprog`), so they have exactly one correct
//! result however the RTL's modules overlap; a quarter of them run with random backpressure and
//! read gaps on the RTL's memory port and a random memory latency, to vary that overlap.
//! Invalid programs must stop with the same error code at the same instruction.
//!
//! Environment: `SINTER_DIFF_SEED=<n>` runs only that seed (valid and invalid, both arrays) and
//! prints its listing; `SINTER_DIFF_SCALE=<f>` multiplies the number of programs.

use sinter_isa::{regs, timing, HwConfig};
use sinter_sim::func::FuncSim;
use sinter_sim::randprog::{generate, generate_invalid, Expected, GenOptions, RandProgram, Rng};
use sinter_sim::rtl::RtlSim;
use sinter_sim::Npu;
use std::fmt::Write as _;

/// Programs per array size: (valid, invalid).
const SMALL_COUNT: (u64, u64) = (7000, 2000);
const DEFAULT_COUNT: (u64, u64) = (6000, 2000);
/// At most this many mismatches are printed in full.
const MAX_REPORTS: usize = 5;

/// The state a run leaves behind that both simulators must agree on.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Outcome {
    status: u32,
    error_code: u32,
    error_pc: u32,
    insns_done: u32,
    mac_active: u64,
}

fn run(npu: &mut dyn Npu, p: &RandProgram, budget: u64) -> (Outcome, u64) {
    npu.write_reg(regs::CONTROL, regs::CONTROL_RESET);
    npu.write_dram(0, &p.dram).unwrap();
    npu.write_reg(regs::PROG_BASE, p.prog_base);
    npu.write_reg(regs::PROG_LEN, p.prog_len());
    npu.write_reg(regs::CONTROL, regs::CONTROL_START);
    let mut spent = 0;
    while spent < budget && npu.read_reg(regs::STATUS) & regs::STATUS_BUSY != 0 {
        let n = npu.advance(budget - spent);
        if n == 0 {
            break;
        }
        spent += n;
    }
    let mac =
        npu.read_reg(regs::MAC_ACTIVE_LO) as u64 | (npu.read_reg(regs::MAC_ACTIVE_HI) as u64) << 32;
    let cycles =
        npu.read_reg(regs::CYCLES_LO) as u64 | (npu.read_reg(regs::CYCLES_HI) as u64) << 32;
    let outcome = Outcome {
        status: npu.read_reg(regs::STATUS),
        error_code: npu.read_reg(regs::ERROR_CODE),
        error_pc: npu.read_reg(regs::ERROR_PC),
        insns_done: npu.read_reg(regs::INSNS_DONE),
        mac_active: mac,
    };
    (outcome, cycles)
}

/// Where an address lies in the generated layout.
fn region(p: &RandProgram, addr: usize) -> String {
    let a = addr as u32;
    let prog_end = p.prog_base + p.words.len() as u32 * 32;
    if (p.prog_base..prog_end).contains(&a) {
        format!("instruction {}", (a - p.prog_base) / 32)
    } else if p.input.contains(&a) {
        format!("input + {:#x}", a - p.input.start)
    } else if p.output.contains(&a) {
        format!("output + {:#x}", a - p.output.start)
    } else {
        "outside every region".into()
    }
}

struct Harness {
    cfg: HwConfig,
    opts: GenOptions,
    func: FuncSim,
    rtl: RtlSim,
    failures: usize,
    report: String,
    /// Σ RTL cycles and Σ predicted cycles of valid programs, for the summary.
    rtl_cycles: u64,
    est_cycles: u64,
    rng: Rng,
}

impl Harness {
    fn new(cfg: HwConfig) -> Harness {
        let opts = GenOptions::large(&cfg);
        let rtl = RtlSim::new(cfg, opts.dram_bytes).unwrap_or_else(|e| panic!("{e}"));
        Harness {
            cfg,
            opts,
            func: FuncSim::new(cfg, opts.dram_bytes),
            rtl,
            failures: 0,
            report: String::new(),
            rtl_cycles: 0,
            est_cycles: 0,
            rng: Rng::new(cfg.rows as u64),
        }
    }

    fn check(&mut self, p: &RandProgram) {
        let est = timing::estimate(&self.cfg, &Default::default(), &p.instructions()).total_cycles;
        let budget = 50 * est + 200_000;
        let (want, _) = run(&mut self.func, p, u64::MAX);
        let stressed = self.rng.chance(25);
        self.rtl.set_stress(stressed.then(|| self.rng.next_u64()));
        self.rtl.set_mem_latency(if stressed {
            self.rng.range(1, 40) as u32
        } else {
            timing::TimingParams::default().mem_latency
        });
        let (got, cycles) = run(&mut self.rtl, p, budget);
        let mut problems = Vec::new();
        let expect = match p.expected {
            Expected::Done => (regs::STATUS_DONE, regs::ERR_NONE, 0),
            Expected::Fault { code, pc } => (regs::STATUS_ERROR, code, pc),
        };
        if (want.status, want.error_code, want.error_pc) != expect {
            problems.push(format!(
                "functional model disagrees with the generator: {want:?}, expected {expect:?} ({:?})",
                self.func.diagnostic()
            ));
        }
        if got.status & regs::STATUS_BUSY != 0 {
            problems.push(format!("RTL still busy after {budget} cycles (hung?)"));
        }
        let same = match p.expected {
            Expected::Done => got == want,
            // After a fault only the error report is defined.
            Expected::Fault { .. } => {
                (got.status, got.error_code, got.error_pc)
                    == (want.status, want.error_code, want.error_pc)
            }
        };
        if !same {
            problems.push(format!(
                "registers differ:\n  func {want:?}\n  rtl  {got:?}"
            ));
        }
        if let Some(e) = self.rtl.take_fault() {
            problems.push(format!("RTL accessed DRAM out of range: {e}"));
        }
        if p.expected == Expected::Done {
            let f = self.func.dram();
            let mut r = vec![0u8; f.len()];
            self.rtl.read_dram(0, &mut r).unwrap();
            if let Some(i) = (0..f.len()).find(|&i| f[i] != r[i]) {
                let n = (0..f.len()).filter(|&i| f[i] != r[i]).count();
                problems.push(format!(
                    "DRAM differs in {n} bytes; first at {i:#x} ({}): func {:#04x}, rtl {:#04x}, \
                     initial {:#04x}",
                    region(p, i),
                    f[i],
                    r[i],
                    p.dram[i]
                ));
            }
            self.rtl_cycles += cycles;
            self.est_cycles += est;
        }
        if !problems.is_empty() {
            self.failures += 1;
            if self.failures <= MAX_REPORTS {
                let _ = writeln!(
                    self.report,
                    "\n=== {} seed {} ({:?}, stress {stressed}) ===\n{}\n{}",
                    self.cfg,
                    p.seed,
                    p.expected,
                    problems.join("\n"),
                    p.disassembly()
                );
            }
        }
    }

    fn finish(self, what: &str, n: u64) {
        if self.est_cycles > 0 {
            eprintln!(
                "{what} on {}: {n} programs, RTL {} cycles vs predicted {} ({:.2}x)",
                self.cfg,
                self.rtl_cycles,
                self.est_cycles,
                self.rtl_cycles as f64 / self.est_cycles as f64
            );
        }
        assert!(
            self.failures == 0,
            "{what} on {}: {} of {n} programs differ{}{}",
            self.cfg,
            self.failures,
            if self.failures > MAX_REPORTS {
                " (first ones shown)"
            } else {
                ""
            },
            self.report
        );
    }
}

fn scaled(n: u64) -> u64 {
    let scale: f64 = std::env::var("SINTER_DIFF_SCALE")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1.0);
    ((n as f64 * scale).round() as u64).max(1)
}

fn only_seed() -> Option<u64> {
    std::env::var("SINTER_DIFF_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
}

fn diff(cfg: HwConfig, valid: bool, count: u64, seed_base: u64) {
    let mut h = Harness::new(cfg);
    let seeds: Vec<u64> = match only_seed() {
        Some(s) => vec![s],
        None => (0..scaled(count)).map(|i| seed_base + i).collect(),
    };
    for &seed in &seeds {
        let p = if valid {
            generate(&cfg, seed, &h.opts)
        } else {
            generate_invalid(&cfg, seed, &h.opts)
        };
        if only_seed().is_some() {
            eprintln!("{cfg} seed {seed} {:?}\n{}", p.expected, p.disassembly());
        }
        h.check(&p);
    }
    let what = if valid { "valid" } else { "invalid" };
    h.finish(what, seeds.len() as u64);
}

#[test]
fn valid_programs_small() {
    diff(HwConfig::SMALL, true, SMALL_COUNT.0, 1_000_000);
}

#[test]
fn valid_programs_default() {
    diff(HwConfig::DEFAULT, true, DEFAULT_COUNT.0, 2_000_000);
}

#[test]
fn invalid_programs_small() {
    diff(HwConfig::SMALL, false, SMALL_COUNT.1, 3_000_000);
}

#[test]
fn invalid_programs_default() {
    diff(HwConfig::DEFAULT, false, DEFAULT_COUNT.1, 4_000_000);
}
