//! A rough timing of the registry at a realistic size, for regressions in its queries.
//!
//! Not a test: call [`run`] from a benchmark or by hand and print the report.

use super::error::Result;
use super::models::{NewVersion, Signature, Source};
use super::names::ModelRef;
use super::runs::{LogLevel, RunFilter, RunInputs, RunKind};
use super::Workspace;
use serde::Serialize;
use std::path::Path;
use std::time::{Duration, Instant};

/// Timings of one [`run`], each the mean over its repetitions.
#[derive(Clone, Debug, Serialize)]
pub struct BenchReport {
    pub runs: usize,
    pub versions: usize,
    /// Populating: one run with 3 params, 4 metrics and 2 log lines, finished.
    pub per_run_recorded: Duration,
    pub per_register: Duration,
    /// Mean of resolving `name`, `name:N` and `name@alias`.
    pub per_resolve: Duration,
    /// Listing the newest 50 runs.
    pub per_list_newest: Duration,
    /// Listing the newest 50 finished bench runs of one model.
    pub per_list_filtered: Duration,
}

/// Creates a workspace in `dir` (which should be empty), registers `versions` versions of
/// one model, records `runs` runs, then times lookups.
pub fn run(dir: &Path, runs: usize, versions: usize) -> Result<BenchReport> {
    let ws = Workspace::init(dir)?;
    let versions = versions.max(1);
    let t = Instant::now();
    for v in 0..versions {
        let bytes = format!("model bytes {v}").into_bytes();
        ws.register(
            "bench-model",
            NewVersion::onnx(
                Source::Bytes {
                    name: "model.onnx",
                    bytes: &bytes,
                },
                Signature::default(),
            ),
        )?;
    }
    let per_register = t.elapsed() / versions as u32;
    ws.set_alias("bench-model", "production", 1)?;

    let kinds = [RunKind::Compile, RunKind::Run, RunKind::Bench];
    let t = Instant::now();
    for i in 0..runs {
        let inputs = RunInputs {
            model_name: Some("bench-model".into()),
            model_version: Some((i % versions) as u32 + 1),
            ..RunInputs::default()
        };
        let h = ws.start_run(
            kinds[i % kinds.len()],
            [
                ("hw", "16x16".to_string()),
                ("batch", (i % 8).to_string()),
                ("seed", i.to_string()),
            ],
            inputs,
        )?;
        for step in 0..4 {
            h.metric("latency_ms", 1.0 + step as f64, step)?;
        }
        h.log(LogLevel::Info, "started")?;
        h.log(LogLevel::Info, "done")?;
        h.finish()?;
    }
    let per_run_recorded = t.elapsed() / runs.max(1) as u32;

    let refs: Vec<ModelRef> = ["bench-model", "bench-model:1", "bench-model@production"]
        .iter()
        .map(|s| s.parse())
        .collect::<Result<_>>()?;
    let reps = 200u32;
    let t = Instant::now();
    for _ in 0..reps {
        for r in &refs {
            ws.resolve(r)?;
        }
    }
    let per_resolve = t.elapsed() / (reps * refs.len() as u32);

    let newest = RunFilter {
        limit: Some(50),
        ..RunFilter::default()
    };
    let filtered = RunFilter {
        kind: Some(RunKind::Bench),
        status: Some(super::runs::RunStatus::Finished),
        model: Some("bench-model".into()),
        limit: Some(50),
    };
    let reps = 50u32;
    let t = Instant::now();
    for _ in 0..reps {
        ws.list_runs(&newest)?;
    }
    let per_list_newest = t.elapsed() / reps;
    let t = Instant::now();
    for _ in 0..reps {
        ws.list_runs(&filtered)?;
    }
    let per_list_filtered = t.elapsed() / reps;

    Ok(BenchReport {
        runs,
        versions,
        per_run_recorded,
        per_register,
        per_resolve,
        per_list_newest,
        per_list_filtered,
    })
}
