//! The RawKV gRPC handlers: validate the request, hand it to the
//! coordinator, and shape the answer.

use std::time::Duration;

use bytes::Bytes;
use ringkv_proto::v1::{
    raw_kv_server::RawKv, Consistency, KvPair, RawBatchDeleteRequest, RawBatchDeleteResponse,
    RawBatchGetRequest, RawBatchGetResponse, RawBatchPutRequest, RawBatchPutResponse,
    RawDeleteRequest, RawDeleteResponse, RawGetRequest, RawGetResponse, RawPutRequest,
    RawPutResponse, RawScanRequest, RawScanResponse,
};
use tonic::{Request, Response, Status};

use crate::{
    api::limits::Limits,
    cluster::{deadline::Deadline, rpc::FORWARDED},
    coordinator::{visible_values, Coordinator, WriteOptions, WriteRequest},
    server::metrics::RpcMetrics,
    storage::ScanRange,
    versions::Siblings,
};

/// Bytes a batch error's message takes at most: gRPC status messages
/// travel in a header, which proxies and clients cap.
const BATCH_MESSAGE_BYTES: usize = 8 << 10;
/// Of those, the bytes the names of the keys that did not take may fill.
/// The names come first: a client learns from them which keys were
/// written; the reasons that follow only explain.
const NAMED_FAILURE_BYTES: usize = 6 << 10;
/// Room kept for "; and N more reasons not shown".
const MARKER_BYTES: usize = 48;

/// Appends `entries` to `out`, separated by `separator`, while `out` stays
/// within `budget` bytes; returns how many fit.
fn append_within<'a>(
    out: &mut String,
    entries: impl Iterator<Item = String> + 'a,
    separator: &str,
    budget: usize,
) -> usize {
    let mut count = 0;
    for entry in entries {
        let separator = if count == 0 { "" } else { separator };
        if out.len() + separator.len() + entry.len() > budget {
            break;
        }
        out.push_str(separator);
        out.push_str(&entry);
        count += 1;
    }
    count
}

/// The message of a batch in which some keys did not take: how many; each
/// key (escaped), as many as fit in [`NAMED_FAILURE_BYTES`], with a count of
/// the rest; then each key's reason, as many as fit in
/// [`BATCH_MESSAGE_BYTES`].
fn batch_failure(total: usize, failed: &[(Bytes, Status)]) -> String {
    let mut out = format!(
        "{} of {total} keys did not take; every other key was written. Keys that did not take: ",
        failed.len(),
    );
    let names = failed.iter().map(|(key, _)| format!("{key:?}"));
    let named = append_within(&mut out, names, ", ", NAMED_FAILURE_BYTES);
    if named < failed.len() {
        out.push_str(&format!(
            "; and {} more not named here",
            failed.len() - named
        ));
    }
    out.push_str(". Why: ");
    let reasons = failed
        .iter()
        .map(|(key, status)| format!("{key:?}: {}", status.message()));
    // Room for the count of reasons left out, within the message's budget.
    let explained = append_within(&mut out, reasons, "; ", BATCH_MESSAGE_BYTES - MARKER_BYTES);
    if explained < failed.len() {
        out.push_str(&format!(
            "; and {} more reasons not shown",
            failed.len() - explained
        ));
    }
    out
}

/// The error of a batch in which some keys did not take, with the code of
/// the first of them in request order; `None` when every key took.
fn batch_error(total: usize, failed: &[(Bytes, Status)]) -> Option<Status> {
    let (_, first) = failed.first()?;
    Some(Status::new(first.code(), batch_failure(total, failed)))
}

/// The RawKV service of one node.
#[derive(Clone)]
pub struct RawKvService {
    coordinator: Coordinator,
    limits: Limits,
    metrics: RpcMetrics,
    /// `--request-timeout-ms`: the deadline of a request that sets none.
    request_timeout: Duration,
}

/// What handlers need of a client request's metadata after `into_inner`.
struct Meta {
    /// Always set: the client's `grpc-timeout`, or `--request-timeout-ms`
    /// (which [`crate::api::request_deadline`] holds the whole request to).
    deadline: Option<Deadline>,
    forwarded: bool,
}

impl Meta {
    fn of<T>(request: &Request<T>, request_timeout: Duration) -> Self {
        Self {
            deadline: Some(
                Deadline::of(request.metadata())
                    .unwrap_or_else(|| Deadline::after(request_timeout)),
            ),
            forwarded: request.metadata().contains_key(FORWARDED),
        }
    }

    fn write_options(
        &self,
        (read_quorum, write_quorum): (Option<u32>, Option<u32>),
        ttl_seconds: u64,
    ) -> WriteOptions {
        WriteOptions {
            read_quorum,
            write_quorum,
            ttl_seconds,
            deadline: self.deadline,
            forwarded: self.forwarded,
        }
    }
}

impl RawKvService {
    pub fn new(
        coordinator: Coordinator,
        limits: Limits,
        metrics: RpcMetrics,
        request_timeout: Duration,
    ) -> Self {
        Self {
            coordinator,
            limits,
            metrics,
            request_timeout,
        }
    }

    /// The request's quorum overrides, each checked against N whether or
    /// not this RPC uses it: a client that sets one expects it to mean
    /// something, and an impossible one is a mistake worth hearing about.
    fn quorums(
        &self,
        consistency: Option<&Consistency>,
    ) -> Result<(Option<u32>, Option<u32>), Status> {
        let (r, w) = consistency.map_or((None, None), |c| (c.read_quorum, c.write_quorum));
        self.coordinator.read_quorum(r)?;
        self.coordinator.write_quorum(w)?;
        Ok((r, w))
    }

    fn pair(&self, key: Bytes, record: &Siblings, key_only: bool) -> Option<KvPair> {
        let mut values = visible_values(record, self.coordinator.mode());
        if values.is_empty() {
            return None;
        }
        let value = if key_only {
            Bytes::new()
        } else {
            values[0].clone()
        };
        let siblings = if values.len() > 1 && !key_only {
            std::mem::take(&mut values)
        } else {
            Vec::new()
        };
        let context = self.coordinator.seal_context(&key, record);
        Some(KvPair {
            key,
            value,
            siblings,
            context,
        })
    }

    async fn get(&self, req: RawGetRequest, meta: Meta) -> Result<RawGetResponse, Status> {
        self.limits.key(&req.key)?;
        let (r, _) = self.quorums(req.consistency.as_ref())?;
        let record = self
            .coordinator
            .read(req.key.clone(), r, meta.deadline)
            .await?;
        let pair = self
            .pair(req.key, &record, false)
            .ok_or_else(|| Status::not_found("key not found"))?;
        Ok(RawGetResponse {
            value: pair.value,
            siblings: pair.siblings,
            context: pair.context,
        })
    }

    async fn put(&self, req: RawPutRequest, meta: Meta) -> Result<RawPutResponse, Status> {
        self.limits.key(&req.key)?;
        self.limits.value(&req.value)?;
        let quorums = self.quorums(req.consistency.as_ref())?;
        let write = WriteRequest {
            key: req.key,
            value: Some(req.value),
            context: req.context,
        };
        self.coordinator
            .write(write, meta.write_options(quorums, req.ttl_seconds))
            .await?;
        Ok(RawPutResponse {})
    }

    async fn delete(&self, req: RawDeleteRequest, meta: Meta) -> Result<RawDeleteResponse, Status> {
        self.limits.key(&req.key)?;
        let quorums = self.quorums(req.consistency.as_ref())?;
        let write = WriteRequest {
            key: req.key,
            value: None,
            context: req.context,
        };
        self.coordinator
            .write(write, meta.write_options(quorums, 0))
            .await?;
        Ok(RawDeleteResponse {})
    }

    async fn scan(&self, req: RawScanRequest, meta: Meta) -> Result<RawScanResponse, Status> {
        let limit = self.limits.scan(&req.start_key, &req.end_key, req.limit)?;
        let (r, _) = self.quorums(req.consistency.as_ref())?;
        let range = ScanRange {
            start: req.start_key,
            end: req.end_key,
            limit,
            key_only: req.key_only,
            reverse: req.reverse,
            max_bytes: Some(self.limits.max_scan_bytes),
        };
        let found = self.coordinator.scan(range, r, meta.deadline).await?;
        Ok(RawScanResponse {
            kvs: found
                .pairs
                .into_iter()
                .filter_map(|(key, record)| self.pair(key, &record, req.key_only))
                .collect(),
            more: found.more,
        })
    }

    async fn batch_get(
        &self,
        req: RawBatchGetRequest,
        meta: Meta,
    ) -> Result<RawBatchGetResponse, Status> {
        self.limits.batch(req.keys.len())?;
        for key in &req.keys {
            self.limits.key(key)?;
        }
        let (r, _) = self.quorums(req.consistency.as_ref())?;
        let records = self
            .coordinator
            .read_batch(&req.keys, r, meta.deadline)
            .await?
            .into_iter()
            .collect::<Result<Vec<_>, _>>()?;
        Ok(RawBatchGetResponse {
            pairs: req
                .keys
                .into_iter()
                .zip(records)
                .filter_map(|(key, record)| self.pair(key, &record, false))
                .collect(),
        })
    }

    /// Writes every key of a batch, each through its own quorum, each
    /// replica's share in one write batch (see `coordinator::batch`). A key
    /// that fails does not stop the others; if any failed, the error names
    /// each one with its reason, so the client knows exactly which keys took.
    async fn batch_write(
        &self,
        writes: Vec<WriteRequest>,
        consistency: Option<&Consistency>,
        ttl_seconds: u64,
        meta: Meta,
    ) -> Result<(), Status> {
        let options = meta.write_options(self.quorums(consistency)?, ttl_seconds);
        let total = writes.len();
        let keys: Vec<Bytes> = writes.iter().map(|write| write.key.clone()).collect();
        let outcomes = self.coordinator.write_batch(writes, options).await?;
        let failed: Vec<(Bytes, Status)> = keys
            .into_iter()
            .zip(outcomes)
            .filter_map(|(key, outcome)| outcome.err().map(|error| (key, error.into())))
            .collect();
        batch_error(total, &failed).map_or(Ok(()), Err)
    }

    async fn batch_put(
        &self,
        req: RawBatchPutRequest,
        meta: Meta,
    ) -> Result<RawBatchPutResponse, Status> {
        self.limits.batch(req.pairs.len())?;
        for pair in &req.pairs {
            self.limits.key(&pair.key)?;
            self.limits.value(&pair.value)?;
        }
        self.limits.distinct(req.pairs.iter().map(|p| &p.key[..]))?;
        let writes = req
            .pairs
            .into_iter()
            .map(|p| WriteRequest {
                key: p.key,
                value: Some(p.value),
                context: p.context,
            })
            .collect();
        self.batch_write(writes, req.consistency.as_ref(), req.ttl_seconds, meta)
            .await?;
        Ok(RawBatchPutResponse {})
    }

    async fn batch_delete(
        &self,
        req: RawBatchDeleteRequest,
        meta: Meta,
    ) -> Result<RawBatchDeleteResponse, Status> {
        self.limits.batch(req.keys.len())?;
        for key in &req.keys {
            self.limits.key(key)?;
        }
        self.limits.distinct(req.keys.iter().map(|k| &k[..]))?;
        let writes = req
            .keys
            .into_iter()
            .map(|key| WriteRequest {
                key,
                value: None,
                context: Bytes::new(),
            })
            .collect();
        self.batch_write(writes, req.consistency.as_ref(), 0, meta)
            .await?;
        Ok(RawBatchDeleteResponse {})
    }
}

/// Times a handler and records its outcome.
macro_rules! observed {
    ($self:ident, $method:literal, $request:ident, $handler:ident) => {{
        let meta = Meta::of(&$request, $self.request_timeout);
        $self
            .metrics
            .timed($method, $self.$handler($request.into_inner(), meta))
            .await
    }};
}

#[tonic::async_trait]
impl RawKv for RawKvService {
    async fn raw_get(
        &self,
        request: Request<RawGetRequest>,
    ) -> Result<Response<RawGetResponse>, Status> {
        observed!(self, "RawGet", request, get)
    }

    async fn raw_put(
        &self,
        request: Request<RawPutRequest>,
    ) -> Result<Response<RawPutResponse>, Status> {
        observed!(self, "RawPut", request, put)
    }

    async fn raw_delete(
        &self,
        request: Request<RawDeleteRequest>,
    ) -> Result<Response<RawDeleteResponse>, Status> {
        observed!(self, "RawDelete", request, delete)
    }

    async fn raw_scan(
        &self,
        request: Request<RawScanRequest>,
    ) -> Result<Response<RawScanResponse>, Status> {
        observed!(self, "RawScan", request, scan)
    }

    async fn raw_batch_get(
        &self,
        request: Request<RawBatchGetRequest>,
    ) -> Result<Response<RawBatchGetResponse>, Status> {
        observed!(self, "RawBatchGet", request, batch_get)
    }

    async fn raw_batch_put(
        &self,
        request: Request<RawBatchPutRequest>,
    ) -> Result<Response<RawBatchPutResponse>, Status> {
        observed!(self, "RawBatchPut", request, batch_put)
    }

    async fn raw_batch_delete(
        &self,
        request: Request<RawBatchDeleteRequest>,
    ) -> Result<Response<RawBatchDeleteResponse>, Status> {
        observed!(self, "RawBatchDelete", request, batch_delete)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_batch_error_names_failed_keys_within_its_budget_and_counts_the_rest() {
        let failed: Vec<(Bytes, Status)> = (0..1_000)
            .map(|i| {
                (
                    Bytes::from(format!("key-{i:04}-{}", "x".repeat(80))),
                    Status::unavailable("write quorum not met: 1 of 2"),
                )
            })
            .collect();
        let message = batch_failure(1_024, &failed);
        assert!(
            message.starts_with("1000 of 1024 keys did not take"),
            "{message}"
        );
        let named = (0..1_000)
            .filter(|i| message.contains(&format!("key-{i:04}-")))
            .count();
        assert!(named > 0 && named < 1_000, "{named} named");
        assert!(
            message.contains(&format!(
                "; and {} more not named here. Why: ",
                1_000 - named
            )),
            "the rest are counted: {message}"
        );
        assert!(
            message.ends_with("more reasons not shown"),
            "{}",
            &message[message.len() - 60..]
        );
        assert!(
            message.len() <= BATCH_MESSAGE_BYTES,
            "{} bytes",
            message.len()
        );

        // Long reasons, as when a quorum failure names its nodes, leave
        // every key of a 100-key batch named.
        let wordy: Vec<(Bytes, Status)> = (0..100)
            .map(|i| {
                (
                    Bytes::from(format!("key-{i:02}")),
                    Status::unavailable("r".repeat(300)),
                )
            })
            .collect();
        let message = batch_failure(100, &wordy);
        assert!(!message.contains("more not named"), "{message}");
        for (key, _) in &wordy {
            assert!(message.contains(&format!("{key:?}")), "{key:?}");
        }
        assert!(message.len() <= BATCH_MESSAGE_BYTES);

        assert!(batch_error(10, &[]).is_none(), "every key took");
        let corrupt = (
            Bytes::from_static(b"a"),
            Status::internal("stored record is unreadable"),
        );
        let short = (
            Bytes::from_static(b"b"),
            Status::unavailable("write quorum not met"),
        );
        let mixed = [corrupt.clone(), short.clone()];
        assert_eq!(
            batch_error(2, &mixed).map(|s| s.code()),
            Some(tonic::Code::Internal)
        );
        let mixed = [short, corrupt];
        let error = batch_error(2, &mixed).expect("an error");
        assert_eq!(
            error.code(),
            tonic::Code::Unavailable,
            "the first failure's code"
        );
        assert!(error.message().starts_with("2 of 2 keys did not take"));

        let few = &failed[..3];
        let message = batch_failure(10, few);
        assert!(message.starts_with("3 of 10 keys did not take"));
        assert!(!message.contains("more not named"), "{message}");
        for (key, _) in few {
            assert!(message.contains(&format!("{key:?}")));
        }
    }
}
