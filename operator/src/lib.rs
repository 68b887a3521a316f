//! The ringkv operator.
//!
//! - [`crd`]: the `KVCluster` resource.
//! - [`build`]: the objects a KVCluster owns, as pure functions of it.
//! - [`scaling`], [`upgrade`], [`status`]: the decisions, as pure functions
//!   of what was observed.
//! - [`ring_admin`]: what the operator asks the nodes.
//! - [`controller`]: the reconciler, a pipeline of validate, observe,
//!   decide, act and report, each in a file of its own.
//! - [`metrics`], [`http`]: the operator's own metrics and health endpoint.
//! - [`yaml`]: YAML that Kubernetes' YAML 1.1 reader reads as written.
pub mod build;
pub mod controller;
pub mod crd;
pub mod http;
pub mod metrics;
pub mod ring_admin;
pub mod scaling;
pub mod status;
pub mod upgrade;
pub mod yaml;
