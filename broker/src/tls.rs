//! TLS for SSL listeners (rustls, no OpenSSL): the server configuration built from PEM
//! files, reloaded on SIGHUP and when the files change, and the principal a client
//! certificate names.

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};

use anyhow::{anyhow, bail, Context as _};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::{RootCertStore, ServerConfig};
use tokio_util::sync::CancellationToken;

use crate::config::{ClientAuth, Config};

/// The TLS settings SSL listeners use now; replaced as a whole on reload.
pub struct Tls {
    current: RwLock<Arc<ServerConfig>>,
    files: Files,
}

#[derive(Clone)]
struct Files {
    cert: PathBuf,
    key: PathBuf,
    truststore: Option<PathBuf>,
    client_auth: ClientAuth,
}

impl Tls {
    /// Loads the files `config` names; `None` when no listener uses SSL.
    pub fn from_config(config: &Config) -> anyhow::Result<Option<Arc<Tls>>> {
        let specs = config.listener_specs()?;
        if !specs.iter().any(|s| s.protocol.tls()) {
            return Ok(None);
        }
        let files = Files {
            cert: config
                .ssl_certificate_location
                .clone()
                .context("ssl_certificate_location is not set")?,
            key: config
                .ssl_key_location
                .clone()
                .context("ssl_key_location is not set")?,
            truststore: config.ssl_truststore_location.clone(),
            client_auth: config.client_auth()?,
        };
        let server = build(&files)?;
        Ok(Some(Arc::new(Tls {
            current: RwLock::new(Arc::new(server)),
            files,
        })))
    }

    /// The configuration for the next handshake.
    pub fn acceptor(&self) -> tokio_rustls::TlsAcceptor {
        tokio_rustls::TlsAcceptor::from(self.current.read().unwrap().clone())
    }

    /// Loads the files again; on failure the configuration in use stays.
    pub fn reload(&self) -> anyhow::Result<()> {
        let server = build(&self.files)?;
        *self.current.write().unwrap() = Arc::new(server);
        Ok(())
    }

    /// Reloads on SIGHUP and, every `interval` (if not zero), when a file's modification
    /// time or size changed.
    pub async fn watch(self: Arc<Self>, interval: Duration, cancel: CancellationToken) {
        let mut hup = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) {
            Ok(s) => Some(s),
            Err(e) => {
                tracing::warn!(error = %e, "cannot watch SIGHUP; certificates reload only when their files change");
                None
            }
        };
        let mut seen = self.stamps();
        loop {
            let tick = async {
                if interval.is_zero() {
                    std::future::pending::<()>().await
                } else {
                    tokio::time::sleep(interval).await
                }
            };
            let hup_signal = async {
                match hup.as_mut() {
                    Some(h) => {
                        h.recv().await;
                    }
                    None => std::future::pending::<()>().await,
                }
            };
            let why = tokio::select! {
                _ = cancel.cancelled() => return,
                _ = tick => "changed",
                _ = hup_signal => "SIGHUP",
            };
            let now = self.stamps();
            if why == "changed" && now == seen {
                continue;
            }
            seen = now;
            match self.reload() {
                Ok(()) => {
                    ::metrics::counter!("strata_tls_reloads_total", "result" => "ok").increment(1);
                    tracing::info!(trigger = why, cert = %self.files.cert.display(), "TLS certificate reloaded");
                }
                Err(e) => {
                    ::metrics::counter!("strata_tls_reloads_total", "result" => "error")
                        .increment(1);
                    tracing::error!(trigger = why, error = %format!("{e:#}"), "TLS files did not load; the previous certificate stays in use");
                }
            }
        }
    }

    fn stamps(&self) -> Vec<Option<(SystemTime, u64)>> {
        let f = &self.files;
        [Some(&f.cert), Some(&f.key), f.truststore.as_ref()]
            .into_iter()
            .flatten()
            .map(|p| {
                std::fs::metadata(p)
                    .ok()
                    .and_then(|m| Some((m.modified().ok()?, m.len())))
            })
            .collect()
    }
}

fn read(path: &Path, what: &str) -> anyhow::Result<Vec<u8>> {
    std::fs::read(path).with_context(|| format!("cannot read the {what} {}", path.display()))
}

fn certificates(path: &Path, what: &str) -> anyhow::Result<Vec<CertificateDer<'static>>> {
    let pem = read(path, what)?;
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .with_context(|| format!("the {what} {} is not PEM", path.display()))?;
    if certs.is_empty() {
        bail!("the {what} {} holds no certificate", path.display());
    }
    Ok(certs)
}

fn build(files: &Files) -> anyhow::Result<ServerConfig> {
    let chain = certificates(&files.cert, "certificate")?;
    // An expired (or not yet valid) certificate is refused: on reload the one in use stays,
    // rather than every client being turned away.
    let (_, leaf) = x509_parser::parse_x509_certificate(chain[0].as_ref()).map_err(|e| {
        anyhow!(
            "the certificate {} does not parse: {e}",
            files.cert.display()
        )
    })?;
    if !leaf.validity().is_valid() {
        bail!(
            "the certificate {} is valid from {} to {}, not now",
            files.cert.display(),
            leaf.validity().not_before,
            leaf.validity().not_after
        );
    }
    let key_pem = read(&files.key, "key")?;
    let key = PrivateKeyDer::from_pem_slice(&key_pem)
        .map_err(|e| anyhow!("the key {} holds no private key: {e}", files.key.display()))?;
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .context("TLS protocol versions")?;
    let builder = match (&files.truststore, files.client_auth) {
        (_, ClientAuth::None) | (None, _) => builder.with_no_client_auth(),
        (Some(trust), auth) => {
            let mut roots = RootCertStore::empty();
            for c in certificates(trust, "truststore")? {
                roots
                    .add(c)
                    .with_context(|| format!("a CA certificate in {}", trust.display()))?;
            }
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider);
            let verifier = if auth == ClientAuth::Requested {
                verifier.allow_unauthenticated()
            } else {
                verifier
            };
            builder.with_client_cert_verifier(verifier.build().context("client verifier")?)
        }
    };
    let mut config = builder.with_single_cert(chain, key).with_context(|| {
        format!(
            "the key {} does not match the certificate {}",
            files.key.display(),
            files.cert.display()
        )
    })?;
    // Kafka clients do not negotiate ALPN; answer without it.
    config.alpn_protocols.clear();
    Ok(config)
}

/// The principal a client certificate names: `User:` and its subject in RFC 2253 form (most
/// specific attribute first, as Kafka prints it), e.g. `User:CN=alice,O=example`.
pub fn principal_of(cert: &CertificateDer<'_>) -> Option<String> {
    let (_, parsed) = x509_parser::parse_x509_certificate(cert.as_ref()).ok()?;
    let mut rdns: Vec<String> = Vec::new();
    for rdn in parsed.subject().iter() {
        let attrs: Vec<String> = rdn
            .iter()
            .map(|a| {
                let oid = a.attr_type();
                let name =
                    x509_parser::objects::oid2abbrev(oid, x509_parser::objects::oid_registry())
                        .map(str::to_string)
                        .unwrap_or_else(|_| oid.to_id_string());
                let value = a.as_str().map(str::to_string).unwrap_or_else(|_| {
                    format!(
                        "#{}",
                        a.attr_value()
                            .data
                            .iter()
                            .map(|b| format!("{b:02x}"))
                            .collect::<String>()
                    )
                });
                format!("{name}={}", escape(&value))
            })
            .collect();
        rdns.push(attrs.join("+"));
    }
    rdns.reverse();
    Some(format!("User:{}", rdns.join(",")))
}

/// RFC 2253 escaping of an attribute value.
fn escape(v: &str) -> String {
    let mut out = String::with_capacity(v.len());
    for (i, c) in v.chars().enumerate() {
        let special = matches!(c, ',' | '+' | '"' | '\\' | '<' | '>' | ';')
            || (i == 0 && (c == '#' || c == ' '))
            || (i + 1 == v.chars().count() && c == ' ');
        if special {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_certificates_name_their_subject_as_kafka_prints_it() {
        let mut params = rcgen::CertificateParams::new(vec!["alice".to_string()]).unwrap();
        params.distinguished_name = rcgen::DistinguishedName::new();
        params
            .distinguished_name
            .push(rcgen::DnType::CountryName, "DE");
        params
            .distinguished_name
            .push(rcgen::DnType::OrganizationName, "Example, Inc.");
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "alice");
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = params.self_signed(&key).unwrap();
        let principal = principal_of(cert.der()).unwrap();
        assert_eq!(principal, r"User:CN=alice,O=Example\, Inc.,C=DE");
        assert_eq!(principal_of(&CertificateDer::from(vec![1, 2, 3])), None);
    }

    #[test]
    fn rfc2253_escapes() {
        assert_eq!(escape("a,b+c"), r"a\,b\+c");
        assert_eq!(escape("#x "), r"\#x\ ");
        assert_eq!(escape("plain"), "plain");
    }
}
