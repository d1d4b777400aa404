//! The compiled-model bundle (`.sntr`): everything a host needs to run a model on an NPU.
//!
//! Layout (all integers little-endian):
//!
//! ```text
//! 0    magic "SNTRBNDL"
//! 8    format version (u32)          12  architecture version (u32)
//! 16   hardware config: rows, cols, act_depth, wgt_depth, acc_depth, out_depth, bus_bytes (7×u32)
//! 44   section count (u32)           48  file length (u64)
//! 56   CRC-32 of bytes 0..56 and of the section table (u32)      60  reserved (u32, 0)
//! 64   section table: per section kind (u32), CRC-32 of its bytes (u32), offset (u64),
//!      length (u64), reserved (u64)
//! ...  sections, each starting at a multiple of 4096 so the weights can be memory-mapped
//! ```
//!
//! Sections: `MANIFEST` (JSON: model name, compiler version, memory map, layer table),
//! `IO` (JSON: the model's signature and its *stages* — slices of the NPU program with their
//! quantized input/output tensors, and CPU programs between them), `PROGRAM` (encoded
//! instructions), `WEIGHTS` (the DRAM image of weights and parameters), `CPU` (the serialized CPU
//! programs, opaque to this crate: the compiler writes them and its interpreter runs them), and,
//! optionally, `OPS` (JSON: the [`WindowOp`] each layer's instruction range computes, for
//! devices that can run a layer as one operation; a bundle without it runs the same). Any
//! truncation, bad checksum, unknown version or inconsistent field is reported as a
//! [`BundleError`] saying what is wrong.

use crate::insn::{decode_program, encode_program, DecodeError, Instruction, INSN_BYTES};
use crate::numeric::QParams;
use crate::window::WindowOp;
use crate::HwConfig;
use serde::{Deserialize, Serialize};
use std::ops::Range;
use std::path::Path;
use std::sync::Arc;

pub const MAGIC: &[u8; 8] = b"SNTRBNDL";
/// Version 2 added [`IoTensor::channel_lanes`], version 3 the optional `OPS` section; older
/// bundles read unchanged.
pub const FORMAT_VERSION: u32 = 3;
pub const SECTION_ALIGN: usize = 4096;
const HEADER_BYTES: usize = 64;
const ENTRY_BYTES: usize = 32;
const MAX_SECTIONS: u32 = 64;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u32)]
pub enum SectionKind {
    Manifest = 1,
    Io = 2,
    Program = 3,
    Weights = 4,
    Cpu = 5,
    Ops = 6,
}

impl SectionKind {
    const ALL: [SectionKind; 6] = [
        SectionKind::Manifest,
        SectionKind::Io,
        SectionKind::Program,
        SectionKind::Weights,
        SectionKind::Cpu,
        SectionKind::Ops,
    ];
    fn name(self) -> &'static str {
        match self {
            SectionKind::Manifest => "manifest",
            SectionKind::Io => "io",
            SectionKind::Program => "program",
            SectionKind::Weights => "weights",
            SectionKind::Cpu => "cpu",
            SectionKind::Ops => "ops",
        }
    }
}

/// Where things live in device DRAM (byte addresses).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemoryMap {
    pub program_base: u32,
    pub weights_base: u32,
    /// Start of the activation arena (inputs, intermediates, outputs).
    pub arena_base: u32,
    pub arena_bytes: u32,
    /// Total DRAM the model needs.
    pub dram_bytes: u32,
}

/// One compiled layer, for reports.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct LayerInfo {
    pub name: String,
    pub op: String,
    pub input_shape: Vec<usize>,
    pub output_shape: Vec<usize>,
    pub macs: u64,
    /// Instructions `insn_start..insn_end` of the program belong to this layer.
    pub insn_start: u32,
    pub insn_end: u32,
    pub predicted_cycles: u64,
}

/// Metadata of the compiled model.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    pub model_name: String,
    pub compiler_version: String,
    /// Batch the program processes per run.
    pub batch: u32,
    pub memory: MemoryMap,
    pub layers: Vec<LayerInfo>,
    pub predicted_cycles: u64,
    /// MACs of the model on the NPU and on the CPU, per run.
    pub npu_macs: u64,
    pub cpu_macs: u64,
}

/// A tensor as the model's user sees it: a name and a shape (first axis the batch).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TensorSig {
    pub name: String,
    pub shape: Vec<usize>,
}

/// A quantized tensor in device DRAM: the int8 value at logical index `idx` lives at
/// `dram_base + Σ idx[k]·strides[k]`, except that with `channel_lanes` the term of axis 1 is
/// `channel_lanes[idx[1]]` (the channels of a concatenation sit in their inputs' padded
/// segments); the region is `bytes` long (padding lanes included).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct IoTensor {
    pub name: String,
    pub shape: Vec<usize>,
    pub strides: Vec<u32>,
    pub dram_base: u32,
    pub bytes: u32,
    pub quant: QParams,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub channel_lanes: Option<Vec<u32>>,
}

impl IoTensor {
    pub fn elements(&self) -> usize {
        self.shape.iter().product()
    }

    /// Byte offsets (relative to `dram_base`) of every element in row-major logical order.
    pub fn offsets(&self) -> Vec<usize> {
        let mut out = Vec::with_capacity(self.elements());
        let rank = self.shape.len();
        let mut idx = vec![0usize; rank];
        for _ in 0..self.elements() {
            out.push(
                idx.iter()
                    .zip(&self.strides)
                    .enumerate()
                    .map(|(k, (i, s))| match (&self.channel_lanes, k) {
                        (Some(lanes), 1) => lanes[*i] as usize,
                        _ => i * *s as usize,
                    })
                    .sum(),
            );
            for k in (0..rank).rev() {
                idx[k] += 1;
                if idx[k] < self.shape[k] {
                    break;
                }
                idx[k] = 0;
            }
        }
        out
    }
}

/// One step of a model run. Stages run in order; each reads named float tensors (model inputs
/// or outputs of earlier stages) and writes named float tensors.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Stage {
    /// Instructions `insn_start..insn_end` of the program on the NPU: the host quantizes
    /// `inputs` into DRAM, runs the slice and dequantizes `outputs`.
    Npu {
        name: String,
        insn_start: u32,
        insn_end: u32,
        inputs: Vec<IoTensor>,
        outputs: Vec<IoTensor>,
    },
    /// Operators on the host CPU: bytes `offset..offset+len` of the `CPU` section hold the
    /// serialized program (the compiler's `cpu` module reads it).
    Cpu {
        name: String,
        inputs: Vec<String>,
        outputs: Vec<String>,
        offset: u64,
        len: u64,
    },
}

impl Stage {
    pub fn name(&self) -> &str {
        match self {
            Stage::Npu { name, .. } | Stage::Cpu { name, .. } => name,
        }
    }
}

/// The model's signature and how it runs.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct IoSpec {
    /// What users send.
    pub model_inputs: Vec<TensorSig>,
    /// What users get back.
    pub model_outputs: Vec<TensorSig>,
    pub stages: Vec<Stage>,
}

impl IoSpec {
    /// Every quantized tensor the NPU stages read or write.
    pub fn npu_tensors(&self) -> impl Iterator<Item = &IoTensor> {
        self.stages.iter().flat_map(|s| match s {
            Stage::Npu {
                inputs, outputs, ..
            } => inputs.iter().chain(outputs.iter()).collect::<Vec<_>>(),
            Stage::Cpu { .. } => Vec::new(),
        })
    }
}

/// The bytes behind a loaded bundle: owned, or a read-only memory map of the file.
#[derive(Clone)]
enum Backing {
    Owned(Arc<Vec<u8>>),
    Mapped(Arc<memmap2::Mmap>),
}

impl Backing {
    fn bytes(&self) -> &[u8] {
        match self {
            Backing::Owned(v) => v,
            Backing::Mapped(m) => m,
        }
    }
}

/// A compiled model.
#[derive(Clone)]
pub struct Bundle {
    pub config: HwConfig,
    pub arch_version: u32,
    pub manifest: Manifest,
    pub io: IoSpec,
    pub program: Vec<Instruction>,
    /// What layers' instruction ranges compute, as operations (empty when not recorded).
    pub ops: Vec<WindowOp>,
    weights: Backing,
    weights_range: Range<usize>,
    cpu_range: Range<usize>,
}

impl std::fmt::Debug for Bundle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Bundle")
            .field("config", &self.config)
            .field("manifest", &self.manifest)
            .field("io", &self.io)
            .field("program_len", &self.program.len())
            .field("weights_len", &self.weights_range.len())
            .finish()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum BundleError {
    #[error("cannot read bundle {path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("not a Sinter bundle (bad magic)")]
    Magic,
    #[error("bundle is truncated: {0}")]
    Truncated(String),
    #[error(
        "bundle format version {0} is not supported (this build reads version {FORMAT_VERSION})"
    )]
    Version(u32),
    #[error(
        "bundle was built for NPU architecture {found:#x}, this build implements {expected:#x}"
    )]
    Arch { found: u32, expected: u32 },
    #[error("bundle header checksum mismatch: the file is corrupted")]
    HeaderChecksum,
    #[error("section '{0}' checksum mismatch: the file is corrupted")]
    SectionChecksum(&'static str),
    #[error("bundle is malformed: {0}")]
    Malformed(String),
    #[error("section '{0}' is missing")]
    MissingSection(&'static str),
    #[error("section '{section}' is not valid JSON: {source}")]
    Json {
        section: &'static str,
        source: serde_json::Error,
    },
    #[error("instruction {0} of the program does not decode: {1}")]
    Program(usize, DecodeError),
    #[error("bundle hardware config is invalid: {0}")]
    Config(#[from] crate::ConfigError),
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().unwrap())
}
fn u64_at(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().unwrap())
}

fn align_up(n: usize) -> usize {
    n.div_ceil(SECTION_ALIGN) * SECTION_ALIGN
}

impl Bundle {
    pub fn new(
        config: HwConfig,
        manifest: Manifest,
        io: IoSpec,
        program: Vec<Instruction>,
        weights: Vec<u8>,
        cpu: Vec<u8>,
    ) -> Bundle {
        let (n, c) = (weights.len(), cpu.len());
        let mut bytes = weights;
        bytes.extend_from_slice(&cpu);
        Bundle {
            config,
            arch_version: crate::ARCH_VERSION,
            manifest,
            io,
            program,
            ops: Vec::new(),
            weights: Backing::Owned(Arc::new(bytes)),
            weights_range: 0..n,
            cpu_range: n..n + c,
        }
    }

    /// The serialized CPU programs (see [`Stage::Cpu`]).
    pub fn cpu_bytes(&self) -> &[u8] {
        &self.weights.bytes()[self.cpu_range.clone()]
    }

    /// The bytes of one CPU stage's program.
    pub fn cpu_program(&self, offset: u64, len: u64) -> Result<&[u8], BundleError> {
        let all = self.cpu_bytes();
        offset
            .checked_add(len)
            .filter(|end| *end <= all.len() as u64)
            .map(|end| &all[offset as usize..end as usize])
            .ok_or_else(|| {
                BundleError::Malformed(format!(
                    "CPU program {offset}+{len} lies outside the {}-byte CPU section",
                    all.len()
                ))
            })
    }

    /// The DRAM image of weights and parameters, to be written at `manifest.memory.weights_base`.
    pub fn weights(&self) -> &[u8] {
        &self.weights.bytes()[self.weights_range.clone()]
    }

    /// Serializes to the file format.
    pub fn to_bytes(&self) -> Vec<u8> {
        let json = |v: &dyn erased::Json| v.to_json();
        let mut sections: Vec<(SectionKind, Vec<u8>)> = vec![
            (SectionKind::Manifest, json(&self.manifest)),
            (SectionKind::Io, json(&self.io)),
            (SectionKind::Program, encode_program(&self.program)),
            (SectionKind::Weights, self.weights().to_vec()),
            (SectionKind::Cpu, self.cpu_bytes().to_vec()),
        ];
        if !self.ops.is_empty() {
            sections.push((SectionKind::Ops, json(&self.ops)));
        }
        let table_end = HEADER_BYTES + ENTRY_BYTES * sections.len();
        let mut offset = align_up(table_end);
        let mut table = Vec::with_capacity(ENTRY_BYTES * sections.len());
        let mut placed = Vec::new();
        for (kind, data) in &sections {
            table.extend_from_slice(&(*kind as u32).to_le_bytes());
            table.extend_from_slice(&crc32fast::hash(data).to_le_bytes());
            table.extend_from_slice(&(offset as u64).to_le_bytes());
            table.extend_from_slice(&(data.len() as u64).to_le_bytes());
            table.extend_from_slice(&0u64.to_le_bytes());
            placed.push(offset);
            offset = align_up(offset + data.len());
        }
        let file_len = placed
            .last()
            .map(|o| o + sections.last().unwrap().1.len())
            .unwrap_or(table_end);
        let mut out = vec![0u8; file_len];
        out[0..8].copy_from_slice(MAGIC);
        out[8..12].copy_from_slice(&FORMAT_VERSION.to_le_bytes());
        out[12..16].copy_from_slice(&self.arch_version.to_le_bytes());
        let c = &self.config;
        for (i, v) in [
            c.rows,
            c.cols,
            c.act_depth,
            c.wgt_depth,
            c.acc_depth,
            c.out_depth,
            c.bus_bytes,
        ]
        .iter()
        .enumerate()
        {
            out[16 + 4 * i..20 + 4 * i].copy_from_slice(&v.to_le_bytes());
        }
        out[44..48].copy_from_slice(&(sections.len() as u32).to_le_bytes());
        out[48..56].copy_from_slice(&(file_len as u64).to_le_bytes());
        out[HEADER_BYTES..table_end].copy_from_slice(&table);
        let crc = header_crc(&out[..56], &table);
        out[56..60].copy_from_slice(&crc.to_le_bytes());
        for ((_, data), at) in sections.iter().zip(placed) {
            out[at..at + data.len()].copy_from_slice(data);
        }
        out
    }

    /// Writes the bundle to `path` (through a temporary file, then a rename, so a crash never
    /// leaves a half-written bundle behind).
    pub fn save(&self, path: &Path) -> Result<(), BundleError> {
        let io_err = |source| BundleError::Io {
            path: path.display().to_string(),
            source,
        };
        let tmp = path.with_extension("sntr.tmp");
        std::fs::write(&tmp, self.to_bytes()).map_err(io_err)?;
        std::fs::rename(&tmp, path).map_err(io_err)
    }

    /// Parses a bundle from bytes (copied).
    pub fn from_bytes(bytes: &[u8]) -> Result<Bundle, BundleError> {
        Bundle::parse(Backing::Owned(Arc::new(bytes.to_vec())))
    }

    /// Opens a bundle file by memory-mapping it; the weights are never copied.
    pub fn open(path: &Path) -> Result<Bundle, BundleError> {
        let io_err = |source| BundleError::Io {
            path: path.display().to_string(),
            source,
        };
        let file = std::fs::File::open(path).map_err(io_err)?;
        // SAFETY: the map is read-only; bundles are written through rename, so a file we map is
        // never modified in place by Sinter. Every byte is validated before use.
        let map = unsafe { memmap2::Mmap::map(&file) }.map_err(io_err)?;
        Bundle::parse(Backing::Mapped(Arc::new(map)))
    }

    fn parse(backing: Backing) -> Result<Bundle, BundleError> {
        let b = backing.bytes();
        if b.len() < 8 || &b[0..8] != MAGIC {
            return Err(BundleError::Magic);
        }
        if b.len() < HEADER_BYTES {
            return Err(BundleError::Truncated(format!(
                "{} bytes, the header alone is {HEADER_BYTES}",
                b.len()
            )));
        }
        let version = u32_at(b, 8);
        if version == 0 || version > FORMAT_VERSION {
            return Err(BundleError::Version(version));
        }
        let arch_version = u32_at(b, 12);
        if arch_version != crate::ARCH_VERSION {
            return Err(BundleError::Arch {
                found: arch_version,
                expected: crate::ARCH_VERSION,
            });
        }
        let count = u32_at(b, 44);
        if count > MAX_SECTIONS {
            return Err(BundleError::Malformed(format!("{count} sections")));
        }
        let file_len = u64_at(b, 48);
        if (b.len() as u64) < file_len {
            return Err(BundleError::Truncated(format!(
                "{} of {file_len} bytes present",
                b.len()
            )));
        }
        if b.len() as u64 != file_len {
            return Err(BundleError::Malformed(format!(
                "file is {} bytes, header says {file_len}",
                b.len()
            )));
        }
        let table_end = HEADER_BYTES + ENTRY_BYTES * count as usize;
        if b.len() < table_end {
            return Err(BundleError::Truncated("section table cut short".into()));
        }
        let table = &b[HEADER_BYTES..table_end];
        if header_crc(&b[..56], table) != u32_at(b, 56) {
            return Err(BundleError::HeaderChecksum);
        }
        let config = HwConfig {
            rows: u32_at(b, 16),
            cols: u32_at(b, 20),
            act_depth: u32_at(b, 24),
            wgt_depth: u32_at(b, 28),
            acc_depth: u32_at(b, 32),
            out_depth: u32_at(b, 36),
            bus_bytes: u32_at(b, 40),
        };
        config.validate()?;

        let mut ranges: [Option<Range<usize>>; 6] = Default::default();
        for e in table.chunks_exact(ENTRY_BYTES) {
            let kind_bits = u32_at(e, 0);
            let Some(kind) = SectionKind::ALL
                .into_iter()
                .find(|k| *k as u32 == kind_bits)
            else {
                // Unknown sections from a newer minor writer are skipped (they are checksummed
                // by the header CRC through the table).
                continue;
            };
            let (offset, len) = (u64_at(e, 8), u64_at(e, 16));
            let end = offset
                .checked_add(len)
                .filter(|end| *end <= b.len() as u64)
                .ok_or_else(|| {
                    BundleError::Truncated(format!(
                        "section '{}' runs past the end of the file",
                        kind.name()
                    ))
                })?;
            if offset < table_end as u64 {
                return Err(BundleError::Malformed(format!(
                    "section '{}' overlaps the header",
                    kind.name()
                )));
            }
            let r = offset as usize..end as usize;
            if crc32fast::hash(&b[r.clone()]) != u32_at(e, 4) {
                return Err(BundleError::SectionChecksum(kind.name()));
            }
            ranges[kind as usize - 1] = Some(r);
        }
        let section = |k: SectionKind| {
            ranges[k as usize - 1]
                .clone()
                .ok_or(BundleError::MissingSection(k.name()))
        };
        fn json<T: serde::de::DeserializeOwned>(
            k: SectionKind,
            bytes: &[u8],
        ) -> Result<T, BundleError> {
            serde_json::from_slice(bytes).map_err(|source| BundleError::Json {
                section: k.name(),
                source,
            })
        }
        let manifest: Manifest = json(SectionKind::Manifest, &b[section(SectionKind::Manifest)?])?;
        let io: IoSpec = json(SectionKind::Io, &b[section(SectionKind::Io)?])?;
        let prog_bytes = &b[section(SectionKind::Program)?];
        if !prog_bytes.len().is_multiple_of(INSN_BYTES) {
            return Err(BundleError::Malformed(format!(
                "program section is {} bytes, not a whole number of instructions",
                prog_bytes.len()
            )));
        }
        let program = decode_program(prog_bytes).map_err(|(i, e)| BundleError::Program(i, e))?;
        let weights_range = section(SectionKind::Weights)?;
        let cpu_range = section(SectionKind::Cpu)?;
        let ops: Vec<WindowOp> = match section(SectionKind::Ops) {
            Ok(r) => json(SectionKind::Ops, &b[r])?,
            Err(_) => Vec::new(),
        };
        let bundle = Bundle {
            config,
            arch_version,
            manifest,
            io,
            program,
            ops,
            weights: backing.clone(),
            weights_range,
            cpu_range,
        };
        bundle.check_consistency()?;
        Ok(bundle)
    }

    /// Cross-checks the manifest against the sections so that a host never writes outside the
    /// DRAM the bundle asked for.
    fn check_consistency(&self) -> Result<(), BundleError> {
        let m = &self.manifest.memory;
        let bad = |s: String| Err(BundleError::Malformed(s));
        let prog_end = m.program_base as u64 + (self.program.len() * INSN_BYTES) as u64;
        let w_end = m.weights_base as u64 + self.weights_range.len() as u64;
        let arena_end = m.arena_base as u64 + m.arena_bytes as u64;
        if !m.program_base.is_multiple_of(INSN_BYTES as u32) {
            return bad(format!("program base {:#x} not aligned", m.program_base));
        }
        for (what, end) in [
            ("program", prog_end),
            ("weights", w_end),
            ("arena", arena_end),
        ] {
            if end > m.dram_bytes as u64 {
                return bad(format!(
                    "{what} ends at {end:#x}, beyond the {:#x} bytes of DRAM",
                    m.dram_bytes
                ));
            }
        }
        for stage in &self.io.stages {
            match stage {
                Stage::Npu {
                    name,
                    insn_start,
                    insn_end,
                    ..
                } => {
                    if insn_start > insn_end || *insn_end as usize > self.program.len() {
                        return bad(format!(
                            "stage '{name}' runs instructions {insn_start}..{insn_end} of {}",
                            self.program.len()
                        ));
                    }
                }
                Stage::Cpu {
                    offset, len, name, ..
                } => {
                    if offset.saturating_add(*len) > self.cpu_range.len() as u64 {
                        return bad(format!("CPU stage '{name}' lies outside the CPU section"));
                    }
                }
            }
        }
        for op in &self.ops {
            if op.insn_start > op.insn_end || op.insn_end as usize > self.program.len() {
                return bad(format!(
                    "operation '{}' names instructions {}..{} of {}",
                    op.name,
                    op.insn_start,
                    op.insn_end,
                    self.program.len()
                ));
            }
            op.validate(&self.config, m.dram_bytes as u64)
                .or_else(|e| bad(format!("operation '{}': {e}", op.name)))?;
        }
        for t in self.io.npu_tensors() {
            if t.shape.len() != t.strides.len() {
                return bad(format!(
                    "tensor '{}' has mismatched shape and strides",
                    t.name
                ));
            }
            if let Some(lanes) = &t.channel_lanes {
                if t.shape.len() < 2 || lanes.len() != t.shape[1] {
                    return bad(format!(
                        "tensor '{}' has {} channel lanes for shape {:?}",
                        t.name,
                        lanes.len(),
                        t.shape
                    ));
                }
            }
            let last: u64 = t
                .shape
                .iter()
                .zip(&t.strides)
                .enumerate()
                .map(|(k, (d, s))| match (&t.channel_lanes, k) {
                    (Some(lanes), 1) => lanes.iter().copied().max().unwrap_or(0) as u64,
                    _ => (*d as u64).saturating_sub(1) * *s as u64,
                })
                .sum();
            if t.elements() > 0 && last >= t.bytes as u64 {
                return bad(format!(
                    "tensor '{}' overruns its {} bytes",
                    t.name, t.bytes
                ));
            }
            if t.dram_base as u64 + t.bytes as u64 > m.dram_bytes as u64 {
                return bad(format!("tensor '{}' lies outside DRAM", t.name));
            }
            if !(t.quant.scale.is_finite() && t.quant.scale > 0.0) {
                return bad(format!("tensor '{}' has scale {}", t.name, t.quant.scale));
            }
        }
        Ok(())
    }
}

fn header_crc(header: &[u8], table: &[u8]) -> u32 {
    let mut h = crc32fast::Hasher::new();
    h.update(header);
    h.update(table);
    h.finalize()
}

mod erased {
    pub trait Json {
        fn to_json(&self) -> Vec<u8>;
    }
    impl<T: serde::Serialize> Json for T {
        fn to_json(&self) -> Vec<u8> {
            serde_json::to_vec(self).expect("bundle metadata always serializes")
        }
    }
}
