//! A node's place among a key's owners, and what that place makes it do
//! with a replica write: keep it, pass it on, or refuse it, and whom it
//! must pass a kept write to before it acknowledges.
//!
//! These rules are pure, so that `super::transition_model` can drive them
//! through every interleaving of adoptions, streams, deliveries and kills.

use super::MAX_FORWARD_HOPS;

/// A node's place among one key's owners in one ring state.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Place {
    /// An owner in the current layout.
    pub in_now: bool,
    /// An owner in the next layout, while a transition is under way.
    pub in_next: bool,
    /// An owner in the layout the last promotion replaced, and in no other.
    pub former: bool,
    /// A transition is under way.
    pub in_transition: bool,
}

/// What a node does with a replica write it received.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Receipt {
    /// Keeps a copy, then does what [`Place::owes`] says.
    Keep,
    /// Keeps no copy: it replicates the key in no layout it knows, so the
    /// coordinator would count a copy nobody reads. It passes the write to
    /// the key's live owners instead.
    PassToOwners,
    /// Refuses: the write was passed on too often, so ring views disagree.
    Refuse,
}

/// What a node that kept a write must do before it acknowledges it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Owed {
    Nothing,
    /// Pass it to the partition's receivers.
    Receivers,
    /// Pass it to the owners the last promotion added.
    GainedOwners,
}

impl Place {
    /// In no layout of the state: the node keeps no copy of the key.
    pub fn outsider(self) -> bool {
        !self.in_now && !self.in_next && !self.former
    }

    /// An owner now that gives the partition up in the transition under way.
    pub fn hands_off(self) -> bool {
        self.in_now && !self.in_next && self.in_transition
    }

    /// What this node, on ring state `version`, does with a replica write
    /// passed on `hops` times by a sender on `sender_version`.
    ///
    /// A write passed on by a node with a newer ring state is kept even by a
    /// node that replicates the key in neither of its own layouts: in the
    /// sender's newer state it does (typically a receiver that has not
    /// adopted the transition yet), and passing it back would only bounce
    /// it between the two.
    pub fn receipt(self, hops: u32, sender_version: u64, version: u64) -> Receipt {
        if self.outsider() && hops > 0 && sender_version > version {
            return Receipt::Keep;
        }
        let must_pass_on = self.outsider() || self.hands_off();
        if must_pass_on && hops >= MAX_FORWARD_HOPS {
            return Receipt::Refuse;
        }
        if self.outsider() {
            Receipt::PassToOwners
        } else {
            Receipt::Keep
        }
    }

    /// What this node, on ring state `version` read *after* its local
    /// write, owes a write it kept from a sender on `sender_version`.
    ///
    /// - An owner handing the partition off passes every write to the
    ///   receivers: the receivers' stream may already be past the key, and
    ///   its copy leaves with it.
    /// - A former owner written to by a sender that has not adopted the
    ///   promotion passes it to the owners the promotion added: the sender
    ///   counts this node as an owner and does not write to them.
    ///
    /// `sender_version` 0 (unknown) counts as older.
    pub fn owes(self, sender_version: u64, version: u64) -> Owed {
        if self.hands_off() {
            Owed::Receivers
        } else if self.former && sender_version < version {
            Owed::GainedOwners
        } else {
            Owed::Nothing
        }
    }
}
