//! The order the systems under test run in within each repetition. A scenario and its `--compare`
//! twins (`ALL`, `ALL@B`, ...) run back to back, and the one that goes first takes turns from one
//! repetition to the next: on this machine whichever ran first in a pair cost ~5 % more CPU per
//! request, both ways round, which a fixed order would have reported as a difference between
//! two builds.

/// The base id a scenario's `--compare` twins share (`ALL@B` -> `ALL`).
pub fn base_id(id: &str) -> &str {
    id.split_once('@').map_or(id, |(base, _)| base)
}

/// Indices of `ids` in the order of repetition `rep`: the same sequence of groups, each run of
/// consecutive ids with one base rotated left by `rep`.
pub fn order(ids: &[&str], rep: usize) -> Vec<usize> {
    let mut out = Vec::with_capacity(ids.len());
    let mut start = 0;
    while start < ids.len() {
        let base = base_id(ids[start]);
        let len = ids[start..]
            .iter()
            .take_while(|id| base_id(id) == base)
            .count();
        out.extend((0..len).map(|k| start + (k + rep) % len));
        start += len;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn twins_take_turns_going_first_and_the_rest_keeps_its_order() {
        let ids = ["S0", "S1", "S1@B", "ALL", "ALL@B", "ALL@C", "nginx"];
        assert_eq!(order(&ids, 0), [0, 1, 2, 3, 4, 5, 6]);
        assert_eq!(order(&ids, 1), [0, 2, 1, 4, 5, 3, 6]);
        assert_eq!(order(&ids, 2), [0, 1, 2, 5, 3, 4, 6]);
        // over as many repetitions as a group has members, each of them goes first once
        for (group, len) in [(1..3, 2), (3..6, 3)] {
            let firsts: Vec<usize> = (0..len).map(|rep| order(&ids, rep)[group.start]).collect();
            let mut sorted = firsts.clone();
            sorted.sort_unstable();
            assert_eq!(sorted, group.collect::<Vec<_>>(), "{firsts:?}");
        }
    }

    #[test]
    fn the_base_id_drops_the_compare_tag() {
        assert_eq!(base_id("ALL-queued@B"), "ALL-queued");
        assert_eq!(base_id("ALL-queued"), "ALL-queued");
    }
}
