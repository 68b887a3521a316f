//! Gossip on a thread of its own, as Cassandra runs its gossip stage.
//!
//! Phi accrual reads time: a heartbeat that arrives late looks like a node
//! dying. On the node's shared runtime, saturating load kept chitchat's
//! tasks waiting behind request work, so this node sent its heartbeats
//! late and its peers marked it dead
//! (`cluster::a_saturated_cluster_keeps_its_peers_alive`). A current-thread
//! runtime that runs nothing but gossip waits only for the OS to schedule
//! it, which, since the thread mostly sleeps, is soon. The other side of
//! the same cause, an observer counting its own stopped time as a peer's
//! silence, is handled in `liveness.rs`.

use std::{net::SocketAddr, thread::JoinHandle};

use chitchat::{spawn_chitchat, ChitchatConfig, ChitchatHandle};
use tokio::sync::oneshot;

use super::{gossip_transport::SealedUdpTransport, membership::MembershipError};

/// The thread that runs chitchat's server; gossip stops when it is dropped
/// or stopped.
pub(crate) struct GossipThread {
    stop: Option<oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl GossipThread {
    /// Starts chitchat on a new thread and returns its handle once the
    /// gossip socket is bound.
    pub(crate) async fn start(
        config: ChitchatConfig,
        initial: Vec<(String, String)>,
        transport: SealedUdpTransport,
    ) -> Result<(ChitchatHandle, Self), MembershipError> {
        let addr = config.listen_addr;
        let (ready_tx, ready_rx) = oneshot::channel();
        let (stop, stopped) = oneshot::channel::<()>();
        let thread = std::thread::Builder::new()
            .name("ringkv-gossip".into())
            .spawn(move || run(config, initial, transport, ready_tx, stopped))
            .map_err(|e| start_error(addr, format!("spawning the gossip thread: {e}")))?;
        let handle = ready_rx.await.map_err(|_| {
            start_error(
                addr,
                "the gossip thread ended before it bound its socket".into(),
            )
        })??;
        Ok((
            handle,
            Self {
                stop: Some(stop),
                thread: Some(thread),
            },
        ))
    }

    /// Stops gossip and waits until the thread, and with it the gossip
    /// socket, is gone, so that the address can be bound again at once.
    pub(crate) async fn stop(mut self) {
        self.stop.take();
        if let Some(thread) = self.thread.take() {
            if tokio::task::spawn_blocking(move || thread.join())
                .await
                .is_err()
            {
                tracing::warn!("the gossip thread could not be joined");
            }
        }
    }
}

impl Drop for GossipThread {
    fn drop(&mut self) {
        // Dropping the sender ends the thread's runtime, and with it every
        // chitchat task; the thread is not joined here, which could block
        // an async caller.
        self.stop.take();
    }
}

fn start_error(addr: SocketAddr, message: String) -> MembershipError {
    MembershipError::Start { addr, message }
}

/// The gossip thread's body: chitchat on a runtime of its own until told
/// to stop.
fn run(
    config: ChitchatConfig,
    initial: Vec<(String, String)>,
    transport: SealedUdpTransport,
    ready: oneshot::Sender<Result<ChitchatHandle, MembershipError>>,
    stopped: oneshot::Receiver<()>,
) {
    let addr = config.listen_addr;
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            let _ = ready.send(Err(start_error(
                addr,
                format!("building the gossip runtime: {e}"),
            )));
            return;
        }
    };
    runtime.block_on(async move {
        match spawn_chitchat(config, initial, &transport).await {
            Ok(handle) => {
                if ready.send(Ok(handle)).is_ok() {
                    // Either a stop or the sender dropped.
                    let _ = stopped.await;
                }
            }
            Err(e) => {
                let _ = ready.send(Err(start_error(addr, format!("{e:#}"))));
            }
        }
    });
}
