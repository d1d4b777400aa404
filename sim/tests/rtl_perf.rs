//! A GEMM-heavy program keeps the RTL's array busy. (Its simulation speed is a criterion
//! benchmark: `cargo bench -p sinter-sim --bench speed`.)

mod rtl_support;

use rtl_support::*;
use sinter_isa::HwConfig;

#[test]
fn gemm_heavy_keeps_the_array_busy() {
    let cfg = HwConfig::SMALL;
    let mut s = sim(cfg);
    let o = run_ok(&mut s, &gemm_heavy(&cfg, 8));
    assert_eq!(o.mac_active, 8 * 16 * 64);
    assert!(o.mac_active * 10 > o.cycles * 7, "{o:?}");
}

/// The timing model's account of back-to-back GEMMs (the next one accepted as the last row of
/// the previous issues, except after a GEMM too short to let its predecessor complete) matches
/// the RTL, for GEMMs from one row up.
#[test]
fn timing_model_predicts_back_to_back_gemms() {
    use sinter_isa::timing::{estimate, TimingParams};
    use sinter_isa::{Buffer, Walk};
    for cfg in configs() {
        let mut s = sim(cfg);
        let mut offsets = Vec::new();
        for rows in [1u16, 2, 3, 4, 14, 49] {
            let mut prog = vec![
                load(&cfg, Buffer::Act, 0x1_0000, 0, 64, NONE),
                load(
                    &cfg,
                    Buffer::Wgt,
                    0x8_0000,
                    0,
                    4,
                    deps(false, false, false, true),
                ),
            ];
            for k in 0..64u16 {
                prog.push(gemm(
                    Walk::contiguous(0),
                    Walk::contiguous(k % 8),
                    k % 4,
                    1,
                    rows,
                    k > 0,
                    deps(k == 0, false, false, false),
                ));
            }
            let measured = run_ok(&mut s, &prog).cycles as i64;
            let predicted = estimate(&cfg, &TimingParams::default(), &prog).total_cycles as i64;
            eprintln!("{cfg}: 64 GEMMs of {rows} rows: {measured} cycles, predicted {predicted}");
            offsets.push(measured - predicted);
        }
        // Exact per GEMM: what remains is the run's fixed start and finish (the first fetches
        // and loads, the completion), the same for every row count; 64 GEMMs mispredicted by
        // one cycle each would spread the differences by 64.
        let (lo, hi) = (offsets.iter().min().unwrap(), offsets.iter().max().unwrap());
        assert!(hi - lo <= 2, "{cfg}: measured − predicted {offsets:?}");
        assert!(
            (0..64).contains(lo),
            "{cfg}: measured − predicted {offsets:?}"
        );
    }
}
