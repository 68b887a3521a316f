//! The RawKV gRPC handlers: validate the request, run it against storage on
//! the blocking pool, and map every failure to a status code.

use std::{sync::Arc, time::Instant};

use bytes::Bytes;
use ringkv_proto::v1::{
    raw_kv_server::RawKv, Consistency, KvPair, RawBatchDeleteRequest, RawBatchDeleteResponse,
    RawBatchGetRequest, RawBatchGetResponse, RawBatchPutRequest, RawBatchPutResponse,
    RawDeleteRequest, RawDeleteResponse, RawGetRequest, RawGetResponse, RawPutRequest,
    RawPutResponse, RawScanRequest, RawScanResponse,
};
use tonic::{Request, Response, Status};

use crate::{
    metrics::RpcMetrics,
    storage::{now_millis, Modify, ScanRange, Storage, StorageError},
    validate::Limits,
};

/// Replicas a standalone node holds of each key.
const STANDALONE_REPLICAS: u32 = 1;

impl From<StorageError> for Status {
    fn from(error: StorageError) -> Self {
        tracing::error!(%error, "storage failure");
        if error.is_transient() {
            Status::unavailable(error.to_string())
        } else {
            Status::internal(error.to_string())
        }
    }
}

/// The RawKV service of one node.
pub struct RawKvService {
    storage: Arc<dyn Storage>,
    limits: Limits,
    metrics: RpcMetrics,
}

impl RawKvService {
    pub fn new(storage: Arc<dyn Storage>, limits: Limits, metrics: RpcMetrics) -> Self {
        Self {
            storage,
            limits,
            metrics,
        }
    }

    /// Runs a storage call on tokio's blocking pool, where concurrent writers
    /// reach RocksDB together and share one WAL sync.
    async fn on_storage<T, F>(&self, op: F) -> Result<T, Status>
    where
        T: Send + 'static,
        F: FnOnce(&dyn Storage) -> Result<T, StorageError> + Send + 'static,
    {
        let storage = self.storage.clone();
        tokio::task::spawn_blocking(move || op(storage.as_ref()))
            .await
            .map_err(|e| StorageError::Task(e.to_string()))?
            .map_err(Status::from)
    }

    fn check_consistency(consistency: Option<&Consistency>) -> Result<(), Status> {
        let Some(consistency) = consistency else {
            return Ok(());
        };
        for (name, quorum) in [
            ("read_quorum", consistency.read_quorum),
            ("write_quorum", consistency.write_quorum),
        ] {
            match quorum {
                Some(q) if q == 0 || q > STANDALONE_REPLICAS => {
                    return Err(Status::invalid_argument(format!(
                        "{name} {q} is outside 1..={STANDALONE_REPLICAS}, the replication factor"
                    )))
                }
                _ => {}
            }
        }
        Ok(())
    }

    fn expiry(ttl_seconds: u64) -> Option<u64> {
        (ttl_seconds > 0).then(|| now_millis().saturating_add(ttl_seconds.saturating_mul(1000)))
    }

    async fn get(&self, req: RawGetRequest) -> Result<RawGetResponse, Status> {
        self.limits.key(&req.key)?;
        Self::check_consistency(req.consistency.as_ref())?;
        let key = req.key;
        let value = self.on_storage(move |s| s.get(&key)).await?;
        match value {
            Some(value) => Ok(RawGetResponse {
                value,
                ..Default::default()
            }),
            None => Err(Status::not_found("key not found")),
        }
    }

    async fn put(&self, req: RawPutRequest) -> Result<RawPutResponse, Status> {
        self.limits.key(&req.key)?;
        self.limits.value(&req.value)?;
        Self::check_consistency(req.consistency.as_ref())?;
        let change = Modify::Put {
            key: req.key,
            value: req.value,
            expires_at_ms: Self::expiry(req.ttl_seconds),
        };
        self.on_storage(move |s| s.write(vec![change])).await?;
        Ok(RawPutResponse {})
    }

    async fn delete(&self, req: RawDeleteRequest) -> Result<RawDeleteResponse, Status> {
        self.limits.key(&req.key)?;
        Self::check_consistency(req.consistency.as_ref())?;
        let change = Modify::Delete { key: req.key };
        self.on_storage(move |s| s.write(vec![change])).await?;
        Ok(RawDeleteResponse {})
    }

    async fn scan(&self, req: RawScanRequest) -> Result<RawScanResponse, Status> {
        let limit = self.limits.scan(&req.start_key, &req.end_key, req.limit)?;
        Self::check_consistency(req.consistency.as_ref())?;
        let range = ScanRange {
            start: req.start_key,
            end: req.end_key,
            limit,
            key_only: req.key_only,
            reverse: req.reverse,
        };
        let found = self.on_storage(move |s| s.scan(&range)).await?;
        Ok(RawScanResponse {
            kvs: found
                .into_iter()
                .map(|kv| KvPair {
                    key: kv.key,
                    value: kv.value,
                    ..Default::default()
                })
                .collect(),
        })
    }

    async fn batch_get(&self, req: RawBatchGetRequest) -> Result<RawBatchGetResponse, Status> {
        self.limits.batch(req.keys.len())?;
        for key in &req.keys {
            self.limits.key(key)?;
        }
        Self::check_consistency(req.consistency.as_ref())?;
        let keys = req.keys;
        let (keys, values) = self
            .on_storage(move |s| s.multi_get(&keys).map(|values| (keys, values)))
            .await?;
        Ok(RawBatchGetResponse {
            pairs: keys
                .into_iter()
                .zip(values)
                .filter_map(|(key, value)| {
                    value.map(|value| KvPair {
                        key,
                        value,
                        ..Default::default()
                    })
                })
                .collect(),
        })
    }

    async fn batch_put(&self, req: RawBatchPutRequest) -> Result<RawBatchPutResponse, Status> {
        self.limits.batch(req.pairs.len())?;
        for pair in &req.pairs {
            self.limits.key(&pair.key)?;
            self.limits.value(&pair.value)?;
        }
        Self::check_consistency(req.consistency.as_ref())?;
        let expires_at_ms = Self::expiry(req.ttl_seconds);
        let batch = req
            .pairs
            .into_iter()
            .map(|pair| Modify::Put {
                key: pair.key,
                value: pair.value,
                expires_at_ms,
            })
            .collect();
        self.on_storage(move |s| s.write(batch)).await?;
        Ok(RawBatchPutResponse {})
    }

    async fn batch_delete(
        &self,
        req: RawBatchDeleteRequest,
    ) -> Result<RawBatchDeleteResponse, Status> {
        self.limits.batch(req.keys.len())?;
        for key in &req.keys {
            self.limits.key(key)?;
        }
        Self::check_consistency(req.consistency.as_ref())?;
        let batch = req
            .keys
            .into_iter()
            .map(|key: Bytes| Modify::Delete { key })
            .collect();
        self.on_storage(move |s| s.write(batch)).await?;
        Ok(RawBatchDeleteResponse {})
    }
}

/// Times a handler and records its outcome.
macro_rules! observed {
    ($self:ident, $method:literal, $call:expr) => {{
        let started = Instant::now();
        let result = $call.await;
        $self.metrics.observe($method, started, &result);
        result.map(Response::new)
    }};
}

#[tonic::async_trait]
impl RawKv for RawKvService {
    async fn raw_get(
        &self,
        request: Request<RawGetRequest>,
    ) -> Result<Response<RawGetResponse>, Status> {
        observed!(self, "RawGet", self.get(request.into_inner()))
    }

    async fn raw_put(
        &self,
        request: Request<RawPutRequest>,
    ) -> Result<Response<RawPutResponse>, Status> {
        observed!(self, "RawPut", self.put(request.into_inner()))
    }

    async fn raw_delete(
        &self,
        request: Request<RawDeleteRequest>,
    ) -> Result<Response<RawDeleteResponse>, Status> {
        observed!(self, "RawDelete", self.delete(request.into_inner()))
    }

    async fn raw_scan(
        &self,
        request: Request<RawScanRequest>,
    ) -> Result<Response<RawScanResponse>, Status> {
        observed!(self, "RawScan", self.scan(request.into_inner()))
    }

    async fn raw_batch_get(
        &self,
        request: Request<RawBatchGetRequest>,
    ) -> Result<Response<RawBatchGetResponse>, Status> {
        observed!(self, "RawBatchGet", self.batch_get(request.into_inner()))
    }

    async fn raw_batch_put(
        &self,
        request: Request<RawBatchPutRequest>,
    ) -> Result<Response<RawBatchPutResponse>, Status> {
        observed!(self, "RawBatchPut", self.batch_put(request.into_inner()))
    }

    async fn raw_batch_delete(
        &self,
        request: Request<RawBatchDeleteRequest>,
    ) -> Result<Response<RawBatchDeleteResponse>, Status> {
        observed!(
            self,
            "RawBatchDelete",
            self.batch_delete(request.into_inner())
        )
    }
}
