//! Key authentication: `Authorization: Bearer <key>` against the hashed primary and secondary
//! keys of the workspace, re-read at most every [`REFRESH`] so a regenerated key takes effect
//! without a restart.

use super::error::ApiError;
use super::App;
use crate::workspace::keys::hash_token;
use crate::workspace::Workspace;
use axum::extract::{Request, State};
use axum::http::header::AUTHORIZATION;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use subtle::ConstantTimeEq;

/// How long the key hashes read from the workspace are trusted.
pub const REFRESH: Duration = Duration::from_millis(500);

/// The key hashes, cached.
pub struct Keys {
    ws: Workspace,
    cache: Mutex<(Option<Instant>, Vec<[u8; 32]>)>,
}

impl Keys {
    /// Reads the keys of the workspace at `dir`, which must hold at least one.
    pub fn open(dir: &std::path::Path) -> anyhow::Result<Keys> {
        let hint = "create one with `sinter keys regenerate primary` (or serve with --auth off)";
        let ws = Workspace::open(dir).map_err(|e| {
            anyhow::anyhow!("key authentication needs the workspace's keys: {e}; then {hint}")
        })?;
        let hashes = ws.key_hashes()?;
        anyhow::ensure!(
            !hashes.is_empty(),
            "key authentication is on but workspace {} has no keys: {hint}",
            dir.display()
        );
        Ok(Keys {
            ws,
            cache: Mutex::new((Some(Instant::now()), hashes)),
        })
    }

    fn current(&self) -> Vec<[u8; 32]> {
        let mut c = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        if c.0.is_none_or(|at| at.elapsed() >= REFRESH) {
            match self.ws.key_hashes() {
                Ok(h) => *c = (Some(Instant::now()), h),
                // Keep the last known keys: a locked database must not lock everyone out.
                Err(e) => tracing::warn!("cannot re-read the serving keys: {e}"),
            }
        }
        c.1.clone()
    }

    /// Whether `token` is one of the keys. Every stored hash is compared, in constant time.
    pub fn accepts(&self, token: &str) -> bool {
        let Some(h) = hash_token(token) else {
            return false;
        };
        let mut ok = subtle::Choice::from(0);
        for k in self.current() {
            ok |= k.ct_eq(&h);
        }
        ok.into()
    }
}

/// Middleware: refuses requests without a valid key with 401 `{"error"}`.
pub async fn require_key(State(app): State<Arc<App>>, req: Request, next: Next) -> Response {
    let Some(keys) = &app.keys else {
        return next.run(req).await;
    };
    let token = req
        .headers()
        .get(AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            let (scheme, rest) = v.trim().split_once(' ')?;
            scheme.eq_ignore_ascii_case("bearer").then(|| rest.trim())
        });
    match token {
        None => {
            ApiError::unauthorized("missing key: send Authorization: Bearer <key>").into_response()
        }
        Some(t) if keys.accepts(t) => next.run(req).await,
        Some(_) => ApiError::unauthorized("invalid key").into_response(),
    }
}
