//! Subcommands of the `ringkv` tool.

mod bench;
mod local;
mod status;

use std::io::{IsTerminal, Read, Write};

use anyhow::{bail, Context};
use clap::{Parser, Subcommand};
use ringkv_client::{peer_auth::DEFAULT_PEER_PORT, Connector, ScanOptions};

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

    /// Node whose peer port `status`, `ring` and `decommission` ask, as
    /// HOST:PORT. Defaults to --endpoint's host with port 7381.
    #[arg(long, global = true, env = "RINGKV_ADMIN_ENDPOINT")]
    admin_endpoint: Option<String>,

    /// The cluster's --cluster-secret, which signs those Admin calls.
    #[arg(
        long,
        global = true,
        env = "RINGKV_CLUSTER_SECRET",
        hide_env_values = true
    )]
    cluster_secret: Option<String>,

    #[command(flatten)]
    tls: TlsArgs,

    #[command(subcommand)]
    command: Command,
}

/// TLS towards a cluster whose nodes run with `--tls-cert-file`.
#[derive(Debug, clap::Args)]
struct TlsArgs {
    /// CA certificate (PEM) that signed the nodes' certificates; turns TLS on.
    #[arg(long, global = true, env = "RINGKV_TLS_CA_FILE")]
    tls_ca_file: Option<std::path::PathBuf>,
    /// Name to verify in the node's certificate, when the endpoint is an
    /// address the certificate does not name.
    #[arg(long, global = true, env = "RINGKV_TLS_SERVER_NAME")]
    tls_server_name: Option<String>,
    /// Client certificate (PEM), for clusters that require one.
    #[arg(
        long,
        global = true,
        env = "RINGKV_TLS_CLIENT_CERT_FILE",
        requires = "tls_client_key_file"
    )]
    tls_client_cert_file: Option<std::path::PathBuf>,
    /// Key (PEM) of the client certificate.
    #[arg(
        long,
        global = true,
        env = "RINGKV_TLS_CLIENT_KEY_FILE",
        requires = "tls_client_cert_file"
    )]
    tls_client_key_file: Option<std::path::PathBuf>,
}

impl TlsArgs {
    fn connector(&self) -> anyhow::Result<Connector> {
        let Some(ca) = &self.tls_ca_file else {
            if self.tls_client_cert_file.is_some() {
                bail!(
                    "--tls-client-cert-file needs --tls-ca-file: TLS is on only with a CA to trust"
                );
            }
            return Ok(Connector::plaintext());
        };
        let identity = self
            .tls_client_cert_file
            .as_deref()
            .zip(self.tls_client_key_file.as_deref());
        Ok(Connector::tls_from_files(
            ca,
            self.tls_server_name.as_deref(),
            identity,
        )?)
    }
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
    /// Compact the data of the node at --endpoint now, as `nodetool compact`
    /// does: expired values, and tombstones past their grace period that
    /// every replica holds, are purged without waiting for write traffic.
    Compact,
    /// Measure throughput and latency against a running node.
    Bench(bench::BenchArgs),
    /// Run a local cluster of ringkv-node processes on loopback, in the foreground.
    Local(local::LocalArgs),
}

impl Cli {
    /// Where Admin calls go: the peer port of the --endpoint host unless
    /// --admin-endpoint names one.
    fn admin_endpoint(&self) -> String {
        if let Some(explicit) = &self.admin_endpoint {
            return explicit.clone();
        }
        let address = self
            .endpoint
            .split_once("://")
            .map_or(self.endpoint.as_str(), |(_, rest)| rest);
        let host = address.rsplit_once(':').map_or(address, |(host, _)| host);
        format!("{host}:{DEFAULT_PEER_PORT}")
    }
}

pub async fn run(cli: Cli) -> anyhow::Result<()> {
    let mut connector = cli.tls.connector()?;
    if let Some(secret) = &cli.cluster_secret {
        connector = connector.with_cluster_secret(secret.as_bytes(), "ringkv");
    }
    let admin_endpoint = cli.admin_endpoint();
    let connect = |endpoint: &str| {
        let (connector, endpoint) = (connector.clone(), endpoint.to_string());
        async move { anyhow::Ok(connector.client(&endpoint).await?) }
    };
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
            let Some(found) = connect(&cli.endpoint).await?.get(key.as_bytes()).await? else {
                bail!("key {key:?} not found");
            };
            if found.siblings.len() > 1 {
                // stdout carries one value, byte for byte, for scripts.
                eprintln!(
                    "key {key:?} holds {} concurrent values (siblings); printing one. `ringkv put` replaces them all.",
                    found.siblings.len()
                );
            }
            let mut stdout = std::io::stdout().lock();
            stdout.write_all(&found.value)?;
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
        Command::Status => status::run(&connector, &admin_endpoint).await,
        Command::Decommission { node } => {
            connector.decommission(&admin_endpoint, &node).await?;
            println!("{node} is leaving; follow it with `ringkv ring`");
            Ok(())
        }
        Command::Ring => status::ring(&connector, &admin_endpoint).await,
        Command::Compact => {
            let done = connector.compact(&admin_endpoint).await?;
            println!(
                "compacted: {} records dropped, live SST bytes {} -> {}",
                done.records_dropped, done.live_sst_bytes_before, done.live_sst_bytes_after
            );
            Ok(())
        }
        Command::Bench(args) => bench::run(&connector, &cli.endpoint, args).await,
        Command::Local(args) => local::run(args).await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tls_args(args: &[&str]) -> TlsArgs {
        let mut argv = vec!["ringkv"];
        argv.extend_from_slice(args);
        argv.push("status");
        Cli::try_parse_from(argv).expect("parses").tls
    }

    #[test]
    fn admin_calls_go_to_the_endpoints_peer_port_unless_named() {
        let cli = |args: &[&str]| {
            let mut argv = vec!["ringkv"];
            argv.extend_from_slice(args);
            argv.push("status");
            Cli::try_parse_from(argv).expect("parses").admin_endpoint()
        };
        assert_eq!(cli(&[]), "127.0.0.1:7381");
        assert_eq!(cli(&["--endpoint", "10.0.0.5:9000"]), "10.0.0.5:7381");
        assert_eq!(cli(&["--endpoint", "http://db:7379"]), "db:7381");
        assert_eq!(
            cli(&[
                "--endpoint",
                "10.0.0.5:7379",
                "--admin-endpoint",
                "10.0.0.6:17381"
            ]),
            "10.0.0.6:17381"
        );
    }

    #[test]
    fn tls_is_on_only_with_a_ca() {
        let plain = tls_args(&[]).connector().expect("plaintext");
        assert!(!plain.is_tls());

        let dir = tempfile::tempdir().expect("tempdir");
        let ca = dir.path().join("ca.crt");
        std::fs::write(&ca, "-----BEGIN CERTIFICATE-----\n").expect("write");
        let ca = ca.display().to_string();
        let tls = tls_args(&[
            "--tls-ca-file",
            &ca,
            "--tls-server-name",
            "demo.default.svc",
        ])
        .connector()
        .expect("tls");
        assert!(tls.is_tls());

        let missing = tls_args(&["--tls-ca-file", "/nonexistent/ca.crt"])
            .connector()
            .expect_err("missing CA file");
        assert!(
            missing.to_string().contains("/nonexistent/ca.crt"),
            "{missing}"
        );

        let no_ca = tls_args(&[
            "--tls-client-cert-file",
            "/c.crt",
            "--tls-client-key-file",
            "/c.key",
        ])
        .connector()
        .expect_err("a client certificate without a CA");
        assert!(no_ca.to_string().contains("--tls-ca-file"), "{no_ca}");
    }
}
