//! Partition placement ("layout") for ringkv.
//!
//! Keys hash into a fixed number of partitions so that membership changes move
//! whole partitions instead of rehashing keys. Each layout version gives every
//! partition an ordered preference list of `replication` distinct members.
//!
//! Layouts are derived incrementally from the previous version (like Riak's
//! claimant or Garage's layout versions) rather than recomputed from a hash of
//! the current view: stateless schemes (rendezvous hashing, virtual nodes)
//! cannot keep per-member skew near 1.0 at a few dozen members, while an
//! explicit, balance-aware assignment can bound both the skew and the data
//! moved per change. Every step is a pure function of (previous layout,
//! change) so all nodes that apply the same changes agree without talking.

use std::cmp::{Ordering, Reverse};
use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use thiserror::Error;
use xxhash_rust::xxh3::{xxh3_64, xxh3_64_with_seed};

/// 256 partitions keeps the load granularity fine enough for clusters of a
/// few dozen members while keeping a serialized layout a couple of KiB.
pub const DEFAULT_PARTITIONS: u32 = 256;

/// Member indices are stored as `u16` so layouts stay compact on the wire.
const MAX_MEMBERS: usize = u16::MAX as usize + 1;

/// Moving a replica between members whose loads differ by one would only swap
/// which of them is heavier, so transfers need at least this gap.
const MIN_USEFUL_GAP: usize = 2;

/// Maps a key to its partition.
///
/// xxh3 with seed 0 is specified bit-for-bit, and multiply-shift (instead of
/// `%`) uses the high bits without a division, so the mapping is identical on
/// every platform and release. `partitions` must be non-zero (a `Layout`
/// guarantees it); zero yields partition 0.
pub fn partition_of(key: &[u8], partitions: u32) -> u32 {
    let hash = xxh3_64(key);
    ((u128::from(hash) * u128::from(partitions)) >> 64) as u32
}

/// Per-partition pseudo-random order of members: used both to break load ties
/// and to order fallbacks, so that ties and hinted handoff spread over the
/// cluster instead of always hitting the alphabetically first member.
fn rank(partition: u32, id: &str) -> u64 {
    xxh3_64_with_seed(id.as_bytes(), u64::from(partition))
}

/// A storage node. Members without a zone count as their own zone, so an
/// unzoned cluster only needs distinct members.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Member {
    pub id: String,
    pub zone: Option<String>,
}

impl Member {
    pub fn new(id: impl Into<String>) -> Self {
        Self {
            id: id.into(),
            zone: None,
        }
    }

    pub fn in_zone(id: impl Into<String>, zone: impl Into<String>) -> Self {
        Self {
            id: id.into(),
            zone: Some(zone.into()),
        }
    }
}

/// One replica that has to be transferred (handed off) between two layouts.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Move {
    pub partition: u32,
    pub from: String,
    pub to: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Error)]
pub enum LayoutError {
    #[error("partition count must be at least 1")]
    ZeroPartitions,
    #[error("replication factor must be at least 1")]
    ZeroReplication,
    #[error("{partitions} partitions x {replication} replicas does not fit in memory")]
    TooLarge { partitions: u32, replication: usize },
    #[error("{members} member(s) cannot hold {replication} distinct replicas per partition")]
    TooFewMembers { members: usize, replication: usize },
    #[error("{members} members exceed the supported maximum of {max}")]
    TooManyMembers { members: usize, max: usize },
    #[error("member id {0:?} appears more than once")]
    DuplicateMember(String),
    #[error("no member {id:?} in layout version {version}")]
    UnknownMember { id: String, version: u64 },
    #[error(
        "removing {id:?} would leave {remaining} member(s), \
         fewer than the replication factor {replication}"
    )]
    RemovalBelowReplication {
        id: String,
        remaining: usize,
        replication: usize,
    },
    #[error("partition {partition} is out of range (layout has {partitions} partitions)")]
    PartitionOutOfRange { partition: u32, partitions: u32 },
    #[error(
        "no member can take a replica of partition {partition} without \
         duplicating a member or narrowing its zone spread"
    )]
    NoEligibleMember { partition: u32 },
    #[error("layout version {0} cannot be incremented")]
    VersionOverflow(u64),
    #[error(
        "layouts are not comparable: {ours_partitions}x{ours_replication} \
         vs {theirs_partitions}x{theirs_replication} (partitions x replicas)"
    )]
    Incompatible {
        ours_partitions: u32,
        ours_replication: usize,
        theirs_partitions: u32,
        theirs_replication: usize,
    },
    #[error("invalid layout: {0}")]
    Invalid(String),
}

/// One version of the partition -> members assignment.
///
/// Deserialization re-validates every invariant, so a layout received from a
/// peer can be trusted as much as one computed locally.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "LayoutRepr", into = "LayoutRepr")]
pub struct Layout {
    version: u64,
    partitions: u32,
    replication: usize,
    /// Sorted by id so indices are canonical for a given member set.
    members: Vec<Member>,
    /// Row-major `partitions x replication` indices into `members`; a row is
    /// that partition's preference list, coordinator first.
    assignments: Vec<u16>,
}

#[derive(Serialize, Deserialize)]
struct LayoutRepr {
    version: u64,
    partitions: u32,
    replication: usize,
    members: Vec<Member>,
    assignments: Vec<u16>,
}

impl From<Layout> for LayoutRepr {
    fn from(layout: Layout) -> Self {
        Self {
            version: layout.version,
            partitions: layout.partitions,
            replication: layout.replication,
            members: layout.members,
            assignments: layout.assignments,
        }
    }
}

impl TryFrom<LayoutRepr> for Layout {
    type Error = LayoutError;

    fn try_from(repr: LayoutRepr) -> Result<Self, LayoutError> {
        Layout {
            version: repr.version,
            partitions: repr.partitions,
            replication: repr.replication,
            members: repr.members,
            assignments: repr.assignments,
        }
        .validated()
    }
}

impl Layout {
    /// Builds version 1 by greedily giving each slot to the least-loaded
    /// eligible member, then smoothing what greedy filling leaves uneven.
    pub fn initial(
        partitions: u32,
        replication: usize,
        members: Vec<Member>,
    ) -> Result<Self, LayoutError> {
        let slots = vec![None; slot_count(partitions, replication)?];
        let members = sorted_unique(members)?;
        check_member_count(members.len(), replication)?;
        let mut planner = Planner::new(partitions, replication, &members, slots);
        planner.fill_holes()?;
        planner.rebalance();
        let assignments = planner.into_assignments()?;
        Layout {
            version: 1,
            partitions,
            replication,
            members,
            assignments,
        }
        .validated()
    }

    /// The newcomer (and any newly reachable zone) takes replicas one at a
    /// time from the most loaded members, so only about `1/(n+1)` of the data
    /// moves and everything else stays where it is.
    pub fn with_member_added(&self, member: Member) -> Result<Self, LayoutError> {
        let version = self.next_version()?;
        let position = match self.position_of(&member.id) {
            Ok(_) => return Err(LayoutError::DuplicateMember(member.id)),
            Err(position) => position,
        };
        let mut members = self.members.clone();
        members.insert(position, member);
        check_member_count(members.len(), self.replication)?;
        let slots = self
            .assignments
            .iter()
            .map(|&m| {
                let m = usize::from(m);
                Some(if m >= position { m + 1 } else { m })
            })
            .collect();
        let mut planner = Planner::new(self.partitions, self.replication, &members, slots);
        planner.repair_zones()?;
        planner.rebalance();
        let assignments = planner.into_assignments()?;
        self.successor(version, members, assignments)
    }

    /// Only the departing member's replicas are reassigned (to the
    /// least-loaded eligible members); nothing else is shuffled, because every
    /// extra move during a removal is extra handoff traffic while the cluster
    /// is already short a node. Residual skew is smoothed by the next add.
    pub fn with_member_removed(&self, id: &str) -> Result<Self, LayoutError> {
        let version = self.next_version()?;
        let position = self
            .position_of(id)
            .map_err(|_| LayoutError::UnknownMember {
                id: id.to_owned(),
                version: self.version,
            })?;
        let remaining = self.members.len() - 1;
        if remaining < self.replication {
            return Err(LayoutError::RemovalBelowReplication {
                id: id.to_owned(),
                remaining,
                replication: self.replication,
            });
        }
        let mut members = self.members.clone();
        members.remove(position);
        let slots = self
            .assignments
            .iter()
            .map(|&m| {
                let m = usize::from(m);
                match m.cmp(&position) {
                    Ordering::Less => Some(m),
                    Ordering::Equal => None,
                    Ordering::Greater => Some(m - 1),
                }
            })
            .collect();
        let mut planner = Planner::new(self.partitions, self.replication, &members, slots);
        planner.fill_holes()?;
        let assignments = planner.into_assignments()?;
        self.successor(version, members, assignments)
    }

    pub fn version(&self) -> u64 {
        self.version
    }

    pub fn partitions(&self) -> u32 {
        self.partitions
    }

    pub fn replication(&self) -> usize {
        self.replication
    }

    /// Members sorted by id; [`Layout::replica_indices`] index into this.
    pub fn members(&self) -> &[Member] {
        &self.members
    }

    pub fn partition_for_key(&self, key: &[u8]) -> u32 {
        partition_of(key, self.partitions)
    }

    /// Allocation-free form of [`Layout::preference_list`] for hot paths.
    pub fn replica_indices(&self, partition: u32) -> Result<&[u16], LayoutError> {
        if partition >= self.partitions {
            return Err(LayoutError::PartitionOutOfRange {
                partition,
                partitions: self.partitions,
            });
        }
        let start = partition as usize * self.replication;
        self.assignments.get(start..start + self.replication).ok_or(
            LayoutError::PartitionOutOfRange {
                partition,
                partitions: self.partitions,
            },
        )
    }

    /// Member ids holding `partition`, coordinator first.
    pub fn preference_list(&self, partition: u32) -> Result<Vec<&str>, LayoutError> {
        Ok(self
            .replica_indices(partition)?
            .iter()
            .filter_map(|&m| self.members.get(usize::from(m)))
            .map(|m| m.id.as_str())
            .collect())
    }

    /// Partitions with a replica on `id`; empty for unknown members so that
    /// callers iterating over a stale member list need no special case.
    pub fn partitions_of(&self, id: &str) -> Vec<u32> {
        let Some(index) = self
            .position_of(id)
            .ok()
            .and_then(|i| u16::try_from(i).ok())
        else {
            return Vec::new();
        };
        (0..self.partitions)
            .zip(self.assignments.chunks_exact(self.replication))
            .filter(|(_, row)| row.contains(&index))
            .map(|(partition, _)| partition)
            .collect()
    }

    /// Members outside the preference list, in the order sloppy quorum should
    /// try them. The order is per-partition so that one dead node's hinted
    /// writes spread over the cluster instead of piling onto one neighbour.
    pub fn fallbacks(&self, partition: u32) -> Result<Vec<&str>, LayoutError> {
        let row = self.replica_indices(partition)?;
        let mut rest: Vec<(u64, &str)> = self
            .members
            .iter()
            .enumerate()
            .filter(|(i, _)| !row.iter().any(|&m| usize::from(m) == *i))
            .map(|(_, m)| (rank(partition, &m.id), m.id.as_str()))
            .collect();
        rest.sort_unstable();
        Ok(rest.into_iter().map(|(_, id)| id).collect())
    }

    /// Replicas held by each member, in member order.
    pub fn loads(&self) -> Vec<(&str, usize)> {
        let mut load = vec![0usize; self.members.len()];
        for &m in &self.assignments {
            if let Some(count) = load.get_mut(usize::from(m)) {
                *count += 1;
            }
        }
        self.members
            .iter()
            .map(|m| m.id.as_str())
            .zip(load)
            .collect()
    }

    /// Transfers that turn `previous` into `self`: for each partition, the
    /// members that left its preference list paired with those that joined.
    /// Computed on sets, not slots, so it is also correct between layouts
    /// that were not derived from each other.
    pub fn moves_from(&self, previous: &Layout) -> Result<Vec<Move>, LayoutError> {
        if self.partitions != previous.partitions || self.replication != previous.replication {
            return Err(LayoutError::Incompatible {
                ours_partitions: self.partitions,
                ours_replication: self.replication,
                theirs_partitions: previous.partitions,
                theirs_replication: previous.replication,
            });
        }
        let mut moves = Vec::new();
        for partition in 0..self.partitions {
            let old = previous.preference_list(partition)?;
            let new = self.preference_list(partition)?;
            let leaving = old.iter().filter(|id| !new.contains(id));
            let joining = new.iter().filter(|id| !old.contains(id));
            moves.extend(leaving.zip(joining).map(|(from, to)| Move {
                partition,
                from: (*from).to_owned(),
                to: (*to).to_owned(),
            }));
        }
        Ok(moves)
    }

    fn position_of(&self, id: &str) -> Result<usize, usize> {
        self.members.binary_search_by(|m| m.id.as_str().cmp(id))
    }

    fn next_version(&self) -> Result<u64, LayoutError> {
        self.version
            .checked_add(1)
            .ok_or(LayoutError::VersionOverflow(self.version))
    }

    fn successor(
        &self,
        version: u64,
        members: Vec<Member>,
        assignments: Vec<u16>,
    ) -> Result<Self, LayoutError> {
        Layout {
            version,
            partitions: self.partitions,
            replication: self.replication,
            members,
            assignments,
        }
        .validated()
    }

    /// Checked on every construction path so a planner bug or a malicious
    /// peer surfaces as an error instead of a silently under-replicated key.
    fn validated(self) -> Result<Self, LayoutError> {
        let expected = slot_count(self.partitions, self.replication)?;
        check_sorted_unique(&self.members)?;
        check_member_count(self.members.len(), self.replication)?;
        if self.assignments.len() != expected {
            return Err(LayoutError::Invalid(format!(
                "expected {expected} assignments ({} partitions x {} replicas), found {}",
                self.partitions,
                self.replication,
                self.assignments.len()
            )));
        }
        let zones = Zones::of(&self.members);
        let required = zones.count.min(self.replication);
        for (partition, row) in self.assignments.chunks_exact(self.replication).enumerate() {
            self.check_row(partition, row, &zones, required)?;
        }
        Ok(self)
    }

    fn check_row(
        &self,
        partition: usize,
        row: &[u16],
        zones: &Zones,
        required: usize,
    ) -> Result<(), LayoutError> {
        let members: Vec<usize> = row.iter().map(|&m| usize::from(m)).collect();
        if let Some(bad) = members.iter().find(|&&m| m >= self.members.len()) {
            return Err(LayoutError::Invalid(format!(
                "partition {partition} refers to member #{bad} but only {} exist",
                self.members.len()
            )));
        }
        if count_distinct(members.iter().copied()) != members.len() {
            return Err(LayoutError::Invalid(format!(
                "partition {partition} lists a member twice: {members:?}"
            )));
        }
        let spread = zones.distinct(members.iter().copied());
        if spread < required {
            return Err(LayoutError::Invalid(format!(
                "partition {partition} spans {spread} zone(s) but {required} are available"
            )));
        }
        Ok(())
    }
}

fn slot_count(partitions: u32, replication: usize) -> Result<usize, LayoutError> {
    if partitions == 0 {
        return Err(LayoutError::ZeroPartitions);
    }
    if replication == 0 {
        return Err(LayoutError::ZeroReplication);
    }
    usize::try_from(partitions)
        .ok()
        .and_then(|p| p.checked_mul(replication))
        .ok_or(LayoutError::TooLarge {
            partitions,
            replication,
        })
}

fn check_member_count(members: usize, replication: usize) -> Result<(), LayoutError> {
    if members < replication {
        return Err(LayoutError::TooFewMembers {
            members,
            replication,
        });
    }
    if members > MAX_MEMBERS {
        return Err(LayoutError::TooManyMembers {
            members,
            max: MAX_MEMBERS,
        });
    }
    Ok(())
}

fn sorted_unique(mut members: Vec<Member>) -> Result<Vec<Member>, LayoutError> {
    members.sort_by(|a, b| a.id.cmp(&b.id));
    check_sorted_unique(&members)?;
    Ok(members)
}

fn check_sorted_unique(members: &[Member]) -> Result<(), LayoutError> {
    for pair in members.windows(2) {
        match pair[0].id.cmp(&pair[1].id) {
            Ordering::Less => {}
            Ordering::Equal => return Err(LayoutError::DuplicateMember(pair[0].id.clone())),
            Ordering::Greater => {
                return Err(LayoutError::Invalid(format!(
                    "members not sorted by id: {:?} before {:?}",
                    pair[0].id, pair[1].id
                )))
            }
        }
    }
    Ok(())
}

fn count_distinct(items: impl Iterator<Item = usize>) -> usize {
    let mut items: Vec<usize> = items.collect();
    items.sort_unstable();
    items.dedup();
    items.len()
}

/// Dense zone numbering so zone checks are integer compares, not string ones.
struct Zones {
    of_member: Vec<usize>,
    count: usize,
}

impl Zones {
    fn of(members: &[Member]) -> Self {
        let mut named: BTreeMap<&str, usize> = BTreeMap::new();
        for zone in members.iter().filter_map(|m| m.zone.as_deref()) {
            let next = named.len();
            named.entry(zone).or_insert(next);
        }
        let mut count = named.len();
        let of_member = members
            .iter()
            .map(|m| match m.zone.as_deref().and_then(|z| named.get(z)) {
                Some(&zone) => zone,
                None => {
                    count += 1;
                    count - 1
                }
            })
            .collect();
        Self { of_member, count }
    }

    fn distinct(&self, members: impl Iterator<Item = usize>) -> usize {
        count_distinct(members.filter_map(|m| self.of_member.get(m).copied()))
    }
}

/// Mutable working copy of an assignment while a new version is computed.
struct Planner<'a> {
    partitions: u32,
    replication: usize,
    members: &'a [Member],
    zones: Zones,
    /// `min(replication, zones)`: distinct zones every partition must span.
    required_zones: usize,
    /// `None` marks a slot whose previous holder left.
    slots: Vec<Option<usize>>,
    load: Vec<usize>,
}

impl<'a> Planner<'a> {
    fn new(
        partitions: u32,
        replication: usize,
        members: &'a [Member],
        slots: Vec<Option<usize>>,
    ) -> Self {
        let zones = Zones::of(members);
        let required_zones = zones.count.min(replication);
        let mut load = vec![0; members.len()];
        for &m in slots.iter().flatten() {
            load[m] += 1;
        }
        Self {
            partitions,
            replication,
            members,
            zones,
            required_zones,
            slots,
            load,
        }
    }

    fn index(&self, partition: u32, slot: usize) -> usize {
        partition as usize * self.replication + slot
    }

    fn row(&self, partition: u32) -> &[Option<usize>] {
        let start = self.index(partition, 0);
        &self.slots[start..start + self.replication]
    }

    fn holds(&self, partition: u32, member: usize) -> bool {
        self.row(partition).contains(&Some(member))
    }

    fn rank_of(&self, partition: u32, member: usize) -> u64 {
        rank(partition, &self.members[member].id)
    }

    fn occupant_load(&self, partition: u32, slot: usize) -> usize {
        self.slots[self.index(partition, slot)].map_or(0, |m| self.load[m])
    }

    fn zone_spread(&self, partition: u32) -> usize {
        self.zones
            .distinct(self.row(partition).iter().flatten().copied())
    }

    /// Zone spread of `partition` if `slot` were given to `candidate`.
    fn spread_with(&self, partition: u32, slot: usize, candidate: usize) -> usize {
        let row = self.row(partition).iter().enumerate();
        self.zones
            .distinct(row.filter_map(|(s, &m)| if s == slot { Some(candidate) } else { m }))
    }

    fn assign(&mut self, partition: u32, slot: usize, member: usize) {
        let index = self.index(partition, slot);
        if let Some(old) = self.slots[index].replace(member) {
            self.load[old] -= 1;
        }
        self.load[member] += 1;
    }

    fn fill_holes(&mut self) -> Result<(), LayoutError> {
        for partition in 0..self.partitions {
            for slot in 0..self.replication {
                if self.slots[self.index(partition, slot)].is_some() {
                    continue;
                }
                let member = self
                    .pick_for_hole(partition, slot)
                    .ok_or(LayoutError::NoEligibleMember { partition })?;
                self.assign(partition, slot, member);
            }
        }
        Ok(())
    }

    /// Least-loaded member that keeps the partition able to reach its zone
    /// spread once its remaining holes are filled too.
    fn pick_for_hole(&self, partition: u32, slot: usize) -> Option<usize> {
        let holes = self.row(partition).iter().filter(|m| m.is_none()).count();
        let holes_after = holes.saturating_sub(1);
        (0..self.members.len())
            .filter(|&m| !self.holds(partition, m))
            .filter(|&m| self.spread_with(partition, slot, m) + holes_after >= self.required_zones)
            .min_by_key(|&m| (self.load[m], self.rank_of(partition, m), m))
    }

    /// A new zone raises the spread every partition must have; each partition
    /// that falls short swaps a member of a doubled-up zone for the
    /// least-loaded member of a missing zone.
    fn repair_zones(&mut self) -> Result<(), LayoutError> {
        for partition in 0..self.partitions {
            while self.zone_spread(partition) < self.required_zones {
                let (slot, member) = self
                    .best_zone_repair(partition)
                    .ok_or(LayoutError::NoEligibleMember { partition })?;
                self.assign(partition, slot, member);
            }
        }
        Ok(())
    }

    fn best_zone_repair(&self, partition: u32) -> Option<(usize, usize)> {
        let current = self.zone_spread(partition);
        let members = self.members.len();
        (0..self.replication)
            .flat_map(|slot| (0..members).map(move |m| (slot, m)))
            .filter(|&(slot, m)| {
                !self.holds(partition, m) && self.spread_with(partition, slot, m) > current
            })
            .min_by_key(|&(slot, m)| {
                let donor_load = self.occupant_load(partition, slot);
                (
                    self.load[m],
                    Reverse(donor_load),
                    self.rank_of(partition, m),
                    slot,
                )
            })
    }

    /// Moves single replicas from heavy to light members until no useful
    /// transfer remains. Each move lowers the sum of squared loads, so this
    /// terminates, and it only ever touches slots that must change.
    fn rebalance(&mut self) {
        while let Some((partition, slot, receiver)) = self.next_transfer() {
            self.assign(partition, slot, receiver);
        }
    }

    fn next_transfer(&self) -> Option<(u32, usize, usize)> {
        let mut donors: Vec<usize> = (0..self.members.len()).collect();
        donors.sort_by_key(|&m| (Reverse(self.load[m]), m));
        let mut receivers = donors.clone();
        receivers.sort_by_key(|&m| (self.load[m], m));
        for &donor in &donors {
            for &receiver in &receivers {
                if self.load[donor] < self.load[receiver] + MIN_USEFUL_GAP {
                    break;
                }
                if let Some((partition, slot)) = self.transferable_slot(donor, receiver) {
                    return Some((partition, slot, receiver));
                }
            }
        }
        None
    }

    /// A slot of `donor` that `receiver` may take without duplicating itself
    /// or narrowing the zone spread; the rank order scatters a newcomer's
    /// partitions instead of giving it a contiguous run.
    fn transferable_slot(&self, donor: usize, receiver: usize) -> Option<(u32, usize)> {
        let replication = self.replication;
        (0..self.partitions)
            .flat_map(|p| (0..replication).map(move |s| (p, s)))
            .filter(|&(p, s)| self.slots[self.index(p, s)] == Some(donor))
            .filter(|&(p, s)| {
                !self.holds(p, receiver) && self.spread_with(p, s, receiver) >= self.required_zones
            })
            .min_by_key(|&(p, _)| self.rank_of(p, receiver))
    }

    fn into_assignments(self) -> Result<Vec<u16>, LayoutError> {
        let replication = self.replication;
        self.slots
            .iter()
            .enumerate()
            .map(|(i, m)| {
                let partition = u32::try_from(i / replication).unwrap_or(u32::MAX);
                m.and_then(|m| u16::try_from(m).ok())
                    .ok_or(LayoutError::NoEligibleMember { partition })
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use proptest::sample::Index;

    const P: u32 = DEFAULT_PARTITIONS;
    const N: usize = 3;
    const BALANCE_BOUND: f64 = 1.15;
    const MOVE_BOUND: f64 = 1.25;

    fn member(i: usize, salt: u32, zones: Option<usize>) -> Member {
        let id = format!("node-{salt:08x}-{i:03}");
        match zones {
            Some(z) => Member::in_zone(id, format!("zone-{}", i % z)),
            None => Member::new(id),
        }
    }

    fn members(n: usize, salt: u32, zones: Option<usize>) -> Vec<Member> {
        (0..n).map(|i| member(i, salt, zones)).collect()
    }

    fn max_over_mean(layout: &Layout) -> f64 {
        let loads = layout.loads();
        let max = loads.iter().map(|(_, l)| *l).max().unwrap_or(0);
        let mean = (P as usize * N) as f64 / loads.len() as f64;
        max as f64 / mean
    }

    /// Slots whose holder changed, the definition of a moved replica.
    fn slot_changes(before: &Layout, after: &Layout) -> usize {
        (0..before.partitions())
            .map(|p| {
                let old = before.preference_list(p).unwrap();
                let new = after.preference_list(p).unwrap();
                old.iter().zip(&new).filter(|(a, b)| a != b).count()
            })
            .sum()
    }

    /// Moved fraction relative to the allowed `1.25 / (n + 1)`.
    fn move_ratio(before: &Layout, after: &Layout) -> f64 {
        let n = before.members().len() as f64;
        let moved = slot_changes(before, after) as f64 / (P as usize * N) as f64;
        moved / (MOVE_BOUND / (n + 1.0))
    }

    fn check_lists(layout: &Layout) -> Result<(), TestCaseError> {
        let zones = Zones::of(layout.members());
        let required = zones.count.min(N);
        for p in 0..layout.partitions() {
            let row: Vec<usize> = layout
                .replica_indices(p)
                .unwrap()
                .iter()
                .map(|&m| usize::from(m))
                .collect();
            prop_assert_eq!(row.len(), N);
            prop_assert_eq!(count_distinct(row.iter().copied()), N, "partition {}", p);
            prop_assert_eq!(zones.distinct(row.into_iter()), required, "partition {}", p);
        }
        Ok(())
    }

    fn check_balance(layout: &Layout) -> Result<(), TestCaseError> {
        let ratio = max_over_mean(layout);
        prop_assert!(
            ratio <= BALANCE_BOUND,
            "max/mean {ratio} {:?}",
            layout.loads()
        );
        Ok(())
    }

    fn check_add(before: &Layout, after: &Layout) -> Result<(), TestCaseError> {
        check_lists(after)?;
        let ratio = move_ratio(before, after);
        prop_assert!(ratio <= 1.0, "moved {ratio} of the allowed fraction");
        let moves = after.moves_from(before).unwrap();
        prop_assert_eq!(moves.len(), slot_changes(before, after));
        Ok(())
    }

    fn check_remove(before: &Layout, after: &Layout, gone: &str) -> Result<(), TestCaseError> {
        check_lists(after)?;
        for p in 0..before.partitions() {
            let old = before.preference_list(p).unwrap();
            let new = after.preference_list(p).unwrap();
            for (a, b) in old.iter().zip(&new) {
                prop_assert!(a == b || *a == gone, "partition {p}: {a} -> {b}");
            }
        }
        let held = before.partitions_of(gone).len();
        prop_assert_eq!(slot_changes(before, after), held);
        Ok(())
    }

    #[derive(Clone, Debug)]
    enum Op {
        Add,
        Remove(Index),
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![Just(Op::Add), any::<Index>().prop_map(Op::Remove)]
    }

    /// Applies `ops`, skipping those that would leave 3..=32 members, and
    /// checks every intermediate layout; returns the final one.
    fn run_ops(
        n0: usize,
        salt: u32,
        zones: Option<usize>,
        ops: &[Op],
    ) -> Result<Layout, TestCaseError> {
        let mut layout = Layout::initial(P, N, members(n0, salt, zones)).unwrap();
        let mut next = n0;
        for op in ops {
            let n = layout.members().len();
            match op {
                Op::Add if n < 32 => {
                    let after = layout.with_member_added(member(next, salt, zones)).unwrap();
                    next += 1;
                    check_add(&layout, &after)?;
                    layout = after;
                }
                Op::Remove(i) if n > N => {
                    let gone = layout.members()[i.index(n)].id.clone();
                    let after = layout.with_member_removed(&gone).unwrap();
                    check_remove(&layout, &after, &gone)?;
                    layout = after;
                }
                _ => continue,
            }
            if zones.is_none() {
                check_balance(&layout)?;
            }
        }
        Ok(layout)
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(48))]

        #[test]
        fn initial_is_balanced(n in 3usize..=32, salt in any::<u32>()) {
            let layout = Layout::initial(P, N, members(n, salt, None)).unwrap();
            check_lists(&layout)?;
            check_balance(&layout)?;
            let ceil_mean = (P as usize * N).div_ceil(n);
            let max = layout.loads().iter().map(|(_, l)| *l).max().unwrap();
            prop_assert!(max <= ceil_mean, "max {max} > ceil(mean) {ceil_mean}");
        }

        #[test]
        fn equal_zones_are_distinct_and_balanced(k in 1usize..=10, salt in any::<u32>()) {
            let layout = Layout::initial(P, N, members(3 * k, salt, Some(3))).unwrap();
            check_lists(&layout)?;
            check_balance(&layout)?;
        }

        #[test]
        fn any_zoning_spreads_zones(
            n in 3usize..=32,
            zones in 1usize..=5,
            salt in any::<u32>(),
            ops in proptest::collection::vec(op(), 0..6),
        ) {
            let layout = Layout::initial(P, N, members(n, salt, Some(zones))).unwrap();
            check_lists(&layout)?;
            let mut layout = layout;
            let mut next = n;
            for op in &ops {
                let len = layout.members().len();
                layout = match op {
                    Op::Add => {
                        next += 1;
                        layout.with_member_added(member(next, salt, Some(zones))).unwrap()
                    }
                    Op::Remove(i) if len > N => {
                        let gone = layout.members()[i.index(len)].id.clone();
                        let after = layout.with_member_removed(&gone).unwrap();
                        check_remove(&layout, &after, &gone)?;
                        after
                    }
                    Op::Remove(_) => continue,
                };
                check_lists(&layout)?;
            }
        }

        #[test]
        fn adding_to_initial_moves_little(n in 3usize..=31, salt in any::<u32>()) {
            let before = Layout::initial(P, N, members(n, salt, None)).unwrap();
            let after = before.with_member_added(member(n, salt, None)).unwrap();
            check_add(&before, &after)?;
            check_balance(&after)?;
            prop_assert_eq!(after.version(), before.version() + 1);
        }

        #[test]
        fn adding_to_equal_zones_moves_little(k in 1usize..=10, salt in any::<u32>()) {
            let before = Layout::initial(P, N, members(3 * k, salt, Some(3))).unwrap();
            let after = before.with_member_added(member(3 * k, salt, Some(3))).unwrap();
            check_add(&before, &after)?;
        }

        #[test]
        fn op_sequences_keep_bounds(
            n0 in 3usize..=32,
            salt in any::<u32>(),
            ops in proptest::collection::vec(op(), 1..16),
        ) {
            run_ops(n0, salt, None, &ops)?;
        }

        #[test]
        fn removal_moves_only_departed_replicas(
            n in 4usize..=32,
            victim in any::<Index>(),
            salt in any::<u32>(),
            zoned in any::<bool>(),
        ) {
            let zones = zoned.then_some(3);
            let n = if zoned { n - n % 3 + 3 } else { n };
            let before = Layout::initial(P, N, members(n, salt, zones)).unwrap();
            let gone = before.members()[victim.index(n)].id.clone();
            let after = before.with_member_removed(&gone).unwrap();
            check_remove(&before, &after, &gone)?;
            if !zoned {
                check_balance(&after)?;
            }
        }

        #[test]
        fn same_operations_give_same_layouts(
            n0 in 3usize..=16,
            salt in any::<u32>(),
            ops in proptest::collection::vec(op(), 0..10),
        ) {
            let shuffled: Vec<Member> = members(n0, salt, None).into_iter().rev().collect();
            prop_assert_eq!(
                Layout::initial(P, N, members(n0, salt, None)).unwrap(),
                Layout::initial(P, N, shuffled).unwrap()
            );
            prop_assert_eq!(run_ops(n0, salt, None, &ops)?, run_ops(n0, salt, None, &ops)?);
        }
    }

    /// Deterministic sweep that reports the worst observed ratios.
    #[test]
    fn sweep_reports_worst_ratios() {
        let (mut balance, mut add, mut removal_balance) = (0f64, 0f64, 0f64);
        let mut layout = Layout::initial(P, N, members(3, 7, None)).unwrap();
        for n in 3..32 {
            let fresh = Layout::initial(P, N, members(n, 7, None)).unwrap();
            balance = balance.max(max_over_mean(&fresh));
            let grown = fresh.with_member_added(member(n, 7, None)).unwrap();
            add = add.max(move_ratio(&fresh, &grown));
            let shrunk = grown.with_member_removed(&member(0, 7, None).id).unwrap();
            removal_balance = removal_balance.max(max_over_mean(&shrunk));
            // Churn: add two, remove one, so the incremental path is exercised.
            for extra in [1000 + 2 * n, 1001 + 2 * n] {
                let after = layout.with_member_added(member(extra, 7, None)).unwrap();
                add = add.max(move_ratio(&layout, &after));
                balance = balance.max(max_over_mean(&after));
                layout = after;
                if layout.members().len() >= 32 {
                    break;
                }
            }
            let gone = layout.members()[n % layout.members().len()].id.clone();
            layout = layout.with_member_removed(&gone).unwrap();
            removal_balance = removal_balance.max(max_over_mean(&layout));
        }
        eprintln!(
            "worst max/mean {balance:.3} (after removal {removal_balance:.3}), \
             worst add move / bound {add:.3}"
        );
        assert!(balance <= BALANCE_BOUND && removal_balance <= BALANCE_BOUND && add <= 1.0);
    }

    #[test]
    fn rejects_bad_input() {
        let three = members(3, 1, None);
        assert_eq!(
            Layout::initial(P, 4, three.clone()),
            Err(LayoutError::TooFewMembers {
                members: 3,
                replication: 4
            })
        );
        assert_eq!(
            Layout::initial(0, N, three.clone()),
            Err(LayoutError::ZeroPartitions)
        );
        assert_eq!(
            Layout::initial(P, 0, three.clone()),
            Err(LayoutError::ZeroReplication)
        );
        let mut dup = three.clone();
        dup.push(three[1].clone());
        assert!(matches!(
            Layout::initial(P, N, dup),
            Err(LayoutError::DuplicateMember(_))
        ));
        let layout = Layout::initial(P, N, three.clone()).unwrap();
        assert!(matches!(
            layout.with_member_removed(&three[0].id),
            Err(LayoutError::RemovalBelowReplication { remaining: 2, .. })
        ));
        assert!(matches!(
            layout.with_member_removed("nope"),
            Err(LayoutError::UnknownMember { .. })
        ));
        assert!(matches!(
            layout.with_member_added(three[2].clone()),
            Err(LayoutError::DuplicateMember(_))
        ));
        assert!(matches!(
            layout.preference_list(P),
            Err(LayoutError::PartitionOutOfRange { .. })
        ));
        let msg = layout.with_member_removed("nope").unwrap_err().to_string();
        assert!(msg.contains("nope") && msg.contains("version 1"), "{msg}");
    }

    #[test]
    fn deserialization_revalidates() {
        let layout = Layout::initial(P, N, members(5, 2, None)).unwrap();
        let mut repr = LayoutRepr::from(layout.clone());
        assert_eq!(Layout::try_from(repr).unwrap(), layout);
        repr = LayoutRepr::from(layout.clone());
        repr.assignments[1] = repr.assignments[0];
        assert!(matches!(
            Layout::try_from(repr),
            Err(LayoutError::Invalid(_))
        ));
        repr = LayoutRepr::from(layout);
        repr.assignments.pop();
        assert!(matches!(
            Layout::try_from(repr),
            Err(LayoutError::Invalid(_))
        ));
    }

    #[test]
    fn fallbacks_complement_the_preference_list_per_partition() {
        let layout = Layout::initial(P, N, members(8, 3, None)).unwrap();
        let mut orders = std::collections::BTreeSet::new();
        for p in 0..P {
            let prefs = layout.preference_list(p).unwrap();
            let falls = layout.fallbacks(p).unwrap();
            assert_eq!(prefs.len() + falls.len(), 8);
            assert!(falls.iter().all(|f| !prefs.contains(f)));
            assert_eq!(falls, layout.fallbacks(p).unwrap());
            orders.insert(falls.join(","));
        }
        assert!(orders.len() > P as usize / 2, "fallback orders barely vary");
    }

    #[test]
    fn partition_mapping_is_stable() {
        // Golden values: changing them silently remaps every stored key.
        assert_eq!(partition_of(b"", 256), GOLDEN[0]);
        assert_eq!(partition_of(b"hello", 256), GOLDEN[1]);
        assert_eq!(partition_of(b"user:42", 1024), GOLDEN[2]);
        assert!((0..1000u32).all(|i| partition_of(&i.to_le_bytes(), 7) < 7));
        let layout = Layout::initial(P, N, members(4, 0, None)).unwrap();
        let p = layout.partition_for_key(b"hello");
        for id in layout.preference_list(p).unwrap() {
            assert!(layout.partitions_of(id).contains(&p));
        }
    }

    const GOLDEN: [u32; 3] = [45, 149, 639];
}
