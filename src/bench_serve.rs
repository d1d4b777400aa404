//! `sinter bench-serve`: a bounded load generator for an Open Inference Protocol v2 server,
//! reporting per concurrency what perf_analyzer reports (throughput, average and percentile
//! latencies, the server's queue and compute times from its statistics extension).
//!
//! It refuses hosts other than this machine unless `--allow-remote` is given, and every level
//! stops after `--requests` answers or `--duration` seconds.
//!
//! `--baseline-server` instead runs a minimal HTTP server with the same routes that answers
//! every inference with a fixed result without touching a model: benchmarking it measures the
//! cost of HTTP and JSON alone, the floor under `sinter serve`'s numbers.

use crate::ctx::Ctx;
use anyhow::{bail, Context};
use rand::Rng;
use serde_json::{json, Value};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Upper bounds that keep a run bounded whatever is asked.
const MAX_CONCURRENCY: usize = 1024;
const MAX_DURATION_S: f64 = 600.0;
const MAX_REQUESTS: u64 = 10_000_000;

#[derive(clap::Args, Debug)]
pub struct BenchServeArgs {
    /// Server base URL, e.g. http://127.0.0.1:8000.
    #[arg(required_unless_present = "baseline_server")]
    pub url: Option<String>,
    /// Model name.
    #[arg(long, short = 'm')]
    pub model: String,
    /// Concurrency levels: START:END:STEP (additive, as perf_analyzer) or a list like 1,8,32.
    #[arg(long, default_value = "1")]
    pub concurrency: String,
    /// Send inputs and ask for outputs with the binary tensor extension instead of JSON.
    #[arg(long)]
    pub binary: bool,
    /// Answers to collect per concurrency level (default 1000 unless --duration is given).
    #[arg(long, conflicts_with = "duration")]
    pub requests: Option<u64>,
    /// Seconds to measure per concurrency level.
    #[arg(long, value_name = "S")]
    pub duration: Option<f64>,
    /// Rows per request, for a model with a variable batch dimension.
    #[arg(long, default_value_t = 1)]
    pub batch_size: usize,
    /// Input rows from a .npy file (first axis = rows; used in turn) instead of random data.
    #[arg(long, value_name = "X.npy")]
    pub input: Option<PathBuf>,
    /// Also write the table as CSV with perf_analyzer's column names.
    #[arg(long, value_name = "FILE")]
    pub csv: Option<PathBuf>,
    /// Bearer key for a server with key authentication (default: $SINTER_KEY).
    #[arg(long, env = "SINTER_KEY", hide_env_values = true)]
    pub key: Option<String>,
    /// Allow a server that is not on this machine.
    #[arg(long)]
    pub allow_remote: bool,
    /// Requests sent before each level's measurement starts.
    #[arg(long, default_value_t = 20)]
    pub warmup: u64,
    /// Run the fixed-answer reference server instead of a benchmark.
    #[arg(long, hide = true)]
    pub baseline_server: bool,
    /// Port of `--baseline-server` (0 picks a free one; the address is printed).
    #[arg(long, hide = true, default_value_t = 0)]
    pub port: u16,
    /// Input features of `--baseline-server`'s model.
    #[arg(long, hide = true, default_value_t = 64)]
    pub baseline_features: usize,
}

/// One measured concurrency level.
#[derive(Debug, Clone)]
struct Level {
    concurrency: usize,
    ok: u64,
    errors: u64,
    elapsed: Duration,
    rows_per_request: usize,
    /// Sorted latencies of the successful requests, µs.
    lat: Vec<u64>,
    /// Server-side averages per request, µs: queue, compute input/infer/output.
    server: Option<[f64; 4]>,
}

impl Level {
    fn throughput(&self) -> f64 {
        let s = self.elapsed.as_secs_f64();
        if s == 0.0 {
            0.0
        } else {
            (self.ok as usize * self.rows_per_request) as f64 / s
        }
    }
    fn avg(&self) -> u64 {
        if self.lat.is_empty() {
            0
        } else {
            self.lat.iter().sum::<u64>() / self.lat.len() as u64
        }
    }
    fn pct(&self, p: f64) -> u64 {
        if self.lat.is_empty() {
            return 0;
        }
        let i = ((p / 100.0) * self.lat.len() as f64).ceil() as usize;
        self.lat[i.clamp(1, self.lat.len()) - 1]
    }
}

/// Parses `START:END:STEP`, `START:END`, `N` or `A,B,C`.
pub fn parse_concurrency(s: &str) -> anyhow::Result<Vec<usize>> {
    let num = |p: &str| -> anyhow::Result<usize> {
        let n: usize = p
            .trim()
            .parse()
            .with_context(|| format!("invalid concurrency '{p}'"))?;
        anyhow::ensure!(
            (1..=MAX_CONCURRENCY).contains(&n),
            "concurrency must be between 1 and {MAX_CONCURRENCY}, got {n}"
        );
        Ok(n)
    };
    let levels: Vec<usize> = if s.contains(',') {
        s.split(',').map(num).collect::<anyhow::Result<_>>()?
    } else {
        let parts: Vec<&str> = s.split(':').collect();
        match parts.as_slice() {
            [one] => vec![num(one)?],
            [a, b] | [a, b, _] => {
                let (a, b) = (num(a)?, num(b)?);
                let step = match parts.get(2) {
                    Some(st) => st
                        .trim()
                        .parse::<usize>()
                        .ok()
                        .filter(|v| *v > 0)
                        .with_context(|| format!("invalid step '{st}'"))?,
                    None => 1,
                };
                anyhow::ensure!(a <= b, "concurrency range {a}:{b} is empty");
                (a..=b).step_by(step).collect()
            }
            _ => bail!("invalid --concurrency '{s}' (START:END:STEP or a list like 1,8,32)"),
        }
    };
    anyhow::ensure!(levels.len() <= 64, "too many concurrency levels");
    Ok(levels)
}

/// Refuses hosts other than loopback ones.
fn check_host(url: &reqwest::Url, allow_remote: bool) -> anyhow::Result<()> {
    let host = url.host_str().unwrap_or("");
    if crate::serve::is_loopback(host) || allow_remote {
        return Ok(());
    }
    bail!("{host} is not this machine; pass --allow-remote to load-test another host")
}

/// A prepared request body and its headers.
#[derive(Clone)]
struct Body {
    bytes: axum::body::Bytes,
    header_len: Option<usize>,
}

/// Builds `count` request bodies of `rows` rows each from `source` (cycled) or random data.
fn bodies(
    meta: &Value,
    rows: usize,
    binary: bool,
    source: Option<&ndarray::ArrayD<f32>>,
    count: usize,
) -> anyhow::Result<Vec<Body>> {
    let inputs = meta["inputs"]
        .as_array()
        .context("model metadata has no inputs")?;
    let mut rng = rand::thread_rng();
    let mut out = Vec::with_capacity(count);
    let mut cursor = 0usize;
    for _ in 0..count {
        let mut header_inputs = Vec::new();
        let mut tail: Vec<u8> = Vec::new();
        for inp in inputs {
            let name = inp["name"].as_str().unwrap_or("input");
            let shape: Vec<i64> = inp["shape"]
                .as_array()
                .context("input without a shape")?
                .iter()
                .map(|d| d.as_i64().unwrap_or(1))
                .collect();
            let shape: Vec<usize> = shape
                .iter()
                .enumerate()
                .map(|(i, d)| {
                    if *d < 0 && i == 0 {
                        rows
                    } else {
                        (*d).max(1) as usize
                    }
                })
                .collect();
            let count: usize = shape.iter().product();
            let data: Vec<f32> = match source {
                Some(a) if inputs.len() == 1 => {
                    let flat = a.as_slice().context("input array is not contiguous")?;
                    let row = a.shape()[1..].iter().product::<usize>().max(1);
                    let per = count / shape[0].max(1);
                    anyhow::ensure!(
                        row == per,
                        "--input rows have {row} values, the model's '{name}' needs {per}"
                    );
                    let n_rows = a.shape()[0];
                    let mut d = Vec::with_capacity(count);
                    for _ in 0..shape[0] {
                        let r = cursor % n_rows;
                        d.extend_from_slice(&flat[r * row..(r + 1) * row]);
                        cursor += 1;
                    }
                    d
                }
                _ => (0..count).map(|_| rng.gen::<f32>()).collect(),
            };
            if binary {
                let raw: Vec<u8> = data.iter().flat_map(|v| v.to_le_bytes()).collect();
                header_inputs.push(json!({"name": name, "shape": shape, "datatype": "FP32",
                                          "parameters": {"binary_data_size": raw.len()}}));
                tail.extend(raw);
            } else {
                header_inputs
                    .push(json!({"name": name, "shape": shape, "datatype": "FP32", "data": data}));
            }
        }
        let mut header = json!({ "inputs": header_inputs });
        if binary {
            header["parameters"] = json!({ "binary_data_output": true });
        }
        let mut bytes = serde_json::to_vec(&header)?;
        let header_len = binary.then_some(bytes.len());
        bytes.extend(tail);
        out.push(Body {
            bytes: axum::body::Bytes::from(bytes),
            header_len,
        });
    }
    Ok(out)
}

/// Totals of the server's statistics extension: count and ns of queue, compute input, infer
/// and output.
async fn server_stats(
    client: &reqwest::Client,
    base: &str,
    model: &str,
    key: Option<&str>,
) -> Option<[(u64, u64); 4]> {
    let mut req = client.get(format!("{base}/v2/models/{model}/stats"));
    if let Some(k) = key {
        req = req.bearer_auth(k);
    }
    let v: Value = req.send().await.ok()?.json().await.ok()?;
    let s = &v["model_stats"][0]["inference_stats"];
    let get = |k: &str| {
        (
            s[k]["count"].as_u64().unwrap_or(0),
            s[k]["ns"].as_u64().unwrap_or(0),
        )
    };
    Some([
        get("queue"),
        get("compute_input"),
        get("compute_infer"),
        get("compute_output"),
    ])
}

async fn run_level(
    client: &reqwest::Client,
    a: &BenchServeArgs,
    base: &str,
    bodies: &Arc<Vec<Body>>,
    concurrency: usize,
) -> anyhow::Result<Level> {
    let url = Arc::new(format!("{base}/v2/models/{}/infer", a.model));
    let key = a.key.clone().map(Arc::new);
    let send = {
        let (client, url, key) = (client.clone(), Arc::clone(&url), key.clone());
        move |b: Body| {
            let mut req = client
                .post(url.as_str())
                .header("content-type", "application/json")
                .body(b.bytes);
            if let Some(n) = b.header_len {
                req = req.header("inference-header-content-length", n);
            }
            if let Some(k) = &key {
                req = req.bearer_auth(k.as_str());
            }
            async move {
                let r = req.send().await?;
                let ok = r.status().is_success();
                let _ = r.bytes().await?;
                Ok::<bool, reqwest::Error>(ok)
            }
        }
    };
    // Warm-up: connections open, caches filled.
    for i in 0..a.warmup {
        let _ = send(bodies[i as usize % bodies.len()].clone()).await;
    }
    let before = server_stats(client, base, &a.model, a.key.as_deref()).await;
    let limit_requests = match (a.requests, a.duration) {
        (Some(n), _) => n.min(MAX_REQUESTS),
        (None, Some(_)) => MAX_REQUESTS,
        (None, None) => 1000,
    };
    let deadline = a
        .duration
        .map(|s| Duration::from_secs_f64(s.clamp(0.1, MAX_DURATION_S)))
        .unwrap_or(Duration::from_secs_f64(MAX_DURATION_S));
    let issued = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let mut tasks = Vec::with_capacity(concurrency);
    for w in 0..concurrency {
        let (issued, bodies, send) = (Arc::clone(&issued), Arc::clone(bodies), send.clone());
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            let mut errors = 0u64;
            let mut i = w;
            loop {
                if started.elapsed() >= deadline
                    || issued.fetch_add(1, Ordering::Relaxed) >= limit_requests
                {
                    break;
                }
                let t = Instant::now();
                match send(bodies[i % bodies.len()].clone()).await {
                    Ok(true) => lat.push(t.elapsed().as_micros() as u64),
                    _ => errors += 1,
                }
                i += concurrency;
            }
            (lat, errors)
        }));
    }
    let mut lat = Vec::new();
    let mut errors = 0;
    for t in tasks {
        let (l, e) = t.await.context("a client task failed")?;
        lat.extend(l);
        errors += e;
    }
    let elapsed = started.elapsed();
    lat.sort_unstable();
    let after = server_stats(client, base, &a.model, a.key.as_deref()).await;
    let server = match (before, after) {
        (Some(b), Some(af)) => {
            let mut avg = [0f64; 4];
            for i in 0..4 {
                let n = af[i].0.saturating_sub(b[i].0);
                let ns = af[i].1.saturating_sub(b[i].1);
                avg[i] = if n == 0 {
                    0.0
                } else {
                    ns as f64 / n as f64 / 1000.0
                };
            }
            Some(avg)
        }
        _ => None,
    };
    Ok(Level {
        concurrency,
        ok: lat.len() as u64,
        errors,
        elapsed,
        rows_per_request: a.batch_size,
        lat,
        server,
    })
}

const CSV_HEADER: &str = "Concurrency,Inferences/Second,Client Send,Network+Server Send/Recv,\
Server Queue,Server Compute Input,Server Compute Infer,Server Compute Output,Client Recv,\
p50 latency,p90 latency,p95 latency,p99 latency,Avg latency,request/response,response wait";

fn csv_row(l: &Level) -> String {
    let s = l.server.unwrap_or([0.0; 4]);
    let server_total: f64 = s.iter().sum();
    let network = (l.avg() as f64 - server_total).max(0.0);
    format!(
        "{},{:.2},0,{:.0},{:.0},{:.0},{:.0},{:.0},0,{},{},{},{},{},{},{:.0}",
        l.concurrency,
        l.throughput(),
        network,
        s[0],
        s[1],
        s[2],
        s[3],
        l.pct(50.0),
        l.pct(90.0),
        l.pct(95.0),
        l.pct(99.0),
        l.avg(),
        l.ok,
        server_total,
    )
}

pub fn main(a: BenchServeArgs, ctx: &Ctx) -> anyhow::Result<()> {
    if a.baseline_server {
        return baseline_server(&a);
    }
    let url = a.url.clone().unwrap_or_default();
    let parsed = reqwest::Url::parse(&url)
        .with_context(|| format!("invalid URL '{url}' (expected e.g. http://127.0.0.1:8000)"))?;
    check_host(&parsed, a.allow_remote)?;
    let base = url.trim_end_matches('/').to_string();
    let levels = parse_concurrency(&a.concurrency)?;
    anyhow::ensure!(
        (1..=4096).contains(&a.batch_size),
        "--batch-size must be between 1 and 4096"
    );
    let source = match &a.input {
        Some(p) => {
            let arr = crate::npy::read_f32(p)?.as_standard_layout().to_owned();
            anyhow::ensure!(
                arr.ndim() >= 1 && arr.shape()[0] > 0,
                "{} is empty",
                p.display()
            );
            Some(arr)
        }
        None => None,
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(60))
            .pool_max_idle_per_host(MAX_CONCURRENCY)
            .build()?;
        let mut req = client.get(format!("{base}/v2/models/{}", a.model));
        if let Some(k) = &a.key {
            req = req.bearer_auth(k);
        }
        let r = req
            .send()
            .await
            .with_context(|| format!("cannot reach {base}"))?;
        let status = r.status();
        let meta: Value = r.json().await.unwrap_or(Value::Null);
        if !status.is_success() {
            bail!(
                "model metadata: HTTP {status}: {}",
                meta["error"].as_str().unwrap_or("no details")
            );
        }
        let bodies = Arc::new(bodies(&meta, a.batch_size, a.binary, source.as_ref(), 64)?);
        let mut results = Vec::new();
        for c in levels {
            let l = run_level(&client, &a, &base, &bodies, c).await?;
            if !ctx.json {
                eprintln!(
                    "concurrency {c}: {:.1} infer/s, p99 {} µs{}",
                    l.throughput(),
                    l.pct(99.0),
                    if l.errors > 0 {
                        format!(", {} errors", l.errors)
                    } else {
                        String::new()
                    }
                );
            }
            results.push(l);
        }
        report(&a, ctx, &results)
    })
}

fn report(a: &BenchServeArgs, ctx: &Ctx, results: &[Level]) -> anyhow::Result<()> {
    if let Some(p) = &a.csv {
        let mut s = String::from(CSV_HEADER);
        s.push('\n');
        for l in results {
            s.push_str(&csv_row(l));
            s.push('\n');
        }
        std::fs::write(p, s).with_context(|| format!("cannot write {}", p.display()))?;
    }
    if ctx.json {
        let rows: Vec<Value> = results
            .iter()
            .map(|l| {
                json!({
                    "concurrency": l.concurrency,
                    "throughput": l.throughput(),
                    "requests": l.ok,
                    "errors": l.errors,
                    "avg_us": l.avg(),
                    "p50_us": l.pct(50.0),
                    "p90_us": l.pct(90.0),
                    "p95_us": l.pct(95.0),
                    "p99_us": l.pct(99.0),
                    "server_queue_us": l.server.map(|s| s[0]),
                    "server_compute_infer_us": l.server.map(|s| s[2]),
                })
            })
            .collect();
        return ctx.print_json(&rows);
    }
    let mut t = crate::table::new(&[
        "Concurrency",
        "Inferences/Second",
        "Avg latency (µs)",
        "p50",
        "p90",
        "p95",
        "p99",
        "Server queue",
        "Server compute",
        "Requests",
        "Errors",
    ]);
    for l in results {
        let s = l.server.unwrap_or([0.0; 4]);
        t.add_row(vec![
            crate::table::num(l.concurrency),
            crate::table::num(format!("{:.1}", l.throughput())),
            crate::table::num(l.avg()),
            crate::table::num(l.pct(50.0)),
            crate::table::num(l.pct(90.0)),
            crate::table::num(l.pct(95.0)),
            crate::table::num(l.pct(99.0)),
            crate::table::num(format!("{:.0}", s[0])),
            crate::table::num(format!("{:.0}", s[1] + s[2] + s[3])),
            crate::table::num(l.ok),
            crate::table::num(l.errors),
        ]);
    }
    println!("{t}");
    Ok(())
}

/// The fixed-answer reference server: same metadata and infer routes, no model, no queue.
fn baseline_server(a: &BenchServeArgs) -> anyhow::Result<()> {
    use axum::routing::{get, post};
    let features = a.baseline_features.clamp(1, 1 << 20);
    let name = a.model.clone();
    let meta = json!({
        "name": name, "versions": ["1"], "platform": "baseline",
        "inputs": [{"name": "x", "datatype": "FP32", "shape": [-1, features]}],
        "outputs": [{"name": "y", "datatype": "FP32", "shape": [-1, 10]}],
    });
    let answer = serde_json::to_vec(&json!({
        "model_name": name, "model_version": "1",
        "outputs": [{"name": "y", "datatype": "FP32", "shape": [1, 10],
                     "data": [0.1, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1]}],
    }))?;
    let answer = axum::body::Bytes::from(answer);
    let app = axum::Router::new()
        .route(
            "/v2/models/{m}",
            get(move || {
                let meta = meta.clone();
                async move { axum::Json(meta) }
            }),
        )
        .route(
            "/v2/models/{m}/infer",
            post(move |_body: axum::body::Bytes| {
                let answer = answer.clone();
                async move { ([("content-type", "application/json")], answer) }
            }),
        );
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", a.port)).await?;
        println!("listening on http://{}", listener.local_addr()?);
        use std::io::Write;
        std::io::stdout().flush().ok();
        axum::serve(listener, app)
            .with_graceful_shutdown(async {
                let _ = tokio::signal::ctrl_c().await;
            })
            .await?;
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn concurrency_ranges_parse() {
        assert_eq!(
            parse_concurrency("1:16:2").unwrap(),
            vec![1, 3, 5, 7, 9, 11, 13, 15]
        );
        assert_eq!(parse_concurrency("1,8,32").unwrap(), vec![1, 8, 32]);
        assert_eq!(parse_concurrency("4").unwrap(), vec![4]);
        assert_eq!(parse_concurrency("2:4").unwrap(), vec![2, 3, 4]);
        assert!(parse_concurrency("0").is_err());
        assert!(parse_concurrency("8:1").is_err());
        assert!(parse_concurrency("1:4:0").is_err());
        assert!(parse_concurrency("99999").is_err());
    }

    #[test]
    fn remote_hosts_need_permission() {
        let u = |s: &str| reqwest::Url::parse(s).unwrap();
        assert!(check_host(&u("http://127.0.0.1:8000"), false).is_ok());
        assert!(check_host(&u("http://localhost:8000"), false).is_ok());
        assert!(check_host(&u("http://[::1]:8000"), false).is_ok());
        assert!(check_host(&u("http://example.com"), false).is_err());
        assert!(check_host(&u("http://example.com"), true).is_ok());
    }

    #[test]
    fn percentiles_and_csv() {
        let l = Level {
            concurrency: 2,
            ok: 100,
            errors: 0,
            elapsed: Duration::from_secs(1),
            rows_per_request: 1,
            lat: (1..=100).collect(),
            server: Some([1.0, 2.0, 3.0, 4.0]),
        };
        assert_eq!((l.pct(50.0), l.pct(99.0), l.pct(100.0)), (50, 99, 100));
        assert_eq!(l.throughput(), 100.0);
        let row = csv_row(&l);
        assert!(row.starts_with("2,100.00,"), "{row}");
        assert_eq!(row.split(',').count(), CSV_HEADER.split(',').count());
    }
}
