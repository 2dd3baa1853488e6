//! The client speaks TLS to an `https` provider: against a local TLS server
//! whose certificate a test CA signed, it succeeds when `ca_file` names that
//! CA and fails without it; plain `http` to another machine is refused.

use std::sync::Arc;

use qrgate_provider::client::{ClientError, ProviderClient, ProviderConfig};
use qrgate_provider::sign;
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

struct Pki {
    ca_pem: String,
    cert: CertificateDer<'static>,
    key: PrivateKeyDer<'static>,
}

fn pki() -> Pki {
    let ca_key = KeyPair::generate().expect("ca key");
    let mut ca = CertificateParams::new(Vec::<String>::new()).expect("ca params");
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.distinguished_name
        .push(DnType::CommonName, "qrgate test CA");
    let ca_cert = ca.self_signed(&ca_key).expect("ca cert");
    let key = KeyPair::generate().expect("server key");
    let params = CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()])
        .expect("server params");
    let cert = params
        .signed_by(&key, &ca_cert, &ca_key)
        .expect("server cert");
    Pki {
        ca_pem: ca_cert.pem(),
        cert: cert.der().clone(),
        key: PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der())),
    }
}

/// A TLS server answering the OAuth code exchange.
fn serve(pki: &Pki) -> (String, actix_web::dev::ServerHandle) {
    use actix_web::{web, App, HttpResponse, HttpServer};
    #[allow(deprecated)]
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_no_client_auth()
        .with_single_cert(vec![pki.cert.clone()], pki.key.clone_key())
        .expect("server config");
    let server = HttpServer::new(|| {
        App::new().route(
            "/sns/oauth2/access_token",
            web::get().to(|| async {
                HttpResponse::Ok().json(serde_json::json!({
                    "access_token": "at", "refresh_token": "rt", "openid": "o-tls",
                    "expires_in": 7200, "scope": "snsapi_base"
                }))
            }),
        )
    })
    .workers(1)
    .bind_rustls_0_23("127.0.0.1:0", config)
    .expect("bind");
    let addr = server.addrs()[0];
    let server = server.run();
    let handle = server.handle();
    actix_web::rt::spawn(server);
    (format!("https://localhost:{}", addr.port()), handle)
}

fn config(
    dir: &std::path::Path,
    base_url: &str,
    ca_file: Option<std::path::PathBuf>,
) -> ProviderConfig {
    let merchant = dir.join("merchant.pem");
    let platform = dir.join("platform.pem");
    if !merchant.exists() {
        let (private, _) = sign::generate_keypair().expect("keys");
        let (_, public) = sign::generate_keypair().expect("keys");
        sign::save_private_key(&merchant, &private).expect("save");
        sign::save_public_key(&platform, &public).expect("save");
    }
    ProviderConfig {
        base_url: base_url.into(),
        mchid: "1900000001".into(),
        appid: "wx-test".into(),
        app_secret: "secret".into(),
        merchant_key_file: merchant,
        merchant_serial: "M".into(),
        platform_public_key_file: platform,
        platform_serial: "P".into(),
        api_v3_key: "0123456789abcdefghijklmnopqrstuv".into(),
        timeout_ms: 5000,
        platform_certificates: Vec::new(),
        transfer_scene: Default::default(),
        transfer_remark: "奖励提现".into(),
        // The test's TLS server plays WeChat's OAuth host too.
        oauth_base_url: Some(base_url.into()),
        authorize_url: None,
        ca_file,
    }
}

#[actix_web::test]
async fn https_to_the_provider_trusts_the_configured_ca_and_nothing_else() {
    let dir = tempfile::tempdir().expect("tempdir");
    let pki = pki();
    let ca = dir.path().join("ca.pem");
    std::fs::write(&ca, &pki.ca_pem).expect("write ca");
    let (url, _server) = serve(&pki);

    let trusting = ProviderClient::new(&config(dir.path(), &url, Some(ca))).expect("client");
    let tokens = trusting
        .exchange_code("code-1")
        .await
        .expect("exchanged over TLS");
    assert_eq!(tokens.openid, "o-tls");

    // The system's roots alone do not know the test CA. (A machine with no
    // roots at all refuses to build the client: that is a failure too.)
    if let Ok(strict) = ProviderClient::new(&config(dir.path(), &url, None)) {
        match strict.exchange_code("code-2").await {
            Err(ClientError::Unavailable(e)) => assert!(!e.is_empty()),
            other => panic!("an unknown CA must fail the handshake: {other:?}"),
        }
    }

    // Plain http: only to this machine.
    let far = ProviderClient::new(&config(dir.path(), "http://api.example.com", None));
    assert!(matches!(far, Err(ClientError::Config(_))), "{far:?}");
    assert!(ProviderClient::new(&config(dir.path(), "http://127.0.0.1:9", None)).is_ok());
}
