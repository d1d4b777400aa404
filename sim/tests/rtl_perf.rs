//! A GEMM-heavy program keeps the RTL's array busy. (Its simulation speed is a criterion
//! benchmark: `cargo bench -p sinter-sim --bench speed`.)

mod rtl_support;

use rtl_support::*;
use sinter_isa::{Buffer, HwConfig, Instruction, Walk};

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
fn gemm_heavy_keeps_the_array_busy() {
    let cfg = HwConfig::SMALL;
    let mut s = sim(cfg);
    let o = run_ok(&mut s, &gemm_heavy(&cfg, 8));
    assert_eq!(o.mac_active, 8 * 16 * 64);
    assert!(o.mac_active * 10 > o.cycles * 7, "{o:?}");
}
