use std::process::ExitCode;

use clap::Parser;
use ringkv_node::{init_telemetry, run, termination_signal, NodeConfig};

#[tokio::main]
async fn main() -> ExitCode {
    let config = NodeConfig::parse();
    init_telemetry(config.log_format, &config.log);
    match run(config, termination_signal()).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            tracing::error!(%error, "ringkv node failed");
            eprintln!("ringkv-node: {error}");
            ExitCode::FAILURE
        }
    }
}
