//! Clients with keys on a cluster: the CRD schema of the real apiserver takes `jwks`, `dpop`,
//! `profile` and `backchannelLogoutUri`; such a client gets no Secret and authenticates at the
//! in-cluster provider with a `private_key_jwt` assertion and a DPoP proof; the FAPI2 example
//! is Ready as written, and made public it is refused with the profile's rule.

use crate::harness::*;
use crate::support::keys::{TestKey, payload};

#[tokio::test]
#[ignore = "needs a cluster: make test-cluster"]
async fn clients_with_keys_get_no_secret_and_sign_their_way_to_bound_tokens() {
    let (client, id, kns, [shop, _orders]) = setup(["shop", "orders"]).await;
    let m = examples(&id);
    for (_, k) in &m.signing_keys {
        create(&client, k).await;
    }
    let kauth = Kauth::start(&kns, "solo", None).await;
    for (_, s) in &m.scopes {
        create(&client, s).await;
    }
    let scope = format!("orders.read.{id}");
    let key = TestKey::new();
    let signer: OAuthClient = serde_json::from_value(json!({
        "apiVersion": "kauth.dev/v1alpha1",
        "kind": "OAuthClient",
        "metadata": {"name": "signer", "namespace": shop},
        "spec": {"scopes": [scope], "jwks": {"keys": [key.manifest_jwk()]}, "dpop": "Required"},
    }))
    .unwrap();
    create(&client, &signer).await;
    ready_client(&client, &shop, "signer").await;
    let secrets: Api<Secret> = Api::namespaced(client.clone(), &shop);
    assert!(
        secrets.get_opt("signer-oauth").await.unwrap().is_none(),
        "a client with keys has no secret to hand out"
    );

    let client_id = format!("{shop}.signer");
    let token_url = format!("{}/token", kauth.url);
    let request = async |proof: Option<String>| {
        let assertion = key.assertion(&client_id, json!(kauth.url), json!({}));
        let mut req = reqwest::Client::new().post(&token_url).form(&[
            ("grant_type", "client_credentials"),
            ("scope", scope.as_str()),
            (
                "client_assertion_type",
                "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
            ),
            ("client_assertion", assertion.as_str()),
        ]);
        if let Some(proof) = proof {
            req = req.header("DPoP", proof);
        }
        let res = req.send().await.unwrap();
        (res.status().as_u16(), res.json::<Value>().await.unwrap())
    };
    let (status, body) = request(Some(key.proof("POST", &token_url, None))).await;
    assert_eq!((status, body["token_type"].as_str()), (200, Some("DPoP")), "{body}");
    assert_eq!(payload(body["access_token"].as_str().unwrap())["cnf"]["jkt"], key.jkt());
    let (status, body) = request(None).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (400, Some("invalid_dpop_proof")),
        "{body}"
    );

    // The FAPI2 example as written (moved into this test's namespaces): Ready, no Secret.
    let (_, bank) = m
        .clients
        .iter()
        .find(|(_, c)| c.metadata.name.as_deref() == Some("bank"))
        .unwrap();
    create(&client, bank).await;
    ready_client(&client, &shop, "bank").await;
    assert!(secrets.get_opt("bank-oauth").await.unwrap().is_none());
    // Made public, it breaks the profile: the apiserver stores it, kauth names the rule.
    Api::<OAuthClient>::namespaced(client.clone(), &shop)
        .patch(
            "bank",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"clientType": "public", "jwks": null}})),
        )
        .await
        .unwrap();
    wait_until(
        "the profile's refusal in the status",
        Duration::from_secs(5),
        async || {
            client_condition(&client, &shop, "bank")
                .await
                .is_some_and(|(_, message)| message.contains("spec.profile FAPI2") && message.contains("FAPI 2.0 §"))
        },
    )
    .await;
}
