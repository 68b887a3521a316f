//! When a write has enough acknowledgements.
//!
//! W is counted among the partition's owners in the current layout. Right
//! after a promotion the ring state also keeps the layout before it, and
//! members that have not adopted the promotion yet still read from the
//! owners there: a write acknowledged by W current owners only could be
//! missed by their reads, so it needs W of those former owners as well.

use std::collections::BTreeSet;

use super::{QuorumFailure, Shortfall};

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

    /// Whether the quorum was met; if not, which layout fell short and
    /// which of its owners did not acknowledge.
    pub(crate) fn outcome(&self) -> Result<(), QuorumFailure> {
        let failure = |owners: &[String], shortfall| {
            let (replied, silent) = owners
                .iter()
                .cloned()
                .partition(|id| self.acknowledged.contains(id));
            QuorumFailure {
                shortfall,
                needed: self.w,
                replied,
                silent,
            }
        };
        let partition = self.partition;
        if self.count(&self.owners) < self.w {
            return Err(failure(
                &self.owners,
                Shortfall::Write {
                    partition,
                    replicas: self.owners.len(),
                },
            ));
        }
        if !self.previous.is_empty() && self.count(&self.previous) < self.w {
            return Err(failure(
                &self.previous,
                Shortfall::WriteBeforeMove {
                    partition,
                    owners: self.previous.len(),
                },
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

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
                Err(failure) => {
                    prop_assert!(!expected);
                    prop_assert_eq!(failure.needed, w);
                    let (layout, shortfall) = if in_current < w {
                        (&current, Shortfall::Write { partition: 7, replicas: 3 })
                    } else {
                        (&previous, Shortfall::WriteBeforeMove { partition: 7, owners: 3 })
                    };
                    prop_assert_eq!(&failure.shortfall, &shortfall);
                    let (replied, silent): (Vec<usize>, Vec<usize>) =
                        layout.iter().partition(|n| held.contains(n));
                    prop_assert_eq!(&failure.replied, &ids(&replied));
                    prop_assert_eq!(&failure.silent, &ids(&silent));
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
        let failure = quorum.outcome().expect_err("n3 is missing");
        assert_eq!(
            failure.shortfall,
            Shortfall::WriteBeforeMove {
                partition: 7,
                owners: 3
            }
        );
        assert_eq!((failure.replied, failure.silent), (ids(&[1, 2]), ids(&[3])));
        quorum.acknowledge("n3");
        assert!(quorum.met());
    }
}
