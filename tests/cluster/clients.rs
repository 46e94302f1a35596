//! OAuthClients on a cluster: examples served within a second of every change, invalid
//! clients named in conditions and Events, Secrets kauth did not create left alone, presets,
//! templates and orphans, and a rotated-out secret retired when unused.

use crate::harness::*;

#[tokio::test]
#[ignore = "needs a cluster: make test-cluster"]
async fn examples_become_ready_and_changes_reach_the_token_endpoint_within_a_second() {
    let (client, id, kns, _) = setup(["shop", "orders", "billing"]).await;
    let m = examples(&id);
    for (_, k) in &m.signing_keys {
        create(&client, k).await;
    }
    let kauth = Kauth::start(&kns, "solo", None).await;
    for (_, s) in &m.scopes {
        create(&client, s).await;
    }
    let applied = Instant::now();
    create(&client, &m.clients[0].1).await;
    let shop = format!("shop-{id}");
    let oac = ready_client(&client, &shop, "shop-backend").await;
    eprintln!("OAuthClient Ready {:?} after it was applied", applied.elapsed());
    let status = oac.status.unwrap();
    assert_eq!(
        status.client_id.as_deref(),
        Some(format!("shop-{id}.shop-backend").as_str())
    );
    assert_eq!(status.granted_scopes, [format!("orders.read.{id}")]);

    let data = secret_data(&client, &shop, "shop-backend-oauth").await;
    assert_eq!(
        data.keys().collect::<Vec<_>>(),
        ["CLIENT_ID", "CLIENT_SECRET", "ISSUER_URL", "TOKEN_URL"]
    );
    assert_eq!(data["TOKEN_URL"], format!("{}/token", kauth.url));
    let scope = format!("orders.read.{id}");
    let took = wait_until("token obtainable", Duration::from_secs(5), async || {
        token(&kauth.url, &data["CLIENT_ID"], &data["CLIENT_SECRET"], &scope)
            .await
            .0
            == 200
    })
    .await;
    eprintln!(
        "token obtainable {:?} after Ready ({:?} after apply)",
        took,
        applied.elapsed()
    );

    // The signing key reconciled into a Secret and status.
    let sk: SigningKey = Api::namespaced(client.clone(), &format!("kauth-{id}"))
        .get("default")
        .await
        .unwrap();
    assert!(sk.status.unwrap().active_kid.is_some());

    // Withdraw the grant: refused within a second.
    let scopes: Api<Scope> = Api::namespaced(client.clone(), &format!("orders-{id}"));
    scopes
        .patch(
            "orders-read",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"grantedTo": {"namespaces": []}}})),
        )
        .await
        .unwrap();
    let took = wait_until("grant withdrawal at /token", Duration::from_secs(1), async || {
        token(&kauth.url, &data["CLIENT_ID"], &data["CLIENT_SECRET"], &scope)
            .await
            .1["error"]
            == "invalid_scope"
    })
    .await;
    eprintln!("grant withdrawal took effect after {took:?}");
    scopes
        .patch(
            "orders-read",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"grantedTo": {"namespaces": [shop.clone()]}}})),
        )
        .await
        .unwrap();
    wait_until("grant restored", Duration::from_secs(1), async || {
        token(&kauth.url, &data["CLIENT_ID"], &data["CLIENT_SECRET"], &scope)
            .await
            .0
            == 200
    })
    .await;

    // Rotate: the new secret works within a second, the old one still inside the overlap.
    let clients: Api<OAuthClient> = Api::namespaced(client.clone(), &shop);
    clients
        .patch(
            "shop-backend",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"secret": {"rotation": {"trigger": "second"}}}})),
        )
        .await
        .unwrap();
    let mut rotated = None;
    let took = wait_until("rotated secret at /token", Duration::from_secs(1), async || {
        let now = secret_data(&client, &shop, "shop-backend-oauth").await;
        if now["CLIENT_SECRET"] == data["CLIENT_SECRET"] {
            return false;
        }
        let ok = token(&kauth.url, &now["CLIENT_ID"], &now["CLIENT_SECRET"], &scope)
            .await
            .0
            == 200;
        rotated = Some(now);
        ok
    })
    .await;
    eprintln!("rotation took effect after {took:?}");
    assert_eq!(
        token(&kauth.url, &data["CLIENT_ID"], &data["CLIENT_SECRET"], &scope)
            .await
            .0,
        200,
        "old secret inside the overlap"
    );
    let rotated = rotated.unwrap();

    // Delete the client: refused within a second.
    clients.delete("shop-backend", &DeleteParams::default()).await.unwrap();
    let took = wait_until("client deletion at /token", Duration::from_secs(1), async || {
        token(&kauth.url, &rotated["CLIENT_ID"], &rotated["CLIENT_SECRET"], &scope)
            .await
            .1["error"]
            == "invalid_client"
    })
    .await;
    eprintln!("deletion took effect after {took:?}");
}

#[tokio::test]
#[ignore = "needs a cluster: make test-cluster"]
async fn invalid_client_gets_a_condition_and_an_event_naming_the_field() {
    let (client, _, kns, [ns]) = setup(["team"]).await;
    let _kauth = Kauth::start(&kns, "solo", None).await;
    let bad: OAuthClient = serde_json::from_value(json!({
        "apiVersion": "kauth.dev/v1alpha1", "kind": "OAuthClient",
        "metadata": {"name": "bad", "namespace": ns},
        "spec": {"accessTokenLifetime": "forever", "audiences": ["https://api.example.com"]}
    }))
    .unwrap();
    create(&client, &bad).await;
    let api: Api<OAuthClient> = Api::namespaced(client.clone(), &ns);
    wait_until("InvalidSpec condition", Duration::from_secs(10), async || {
        api.get("bad").await.ok().and_then(|c| c.status).is_some_and(|s| {
            s.conditions.iter().any(|c| {
                c.type_ == "Ready" && c.reason == "InvalidSpec" && c.message.contains("spec.accessTokenLifetime")
            })
        })
    })
    .await;
    wait_until("InvalidSpec event", Duration::from_secs(10), async || {
        any_event(&client, &ns, |e| {
            e.reason.as_deref() == Some("InvalidSpec")
                && e.type_.as_deref() == Some("Warning")
                && e.note
                    .as_deref()
                    .is_some_and(|n| n.contains("spec.accessTokenLifetime"))
        })
        .await
    })
    .await;
    let secrets: Api<Secret> = Api::namespaced(client.clone(), &ns);
    assert!(
        secrets.get_opt("bad-oauth").await.unwrap().is_none(),
        "no credentials for an invalid client"
    );
}

#[tokio::test]
#[ignore = "needs a cluster: make test-cluster"]
async fn a_secret_kauth_did_not_create_is_never_touched() {
    let (client, _, kns, [ns]) = setup(["team"]).await;
    let secrets: Api<Secret> = Api::namespaced(client.clone(), &ns);
    let foreign = Secret {
        metadata: kube::core::ObjectMeta {
            name: Some("app-oauth".into()),
            namespace: Some(ns.clone()),
            ..Default::default()
        },
        data: Some(BTreeMap::from([(
            "CLIENT_SECRET".to_string(),
            ByteString(b"mine".to_vec()),
        )])),
        ..Default::default()
    };
    let foreign = secrets.create(&PostParams::default(), &foreign).await.unwrap();
    let _kauth = Kauth::start(&kns, "solo", None).await;
    let app: OAuthClient = serde_json::from_value(json!({
        "apiVersion": "kauth.dev/v1alpha1", "kind": "OAuthClient",
        "metadata": {"name": "app", "namespace": ns},
        "spec": {"audiences": ["https://api.example.com"]}
    }))
    .unwrap();
    create(&client, &app).await;
    let api: Api<OAuthClient> = Api::namespaced(client.clone(), &ns);
    wait_until("SecretConflict condition", Duration::from_secs(10), async || {
        api.get("app")
            .await
            .ok()
            .and_then(|c| c.status)
            .is_some_and(|s| s.conditions.iter().any(|c| c.reason == "SecretConflict"))
    })
    .await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let after = secrets.get("app-oauth").await.unwrap();
    assert_eq!(after.resource_version(), foreign.resource_version(), "never written");
    assert_eq!(after.data, foreign.data);
}

#[tokio::test]
#[ignore = "needs a cluster: make test-cluster"]
async fn secret_presets_templates_labels_and_an_orphan_kept_and_adopted() {
    let (client, _, kns, [ns]) = setup(["team"]).await;
    own_api(&client, &ns).await;
    let kauth = Kauth::start(&kns, "solo", None).await;
    let app: OAuthClient = serde_json::from_value(json!({
        "apiVersion": "kauth.dev/v1alpha1", "kind": "OAuthClient",
        "metadata": {"name": "app", "namespace": ns},
        "spec": {
            "scopes": [format!("api.{ns}")],
            "secret": {
                "presets": ["springBoot", "oauth2Proxy", "dotenv"],
                "template": {"AUTH_HEADER": "{{ client_id }}:{{ client_secret }}", "SCOPES": "{{ scopes | join(' ') }}"},
                "labels": {"argocd.argoproj.io/instance": "shop"},
                "annotations": {"reloader.stakater.com/match": "true"},
                "deletionPolicy": "Orphan"
            }
        }
    }))
    .unwrap();
    create(&client, &app).await;
    let ready = ready_client(&client, &ns, "app").await;
    let secrets: Api<Secret> = Api::namespaced(client.clone(), &ns);
    let secret = secrets.get("app-oauth").await.unwrap();
    let data = secret_data(&client, &ns, "app-oauth").await;
    let spring = |k: &str| data[&format!("SPRING_SECURITY_OAUTH2_CLIENT_{k}")].clone();
    let (id_, secret_) = (
        spring("REGISTRATION_KAUTH_CLIENT_ID"),
        spring("REGISTRATION_KAUTH_CLIENT_SECRET"),
    );
    assert_eq!(Some(&id_), ready.status.as_ref().unwrap().client_id.as_ref());
    assert_eq!(secret_, data["CLIENT_SECRET"]);
    assert_eq!(spring("PROVIDER_KAUTH_ISSUER_URI"), kauth.url);
    assert_eq!(spring("REGISTRATION_KAUTH_SCOPE"), format!("api.{ns}"));
    assert_eq!(data["AUTH_HEADER"], format!("{id_}:{secret_}"));
    assert_eq!(data["SCOPES"], format!("api.{ns}"));
    assert_eq!(data["OAUTH2_PROXY_CLIENT_ID"], id_);
    assert_eq!(data["OAUTH2_PROXY_OIDC_ISSUER_URL"], kauth.url);
    assert!(
        data[".env"].contains(&format!("CLIENT_SECRET={secret_}\n")),
        "{}",
        data[".env"]
    );
    assert_eq!(secret.labels()["argocd.argoproj.io/instance"], "shop");
    assert_eq!(secret.annotations()["reloader.stakater.com/match"], "true");
    assert!(
        secret.owner_references().is_empty(),
        "Orphan: nothing for the garbage collector to follow"
    );
    let (status, _) = token_when_served(&kauth.url, &id_, &secret_, &format!("api.{ns}")).await;
    assert_eq!(status, 200);

    // A deleted Secret is written again (the controller hears of it through the cache).
    secrets.delete("app-oauth", &DeleteParams::default()).await.unwrap();
    wait_until("the Secret restored", Duration::from_secs(5), async || {
        secrets.get_opt("app-oauth").await.unwrap().is_some()
    })
    .await;
    wait_until("a SecretRecreated Event", Duration::from_secs(5), async || {
        has_event(&client, &ns, "SecretRecreated", "app").await
    })
    .await;
    assert!(
        !has_event(&client, &ns, "SecretCreated", "app").await,
        "the first Secret is routine: no Event"
    );
    let secret_ = secret_data(&client, &ns, "app-oauth").await["CLIENT_SECRET"].clone();
    wait_until("the restored secret works", Duration::from_secs(5), async || {
        token(&kauth.url, &id_, &secret_, &format!("api.{ns}")).await.0 == 200
    })
    .await;

    // Deleted: the Secret stays, and its secret stops working with the client.
    let clients: Api<OAuthClient> = Api::namespaced(client.clone(), &ns);
    clients.delete("app", &DeleteParams::default()).await.unwrap();
    wait_until("the deleted client refused", Duration::from_secs(5), async || {
        token(&kauth.url, &id_, &secret_, &format!("api.{ns}")).await.0 == 401
    })
    .await;
    assert!(
        secrets.get_opt("app-oauth").await.unwrap().is_some(),
        "Orphan keeps the Secret"
    );

    // Another client of the namespace may not take the orphan over by naming it.
    let other: OAuthClient = serde_json::from_value(json!({
        "apiVersion": "kauth.dev/v1alpha1", "kind": "OAuthClient",
        "metadata": {"name": "other", "namespace": ns},
        "spec": {"scopes": [format!("api.{ns}")], "secret": {"name": "app-oauth"}}
    }))
    .unwrap();
    create(&client, &other).await;
    wait_until(
        "SecretConflict for another client",
        Duration::from_secs(10),
        async || {
            client_condition(&client, &ns, "other")
                .await
                .is_some_and(|(reason, _)| reason == "SecretConflict")
        },
    )
    .await;

    // Created again under the same name (now with policy Delete): adopted, same secret.
    let mut again = app.clone();
    again.spec.secret.as_mut().unwrap().deletion_policy = None;
    create(&client, &again).await;
    let readopted = ready_client(&client, &ns, "app").await;
    wait_until(
        "the Secret owned by the new client",
        Duration::from_secs(10),
        async || {
            secrets.get("app-oauth").await.is_ok_and(|s| {
                s.owner_references()
                    .iter()
                    .any(|o| Some(&o.uid) == readopted.metadata.uid.as_ref())
            })
        },
    )
    .await;
    assert_eq!(secret_data(&client, &ns, "app-oauth").await["CLIENT_SECRET"], secret_);
    wait_until("the adopted secret works", Duration::from_secs(5), async || {
        token(&kauth.url, &id_, &secret_, &format!("api.{ns}")).await.0 == 200
    })
    .await;
}

#[tokio::test]
#[ignore = "needs a cluster: make test-cluster"]
async fn a_previous_secret_in_use_outlives_its_overlap_and_an_unused_one_is_retired() {
    let (client, id, kns, [ns]) = setup(["team"]).await;
    own_api(&client, &ns).await;
    // Replicas report secret use every second here (30 s by default).
    let audit_dir = tempfile::tempdir().unwrap();
    let audit_log = audit_dir.path().join("audit.jsonl");
    let kauth = Kauth::spawn_with(
        &kns,
        "solo",
        None,
        &[
            "--secret-use-report-interval",
            "1s",
            "--audit-log",
            audit_log.to_str().unwrap(),
        ],
    );
    kauth.wait_ready(Duration::from_secs(30)).await;
    let scope = format!("api.{ns}");
    let rotation = json!({"overlap": "5s", "retirePrevious": "WhenUnused", "quietPeriod": "30s"});
    for name in ["busy", "idle"] {
        let c: OAuthClient = serde_json::from_value(json!({
            "apiVersion": "kauth.dev/v1alpha1", "kind": "OAuthClient",
            "metadata": {"name": name, "namespace": ns},
            "spec": {"scopes": [scope], "secret": {"rotation": rotation}}
        }))
        .unwrap();
        create(&client, &c).await;
    }
    let mut old = BTreeMap::new();
    for name in ["busy", "idle"] {
        let ready = ready_client(&client, &ns, name).await;
        let data = secret_data(&client, &ns, &format!("{name}-oauth")).await;
        let id_ = ready.status.unwrap().client_id.unwrap();
        // Ready is the controller's word; the provider's cache may see the Secret a moment later.
        wait_until("the new client's token", Duration::from_secs(5), async || {
            token(&kauth.url, &id_, &data["CLIENT_SECRET"], &scope).await.0 == 200
        })
        .await;
        old.insert(name, (id_, data["CLIENT_SECRET"].clone()));
    }
    let clients: Api<OAuthClient> = Api::namespaced(client.clone(), &ns);
    for name in ["busy", "idle"] {
        let patch = json!({"spec": {"secret": {"rotation": {"trigger": "leaked"}}}});
        clients
            .patch(name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .unwrap();
    }
    wait_until("both rotated", Duration::from_secs(10), async || {
        let mut rotated = 0;
        for name in ["busy", "idle"] {
            let data = secret_data(&client, &ns, &format!("{name}-oauth")).await;
            rotated += usize::from(data["CLIENT_SECRET"] != old[name].1);
        }
        rotated == 2
    })
    .await;
    // A workload that never reloaded keeps using busy's old secret, every second.
    let (busy_id, busy_old) = old["busy"].clone();
    let url = kauth.url.clone();
    let scope_ = scope.clone();
    let workload = tokio::spawn(async move {
        let mut refused = Vec::new();
        loop {
            let (status, body) = token(&url, &busy_id, &busy_old, &scope_).await;
            if status != 200 {
                refused.push(body);
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
            if refused.len() > 3 {
                break refused;
            }
        }
    });
    // Nobody uses idle's (trying it would be a use): it stops working once unused for the
    // quiet period; its last use was just before the rotation, so about 30 s to 90 s after it.
    let (idle_id, idle_old) = old["idle"].clone();
    let started = Instant::now();
    wait_until("PreviousSecretRetired event", Duration::from_secs(120), async || {
        has_event(&client, &ns, "PreviousSecretRetired", "idle").await
    })
    .await;
    let retired_after = started.elapsed();
    assert!(
        retired_after > Duration::from_secs(20),
        "retired {retired_after:?} after the rotation: before the quiet period"
    );
    assert_eq!(token(&kauth.url, &idle_id, &idle_old, &scope).await.0, 401);
    // Busy's old secret is still in use, so it still works, well past overlap + quiet period,
    // and the status says when each secret was last used.
    tokio::time::sleep(Duration::from_secs(30)).await;
    assert!(
        !workload.is_finished(),
        "busy's old secret was refused: {:?}",
        workload.await
    );
    workload.abort();
    let busy = clients.get("busy").await.unwrap().status.unwrap();
    let previous = busy
        .secret_usage
        .iter()
        .find(|u| u.version == 1)
        .expect("previous secret in status");
    assert!(
        previous.last_used.is_some() && previous.valid_until.is_some(),
        "{busy:?}"
    );
    assert!(has_event(&client, &ns, "PreviousSecretInUse", "busy").await);
    // A namespace that tries to take the API's scope value gets a Conflict, and the audit
    // trail records it beside the rotations and the retirement, with no secret in any line.
    let thief = format!("thief-{id}");
    namespace(&client, &thief).await;
    let stolen: Scope = serde_json::from_value(json!({
        "apiVersion": "kauth.dev/v1alpha1", "kind": "Scope",
        "metadata": {"name": "api", "namespace": thief},
        "spec": {"value": scope}
    }))
    .unwrap();
    create(&client, &stolen).await;
    let audit_lines = async || -> Vec<Value> {
        std::fs::read_to_string(&audit_log)
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    };
    wait_until("claim_conflict audit record", Duration::from_secs(10), async || {
        audit_lines()
            .await
            .iter()
            .any(|l| l["event"] == "claim_conflict" && l["namespace"] == thief.as_str() && l["resource"] == "Scope/api")
    })
    .await;
    let lines = audit_lines().await;
    let of = |event: &str, name: &str| {
        lines
            .iter()
            .filter(|l| l["event"] == event && l["resource"] == format!("OAuthClient/{name}").as_str())
            .count()
    };
    assert_eq!(
        (of("secret_rotated", "busy"), of("secret_rotated", "idle")),
        (1, 1),
        "{lines:?}"
    );
    assert_eq!(
        (of("secret_created", "busy"), of("secret_created", "idle")),
        (1, 1),
        "each client's first secret: {lines:?}"
    );
    assert_eq!(of("previous_secret_retired", "idle"), 1, "{lines:?}");
    assert_eq!(of("previous_secret_retired", "busy"), 0, "{lines:?}");
    let text = std::fs::read_to_string(&audit_log).unwrap();
    for name in ["busy", "idle"] {
        let now = secret_data(&client, &ns, &format!("{name}-oauth")).await;
        assert!(
            !text.contains(&old[name].1) && !text.contains(&now["CLIENT_SECRET"]),
            "a secret in the audit trail"
        );
    }
    let metrics = reqwest::get(format!("{}/metrics", kauth.ops_url))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("kauth_previous_secret_uses_total") && l.contains(&old["busy"].0)),
        "old-secret use per client in the metrics"
    );
}
