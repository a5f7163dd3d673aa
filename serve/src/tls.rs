//! TLS for `kpbuild serve`: a certificate and key given as PEM files, or a CA and a server
//! certificate made here for the names given (`--tls-self-signed NAME…`, written to
//! `--tls-dir`, reused when they already name the same hosts), and the rustls server
//! configuration (ring provider, HTTP/1.1 by ALPN).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, bail};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

/// The files `--tls-self-signed` writes in its directory.
pub struct SelfSigned {
    pub ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
    /// Whether they were made now (or reused).
    pub made: bool,
}

const NAMES_FILE: &str = "names.txt";

/// Writes (or reuses) `ca.pem`, `ca-key.pem`, `server.pem`, `server-key.pem` in `dir` for the
/// server `names` (DNS names or IP addresses).
pub fn self_signed(dir: &Path, names: &[String]) -> anyhow::Result<SelfSigned> {
    let files = SelfSigned {
        ca: dir.join("ca.pem"),
        cert: dir.join("server.pem"),
        key: dir.join("server-key.pem"),
        made: false,
    };
    let wanted = names.join("\n");
    if std::fs::read_to_string(dir.join(NAMES_FILE))
        .ok()
        .as_deref()
        == Some(wanted.as_str())
        && files.ca.is_file()
        && files.cert.is_file()
        && files.key.is_file()
    {
        return Ok(files);
    }
    std::fs::create_dir_all(dir)
        .with_context(|| format!("creating {} for the self-signed CA", dir.display()))?;
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new())?;
    ca_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "kpbuild serve CA");
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Constrained(0));
    ca_params.key_usages = vec![
        rcgen::KeyUsagePurpose::KeyCertSign,
        rcgen::KeyUsagePurpose::CrlSign,
        rcgen::KeyUsagePurpose::DigitalSignature,
    ];
    let (from, until) = validity_years();
    ca_params.not_before = rcgen::date_time_ymd(from, 1, 1);
    ca_params.not_after = rcgen::date_time_ymd(until, 1, 1);
    let ca_key = rcgen::KeyPair::generate()?;
    let ca = rcgen::CertifiedIssuer::self_signed(ca_params, ca_key)?;
    let mut params = rcgen::CertificateParams::new(names.to_vec()).with_context(|| {
        format!(
            "--tls-self-signed {}: not DNS names or IP addresses",
            wanted
        )
    })?;
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, names[0].clone());
    params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth];
    params.key_usages = vec![rcgen::KeyUsagePurpose::DigitalSignature];
    params.not_before = rcgen::date_time_ymd(from, 1, 1);
    params.not_after = rcgen::date_time_ymd(until, 1, 1);
    let key = rcgen::KeyPair::generate()?;
    let cert = params.signed_by(&key, &ca)?;
    let write = |p: &Path, text: String, private: bool| -> anyhow::Result<()> {
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        let _ = std::fs::remove_file(p);
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(if private { 0o600 } else { 0o644 })
            .open(p)
            .with_context(|| format!("writing {}", p.display()))?;
        f.write_all(text.as_bytes())
            .with_context(|| format!("writing {}", p.display()))
    };
    write(&files.ca, ca.pem(), false)?;
    write(&dir.join("ca-key.pem"), ca.key().serialize_pem(), true)?;
    write(&files.cert, cert.pem(), false)?;
    write(&files.key, key.serialize_pem(), true)?;
    write(&dir.join(NAMES_FILE), wanted, false)?;
    Ok(SelfSigned {
        made: true,
        ..files
    })
}

/// The years certificates are valid from and until: from the first of January of last year
/// (clocks of nodes differ) for ten years.
fn validity_years() -> (i32, i32) {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let year = 1970 + (secs / 31_556_952) as i32;
    (year - 1, year + 10)
}

/// How to trust the CA, for the person starting the server.
pub fn trust_help(ca: &Path, names: &[String], ports: &[u16]) -> String {
    let ca = ca.display();
    let mut s = format!(
        "kpbuild serve: TLS with a CA made here: {ca}\n\
         trust it on every node that pulls from this server:\n\
         \x20 Debian/Ubuntu: cp {ca} /usr/local/share/ca-certificates/kpbuild-serve.crt && update-ca-certificates\n\
         \x20 RHEL/Rocky:    cp {ca} /etc/pki/ca-trust/source/anchors/kpbuild-serve.pem && update-ca-trust\n"
    );
    for n in names {
        for p in ports {
            s.push_str(&format!(
                "  Docker:        mkdir -p /etc/docker/certs.d/{n}:{p} && cp {ca} /etc/docker/certs.d/{n}:{p}/ca.crt\n"
            ));
        }
    }
    for n in names {
        for p in ports {
            s.push_str(&format!(
                "  containerd:    /etc/containerd/certs.d/{n}:{p}/hosts.toml: [host.\"https://{n}:{p}\"] ca = \"{ca}\"\n"
            ));
        }
    }
    s.push_str(&format!(
        "\
         \x20 curl, skopeo:  curl --cacert {ca} …; skopeo … --src-cert-dir <dir with ca.pem renamed ca.crt>"
    ));
    s
}

/// A rustls server configuration from PEM files (the first certificate is the server's, the
/// rest its chain).
pub fn server_config(cert: &Path, key: &Path) -> anyhow::Result<Arc<rustls::ServerConfig>> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .with_context(|| format!("reading the certificate {}", cert.display()))?
        .collect::<Result<_, _>>()
        .with_context(|| format!("{}: not a PEM certificate file", cert.display()))?;
    if certs.is_empty() {
        bail!(
            "{}: holds no PEM certificate (-----BEGIN CERTIFICATE-----)",
            cert.display()
        );
    }
    let key = PrivateKeyDer::from_pem_file(key).with_context(|| {
        format!(
            "{}: no PEM private key (PKCS#8, PKCS#1 or SEC1)",
            key.display()
        )
    })?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .with_context(|| format!("{} and its key do not go together", cert.display()))?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_self_signed_ca_is_made_once_per_set_of_names_and_loads() {
        let d = tempfile::tempdir().unwrap();
        let names = vec!["localhost".to_string(), "127.0.0.1".to_string()];
        let a = self_signed(d.path(), &names).unwrap();
        assert!(a.made);
        server_config(&a.cert, &a.key).unwrap();
        let ca = std::fs::read(&a.ca).unwrap();
        let b = self_signed(d.path(), &names).unwrap();
        assert!(!b.made);
        assert_eq!(std::fs::read(&b.ca).unwrap(), ca);
        let c = self_signed(d.path(), &["other".to_string()]).unwrap();
        assert!(c.made);
        assert_ne!(std::fs::read(&c.ca).unwrap(), ca);
        let help = trust_help(&c.ca, &["other".into()], &[5443]);
        assert!(
            help.contains("/etc/docker/certs.d/other:5443/ca.crt"),
            "{help}"
        );
        let e = server_config(&c.ca, &d.path().join("nope.pem")).unwrap_err();
        assert!(format!("{e:#}").contains("nope.pem"), "{e:#}");
    }
}
