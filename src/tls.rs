//! HTTPS on the provider's listener. The certificate and key are PEM files (a cert-manager
//! Secret mounted as a volume, say) read again whenever they change: new handshakes get the
//! new certificate, connections already open keep theirs. For local development standalone
//! can make a throwaway CA and a certificate signed by it (`--tls self-signed`).

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arc_swap::ArcSwap;
use rustls::crypto::aws_lc_rs;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use tokio_rustls::TlsAcceptor;

/// How often the certificate files are looked at. cert-manager renews well before expiry, so
/// a few seconds late is nothing; reading two small files this often costs nothing either.
const LOOK_EVERY: Duration = Duration::from_secs(2);

/// The provider's certificate (both flags or neither; without them it serves plain HTTP).
#[derive(clap::Args, Clone, Debug, Default)]
pub struct TlsOptions {
    /// PEM certificate chain (leaf first) the provider serves HTTPS with; read again when it
    /// changes.
    #[arg(long, env = "KAUTH_TLS_CERT_FILE", requires = "tls_key_file")]
    pub tls_cert_file: Option<PathBuf>,
    /// PEM private key of that certificate (PKCS#8, PKCS#1 or SEC1).
    #[arg(long, env = "KAUTH_TLS_KEY_FILE", requires = "tls_cert_file")]
    pub tls_key_file: Option<PathBuf>,
}

/// `--tls` in standalone.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum TlsMode {
    /// A throwaway local CA (kept in the state folder) signs a certificate for the issuer's
    /// host; trust the CA it prints.
    SelfSigned,
}

/// How the provider's listener serves.
#[derive(Clone, Debug, Default)]
pub enum TlsChoice {
    /// Plain HTTP (behind a proxy that terminates TLS, or for local development).
    #[default]
    Off,
    /// HTTPS with these PEM files, read again when they change.
    Files { cert: PathBuf, key: PathBuf },
    /// HTTPS with a certificate from a local CA made in this folder.
    LocalCa(PathBuf),
}

impl TlsOptions {
    /// What the flags ask for (clap makes sure both files or neither are given).
    pub fn choice(&self) -> TlsChoice {
        match (&self.tls_cert_file, &self.tls_key_file) {
            (Some(cert), Some(key)) => TlsChoice::Files {
                cert: cert.clone(),
                key: key.clone(),
            },
            _ => TlsChoice::Off,
        }
    }
}

impl TlsChoice {
    /// The scheme of the issuer URL this listener can serve.
    pub fn scheme(&self) -> &'static str {
        match self {
            Self::Off => "http",
            _ => "https",
        }
    }

    /// The certificate to serve for `host` (None: plain HTTP).
    pub fn certificate(&self, host: &str) -> Result<Option<Served>, TlsError> {
        Ok(match self {
            Self::Off => None,
            Self::Files { cert, key } => Some(Served {
                cert: ReloadingCert::load(cert, key)?,
                local_ca: None,
            }),
            Self::LocalCa(dir) => {
                let made = local_ca(dir, host)?;
                Some(Served {
                    cert: ReloadingCert::load(&made.cert, &made.key)?,
                    local_ca: Some(made.ca),
                })
            }
        })
    }
}

/// The certificate a listener serves.
pub struct Served {
    pub cert: Arc<ReloadingCert>,
    /// The local CA's certificate, when kauth made one: what clients are to trust.
    pub local_ca: Option<PathBuf>,
}

/// Why a certificate could not be used.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("{path}: {reason}")]
    Invalid { path: PathBuf, reason: String },
    #[error("cannot make a local certificate: {0}")]
    Generate(String),
}

fn invalid(path: &Path, reason: impl ToString) -> TlsError {
    TlsError::Invalid {
        path: path.to_path_buf(),
        reason: reason.to_string(),
    }
}

fn read(path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read {
        path: path.to_path_buf(),
        source,
    })
}

/// The certificate chain and key of two PEM texts, checked to belong together.
fn certified_key(cert_path: &Path, cert: &[u8], key_path: &Path, key: &[u8]) -> Result<CertifiedKey, TlsError> {
    let chain = CertificateDer::pem_slice_iter(cert)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| invalid(cert_path, format!("not a PEM certificate chain: {e}")))?;
    if chain.is_empty() {
        return Err(invalid(cert_path, "holds no CERTIFICATE block"));
    }
    let key = PrivateKeyDer::from_pem_slice(key).map_err(|e| invalid(key_path, format!("no PEM private key: {e}")))?;
    let provider = aws_lc_rs::default_provider();
    let key = provider
        .key_provider
        .load_private_key(key)
        .map_err(|e| invalid(key_path, format!("unusable private key: {e}")))?;
    let certified = CertifiedKey::new(chain, key);
    certified
        .keys_match()
        .map_err(|e| invalid(key_path, format!("is not the key of {}: {e}", cert_path.display())))?;
    Ok(certified)
}

/// The certificate the provider serves, swapped when its files change.
pub struct ReloadingCert {
    cert_path: PathBuf,
    key_path: PathBuf,
    current: ArcSwap<CertifiedKey>,
    /// The file contents `current` was made from.
    loaded_from: Mutex<(Vec<u8>, Vec<u8>)>,
}

impl std::fmt::Debug for ReloadingCert {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReloadingCert").field("cert", &self.cert_path).finish()
    }
}

impl ReloadingCert {
    /// Reads the certificate and key; fails when they cannot be served.
    pub fn load(cert_path: &Path, key_path: &Path) -> Result<Arc<Self>, TlsError> {
        let (cert, key) = (read(cert_path)?, read(key_path)?);
        let certified = certified_key(cert_path, &cert, key_path, &key)?;
        Ok(Arc::new(Self {
            cert_path: cert_path.to_path_buf(),
            key_path: key_path.to_path_buf(),
            current: ArcSwap::from_pointee(certified),
            loaded_from: Mutex::new((cert, key)),
        }))
    }

    /// Reads the files again; swaps the certificate in when they changed and make a valid
    /// pair. Returns whether it swapped. A pair caught halfway through an update (or broken)
    /// is reported and the previous certificate stays.
    pub fn reload(&self) -> Result<bool, TlsError> {
        let (cert, key) = (read(&self.cert_path)?, read(&self.key_path)?);
        let mut loaded = self.loaded_from.lock().unwrap_or_else(|p| p.into_inner());
        if loaded.0 == cert && loaded.1 == key {
            return Ok(false);
        }
        let certified = certified_key(&self.cert_path, &cert, &self.key_path, &key)?;
        self.current.store(Arc::new(certified));
        *loaded = (cert, key);
        Ok(true)
    }

    /// Looks at the files every [`LOOK_EVERY`] for ever.
    pub async fn follow(self: Arc<Self>) {
        let mut failing = false;
        loop {
            tokio::time::sleep(LOOK_EVERY).await;
            let this = self.clone();
            match tokio::task::spawn_blocking(move || this.reload()).await {
                Ok(Ok(true)) => {
                    failing = false;
                    tracing::info!(cert = %self.cert_path.display(), "TLS certificate reloaded");
                }
                Ok(Ok(false)) => failing = false,
                Ok(Err(e)) => {
                    if !failing {
                        tracing::warn!(error = %e, "TLS certificate not reloaded; serving the previous one");
                    }
                    failing = true;
                }
                Err(e) => tracing::warn!(error = %e, "TLS reload task failed"),
            }
        }
    }

    /// A TLS acceptor serving this certificate (HTTP/1.1; TLS 1.2 and 1.3).
    pub fn acceptor(self: &Arc<Self>) -> TlsAcceptor {
        let mut config = rustls::ServerConfig::builder_with_provider(Arc::new(aws_lc_rs::default_provider()))
            .with_safe_default_protocol_versions()
            .expect("the aws-lc-rs provider supports the default TLS versions")
            .with_no_client_auth()
            .with_cert_resolver(self.clone());
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        TlsAcceptor::from(Arc::new(config))
    }
}

impl ResolvesServerCert for ReloadingCert {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current.load_full())
    }
}

/// The files of a throwaway local CA and a certificate it signed.
#[derive(Clone, Debug)]
pub struct LocalCa {
    /// The CA certificate: what clients trust (`curl --cacert`, `certificate-authority`).
    pub ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// Makes (in `dir`, once) a local CA and a certificate for `host` and the loopback
/// addresses, signed by it. Kept across restarts, so a browser or kubeconfig that trusts the
/// CA keeps working; made again when `host` is not among the names it was made for.
pub fn local_ca(dir: &Path, host: &str) -> Result<LocalCa, TlsError> {
    let files = LocalCa {
        ca: dir.join("ca.crt"),
        cert: dir.join("tls.crt"),
        key: dir.join("tls.key"),
    };
    let names_file = dir.join("names");
    let mut names = vec![host.to_string(), "localhost".into(), "127.0.0.1".into(), "::1".into()];
    names.dedup();
    let wanted = names.join("\n");
    let made_for = std::fs::read_to_string(&names_file).unwrap_or_default();
    if made_for == wanted && files.ca.exists() && ReloadingCert::load(&files.cert, &files.key).is_ok() {
        return Ok(files);
    }
    let fail = |e: rcgen::Error| TlsError::Generate(e.to_string());
    let ca_key = rcgen::KeyPair::generate().map_err(fail)?;
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).map_err(fail)?;
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Constrained(0));
    ca_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "kauth standalone local CA");
    ca_params.key_usages = vec![rcgen::KeyUsagePurpose::KeyCertSign, rcgen::KeyUsagePurpose::CrlSign];
    let ca_cert = ca_params.self_signed(&ca_key).map_err(fail)?;
    let issuer = rcgen::Issuer::new(ca_params, ca_key);
    let leaf_key = rcgen::KeyPair::generate().map_err(fail)?;
    let mut leaf = rcgen::CertificateParams::new(names).map_err(fail)?;
    leaf.distinguished_name.push(rcgen::DnType::CommonName, host);
    leaf.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth];
    let leaf_cert = leaf.signed_by(&leaf_key, &issuer).map_err(fail)?;
    std::fs::create_dir_all(dir).map_err(|source| TlsError::Read {
        path: dir.to_path_buf(),
        source,
    })?;
    let write = |path: &Path, text: &str, private: bool| {
        crate::files::replace(path, text.as_bytes(), if private { 0o600 } else { 0o644 }).map_err(|source| {
            TlsError::Read {
                path: path.to_path_buf(),
                source,
            }
        })
    };
    write(&files.key, &leaf_key.serialize_pem(), true)?;
    write(&files.cert, &format!("{}{}", leaf_cert.pem(), ca_cert.pem()), false)?;
    write(&files.ca, &ca_cert.pem(), false)?;
    write(&names_file, &wanted, false)?;
    Ok(files)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_local_ca_signs_a_certificate_that_loads_and_reloads() {
        let dir = tempfile::tempdir().unwrap();
        let made = local_ca(dir.path(), "auth.localhost").unwrap();
        let served = ReloadingCert::load(&made.cert, &made.key).unwrap();
        assert!(!served.reload().unwrap(), "unchanged files are not loaded again");
        let first = std::fs::read(&made.ca).unwrap();
        let again = local_ca(dir.path(), "auth.localhost").unwrap();
        assert_eq!(std::fs::read(&again.ca).unwrap(), first, "kept across restarts");
        local_ca(dir.path(), "other.localhost").unwrap();
        assert_ne!(std::fs::read(&made.ca).unwrap(), first, "made again for another host");
        assert!(served.reload().unwrap(), "changed files are swapped in");
    }

    #[test]
    fn a_key_of_another_certificate_or_a_broken_file_is_refused_and_the_old_one_stays() {
        let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let (a, b) = (local_ca(a.path(), "a").unwrap(), local_ca(b.path(), "b").unwrap());
        let mixed = ReloadingCert::load(&a.cert, &b.key).unwrap_err().to_string();
        assert!(mixed.contains("is not the key of"), "{mixed}");
        let served = ReloadingCert::load(&a.cert, &a.key).unwrap();
        let before = served.current.load_full();
        std::fs::write(&a.cert, "-----BEGIN CERTIFICATE-----\nbroken").unwrap();
        assert!(served.reload().is_err());
        assert!(
            Arc::ptr_eq(&before, &served.current.load_full()),
            "the previous one stays"
        );
        std::fs::write(&a.cert, "").unwrap();
        let empty = served.reload().unwrap_err().to_string();
        assert!(empty.contains("no CERTIFICATE"), "{empty}");
    }
}
