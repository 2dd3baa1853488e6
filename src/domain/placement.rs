//! Which node owns an entity in cluster mode: rendezvous (highest random
//! weight) hashing over the live nodes. Every node computes the same owner
//! from the same list of nodes, with no coordination; when a node leaves,
//! only the entities it owned move (each to the node that scores next for
//! it), and a node that joins takes about 1/n of the entities, each from
//! whichever node owned it.
//!
//! Ownership is a routing hint, not a lock: while nodes disagree about the
//! list (a heartbeat expired on one node before another), two may both act
//! as an entity's owner, and the log's compare-and-set per entity keeps
//! exactly one of them writing.

/// The weight of `node` for `entity`: the first 8 bytes of
/// blake3(node, entity), length-prefixed so that no pair of names collides
/// with another.
fn weight(node: &str, entity: &str) -> u64 {
    let mut h = blake3::Hasher::new();
    h.update(&(node.len() as u64).to_le_bytes());
    h.update(node.as_bytes());
    h.update(entity.as_bytes());
    let mut first = [0u8; 8];
    first.copy_from_slice(&h.finalize().as_bytes()[..8]);
    u64::from_le_bytes(first)
}

/// The owner of `entity` among `nodes` (None: no node is live). Ties, as
/// unlikely as they are, go to the smaller node id, so every node agrees.
pub fn owner<'a>(entity: &str, nodes: &'a [String]) -> Option<&'a str> {
    nodes
        .iter()
        .map(|n| (weight(n, entity), std::cmp::Reverse(n.as_str())))
        .max()
        .map(|(_, std::cmp::Reverse(n))| n)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nodes(names: &[&str]) -> Vec<String> {
        names.iter().map(|s| s.to_string()).collect()
    }

    fn entities() -> Vec<String> {
        (0..3000).map(|i| format!("group/g_{i}")).collect()
    }

    #[test]
    fn every_node_agrees_whatever_the_order_of_its_list() {
        let a = nodes(&["n1", "n2", "n3"]);
        let b = nodes(&["n3", "n1", "n2"]);
        for e in entities() {
            assert_eq!(owner(&e, &a), owner(&e, &b));
        }
        assert_eq!(owner("group/g_1", &[]), None);
    }

    #[test]
    fn load_spreads_and_a_leaving_node_moves_only_its_own() {
        let three = nodes(&["n1", "n2", "n3"]);
        let two = nodes(&["n1", "n3"]);
        let mut per_node = std::collections::HashMap::new();
        for e in entities() {
            let before = owner(&e, &three).map(str::to_string);
            *per_node.entry(before.clone()).or_insert(0) += 1;
            let after = owner(&e, &two).map(str::to_string);
            if before.as_deref() != Some("n2") {
                assert_eq!(before, after, "{e} moved though its owner stayed");
            }
        }
        // 3,000 entities over 3 nodes: each gets a third, give or take.
        for (node, n) in per_node {
            assert!((800..1200).contains(&n), "{node:?} owns {n}");
        }
    }

    #[test]
    fn a_joining_node_takes_about_a_quarter_from_the_others() {
        let three = nodes(&["n1", "n2", "n3"]);
        let four = nodes(&["n1", "n2", "n3", "n4"]);
        let moved = entities()
            .iter()
            .filter(|e| owner(e, &three) != owner(e, &four))
            .inspect(|e| assert_eq!(owner(e, &four), Some("n4")))
            .count();
        assert!((600..900).contains(&moved), "{moved} of 3000 moved");
    }
}
