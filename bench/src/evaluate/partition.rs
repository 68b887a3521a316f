//! A network partition on loopback: each node runs under a uid of its own,
//! and nftables drops what one node's uid sends to the others' addresses
//! and what their uids send to its address. Addresses alone cannot do it:
//! connections on loopback leave from 127.0.0.1 whatever their destination.
//! The rules live in one table of their own, removed on heal and on drop.

use std::{net::Ipv4Addr, process::Stdio};

use crate::BenchError;

const TABLE: &str = "ringkv_evaluate";

/// The rules in force; dropping it heals.
pub struct Partition {
    healed: bool,
}

/// Whether this machine lets us add nftables rules, with the reason if not.
pub fn check_available() -> Result<(), BenchError> {
    let status = std::process::Command::new("nft")
        .args(["list", "tables"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .map_err(|e| BenchError::io("running nft (Debian: nftables)", e))?;
    if status.success() {
        Ok(())
    } else {
        Err(BenchError::Process {
            what: "nft list tables".into(),
            message: format!("{status}: nftables is not usable here (root is needed)"),
        })
    }
}

impl Partition {
    /// Cuts the node `(uid, address)` off from every other node.
    pub fn isolate(node: (u32, Ipv4Addr), others: &[(u32, Ipv4Addr)]) -> Result<Self, BenchError> {
        let other_addresses = others
            .iter()
            .map(|(_, address)| address.to_string())
            .collect::<Vec<_>>()
            .join(", ");
        let other_uids = others
            .iter()
            .map(|(uid, _)| uid.to_string())
            .collect::<Vec<_>>()
            .join(", ");
        let script = format!(
            "table inet {TABLE} {{\n  chain output {{\n    type filter hook output priority 0; policy accept;\n    \
             meta skuid {} ip daddr {{ {other_addresses} }} drop\n    \
             meta skuid {{ {other_uids} }} ip daddr {} drop\n  }}\n}}\n",
            node.0, node.1
        );
        // Whatever an earlier, interrupted run left behind goes first.
        delete_table();
        run_nft(&script)?;
        Ok(Self { healed: false })
    }

    pub fn heal(mut self) {
        delete_table();
        self.healed = true;
    }
}

impl Drop for Partition {
    fn drop(&mut self) {
        if !self.healed {
            delete_table();
        }
    }
}

fn run_nft(script: &str) -> Result<(), BenchError> {
    use std::io::Write;
    let mut child = std::process::Command::new("nft")
        .args(["-f", "-"])
        .stdin(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| BenchError::io("running nft", e))?;
    if let Some(stdin) = child.stdin.as_mut() {
        stdin
            .write_all(script.as_bytes())
            .map_err(|e| BenchError::io("writing nft rules", e))?;
    }
    let output = child
        .wait_with_output()
        .map_err(|e| BenchError::io("running nft", e))?;
    if output.status.success() {
        Ok(())
    } else {
        Err(BenchError::Process {
            what: "nft -f".into(),
            message: String::from_utf8_lossy(&output.stderr).trim().to_string(),
        })
    }
}

fn delete_table() {
    let _ = std::process::Command::new("nft")
        .args(["delete", "table", "inet", TABLE])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
}
