//! Simulation speed on GEMM-heavy 16×16 programs: the RTL in simulated cycles per second, the
//! functional model in GEMM rows per second on one thread and on the whole rayon pool.
//!
//! `cargo bench -p sinter-sim --bench speed`.

#[path = "../tests/rtl_support/mod.rs"]
mod rtl_support;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use rtl_support::{gemm_heavy, run_ok, sim};
use sinter_isa::insn::{Deps, Dma, Gemm, Instruction, Walk};
use sinter_isa::{regs, Buffer, GemmMode, HwConfig};
use sinter_sim::func::FuncSim;
use sinter_sim::randprog::Rng;
use sinter_sim::Npu;
use std::time::Duration;

fn bench_rtl(c: &mut Criterion) {
    let cfg = HwConfig::DEFAULT;
    let mut s = sim(cfg);
    let prog = gemm_heavy(&cfg, 256);
    // Cycles are the same on every run of the program: count them once for the throughput.
    let cycles = run_ok(&mut s, &prog).cycles;
    let mut group = c.benchmark_group("rtl");
    group.throughput(Throughput::Elements(cycles));
    group.bench_function("16x16 gemm-heavy cycles", |b| {
        b.iter(|| run_ok(&mut s, &prog))
    });
    group.finish();
}

/// Loads 1024 activation rows and 16 weight tiles, then `reps` passes of 16 GEMMs over
/// `n_outer × n_inner` rows each (accumulating, like the input-channel loop of a convolution).
/// Returns the program and the GEMM rows it computes.
fn func_program(
    cfg: &HwConfig,
    reps: usize,
    n_outer: u16,
    n_inner: u16,
) -> (Vec<Instruction>, u64) {
    let act = Dma {
        buffer: Buffer::Act,
        dram_base: 0x10000,
        y_size: 1024,
        x_size: 1,
        y_stride: cfg.rows,
        x_stride: cfg.rows,
        ..Dma::default()
    };
    let wgt = Dma {
        buffer: Buffer::Wgt,
        dram_base: 0x20000,
        y_size: 16,
        x_size: 1,
        y_stride: cfg.rows * cfg.cols,
        x_stride: 0,
        ..Dma::default()
    };
    let mut p = vec![Instruction::Load(act), Instruction::Load(wgt)];
    let mut rows = 0;
    for _ in 0..reps {
        for t in 0..16u16 {
            p.push(Instruction::Gemm(Gemm {
                deps: Deps::NONE,
                mode: if t > 0 {
                    GemmMode::Add
                } else {
                    GemmMode::Overwrite
                },
                wgt: t,
                n_outer,
                n_inner,
                acc: Walk {
                    base: 0,
                    stride_outer: n_inner,
                    stride_inner: 1,
                },
                act: Walk {
                    base: t * 32,
                    stride_outer: n_inner,
                    stride_inner: 1,
                },
            }));
            rows += n_outer as u64 * n_inner as u64;
        }
    }
    (p, rows)
}

fn bench_func(c: &mut Criterion) {
    let cfg = HwConfig::DEFAULT;
    let mut s = FuncSim::new(cfg, 1 << 20);
    let mut noise = vec![0u8; 0x20000];
    Rng::new(1).fill(&mut noise);
    s.write_dram(0x10000, &noise).expect("noise fits the DRAM");
    let all = rayon::current_num_threads();
    let mut threads = vec![1];
    if all > 1 {
        threads.push(all);
    }
    let mut group = c.benchmark_group("func");
    for (n_outer, n_inner, reps) in [(2, 256, 32), (1, 1024, 16), (8, 128, 16)] {
        let (p, rows) = func_program(&cfg, reps, n_outer, n_inner);
        group.throughput(Throughput::Elements(rows));
        for &n in &threads {
            let pool = rayon::ThreadPoolBuilder::new()
                .num_threads(n)
                .build()
                .expect("thread pool");
            group.bench_function(
                format!("16x16 gemm {n_outer}x{n_inner} rows, {n} thread(s)"),
                |b| {
                    b.iter(|| {
                        let status = pool.install(|| s.run_program(0, &p)).expect("runs");
                        assert_eq!(status, regs::STATUS_DONE);
                    })
                },
            );
        }
    }
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(10).measurement_time(Duration::from_secs(3));
    targets = bench_rtl, bench_func
}
criterion_main!(benches);
