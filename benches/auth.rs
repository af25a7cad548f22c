//! JWT verification, the per-subscriber cost JWT authorization adds to opening a stream: one
//! verification (signature, time, issuer/audience, grant patterns) plus the coverage check of the
//! requested topics. HS256 with a 32-byte secret and RS256 with a 2048-bit key (the test keys).

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use jsonwebtoken::{encode, Algorithm, EncodingKey, Header};
use serde_json::json;
use sseloop::auth::{check_subscribe, Verifier, VerifyOptions};

const SECRET: &[u8] = b"bench-secret-of-at-least-32-bytes!";

fn keys_dir() -> String {
    format!("{}/tests/keys", env!("CARGO_MANIFEST_DIR"))
}

fn bench(c: &mut Criterion) {
    let exp = jsonwebtoken::get_current_timestamp() + 3600;
    // A realistic browser token: a subject, an issuer and audience, a few grants.
    let claims = json!({
        "sub": "user-8c1f", "iss": "https://auth.example", "aud": "sseloop", "exp": exp,
        "sseloop": {"subscribe": ["users/8c1f/*", "news/*", "status"], "publish": ["users/8c1f/out"]}
    });
    let options = VerifyOptions {
        issuer: Some("https://auth.example".into()),
        audience: Some("sseloop".into()),
        leeway_secs: 5,
    };
    let pem = |name: &str| std::fs::read(format!("{}/{name}", keys_dir())).expect("test key");
    let cases = [
        (
            "hs256",
            Verifier::from_secret(SECRET, &options).expect("secret"),
            encode(
                &Header::new(Algorithm::HS256),
                &claims,
                &EncodingKey::from_secret(SECRET),
            )
            .expect("sign"),
        ),
        (
            "rs256",
            Verifier::from_public_key_pem(&pem("rsa.pub"), &options).expect("public key"),
            encode(
                &Header::new(Algorithm::RS256),
                &claims,
                &EncodingKey::from_rsa_pem(&pem("rsa.key")).expect("private key"),
            )
            .expect("sign"),
        ),
    ];
    let wanted = ["users/8c1f/inbox", "news/*"];
    let mut group = c.benchmark_group("jwt_verify");
    group.throughput(Throughput::Elements(1));
    for (name, verifier, token) in &cases {
        group.bench_function(*name, |b| {
            b.iter(|| {
                let grants = verifier
                    .verify(std::hint::black_box(token.as_bytes()))
                    .expect("valid token");
                check_subscribe(&grants, &wanted).expect("covered");
                grants.expires_at
            })
        });
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
