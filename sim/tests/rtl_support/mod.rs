//! Shared helpers of the RTL tests: instruction builders, program runner, identity readback.
#![allow(dead_code)]

use sinter_isa::insn::encode_program;
use sinter_isa::{
    regs, Buffer, Deps, Dma, Gemm, HwConfig, Instruction, Module, Sync, VecInsn, VecOp, Walk,
};
use sinter_sim::rtl::RtlSim;
use sinter_sim::Npu;

pub const DRAM_BYTES: u64 = 1 << 20;
pub const PROG_BASE: u32 = 0;
/// Generous cycle budget for the small programs of the tests.
pub const BUDGET: u64 = 2_000_000;

/// Both array sizes with an RTL model.
pub fn configs() -> [HwConfig; 2] {
    [HwConfig::SMALL, HwConfig::DEFAULT]
}

pub fn sim(cfg: HwConfig) -> RtlSim {
    RtlSim::new(cfg, DRAM_BYTES).expect("RTL model")
}

pub fn deps(pop_prev: bool, pop_next: bool, push_prev: bool, push_next: bool) -> Deps {
    Deps {
        pop_prev,
        pop_next,
        push_prev,
        push_next,
    }
}

pub const NONE: Deps = Deps::NONE;

/// A dense 1-D transfer of `n` elements starting at `dram`.
pub fn dma(cfg: &HwConfig, buffer: Buffer, dram: u32, sram: u16, n: u16, d: Deps) -> Dma {
    let e = cfg.element_bytes(buffer);
    Dma {
        deps: d,
        buffer,
        dram_base: dram,
        sram_base: sram,
        y_size: 1,
        x_size: n,
        y_stride: e * n as u32,
        x_stride: e,
        ..Dma::default()
    }
}

pub fn load(cfg: &HwConfig, buffer: Buffer, dram: u32, sram: u16, n: u16, d: Deps) -> Instruction {
    Instruction::Load(dma(cfg, buffer, dram, sram, n, d))
}

pub fn store(cfg: &HwConfig, dram: u32, sram: u16, n: u16, d: Deps) -> Instruction {
    Instruction::Store(dma(cfg, Buffer::Out, dram, sram, n, d))
}

pub fn gemm(
    acc: Walk,
    act: Walk,
    wgt: u16,
    n_outer: u16,
    n_inner: u16,
    accumulate: bool,
    d: Deps,
) -> Instruction {
    Instruction::Gemm(Gemm {
        deps: d,
        mode: if accumulate {
            sinter_isa::GemmMode::Add
        } else {
            sinter_isa::GemmMode::Overwrite
        },
        wgt,
        n_outer,
        n_inner,
        acc,
        act,
    })
}

pub fn requant(
    src: Walk,
    dst: Walk,
    param: u16,
    n_outer: u16,
    n_inner: u16,
    d: Deps,
) -> Instruction {
    Instruction::Vec(VecInsn {
        deps: d,
        op: VecOp::Requant,
        param,
        n_outer,
        n_inner,
        src,
        dst,
        zero_point: 0,
        clamp_lo: -128,
        clamp_hi: 127,
    })
}

pub fn sync(module: Module, d: Deps) -> Instruction {
    Instruction::Sync(Sync { deps: d, module })
}

/// What a finished (or stopped) run left in the registers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Outcome {
    pub status: u32,
    pub error_code: u32,
    pub error_pc: u32,
    pub cycles: u64,
    pub mac_active: u64,
    pub insns_done: u32,
}

pub fn outcome(sim: &mut RtlSim) -> Outcome {
    let lo_hi =
        |sim: &mut RtlSim, lo, hi| sim.read_reg(lo) as u64 | (sim.read_reg(hi) as u64) << 32;
    Outcome {
        status: sim.read_reg(regs::STATUS),
        error_code: sim.read_reg(regs::ERROR_CODE),
        error_pc: sim.read_reg(regs::ERROR_PC),
        cycles: lo_hi(sim, regs::CYCLES_LO, regs::CYCLES_HI),
        mac_active: lo_hi(sim, regs::MAC_ACTIVE_LO, regs::MAC_ACTIVE_HI),
        insns_done: sim.read_reg(regs::INSNS_DONE),
    }
}

/// Writes raw program bytes at PROG_BASE, runs them to the end and returns the outcome.
pub fn run_bytes(sim: &mut RtlSim, bytes: &[u8]) -> Outcome {
    sim.write_dram(PROG_BASE as u64, bytes).unwrap();
    sim.start(PROG_BASE, (bytes.len() / sinter_isa::INSN_BYTES) as u32);
    let n = sim.run(BUDGET).expect("no DRAM fault");
    assert!(n < BUDGET, "program did not finish in {BUDGET} cycles");
    assert!(!sim.busy());
    outcome(sim)
}

/// Checks every instruction against the ISA's own validation, runs the program, and asserts
/// that it finished without error.
pub fn run_ok(sim: &mut RtlSim, prog: &[Instruction]) -> Outcome {
    let cfg = sim.config();
    for (i, insn) in prog.iter().enumerate() {
        insn.validate(&cfg)
            .unwrap_or_else(|e| panic!("test program insn {i} invalid: {e}"));
    }
    let o = run_bytes(sim, &encode_program(prog));
    assert_eq!(o.status, regs::STATUS_DONE, "run failed: {o:?}");
    assert_eq!(o.insns_done as usize, prog.len());
    o
}

/// Little-endian bytes of int32 lanes.
pub fn i32_bytes(v: &[i32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

pub fn i8_bytes(v: &[i8]) -> Vec<u8> {
    v.iter().map(|&x| x as u8).collect()
}

pub fn read(sim: &mut RtlSim, addr: u64, len: usize) -> Vec<u8> {
    let mut v = vec![0; len];
    sim.read_dram(addr, &mut v).unwrap();
    v
}

/// DRAM scratch used by `readback_act`.
/// (Tests keep their own data clear of 0xF_0000..)
pub const RB_WGT: u32 = 0xF_0000;
pub const RB_PARAM: u32 = 0xF_4000;
/// Weight tile, accumulator and output rows `readback_act` uses on chip.
pub const RB_TILE: u16 = 7;

/// Writes an identity weight tile and identity requantisation parameters (bias 0,
/// mult 2^30, shift 30) to DRAM scratch.
pub fn readback_setup(sim: &mut RtlSim) {
    let cfg = sim.config();
    assert_eq!(cfg.rows, cfg.cols);
    let mut tile = vec![0u8; (cfg.rows * cfg.cols) as usize];
    for r in 0..cfg.rows as usize {
        tile[r * cfg.cols as usize + r] = 1;
    }
    sim.write_dram(RB_WGT as u64, &tile).unwrap();
    let c = cfg.cols as usize;
    let mut p = i32_bytes(&vec![0; c]);
    p.extend(i32_bytes(&vec![1 << 30; c]));
    p.extend(i32_bytes(&vec![30; c]));
    sim.write_dram(RB_PARAM as u64, &p).unwrap();
}

/// Instructions that copy activation rows `act_base..act_base+n` to DRAM at `dst`, one row of
/// `rows` bytes after the other, through an identity GEMM, an identity requantisation and a
/// store. Uses accumulator rows from `acc_base`, output rows from 0 and the `RB_*` scratch. The
/// loads of the activation rows must come before these in the load module.
pub fn readback_act(
    cfg: &HwConfig,
    act_base: u16,
    n: u16,
    dst: u32,
    acc_base: u16,
) -> Vec<Instruction> {
    let st = dma(cfg, Buffer::Out, dst, 0, n, deps(true, false, false, false));
    readback_act_with(cfg, act_base, n, acc_base, st)
}

/// Like `readback_act`, with the final store given (its deps are forced to pop the token of the
/// requantisation).
pub fn readback_act_with(
    cfg: &HwConfig,
    act_base: u16,
    n: u16,
    acc_base: u16,
    st: Dma,
) -> Vec<Instruction> {
    let param = (cfg.acc_depth - 3) as u16;
    let st = Dma {
        deps: deps(true, false, false, false),
        ..st
    };
    vec![
        load(
            cfg,
            Buffer::Wgt,
            RB_WGT,
            RB_TILE,
            1,
            deps(false, false, false, true),
        ),
        load(cfg, Buffer::Acc, RB_PARAM, param, 3, NONE),
        gemm(
            Walk::contiguous(acc_base),
            Walk::contiguous(act_base),
            RB_TILE,
            1,
            n,
            false,
            deps(true, false, false, false),
        ),
        requant(
            Walk::contiguous(acc_base),
            Walk::contiguous(0),
            param,
            1,
            n,
            deps(false, false, false, true),
        ),
        Instruction::Store(st),
    ]
}

/// Loads 1024 activation rows and 4 weight tiles, then `reps` accumulating GEMMs of 64 rows
/// each (16 tiles of the reduction into 64 output rows): the array is busy nearly every cycle.
pub fn gemm_heavy(cfg: &HwConfig, reps: u16) -> Vec<Instruction> {
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
