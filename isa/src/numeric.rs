//! The arithmetic of quantized values. The compiler, the functional model and (through the
//! generated package, which names these rules) the RTL all compute exactly this.
//!
//! - Activations: int8, per tensor, affine: `real = scale · (q − zero_point)`.
//! - Weights: int8, symmetric per output channel: `real = scale[c] · q`.
//! - Accumulation: int32, wrapping.
//! - Requantization: a per-channel fixed-point multiplier `mult` (int32) and right shift `shift`
//!   (0..=62) approximate the real factor `mult · 2^-shift`; the product is formed exactly in
//!   64 bits and rounded **half away from zero**.

use serde::{Deserialize, Serialize};

/// Largest shift the requantizer applies; larger shift lanes are clamped to it.
pub const MAX_SHIFT: u32 = 62;

/// Quantization parameters of an int8 activation tensor.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct QParams {
    pub scale: f32,
    pub zero_point: i8,
}

impl QParams {
    /// Parameters that cover `[min, max]` (widened to include 0 so that zero is exact) with the
    /// full int8 range.
    /// Zero point 0 and a scale that covers `[-m, m]` with `m = max(|min|, |max|)`: for
    /// operators that need the real zero to be the integer zero.
    pub fn symmetric(min: f32, max: f32) -> QParams {
        let m = min.abs().max(max.abs());
        if !(m.is_finite() && m > 0.0) {
            return QParams {
                scale: 1.0,
                zero_point: 0,
            };
        }
        QParams {
            scale: m / 127.0,
            zero_point: 0,
        }
    }

    pub fn from_range(min: f32, max: f32) -> QParams {
        let lo = min.min(0.0);
        let hi = max.max(0.0);
        let span = hi - lo;
        if !(span.is_finite() && span > 0.0) {
            return QParams {
                scale: 1.0,
                zero_point: 0,
            };
        }
        let scale = span / 255.0;
        let zp = (-128.0 - lo / scale).round().clamp(-128.0, 127.0);
        QParams {
            scale,
            zero_point: zp as i8,
        }
    }

    /// `clamp(round_half_away(x / scale) + zero_point, -128, 127)`.
    #[inline]
    pub fn quantize(&self, x: f32) -> i8 {
        let q = (x / self.scale).round() + self.zero_point as f32;
        q.clamp(-128.0, 127.0) as i8
    }

    #[inline]
    pub fn dequantize(&self, q: i8) -> f32 {
        self.scale * (q as i32 - self.zero_point as i32) as f32
    }
}

/// Rounding right shift of an exact 64-bit product, half away from zero.
///
/// Hardware form: `(p + 2^(s-1) - (p < 0)) >>> s` (arithmetic shift), which equals
/// round-half-away-from-zero of `p / 2^s`; no bias term when `s == 0`.
#[inline]
pub fn rounding_shift(p: i64, shift: u32) -> i64 {
    let s = shift.min(MAX_SHIFT);
    if s == 0 {
        return p;
    }
    let bias = (1i64 << (s - 1)) - (p < 0) as i64;
    (p + bias) >> s
}

/// The requantizer of one lane: `sat_i32(round(acc · mult / 2^shift))`. Shift lanes are read as
/// unsigned and clamped to [`MAX_SHIFT`].
#[inline]
pub fn requantize(acc: i32, mult: i32, shift: i32) -> i32 {
    let s = (shift as u32).min(MAX_SHIFT);
    let p = acc as i64 * mult as i64;
    rounding_shift(p, s).clamp(i32::MIN as i64, i32::MAX as i64) as i32
}

/// The whole vector-unit lane of `VecOp::Requant`: bias add (wrapping), requantize, add the
/// output zero point (saturating), clamp to `[lo, hi]`. A `lo > hi` pair yields `hi`.
#[inline]
pub fn requant_lane(acc: i32, bias: i32, mult: i32, shift: i32, zp: i8, lo: i8, hi: i8) -> i8 {
    let r = requantize(acc.wrapping_add(bias), mult, shift);
    let v = r.saturating_add(zp as i32);
    v.max(lo as i32).min(hi as i32) as i8
}

/// A real factor as `(mult, shift)` with `mult · 2^-shift ≈ factor`.
///
/// `mult` is normalised into `[2^30, 2^31)` for precision. Factors too small to represent give
/// `(0, 0)` (the lane outputs its zero point); factors of 2^31 or more cannot be represented.
pub fn quantize_multiplier(factor: f64) -> Result<(i32, i32), NumericError> {
    if !factor.is_finite() || factor < 0.0 {
        return Err(NumericError::Factor(factor));
    }
    if factor == 0.0 {
        return Ok((0, 0));
    }
    // factor = m · 2^e with m in [0.5, 1).
    let mut e = factor.log2().floor() as i32 + 1;
    let mut m = factor / 2f64.powi(e);
    if m >= 1.0 {
        m /= 2.0;
        e += 1;
    }
    if m < 0.5 {
        m *= 2.0;
        e -= 1;
    }
    let mut q = (m * (1u64 << 31) as f64).round() as i64;
    if q == 1 << 31 {
        q /= 2;
        e += 1;
    }
    let shift = 31 - e;
    if shift < 0 {
        return Err(NumericError::Factor(factor));
    }
    if shift > MAX_SHIFT as i32 {
        // Shift the mantissa right to fit; tiny factors become 0.
        let extra = shift - MAX_SHIFT as i32;
        let q = if extra >= 63 { 0 } else { q >> extra };
        return Ok((q as i32, if q == 0 { 0 } else { MAX_SHIFT as i32 }));
    }
    Ok((q as i32, shift))
}

/// Numerically stable softmax of one row, in place.
pub fn softmax_in_place(row: &mut [f32]) {
    let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let mut sum = 0.0f32;
    for v in row.iter_mut() {
        *v = (*v - max).exp();
        sum += *v;
    }
    if sum > 0.0 {
        for v in row.iter_mut() {
            *v /= sum;
        }
    }
}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum NumericError {
    #[error("requantization factor {0} cannot be represented (must be finite, ≥ 0 and < 2^31)")]
    Factor(f64),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rounding_is_half_away_from_zero() {
        // p / 2 for p in -7..=7 against the float rule.
        for s in 1..5u32 {
            for p in -100i64..=100 {
                let exact = p as f64 / (1u64 << s) as f64;
                let want = exact.abs().add_half_floor() * exact.signum();
                assert_eq!(rounding_shift(p, s) as f64, want, "p={p} s={s}");
            }
        }
    }

    trait HalfFloor {
        fn add_half_floor(self) -> f64;
    }
    impl HalfFloor for f64 {
        fn add_half_floor(self) -> f64 {
            (self + 0.5).floor()
        }
    }

    #[test]
    fn multiplier_round_trips() {
        for &f in &[1.0, 0.5, 0.3, 1e-3, 7.25, 123.456, 1e-9, 0.999_999_9] {
            let (m, s) = quantize_multiplier(f).unwrap();
            let back = m as f64 / 2f64.powi(s);
            assert!((back - f).abs() / f < 1e-6, "{f} -> {m} {s} -> {back}");
        }
        assert_eq!(quantize_multiplier(0.0).unwrap(), (0, 0));
        assert!(quantize_multiplier(f64::NAN).is_err());
        assert!(quantize_multiplier(-1.0).is_err());
        assert!(quantize_multiplier(1e12).is_err());
        // Far below representable: becomes 0.
        assert_eq!(quantize_multiplier(1e-30).unwrap(), (0, 0));
    }

    #[test]
    fn requantize_matches_real_arithmetic() {
        let (m, s) = quantize_multiplier(0.0123).unwrap();
        for acc in [-100_000, -12345, -1, 0, 1, 999, 40_000, i32::MAX, i32::MIN] {
            let want = (acc as f64 * 0.0123).round();
            let got = requantize(acc, m, s) as f64;
            assert!((got - want).abs() <= 1.0, "acc={acc} got={got} want={want}");
        }
        // Saturates instead of wrapping.
        assert_eq!(requantize(i32::MAX, i32::MAX, 0), i32::MAX);
        assert_eq!(requantize(i32::MIN, i32::MAX, 0), i32::MIN);
        // Shift lanes beyond the maximum are clamped, negative ones read as huge.
        assert_eq!(
            requantize(1 << 30, 1 << 30, 100),
            requantize(1 << 30, 1 << 30, 62)
        );
        assert_eq!(
            requantize(1 << 30, 1 << 30, -1),
            requantize(1 << 30, 1 << 30, 62)
        );
    }

    #[test]
    fn lane_clamps_and_adds_zero_point() {
        let (m, s) = quantize_multiplier(1.0).unwrap();
        assert_eq!(requant_lane(10, 5, m, s, -3, -128, 127), 12);
        assert_eq!(requant_lane(1000, 0, m, s, 0, -128, 127), 127);
        assert_eq!(requant_lane(-50, 0, m, s, 0, 0, 127), 0); // ReLU
        assert_eq!(requant_lane(5, 0, m, s, 0, 10, 3), 3); // lo > hi yields hi
    }

    #[test]
    fn qparams_cover_range_and_keep_zero_exact() {
        let q = QParams::from_range(-1.0, 3.0);
        assert_eq!(q.dequantize(q.quantize(0.0)), 0.0);
        assert!((q.dequantize(q.quantize(3.0)) - 3.0).abs() <= q.scale);
        assert_eq!(q.quantize(-1.0), -128);
        assert_eq!(q.quantize(1e9), 127);
        let relu = QParams::from_range(0.0, 6.0);
        assert_eq!(relu.zero_point, -128);
    }

    #[test]
    fn softmax_sums_to_one() {
        let mut r = [1000.0f32, 1001.0, 999.0];
        softmax_in_place(&mut r);
        assert!((r.iter().sum::<f32>() - 1.0).abs() < 1e-6);
        assert!(r[1] > r[0] && r[0] > r[2]);
    }
}
