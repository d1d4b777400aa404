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
