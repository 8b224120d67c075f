//! The controller's HTTP endpoints: `/healthz` (the process serves), `/status` (cluster
//! status as JSON) and `/metrics` (Prometheus text).

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;

use crate::gateway::cluster_service::cluster_status;
use crate::gateway::context::Ctx;
use crate::proto::{MemberRole, Suffrage};

/// The HTTP routes over `ctx`.
pub fn router(ctx: Ctx) -> axum::Router {
    axum::Router::new()
        .route("/healthz", axum::routing::get(healthz))
        .route("/status", axum::routing::get(status_page))
        .route("/metrics", axum::routing::get(metrics_page))
        .with_state(ctx)
}

async fn healthz(State(ctx): State<Ctx>) -> impl IntoResponse {
    let view = ctx.router.view();
    let body = serde_json::json!({
        "status": "ok",
        "node_id": ctx.router.self_id().get(),
        "is_leader": view.is_leader,
        "leader_id": view.leader.map(|l| l.get()).unwrap_or(0),
        "term": view.term.get(),
    });
    (StatusCode::OK, axum::Json(body))
}

async fn status_page(State(ctx): State<Ctx>) -> impl IntoResponse {
    match cluster_status(&ctx).await {
        Ok(s) => {
            let members: Vec<serde_json::Value> = s
                .members
                .iter()
                .map(|m| {
                    serde_json::json!({
                        "id": m.id,
                        "address": m.address,
                        "role": MemberRole::try_from(m.role)
                            .map(|r| r.as_str_name().trim_start_matches("MEMBER_ROLE_"))
                            .unwrap_or("UNSPECIFIED"),
                        "suffrage": Suffrage::try_from(m.suffrage)
                            .map(|r| r.as_str_name().trim_start_matches("SUFFRAGE_"))
                            .unwrap_or("UNSPECIFIED"),
                        "match_index": m.match_index,
                    })
                })
                .collect();
            let body = serde_json::json!({
                "self_id": s.self_id,
                "cluster_name": s.cluster_name,
                "leader_id": s.leader_id,
                "leader_address": s.leader_address,
                "term": s.term,
                "commit_index": s.commit_index,
                "applied_index": s.applied_index,
                "heartbeat_interval_ms": s.heartbeat_interval_ms,
                "members": members,
                "alerts": s.alerts.iter().map(|a| serde_json::json!({
                    "code": a.code, "message": a.message, "since": a.since,
                })).collect::<Vec<_>>(),
                "task_counts": s.task_counts,
            });
            (StatusCode::OK, axum::Json(body))
        }
        Err(e) => (
            StatusCode::SERVICE_UNAVAILABLE,
            axum::Json(serde_json::json!({ "error": e.message() })),
        ),
    }
}

/// Prometheus text exposition of the controller's state (the mass-failure brake shows as
/// `mlcp_alert{code="MASS_NODE_FAILURE"} 1`, docs/lifecycle.md#mass-failure-brake).
async fn metrics_page(State(ctx): State<Ctx>) -> impl IntoResponse {
    use std::fmt::Write as _;
    let Ok(s) = cluster_status(&ctx).await else {
        return (StatusCode::SERVICE_UNAVAILABLE, String::new());
    };
    let mut out = String::new();
    let view = ctx.router.view();
    let _ = writeln!(
        out,
        "# TYPE mlcp_is_leader gauge\nmlcp_is_leader {}",
        u8::from(view.is_leader)
    );
    let _ = writeln!(out, "# TYPE mlcp_term gauge\nmlcp_term {}", s.term);
    let _ = writeln!(
        out,
        "# TYPE mlcp_commit_index gauge\nmlcp_commit_index {}",
        s.commit_index
    );
    let _ = writeln!(
        out,
        "# TYPE mlcp_applied_index gauge\nmlcp_applied_index {}",
        s.applied_index
    );
    let _ = writeln!(
        out,
        "# TYPE mlcp_heartbeat_interval_ms gauge\nmlcp_heartbeat_interval_ms {}",
        s.heartbeat_interval_ms
    );
    let _ = writeln!(out, "# TYPE mlcp_tasks gauge");
    for (status, n) in &s.task_counts {
        let _ = writeln!(out, "mlcp_tasks{{status=\"{status}\"}} {n}");
    }
    let _ = writeln!(out, "# TYPE mlcp_alert gauge");
    let braked = s.alerts.iter().any(|a| a.code == "MASS_NODE_FAILURE");
    let _ = writeln!(
        out,
        "mlcp_alert{{code=\"MASS_NODE_FAILURE\"}} {}",
        u8::from(braked)
    );
    (StatusCode::OK, out)
}
