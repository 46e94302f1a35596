//! The ceiling for `make bench`: an endpoint that only signs the same kind of JWT the token
//! endpoint issues, with the same key ring and signing code, and no client authentication,
//! form parsing, registry lookup or metrics. Prints its address, then serves until killed.

use axum::Router;
use axum::routing::post;
use k8s_openapi::jiff::Timestamp;
use kauth::crd::KeyAlgorithm;
use kauth::keys::{KeyRing, KeySet, generate_key};
use kauth::tokens::{AccessTokenClaims, Audience, new_jti, sign};

#[tokio::main]
async fn main() {
    let key = generate_key(KeyAlgorithm::ES256, Timestamp::now()).expect("key");
    let (ring, _) = KeyRing::from_sets([&KeySet {
        keys: vec![key],
        ..Default::default()
    }]);
    let app = Router::new().route(
        "/sign",
        post(move || {
            let ring = ring.clone();
            async move {
                let now = Timestamp::now();
                let claims = AccessTokenClaims {
                    iss: "http://127.0.0.1:8080".into(),
                    sub: "shop.shop-backend".into(),
                    aud: Audience::from_list(vec!["https://orders.example.com".into()]),
                    client_id: "shop.shop-backend".into(),
                    scope: Some("orders.read".into()),
                    jti: new_jti(),
                    iat: now.as_second(),
                    exp: now.as_second() + 900,
                    cnf: None,
                    acr: None,
                };
                let token = sign(&ring, &claims, now).expect("sign");
                axum::Json(serde_json::json!({"access_token": token, "token_type": "Bearer", "expires_in": 900}))
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    println!("{}", listener.local_addr().expect("addr"));
    axum::serve(listener, app).await.expect("serve");
}
