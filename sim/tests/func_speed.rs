//! Throughput of the functional model on a GEMM-heavy 16×16 program. Ignored by default; run
//! with `cargo test --release -p sinter-sim --test func_speed -- --ignored --nocapture`.

use sinter_isa::insn::{Deps, Dma, Gemm, Instruction, Walk};
use sinter_isa::{regs, Buffer, GemmMode, HwConfig};
use sinter_sim::func::FuncSim;
use sinter_sim::randprog::Rng;
use sinter_sim::Npu;
use std::time::Instant;

/// Loads 1024 activation rows and 16 weight tiles, then runs `reps` passes of 16 GEMMs over
/// `n_outer × n_inner` rows each (accumulating, like the input-channel loop of a convolution).
fn program(cfg: &HwConfig, reps: usize, n_outer: u16, n_inner: u16) -> (Vec<Instruction>, u64) {
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

fn measure(threads: usize, n_outer: u16, n_inner: u16, reps: usize) {
    let cfg = HwConfig::DEFAULT;
    let mut s = FuncSim::new(cfg, 1 << 20);
    let mut noise = vec![0u8; 0x20000];
    Rng::new(1).fill(&mut noise);
    s.write_dram(0x10000, &noise).unwrap();
    let (p, rows) = program(&cfg, reps, n_outer, n_inner);
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()
        .unwrap();
    // Warm up once, then time.
    pool.install(|| s.run_program(0, &p[..20]).unwrap());
    let t = Instant::now();
    let status = pool.install(|| s.run_program(0, &p).unwrap());
    let dt = t.elapsed().as_secs_f64();
    assert_eq!(status, regs::STATUS_DONE);
    println!(
        "16x16, GEMMs of {n_outer}x{n_inner}, {threads} thread(s): {rows} rows in {:.3} s = \
         {:.1} M rows/s ({:.2} GMAC/s)",
        dt,
        rows as f64 / dt / 1e6,
        rows as f64 * 256.0 / dt / 1e9
    );
}

#[test]
#[ignore]
fn gemm_rows_per_second() {
    let all = rayon::current_num_threads();
    for (n_outer, n_inner, reps) in [(2, 256, 256), (1, 1024, 128), (8, 128, 128)] {
        measure(1, n_outer, n_inner, reps);
        measure(all, n_outer, n_inner, reps);
    }
}
