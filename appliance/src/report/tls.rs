//! TLS for the feed (`mqtts://`): rustls with the *ring* provider, the broker's certificate
//! checked against `mqtt.ca_file` only (not the system's roots: the regulator runs its own
//! CA), and the appliance's client certificate from `mqtt.client_cert_file` and
//! `mqtt.client_key_file`.

use super::config::MqttConfig;
use anyhow::{bail, Context};
use std::path::Path;
use std::sync::Arc;

fn certs(
    path: &Path,
    key: &str,
) -> anyhow::Result<Vec<rustls::pki_types::CertificateDer<'static>>> {
    let pem = std::fs::read(path)
        .with_context(|| format!("mqtt.{key}: cannot read {}", path.display()))?;
    let certs = rustls_pemfile::certs(&mut pem.as_slice())
        .collect::<Result<Vec<_>, _>>()
        .with_context(|| format!("mqtt.{key}: {} is not PEM", path.display()))?;
    if certs.is_empty() {
        bail!(
            "mqtt.{key}: {} holds no certificate (expected PEM blocks `-----BEGIN CERTIFICATE-----`)",
            path.display()
        );
    }
    Ok(certs)
}

/// The rustls client configuration for `m` (an `mqtts://` url).
pub fn client_config(m: &MqttConfig) -> anyhow::Result<rumqttc::TlsConfiguration> {
    let Some(ca_file) = &m.ca_file else {
        bail!("mqtt.ca_file: {:?} is TLS; set ca_file to the PEM file of the CA that signed the broker's certificate", m.url);
    };
    let mut roots = rustls::RootCertStore::empty();
    for c in certs(ca_file, "ca_file")? {
        roots.add(c).with_context(|| {
            format!(
                "mqtt.ca_file: {} holds a certificate rustls cannot use",
                ca_file.display()
            )
        })?;
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .context("TLS: no protocol version available")?
        .with_root_certificates(roots);
    let config = match (&m.client_cert_file, &m.client_key_file) {
        (Some(cert), Some(key)) => {
            let chain = certs(cert, "client_cert_file")?;
            let pem = std::fs::read(key)
                .with_context(|| format!("mqtt.client_key_file: cannot read {}", key.display()))?;
            let private = rustls_pemfile::private_key(&mut pem.as_slice())
                .with_context(|| format!("mqtt.client_key_file: {} is not PEM", key.display()))?
                .with_context(|| {
                    format!(
                        "mqtt.client_key_file: {} holds no private key (PKCS#8, RSA or SEC1 PEM)",
                        key.display()
                    )
                })?;
            builder.with_client_auth_cert(chain, private).context(
                "mqtt.client_cert_file / client_key_file: the key does not fit the certificate, or is of a kind rustls cannot use",
            )?
        }
        (None, None) => builder.with_no_client_auth(),
        _ => bail!("mqtt.client_cert_file and mqtt.client_key_file: set both or neither"),
    };
    Ok(rumqttc::TlsConfiguration::Rustls(Arc::new(config)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(m: &MqttConfig) -> String {
        match client_config(m) {
            Ok(_) => panic!("accepted"),
            Err(e) => format!("{e:#}"),
        }
    }

    #[test]
    fn unusable_files_are_named_with_their_key() {
        let dir = crate::testutil::temp_dir("tls");
        let junk = dir.join("junk.pem");
        std::fs::write(&junk, "not a certificate\n").expect("write");
        let mut m = MqttConfig {
            url: "mqtts://127.0.0.1:8883".into(),
            ..MqttConfig::default()
        };
        assert!(err(&m).contains("mqtt.ca_file"));
        m.ca_file = Some(junk.clone());
        let e = err(&m);
        assert!(
            e.contains("mqtt.ca_file") && e.contains("no certificate"),
            "{e}"
        );
        m.ca_file = Some(dir.join("missing.pem"));
        let e = err(&m);
        assert!(e.contains("mqtt.ca_file: cannot read"), "{e}");
    }
}
