//! Per-model counters: Prometheus text at `/metrics` (Triton's names) and the statistics
//! extension's JSON.

use serde_json::{json, Value};
use sinter_host::driver::RunStats;
use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering::Relaxed};
use std::sync::Mutex;
use std::time::Duration;

/// A count and a total duration in nanoseconds.
#[derive(Default)]
pub struct Timed {
    count: AtomicU64,
    ns: AtomicU64,
}

impl Timed {
    pub fn add(&self, d: Duration) {
        self.count.fetch_add(1, Relaxed);
        self.ns.fetch_add(d.as_nanos() as u64, Relaxed);
    }
    fn json(&self) -> Value {
        json!({ "count": self.count.load(Relaxed), "ns": self.ns.load(Relaxed) })
    }
    fn us(&self) -> u64 {
        self.ns.load(Relaxed) / 1000
    }
}

/// Where the time of one request went.
#[derive(Clone, Copy, Debug, Default)]
pub struct Timings {
    pub queue: Duration,
    pub compute_input: Duration,
    pub compute_infer: Duration,
    pub compute_output: Duration,
}

#[derive(Default, Clone, Copy)]
struct BatchStat {
    count: u64,
    input_ns: u64,
    infer_ns: u64,
    output_ns: u64,
}

/// The counters of one served model version.
#[derive(Default)]
pub struct ModelMetrics {
    pub success: Timed,
    pub fail: Timed,
    pub queue: Timed,
    pub compute_input: Timed,
    pub compute_infer: Timed,
    pub compute_output: Timed,
    /// Batch elements (rows) inferred.
    pub inference_count: AtomicU64,
    /// Model executions (merged batches).
    pub exec_count: AtomicU64,
    /// Requests accepted and not yet answered.
    pub pending: AtomicI64,
    pub npu_cycles: AtomicU64,
    pub npu_mac_active: AtomicU64,
    pub npu_runs: AtomicU64,
    /// Milliseconds since the epoch of the last inference.
    pub last_inference_ms: AtomicU64,
    batches: Mutex<BTreeMap<usize, BatchStat>>,
}

impl ModelMetrics {
    /// Records one execution of `rows` merged rows.
    pub fn execution(&self, rows: usize, runs: &[RunStats], t: &Timings) {
        self.exec_count.fetch_add(1, Relaxed);
        self.inference_count.fetch_add(rows as u64, Relaxed);
        for r in runs {
            self.npu_cycles.fetch_add(r.cycles, Relaxed);
            self.npu_mac_active.fetch_add(r.mac_active, Relaxed);
        }
        self.npu_runs.fetch_add(runs.len() as u64, Relaxed);
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0);
        self.last_inference_ms.store(now, Relaxed);
        let mut b = self.batches.lock().unwrap_or_else(|p| p.into_inner());
        let e = b.entry(rows).or_default();
        e.count += 1;
        e.input_ns += t.compute_input.as_nanos() as u64;
        e.infer_ns += t.compute_infer.as_nanos() as u64;
        e.output_ns += t.compute_output.as_nanos() as u64;
    }

    /// Records the per-request share of a successful execution.
    pub fn request_timings(&self, t: &Timings) {
        self.queue.add(t.queue);
        self.compute_input.add(t.compute_input);
        self.compute_infer.add(t.compute_infer);
        self.compute_output.add(t.compute_output);
    }

    /// Records the end of a request (after it was attributed to this model).
    pub fn finished(&self, ok: bool, took: Duration) {
        if ok {
            self.success.add(took);
        } else {
            self.fail.add(took);
        }
    }

    /// MAC-array utilization over all runs so far.
    pub fn utilization(&self) -> f64 {
        let c = self.npu_cycles.load(Relaxed);
        if c == 0 {
            0.0
        } else {
            self.npu_mac_active.load(Relaxed) as f64 / c as f64
        }
    }

    /// One entry of the statistics extension's `model_stats`.
    pub fn stats_json(&self, name: &str, version: &str) -> Value {
        let batches = self.batches.lock().unwrap_or_else(|p| p.into_inner());
        let batch_stats: Vec<Value> = batches
            .iter()
            .map(|(size, b)| {
                json!({
                    "batch_size": size,
                    "compute_input": {"count": b.count, "ns": b.input_ns},
                    "compute_infer": {"count": b.count, "ns": b.infer_ns},
                    "compute_output": {"count": b.count, "ns": b.output_ns},
                })
            })
            .collect();
        json!({
            "name": name,
            "version": version,
            "last_inference": self.last_inference_ms.load(Relaxed),
            "inference_count": self.inference_count.load(Relaxed),
            "execution_count": self.exec_count.load(Relaxed),
            "inference_stats": {
                "success": self.success.json(),
                "fail": self.fail.json(),
                "queue": self.queue.json(),
                "compute_input": self.compute_input.json(),
                "compute_infer": self.compute_infer.json(),
                "compute_output": self.compute_output.json(),
                "cache_hit": {"count": 0, "ns": 0},
                "cache_miss": {"count": 0, "ns": 0},
            },
            "batch_stats": batch_stats,
        })
    }
}

/// Escapes a Prometheus label value.
fn label(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// The Prometheus text exposition of the models' counters.
pub fn prometheus(models: &[(&str, &str, &ModelMetrics)]) -> String {
    type Get = fn(&ModelMetrics) -> String;
    let families: [(&str, &str, &str, Get); 13] = [
        (
            "nv_inference_request_success",
            "counter",
            "Number of successful inference requests, all batch sizes",
            |m| m.success.count.load(Relaxed).to_string(),
        ),
        (
            "nv_inference_request_failure",
            "counter",
            "Number of failed inference requests, all batch sizes",
            |m| m.fail.count.load(Relaxed).to_string(),
        ),
        (
            "nv_inference_count",
            "counter",
            "Number of inferences performed (batch elements)",
            |m| m.inference_count.load(Relaxed).to_string(),
        ),
        (
            "nv_inference_exec_count",
            "counter",
            "Number of model executions performed (merged batches)",
            |m| m.exec_count.load(Relaxed).to_string(),
        ),
        (
            "nv_inference_pending_request_count",
            "gauge",
            "Instantaneous number of requests accepted and not yet answered",
            |m| m.pending.load(Relaxed).max(0).to_string(),
        ),
        (
            "nv_inference_request_duration_us",
            "counter",
            "Cumulative inference request duration in microseconds",
            |m| (m.success.us() + m.fail.us()).to_string(),
        ),
        (
            "nv_inference_queue_duration_us",
            "counter",
            "Cumulative inference queuing duration in microseconds",
            |m| m.queue.us().to_string(),
        ),
        (
            "nv_inference_compute_input_duration_us",
            "counter",
            "Cumulative compute input duration in microseconds",
            |m| m.compute_input.us().to_string(),
        ),
        (
            "nv_inference_compute_infer_duration_us",
            "counter",
            "Cumulative compute inference duration in microseconds",
            |m| m.compute_infer.us().to_string(),
        ),
        (
            "nv_inference_compute_output_duration_us",
            "counter",
            "Cumulative inference compute output duration in microseconds",
            |m| m.compute_output.us().to_string(),
        ),
        (
            "sinter_npu_cycles_total",
            "counter",
            "NPU clock cycles spent on this model's runs (measured or predicted)",
            |m| m.npu_cycles.load(Relaxed).to_string(),
        ),
        (
            "sinter_npu_mac_active_total",
            "counter",
            "NPU cycles in which the MAC array was busy",
            |m| m.npu_mac_active.load(Relaxed).to_string(),
        ),
        (
            "sinter_npu_utilization",
            "gauge",
            "MAC-array utilization over all runs (mac_active / cycles)",
            |m| format!("{:.6}", m.utilization()),
        ),
    ];
    let mut out = String::new();
    for (name, kind, help, get) in families {
        let _ = writeln!(out, "# HELP {name} {help}");
        let _ = writeln!(out, "# TYPE {name} {kind}");
        for (model, version, m) in models {
            let _ = writeln!(
                out,
                "{name}{{model=\"{}\",version=\"{}\"}} {}",
                label(model),
                label(version),
                get(m)
            );
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_format_has_every_family_with_labels() {
        let m = ModelMetrics::default();
        m.execution(3, &[], &Timings::default());
        m.finished(true, Duration::from_micros(1500));
        let text = prometheus(&[("digits", "1", &m)]);
        assert!(text.contains("nv_inference_count{model=\"digits\",version=\"1\"} 3"));
        assert!(text.contains("nv_inference_exec_count{model=\"digits\",version=\"1\"} 1"));
        assert!(
            text.contains("nv_inference_request_duration_us{model=\"digits\",version=\"1\"} 1500")
        );
        assert!(text.contains("# TYPE sinter_npu_utilization gauge"));
        let s = m.stats_json("digits", "1");
        assert_eq!(s["inference_stats"]["success"]["count"], 1);
        assert_eq!(s["batch_stats"][0]["batch_size"], 3);
        assert_eq!(label("a\"b"), "a\\\"b");
    }
}
