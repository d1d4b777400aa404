//! Register port of the RTL: version and config readback, program registers, start rules.

mod rtl_support;

use rtl_support::*;
use sinter_isa::{regs, HwConfig, ARCH_VERSION};
use sinter_sim::rtl::RtlSim;
use sinter_sim::{Npu, SimError};

#[test]
fn version_and_config_readback() {
    for cfg in configs() {
        let mut s = sim(cfg);
        assert_eq!(s.read_reg(regs::VERSION), ARCH_VERSION);
        assert_eq!(
            s.read_reg(regs::CONFIG_ARRAY),
            regs::config_array_word(&cfg)
        );
        assert_eq!(s.read_reg(regs::CONFIG_ACT_DEPTH), cfg.act_depth);
        assert_eq!(s.read_reg(regs::CONFIG_WGT_DEPTH), cfg.wgt_depth);
        assert_eq!(s.read_reg(regs::CONFIG_ACC_DEPTH), cfg.acc_depth);
        assert_eq!(s.read_reg(regs::CONFIG_OUT_DEPTH), cfg.out_depth);
        assert_eq!(s.read_reg(regs::STATUS), 0);
        assert_eq!(s.read_reg(regs::ERROR_CODE), regs::ERR_NONE);
        assert_eq!(s.config(), cfg);
        assert_eq!(s.dram_bytes(), DRAM_BYTES);
        // Idle: nothing to simulate.
        assert_eq!(s.advance(100), 0);
    }
}

#[test]
fn program_registers_read_back() {
    let mut s = sim(HwConfig::SMALL);
    s.write_reg(regs::PROG_BASE, 0x1234_5660);
    s.write_reg(regs::PROG_LEN, 77);
    assert_eq!(s.read_reg(regs::PROG_BASE), 0x1234_5660);
    assert_eq!(s.read_reg(regs::PROG_LEN), 77);
    // CONTROL is write-only and unknown offsets read as zero.
    assert_eq!(s.read_reg(regs::CONTROL), 0);
    assert_eq!(s.read_reg(0xFC), 0);
}

#[test]
fn empty_program_is_done_at_once() {
    for cfg in configs() {
        let mut s = sim(cfg);
        let o = run_bytes(&mut s, &[]);
        assert_eq!(o.status, regs::STATUS_DONE);
        assert_eq!(o.insns_done, 0);
    }
}

#[test]
fn misaligned_program_base_is_refused() {
    let mut s = sim(HwConfig::SMALL);
    s.start(0x10, 1);
    s.advance(100);
    let o = outcome(&mut s);
    assert_eq!(o.status, regs::STATUS_ERROR);
    assert_eq!(o.error_code, regs::ERR_PROG_ALIGN);
    assert_eq!(o.error_pc, 0);
}

#[test]
fn configs_without_a_model_are_refused() {
    let cfg: HwConfig = "32x32".parse().unwrap();
    match RtlSim::new(cfg, 1024) {
        Err(SimError::NoRtlModel(_, built)) => assert!(built.contains("16x16")),
        Err(e) => panic!("unexpected error {e}"),
        Ok(_) => panic!("no 32x32 model should exist"),
    }
    // Same array, other buffer depths: the model's parameters do not match.
    let mut odd = HwConfig::SMALL;
    odd.act_depth = 512;
    assert!(matches!(
        RtlSim::new(odd, 1024),
        Err(SimError::NoRtlModel(..))
    ));
    assert_eq!(
        RtlSim::built_configs(),
        vec![HwConfig::SMALL, HwConfig::DEFAULT]
    );
}

#[test]
fn dram_access_out_of_range_is_an_error() {
    let mut s = sim(HwConfig::SMALL);
    assert!(matches!(
        s.write_dram(DRAM_BYTES - 2, &[0; 4]),
        Err(SimError::DramRange { .. })
    ));
    let mut b = [0u8; 4];
    assert!(matches!(
        s.read_dram(u64::MAX - 1, &mut b),
        Err(SimError::DramRange { .. })
    ));
    // A program fetched from beyond DRAM faults instead of panicking.
    s.start(DRAM_BYTES as u32, 1);
    assert!(matches!(s.run(1000), Err(SimError::DramRange { .. })));
}
