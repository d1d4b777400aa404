//! The GEMM instruction: the hot loop of the functional model.
//!
//! Once per instruction the weight tile is rearranged into *row pairs*: for each pair `k` of
//! array rows, `2·cols` int16 values `W[2k][c], W[2k+1][c]` interleaved by column. One product
//! row `Σ_r act[r]·W[r][c]` is then `R/2` multiply-add steps over contiguous memory, where each
//! step multiplies the pair `(act[2k], act[2k+1])` with every column pair and adds both products
//! into the column's int32 lane — exactly the pairwise multiply-add of SIMD units (SSE2
//! `pmaddwd`, always present on x86-64, used explicitly there; a portable loop elsewhere).
//! A single row never overflows: `|Σ| ≤ 64·128·128 < 2^31`; the accumulator update wraps.
//!
//! With AVX2 (detected at run time) the same row-pair kernel runs 8 columns per instruction,
//! two activation rows at a time so that each weight load serves both.
//!
//! On CPUs with AVX-512 VNNI (detected at run time) tiles whose height is a multiple of 4 and
//! width a multiple of 16 take a faster path: `vpdpbusd` multiplies 4 unsigned by 4 signed
//! bytes and adds the sum to an int32 lane, 64 MACs per instruction. The activations are made
//! unsigned by adding 128 (flipping the sign bit), and `128·Σ_r W[r][c]` is subtracted again at
//! the end — exact, since no partial sum leaves int32. Both vector kernels run a K-reduction
//! split over several instructions ([`fusable`]) as one, summing in registers.
//!
//! A product row depends only on the activation and weight buffers, which a GEMM never writes.
//! Large instructions therefore run in parallel: directly on the accumulator slice when the
//! accumulator walk is dense (rows `base, base+1, …` in iteration order), otherwise by computing
//! product rows in parallel blocks and applying them in iteration order — the result is always
//! that of the sequential loop, even when iterations share accumulator rows.

use super::State;
use rayon::prelude::*;
use sinter_isa::insn::{Gemm, GemmMode, Walk};
use sinter_isa::HwConfig;
use std::sync::Arc;

/// Iterations per block of a parallel GEMM over a non-dense accumulator walk.
const BLOCK: usize = 8192;
/// Smallest amount of work (in MACs) worth spreading over threads.
const PAR_MACS: usize = 1 << 18;
/// Smallest number of rows one parallel task gets.
const MIN_TASK_ROWS: usize = 256;

/// The packed weight tile GEMMs on weight slot `slot` use now: taken from (or added to) the
/// packed tiles when the slot was loaded straight from DRAM, packed afresh otherwise.
pub(crate) fn packed(st: &mut State, slot: u16) -> Arc<Pairs> {
    let (rows, cols) = (st.cfg.rows as usize, st.cfg.cols as usize);
    let e = rows * cols;
    let tile = &st.wgt[slot as usize * e..][..e];
    match st.wgt_src[slot as usize] {
        Some(addr) => {
            let (lo, hi) = st.packed_span;
            st.packed_span = (lo.min(addr as usize), hi.max(addr as usize + e));
            st.packed
                .entry(addr)
                .or_insert_with(|| Arc::new(Pairs::new(tile, rows, cols)))
                .clone()
        }
        None => Arc::new(Pairs::new(tile, rows, cols)),
    }
}

/// Whether `next` can join a group of GEMMs that starts with `first` and runs as one
/// reduction ([`run`]): the same iterations into the same accumulator rows, `next` adding to
/// them, and the group's combination with the accumulator equal to the sequence's. That holds
/// when the first instruction adds, or overwrites rows no two iterations share.
pub(crate) fn fusable(first: &Gemm, next: &Gemm) -> bool {
    let same_rows =
        (first.n_outer, first.n_inner, first.acc) == (next.n_outer, next.n_inner, next.acc);
    let first_ok = match first.mode {
        GemmMode::Add => true,
        GemmMode::Overwrite => {
            injective(&first.acc, first.n_outer as usize, first.n_inner as usize)
        }
        GemmMode::Max => false,
    };
    same_rows && next.mode == GemmMode::Add && first_ok
}

/// Runs a group of GEMMs ([`fusable`] with the first, or a single one) over the activation
/// buffer and `acc`, the accumulator rows their walks address. With the AVX2 kernel the whole
/// group's products reach each accumulator row in registers, so a K-reduction split over
/// instructions costs one accumulator update per row instead of one per instruction.
/// `parallel` allows spreading one large group over threads.
pub(crate) fn run(
    cfg: &HwConfig,
    group: &[(Gemm, Arc<Pairs>)],
    act: &[i8],
    acc: &mut [i32],
    parallel: bool,
) {
    macro_rules! dispatch {
        ($($r:literal),*; $cols:tt) => {
            match cfg.rows {
                $(
                    $r => dispatch!(@cols $r; $cols),
                )*
                r => panic!("unsupported array height {r}"),
            }
        };
        (@cols $r:literal; [$($c:literal),*]) => {
            match cfg.cols {
                $(
                    $c => run_rc::<$r, $c>(group, act, acc, parallel),
                )*
                c => panic!("unsupported array width {c}"),
            }
        };
    }
    dispatch!(4, 8, 16, 32, 64; [4, 8, 16, 32, 64])
}

/// A weight tile rearranged for the product kernels: the VNNI layout where the CPU has it,
/// else row pairs (see the module docs). Tiles loaded straight from DRAM are packed once and
/// kept by their DRAM address ([`super::State::packed`]).
pub(crate) struct Pairs {
    /// `(R/2) × 2·C` values (empty when the VNNI layout is used).
    w: Vec<i16>,
    #[cfg(target_arch = "x86_64")]
    vnni: Option<vnni::Tile>,
    /// Whether the CPU has AVX2 and the tile is a whole number of 8-column blocks wide.
    #[cfg(target_arch = "x86_64")]
    avx2: bool,
}

#[cfg(target_arch = "x86_64")]
mod vnni {
    use std::arch::x86_64::*;

    /// A weight tile laid out for `vpdpbusd`: for each group `g` of 4 rows and each block of
    /// 16 columns, 64 bytes `W[4g + j][16b + c]` at `c·4 + j`.
    pub struct Tile {
        pub(super) packed: Vec<i8>,
        /// `128·Σ_r W[r][c]` per column.
        pub(super) correction: Vec<i32>,
    }

    /// Whether this CPU has the instructions and the tile the shape.
    pub fn usable(rows: usize, cols: usize) -> bool {
        rows.is_multiple_of(4)
            && cols.is_multiple_of(16)
            && cols <= 64
            && is_x86_feature_detected!("avx512f")
            && is_x86_feature_detected!("avx512vnni")
    }

    impl Tile {
        pub fn new(tile: &[i8], rows: usize, cols: usize) -> Tile {
            let blocks = cols / 16;
            let mut packed = vec![0i8; rows * cols];
            for r in 0..rows {
                for c in 0..cols {
                    let (g, j, b, cc) = (r / 4, r % 4, c / 16, c % 16);
                    packed[(g * blocks + b) * 64 + cc * 4 + j] = tile[r * cols + c];
                }
            }
            let correction = (0..cols)
                .map(|c| 128 * (0..rows).map(|r| tile[r * cols + c] as i32).sum::<i32>())
                .collect();
            Tile { packed, correction }
        }

        /// `out[c] = Σ_r act[r]·W[r][c]`.
        ///
        /// # Safety
        /// The CPU must have AVX-512F and AVX-512 VNNI ([`usable`]); `act` holds the tile's
        /// rows and `out` its columns.
        #[target_feature(enable = "avx512f,avx512vnni")]
        pub unsafe fn product(&self, act: &[i8], out: &mut [i32]) {
            let blocks = out.len() / 16;
            let mut acc = [_mm512_setzero_si512(); 4];
            for (g, a4) in act.chunks_exact(4).enumerate() {
                // Flipping the sign bit adds 128: the unsigned operand of vpdpbusd.
                let a = u32::from_le_bytes([a4[0] as u8, a4[1] as u8, a4[2] as u8, a4[3] as u8])
                    ^ 0x8080_8080;
                let a = _mm512_set1_epi32(a as i32);
                for (b, acc) in acc.iter_mut().enumerate().take(blocks) {
                    // SAFETY: (g·blocks + b)·64 + 64 ≤ rows·cols bytes of `packed`.
                    let w = unsafe {
                        _mm512_loadu_si512(self.packed.as_ptr().add((g * blocks + b) * 64).cast())
                    };
                    *acc = _mm512_dpbusd_epi32(*acc, a, w);
                }
            }
            for (b, acc) in acc.iter().enumerate().take(blocks) {
                // SAFETY: 16 int32 at 16·b < cols of `correction` and `out`.
                unsafe {
                    let corr = _mm512_loadu_si512(self.correction.as_ptr().add(16 * b).cast());
                    _mm512_storeu_si512(
                        out.as_mut_ptr().add(16 * b).cast(),
                        _mm512_sub_epi32(*acc, corr),
                    );
                }
            }
        }
    }
}

impl Pairs {
    pub(crate) fn new(tile: &[i8], rows: usize, cols: usize) -> Self {
        #[cfg(target_arch = "x86_64")]
        if vnni::usable(rows, cols) {
            return Pairs {
                w: Vec::new(),
                vnni: Some(vnni::Tile::new(tile, rows, cols)),
                avx2: false,
            };
        }
        Self::row_pairs(tile, rows, cols)
    }

    fn row_pairs(tile: &[i8], rows: usize, cols: usize) -> Self {
        let mut w = vec![0i16; rows * cols];
        for (r, wrow) in tile.chunks_exact(cols).enumerate() {
            let k = r / 2;
            for (c, &v) in wrow.iter().enumerate() {
                w[k * 2 * cols + 2 * c + r % 2] = v as i16;
            }
        }
        Pairs {
            w,
            #[cfg(target_arch = "x86_64")]
            vnni: None,
            #[cfg(target_arch = "x86_64")]
            avx2: cols.is_multiple_of(8) && cols <= 64 && is_x86_feature_detected!("avx2"),
        }
    }

    /// `out[c] = Σ_r act[r]·W[r][c]` for one activation row of `R` lanes.
    #[inline(always)]
    fn product<const R: usize, const C: usize>(&self, act: &[i8], out: &mut [i32]) {
        let act: &[i8; R] = act.try_into().expect("activation row");
        let out: &mut [i32; C] = out.try_into().expect("accumulator row");
        #[cfg(target_arch = "x86_64")]
        {
            match &self.vnni {
                // SAFETY: the tile exists only when the CPU has the instructions.
                Some(t) => unsafe { t.product(act, out) },
                // SAFETY: `avx2` is set only when the CPU has it.
                None if self.avx2 => unsafe { self.product_avx2::<R, C>(act, out) },
                None => self.product_sse2(act, out),
            }
        }
        #[cfg(not(target_arch = "x86_64"))]
        {
            self.product_portable(act, out)
        }
    }

    #[cfg_attr(target_arch = "x86_64", allow(dead_code))]
    #[inline(always)]
    fn product_portable<const R: usize, const C: usize>(&self, act: &[i8; R], out: &mut [i32; C]) {
        out.fill(0);
        for (k, wk) in self.w.chunks_exact(2 * C).enumerate() {
            let a0 = act[2 * k] as i32;
            let a1 = act[2 * k + 1] as i32;
            for (o, w) in out.iter_mut().zip(wk.chunks_exact(2)) {
                *o += a0 * w[0] as i32 + a1 * w[1] as i32;
            }
        }
    }

    /// The row-pair kernel 8 columns at a time (`vpmaddwd` on 256-bit registers).
    ///
    /// # Safety
    /// The CPU must have AVX2, and `C` must be a multiple of 8 no larger than 64.
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2")]
    unsafe fn product_avx2<const R: usize, const C: usize>(
        &self,
        act: &[i8; R],
        out: &mut [i32; C],
    ) {
        use std::arch::x86_64::*;
        // SAFETY: as `accumulate_avx2` (Q = C/8 in each arm); `out` holds C int32 values,
        // written 8 at a time at 8q + 8 ≤ C.
        unsafe fn one<const R: usize, const C: usize, const Q: usize>(
            w: &Pairs,
            act: &[i8; R],
            out: &mut [i32; C],
        ) {
            unsafe {
                let mut s = [[_mm256_setzero_si256(); Q]; 1];
                w.accumulate_avx2::<R, C, 1, Q>(&mut s, [act]);
                let o = out.as_mut_ptr() as *mut __m256i;
                for (q, sq) in s[0].iter().enumerate() {
                    _mm256_storeu_si256(o.add(q), *sq);
                }
            }
        }
        unsafe {
            match C {
                8 => one::<R, C, 1>(self, act, out),
                16 => one::<R, C, 2>(self, act, out),
                32 => one::<R, C, 4>(self, act, out),
                _ => one::<R, C, 8>(self, act, out),
            }
        }
    }

    /// Adds `NR` product rows into `s`, in registers: columns `8q .. 8q+8` of row `r` in
    /// element `[r][q]`; `Q` is `C/8`. Sixteen activation lanes at a time are widened to
    /// int16 once, and each 32-bit lane of the result (one activation pair) is broadcast with
    /// a lane permute; each weight load serves all `NR` rows.
    ///
    /// # Safety
    /// As [`Self::product_avx2`], and `Q = C/8`.
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2")]
    #[inline]
    unsafe fn accumulate_avx2<const R: usize, const C: usize, const NR: usize, const Q: usize>(
        &self,
        s: &mut [[std::arch::x86_64::__m256i; Q]; NR],
        acts: [&[i8; R]; NR],
    ) {
        use std::arch::x86_64::*;
        let w: &[i16] = &self.w[..R * C];
        // SAFETY: `w` holds R·C int16 values, read 16 at a time at offsets k·2C + 16q + 16 ≤
        // (R/2)·2C for k < R/2, q < Q; each activation row is read 16 bytes at a time at
        // 2k + 16 ≤ R.
        unsafe {
            // Adds activation pair `k` of each row (broadcast in `a[r]`) times weight row
            // pair `k`.
            let mut step = |k: usize, a: &[__m256i; NR]| {
                let wk = w.as_ptr().add(k * 2 * C) as *const __m256i;
                for q in 0..Q {
                    let wq = _mm256_loadu_si256(wk.add(q));
                    for (sr, ar) in s.iter_mut().zip(a) {
                        sr[q] = _mm256_add_epi32(sr[q], _mm256_madd_epi16(*ar, wq));
                    }
                }
            };
            let mut k = 0;
            while 2 * k + 16 <= R {
                let wide = acts
                    .map(|a| _mm256_cvtepi8_epi16(_mm_loadu_si128(a.as_ptr().add(2 * k).cast())));
                for j in 0..8 {
                    let idx = _mm256_set1_epi32(j as i32);
                    step(k + j, &wide.map(|v| _mm256_permutevar8x32_epi32(v, idx)));
                }
                k += 8;
            }
            while k < R / 2 {
                let pair = acts.map(|a| {
                    let lo = a[2 * k] as i16 as u16 as u32;
                    let hi = a[2 * k + 1] as i16 as u16 as u32;
                    _mm256_set1_epi32((lo | hi << 16) as i32)
                });
                step(k, &pair);
                k += 1;
            }
        }
    }

    #[cfg(target_arch = "x86_64")]
    #[inline(always)]
    fn product_sse2<const R: usize, const C: usize>(&self, act: &[i8; R], out: &mut [i32; C]) {
        use std::arch::x86_64::*;
        let w: &[i16] = &self.w[..R * C];
        // SAFETY: SSE2 is part of the x86-64 baseline. `w` holds R·C int16 values, read 8 at a
        // time at offsets k·2C + 8q + 8 ≤ (R/2)·2C for k < R/2, q < C/4; `out` holds C int32
        // values, written 4 at a time at 4q + 4 ≤ C.
        unsafe {
            let mut s = [_mm_setzero_si128(); 16];
            for k in 0..R / 2 {
                let lo = act[2 * k] as i16 as u16 as u32;
                let hi = act[2 * k + 1] as i16 as u16 as u32;
                let a = _mm_set1_epi32((lo | hi << 16) as i32);
                let wk = w.as_ptr().add(k * 2 * C) as *const __m128i;
                for (q, sq) in s.iter_mut().take(C / 4).enumerate() {
                    *sq = _mm_add_epi32(*sq, _mm_madd_epi16(a, _mm_loadu_si128(wk.add(q))));
                }
            }
            let o = out.as_mut_ptr() as *mut __m128i;
            for (q, sq) in s.iter().take(C / 4).enumerate() {
                _mm_storeu_si128(o.add(q), *sq);
            }
        }
    }
}

/// Whether the walk visits rows `base, base+1, …` in iteration order.
fn dense(w: &Walk, n_outer: usize, n_inner: usize) -> bool {
    let (so, si) = (w.stride_outer as usize, w.stride_inner as usize);
    (n_inner == 1 || si == 1) && (n_outer == 1 || so == n_inner)
}

/// Rows `walk.row(o, i)` for iterations `start, start+1, …` of an `… × n_inner` loop, without
/// a division per row.
fn walk_rows(walk: &Walk, n_inner: usize, start: usize) -> impl Iterator<Item = usize> {
    let (so, si) = (walk.stride_outer as usize, walk.stride_inner as usize);
    let (mut o, mut i) = (start / n_inner, start % n_inner);
    let base = walk.base as usize;
    std::iter::from_fn(move || {
        let r = base + o * so + i * si;
        i += 1;
        if i == n_inner {
            i = 0;
            o += 1;
        }
        Some(r)
    })
}

/// Whether no two iterations of the walk share a row.
fn injective(w: &Walk, n_outer: usize, n_inner: usize) -> bool {
    let (so, si) = (w.stride_outer as usize, w.stride_inner as usize);
    let inner_ok = n_inner == 1 || si > 0;
    inner_ok && (n_outer == 1 || so > (n_inner - 1) * si)
}

fn run_rc<const R: usize, const C: usize>(
    group: &[(Gemm, Arc<Pairs>)],
    act: &[i8],
    acc: &mut [i32],
    parallel: bool,
) {
    let g = &group[0].0;
    let n_inner = g.n_inner as usize;
    let total = g.n_outer as usize * n_inner;
    let macs = group.len() * total * R * C;
    let parallel = parallel && macs >= PAR_MACS && rayon::current_num_threads() > 1;
    let task = (total / (4 * rayon::current_num_threads())).max(MIN_TASK_ROWS);
    let dense = dense(&g.acc, g.n_outer as usize, n_inner);

    #[cfg(target_arch = "x86_64")]
    if group.iter().all(|(_, w)| w.avx2) || group.iter().all(|(_, w)| w.vnni.is_some()) {
        if parallel && dense {
            let base = g.acc.base as usize;
            acc[base * C..(base + total) * C]
                .par_chunks_mut(task * C)
                .enumerate()
                .for_each(|(t, chunk)| {
                    let start = t * task;
                    let end = start + chunk.len() / C;
                    // SAFETY: the chunk holds the rows of iterations start..end, from row
                    // base+start.
                    unsafe { fused::<R, C>(group, act, chunk, base + start, start..end) };
                });
        } else {
            // SAFETY: validated walks keep every row inside the buffers.
            unsafe { fused::<R, C>(group, act, acc, 0, 0..total) };
        }
        return;
    }
    if group.len() > 1 {
        for one in group {
            run_rc::<R, C>(std::slice::from_ref(one), act, acc, parallel);
        }
        return;
    }

    let w = &group[0].1;
    let act_rows = |start: usize| walk_rows(&g.act, n_inner, start).map(|r| &act[r * R..r * R + R]);
    if !parallel {
        let mut prod = vec![0i32; C];
        for (a, r) in act_rows(0).zip(walk_rows(&g.acc, n_inner, 0)).take(total) {
            w.product::<R, C>(a, &mut prod);
            apply(&mut acc[r * C..r * C + C], &prod, g.mode);
        }
        return;
    }
    if dense {
        let base = g.acc.base as usize * C;
        acc[base..base + total * C]
            .par_chunks_mut(task * C)
            .enumerate()
            .for_each(|(t, chunk)| {
                let mut prod = vec![0i32; C];
                for (out, a) in chunk.chunks_exact_mut(C).zip(act_rows(t * task)) {
                    w.product::<R, C>(a, &mut prod);
                    apply(out, &prod, g.mode);
                }
            });
        return;
    }
    let block = BLOCK.min(total);
    let task = task.min(block);
    let mut scratch = vec![0i32; block * C];
    let mut start = 0;
    while start < total {
        let n = block.min(total - start);
        scratch[..n * C]
            .par_chunks_mut(task * C)
            .enumerate()
            .for_each(|(t, chunk)| {
                for (out, a) in chunk.chunks_exact_mut(C).zip(act_rows(start + t * task)) {
                    w.product::<R, C>(a, out);
                }
            });
        let rows = walk_rows(&g.acc, n_inner, start);
        for (prod, r) in scratch[..n * C].chunks_exact(C).zip(rows) {
            apply(&mut acc[r * C..r * C + C], prod, g.mode);
        }
        start += n;
    }
}

/// Iterations `its` of a [`fusable`] group whose tiles all have the VNNI layout, or all the
/// AVX2 row-pair layout, on that layout's kernel; `acc` holds accumulator rows from `row0` on.
///
/// # Safety
/// Every row the walks reach must be inside `act` and `acc`.
#[cfg(target_arch = "x86_64")]
unsafe fn fused<const R: usize, const C: usize>(
    group: &[(Gemm, Arc<Pairs>)],
    act: &[i8],
    acc: &mut [i32],
    row0: usize,
    its: std::ops::Range<usize>,
) {
    // SAFETY: a tile has the VNNI layout only when the CPU has AVX-512 VNNI and the shape
    // suits it (R a multiple of 4, C of 16 up to 64); `avx2` likewise; the rows are the
    // caller's contract.
    unsafe {
        if group[0].1.vnni.is_some() {
            match C {
                16 => fused_vnni::<R, C, 8, 1>(group, act, acc, row0, its),
                32 => fused_vnni::<R, C, 4, 2>(group, act, acc, row0, its),
                _ => fused_vnni::<R, C, 2, 4>(group, act, acc, row0, its),
            }
        } else {
            fused_avx2::<R, C>(group, act, acc, row0, its)
        }
    }
}

/// The iterations of a block: `NR` consecutive `(o, i)` from `(o, i)` on (fewer at the end
/// of `its`), advancing `(o, i)` past them.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
fn next_block<const NR: usize>(
    o: &mut u32,
    i: &mut u32,
    n_inner: u32,
    n: usize,
) -> [(u32, u32); NR] {
    let mut block = [(0, 0); NR];
    for it in block.iter_mut().take(n) {
        *it = (*o, *i);
        *i += 1;
        if *i == n_inner {
            *i = 0;
            *o += 1;
        }
    }
    block
}

/// [`fused`] on AVX-512 VNNI: `NR` iterations per block, `Q = C/16` registers per row. For
/// every 4-row group of a tile, its `Q` weight registers serve the `NR` activation rows, each
/// broadcast as one (sign-flipped) int32; the group's column corrections (module docs) are
/// subtracted once, before the block's rows are combined with the accumulator in iteration
/// order. Sums wrap exactly as the sequence of instructions does.
///
/// # Safety
/// The CPU must have AVX-512F and AVX-512 VNNI, every tile of the group the VNNI layout for
/// `R × C` with `Q = C/16`, and every row the walks reach be inside `act` and `acc`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512vnni")]
unsafe fn fused_vnni<const R: usize, const C: usize, const NR: usize, const Q: usize>(
    group: &[(Gemm, Arc<Pairs>)],
    act: &[i8],
    acc: &mut [i32],
    row0: usize,
    its: std::ops::Range<usize>,
) {
    use std::arch::x86_64::*;
    let first = &group[0].0;
    let n_inner = first.n_inner as u32;
    let mode = first.mode;
    fn tile(w: &Pairs) -> &vnni::Tile {
        w.vnni.as_ref().expect("VNNI layout")
    }
    let mut correction = [_mm512_setzero_si512(); Q];
    for t in group.iter().map(|(_, w)| tile(w)) {
        for (q, c) in correction.iter_mut().enumerate() {
            // SAFETY: 16 int32 at 16q < C of the tile's corrections.
            let v = unsafe { _mm512_loadu_si512(t.correction.as_ptr().add(16 * q).cast()) };
            *c = _mm512_add_epi32(*c, v);
        }
    }
    let (mut o, mut i) = ((its.start as u32) / n_inner, (its.start as u32) % n_inner);
    let mut t = its.start;
    while t < its.end {
        let n = NR.min(its.end - t);
        let block = next_block::<NR>(&mut o, &mut i, n_inner, n);
        let mut s = [[_mm512_setzero_si512(); Q]; NR];
        for (g, w) in group {
            let tile = tile(w);
            // The activation rows, sign bits flipped (the unsigned operand), read below as
            // int32 groups of 4 lanes.
            let mut a = [[0u8; R]; NR];
            for (ar, it) in a.iter_mut().zip(&block[..n]) {
                let row = &act[g.act.row(it.0, it.1) as usize * R..][..R];
                if R.is_multiple_of(16) {
                    for (d, src) in ar.chunks_exact_mut(16).zip(row.chunks_exact(16)) {
                        // SAFETY: 16 bytes each side.
                        unsafe {
                            let v = _mm_loadu_si128(src.as_ptr().cast());
                            let v = _mm_xor_si128(v, _mm_set1_epi8(-128));
                            _mm_storeu_si128(d.as_mut_ptr().cast(), v);
                        }
                    }
                } else {
                    for (d, &x) in ar.iter_mut().zip(row) {
                        *d = x as u8 ^ 0x80;
                    }
                }
            }
            for k in 0..R / 4 {
                let mut w = [_mm512_setzero_si512(); Q];
                for (q, wq) in w.iter_mut().enumerate() {
                    // SAFETY: (k·Q + q)·64 + 64 ≤ R·C bytes of the packed tile.
                    *wq = unsafe {
                        _mm512_loadu_si512(tile.packed.as_ptr().add((k * Q + q) * 64).cast())
                    };
                }
                for (sr, ar) in s.iter_mut().zip(&a) {
                    let x = _mm512_set1_epi32(i32::from_le_bytes(
                        ar[4 * k..4 * k + 4].try_into().expect("4 lanes"),
                    ));
                    for (sq, wq) in sr.iter_mut().zip(&w) {
                        *sq = _mm512_dpbusd_epi32(*sq, x, *wq);
                    }
                }
            }
        }
        for (it, sr) in block.iter().zip(&s).take(n) {
            let r = first.acc.row(it.0, it.1) as usize - row0;
            let out = &mut acc[r * C..r * C + C];
            let p = out.as_mut_ptr();
            for (q, sq) in sr.iter().enumerate() {
                let v = _mm512_sub_epi32(*sq, correction[q]);
                // SAFETY: `out` holds C int32 values, accessed 16 at a time at 16q + 16 ≤ C.
                unsafe {
                    let at = p.add(16 * q).cast();
                    let v = match mode {
                        GemmMode::Overwrite => v,
                        GemmMode::Add => _mm512_add_epi32(_mm512_loadu_si512(at), v),
                        GemmMode::Max => _mm512_max_epi32(_mm512_loadu_si512(at), v),
                    };
                    _mm512_storeu_si512(at, v);
                }
            }
        }
        t += n;
    }
}

/// Iterations `its` of a [`fusable`] group on the AVX2 kernel, `acc` holding accumulator rows
/// from `row0` on: rows go through the kernel in pairs (one at a time at 64 columns)
/// and every instruction's products for a block are summed in registers before the block's
/// rows are combined with the accumulator, in iteration order — iterations that share an
/// accumulator row still see each other.
///
/// # Safety
/// The CPU must have AVX2, every tile of the group the row-pair layout with `C` a multiple of
/// 8 no larger than 64, and every row the walks reach be inside `act` and `acc`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn fused_avx2<const R: usize, const C: usize>(
    group: &[(Gemm, Arc<Pairs>)],
    act: &[i8],
    acc: &mut [i32],
    row0: usize,
    its: std::ops::Range<usize>,
) {
    // SAFETY: the contract is passed on; Q = C/8 and NR · Q ≤ 8 in every arm.
    unsafe {
        match C {
            8 => fused_blocks_avx2::<R, C, 2, 1>(group, act, acc, row0, its),
            16 => fused_blocks_avx2::<R, C, 2, 2>(group, act, acc, row0, its),
            32 => fused_blocks_avx2::<R, C, 2, 4>(group, act, acc, row0, its),
            _ => fused_blocks_avx2::<R, C, 1, 8>(group, act, acc, row0, its),
        }
    }
}

/// [`fused_avx2`] with `NR` rows per block; `Q` is `C/8`.
///
/// # Safety
/// As [`fused_avx2`], and `Q = C/8`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn fused_blocks_avx2<const R: usize, const C: usize, const NR: usize, const Q: usize>(
    group: &[(Gemm, Arc<Pairs>)],
    act: &[i8],
    acc: &mut [i32],
    row0: usize,
    its: std::ops::Range<usize>,
) {
    use std::arch::x86_64::*;
    let first = &group[0].0;
    let n_inner = first.n_inner as u32;
    let mode = first.mode;
    let act_row = |w: &Walk, (o, i): (u32, u32)| -> &[i8; R] {
        let a = w.row(o, i) as usize * R;
        act[a..a + R].try_into().expect("activation row")
    };
    // Combines product row `s` into the accumulator row of iteration `it`.
    let mut combine = |it: (u32, u32), s: &[__m256i; Q]| {
        let r = first.acc.row(it.0, it.1) as usize - row0;
        let out = &mut acc[r * C..r * C + C];
        let o = out.as_mut_ptr() as *mut __m256i;
        // SAFETY: `out` holds C int32 values, accessed 8 at a time at 8q + 8 ≤ C.
        unsafe {
            for (q, sq) in s.iter().enumerate() {
                let v = match mode {
                    GemmMode::Overwrite => *sq,
                    GemmMode::Add => _mm256_add_epi32(_mm256_loadu_si256(o.add(q)), *sq),
                    GemmMode::Max => _mm256_max_epi32(_mm256_loadu_si256(o.add(q)), *sq),
                };
                _mm256_storeu_si256(o.add(q), v);
            }
        }
    };
    let (mut o, mut i) = ((its.start as u32) / n_inner, (its.start as u32) % n_inner);
    let mut t = its.start;
    while t < its.end {
        let n = NR.min(its.end - t);
        let block = next_block::<NR>(&mut o, &mut i, n_inner, n);
        if n == NR {
            let mut s = [[_mm256_setzero_si256(); Q]; NR];
            for (g, w) in group {
                // SAFETY: the kernel's contract holds.
                unsafe {
                    w.accumulate_avx2::<R, C, NR, Q>(&mut s, block.map(|it| act_row(&g.act, it)))
                };
            }
            for (it, sr) in block.iter().zip(&s) {
                combine(*it, sr);
            }
        } else {
            for &it in &block[..n] {
                let mut s = [[_mm256_setzero_si256(); Q]; 1];
                for (g, w) in group {
                    // SAFETY: as above.
                    unsafe { w.accumulate_avx2::<R, C, 1, Q>(&mut s, [act_row(&g.act, it)]) };
                }
                combine(it, &s[0]);
            }
        }
        t += n;
    }
}

#[inline(always)]
fn apply(acc: &mut [i32], prod: &[i32], mode: GemmMode) {
    match mode {
        GemmMode::Overwrite => acc.copy_from_slice(prod),
        GemmMode::Add => {
            for (a, p) in acc.iter_mut().zip(prod) {
                *a = a.wrapping_add(*p);
            }
        }
        GemmMode::Max => {
            for (a, p) in acc.iter_mut().zip(prod) {
                *a = (*a).max(*p);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kernels_agree_with_the_definition() {
        use rand::{rngs::StdRng, Rng, SeedableRng};
        let mut rng = StdRng::seed_from_u64(0x1234_5678);
        let mut rnd = move || rng.gen::<i8>();
        fn check<const R: usize, const C: usize>(rnd: &mut impl FnMut() -> i8) {
            let tile: Vec<i8> = (0..R * C).map(|_| rnd()).collect();
            let mut act: Vec<i8> = (0..R).map(|_| rnd()).collect();
            act[0] = -128;
            let w = Pairs::row_pairs(&tile, R, C);
            let want: Vec<i32> = (0..C)
                .map(|c| (0..R).map(|r| act[r] as i32 * tile[r * C + c] as i32).sum())
                .collect();
            let mut got = vec![0; C];
            w.product::<R, C>(&act, &mut got);
            assert_eq!(got, want);
            let mut got = vec![0; C];
            Pairs::new(&tile, R, C).product::<R, C>(&act, &mut got);
            assert_eq!(got, want, "fastest kernel");
            let a: &[i8; R] = act[..].try_into().unwrap();
            let o: &mut [i32; C] = (&mut got[..]).try_into().unwrap();
            w.product_portable(a, o);
            assert_eq!(got, want);
            #[cfg(target_arch = "x86_64")]
            {
                let o: &mut [i32; C] = (&mut got[..]).try_into().unwrap();
                w.product_sse2(a, o);
                assert_eq!(got, want, "SSE2 kernel");
                if C.is_multiple_of(8) && is_x86_feature_detected!("avx2") {
                    got.fill(0);
                    let o: &mut [i32; C] = (&mut got[..]).try_into().unwrap();
                    // SAFETY: the CPU has AVX2 and C is a multiple of 8.
                    unsafe { w.product_avx2(a, o) };
                    assert_eq!(got, want, "AVX2 kernel");
                }
                if vnni::usable(R, C) {
                    let t = vnni::Tile::new(&tile, R, C);
                    // SAFETY: usable() checked the CPU.
                    unsafe { t.product(&act, &mut got) };
                    assert_eq!(got, want, "VNNI kernel");
                }
            }
        }
        check::<4, 4>(&mut rnd);
        check::<8, 8>(&mut rnd);
        check::<16, 16>(&mut rnd);
        check::<16, 64>(&mut rnd);
        check::<64, 4>(&mut rnd);
        check::<32, 8>(&mut rnd);
        check::<4, 16>(&mut rnd);
        check::<8, 32>(&mut rnd);
        check::<64, 64>(&mut rnd);
    }

    /// The ISA's definition of one GEMM, row by row in iteration order.
    fn reference(g: &Gemm, tile: &[i8], act: &[i8], acc: &mut [i32], r: usize, c: usize) {
        for o in 0..g.n_outer as u32 {
            for i in 0..g.n_inner as u32 {
                let a = &act[g.act.row(o, i) as usize * r..][..r];
                let out = &mut acc[g.acc.row(o, i) as usize * c..][..c];
                for (col, x) in out.iter_mut().enumerate() {
                    let p = (0..r).fold(0i32, |s, k| {
                        s.wrapping_add(a[k] as i32 * tile[k * c + col] as i32)
                    });
                    *x = g.mode.apply(*x, p);
                }
            }
        }
    }

    /// Groups of GEMMs that [`fusable`] lets run as one give what the ISA's definition gives
    /// run one by one, for every mode, for walks that share accumulator rows, and for both
    /// tile layouts this CPU has (VNNI where it has AVX-512 VNNI, row pairs always).
    #[test]
    fn fused_groups_match_the_definition() {
        use rand::{rngs::StdRng, Rng, SeedableRng};
        let mut rng = StdRng::seed_from_u64(0x5eed);
        type Pack = fn(&[i8], usize, usize) -> Pairs;
        let layouts: [(&str, Pack); 2] = [("fastest", Pairs::new), ("row pairs", Pairs::row_pairs)];
        for (layout, pack) in layouts {
            for cfg in [
                HwConfig::DEFAULT,
                HwConfig::with_array(8, 32),
                HwConfig::with_array(16, 64),
                HwConfig::with_array(32, 32),
            ] {
                let (r, c) = (cfg.rows as usize, cfg.cols as usize);
                let act: Vec<i8> = (0..64 * r).map(|_| rng.gen()).collect();
                let mut fused_any = 0;
                for _ in 0..300 {
                    let (n_outer, n_inner) = (rng.gen_range(1..4u16), rng.gen_range(1..8u16));
                    let walk = |rng: &mut StdRng| Walk {
                        base: rng.gen_range(0..8),
                        stride_outer: rng.gen_range(0..9),
                        stride_inner: rng.gen_range(0..3),
                    };
                    let acc_walk = walk(&mut rng);
                    let mut group = Vec::new();
                    for k in 0..rng.gen_range(1..5) {
                        let mode = match (k, rng.gen_range(0..4)) {
                            (0, 0) => GemmMode::Overwrite,
                            (_, 1) => GemmMode::Max,
                            _ => GemmMode::Add,
                        };
                        let g = Gemm {
                            mode,
                            n_outer,
                            n_inner,
                            acc: acc_walk,
                            act: walk(&mut rng),
                            ..Gemm::default()
                        };
                        let tile: Vec<i8> = (0..r * c).map(|_| rng.gen()).collect();
                        group.push((g, Arc::new(pack(&tile, r, c)), tile));
                    }
                    let len = (1..group.len())
                        .take_while(|&k| fusable(&group[0].0, &group[k].0))
                        .count()
                        + 1;
                    let group = &group[..len];
                    fused_any += (len > 1) as usize;
                    let init: Vec<i32> = (0..48 * c).map(|_| rng.gen_range(-1000..1000)).collect();
                    let mut want = init.clone();
                    for (g, _, tile) in group {
                        reference(g, tile, &act, &mut want, r, c);
                    }
                    let packed: Vec<_> = group.iter().map(|(g, w, _)| (*g, w.clone())).collect();
                    let mut got = init.clone();
                    run(&cfg, &packed, &act, &mut got, false);
                    assert_eq!(
                        got,
                        want,
                        "{cfg} {layout}: {:?}",
                        group.iter().map(|g| g.0).collect::<Vec<_>>()
                    );
                }
                assert!(fused_any > 50, "{cfg}: only {fused_any} groups fused");
            }
        }
    }

    #[test]
    fn dense_walks() {
        let w = |b, so, si| Walk {
            base: b,
            stride_outer: so,
            stride_inner: si,
        };
        assert!(dense(&w(3, 4, 1), 5, 4));
        assert!(dense(&w(3, 1, 0), 5, 1));
        assert!(dense(&w(3, 0, 1), 1, 7));
        assert!(dense(&w(3, 9, 9), 1, 1));
        assert!(!dense(&w(3, 1, 0), 5, 2));
        assert!(!dense(&w(3, 5, 1), 5, 4));
        assert!(!dense(&w(3, 0, 1), 2, 4));
        assert!(!dense(&w(3, 1, 2), 1, 4));
    }
}
