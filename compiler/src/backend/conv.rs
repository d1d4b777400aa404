//! Lowering windowed layers — convolutions, fully-connected layers, pooling, residual adds — to
//! NPU instructions, all through one mechanism.
//!
//! Every such layer computes, for each output pixel `(y, x)` and output lane block `nb`,
//!
//! ```text
//! acc = mode( … mode(p₀, p₁) …, pₖ)     pᵢ = window(inputᵢ, lane blockᵢ)[y·s + kyᵢ·d, x·s + kxᵢ·d] · tileᵢ
//! ```
//!
//! over a list of *sources* (input tensor, input lane block, weight tile, kernel offset). A
//! convolution has one source per (input block, ky, kx); a dense layer is a 1×1 convolution
//! over rows; max pooling has one source per kernel position with an identity tile and mode
//! `Max`; average pooling the same with mode `Add`; a residual add two 1×1 sources with diagonal
//! tiles that bring both inputs to a common scale. The vector unit then requantizes each
//! accumulator row with per-channel bias, multiplier and shift.
//!
//! Activations live in DRAM as NHWC with channels padded to whole lane blocks, so the DMA feeds
//! a window of any kernel, stride, dilation and padding straight from DRAM: one 2-D transfer per
//! input lane block, zero-point padding at the image edges, no im2col.
//!
//! Work is cut into *steps* — (image, output tile, output block, source chunk) — and the load,
//! compute and store modules pipeline over steps with double-buffered activation, weight and
//! output buffers (see [`super::sync`] for the token mechanics). Successive output blocks also
//! alternate between the two accumulator banks, so that one block's requantization runs on the
//! vector unit while the next block's GEMMs run on the array.

use sinter_isa::{Buffer, Dma, Gemm, GemmMode, HwConfig, Instruction, VecInsn, VecOp, Walk};

use super::memory::ActTensor;
use super::sync::{Edge, Event, ProgramBuilder};
use crate::error::{CompileError, Result};
use sinter_isa::timing::{estimate, TimingParams};
use sinter_isa::window::{TensorView, WindowOp, WindowSource};

/// Accumulator rows reserved at the top of the buffer for bias, multiplier and shift.
pub const PARAM_ROWS: u32 = 3;

/// Kernel geometry shared by every input of a layer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Geometry {
    pub kernel: [usize; 2],
    pub stride: [usize; 2],
    pub dilation: [usize; 2],
    /// `[top, left, bottom, right]`.
    pub pads: [usize; 4],
}

impl Geometry {
    pub const POINTWISE: Geometry = Geometry {
        kernel: [1, 1],
        stride: [1, 1],
        dilation: [1, 1],
        pads: [0; 4],
    };
}

/// One term of the reduction.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Source {
    /// Index into [`WindowLayer::inputs`].
    pub input: usize,
    /// Lane block of that input (lanes `block·rows ..`).
    pub block: usize,
    /// Weight tile (index into the layer's tiles in DRAM).
    pub tile: usize,
    pub ky: usize,
    pub kx: usize,
}

/// An input tensor and the value its padding reads as.
pub struct WindowInput<'a> {
    pub tensor: &'a ActTensor,
    pub pad_value: i8,
}

/// A windowed layer ready for lowering.
pub struct WindowLayer<'a> {
    pub name: &'a str,
    pub inputs: Vec<WindowInput<'a>>,
    pub output: &'a ActTensor,
    pub geometry: Geometry,
    /// For each output lane block, the sources that feed it, grouped so that the sources of one
    /// (input, block) are consecutive.
    pub sources: Vec<Vec<Source>>,
    /// How the second and later sources combine (`Add` or `Max`); the first overwrites.
    pub combine: GemmMode,
    /// DRAM address of tile 0; tiles are `rows × cols` bytes each, consecutive.
    pub tiles_addr: u32,
    /// Per output block: bias, multiplier and shift rows.
    pub params_addr: u32,
    pub zero_point: i8,
    pub clamp_lo: i8,
    pub clamp_hi: i8,
    /// The output pixels `[y0, x0, height, width]` this layer computes (`None`: all). Average
    /// pooling that excludes padding runs one region per divisor.
    pub region: Option<[usize; 4]>,
}

impl WindowLayer<'_> {
    /// The layer as the operation instructions `insn_start..insn_end` compute (see
    /// [`sinter_isa::window`]).
    pub fn as_op(&self, insn_start: u32, insn_end: u32) -> WindowOp {
        let view = |t: &ActTensor| TensorView {
            addr: t.addr,
            images: t.images as u32,
            height: t.height as u32,
            width: t.width as u32,
            pixel_bytes: t.pixel_bytes,
            lanes: t.lanes as u32,
        };
        let g = &self.geometry;
        let pair = |v: [usize; 2]| v.map(|x| x as u32);
        WindowOp {
            name: self.name.to_string(),
            insn_start,
            insn_end,
            inputs: self
                .inputs
                .iter()
                .map(|i| sinter_isa::window::WindowInput {
                    tensor: view(i.tensor),
                    pad_value: i.pad_value,
                })
                .collect(),
            output: view(self.output),
            kernel: pair(g.kernel),
            stride: pair(g.stride),
            dilation: pair(g.dilation),
            pads: g.pads.map(|x| x as u32),
            sources: self
                .sources
                .iter()
                .map(|srcs| {
                    srcs.iter()
                        .map(|s| WindowSource {
                            input: s.input as u32,
                            block: s.block as u32,
                            tile: s.tile as u32,
                            ky: s.ky as u32,
                            kx: s.kx as u32,
                        })
                        .collect()
                })
                .collect(),
            combine: self.combine,
            tiles_addr: self.tiles_addr,
            params_addr: self.params_addr,
            zero_point: self.zero_point,
            clamp_lo: self.clamp_lo,
            clamp_hi: self.clamp_hi,
            region: self.region.map(|r| r.map(|x| x as u32)),
        }
    }
}

/// The distinct weight tiles of a source list, in order of first use, and the slot (index into
/// that list) of every source: sources that share a tile (pooling) share one buffer row.
fn tile_slots(sources: &[Source]) -> (Vec<usize>, Vec<usize>) {
    let mut distinct: Vec<usize> = Vec::new();
    let slots = sources
        .iter()
        .map(|s| match distinct.iter().position(|&t| t == s.tile) {
            Some(k) => k,
            None => {
                distinct.push(s.tile);
                distinct.len() - 1
            }
        })
        .collect();
    (distinct, slots)
}

/// Which buffer halves were last read by which compute event, within one layer.
#[derive(Debug, Default)]
pub struct Pipeline {
    act_reader: [Option<Event>; 2],
    wgt_reader: [Option<Event>; 2],
    out_reader: [Option<Event>; 2],
    act_turn: usize,
    wgt_turn: usize,
    out_turn: usize,
    /// Output blocks started so far, and the count when the current group of blocks started.
    acc_turn: usize,
    acc_group_turn: usize,
}

/// Accumulator rows a tile may use: each bank (half the buffer) less the parameter rows, which
/// sit at the top of the upper one.
fn acc_tile_rows(cfg: &HwConfig) -> usize {
    (cfg.acc_depth / 2 - PARAM_ROWS) as usize
}

/// A rectangle of output pixels of one image.
#[derive(Clone, Copy, Debug)]
struct Tile {
    image: usize,
    y0: usize,
    x0: usize,
    h: usize,
    w: usize,
}

/// The input window a tile needs: the input rows and columns it reads, as the DMA brings them
/// on chip.
///
/// On an axis whose kernel is 1 and stride `s > 1` (the projection shortcuts of ResNets), the
/// layer reads only every `s`-th input, so the DMA fetches only those (`step = s`) and the
/// window is as small as the tile; otherwise it fetches every input in the span (`step = 1`).
#[derive(Clone, Copy, Debug)]
struct Window {
    /// First input row/column read (may be negative: padding).
    iy0: isize,
    ix0: isize,
    /// Rows and columns on chip.
    h: usize,
    w: usize,
    /// Input rows/columns between consecutive on-chip rows/columns.
    step: [usize; 2],
}

impl Window {
    fn of(g: &Geometry, t: &Tile) -> Window {
        let step = load_step(g);
        let span = |n: usize, s: usize, k: usize, d: usize| (n - 1) * s + (k - 1) * d + 1;
        Window {
            iy0: (t.y0 * g.stride[0]) as isize - g.pads[0] as isize,
            ix0: (t.x0 * g.stride[1]) as isize - g.pads[1] as isize,
            h: span(t.h, g.stride[0] / step[0], g.kernel[0], g.dilation[0]),
            w: span(t.w, g.stride[1] / step[1], g.kernel[1], g.dilation[1]),
            step,
        }
    }
    fn rows(&self) -> usize {
        self.h * self.w
    }
}

/// Input rows/columns between the rows/columns the DMA brings on chip (see [`Window`]).
fn load_step(g: &Geometry) -> [usize; 2] {
    let axis = |d: usize| {
        if g.kernel[d] == 1 {
            g.stride[d].max(1)
        } else {
            1
        }
    };
    [axis(0), axis(1)]
}

/// The part of a window's axis that lies inside the image: `(before, inside, after)` on-chip
/// rows, for a window starting at input `origin` with `n` rows `step` apart over `size` inputs.
fn clip_axis(origin: isize, n: usize, step: usize, size: usize) -> (usize, usize, usize) {
    let step = step as isize;
    let before = if origin < 0 {
        ((-origin + step - 1) / step).min(n as isize) as usize
    } else {
        0
    };
    let first = origin + before as isize * step;
    let inside = if first >= size as isize {
        0
    } else {
        ((size as isize - first + step - 1) / step).min((n - before) as isize) as usize
    };
    (before, inside, n - before - inside)
}

/// How a layer's output is cut into tiles and how the activation buffer holds their windows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Tiling {
    /// Output tile height and width.
    th: usize,
    tw: usize,
    /// Activation-buffer regions the windows rotate through: 2 overlaps loading the next tile's
    /// windows with computing on this one's; 1 gives the windows the whole buffer, so more input
    /// blocks stay on chip across output blocks.
    act_regions: usize,
    /// Output blocks that share each load of the windows, each accumulating in a slot of its
    /// own. More than 1 only when the windows do not stay on chip across output blocks anyway.
    blocks: usize,
}

/// Where a step's operands sit on chip.
#[derive(Clone, Debug, Default)]
struct Place {
    /// First activation row of each (input, block) window.
    windows: Vec<((usize, usize), usize)>,
    act_region: usize,
    wgt_half: usize,
    /// Per output block of the step: its first tile slot in the weight half.
    wgt_slots: Vec<usize>,
}

struct Step {
    tile: Tile,
    /// The output blocks this step accumulates.
    nbs: std::ops::Range<usize>,
    /// Per output block: the range of `sources[nb]` this step accumulates.
    srcs: Vec<std::ops::Range<usize>>,
    first: bool,
    last: bool,
    /// Whether this step loads activation windows (else it reuses the previous step's).
    load_act: bool,
}

fn lower_err(layer: &str, message: impl Into<String>) -> CompileError {
    CompileError::Lower {
        layer: layer.to_string(),
        message: message.into(),
    }
}

fn u16_of(v: usize, what: &str, layer: &str) -> Result<u16> {
    u16::try_from(v).map_err(|_| lower_err(layer, format!("{what} {v} exceeds a 16-bit field")))
}

fn u8_of(v: usize, what: &str, layer: &str) -> Result<u8> {
    u8::try_from(v).map_err(|_| lower_err(layer, format!("{what} {v} exceeds an 8-bit field")))
}

/// The (input, block) groups of a source list, as index ranges.
fn groups(sources: &[Source]) -> Vec<std::ops::Range<usize>> {
    let mut out: Vec<std::ops::Range<usize>> = Vec::new();
    for (i, s) in sources.iter().enumerate() {
        match out.last_mut() {
            Some(r) if sources[r.start].input == s.input && sources[r.start].block == s.block => {
                r.end = i + 1
            }
            _ => out.push(i..i + 1),
        }
    }
    out
}

/// Whether output blocks `a` and `b` read the same windows in the same order, so that one load
/// of each window serves both.
fn same_windows(layer: &WindowLayer, a: usize, b: usize) -> bool {
    let (sa, sb) = (&layer.sources[a], &layer.sources[b]);
    let key = |s: &[Source], r: std::ops::Range<usize>| (s[r.start].input, s[r.start].block);
    let (ga, gb) = (groups(sa), groups(sb));
    ga.len() == gb.len()
        && ga
            .into_iter()
            .zip(gb)
            .all(|(x, y)| key(sa, x) == key(sb, y))
}

/// Emits the instructions of one windowed layer, cut into tiles the cost model finds fastest.
///
/// The largest tile that fits is not always best: when the windows of every input block of a
/// tile fit on chip together they are loaded once and reused by every output block, where a
/// larger tile would reload them per output block. The candidates are the largest tile with
/// double-buffered windows, the largest whose windows all fit half the buffer, and the largest
/// whose windows all fit the whole buffer, and, when the windows do not stay on chip across
/// output blocks, each of those with 2, 4 or 8 output blocks sharing every window load; each is
/// lowered and timed by
/// [`sinter_isa::timing::estimate`], and the fastest is emitted.
pub fn emit(
    b: &mut ProgramBuilder,
    cfg: &HwConfig,
    pipe: &mut Pipeline,
    layer: &WindowLayer,
) -> Result<()> {
    let candidates = tilings(cfg, layer)?;
    let best = if candidates.len() == 1 {
        candidates[0]
    } else {
        let params = TimingParams::default();
        let mut best = (u64::MAX, candidates[0]);
        for t in candidates {
            let mut trial = ProgramBuilder::new();
            emit_tiled(&mut trial, cfg, &mut Pipeline::default(), layer, t)?;
            let cycles = estimate(cfg, &params, &trial.finish()).total_cycles;
            tracing::debug!(layer = layer.name, ?t, cycles, "tiling candidate");
            if cycles < best.0 {
                best = (cycles, t);
            }
        }
        best.1
    };
    emit_tiled(b, cfg, pipe, layer, best)
}

/// The tilings worth comparing for `layer` (see [`emit`]); the first is the largest tile.
fn tilings(cfg: &HwConfig, layer: &WindowLayer) -> Result<Vec<Tiling>> {
    let name = layer.name;
    let g = &layer.geometry;
    let out = layer.output;
    let cols = cfg.cols as usize;
    let act_depth = cfg.act_depth as usize;
    let wgt_half = cfg.wgt_depth as usize / 2;
    let out_half = cfg.out_depth as usize / 2;
    let acc_rows = acc_tile_rows(cfg);
    if layer.sources.len() != out.lanes / cols {
        return Err(lower_err(
            name,
            "one source list per output lane block is required",
        ));
    }

    // Largest group of one (input, block): its distinct tiles must fit half the weights.
    let distinct_tiles = |srcs: &[Source]| tile_slots(srcs).0.len();
    let max_group = layer
        .sources
        .iter()
        .flat_map(|s| groups(s).into_iter().map(|r| distinct_tiles(&s[r])))
        .max()
        .unwrap_or(0);
    if max_group == 0 {
        return Err(lower_err(name, "the layer has no sources"));
    }
    if max_group > wgt_half {
        return Err(lower_err(
            name,
            format!(
                "{max_group} weight tiles of one input block exceed half the weight buffer \
                 ({wgt_half} tiles)"
            ),
        ));
    }

    let [_, _, rh, rw] = layer.region.unwrap_or([0, 0, out.height, out.width]);
    if rh == 0 || rw == 0 {
        return Err(lower_err(name, "the output region is empty"));
    }
    let window_rows = |h: usize, w: usize| {
        let t = Tile {
            image: 0,
            y0: 0,
            x0: 0,
            h,
            w,
        };
        Window::of(g, &t).rows()
    };
    // A tile fits when its accumulators and outputs do and `windows` of its windows fit one
    // activation region.
    let fits = |h: usize, w: usize, windows: usize, region: usize| {
        h * w <= acc_rows.min(out_half) && windows * window_rows(h, w) <= region
    };
    // The tallest tile of whole rows with that fit.
    let tallest = |windows: usize, region: usize| {
        let mut h = 0;
        while h < rh && fits(h + 1, rw, windows, region) {
            h += 1;
        }
        (h > 0).then_some(h)
    };

    let largest = match tallest(1, act_depth / 2) {
        Some(th) => Tiling {
            th,
            tw: rw,
            act_regions: 2,
            blocks: 1,
        },
        None => {
            // Not even one row fits: a strip of one row.
            let mut w = rw;
            while w > 1 && !fits(1, w, 1, act_depth / 2) {
                w = w.div_ceil(2);
            }
            if !fits(1, w, 1, act_depth / 2) {
                return Err(lower_err(
                    name,
                    "one output pixel's window exceeds the activation buffer",
                ));
            }
            return Ok(vec![Tiling {
                th: 1,
                tw: w,
                act_regions: 2,
                blocks: 1,
            }]);
        }
    };
    let mut out_tilings = vec![largest];
    // Windows stay on chip across output blocks only when every block's tiles fit the weights.
    let tiles_fit = layer.sources.iter().all(|s| distinct_tiles(s) <= wgt_half);
    if tiles_fit {
        let windows = layer
            .sources
            .iter()
            .map(|s| groups(s).len())
            .max()
            .unwrap_or(1);
        if tallest(windows, act_depth / 2) == Some(largest.th) {
            // The largest tile already keeps all its windows on chip, double-buffered.
            return Ok(out_tilings);
        }
        for regions in [2, 1] {
            if let Some(th) = tallest(windows, act_depth / regions) {
                let t = Tiling {
                    th,
                    tw: rw,
                    act_regions: regions,
                    blocks: 1,
                };
                if !out_tilings.contains(&t) {
                    out_tilings.push(t);
                }
            }
        }
    }
    // Blocks that read the same windows may share each load of them when one block's windows do
    // not all stay on chip: consecutive blocks alternate banks, so ⌈G/2⌉ tiles share a bank.
    let nblocks = layer.sources.len();
    let windows = groups(&layer.sources[0]).len();
    if nblocks > 1 && (1..nblocks).all(|nb| same_windows(layer, 0, nb)) {
        for t in out_tilings.clone() {
            let on_chip =
                tiles_fit && windows * window_rows(t.th, t.tw) <= act_depth / t.act_regions;
            if on_chip {
                continue;
            }
            for blocks in [2, 4, 8] {
                if blocks > nblocks
                    || blocks.div_ceil(2) * t.th * t.tw > acc_rows
                    || blocks * max_group > wgt_half
                {
                    break;
                }
                out_tilings.push(Tiling { blocks, ..t });
            }
        }
    }
    Ok(out_tilings)
}

/// Emits one windowed layer with the given tiling.
fn emit_tiled(
    b: &mut ProgramBuilder,
    cfg: &HwConfig,
    pipe: &mut Pipeline,
    layer: &WindowLayer,
    tiling: Tiling,
) -> Result<()> {
    let name = layer.name;
    let g = &layer.geometry;
    let out = layer.output;
    let (rows, cols) = (cfg.rows as usize, cfg.cols as usize);
    let act_region = cfg.act_depth as usize / tiling.act_regions;
    let wgt_half = cfg.wgt_depth as usize / 2;
    let out_half = cfg.out_depth as usize / 2;
    let param_row = u16_of((cfg.acc_depth - PARAM_ROWS) as usize, "param row", name)?;
    let distinct_tiles = |srcs: &[Source]| tile_slots(srcs).0.len();
    let [ry0, rx0, rh, rw] = layer.region.unwrap_or([0, 0, out.height, out.width]);
    if ry0 + rh > out.height || rx0 + rw > out.width {
        return Err(lower_err(name, "the output region lies outside the output"));
    }
    let Tiling { th, tw, blocks, .. } = tiling;
    let nblocks = layer.sources.len();
    let block_groups: Vec<std::ops::Range<usize>> = (0..nblocks)
        .step_by(blocks)
        .map(|b0| b0..(b0 + blocks).min(nblocks))
        .collect();
    let window_groups: Vec<Vec<std::ops::Range<usize>>> =
        layer.sources.iter().map(|s| groups(s)).collect();
    // The windows stay on chip across output blocks when every block reads the same windows
    // and every group of blocks takes them in one chunk.
    let same_everywhere = (1..nblocks).all(|nb| same_windows(layer, 0, nb));

    // Distinct tiles of each window of each group of blocks, summed over the group's blocks.
    let group_tiles: Vec<Vec<usize>> = block_groups
        .iter()
        .map(|nbs| {
            (0..window_groups[nbs.start].len())
                .map(|k| {
                    nbs.clone()
                        .map(|nb| distinct_tiles(&layer.sources[nb][window_groups[nb][k].clone()]))
                        .sum()
                })
                .collect()
        })
        .collect();

    // Steps.
    let mut steps = Vec::new();
    for image in 0..out.images {
        for y0 in (ry0..ry0 + rh).step_by(th) {
            for x0 in (rx0..rx0 + rw).step_by(tw) {
                let tile = Tile {
                    image,
                    y0,
                    x0,
                    h: th.min(ry0 + rh - y0),
                    w: tw.min(rx0 + rw - x0),
                };
                let win = Window::of(g, &tile).rows();
                // Chunks of whole windows (ranges of window indices, the same for every block of
                // a group) whose tiles fit one weight half and whose windows fit one region.
                let chunks_of = |tiles_of: &Vec<usize>| {
                    let mut chunks: Vec<std::ops::Range<usize>> = Vec::new();
                    let (mut tiles, mut windows) = (0, 0);
                    for (k, &n) in tiles_of.iter().enumerate() {
                        let fits_in = tiles + n <= wgt_half && (windows + 1) * win <= act_region;
                        match chunks.last_mut() {
                            Some(c) if fits_in => {
                                c.end = k + 1;
                                tiles += n;
                                windows += 1;
                            }
                            _ => {
                                chunks.push(k..k + 1);
                                tiles = n;
                                windows = 1;
                            }
                        }
                    }
                    chunks
                };
                let per_group: Vec<_> = group_tiles.iter().map(chunks_of).collect();
                let shared = same_everywhere && per_group.iter().all(|c| c.len() == 1);
                for (gi, (nbs, chunks)) in block_groups.iter().zip(per_group).enumerate() {
                    let n = chunks.len();
                    for (ci, ks) in chunks.into_iter().enumerate() {
                        let srcs = nbs
                            .clone()
                            .map(|nb| {
                                let w = &window_groups[nb];
                                w[ks.start].start..w[ks.end - 1].end
                            })
                            .collect();
                        steps.push(Step {
                            tile,
                            nbs: nbs.clone(),
                            srcs,
                            first: ci == 0,
                            last: ci + 1 == n,
                            load_act: !shared || gi == 0,
                        });
                    }
                }
            }
        }
    }

    // Every layer starts from drained tokens (see the end of this function).
    debug_assert!(b.is_drained());
    *pipe = Pipeline::default();

    let mut places: Vec<Place> = Vec::with_capacity(steps.len());
    let mut loaded: Vec<Event> = Vec::with_capacity(steps.len());

    let tile_bytes = (rows * cols) as u32;
    let emit_loads = |b: &mut ProgramBuilder,
                      pipe: &mut Pipeline,
                      places: &mut Vec<Place>,
                      i: usize|
     -> Result<Event> {
        let s = &steps[i];
        let mut place = Place::default();
        // Every block of the step reads the same windows: the first says which.
        let srcs = &layer.sources[s.nbs.start][s.srcs[0].clone()];
        let win = Window::of(g, &s.tile);
        if s.load_act {
            let h = pipe.act_turn % tiling.act_regions;
            pipe.act_turn += 1;
            if let Some(ev) = pipe.act_reader[h] {
                b.wait(Edge::COMPUTE_TO_LOAD, ev);
            }
            let mut at = Vec::new();
            for (k, r) in groups(srcs).into_iter().enumerate() {
                let first = srcs[r.start];
                let input = &layer.inputs[first.input];
                let t = input.tensor;
                let base = h * act_region + k * win.rows();
                at.push(((first.input, first.block), base));
                // Clip the window to the image; the rest is padding.
                let (top, y_size, bottom) = clip_axis(win.iy0, win.h, win.step[0], t.height);
                let (left, x_size, right) = clip_axis(win.ix0, win.w, win.step[1], t.width);
                if y_size == 0 || x_size == 0 {
                    return Err(lower_err(name, "a window lies entirely in the padding"));
                }
                let ry0 = (win.iy0 + (top * win.step[0]) as isize) as usize;
                let rx0 = (win.ix0 + (left * win.step[1]) as isize) as usize;
                b.emit(Instruction::Load(Dma {
                    buffer: Buffer::Act,
                    dram_base: t.pixel_addr(s.tile.image, ry0, rx0) + (first.block * rows) as u32,
                    sram_base: u16_of(base, "act row", name)?,
                    y_size: u16_of(y_size, "window rows", name)?,
                    y_stride: t.row_bytes() * win.step[0] as u32,
                    x_size: u16_of(x_size, "window columns", name)?,
                    x_stride: t.pixel_bytes * win.step[1] as u32,
                    pad_top: u8_of(top, "padding", name)?,
                    pad_bottom: u8_of(bottom, "padding", name)?,
                    pad_left: u8_of(left, "padding", name)?,
                    pad_right: u8_of(right, "padding", name)?,
                    pad_value: input.pad_value,
                    ..Dma::default()
                }));
            }
            place.windows = at;
            place.act_region = h;
        } else {
            place.windows = places[i - 1].windows.clone();
            place.act_region = places[i - 1].act_region;
        }
        let h = pipe.wgt_turn % 2;
        pipe.wgt_turn += 1;
        if let Some(ev) = pipe.wgt_reader[h] {
            b.wait(Edge::COMPUTE_TO_LOAD, ev);
        }
        place.wgt_half = h;
        // The distinct tiles of each block, one block after the other, loaded in runs that are
        // consecutive in DRAM.
        let mut distinct = Vec::new();
        for (nb, r) in s.nbs.clone().zip(&s.srcs) {
            place.wgt_slots.push(distinct.len());
            distinct.extend(tile_slots(&layer.sources[nb][r.clone()]).0);
        }
        let mut k = 0;
        while k < distinct.len() {
            let t0 = distinct[k];
            let mut n = 1;
            while k + n < distinct.len() && distinct[k + n] == t0 + n {
                n += 1;
            }
            b.emit(Instruction::Load(Dma {
                buffer: Buffer::Wgt,
                dram_base: layer.tiles_addr + t0 as u32 * tile_bytes,
                sram_base: u16_of(h * wgt_half + k, "weight tile", name)?,
                y_size: 1,
                x_size: u16_of(n, "tiles", name)?,
                x_stride: tile_bytes,
                ..Dma::default()
            }));
            k += n;
        }
        places.push(place);
        Ok(b.signal(Edge::LOAD_TO_COMPUTE))
    };

    if !steps.is_empty() {
        loaded.push(emit_loads(b, pipe, &mut places, 0)?);
    }
    for i in 0..steps.len() {
        // The next step's loads go ahead of this step's compute unless they overwrite the
        // windows this step reads (one activation region): then they follow it.
        let next_overwrites =
            i + 1 < steps.len() && tiling.act_regions == 1 && steps[i + 1].load_act;
        if i + 1 < steps.len() && !next_overwrites {
            loaded.push(emit_loads(b, pipe, &mut places, i + 1)?);
        }
        let s = &steps[i];
        let win = Window::of(g, &s.tile);
        b.wait(Edge::LOAD_TO_COMPUTE, loaded[i]);
        let (th, tw) = (
            u16_of(s.tile.h, "tile rows", name)?,
            u16_of(s.tile.w, "tile columns", name)?,
        );
        if s.first {
            pipe.acc_group_turn = pipe.acc_turn;
            pipe.acc_turn += s.nbs.len();
        }
        for (j, (nb, r)) in s.nbs.clone().zip(&s.srcs).enumerate() {
            let srcs = &layer.sources[nb][r.clone()];
            // Consecutive blocks alternate banks, so that one block's requantization runs
            // beside the next block's GEMMs; a group's blocks fill each bank tile by tile.
            let acc_base = u16_of(
                (pipe.acc_group_turn + j) % 2 * cfg.acc_depth as usize / 2
                    + j / 2 * s.tile.h * s.tile.w,
                "acc row",
                name,
            )?;
            let (_, slots) = tile_slots(srcs);
            for (k, src) in srcs.iter().enumerate() {
                let base = places[i]
                    .windows
                    .iter()
                    .find(|(key, _)| *key == (src.input, src.block))
                    .map(|(_, at)| *at)
                    .ok_or_else(|| lower_err(name, "a source's window was not loaded"))?;
                let act_base = base + src.ky * g.dilation[0] * win.w + src.kx * g.dilation[1];
                b.emit(Instruction::Gemm(Gemm {
                    mode: if s.first && k == 0 {
                        GemmMode::Overwrite
                    } else {
                        layer.combine
                    },
                    wgt: u16_of(
                        places[i].wgt_half * wgt_half + places[i].wgt_slots[j] + slots[k],
                        "weight tile",
                        name,
                    )?,
                    n_outer: th,
                    n_inner: tw,
                    acc: Walk {
                        base: acc_base,
                        stride_outer: tw,
                        stride_inner: 1,
                    },
                    act: Walk {
                        base: u16_of(act_base, "act row", name)?,
                        stride_outer: u16_of(
                            g.stride[0] / win.step[0] * win.w,
                            "row stride",
                            name,
                        )?,
                        stride_inner: u16_of(g.stride[1] / win.step[1], "stride", name)?,
                    },
                    ..Gemm::default()
                }));
            }
            if j + 1 == s.nbs.len() {
                // The windows and weights are free once the GEMMs are done: the
                // requantization reads neither.
                let done = b.signal(Edge::COMPUTE_TO_LOAD);
                pipe.act_reader[places[i].act_region] = Some(done);
                pipe.wgt_reader[places[i].wgt_half] = Some(done);
            }
            if s.last {
                b.emit(Instruction::Load(Dma {
                    buffer: Buffer::Acc,
                    dram_base: layer.params_addr + (nb * PARAM_ROWS as usize * cols * 4) as u32,
                    sram_base: param_row,
                    y_size: 1,
                    x_size: PARAM_ROWS as u16,
                    x_stride: (cols * 4) as u32,
                    ..Dma::default()
                }));
                let h = pipe.out_turn % 2;
                pipe.out_turn += 1;
                if let Some(ev) = pipe.out_reader[h] {
                    b.wait(Edge::STORE_TO_COMPUTE, ev);
                }
                b.emit(Instruction::Vec(VecInsn {
                    op: VecOp::Requant,
                    param: param_row,
                    n_outer: 1,
                    n_inner: th * tw,
                    src: Walk::contiguous(acc_base),
                    dst: Walk::contiguous(u16_of(h * out_half, "out row", name)?),
                    zero_point: layer.zero_point,
                    clamp_lo: layer.clamp_lo,
                    clamp_hi: layer.clamp_hi,
                    ..VecInsn::default()
                }));
                let ev = b.signal(Edge::COMPUTE_TO_STORE);
                b.wait(Edge::COMPUTE_TO_STORE, ev);
                b.emit(Instruction::Store(Dma {
                    buffer: Buffer::Out,
                    dram_base: out.pixel_addr(s.tile.image, s.tile.y0, s.tile.x0)
                        + (nb * cols) as u32,
                    sram_base: u16_of(h * out_half, "out row", name)?,
                    y_size: th,
                    y_stride: out.row_bytes(),
                    x_size: tw,
                    x_stride: out.pixel_bytes,
                    ..Dma::default()
                }));
                let stored = b.signal(Edge::STORE_TO_COMPUTE);
                pipe.out_reader[h] = Some(stored);
            }
        }
        if next_overwrites {
            loaded.push(emit_loads(b, pipe, &mut places, i + 1)?);
        }
    }
    // A full barrier: the next layer reads what this one stored, and each layer's instructions
    // form a program of their own that can run (and be measured) alone.
    b.drain();
    Ok(())
}

/// Packs one `rows × cols` tile from a function giving the weight of (input lane, output lane).
pub fn pack_tile(cfg: &HwConfig, out: &mut Vec<u8>, w: impl Fn(usize, usize) -> i8) {
    let (rows, cols) = (cfg.rows as usize, cfg.cols as usize);
    for r in 0..rows {
        for c in 0..cols {
            out.push(w(r, c) as u8);
        }
    }
}

/// Packs per-channel bias, multiplier and shift into `[n_block][3][cols]` int32 rows.
pub fn pack_params(cfg: &HwConfig, bias: &[i32], mult: &[i32], shift: &[i32]) -> Vec<u8> {
    let cols = cfg.cols as usize;
    let nb = bias.len().div_ceil(cols).max(1);
    let mut out = Vec::with_capacity(nb * 3 * cols * 4);
    for j in 0..nb {
        for lane in [bias, mult, shift] {
            for c in 0..cols {
                let v = lane.get(j * cols + c).copied().unwrap_or(0);
                out.extend_from_slice(&v.to_le_bytes());
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::memory::{Arena, Layout};

    /// The tensors of a 1×1 convolution of `cin` channels to `cout` over `side × side` pixels.
    fn pointwise(cfg: &HwConfig, cin: usize, cout: usize, side: usize) -> (ActTensor, ActTensor) {
        let mut arena = Arena::new(0);
        let x = arena.alloc("x", &[1, cin, side, side], &Layout::dense(cfg, cin));
        let y = arena.alloc("y", &[1, cout, side, side], &Layout::dense(cfg, cout));
        (x, y)
    }

    fn layer<'a>(cfg: &HwConfig, x: &'a ActTensor, y: &'a ActTensor) -> WindowLayer<'a> {
        let (rows, cols) = (cfg.rows as usize, cfg.cols as usize);
        let blocks = x.lanes / rows;
        WindowLayer {
            name: "pw",
            inputs: vec![WindowInput {
                tensor: x,
                pad_value: 0,
            }],
            output: y,
            geometry: Geometry::POINTWISE,
            sources: (0..y.lanes / cols)
                .map(|nb| {
                    (0..blocks)
                        .map(|block| Source {
                            input: 0,
                            block,
                            tile: nb * blocks + block,
                            ky: 0,
                            kx: 0,
                        })
                        .collect()
                })
                .collect(),
            combine: GemmMode::Add,
            tiles_addr: 0x10_0000,
            params_addr: 0x20_0000,
            zero_point: 0,
            clamp_lo: -128,
            clamp_hi: 127,
            region: None,
        }
    }

    /// The DRAM address each GEMM row reads its activations from (`None`: padding), GEMM by
    /// GEMM, following the act buffer through the program's loads in program order.
    fn gemm_reads(p: &[Instruction], act_depth: usize) -> Vec<Vec<Option<u32>>> {
        let mut act: Vec<Option<u32>> = vec![None; act_depth];
        let mut reads = Vec::new();
        for insn in p {
            match insn {
                Instruction::Load(d) if d.buffer == Buffer::Act => {
                    let (pt, pl) = (d.pad_top as usize, d.pad_left as usize);
                    let w = pl + d.x_size as usize + d.pad_right as usize;
                    let h = pt + d.y_size as usize + d.pad_bottom as usize;
                    for py in 0..h {
                        for px in 0..w {
                            let inside = (pt..pt + d.y_size as usize).contains(&py)
                                && (pl..pl + d.x_size as usize).contains(&px);
                            act[d.sram_base as usize + py * w + px] = inside.then(|| {
                                d.dram_base
                                    + (py - pt) as u32 * d.y_stride
                                    + (px - pl) as u32 * d.x_stride
                            });
                        }
                    }
                }
                Instruction::Gemm(g) => reads.push(
                    (0..g.n_outer as u32)
                        .flat_map(|o| (0..g.n_inner as u32).map(move |i| g.act.row(o, i) as usize))
                        .map(|r| act[r])
                        .collect(),
                ),
                _ => {}
            }
        }
        reads
    }

    /// With the whole activation buffer as one region, the next tile's windows overwrite this
    /// tile's, so they may be loaded only after its last GEMM: every GEMM must read what it
    /// reads with two regions.
    #[test]
    fn one_region_tiles_read_their_own_windows() {
        let cfg = HwConfig::SMALL;
        // 136 channels = 17 blocks of 16×16 pixels: several tiles even with the whole buffer.
        let (x, y) = pointwise(&cfg, 136, 32, 16);
        let l = layer(&cfg, &x, &y);
        let candidates = tilings(&cfg, &l).unwrap();
        let one = candidates
            .iter()
            .copied()
            .find(|t| t.act_regions == 1)
            .expect("a one-region candidate");
        assert!(one.th < 16, "several tiles: {one:?}");
        let program = |t: Tiling| {
            let mut b = ProgramBuilder::new();
            emit_tiled(&mut b, &cfg, &mut Pipeline::default(), &l, t).unwrap();
            gemm_reads(&b.finish(), cfg.act_depth as usize)
        };
        let one_region = program(one);
        let two_regions = program(Tiling {
            act_regions: 2,
            ..one
        });
        assert!(one_region.len() > 17);
        assert_eq!(one_region, two_regions);
    }

    /// A 1×1 convolution with stride 2 reads every other pixel; its windows hold just those.
    #[test]
    fn strided_pointwise_windows_hold_only_what_is_read() {
        let cfg = HwConfig::SMALL;
        let mut arena = Arena::new(0);
        let x = arena.alloc("x", &[1, 8, 15, 15], &Layout::dense(&cfg, 8));
        let y = arena.alloc("y", &[1, 8, 8, 8], &Layout::dense(&cfg, 8));
        for pads in [[0; 4], [1, 1, 0, 0]] {
            let mut l = layer(&cfg, &x, &y);
            l.geometry.stride = [2, 2];
            l.geometry.pads = pads;
            let t = tilings(&cfg, &l).unwrap()[0];
            let mut b = ProgramBuilder::new();
            emit_tiled(&mut b, &cfg, &mut Pipeline::default(), &l, t).unwrap();
            let reads: Vec<Option<u32>> = gemm_reads(&b.finish(), cfg.act_depth as usize)
                .into_iter()
                .flatten()
                .collect();
            // Output pixel (oy, ox) reads input (2·oy − pad, 2·ox − pad), or padding.
            let want: Vec<Option<u32>> = (0..8)
                .flat_map(|oy| (0..8).map(move |ox| (oy, ox)))
                .map(|(oy, ox)| {
                    let (iy, ix) = (2 * oy - pads[0] as isize, 2 * ox - pads[1] as isize);
                    (iy >= 0 && ix >= 0).then(|| x.pixel_addr(0, iy as usize, ix as usize))
                })
                .collect();
            assert_eq!(reads, want, "pads {pads:?}");
        }
    }
}
