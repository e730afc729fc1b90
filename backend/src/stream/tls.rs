//! TLS for the stream server (`enable_tls_streaming`): the configured key pair
//! (`x509_key_pair_streaming`, PEM files), or else a self-signed certificate made at start for
//! the server's address, `localhost` and the host's name, as containerd does. Clients of stream
//! URLs (kubelet's proxy, crictl) do not verify the certificate by default.

use std::net::IpAddr;
use std::sync::Arc;

use crid::config::X509KeyPairStreaming;
use crid::error::{Error, Result};
use rustls::ServerConfig;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

/// The server's TLS configuration from the config's key pair, or a self-signed one.
pub fn server_config(key_pair: &X509KeyPairStreaming, address: IpAddr) -> Result<Arc<ServerConfig>> {
    let (certs, key) = if key_pair.tls_cert_file.is_empty() && key_pair.tls_key_file.is_empty() {
        self_signed(address)?
    } else {
        load(key_pair)?
    };
    let mut config = ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .map_err(|e| Error::internal(format!("stream server TLS: {e}")))?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| Error::invalid(format!("x509_key_pair_streaming: {e}")))?;
    // The stream protocols are HTTP/1.1 upgrades.
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

fn load(key_pair: &X509KeyPairStreaming) -> Result<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>)> {
    let (cert_file, key_file) = (&key_pair.tls_cert_file, &key_pair.tls_key_file);
    let certs = CertificateDer::pem_file_iter(cert_file)
        .and_then(|certs| certs.collect::<std::result::Result<Vec<_>, _>>())
        .map_err(|e| Error::invalid(format!("x509_key_pair_streaming: tls_cert_file {cert_file:?}: {e}")))?;
    if certs.is_empty() {
        return Err(Error::invalid(format!("x509_key_pair_streaming: no certificate in {cert_file:?}")));
    }
    let key = PrivateKeyDer::from_pem_file(key_file)
        .map_err(|e| Error::invalid(format!("x509_key_pair_streaming: tls_key_file {key_file:?}: {e}")))?;
    Ok((certs, key))
}

/// A self-signed certificate naming `address`, `localhost` and the host's name.
fn self_signed(address: IpAddr) -> Result<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>)> {
    let mut names = vec![address.to_string(), "localhost".to_string()];
    if let Ok(host) = nix::unistd::gethostname()
        && let Some(host) = host.to_str().filter(|h| !h.is_empty())
    {
        names.push(host.to_string());
    }
    let generated = rcgen::generate_simple_self_signed(names)
        .map_err(|e| Error::internal(format!("generate the stream server's certificate: {e}")))?;
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(generated.key_pair.serialize_der()));
    Ok((vec![generated.cert.der().clone()], key))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_self_signed_certificate_names_the_address() {
        let (certs, _key) = self_signed("127.0.0.1".parse().unwrap()).unwrap();
        let der = certs[0].as_ref();
        // The IP SAN is the four address bytes; the DNS SAN is the name's text.
        assert!(der.windows(4).any(|w| w == [127, 0, 0, 1]), "no IP SAN");
        assert!(der.windows(9).any(|w| w == b"localhost"), "no localhost SAN");
        server_config(&X509KeyPairStreaming::default(), "127.0.0.1".parse().unwrap()).unwrap();
    }

    #[test]
    fn a_configured_pair_is_loaded_and_bad_files_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let generated = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
        let (cert_file, key_file) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
        std::fs::write(&cert_file, generated.cert.pem()).unwrap();
        std::fs::write(&key_file, generated.key_pair.serialize_pem()).unwrap();
        let pair = X509KeyPairStreaming {
            tls_cert_file: cert_file.to_string_lossy().into_owned(),
            tls_key_file: key_file.to_string_lossy().into_owned(),
        };
        let (certs, _) = load(&pair).unwrap();
        assert_eq!(certs[0].as_ref(), generated.cert.der().as_ref());
        server_config(&pair, "127.0.0.1".parse().unwrap()).unwrap();

        let missing = X509KeyPairStreaming { tls_key_file: "/nonexistent/key.pem".into(), ..pair.clone() };
        let error = server_config(&missing, "127.0.0.1".parse().unwrap()).unwrap_err();
        assert!(error.message.contains("/nonexistent/key.pem"), "{error}");
        std::fs::write(&cert_file, "not a certificate").unwrap();
        let error = server_config(&pair, "127.0.0.1".parse().unwrap()).unwrap_err();
        assert!(error.message.contains("no certificate"), "{error}");
    }
}
