//! What a range of an NPU program computes, stated on DRAM tensors: a *windowed operation*.
//!
//! Every layer the compiler lowers to the NPU is one form — a reduction over windows of input
//! lane blocks through weight tiles, then a requantization — and its instructions compute
//! exactly the definition below, element by element. The compiler records each layer's
//! operation beside its instruction range in the bundle, so that a device free to compute the
//! same bytes another way (the functional model on a CPU) can run the layer as one operation
//! instead of thousands of instructions. [`WindowOp::apply`] is the definition, written plainly;
//! faster implementations are checked against it and against the instructions.
//!
//! # Definition
//!
//! For every output pixel `(n, y, x)` (of [`WindowOp::region`], or of the whole output) and
//! every output block `b` (lanes `b·cols ..` of the pixel), with `sources[b] = s₀, s₁, …`:
//!
//! ```text
//! p_k[c] = Σ_r in(s_k)[r] · tile(s_k)[r][c]                 (wrapping int32)
//! a[c]   = p_0[c], then a[c] = combine(a[c], p_k[c])       (Add: wrapping sum, Max: signed max)
//! out[c] = requant_lane(a[c], bias_b[c], mult_b[c], shift_b[c], zero_point, clamp_lo, clamp_hi)
//! ```
//!
//! where `in(s)[r]` is lane `s.block·rows + r` of input `s.input` at pixel
//! `(n, y·stride_y − pad_top + s.ky·dilation_y, x·stride_x − pad_left + s.kx·dilation_x)`, or
//! that input's `pad_value` where the pixel lies outside the image; `tile(t)` is the
//! `rows × cols` tile at `tiles_addr + t·rows·cols`; and the parameters of block `b` are the
//! three rows of `cols` int32 at `params_addr + 3·b·cols·4` (bias, multiplier, shift).
//!
//! Every input is read before any output byte is written ([`WindowOp::validate`] refuses an
//! output that overlaps an input, where the instructions' order would matter).

use crate::insn::GemmMode;
use crate::numeric::requant_lane;
use crate::HwConfig;
use serde::{Deserialize, Serialize};

/// An activation tensor in DRAM as the NPU lays it out: pixels in `(image, y, x)` order,
/// `pixel_bytes` apart, each holding its lanes (int8) from the pixel's address on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TensorView {
    pub addr: u32,
    pub images: u32,
    pub height: u32,
    pub width: u32,
    pub pixel_bytes: u32,
    /// Lanes of each pixel that belong to the tensor (`≤ pixel_bytes`).
    pub lanes: u32,
}

impl TensorView {
    /// The DRAM address of pixel `(image, y, x)`.
    pub fn pixel_addr(&self, image: u32, y: u32, x: u32) -> u64 {
        self.addr as u64
            + ((image as u64 * self.height as u64 + y as u64) * self.width as u64 + x as u64)
                * self.pixel_bytes as u64
    }

    /// The pixels of the tensor.
    pub fn pixels(&self) -> u64 {
        self.images as u64 * self.height as u64 * self.width as u64
    }

    /// DRAM bytes `lo..hi` bounding lanes `lane_lo..lane_hi` of every pixel (empty for an
    /// empty tensor).
    pub fn span(&self, lane_lo: u32, lane_hi: u32) -> (u64, u64) {
        match self.pixels() {
            0 => (self.addr as u64, self.addr as u64),
            n => (
                self.addr as u64 + lane_lo as u64,
                self.addr as u64 + (n - 1) * self.pixel_bytes as u64 + lane_hi as u64,
            ),
        }
    }
}

/// An input of a windowed operation and the value its padding reads as.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WindowInput {
    pub tensor: TensorView,
    pub pad_value: i8,
}

/// One term of an output block's reduction: lane block `block` of input `input`, shifted by
/// kernel position `(ky, kx)`, through weight tile `tile`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(from = "[u32; 5]", into = "[u32; 5]")]
pub struct WindowSource {
    pub input: u32,
    pub block: u32,
    pub tile: u32,
    pub ky: u32,
    pub kx: u32,
}

impl From<[u32; 5]> for WindowSource {
    fn from([input, block, tile, ky, kx]: [u32; 5]) -> Self {
        WindowSource {
            input,
            block,
            tile,
            ky,
            kx,
        }
    }
}

impl From<WindowSource> for [u32; 5] {
    fn from(s: WindowSource) -> Self {
        [s.input, s.block, s.tile, s.ky, s.kx]
    }
}

/// A windowed operation and the instructions of the program that compute it (see the module
/// docs for its definition).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct WindowOp {
    /// The layer it belongs to.
    pub name: String,
    /// Instructions `insn_start..insn_end` of the bundle's program compute it, and nothing else:
    /// they read and write on-chip rows only after writing them themselves.
    pub insn_start: u32,
    pub insn_end: u32,
    pub inputs: Vec<WindowInput>,
    pub output: TensorView,
    /// `[height, width]`.
    pub kernel: [u32; 2],
    pub stride: [u32; 2],
    pub dilation: [u32; 2],
    /// `[top, left, bottom, right]` (bottom and right only shape the output; pixels past the
    /// image read the pad value whatever they are).
    pub pads: [u32; 4],
    /// Per output block, its reduction.
    pub sources: Vec<Vec<WindowSource>>,
    /// How the second and later terms combine (`Add` or `Max`).
    pub combine: GemmMode,
    pub tiles_addr: u32,
    pub params_addr: u32,
    pub zero_point: i8,
    pub clamp_lo: i8,
    pub clamp_hi: i8,
    /// The output pixels `[y0, x0, height, width]` computed (`None`: all).
    pub region: Option<[u32; 4]>,
}

/// Rows of int32 parameters per output block: bias, multiplier, shift.
pub const PARAM_ROWS: u32 = 3;

impl WindowOp {
    /// The output pixels computed, as `[y0, x0, height, width]`.
    pub fn out_region(&self) -> [u32; 4] {
        self.region
            .unwrap_or([0, 0, self.output.height, self.output.width])
    }

    /// The input pixel row (or column, `axis` 1) source `s` reads for output row (column) `o`,
    /// which may lie outside the image.
    pub fn input_coord(&self, axis: usize, o: u32, k: u32) -> i64 {
        o as i64 * self.stride[axis] as i64 - self.pads[axis] as i64
            + k as i64 * self.dilation[axis] as i64
    }

    /// DRAM bytes `lo..hi` the output bytes lie in.
    pub fn out_span(&self, cfg: &HwConfig) -> (u64, u64) {
        let [y0, x0, h, w] = self.out_region();
        let lanes = self.sources.len() as u64 * cfg.cols as u64;
        if h == 0 || w == 0 || self.output.images == 0 || lanes == 0 {
            return (self.output.addr as u64, self.output.addr as u64);
        }
        let o = &self.output;
        (
            o.pixel_addr(0, y0, x0),
            o.pixel_addr(o.images - 1, y0 + h - 1, x0 + w - 1) + lanes,
        )
    }

    /// DRAM bytes `lo..hi` of the weight tiles and parameters (what [`WindowOp::apply`] reads
    /// besides the inputs).
    pub fn constant_spans(&self, cfg: &HwConfig) -> [(u64, u64); 2] {
        let tile_bytes = (cfg.rows * cfg.cols) as u64;
        let tiles = self
            .sources
            .iter()
            .flatten()
            .map(|s| s.tile as u64 + 1)
            .max()
            .unwrap_or(0);
        let params = self.sources.len() as u64 * (PARAM_ROWS * cfg.cols * 4) as u64;
        [
            (
                self.tiles_addr as u64,
                self.tiles_addr as u64 + tiles * tile_bytes,
            ),
            (self.params_addr as u64, self.params_addr as u64 + params),
        ]
    }

    /// Parameter row `row` (0 bias, 1 multiplier, 2 shift) of output block `block` at lane
    /// `lane`, read from `dram` (which must hold the parameters: see [`WindowOp::validate`]).
    pub fn param(&self, cfg: &HwConfig, dram: &[u8], block: usize, row: usize, lane: usize) -> i32 {
        let cols = cfg.cols as usize;
        let a = self.params_addr as usize + ((block * PARAM_ROWS as usize + row) * cols + lane) * 4;
        i32::from_le_bytes([dram[a], dram[a + 1], dram[a + 2], dram[a + 3]])
    }

    /// Checks that the operation is well formed and reads and writes only DRAM bytes below
    /// `dram_bytes`, and that its output overlaps none of its inputs.
    pub fn validate(&self, cfg: &HwConfig, dram_bytes: u64) -> Result<(), String> {
        let (rows, cols) = (cfg.rows, cfg.cols);
        if self.stride.contains(&0) || self.dilation.contains(&0) {
            return Err("zero stride or dilation".into());
        }
        if !matches!(self.combine, GemmMode::Add | GemmMode::Max) {
            return Err(format!("combine mode {:?}", self.combine));
        }
        let [y0, x0, h, w] = self.out_region();
        if y0 as u64 + h as u64 > self.output.height as u64
            || x0 as u64 + w as u64 > self.output.width as u64
        {
            return Err("the region lies outside the output".into());
        }
        let out_lanes = self.sources.len() as u64 * cols as u64;
        if out_lanes > self.output.pixel_bytes as u64 {
            return Err(format!(
                "{} output blocks do not fit {}-byte pixels",
                self.sources.len(),
                self.output.pixel_bytes
            ));
        }
        let fits = |(lo, hi): (u64, u64), what: &str| {
            if hi > dram_bytes || lo > hi {
                Err(format!("{what} ({lo:#x}..{hi:#x}) lies outside the DRAM"))
            } else {
                Ok(())
            }
        };
        let out = self.out_span(cfg);
        fits(out, "the output")?;
        for (i, span) in self.constant_spans(cfg).into_iter().enumerate() {
            fits(span, ["the weight tiles", "the parameters"][i])?;
        }
        for (b, srcs) in self.sources.iter().enumerate() {
            if srcs.is_empty() {
                return Err(format!("output block {b} has no sources"));
            }
            for s in srcs {
                let Some(input) = self.inputs.get(s.input as usize) else {
                    return Err(format!("source of block {b} reads input {}", s.input));
                };
                if s.ky >= self.kernel[0] || s.kx >= self.kernel[1] {
                    return Err(format!("source of block {b} lies outside the kernel"));
                }
                let lane_hi = (s.block as u64 + 1) * rows as u64;
                if lane_hi > input.tensor.pixel_bytes as u64 {
                    return Err(format!(
                        "source of block {b} reads lanes past a {}-byte pixel",
                        input.tensor.pixel_bytes
                    ));
                }
                if input.tensor.images < self.output.images {
                    return Err(format!("input {} has fewer images", s.input));
                }
            }
        }
        for (i, input) in self.inputs.iter().enumerate() {
            let lanes = self.lanes_read(i as u32, rows);
            fits(input.tensor.span(0, lanes), &format!("input {i}"))?;
            if self.output_overlaps(&input.tensor, lanes, out_lanes as u32) {
                return Err(format!("the output overlaps input {i}"));
            }
        }
        Ok(())
    }

    /// The most lanes the sources read of any input's pixels.
    pub fn input_lanes_max(&self, rows: u32) -> u32 {
        (0..self.inputs.len() as u32)
            .map(|i| self.lanes_read(i, rows))
            .max()
            .unwrap_or(0)
    }

    /// Lanes `0..n` of input `input`'s pixels hold every lane the sources read (0: none).
    pub fn lanes_read(&self, input: u32, rows: u32) -> u32 {
        self.sources
            .iter()
            .flatten()
            .filter(|s| s.input == input)
            .map(|s| (s.block + 1) * rows)
            .max()
            .unwrap_or(0)
    }

    /// Whether the output's lanes may share a byte with lanes `0..lanes` of `input`: beyond
    /// disjoint bounding ranges, tensors on the same pixel grid (a concatenation's slices)
    /// are apart when their lanes are.
    fn output_overlaps(&self, input: &TensorView, lanes: u32, out_lanes: u32) -> bool {
        let (o, i) = (&self.output, input);
        let (ilo, ihi) = i.span(0, lanes);
        let (olo, ohi) = o.span(0, out_lanes);
        if lanes == 0 || out_lanes == 0 || ihi <= olo || ohi <= ilo {
            return false;
        }
        let p = i.pixel_bytes as i64;
        if o.pixel_bytes as i64 != p || p == 0 {
            return true;
        }
        // The output's lanes start `d` bytes into the input's pixel grid.
        let d = (o.addr as i64 - i.addr as i64).rem_euclid(p);
        !(d >= lanes as i64 && d + out_lanes as i64 <= p)
    }

    /// Computes the operation on `dram` by its definition, one lane at a time (see the module
    /// docs). `self` must have passed [`WindowOp::validate`] for `dram.len()`.
    pub fn apply(&self, cfg: &HwConfig, dram: &mut [u8]) {
        let (rows, cols) = (cfg.rows as usize, cfg.cols as usize);
        let [y0, x0, h, w] = self.out_region();
        // The inputs are read before any output is written; they do not overlap it.
        let mut results = Vec::new();
        for n in 0..self.output.images {
            for y in y0..y0 + h {
                for x in x0..x0 + w {
                    for (b, srcs) in self.sources.iter().enumerate() {
                        let mut acc = vec![0i32; cols];
                        for (k, s) in srcs.iter().enumerate() {
                            let t = &self.inputs[s.input as usize];
                            let (iy, ix) =
                                (self.input_coord(0, y, s.ky), self.input_coord(1, x, s.kx));
                            let inside = (0..t.tensor.height as i64).contains(&iy)
                                && (0..t.tensor.width as i64).contains(&ix);
                            let lane = |r: usize| -> i32 {
                                if inside {
                                    let a = t.tensor.pixel_addr(n, iy as u32, ix as u32) as usize
                                        + s.block as usize * rows
                                        + r;
                                    dram[a] as i8 as i32
                                } else {
                                    t.pad_value as i32
                                }
                            };
                            let tile = self.tiles_addr as usize + s.tile as usize * rows * cols;
                            for (c, a) in acc.iter_mut().enumerate() {
                                let p = (0..rows).fold(0i32, |sum, r| {
                                    sum.wrapping_add(
                                        lane(r)
                                            .wrapping_mul(dram[tile + r * cols + c] as i8 as i32),
                                    )
                                });
                                *a = if k == 0 { p } else { self.combine.apply(*a, p) };
                            }
                        }
                        let at = self.output.pixel_addr(n, y, x) as usize + b * cols;
                        for (c, &a) in acc.iter().enumerate() {
                            let p = |row: usize| self.param(cfg, dram, b, row, c);
                            let v = requant_lane(
                                a,
                                p(0),
                                p(1),
                                p(2),
                                self.zero_point,
                                self.clamp_lo,
                                self.clamp_hi,
                            );
                            results.push((at + c, v as u8));
                        }
                    }
                }
            }
        }
        for (a, v) in results {
            dram[a] = v;
        }
    }
}
