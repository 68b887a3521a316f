use std::{process::ExitCode, time::Duration};

use clap::Parser;
use ringkv_node::{init_telemetry, run, termination_signal, NodeConfig};

/// malloc and free were an eighth of a request's CPU on three nodes
/// (docs/benchmarks/profile.md): each request allocates its HTTP/2 frames,
/// messages and records on several threads, where glibc's arenas contend.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// How long the runtime waits, once the node has stopped, for blocking work
/// still running: a storage call in progress ends within it, while a stream
/// blocked on a reader that stopped reading ends as soon as its connection
/// is dropped, which the runtime's shutdown does first.
const BLOCKING_GRACE: Duration = Duration::from_secs(5);

fn main() -> ExitCode {
    let config = NodeConfig::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("ringkv-node: cannot start the async runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    let outcome = runtime.block_on(async {
        init_telemetry(config.log_format, &config.log);
        run(config, termination_signal()).await
    });
    // Dropping the tasks closes the database and releases its lock; the
    // process exits right after, whatever is left.
    runtime.shutdown_timeout(BLOCKING_GRACE);
    match outcome {
        Ok(()) => {
            tracing::info!("stopped");
            ExitCode::SUCCESS
        }
        Err(error) => {
            tracing::error!(%error, "ringkv node failed");
            eprintln!("ringkv-node: {error}");
            ExitCode::FAILURE
        }
    }
}
