//! Worker nodes in the manifest: registration (from heartbeats, written only when something
//! changed), committed status transitions with term fencing (docs/failures.md S3), and the seed's
//! node queries. Live usage figures and heartbeat times stay off the log (docs/lifecycle.md#liveness-off-the-log).

use crate::proto::{Node, NodeStatus, Task, TaskConstraints};

use super::command::RegisterNode;
use super::{Attempt, Manifest, ManifestError, Resources, TaskId, node_status, validate};
use crate::proto::internal::RequeueReason;

/// True if the node may receive new placements: HEALTHY and not draining.
pub fn is_schedulable(node: &Node) -> bool {
    node_status(node) == NodeStatus::Healthy && !node.draining
}

/// Checks a task's constraints against a node: exact cloud provider and region when given,
/// and every constraint label present with the same value. `Err` says which one failed.
pub fn constraints_match(node: &Node, c: Option<&TaskConstraints>) -> Result<(), String> {
    let Some(c) = c else { return Ok(()) };
    if !c.cloud_provider.is_empty() && c.cloud_provider != node.cloud_provider {
        return Err(format!(
            "cloud_provider {:?} required, node has {:?}",
            c.cloud_provider, node.cloud_provider
        ));
    }
    if !c.region.is_empty() && c.region != node.region {
        return Err(format!(
            "region {:?} required, node has {:?}",
            c.region, node.region
        ));
    }
    for (k, v) in &c.labels {
        if node.labels.get(k) != Some(v) {
            return Err(format!("label {k}={v:?} required"));
        }
    }
    Ok(())
}

/// What a node offers: capacity slots (0 or unset counts as 1 slot), CPU cores as millicores
/// (0 = not limited), memory MiB (0 = not limited), GPUs (0 = none).
pub fn node_capacity(node: &Node) -> Resources {
    let c = node.capacity.unwrap_or_default();
    Resources {
        slots: u64::from(c.slots.max(1)),
        cpu_millis: u64::from(c.cpu_cores) * 1000,
        memory_mb: c.memory_mb,
        gpus: u64::from(c.gpus),
    }
}

impl Manifest {
    /// The first resource (`slots`, `cpu`, `memory`, `gpus`) that `need` would overrun on
    /// `node_id`, or `None` if it fits (unknown node: `Some("slots")`).
    pub fn lacking_resource(&self, node_id: &str, need: &Resources) -> Option<&'static str> {
        let Some(node) = self.nodes.get(node_id) else {
            return Some("slots");
        };
        let cap = node_capacity(node);
        let used = self.node_usage(node_id);
        if used.slots + need.slots > cap.slots {
            return Some("slots");
        }
        if cap.cpu_millis > 0 && used.cpu_millis + need.cpu_millis > cap.cpu_millis {
            return Some("cpu");
        }
        if cap.memory_mb > 0 && used.memory_mb + need.memory_mb > cap.memory_mb {
            return Some("memory");
        }
        if need.gpus > 0 && used.gpus + need.gpus > cap.gpus {
            return Some("gpus");
        }
        None
    }

    /// Free resources on a node (capacity minus what its active tasks use, floored at 0).
    pub fn free_resources(&self, node_id: &str) -> Resources {
        let Some(node) = self.nodes.get(node_id) else {
            return Resources::default();
        };
        let cap = node_capacity(node);
        let used = self.node_usage(node_id);
        Resources {
            slots: cap.slots.saturating_sub(used.slots),
            cpu_millis: cap.cpu_millis.saturating_sub(used.cpu_millis),
            memory_mb: cap.memory_mb.saturating_sub(used.memory_mb),
            gpus: cap.gpus.saturating_sub(used.gpus),
        }
    }

    fn with_count(&self, n: &Node) -> Node {
        let mut n = n.clone();
        n.active_tasks = u32::try_from(self.node_task_count(&n.node_id)).unwrap_or(u32::MAX);
        n
    }

    /// The node with this id, `active_tasks` filled in.
    pub fn get_node(&self, node_id: &str) -> Option<Node> {
        self.nodes.get(node_id).map(|n| self.with_count(n))
    }

    /// Every node ordered by id, `active_tasks` filled in (seed `GetAllNodes`).
    pub fn all_nodes(&self) -> Vec<Node> {
        self.nodes.values().map(|n| self.with_count(n)).collect()
    }

    /// HEALTHY nodes ordered by id (seed `GetHealthyNodes`; draining nodes are HEALTHY in
    /// health terms but report status DRAINING, so they are not included).
    pub fn healthy_nodes(&self) -> Vec<Node> {
        self.nodes
            .values()
            .filter(|n| node_status(n) == NodeStatus::Healthy)
            .map(|n| self.with_count(n))
            .collect()
    }

    /// Number of registered nodes.
    pub fn node_count(&self) -> usize {
        self.nodes.len()
    }

    /// The schedulable node with the fewest active tasks, ties by node id (seed
    /// `SelectLeastLoadedNode`; ignores constraints and capacity, see `crate::scheduler`).
    pub fn select_least_loaded_node(&self) -> Option<Node> {
        self.nodes
            .values()
            .filter(|n| is_schedulable(n))
            .min_by_key(|n| (self.node_task_count(&n.node_id), n.node_id.clone()))
            .map(|n| self.with_count(n))
    }

    /// HEALTHY or DRAINING nodes whose `last_heartbeat` is at least `timeout_ms` before
    /// `now_ms` (seed `CheckStaleNodes`; pure: both times are given). The manifest's
    /// `last_heartbeat` is the last committed registration time; the leader's heartbeat
    /// monitor (`crate::liveness`) tracks live heartbeats off the log.
    pub fn check_stale_nodes(&self, now_ms: i64, timeout_ms: i64) -> Vec<String> {
        self.nodes
            .values()
            .filter(|n| matches!(node_status(n), NodeStatus::Healthy | NodeStatus::Draining))
            .filter(|n| now_ms.saturating_sub(n.last_heartbeat) >= timeout_ms)
            .map(|n| n.node_id.clone())
            .collect()
    }

    /// Term of the last committed status change of a node (0 = none).
    pub fn node_status_term(&self, node_id: &str) -> u64 {
        self.node_status_terms.get(node_id).copied().unwrap_or(0)
    }

    /// True if committing `reg` would change anything: an unknown node, a different
    /// address/provider/region/capacity/labels, or a node that is not currently up (a
    /// returning UNHEALTHY node becomes HEALTHY again). Proposers skip identical
    /// re-registrations so steady heartbeats write nothing (docs/lifecycle.md#failover, docs/failures.md S12).
    pub fn registration_changes(&self, reg: &RegisterNode) -> bool {
        match self.nodes.get(&reg.node_id) {
            None => true,
            Some(n) => {
                n.address != reg.address
                    || n.cloud_provider != reg.cloud_provider
                    || n.region != reg.region
                    || n.capacity != reg.capacity
                    || n.labels != reg.labels
                    || !matches!(node_status(n), NodeStatus::Healthy | NodeStatus::Draining)
            }
        }
    }

    fn check_term(&self, node_id: &str, term: u64) -> Result<(), ManifestError> {
        let current = self.node_status_term(node_id);
        if term < current {
            return Err(ManifestError::StaleTerm {
                node_id: node_id.to_string(),
                term,
                current_term: current,
            });
        }
        Ok(())
    }

    fn note_term(&mut self, node_id: &str, term: u64) {
        let t = self
            .node_status_terms
            .entry(node_id.to_string())
            .or_insert(0);
        *t = (*t).max(term);
    }

    fn require_node(&self, node_id: &str) -> Result<&Node, ManifestError> {
        self.nodes
            .get(node_id)
            .ok_or_else(|| ManifestError::NodeNotFound {
                node_id: node_id.to_string(),
            })
    }

    /// Registers or updates a node from its heartbeat (seed `UpdateNodeHeartbeat` with
    /// auto-registration). A node that was UNHEALTHY or UNKNOWN comes back HEALTHY (or
    /// DRAINING if an operator drained it). Returns the node and whether anything changed;
    /// an identical re-registration writes nothing. `StaleTerm` if `term` is older than the
    /// node's last status change.
    pub fn update_node_heartbeat(
        &mut self,
        reg: &RegisterNode,
        now: i64,
        term: u64,
    ) -> Result<(Node, bool), ManifestError> {
        validate::validate_node_id(&reg.node_id)?;
        if !self.registration_changes(reg) {
            let n = self.get_node(&reg.node_id).expect("known node");
            return Ok((n, false));
        }
        self.check_term(&reg.node_id, term)?;
        self.note_term(&reg.node_id, term);
        let node = self
            .nodes
            .entry(reg.node_id.clone())
            .or_insert_with(|| Node {
                node_id: reg.node_id.clone(),
                registered_at: now,
                ..Default::default()
            });
        node.address = reg.address.clone();
        node.cloud_provider = reg.cloud_provider.clone();
        node.region = reg.region.clone();
        node.capacity = reg.capacity;
        node.labels = reg.labels.clone();
        node.last_heartbeat = now;
        node.status = if node.draining {
            NodeStatus::Draining as i32
        } else {
            NodeStatus::Healthy as i32
        };
        let id = reg.node_id.clone();
        Ok((self.get_node(&id).expect("just inserted"), true))
    }

    /// Commits a node status (HEALTHY clears draining; DRAINING sets it; UNHEALTHY keeps it).
    /// UNKNOWN/UNSPECIFIED are `InvalidArgument`. Returns the node and whether it changed.
    pub fn set_node_status(
        &mut self,
        node_id: &str,
        status: NodeStatus,
        now: i64,
        term: u64,
    ) -> Result<(Node, bool), ManifestError> {
        let n = self.require_node(node_id)?;
        if !matches!(
            status,
            NodeStatus::Healthy | NodeStatus::Unhealthy | NodeStatus::Draining
        ) {
            return Err(ManifestError::InvalidArgument {
                field: "status".into(),
                message: format!("{} cannot be set", status.as_str_name()),
            });
        }
        self.check_term(node_id, term)?;
        let draining = match status {
            NodeStatus::Healthy => false,
            NodeStatus::Draining => true,
            _ => n.draining,
        };
        let effective = if status == NodeStatus::Draining && node_status(n) == NodeStatus::Unhealthy
        {
            NodeStatus::Unhealthy
        } else {
            status
        };
        if node_status(n) == effective && n.draining == draining {
            return Ok((self.get_node(node_id).expect("exists"), false));
        }
        self.note_term(node_id, term);
        let n = self.nodes.get_mut(node_id).expect("exists");
        n.status = effective as i32;
        n.draining = draining;
        n.last_heartbeat = now;
        Ok((self.get_node(node_id).expect("exists"), true))
    }

    /// Seed `MarkNodeUnhealthy`: the node becomes UNHEALTHY (its tasks are not touched; see
    /// [`Manifest::node_lost`]).
    pub fn mark_node_unhealthy(
        &mut self,
        node_id: &str,
        now: i64,
        term: u64,
    ) -> Result<Node, ManifestError> {
        self.set_node_status(node_id, NodeStatus::Unhealthy, now, term)
            .map(|(n, _)| n)
    }

    /// The node was declared lost: UNHEALTHY, and every unfinished attempt on it is requeued
    /// (NODE_LOST; FAILED if its attempts are used up). Level-triggered: repeating it on an
    /// UNHEALTHY node requeues whatever is still there (docs/failures.md S10).
    pub fn node_lost(
        &mut self,
        node_id: &str,
        now: i64,
        term: u64,
    ) -> Result<(Node, Vec<Task>), ManifestError> {
        self.require_node(node_id)?;
        self.check_term(node_id, term)?;
        self.set_node_status(node_id, NodeStatus::Unhealthy, now, term)?;
        let live: Vec<(TaskId, u32)> = self
            .active_tasks_on(node_id)
            .into_iter()
            .filter_map(|t| TaskId::parse(&t.task_id).ok().map(|id| (id, t.attempt)))
            .collect();
        let mut tasks = Vec::with_capacity(live.len());
        for (id, attempt) in live {
            if let Ok(t) = self.requeue_attempt(&id, Attempt(attempt), RequeueReason::NodeLost, now)
            {
                tasks.push(t);
            }
        }
        Ok((self.get_node(node_id).expect("exists"), tasks))
    }
}
