//! Who is in the cluster and how to reach them: gossip membership (over a
//! sealed transport, one process per node id), seed discovery, contact
//! tracking, peer clients and deadlines on peer calls.

pub(crate) mod coalesce;
pub(crate) mod contact;
pub(crate) mod deadline;
pub(crate) mod discovery;
pub(crate) mod gossip_thread;
pub(crate) mod gossip_transport;
pub(crate) mod identity;
pub(crate) mod liveness;
pub(crate) mod membership;
pub(crate) mod peers;
pub(crate) mod rpc;
