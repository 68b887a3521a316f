//! Apache Cassandra through the `scylla` CQL driver (token-aware): one table
//! `ringkv_bench.kv (k blob PRIMARY KEY, v blob)` in a keyspace with the
//! replication factor asked for, every statement at the consistency asked
//! for (QUORUM by default). A batch is one unlogged BATCH.

use std::sync::Arc;

use bytes::Bytes;
use scylla::{
    client::{session::Session, session_builder::SessionBuilder},
    statement::{
        batch::{Batch, BatchType},
        prepared::PreparedStatement,
        Consistency,
    },
};

use super::{single, Reply, TargetSpec};
use crate::{workload::Op, BenchError};

#[derive(Debug, Clone)]
pub struct CassandraOptions {
    pub replication_factor: u32,
    /// QUORUM when false, ONE when true.
    pub consistency_one: bool,
}

impl Default for CassandraOptions {
    fn default() -> Self {
        Self {
            replication_factor: 3,
            consistency_one: false,
        }
    }
}

pub struct Cassandra {
    session: Arc<Session>,
    put: PreparedStatement,
    get: PreparedStatement,
    delete: PreparedStatement,
    consistency: Consistency,
}

fn failed(e: impl std::fmt::Display) -> BenchError {
    BenchError::target("cassandra", e)
}

impl Cassandra {
    pub async fn connect(spec: &TargetSpec) -> Result<Self, BenchError> {
        let session = SessionBuilder::new()
            .known_nodes(&spec.endpoints)
            .build()
            .await
            .map_err(failed)?;
        let replication = spec.cassandra.replication_factor;
        session
            .query_unpaged(
                format!(
                    "CREATE KEYSPACE IF NOT EXISTS ringkv_bench WITH replication = \
                     {{'class': 'SimpleStrategy', 'replication_factor': {replication}}}"
                ),
                &[],
            )
            .await
            .map_err(failed)?;
        session
            .query_unpaged(
                "CREATE TABLE IF NOT EXISTS ringkv_bench.kv (k blob PRIMARY KEY, v blob)",
                &[],
            )
            .await
            .map_err(failed)?;
        session.await_schema_agreement().await.map_err(failed)?;
        let consistency = if spec.cassandra.consistency_one {
            Consistency::One
        } else {
            Consistency::Quorum
        };
        let prepare = |cql: &'static str| {
            let session = &session;
            async move {
                let mut statement = session.prepare(cql).await.map_err(failed)?;
                statement.set_consistency(consistency);
                Ok::<_, BenchError>(statement)
            }
        };
        let put = prepare("INSERT INTO ringkv_bench.kv (k, v) VALUES (?, ?)").await?;
        let get = prepare("SELECT v FROM ringkv_bench.kv WHERE k = ?").await?;
        let delete = prepare("DELETE FROM ringkv_bench.kv WHERE k = ?").await?;
        Ok(Self {
            session: Arc::new(session),
            put,
            get,
            delete,
            consistency,
        })
    }

    pub async fn execute(
        &self,
        op: Op,
        keys: &[Bytes],
        value: &Bytes,
    ) -> Result<Reply, BenchError> {
        match op {
            Op::Put => {
                self.session
                    .execute_unpaged(&self.put, (single(keys)?.as_ref(), value.as_ref()))
                    .await
                    .map_err(failed)?;
            }
            Op::Get => {
                let result = self
                    .session
                    .execute_unpaged(&self.get, (single(keys)?.as_ref(),))
                    .await
                    .map_err(failed)?
                    .into_rows_result()
                    .map_err(failed)?;
                let value = result
                    .maybe_first_row::<(Vec<u8>,)>()
                    .map_err(failed)?
                    .map(|(v,)| Bytes::from(v));
                return Ok(Reply::Value(value));
            }
            Op::Delete => {
                self.session
                    .execute_unpaged(&self.delete, (single(keys)?.as_ref(),))
                    .await
                    .map_err(failed)?;
            }
            Op::BatchPut | Op::BatchDelete => {
                let statement = if op == Op::BatchPut {
                    &self.put
                } else {
                    &self.delete
                };
                let mut batch = Batch::new(BatchType::Unlogged);
                batch.set_consistency(self.consistency);
                for _ in keys {
                    batch.append_statement(statement.clone());
                }
                if op == Op::BatchPut {
                    let values: Vec<(&[u8], &[u8])> =
                        keys.iter().map(|k| (k.as_ref(), value.as_ref())).collect();
                    self.session.batch(&batch, values).await.map_err(failed)?;
                } else {
                    let values: Vec<(&[u8],)> = keys.iter().map(|k| (k.as_ref(),)).collect();
                    self.session.batch(&batch, values).await.map_err(failed)?;
                }
            }
            Op::BatchGet => {
                // CQL batches write only: a batch get is its reads in parallel.
                futures::future::try_join_all(
                    keys.iter()
                        .map(|key| self.session.execute_unpaged(&self.get, (key.as_ref(),))),
                )
                .await
                .map_err(failed)?;
            }
            Op::Noop => {
                return Err(BenchError::Config(
                    "the no-op workload runs against ringkv's server stack only".into(),
                ))
            }
        }
        Ok(Reply::Done)
    }
}
