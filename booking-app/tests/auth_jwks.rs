//! Identity from a real identity provider's keys: ES256 tokens verified against a JWKS read from
//! a file and fetched from a URL (a local HTTP server), including a key rotation picked up
//! without a restart. The key pairs are generated here, per run.

use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use axum::routing::get;
use booking_app::auth::{AuthConfig, AuthError, Verifier};
use jsonwebtoken::jwk::{Jwk, JwkSet};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::json;

/// Ports this test may listen on (the range given to identity tests on shared machines).
const PORTS: std::ops::Range<u16> = 18100..18200;

struct KeyPair {
    kid: String,
    signing: EncodingKey,
    public: Jwk,
}

fn key_pair(kid: &str) -> KeyPair {
    let rng = ring::rand::SystemRandom::new();
    let pkcs8 = ring::signature::EcdsaKeyPair::generate_pkcs8(
        &ring::signature::ECDSA_P256_SHA256_FIXED_SIGNING,
        &rng,
    )
    .expect("generate a P-256 key");
    let signing = EncodingKey::from_ec_der(pkcs8.as_ref());
    let mut public = Jwk::from_encoding_key(&signing, Algorithm::ES256).expect("public JWK");
    public.common.key_id = Some(kid.to_owned());
    KeyPair {
        kid: kid.to_owned(),
        signing,
        public,
    }
}

fn jwks(keys: &[&KeyPair]) -> String {
    serde_json::to_string(&JwkSet {
        keys: keys.iter().map(|k| k.public.clone()).collect(),
    })
    .unwrap()
}

fn token(key: &KeyPair, sub: &str, kid: Option<&str>) -> String {
    let now = jsonwebtoken::get_current_timestamp();
    let mut header = Header::new(Algorithm::ES256);
    header.kid = kid.map(str::to_owned);
    jsonwebtoken::encode(
        &header,
        &json!({"sub": sub, "iss": "https://idp.test", "aud": "booking-app", "exp": now + 600, "roles": ["flashsale:admin"]}),
        &key.signing,
    )
    .unwrap()
}

fn config() -> AuthConfig {
    AuthConfig {
        auth_issuer: Some("https://idp.test".into()),
        auth_audience: Some("booking-app".into()),
        auth_cache_entries: 100,
        auth_jwks_refresh_secs: 300,
        ..AuthConfig::default()
    }
}

#[tokio::test]
async fn es256_tokens_are_verified_against_a_jwks_file() {
    let (k1, k2, stranger) = (key_pair("k1"), key_pair("k2"), key_pair("k1"));
    let dir = std::env::temp_dir().join(format!("auth-jwks-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("jwks.json");
    std::fs::write(&file, jwks(&[&k1, &k2])).unwrap();
    let verifier = Verifier::from_config(&AuthConfig {
        auth_jwks_file: Some(file),
        ..config()
    })
    .await
    .expect("JWKS file loads");

    for key in [&k1, &k2] {
        let identity = verifier
            .verify(&token(key, "erin", Some(&key.kid)))
            .await
            .expect("signed by a key of the set");
        assert_eq!(identity.user, "erin");
        assert!(identity.admin, "admin by role");
    }
    // Same kid, another key: the signature does not verify.
    assert!(matches!(
        verifier.verify(&token(&stranger, "erin", Some("k1"))).await,
        Err(AuthError::Invalid(_))
    ));
    assert!(matches!(
        verifier.verify(&token(&k1, "erin", Some("k9"))).await,
        Err(AuthError::UnknownKey(Some(kid))) if kid == "k9"
    ));
    // Two keys in the set and the token names none: no guessing.
    assert!(matches!(
        verifier.verify(&token(&k1, "erin", None)).await,
        Err(AuthError::UnknownKey(None))
    ));
    // HS256 is not accepted when only a JWKS is configured (no secret to confuse it with).
    let hs = jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        &json!({"sub": "erin", "exp": jsonwebtoken::get_current_timestamp() + 60}),
        &EncodingKey::from_secret(b"0123456789abcdef0123456789abcdef").unwrap(),
    )
    .unwrap();
    assert!(matches!(
        verifier.verify(&hs).await,
        Err(AuthError::Invalid(_))
    ));
    std::fs::remove_dir_all(dir).unwrap();
}

/// Serves whatever `body` holds at `/jwks.json` on the first free port of `PORTS`.
async fn serve_jwks(body: Arc<RwLock<String>>) -> String {
    let app = axum::Router::new().route(
        "/jwks.json",
        get(move || {
            let body = body.read().unwrap().clone();
            async move { body }
        }),
    );
    for port in PORTS {
        if let Ok(listener) = tokio::net::TcpListener::bind(("127.0.0.1", port)).await {
            tokio::spawn(async move { axum::serve(listener, app).await });
            return format!("http://127.0.0.1:{port}/jwks.json");
        }
    }
    panic!("no free port in {PORTS:?}");
}

#[tokio::test]
async fn a_jwks_url_is_fetched_and_a_rotated_key_is_picked_up() {
    let (k1, k2) = (key_pair("k1"), key_pair("k2"));
    let body = Arc::new(RwLock::new(jwks(&[&k1])));
    let url = serve_jwks(body.clone()).await;
    // One verifier refreshing on its slow interval (only an unknown kid fetches early), one
    // refreshing every second.
    let on_miss = Verifier::from_config(&AuthConfig {
        auth_jwks_url: Some(url.clone()),
        ..config()
    })
    .await
    .expect("JWKS URL fetched");
    let periodic = Verifier::from_config(&AuthConfig {
        auth_jwks_url: Some(url),
        auth_jwks_refresh_secs: 1,
        ..config()
    })
    .await
    .expect("JWKS URL fetched");
    assert_eq!(
        on_miss
            .verify(&token(&k1, "frank", Some("k1")))
            .await
            .unwrap()
            .user,
        "frank"
    );

    // The provider rotates in k2.
    *body.write().unwrap() = jwks(&[&k1, &k2]);
    let new = token(&k2, "frank", Some("k2"));
    let started = Instant::now();
    while periodic.verify(&new).await.is_err() {
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "periodic refresh missed k2"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // An unknown kid fetches again, but at most every 10 s: right after start-up it is refused,
    // once that has passed the same token is accepted.
    assert!(matches!(
        on_miss.verify(&new).await,
        Err(AuthError::UnknownKey(_))
    ));
    tokio::time::sleep(Duration::from_secs(11)).await;
    assert_eq!(on_miss.verify(&new).await.unwrap().user, "frank");
}

#[tokio::test]
async fn an_unreachable_jwks_url_fails_start_up() {
    let err = Verifier::from_config(&AuthConfig {
        auth_jwks_url: Some("http://127.0.0.1:1/jwks.json".into()),
        ..config()
    })
    .await
    .err()
    .expect("start-up refused");
    assert!(err.to_string().contains("127.0.0.1:1"), "{err}");
}
