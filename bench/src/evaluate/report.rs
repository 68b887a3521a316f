//! Everything one evaluation measured, saved as JSON beside the document so
//! that the document and its plots can be redrawn without measuring again.

use serde::{Deserialize, Serialize};

use crate::measurement::Measurement;

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Report {
    pub date: String,
    pub machine: String,
    pub command: String,
    pub smoke: bool,
    pub versions: Versions,
    pub seed_table: Vec<SeedConfiguration>,
    pub peers: Peers,
    pub scalability: Scalability,
    pub faults: Vec<FaultRun>,
    /// Why a fault run is missing, when one is.
    pub fault_notes: Vec<String>,
    pub consistency: Consistency,
    pub seconds: f64,
    /// How long each section took, in the order run.
    #[serde(default)]
    pub section_seconds: Vec<(String, f64)>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Versions {
    pub ringkv: String,
    pub etcd: Option<String>,
    pub cassandra: Option<String>,
    pub java: Option<String>,
}

/// One configuration of the seed's table (say "one node, batch API").
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct SeedConfiguration {
    pub name: String,
    pub nodes: usize,
    pub batch_size: usize,
    pub concurrency: usize,
    pub rows: Vec<SeedRow>,
}

/// PUT, GET and DELETE of n keys.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct SeedRow {
    pub n: u64,
    pub put: Timing,
    pub get: Timing,
    pub delete: Timing,
    /// The same operations in-process on ringkv's engine, in the same run.
    pub limit_put_seconds: f64,
    pub limit_get_seconds: f64,
    pub limit_delete_seconds: f64,
}

/// A measured time, or one projected from the row before when measuring it
/// would have overrun the phase's budget.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Timing {
    pub seconds: f64,
    pub projected: bool,
    pub errors: u64,
    pub first_error: Option<String>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Peers {
    pub runs: Vec<PeerRun>,
    /// Why a peer is missing, when one is.
    pub notes: Vec<String>,
    /// What each system promised about durability in this run.
    pub durability: Vec<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PeerRun {
    pub system: String,
    pub measurement: Measurement,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Scalability {
    /// Put and get throughput at 1, 3 and 5 nodes.
    pub throughput: Vec<NodesRun>,
    pub placement: Vec<PlacementRow>,
    pub streaming: Option<StreamingRun>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct NodesRun {
    pub nodes: usize,
    pub measurement: Measurement,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct PlacementRow {
    pub nodes: usize,
    pub partitions: u32,
    /// Most partition replicas on one node over the mean.
    pub max_over_mean: f64,
    /// Share of partition replicas that move when one node joins.
    pub moved_on_join: f64,
    /// The least a join can move: the newcomer's fair share.
    pub ideal_on_join: f64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StreamingRun {
    /// Client load through the 3→4 join.
    pub measurement: Measurement,
    pub join_started_second: f64,
    pub join_settled_second: f64,
    pub records_received: u64,
    pub bytes_received: u64,
    /// The same load before the join, as the baseline.
    pub before: Measurement,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FaultRun {
    pub fault: String,
    pub injected_second: f64,
    pub healed_second: f64,
    pub measurement: Measurement,
    pub acknowledged_writes: u64,
    pub lost_writes: u64,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Consistency {
    pub staleness: Vec<StalenessCurve>,
    pub convergence: Vec<ConvergenceRun>,
    /// Why a measurement is missing, when one is.
    pub notes: Vec<String>,
}

/// Keys written while one node was cut off, and the way back to agreement.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ConvergenceRun {
    pub keys: u64,
    /// Keys whose batch put was acknowledged.
    pub acknowledged_keys: u64,
    pub partition_seconds: f64,
    /// From the heal until the node that was cut off holds every key.
    pub converged_seconds: f64,
    /// Hints the nodes delivered after the heal.
    pub hints_delivered: u64,
    /// From the heal until the last of those was delivered.
    pub hints_drained_seconds: f64,
}

/// PBS: the probability that a read t ms after an acknowledged write
/// returns it.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct StalenessCurve {
    pub read_quorum: u32,
    pub write_quorum: u32,
    pub points: Vec<StalenessPoint>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct StalenessPoint {
    pub after_ms: u64,
    pub trials: u64,
    pub consistent: u64,
}

impl StalenessPoint {
    pub fn probability(&self) -> f64 {
        if self.trials == 0 {
            0.0
        } else {
            self.consistent as f64 / self.trials as f64
        }
    }
}
