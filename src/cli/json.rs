//! `--output json`: each response message as JSON with the proto field names (`task_id`, not
//! `taskId`) and enum values as their names without the type prefix (`"COMPLETED"`, not
//! `"TASK_STATUS_COMPLETED"` or `4`).
//!
//! Every function destructures its message completely (no `..`), so adding a field to the
//! proto breaks the build here until the field is printed. Integers stay JSON numbers (also
//! 64-bit ones; they are far below 2⁵³ in practice); JSON payloads (`task_data`,
//! `result_data`) stay strings exactly as in the message; an absent sub-message is `null`.

use serde_json::{Map, Value, json};

use crate::console::names;
use crate::proto::{
    AttemptRecord, CancelTaskResponse, ClusterAlert, DrainNodeResponse, GetClusterStatusResponse,
    GetTaskResponse, LeaderHint, ListNodesResponse, ListTasksResponse, Member, Node, NodeCapacity,
    ResourceRequest, RetryPolicy, SubmitTaskResponse, Task, TaskConstraints,
    TransferLeaderResponse,
};

/// `TASK_STATUS_COMPLETED` → `COMPLETED`; an unknown number stays a number.
pub fn task_status(value: i32) -> Value {
    enum_value(names::task_status_known(value), value)
}

/// `NODE_STATUS_HEALTHY` → `HEALTHY`.
pub fn node_status(value: i32) -> Value {
    enum_value(names::node_status_known(value), value)
}

/// `MEMBER_ROLE_LEADER` → `LEADER`.
pub fn member_role(value: i32) -> Value {
    enum_value(names::member_role_known(value), value)
}

/// `SUFFRAGE_VOTER` → `VOTER`.
pub fn suffrage(value: i32) -> Value {
    enum_value(names::suffrage_known(value), value)
}

fn enum_value(name: Option<&'static str>, value: i32) -> Value {
    name.map_or_else(|| Value::from(value), Value::from)
}

fn opt<T>(value: &Option<T>, f: impl Fn(&T) -> Value) -> Value {
    value.as_ref().map_or(Value::Null, f)
}

fn string_map(map: &std::collections::BTreeMap<String, String>) -> Value {
    Value::Object(
        map.iter()
            .map(|(k, v)| (k.clone(), Value::from(v.as_str())))
            .collect::<Map<_, _>>(),
    )
}

/// A [`Task`] with every field.
pub fn task(t: &Task) -> Value {
    let Task {
        task_id,
        task_type,
        status,
        assigned_node_id,
        task_data,
        created_at,
        started_at,
        completed_at,
        result_data,
        attempt,
        max_attempts,
        priority,
        constraints,
        resources,
        error,
        retryable,
        idempotency_key,
        retry_policy,
        run_timeout_ms,
        queue_timeout_ms,
        not_before,
        cancel_requested,
        attempts,
        assigned_at,
        submit_seq,
        backoff_ms,
    } = t;
    json!({
        "task_id": task_id,
        "task_type": task_type,
        "status": task_status(*status),
        "assigned_node_id": assigned_node_id,
        "task_data": task_data,
        "created_at": created_at,
        "started_at": started_at,
        "completed_at": completed_at,
        "result_data": result_data,
        "attempt": attempt,
        "max_attempts": max_attempts,
        "priority": priority,
        "constraints": opt(constraints, task_constraints),
        "resources": opt(resources, resource_request),
        "error": error,
        "retryable": retryable,
        "idempotency_key": idempotency_key,
        "retry_policy": opt(retry_policy, self::retry_policy),
        "run_timeout_ms": run_timeout_ms,
        "queue_timeout_ms": queue_timeout_ms,
        "not_before": not_before,
        "cancel_requested": cancel_requested,
        "attempts": attempts.iter().map(attempt_record).collect::<Vec<_>>(),
        "assigned_at": assigned_at,
        "submit_seq": submit_seq,
        "backoff_ms": backoff_ms,
    })
}

/// A [`TaskConstraints`].
pub fn task_constraints(c: &TaskConstraints) -> Value {
    let TaskConstraints {
        cloud_provider,
        region,
        labels,
    } = c;
    json!({ "cloud_provider": cloud_provider, "region": region, "labels": string_map(labels) })
}

/// A [`ResourceRequest`].
pub fn resource_request(r: &ResourceRequest) -> Value {
    let ResourceRequest {
        slots,
        cpu_millis,
        memory_mb,
        gpus,
    } = r;
    json!({ "slots": slots, "cpu_millis": cpu_millis, "memory_mb": memory_mb, "gpus": gpus })
}

/// A [`NodeCapacity`].
pub fn node_capacity(c: &NodeCapacity) -> Value {
    let NodeCapacity {
        slots,
        cpu_cores,
        memory_mb,
        gpus,
    } = c;
    json!({ "slots": slots, "cpu_cores": cpu_cores, "memory_mb": memory_mb, "gpus": gpus })
}

/// A [`RetryPolicy`].
pub fn retry_policy(p: &RetryPolicy) -> Value {
    let RetryPolicy {
        initial_backoff_ms,
        max_backoff_ms,
        backoff_multiplier,
        jitter,
    } = p;
    json!({
        "initial_backoff_ms": initial_backoff_ms,
        "max_backoff_ms": max_backoff_ms,
        "backoff_multiplier": backoff_multiplier,
        "jitter": jitter,
    })
}

/// An [`AttemptRecord`].
pub fn attempt_record(a: &AttemptRecord) -> Value {
    let AttemptRecord {
        attempt,
        node_id,
        assigned_at,
        started_at,
        finished_at,
        outcome,
        result_data,
        error,
        retryable,
        reported,
    } = a;
    json!({
        "attempt": attempt,
        "node_id": node_id,
        "assigned_at": assigned_at,
        "started_at": started_at,
        "finished_at": finished_at,
        "outcome": task_status(*outcome),
        "result_data": result_data,
        "error": error,
        "retryable": retryable,
        "reported": reported,
    })
}

/// A [`Node`] with every field.
pub fn node(n: &Node) -> Value {
    let Node {
        node_id,
        address,
        cloud_provider,
        region,
        status,
        last_heartbeat,
        cpu_usage,
        memory_usage,
        active_tasks,
        capacity,
        labels,
        draining,
        registered_at,
        agent_time,
    } = n;
    json!({
        "node_id": node_id,
        "address": address,
        "cloud_provider": cloud_provider,
        "region": region,
        "status": node_status(*status),
        "last_heartbeat": last_heartbeat,
        "cpu_usage": cpu_usage,
        "memory_usage": memory_usage,
        "active_tasks": active_tasks,
        "capacity": opt(capacity, node_capacity),
        "labels": string_map(labels),
        "draining": draining,
        "registered_at": registered_at,
        "agent_time": agent_time,
    })
}

/// A [`LeaderHint`].
pub fn leader_hint(h: &LeaderHint) -> Value {
    let LeaderHint {
        leader_id,
        leader_address,
    } = h;
    json!({ "leader_id": leader_id, "leader_address": leader_address })
}

/// A [`Member`] of the controller cluster.
pub fn member(m: &Member) -> Value {
    let Member {
        id,
        address,
        role,
        suffrage,
        match_index,
    } = m;
    json!({
        "id": id,
        "address": address,
        "role": member_role(*role),
        "suffrage": self::suffrage(*suffrage),
        "match_index": match_index,
    })
}

/// A [`ClusterAlert`].
pub fn cluster_alert(a: &ClusterAlert) -> Value {
    let ClusterAlert {
        code,
        message,
        since,
    } = a;
    json!({ "code": code, "message": message, "since": since })
}

/// `SubmitTaskResponse`.
pub fn submit_task_response(r: &SubmitTaskResponse) -> Value {
    let SubmitTaskResponse { task, deduplicated } = r;
    json!({ "task": opt(task, self::task), "deduplicated": deduplicated })
}

/// `GetTaskResponse`.
pub fn get_task_response(r: &GetTaskResponse) -> Value {
    let GetTaskResponse { task } = r;
    json!({ "task": opt(task, self::task) })
}

/// `CancelTaskResponse`.
pub fn cancel_task_response(r: &CancelTaskResponse) -> Value {
    let CancelTaskResponse { task } = r;
    json!({ "task": opt(task, self::task) })
}

/// `ListTasksResponse`.
pub fn list_tasks_response(r: &ListTasksResponse) -> Value {
    let ListTasksResponse {
        tasks,
        next_page_token,
        total_count,
    } = r;
    json!({
        "tasks": tasks.iter().map(task).collect::<Vec<_>>(),
        "next_page_token": next_page_token,
        "total_count": total_count,
    })
}

/// `ListNodesResponse`.
pub fn list_nodes_response(r: &ListNodesResponse) -> Value {
    let ListNodesResponse { nodes } = r;
    json!({ "nodes": nodes.iter().map(node).collect::<Vec<_>>() })
}

/// `DrainNodeResponse`.
pub fn drain_node_response(r: &DrainNodeResponse) -> Value {
    let DrainNodeResponse {
        node,
        remaining_tasks,
    } = r;
    json!({ "node": opt(node, self::node), "remaining_tasks": remaining_tasks })
}

/// `TransferLeaderResponse`.
pub fn transfer_leader_response(r: &TransferLeaderResponse) -> Value {
    let TransferLeaderResponse { leader } = r;
    json!({ "leader": opt(leader, leader_hint) })
}

/// The `members` list of the membership-change responses.
pub fn members_response(members: &[Member]) -> Value {
    json!({ "members": members.iter().map(member).collect::<Vec<_>>() })
}

/// `GetClusterStatusResponse`.
pub fn cluster_status_response(r: &GetClusterStatusResponse) -> Value {
    let GetClusterStatusResponse {
        self_id,
        members,
        leader_id,
        leader_address,
        term,
        commit_index,
        applied_index,
        alerts,
        cluster_name,
        heartbeat_interval_ms,
        task_counts,
    } = r;
    json!({
        "self_id": self_id,
        "members": members.iter().map(member).collect::<Vec<_>>(),
        "leader_id": leader_id,
        "leader_address": leader_address,
        "term": term,
        "commit_index": commit_index,
        "applied_index": applied_index,
        "alerts": alerts.iter().map(cluster_alert).collect::<Vec<_>>(),
        "cluster_name": cluster_name,
        "heartbeat_interval_ms": heartbeat_interval_ms,
        "task_counts": Value::Object(
            task_counts.iter().map(|(k, v)| (k.clone(), Value::from(*v))).collect()
        ),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::TaskStatus;

    #[test]
    fn field_names_are_the_proto_names_and_enums_are_names() {
        let t = Task {
            task_id: "0193".into(),
            status: TaskStatus::Completed as i32,
            attempts: vec![AttemptRecord {
                attempt: 1,
                outcome: TaskStatus::Completed as i32,
                ..AttemptRecord::default()
            }],
            ..Task::default()
        };
        let v = task(&t);
        assert_eq!(v["task_id"], "0193");
        assert_eq!(v["status"], "COMPLETED");
        assert_eq!(v["attempts"][0]["outcome"], "COMPLETED");
        assert!(v.get("taskId").is_none());
        assert_eq!(v["constraints"], Value::Null);
        assert_eq!(task_status(99), Value::from(99));
    }
}
