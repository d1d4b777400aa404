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

/// An int8 activation tensor in DRAM, NHWC: `images × height × width` pixels of `lanes` bytes
/// (the logical channels padded to whole lane blocks so every DMA element is aligned).
/// A 2-D `[rows, features]` tensor is one image of `1 × rows` pixels.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ActTensor {
    pub name: String,
    /// Logical shape (NCHW for images).
    pub shape: Vec<usize>,
    pub addr: u32,
    pub images: usize,
    pub height: usize,
    pub width: usize,
    pub channels: usize,
    pub lanes: usize,
    pub pixel_bytes: u32,
}

impl ActTensor {
    pub fn bytes(&self) -> u32 {
        (self.images * self.height * self.width) as u32 * self.pixel_bytes
    }

    pub fn row_bytes(&self) -> u32 {
        self.width as u32 * self.pixel_bytes
    }

    pub fn pixel_addr(&self, image: usize, y: usize, x: usize) -> u32 {
        self.addr + ((image * self.height + y) * self.width + x) as u32 * self.pixel_bytes
    }

    /// Whether the tensor is an NCHW image batch (else rows of features).
    pub fn is_image(&self) -> bool {
        self.shape.len() == 4
    }

    /// Byte strides of the logical shape.
    pub fn strides(&self) -> Vec<u32> {
        let pb = self.pixel_bytes;
        if self.is_image() {
            let (h, w) = (self.shape[2] as u32, self.shape[3] as u32);
            return vec![h * w * pb, 1, w * pb, pb];
        }
        let mut strides = vec![1u32; self.shape.len()];
        let mut acc = pb;
        for k in (0..self.shape.len().saturating_sub(1)).rev() {
            strides[k] = acc;
            acc *= self.shape[k] as u32;
        }
        strides
    }

    /// The same bytes seen as rows of whole images (what a fully-connected layer after a
    /// Flatten reads): one pixel per image of `height·width·lanes` lanes.
    pub fn flattened(&self) -> ActTensor {
        let lanes = self.height * self.width * self.pixel_bytes as usize;
        ActTensor {
            name: self.name.clone(),
            shape: vec![self.images, self.channels * self.height * self.width],
            addr: self.addr,
            images: 1,
            height: 1,
            width: self.images,
            channels: self.channels * self.height * self.width,
            lanes,
            pixel_bytes: lanes as u32,
        }
    }

    /// The lane (byte within a pixel of [`ActTensor::flattened`]) of logical flat feature `k`
    /// (NCHW order: channel-major).
    pub fn flat_lane(&self, k: usize) -> usize {
        let hw = self.height * self.width;
        (k % hw) * self.pixel_bytes as usize + k / hw
    }
}

/// Channels rounded up to whole blocks of both array dimensions.
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
        let (images, height, width, channels) = match shape {
            [n, c, h, w] => (*n, *h, *w, *c),
            _ => {
                let features = *shape.last().unwrap_or(&1);
                let rows = shape[..shape.len().saturating_sub(1)]
                    .iter()
                    .product::<usize>();
                (1, 1, rows, features)
            }
        };
        let lanes = padded_features(cfg, channels);
        let addr = align_up(self.cursor, REGION_ALIGN);
        let t = ActTensor {
            name: name.to_string(),
            shape: shape.to_vec(),
            addr,
            images,
            height,
            width,
            channels,
            lanes,
            pixel_bytes: lanes as u32,
        };
        self.cursor = addr + t.bytes();
        t
    }

    pub fn bytes(&self) -> u32 {
        self.cursor - self.base
    }
}
