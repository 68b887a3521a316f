//! The gRPC edge: the client RawKV service, the replica service peers call,
//! the admin service, and the limits every request is checked against.

pub(crate) mod admin;
pub(crate) mod limits;
pub(crate) mod rawkv;
pub(crate) mod replica;
