//! Dependency tokens: a double-buffered program in which loads overlap GEMMs, and Sync barriers.

mod rtl_support;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use rtl_support::*;
use sinter_isa::timing::{estimate, TimingParams};
use sinter_isa::{Buffer, HwConfig, Module, Walk};
use sinter_sim::Npu;

const ACT: u32 = 0x1_0000;
const WGT: u32 = 0x6_0000;
const DST: u32 = 0xA_0000;

/// T tiles of N activation rows through two act buffers: load t+2 waits (pop_next) until GEMM t
/// has released buffer t%2 (push_prev). Results are copied out by identity requantisation.
fn double_buffered(cfg: HwConfig, tiles: usize, n: usize, stress: Option<u64>) {
    let mut rng = StdRng::seed_from_u64(tiles as u64 * 31 + cfg.rows as u64);
    let (r, c) = (cfg.rows as usize, cfg.cols as usize);
    let mut s = sim(cfg);
    s.set_stress(stress);
    readback_setup(&mut s);
    let act: Vec<i8> = (0..tiles * n * r).map(|_| rng.gen_range(-3..=3)).collect();
    let wgt: Vec<i8> = (0..r * c).map(|_| rng.gen_range(-3..=3)).collect();
    s.write_dram(ACT as u64, &i8_bytes(&act)).unwrap();
    s.write_dram(WGT as u64, &i8_bytes(&wgt)).unwrap();

    let param = (cfg.acc_depth - 3) as u16;
    let mut prog = vec![
        load(&cfg, Buffer::Wgt, WGT, 0, 1, NONE),
        load(&cfg, Buffer::Acc, RB_PARAM, param, 3, NONE),
    ];
    for t in 0..tiles {
        let buf = (t % 2 * n) as u16;
        prog.push(load(
            &cfg,
            Buffer::Act,
            ACT + (t * n * r) as u32,
            buf,
            n as u16,
            deps(false, t >= 2, false, true),
        ));
        prog.push(gemm(
            Walk::contiguous((t * n) as u16),
            Walk::contiguous(buf),
            0,
            1,
            n as u16,
            false,
            deps(true, false, t + 2 < tiles, false),
        ));
    }
    let total = (tiles * n) as u16;
    prog.push(requant(
        Walk::contiguous(0),
        Walk::contiguous(0),
        param,
        1,
        total,
        deps(false, false, false, true),
    ));
    prog.push(store(&cfg, DST, 0, total, deps(true, false, false, false)));
    let o = run_ok(&mut s, &prog);
    assert_eq!(o.mac_active, (tiles * n) as u64);

    let got = read(&mut s, DST as u64, tiles * n * c);
    for row in 0..tiles * n {
        let a = &act[row * r..][..r];
        let want: Vec<u8> = (0..c)
            .map(|j| {
                (0..r)
                    .map(|k| a[k] as i32 * wgt[k * c + j] as i32)
                    .sum::<i32>()
                    .clamp(-128, 127) as i8 as u8
            })
            .collect();
        assert_eq!(&got[row * c..][..c], &want[..], "{cfg}: row {row}");
    }

    if stress.is_none() {
        // Loads overlap GEMMs: the run is much shorter than doing everything back to back, and
        // close to what the ISA's timing model predicts.
        let p = TimingParams::default();
        let serial: u64 = prog
            .iter()
            .map(|i| sinter_isa::timing::busy_cycles(&cfg, &p, i))
            .sum();
        let predicted = estimate(&cfg, &p, &prog).total_cycles;
        eprintln!(
            "{cfg}: {} cycles, serial {serial}, timing model {predicted}",
            o.cycles
        );
        assert!(
            o.cycles * 100 < serial * 85,
            "no overlap: {} vs serial {serial}",
            o.cycles
        );
        assert!(
            o.cycles < predicted * 3 / 2,
            "{} vs predicted {predicted}",
            o.cycles
        );
    }
}

#[test]
fn double_buffered_loads_overlap_gemm() {
    for cfg in configs() {
        double_buffered(cfg, 6, 64, None);
    }
}

#[test]
fn double_buffered_with_backpressure() {
    for cfg in configs() {
        double_buffered(cfg, 5, 24, Some(77));
    }
}

/// Sync instructions move tokens between modules like any other instruction, and a pop waits
/// for the push even when the pushing instruction comes later in its own module's queue.
#[test]
fn sync_barriers_order_modules() {
    for cfg in configs() {
        let mut s = sim(cfg);
        readback_setup(&mut s);
        let e = cfg.rows as usize;
        let first: Vec<u8> = vec![1; 4 * e];
        let second: Vec<u8> = vec![2; 4 * e];
        s.write_dram(0x1_0000, &first).unwrap();
        s.write_dram(0x1_1000, &second).unwrap();
        // Load act rows 0..4 = first, copy them out (readback), then a barrier chain
        // store -> compute -> load before the load module overwrites rows 0..4 with `second`.
        let mut prog = vec![load(&cfg, Buffer::Act, 0x1_0000, 0, 4, NONE)];
        prog.extend(readback_act(&cfg, 0, 4, DST, 0));
        prog.push(sync(Module::Store, deps(false, false, true, false)));
        prog.push(sync(Module::Compute, deps(false, true, true, false)));
        prog.push(load(
            &cfg,
            Buffer::Act,
            0x1_1000,
            0,
            4,
            deps(false, true, false, false),
        ));
        prog.push(sync(Module::Load, deps(false, false, false, true)));
        prog.push(sync(Module::Compute, deps(true, false, false, false)));
        prog.extend(readback_act(&cfg, 0, 4, DST + 0x1000, 8));
        run_ok(&mut s, &prog);
        assert_eq!(read(&mut s, DST as u64, 4 * e), first);
        assert_eq!(read(&mut s, DST as u64 + 0x1000, 4 * e), second);
    }
}
