//! `sinter serve`: the model behind HTTP.
//!
//! Routes: the Open Inference Protocol v2 (`/v2`, `/v2/health/{live,ready}`,
//! `/v2/models/{m}[/versions/{v}]`, `…/ready`, `…/infer` with JSON tensors and the binary tensor
//! extension, `…/stats`, `…/config`, `/v2/repository/…`), Azure-ML-style `POST /score` and
//! `GET /swagger.json`, Prometheus `/metrics`, and `GET /` as a liveness probe.
//!
//! Requests are validated against the model's signature on the async runtime, then queued for
//! the device workers ([`batcher`]), which merge them into batches, run them on a pool of
//! devices and split the answers; the async runtime never blocks on a device.

mod auth;
mod batcher;
mod error;
mod metrics;
mod score;
mod tensors;
mod v2;

use anyhow::Context;
use axum::extract::{DefaultBodyLimit, Request};
use axum::http::{HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::Response;
use axum::routing::{get, post};
use axum::Router;
use batcher::{BatchConfig, Batcher, Done, Job, Refused};
use error::{ApiError, ApiResult};
use metrics::ModelMetrics;
use sinter_host::{CycleSource, DevicePool, Tensor};
use sinter_isa::bundle::{Bundle, TensorSig};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;
use tokio::sync::oneshot;

/// The one model version a bundle is served as.
pub const VERSION: &str = "1";

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum OnOff {
    On,
    Off,
}

#[derive(clap::Args, Debug)]
pub struct ServeArgs {
    /// The bundle (.sntr), or a registered model: NAME, NAME:VERSION or NAME@ALIAS (an existing
    /// path wins).
    pub model: String,
    #[command(flatten)]
    pub device: crate::DeviceArgs,
    /// Devices to open, each with its own copy of the model; requests go to a free one.
    #[arg(long, default_value_t = 1, value_name = "N")]
    pub devices: usize,
    /// Port to listen on (0 picks a free one; the address is printed).
    #[arg(long, default_value_t = 8000)]
    pub port: u16,
    /// Address to bind.
    #[arg(long, default_value = "127.0.0.1")]
    pub host: String,
    /// Name to serve the model under (default: the bundle's model name).
    #[arg(long)]
    pub name: Option<String>,
    /// Largest request body in bytes (after decompression); larger ones get 413.
    #[arg(long, default_value_t = 64 << 20)]
    pub max_body: usize,
    /// Requests that may wait for a device before new ones are refused with 503.
    #[arg(long, alias = "queue", default_value_t = 256, value_name = "N")]
    pub max_queue_size: usize,
    /// Largest batch (rows) a request may carry and dynamic batching may merge; 0 serves the
    /// bundle's compiled shape only, without a variable batch dimension.
    #[arg(long, default_value_t = 64, value_name = "ROWS")]
    pub max_batch_size: usize,
    /// How long the oldest queued request waits for others to merge with, in microseconds.
    #[arg(long, default_value_t = 0, value_name = "US")]
    pub max_queue_delay_us: u64,
    /// Merge queued requests into one execution.
    #[arg(long, value_enum, default_value = "on")]
    pub dynamic_batching: OnOff,
    /// Require `Authorization: Bearer <key>` (keys from `sinter keys`) on scoring, model and
    /// metrics routes. Default: on unless bound to a loopback address.
    #[arg(long, value_enum)]
    pub auth: Option<OnOff>,
    #[command(flatten)]
    pub build: crate::resolve::RefArgs,
    /// The workspace holding the keys (set by the command line, not a flag).
    #[arg(skip)]
    pub workspace_dir: Option<PathBuf>,
}

impl ServeArgs {
    /// Whether key authentication is on.
    pub fn auth_on(&self) -> bool {
        match self.auth {
            Some(a) => a == OnOff::On,
            None => !is_loopback(&self.host),
        }
    }
}

/// Whether `host` names only this machine.
pub fn is_loopback(host: &str) -> bool {
    let h = host.trim_start_matches('[').trim_end_matches(']');
    h.eq_ignore_ascii_case("localhost")
        || h.parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// Why the server stopped accepting requests.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Shutdown {
    /// Ctrl-C (SIGINT).
    Interrupted,
    /// SIGTERM.
    Terminated,
}

/// The served model and everything the handlers share.
pub struct App {
    pub name: String,
    pub inputs: Vec<TensorSig>,
    pub outputs: Vec<TensorSig>,
    /// Rows the device runs at once.
    pub compiled_batch: usize,
    /// Largest rows per request / merged batch; 0: the compiled shape only.
    pub max_batch: usize,
    pub batching: BatchConfig,
    pub device: String,
    pub devices: usize,
    pub cycle_source: CycleSource,
    pub max_body: usize,
    batcher: Batcher,
    pub metrics: Arc<ModelMetrics>,
    /// Cleared by `…/unload`, set again by `…/load`.
    pub loaded: AtomicBool,
    keys: Option<auth::Keys>,
}

impl App {
    /// Checks the model name and version of a route.
    fn check_model(&self, name: &str, version: Option<&str>) -> ApiResult<()> {
        if name != self.name {
            return Err(ApiError::not_found(format!(
                "Request for unknown model: '{name}' is not found"
            )));
        }
        if let Some(v) = version {
            if v != VERSION {
                return Err(ApiError::not_found(format!(
                    "Request for unknown model: '{name}' version {v} is not found"
                )));
            }
        }
        Ok(())
    }

    fn ready(&self) -> bool {
        self.loaded.load(Ordering::Relaxed) && self.batcher.is_running()
    }

    /// The shape a client sees: `-1` for the batch axis when requests may carry any batch.
    fn public_shape(&self, s: &TensorSig) -> Vec<i64> {
        let mut shape: Vec<i64> = s.shape.iter().map(|d| *d as i64).collect();
        if self.max_batch > 0 {
            if let Some(first) = shape.first_mut() {
                *first = -1;
            }
        }
        shape
    }

    /// Checks named tensors against the signature and returns the rows and the data of every
    /// model input in signature order.
    fn prepare(&self, given: Given) -> ApiResult<(usize, Vec<Vec<f32>>)> {
        let expected = || {
            self.inputs
                .iter()
                .map(|s| format!("'{}'", s.name))
                .collect::<Vec<_>>()
                .join(", ")
        };
        for (name, _, _) in &given {
            if !self.inputs.iter().any(|s| &s.name == name) {
                return Err(ApiError::bad(format!(
                    "unexpected inference input '{name}' for model '{}' (it expects {})",
                    self.name,
                    expected()
                )));
            }
        }
        let mut slots: Vec<Option<(Vec<usize>, Vec<f32>)>> = vec![None; self.inputs.len()];
        for (name, shape, data) in given {
            let i = self.inputs.iter().position(|s| s.name == name).unwrap_or(0);
            if slots[i].replace((shape, data)).is_some() {
                return Err(ApiError::bad(format!("input '{name}' given twice")));
            }
        }
        let mut rows: Option<usize> = None;
        let mut out = Vec::with_capacity(self.inputs.len());
        for (sig, slot) in self.inputs.iter().zip(slots) {
            let Some((shape, data)) = slot else {
                return Err(ApiError::bad(format!(
                    "expected {} inputs but got fewer: input '{}' is missing",
                    self.inputs.len(),
                    sig.name
                )));
            };
            let want = self.public_shape(sig);
            let fits = shape.len() == sig.shape.len()
                && if self.max_batch > 0 {
                    shape[1..] == sig.shape[1..]
                } else {
                    shape == sig.shape
                };
            if !fits {
                return Err(ApiError::bad(format!(
                    "unexpected shape for input '{}' for model '{}': expected {want:?}, got {shape:?}",
                    sig.name, self.name
                )));
            }
            let n = shape[0];
            if n == 0 {
                return Err(ApiError::bad(format!("input '{}' has no rows", sig.name)));
            }
            if self.max_batch > 0 && n > self.max_batch {
                return Err(ApiError::bad(format!(
                    "inference request batch-size must be <= {} for '{}' (input '{}' has {n} rows)",
                    self.max_batch, self.name, sig.name
                )));
            }
            let count: usize = shape.iter().product();
            if data.len() != count {
                return Err(ApiError::bad(format!(
                    "input '{}': shape {shape:?} needs {count} values, got {}",
                    sig.name,
                    data.len()
                )));
            }
            if data.iter().any(|v| !v.is_finite()) {
                return Err(ApiError::bad(format!(
                    "input '{}' contains a non-finite value (NaN or infinity)",
                    sig.name
                )));
            }
            match rows {
                None => rows = Some(n),
                Some(r) if r != n => {
                    return Err(ApiError::bad(format!(
                        "inputs disagree on the batch size: input '{}' has {n} rows, an earlier one {r}",
                        sig.name
                    )))
                }
                Some(_) => {}
            }
            out.push(data);
        }
        Ok((rows.unwrap_or(0), out))
    }

    /// Queues prepared inputs and waits for their answer.
    async fn execute(&self, rows: usize, inputs: Vec<Vec<f32>>) -> ApiResult<Done> {
        if !self.loaded.load(Ordering::Relaxed) {
            return Err(ApiError::unavailable(format!(
                "model '{}' is not loaded",
                self.name
            )));
        }
        let (reply, rx) = oneshot::channel();
        let job = Job {
            rows,
            inputs,
            enqueued: Instant::now(),
            reply,
        };
        let _pending = Pending::new(&self.metrics);
        self.batcher.submit(job).map_err(|(why, _)| match why {
            Refused::Full => ApiError::unavailable(format!(
                "the queue of model '{}' is full ({} requests); retry later",
                self.name, self.batching.queue_size
            )),
            Refused::Closed => ApiError::unavailable("the server is shutting down"),
        })?;
        rx.await
            .map_err(|_| ApiError::internal("the device worker stopped"))?
    }

    /// Counts a finished request of this model.
    fn finished<T>(&self, r: &ApiResult<T>, started: Instant) {
        self.metrics.finished(r.is_ok(), started.elapsed());
    }
}

/// Counts a request as pending while it lives.
struct Pending<'a>(&'a ModelMetrics);

impl<'a> Pending<'a> {
    fn new(m: &'a ModelMetrics) -> Self {
        m.pending.fetch_add(1, Ordering::Relaxed);
        Pending(m)
    }
}

impl Drop for Pending<'_> {
    fn drop(&mut self) {
        self.0.pending.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Named output tensors of a request.
type Outputs = Vec<(String, Tensor)>;

/// Input tensors as decoded from a request: name, shape, row-major data.
type Given = Vec<(String, Vec<usize>, Vec<f32>)>;

/// Serves `bundle` (described as `label` in messages) until a signal stops the server, then
/// drains the requests in flight and says which signal it was. `on_listening` is called with
/// the bound address before the first request is accepted.
pub fn serve_bundle(
    bundle: Bundle,
    label: &str,
    a: &ServeArgs,
    on_listening: impl FnOnce(std::net::SocketAddr) -> anyhow::Result<()>,
) -> anyhow::Result<Shutdown> {
    let device = a.device.device;
    anyhow::ensure!(
        (1..=64).contains(&a.devices),
        "--devices must be between 1 and 64"
    );
    anyhow::ensure!(a.max_queue_size >= 1, "--max-queue-size must be at least 1");
    let keys = if a.auth_on() {
        let dir = a
            .workspace_dir
            .clone()
            .unwrap_or_else(|| crate::workspace::Workspace::resolve_dir(None));
        Some(auth::Keys::open(&dir)?)
    } else {
        None
    };
    let name = a
        .name
        .clone()
        .unwrap_or_else(|| bundle.manifest.model_name.clone());
    anyhow::ensure!(
        !name.is_empty() && !name.contains('/'),
        "model name '{name}' cannot be served; pass --name"
    );
    let pool = DevicePool::open(device, &bundle, a.device.timeout(), a.devices)
        .with_context(|| format!("cannot load {label} on the {device} device"))?;
    let cycle_source = pool.acquire().driver_ref().cycle_source();
    let compiled_batch = bundle.manifest.batch.max(1) as usize;
    let (inputs, outputs) = (
        bundle.io.model_inputs.clone(),
        bundle.io.model_outputs.clone(),
    );
    let batching = BatchConfig {
        merge: a.dynamic_batching == OnOff::On && a.max_batch_size > 0,
        max_rows: if a.max_batch_size > 0 {
            a.max_batch_size
        } else {
            compiled_batch
        },
        delay: std::time::Duration::from_micros(a.max_queue_delay_us),
        queue_size: a.max_queue_size,
    };
    let metrics = Arc::new(ModelMetrics::default());
    let batcher = Batcher::start(
        Arc::new(pool),
        inputs.clone(),
        outputs.clone(),
        batching,
        Arc::clone(&metrics),
    )
    .context("cannot start the device workers")?;
    let app = Arc::new(App {
        name,
        inputs,
        outputs,
        compiled_batch,
        max_batch: a.max_batch_size,
        batching,
        device: device.to_string(),
        devices: a.devices,
        cycle_source,
        max_body: a.max_body,
        batcher,
        metrics,
        loaded: AtomicBool::new(true),
        keys,
    });

    let tokio = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let (stop_tx, mut stop_rx) = oneshot::channel();
    let served = Arc::clone(&app);
    let result = tokio.block_on(async move {
        let listener = tokio::net::TcpListener::bind((a.host.as_str(), a.port))
            .await
            .with_context(|| format!("cannot listen on {}:{}", a.host, a.port))?;
        let addr = listener.local_addr()?;
        tracing::info!(
            model = %served.name,
            device = %device,
            devices = served.devices,
            auth = served.keys.is_some(),
            "serving on http://{addr}"
        );
        let stop = shutdown_signal();
        on_listening(addr)?;
        println!("listening on http://{addr}");
        use std::io::Write;
        std::io::stdout().flush().ok();
        axum::serve(listener, router(served))
            .with_graceful_shutdown(async move {
                let why = stop.await;
                tracing::info!("shutting down: draining requests in flight");
                let _ = stop_tx.send(why);
            })
            .await
            .context("server failed")
    });
    app.batcher.shutdown();
    result?;
    let why = stop_rx.try_recv().unwrap_or(Shutdown::Terminated);
    tracing::info!("stopped");
    Ok(why)
}

/// Resolves with the first SIGINT or SIGTERM. The handlers are installed when this is called,
/// not when the future is first polled, so a signal sent as soon as the address is printed is
/// not lost.
#[cfg(unix)]
fn shutdown_signal() -> impl std::future::Future<Output = Shutdown> + Send + 'static {
    use tokio::signal::unix::{signal, Signal, SignalKind};
    async fn recv(s: std::io::Result<Signal>) {
        match s {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    }
    let int = signal(SignalKind::interrupt());
    let term = signal(SignalKind::terminate());
    async move {
        tokio::select! {
            _ = recv(int) => Shutdown::Interrupted,
            _ = recv(term) => Shutdown::Terminated,
        }
    }
}

#[cfg(not(unix))]
fn shutdown_signal() -> impl std::future::Future<Output = Shutdown> + Send + 'static {
    async {
        let _ = tokio::signal::ctrl_c().await;
        Shutdown::Interrupted
    }
}

fn router(app: Arc<App>) -> Router {
    let max_body = app.max_body;
    // Scoring, model and control routes: behind the key check when auth is on.
    let guarded = Router::new()
        .route("/score", post(score::score))
        .route("/metrics", get(metrics_text))
        .merge(v2::model_routes())
        .route_layer(middleware::from_fn_with_state(
            Arc::clone(&app),
            auth::require_key,
        ));
    let open = Router::new()
        .route("/", get(|| async { "Healthy" }))
        .route("/swagger.json", get(score::swagger))
        .merge(v2::health_routes());
    Router::new()
        .merge(guarded)
        .merge(open)
        .fallback(|| async { ApiError::not_found("no such route") })
        .layer(DefaultBodyLimit::max(max_body))
        .layer(middleware::from_fn(access_log))
        .with_state(app)
}

async fn metrics_text(axum::extract::State(app): axum::extract::State<Arc<App>>) -> Response {
    let body = metrics::prometheus(&[(&app.name, VERSION, &app.metrics)]);
    let mut r = Response::new(axum::body::Body::from(body));
    r.headers_mut().insert(
        axum::http::header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
    );
    r
}

/// Logs every request (method, path, status, latency, request id) and echoes the request id in
/// `X-Request-Id` (the client's, or a new one).
async fn access_log(req: Request, next: Next) -> Response {
    static NEXT: AtomicU64 = AtomicU64::new(1);
    let id = req
        .headers()
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .filter(|v| !v.is_empty() && v.len() <= 128)
        .map(str::to_string)
        .unwrap_or_else(|| {
            format!(
                "{:x}-{}",
                std::process::id(),
                NEXT.fetch_add(1, Ordering::Relaxed)
            )
        });
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    let started = Instant::now();
    let mut resp = next.run(req).await;
    let status = resp.status();
    let latency_us = started.elapsed().as_micros() as u64;
    if status.is_server_error() {
        tracing::warn!(target: "sinter::access", request_id = %id, %method, %path, status = status.as_u16(), latency_us, "request");
    } else {
        tracing::info!(target: "sinter::access", request_id = %id, %method, %path, status = status.as_u16(), latency_us, "request");
    }
    if let Ok(v) = HeaderValue::from_str(&id) {
        resp.headers_mut().insert("x-request-id", v);
    }
    resp
}

/// The status code of a health answer.
fn health(ok: bool) -> StatusCode {
    if ok {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_hosts_are_recognised() {
        for h in ["127.0.0.1", "127.1.2.3", "localhost", "::1", "[::1]"] {
            assert!(is_loopback(h), "{h}");
        }
        for h in ["0.0.0.0", "10.0.0.1", "example.com", "::"] {
            assert!(!is_loopback(h), "{h}");
        }
    }
}
