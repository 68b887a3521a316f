//! The gRPC edge: the client RawKV service, the replica service peers call,
//! the admin service, the peer port's credential check, the limits every
//! request is checked against, and the one mapping of the node's errors to
//! gRPC statuses.

pub(crate) mod admin;
pub(crate) mod admission;
pub(crate) mod limits;
pub(crate) mod peer_auth;
pub(crate) mod rawkv;
pub(crate) mod replica;
mod status;
