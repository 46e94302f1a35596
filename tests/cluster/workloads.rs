//! Secretless workloads: ServiceAccount tokens as client credentials and for token
//! exchange, and TokenReview refusing a bound token once its object is gone.

use crate::harness::*;

/// A secretless client of its namespace's own API ([`own_api`]).
fn m2m_client_for_sa(ns: &str, sa: &str) -> OAuthClient {
    serde_json::from_value(json!({
        "apiVersion": "kauth.dev/v1alpha1", "kind": "OAuthClient",
        "metadata": {"name": sa, "namespace": ns},
        "spec": {"serviceAccount": sa, "scopes": [format!("api.{ns}")]}
    }))
    .unwrap()
}

#[tokio::test]
#[ignore = "needs a cluster: make test-cluster"]
async fn service_account_tokens_are_client_credentials() {
    use kauth::workload_identity::{JWT_BEARER_ASSERTION, JWT_TOKEN_TYPE, TOKEN_EXCHANGE_GRANT};
    let (client, id, kns, [ns, other_ns, api_ns]) = setup(["team", "other", "api"]).await;
    service_account(&client, &ns, "backend").await;
    service_account(&client, &ns, "frontend").await;
    service_account(&client, &other_ns, "backend").await;
    let audience = format!("https://api-{id}.example.com");
    let scope: Scope = serde_json::from_value(json!({
        "apiVersion": "kauth.dev/v1alpha1", "kind": "Scope",
        "metadata": {"name": "read", "namespace": api_ns},
        "spec": {"value": format!("sa.read.{id}"), "audience": audience, "grantedTo": {"namespaces": [ns]}}
    }))
    .unwrap();
    create(&client, &scope).await;
    let kauth = Kauth::start(&kns, "sa", None).await;
    let oac: OAuthClient = serde_json::from_value(json!({
        "apiVersion": "kauth.dev/v1alpha1", "kind": "OAuthClient",
        "metadata": {"name": "backend", "namespace": ns},
        "spec": {
            "serviceAccount": "backend",
            "grantTypes": ["client_credentials", "urn:ietf:params:oauth:grant-type:token-exchange"],
            "scopes": [format!("sa.read.{id}")]
        }
    }))
    .unwrap();
    create(&client, &oac).await;
    let ready = ready_client(&client, &ns, "backend").await;
    let conditions = ready.status.unwrap().conditions;
    assert!(
        conditions
            .iter()
            .any(|c| c.type_ == "SecretReady" && c.reason == "ServiceAccount")
    );
    assert!(
        Api::<Secret>::namespaced(client.clone(), &ns)
            .get_opt("backend-oauth")
            .await
            .unwrap()
            .is_none(),
        "no Secret is written"
    );

    let assert_with = |token: String| {
        let url = kauth.url.clone();
        async move {
            post_token(
                &url,
                None,
                &[
                    ("grant_type", "client_credentials"),
                    ("client_assertion_type", JWT_BEARER_ASSERTION),
                    ("client_assertion", &token),
                ],
            )
            .await
        }
    };
    let good = mint(&client, &ns, "backend", &kauth.url).await;
    wait_until("ServiceAccount token accepted", Duration::from_secs(5), async || {
        assert_with(good.clone()).await.0 == 200
    })
    .await;
    let (_, body) = assert_with(good.clone()).await;
    let claims = jsonwebtoken::dangerous::insecure_decode::<Value>(body["access_token"].as_str().unwrap())
        .unwrap()
        .claims;
    assert_eq!(
        claims["sub"],
        format!("client:{ns}.backend"),
        "never a person's subject"
    );
    assert_eq!(claims["aud"], audience.as_str());

    let refused = [
        (
            "another ServiceAccount",
            mint(&client, &ns, "frontend", &kauth.url).await,
        ),
        (
            "another namespace",
            mint(&client, &other_ns, "backend", &kauth.url).await,
        ),
        (
            "wrong audience",
            mint(&client, &ns, "backend", "https://not-kauth.example.com").await,
        ),
        ("unknown key", {
            let stranger = kauth::keys::generate_key(kauth::crd::KeyAlgorithm::RS256, jiff::Timestamp::now()).unwrap();
            let good_claims = jsonwebtoken::dangerous::insecure_decode::<Value>(&good).unwrap().claims;
            let mut h = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::RS256);
            h.kid = Some("not-a-cluster-key".into());
            jsonwebtoken::encode(&h, &good_claims, &stranger.encoding_key().unwrap()).unwrap()
        }),
    ];
    for (what, token) in refused {
        let (status, body) = assert_with(token).await;
        assert_eq!(
            (status, body["error"].as_str()),
            (401, Some("invalid_client")),
            "{what}: {body}"
        );
    }
    // Expired: signed with the cluster's own key (only where the harness started the cluster).
    if let Ok(key_path) = std::env::var("KAUTH_SA_SIGNING_KEY") {
        let header = jsonwebtoken::decode_header(&good).unwrap();
        let mut claims = jsonwebtoken::dangerous::insecure_decode::<Value>(&good).unwrap().claims;
        let now = jiff::Timestamp::now().as_second();
        claims["exp"] = json!(now - 3600);
        claims["iat"] = json!(now - 7200);
        claims["nbf"] = json!(now - 7200);
        let key = jsonwebtoken::EncodingKey::from_rsa_pem(&std::fs::read(key_path).unwrap()).unwrap();
        let expired = jsonwebtoken::encode(&header, &claims, &key).unwrap();
        let (status, body) = assert_with(expired).await;
        assert_eq!(
            (status, body["error"].as_str()),
            (401, Some("invalid_client")),
            "expired: {body}"
        );
    }

    // Token exchange: only audiences the client was granted.
    let exchange = |aud: String| {
        let (url, good) = (kauth.url.clone(), good.clone());
        async move {
            post_token(
                &url,
                None,
                &[
                    ("grant_type", TOKEN_EXCHANGE_GRANT),
                    ("subject_token", &good),
                    ("subject_token_type", JWT_TOKEN_TYPE),
                    ("audience", &aud),
                ],
            )
            .await
        }
    };
    let (status, body) = exchange(audience.clone()).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body["issued_token_type"],
        "urn:ietf:params:oauth:token-type:access_token"
    );
    let (status, body) = exchange("https://payments.example.com".into()).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (400, Some("invalid_target")),
        "{body}"
    );
}

#[tokio::test]
#[ignore = "needs a cluster: make test-cluster"]
async fn token_review_refuses_a_bound_token_once_its_object_is_gone() {
    use k8s_openapi::api::authentication::v1::BoundObjectReference;
    let (client, _, kns, [ns]) = setup(["team"]).await;
    service_account(&client, &ns, "job").await;
    let kauth = Kauth::spawn_with(&kns, "review", None, &["--service-account-token-review"]);
    kauth.wait_ready(Duration::from_secs(30)).await;
    own_api(&client, &ns).await;
    create(&client, &m2m_client_for_sa(&ns, "job")).await;
    ready_client(&client, &ns, "job").await;

    // A token bound to an object (a Secret here; a Pod in real life) dies with it.
    let secrets: Api<Secret> = Api::namespaced(client.clone(), &ns);
    let anchor: Secret = serde_json::from_value(json!({"metadata": {"name": "anchor", "namespace": ns}})).unwrap();
    let anchor = secrets.create(&PostParams::default(), &anchor).await.unwrap();
    let request = TokenRequest {
        spec: Some(TokenRequestSpec {
            audiences: Some(vec![kauth.url.clone()]),
            expiration_seconds: Some(600),
            bound_object_ref: Some(BoundObjectReference {
                api_version: Some("v1".into()),
                kind: Some("Secret".into()),
                name: Some("anchor".into()),
                uid: anchor.uid(),
            }),
            ..Default::default()
        }),
        ..Default::default()
    };
    let token = Api::<ServiceAccount>::namespaced(client.clone(), &ns)
        .create_token_request("job", &PostParams::default(), &request)
        .await
        .unwrap()
        .status
        .unwrap()
        .token
        .unwrap();
    let form = [
        ("grant_type", "client_credentials"),
        ("client_assertion_type", kauth::workload_identity::JWT_BEARER_ASSERTION),
        ("client_assertion", token.as_str()),
    ];
    wait_until("bound token accepted", Duration::from_secs(5), async || {
        post_token(&kauth.url, None, &form).await.0 == 200
    })
    .await;
    secrets.delete("anchor", &DeleteParams::default()).await.unwrap();
    // The apiserver caches its own answers about 10 s, kauth 5 s more.
    let took = wait_until(
        "bound token refused after its object is deleted",
        Duration::from_secs(20),
        async || post_token(&kauth.url, None, &form).await.1["error"] == "invalid_client",
    )
    .await;
    eprintln!("a deleted object's token was refused {took:?} after the deletion");
}
