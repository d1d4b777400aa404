//! The Open Inference Protocol v2: health, metadata, inference (JSON and binary tensors),
//! statistics, model configuration and the model repository.

use super::error::{ApiError, ApiResult};
use super::tensors::{decode_binary, decode_body, element_bytes, flatten};
use super::{health, App, Given, Outputs, VERSION};
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};
use sinter_host::driver::RunStats;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

const BINARY_HEADER: &str = "inference-header-content-length";

type S = State<Arc<App>>;

pub fn health_routes() -> Router<Arc<App>> {
    Router::new()
        .route("/v2", get(server_metadata))
        .route("/v2/health/live", get(|| async { StatusCode::OK }))
        .route(
            "/v2/health/ready",
            get(|State(app): S| async move { health(app.batcher.is_running()) }),
        )
}

pub fn model_routes() -> Router<Arc<App>> {
    Router::new()
        .route("/v2/models/stats", get(all_stats))
        .route("/v2/models/{name}", get(metadata))
        .route("/v2/models/{name}/versions/{version}", get(metadata_v))
        .route("/v2/models/{name}/ready", get(ready))
        .route("/v2/models/{name}/versions/{version}/ready", get(ready_v))
        .route("/v2/models/{name}/infer", post(infer))
        .route("/v2/models/{name}/versions/{version}/infer", post(infer_v))
        .route("/v2/models/{name}/stats", get(stats))
        .route("/v2/models/{name}/versions/{version}/stats", get(stats_v))
        .route("/v2/models/{name}/config", get(config))
        .route("/v2/models/{name}/versions/{version}/config", get(config_v))
        .route("/v2/repository/index", post(repository_index))
        .route("/v2/repository/models/{name}/load", post(load))
        .route("/v2/repository/models/{name}/unload", post(unload))
}

async fn server_metadata() -> Json<Value> {
    Json(json!({
        "name": "sinter",
        "version": env!("CARGO_PKG_VERSION"),
        "extensions": [
            "binary_tensor_data",
            "statistics",
            "model_configuration",
            "model_repository",
        ],
    }))
}

// ---------------------------------------------------------------------------------------------
// Metadata, readiness, configuration, statistics
// ---------------------------------------------------------------------------------------------

fn model_metadata(app: &App, name: &str, version: Option<&str>) -> ApiResult<Json<Value>> {
    app.check_model(name, version)?;
    let sig = |s: &sinter_isa::bundle::TensorSig| json!({ "name": s.name, "datatype": "FP32", "shape": app.public_shape(s) });
    Ok(Json(json!({
        "name": app.name,
        "versions": [VERSION],
        "platform": "sinter_npu",
        "inputs": app.inputs.iter().map(sig).collect::<Vec<_>>(),
        "outputs": app.outputs.iter().map(sig).collect::<Vec<_>>(),
    })))
}

async fn metadata(State(app): S, Path(name): Path<String>) -> ApiResult<Json<Value>> {
    model_metadata(&app, &name, None)
}

async fn metadata_v(
    State(app): S,
    Path((name, version)): Path<(String, String)>,
) -> ApiResult<Json<Value>> {
    model_metadata(&app, &name, Some(&version))
}

fn model_ready(app: &App, name: &str, version: Option<&str>) -> StatusCode {
    match app.check_model(name, version) {
        Ok(()) if app.ready() => StatusCode::OK,
        Ok(()) => StatusCode::BAD_REQUEST,
        Err(e) => e.status(),
    }
}

async fn ready(State(app): S, Path(name): Path<String>) -> StatusCode {
    model_ready(&app, &name, None)
}

async fn ready_v(State(app): S, Path((name, version)): Path<(String, String)>) -> StatusCode {
    model_ready(&app, &name, Some(&version))
}

fn model_config(app: &App, name: &str, version: Option<&str>) -> ApiResult<Json<Value>> {
    app.check_model(name, version)?;
    let tensor = |s: &sinter_isa::bundle::TensorSig| {
        let dims: Vec<usize> = if app.max_batch > 0 {
            s.shape[1..].to_vec()
        } else {
            s.shape.clone()
        };
        json!({ "name": s.name, "data_type": "TYPE_FP32", "format": "FORMAT_NONE", "dims": dims })
    };
    let mut cfg = json!({
        "name": app.name,
        "platform": "sinter_npu",
        "backend": "sinter",
        "version_policy": { "latest": { "num_versions": 1 } },
        "max_batch_size": app.max_batch,
        "input": app.inputs.iter().map(tensor).collect::<Vec<_>>(),
        "output": app.outputs.iter().map(tensor).collect::<Vec<_>>(),
        "instance_group": [{
            "name": format!("{}_{}", app.name, app.device),
            "kind": "KIND_MODEL",
            "count": app.devices,
        }],
        "parameters": {
            "device": { "string_value": app.device },
            "compiled_batch_size": { "string_value": app.compiled_batch.to_string() },
            "cycle_source": { "string_value": app.cycle_source.as_str() },
        },
    });
    if app.batching.merge {
        cfg["dynamic_batching"] = json!({
            "preferred_batch_size": [app.compiled_batch.min(app.batching.max_rows)],
            "max_queue_delay_microseconds": app.batching.delay.as_micros() as u64,
            "default_queue_policy": { "max_queue_size": app.batching.queue_size },
        });
    }
    Ok(Json(cfg))
}

async fn config(State(app): S, Path(name): Path<String>) -> ApiResult<Json<Value>> {
    model_config(&app, &name, None)
}

async fn config_v(
    State(app): S,
    Path((name, version)): Path<(String, String)>,
) -> ApiResult<Json<Value>> {
    model_config(&app, &name, Some(&version))
}

fn model_stats(app: &App, name: Option<&str>, version: Option<&str>) -> ApiResult<Json<Value>> {
    if let Some(n) = name {
        app.check_model(n, version)?;
    }
    Ok(Json(json!({
        "model_stats": [app.metrics.stats_json(&app.name, VERSION)],
    })))
}

async fn all_stats(State(app): S) -> ApiResult<Json<Value>> {
    model_stats(&app, None, None)
}

async fn stats(State(app): S, Path(name): Path<String>) -> ApiResult<Json<Value>> {
    model_stats(&app, Some(&name), None)
}

async fn stats_v(
    State(app): S,
    Path((name, version)): Path<(String, String)>,
) -> ApiResult<Json<Value>> {
    model_stats(&app, Some(&name), Some(&version))
}

// ---------------------------------------------------------------------------------------------
// Model repository
// ---------------------------------------------------------------------------------------------

/// An optional JSON body of a control route; empty means `{}`.
fn control_body(body: Result<Bytes, BytesRejection>) -> ApiResult<Map<String, Value>> {
    let body = body?;
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(Map::new());
    }
    serde_json::from_slice(&body).map_err(|e| ApiError::bad(format!("invalid request body: {e}")))
}

async fn repository_index(
    State(app): S,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult<Json<Value>> {
    let req = control_body(body)?;
    let only_ready = req.get("ready").and_then(Value::as_bool).unwrap_or(false);
    let loaded = app.loaded.load(Ordering::Relaxed);
    if only_ready && !loaded {
        return Ok(Json(json!([])));
    }
    let (state, reason) = if loaded {
        ("READY", "")
    } else {
        ("UNAVAILABLE", "unloaded")
    };
    Ok(Json(json!([{
        "name": app.name,
        "version": VERSION,
        "state": state,
        "reason": reason,
    }])))
}

fn known_for_control(app: &App, name: &str) -> ApiResult<()> {
    if name != app.name {
        return Err(ApiError::bad(format!(
            "failed to load '{name}', no version is available (this server holds '{}')",
            app.name
        )));
    }
    Ok(())
}

async fn load(
    State(app): S,
    Path(name): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult<Json<Value>> {
    known_for_control(&app, &name)?;
    let req = control_body(body)?;
    if req
        .get("parameters")
        .and_then(Value::as_object)
        .is_some_and(|p| p.contains_key("config") || p.keys().any(|k| k.starts_with("file:")))
    {
        return Err(ApiError::new(
            StatusCode::NOT_IMPLEMENTED,
            "loading a new configuration or files is not supported; serve another bundle instead",
        ));
    }
    app.loaded.store(true, Ordering::Relaxed);
    tracing::info!(model = %app.name, "model loaded");
    Ok(Json(json!({})))
}

async fn unload(
    State(app): S,
    Path(name): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult<Json<Value>> {
    known_for_control(&app, &name)?;
    control_body(body)?;
    app.loaded.store(false, Ordering::Relaxed);
    tracing::info!(model = %app.name, "model unloaded");
    Ok(Json(json!({})))
}

// ---------------------------------------------------------------------------------------------
// Inference
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

/// Device statistics of a request, reported in the response's `parameters`.
pub fn npu_stats(app: &App, runs: &[RunStats], batch_rows: usize) -> Value {
    let cycles: u64 = runs.iter().map(|r| r.cycles).sum();
    let mac: u64 = runs.iter().map(|r| r.mac_active).sum();
    json!({
        "npu_runs": runs.len(),
        "npu_cycles": cycles,
        "npu_cycle_source": app.cycle_source.as_str(),
        "npu_mac_utilization": if cycles == 0 { 0.0 } else { mac as f64 / cycles as f64 },
        "batch_size": batch_rows,
    })
}

async fn infer(
    State(app): S,
    Path(name): Path<String>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    infer_any(&app, &name, None, &headers, body).await
}

async fn infer_v(
    State(app): S,
    Path((name, version)): Path<(String, String)>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    infer_any(&app, &name, Some(&version), &headers, body).await
}

async fn infer_any(
    app: &App,
    name: &str,
    version: Option<&str>,
    headers: &HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    if let Err(e) = app.check_model(name, version) {
        return e.into_response();
    }
    let started = Instant::now();
    let r = infer_model(app, headers, body).await;
    app.finished(&r, started);
    r.unwrap_or_else(IntoResponse::into_response)
}

/// Decodes the inputs of a request: the JSON header and the binary tail after it.
fn decode_inputs(req: &InferRequest, mut binary: Bytes) -> ApiResult<Given> {
    let mut given = Vec::with_capacity(req.inputs.len());
    for inp in &req.inputs {
        let elem = element_bytes(&inp.datatype).ok_or_else(|| {
            ApiError::bad(format!(
                "input '{}': datatype {} does not match the model's FP32 (numeric datatypes are \
                 converted; BYTES is not accepted)",
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
            .filter(|c| c.checked_mul(elem).is_some())
            .ok_or_else(|| ApiError::bad(format!("input '{}': shape too large", inp.name)))?;
        let data = match param(&inp.parameters, "binary_data_size") {
            Some(size) => {
                let size = size
                    .as_u64()
                    .and_then(|s| usize::try_from(s).ok())
                    .ok_or_else(|| {
                        ApiError::bad(format!("input '{}': invalid binary_data_size", inp.name))
                    })?;
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
                let mut out = Vec::with_capacity(count.min(1 << 24));
                flatten(v, &mut out)
                    .map_err(|e| ApiError::bad(format!("input '{}': {e}", inp.name)))?;
                out
            }
        };
        given.push((inp.name.clone(), shape, data));
    }
    if !binary.is_empty() {
        return Err(ApiError::bad(format!(
            "{} bytes of binary data follow the header but no input claims them",
            binary.len()
        )));
    }
    Ok(given)
}

async fn infer_model(
    app: &App,
    headers: &HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult<Response> {
    let body = decode_body(headers.get(header::CONTENT_ENCODING), body?, app.max_body)?;
    let (json_part, binary) = match headers.get(BINARY_HEADER) {
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
        None => (body, Bytes::new()),
    };
    let req: InferRequest = serde_json::from_slice(&json_part)
        .map_err(|e| ApiError::bad(format!("invalid inference request: {e}")))?;

    // Which outputs, and which of them binary; checked before the device is busy.
    let all_binary = param(&req.parameters, "binary_data_output")
        .and_then(Value::as_bool)
        .unwrap_or(false);
    let wanted: Vec<(usize, bool)> = match &req.outputs {
        Some(list) if !list.is_empty() => {
            let mut w = Vec::with_capacity(list.len());
            for o in list {
                let i = app
                    .outputs
                    .iter()
                    .position(|s| s.name == o.name)
                    .ok_or_else(|| {
                        ApiError::bad(format!(
                            "unexpected inference output '{}' for model '{}'",
                            o.name, app.name
                        ))
                    })?;
                if param(&o.parameters, "classification").is_some() {
                    return Err(ApiError::new(
                        StatusCode::NOT_IMPLEMENTED,
                        format!("output '{}': classification is not supported", o.name),
                    ));
                }
                let bin = param(&o.parameters, "binary_data")
                    .and_then(Value::as_bool)
                    .unwrap_or(all_binary);
                w.push((i, bin));
            }
            w
        }
        _ => (0..app.outputs.len()).map(|i| (i, all_binary)).collect(),
    };

    let given = decode_inputs(&req, binary)?;
    let (rows, inputs) = app.prepare(given)?;
    let done = app.execute(rows, inputs).await?;
    Ok(encode_response(
        app,
        req.id,
        &wanted,
        &done.outputs,
        npu_stats(app, &done.runs, done.batch_rows),
    ))
}

fn encode_response(
    app: &App,
    id: Option<Value>,
    wanted: &[(usize, bool)],
    outputs: &Outputs,
    parameters: Value,
) -> Response {
    let mut out = Vec::with_capacity(wanted.len());
    let mut tail: Vec<u8> = Vec::new();
    for &(i, bin) in wanted {
        let Some((name, t)) = outputs.get(i) else {
            continue;
        };
        let mut o = OutTensor {
            name,
            datatype: "FP32",
            shape: &t.shape,
            parameters: None,
            data: None,
        };
        if bin {
            let start = tail.len();
            tail.extend(t.data.iter().flat_map(|v| v.to_le_bytes()));
            o.parameters = Some(json!({ "binary_data_size": tail.len() - start }));
        } else {
            o.data = Some(&t.data);
        }
        out.push(o);
    }
    let binary = wanted.iter().any(|(_, b)| *b);
    let resp = InferResponse {
        model_name: &app.name,
        model_version: VERSION,
        id,
        parameters,
        outputs: out,
    };
    let head = match serde_json::to_vec(&resp) {
        Ok(h) => h,
        Err(e) => return ApiError::internal(e.to_string()).into_response(),
    };
    let head_len = head.len();
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
    r
}
