"""Removes one lifecycle protection from the tree this script lives in, so the scenario test
that guards it can be shown to fail. Usage: python3 simulations/lifecycle_checks_patch.py s01
(then run the test named in LIFECYCLE_CHECKS.md, then `git checkout -- src simulations`)."""
import os
import sys
case=sys.argv[1]
R = os.path.join(os.path.dirname(os.path.abspath(__file__)), '..', '')
def sub(path, old, new, count=1, region=None):
    p=R+path; s=open(p).read()
    if region:
        i=s.index(region); head,tail=s[:i],s[i:]
        assert old in tail,(case,old); tail=tail.replace(old,new,count); s=head+tail
    else:
        assert old in s,(case,old); s=s.replace(old,new,count)
    open(p,'w').write(s)
T='simulations/tests/lifecycle.rs'
if case=='s01':
    sub('src/manifest/lifecycle.rs',"        if t.attempt != attempt.0 || !is_active(task_status(t)) {\n            return Err(stale(t, attempt));\n        }","",region="    fn report(")
elif case=='s02':
    sub('src/manifest/nodes.rs',".into_iter()\n            .filter_map(|t| TaskId::parse",".into_iter()\n            .filter(|t| t.status == crate::proto::TaskStatus::Running as i32)\n            .filter_map(|t| TaskId::parse",region="    pub fn node_lost(")
    sub('src/liveness/mod.rs',"if matches!(task_status(t), TaskStatus::Assigned | TaskStatus::Running)","if matches!(task_status(t), TaskStatus::Running)")
elif case=='s03':
    # The quorum gate on node-status decisions (production code shared with the monitor).
    sub('src/raft/node.rs',"        self.quorum_active\n","        true\n",region="    pub fn leader_has_active_quorum(")
elif case=='s04':
    sub('src/liveness/mod.rs',"let grace_end = since.saturating_add(self.config.leader_grace_ms.max(stale_after));","let grace_end = since;")
elif case=='s05':
    sub('src/manifest/lifecycle.rs',"let same = r.outcome == end.outcome as i32","let same = false && r.outcome == end.outcome as i32")
elif case=='s06':
    sub(T,"    let mut w = started(steady(2));\n    let id = w.submit_direct(\"s6\"","    let mut o6 = steady(2);\n    o6.weakened.poll_without_read_index = true;\n    let mut w = started(o6);\n    let id = w.submit_direct(\"s6\"")
elif case=='s07':
    sub('src/scheduler/mod.rs',"!task.cancel_requested && task.attempt < task.max_attempts","!task.cancel_requested")
    sub('src/manifest/lifecycle.rs',"if end.retryable && t.attempt < t.max_attempts && !t.cancel_requested","if end.retryable && !t.cancel_requested")
elif case=='s08':
    sub('src/liveness/mod.rs',"            last_ms: now_ms,\n","            last_ms: agent_time_ms.max(0) as u64,\n")
elif case=='s09':
    sub('src/liveness/mod.rs',"let mass = suspects >=","let mass = false && suspects >=")
elif case=='s10':
    sub('src/liveness/mod.rs',"        if attempts.is_empty() {\n            return None;","        if true {\n            return None;")
elif case=='s11':
    sub(T,"    o.agent.poll_wait_ticks = 2_000;\n","    o.agent.poll_wait_ticks = 2_000;\n    o.weakened.keep_polls_on_step_down = true;\n")
elif case=='s12':
    sub('src/manifest/nodes.rs',"    pub fn registration_changes(&self, reg: &RegisterNode) -> bool {\n","    pub fn registration_changes(&self, reg: &RegisterNode) -> bool {\n        #[allow(unreachable_code)]\n        return true;\n")
elif case=='brake_release_grace':
    # Not a scenario of its own: the grace after the brake releases (unit test
    # agents_still_reconnecting_after_the_brake_releases_are_not_declared).
    sub('src/liveness/mod.rs',"*forced || now_ms.saturating_sub((*last).max(*released_ms)) >= stale_after","true || *forced || now_ms.saturating_sub((*last).max(*released_ms)) >= stale_after")
elif case=='s11_gateway':
    # The production redirect of parked long polls (checked by a real-gRPC test).
    sub('src/gateway/node_service.rs',"if !self.ctx.router.view().is_leader {","if false && !self.ctx.router.view().is_leader {")
else:
    sys.exit(f"unknown case {case}")
