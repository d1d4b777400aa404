//! DRAM placement: the weights image and the activation arena.

use sinter_isa::HwConfig;

/// Alignment of every region: a multiple of every DMA alignment of any valid config.
pub const REGION_ALIGN: u32 = 64;

pub fn align_up(n: u32, a: u32) -> u32 {
    n.div_ceil(a) * a
}

/// The weights image, written once to DRAM at `base` when a model is loaded.
#[derive(Debug, Default)]
pub struct WeightsImage {
    pub base: u32,
    pub bytes: Vec<u8>,
}

impl WeightsImage {
    /// Appends `data` at the next aligned offset and returns its DRAM address.
    pub fn append(&mut self, data: &[u8]) -> u32 {
        let at = align_up(self.bytes.len() as u32, REGION_ALIGN);
        self.bytes.resize(at as usize, 0);
        self.bytes.extend_from_slice(data);
        self.base + at
    }

    pub fn end(&self) -> u32 {
        self.base + self.bytes.len() as u32
    }
}

/// An int8 activation tensor in DRAM: rows of `features` values, each row padded to
/// `row_bytes` so that every DMA element is aligned (see [`padded_features`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ActTensor {
    pub name: String,
    pub shape: Vec<usize>,
    pub addr: u32,
    pub rows: usize,
    pub features: usize,
    pub row_bytes: u32,
}

impl ActTensor {
    pub fn bytes(&self) -> u32 {
        self.rows as u32 * self.row_bytes
    }

    /// Row-major byte strides of the logical shape (last axis contiguous, rows padded).
    pub fn strides(&self) -> Vec<u32> {
        let mut strides = vec![1u32; self.shape.len()];
        let mut acc = self.row_bytes;
        for k in (0..self.shape.len().saturating_sub(1)).rev() {
            strides[k] = acc;
            acc *= self.shape[k] as u32;
        }
        strides
    }
}

/// Features of a row rounded up to whole blocks of both array dimensions.
pub fn padded_features(cfg: &HwConfig, features: usize) -> usize {
    let block = cfg.rows.max(cfg.cols) as usize;
    features.div_ceil(block).max(1) * block
}

/// A bump allocator for the activation arena.
#[derive(Debug)]
pub struct Arena {
    pub base: u32,
    pub cursor: u32,
}

impl Arena {
    pub fn new(base: u32) -> Arena {
        Arena { base, cursor: base }
    }

    pub fn alloc(&mut self, cfg: &HwConfig, name: &str, shape: &[usize]) -> ActTensor {
        let features = *shape.last().unwrap_or(&1);
        let rows = shape[..shape.len().saturating_sub(1)]
            .iter()
            .product::<usize>();
        let row_bytes = padded_features(cfg, features) as u32;
        let addr = align_up(self.cursor, REGION_ALIGN);
        let t = ActTensor {
            name: name.to_string(),
            shape: shape.to_vec(),
            addr,
            rows,
            features,
            row_bytes,
        };
        self.cursor = addr + t.bytes();
        t
    }

    pub fn bytes(&self) -> u32 {
        self.cursor - self.base
    }
}
