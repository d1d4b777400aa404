//! The runtime: named float tensors in, named float tensors out.
//!
//! Per request: check the inputs against the model's signature, split the batch into runs of
//! the compiled batch size (padding the last one with zeros), and for every run execute the
//! bundle's stages in order: a CPU stage on the fp32 interpreter, an NPU stage by quantizing its
//! inputs into the device's DRAM layout, running its slice of the program and dequantizing its
//! outputs.

use crate::driver::{Driver, RunStats};
use crate::error::HostError;
use crate::transport::Transport;
use ndarray::ArrayD;
use sinter_compiler::cpu::CpuProgram;
use sinter_isa::bundle::{Bundle, IoTensor, Stage, TensorSig};
use sinter_isa::tensor::Tensor;
use std::collections::HashMap;

/// The result of one request.
#[derive(Clone, Debug)]
pub struct Inference {
    /// The model outputs in the order of `io.model_outputs`, each with the batch axis first.
    pub outputs: Vec<(String, Tensor)>,
    /// One entry per device run.
    pub runs: Vec<RunStats>,
    /// With [`Runtime::set_per_layer`]: the statistics of each compiled layer (in the order of
    /// the bundle's layer table), summed over all runs of the request.
    pub layers: Vec<RunStats>,
}

impl Inference {
    /// The output called `name`.
    pub fn output(&self, name: &str) -> Option<&Tensor> {
        self.outputs.iter().find(|(n, _)| n == name).map(|(_, t)| t)
    }
}

/// An NPU tensor with its element offsets computed once.
struct Placed {
    io: IoTensor,
    offsets: Vec<usize>,
}

impl Placed {
    fn new(io: &IoTensor) -> Placed {
        Placed {
            offsets: io.offsets(),
            io: io.clone(),
        }
    }
}

/// A stage ready to run: NPU tensors with their offsets, CPU programs decoded.
enum Step {
    Npu {
        start: u32,
        end: u32,
        inputs: Vec<Placed>,
        outputs: Vec<Placed>,
    },
    Cpu {
        name: String,
        program: CpuProgram,
    },
}

/// A loaded model on one device.
pub struct Runtime<T: Transport> {
    driver: Driver<T>,
    bundle: Bundle,
    steps: Vec<Step>,
    batch: usize,
    per_layer: bool,
    layer_stats: Vec<Option<RunStats>>,
}

impl<T: Transport> Runtime<T> {
    /// Checks `bundle` against the device behind `driver` and uploads it.
    pub fn new(mut driver: Driver<T>, bundle: Bundle) -> Result<Self, HostError> {
        let batch = bundle.manifest.batch.max(1) as usize;
        if bundle.io.model_inputs.is_empty() || bundle.io.model_outputs.is_empty() {
            return Err(HostError::Bundle(
                "the model declares no inputs or no outputs".into(),
            ));
        }
        for sig in bundle
            .io
            .model_inputs
            .iter()
            .chain(&bundle.io.model_outputs)
        {
            if sig.shape.first().copied() != Some(batch) {
                return Err(HostError::Bundle(format!(
                    "tensor '{}' has shape {:?}; its first axis must be the batch {batch}",
                    sig.name, sig.shape
                )));
            }
        }
        let mut steps = Vec::with_capacity(bundle.io.stages.len());
        for stage in &bundle.io.stages {
            steps.push(match stage {
                Stage::Npu {
                    insn_start,
                    insn_end,
                    inputs,
                    outputs,
                    ..
                } => Step::Npu {
                    start: *insn_start,
                    end: *insn_end,
                    inputs: inputs.iter().map(Placed::new).collect(),
                    outputs: outputs.iter().map(Placed::new).collect(),
                },
                Stage::Cpu {
                    name, offset, len, ..
                } => {
                    let bytes = bundle
                        .cpu_program(*offset, *len)
                        .map_err(|e| HostError::Bundle(e.to_string()))?;
                    Step::Cpu {
                        name: name.clone(),
                        program: CpuProgram::decode(bytes)
                            .map_err(|e| HostError::Bundle(format!("stage '{name}': {e}")))?,
                    }
                }
            });
        }
        driver.load(&bundle)?;
        Ok(Runtime {
            per_layer: false,
            layer_stats: Vec::new(),
            steps,
            batch,
            driver,
            bundle,
        })
    }

    pub fn bundle(&self) -> &Bundle {
        &self.bundle
    }

    /// The driver, e.g. to read device memory after a run.
    pub fn driver(&mut self) -> &mut Driver<T> {
        &mut self.driver
    }

    /// The driver, read-only.
    pub fn driver_ref(&self) -> &Driver<T> {
        &self.driver
    }

    /// Runs every layer as its own device run, so that each layer's cycles are measured (the
    /// compiler makes every layer's instructions a self-contained program).
    pub fn set_per_layer(&mut self, on: bool) {
        self.per_layer = on;
    }

    /// Rows the device processes per run.
    pub fn batch(&self) -> usize {
        self.batch
    }

    /// The model inputs with the batch axis as `-1`-style free: `[_, d1, d2, …]`.
    pub fn input_sigs(&self) -> &[TensorSig] {
        &self.bundle.io.model_inputs
    }

    pub fn output_sigs(&self) -> &[TensorSig] {
        &self.bundle.io.model_outputs
    }

    /// Checks the inputs and returns the batch size (rows).
    fn check_inputs(&self, inputs: &HashMap<String, Tensor>) -> Result<usize, HostError> {
        let sigs = &self.bundle.io.model_inputs;
        let expected = || sigs.iter().map(|s| s.name.clone()).collect::<Vec<_>>();
        let mut names: Vec<&String> = inputs.keys().collect();
        names.sort();
        for name in names {
            if !sigs.iter().any(|s| &s.name == name) {
                return Err(HostError::UnknownInput {
                    name: name.clone(),
                    expected: expected(),
                });
            }
        }
        let mut rows: Option<(String, usize)> = None;
        for sig in sigs {
            let t = inputs
                .get(&sig.name)
                .ok_or_else(|| HostError::MissingInput {
                    name: sig.name.clone(),
                    expected: expected(),
                })?;
            let want: usize = t.shape.iter().product();
            if want != t.data.len() {
                return Err(HostError::InputLength {
                    name: sig.name.clone(),
                    shape: t.shape.clone(),
                    want,
                    got: t.data.len(),
                });
            }
            if t.shape.len() != sig.shape.len() || t.shape[1..] != sig.shape[1..] || t.shape[0] == 0
            {
                return Err(HostError::InputShape {
                    name: sig.name.clone(),
                    expected: sig.shape[1..].to_vec(),
                    got: t.shape.clone(),
                });
            }
            if t.data.iter().any(|v| !v.is_finite()) {
                return Err(HostError::NonFinite {
                    name: sig.name.clone(),
                });
            }
            match &rows {
                None => rows = Some((sig.name.clone(), t.shape[0])),
                Some((a, na)) if *na != t.shape[0] => {
                    return Err(HostError::BatchMismatch {
                        a: a.clone(),
                        na: *na,
                        b: sig.name.clone(),
                        nb: t.shape[0],
                    })
                }
                Some(_) => {}
            }
        }
        Ok(rows.map(|(_, n)| n).unwrap_or(0))
    }

    /// Runs the model on a batch of any size (first axis of every input).
    pub fn infer(&mut self, inputs: &HashMap<String, Tensor>) -> Result<Inference, HostError> {
        let n = self.check_inputs(inputs)?;
        let b = self.batch;
        let out_sigs = self.bundle.io.model_outputs.clone();
        let mut outputs: Vec<(String, Tensor)> = out_sigs
            .iter()
            .map(|s| {
                let mut shape = s.shape.clone();
                shape[0] = n;
                let len = shape.iter().product();
                (
                    s.name.clone(),
                    Tensor {
                        shape,
                        data: Vec::with_capacity(len),
                    },
                )
            })
            .collect();
        let mut runs = Vec::with_capacity(n.div_ceil(b));
        self.layer_stats = vec![None; self.bundle.manifest.layers.len()];
        let mut start = 0;
        while start < n {
            let take = b.min(n - start);
            let mut values = HashMap::new();
            for sig in &self.bundle.io.model_inputs {
                let t = &inputs[&sig.name];
                let row: usize = sig.shape[1..].iter().product();
                let mut data = vec![0f32; b * row];
                data[..take * row].copy_from_slice(&t.data[start * row..(start + take) * row]);
                values.insert(
                    sig.name.clone(),
                    Tensor {
                        shape: sig.shape.clone(),
                        data,
                    },
                );
            }
            let (mut values, stats) = self.run_once(values)?;
            for (sig, (_, acc)) in out_sigs.iter().zip(outputs.iter_mut()) {
                let t = values.remove(&sig.name).ok_or_else(|| {
                    HostError::Bundle(format!(
                        "model output '{}' is produced by neither the NPU nor the CPU tail",
                        sig.name
                    ))
                })?;
                if t.shape != sig.shape {
                    return Err(HostError::Bundle(format!(
                        "model output '{}' came out with shape {:?}, the bundle declares {:?}",
                        sig.name, t.shape, sig.shape
                    )));
                }
                let row: usize = sig.shape[1..].iter().product();
                acc.data.extend_from_slice(&t.data[..take * row]);
            }
            runs.push(stats);
            start += take;
        }
        let layers = if self.per_layer {
            std::mem::take(&mut self.layer_stats)
                .into_iter()
                .map(|s| s.unwrap_or_else(|| RunStats::empty(self.driver.cycle_source())))
                .collect()
        } else {
            Vec::new()
        };
        Ok(Inference {
            outputs,
            runs,
            layers,
        })
    }

    /// One pass over the stages on exactly one compiled batch of model inputs.
    fn run_once(
        &mut self,
        inputs: HashMap<String, Tensor>,
    ) -> Result<(HashMap<String, Tensor>, RunStats), HostError> {
        let mut values: HashMap<String, ArrayD<f32>> = HashMap::with_capacity(inputs.len());
        for (name, t) in inputs {
            values.insert(name, to_array(t)?);
        }
        let mut total: Option<RunStats> = None;
        for step in &self.steps {
            match step {
                Step::Cpu { name, program } => {
                    program.run(&mut values).map_err(|source| HostError::Cpu {
                        stage: name.clone(),
                        source,
                    })?;
                }
                Step::Npu {
                    start,
                    end,
                    inputs,
                    outputs,
                } => {
                    for p in inputs {
                        let t = values.get(&p.io.name).ok_or_else(|| {
                            HostError::Bundle(format!(
                                "NPU input '{}' is computed by no earlier stage",
                                p.io.name
                            ))
                        })?;
                        if t.len() != p.offsets.len() {
                            return Err(HostError::Bundle(format!(
                                "NPU input '{}' expects shape {:?}, got {:?}",
                                p.io.name,
                                p.io.shape,
                                t.shape()
                            )));
                        }
                        let mut region = vec![0u8; p.io.bytes as usize];
                        for (v, &off) in t.iter().zip(&p.offsets) {
                            region[off] = p.io.quant.quantize(*v) as u8;
                        }
                        self.driver.write(p.io.dram_base as u64, &region)?;
                    }
                    let stats = if self.per_layer {
                        let mut sum: Option<RunStats> = None;
                        for (li, l) in self.bundle.manifest.layers.iter().enumerate() {
                            if l.insn_start < *start
                                || l.insn_end > *end
                                || l.insn_start == l.insn_end
                            {
                                continue;
                            }
                            let st = self.driver.run_range(l.insn_start, l.insn_end)?;
                            self.layer_stats[li] = Some(match &self.layer_stats[li] {
                                None => st,
                                Some(prev) => prev.merge(&st),
                            });
                            sum = Some(match sum {
                                None => st,
                                Some(t) => t.merge(&st),
                            });
                        }
                        sum.unwrap_or_else(|| RunStats::empty(self.driver.cycle_source()))
                    } else {
                        self.driver.run_range(*start, *end)?
                    };
                    total = Some(match total {
                        None => stats,
                        Some(t) => t.merge(&stats),
                    });
                    for p in outputs {
                        let mut region = vec![0u8; p.io.bytes as usize];
                        self.driver.read(p.io.dram_base as u64, &mut region)?;
                        let data: Vec<f32> = p
                            .offsets
                            .iter()
                            .map(|&off| p.io.quant.dequantize(region[off] as i8))
                            .collect();
                        let a = ArrayD::from_shape_vec(p.io.shape.clone(), data).map_err(|e| {
                            HostError::Bundle(format!("NPU output '{}': {e}", p.io.name))
                        })?;
                        values.insert(p.io.name.clone(), a);
                    }
                }
            }
        }
        let stats = total.unwrap_or_else(|| RunStats::empty(self.driver.cycle_source()));
        // Only the model's outputs leave (the inputs and intermediate tensors stay behind).
        let wanted = &self.bundle.io.model_outputs;
        let out = values
            .into_iter()
            .filter(|(k, _)| wanted.iter().any(|s| &s.name == k))
            .map(|(k, a)| {
                let shape = a.shape().to_vec();
                (
                    k,
                    Tensor {
                        shape,
                        data: a.into_iter().collect(),
                    },
                )
            })
            .collect();
        Ok((out, stats))
    }
}

fn to_array(t: Tensor) -> Result<ArrayD<f32>, HostError> {
    ArrayD::from_shape_vec(t.shape, t.data).map_err(|e| HostError::Bundle(e.to_string()))
}

/// Opens a device of `kind` sized for `bundle` and loads the bundle on it.
pub fn open_runtime(
    kind: crate::transport::DeviceKind,
    bundle: Bundle,
    timeout: std::time::Duration,
) -> Result<Runtime<Box<dyn Transport>>, HostError> {
    open_runtime_traced(kind, bundle, timeout, None)
}

/// [`open_runtime`], writing an FST waveform of the device to `trace` when given (RTL only; see
/// [`crate::transport::DeviceKind::open_traced`]). The waveform is complete once the runtime is
/// dropped.
pub fn open_runtime_traced(
    kind: crate::transport::DeviceKind,
    bundle: Bundle,
    timeout: std::time::Duration,
    trace: Option<&std::path::Path>,
) -> Result<Runtime<Box<dyn Transport>>, HostError> {
    let dram = (bundle.manifest.memory.dram_bytes as u64).max(4096);
    let t = kind
        .open_traced(bundle.config, dram, trace)
        .map_err(|source| HostError::Transport {
            device: kind.to_string(),
            source,
        })?;
    let driver = Driver::new(t)?.with_timeout(timeout);
    Runtime::new(driver, bundle)
}
