//! Windowed operations run as whole layers: the functional model's fast path for programs whose
//! layers come described (see [`sinter_isa::window`]).
//!
//! Run instruction by instruction, a layer moves every input window through the activation
//! buffer once per tile and sums its reduction one 16×16 tile at a time. As one operation it is
//! an int8 matrix product with the reduction in registers:
//!
//! - Each input is copied once into a *padded plane*: the pixels the windows reach, padding
//!   included, with their sign bits flipped (the unsigned operand of `vpdpbusd`, as in the GEMM
//!   kernels; `128·Σ W` is subtracted once, through the accumulators' starting value). A
//!   window's pixel is then a fixed offset from the output pixel's, with no bounds checks.
//! - Output blocks with the same reduction structure (the same inputs, blocks and kernel
//!   positions, as all blocks of a convolution have) form *groups* of up to 64 output lanes,
//!   whose weights are packed once, when the operation is prepared, in the order the kernel
//!   reads them.
//! - The kernel keeps a register block of pixels × output lanes in int32 accumulators across
//!   the whole reduction, then requantizes each pixel's lanes and writes them to DRAM.
//!
//! Tasks (a group and a run of pixels) run in parallel; each writes its own output bytes and
//! reads only the planes and the packed constants, never DRAM. Integer sums are exact and
//! wrap like the hardware's, so the order of the reduction changes nothing: the results are
//! those of [`sinter_isa::window::WindowOp::apply`] and of the instructions, bit for bit.

use super::lanewise::LaneWise;
use super::requant;
use rayon::prelude::*;
use sinter_isa::insn::GemmMode;
use sinter_isa::window::WindowOp;
use sinter_isa::HwConfig;

/// Output lanes of one group at most (four 16-lane registers per pixel).
const GROUP_LANES: usize = 64;
/// Lanes of one kernel register.
const LANES: usize = 16;
/// Smallest amount of work (in MACs) worth spreading over threads.
const PAR_MACS: u64 = 1 << 20;
/// Smallest plane (in bytes) filled by several threads.
const PAR_PLANE_BYTES: usize = 1 << 16;
/// MACs one parallel task gets, roughly.
const TASK_MACS: u64 = 1 << 21;

/// One term of a group's reduction: a byte offset into an input's padded plane, relative to
/// the output pixel's own position there, and where its weights are.
#[derive(Clone, Debug)]
pub(super) struct Term {
    pub input: usize,
    pub offset: usize,
    /// The groups of 4 rows whose weights are not all zero (the others add nothing: the
    /// padding lanes of a block, or of an image's 3 channels, are skipped).
    steps: Vec<u8>,
    /// Byte offset of its first step's weights; a step's take `lanes × 4 × elem` bytes.
    weights_at: usize,
}

/// Output blocks `blocks` with one reduction structure, and their packed weights.
struct Group {
    blocks: std::ops::Range<usize>,
    /// Rows of each term (the array's).
    rows: usize,
    terms: Vec<Term>,
    /// Per term and step, `[chunk][lane][row%4]` bytes: the `vpdpbusd` operand of 4 rows
    /// and 16 lanes (lanes past the group's are zero); with int16 lanes (AVX2),
    /// `[row%4/2][chunk][lane][row%2]` int16.
    weights: Vec<u8>,
    /// 16-lane chunks of the group.
    chunks: usize,
    /// The accumulators' starting value, `−128·Σ W` per lane: of the whole reduction when
    /// terms add up, of each term (`[term][lane]`) when they combine by maximum.
    start: Vec<i32>,
    /// Per input, the largest `offset + rows` of the terms that read it (0: none): the bytes
    /// past a window corner the kernel may read.
    reach: Vec<usize>,
    /// Bias, multiplier and shift of every lane of the chunks (zero past the group's lanes).
    bias: Vec<i32>,
    mult: Vec<i32>,
    shift: Vec<i32>,
}

/// Where an input's padded plane puts the pixels.
#[derive(Clone, Copy, Debug)]
pub(super) struct Plane {
    /// Input pixels `(y0.., x0..)`, `height × width` of them per image, are in the plane.
    y0: i64,
    x0: i64,
    height: usize,
    pub width: usize,
    /// Lanes per pixel of the plane: the lanes the sources read.
    pub lanes: usize,
    /// Bytes per lane: 1 (flipped int8) or 2 (the same value as a little-endian int16, the
    /// operand of the AVX2 kernel).
    elem: usize,
}

impl Plane {
    fn bytes(&self, images: usize) -> usize {
        images * self.height * self.width * self.lanes * self.elem
    }
}

/// The instruction set the kernels use, detected at run time.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Isa {
    /// AVX-512 VNNI: `vpdpbusd`, 64 MACs per instruction.
    #[cfg(target_arch = "x86_64")]
    Vnni,
    /// AVX2: `vpmaddwd` on int16 pairs, 16 MACs per instruction.
    #[cfg(target_arch = "x86_64")]
    Avx2,
    Portable,
}

impl Isa {
    /// Every kernel this CPU can run, fastest first.
    pub(crate) fn available() -> Vec<Isa> {
        let mut v = Vec::new();
        #[cfg(target_arch = "x86_64")]
        {
            use std::arch::is_x86_feature_detected as has;
            if has!("avx512f") && has!("avx512vnni") {
                v.push(Isa::Vnni);
            }
            if has!("avx2") {
                v.push(Isa::Avx2);
            }
        }
        v.push(Isa::Portable);
        v
    }

    fn best() -> Isa {
        Isa::available()[0]
    }

    /// Bytes per lane of the planes and weights.
    fn elem(self) -> usize {
        match self {
            #[cfg(target_arch = "x86_64")]
            Isa::Avx2 => 2,
            _ => 1,
        }
    }
}

/// A windowed operation ready to run: its groups with packed weights, its parameters and the
/// geometry of its planes.
pub(crate) struct Prepared {
    op: WindowOp,
    cfg: HwConfig,
    groups: Vec<Group>,
    planes: Vec<Plane>,
    /// Multiply-accumulates of one run.
    macs: u64,
    isa: Isa,
    /// The operation as a lane-wise one (then `groups` is empty).
    lane_wise: Option<LaneWise>,
}

/// Why an operation cannot take the fast path (it then runs as instructions).
pub(crate) fn unsupported(cfg: &HwConfig, op: &WindowOp) -> Option<&'static str> {
    if !(cfg.rows as usize).is_multiple_of(4) {
        Some("array rows are not a multiple of 4")
    } else if cfg.cols as usize > GROUP_LANES {
        Some("array columns exceed one register block")
    } else if op.sources.is_empty() {
        Some("no output blocks")
    } else if plane_bytes(cfg, op) > MAX_PLANE_BYTES {
        Some("its padded input planes would take more than 1 GiB")
    } else {
        None
    }
}

/// The most memory the planes of one operation may take.
const MAX_PLANE_BYTES: u64 = 1 << 30;

/// The bytes of `op`'s padded input planes at most (computed wide: any fields give a number).
fn plane_bytes(cfg: &HwConfig, op: &WindowOp) -> u64 {
    let [_, _, h, w] = op.out_region().map(|v| v as u64);
    let extent = |n: u64, a: usize| {
        n.saturating_sub(1) * op.stride[a] as u64
            + (op.kernel[a].max(1) as u64 - 1) * op.dilation[a] as u64
            + 1
    };
    let pixels = op.output.images as u64 * extent(h, 0) * extent(w, 1);
    op.inputs.len() as u64 * pixels * op.input_lanes_max(cfg.rows) as u64 * 2
}

impl Prepared {
    /// Packs `op`'s constants from `dram`. `op` must have passed `validate` for this DRAM and
    /// [`unsupported`] must have said nothing.
    pub(crate) fn new(cfg: &HwConfig, op: &WindowOp, dram: &[u8]) -> Prepared {
        Prepared::with_isa(cfg, op, dram, Isa::best())
    }

    /// [`Prepared::new`] for the kernels of `isa` (which the CPU must have).
    pub(crate) fn with_isa(cfg: &HwConfig, op: &WindowOp, dram: &[u8], isa: Isa) -> Prepared {
        let (rows, cols) = (cfg.rows as usize, cfg.cols as usize);
        let elem = isa.elem();
        let [y0, x0, h, w] = op.out_region().map(|v| v as i64);
        let planes: Vec<Plane> = (0..op.inputs.len())
            .map(|i| {
                // An input no source reads still gets a (never read) plane of one block.
                let lanes = (op.lanes_read(i as u32, rows as u32) as usize).max(rows);
                let span = |axis: usize, o0: i64, n: i64| {
                    let lo = op.input_coord(axis, o0 as u32, 0);
                    let last = (o0 + n - 1).max(o0);
                    let hi = op.input_coord(axis, last as u32, op.kernel[axis].max(1) - 1);
                    (lo, (hi - lo + 1) as usize)
                };
                let (py0, ph) = span(0, y0, h);
                let (px0, pw) = span(1, x0, w);
                Plane {
                    y0: py0,
                    x0: px0,
                    height: ph,
                    width: pw,
                    lanes,
                    elem,
                }
            })
            .collect();
        let term = |s: &sinter_isa::window::WindowSource| {
            let p = &planes[s.input as usize];
            let dy = (s.ky * op.dilation[0]) as usize;
            let dx = (s.kx * op.dilation[1]) as usize;
            Term {
                input: s.input as usize,
                offset: ((dy * p.width + dx) * p.lanes + s.block as usize * rows) * elem,
                steps: Vec::new(),
                weights_at: 0,
            }
        };
        let lane_wise = LaneWise::detect(cfg, op, dram);
        // Consecutive blocks with the same structure share a group.
        let shape = |b: usize| {
            op.sources[b]
                .iter()
                .map(|s| (s.input, s.block, s.ky, s.kx))
                .collect::<Vec<_>>()
        };
        let per_group = (GROUP_LANES / cols).max(1);
        let mut groups = Vec::new();
        let mut b0 = if lane_wise.is_some() {
            op.sources.len()
        } else {
            0
        };
        while b0 < op.sources.len() {
            let s0 = shape(b0);
            let mut b1 = b0 + 1;
            while b1 < op.sources.len() && b1 - b0 < per_group && shape(b1) == s0 {
                b1 += 1;
            }
            let mut terms: Vec<Term> = op.sources[b0].iter().map(term).collect();
            let lanes = (b1 - b0) * cols;
            let chunks = lanes.div_ceil(LANES);
            let step_bytes = chunks * LANES * 4 * elem;
            let tile = |b: usize, k: usize| {
                let at = op.tiles_addr as usize + op.sources[b][k].tile as usize * rows * cols;
                &dram[at..at + rows * cols]
            };
            let by_max = op.combine == GemmMode::Max;
            let mut start = vec![0i32; if by_max { terms.len() } else { 1 } * chunks * LANES];
            let mut weights = Vec::new();
            for (k, t) in terms.iter_mut().enumerate() {
                t.weights_at = weights.len();
                for r4 in 0..rows / 4 {
                    let rows4 = r4 * 4..r4 * 4 + 4;
                    let live = (b0..b1).any(|b| {
                        rows4
                            .clone()
                            .any(|r| tile(b, k)[r * cols..][..cols].iter().any(|&v| v != 0))
                    });
                    if !live {
                        continue;
                    }
                    t.steps.push(r4 as u8);
                    let at = weights.len();
                    weights.resize(at + step_bytes, 0);
                    let step = &mut weights[at..];
                    for b in b0..b1 {
                        let w = tile(b, k);
                        for c in 0..cols {
                            let lane = (b - b0) * cols + c;
                            for r in rows4.clone() {
                                let v = w[r * cols + c];
                                if elem == 1 {
                                    step[lane * 4 + r % 4] = v;
                                } else {
                                    let i = (r % 4 / 2 * chunks * LANES + lane) * 2 + r % 2;
                                    step[2 * i..2 * i + 2]
                                        .copy_from_slice(&(v as i8 as i16).to_le_bytes());
                                }
                            }
                        }
                    }
                }
                for b in b0..b1 {
                    let w = tile(b, k);
                    for c in 0..cols {
                        let lane = (b - b0) * cols + c;
                        let sum = (0..rows)
                            .fold(0i32, |s, r| s.wrapping_add(w[r * cols + c] as i8 as i32));
                        let s = &mut start[if by_max { k * chunks * LANES } else { 0 } + lane];
                        *s = s.wrapping_sub(sum.wrapping_mul(128));
                    }
                }
            }
            // The kernels read a term's steps without bounds checks.
            for t in &terms {
                assert!(t.weights_at + t.steps.len() * step_bytes <= weights.len());
                assert!(t.steps.iter().all(|&r4| (r4 as usize + 1) * 4 <= rows));
            }
            let mut lane_params = [0, 1, 2].map(|_| vec![0i32; chunks * LANES]);
            for b in b0..b1 {
                for (row, lanes) in lane_params.iter_mut().enumerate() {
                    for c in 0..cols {
                        lanes[(b - b0) * cols + c] = op.param(cfg, dram, b, row, c);
                    }
                }
            }
            let [bias, mult, shift] = lane_params;
            let mut reach = vec![0; op.inputs.len()];
            for t in &terms {
                reach[t.input] = reach[t.input].max(t.offset + rows * elem);
            }
            groups.push(Group {
                blocks: b0..b1,
                rows,
                reach,
                terms,
                weights,
                chunks,
                start,
                bias,
                mult,
                shift,
            });
            b0 = b1;
        }
        let pixels = op.output.images as u64 * (h * w) as u64;
        let macs =
            pixels * op.sources.iter().map(|s| s.len() as u64).sum::<u64>() * (rows * cols) as u64;
        Prepared {
            op: op.clone(),
            cfg: *cfg,
            groups,
            planes,
            macs,
            isa,
            lane_wise,
        }
    }

    /// The DRAM bytes the packed constants came from.
    pub(crate) fn constant_spans(&self) -> [(u64, u64); 2] {
        self.op.constant_spans(&self.cfg)
    }

    /// The DRAM bytes a run writes.
    pub(crate) fn out_span(&self) -> (u64, u64) {
        self.op.out_span(&self.cfg)
    }

    /// Runs the operation on `dram`, with `scratch` for the padded planes.
    pub(crate) fn run(&self, dram: &mut [u8], scratch: &mut Vec<Vec<u8>>) {
        let op = &self.op;
        let images = op.output.images as usize;
        if let Some(lw) = &self.lane_wise {
            self.run_lanes(lw, dram);
            return;
        }
        scratch.resize_with(self.planes.len(), Vec::new);
        for ((plane, input), buf) in self.planes.iter().zip(&op.inputs).zip(scratch.iter_mut()) {
            fill_plane(plane, input, images, dram, buf);
        }
        let planes: Vec<&[u8]> = scratch.iter().map(|v| v.as_slice()).collect();
        let [_, _, h, w] = op.out_region().map(|v| v as usize);
        let pixels = images * h * w;
        // Tasks: each group's pixels in runs of roughly TASK_MACS.
        let mut tasks = Vec::new();
        for (g, group) in self.groups.iter().enumerate() {
            let per_pixel =
                (group.terms.len() * self.cfg.rows as usize * group.chunks * LANES).max(1) as u64;
            let run = (TASK_MACS / per_pixel).clamp(16, pixels.max(16) as u64) as usize;
            let mut q = 0;
            while q < pixels {
                tasks.push((g, q..(q + run).min(pixels)));
                q += run;
            }
        }
        let out = OutPtr(dram.as_mut_ptr(), dram.len());
        let job = |(g, qs): &(usize, std::ops::Range<usize>)| {
            self.run_task(&self.groups[*g], &planes, qs.clone(), &out);
        };
        if self.macs >= PAR_MACS && rayon::current_num_threads() > 1 {
            tasks.par_iter().for_each(job);
        } else {
            tasks.iter().for_each(job);
        }
    }

    /// Computes output pixels `qs` (numbered image by image, row by row within the region) of
    /// `group` and writes them.
    fn run_task(&self, group: &Group, planes: &[&[u8]], qs: std::ops::Range<usize>, out: &OutPtr) {
        let kernel = Kernel::choose(group.chunks, self.isa);
        let p = kernel.pixels();
        let lanes = group.chunks * LANES;
        let mut acc = vec![0i32; p * lanes];
        let mut tmp = vec![0i32; p * lanes];
        let mut bases = vec![[0usize; MAX_PIXELS]; planes.len()];
        let mut outs = [0usize; MAX_PIXELS];
        let mut pos = self.position(qs.start);
        let lane0 = group.blocks.start * self.cfg.cols as usize;
        let mut q = qs.start;
        while q < qs.end {
            let n = p.min(qs.end - q);
            self.step_pixels(&mut pos, n, p, lane0, &mut bases, &mut outs);
            match self.op.combine {
                GemmMode::Max => {
                    for (k, t) in group.terms.iter().enumerate() {
                        let start = &group.start[k * lanes..][..lanes];
                        let dst = if k == 0 { &mut acc } else { &mut tmp };
                        kernel.run(group, std::slice::from_ref(t), start, &bases, planes, dst);
                        if k > 0 {
                            for (a, &v) in acc.iter_mut().zip(tmp.iter()) {
                                *a = (*a).max(v);
                            }
                        }
                    }
                }
                _ => {
                    let terms = &group.terms;
                    kernel.run(group, terms, &group.start, &bases, planes, &mut acc);
                }
            }
            self.write_pixels(group, &acc, &outs[..n], out, kernel.simd());
            q += n;
        }
    }

    /// Runs a lane-wise operation on `dram` (its inputs read in place).
    fn run_lanes(&self, lw: &LaneWise, dram: &mut [u8]) {
        let [_, _, h, w] = self.op.out_region().map(|v| v as usize);
        let pixels = self.op.output.images as usize * h * w;
        // A pixel costs about its lanes times (terms + the requantization, some 8 multiplies'
        // worth); a task gets a sixteenth of a matrix task's work, so that even a small layer
        // spreads over the threads.
        let per_pixel = lw.lanes * (lw.terms() + 8);
        let run = (TASK_MACS as usize / 16 / per_pixel.max(1)).max(MAX_PIXELS);
        let out = OutPtr(dram.as_mut_ptr(), dram.len());
        let simd = self.isa != Isa::Portable;
        let job = |q0: usize| {
            let mut pos = self.position(q0);
            let mut at = Vec::with_capacity(run);
            for _ in q0..(q0 + run).min(pixels) {
                at.push(pos);
                pos = self.next_position(pos);
            }
            // SAFETY: DRAM stays valid for the whole run; tasks write disjoint pixels, and the
            // output overlaps no input (validated).
            unsafe { lw.run(&self.op, &at, out.ptr(), out.1, simd) };
        };
        if self.macs >= PAR_MACS && rayon::current_num_threads() > 1 {
            (0..pixels).into_par_iter().step_by(run).for_each(job);
        } else {
            (0..pixels).step_by(run).for_each(job);
        }
    }

    /// Fills `bases` (window corners in each plane) for `p` pixels from `pos` on, the last of
    /// `n` repeated past it (the kernels run whole blocks; those results are dropped), and
    /// `outs` (DRAM addresses of lane `lane0`) for the `n`; advances `pos` by `n` pixels.
    fn step_pixels(
        &self,
        pos: &mut [usize; 3],
        n: usize,
        p: usize,
        lane0: usize,
        bases: &mut [[usize; MAX_PIXELS]],
        outs: &mut [usize; MAX_PIXELS],
    ) {
        let mut here = *pos;
        for j in 0..p {
            for (i, b) in bases.iter_mut().enumerate() {
                b[j] = self.plane_offset(i, here);
            }
            if j < n {
                let [img, y, x] = here;
                outs[j] =
                    self.op.output.pixel_addr(img as u32, y as u32, x as u32) as usize + lane0;
                *pos = self.next_position(*pos);
                if j + 1 < n {
                    here = *pos;
                }
            }
        }
    }

    /// The `[image, y, x]` of output pixel `q`.
    fn position(&self, q: usize) -> [usize; 3] {
        let [y0, x0, h, w] = self.op.out_region().map(|v| v as usize);
        let (img, yx) = (q / (h * w), q % (h * w));
        [img, y0 + yx / w, x0 + yx % w]
    }

    /// The pixel after `[image, y, x]` in the region, row by row, image by image.
    #[inline]
    fn next_position(&self, [img, y, x]: [usize; 3]) -> [usize; 3] {
        let [y0, x0, h, w] = self.op.out_region().map(|v| v as usize);
        if x + 1 < x0 + w {
            [img, y, x + 1]
        } else if y + 1 < y0 + h {
            [img, y + 1, x0]
        } else {
            [img + 1, y0, x0]
        }
    }

    /// The byte offset in input `i`'s plane of the window corner of output pixel
    /// `[image, y, x]`.
    #[inline]
    fn plane_offset(&self, i: usize, [img, y, x]: [usize; 3]) -> usize {
        let op = &self.op;
        let pl = &self.planes[i];
        let [y0, x0, _, _] = op.out_region().map(|v| v as usize);
        // The plane starts at the region's first window corner.
        let py = (y - y0) * op.stride[0] as usize;
        let px = (x - x0) * op.stride[1] as usize;
        ((img * pl.height + py) * pl.width + px) * pl.lanes * pl.elem
    }

    /// Requantizes the lanes of `group` of the pixels whose first lane goes to DRAM address
    /// `outs[j]` (`acc` row `j`) and writes them.
    fn write_pixels(&self, group: &Group, acc: &[i32], outs: &[usize], out: &OutPtr, simd: bool) {
        let op = &self.op;
        let n = group.blocks.len() * self.cfg.cols as usize;
        let lanes = group.chunks * LANES;
        let params = requant::Params {
            bias: &group.bias,
            mult: &group.mult,
            shift: &group.shift,
            zero_point: op.zero_point,
            lo: op.clamp_lo,
            hi: op.clamp_hi,
        };
        assert!(acc.len() >= outs.len() * lanes);
        for &at in outs {
            assert!(at + n <= out.1, "validated output lies inside the DRAM");
        }
        #[cfg(target_arch = "x86_64")]
        if simd && std::arch::is_x86_feature_detected!("avx512f") {
            // SAFETY: the CPU has AVX-512F; the rows and destinations were checked above, and
            // tasks write disjoint bytes (other pixels or other groups) while nothing reads DRAM.
            unsafe { store_avx512(&params, group.chunks, n, acc, outs, out.0) };
            return;
        }
        let _ = simd;
        for (j, &at) in outs.iter().enumerate() {
            let acc = &acc[j * lanes..][..lanes];
            let mut bytes = [0i8; GROUP_LANES];
            requant::row(&params, &acc[..n], &mut bytes[..n]);
            // SAFETY: as above.
            unsafe { std::ptr::copy_nonoverlapping(bytes.as_ptr().cast(), out.0.add(at), n) };
        }
    }
}

/// Requantizes `acc` (`[pixel][chunk·16 + lane]`) and writes lanes `0..n` of pixel `j` to
/// `dram + outs[j]`.
///
/// # Safety
/// The CPU must have AVX-512F; `acc` must hold `outs.len() × chunks × 16` lanes, the parameters
/// `chunks × 16`, and `dram + outs[j] .. + n` be writable and written by no one else.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn store_avx512(
    params: &requant::Params,
    chunks: usize,
    n: usize,
    acc: &[i32],
    outs: &[usize],
    dram: *mut u8,
) {
    use std::arch::x86_64::*;
    for c in 0..chunks {
        let lanes = n.saturating_sub(c * LANES).min(LANES);
        // SAFETY: the CPU has AVX-512F; the parameters hold the chunk's lanes.
        let q = unsafe { requant::Lanes16::new(params, c * LANES) };
        for (j, &at) in outs.iter().enumerate() {
            // SAFETY: 16 lanes of chunk c of row j (the caller's contract).
            let x =
                unsafe { _mm512_loadu_si512(acc.as_ptr().add((j * chunks + c) * LANES).cast()) };
            // SAFETY: the CPU has AVX-512F.
            let v = unsafe { q.apply(x) };
            // SAFETY: bytes at + 16c .. + lanes are the pixel's (the caller's contract).
            unsafe {
                let dst = dram.add(at + c * LANES);
                if lanes == LANES {
                    _mm_storeu_si128(dst.cast(), v);
                } else {
                    let bytes: [u8; LANES] = std::mem::transmute(v);
                    std::ptr::copy_nonoverlapping(bytes.as_ptr(), dst, lanes);
                }
            }
        }
    }
}

/// DRAM as the tasks write it: its start and length.
struct OutPtr(*mut u8, usize);
// SAFETY: tasks write disjoint bytes through it (see `write_pixels`).
unsafe impl Sync for OutPtr {}

impl OutPtr {
    fn ptr(&self) -> *mut u8 {
        self.0
    }
}

/// Copies input `input`'s pixels of `plane`, sign bits flipped, padding where outside the image.
fn fill_plane(
    plane: &Plane,
    input: &sinter_isa::window::WindowInput,
    images: usize,
    dram: &[u8],
    buf: &mut Vec<u8>,
) {
    let t = &input.tensor;
    let (l, e) = (plane.lanes, plane.elem);
    let pad = input.pad_value as u8 ^ 0x80;
    buf.clear();
    if e == 1 {
        buf.resize(plane.bytes(images), pad);
    } else {
        buf.extend((0..plane.bytes(images) / 2).flat_map(|_| [pad, 0]));
    }
    let (h, w) = (t.height as i64, t.width as i64);
    // The plane's columns that lie inside the image.
    let xa = (-plane.x0).clamp(0, plane.width as i64) as usize;
    let xb = (w - plane.x0).clamp(0, plane.width as i64) as usize;
    if xa >= xb {
        return;
    }
    let row_bytes = plane.width * l * e;
    let fill_row = |(r, dst): (usize, &mut [u8])| {
        let (img, py) = (r / plane.height, r % plane.height);
        let y = plane.y0 + py as i64;
        if !(0..h).contains(&y) {
            return;
        }
        let x0 = (plane.x0 + xa as i64) as u32;
        let mut src = t.pixel_addr(img as u32, y as u32, x0) as usize;
        for d in dst[xa * l * e..xb * l * e].chunks_exact_mut(l * e) {
            let from = &dram[src..src + l];
            if e == 1 {
                for (o, &v) in d.iter_mut().zip(from) {
                    *o = v ^ 0x80;
                }
            } else {
                for (o, &v) in d.chunks_exact_mut(2).zip(from) {
                    o[0] = v ^ 0x80;
                    o[1] = 0;
                }
            }
            src += t.pixel_bytes as usize;
        }
    };
    if buf.len() >= PAR_PLANE_BYTES && rayon::current_num_threads() > 1 {
        buf.par_chunks_exact_mut(row_bytes)
            .enumerate()
            .for_each(fill_row);
    } else {
        buf.chunks_exact_mut(row_bytes)
            .enumerate()
            .for_each(fill_row);
    }
}

/// Pixels per register block at most.
pub(super) const MAX_PIXELS: usize = 16;

/// The register block a group runs with: `pixels × chunks` accumulators.
#[derive(Clone, Copy, Debug)]
enum Kernel {
    /// AVX-512 VNNI with this many 16-lane chunks per pixel.
    #[cfg(target_arch = "x86_64")]
    Vnni(usize),
    /// AVX2, one 16-lane chunk (two registers) per pixel at a time.
    #[cfg(target_arch = "x86_64")]
    Avx2,
    Portable,
}

impl Kernel {
    fn choose(chunks: usize, isa: Isa) -> Kernel {
        match isa {
            #[cfg(target_arch = "x86_64")]
            Isa::Vnni => Kernel::Vnni(chunks),
            #[cfg(target_arch = "x86_64")]
            Isa::Avx2 => Kernel::Avx2,
            Isa::Portable => Kernel::Portable,
        }
    }

    /// Whether the AVX-512 requantization may run.
    fn simd(self) -> bool {
        #[cfg(target_arch = "x86_64")]
        if let Kernel::Vnni(_) = self {
            return true;
        }
        false
    }

    fn pixels(self) -> usize {
        match self {
            #[cfg(target_arch = "x86_64")]
            Kernel::Vnni(1) => 16,
            #[cfg(target_arch = "x86_64")]
            Kernel::Vnni(2) => 12,
            #[cfg(target_arch = "x86_64")]
            Kernel::Vnni(_) => 6,
            #[cfg(target_arch = "x86_64")]
            Kernel::Avx2 => 6,
            Kernel::Portable => 8,
        }
    }

    /// Sums terms `ks` (`terms`) of `group` for `self.pixels()` pixels, whose window corners
    /// are at `bases[input][pixel]` in the planes, into `out` (`[pixel][lane]`), starting from
    /// `start` (`[lane]`).
    #[allow(clippy::too_many_arguments)]
    fn run(
        self,
        group: &Group,
        terms: &[Term],
        start: &[i32],
        bases: &[[usize; MAX_PIXELS]],
        planes: &[&[u8]],
        out: &mut [i32],
    ) {
        let rows = group.rows;
        let weights = group.weights.as_slice();
        let p = self.pixels();
        assert!(out.len() >= p * group.chunks * LANES && start.len() >= group.chunks * LANES);
        // Every byte the kernels read: the planes cover each window, and weights match terms.
        for (i, plane) in planes.iter().enumerate() {
            let reach = group.reach[i];
            if reach > 0 {
                let far = bases[i][..p].iter().max().copied().unwrap_or(0);
                assert!(far + reach <= plane.len(), "window inside its plane");
            }
        }
        match self {
            #[cfg(target_arch = "x86_64")]
            Kernel::Vnni(c) => {
                let args = (
                    group.chunks,
                    rows,
                    terms,
                    start,
                    bases,
                    planes,
                    weights,
                    out,
                );
                // SAFETY: the CPU has AVX-512F and VNNI (checked by `choose`); the reads are in
                // bounds (checked above) and `out` holds `p × chunks × 16` lanes.
                unsafe {
                    match c {
                        1 => vnni::<16, 1>(args),
                        2 => vnni::<12, 2>(args),
                        3 => vnni::<6, 3>(args),
                        _ => vnni::<6, 4>(args),
                    }
                }
            }
            #[cfg(target_arch = "x86_64")]
            Kernel::Avx2 => {
                let args = (
                    group.chunks,
                    rows,
                    terms,
                    start,
                    bases,
                    planes,
                    weights,
                    out,
                );
                // SAFETY: the CPU has AVX2 (the planes and weights were laid out for it); the
                // reads are in bounds (checked above) and `out` holds `p × chunks × 16` lanes.
                unsafe { avx2::<6>(args) }
            }
            Kernel::Portable => portable(
                group.chunks,
                rows,
                terms,
                start,
                bases,
                planes,
                weights,
                out,
                p,
            ),
        }
    }
}

type KernelArgs<'a> = (
    usize,
    usize,
    &'a [Term],
    &'a [i32],
    &'a [[usize; MAX_PIXELS]],
    &'a [&'a [u8]],
    &'a [u8],
    &'a mut [i32],
);

/// # Safety
/// The CPU must have AVX-512F and VNNI; every window row (`rows` bytes at `base + offset`)
/// must lie inside its plane, `weights` hold every term's steps, `start` `chunks × 16`
/// lanes and `out` `P × chunks × 16`; `NR` must be `chunks`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512vnni")]
unsafe fn vnni<const P: usize, const NR: usize>(args: KernelArgs) {
    use std::arch::x86_64::*;
    let (chunks, _, terms, start, bases, planes, weights, out) = args;
    debug_assert_eq!(chunks, NR);
    let lanes = NR * LANES;
    let mut acc = [[_mm512_setzero_si512(); NR]; P];
    for a in acc.iter_mut() {
        for (j, v) in a.iter_mut().enumerate() {
            // SAFETY: lanes 16j .. 16j+16 of `start`.
            *v = unsafe { _mm512_loadu_si512(start.as_ptr().add(j * LANES).cast()) };
        }
    }
    for t in terms {
        let plane = planes[t.input].as_ptr();
        let mut ptr = [plane; P];
        for (p, x) in ptr.iter_mut().enumerate() {
            // SAFETY: inside the plane (the caller's contract).
            *x = unsafe { plane.add(bases[t.input][p] + t.offset) };
        }
        // SAFETY: term k's weights.
        let wk = unsafe { weights.as_ptr().add(t.weights_at) };
        for (i, &r4) in t.steps.iter().enumerate() {
            let r4 = r4 as usize;
            let mut w = [_mm512_setzero_si512(); NR];
            for (j, v) in w.iter_mut().enumerate() {
                // SAFETY: the 64 bytes of chunk j of step i.
                *v = unsafe { _mm512_loadu_si512(wk.add((i * NR + j) * LANES * 4).cast()) };
            }
            for (a, &src) in acc.iter_mut().zip(&ptr) {
                // SAFETY: 4 bytes of the window row.
                let x = unsafe { std::ptr::read_unaligned(src.add(r4 * 4).cast::<i32>()) };
                let x = _mm512_set1_epi32(x);
                for (v, &wv) in a.iter_mut().zip(&w) {
                    *v = _mm512_dpbusd_epi32(*v, x, wv);
                }
            }
        }
    }
    for (p, a) in acc.iter().enumerate() {
        for (j, v) in a.iter().enumerate() {
            // SAFETY: lanes of pixel p, chunk j, inside `out`.
            unsafe { _mm512_storeu_si512(out.as_mut_ptr().add(p * lanes + j * LANES).cast(), *v) };
        }
    }
}

/// # Safety
/// The CPU must have AVX2; every window row (`2·rows` bytes at `base + offset`, int16 lanes)
/// must lie inside its plane, `weights` hold every term's steps, `start` `chunks × 16` lanes
/// and `out` `P × chunks × 16`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn avx2<const P: usize>(args: KernelArgs) {
    use std::arch::x86_64::*;
    let (chunks, _, terms, start, bases, planes, weights, out) = args;
    let lanes = chunks * LANES;
    for c in 0..chunks {
        let mut acc = [[_mm256_setzero_si256(); 2]; P];
        for a in acc.iter_mut() {
            for (h, v) in a.iter_mut().enumerate() {
                // SAFETY: lanes 16c + 8h .. + 8 of `start`.
                *v = unsafe { _mm256_loadu_si256(start.as_ptr().add(c * LANES + 8 * h).cast()) };
            }
        }
        for t in terms {
            let plane = planes[t.input].as_ptr();
            let mut ptr = [plane; P];
            for (p, x) in ptr.iter_mut().enumerate() {
                // SAFETY: inside the plane (the caller's contract).
                *x = unsafe { plane.add(bases[t.input][p] + t.offset) };
            }
            // SAFETY: the term's weights, chunk c.
            let wk = unsafe { weights.as_ptr().add(t.weights_at + c * LANES * 4) };
            let pairs =
                t.steps.iter().enumerate().flat_map(|(i, &r4)| {
                    [(2 * i, 2 * r4 as usize), (2 * i + 1, 2 * r4 as usize + 1)]
                });
            for (i, r2) in pairs {
                // SAFETY: the 16 int16 pairs of chunk c of the step's row pair.
                let w = unsafe {
                    let at = wk.add(i * lanes * 4);
                    [
                        _mm256_loadu_si256(at.cast()),
                        _mm256_loadu_si256(at.add(32).cast()),
                    ]
                };
                for (a, &src) in acc.iter_mut().zip(&ptr) {
                    // SAFETY: two int16 lanes of the window row.
                    let x = unsafe { std::ptr::read_unaligned(src.add(r2 * 4).cast::<i32>()) };
                    let x = _mm256_set1_epi32(x);
                    for (v, &wv) in a.iter_mut().zip(&w) {
                        *v = _mm256_add_epi32(*v, _mm256_madd_epi16(x, wv));
                    }
                }
            }
        }
        for (p, a) in acc.iter().enumerate() {
            for (h, v) in a.iter().enumerate() {
                // SAFETY: lanes of pixel p, chunk c, inside `out`.
                unsafe {
                    _mm256_storeu_si256(
                        out.as_mut_ptr().add(p * lanes + c * LANES + 8 * h).cast(),
                        *v,
                    )
                };
            }
        }
    }
}

/// The kernel in plain Rust for CPUs without VNNI: the same sums, lane by lane.
#[allow(clippy::too_many_arguments)]
fn portable(
    chunks: usize,
    rows: usize,
    terms: &[Term],
    start: &[i32],
    bases: &[[usize; MAX_PIXELS]],
    planes: &[&[u8]],
    weights: &[u8],
    out: &mut [i32],
    pixels: usize,
) {
    let lanes = chunks * LANES;
    for p in 0..pixels {
        let o = &mut out[p * lanes..][..lanes];
        o.copy_from_slice(&start[..lanes]);
        for t in terms {
            let row = &planes[t.input][bases[t.input][p] + t.offset..][..rows];
            for (i, &r4) in t.steps.iter().enumerate() {
                let x = &row[r4 as usize * 4..][..4];
                let w = &weights[t.weights_at + i * lanes * 4..][..lanes * 4];
                for (v, w) in o.iter_mut().zip(w.chunks_exact(4)) {
                    let mut s = 0i32;
                    for (&a, &b) in x.iter().zip(w) {
                        s += a as i32 * b as i8 as i32;
                    }
                    *v = v.wrapping_add(s);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::rngs::StdRng;
    use rand::{Rng, SeedableRng};
    use sinter_isa::window::{TensorView, WindowInput, WindowSource, PARAM_ROWS};

    /// A random operation over random DRAM: one or two inputs (with extra lanes, as views of a
    /// concatenation have), padding, strides, dilation, a region, output blocks in groups of
    /// the same structure and alone, either combine mode.
    ///
    /// A `lane_wise` one has diagonal tiles, and output block `b` reads block `block₀ + b` of
    /// inputs with equal blocks (a residual add, a pool, a depthwise 1×1).
    fn random_op(cfg: &HwConfig, rng: &mut StdRng, lane_wise: bool) -> (WindowOp, Vec<u8>) {
        let (rows, cols) = (cfg.rows, cfg.cols);
        let in_blocks = rng.gen_range(1..=3u32);
        let images = rng.gen_range(1..=2u32);
        let kernel = [rng.gen_range(1..=3u32), rng.gen_range(1..=3u32)];
        let stride = [rng.gen_range(1..=2u32), rng.gen_range(1..=2u32)];
        let dilation = [rng.gen_range(1..=2u32), rng.gen_range(1..=2u32)];
        let pads = [0; 4].map(|_| rng.gen_range(0..=2u32));
        let (h, w) = (rng.gen_range(3..=9u32), rng.gen_range(3..=9u32));
        let out_dim = |n: u32, a: usize| {
            let span = n + pads[a] + pads[a + 2];
            let k = dilation[a] * (kernel[a] - 1) + 1;
            (span.saturating_sub(k)) / stride[a] + 1
        };
        let (oh, ow) = (out_dim(h, 0), out_dim(w, 1));
        let mut addr = 0u32;
        let mut inputs = Vec::new();
        for _ in 0..rng.gen_range(1..=2) {
            let blocks = if lane_wise {
                in_blocks
            } else {
                rng.gen_range(1..=3u32)
            };
            let extra = rng.gen_range(0..=1u32) * rows;
            let t = TensorView {
                addr,
                images,
                height: h,
                width: w,
                pixel_bytes: blocks * rows + extra,
                lanes: blocks * rows,
            };
            addr += (t.pixels() as u32) * t.pixel_bytes;
            inputs.push(WindowInput {
                tensor: t,
                pad_value: rng.gen(),
            });
        }
        let n_blocks = if lane_wise {
            rng.gen_range(1..=in_blocks as usize)
        } else {
            rng.gen_range(1..=9usize)
        };
        let block0 = if lane_wise {
            rng.gen_range(0..=in_blocks - n_blocks as u32)
        } else {
            0
        };
        let output = TensorView {
            addr,
            images,
            height: oh,
            width: ow,
            pixel_bytes: n_blocks as u32 * cols + rng.gen_range(0..=1u32) * cols,
            lanes: n_blocks as u32 * cols,
        };
        addr += output.pixels() as u32 * output.pixel_bytes;
        let structure = |rng: &mut StdRng| -> Vec<(u32, u32, u32, u32)> {
            (0..rng.gen_range(1..=5))
                .map(|_| {
                    let i = rng.gen_range(0..inputs.len());
                    let blocks = inputs[i].tensor.lanes / rows;
                    (
                        i as u32,
                        rng.gen_range(0..blocks),
                        rng.gen_range(0..kernel[0]),
                        rng.gen_range(0..kernel[1]),
                    )
                })
                .collect()
        };
        let mut shape = structure(rng);
        if lane_wise {
            for s in &mut shape {
                s.1 = block0;
            }
        }
        let mut tile = 0;
        let mut sources = Vec::new();
        for b in 0..n_blocks as u32 {
            if !lane_wise && rng.gen_bool(0.3) {
                shape = structure(rng);
            }
            sources.push(
                shape
                    .iter()
                    .map(|&(input, block, ky, kx)| {
                        let block = if lane_wise { block + b } else { block };
                        tile += 1;
                        WindowSource {
                            input,
                            block,
                            tile: tile - 1,
                            ky,
                            kx,
                        }
                    })
                    .collect::<Vec<_>>(),
            );
        }
        let tiles_addr = addr;
        addr += tile * rows * cols;
        let params_addr = addr;
        addr += n_blocks as u32 * PARAM_ROWS * cols * 4;
        let mut dram: Vec<u8> = (0..addr).map(|_| rng.gen()).collect();
        // Rows of zeros, as the padding lanes of a block have, in some tiles.
        for t in 0..tile as usize {
            let at = tiles_addr as usize + t * (rows * cols) as usize;
            let zero = match rng.gen_range(0..4) {
                0 => 4..rows as usize,
                1 => {
                    let r4 = rng.gen_range(0..rows as usize / 4) * 4;
                    r4..r4 + 4
                }
                _ => 0..0,
            };
            dram[at + zero.start * cols as usize..at + zero.end * cols as usize].fill(0);
        }
        if lane_wise {
            for t in 0..tile as usize {
                for r in 0..rows as usize {
                    for c in (0..cols as usize).filter(|&c| c != r) {
                        dram[tiles_addr as usize + (t * rows as usize + r) * cols as usize + c] = 0;
                    }
                }
            }
        }
        for b in 0..n_blocks {
            for c in 0..cols as usize {
                let at = params_addr as usize + b * PARAM_ROWS as usize * cols as usize * 4;
                let put = |d: &mut Vec<u8>, row: usize, v: i32| {
                    let a = at + (row * cols as usize + c) * 4;
                    d[a..a + 4].copy_from_slice(&v.to_le_bytes());
                };
                put(&mut dram, 0, rng.gen_range(-5000..5000));
                put(&mut dram, 1, rng.gen_range(1 << 30..i32::MAX));
                put(&mut dram, 2, rng.gen_range(30..48));
            }
        }
        let region = rng.gen_bool(0.3).then(|| {
            let (y0, x0) = (rng.gen_range(0..oh), rng.gen_range(0..ow));
            [
                y0,
                x0,
                rng.gen_range(1..=oh - y0),
                rng.gen_range(1..=ow - x0),
            ]
        });
        let op = WindowOp {
            name: "random".into(),
            insn_start: 0,
            insn_end: 0,
            inputs,
            output,
            kernel,
            stride,
            dilation,
            pads,
            sources,
            combine: if rng.gen_bool(0.3) {
                GemmMode::Max
            } else {
                GemmMode::Add
            },
            tiles_addr,
            params_addr,
            zero_point: rng.gen(),
            clamp_lo: rng.gen_range(-128..0),
            clamp_hi: rng.gen_range(0..=127),
            region,
        };
        (op, dram)
    }

    #[test]
    fn operations_compute_their_definition() {
        let mut rng = StdRng::seed_from_u64(11);
        let mut scratch = Vec::new();
        let mut lane_wise_cases = 0;
        for cfg in [HwConfig::SMALL, HwConfig::DEFAULT] {
            for case in 0..80 {
                let (op, dram) = random_op(&cfg, &mut rng, case % 2 == 1);
                op.validate(&cfg, dram.len() as u64)
                    .unwrap_or_else(|e| panic!("case {case}: {e}"));
                let mut want = dram.clone();
                op.apply(&cfg, &mut want);
                for isa in Isa::available() {
                    let p = Prepared::with_isa(&cfg, &op, &dram, isa);
                    lane_wise_cases += p.lane_wise.is_some() as usize;
                    let mut got = dram.clone();
                    p.run(&mut got, &mut scratch);
                    if let Some(at) = got.iter().zip(&want).position(|(a, b)| a != b) {
                        panic!(
                            "{}x{} case {case} ({isa:?}): byte {at:#x} is {} not {}\n{op:?}",
                            cfg.rows, cfg.cols, got[at], want[at]
                        );
                    }
                }
            }
        }
        // Half the cases are lane-wise; those with a whole number of 16-lane steps run so.
        assert!(lane_wise_cases >= 40, "{lane_wise_cases} lane-wise runs");
    }
}
