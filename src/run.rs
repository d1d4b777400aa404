//! `sinter run`.

use anyhow::Context;
use ndarray::ArrayD;
use sinter_host::{open_runtime, Tensor};
use std::collections::HashMap;
use std::path::{Path, PathBuf};

#[derive(clap::Args, Debug)]
pub struct RunArgs {
    /// The bundle.
    pub model: PathBuf,
    /// Input batch (.npy, float32 or float64, batch axis first). For a model with several inputs
    /// repeat as `--input NAME=FILE`.
    #[arg(short, long, required = true)]
    pub input: Vec<String>,
    /// Where to write the first model output (.npy). Further outputs go next to it as
    /// `STEM.OUTPUT_NAME.npy`.
    #[arg(short, long)]
    pub output: Option<PathBuf>,
    #[command(flatten)]
    pub device: crate::DeviceArgs,
    /// Class labels (.npy, one integer per row): prints the top-1 accuracy of the first output.
    #[arg(long, value_name = "LABELS.npy")]
    pub labels: Option<PathBuf>,
    /// Print a JSON report.
    #[arg(long)]
    pub json: bool,
}

/// Top-1 accuracy (percent) of `scores` (rows of classes, batch first) against `labels`.
pub fn top1_accuracy(scores: &Tensor, labels: &[i64]) -> anyhow::Result<f64> {
    let rows = scores.shape.first().copied().unwrap_or(0);
    anyhow::ensure!(
        rows == labels.len(),
        "{} labels for {rows} output rows",
        labels.len()
    );
    anyhow::ensure!(rows > 0, "no rows to score");
    let classes = scores.data.len() / rows;
    let hits = scores
        .data
        .chunks(classes)
        .zip(labels)
        .filter(|(row, &y)| {
            let best = row
                .iter()
                .enumerate()
                .fold(
                    (0, f32::NEG_INFINITY),
                    |b, (i, &v)| if v > b.1 { (i, v) } else { b },
                );
            best.0 as i64 == y
        })
        .count();
    Ok(100.0 * hits as f64 / rows as f64)
}

/// Where output `index` named `name` goes when the first output goes to `first`.
pub fn output_path(first: &Path, index: usize, name: &str) -> PathBuf {
    if index == 0 {
        return first.to_path_buf();
    }
    let stem = first
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "output".into());
    let safe: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect();
    first.with_file_name(format!("{stem}.{safe}.npy"))
}

fn to_tensor(a: ArrayD<f32>) -> Tensor {
    let shape = a.shape().to_vec();
    let data = a.as_standard_layout().iter().copied().collect();
    Tensor { shape, data }
}

pub fn main(a: RunArgs) -> anyhow::Result<()> {
    let bundle = crate::open_bundle(&a.model)?;
    let sigs = bundle.io.model_inputs.clone();
    let mut inputs = HashMap::new();
    for spec in &a.input {
        let (name, path) = match spec.split_once('=') {
            Some((n, p)) => (n.to_string(), PathBuf::from(p)),
            None => {
                anyhow::ensure!(
                    sigs.len() == 1,
                    "the model has {} inputs ({}); name each as --input NAME=FILE",
                    sigs.len(),
                    sigs.iter()
                        .map(|s| s.name.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                );
                (sigs[0].name.clone(), PathBuf::from(spec))
            }
        };
        let arr = crate::npy::read_f32(&path)?;
        anyhow::ensure!(
            inputs.insert(name.clone(), to_tensor(arr)).is_none(),
            "input '{name}' given twice"
        );
    }
    let device = a.device.device;
    let mut rt = open_runtime(device, bundle, a.device.timeout())
        .with_context(|| format!("cannot load {} on the {device} device", a.model.display()))?;
    let source = rt.driver_ref().cycle_source();
    let inf = rt.infer(&inputs).context("inference failed")?;

    let mut written = Vec::new();
    if let Some(first) = &a.output {
        for (i, (name, t)) in inf.outputs.iter().enumerate() {
            let path = output_path(first, i, name);
            let arr = ArrayD::from_shape_vec(t.shape.clone(), t.data.clone())
                .context("output tensor has an inconsistent shape")?;
            crate::npy::write_f32(&path, &arr)?;
            written.push((name.clone(), path));
        }
    }

    let accuracy = match &a.labels {
        Some(path) => {
            let labels = crate::npy::read_labels(path)?;
            let (_, first) = inf.outputs.first().context("the model has no output")?;
            Some(top1_accuracy(first, &labels)?)
        }
        None => None,
    };
    let batch = rt.batch();
    let rows: usize = inputs.values().next().map(|t| t.shape[0]).unwrap_or(0);
    let total_cycles: u64 = inf.runs.iter().map(|r| r.cycles).sum();
    let total_mac: u64 = inf.runs.iter().map(|r| r.mac_active).sum();
    let util = if total_cycles == 0 {
        0.0
    } else {
        total_mac as f64 / total_cycles as f64
    };
    if a.json {
        let runs: Vec<_> = inf
            .runs
            .iter()
            .enumerate()
            .map(|(i, r)| {
                serde_json::json!({
                    "run": i,
                    "rows": [i * batch, ((i + 1) * batch).min(rows)],
                    "cycles": r.cycles,
                    "mac_active": r.mac_active,
                    "utilization": r.utilization,
                    "instructions": r.insns,
                    "wall_us": r.wall.as_micros() as u64,
                })
            })
            .collect();
        let outputs: Vec<_> = inf
            .outputs
            .iter()
            .map(|(name, t)| {
                let file = written
                    .iter()
                    .find(|(n, _)| n == name)
                    .map(|(_, p)| p.display().to_string());
                let mut o = serde_json::json!({ "name": name, "shape": t.shape, "file": file });
                if file.is_none() {
                    o["data"] = serde_json::json!(t.data);
                }
                o
            })
            .collect();
        let report = serde_json::json!({
            "model": rt.bundle().manifest.model_name,
            "device": rt.driver_ref().device_name(),
            "cycle_source": source.as_str(),
            "batch": batch,
            "rows": rows,
            "runs": runs,
            "total": { "cycles": total_cycles, "mac_active": total_mac, "utilization": util },
            "outputs": outputs,
            "top1_accuracy": accuracy,
        });
        println!("{}", serde_json::to_string_pretty(&report)?);
        return Ok(());
    }

    println!(
        "model {} on {} ({} rows in {} run(s) of batch {}; cycles {})",
        rt.bundle().manifest.model_name,
        rt.driver_ref().device_name(),
        rows,
        inf.runs.len(),
        batch,
        source.as_str()
    );
    const SHOWN_RUNS: usize = 64;
    for (i, r) in inf.runs.iter().enumerate().take(SHOWN_RUNS) {
        println!(
            "  run {i:>4}  rows {:>5}..{:<5}  {:>12} cycles ({})  MAC utilization {:>6.2}%  {:>8.3} ms",
            i * batch,
            ((i + 1) * batch).min(rows),
            r.cycles,
            source.as_str(),
            100.0 * r.utilization,
            r.wall.as_secs_f64() * 1e3
        );
    }
    if inf.runs.len() > SHOWN_RUNS {
        println!(
            "  … {} more runs (--json lists every run)",
            inf.runs.len() - SHOWN_RUNS
        );
    }
    println!(
        "  total {:>27} cycles ({})  MAC utilization {:>6.2}%",
        total_cycles,
        source.as_str(),
        100.0 * util
    );
    if let Some(acc) = accuracy {
        println!("top-1 accuracy {acc:.2}% over {rows} rows");
    }
    if written.is_empty() && accuracy.is_none() {
        for (name, t) in &inf.outputs {
            println!("output {name} {:?}:", t.shape);
            let row = t
                .shape
                .get(1..)
                .map(|s| s.iter().product())
                .unwrap_or(1)
                .max(1);
            for (i, chunk) in t.data.chunks(row).enumerate().take(16) {
                let vals: Vec<String> = chunk.iter().take(16).map(|v| format!("{v:.6}")).collect();
                let more = if chunk.len() > 16 { ", …" } else { "" };
                println!("  [{i}] [{}{more}]", vals.join(", "));
            }
            if t.data.len() / row > 16 {
                println!("  … {} rows in all", t.data.len() / row);
            }
        }
    } else {
        for (name, p) in &written {
            println!("wrote output {name} to {}", p.display());
        }
    }
    Ok(())
}
