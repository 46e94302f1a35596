//! The tenancy boundary on a cluster: namespace labels granting and withdrawing scopes,
//! claims through broken, deleted and re-created owners and a new leader, and the quota.

use crate::harness::*;

/// The Accepted condition's reason and message of a Scope.
async fn scope_condition(client: &Client, ns: &str, name: &str) -> Option<(String, String)> {
    let scope = Api::<Scope>::namespaced(client.clone(), ns).get(name).await.ok()?;
    scope
        .status?
        .conditions
        .into_iter()
        .find(|c| c.type_ == "Accepted")
        .map(|c| (c.reason, c.message))
}

/// A Scope of `ns` offering `value` (for nobody else), with an audience when given.
fn plain_scope(ns: &str, name: &str, value: &str, audience: Option<&str>) -> Scope {
    let mut spec = json!({"value": value});
    if let Some(aud) = audience {
        spec["audience"] = json!(aud);
    }
    serde_json::from_value(json!({
        "apiVersion": "kauth.dev/v1alpha1", "kind": "Scope",
        "metadata": {"name": name, "namespace": ns}, "spec": spec
    }))
    .unwrap()
}

/// The value of a metric of kauth's (0 when not exported yet).
async fn metric(kauth: &Kauth, name: &str) -> f64 {
    let text = reqwest::get(format!("{}/metrics", kauth.ops_url))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    text.lines()
        .find(|l| l.starts_with(&format!("{name} ")))
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0)
}

#[tokio::test]
#[ignore = "needs a cluster: make test-cluster"]
async fn namespace_labels_grant_and_withdraw_scopes_within_a_second() {
    let (client, id, kns, [ns, api_ns]) = setup(["team", "api"]).await;
    let kauth = Kauth::start(&kns, "selector", None).await;
    let value = format!("labelled.read.{id}");
    let scope: Scope = serde_json::from_value(json!({
        "apiVersion": "kauth.dev/v1alpha1", "kind": "Scope",
        "metadata": {"name": "read", "namespace": api_ns},
        "spec": {"value": value, "audience": format!("https://labelled-{id}.example.com"),
                 "grantedTo": {"namespaceSelector": {"matchLabels": {"kauth-test/team": id}}}}
    }))
    .unwrap();
    create(&client, &scope).await;
    let app: OAuthClient = serde_json::from_value(json!({
        "apiVersion": "kauth.dev/v1alpha1", "kind": "OAuthClient",
        "metadata": {"name": "app", "namespace": ns},
        "spec": {"scopes": [value]}
    }))
    .unwrap();
    create(&client, &app).await;
    let api: Api<OAuthClient> = Api::namespaced(client.clone(), &ns);
    let not_granted = async |what: &str| {
        wait_until(what, Duration::from_secs(5), async || {
            api.get("app")
                .await
                .ok()
                .and_then(|c| c.status)
                .is_some_and(|s| s.conditions.iter().any(|c| c.reason == "ScopeNotGranted"))
        })
        .await
    };
    not_granted("ScopeNotGranted before the label").await;
    let data = secret_data(&client, &ns, "app-oauth").await;
    let namespaces: Api<Namespace> = Api::all(client.clone());
    let label = |v: Value| Patch::Merge(json!({"metadata": {"labels": {"kauth-test/team": v}}}));
    namespaces
        .patch(&ns, &PatchParams::default(), &label(json!(id)))
        .await
        .unwrap();
    let took = wait_until("granted by label", Duration::from_secs(1), async || {
        token(&kauth.url, &data["CLIENT_ID"], &data["CLIENT_SECRET"], &value)
            .await
            .0
            == 200
    })
    .await;
    eprintln!("a namespace label granted the scope after {took:?}");
    // The status follows the label too, although nothing about the client itself changed.
    let took = wait_until("Ready by label", Duration::from_secs(5), async || {
        api.get("app")
            .await
            .ok()
            .and_then(|c| c.status)
            .is_some_and(|s| condition_is_true(&s.conditions, "Ready"))
    })
    .await;
    eprintln!("the client's status became Ready after {took:?}");
    namespaces
        .patch(&ns, &PatchParams::default(), &label(Value::Null))
        .await
        .unwrap();
    wait_until("withdrawn with the label", Duration::from_secs(1), async || {
        token(&kauth.url, &data["CLIENT_ID"], &data["CLIENT_SECRET"], &value)
            .await
            .1["error"]
            == "invalid_scope"
    })
    .await;
    not_granted("ScopeNotGranted after the label is gone").await;
}

/// The hostile tenant on a real apiserver (README, Tenancy, T1 and T3): evil squats a Scope value
/// and an explicit client id, then waits while the owners' objects are broken, deleted and
/// re-created, and while kauth is killed and a new leader takes over.
#[tokio::test]
#[ignore = "needs a cluster: make test-cluster"]
async fn claims_hold_through_broken_deleted_recreated_owners_and_a_new_leader() {
    let (client, id, kns, [orders, one, evil]) = setup(["orders", "one", "evil"]).await;
    let mut first = Kauth::start(&kns, "first", None).await;
    let value = format!("orders.write.{id}");
    let legacy = format!("legacy-{id}");
    let owner_scope = |selector: Value| -> Scope {
        serde_json::from_value(json!({
            "apiVersion": "kauth.dev/v1alpha1", "kind": "Scope",
            "metadata": {"name": "write", "namespace": orders},
            "spec": {"value": value, "audience": format!("https://orders-{id}.example.com"), "grantedTo": selector}
        }))
        .unwrap()
    };
    create(&client, &owner_scope(json!({}))).await;
    let api: OAuthClient = serde_json::from_value(json!({
        "apiVersion": "kauth.dev/v1alpha1", "kind": "OAuthClient",
        "metadata": {"name": "api", "namespace": orders}, "spec": {"scopes": [value]}
    }))
    .unwrap();
    create(&client, &api).await;
    let legit: OAuthClient = serde_json::from_value(json!({
        "apiVersion": "kauth.dev/v1alpha1", "kind": "OAuthClient",
        "metadata": {"name": "app", "namespace": one}, "spec": {"clientId": legacy}
    }))
    .unwrap();
    create(&client, &legit).await;
    ready_client(&client, &orders, "api").await;
    wait_until("claims recorded", Duration::from_secs(5), async || {
        let audience = format!("https://orders-{id}.example.com");
        recorded_claim(&client, &kns, "scopeValues", &value).await["namespace"] == json!(orders)
            && recorded_claim(&client, &kns, "audiences", &audience).await["namespace"] == json!(orders)
            && recorded_claim(&client, &kns, "clientIds", &legacy).await["namespace"] == json!(one)
    })
    .await;

    // The attacker arrives.
    let squat: Scope = serde_json::from_value(json!({
        "apiVersion": "kauth.dev/v1alpha1", "kind": "Scope",
        "metadata": {"name": "squat", "namespace": evil},
        "spec": {"value": value, "audience": format!("https://evil-{id}.example.com"), "grantedTo": {"namespaces": ["*"]}}
    }))
    .unwrap();
    create(&client, &squat).await;
    let thief: OAuthClient = serde_json::from_value(json!({
        "apiVersion": "kauth.dev/v1alpha1", "kind": "OAuthClient",
        "metadata": {"name": "thief", "namespace": evil}, "spec": {"scopes": [value]}
    }))
    .unwrap();
    create(&client, &thief).await;
    let twin: OAuthClient = serde_json::from_value(json!({
        "apiVersion": "kauth.dev/v1alpha1", "kind": "OAuthClient",
        "metadata": {"name": "twin", "namespace": evil}, "spec": {"clientId": legacy}
    }))
    .unwrap();
    create(&client, &twin).await;
    let squat_refused = async |when: &str| {
        wait_until(
            &format!("squatter refused {when}"),
            Duration::from_secs(10),
            async || {
                scope_condition(&client, &evil, "squat")
                    .await
                    .is_some_and(|(reason, message)| {
                        reason == "Conflict" && message.contains(&format!("claimed by namespace {orders}"))
                    })
            },
        )
        .await;
        wait_until(&format!("twin refused {when}"), Duration::from_secs(10), async || {
            client_condition(&client, &evil, "twin")
                .await
                .is_some_and(|(reason, message)| {
                    reason == "ClientIdConflict" && message.contains(&format!("claimed by namespace {one}"))
                })
        })
        .await;
        let secrets: Api<Secret> = Api::namespaced(client.clone(), &evil);
        assert!(
            secrets.get_opt("twin-oauth").await.unwrap().is_none(),
            "no credentials for the twin"
        );
    };
    squat_refused("at once").await;
    wait_until("a Conflict Event names the owner", Duration::from_secs(5), async || {
        any_event(&client, &evil, |e| {
            e.reason.as_deref() == Some("Conflict")
                && e.note
                    .as_deref()
                    .is_some_and(|n| n.contains(&format!("namespace {orders}")))
        })
        .await
    })
    .await;
    // The thief is served (it has a Secret) but never granted the stolen scope.
    wait_until("the thief is told what it lacks", Duration::from_secs(10), async || {
        client_condition(&client, &evil, "thief")
            .await
            .is_some_and(|(reason, _)| reason == "ScopeNotGranted")
    })
    .await;
    let thief_secret = secret_data(&client, &evil, "thief-oauth").await;
    let thief_token = async || {
        token(
            &first.url,
            &thief_secret["CLIENT_ID"],
            &thief_secret["CLIENT_SECRET"],
            &value,
        )
        .await
    };
    wait_until("the thief is served", Duration::from_secs(5), async || {
        thief_token().await.1["error"] == "invalid_scope"
    })
    .await;

    // A typo the schema lets through on this apiserver (CEL is not enforced before 1.25), and
    // one it refuses at admission.
    let scopes: Api<Scope> = Api::namespaced(client.clone(), &orders);
    let typo = Patch::Merge(json!({"spec": {"grantedTo": {"namespaces": ["Billing"]}}}));
    assert!(
        scopes.patch("write", &PatchParams::default(), &typo).await.is_err(),
        "refused at admission"
    );
    let broken = Patch::Merge(json!({"spec": {"grantedTo": {"namespaceSelector": {}}}}));
    scopes.patch("write", &PatchParams::default(), &broken).await.unwrap();
    wait_until("owner invalid", Duration::from_secs(10), async || {
        scope_condition(&client, &orders, "write")
            .await
            .is_some_and(|(r, _)| r == "InvalidSpec")
    })
    .await;
    squat_refused("while the owner is invalid").await;
    assert_eq!(thief_token().await.1["error"], "invalid_scope");

    // Deleted (the first half of a GitOps replace), and the leader killed meanwhile.
    scopes.delete("write", &DeleteParams::default()).await.unwrap();
    Api::<OAuthClient>::namespaced(client.clone(), &one)
        .delete("app", &DeleteParams::default())
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    first.kill();
    let second = Kauth::start(&kns, "second", None).await;
    wait_until("the second replica leads", Duration::from_secs(10), async || {
        lease_holder(&client, &kns).await.as_deref() == Some("second")
    })
    .await;
    let record = recorded_claim(&client, &kns, "scopeValues", &value).await;
    assert_eq!(record["namespace"], json!(orders), "{record}");
    assert!(record["vacantSince"].is_i64(), "{record}");
    let record = recorded_claim(&client, &kns, "clientIds", &legacy).await;
    assert_eq!(record["namespace"], json!(one), "{record}");
    let thief_token = async || {
        token(
            &second.url,
            &thief_secret["CLIENT_ID"],
            &thief_secret["CLIENT_SECRET"],
            &value,
        )
        .await
    };
    wait_until(
        "the new replica serves the thief, without the stolen scope",
        Duration::from_secs(5),
        async || thief_token().await.1["error"] == "invalid_scope",
    )
    .await;
    // The new leader keeps reporting the squatters as refused.
    Api::<Scope>::namespaced(client.clone(), &evil)
        .patch(
            "squat",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"description": "x"}})),
        )
        .await
        .unwrap();
    squat_refused("after the deletion and the new leader").await;

    // Re-created by its owner: back in force for the owner's client, never for evil.
    create(&client, &owner_scope(json!({}))).await;
    let api_secret = secret_data(&client, &orders, "api-oauth").await;
    wait_until("the owner's scope is back", Duration::from_secs(5), async || {
        token(
            &second.url,
            &api_secret["CLIENT_ID"],
            &api_secret["CLIENT_SECRET"],
            &value,
        )
        .await
        .0 == 200
    })
    .await;
    assert_eq!(thief_token().await.1["error"], "invalid_scope");
    wait_until("the record shows the owner back", Duration::from_secs(5), async || {
        recorded_claim(&client, &kns, "scopeValues", &value).await["vacantSince"].is_null()
    })
    .await;
}

/// T10 on the real apiserver. One namespace writes 260 maximal Scopes (a 256-character value
/// and a 2,048-character audience each): past its 500 claims the rest are refused, naming the
/// quota. The record is sharded, so it never nears a ConfigMap's 1 MiB: the orders team's claim
/// made after that is recorded, and its delete-and-recreate keeps the name from a squatter
/// (the old single record overflowed at about 440 such Scopes, recorded nothing after, and
/// handed the name to the squatter). Then a shard the apiserver refuses to write: the claim
/// waiting for it is served to nobody, and the Scope, an Event, the metrics and
/// `/readyz/claims` say so, until the shard can be written and the claim is recorded.
#[tokio::test]
#[ignore = "needs a cluster: make test-cluster"]
async fn claims_past_the_quota_are_refused_and_an_unwritable_record_keeps_them_pending() {
    let (client, id, kns, [greedy, orders, evil, pend]) = setup(["greedy", "orders", "evil", "pend"]).await;
    let kauth = Kauth::start(&kns, "solo", None).await;
    let big = |i: usize| {
        let value = format!("{i:04}{}", "v".repeat(252));
        let audience = format!("https://{i:04}.example.com/{}", "a".repeat(2048 - 29));
        plain_scope(&greedy, &format!("s{i}"), &value, Some(&audience))
    };
    for i in 0..260 {
        create(&client, &big(i)).await;
    }
    let refused = async || {
        let mut over = 0;
        for i in 0..260 {
            if let Some((reason, message)) = scope_condition(&client, &greedy, &format!("s{i}")).await
                && reason == "ClaimQuotaExceeded"
            {
                assert!(message.contains("--claims-per-namespace"), "{message}");
                over += 1;
            }
        }
        over
    };
    wait_until(
        "the quota refuses the last Scopes",
        Duration::from_secs(30),
        async || refused().await == 10,
    )
    .await;

    // The orders team's claim, made after all that, is recorded and survives its owner's
    // delete-and-recreate while a squatter waits.
    let value = format!("orders.write.{id}");
    let scopes: Api<Scope> = Api::namespaced(client.clone(), &orders);
    create(&client, &plain_scope(&orders, "write", &value, None)).await;
    wait_until("the owner's claim recorded", Duration::from_secs(10), async || {
        recorded_claim(&client, &kns, "scopeValues", &value).await["namespace"] == json!(orders)
    })
    .await;
    create(&client, &plain_scope(&evil, "squat", &value, None)).await;
    scopes.delete("write", &DeleteParams::default()).await.unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    create(&client, &plain_scope(&orders, "write", &value, None)).await;
    wait_until("the owner has its name back", Duration::from_secs(10), async || {
        scope_condition(&client, &orders, "write")
            .await
            .is_some_and(|(r, _)| r == "Accepted")
    })
    .await;
    let squatter = scope_condition(&client, &evil, "squat").await.unwrap();
    assert_eq!(squatter.0, "Conflict", "{squatter:?}");

    // A shard the apiserver will not write: someone made it immutable (or put an immutable
    // ConfigMap of its name in the way).
    let config_maps: Api<ConfigMap> = Api::namespaced(client.clone(), &kns);
    let pending = format!("pending.{id}");
    let shard =
        kauth::controller::claims_record::shard_name(kauth::claims::shard_of(&kauth::claims::claim_key(&pending)));
    if config_maps.get_opt(&shard).await.unwrap().is_some() {
        let patch = json!({"immutable": true});
        config_maps
            .patch(&shard, &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .unwrap();
    } else {
        let blocker: ConfigMap = serde_json::from_value(json!({
            "metadata": {"name": shard, "labels": {"app.kubernetes.io/managed-by": "kauth", "kauth.dev/claims": "shard"}},
            "data": {"claims.json": "{\"format\":2}"},
            "immutable": true
        }))
        .unwrap();
        config_maps.create(&PostParams::default(), &blocker).await.unwrap();
    }
    create(
        &client,
        &plain_scope(&pend, "api", &pending, Some(&format!("https://{pend}.example.com"))),
    )
    .await;
    let app: OAuthClient = serde_json::from_value(json!({
        "apiVersion": "kauth.dev/v1alpha1", "kind": "OAuthClient",
        "metadata": {"name": "app", "namespace": pend}, "spec": {"scopes": [pending]}
    }))
    .unwrap();
    create(&client, &app).await;
    wait_until("ClaimPending on the Scope", Duration::from_secs(15), async || {
        scope_condition(&client, &pend, "api")
            .await
            .is_some_and(|(r, m)| r == "ClaimPending" && m.contains(&shard))
    })
    .await;
    wait_until("a ClaimPending Event", Duration::from_secs(5), async || {
        has_event(&client, &pend, "ClaimPending", "api").await
    })
    .await;
    assert!(metric(&kauth, "kauth_claims_pending").await >= 1.0);
    assert!(metric(&kauth, "kauth_claims_record_write_failures_total").await >= 1.0);
    let ops = |path: &str| format!("{}{path}", kauth.ops_url);
    wait_until("/readyz/claims says so", Duration::from_secs(10), async || {
        reqwest::get(ops("/readyz/claims")).await.unwrap().status() == 503
    })
    .await;
    assert_eq!(
        reqwest::get(ops("/readyz")).await.unwrap().status(),
        200,
        "and serves everyone else"
    );
    let secrets: Api<Secret> = Api::namespaced(client.clone(), &pend);
    wait_until("the app's Secret", Duration::from_secs(5), async || {
        secrets.get_opt("app-oauth").await.unwrap().is_some()
    })
    .await;
    let data = secret_data(&client, &pend, "app-oauth").await;
    let (status, body) = token(&kauth.url, &data["CLIENT_ID"], &data["CLIENT_SECRET"], &pending).await;
    assert_eq!((status, body["error"].as_str()), (400, Some("invalid_scope")), "{body}");

    // Out of the way (deleted: an immutable ConfigMap cannot be changed back): the shard is
    // written again from the claims' objects, and the claim recorded and served.
    config_maps.delete(&shard, &DeleteParams::default()).await.unwrap();
    wait_until(
        "the claim recorded and the Scope accepted",
        Duration::from_secs(10),
        async || {
            scope_condition(&client, &pend, "api")
                .await
                .is_some_and(|(r, _)| r == "Accepted")
        },
    )
    .await;
    wait_until("a token under it", Duration::from_secs(5), async || {
        token(&kauth.url, &data["CLIENT_ID"], &data["CLIENT_SECRET"], &pending)
            .await
            .0
            == 200
    })
    .await;
    assert_eq!(reqwest::get(ops("/readyz/claims")).await.unwrap().status(), 200);
}
