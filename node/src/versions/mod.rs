//! Versioning of stored values.
//!
//! A Dynamo-style store accepts writes on any replica without coordination, so
//! it must be able to tell "this write replaced that one" apart from "these two
//! writes raced". We track that with a dotted version vector set (DVVSet, as in
//! Riak; Almeida et al., "Scalable and Accurate Causality Tracking for
//! Eventually Consistent Stores"): its size grows with the number of
//! coordinating actors, not with the number of clients or writes, and it never
//! mistakes a concurrent write for an overwrite.
//!
//! Some buckets prefer a single answer over siblings; for them every value also
//! carries a hybrid logical clock (HLC) timestamp and [`ConflictMode::Lww`]
//! keeps only the winner. Because [`Siblings::update`] always stamps a write
//! with an HLC above everything its writer had seen, causal order and timestamp
//! order agree, so last-writer-wins never lets an older value beat a write that
//! knowingly replaced it.

pub(crate) mod seal;
pub(crate) mod wall_clock;

use std::collections::BTreeMap;
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;
use prost::Message;

/// First byte of an encoded [`CausalContext`]. Contexts travel through clients
/// as opaque tokens, so a distinct magic byte turns a token pasted from the
/// wrong place (or a [`Siblings`] blob) into a clean error instead of a
/// plausible-looking but wrong clock.
const CONTEXT_MAGIC: u8 = 0xC7;
/// First byte of an encoded [`Siblings`]; differs from [`CONTEXT_MAGIC`] so the
/// two encodings can never be confused for each other.
const SIBLINGS_MAGIC: u8 = 0xD5;
/// Format version following the magic byte, so a future layout can be rolled
/// out while old replicas reject (rather than misread) what they don't know.
const FORMAT_V1: u8 = 1;

/// Why decoding a context or a stored value failed.
#[derive(Debug, thiserror::Error)]
pub enum VersionError {
    /// Shorter than the two-byte header.
    #[error("input too short to be a {what}")]
    Truncated {
        /// What was being decoded.
        what: &'static str,
    },
    /// The first byte is not the expected magic byte.
    #[error("not a {what}: bad magic byte {found:#04x}")]
    BadMagic {
        /// What was being decoded.
        what: &'static str,
        /// The byte that was found instead.
        found: u8,
    },
    /// Written by a newer (or unknown) format revision.
    #[error("unsupported {what} format version {version}")]
    UnsupportedFormat {
        /// What was being decoded.
        what: &'static str,
        /// The version byte that was found.
        version: u8,
    },
    /// The body is not valid protobuf for the expected message.
    #[error("malformed encoding: {0}")]
    Protobuf(#[from] prost::DecodeError),
    /// A clock entry without an actor.
    #[error("clock entry without an actor")]
    MissingActor,
    /// The same actor appears twice in one clock.
    #[error("actor {0} appears more than once")]
    DuplicateActor(Actor),
    /// A clock entry with counter zero; counters start at one.
    #[error("actor {0} has a zero counter")]
    ZeroCounter(Actor),
    /// An entry holds more values than it has dots.
    #[error("actor {actor} holds {values} values but only {counter} dots")]
    TooManyValues {
        /// The offending actor.
        actor: Actor,
        /// Its counter.
        counter: u64,
        /// How many values it listed.
        values: usize,
    },
    /// Anonymous values next to a non-empty clock; see [`Siblings::anonymous`].
    #[error("anonymous values alongside a causal clock")]
    AnonymousWithClock,
}

/// Who coordinated a write: one node, in one incarnation, for one lineage
/// of a key.
///
/// Dots must never be reused: Riak's kv679 bug was a node that lost its
/// state, restarted its counters, and issued dots that other replicas had
/// already seen, so its new writes were silently discarded as "already
/// known". A node draws a random `incarnation` at every start and never
/// continues an actor of an earlier one; within an incarnation it starts a
/// new `epoch` (a tick of its clock) whenever it writes a key whose record
/// holds no actor of this incarnation. See `replica` for the rule.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Actor {
    /// Stable node id.
    pub node: String,
    /// Distinguishes the actors of one incarnation.
    pub epoch: u64,
    /// Random per start of the node; 0 for actors written before
    /// incarnations existed.
    pub incarnation: u64,
}

impl Actor {
    /// An actor without an incarnation, as tests and old records have.
    pub fn new(node: impl Into<String>, epoch: u64) -> Self {
        Self::of_incarnation(node, 0, epoch)
    }

    /// An actor of `node`'s incarnation `incarnation`.
    pub fn of_incarnation(node: impl Into<String>, incarnation: u64, epoch: u64) -> Self {
        Self {
            node: node.into(),
            epoch,
            incarnation,
        }
    }
}

impl fmt::Display for Actor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.incarnation == 0 {
            write!(f, "{}@{}", self.node, self.epoch)
        } else {
            write!(f, "{}@{:x}.{}", self.node, self.incarnation, self.epoch)
        }
    }
}

/// Hybrid logical clock timestamp: physical milliseconds in the high 48 bits,
/// a logical counter in the low 16.
///
/// Packing into one `u64` keeps timestamps totally ordered with a plain integer
/// compare and cheap to store per value, while staying close to wall time so
/// that last-writer-wins matches what operators expect.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Hlc(u64);

impl Hlc {
    /// Smaller than every timestamp a clock hands out.
    pub const ZERO: Hlc = Hlc(0);
    const LOGICAL_BITS: u32 = 16;
    const MAX_PHYSICAL_MS: u64 = u64::MAX >> Self::LOGICAL_BITS;

    /// Builds a timestamp; physical time saturates (in the year 10889).
    pub fn new(physical_ms: u64, logical: u16) -> Self {
        Hlc((physical_ms.min(Self::MAX_PHYSICAL_MS) << Self::LOGICAL_BITS) | u64::from(logical))
    }

    /// Reinterprets a raw value, e.g. one read from disk.
    pub const fn from_raw(raw: u64) -> Self {
        Hlc(raw)
    }

    /// The packed representation.
    pub const fn as_raw(self) -> u64 {
        self.0
    }

    /// Milliseconds since the Unix epoch.
    pub const fn physical_ms(self) -> u64 {
        self.0 >> Self::LOGICAL_BITS
    }

    /// Tie-breaker among events within the same millisecond.
    pub const fn logical(self) -> u16 {
        // Masked to 16 bits first, so the cast cannot lose information.
        (self.0 & 0xFFFF) as u16
    }

    /// The smallest timestamp after `self`. A logical overflow carries into
    /// the physical part, i.e. borrows a millisecond from the future, which is
    /// preferable to ever handing out a duplicate.
    pub const fn successor(self) -> Self {
        Hlc(self.0.saturating_add(1))
    }
}

/// A node's hybrid logical clock.
///
/// Wall clocks jump backwards (NTP, VM migration); the HLC never does, and
/// [`HlcClock::observe`] pulls it past timestamps seen from other nodes so
/// that an effect is always stamped later than its cause.
#[derive(Debug, Default)]
pub struct HlcClock {
    last: AtomicU64,
}

impl HlcClock {
    /// A clock that has observed nothing yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// A strictly increasing timestamp at least `physical_ms`, safe to call
    /// from many threads. The caller reads the wall clock (see
    /// `wall_clock`), so that simulations and tests move it by hand.
    pub fn now_at(&self, physical_ms: u64) -> Hlc {
        let wall = Hlc::new(physical_ms, 0).as_raw();
        let mut prev = self.last.load(Ordering::Acquire);
        loop {
            let next = wall.max(prev.saturating_add(1));
            match self
                .last
                .compare_exchange_weak(prev, next, Ordering::AcqRel, Ordering::Acquire)
            {
                Ok(_) => return Hlc(next),
                Err(actual) => prev = actual,
            }
        }
    }

    /// Records a timestamp from elsewhere so every later
    /// [`HlcClock::now_at`] exceeds it.
    pub fn observe(&self, remote: Hlc) {
        self.last.fetch_max(remote.as_raw(), Ordering::AcqRel);
    }
}

/// How concurrent writes to one key are presented.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub enum ConflictMode {
    /// Keep every concurrent value and let the application resolve them.
    #[default]
    Siblings,
    /// Keep only the value with the highest `(hlc, actor, counter)`.
    Lww,
}

/// One stored version. `data == None` is a tombstone: deletes must be
/// versioned too, otherwise a stale replica would resurrect the value.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Value {
    /// When it was written; first field so the derived order is by time.
    pub hlc: Hlc,
    /// The payload, or `None` for a delete.
    pub data: Option<Bytes>,
    /// Unix milliseconds after which the value reads as absent; 0 = never.
    pub expires_at_ms: u64,
}

impl Value {
    /// Whether this records a delete.
    pub fn is_tombstone(&self) -> bool {
        self.data.is_none()
    }

    /// Whether the TTL has passed at `now_ms`.
    pub fn is_expired(&self, now_ms: u64) -> bool {
        self.expires_at_ms != 0 && self.expires_at_ms <= now_ms
    }
}

/// What a reader saw: a version vector plus the highest HLC among the values
/// it read.
///
/// Handing this back with a write is how a client says "I replace these"; the
/// HLC part lets the coordinator stamp the write later than anything the
/// client read even if the coordinator itself never held those values.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CausalContext {
    vv: BTreeMap<Actor, u64>,
    max_hlc: Hlc,
}

impl CausalContext {
    /// The context of a blind write: it replaces nothing.
    pub fn new() -> Self {
        Self::default()
    }

    /// Whether this context carries no information at all.
    pub fn is_empty(&self) -> bool {
        self.vv.is_empty() && self.max_hlc == Hlc::ZERO
    }

    /// How many of `actor`'s dots the reader saw.
    pub fn get(&self, actor: &Actor) -> u64 {
        self.vv.get(actor).copied().unwrap_or(0)
    }

    /// Whether the dot `(actor, counter)` was seen.
    pub fn covers(&self, actor: &Actor, counter: u64) -> bool {
        counter <= self.get(actor)
    }

    /// Highest HLC among the values that were read. Coordinators may want to
    /// reject contexts far in the future, since writes will be stamped after
    /// it.
    pub fn max_hlc(&self) -> Hlc {
        self.max_hlc
    }

    /// The version vector, in actor order.
    pub fn iter(&self) -> impl Iterator<Item = (&Actor, u64)> {
        self.vv.iter().map(|(a, &n)| (a, n))
    }

    /// Join of two contexts, for a client that read several replicas
    /// separately.
    pub fn merge(&self, other: &Self) -> Self {
        let mut vv = self.vv.clone();
        for (actor, &n) in &other.vv {
            let slot = vv.entry(actor.clone()).or_insert(0);
            *slot = (*slot).max(n);
        }
        Self {
            vv,
            max_hlc: self.max_hlc.max(other.max_hlc),
        }
    }

    /// Opaque token for clients.
    pub fn to_bytes(&self) -> Bytes {
        let msg = pb::Context {
            entries: self
                .vv
                .iter()
                .map(|(actor, &counter)| pb::ClockEntry {
                    actor: Some(pb::Actor::from(actor)),
                    counter,
                })
                .collect(),
            max_hlc: self.max_hlc.as_raw(),
        };
        with_header(CONTEXT_MAGIC, &msg)
    }

    /// Parses a token from [`CausalContext::to_bytes`].
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, VersionError> {
        let body = strip_header(bytes, CONTEXT_MAGIC, "causal context")?;
        let msg = pb::Context::decode(body)?;
        let mut vv = BTreeMap::new();
        for entry in msg.entries {
            let actor = Actor::from(entry.actor.ok_or(VersionError::MissingActor)?);
            if entry.counter == 0 {
                return Err(VersionError::ZeroCounter(actor));
            }
            if vv.contains_key(&actor) {
                return Err(VersionError::DuplicateActor(actor));
            }
            vv.insert(actor, entry.counter);
        }
        Ok(Self {
            vv,
            max_hlc: Hlc(msg.max_hlc),
        })
    }
}

/// An actor's slice of a DVVSet: it has issued dots `1..=counter`, and
/// `values` holds the ones still current, newest first, i.e. the dots
/// `counter, counter-1, ...`. Current dots are always the newest ones because
/// a write discards an actor's values up to what its context saw.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Entry {
    counter: u64,
    values: Vec<Value>,
}

impl Entry {
    /// Highest dot whose value is no longer current.
    fn floor(&self) -> u64 {
        self.counter.saturating_sub(len_u64(self.values.len()))
    }

    /// DVVSet sync of one actor's entries: a value survives only if neither
    /// side has seen its dot without also holding it.
    fn join(a: &Entry, b: &Entry) -> Entry {
        let (hi, lo) = if a.counter >= b.counter {
            (a, b)
        } else {
            (b, a)
        };
        if hi.floor() >= lo.floor() {
            hi.clone()
        } else {
            let keep = to_usize(hi.counter - lo.floor()).min(hi.values.len());
            Entry {
                counter: hi.counter,
                values: hi.values[..keep].to_vec(),
            }
        }
    }
}

/// Result of comparing two replicas' versions of a key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Causality {
    /// Same knowledge.
    Equal,
    /// `self` already includes everything in `other`: the other is stale.
    Dominates,
    /// `other` includes everything in `self`: `self` is stale.
    DominatedBy,
    /// Each knows something the other doesn't; both need repair.
    Concurrent,
}

/// The versions of one key: a DVVSet of concurrent values.
///
/// Equality is structural and the representation canonical, so
/// `a.merge(&b) == a` is a correct "is `b` stale?" test for read repair.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Siblings {
    entries: BTreeMap<Actor, Entry>,
    /// Values without a dot, kept sorted and deduplicated. Only present while
    /// the clock is empty; see [`Siblings::anonymous`].
    anonymous: Vec<Value>,
}

/// Sort key for last-writer-wins. The actor and counter make it total, so all
/// replicas pick the same winner even when timestamps tie; anonymous values
/// (`None`) lose ties against dotted ones.
type LwwRank<'a> = (Hlc, Option<(&'a Actor, u64)>, &'a Value);

impl Siblings {
    /// A key nobody has written.
    pub fn new() -> Self {
        Self::default()
    }

    /// A value with no causal history, e.g. imported from an unversioned
    /// store.
    ///
    /// Without a dot nothing can tell later whether a replica has seen such a
    /// value, so the only rule that keeps merge a proper join (commutative,
    /// associative, idempotent, no resurrection) is to order anonymous values
    /// before every versioned write: they are kept and unioned while the
    /// clock is empty and superseded by the first write, even a blind one.
    pub fn anonymous(data: Option<Bytes>, hlc: Hlc, expires_at_ms: u64) -> Self {
        Self {
            entries: BTreeMap::new(),
            anonymous: vec![Value {
                hlc,
                data,
                expires_at_ms,
            }],
        }
    }

    /// Whether the key has neither values nor history.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty() && self.anonymous.is_empty()
    }

    /// The version vector a reader of this state has seen.
    pub fn context(&self) -> CausalContext {
        CausalContext {
            vv: self
                .entries
                .iter()
                .map(|(a, e)| (a.clone(), e.counter))
                .collect(),
            max_hlc: self.max_hlc(),
        }
    }

    /// Highest HLC among current values; feed it to `HlcClock::observe`
    /// before stamping a write so the write sorts after what it replaces.
    pub fn max_hlc(&self) -> Hlc {
        self.values()
            .into_iter()
            .map(|v| v.hlc)
            .max()
            .unwrap_or(Hlc::ZERO)
    }

    /// A blind or context-carrying write in [`ConflictMode::Siblings`].
    pub fn update(
        &self,
        ctx: &CausalContext,
        value: Option<Bytes>,
        actor: &Actor,
        ts: Hlc,
    ) -> Self {
        self.update_with(ConflictMode::Siblings, ctx, value, 0, actor, ts)
    }

    /// A coordinator's write: a fresh dot for `actor`, discarding exactly the
    /// values whose dots `ctx` covers.
    ///
    /// `self` must be the coordinator's own stored state: a dot is fresh only
    /// if the actor's counter is taken from where the actor writes. The stored
    /// HLC is `max(ts, ctx.max_hlc() + 1, self.max_hlc() + 1)` so that last-
    /// writer-wins can never prefer a value this write knowingly replaced.
    pub fn update_with(
        &self,
        mode: ConflictMode,
        ctx: &CausalContext,
        value: Option<Bytes>,
        expires_at_ms: u64,
        actor: &Actor,
        ts: Hlc,
    ) -> Self {
        let hlc = ts
            .max(ctx.max_hlc.successor())
            .max(self.max_hlc().successor());
        let mut entries = BTreeMap::new();
        for (a, e) in &self.entries {
            let seen = ctx.get(a);
            let keep = to_usize(e.counter.saturating_sub(seen)).min(e.values.len());
            entries.insert(
                a.clone(),
                Entry {
                    counter: e.counter.max(seen),
                    values: e.values[..keep].to_vec(),
                },
            );
        }
        // The reader's knowledge becomes part of the new value's history even
        // where this replica lags, so a later merge drops what it replaced.
        for (a, &seen) in &ctx.vv {
            entries.entry(a.clone()).or_insert_with(|| Entry {
                counter: seen,
                values: Vec::new(),
            });
        }
        let entry = entries.entry(actor.clone()).or_insert_with(|| Entry {
            counter: 0,
            values: Vec::new(),
        });
        entry.counter = entry.counter.saturating_add(1);
        entry.values.insert(
            0,
            Value {
                hlc,
                data: value,
                expires_at_ms,
            },
        );
        Self {
            entries,
            anonymous: Vec::new(),
        }
        .apply_mode(mode)
    }

    /// DVVSet sync in [`ConflictMode::Siblings`]: keeps concurrent values,
    /// drops the ones either side has seen replaced.
    pub fn merge(&self, other: &Self) -> Self {
        let mut entries = self.entries.clone();
        for (actor, theirs) in &other.entries {
            match entries.get_mut(actor) {
                Some(ours) => *ours = Entry::join(ours, theirs),
                None => {
                    entries.insert(actor.clone(), theirs.clone());
                }
            }
        }
        let anonymous = if entries.is_empty() {
            let mut all: Vec<Value> = self
                .anonymous
                .iter()
                .chain(&other.anonymous)
                .cloned()
                .collect();
            all.sort();
            all.dedup();
            all
        } else {
            Vec::new()
        };
        Self { entries, anonymous }
    }

    /// [`Siblings::merge`] followed by the policy of `mode`. In LWW mode the
    /// losers' dots stay in the clock, which is what lets a stale replica's
    /// copy of a loser be recognised as replaced instead of coming back.
    pub fn merge_with(&self, mode: ConflictMode, other: &Self) -> Self {
        self.merge(other).apply_mode(mode)
    }

    fn apply_mode(self, mode: ConflictMode) -> Self {
        match mode {
            ConflictMode::Siblings => self,
            ConflictMode::Lww => self.keep_only_winner(),
        }
    }

    fn ranked(&self) -> impl Iterator<Item = LwwRank<'_>> {
        let dotted = self.entries.iter().flat_map(|(actor, e)| {
            e.values
                .iter()
                .zip((0..e.counter).rev())
                .map(move |(v, below)| (v.hlc, Some((actor, below + 1)), v))
        });
        let anon = self.anonymous.iter().map(|v| (v.hlc, None, v));
        dotted.chain(anon)
    }

    fn keep_only_winner(mut self) -> Self {
        let winner = self.ranked().max().map(|(_, dot, v)| match dot {
            Some((actor, counter)) => Ok((actor.clone(), counter)),
            None => Err(v.clone()),
        });
        match winner {
            None => self,
            Some(Ok((actor, counter))) => {
                self.anonymous.clear();
                for (a, e) in &mut self.entries {
                    if *a == actor {
                        // Values newer than the winner cannot exist while HLCs
                        // follow causality; should one appear anyway (clock
                        // misuse), keeping it beats losing data silently.
                        e.values.truncate(to_usize(e.counter - counter + 1));
                    } else {
                        e.values.clear();
                    }
                }
                self
            }
            Some(Err(value)) => {
                self.anonymous = vec![value];
                self
            }
        }
    }

    /// The winner under last-writer-wins, whatever mode the state was built
    /// in.
    pub fn resolve_lww(&self) -> Option<&Value> {
        self.ranked().max().map(|(_, _, v)| v)
    }

    /// What a client may see at `now_ms`: every live concurrent value, or in
    /// lww mode the single winner. Tombstones and expired values are hidden.
    pub fn visible_data(&self, mode: ConflictMode, now_ms: u64) -> Vec<Bytes> {
        match mode {
            ConflictMode::Lww => self
                .resolve_lww()
                .filter(|v| !v.is_expired(now_ms))
                .and_then(|v| v.data.clone())
                .into_iter()
                .collect(),
            ConflictMode::Siblings => self
                .live_values()
                .into_iter()
                .filter(|v| !v.is_expired(now_ms))
                .filter_map(|v| v.data.clone())
                .collect(),
        }
    }

    /// Every concurrent value, tombstones included, in a deterministic order.
    pub fn values(&self) -> Vec<&Value> {
        self.entries
            .values()
            .flat_map(|e| e.values.iter())
            .chain(&self.anonymous)
            .collect()
    }

    /// Concurrent values with their dots; anonymous values have none.
    pub fn dotted_values(&self) -> impl Iterator<Item = (&Actor, u64, &Value)> {
        self.ranked()
            .filter_map(|(_, dot, v)| dot.map(|(actor, counter)| (actor, counter, v)))
    }

    /// Concurrent values that are not deletes.
    pub fn live_values(&self) -> Vec<&Value> {
        self.values()
            .into_iter()
            .filter(|v| !v.is_tombstone())
            .collect()
    }

    /// Whether the key reads as deleted: it has values and all are tombstones.
    pub fn is_tombstone_only(&self) -> bool {
        let values = self.values();
        !values.is_empty() && values.iter().all(|v| v.is_tombstone())
    }

    /// For tombstone GC: since when (Unix milliseconds) the key has been
    /// gone at `now_ms`, every value a tombstone or expired; `None` while any
    /// value is live. A tombstone counts from its HLC, an expired value from
    /// its expiry, and the key from the latest of them, because a grace
    /// period must outlast every delete that might still be in flight.
    ///
    /// An expired value is a tombstone in all but name: it keeps its dot, so
    /// a replica that missed the write it came with cannot bring back what
    /// that write replaced (Cassandra turns expired cells into tombstones for
    /// the same reason).
    pub fn deleted_since(&self, now_ms: u64) -> Option<u64> {
        let values = self.values();
        let gone = |v: &&Value| v.is_tombstone() || v.is_expired(now_ms);
        if values.is_empty() || !values.iter().all(gone) {
            return None;
        }
        values
            .iter()
            .map(|v| {
                let deleted = v.hlc.physical_ms();
                if v.is_tombstone() {
                    deleted
                } else {
                    deleted.max(v.expires_at_ms)
                }
            })
            .max()
    }

    /// The actors in this record's clock.
    pub fn actors(&self) -> impl Iterator<Item = &Actor> {
        self.entries.keys()
    }

    /// Whether `self` already contains everything `other` knows, i.e.
    /// `self.merge(other) == *self`, computed without allocating.
    pub fn descends(&self, other: &Self) -> bool {
        let entries_ok =
            other
                .entries
                .iter()
                .all(|(actor, theirs)| match self.entries.get(actor) {
                    Some(ours) => ours.counter >= theirs.counter && ours.floor() >= theirs.floor(),
                    None => false,
                });
        entries_ok
            && (!self.entries.is_empty()
                || other
                    .anonymous
                    .iter()
                    .all(|v| self.anonymous.binary_search(v).is_ok()))
    }

    /// Full comparison for read repair.
    pub fn compare(&self, other: &Self) -> Causality {
        match (self.descends(other), other.descends(self)) {
            (true, true) => Causality::Equal,
            (true, false) => Causality::Dominates,
            (false, true) => Causality::DominatedBy,
            (false, false) => Causality::Concurrent,
        }
    }

    /// Compact binary form for storage and replication.
    pub fn encode(&self) -> Bytes {
        let msg = pb::Siblings {
            entries: self
                .entries
                .iter()
                .map(|(actor, e)| pb::Entry {
                    actor: Some(pb::Actor::from(actor)),
                    counter: e.counter,
                    values: e.values.iter().map(pb::Value::from).collect(),
                })
                .collect(),
            anonymous: self.anonymous.iter().map(pb::Value::from).collect(),
        };
        with_header(SIBLINGS_MAGIC, &msg)
    }

    /// Parses [`Siblings::encode`] output, rejecting states that violate the
    /// DVVSet invariants rather than letting them corrupt later merges.
    pub fn decode(bytes: &[u8]) -> Result<Self, VersionError> {
        let body = strip_header(bytes, SIBLINGS_MAGIC, "stored value")?;
        let msg = pb::Siblings::decode(body)?;
        let mut entries = BTreeMap::new();
        for entry in msg.entries {
            let actor = Actor::from(entry.actor.ok_or(VersionError::MissingActor)?);
            if entry.counter == 0 {
                return Err(VersionError::ZeroCounter(actor));
            }
            if len_u64(entry.values.len()) > entry.counter {
                return Err(VersionError::TooManyValues {
                    actor,
                    counter: entry.counter,
                    values: entry.values.len(),
                });
            }
            if entries.contains_key(&actor) {
                return Err(VersionError::DuplicateActor(actor));
            }
            let values = entry.values.into_iter().map(Value::from).collect();
            entries.insert(
                actor,
                Entry {
                    counter: entry.counter,
                    values,
                },
            );
        }
        if !entries.is_empty() && !msg.anonymous.is_empty() {
            return Err(VersionError::AnonymousWithClock);
        }
        let mut anonymous: Vec<Value> = msg.anonymous.into_iter().map(Value::from).collect();
        anonymous.sort();
        anonymous.dedup();
        Ok(Self { entries, anonymous })
    }
}

fn len_u64(len: usize) -> u64 {
    u64::try_from(len).unwrap_or(u64::MAX)
}

fn to_usize(n: u64) -> usize {
    usize::try_from(n).unwrap_or(usize::MAX)
}

fn with_header(magic: u8, msg: &impl Message) -> Bytes {
    let mut out = Vec::with_capacity(2 + msg.encoded_len());
    out.push(magic);
    out.push(FORMAT_V1);
    out.extend_from_slice(&msg.encode_to_vec());
    Bytes::from(out)
}

fn strip_header<'a>(
    bytes: &'a [u8],
    magic: u8,
    what: &'static str,
) -> Result<&'a [u8], VersionError> {
    match bytes {
        [m, v, body @ ..] => {
            if *m != magic {
                Err(VersionError::BadMagic { what, found: *m })
            } else if *v != FORMAT_V1 {
                Err(VersionError::UnsupportedFormat { what, version: *v })
            } else {
                Ok(body)
            }
        }
        _ => Err(VersionError::Truncated { what }),
    }
}

/// Wire messages, written by hand so the crate needs no build script.
mod pb {
    use bytes::Bytes;

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Actor {
        #[prost(string, tag = "1")]
        pub node: String,
        #[prost(uint64, tag = "2")]
        pub epoch: u64,
        /// Random, so fixed64 is shorter than a varint.
        #[prost(fixed64, tag = "3")]
        pub incarnation: u64,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct ClockEntry {
        #[prost(message, optional, tag = "1")]
        pub actor: Option<Actor>,
        #[prost(uint64, tag = "2")]
        pub counter: u64,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Context {
        #[prost(message, repeated, tag = "1")]
        pub entries: Vec<ClockEntry>,
        /// fixed64: HLCs are ~2^57, where a varint would take 9 bytes.
        #[prost(fixed64, tag = "2")]
        pub max_hlc: u64,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Value {
        /// Absent = tombstone, distinct from a present empty value.
        #[prost(bytes = "bytes", optional, tag = "1")]
        pub data: Option<Bytes>,
        #[prost(fixed64, tag = "2")]
        pub hlc: u64,
        #[prost(uint64, tag = "3")]
        pub expires_at_ms: u64,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Entry {
        #[prost(message, optional, tag = "1")]
        pub actor: Option<Actor>,
        #[prost(uint64, tag = "2")]
        pub counter: u64,
        #[prost(message, repeated, tag = "3")]
        pub values: Vec<Value>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Siblings {
        #[prost(message, repeated, tag = "1")]
        pub entries: Vec<Entry>,
        #[prost(message, repeated, tag = "2")]
        pub anonymous: Vec<Value>,
    }
}

impl From<&Actor> for pb::Actor {
    fn from(a: &Actor) -> Self {
        Self {
            node: a.node.clone(),
            epoch: a.epoch,
            incarnation: a.incarnation,
        }
    }
}

impl From<pb::Actor> for Actor {
    fn from(a: pb::Actor) -> Self {
        Self {
            node: a.node,
            epoch: a.epoch,
            incarnation: a.incarnation,
        }
    }
}

impl From<&Value> for pb::Value {
    fn from(v: &Value) -> Self {
        Self {
            data: v.data.clone(),
            hlc: v.hlc.as_raw(),
            expires_at_ms: v.expires_at_ms,
        }
    }
}

impl From<pb::Value> for Value {
    fn from(v: pb::Value) -> Self {
        Self {
            hlc: Hlc(v.hlc),
            data: v.data,
            expires_at_ms: v.expires_at_ms,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use proptest::sample::Index;
    use std::collections::BTreeSet;

    const REPLICAS: usize = 3;

    #[derive(Debug, Clone)]
    enum Op {
        /// `read_mask` picks the replicas whose merged context the client
        /// sends; 0 is a blind write.
        Write {
            replica: usize,
            read_mask: u8,
            tombstone: bool,
            ts: u64,
        },
        Sync {
            from: usize,
            to: usize,
        },
        LoseDisk {
            replica: usize,
        },
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            4 => (0..REPLICAS, 0u8..8, prop::bool::weighted(0.2), 0u64..64).prop_map(
                |(replica, read_mask, tombstone, ts)| Op::Write { replica, read_mask, tombstone, ts }
            ),
            3 => (0..REPLICAS, 0..REPLICAS).prop_map(|(from, to)| Op::Sync { from, to }),
            1 => (0..REPLICAS).prop_map(|replica| Op::LoseDisk { replica }),
        ]
    }

    fn mode() -> impl Strategy<Value = ConflictMode> {
        prop_oneof![Just(ConflictMode::Siblings), Just(ConflictMode::Lww)]
    }

    /// A simulated cluster: each replica coordinates writes as its own actor.
    #[derive(Debug, Clone)]
    struct Cluster {
        mode: ConflictMode,
        replicas: Vec<Siblings>,
        epochs: Vec<u64>,
        /// Every state any replica ever had, to test laws on ancestors too.
        snapshots: Vec<Siblings>,
        writes: u64,
        /// Writes whose dot some earlier state had already seen (kv679).
        reused_dots: usize,
    }

    impl Cluster {
        fn run(mode: ConflictMode, ops: &[Op]) -> Self {
            let mut c = Cluster {
                mode,
                replicas: vec![Siblings::new(); REPLICAS],
                epochs: vec![1; REPLICAS],
                snapshots: vec![Siblings::new()],
                writes: 0,
                reused_dots: 0,
            };
            for op in ops {
                match *op {
                    Op::Write {
                        replica,
                        read_mask,
                        tombstone,
                        ts,
                    } => {
                        let ctx = c.read_context(read_mask);
                        c.write(replica, &ctx, tombstone, ts);
                    }
                    Op::Sync { from, to } => {
                        c.replicas[to] = c.replicas[to].merge_with(mode, &c.replicas[from]);
                    }
                    Op::LoseDisk { replica } => {
                        c.replicas[replica] = Siblings::new();
                        c.epochs[replica] += 1;
                    }
                }
                c.snapshots.extend(c.replicas.iter().cloned());
            }
            c
        }

        fn actor(&self, replica: usize) -> Actor {
            Actor::new(format!("n{replica}"), self.epochs[replica])
        }

        fn read_context(&self, mask: u8) -> CausalContext {
            (0..REPLICAS)
                .filter(|r| mask & (1 << r) != 0)
                .fold(CausalContext::new(), |acc, r| {
                    acc.merge(&self.replicas[r].context())
                })
        }

        fn write(&mut self, replica: usize, ctx: &CausalContext, tombstone: bool, ts: u64) {
            self.writes += 1;
            let data = (!tombstone).then(|| Bytes::from(format!("v{}", self.writes)));
            let actor = self.actor(replica);
            let next = self.replicas[replica].update_with(
                self.mode,
                ctx,
                data,
                0,
                &actor,
                Hlc::new(ts, 0),
            );
            let counter = next.context().get(&actor);
            if self
                .snapshots
                .iter()
                .any(|s| s.context().covers(&actor, counter))
            {
                self.reused_dots += 1;
            }
            self.replicas[replica] = next;
        }

        fn merged(&self, order: &[usize]) -> Siblings {
            order.iter().fold(Siblings::new(), |acc, &r| {
                acc.merge_with(self.mode, &self.replicas[r])
            })
        }
    }

    fn cluster_in(mode: ConflictMode) -> impl Strategy<Value = Cluster> {
        prop::collection::vec(op(), 0..24).prop_map(move |ops| Cluster::run(mode, &ops))
    }

    fn cluster() -> impl Strategy<Value = Cluster> {
        (mode(), prop::collection::vec(op(), 0..24))
            .prop_map(|(mode, ops)| Cluster::run(mode, &ops))
    }

    fn dots(s: &Siblings) -> BTreeSet<(Actor, u64)> {
        s.dotted_values().map(|(a, n, _)| (a.clone(), n)).collect()
    }

    fn payload(s: &str) -> Option<Bytes> {
        Some(Bytes::from(s.to_owned()))
    }

    fn datas(s: &Siblings) -> BTreeSet<Option<Bytes>> {
        s.values().into_iter().map(|v| v.data.clone()).collect()
    }

    proptest! {
        #[test]
        fn merge_is_a_join(c in cluster(), i: Index, j: Index, k: Index) {
            let pick = |ix: &Index| c.snapshots[ix.index(c.snapshots.len())].clone();
            let (a, b, d) = (pick(&i), pick(&j), pick(&k));
            let m = c.mode;
            prop_assert_eq!(a.merge_with(m, &b), b.merge_with(m, &a));
            prop_assert_eq!(
                a.merge_with(m, &b).merge_with(m, &d),
                a.merge_with(m, &b.merge_with(m, &d))
            );
            prop_assert_eq!(a.merge_with(m, &a), a.clone());
            let ab = a.merge_with(m, &b);
            prop_assert!(ab.descends(&a) && ab.descends(&b));
        }

        #[test]
        fn descends_agrees_with_merge(c in cluster(), i: Index, j: Index) {
            let a = &c.snapshots[i.index(c.snapshots.len())];
            let b = &c.snapshots[j.index(c.snapshots.len())];
            prop_assert_eq!(a.descends(b), a.merge(b) == *a);
            let expected = match (a.merge(b) == *a, b.merge(a) == *b) {
                (true, true) => Causality::Equal,
                (true, false) => Causality::Dominates,
                (false, true) => Causality::DominatedBy,
                (false, false) => Causality::Concurrent,
            };
            prop_assert_eq!(a.compare(b), expected);
        }

        #[test]
        fn write_supersedes_exactly_what_was_read(
            c in cluster_in(ConflictMode::Siblings),
            read_mask in 0u8..8,
            coordinator in 0..REPLICAS,
            ts in 0u64..64,
        ) {
            let ctx = c.read_context(read_mask);
            let stored = &c.replicas[coordinator];
            let actor = c.actor(coordinator);
            let out = stored.update(&ctx, payload("new"), &actor, Hlc::new(ts, 0));
            let mut expected: BTreeSet<_> = stored
                .dotted_values()
                .filter(|(a, n, _)| !ctx.covers(a, *n))
                .map(|(a, n, _)| (a.clone(), n))
                .collect();
            let new_dot = stored.context().get(&actor).max(ctx.get(&actor)) + 1;
            expected.insert((actor.clone(), new_dot));
            prop_assert_eq!(dots(&out), expected);
            prop_assert_eq!(out.values().len(), dots(&out).len());
            let new = out.dotted_values().find(|(a, n, _)| **a == actor && *n == new_dot);
            prop_assert!(new.is_some_and(|(_, _, v)| v.data == payload("new")));
            // What was read stays replaced once the replicas that served the
            // read are merged back in, even where the coordinator lagged.
            for (a, n) in ctx.iter() {
                prop_assert!(out.context().get(a) >= n);
            }
            for r in (0..REPLICAS).filter(|r| read_mask & (1 << r) != 0) {
                let repaired = out.merge(&c.replicas[r]);
                prop_assert!(repaired
                    .dotted_values()
                    .all(|(a, n, _)| !ctx.covers(a, n)));
            }
            // Causal successor: stamped after everything the writer saw.
            prop_assert!(out.max_hlc() > ctx.max_hlc() && out.max_hlc() > stored.max_hlc());
        }

        #[test]
        fn stale_context_writes_become_siblings_and_merged_context_resolves(
            c in cluster_in(ConflictMode::Siblings),
            base: Index,
            blind: bool,
            ts1 in 0u64..64,
            ts2 in 0u64..64,
        ) {
            let s = &c.snapshots[base.index(c.snapshots.len())];
            let ctx = if blind { CausalContext::new() } else { s.context() };
            let (wa, wb) = (Actor::new("writer-a", 1), Actor::new("writer-b", 1));
            let x = s.update(&ctx, payload("x"), &wa, Hlc::new(ts1, 0));
            let y = s.update(&ctx, payload("y"), &wb, Hlc::new(ts2, 0));
            let m = x.merge(&y);
            let have = datas(&m);
            prop_assert!(have.contains(&payload("x")) && have.contains(&payload("y")));
            let survivors = if blind { s.dotted_values().count() } else { 0 };
            prop_assert_eq!(m.values().len(), survivors + 2);
            prop_assert_eq!(m.compare(&x), Causality::Dominates);
            prop_assert_eq!(x.compare(&y), Causality::Concurrent);

            // A client that read the merged state resolves the siblings ...
            let r = m.update(&m.context(), payload("z"), &wa, Hlc::new(0, 0));
            prop_assert_eq!(datas(&r), BTreeSet::from([payload("z")]));
            // ... and so does one that read both replicas separately, once the
            // replicas converge.
            let joint = x.context().merge(&y.context());
            let z = x.update(&joint, payload("z"), &wa, Hlc::new(0, 0));
            prop_assert_eq!(datas(&z.merge(&y)), BTreeSet::from([payload("z")]));
            prop_assert_eq!(datas(&y.merge(&z)), BTreeSet::from([payload("z")]));
        }

        #[test]
        fn encoding_round_trips(c in cluster(), i: Index) {
            let s = &c.snapshots[i.index(c.snapshots.len())];
            prop_assert_eq!(&Siblings::decode(&s.encode())?, s);
            let ctx = s.context();
            prop_assert_eq!(
                CausalContext::from_bytes(&ctx.to_bytes())?,
                ctx
            );
        }

        #[test]
        fn decoders_never_panic_on_garbage(raw in prop::collection::vec(any::<u8>(), 0..64)) {
            let _ = Siblings::decode(&raw);
            let _ = CausalContext::from_bytes(&raw);
            let mut framed = vec![SIBLINGS_MAGIC, FORMAT_V1];
            framed.extend_from_slice(&raw);
            if let Ok(s) = Siblings::decode(&framed) {
                // Whatever was accepted is a valid state that behaves normally.
                prop_assert_eq!(s.merge(&s), s.clone());
                prop_assert_eq!(Siblings::decode(&s.encode())?, s);
            }
        }

        #[test]
        fn lww_highest_timestamp_wins_in_any_merge_order(ops in prop::collection::vec(op(), 0..24)) {
            let lww = Cluster::run(ConflictMode::Lww, &ops);
            let orders = [[0, 1, 2], [2, 1, 0], [1, 2, 0], [0, 2, 1]];
            let winners: Vec<Option<Value>> = orders
                .iter()
                .map(|o| lww.merged(o).resolve_lww().cloned())
                .collect();
            let best = lww
                .replicas
                .iter()
                .flat_map(|r| r.dotted_values())
                .max_by(|(a1, n1, v1), (a2, n2, v2)| (v1.hlc, *a1, *n1).cmp(&(v2.hlc, *a2, *n2)))
                .map(|(_, _, v)| v.clone());
            for w in &winners {
                prop_assert_eq!(w, &best);
            }
            for r in [0, 1, 2] {
                prop_assert!(lww.merged(&orders[0]).values().len() <= 1);
                prop_assert!(lww.replicas[r].values().len() <= 1);
            }
            // LWW is exactly "siblings, then pick the winner".
            let sib = Cluster::run(ConflictMode::Siblings, &ops);
            prop_assert_eq!(sib.merged(&orders[0]).resolve_lww().cloned(), best);
        }

        #[test]
        fn every_write_gets_a_never_seen_dot(c in cluster()) {
            prop_assert_eq!(c.reused_dots, 0);
        }
    }

    #[test]
    fn kv679_new_epoch_is_not_covered_by_old_context() {
        let old = Actor::new("n1", 1);
        let other = Actor::new("n2", 1);
        let s1 =
            Siblings::new().update(&CausalContext::new(), payload("v1"), &old, Hlc::new(10, 0));
        let replica2 = s1.clone();
        let old_ctx = s1.context();

        // n1 loses its disk and restarts with a new epoch and empty state.
        let fresh = Actor::new("n1", 2);
        let s2 = Siblings::new().update(
            &CausalContext::new(),
            payload("v2"),
            &fresh,
            Hlc::new(20, 0),
        );
        assert!(!old_ctx.covers(&fresh, 1));
        let repaired = replica2.merge(&s2);
        assert_eq!(
            datas(&repaired),
            BTreeSet::from([payload("v1"), payload("v2")])
        );

        // A client still holding the pre-crash context replaces v1 only.
        let w = repaired.update(&old_ctx, payload("v3"), &other, Hlc::new(30, 0));
        assert_eq!(datas(&w), BTreeSet::from([payload("v2"), payload("v3")]));

        // What the epoch prevents: reusing (n1, 1) makes v2 vanish on merge.
        let reused =
            Siblings::new().update(&CausalContext::new(), payload("v2"), &old, Hlc::new(20, 0));
        assert!(old_ctx.covers(&old, 1));
        let w = replica2.update(&old_ctx, payload("v3"), &other, Hlc::new(30, 0));
        assert!(!datas(&w.merge(&reused)).contains(&payload("v2")));
    }

    #[test]
    fn lww_ties_break_on_actor_and_merge_order_does_not_matter() {
        let (a, b) = (Actor::new("a", 1), Actor::new("b", 1));
        let empty = CausalContext::new();
        let lww = ConflictMode::Lww;
        let x = Siblings::new().update_with(lww, &empty, payload("x"), 0, &a, Hlc::new(200, 0));
        let y = Siblings::new().update_with(lww, &empty, payload("y"), 0, &b, Hlc::new(100, 0));
        for m in [x.merge_with(lww, &y), y.merge_with(lww, &x)] {
            assert_eq!(datas(&m), BTreeSet::from([payload("x")]));
        }
        let y = Siblings::new().update_with(lww, &empty, payload("y"), 0, &b, Hlc::new(200, 0));
        for m in [x.merge_with(lww, &y), y.merge_with(lww, &x)] {
            assert_eq!(m.resolve_lww().map(|v| v.data.clone()), Some(payload("y")));
            assert_eq!(m.values().len(), 1);
        }
        // A causal overwrite wins even when the writer's clock is behind.
        let m = x.merge_with(lww, &y);
        let z = m.update_with(lww, &m.context(), payload("z"), 0, &a, Hlc::new(5, 0));
        assert_eq!(z.resolve_lww().map(|v| v.data.clone()), Some(payload("z")));
        assert!(z.max_hlc() > Hlc::new(200, 0));
    }

    #[test]
    fn tombstones_and_ttl() {
        let a = Actor::new("a", 1);
        let s = Siblings::new().update_with(
            ConflictMode::Siblings,
            &CausalContext::new(),
            payload("v"),
            1_000,
            &a,
            Hlc::new(10, 0),
        );
        assert!(s.values()[0].is_expired(1_000) && !s.values()[0].is_expired(999));
        assert_eq!(s.deleted_since(999), None);
        // Expired, it counts as deleted from its expiry on.
        assert_eq!(s.deleted_since(1_000), Some(1_000));
        let d = s.update(&s.context(), None, &a, Hlc::new(20, 0));
        assert!(d.is_tombstone_only() && d.live_values().is_empty());
        assert_eq!(d.deleted_since(0), Some(Hlc::new(20, 0).physical_ms()));
        // A concurrent live write keeps the key alive.
        let b = Actor::new("b", 1);
        let live = s.update(&s.context(), payload("w"), &b, Hlc::new(15, 0));
        let m = d.merge(&live);
        assert!(!m.is_tombstone_only());
        assert_eq!(m.deleted_since(0), None);
        assert_eq!(m.live_values().len(), 1);
        assert!(!Siblings::new().is_tombstone_only());
        assert_eq!(Siblings::decode(&d.encode()).ok(), Some(d));
    }

    #[test]
    fn anonymous_values_union_until_a_versioned_write() {
        let p = Siblings::anonymous(payload("p"), Hlc::new(1, 0), 0);
        let q = Siblings::anonymous(payload("q"), Hlc::new(2, 0), 0);
        let pq = p.merge(&q);
        assert_eq!(pq, q.merge(&p));
        assert_eq!(datas(&pq), BTreeSet::from([payload("p"), payload("q")]));
        assert_eq!(pq.resolve_lww().map(|v| v.data.clone()), Some(payload("q")));
        let w = pq.update(
            &CausalContext::new(),
            payload("w"),
            &Actor::new("a", 1),
            Hlc::ZERO,
        );
        assert_eq!(datas(&w), BTreeSet::from([payload("w")]));
        assert!(w.max_hlc() > Hlc::new(2, 0));
        assert_eq!(w.merge(&pq), w);
        assert_eq!(Siblings::decode(&pq.encode()).ok(), Some(pq));
    }

    #[test]
    fn garbage_is_a_typed_error() {
        assert!(matches!(
            CausalContext::from_bytes(b"garbage"),
            Err(VersionError::BadMagic { found: b'g', .. })
        ));
        assert!(matches!(
            CausalContext::from_bytes(&[]),
            Err(VersionError::Truncated { .. })
        ));
        assert!(matches!(
            CausalContext::from_bytes(&[CONTEXT_MAGIC, 9]),
            Err(VersionError::UnsupportedFormat { version: 9, .. })
        ));
        assert!(matches!(
            CausalContext::from_bytes(&[CONTEXT_MAGIC, FORMAT_V1, 0x0a, 0xff]),
            Err(VersionError::Protobuf(_))
        ));
        let s = Siblings::new().update(
            &CausalContext::new(),
            payload("v"),
            &Actor::new("a", 1),
            Hlc::ZERO,
        );
        // The two token kinds cannot be mistaken for each other.
        assert!(matches!(
            CausalContext::from_bytes(&s.encode()),
            Err(VersionError::BadMagic { .. })
        ));
        assert!(matches!(
            Siblings::decode(&s.context().to_bytes()),
            Err(VersionError::BadMagic { .. })
        ));
        let bad = pb::Siblings {
            entries: vec![pb::Entry {
                actor: Some(pb::Actor {
                    node: "a".into(),
                    epoch: 1,
                    incarnation: 0,
                }),
                counter: 1,
                values: vec![pb::Value::default(), pb::Value::default()],
            }],
            anonymous: vec![],
        };
        assert!(matches!(
            Siblings::decode(&with_header(SIBLINGS_MAGIC, &bad)),
            Err(VersionError::TooManyValues {
                counter: 1,
                values: 2,
                ..
            })
        ));
    }

    #[test]
    fn hlc_is_monotonic_and_observes_remote_time() {
        let clock = HlcClock::new();
        let t1 = clock.now_at(1_000);
        let t2 = clock.now_at(900); // wall clock went backwards
        assert!(t2 > t1 && t2.physical_ms() == 1_000 && t2.logical() == 1);
        clock.observe(Hlc::new(5_000, 7));
        assert!(clock.now_at(1_000) > Hlc::new(5_000, 7));

        let shared = std::sync::Arc::new(HlcClock::new());
        let handles: Vec<_> = (0..4)
            .map(|_| {
                let c = std::sync::Arc::clone(&shared);
                std::thread::spawn(move || (0..2_000).map(|_| c.now_at(1_000)).collect::<Vec<_>>())
            })
            .collect();
        let mut all = Vec::new();
        for h in handles {
            let ts = h.join().expect("thread panicked");
            assert!(ts.windows(2).all(|w| w[0] < w[1]));
            all.extend(ts);
        }
        let n = all.len();
        all.sort();
        all.dedup();
        assert_eq!(all.len(), n, "timestamps must be unique across threads");
    }
}
