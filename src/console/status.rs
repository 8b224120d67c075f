//! The cluster status as text (`mlcp cluster status`, the demo's last screen).

use super::names;
use super::table::{Table, unix_ms};
use crate::proto::GetClusterStatusResponse;

/// The members of a cluster as a table; a member whose role is not known but is `leader_id`
/// shows as LEADER.
pub fn member_table(members: &[crate::proto::Member], leader_id: u64) -> Table {
    let mut table = Table::new(["ID", "ADDRESS", "ROLE", "SUFFRAGE", "MATCH_INDEX"]);
    for m in members {
        let role = match names::member_role(m.role) {
            s if s == "UNSPECIFIED" && m.id == leader_id => "LEADER".to_owned(),
            s if s == "UNSPECIFIED" => "?".to_owned(),
            s => s,
        };
        let suffrage = names::suffrage(m.suffrage);
        table.row([
            m.id.to_string(),
            m.address.clone(),
            role,
            suffrage,
            m.match_index.to_string(),
        ]);
    }
    table
}

/// `cluster status` as text: a summary, the members and any alerts.
pub fn render_cluster_status(s: &GetClusterStatusResponse) -> String {
    let mut out = format!(
        "cluster {:?}: leader {} ({}), term {}, answered by {} (commit index {}, applied index {})\n",
        s.cluster_name,
        if s.leader_id == 0 {
            "unknown".to_owned()
        } else {
            s.leader_id.to_string()
        },
        if s.leader_address.is_empty() {
            "-"
        } else {
            &s.leader_address
        },
        s.term,
        s.self_id,
        s.commit_index,
        s.applied_index,
    );
    out.push_str(&member_table(&s.members, s.leader_id).render());
    if !s.task_counts.is_empty() {
        let counts: Vec<String> = s
            .task_counts
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        out.push_str(&format!("tasks: {}\n", counts.join(" ")));
    }
    for a in &s.alerts {
        out.push_str(&format!(
            "ALERT {} since {}: {}\n",
            a.code,
            unix_ms(a.since),
            a.message
        ));
    }
    out
}
