//! The names people read for proto enum values: the value's proto name without its type
//! prefix (`COMPLETED` for `TASK_STATUS_COMPLETED`). The `*_known` forms say `None` for a
//! number the enum does not define; the plain forms then show the number.

use crate::proto::{MemberRole, NodeStatus, Suffrage, TaskStatus};

fn trimmed<E>(name: Result<&'static str, E>, prefix: &str) -> Option<&'static str> {
    name.ok().map(|n| n.strip_prefix(prefix).unwrap_or(n))
}

/// `PENDING`, `RUNNING`, `COMPLETED`, … (`None` for an unknown value).
pub fn task_status_known(value: i32) -> Option<&'static str> {
    trimmed(
        TaskStatus::try_from(value).map(|s| s.as_str_name()),
        "TASK_STATUS_",
    )
}

/// `HEALTHY`, `UNHEALTHY`, `DRAINING`, … (`None` for an unknown value).
pub fn node_status_known(value: i32) -> Option<&'static str> {
    trimmed(
        NodeStatus::try_from(value).map(|s| s.as_str_name()),
        "NODE_STATUS_",
    )
}

/// `LEADER`, `FOLLOWER`, … (`None` for an unknown value).
pub fn member_role_known(value: i32) -> Option<&'static str> {
    trimmed(
        MemberRole::try_from(value).map(|s| s.as_str_name()),
        "MEMBER_ROLE_",
    )
}

/// `VOTER`, `LEARNER`, … (`None` for an unknown value).
pub fn suffrage_known(value: i32) -> Option<&'static str> {
    trimmed(
        Suffrage::try_from(value).map(|s| s.as_str_name()),
        "SUFFRAGE_",
    )
}

/// [`task_status_known`], or the number.
pub fn task_status(value: i32) -> String {
    task_status_known(value).map_or_else(|| value.to_string(), str::to_owned)
}

/// [`member_role_known`], or the number.
pub fn member_role(value: i32) -> String {
    member_role_known(value).map_or_else(|| value.to_string(), str::to_owned)
}

/// [`suffrage_known`], or the number.
pub fn suffrage(value: i32) -> String {
    suffrage_known(value).map_or_else(|| value.to_string(), str::to_owned)
}
