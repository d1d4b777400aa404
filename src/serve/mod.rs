//! `sinter serve`: the model behind HTTP.
//!
//! Routes: `POST /score` (`{"data": [[…], …]}`), the Open Inference Protocol v2
//! (`/v2`, `/v2/health/{live,ready}`, `/v2/models/{m}[/versions/{v}]`, `…/ready`, `…/infer` with
//! JSON tensors and the binary tensor extension) and `GET /` as a liveness probe.
//!
//! The device is driven by one worker thread that owns the runtime; handlers hand it jobs over a
//! bounded queue and await the answer, so the async runtime never blocks on the device.

use anyhow::Context;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::ser::{SerializeMap, SerializeSeq};
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};
use sinter_host::{open_runtime, CycleSource, HostError, Inference, Tensor};
use sinter_isa::bundle::{Bundle, TensorSig};
use std::collections::HashMap;
use std::sync::Arc;
use tokio::sync::{mpsc, oneshot};

/// The one model version a bundle is served as.
const VERSION: &str = "1";
const BINARY_HEADER: &str = "inference-header-content-length";

#[derive(clap::Args, Debug)]
pub struct ServeArgs {
    /// The bundle (.sntr), or a registered model: NAME, NAME:VERSION or NAME@ALIAS (an existing
    /// path wins).
    pub model: String,
    #[command(flatten)]
    pub device: crate::DeviceArgs,
    /// Port to listen on (0 picks a free one; the address is printed).
    #[arg(long, default_value_t = 8000)]
    pub port: u16,
    /// Address to bind.
    #[arg(long, default_value = "127.0.0.1")]
    pub host: String,
    /// Name to serve the model under (default: the bundle's model name).
    #[arg(long)]
    pub name: Option<String>,
    /// Largest request body in bytes.
    #[arg(long, default_value_t = 64 << 20)]
    pub max_body: usize,
    /// Requests that may wait for the device before new ones are refused with 503.
    #[arg(long, default_value_t = 256)]
    pub queue: usize,
    #[command(flatten)]
    pub build: crate::resolve::RefArgs,
}

/// Why the server stopped accepting requests.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Shutdown {
    /// Ctrl-C (SIGINT).
    Interrupted,
    /// SIGTERM.
    Terminated,
}

struct Job {
    inputs: HashMap<String, Tensor>,
    reply: oneshot::Sender<Result<Inference, HostError>>,
}

struct App {
    name: String,
    inputs: Vec<TensorSig>,
    outputs: Vec<TensorSig>,
    cycle_source: CycleSource,
    tx: mpsc::Sender<Job>,
}

/// An error answered as `{"error": "…"}`.
#[derive(Debug)]
struct ApiError(StatusCode, String);

impl ApiError {
    fn bad(msg: impl Into<String>) -> Self {
        ApiError(StatusCode::BAD_REQUEST, msg.into())
    }
    fn not_found(msg: impl Into<String>) -> Self {
        ApiError(StatusCode::NOT_FOUND, msg.into())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.0, Json(json!({ "error": self.1 }))).into_response()
    }
}

impl From<BytesRejection> for ApiError {
    fn from(e: BytesRejection) -> Self {
        ApiError(e.status(), e.body_text())
    }
}

impl From<HostError> for ApiError {
    fn from(e: HostError) -> Self {
        let status = if e.is_invalid_input() {
            StatusCode::BAD_REQUEST
        } else if matches!(e, HostError::DeviceHung { .. }) {
            StatusCode::SERVICE_UNAVAILABLE
        } else {
            StatusCode::INTERNAL_SERVER_ERROR
        };
        ApiError(status, e.to_string())
    }
}

type ApiResult<T> = Result<T, ApiError>;

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
    let rt = open_runtime(device, bundle, a.device.timeout())
        .with_context(|| format!("cannot load {label} on the {device} device"))?;
    let name = a
        .name
        .clone()
        .unwrap_or_else(|| rt.bundle().manifest.model_name.clone());
    anyhow::ensure!(
        !name.is_empty() && !name.contains('/'),
        "model name '{name}' cannot be served; pass --name"
    );
    let (tx, mut rx) = mpsc::channel::<Job>(a.queue.max(1));
    let app = Arc::new(App {
        name,
        inputs: rt.bundle().io.model_inputs.clone(),
        outputs: rt.bundle().io.model_outputs.clone(),
        cycle_source: rt.driver_ref().cycle_source(),
        tx,
    });
    let mut rt = rt;
    let worker = std::thread::Builder::new()
        .name("sinter-device".into())
        .spawn(move || {
            while let Some(job) = rx.blocking_recv() {
                let r = rt.infer(&job.inputs);
                match &r {
                    Err(e) if e.is_invalid_input() => tracing::debug!("rejected input: {e}"),
                    Err(e) => tracing::warn!("inference failed: {e}"),
                    Ok(_) => {}
                }
                let _ = job.reply.send(r);
            }
        })
        .context("cannot start the device thread")?;

    let tokio = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let (stop_tx, mut stop_rx) = oneshot::channel();
    tokio.block_on(async move {
        let listener = tokio::net::TcpListener::bind((a.host.as_str(), a.port))
            .await
            .with_context(|| format!("cannot listen on {}:{}", a.host, a.port))?;
        let addr = listener.local_addr()?;
        tracing::info!(model = %app.name, device = %device, "serving on http://{addr}");
        let stop = shutdown_signal();
        on_listening(addr)?;
        println!("listening on http://{addr}");
        use std::io::Write;
        std::io::stdout().flush().ok();
        axum::serve(listener, router(app, a.max_body))
            .with_graceful_shutdown(async move {
                let why = stop.await;
                let _ = stop_tx.send(why);
            })
            .await
            .context("server failed")
    })?;
    let why = stop_rx.try_recv().unwrap_or(Shutdown::Terminated);
    tracing::info!("shutting down");
    let _ = worker.join();
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

fn router(app: Arc<App>, max_body: usize) -> Router {
    Router::new()
        .route("/", get(|| async { "Healthy" }))
        .route("/score", post(score))
        .route("/v2", get(server_metadata))
        .route("/v2/health/live", get(|| async { StatusCode::OK }))
        .route("/v2/health/ready", get(ready))
        .route("/v2/models/{name}", get(model_metadata))
        .route(
            "/v2/models/{name}/versions/{version}",
            get(model_metadata_v),
        )
        .route("/v2/models/{name}/ready", get(model_ready))
        .route(
            "/v2/models/{name}/versions/{version}/ready",
            get(model_ready_v),
        )
        .route("/v2/models/{name}/infer", post(infer))
        .route("/v2/models/{name}/versions/{version}/infer", post(infer_v))
        .fallback(|| async { ApiError::not_found("no such route") })
        .layer(DefaultBodyLimit::max(max_body))
        .with_state(app)
}

async fn ready(State(app): State<Arc<App>>) -> StatusCode {
    if app.tx.is_closed() {
        StatusCode::SERVICE_UNAVAILABLE
    } else {
        StatusCode::OK
    }
}

async fn server_metadata() -> Json<Value> {
    Json(json!({
        "name": "sinter",
        "version": env!("CARGO_PKG_VERSION"),
        "extensions": ["binary_tensor_data"],
    }))
}

fn check_model(app: &App, name: &str, version: Option<&str>) -> ApiResult<()> {
    if name != app.name {
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

fn sig_json(s: &TensorSig) -> Value {
    let mut shape: Vec<i64> = s.shape.iter().map(|d| *d as i64).collect();
    if let Some(first) = shape.first_mut() {
        *first = -1;
    }
    json!({ "name": s.name, "datatype": "FP32", "shape": shape })
}

fn metadata(app: &App, name: &str, version: Option<&str>) -> ApiResult<Json<Value>> {
    check_model(app, name, version)?;
    Ok(Json(json!({
        "name": app.name,
        "versions": [VERSION],
        "platform": "sinter_npu",
        "inputs": app.inputs.iter().map(sig_json).collect::<Vec<_>>(),
        "outputs": app.outputs.iter().map(sig_json).collect::<Vec<_>>(),
    })))
}

async fn model_metadata(
    State(app): State<Arc<App>>,
    Path(name): Path<String>,
) -> ApiResult<Json<Value>> {
    metadata(&app, &name, None)
}

async fn model_metadata_v(
    State(app): State<Arc<App>>,
    Path((name, version)): Path<(String, String)>,
) -> ApiResult<Json<Value>> {
    metadata(&app, &name, Some(&version))
}

async fn model_ready(State(app): State<Arc<App>>, Path(name): Path<String>) -> StatusCode {
    match check_model(&app, &name, None) {
        Ok(()) => ready(State(app)).await,
        Err(e) => e.0,
    }
}

async fn model_ready_v(
    State(app): State<Arc<App>>,
    Path((name, version)): Path<(String, String)>,
) -> StatusCode {
    match check_model(&app, &name, Some(&version)) {
        Ok(()) => ready(State(app)).await,
        Err(e) => e.0,
    }
}

/// Hands `inputs` to the device thread and waits for the answer.
async fn run(app: &App, inputs: HashMap<String, Tensor>) -> ApiResult<Inference> {
    let (reply, rx) = oneshot::channel();
    app.tx.try_send(Job { inputs, reply }).map_err(|e| {
        let msg = match e {
            mpsc::error::TrySendError::Full(_) => "the device queue is full; retry later",
            mpsc::error::TrySendError::Closed(_) => "the device is not available",
        };
        ApiError(StatusCode::SERVICE_UNAVAILABLE, msg.into())
    })?;
    let r = rx.await.map_err(|_| {
        ApiError(
            StatusCode::INTERNAL_SERVER_ERROR,
            "the device thread stopped".into(),
        )
    })?;
    Ok(r?)
}

fn stats_json(app: &App, inf: &Inference) -> Value {
    let cycles: u64 = inf.runs.iter().map(|r| r.cycles).sum();
    let mac: u64 = inf.runs.iter().map(|r| r.mac_active).sum();
    json!({
        "npu_runs": inf.runs.len(),
        "npu_cycles": cycles,
        "npu_cycle_source": app.cycle_source.as_str(),
        "npu_mac_utilization": if cycles == 0 { 0.0 } else { mac as f64 / cycles as f64 },
    })
}

// ---------------------------------------------------------------------------------------------
// Open Inference Protocol v2
// ---------------------------------------------------------------------------------------------

#[derive(Deserialize)]
struct InferRequest {
    #[serde(default)]
    id: Option<Value>,
    #[serde(default)]
    parameters: Option<Map<String, Value>>,
    inputs: Vec<InferInput>,
    #[serde(default)]
    outputs: Option<Vec<RequestedOutput>>,
}

#[derive(Deserialize)]
struct InferInput {
    name: String,
    shape: Vec<i64>,
    datatype: String,
    #[serde(default)]
    parameters: Option<Map<String, Value>>,
    #[serde(default)]
    data: Option<Value>,
}

#[derive(Deserialize)]
struct RequestedOutput {
    name: String,
    #[serde(default)]
    parameters: Option<Map<String, Value>>,
}

fn param<'a>(p: &'a Option<Map<String, Value>>, key: &str) -> Option<&'a Value> {
    p.as_ref().and_then(|m| m.get(key))
}

/// Bytes per element of a datatype we accept, or `None` when we do not take it.
fn element_bytes(datatype: &str) -> Option<usize> {
    Some(match datatype {
        "BOOL" | "INT8" | "UINT8" => 1,
        "INT16" | "UINT16" => 2,
        "FP32" | "INT32" | "UINT32" => 4,
        "FP64" | "INT64" | "UINT64" => 8,
        _ => return None,
    })
}

/// Little-endian raw tensor bytes as floats.
fn decode_binary(datatype: &str, raw: &[u8]) -> Vec<f32> {
    macro_rules! conv {
        ($t:ty, $n:expr) => {
            raw.chunks_exact($n)
                .map(|c| <$t>::from_le_bytes(c.try_into().unwrap()) as f32)
                .collect()
        };
    }
    match datatype {
        "BOOL" | "UINT8" => raw.iter().map(|b| *b as f32).collect(),
        "INT8" => raw.iter().map(|b| *b as i8 as f32).collect(),
        "INT16" => conv!(i16, 2),
        "UINT16" => conv!(u16, 2),
        "INT32" => conv!(i32, 4),
        "UINT32" => conv!(u32, 4),
        "INT64" => conv!(i64, 8),
        "UINT64" => conv!(u64, 8),
        "FP64" => conv!(f64, 8),
        _ => conv!(f32, 4),
    }
}

/// Flattens nested JSON arrays of numbers (or booleans) in row-major order.
fn flatten(v: &Value, out: &mut Vec<f32>) -> Result<(), String> {
    match v {
        Value::Array(items) => items.iter().try_for_each(|i| flatten(i, out)),
        Value::Number(n) => {
            out.push(n.as_f64().ok_or("number out of range")? as f32);
            Ok(())
        }
        Value::Bool(b) => {
            out.push(*b as u8 as f32);
            Ok(())
        }
        other => Err(format!("expected numbers, found {other}")),
    }
}

/// Flattens a regular nested array and returns its shape.
fn flatten_shaped(v: &Value) -> Result<(Vec<usize>, Vec<f32>), String> {
    fn walk(
        v: &Value,
        depth: usize,
        shape: &mut Vec<usize>,
        out: &mut Vec<f32>,
    ) -> Result<(), String> {
        match v {
            Value::Array(items) => {
                if shape.len() == depth {
                    shape.push(items.len());
                } else if shape.len() < depth || shape[depth] != items.len() {
                    return Err("ragged nested array: rows differ in length".into());
                }
                items
                    .iter()
                    .try_for_each(|i| walk(i, depth + 1, shape, out))
            }
            Value::Number(_) | Value::Bool(_) => {
                if shape.len() != depth {
                    return Err("ragged nested array: mixed depths".into());
                }
                flatten(v, out)
            }
            other => Err(format!("expected numbers, found {other}")),
        }
    }
    let (mut shape, mut out) = (Vec::new(), Vec::new());
    walk(v, 0, &mut shape, &mut out)?;
    Ok((shape, out))
}

/// A row-major tensor serialized as nested JSON arrays (floats in their shortest form).
struct Nested<'a> {
    data: &'a [f32],
    shape: &'a [usize],
}

impl Serialize for Nested<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self.shape {
            [] => self.data.first().copied().unwrap_or(f32::NAN).serialize(s),
            [_] => self.data.serialize(s),
            [n, rest @ ..] => {
                let inner: usize = rest.iter().product();
                let mut seq = s.serialize_seq(Some(*n))?;
                for i in 0..*n {
                    seq.serialize_element(&Nested {
                        data: &self.data[i * inner..(i + 1) * inner],
                        shape: rest,
                    })?;
                }
                seq.end()
            }
        }
    }
}

/// Named tensors as a JSON object, in order.
struct NamedOutputs<'a>(&'a [(String, Tensor)]);

impl Serialize for NamedOutputs<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut m = s.serialize_map(Some(self.0.len()))?;
        for (name, t) in self.0 {
            m.serialize_entry(
                name,
                &Nested {
                    data: &t.data,
                    shape: &t.shape,
                },
            )?;
        }
        m.end()
    }
}

#[derive(Serialize)]
struct OutTensor<'a> {
    name: &'a str,
    datatype: &'static str,
    shape: &'a [usize],
    #[serde(skip_serializing_if = "Option::is_none")]
    parameters: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    data: Option<&'a [f32]>,
}

#[derive(Serialize)]
struct InferResponse<'a> {
    model_name: &'a str,
    model_version: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    id: Option<Value>,
    parameters: Value,
    outputs: Vec<OutTensor<'a>>,
}

#[derive(Serialize)]
struct ScoreResponse<'a> {
    outputs: NamedOutputs<'a>,
    stats: Value,
}

async fn infer(
    State(app): State<Arc<App>>,
    Path(name): Path<String>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    infer_any(&app, &name, None, &headers, body)
        .await
        .unwrap_or_else(|e| e.into_response())
}

async fn infer_v(
    State(app): State<Arc<App>>,
    Path((name, version)): Path<(String, String)>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    infer_any(&app, &name, Some(&version), &headers, body)
        .await
        .unwrap_or_else(|e| e.into_response())
}

async fn infer_any(
    app: &App,
    name: &str,
    version: Option<&str>,
    headers: &HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult<Response> {
    check_model(app, name, version)?;
    let body = body?;
    if let Some(enc) = headers.get(header::CONTENT_ENCODING) {
        if enc.as_bytes() != b"identity" {
            return Err(ApiError(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                format!("unsupported Content-Encoding {enc:?}; send the body uncompressed"),
            ));
        }
    }
    let (json_part, mut binary) = match headers.get(BINARY_HEADER) {
        Some(v) => {
            let n: usize = v
                .to_str()
                .ok()
                .and_then(|s| s.trim().parse().ok())
                .ok_or_else(|| ApiError::bad(format!("invalid {BINARY_HEADER} header")))?;
            if n > body.len() {
                return Err(ApiError::bad(format!(
                    "{BINARY_HEADER} is {n} but the body has {} bytes",
                    body.len()
                )));
            }
            (body.slice(..n), body.slice(n..))
        }
        None => (body.clone(), Bytes::new()),
    };
    let req: InferRequest = serde_json::from_slice(&json_part)
        .map_err(|e| ApiError::bad(format!("invalid inference request: {e}")))?;

    let mut inputs = HashMap::new();
    for inp in &req.inputs {
        let elem = element_bytes(&inp.datatype).ok_or_else(|| {
            ApiError::bad(format!(
                "input '{}': datatype {} is not supported (use FP32, FP64, INT* or UINT*)",
                inp.name, inp.datatype
            ))
        })?;
        let shape: Vec<usize> = inp
            .shape
            .iter()
            .map(|d| usize::try_from(*d))
            .collect::<Result<_, _>>()
            .map_err(|_| {
                ApiError::bad(format!(
                    "input '{}': invalid shape {:?}",
                    inp.name, inp.shape
                ))
            })?;
        let count = shape
            .iter()
            .try_fold(1usize, |a, d| a.checked_mul(*d))
            .ok_or_else(|| ApiError::bad(format!("input '{}': shape too large", inp.name)))?;
        let data = match param(&inp.parameters, "binary_data_size") {
            Some(size) => {
                let size = size.as_u64().ok_or_else(|| {
                    ApiError::bad(format!("input '{}': invalid binary_data_size", inp.name))
                })? as usize;
                if size > binary.len() {
                    return Err(ApiError::bad(format!(
                        "input '{}': binary_data_size {size} exceeds the {} bytes left",
                        inp.name,
                        binary.len()
                    )));
                }
                if size != count * elem {
                    return Err(ApiError::bad(format!(
                        "input '{}': {size} bytes of {} do not fill shape {shape:?}",
                        inp.name, inp.datatype
                    )));
                }
                let raw = binary.split_to(size);
                decode_binary(&inp.datatype, &raw)
            }
            None => {
                let v = inp
                    .data
                    .as_ref()
                    .ok_or_else(|| ApiError::bad(format!("input '{}' has no data", inp.name)))?;
                let mut out = Vec::with_capacity(count);
                flatten(v, &mut out)
                    .map_err(|e| ApiError::bad(format!("input '{}': {e}", inp.name)))?;
                out
            }
        };
        if data.len() != count {
            return Err(ApiError::bad(format!(
                "input '{}': shape {shape:?} needs {count} values, got {}",
                inp.name,
                data.len()
            )));
        }
        if inputs
            .insert(inp.name.clone(), Tensor { shape, data })
            .is_some()
        {
            return Err(ApiError::bad(format!("input '{}' given twice", inp.name)));
        }
    }

    // Which outputs, and which of them binary.
    let all_binary = param(&req.parameters, "binary_data_output")
        .and_then(Value::as_bool)
        .unwrap_or(false);
    let wanted: Vec<(String, bool)> = match &req.outputs {
        Some(list) if !list.is_empty() => {
            let mut w = Vec::new();
            for o in list {
                if !app.outputs.iter().any(|s| s.name == o.name) {
                    return Err(ApiError::bad(format!(
                        "unexpected inference output '{}' for model '{}'",
                        o.name, app.name
                    )));
                }
                let bin = param(&o.parameters, "binary_data")
                    .and_then(Value::as_bool)
                    .unwrap_or(all_binary);
                w.push((o.name.clone(), bin));
            }
            w
        }
        _ => app
            .outputs
            .iter()
            .map(|s| (s.name.clone(), all_binary))
            .collect(),
    };

    let inf = run(app, inputs).await?;
    let mut outputs = Vec::new();
    let mut tail: Vec<u8> = Vec::new();
    for (name, bin) in &wanted {
        let t = inf.output(name).ok_or_else(|| {
            ApiError(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("output '{name}' missing"),
            )
        })?;
        let mut o = OutTensor {
            name,
            datatype: "FP32",
            shape: &t.shape,
            parameters: None,
            data: None,
        };
        if *bin {
            let start = tail.len();
            tail.extend(t.data.iter().flat_map(|v| v.to_le_bytes()));
            o.parameters = Some(json!({ "binary_data_size": tail.len() - start }));
        } else {
            o.data = Some(&t.data);
        }
        outputs.push(o);
    }
    let resp = InferResponse {
        model_name: &app.name,
        model_version: VERSION,
        id: req.id,
        parameters: stats_json(app, &inf),
        outputs,
    };
    let head = serde_json::to_vec(&resp)
        .map_err(|e| ApiError(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
    let head_len = head.len();
    let binary = !tail.is_empty();
    let mut body = head;
    body.extend_from_slice(&tail);
    let mut r = body.into_response();
    let content_type = if binary {
        "application/octet-stream"
    } else {
        "application/json"
    };
    r.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    if binary {
        r.headers_mut()
            .insert(BINARY_HEADER, HeaderValue::from(head_len));
    }
    Ok(r)
}

// ---------------------------------------------------------------------------------------------
// POST /score
// ---------------------------------------------------------------------------------------------

/// `{"data": [[…], …]}` for a one-input model, or `{"data": {"input": [[…], …], …}}`; every
/// value is a batch (first axis). Answers `{"outputs": {"name": [[…], …]}, "stats": {…}}`.
async fn score(
    State(app): State<Arc<App>>,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult<Response> {
    let body = body?;
    let req: Value = serde_json::from_slice(&body)
        .map_err(|e| ApiError::bad(format!("body is not valid JSON: {e}")))?;
    let data = req
        .get("data")
        .ok_or_else(|| ApiError::bad("expected a JSON object with a \"data\" field"))?;
    let named: Vec<(String, &Value)> = match data {
        Value::Object(m) => m.iter().map(|(k, v)| (k.clone(), v)).collect(),
        Value::Array(_) => {
            if app.inputs.len() != 1 {
                return Err(ApiError::bad(format!(
                    "the model has {} inputs; send \"data\" as an object keyed by input name",
                    app.inputs.len()
                )));
            }
            vec![(app.inputs[0].name.clone(), data)]
        }
        _ => {
            return Err(ApiError::bad(
                "\"data\" must be an array of rows or an object",
            ))
        }
    };
    let mut inputs = HashMap::new();
    for (name, v) in named {
        let (shape, data) =
            flatten_shaped(v).map_err(|e| ApiError::bad(format!("input '{name}': {e}")))?;
        inputs.insert(name, Tensor { shape, data });
    }
    let inf = run(&app, inputs).await?;
    Ok(Json(ScoreResponse {
        outputs: NamedOutputs(&inf.outputs),
        stats: stats_json(&app, &inf),
    })
    .into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nested_arrays_flatten_with_shape() {
        let (s, d) = flatten_shaped(&json!([[1, 2, 3], [4, 5, 6]])).unwrap();
        assert_eq!(s, vec![2, 3]);
        assert_eq!(d, vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0]);
        assert!(flatten_shaped(&json!([[1, 2], [3]])).is_err());
        assert!(flatten_shaped(&json!([[1, 2], 3])).is_err());
        assert!(flatten_shaped(&json!([["a"]])).is_err());
    }

    #[test]
    fn nested_serialization_inverts_flatten() {
        let v = json!([[[1.0, 2.0]], [[3.0, 4.0]]]);
        let (s, d) = flatten_shaped(&v).unwrap();
        let n = Nested {
            data: &d,
            shape: &s,
        };
        assert_eq!(serde_json::to_value(&n).unwrap(), v);
        assert_eq!(serde_json::to_string(&[0.1f32]).unwrap(), "[0.1]");
    }

    #[test]
    fn binary_decoding_is_little_endian() {
        let raw: Vec<u8> = [1.5f32, -2.0]
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect();
        assert_eq!(decode_binary("FP32", &raw), vec![1.5, -2.0]);
        assert_eq!(decode_binary("INT8", &[0xFF, 2]), vec![-1.0, 2.0]);
        let raw: Vec<u8> = (-3i64).to_le_bytes().to_vec();
        assert_eq!(decode_binary("INT64", &raw), vec![-3.0]);
    }
}
