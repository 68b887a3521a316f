//! etcd through the `etcd-client` crate: puts, linearizable (or
//! serializable) gets, deletes, and a batch as one Txn of its operations.

use bytes::Bytes;
use etcd_client::{Client, GetOptions, KvClient, Txn, TxnOp};

use super::{single, Reply, TargetSpec};
use crate::{workload::Op, BenchError};

pub struct Etcd {
    clients: Vec<KvClient>,
    get_options: Option<GetOptions>,
}

impl Etcd {
    pub async fn connect(spec: &TargetSpec) -> Result<Self, BenchError> {
        let mut clients = Vec::with_capacity(spec.connections.max(1));
        for _ in 0..spec.connections.max(1) {
            let client = Client::connect(&spec.endpoints, None)
                .await
                .map_err(|e| BenchError::target("etcd", e))?;
            clients.push(client.kv_client());
        }
        Ok(Self {
            clients,
            get_options: spec
                .serializable_reads
                .then(|| GetOptions::new().with_serializable()),
        })
    }

    pub async fn execute(
        &self,
        client: usize,
        op: Op,
        keys: &[Bytes],
        value: &Bytes,
    ) -> Result<Reply, BenchError> {
        let mut kv = self.clients[client % self.clients.len()].clone();
        let failed = |e| BenchError::target("etcd", e);
        match op {
            Op::Put => {
                kv.put(single(keys)?.to_vec(), value.to_vec(), None)
                    .await
                    .map_err(failed)?;
            }
            Op::Get => {
                let found = kv
                    .get(single(keys)?.to_vec(), self.get_options.clone())
                    .await
                    .map_err(failed)?;
                let value = found
                    .kvs()
                    .first()
                    .map(|kv| Bytes::copy_from_slice(kv.value()));
                return Ok(Reply::Value(value));
            }
            Op::Delete => {
                kv.delete(single(keys)?.to_vec(), None)
                    .await
                    .map_err(failed)?;
            }
            Op::BatchPut | Op::BatchGet | Op::BatchDelete => {
                let ops = keys
                    .iter()
                    .map(|key| match op {
                        Op::BatchPut => TxnOp::put(key.to_vec(), value.to_vec(), None),
                        Op::BatchGet => TxnOp::get(key.to_vec(), self.get_options.clone()),
                        _ => TxnOp::delete(key.to_vec(), None),
                    })
                    .collect::<Vec<_>>();
                kv.txn(Txn::new().and_then(ops)).await.map_err(failed)?;
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
