//! A 3-node Apache Cassandra cluster from Maven Central's jars, on the
//! machine's Java 17, each node on its own loopback address with a 1 GiB
//! heap. Nodes start one at a time: each waits for the previous one's CQL
//! port, as Cassandra's own docs ask for a new cluster.

use std::{
    net::{Ipv4Addr, SocketAddr},
    path::{Path, PathBuf},
    time::Duration,
};

use tokio::process::Command;

use super::process::{nth_address, wait_listening, Process};
use crate::BenchError;

const CQL_PORT: u16 = 9042;

/// The module flags of Cassandra's own conf/jvm17-server.options.
const JVM17_FLAGS: &[&str] = &[
    "-Djdk.attach.allowAttachSelf=true",
    "--add-exports=java.base/jdk.internal.misc=ALL-UNNAMED",
    "--add-exports=java.management.rmi/com.sun.jmx.remote.internal.rmi=ALL-UNNAMED",
    "--add-exports=java.rmi/sun.rmi.registry=ALL-UNNAMED",
    "--add-exports=java.rmi/sun.rmi.server=ALL-UNNAMED",
    "--add-exports=java.sql/java.sql=ALL-UNNAMED",
    "--add-exports=java.base/java.lang.ref=ALL-UNNAMED",
    "--add-exports=jdk.unsupported/sun.misc=ALL-UNNAMED",
    "--add-exports=jdk.compiler/com.sun.tools.javac.file=ALL-UNNAMED",
    "--add-exports=jdk.attach/sun.tools.attach=ALL-UNNAMED",
    "--add-opens=java.base/java.lang.module=ALL-UNNAMED",
    "--add-opens=java.base/jdk.internal.loader=ALL-UNNAMED",
    "--add-opens=java.base/jdk.internal.ref=ALL-UNNAMED",
    "--add-opens=java.base/jdk.internal.reflect=ALL-UNNAMED",
    "--add-opens=java.base/jdk.internal.math=ALL-UNNAMED",
    "--add-opens=java.base/jdk.internal.module=ALL-UNNAMED",
    "--add-opens=java.base/jdk.internal.util.jar=ALL-UNNAMED",
    "--add-opens=jdk.management/com.sun.management.internal=ALL-UNNAMED",
    "--add-opens=java.base/sun.nio.ch=ALL-UNNAMED",
    "--add-opens=java.base/java.io=ALL-UNNAMED",
    "--add-opens=java.base/java.lang.reflect=ALL-UNNAMED",
    "--add-opens=jdk.compiler/com.sun.tools.javac=ALL-UNNAMED",
    "--add-opens=java.base/java.lang=ALL-UNNAMED",
    "--add-opens=java.base/java.util=ALL-UNNAMED",
    "-Dio.netty.tryReflectionSetAccessible=true",
    "-XX:+UseG1GC",
];

#[derive(Debug, Clone)]
pub struct CassandraSettings {
    pub java: PathBuf,
    /// The jars `mvn dependency:copy-dependencies` collected.
    pub lib_dir: PathBuf,
    pub logback: PathBuf,
    /// `batch` syncs the commit log before acknowledging, like ringkv's
    /// `sync`; `periodic` (Cassandra's default) acknowledges first.
    pub commitlog_sync_batch: bool,
}

pub struct CassandraCluster {
    nodes: Vec<Process>,
    endpoints: Vec<String>,
    data_root: PathBuf,
    pub version: String,
}

impl CassandraCluster {
    pub async fn start(
        settings: &CassandraSettings,
        data_root: &Path,
        first_address: Ipv4Addr,
        count: usize,
    ) -> Result<Self, BenchError> {
        let _ = std::fs::remove_dir_all(data_root);
        let version = version_of(&settings.lib_dir)?;
        let classpath = classpath(&settings.lib_dir)?;
        let seeds = nth_address(first_address, 0);
        let mut nodes = Vec::new();
        let mut endpoints = Vec::new();
        for i in 0..count {
            let ip = nth_address(first_address, i);
            let dir = data_root.join(format!("node-{}", i + 1));
            let config = dir.join("cassandra.yaml");
            write_config(&config, &dir, ip, seeds, settings.commitlog_sync_batch)?;
            let mut command = Command::new(&settings.java);
            command
                .arg("-Xms1G")
                .arg("-Xmx1G")
                .args(JVM17_FLAGS)
                .arg("-Dcassandra-foreground=yes")
                .arg(format!("-Dcassandra.config=file://{}", config.display()))
                .arg(format!("-Dcassandra.storagedir={}", dir.display()))
                .arg(format!("-Dcassandra.logdir={}", dir.display()))
                .arg(format!(
                    "-Dlogback.configurationFile={}",
                    settings.logback.display()
                ))
                .arg("-Dcassandra.skip_wait_for_gossip_to_settle=0")
                .arg("-Djava.net.preferIPv4Stack=true")
                .arg("-cp")
                .arg(&classpath)
                .arg("org.apache.cassandra.service.CassandraDaemon");
            let mut process = Process::spawn(
                &format!("cassandra node-{}", i + 1),
                command,
                &dir.join("cassandra.log"),
            )?;
            let cql = SocketAddr::from((ip, CQL_PORT));
            wait_listening(&mut process, cql, Duration::from_secs(300)).await?;
            nodes.push(process);
            endpoints.push(cql.to_string());
        }
        Ok(Self {
            nodes,
            endpoints,
            data_root: data_root.to_path_buf(),
            version,
        })
    }

    pub fn endpoints(&self) -> Vec<String> {
        self.endpoints.clone()
    }

    pub fn pids(&self) -> Vec<u32> {
        self.nodes.iter().filter_map(Process::pid).collect()
    }

    pub async fn stop(mut self) {
        for node in &mut self.nodes {
            node.stop(Duration::from_secs(30)).await;
        }
        let _ = std::fs::remove_dir_all(&self.data_root);
    }
}

fn classpath(lib_dir: &Path) -> Result<String, BenchError> {
    let entries = std::fs::read_dir(lib_dir)
        .map_err(|e| BenchError::io(format!("reading {}", lib_dir.display()), e))?;
    let mut jars: Vec<String> = entries
        .filter_map(|entry| entry.ok().map(|e| e.path()))
        .filter(|path| path.extension().is_some_and(|ext| ext == "jar"))
        .map(|path| path.display().to_string())
        .collect();
    if jars.is_empty() {
        return Err(BenchError::Config(format!(
            "no jars in {}; run scripts/evaluate.sh, which collects them with Maven",
            lib_dir.display()
        )));
    }
    jars.sort();
    Ok(jars.join(":"))
}

fn version_of(lib_dir: &Path) -> Result<String, BenchError> {
    let entries = std::fs::read_dir(lib_dir)
        .map_err(|e| BenchError::io(format!("reading {}", lib_dir.display()), e))?;
    Ok(entries
        .filter_map(|entry| entry.ok())
        .filter_map(|entry| {
            let name = entry.file_name().to_string_lossy().to_string();
            Some(
                name.strip_prefix("cassandra-all-")?
                    .strip_suffix(".jar")?
                    .to_string(),
            )
        })
        .next()
        .unwrap_or_else(|| "unknown".into()))
}

/// The settings a node needs; everything else keeps Cassandra's defaults.
fn write_config(
    path: &Path,
    dir: &Path,
    ip: Ipv4Addr,
    seed: Ipv4Addr,
    commitlog_sync_batch: bool,
) -> Result<(), BenchError> {
    let commitlog = if commitlog_sync_batch {
        "commitlog_sync: batch\n".to_string()
    } else {
        "commitlog_sync: periodic\ncommitlog_sync_period: 10000ms\n".to_string()
    };
    let dir = dir.display();
    let yaml = format!(
        "cluster_name: ringkv-bench\n\
         num_tokens: 16\n\
         allocate_tokens_for_local_replication_factor: 3\n\
         partitioner: org.apache.cassandra.dht.Murmur3Partitioner\n\
         auto_bootstrap: false\n\
         {commitlog}\
         seed_provider:\n  - class_name: org.apache.cassandra.locator.SimpleSeedProvider\n    parameters:\n      - seeds: \"{seed}:7000\"\n\
         listen_address: {ip}\n\
         rpc_address: {ip}\n\
         storage_port: 7000\n\
         native_transport_port: {CQL_PORT}\n\
         start_native_transport: true\n\
         endpoint_snitch: SimpleSnitch\n\
         data_file_directories:\n  - {dir}/data\n\
         commitlog_directory: {dir}/commitlog\n\
         saved_caches_directory: {dir}/saved_caches\n\
         hints_directory: {dir}/hints\n\
         cdc_raw_directory: {dir}/cdc_raw\n\
         concurrent_reads: 32\n\
         concurrent_writes: 32\n"
    );
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)
            .map_err(|e| BenchError::io(format!("creating {}", parent.display()), e))?;
    }
    std::fs::write(path, yaml).map_err(|e| BenchError::io(format!("writing {}", path.display()), e))
}
