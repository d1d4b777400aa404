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

/// An int8 activation tensor in DRAM, NHWC: `images × height × width` pixels, each pixel
/// `pixel_bytes` apart. The tensor owns `lanes` bytes of each pixel (whole lane blocks, so every
/// DMA element is aligned), and logical channel `c` sits in lane `channel_lanes[c]`.
///
/// A freshly allocated tensor has `channel_lanes[c] = c` and `pixel_bytes = lanes`. A tensor
/// that is one input of a channel Concat is a *view* into the Concat's tensor: its lanes are a
/// slice of the Concat's pixel, so its producer writes straight into place. A Concat's own
/// channels then sit in its inputs' segments, each padded to whole blocks, which is why the
/// channel→lane map is explicit. A 2-D `[rows, features]` tensor is one image of `1 × rows`
/// pixels.
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
    /// Lane of each logical channel (`channels` entries, each `< lanes`).
    pub channel_lanes: Vec<usize>,
}

impl ActTensor {
    pub fn bytes(&self) -> u32 {
        (self.images * self.height * self.width) as u32 * self.pixel_bytes
    }

    /// Bytes from `addr` to the end of the last lane this tensor owns (a view ends before its
    /// parent's pixel does).
    pub fn extent(&self) -> u32 {
        let pixels = (self.images * self.height * self.width) as u32;
        pixels.saturating_sub(1) * self.pixel_bytes + self.lanes as u32
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

    /// Whether channel `c` sits in lane `c`.
    pub fn has_identity_lanes(&self) -> bool {
        self.channel_lanes.iter().enumerate().all(|(c, &l)| c == l)
    }

    /// The logical channel in each lane (`None` for padding lanes).
    pub fn lane_channels(&self) -> Vec<Option<usize>> {
        let mut out = vec![None; self.lanes];
        for (c, &l) in self.channel_lanes.iter().enumerate() {
            out[l] = Some(c);
        }
        out
    }

    /// Byte strides of the logical shape; along the channel axis of an image the stride is
    /// one byte and [`ActTensor::channel_lanes`] says where each channel really is.
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
    /// Flatten reads): one pixel per image of `height·width·pixel_bytes` lanes, logical feature
    /// `k` (NCHW order: channel-major) in lane `(k mod hw)·pixel_bytes + channel_lanes[k / hw]`.
    pub fn flattened(&self) -> ActTensor {
        let hw = self.height * self.width;
        let lanes = hw * self.pixel_bytes as usize;
        let features = self.channels * hw;
        ActTensor {
            name: self.name.clone(),
            shape: vec![self.images, features],
            addr: self.addr,
            images: 1,
            height: 1,
            width: self.images,
            channels: features,
            lanes,
            pixel_bytes: lanes as u32,
            channel_lanes: (0..features)
                .map(|k| (k % hw) * self.pixel_bytes as usize + self.channel_lanes[k / hw])
                .collect(),
        }
    }

    /// A view of `lanes` lanes of this tensor's pixels from lane `offset` on, with the given
    /// channel map (relative to `offset`) and logical shape.
    pub fn view(&self, name: &str, shape: &[usize], offset: usize, layout: &Layout) -> ActTensor {
        ActTensor {
            name: name.to_string(),
            shape: shape.to_vec(),
            addr: self.addr + offset as u32,
            channels: layout.channel_lanes.len(),
            lanes: layout.lanes,
            channel_lanes: layout.channel_lanes.clone(),
            ..self.clone()
        }
    }
}

/// How a tensor's channels sit in its pixels: `lanes` bytes, channel `c` in lane
/// `channel_lanes[c]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Layout {
    pub lanes: usize,
    pub channel_lanes: Vec<usize>,
}

impl Layout {
    /// Channels in order, padded to whole blocks.
    pub fn dense(cfg: &HwConfig, channels: usize) -> Layout {
        Layout {
            lanes: padded_features(cfg, channels),
            channel_lanes: (0..channels).collect(),
        }
    }

    /// The layout of a channel concatenation: each part's lanes in turn.
    pub fn concat<'a>(parts: impl IntoIterator<Item = &'a Layout>) -> Layout {
        let mut out = Layout {
            lanes: 0,
            channel_lanes: Vec::new(),
        };
        for p in parts {
            out.channel_lanes
                .extend(p.channel_lanes.iter().map(|l| l + out.lanes));
            out.lanes += p.lanes;
        }
        out
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

    /// Allocates a tensor of logical `shape` whose pixels hold `layout`.
    pub fn alloc(&mut self, name: &str, shape: &[usize], layout: &Layout) -> ActTensor {
        let (images, height, width) = image_dims(shape);
        let addr = align_up(self.cursor, REGION_ALIGN);
        let t = ActTensor {
            name: name.to_string(),
            shape: shape.to_vec(),
            addr,
            images,
            height,
            width,
            channels: layout.channel_lanes.len(),
            lanes: layout.lanes,
            pixel_bytes: layout.lanes as u32,
            channel_lanes: layout.channel_lanes.clone(),
        };
        self.cursor = addr + t.bytes();
        t
    }

    pub fn bytes(&self) -> u32 {
        self.cursor - self.base
    }
}

/// `(images, height, width)` of a logical shape: NCHW images, or rows of features (one image
/// of `1 × rows` pixels).
pub fn image_dims(shape: &[usize]) -> (usize, usize, usize) {
    match shape {
        [n, _, h, w] => (*n, *h, *w),
        _ => (
            1,
            1,
            shape[..shape.len().saturating_sub(1)].iter().product(),
        ),
    }
}

/// Channels (features) of a logical shape: axis 1 of an image, else the last axis.
pub fn channels_of(shape: &[usize]) -> usize {
    match shape {
        [_, c, _, _] => *c,
        _ => shape.last().copied().unwrap_or(1),
    }
}
