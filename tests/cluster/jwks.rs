//! JWKS ConfigMaps: delivered to granted namespaces, following rotation, and removed.

use crate::harness::*;

/// The `kauth-jwks` ConfigMap of `ns`, if there is one.
async fn jwks_config_map(client: &Client, ns: &str) -> Option<ConfigMap> {
    Api::<ConfigMap>::namespaced(client.clone(), ns)
        .get_opt("kauth-jwks")
        .await
        .unwrap()
}

/// The key ids in a JWKS ConfigMap.
fn kids(cm: &ConfigMap) -> Vec<String> {
    let jwks: Value = serde_json::from_str(&cm.data.as_ref().unwrap()["jwks.json"]).unwrap();
    jwks["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["kid"].as_str().unwrap().to_string())
        .collect()
}

/// The JWKS delivered where verifiers run (issue 13): the API team's namespace and the
/// granted app's get a `kauth-jwks` ConfigMap from which a token verifies offline; a key
/// rotation reaches it before the new key signs; it disappears when the grant is withdrawn;
/// and a ConfigMap of that name kauth did not create is never touched.
#[tokio::test]
#[ignore = "needs a cluster: make test-cluster"]
async fn the_jwks_reaches_granted_namespaces_follows_rotation_and_leaves() {
    let (client, id, kns, [api_ns, app_ns, other_ns]) = setup(["api", "app", "other"]).await;
    // Someone else's ConfigMap of the same name, in a namespace that will want the JWKS.
    let foreign: ConfigMap = serde_json::from_value(json!({
        "metadata": {"name": "kauth-jwks", "namespace": other_ns},
        "data": {"jwks.json": "mine"}
    }))
    .unwrap();
    create(&client, &foreign).await;
    let selector = format!("jwks-{id}=wanted");
    let kauth = Kauth::spawn_with(&kns, "jwks", None, &["--jwks-namespace-selector", &selector]);
    kauth.wait_ready(Duration::from_secs(30)).await;
    let scope: Scope = serde_json::from_value(json!({
        "apiVersion": "kauth.dev/v1alpha1", "kind": "Scope",
        "metadata": {"name": "read", "namespace": api_ns},
        "spec": {"value": format!("read.{id}"), "audience": format!("https://{api_ns}.example.com"),
                 "grantedTo": {"namespaces": [app_ns, other_ns]}}
    }))
    .unwrap();
    create(&client, &scope).await;
    for ns in [&app_ns, &other_ns] {
        let app: OAuthClient = serde_json::from_value(json!({
            "apiVersion": "kauth.dev/v1alpha1", "kind": "OAuthClient",
            "metadata": {"name": "app", "namespace": ns},
            "spec": {"scopes": [format!("read.{id}")]}
        }))
        .unwrap();
        create(&client, &app).await;
    }
    ready_client(&client, &app_ns, "app").await;
    let took = wait_until(
        "the JWKS in the API's and the app's namespaces",
        Duration::from_secs(10),
        async || jwks_config_map(&client, &api_ns).await.is_some() && jwks_config_map(&client, &app_ns).await.is_some(),
    )
    .await;
    eprintln!("JWKS delivered {took:?} after the app was Ready");
    let cm = jwks_config_map(&client, &app_ns).await.unwrap();
    assert_eq!(cm.labels().get("kauth.dev/jwks").map(String::as_str), Some("true"));
    let data = cm.data.clone().unwrap();
    assert_eq!(data["issuer"], kauth.url);
    let discovery: Value = serde_json::from_str(&data["openid-configuration.json"]).unwrap();
    assert_eq!(discovery["issuer"], kauth.url.as_str());

    // A token verifies offline, from the ConfigMap alone.
    let creds = secret_data(&client, &app_ns, "app-oauth").await;
    let (status, body) = token_when_served(&kauth.url, &creds["CLIENT_ID"], &creds["CLIENT_SECRET"], "").await;
    assert_eq!(status, 200, "{body}");
    let access = body["access_token"].as_str().unwrap();
    let verify = |cm: &ConfigMap, token: &str| -> Result<Value, String> {
        let set: jsonwebtoken::jwk::JwkSet =
            serde_json::from_str(&cm.data.as_ref().unwrap()["jwks.json"]).map_err(|e| e.to_string())?;
        let header = jsonwebtoken::decode_header(token).map_err(|e| e.to_string())?;
        let jwk = set
            .find(header.kid.as_deref().unwrap_or_default())
            .ok_or("no such kid")?;
        let key = jsonwebtoken::DecodingKey::from_jwk(jwk).map_err(|e| e.to_string())?;
        let mut validation = jsonwebtoken::Validation::new(header.alg);
        validation.set_audience(&[format!("https://{api_ns}.example.com")]);
        validation.set_issuer(&[kauth.url.as_str()]);
        jsonwebtoken::decode::<Value>(token, &key, &validation)
            .map(|t| t.claims)
            .map_err(|e| e.to_string())
    };
    let claims = verify(&cm, access).expect("verified offline");
    assert_eq!(claims["client_id"], creds["CLIENT_ID"].as_str());
    let foreign_now = jwks_config_map(&client, &other_ns).await.unwrap();
    assert_eq!(
        foreign_now.data.unwrap()["jwks.json"],
        "mine",
        "someone else's ConfigMap is left alone"
    );
    assert!(
        !foreign_now
            .metadata
            .labels
            .unwrap_or_default()
            .contains_key("kauth.dev/jwks")
    );

    // An emergency rotation: the new key reaches the ConfigMap while the old one still signs.
    let kid_of = |t: &str| jsonwebtoken::decode_header(t).unwrap().kid.unwrap();
    let signing = kid_of(access);
    let before = kids(&cm);
    Api::<SigningKey>::namespaced(client.clone(), &kns)
        .patch(
            "default",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"rotation": {"trigger": "jwks-test", "publishAhead": "1h"}}})),
        )
        .await
        .unwrap();
    let took = wait_until("the new key in the ConfigMap", Duration::from_secs(10), async || {
        let now = jwks_config_map(&client, &app_ns).await.unwrap();
        kids(&now).iter().any(|k| !before.contains(k))
    })
    .await;
    eprintln!("a new key reached the ConfigMap {took:?} after the rotation");
    let (_, body) = token(&kauth.url, &creds["CLIENT_ID"], &creds["CLIENT_SECRET"], "").await;
    assert_eq!(
        kid_of(body["access_token"].as_str().unwrap()),
        signing,
        "published ahead: not signing yet"
    );

    // The grant withdrawn: the app's namespace no longer gets the keys.
    Api::<Scope>::namespaced(client.clone(), &api_ns)
        .patch(
            "read",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"grantedTo": {"namespaces": [other_ns]}}})),
        )
        .await
        .unwrap();
    wait_until("the app's ConfigMap withdrawn", Duration::from_secs(10), async || {
        jwks_config_map(&client, &app_ns).await.is_none()
    })
    .await;
    assert!(
        jwks_config_map(&client, &api_ns).await.is_some(),
        "the API team keeps it"
    );
    assert_eq!(
        jwks_config_map(&client, &other_ns).await.unwrap().data.unwrap()["jwks.json"],
        "mine"
    );

    // A namespace that holds no Scope but matches the chart's selector gets it too, and loses
    // it with the label.
    let verifier_ns = format!("verifier-{id}");
    namespace(&client, &verifier_ns).await;
    let namespaces: Api<Namespace> = Api::all(client.clone());
    let label = |value: Option<&str>| json!({"metadata": {"labels": {format!("jwks-{id}"): value}}});
    namespaces
        .patch(
            &verifier_ns,
            &PatchParams::default(),
            &Patch::Merge(label(Some("wanted"))),
        )
        .await
        .unwrap();
    wait_until(
        "the JWKS in the selected namespace",
        Duration::from_secs(5),
        async || jwks_config_map(&client, &verifier_ns).await.is_some(),
    )
    .await;
    namespaces
        .patch(&verifier_ns, &PatchParams::default(), &Patch::Merge(label(None)))
        .await
        .unwrap();
    wait_until(
        "the JWKS withdrawn with the label",
        Duration::from_secs(5),
        async || jwks_config_map(&client, &verifier_ns).await.is_none(),
    )
    .await;
}
