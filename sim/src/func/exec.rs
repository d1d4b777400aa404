//! Semantics of one validated instruction.

use super::{gemm, State};
use sinter_isa::insn::{Dma, Instruction, VecInsn, VecOp};
use sinter_isa::numeric::requant_lane;
use sinter_isa::Buffer;

/// Executes `insn`, which has passed [`Instruction::validate`]; on-chip rows are therefore in
/// range. Fails (without side effects) only when a DMA reaches past the end of the DRAM.
pub(crate) fn execute(st: &mut State, insn: &Instruction) -> Result<(), String> {
    match insn {
        Instruction::Load(d) => load(st, d),
        Instruction::Store(d) => store(st, d),
        Instruction::Gemm(g) => {
            gemm::gemm(st, g);
            Ok(())
        }
        Instruction::Vec(v) => {
            vec_op(st, v);
            Ok(())
        }
        Instruction::Sync(_) => Ok(()),
    }
}

/// Checks that every element of `d` lies inside a DRAM of `size` bytes.
fn check_dram(d: &Dma, elem: usize, size: usize) -> Result<(), String> {
    let last = d.dram_base as u64
        + (d.y_size as u64 - 1) * d.y_stride as u64
        + (d.x_size as u64 - 1) * d.x_stride as u64
        + elem as u64;
    if last > size as u64 {
        return Err(format!(
            "DMA reaches DRAM byte {:#x}, beyond the {size:#x} bytes of memory",
            last - 1
        ));
    }
    Ok(())
}

/// The DRAM address of element `(y, x)`; in range once [`check_dram`] passed.
#[inline]
fn elem_addr(d: &Dma, y: usize, x: usize) -> usize {
    d.dram_base as usize + y * d.y_stride as usize + x * d.x_stride as usize
}

fn load(st: &mut State, d: &Dma) -> Result<(), String> {
    let cfg = st.cfg;
    let elem = cfg.element_bytes(d.buffer) as usize;
    check_dram(d, elem, st.dram.len())?;
    let (pt, pl) = (d.pad_top as usize, d.pad_left as usize);
    let (ys, xs) = (d.y_size as usize, d.x_size as usize);
    let w = pl + xs + d.pad_right as usize;
    let h = pt + ys + d.pad_bottom as usize;
    let base = d.sram_base as usize;
    let dram = &st.dram;
    // Each buffer as a flat slice of lanes and the lane count of one row.
    match d.buffer {
        Buffer::Acc => {
            let rows = &mut st.acc[base * (elem / 4)..(base + h * w) * (elem / 4)];
            for (py, block) in rows.chunks_exact_mut(w * elem / 4).enumerate() {
                for (px, row) in block.chunks_exact_mut(elem / 4).enumerate() {
                    if py < pt || py >= pt + ys || px < pl || px >= pl + xs {
                        row.fill(0);
                    } else {
                        let a = elem_addr(d, py - pt, px - pl);
                        for (lane, b) in row.iter_mut().zip(dram[a..a + elem].chunks_exact(4)) {
                            *lane = i32::from_le_bytes([b[0], b[1], b[2], b[3]]);
                        }
                    }
                }
            }
        }
        Buffer::Act | Buffer::Wgt => {
            let buf = if d.buffer == Buffer::Act {
                &mut st.act
            } else {
                &mut st.wgt
            };
            let rows = &mut buf[base * elem..(base + h * w) * elem];
            for (py, block) in rows.chunks_exact_mut(w * elem).enumerate() {
                for (px, row) in block.chunks_exact_mut(elem).enumerate() {
                    if py < pt || py >= pt + ys || px < pl || px >= pl + xs {
                        row.fill(d.pad_value);
                    } else {
                        let a = elem_addr(d, py - pt, px - pl);
                        for (lane, &b) in row.iter_mut().zip(&dram[a..a + elem]) {
                            *lane = b as i8;
                        }
                    }
                }
            }
        }
        // Refused by validate().
        Buffer::Out => unreachable!("load into the output buffer passed validation"),
    }
    Ok(())
}

fn store(st: &mut State, d: &Dma) -> Result<(), String> {
    let elem = st.cfg.element_bytes(Buffer::Out) as usize;
    check_dram(d, elem, st.dram.len())?;
    let (ys, xs) = (d.y_size as usize, d.x_size as usize);
    let base = d.sram_base as usize;
    let rows = &st.out[base * elem..(base + ys * xs) * elem];
    // Element order: y outer, x inner, so later elements win where they overlap.
    for (y, block) in rows.chunks_exact(xs * elem).enumerate() {
        for (x, row) in block.chunks_exact(elem).enumerate() {
            let a = elem_addr(d, y, x);
            for (b, &v) in st.dram[a..a + elem].iter_mut().zip(row) {
                *b = v as u8;
            }
        }
    }
    Ok(())
}

fn vec_op(st: &mut State, v: &VecInsn) {
    let cols = st.cfg.cols as usize;
    match v.op {
        VecOp::Requant => {
            let p = v.param as usize * cols;
            let params = &st.acc[p..p + 3 * cols];
            let (bias, rest) = params.split_at(cols);
            let (mult, shift) = rest.split_at(cols);
            for o in 0..v.n_outer as u32 {
                for i in 0..v.n_inner as u32 {
                    let s = v.src.row(o, i) as usize * cols;
                    let d = v.dst.row(o, i) as usize * cols;
                    let src = &st.acc[s..s + cols];
                    let dst = &mut st.out[d..d + cols];
                    for c in 0..cols {
                        dst[c] = requant_lane(
                            src[c],
                            bias[c],
                            mult[c],
                            shift[c],
                            v.zero_point,
                            v.clamp_lo,
                            v.clamp_hi,
                        );
                    }
                }
            }
        }
    }
}
