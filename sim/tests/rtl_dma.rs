//! DMA through the RTL: 2-D strided loads with padding into every buffer, partial-beat stores.
//! Activation rows are observed by copying them out through an identity GEMM (`readback_act`).

mod rtl_support;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use rtl_support::*;
use sinter_isa::{Buffer, Dma, Instruction, Walk};
use sinter_sim::Npu;

const SRC: u32 = 0x1_0000;
const DST: u32 = 0x4_0000;

/// The padded block a load should leave on chip, row by row.
fn padded_block(d: &Dma, elem: usize, dram: &dyn Fn(u64) -> Vec<u8>, pad: u8) -> Vec<Vec<u8>> {
    let (h, w) = (
        (d.pad_top as u32 + d.y_size as u32 + d.pad_bottom as u32) as i64,
        (d.pad_left as u32 + d.x_size as u32 + d.pad_right as u32) as i64,
    );
    let mut rows = Vec::new();
    for py in 0..h {
        for px in 0..w {
            let (y, x) = (py - d.pad_top as i64, px - d.pad_left as i64);
            if y < 0 || y >= d.y_size as i64 || x < 0 || x >= d.x_size as i64 {
                rows.push(vec![pad; elem]);
            } else {
                rows.push(dram(
                    d.dram_base as u64
                        + y as u64 * d.y_stride as u64
                        + x as u64 * d.x_stride as u64,
                ));
            }
        }
    }
    rows
}

#[test]
fn strided_activation_load_with_padding() {
    for cfg in configs() {
        for stress in [None, Some(5)] {
            let mut rng = StdRng::seed_from_u64(3 + cfg.rows as u64);
            let mut s = sim(cfg);
            s.set_stress(stress);
            readback_setup(&mut s);
            let e = cfg.rows as usize;
            let src: Vec<u8> = (0..0x4000).map(|_| rng.gen()).collect();
            s.write_dram(SRC as u64, &src).unwrap();
            // Element offsets inside a beat, gaps between elements and rows.
            let d = Dma {
                deps: NONE,
                buffer: Buffer::Act,
                dram_base: SRC + e as u32,
                sram_base: 30,
                y_size: 3,
                x_size: 4,
                y_stride: 37 * e as u32,
                x_stride: 3 * e as u32,
                pad_top: 1,
                pad_bottom: 2,
                pad_left: 1,
                pad_right: 2,
                pad_value: -5,
            };
            let n = d.sram_rows() as u16;
            let mut prog = vec![Instruction::Load(d)];
            prog.extend(readback_act(&cfg, 30, n, DST, 0));
            run_ok(&mut s, &prog);
            let at = |a: u64| src[(a - SRC as u64) as usize..][..e].to_vec();
            let want = padded_block(&d, e, &at, (-5i8) as u8);
            let got = read(&mut s, DST as u64, n as usize * e);
            for (i, w) in want.iter().enumerate() {
                assert_eq!(
                    &got[i * e..][..e],
                    &w[..],
                    "{cfg} stress {stress:?}: on-chip row {i}"
                );
            }
        }
    }
}

/// Accumulator loads pad with zero whatever pad_value says; weight loads pad with pad_value in
/// every byte of the tile.
#[test]
fn accumulator_and_weight_padding() {
    for cfg in configs() {
        let mut s = sim(cfg);
        let c = cfg.cols as usize;
        let acc: Vec<i32> = (0..2 * c as i32).map(|k| k * 3 - 40).collect();
        s.write_dram(SRC as u64, &i32_bytes(&acc)).unwrap();
        let p = |v: i32| i32_bytes(&vec![v; c]);
        let params = [p(0), p(1 << 30), p(30)].concat();
        s.write_dram(0x2_0000, &params).unwrap();
        s.write_dram(0x3_0000, &vec![1u8; cfg.rows as usize])
            .unwrap(); // act row of ones
        let acc_load = Dma {
            pad_top: 1,
            pad_left: 1,
            pad_value: 9,
            ..dma(&cfg, Buffer::Acc, SRC, 10, 2, NONE)
        };
        // A 2 x 3 padded block in rows 10..16: (0,0) (0,1) (0,2) (1,0) are padding,
        // (1,1) and (1,2) the two rows from DRAM.
        let wgt_load = Dma {
            pad_left: 1,
            pad_value: -3,
            ..dma(
                &cfg,
                Buffer::Wgt,
                0x4_0000,
                4,
                1,
                deps(false, false, false, true),
            )
        };
        let prog = vec![
            load(&cfg, Buffer::Act, 0x3_0000, 0, 1, NONE),
            Instruction::Load(wgt_load), // tile 4 = pad, tile 5 = zeros from DRAM
            Instruction::Load(acc_load),
            load(&cfg, Buffer::Acc, 0x2_0000, 100, 3, NONE),
            // acc row 20 = ones . pad tile = rows * -3 in every lane
            gemm(
                Walk::contiguous(20),
                Walk::contiguous(0),
                4,
                1,
                1,
                false,
                deps(true, false, false, false),
            ),
            requant(Walk::contiguous(10), Walk::contiguous(0), 100, 1, 6, NONE),
            requant(
                Walk::contiguous(20),
                Walk::contiguous(6),
                100,
                1,
                1,
                deps(false, false, false, true),
            ),
            store(&cfg, DST, 0, 7, deps(true, false, false, false)),
        ];
        run_ok(&mut s, &prog);
        let got = read(&mut s, DST as u64, 7 * c);
        let row = |k: usize| {
            got[k * c..][..c]
                .iter()
                .map(|&b| b as i8 as i32)
                .collect::<Vec<_>>()
        };
        for k in [0, 1, 2, 3] {
            assert_eq!(row(k), vec![0; c], "{cfg}: acc pad row {k}");
        }
        assert_eq!(row(4), acc[..c].to_vec(), "{cfg}");
        assert_eq!(row(5), acc[c..].to_vec(), "{cfg}");
        assert_eq!(
            row(6),
            vec![-3 * cfg.rows as i32; c],
            "{cfg}: weight pad tile"
        );
    }
}

/// Output elements narrower than a beat are written with strobes: neighbouring bytes survive.
#[test]
fn partial_beat_stores_keep_neighbours() {
    for cfg in configs() {
        for stress in [None, Some(11)] {
            let mut rng = StdRng::seed_from_u64(17 + cfg.rows as u64);
            let mut s = sim(cfg);
            s.set_stress(stress);
            readback_setup(&mut s);
            let e = cfg.cols as usize;
            let n = 10usize;
            let rows: Vec<u8> = (0..n * e).map(|_| rng.gen()).collect();
            s.write_dram(SRC as u64, &rows).unwrap();
            s.write_dram(DST as u64, &vec![0xEE; 0x2000]).unwrap();
            // 2 x 5 elements: one element apart within a row, odd element offset, rows 7
            // elements apart.
            let st = Dma {
                y_size: 2,
                x_size: 5,
                x_stride: 2 * e as u32,
                y_stride: 13 * e as u32,
                ..dma(&cfg, Buffer::Out, DST + 3 * e as u32, 0, 1, NONE)
            };
            let mut prog = vec![load(&cfg, Buffer::Act, SRC, 0, n as u16, NONE)];
            prog.extend(readback_act_with(&cfg, 0, n as u16, 0, st));
            run_ok(&mut s, &prog);
            let mut want = vec![0xEEu8; 0x2000];
            for y in 0..2 {
                for x in 0..5 {
                    let at = 3 * e + y * 13 * e + x * 2 * e;
                    want[at..at + e].copy_from_slice(&rows[(y * 5 + x) * e..][..e]);
                }
            }
            assert_eq!(
                read(&mut s, DST as u64, 0x2000),
                want,
                "{cfg} stress {stress:?}"
            );
        }
    }
}

#[test]
fn multi_row_weight_tiles_with_stride() {
    // Two tiles loaded with a gap between them in DRAM, used by two GEMMs.
    for cfg in configs() {
        let mut rng = StdRng::seed_from_u64(23);
        let mut s = sim(cfg);
        readback_setup(&mut s);
        let (r, c) = (cfg.rows as usize, cfg.cols as usize);
        let t = r * c;
        let tiles: Vec<u8> = (0..3 * t).map(|_| rng.gen()).collect();
        s.write_dram(SRC as u64, &tiles).unwrap();
        // act rows: unit vectors e_0 .. e_{r-1} select the tile rows
        let mut act = vec![0u8; r * r];
        for k in 0..r {
            act[k * r + k] = 1;
        }
        s.write_dram(0x3_0000, &act).unwrap();
        let w = Dma {
            x_size: 2,
            x_stride: 2 * t as u32,
            ..dma(&cfg, Buffer::Wgt, SRC, 1, 1, NONE)
        };
        let param = (cfg.acc_depth - 3) as u16;
        let prog = vec![
            load(&cfg, Buffer::Act, 0x3_0000, 0, r as u16, NONE),
            Instruction::Load(w),
            load(
                &cfg,
                Buffer::Wgt,
                RB_WGT,
                RB_TILE,
                1,
                deps(false, false, false, true),
            ),
            load(&cfg, Buffer::Acc, RB_PARAM, param, 3, NONE),
            gemm(
                Walk::contiguous(0),
                Walk::contiguous(0),
                1,
                1,
                r as u16,
                false,
                deps(true, false, false, false),
            ),
            gemm(
                Walk::contiguous(r as u16),
                Walk::contiguous(0),
                2,
                1,
                r as u16,
                false,
                NONE,
            ),
            requant(
                Walk::contiguous(0),
                Walk::contiguous(0),
                param,
                1,
                2 * r as u16,
                deps(false, false, false, true),
            ),
            store(&cfg, DST, 0, 2 * r as u16, deps(true, false, false, false)),
        ];
        run_ok(&mut s, &prog);
        let got = read(&mut s, DST as u64, 2 * r * c);
        // acc row k of GEMM j = row k of tile j (tile 1 = DRAM tile 0, tile 2 = DRAM tile 2),
        // requantised by identity = the int8 weights themselves.
        for j in 0..2 {
            let tile = &tiles[j * 2 * t..][..t];
            assert_eq!(&got[j * r * c..][..r * c], tile, "{cfg}: tile {j}");
        }
    }
}
