//! The gRPC edge: the client RawKV service, the replica service peers call,
//! the admin service, the peer port's credential check, the limits every
//! request is checked against (admission, deadline, HTTP/2 only), and the
//! one mapping of the node's errors to gRPC statuses.

pub(crate) mod admin;
pub(crate) mod admission;
pub(crate) mod http2_only;
pub(crate) mod limits;
pub(crate) mod peer_auth;
pub(crate) mod rawkv;
pub(crate) mod replica;
pub(crate) mod request_deadline;
mod status;
