//! Simulation speed of the 16x16 RTL on a GEMM-heavy program. Run with
//! `cargo test --release -p sinter-sim --test rtl_perf -- --ignored --nocapture`.

mod rtl_support;

use rtl_support::*;
use sinter_isa::{Buffer, HwConfig, Instruction, Walk};
use std::time::Instant;

fn gemm_heavy(cfg: &HwConfig, reps: u16) -> Vec<Instruction> {
    let rows = 1024u16;
    let mut prog = vec![
        load(cfg, Buffer::Act, 0x1_0000, 0, rows, NONE),
        load(
            cfg,
            Buffer::Wgt,
            0x8_0000,
            0,
            4,
            deps(false, false, false, true),
        ),
    ];
    for k in 0..reps {
        // 16 tiles of the reduction accumulated into 64 output rows.
        prog.push(gemm(
            Walk {
                base: 0,
                stride_outer: 0,
                stride_inner: 1,
            },
            Walk {
                base: 0,
                stride_outer: 64,
                stride_inner: 1,
            },
            k % 4,
            16,
            64,
            k > 0,
            deps(k == 0, false, false, false),
        ));
    }
    prog
}

#[test]
#[ignore]
fn cycles_per_second_16x16() {
    let cfg = HwConfig::DEFAULT;
    let mut s = sim(cfg);
    let prog = gemm_heavy(&cfg, 256);
    let t = Instant::now();
    let o = run_ok(&mut s, &prog);
    let secs = t.elapsed().as_secs_f64();
    let rate = o.cycles as f64 / secs;
    eprintln!(
        "16x16 GEMM-heavy: {} cycles ({} MAC-active, {:.1}% utilisation) in {:.3} s = {:.0} cycles/s",
        o.cycles,
        o.mac_active,
        100.0 * o.mac_active as f64 / o.cycles as f64,
        secs,
        rate
    );
    assert!(
        o.mac_active * 10 > o.cycles * 9,
        "array idle too often: {o:?}"
    );
}

#[test]
fn gemm_heavy_keeps_the_array_busy() {
    let cfg = HwConfig::SMALL;
    let mut s = sim(cfg);
    let o = run_ok(&mut s, &gemm_heavy(&cfg, 8));
    assert_eq!(o.mac_active, 8 * 16 * 64);
    assert!(o.mac_active * 10 > o.cycles * 7, "{o:?}");
}
