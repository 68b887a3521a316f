//! Subcommands of the `ringkv` tool.

mod bench;
mod local;
mod status;

use std::io::{IsTerminal, Read, Write};

use anyhow::{bail, Context};
use clap::{Parser, Subcommand};
use ringkv_client::{Client, ScanOptions};

/// ringkv: a Dynamo-style distributed key-value store.
#[derive(Debug, Parser)]
#[command(name = "ringkv", version, about, max_term_width = 100)]
pub struct Cli {
    /// Node to talk to, as HOST:PORT. Any node coordinates any request.
    #[arg(
        long,
        short,
        global = true,
        env = "RINGKV_ENDPOINT",
        default_value = "127.0.0.1:7379"
    )]
    endpoint: String,

    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Store VALUE under KEY. A VALUE of `-` is read from standard input.
    Put { key: String, value: String },
    /// Print the value of KEY. Exits non-zero when the key is missing.
    Get { key: String },
    /// Delete KEY.
    Delete { key: String },
    /// List pairs of a key range in order, one `KEY<TAB>VALUE` per line.
    Scan {
        /// First key, inclusive.
        #[arg(long, default_value = "")]
        start: String,
        /// End key, exclusive.
        #[arg(long, default_value = "")]
        end: String,
        /// Most pairs to return (the node caps it).
        #[arg(long, default_value_t = 100)]
        limit: u32,
        /// Print keys only.
        #[arg(long)]
        keys_only: bool,
        /// Walk the range backwards.
        #[arg(long)]
        reverse: bool,
    },
    /// Show every member with its status and partitions, and whether the
    /// members' views of the cluster agree.
    Status,
    /// Take NODE out of the ring: it streams its partitions to their new
    /// owners, delivers its hints, and reports `left`. Refused when fewer
    /// than N nodes would remain.
    Decommission {
        /// The node id, as `ringkv status` shows it.
        node: String,
    },
    /// Ring status: each member and the handoff progress of moving partitions.
    Ring,
    /// Measure throughput and latency against a running node.
    Bench(bench::BenchArgs),
    /// Run a local cluster of ringkv-node processes on loopback, in the foreground.
    Local(local::LocalArgs),
}

pub async fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Put { key, value } => {
            let value = if value == "-" {
                let mut buf = Vec::new();
                std::io::stdin()
                    .read_to_end(&mut buf)
                    .context("reading the value from stdin")?;
                buf
            } else {
                value.into_bytes()
            };
            // Read first and write with the read's causal context, so that a
            // put from the command line replaces what is there.
            connect(&cli.endpoint)
                .await?
                .overwrite(key.as_bytes(), &value)
                .await?;
            Ok(())
        }
        Command::Get { key } => {
            let Some(value) = connect(&cli.endpoint).await?.get(key.as_bytes()).await? else {
                bail!("key {key:?} not found");
            };
            let mut stdout = std::io::stdout().lock();
            stdout.write_all(&value)?;
            if stdout.is_terminal() {
                stdout.write_all(b"\n")?;
            }
            Ok(())
        }
        Command::Delete { key } => {
            connect(&cli.endpoint).await?.delete(key.as_bytes()).await?;
            Ok(())
        }
        Command::Scan {
            start,
            end,
            limit,
            keys_only,
            reverse,
        } => {
            let pairs = connect(&cli.endpoint)
                .await?
                .scan(ScanOptions {
                    start: start.into_bytes(),
                    end: end.into_bytes(),
                    limit,
                    key_only: keys_only,
                    reverse,
                })
                .await?;
            let mut stdout = std::io::stdout().lock();
            for pair in pairs {
                if keys_only {
                    writeln!(stdout, "{}", pair.key.escape_ascii())?;
                } else {
                    writeln!(
                        stdout,
                        "{}\t{}",
                        pair.key.escape_ascii(),
                        pair.value.escape_ascii()
                    )?;
                }
            }
            Ok(())
        }
        Command::Status => status::run(&cli.endpoint).await,
        Command::Decommission { node } => {
            ringkv_client::decommission(&cli.endpoint, &node).await?;
            println!("{node} is leaving; follow it with `ringkv ring`");
            Ok(())
        }
        Command::Ring => status::ring(&cli.endpoint).await,
        Command::Bench(args) => bench::run(&cli.endpoint, args).await,
        Command::Local(args) => local::run(args).await,
    }
}

async fn connect(endpoint: &str) -> anyhow::Result<Client> {
    Ok(Client::connect(endpoint).await?)
}
