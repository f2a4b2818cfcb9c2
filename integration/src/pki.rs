//! A test certificate authority made with rcgen: real X.509 certificates,
//! keys and CRLs written as PEM files, for the TLS tests and the cluster
//! harness's TLS mode.
//!
//! Every leaf certificate carries both the server and the client usage and
//! the names `localhost` and `127.0.0.1`, so one certificate serves an
//! agent, etcd or vtorc's gRPC server and authenticates a client.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use anyhow::Context;
use rcgen::{
    BasicConstraints, CertificateParams, CertificateRevocationListParams, DnType, ExtendedKeyUsagePurpose,
    IsCa, Issuer, KeyIdMethod, KeyPair, KeyUsagePurpose, RevokedCertParams, SerialNumber,
};
use vtorc::config::TlsFiles;

/// A certificate and its key on disk.
#[derive(Clone, Debug)]
pub struct CertFiles {
    /// Certificate (PEM).
    pub cert: PathBuf,
    /// Private key (PEM, PKCS#8).
    pub key: PathBuf,
    /// Serial number (what a CRL revokes).
    pub serial: u64,
}

/// One CA in a directory.
pub struct TestPki {
    dir: PathBuf,
    name: String,
    params: CertificateParams,
    key: KeyPair,
    next_serial: AtomicU64,
    crl_number: AtomicU64,
}

impl std::fmt::Debug for TestPki {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestPki")
            .field("dir", &self.dir)
            .field("name", &self.name)
            .finish()
    }
}

impl TestPki {
    /// A new CA named `name`; its certificate is written to `<dir>/<name>-ca.pem`.
    pub fn new(dir: &Path, name: &str) -> anyhow::Result<TestPki> {
        std::fs::create_dir_all(dir).with_context(|| format!("create {}", dir.display()))?;
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        params
            .distinguished_name
            .push(DnType::CommonName, format!("{name} test CA"));
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        params.key_identifier_method = KeyIdMethod::Sha256;
        let key = KeyPair::generate()?;
        let cert = params.self_signed(&key)?;
        let pki = TestPki {
            dir: dir.to_path_buf(),
            name: name.to_string(),
            params,
            key,
            next_serial: AtomicU64::new(1000),
            crl_number: AtomicU64::new(1),
        };
        std::fs::write(pki.ca_path(), cert.pem()).context("write the CA certificate")?;
        Ok(pki)
    }

    /// `<dir>/<name>-ca.pem`.
    pub fn ca_path(&self) -> PathBuf {
        self.dir.join(format!("{}-ca.pem", self.name))
    }

    /// `<dir>/<name>-crl.pem` (written by [`TestPki::write_crl`]).
    pub fn crl_path(&self) -> PathBuf {
        self.dir.join(format!("{}-crl.pem", self.name))
    }

    /// Issues a certificate for `localhost`/`127.0.0.1` named `file_name`
    /// (`<dir>/<file_name>.pem` and `<dir>/<file_name>-key.pem`, replaced
    /// if they exist).
    pub fn issue(&self, file_name: &str) -> anyhow::Result<CertFiles> {
        let serial = self.next_serial.fetch_add(1, Ordering::Relaxed);
        let mut params = CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()])?;
        params.distinguished_name.push(DnType::CommonName, file_name);
        params.serial_number = Some(SerialNumber::from(serial));
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        let key = KeyPair::generate()?;
        let issuer = Issuer::from_params(&self.params, &self.key);
        let cert = params.signed_by(&key, &issuer)?;
        let files = CertFiles {
            cert: self.dir.join(format!("{file_name}.pem")),
            key: self.dir.join(format!("{file_name}-key.pem")),
            serial,
        };
        // Write to temporary names and rename: a reader never sees half a file.
        write_atomically(&files.key, key.serialize_pem().as_bytes())?;
        write_atomically(&files.cert, cert.pem().as_bytes())?;
        Ok(files)
    }

    /// Writes a CRL of this CA revoking `revoked` to [`TestPki::crl_path`].
    pub fn write_crl(&self, revoked: &[&CertFiles]) -> anyhow::Result<PathBuf> {
        let now = time_now();
        let params = CertificateRevocationListParams {
            this_update: now,
            next_update: now + std::time::Duration::from_secs(24 * 3600),
            crl_number: SerialNumber::from(self.crl_number.fetch_add(1, Ordering::Relaxed)),
            issuing_distribution_point: None,
            revoked_certs: revoked
                .iter()
                .map(|c| RevokedCertParams {
                    serial_number: SerialNumber::from(c.serial),
                    revocation_time: now,
                    reason_code: None,
                    invalidity_date: None,
                })
                .collect(),
            key_identifier_method: KeyIdMethod::Sha256,
        };
        let issuer = Issuer::from_params(&self.params, &self.key);
        let crl = params.signed_by(&issuer)?;
        let path = self.crl_path();
        write_atomically(&path, crl.pem()?.as_bytes())?;
        Ok(path)
    }

    /// TLS files of a server or client using `own` and trusting this CA
    /// (with client certificates required, for a server).
    pub fn tls_files(&self, own: &CertFiles) -> TlsFiles {
        TlsFiles {
            ca: Some(self.ca_path()),
            cert: Some(own.cert.clone()),
            key: Some(own.key.clone()),
            crl: None,
            server_name: None,
        }
    }
}

/// Now, a little in the past (clock skew between writing and checking).
fn time_now() -> time::OffsetDateTime {
    time::OffsetDateTime::now_utc() - std::time::Duration::from_secs(60)
}

fn write_atomically(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, bytes).with_context(|| format!("write {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("rename to {}", path.display()))?;
    Ok(())
}
