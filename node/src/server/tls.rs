//! TLS for the gRPC listener and for the connections to peers.
//!
//! One certificate serves both directions: the node presents it to its
//! clients and peers, and to the peers it dials, which ask for it when the
//! cluster requires client certificates. Peers are dialled by IP address,
//! which certificates rarely name, so every node verifies one agreed name
//! (the operator uses the peers Service's DNS name).

use std::path::{Path, PathBuf};

use rustls_pki_types::ServerName;
use tonic::transport::{Certificate, ClientTlsConfig, Identity, ServerTlsConfig};

/// Why TLS could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("reading {what} {path}: {source}")]
    Read {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{0}")]
    Incomplete(&'static str),
    #[error("--tls-server-name {name:?} is not a DNS name or IP address: {reason}")]
    ServerName { name: String, reason: String },
}

/// The files and choices behind a node's TLS.
#[derive(Debug, Clone)]
pub struct TlsFiles<'a> {
    pub cert: &'a Path,
    pub key: &'a Path,
    pub ca: &'a Path,
    pub server_name: &'a str,
    /// Refuse clients without a certificate signed by the CA.
    pub client_auth: bool,
}

/// Server and client halves of a node's TLS.
#[derive(Debug, Clone)]
pub struct NodeTls {
    pub server: ServerTlsConfig,
    pub client: ClientTlsConfig,
    /// The name every node's certificate carries; the peer port checks
    /// callers' certificates against it.
    pub node_name: ServerName<'static>,
}

impl NodeTls {
    pub fn load(files: &TlsFiles<'_>) -> Result<Self, TlsError> {
        let node_name = ServerName::try_from(files.server_name.to_string()).map_err(|error| {
            TlsError::ServerName {
                name: files.server_name.to_string(),
                reason: error.to_string(),
            }
        })?;
        let cert = read("certificate", files.cert)?;
        let key = read("key", files.key)?;
        let ca = Certificate::from_pem(read("CA certificate", files.ca)?);
        let identity = Identity::from_pem(cert, key);
        let server = ServerTlsConfig::new()
            .identity(identity.clone())
            .client_ca_root(ca.clone())
            .client_auth_optional(!files.client_auth);
        let client = ClientTlsConfig::new()
            .ca_certificate(ca)
            .domain_name(files.server_name)
            .identity(identity);
        Ok(Self {
            server,
            client,
            node_name,
        })
    }

    /// TLS from the node's flags: all of cert, key, CA and server name, or
    /// none of them.
    pub fn from_flags(
        cert: Option<&Path>,
        key: Option<&Path>,
        ca: Option<&Path>,
        server_name: Option<&str>,
        client_auth: bool,
    ) -> Result<Option<Self>, TlsError> {
        match (cert, key, ca, server_name) {
            (None, None, None, None) if !client_auth => Ok(None),
            (Some(cert), Some(key), Some(ca), Some(server_name)) => Ok(Some(Self::load(&TlsFiles {
                cert,
                key,
                ca,
                server_name,
                client_auth,
            })?)),
            _ => Err(TlsError::Incomplete(
                "TLS needs --tls-cert-file, --tls-key-file, --tls-ca-file and --tls-server-name together \
                 (peers verify each other against the CA, under the server name)",
            )),
        }
    }
}

fn read(what: &'static str, path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read {
        what,
        path: path.to_path_buf(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn all_or_nothing() {
        assert!(NodeTls::from_flags(None, None, None, None, false)
            .expect("plaintext")
            .is_none());
        let partial = NodeTls::from_flags(
            Some(Path::new("/c.pem")),
            Some(Path::new("/k.pem")),
            None,
            None,
            false,
        )
        .expect_err("no CA");
        assert!(partial.to_string().contains("--tls-ca-file"), "{partial}");
        let auth_alone = NodeTls::from_flags(None, None, None, None, true).expect_err("auth alone");
        assert!(matches!(auth_alone, TlsError::Incomplete(_)));
    }

    #[test]
    fn a_missing_file_is_named() {
        let missing = NodeTls::from_flags(
            Some(Path::new("/nonexistent/tls.crt")),
            Some(Path::new("/nonexistent/tls.key")),
            Some(Path::new("/nonexistent/ca.crt")),
            Some("ringkv.test"),
            false,
        )
        .expect_err("missing files");
        assert!(
            missing.to_string().contains("/nonexistent/tls.crt"),
            "{missing}"
        );
    }
}
