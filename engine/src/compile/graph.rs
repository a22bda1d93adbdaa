//! The state graph: every state reachable from `initial`, some terminal
//! state reachable at all, and no dead ends (a state from which no terminal
//! can be reached). The edges are the gotos collected while the workflow
//! was compiled (`WorkflowCx::edges`).

use super::program::{StateId, StateSpec};
use super::workflow::{Edge, WorkflowCx};
use crate::definition::source::Path;
use std::collections::VecDeque;

/// What is wrong with a graph, in terms of state ids.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Finding {
    NoTerminal,
    /// No terminal state can be reached from the initial state.
    NoReachableTerminal,
    Unreachable(StateId),
    DeadEnd(StateId),
}

/// States reachable from `start` along `adj`.
fn reach(n: usize, start: &[StateId], adj: &[Vec<StateId>]) -> Vec<bool> {
    let mut seen = vec![false; n];
    let mut q: VecDeque<StateId> = start.iter().copied().collect();
    for &s in &q {
        seen[s] = true;
    }
    while let Some(s) = q.pop_front() {
        for &t in &adj[s] {
            if !seen[t] {
                seen[t] = true;
                q.push_back(t);
            }
        }
    }
    seen
}

/// The findings for `n` states, of which `terminal` are terminal. A state
/// that cannot be reached is not also called a dead end.
pub(super) fn findings(
    n: usize,
    edges: &[Edge],
    initial: StateId,
    terminal: impl Fn(StateId) -> bool,
) -> Vec<Finding> {
    let mut fwd = vec![Vec::new(); n];
    let mut back = vec![Vec::new(); n];
    for &(a, b) in edges {
        fwd[a].push(b);
        back[b].push(a);
    }
    let from_initial = reach(n, &[initial], &fwd);
    let terminals: Vec<StateId> = (0..n).filter(|&i| terminal(i)).collect();
    let to_terminal = reach(n, &terminals, &back);
    let mut out = Vec::new();
    if terminals.is_empty() {
        out.push(Finding::NoTerminal);
    } else if !terminals.iter().any(|&t| from_initial[t]) {
        out.push(Finding::NoReachableTerminal);
    }
    for i in 0..n {
        if !from_initial[i] {
            out.push(Finding::Unreachable(i));
        } else if !terminals.is_empty() && !to_terminal[i] {
            out.push(Finding::DeadEnd(i));
        }
    }
    out
}

impl WorkflowCx<'_> {
    /// Unreachable states, no reachable terminal, dead ends.
    pub(super) fn check_graph(&mut self, states: &[StateSpec], initial: StateId) {
        let found = findings(states.len(), &self.edges, initial, |i| {
            states[i].terminal.is_some()
        });
        let root = Path::root();
        let start = &states[initial].name;
        for f in found {
            match f {
                Finding::NoTerminal => self.cx.err_key(
                    &root.key("states"),
                    "没有终止状态：请给工作流结束的状态加上 `terminal: true`".into(),
                ),
                Finding::NoReachableTerminal => self.cx.err_value(
                    &root.key("initial"),
                    format!("从 `{start}` 无法到达任何终止状态"),
                ),
                Finding::Unreachable(i) => {
                    let name = &states[i].name;
                    self.cx.err_key(
                        &root.key("states").key(name),
                        format!(
                            "状态 `{name}` 无法到达：从 `{start}` 出发，没有转移、计时器或处理器通往它"
                        ),
                    )
                }
                Finding::DeadEnd(i) => {
                    let name = &states[i].name;
                    self.cx.err_key(
                        &root.key("states").key(name),
                        format!("状态 `{name}` 是死路：从它无法到达任何终止状态"),
                    )
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_straight_line_to_a_terminal_has_no_findings() {
        assert_eq!(findings(3, &[(0, 1), (1, 2)], 0, |i| i == 2), vec![]);
    }

    #[test]
    fn a_state_nothing_leads_to_is_unreachable_not_also_a_dead_end() {
        // 2 has no way in and no way out: one finding, not two.
        let got = findings(3, &[(0, 1)], 0, |i| i == 1);
        assert_eq!(got, vec![Finding::Unreachable(2)]);
    }

    #[test]
    fn a_loop_without_a_way_out_is_a_dead_end() {
        // 0 -> 1 <-> 2, 0 -> 3 (terminal): 1 and 2 never reach 3.
        let got = findings(4, &[(0, 1), (1, 2), (2, 1), (0, 3)], 0, |i| i == 3);
        assert_eq!(got, vec![Finding::DeadEnd(1), Finding::DeadEnd(2)]);
    }

    #[test]
    fn no_terminal_is_said_once_and_dead_ends_are_not_listed() {
        let got = findings(2, &[(0, 1)], 0, |_| false);
        assert_eq!(got, vec![Finding::NoTerminal]);
    }

    #[test]
    fn a_terminal_only_reachable_from_elsewhere_is_no_reachable_terminal() {
        // 0 <-> 1, 2 -> 3 (terminal): from 0 nothing ends.
        let got = findings(4, &[(0, 1), (1, 0), (2, 3)], 0, |i| i == 3);
        assert_eq!(
            got,
            vec![
                Finding::NoReachableTerminal,
                Finding::DeadEnd(0),
                Finding::DeadEnd(1),
                Finding::Unreachable(2),
                Finding::Unreachable(3),
            ]
        );
    }
}
