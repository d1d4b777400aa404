//! Operations whose every output lane reads only the same lane of its inputs: residual adds,
//! pools, lane-wise activations and copies, batch normalization as a depthwise 1×1.
//!
//! The NPU computes them through diagonal weight tiles, and the matrix kernel of `window`
//! would too, at `cols` times the work: a 16×16 tile product for 16 useful multiplies. Here
//! an operation whose tiles are all diagonal, and whose output block `b` reads block
//! `block₀ + b` of each term's input (the same input and kernel position for every block),
//! runs lane by lane instead: `a[L] = Σ_k x_k[L] · d_k[L]` (or the maximum), then the
//! requantization, 16 lanes per step. Its inputs are read in place: no padded planes, and no
//! sign flip (that is for the matrix kernel's unsigned operand).

use super::requant;
use sinter_isa::insn::GemmMode;
use sinter_isa::window::{WindowInput, WindowOp};
use sinter_isa::HwConfig;

/// Lanes per step.
const LANES: usize = 16;

/// A lane-wise operation's constants.
#[derive(Clone, Copy, Debug)]
struct LaneTerm {
    input: WindowInput,
    ky: u32,
    kx: u32,
    lane0: usize,
}

pub(crate) struct LaneWise {
    /// Per term: its input, kernel position and first lane (`block₀·rows`).
    terms: Vec<LaneTerm>,
    /// Output lanes (all blocks), a multiple of 16.
    pub lanes: usize,
    /// `[term][lane]`: the diagonal of the term's tile at each output lane.
    diag: Vec<i32>,
    bias: Vec<i32>,
    mult: Vec<i32>,
    shift: Vec<i32>,
    max: bool,
    zero_point: i8,
    lo: i8,
    hi: i8,
}

impl LaneWise {
    /// `op` as a lane-wise operation, if it is one (see the module docs); `op` must be valid
    /// for `dram`.
    pub(crate) fn detect(cfg: &HwConfig, op: &WindowOp, dram: &[u8]) -> Option<LaneWise> {
        let (rows, cols) = (cfg.rows as usize, cfg.cols as usize);
        let lanes = op.sources.len() * cols;
        if rows != cols || !lanes.is_multiple_of(LANES) {
            return None;
        }
        let first = &op.sources[0];
        let tile_at = |t: u32| op.tiles_addr as usize + t as usize * rows * cols;
        for (b, srcs) in op.sources.iter().enumerate() {
            if srcs.len() != first.len() {
                return None;
            }
            for (s, f) in srcs.iter().zip(first) {
                let same = (s.input, s.ky, s.kx) == (f.input, f.ky, f.kx)
                    && s.block as usize == f.block as usize + b;
                let tile = &dram[tile_at(s.tile)..][..rows * cols];
                let diagonal =
                    (0..rows).all(|r| (0..cols).all(|c| r == c || tile[r * cols + c] == 0));
                if !same || !diagonal {
                    return None;
                }
            }
        }
        let terms = first
            .iter()
            .map(|s| LaneTerm {
                input: op.inputs[s.input as usize],
                ky: s.ky,
                kx: s.kx,
                lane0: s.block as usize * rows,
            })
            .collect::<Vec<_>>();
        let mut diag = vec![0i32; terms.len() * lanes];
        for (b, srcs) in op.sources.iter().enumerate() {
            for (k, s) in srcs.iter().enumerate() {
                let tile = tile_at(s.tile);
                for c in 0..cols {
                    diag[k * lanes + b * cols + c] = dram[tile + c * cols + c] as i8 as i32;
                }
            }
        }
        let param = |row: usize| -> Vec<i32> {
            (0..lanes)
                .map(|lane| op.param(cfg, dram, lane / cols, row, lane % cols))
                .collect()
        };
        Some(LaneWise {
            terms,
            lanes,
            diag,
            max: op.combine == GemmMode::Max,
            bias: param(0),
            mult: param(1),
            shift: param(2),
            zero_point: op.zero_point,
            lo: op.clamp_lo,
            hi: op.clamp_hi,
        })
    }

    /// Terms of each lane's reduction.
    pub(crate) fn terms(&self) -> usize {
        self.terms.len()
    }

    fn params(&self) -> requant::Params<'_> {
        requant::Params {
            bias: &self.bias,
            mult: &self.mult,
            shift: &self.shift,
            zero_point: self.zero_point,
            lo: self.lo,
            hi: self.hi,
        }
    }

    /// Where term `k` reads output pixel `[image, y, x]`'s lanes: a DRAM address, or `None`
    /// for padding. Panics when a lane lies past `dram_len` (`validate` rules that out).
    fn source(
        &self,
        op: &WindowOp,
        k: usize,
        [img, y, x]: [usize; 3],
        dram_len: usize,
    ) -> Option<usize> {
        let t = &self.terms[k];
        let v = &t.input.tensor;
        let iy = op.input_coord(0, y as u32, t.ky);
        let ix = op.input_coord(1, x as u32, t.kx);
        if !(0..v.height as i64).contains(&iy) || !(0..v.width as i64).contains(&ix) {
            return None;
        }
        let at = v.pixel_addr(img as u32, iy as u32, ix as u32) as usize + t.lane0;
        assert!(
            at + self.lanes <= dram_len,
            "validated input lies inside the DRAM"
        );
        Some(at)
    }

    /// Computes output pixels `pixels` (`[image, y, x]`) of `op` and writes them.
    ///
    /// # Safety
    /// `dram .. + dram_len` must be valid to read, and the output pixels' lanes (which no
    /// input overlaps) written by no one else while this runs.
    pub(crate) unsafe fn run(
        &self,
        op: &WindowOp,
        pixels: &[[usize; 3]],
        dram: *mut u8,
        dram_len: usize,
        simd: bool,
    ) {
        let n = self.terms.len();
        let mut srcs = vec![None; n * pixels.len()];
        let mut outs = Vec::with_capacity(pixels.len());
        for (&px, s) in pixels.iter().zip(srcs.chunks_exact_mut(n.max(1))) {
            for (k, s) in s.iter_mut().enumerate().take(n) {
                *s = self.source(op, k, px, dram_len);
            }
            let [img, y, x] = px;
            let out = op.output.pixel_addr(img as u32, y as u32, x as u32) as usize;
            assert!(
                out + self.lanes <= dram_len,
                "validated output lies inside the DRAM"
            );
            outs.push(out);
        }
        #[cfg(target_arch = "x86_64")]
        if simd && std::arch::is_x86_feature_detected!("avx512f") {
            // SAFETY: the CPU has AVX-512F; every address was checked above.
            unsafe { self.pixels_avx512(&srcs, &outs, dram) };
            return;
        }
        let _ = simd;
        for (s, &out) in srcs.chunks_exact(n.max(1)).zip(&outs) {
            // SAFETY: every address was checked above.
            unsafe { self.pixel(&s[..n], dram, out) };
        }
    }

    /// One pixel, lane by lane: `srcs[k]` is where term `k` reads (`None`: padding).
    ///
    /// # Safety
    /// Every `srcs[k] .. + lanes` must be readable and `out .. + lanes` writable by us alone.
    unsafe fn pixel(&self, srcs: &[Option<usize>], dram: *mut u8, out: usize) {
        let params = self.params();
        let mut acc = [0i32; LANES];
        let mut bytes = [0i8; LANES];
        for c in (0..self.lanes).step_by(LANES) {
            for (k, (t, src)) in self.terms.iter().zip(srcs).enumerate() {
                let d = &self.diag[k * self.lanes + c..][..LANES];
                for (l, a) in acc.iter_mut().enumerate() {
                    let x = match src {
                        // SAFETY: lane c + l of the term's source (the caller's contract).
                        Some(at) => (unsafe { *dram.add(at + c + l) }) as i8 as i32,
                        None => t.input.pad_value as i32,
                    };
                    let p = x.wrapping_mul(d[l]);
                    *a = match (k, self.max) {
                        (0, _) => p,
                        (_, false) => a.wrapping_add(p),
                        (_, true) => (*a).max(p),
                    };
                }
            }
            let chunk = requant::Params {
                bias: &params.bias[c..],
                mult: &params.mult[c..],
                shift: &params.shift[c..],
                ..params
            };
            requant::row(&chunk, &acc, &mut bytes);
            // SAFETY: the pixel's 16 lanes from `c` (the caller's contract).
            unsafe {
                std::ptr::copy_nonoverlapping(bytes.as_ptr().cast(), dram.add(out + c), LANES)
            };
        }
    }

    /// [`LaneWise::pixel`] on AVX-512 for every pixel (`srcs` is `[pixel][term]`), 16 lanes at
    /// a time with their requantization constants prepared once.
    ///
    /// # Safety
    /// The CPU must have AVX-512F; as [`LaneWise::pixel`].
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx512f")]
    unsafe fn pixels_avx512(&self, srcs: &[Option<usize>], outs: &[usize], dram: *mut u8) {
        use std::arch::x86_64::*;
        let params = self.params();
        let n = self.terms.len();
        for c in (0..self.lanes).step_by(LANES) {
            // SAFETY: the CPU has AVX-512F; the parameters hold lanes c..c+16.
            let q = unsafe { requant::Lanes16::new(&params, c) };
            for (j, &out) in outs.iter().enumerate() {
                let mut acc = _mm512_setzero_si512();
                for (k, (t, src)) in self.terms.iter().zip(&srcs[j * n..][..n]).enumerate() {
                    let x = match src {
                        // SAFETY: 16 lanes of the term's source (the caller's contract).
                        Some(at) => unsafe {
                            _mm512_cvtepi8_epi32(_mm_loadu_si128(dram.add(at + c).cast()))
                        },
                        None => _mm512_set1_epi32(t.input.pad_value as i32),
                    };
                    let d = &self.diag[k * self.lanes + c..][..LANES];
                    // SAFETY: 16 lanes of `d`.
                    let p = _mm512_mullo_epi32(x, unsafe { _mm512_loadu_si512(d.as_ptr().cast()) });
                    acc = match (k, self.max) {
                        (0, _) => p,
                        (_, false) => _mm512_add_epi32(acc, p),
                        (_, true) => _mm512_max_epi32(acc, p),
                    };
                }
                // SAFETY: the pixel's 16 lanes from `c` are ours.
                unsafe { _mm_storeu_si128(dram.add(out + c).cast(), q.apply(acc)) };
            }
        }
    }
}
