//! ringkv's end-to-end test infrastructure (see `e2e/README.md`).
//!
//! - [`runner`]: plays the kubelet for one Node of a real control plane,
//!   running each pod's containers as local processes.
//! - [`harness`]: starts the control plane and the runner for the scenarios.
pub mod harness;
pub mod runner;
