//! The vector unit's requantization of accumulator rows, the second-hottest loop of the
//! functional model after the GEMM.
//!
//! Every lane is [`requant_lane`], the one definition the RTL and the compiler share. With AVX2
//! (detected at run time) eight lanes go at once through the same integer steps: the 64-bit
//! product of the biased accumulator and the multiplier, the rounding shift (half away from
//! zero), the zero point and the clamp. Two shortcuts keep it exact:
//!
//! - The result is clamped to `[lo, hi] ⊂ [-128, 127]` at the end, and every step after the
//!   shift is monotone, so clamping the shifted value to `±2^16` first changes nothing; after
//!   that the zero point cannot overflow and 32-bit lanes suffice.
//! - AVX2 has no 64-bit arithmetic right shift; `x >> s` is `!((!x) >>> s)` for negative `x`.

use sinter_isa::numeric::{requant_lane, MAX_SHIFT};

/// Requantization constants of one instruction: per-lane bias, multiplier and shift, and the
/// output zero point and clamp.
pub(crate) struct Params<'a> {
    pub bias: &'a [i32],
    pub mult: &'a [i32],
    pub shift: &'a [i32],
    pub zero_point: i8,
    pub lo: i8,
    pub hi: i8,
}

/// Requantizes one accumulator row (`src`, one value per lane) into `dst`.
#[inline]
pub(crate) fn row(p: &Params, src: &[i32], dst: &mut [i8]) {
    #[cfg(target_arch = "x86_64")]
    if src.len().is_multiple_of(8) && is_x86_feature_detected!("avx2") {
        // SAFETY: the CPU has AVX2; the lanes come in whole groups of eight.
        unsafe { row_avx2(p, src, dst) };
        return;
    }
    row_scalar(p, src, dst);
}

fn row_scalar(p: &Params, src: &[i32], dst: &mut [i8]) {
    for (c, (d, &a)) in dst.iter_mut().zip(src).enumerate() {
        *d = requant_lane(
            a,
            p.bias[c],
            p.mult[c],
            p.shift[c],
            p.zero_point,
            p.lo,
            p.hi,
        );
    }
}

/// # Safety
/// The CPU must have AVX2; `src`, `dst` and the parameter lanes must hold a multiple of 8 lanes,
/// the parameters at least as many as `src`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn row_avx2(p: &Params, src: &[i32], dst: &mut [i8]) {
    use std::arch::x86_64::*;
    let n = src.len();
    assert!(dst.len() >= n && p.bias.len() >= n && p.mult.len() >= n && p.shift.len() >= n);
    let load = |v: &[i32], at: usize| {
        // SAFETY: at + 8 ≤ n ≤ v.len().
        unsafe { _mm256_loadu_si256(v.as_ptr().add(at).cast()) }
    };
    let zero = _mm256_setzero_si256();
    let one = _mm256_set1_epi64x(1);
    let limit = 1i64 << 16;
    let (big, small) = (_mm256_set1_epi64x(limit), _mm256_set1_epi64x(-limit));
    let low32 = _mm256_set1_epi64x(0xFFFF_FFFF);
    let zp = _mm256_set1_epi32(p.zero_point as i32);
    let (lo, hi) = (
        _mm256_set1_epi32(p.lo as i32),
        _mm256_set1_epi32(p.hi as i32),
    );
    // round(x · 2^-s) half away from zero, clamped to ±2^16, for four 64-bit lanes.
    let round_shift = |x: __m256i, s: __m256i| {
        let neg = _mm256_cmpgt_epi64(zero, x);
        // 2^(s-1) − (x < 0), or 0 when s = 0 (a shift count past 63 gives 0).
        let half = _mm256_sllv_epi64(one, _mm256_sub_epi64(s, one));
        let keep = _mm256_cmpeq_epi64(s, zero);
        let q = _mm256_add_epi64(x, _mm256_andnot_si256(keep, _mm256_add_epi64(half, neg)));
        let sign = _mm256_cmpgt_epi64(zero, q);
        let r = _mm256_xor_si256(_mm256_srlv_epi64(_mm256_xor_si256(q, sign), s), sign);
        let r = _mm256_blendv_epi8(r, big, _mm256_cmpgt_epi64(r, big));
        _mm256_blendv_epi8(r, small, _mm256_cmpgt_epi64(small, r))
    };
    for at in (0..n).step_by(8) {
        let x = _mm256_add_epi32(load(src, at), load(p.bias, at));
        let m = load(p.mult, at);
        let s = _mm256_min_epu32(load(p.shift, at), _mm256_set1_epi32(MAX_SHIFT as i32));
        // Even lanes in the low halves of the 64-bit lanes, odd lanes moved there.
        let even = round_shift(_mm256_mul_epi32(x, m), _mm256_and_si256(s, low32));
        let odd = round_shift(
            _mm256_mul_epi32(_mm256_srli_epi64(x, 32), _mm256_srli_epi64(m, 32)),
            _mm256_srli_epi64(s, 32),
        );
        let r = _mm256_blend_epi32(even, _mm256_slli_epi64(odd, 32), 0b1010_1010);
        let v = _mm256_min_epi32(_mm256_max_epi32(_mm256_add_epi32(r, zp), lo), hi);
        // Eight int32 in [-128, 127] to bytes: the saturating packs are exact here.
        let w = _mm256_packs_epi32(v, v);
        let b = _mm256_packs_epi16(w, w);
        let bytes = [
            _mm256_cvtsi256_si32(b).to_le_bytes(),
            _mm256_extract_epi32(b, 4).to_le_bytes(),
        ];
        for (d, v) in dst[at..at + 8].iter_mut().zip(bytes.iter().flatten()) {
            *d = *v as i8;
        }
    }
}

/// The requantization constants of 16 lanes (the parameters' lanes `at..at + 16`) prepared
/// for AVX-512: [`Lanes16::apply`] takes the steps of [`row_avx2`] with the 64-bit arithmetic
/// shift and clamps AVX-512 has. A block of pixels shares one set.
#[cfg(target_arch = "x86_64")]
#[derive(Clone, Copy)]
pub(crate) struct Lanes16 {
    bias: std::arch::x86_64::__m512i,
    /// Multipliers of the even lanes and (moved down) of the odd lanes, as 64-bit lanes.
    mult: [std::arch::x86_64::__m512i; 2],
    shift: [std::arch::x86_64::__m512i; 2],
    /// `2^(s−1)`, or 0 where `s` = 0 (no rounding), per 64-bit lane.
    half: [std::arch::x86_64::__m512i; 2],
    zero_point: std::arch::x86_64::__m512i,
    lo: std::arch::x86_64::__m512i,
    hi: std::arch::x86_64::__m512i,
}

#[cfg(target_arch = "x86_64")]
impl Lanes16 {
    /// # Safety
    /// The CPU must have AVX-512F.
    #[target_feature(enable = "avx512f")]
    #[inline]
    pub(crate) unsafe fn new(p: &Params, at: usize) -> Lanes16 {
        use std::arch::x86_64::*;
        assert!(p.bias.len() >= at + 16 && p.mult.len() >= at + 16 && p.shift.len() >= at + 16);
        let load = |v: &[i32]| {
            // SAFETY: 16 lanes from `at` (asserted above).
            unsafe { _mm512_loadu_si512(v.as_ptr().add(at).cast()) }
        };
        let m = load(p.mult);
        let s = _mm512_min_epu32(load(p.shift), _mm512_set1_epi32(MAX_SHIFT as i32));
        let low32 = _mm512_set1_epi64(0xFFFF_FFFF);
        let shift = [_mm512_and_si512(s, low32), _mm512_srli_epi64(s, 32)];
        let one = _mm512_set1_epi64(1);
        let half = shift.map(|s| {
            let keep = _mm512_cmpeq_epi64_mask(s, _mm512_setzero_si512());
            _mm512_maskz_sllv_epi64(!keep, one, _mm512_sub_epi64(s, one))
        });
        Lanes16 {
            bias: load(p.bias),
            mult: [m, _mm512_srli_epi64(m, 32)],
            shift,
            half,
            zero_point: _mm512_set1_epi32(p.zero_point as i32),
            lo: _mm512_set1_epi32(p.lo as i32),
            hi: _mm512_set1_epi32(p.hi as i32),
        }
    }

    /// Requantizes 16 accumulator lanes into 16 bytes.
    ///
    /// # Safety
    /// The CPU must have AVX-512F.
    #[target_feature(enable = "avx512f")]
    #[inline]
    pub(crate) unsafe fn apply(&self, x: std::arch::x86_64::__m512i) -> std::arch::x86_64::__m128i {
        use std::arch::x86_64::*;
        let x = _mm512_add_epi32(x, self.bias);
        let limit = 1i64 << 16;
        // round(x · 2^-s) half away from zero (the rounding term less one for negative
        // products), clamped to ±2^16, for eight 64-bit lanes.
        let round_shift = |v: __m512i, k: usize| {
            let bias = _mm512_add_epi64(self.half[k], _mm512_srai_epi64(v, 63));
            let bias = _mm512_maskz_mov_epi64(
                _mm512_cmpneq_epi64_mask(self.half[k], _mm512_setzero_si512()),
                bias,
            );
            let r = _mm512_srav_epi64(_mm512_add_epi64(v, bias), self.shift[k]);
            _mm512_max_epi64(
                _mm512_min_epi64(r, _mm512_set1_epi64(limit)),
                _mm512_set1_epi64(-limit),
            )
        };
        let even = round_shift(_mm512_mul_epi32(x, self.mult[0]), 0);
        let odd = round_shift(_mm512_mul_epi32(_mm512_srli_epi64(x, 32), self.mult[1]), 1);
        let r = _mm512_mask_blend_epi32(0xAAAA, even, _mm512_slli_epi64(odd, 32));
        let v = _mm512_add_epi32(r, self.zero_point);
        // min after max: an inverted clamp yields `hi`, as the definition does.
        let v = _mm512_min_epi32(_mm512_max_epi32(v, self.lo), self.hi);
        _mm512_cvtepi32_epi8(v)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_agree_with_the_lane_definition() {
        use rand::{rngs::StdRng, Rng, SeedableRng};
        let mut rng = StdRng::seed_from_u64(0x9E37_79B9);
        let mut rnd = move || rng.gen::<u32>();
        let edges = [
            i32::MIN,
            i32::MIN + 1,
            -1,
            0,
            1,
            i32::MAX,
            1 << 30,
            -(1 << 30),
        ];
        for round in 0..3000 {
            let n = 16;
            // A random lane value: often an edge, often small, else anything.
            let pick = |r: u32| -> i32 {
                if r.is_multiple_of(4) {
                    edges[(r / 4) as usize % edges.len()]
                } else if r.is_multiple_of(3) {
                    (r as i32) >> (r % 24)
                } else {
                    r as i32
                }
            };
            // Three regimes: the compiler's (multiplier in [2^30, 2^31), shift bringing the
            // result near the int8 range), small values with small shifts (rounding and the
            // zero shift visible in the output), and anything (edges, saturation, huge shifts).
            let small = |r: u32, m: i32| (r % (2 * m as u32 + 1)) as i32 - m;
            let (src, bias, mult, shift): (Vec<i32>, Vec<i32>, Vec<i32>, Vec<i32>) = match round % 3
            {
                0 => (
                    (0..n).map(|_| small(rnd(), 1 << 20)).collect(),
                    (0..n).map(|_| small(rnd(), 1 << 16)).collect(),
                    (0..n).map(|_| (1 << 30) + (rnd() >> 2) as i32).collect(),
                    (0..n).map(|_| 36 + (rnd() % 14) as i32).collect(),
                ),
                1 => (
                    (0..n).map(|_| small(rnd(), 300)).collect(),
                    (0..n).map(|_| small(rnd(), 50)).collect(),
                    (0..n).map(|_| small(rnd(), 3)).collect(),
                    (0..n).map(|_| (rnd() % 4) as i32).collect(),
                ),
                _ => (
                    (0..n).map(|_| pick(rnd())).collect(),
                    (0..n).map(|_| pick(rnd())).collect(),
                    (0..n).map(|_| pick(rnd())).collect(),
                    // Mostly in range, some huge or negative (read unsigned).
                    (0..n)
                        .map(|_| match rnd() % 8 {
                            0 => pick(rnd()),
                            1 => 0,
                            _ => (rnd() % 64) as i32,
                        })
                        .collect(),
                ),
            };
            let (a, b, c) = (rnd() as i8, rnd() as i8, rnd() as i8);
            // A zero point and a clamp, sometimes an inverted one.
            let (lo, hi) = if round % 7 == 0 {
                (b, c)
            } else {
                (b.min(c), b.max(c))
            };
            let p = Params {
                bias: &bias,
                mult: &mult,
                shift: &shift,
                zero_point: a,
                lo,
                hi,
            };
            let mut want = vec![0i8; n];
            row_scalar(&p, &src, &mut want);
            let mut got = vec![0i8; n];
            row(&p, &src, &mut got);
            assert_eq!(
                got, want,
                "src {src:?} bias {bias:?} mult {mult:?} shift {shift:?}"
            );
            #[cfg(target_arch = "x86_64")]
            if is_x86_feature_detected!("avx512f") {
                use std::arch::x86_64::*;
                // SAFETY: the CPU has AVX-512F; 16 lanes everywhere.
                let got: [i8; 16] = unsafe {
                    let x = _mm512_loadu_si512(src.as_ptr().cast());
                    std::mem::transmute(Lanes16::new(&p, 0).apply(x))
                };
                assert_eq!(got.as_slice(), want, "AVX-512: src {src:?} shift {shift:?}");
            }
        }
    }
}
