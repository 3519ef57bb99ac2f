//! `GET /v1/pools`: the warm pools as operators see them (`forge pools`): per template, the
//! size this host keeps, the labs ready on each host, and the spawns that took one or found
//! none. Platform-wide counts only, no tenant named: roles `forge.orchestrator` or
//! `forge.observer`.

use std::collections::BTreeMap;

use axum::extract::State;
use chrono::SecondsFormat;
use forge_auth::{Caller, roles};
use forge_http::{ApiError, ErrorEnvelope};
use serde::{Deserialize, Serialize};
use utoipa::OpenApi;

use super::Orchestrator;
use crate::authz::require_role;

/// One template's pool.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct PoolView {
    pub template: String,
    /// Warm labs the answering host keeps of it (0: pooled elsewhere only, or no longer).
    pub size: u32,
    /// Warm labs ready now, on every host.
    pub ready: u32,
    /// Ready labs per lab host.
    pub ready_by_host: BTreeMap<String, u32>,
    /// Spawns that took a warm lab.
    pub hits: u64,
    /// Spawns that found none and were launched cold.
    pub misses: u64,
    /// When the oldest ready lab was ready (RFC 3339), if any.
    pub oldest_ready_at: Option<String>,
}

/// `GET /v1/pools`.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct PoolList {
    /// The lab host that answered (whose sizes `size` is).
    pub host_id: String,
    pub pools: Vec<PoolView>,
}

#[derive(OpenApi)]
#[openapi(paths(pools), components(schemas(PoolList, PoolView)))]
pub(super) struct PoolsDoc;

#[utoipa::path(get, path = "/v1/pools",
    responses(
        (status = 200, description = "Every warm pool: its size on this host, ready labs per host, hits and misses", body = PoolList),
        (status = 401, description = "Missing or invalid bearer token", body = ErrorEnvelope),
        (status = 403, description = "Role forge.orchestrator or forge.observer missing (`missing_role`)", body = ErrorEnvelope),
        (status = 429, description = "Tenant rate limit; see Retry-After", body = ErrorEnvelope)),
    security(("bearer" = [])))]
pub(super) async fn pools(
    State(o): State<Orchestrator>,
    caller: Caller,
) -> Result<axum::Json<PoolList>, ApiError> {
    require_role(&caller, &[roles::ORCHESTRATOR, roles::OBSERVER])?;
    let d = o.deps();
    let warm = d.store.list_warm(None).await.map_err(ApiError::internal)?;
    let claims = d.store.pool_claims().await.map_err(ApiError::internal)?;
    let mut views: BTreeMap<String, PoolView> = BTreeMap::new();
    let view = |views: &mut BTreeMap<String, PoolView>, t: &str| {
        views.entry(t.to_owned()).or_insert_with(|| PoolView {
            template: t.to_owned(),
            size: d.config.pools.get(t).copied().unwrap_or(0),
            ready: 0,
            ready_by_host: BTreeMap::new(),
            hits: 0,
            misses: 0,
            oldest_ready_at: None,
        });
    };
    for t in d.config.pools.keys() {
        view(&mut views, t);
    }
    for w in &warm {
        view(&mut views, &w.template);
        let v = views.get_mut(&w.template).expect("just inserted");
        v.ready += 1;
        *v.ready_by_host.entry(w.host_id.clone()).or_default() += 1;
        // `list_warm` is oldest first.
        v.oldest_ready_at
            .get_or_insert_with(|| w.ready_at.to_rfc3339_opts(SecondsFormat::Secs, true));
    }
    for c in &claims {
        view(&mut views, &c.template);
        let v = views.get_mut(&c.template).expect("just inserted");
        (v.hits, v.misses) = (c.hits, c.misses);
    }
    Ok(axum::Json(PoolList {
        host_id: o.host_id().to_owned(),
        pools: views.into_values().collect(),
    }))
}
