//! TLS for the gRPC listeners and for the connections to peers.
//!
//! One certificate serves both directions: the node presents it to its
//! clients and peers, and to the peers it dials, which ask for it when the
//! cluster requires client certificates. Peers are dialled by IP address,
//! which certificates rarely name, so every node verifies one agreed name
//! (the operator uses the peers Service's DNS name).
//!
//! The node terminates TLS itself, in its accept loop, rather than through
//! tonic: the loop then reads the HTTP/2 frames inside, so the header
//! timeout holds under TLS too, and it bounds the whole TLS handshake.

use std::{
    path::{Path, PathBuf},
    sync::Arc,
};

use rustls_pki_types::{pem::PemObject, CertificateDer, PrivateKeyDer, ServerName};
use tokio_rustls::{
    rustls::{
        self, crypto::ring::default_provider, server::WebPkiClientVerifier, RootCertStore,
        ServerConfig,
    },
    TlsAcceptor,
};
use tonic::transport::{Certificate, ClientTlsConfig, Identity};

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
    #[error("{what} {path} holds no usable PEM: {source}")]
    Pem {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: rustls_pki_types::pem::Error,
    },
    #[error("{what} {path} holds no certificate")]
    NoCertificate { what: &'static str, path: PathBuf },
    #[error("the TLS server configuration was refused: {0}")]
    Config(#[from] rustls::Error),
    #[error("the CA in --tls-ca-file cannot verify client certificates: {0}")]
    ClientVerifier(#[from] rustls::server::VerifierBuilderError),
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
#[derive(Clone)]
pub struct NodeTls {
    /// Takes the TLS handshake of an accepted connection.
    pub acceptor: TlsAcceptor,
    pub client: ClientTlsConfig,
    /// The name every node's certificate carries; the peer port checks
    /// callers' certificates against it.
    pub node_name: ServerName<'static>,
}

impl std::fmt::Debug for NodeTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NodeTls")
            .field("client", &self.client)
            .field("node_name", &self.node_name)
            .finish_non_exhaustive()
    }
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
        let ca = read("CA certificate", files.ca)?;
        let acceptor = acceptor(files, &cert, &key, &ca)?;
        let identity = Identity::from_pem(cert, key);
        let client = ClientTlsConfig::new()
            .ca_certificate(Certificate::from_pem(ca))
            .domain_name(files.server_name)
            .identity(identity);
        Ok(Self {
            acceptor,
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

/// The server side: the node's certificate, client certificates checked
/// against the CA (required under `--tls-client-auth`), HTTP/2 by ALPN.
fn acceptor(
    files: &TlsFiles<'_>,
    cert: &[u8],
    key: &[u8],
    ca: &[u8],
) -> Result<TlsAcceptor, TlsError> {
    let pem = |what: &'static str, path: &Path| {
        let path = path.to_path_buf();
        move |source| TlsError::Pem { what, path, source }
    };
    let chain = CertificateDer::pem_slice_iter(cert)
        .collect::<Result<Vec<_>, _>>()
        .map_err(pem("certificate", files.cert))?;
    if chain.is_empty() {
        return Err(TlsError::NoCertificate {
            what: "certificate",
            path: files.cert.to_path_buf(),
        });
    }
    let key = PrivateKeyDer::from_pem_slice(key).map_err(pem("key", files.key))?;
    let mut roots = RootCertStore::empty();
    for ca in CertificateDer::pem_slice_iter(ca) {
        roots.add(ca.map_err(pem("CA certificate", files.ca))?)?;
    }
    if roots.is_empty() {
        return Err(TlsError::NoCertificate {
            what: "CA certificate",
            path: files.ca.to_path_buf(),
        });
    }
    let provider = Arc::new(default_provider());
    let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone());
    let verifier = if files.client_auth {
        verifier.build()?
    } else {
        verifier.allow_unauthenticated().build()?
    };
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_client_cert_verifier(verifier)
        .with_single_cert(chain, key)?;
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(TlsAcceptor::from(Arc::new(config)))
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

    #[test]
    fn a_file_without_a_certificate_is_named() {
        let dir = tempfile::tempdir().expect("tempdir");
        for file in ["tls.crt", "tls.key", "ca.crt"] {
            std::fs::write(dir.path().join(file), "not PEM").expect("write");
        }
        let error = NodeTls::from_flags(
            Some(&dir.path().join("tls.crt")),
            Some(&dir.path().join("tls.key")),
            Some(&dir.path().join("ca.crt")),
            Some("ringkv.test"),
            false,
        )
        .expect_err("no certificate");
        assert!(
            matches!(&error, TlsError::NoCertificate { path, .. } if path.ends_with("tls.crt")),
            "{error}"
        );
    }
}
