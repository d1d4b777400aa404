//! Refused instructions (STATUS error, ERROR_CODE, ERROR_PC), CONTROL reset mid-run and start
//! while busy. Expected codes come from the ISA's own decoder and validator.

mod rtl_support;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use rtl_support::*;
use sinter_isa::insn::encode_program;
use sinter_isa::{regs, Buffer, Dma, HwConfig, Instruction, Module, Walk, INSN_BYTES};
use sinter_sim::rtl::RtlSim;
use sinter_sim::Npu;

/// The code the hardware must raise for a raw instruction word (ERR_NONE when valid).
fn isa_code(cfg: &HwConfig, word: &[u8; INSN_BYTES]) -> u32 {
    match Instruction::decode(word) {
        Err(_) => regs::ERR_ILLEGAL_INSN,
        Ok(i) => match i.validate(cfg) {
            Ok(()) => regs::ERR_NONE,
            Err(f) => f.code(),
        },
    }
}

fn word(i: &Instruction) -> [u8; INSN_BYTES] {
    i.encode()
}

/// Bad instructions of every kind, each as a raw word.
fn bad_words(cfg: &HwConfig) -> Vec<(&'static str, [u8; INSN_BYTES])> {
    let act = dma(cfg, Buffer::Act, 0x1000, 0, 4, NONE);
    let ld = |d: Dma| word(&Instruction::Load(d));
    let st = |d: Dma| word(&Instruction::Store(d));
    let g = |acc: Walk, act: Walk, wgt, o, i| word(&gemm(acc, act, wgt, o, i, false, NONE));
    let mut v = vec![];
    let mut w = [0u8; INSN_BYTES];
    w[0] = 7; // unknown opcode
    v.push(("opcode 7", w));
    w[0] = 15;
    v.push(("opcode 15", w));
    let mut w = ld(act);
    w[1] |= 0x04; // bit 10: reserved in the DMA format
    v.push(("dma reserved bit", w));
    let mut w = ld(act);
    w[31] = 0x80; // top reserved bit
    v.push(("dma reserved top bit", w));
    let mut w = word(&sync(Module::Load, NONE));
    w[1] = 3; // target 3
    v.push(("sync target 3", w));
    let mut w = word(&requant(
        Walk::contiguous(0),
        Walk::contiguous(0),
        0,
        1,
        1,
        NONE,
    ));
    w[1] = 1; // vec op 1
    v.push(("vec op 1", w));
    let mut w = g(Walk::contiguous(0), Walk::contiguous(0), 0, 1, 1);
    w[1] = 0x04; // bit 10: reserved in the GEMM format
    v.push(("gemm reserved bit", w));
    let mut w = g(Walk::contiguous(0), Walk::contiguous(0), 0, 1, 1);
    w[1] = 0x03; // mode 3 does not exist
    v.push(("gemm mode 3", w));
    v.push((
        "load into out",
        ld(Dma {
            buffer: Buffer::Out,
            ..dma(cfg, Buffer::Out, 0x1000, 0, 1, NONE)
        }),
    ));
    v.push(("store from act", st(act)));
    v.push((
        "store with padding",
        st(Dma {
            pad_top: 1,
            ..dma(cfg, Buffer::Out, 0x1000, 0, 1, NONE)
        }),
    ));
    v.push((
        "store with pad value",
        st(Dma {
            pad_value: 1,
            ..dma(cfg, Buffer::Out, 0x1000, 0, 1, NONE)
        }),
    ));
    v.push(("empty transfer", ld(Dma { x_size: 0, ..act })));
    v.push((
        "load pops prev",
        ld(Dma {
            deps: deps(true, false, false, false),
            ..act
        }),
    ));
    v.push((
        "store pushes next",
        st(dma(
            cfg,
            Buffer::Out,
            0x1000,
            0,
            1,
            deps(false, false, false, true),
        )),
    ));
    v.push((
        "sync load pushes prev",
        word(&sync(Module::Load, deps(false, false, true, false))),
    ));
    v.push((
        "gemm empty",
        g(Walk::contiguous(0), Walk::contiguous(0), 0, 0, 3),
    ));
    // on-chip bounds
    v.push((
        "act rows",
        ld(Dma {
            sram_base: (cfg.act_depth - 3) as u16,
            ..act
        }),
    ));
    v.push((
        "act padded rows",
        ld(Dma {
            sram_base: (cfg.act_depth - 4) as u16,
            pad_right: 1,
            ..act
        }),
    ));
    v.push((
        "acc rows",
        ld(dma(
            cfg,
            Buffer::Acc,
            0x1000,
            (cfg.acc_depth - 1) as u16,
            2,
            NONE,
        )),
    ));
    v.push((
        "gemm wgt",
        g(
            Walk::contiguous(0),
            Walk::contiguous(0),
            cfg.wgt_depth as u16,
            1,
            1,
        ),
    ));
    v.push((
        "gemm acc walk",
        g(
            Walk {
                base: 1,
                stride_outer: (cfg.acc_depth / 2) as u16,
                stride_inner: 0,
            },
            Walk::contiguous(0),
            0,
            3,
            1,
        ),
    ));
    v.push((
        "gemm act walk",
        g(
            Walk::contiguous(0),
            Walk {
                base: 0,
                stride_outer: 0,
                stride_inner: (cfg.act_depth / 2 + 10) as u16,
            },
            0,
            1,
            3,
        ),
    ));
    v.push((
        "vec param",
        word(&requant(
            Walk::contiguous(0),
            Walk::contiguous(0),
            (cfg.acc_depth - 2) as u16,
            1,
            1,
            NONE,
        )),
    ));
    v.push((
        "vec dst",
        word(&requant(
            Walk::contiguous(0),
            Walk::contiguous(cfg.out_depth as u16 - 1),
            0,
            1,
            2,
            NONE,
        )),
    ));
    // alignment
    v.push((
        "dram base",
        ld(Dma {
            dram_base: 0x1001,
            ..act
        }),
    ));
    v.push((
        "x stride",
        ld(Dma {
            x_stride: cfg.rows / 2,
            ..act
        }),
    ));
    v.push((
        "y stride",
        ld(Dma {
            y_size: 2,
            y_stride: 0x1004,
            ..act
        }),
    ));
    v.push(("acc base", ld(dma(cfg, Buffer::Acc, 0x1010, 0, 1, NONE))));
    v.push((
        "wgt stride",
        ld(Dma {
            x_stride: 0x100 + 8,
            ..dma(cfg, Buffer::Wgt, 0x1000, 0, 2, NONE)
        }),
    ));
    // illegal beats bounds beats misalignment
    v.push((
        "illegal and out of range",
        ld(Dma {
            x_size: 0,
            sram_base: 0xFFFF,
            dram_base: 3,
            ..act
        }),
    ));
    v.push((
        "out of range and misaligned",
        ld(Dma {
            sram_base: 0xFFFF,
            dram_base: 3,
            ..act
        }),
    ));
    v
}

#[test]
fn refused_instructions_stop_with_the_isa_code() {
    for cfg in configs() {
        let mut s = sim(cfg);
        let good = encode_program(&[
            sync(Module::Compute, NONE),
            gemm(
                Walk::contiguous(0),
                Walk::contiguous(0),
                0,
                2,
                3,
                false,
                NONE,
            ),
        ]);
        for (k, (name, bad)) in bad_words(&cfg).into_iter().enumerate() {
            let want = isa_code(&cfg, &bad);
            assert_ne!(want, regs::ERR_NONE, "{name} should be refused by the ISA");
            // The bad word at index 2 (or 0 every third case), valid ones around it.
            let pc = if k % 3 == 0 { 0 } else { 2 };
            let mut prog = Vec::new();
            if pc == 2 {
                prog.extend_from_slice(&good);
            }
            prog.extend_from_slice(&bad);
            prog.extend_from_slice(&good);
            let o = run_bytes(&mut s, &prog);
            assert_eq!(o.status, regs::STATUS_ERROR, "{cfg} {name}: {o:?}");
            assert_eq!(o.error_code, want, "{cfg} {name}: {o:?}");
            assert_eq!(o.error_pc, pc, "{cfg} {name}");
        }
        // The machine is usable again after an error.
        let o = run_bytes(&mut s, &good);
        assert_eq!((o.status, o.insns_done), (regs::STATUS_DONE, 2));
    }
}

/// Random instruction words, mostly near-valid, against the ISA's decoder and validator. Three
/// Syncs that wait for tokens nobody sends hold every module, so a word that passes validation
/// is only queued, and the run is then ended by CONTROL reset.
#[test]
fn random_words_match_isa_validation() {
    for cfg in configs() {
        let mut rng = StdRng::seed_from_u64(1234 + cfg.rows as u64);
        let mut s = sim(cfg);
        let hold = encode_program(&[
            sync(Module::Load, deps(false, true, false, false)),
            sync(Module::Compute, deps(true, false, false, false)),
            sync(Module::Store, deps(true, false, false, false)),
        ]);
        let (mut valid, mut refused) = (0, 0);
        for _ in 0..300 {
            let w = random_word(&cfg, &mut rng);
            let want = isa_code(&cfg, &w);
            let mut prog = hold.clone();
            prog.extend_from_slice(&w);
            s.write_dram(0, &prog).unwrap();
            s.start(0, 4);
            s.advance(60);
            let o = outcome(&mut s);
            if want == regs::ERR_NONE {
                valid += 1;
                assert_eq!(o.status, regs::STATUS_BUSY, "{cfg} {w:02x?}: {o:?}");
                s.write_reg(regs::CONTROL, regs::CONTROL_RESET);
                s.advance(1000);
                assert_eq!(s.read_reg(regs::STATUS), 0);
            } else {
                refused += 1;
                assert_eq!(
                    o.status,
                    regs::STATUS_ERROR,
                    "{cfg} {w:02x?} want {want}: {o:?}"
                );
                assert_eq!((o.error_code, o.error_pc), (want, 3), "{cfg} {w:02x?}");
            }
        }
        assert!(
            valid > 30 && refused > 30,
            "{valid} valid, {refused} refused"
        );
    }
}

/// A word built from a random valid-ish instruction with a few random fields and occasional
/// flipped bits.
fn random_word(cfg: &HwConfig, rng: &mut StdRng) -> [u8; INSN_BYTES] {
    let small = |rng: &mut StdRng, max: u32| -> u16 {
        if rng.gen_bool(0.1) {
            rng.gen()
        } else {
            rng.gen_range(0..=max) as u16
        }
    };
    let buffer = [Buffer::Act, Buffer::Wgt, Buffer::Acc, Buffer::Out][rng.gen_range(0..4)];
    let align = cfg.dram_alignment(buffer);
    let aligned = |rng: &mut StdRng| -> u32 {
        let v = rng.gen_range(0..64u32) * align;
        if rng.gen_bool(0.05) {
            v + rng.gen_range(1..align.max(2))
        } else {
            v
        }
    };
    let d = sinter_isa::Deps {
        pop_prev: rng.gen_bool(0.1),
        pop_next: rng.gen_bool(0.1),
        push_prev: rng.gen_bool(0.1),
        push_next: rng.gen_bool(0.1),
    };
    let depth = cfg.depth(buffer);
    let dm = Dma {
        deps: d,
        buffer,
        dram_base: aligned(rng),
        sram_base: small(rng, depth),
        y_size: small(rng, 8),
        x_size: small(rng, 8),
        y_stride: aligned(rng),
        x_stride: aligned(rng),
        pad_top: if rng.gen_bool(0.2) {
            rng.gen_range(0..3)
        } else {
            0
        },
        pad_bottom: if rng.gen_bool(0.2) {
            rng.gen_range(0..3)
        } else {
            0
        },
        pad_left: if rng.gen_bool(0.2) {
            rng.gen_range(0..3)
        } else {
            0
        },
        pad_right: if rng.gen_bool(0.2) {
            rng.gen_range(0..3)
        } else {
            0
        },
        pad_value: if rng.gen_bool(0.2) { rng.gen() } else { 0 },
    };
    let walk = |rng: &mut StdRng, depth: u32| Walk {
        base: small(rng, depth),
        stride_outer: small(rng, 16),
        stride_inner: small(rng, 4),
    };
    let insn = match rng.gen_range(0..5) {
        0 => Instruction::Load(dm),
        1 => Instruction::Store(dm),
        2 => Instruction::Gemm(sinter_isa::Gemm {
            deps: d,
            mode: sinter_isa::GemmMode::ALL[rng.gen_range(0..3)],
            wgt: small(rng, cfg.wgt_depth),
            n_outer: small(rng, 6),
            n_inner: small(rng, 6),
            acc: walk(rng, cfg.acc_depth),
            act: walk(rng, cfg.act_depth),
        }),
        3 => Instruction::Vec(sinter_isa::VecInsn {
            deps: d,
            op: sinter_isa::VecOp::Requant,
            param: small(rng, cfg.acc_depth),
            n_outer: small(rng, 6),
            n_inner: small(rng, 6),
            src: walk(rng, cfg.acc_depth),
            dst: walk(rng, cfg.out_depth),
            zero_point: rng.gen(),
            clamp_lo: rng.gen(),
            clamp_hi: rng.gen(),
        }),
        _ => sync(
            [Module::Load, Module::Compute, Module::Store][rng.gen_range(0..3)],
            d,
        ),
    };
    let mut w = insn.encode();
    if rng.gen_bool(0.15) {
        let bit = rng.gen_range(0..256);
        w[bit / 8] ^= 1 << (bit % 8);
    }
    w
}

fn long_program(cfg: &HwConfig) -> Vec<Instruction> {
    vec![
        load(
            cfg,
            Buffer::Act,
            0x1000,
            0,
            64,
            deps(false, false, false, true),
        ),
        gemm(
            Walk::contiguous(0),
            Walk {
                base: 0,
                stride_outer: 0,
                stride_inner: 1,
            },
            0,
            2000,
            64,
            true,
            deps(true, false, false, true),
        ),
        store(cfg, 0x8000, 0, 64, deps(true, false, false, false)),
    ]
}

#[test]
fn control_reset_aborts_a_run() {
    for cfg in configs() {
        let mut s = sim(cfg);
        let prog = long_program(&cfg);
        s.write_dram(0, &encode_program(&prog)).unwrap();
        s.start(0, prog.len() as u32);
        // Mid-load (reads in flight) and mid-GEMM.
        for at in [20, 3000] {
            s.start(0, prog.len() as u32);
            assert_eq!(s.advance(at), at);
            assert_eq!(s.read_reg(regs::STATUS), regs::STATUS_BUSY);
            s.write_reg(regs::CONTROL, regs::CONTROL_RESET);
            let o = outcome(&mut s);
            assert_eq!(
                (o.status, o.error_code, o.insns_done, o.cycles),
                (0, 0, 0, 0),
                "{cfg}"
            );
            assert_eq!(
                s.read_reg(regs::PROG_LEN),
                0,
                "reset clears the program registers"
            );
            // Outstanding reads drain, then the NPU is idle.
            assert!(s.advance(1000) < 1000);
            assert!(!s.busy());
        }
        // A normal program runs correctly afterwards.
        check_after_reset(&mut s);
    }
}

fn check_after_reset(s: &mut RtlSim) {
    let cfg = s.config();
    readback_setup(s);
    let e = cfg.rows as usize;
    let data: Vec<u8> = (0..8 * e).map(|k| (k * 7 + 1) as u8).collect();
    s.write_dram(0x2_0000, &data).unwrap();
    let mut prog = vec![load(&cfg, Buffer::Act, 0x2_0000, 100, 8, NONE)];
    prog.extend(readback_act(&cfg, 100, 8, 0x3_0000, 0));
    run_ok(s, &prog);
    assert_eq!(read(s, 0x3_0000, 8 * e), data);
}

#[test]
fn start_while_busy_is_ignored() {
    let cfg = HwConfig::SMALL;
    let mut s = sim(cfg);
    let prog = long_program(&cfg);
    s.write_dram(0, &encode_program(&prog)).unwrap();
    s.start(0, prog.len() as u32);
    s.advance(500);
    // A second start, even with another length, changes nothing.
    s.write_reg(regs::PROG_LEN, 1);
    s.write_reg(regs::CONTROL, regs::CONTROL_START);
    let n = s.run(BUDGET).unwrap();
    assert!(n < BUDGET);
    let o = outcome(&mut s);
    assert_eq!((o.status, o.insns_done), (regs::STATUS_DONE, 3));
    assert_eq!(o.mac_active, 2000 * 64);
}
