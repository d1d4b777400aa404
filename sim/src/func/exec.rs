//! Semantics of the DMA instructions.

use super::State;
use sinter_isa::insn::Dma;
use sinter_isa::Buffer;

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

/// Runs load `d`; fails (without side effects) only when it reaches past the end of the DRAM.
pub(crate) fn load(st: &mut State, d: &Dma) -> Result<(), String> {
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
            let contiguous = d.x_stride as usize == elem;
            for (py, block) in rows.chunks_exact_mut(w * elem).enumerate() {
                if py < pt || py >= pt + ys {
                    block.fill(d.pad_value);
                    continue;
                }
                let (left, rest) = block.split_at_mut(pl * elem);
                let (mid, right) = rest.split_at_mut(xs * elem);
                left.fill(d.pad_value);
                right.fill(d.pad_value);
                if contiguous {
                    // The common case: whole pixels back to back, one copy per row.
                    let a = elem_addr(d, py - pt, 0);
                    for (lane, &b) in mid.iter_mut().zip(&dram[a..a + xs * elem]) {
                        *lane = b as i8;
                    }
                } else {
                    for (px, row) in mid.chunks_exact_mut(elem).enumerate() {
                        let a = elem_addr(d, py - pt, px);
                        copy_element(as_bytes_mut(row), &dram[a..a + elem]);
                    }
                }
            }
        }
        // Refused by validate().
        Buffer::Out => unreachable!("load into the output buffer passed validation"),
    }
    if d.buffer == Buffer::Wgt {
        for py in 0..h {
            for px in 0..w {
                let inside = py >= pt && py < pt + ys && px >= pl && px < pl + xs;
                st.wgt_src[base + py * w + px] =
                    inside.then(|| elem_addr(d, py - pt, px - pl) as u32);
            }
        }
    }
    Ok(())
}

/// Checks that store `d` stays inside the DRAM and notes the bytes it writes as written (the
/// model forgets what it derived from them); does this before the store's data moves.
pub(crate) fn note_store(st: &mut State, d: &Dma) -> Result<(), String> {
    let elem = st.cfg.element_bytes(Buffer::Out) as usize;
    check_dram(d, elem, st.dram.len())?;
    let (ys, xs) = (d.y_size as usize, d.x_size as usize);
    let lo = d.dram_base as usize;
    let hi = elem_addr(d, ys - 1, xs - 1) + elem;
    st.note_written(lo, hi);
    Ok(())
}

/// Passes the elements of store `d` from `rows` (the output buffer from row `d.sram_base`
/// on) to `put` with their DRAM addresses, in the order the hardware writes them: y outer, x
/// inner, so later elements win where they overlap.
pub(crate) fn store_elements(d: &Dma, elem: usize, rows: &[i8], mut put: impl FnMut(usize, &[u8])) {
    let (ys, xs) = (d.y_size as usize, d.x_size as usize);
    let rows = &rows[..ys * xs * elem];
    for (y, block) in rows.chunks_exact(xs * elem).enumerate() {
        for (x, row) in block.chunks_exact(elem).enumerate() {
            put(elem_addr(d, y, x), as_bytes(row));
        }
    }
}

/// Int8 lanes as the bytes they are.
fn as_bytes(v: &[i8]) -> &[u8] {
    // SAFETY: i8 and u8 have the same size and alignment and share every bit pattern.
    unsafe { std::slice::from_raw_parts(v.as_ptr().cast(), v.len()) }
}

fn as_bytes_mut(v: &mut [i8]) -> &mut [u8] {
    // SAFETY: as in `as_bytes`; the borrow is exclusive.
    unsafe { std::slice::from_raw_parts_mut(v.as_mut_ptr().cast(), v.len()) }
}

/// Copies one DMA element (a pixel's lane block, usually 8–64 bytes): fixed-size moves for the
/// common sizes instead of a byte loop or a `memcpy` call per element.
#[inline(always)]
pub(crate) fn copy_element(dst: &mut [u8], src: &[u8]) {
    fn fixed<const N: usize>(dst: &mut [u8], src: &[u8]) -> bool {
        match (<&mut [u8; N]>::try_from(dst), <&[u8; N]>::try_from(src)) {
            (Ok(d), Ok(s)) => {
                *d = *s;
                true
            }
            _ => false,
        }
    }
    let done = match dst.len() {
        8 => fixed::<8>(dst, src),
        16 => fixed::<16>(dst, src),
        32 => fixed::<32>(dst, src),
        64 => fixed::<64>(dst, src),
        _ => false,
    };
    if !done {
        dst.copy_from_slice(src);
    }
}
