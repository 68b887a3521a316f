use std::process::ExitCode;

use clap::Parser;
use ringkv_node::{node, telemetry, NodeConfig};

#[tokio::main]
async fn main() -> ExitCode {
    let config = NodeConfig::parse();
    telemetry::init(config.log_format, &config.log);
    match node::run(config, node::termination_signal()).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            tracing::error!(%error, "ringkv node failed");
            eprintln!("ringkv-node: {error}");
            ExitCode::FAILURE
        }
    }
}
