//! When a write has enough acknowledgements.
//!
//! W is counted among the partition's owners in the current layout. Right
//! after a promotion the ring state also keeps the layout before it, and
//! members that have not adopted the promotion yet still read from the
//! owners there: a write acknowledged by W current owners only could be
//! missed by their reads, so it needs W of those former owners as well.

use std::collections::BTreeSet;

use tonic::Status;

/// The acknowledgements of one write, counted in both layouts.
pub(crate) struct WriteQuorum {
    w: usize,
    partition: u32,
    owners: Vec<String>,
    /// Empty unless the ring state keeps the layout before the last move.
    previous: Vec<String>,
    acknowledged: BTreeSet<String>,
}

impl WriteQuorum {
    pub(crate) fn new(
        w: usize,
        partition: u32,
        owners: Vec<String>,
        previous: Vec<String>,
    ) -> Self {
        Self {
            w,
            partition,
            owners,
            previous,
            acknowledged: BTreeSet::new(),
        }
    }

    /// Records that `node` holds the write; a node counts once, in each
    /// layout that has it as an owner.
    pub(crate) fn acknowledge(&mut self, node: &str) {
        self.acknowledged.insert(node.to_owned());
    }

    fn count(&self, owners: &[String]) -> usize {
        owners
            .iter()
            .filter(|id| self.acknowledged.contains(*id))
            .count()
    }

    /// Whether the write has W acknowledgements in every layout that reads
    /// can still come from.
    pub(crate) fn met(&self) -> bool {
        // Checked after every acknowledgement: counts only, no message.
        self.count(&self.owners) >= self.w
            && (self.previous.is_empty() || self.count(&self.previous) >= self.w)
    }

    /// The answer to the client: UNAVAILABLE, naming the layout that fell
    /// short and how short, unless the quorum is met.
    pub(crate) fn outcome(&self) -> Result<(), Status> {
        let (w, partition) = (self.w, self.partition);
        let acks = self.count(&self.owners);
        if acks < w {
            return Err(Status::unavailable(format!(
                "write quorum not met: {acks} of {w} required acknowledgements from the {} replicas of partition {partition}",
                self.owners.len()
            )));
        }
        let previous_acks = self.count(&self.previous);
        if !self.previous.is_empty() && previous_acks < w {
            return Err(Status::unavailable(format!(
                "write quorum not met: {previous_acks} of {w} required acknowledgements from the {} owners partition {partition} had before its last move (members that have not adopted the move still read from them)",
                self.previous.len()
            )));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;
    use tonic::Code;

    use super::*;

    fn ids(nodes: &[usize]) -> Vec<String> {
        nodes.iter().map(|i| format!("n{i}")).collect()
    }

    /// Three distinct nodes out of six.
    fn owners() -> impl Strategy<Value = Vec<usize>> {
        proptest::sample::subsequence((0..6).collect::<Vec<_>>(), 3).prop_shuffle()
    }

    proptest! {
        /// Against a model: met exactly when W of the current owners and,
        /// while the previous layout is kept, W of its owners hold the write,
        /// whatever order the acknowledgements arrive in, repeats included;
        /// and the error names the layout that fell short.
        #[test]
        fn met_exactly_when_both_layouts_have_w(
            w in 1usize..=3,
            current in owners(),
            previous in proptest::option::of(owners()),
            acks in proptest::collection::vec(0usize..6, 0..10),
        ) {
            let previous = previous.unwrap_or_default();
            let mut quorum = WriteQuorum::new(w, 7, ids(&current), ids(&previous));
            let mut held = BTreeSet::new();
            for node in &acks {
                let was_met = quorum.met();
                quorum.acknowledge(&format!("n{node}"));
                held.insert(*node);
                prop_assert!(!was_met || quorum.met(), "an acknowledgement never unmeets a quorum");
            }
            let in_current = current.iter().filter(|n| held.contains(n)).count();
            let in_previous = previous.iter().filter(|n| held.contains(n)).count();
            let expected = in_current >= w && (previous.is_empty() || in_previous >= w);
            prop_assert_eq!(quorum.met(), expected);
            match quorum.outcome() {
                Ok(()) => prop_assert!(expected),
                Err(status) => {
                    prop_assert_eq!(status.code(), Code::Unavailable);
                    let message = status.message();
                    prop_assert!(message.contains("partition 7"), "{}", message);
                    if in_current < w {
                        prop_assert!(
                            message.contains(&format!("{in_current} of {w} required acknowledgements from the 3 replicas")),
                            "{}", message
                        );
                    } else {
                        prop_assert!(
                            message.contains(&format!("{in_previous} of {w} required acknowledgements from the 3 owners partition 7 had before its last move")),
                            "{}", message
                        );
                    }
                }
            }
        }
    }

    /// W = N while the previous layout is kept: one dead former owner that
    /// left the current layout fails the write, even with every current
    /// owner holding it.
    #[test]
    fn with_w_equal_to_n_one_dead_former_owner_fails_the_write() {
        let mut quorum = WriteQuorum::new(3, 7, ids(&[0, 1, 2]), ids(&[1, 2, 3]));
        for node in ["n0", "n1", "n2"] {
            quorum.acknowledge(node);
        }
        let status = quorum.outcome().expect_err("n3 is missing");
        assert_eq!(status.code(), Code::Unavailable);
        assert!(
            status
                .message()
                .contains("2 of 3 required acknowledgements from the 3 owners partition 7 had before its last move"),
            "{}",
            status.message()
        );
        quorum.acknowledge("n3");
        assert!(quorum.met());
    }
}
