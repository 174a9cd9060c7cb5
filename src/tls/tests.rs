use super::*;

fn served(names: &[&str]) -> Served {
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = rcgen::CertificateParams::new(vec!["x".to_string()])
        .unwrap()
        .self_signed(&key)
        .unwrap();
    let provider = provider();
    let der = PrivateKeyDer::try_from(key.serialize_der()).unwrap();
    let signing = provider.key_provider.load_private_key(der).unwrap();
    Served {
        key: Arc::new(CertifiedKey::new(vec![cert.der().clone()], signing)),
        names: names.iter().map(|n| n.to_string()).collect(),
    }
}

#[test]
fn a_wildcard_serves_one_label_below_its_parent() {
    let s = served(&["*.example.com", "api.other.org"]);
    assert!(s.serves("a.example.com"));
    assert!(!s.serves("example.com"));
    assert!(!s.serves("a.b.example.com"));
    assert!(!s.serves(".example.com"));
    assert!(s.serves("api.other.org"));
    assert!(!s.serves("x.api.other.org"));
}

#[test]
fn the_names_and_validity_come_from_the_certificate() {
    let key = rcgen::KeyPair::generate().unwrap();
    let mut params = rcgen::CertificateParams::new(vec![
        "Mixed.Example.COM".to_string(),
        "127.0.0.1".to_string(),
    ])
    .unwrap();
    params.not_before = rcgen::date_time_ymd(2020, 1, 1);
    params.not_after = rcgen::date_time_ymd(2021, 1, 1);
    let cert = params.self_signed(&key).unwrap();
    let info = leaf_info(cert.der()).unwrap();
    // Names lower-cased; an IP address SAN is not a DNS name.
    assert_eq!(info.names, vec!["mixed.example.com"]);
    assert!(info.not_after < SystemTime::now());
    assert!(info.not_before < info.not_after);
}

#[test]
fn io_errors_name_their_reason() {
    let eof = std::io::Error::from(std::io::ErrorKind::UnexpectedEof);
    assert_eq!(failure_reason(&eof), "eof");
    let tls = std::io::Error::new(
        std::io::ErrorKind::InvalidData,
        rustls::Error::InvalidMessage(rustls::InvalidMessage::InvalidContentType),
    );
    assert_eq!(failure_reason(&tls), "not_tls");
    let alert = std::io::Error::new(
        std::io::ErrorKind::InvalidData,
        rustls::Error::AlertReceived(rustls::AlertDescription::UnknownCA),
    );
    assert_eq!(failure_reason(&alert), "alert");
    let reset = std::io::Error::from(std::io::ErrorKind::ConnectionReset);
    assert_eq!(failure_reason(&reset), "io");
}
