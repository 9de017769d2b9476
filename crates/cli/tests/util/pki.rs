//! Throwaway certificate authorities for the TLS tests.

use std::path::Path;

use rcgen::{BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair};

/// A CA and, signed by it, a server certificate (127.0.0.1, localhost and `extra`, names
/// or IP addresses) and a client certificate, as PEM files named `<prefix>ca.pem`,
/// `<prefix>server.pem`, `<prefix>server.key`, `<prefix>client.pem` and
/// `<prefix>client.key` in `dir`.
pub fn pki_for(dir: &Path, prefix: &str, extra: &[&str]) {
    let ca_key = KeyPair::generate().unwrap();
    let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    p.distinguished_name
        .push(DnType::CommonName, format!("{prefix}test CA"));
    let ca = p.self_signed(&ca_key).unwrap();
    std::fs::write(dir.join(format!("{prefix}ca.pem")), ca.pem()).unwrap();
    for (name, usage) in [
        ("server", ExtendedKeyUsagePurpose::ServerAuth),
        ("client", ExtendedKeyUsagePurpose::ClientAuth),
    ] {
        let key = KeyPair::generate().unwrap();
        let mut names = vec!["localhost".to_string(), "127.0.0.1".to_string()];
        names.extend(extra.iter().map(|n| n.to_string()));
        let mut p = CertificateParams::new(names).unwrap();
        p.extended_key_usages = vec![usage];
        let cert = p.signed_by(&key, &ca, &ca_key).unwrap();
        std::fs::write(dir.join(format!("{prefix}{name}.pem")), cert.pem()).unwrap();
        std::fs::write(dir.join(format!("{prefix}{name}.key")), key.serialize_pem()).unwrap();
    }
}
