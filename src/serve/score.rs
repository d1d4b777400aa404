//! Azure-ML-style scoring: `POST /score` and the `GET /swagger.json` that describes it.

use super::error::{ApiError, ApiResult};
use super::tensors::{decode_body, flatten_shaped, NamedOutputs};
use super::v2::npu_stats;
use super::App;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::State;
use axum::http::{header, HeaderMap};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Serialize;
use serde_json::{json, Value};
use std::sync::Arc;
use std::time::Instant;

#[derive(Serialize)]
struct ScoreResponse<'a> {
    outputs: NamedOutputs<'a>,
    stats: Value,
}

/// `{"data": [[…], …]}` for a one-input model, or `{"data": {"input": [[…], …], …}}`; every
/// value is a batch (first axis). Answers `{"outputs": {"name": [[…], …]}, "stats": {…}}`.
pub async fn score(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let started = Instant::now();
    let r = score_inner(&app, &headers, body).await;
    app.finished(&r, started);
    r.unwrap_or_else(IntoResponse::into_response)
}

async fn score_inner(
    app: &App,
    headers: &HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult<Response> {
    let body = decode_body(headers.get(header::CONTENT_ENCODING), body?, app.max_body)?;
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
    let mut given = Vec::with_capacity(named.len());
    for (name, v) in named {
        let (shape, data) =
            flatten_shaped(v).map_err(|e| ApiError::bad(format!("input '{name}': {e}")))?;
        given.push((name, shape, data));
    }
    let (rows, inputs) = app.prepare(given)?;
    let done = app.execute(rows, inputs).await?;
    Ok(Json(ScoreResponse {
        outputs: NamedOutputs(&done.outputs),
        stats: npu_stats(app, &done.runs, done.batch_rows),
    })
    .into_response())
}

/// A JSON schema for a batch of tensors of `dims` (after the batch axis).
fn batch_schema(dims: &[usize], max_rows: usize) -> Value {
    let mut s = json!({ "type": "number", "format": "float" });
    for d in dims.iter().rev() {
        s = json!({ "type": "array", "items": s, "minItems": d, "maxItems": d });
    }
    let mut outer = json!({ "type": "array", "items": s, "minItems": 1 });
    if max_rows > 0 {
        outer["maxItems"] = json!(max_rows);
    }
    outer
}

/// An example row of zeros of `dims`.
fn zeros(dims: &[usize]) -> Value {
    match dims {
        [] => json!(0.0),
        [n, rest @ ..] => Value::Array((0..*n).map(|_| zeros(rest)).collect()),
    }
}

/// OpenAPI 2 (Swagger) description of `/score`, with the model's input and output shapes.
pub async fn swagger(State(app): State<Arc<App>>) -> Json<Value> {
    let rows = if app.max_batch > 0 {
        app.max_batch
    } else {
        app.compiled_batch
    };
    let input_schema = if app.inputs.len() == 1 {
        batch_schema(&app.inputs[0].shape[1..], rows)
    } else {
        let props: serde_json::Map<String, Value> = app
            .inputs
            .iter()
            .map(|s| (s.name.clone(), batch_schema(&s.shape[1..], rows)))
            .collect();
        json!({ "type": "object", "properties": props, "required": app.inputs.iter().map(|s| &s.name).collect::<Vec<_>>() })
    };
    let example_data = if app.inputs.len() == 1 {
        json!([zeros(&app.inputs[0].shape[1..])])
    } else {
        Value::Object(
            app.inputs
                .iter()
                .map(|s| (s.name.clone(), json!([zeros(&s.shape[1..])])))
                .collect(),
        )
    };
    let outputs: serde_json::Map<String, Value> = app
        .outputs
        .iter()
        .map(|s| (s.name.clone(), batch_schema(&s.shape[1..], rows)))
        .collect();
    let error = json!({ "type": "object", "properties": { "error": { "type": "string" } } });
    Json(json!({
        "swagger": "2.0",
        "info": {
            "title": app.name,
            "description": format!("Model '{}' on the Sinter NPU ({} device)", app.name, app.device),
            "version": super::VERSION,
        },
        "schemes": ["http"],
        "consumes": ["application/json"],
        "produces": ["application/json"],
        "securityDefinitions": {
            "Bearer": {
                "type": "apiKey",
                "name": "Authorization",
                "in": "header",
                "description": "Bearer <key>; required when the server runs with key authentication",
            }
        },
        "paths": {
            "/": {
                "get": {
                    "operationId": "ServiceHealthCheck",
                    "description": "Liveness probe",
                    "responses": { "200": { "description": "Healthy", "schema": { "type": "string" } } },
                }
            },
            "/score": {
                "post": {
                    "operationId": "RunMLService",
                    "description": "Run the model on a batch of rows",
                    "security": [{ "Bearer": [] }],
                    "parameters": [{
                        "name": "serviceInputPayload",
                        "in": "body",
                        "required": true,
                        "schema": { "$ref": "#/definitions/ServiceInput" },
                    }],
                    "responses": {
                        "200": { "description": "The model's outputs", "schema": { "$ref": "#/definitions/ServiceOutput" } },
                        "400": { "description": "Invalid input", "schema": error },
                        "401": { "description": "Missing or invalid key", "schema": error },
                        "413": { "description": "Body too large", "schema": error },
                        "503": { "description": "Queue full or device unavailable", "schema": error },
                        "default": { "description": "Failure", "schema": error },
                    },
                }
            },
        },
        "definitions": {
            "ServiceInput": {
                "type": "object",
                "properties": { "data": input_schema },
                "required": ["data"],
                "example": { "data": example_data },
            },
            "ServiceOutput": {
                "type": "object",
                "properties": {
                    "outputs": { "type": "object", "properties": outputs },
                    "stats": { "type": "object" },
                },
            },
        },
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schemas_follow_the_shape() {
        let s = batch_schema(&[2, 3], 8);
        assert_eq!(s["maxItems"], 8);
        assert_eq!(s["items"]["minItems"], 2);
        assert_eq!(s["items"]["items"]["maxItems"], 3);
        assert_eq!(s["items"]["items"]["items"]["type"], "number");
        assert_eq!(zeros(&[2, 1]), json!([[0.0], [0.0]]));
    }
}
