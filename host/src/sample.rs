//! A tiny hand-built model: one dense layer with ReLU on the NPU and an optional softmax on the
//! CPU. It needs no compiler, so it serves as a smoke test of a device, a demo bundle and a test
//! fixture; [`DenseSample::reference`] computes the exact answer with `sinter_isa::numeric`.
//!
//! [`sample_inputs`] makes deterministic inputs for any bundle from its signature, for timing
//! runs that need data of the right shape but not meaningful values.

use sinter_compiler::cpu::CpuProgram;
use sinter_compiler::ir::{Node, Op};
use sinter_isa::bundle::{
    Bundle, IoSpec, IoTensor, LayerInfo, Manifest, MemoryMap, Stage, TensorSig,
};
use sinter_isa::numeric::{quantize_multiplier, requant_lane, softmax_in_place, QParams};
use sinter_isa::tensor::Tensor;
use sinter_isa::timing::{estimate, TimingParams};
use sinter_isa::{
    Buffer, Deps, Dma, Gemm, HwConfig, Instruction, Module, Sync, VecInsn, VecOp, Walk,
};
use std::collections::HashMap;

/// The sample model and the numbers it was built from.
#[derive(Clone, Debug)]
pub struct DenseSample {
    pub bundle: Bundle,
    /// Input features (≤ rows of the array).
    pub k: usize,
    /// Output features (≤ cols of the array).
    pub n: usize,
    pub input_q: QParams,
    pub output_q: QParams,
    /// `k × n` int8 weights, row-major.
    pub weights: Vec<i8>,
    pub bias: Vec<i32>,
    pub mult: i32,
    pub shift: i32,
    pub softmax: bool,
}

fn align(v: u32, a: u32) -> u32 {
    v.div_ceil(a) * a
}

/// Builds `y = relu(x·W + b)` (then `softmax(y)` when `softmax`) for `x: [batch, k]` on an NPU of
/// config `cfg`. Needs `k ≤ rows`, `n ≤ cols` and `batch ≤ 256`.
pub fn dense(cfg: HwConfig, batch: u32, k: usize, n: usize, softmax: bool) -> DenseSample {
    assert!(k >= 1 && k <= cfg.rows as usize && n >= 1 && n <= cfg.cols as usize);
    assert!((1..=256).contains(&batch));
    let (rows, cols) = (cfg.rows, cfg.cols);
    let input_q = QParams {
        scale: 0.05,
        zero_point: 0,
    };
    let output_q = QParams {
        scale: 0.1,
        zero_point: -128,
    };
    let weight_scale = 0.02f64;
    let factor = input_q.scale as f64 * weight_scale / output_q.scale as f64;
    let (mult, shift) = quantize_multiplier(factor).expect("representable factor");
    let weights: Vec<i8> = (0..k * n)
        .map(|i| {
            let (r, c) = (i / n, i % n);
            ((r * 7 + c * 13) % 15) as i8 - 7
        })
        .collect();
    let bias: Vec<i32> = (0..n).map(|c| (c as i32 - 2) * 40).collect();

    // Weights image: the rows×cols tile, then bias / mult / shift accumulator rows.
    let tile_bytes = rows * cols;
    let params_off = align(tile_bytes, 32);
    let acc_row = cols * 4;
    let mut image = vec![0u8; (params_off + 3 * acc_row) as usize];
    for r in 0..k {
        for c in 0..n {
            image[r * cols as usize + c] = weights[r * n + c] as u8;
        }
    }
    for c in 0..cols as usize {
        let lanes = [
            bias.get(c).copied().unwrap_or(0),
            if c < n { mult } else { 0 },
            if c < n { shift } else { 0 },
        ];
        for (j, v) in lanes.iter().enumerate() {
            let at = (params_off + j as u32 * acc_row) as usize + 4 * c;
            image[at..at + 4].copy_from_slice(&v.to_le_bytes());
        }
    }

    let program_base = 0u32;
    let prog_len = 6u32;
    let weights_base = align(program_base + prog_len * 32, 256);
    let arena_base = align(weights_base + image.len() as u32, 256);
    let in_base = arena_base;
    let in_bytes = batch * rows;
    let out_base = align(in_base + in_bytes, 64);
    let out_bytes = batch * cols;
    let arena_bytes = out_base + out_bytes - arena_base;
    let dram_bytes = align(out_base + out_bytes, 4096);
    let param_row = (cfg.acc_depth - 4) as u16;
    let b16 = batch as u16;

    let program = vec![
        Instruction::Load(Dma {
            buffer: Buffer::Wgt,
            dram_base: weights_base,
            y_size: 1,
            x_size: 1,
            ..Dma::default()
        }),
        Instruction::Load(Dma {
            deps: Deps {
                push_next: true,
                ..Deps::NONE
            },
            buffer: Buffer::Act,
            dram_base: in_base,
            y_size: 1,
            x_size: b16,
            x_stride: rows,
            ..Dma::default()
        }),
        Instruction::Load(Dma {
            buffer: Buffer::Acc,
            dram_base: weights_base + params_off,
            sram_base: param_row,
            y_size: 1,
            x_size: 3,
            x_stride: acc_row,
            ..Dma::default()
        }),
        Instruction::Gemm(Gemm {
            deps: Deps {
                pop_prev: true,
                ..Deps::NONE
            },
            mode: sinter_isa::GemmMode::Overwrite,
            wgt: 0,
            n_outer: 1,
            n_inner: b16,
            acc: Walk::contiguous(0),
            act: Walk::contiguous(0),
        }),
        Instruction::Vec(VecInsn {
            deps: Deps {
                push_next: true,
                ..Deps::NONE
            },
            op: VecOp::Requant,
            param: param_row,
            n_outer: 1,
            n_inner: b16,
            src: Walk::contiguous(0),
            dst: Walk::contiguous(0),
            zero_point: output_q.zero_point,
            clamp_lo: output_q.zero_point,
            clamp_hi: 127,
        }),
        Instruction::Store(Dma {
            deps: Deps {
                pop_prev: true,
                ..Deps::NONE
            },
            buffer: Buffer::Out,
            dram_base: out_base,
            y_size: 1,
            x_size: b16,
            x_stride: cols,
            ..Dma::default()
        }),
    ];
    debug_assert_eq!(program.len() as u32, prog_len);
    let cycles = estimate(&cfg, &TimingParams::default(), &program).total_cycles;
    let macs = batch as u64 * k as u64 * n as u64;
    let b = batch as usize;
    let npu_out = if softmax { "logits" } else { "y" };
    let manifest = Manifest {
        model_name: if softmax {
            "dense_softmax"
        } else {
            "dense_relu"
        }
        .into(),
        compiler_version: format!("hand-built {}", env!("CARGO_PKG_VERSION")),
        batch,
        memory: MemoryMap {
            program_base,
            weights_base,
            arena_base,
            arena_bytes,
            dram_bytes,
        },
        layers: vec![LayerInfo {
            name: "dense".into(),
            op: "Gemm+Relu".into(),
            input_shape: vec![b, k],
            output_shape: vec![b, n],
            macs,
            insn_start: 0,
            insn_end: prog_len,
            predicted_cycles: cycles,
        }],
        predicted_cycles: cycles,
        npu_macs: macs,
        cpu_macs: 0,
    };
    let io = IoSpec {
        model_inputs: vec![TensorSig {
            name: "x".into(),
            shape: vec![b, k],
        }],
        model_outputs: vec![TensorSig {
            name: if softmax { "probs" } else { "y" }.into(),
            shape: vec![b, n],
        }],
        stages: Vec::new(),
    };
    let mut io = io;
    io.stages.push(Stage::Npu {
        name: "dense".into(),
        insn_start: 0,
        insn_end: prog_len,
        inputs: vec![IoTensor {
            name: "x".into(),
            shape: vec![b, k],
            strides: vec![rows, 1],
            dram_base: in_base,
            bytes: in_bytes,
            quant: input_q,
            channel_lanes: None,
        }],
        outputs: vec![IoTensor {
            name: npu_out.into(),
            shape: vec![b, n],
            strides: vec![cols, 1],
            dram_base: out_base,
            bytes: out_bytes,
            quant: output_q,
            channel_lanes: None,
        }],
    });
    let mut cpu = Vec::new();
    if softmax {
        cpu = CpuProgram {
            nodes: vec![Node {
                name: "softmax".into(),
                op: Op::Softmax {
                    axis: 1,
                    coerce_2d: false,
                },
                inputs: vec!["logits".into()],
                outputs: vec!["probs".into()],
            }],
            constants: Default::default(),
        }
        .encode();
        io.stages.push(Stage::Cpu {
            name: "softmax".into(),
            inputs: vec!["logits".into()],
            outputs: vec!["probs".into()],
            offset: 0,
            len: cpu.len() as u64,
        });
    }
    DenseSample {
        bundle: Bundle::new(cfg, manifest, io, program, image, cpu),
        k,
        n,
        input_q,
        output_q,
        weights,
        bias,
        mult,
        shift,
        softmax,
    }
}

impl DenseSample {
    /// The exact output for `x` of shape `[N, k]` (any N).
    pub fn reference(&self, x: &Tensor) -> Tensor {
        let rows = x.data.len() / self.k;
        let mut data = Vec::with_capacity(rows * self.n);
        for row in x.data.chunks_exact(self.k) {
            let q: Vec<i32> = row
                .iter()
                .map(|v| self.input_q.quantize(*v) as i32)
                .collect();
            let mut out: Vec<f32> = (0..self.n)
                .map(|c| {
                    let acc: i32 = (0..self.k)
                        .map(|r| q[r] * self.weights[r * self.n + c] as i32)
                        .sum();
                    let zp = self.output_q.zero_point;
                    let o = requant_lane(acc, self.bias[c], self.mult, self.shift, zp, zp, 127);
                    self.output_q.dequantize(o)
                })
                .collect();
            if self.softmax {
                softmax_in_place(&mut out);
            }
            data.extend(out);
        }
        Tensor {
            shape: vec![rows, self.n],
            data,
        }
    }
}

/// Inputs of `rows` rows for every model input in `sigs` (first axis the batch), filled with
/// values in `[-1, 1)` from a fixed pseudo-random sequence: the same call gives the same
/// tensors, so timing runs are repeatable. The NPU's cycle counts do not depend on the values.
pub fn sample_inputs(sigs: &[TensorSig], rows: usize) -> HashMap<String, Tensor> {
    // splitmix64: tiny, deterministic and good enough to avoid constant inputs.
    let mut state = 0x5EED_0F5A_u64;
    let mut next = move || {
        state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    };
    sigs.iter()
        .map(|sig| {
            let mut shape = sig.shape.clone();
            if let Some(first) = shape.first_mut() {
                *first = rows;
            }
            let len = shape.iter().product();
            let data = (0..len)
                .map(|_| (next() >> 40) as f32 / (1u64 << 23) as f32 - 1.0)
                .collect();
            (sig.name.clone(), Tensor { shape, data })
        })
        .collect()
}

/// `bundle` with one more instruction at the end of its program: a store that waits for a
/// token nobody pushes, so every run hangs (for tests of timeouts and device recovery).
pub fn hanging(b: &Bundle) -> Bundle {
    let mut program = b.program.clone();
    program.push(Instruction::Sync(Sync {
        deps: Deps {
            pop_prev: true,
            ..Deps::NONE
        },
        module: Module::Store,
    }));
    let mut manifest = b.manifest.clone();
    if let Some(last) = manifest.layers.last_mut() {
        last.insn_end += 1;
    }
    let mut io = b.io.clone();
    for stage in &mut io.stages {
        if let Stage::Npu { insn_end, .. } = stage {
            if *insn_end as usize == b.program.len() {
                *insn_end += 1;
            }
        }
    }
    Bundle::new(
        b.config,
        manifest,
        io,
        program,
        b.weights().to_vec(),
        b.cpu_bytes().to_vec(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sample_inputs_follow_the_signature_and_repeat() {
        let sigs = [
            TensorSig {
                name: "a".into(),
                shape: vec![1, 3, 4],
            },
            TensorSig {
                name: "b".into(),
                shape: vec![1, 5],
            },
        ];
        let x = sample_inputs(&sigs, 2);
        assert_eq!(x["a"].shape, vec![2, 3, 4]);
        assert_eq!(x["a"].data.len(), 24);
        assert_eq!(x["b"].shape, vec![2, 5]);
        assert!(x["a"].data.iter().all(|v| (-1.0..1.0).contains(v)));
        // Not constant, and the same on every call.
        assert!(x["a"].data.iter().any(|v| *v != x["a"].data[0]));
        assert_eq!(sample_inputs(&sigs, 2)["b"].data, x["b"].data);
    }
}
