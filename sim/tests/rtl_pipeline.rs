//! LOAD -> GEMM -> VEC -> STORE through the RTL, checked against results computed here with the
//! ISA's arithmetic (`sinter_isa::numeric`).

mod rtl_support;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use rtl_support::*;
use sinter_isa::numeric::requant_lane;
use sinter_isa::{regs, Buffer, HwConfig, Instruction, VecInsn, VecOp, Walk};
use sinter_sim::rtl::RtlSim;
use sinter_sim::Npu;

const ACT: u32 = 0x1_0000;
const WGT: u32 = 0x2_0000;
const PARAM: u32 = 0x3_0000;
const OUT: u32 = 0x4_0000;

/// Random operands of one GEMM + requantisation.
struct Case {
    act: Vec<Vec<i8>>, // n rows of `rows`
    wgt: Vec<Vec<i8>>, // rows x cols
    bias: Vec<i32>,
    mult: Vec<i32>,
    shift: Vec<i32>,
    zp: i8,
    lo: i8,
    hi: i8,
}

impl Case {
    fn random(cfg: &HwConfig, n: usize, rng: &mut StdRng) -> Case {
        let (r, c) = (cfg.rows as usize, cfg.cols as usize);
        let i8v = |rng: &mut StdRng, k| (0..k).map(|_| rng.gen::<i8>()).collect::<Vec<_>>();
        Case {
            act: (0..n).map(|_| i8v(rng, r)).collect(),
            wgt: (0..r).map(|_| i8v(rng, c)).collect(),
            bias: (0..c).map(|_| rng.gen_range(-50_000..50_000)).collect(),
            // Mostly realistic multipliers and shifts, plus the extremes.
            mult: (0..c)
                .map(|k| match k % 4 {
                    0 => rng.gen(),
                    _ => rng.gen_range(1 << 28..i32::MAX),
                })
                .collect(),
            shift: (0..c)
                .map(|k| match k % 5 {
                    0 => rng.gen(),           // negative or huge: clamped to MAX_SHIFT
                    1 => rng.gen_range(0..3), // tiny shifts saturate
                    _ => rng.gen_range(28..45),
                })
                .collect(),
            zp: rng.gen_range(-20..20),
            lo: rng.gen_range(-128..-60),
            hi: rng.gen_range(60..=127),
        }
    }

    fn dot(&self, a: &[i8]) -> Vec<i32> {
        let c = self.wgt[0].len();
        (0..c)
            .map(|j| {
                a.iter()
                    .zip(&self.wgt)
                    .fold(0i32, |s, (&x, w)| s.wrapping_add(x as i32 * w[j] as i32))
            })
            .collect()
    }

    fn requant(&self, acc: &[i32]) -> Vec<i8> {
        acc.iter()
            .enumerate()
            .map(|(j, &a)| {
                requant_lane(
                    a,
                    self.bias[j],
                    self.mult[j],
                    self.shift[j],
                    self.zp,
                    self.lo,
                    self.hi,
                )
            })
            .collect()
    }

    fn write(&self, sim: &mut RtlSim) {
        let act: Vec<u8> = self.act.iter().flat_map(|r| i8_bytes(r)).collect();
        let wgt: Vec<u8> = self.wgt.iter().flat_map(|r| i8_bytes(r)).collect();
        let mut p = i32_bytes(&self.bias);
        p.extend(i32_bytes(&self.mult));
        p.extend(i32_bytes(&self.shift));
        sim.write_dram(ACT as u64, &act).unwrap();
        sim.write_dram(WGT as u64, &wgt).unwrap();
        sim.write_dram(PARAM as u64, &p).unwrap();
    }

    fn vec(
        &self,
        src: Walk,
        dst: Walk,
        param: u16,
        n_outer: u16,
        n_inner: u16,
        d: sinter_isa::Deps,
    ) -> Instruction {
        Instruction::Vec(VecInsn {
            deps: d,
            op: VecOp::Requant,
            param,
            n_outer,
            n_inner,
            src,
            dst,
            zero_point: self.zp,
            clamp_lo: self.lo,
            clamp_hi: self.hi,
        })
    }
}

fn single_layer(cfg: HwConfig, stress: Option<u64>) {
    let mut rng = StdRng::seed_from_u64(cfg.rows as u64 * 7 + stress.unwrap_or(0));
    let n = 12usize;
    let case = Case::random(&cfg, n, &mut rng);
    let mut s = sim(cfg);
    s.set_stress(stress);
    case.write(&mut s);
    let (acc0, param, wtile, act0, out0) = (16u16, 100u16, 3u16, 40u16, 5u16);
    let prog = vec![
        load(&cfg, Buffer::Act, ACT, act0, n as u16, NONE),
        load(
            &cfg,
            Buffer::Wgt,
            WGT,
            wtile,
            1,
            deps(false, false, false, true),
        ),
        load(&cfg, Buffer::Acc, PARAM, param, 3, NONE),
        gemm(
            Walk::contiguous(acc0),
            Walk::contiguous(act0),
            wtile,
            1,
            n as u16,
            false,
            deps(true, false, false, false),
        ),
        case.vec(
            Walk::contiguous(acc0),
            Walk::contiguous(out0),
            param,
            1,
            n as u16,
            deps(false, false, false, true),
        ),
        store(&cfg, OUT, out0, n as u16, deps(true, false, false, false)),
    ];
    let o = run_ok(&mut s, &prog);
    assert_eq!(o.mac_active, n as u64);
    let got = read(&mut s, OUT as u64, n * cfg.cols as usize);
    for (i, a) in case.act.iter().enumerate() {
        let want = i8_bytes(&case.requant(&case.dot(a)));
        assert_eq!(
            &got[i * cfg.cols as usize..][..cfg.cols as usize],
            &want[..],
            "{cfg}: row {i}"
        );
    }
}

#[test]
fn load_gemm_vec_store() {
    for cfg in configs() {
        single_layer(cfg, None);
    }
}

#[test]
fn load_gemm_vec_store_with_backpressure() {
    for cfg in configs() {
        for seed in [1, 2, 3] {
            single_layer(cfg, Some(seed));
        }
    }
}

/// Accumulating GEMMs whose consecutive iterations hit the same accumulator row (the pipeline
/// must forward), with 2-D walks on both sides, and a bias loaded from DRAM.
#[test]
fn accumulate_same_row_and_strided_walks() {
    for cfg in configs() {
        let mut rng = StdRng::seed_from_u64(99 + cfg.rows as u64);
        let n = 6usize;
        let case = Case::random(&cfg, n, &mut rng);
        let mut s = sim(cfg);
        case.write(&mut s);
        let c = cfg.cols as usize;
        // acc rows 0..3 start from a bias row pattern loaded from DRAM
        let init: Vec<i32> = (0..4 * c).map(|k| k as i32 * 1000 - 7).collect();
        s.write_dram(0x5_0000, &i32_bytes(&init)).unwrap();
        let param = 200u16;
        let acc_walk = Walk {
            base: 0,
            stride_outer: 1,
            stride_inner: 0,
        }; // o -> row o
        let act_walk = Walk {
            base: 10,
            stride_outer: 0,
            stride_inner: 1,
        }; // i -> act row 10+i
        let prog = vec![
            load(&cfg, Buffer::Act, ACT, 10, n as u16, NONE),
            load(
                &cfg,
                Buffer::Wgt,
                WGT,
                0,
                1,
                deps(false, false, false, true),
            ),
            load(&cfg, Buffer::Acc, PARAM, param, 3, NONE),
            load(&cfg, Buffer::Acc, 0x5_0000, 0, 4, NONE),
            // acc[o] += sum_i act[10+i] W, for o in 0..4 (n inner iterations on one row)
            gemm(
                acc_walk,
                act_walk,
                0,
                4,
                n as u16,
                true,
                deps(true, false, false, false),
            ),
            // out rows 20, 22, 24, 26 from acc rows 0..4 (VEC with a strided destination)
            case.vec(
                Walk::contiguous(0),
                Walk {
                    base: 20,
                    stride_outer: 0,
                    stride_inner: 2,
                },
                param,
                1,
                4,
                deps(false, false, false, true),
            ),
            Instruction::Store(sinter_isa::Dma {
                x_stride: 2 * c as u32, // every other out row lands every other DRAM row
                ..rtl_support::dma(
                    &cfg,
                    Buffer::Out,
                    OUT,
                    20,
                    7,
                    deps(true, false, false, false),
                )
            }),
        ];
        let o = run_ok(&mut s, &prog);
        assert_eq!(o.mac_active, 4 * n as u64);
        let got = read(&mut s, OUT as u64, 14 * c);
        let sum: Vec<i32> = case
            .act
            .iter()
            .map(|a| case.dot(a))
            .fold(vec![0; c], |s, d| {
                s.iter().zip(&d).map(|(x, y)| x.wrapping_add(*y)).collect()
            });
        for o in 0..4 {
            let acc: Vec<i32> = (0..c)
                .map(|j| init[o * c + j].wrapping_add(sum[j]))
                .collect();
            let want = i8_bytes(&case.requant(&acc));
            assert_eq!(&got[2 * o * 2 * c..][..c], &want[..], "{cfg}: acc row {o}");
        }
    }
}

#[test]
fn counters_report_the_run() {
    let cfg = HwConfig::SMALL;
    let mut s = sim(cfg);
    let prog = vec![
        gemm(
            Walk::contiguous(0),
            Walk::contiguous(0),
            0,
            3,
            5,
            false,
            NONE,
        ),
        gemm(
            Walk::contiguous(0),
            Walk::contiguous(0),
            0,
            2,
            2,
            true,
            NONE,
        ),
    ];
    let o = run_ok(&mut s, &prog);
    assert_eq!(o.mac_active, 19);
    assert_eq!(o.insns_done, 2);
    assert!(o.cycles > 19 && o.cycles < 200, "{o:?}");
    assert_eq!(o.status & regs::STATUS_BUSY, 0);
}

/// Back-to-back GEMMs overlap in the pipeline: chains of 1- to 3-row GEMMs with different
/// weight tiles, all accumulating into the same rows, must still add up in program order, and
/// each completion must still come after its writes (the final VEC reads them).
#[test]
fn back_to_back_gemms_accumulate_in_order() {
    for cfg in configs() {
        let mut rng = StdRng::seed_from_u64(4242 + cfg.rows as u64);
        let (r, c) = (cfg.rows as usize, cfg.cols as usize);
        let mut s = sim(cfg);
        readback_setup(&mut s);
        let tiles: Vec<Vec<i8>> = (0..4)
            .map(|_| (0..r * c).map(|_| rng.gen_range(-2..=2)).collect())
            .collect();
        let act: Vec<i8> = (0..8 * r).map(|_| rng.gen_range(-2..=2)).collect();
        for (t, w) in tiles.iter().enumerate() {
            s.write_dram(WGT as u64 + (t * r * c) as u64, &i8_bytes(w))
                .unwrap();
        }
        s.write_dram(ACT as u64, &i8_bytes(&act)).unwrap();
        let param = (cfg.acc_depth - 3) as u16;
        let mut prog = vec![
            load(&cfg, Buffer::Act, ACT, 0, 8, NONE),
            load(
                &cfg,
                Buffer::Wgt,
                WGT,
                0,
                4,
                deps(false, false, false, true),
            ),
            load(&cfg, Buffer::Acc, RB_PARAM, param, 3, NONE),
        ];
        let mut acc = vec![vec![0i32; c]; 2];
        for k in 0..12usize {
            // The first GEMM overwrites both rows; then 1- or 2-row GEMMs accumulate.
            let rows = if k == 0 { 2 } else { 1 + k % 2 };
            let tile = k % 4;
            let act_base = k % 6;
            // iteration i: acc row i (+)= act row (act_base + i) . tile
            prog.push(gemm(
                Walk::contiguous(0),
                Walk::contiguous(act_base as u16),
                tile as u16,
                1,
                rows as u16,
                k > 0,
                deps(k == 0, false, false, false),
            ));
            for (i, acc_row) in acc.iter_mut().enumerate().take(rows) {
                let a = &act[(act_base + i) * r..][..r];
                for (j, v) in acc_row.iter_mut().enumerate() {
                    let dot: i32 = (0..r)
                        .map(|q| a[q] as i32 * tiles[tile][q * c + j] as i32)
                        .sum();
                    *v = if k == 0 { dot } else { *v + dot };
                }
            }
        }
        prog.push(requant(
            Walk::contiguous(0),
            Walk::contiguous(0),
            param,
            1,
            2,
            deps(false, false, false, true),
        ));
        prog.push(store(&cfg, OUT, 0, 2, deps(true, false, false, false)));
        run_ok(&mut s, &prog);
        let got = read(&mut s, OUT as u64, 2 * c);
        for row in 0..2 {
            let want: Vec<u8> = acc[row]
                .iter()
                .map(|&v| v.clamp(-128, 127) as i8 as u8)
                .collect();
            assert_eq!(&got[row * c..][..c], &want[..], "{cfg}: acc row {row}");
        }
    }
}
