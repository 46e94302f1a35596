//! The chart's RBAC: enough for everything kauth does, and nothing more.

use crate::harness::*;

/// Renders the chart and applies its ServiceAccount and RBAC; returns a kubeconfig for a
/// TokenRequest token of that ServiceAccount.
async fn chart_identity(client: &Client, kns: &str, release: &str, dir: &Path) -> PathBuf {
    let helm = PathBuf::from(std::env::var("KAUTH_TOOLS").expect("KAUTH_TOOLS (tests/cluster/tools.sh)")).join("helm");
    let out = Command::new(helm)
        .args([
            "template",
            release,
            "charts/kauth",
            "-n",
            kns,
            "--set",
            "issuer=http://127.0.0.1",
        ])
        .current_dir(root())
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let docs: Vec<Value> = serde_saphyr::from_multiple(&String::from_utf8(out.stdout).unwrap()).unwrap();
    let pp = PostParams::default();
    for doc in docs.into_iter().filter(|d| !d.is_null()) {
        match doc["kind"].as_str().unwrap() {
            "ServiceAccount" => drop(
                Api::<ServiceAccount>::namespaced(client.clone(), kns)
                    .create(&pp, &serde_json::from_value(doc).unwrap())
                    .await
                    .unwrap(),
            ),
            "ClusterRole" => drop(
                Api::<ClusterRole>::all(client.clone())
                    .create(&pp, &serde_json::from_value(doc).unwrap())
                    .await
                    .unwrap(),
            ),
            "ClusterRoleBinding" => drop(
                Api::<ClusterRoleBinding>::all(client.clone())
                    .create(&pp, &serde_json::from_value(doc).unwrap())
                    .await
                    .unwrap(),
            ),
            "Role" => drop(
                Api::<Role>::namespaced(client.clone(), kns)
                    .create(&pp, &serde_json::from_value(doc).unwrap())
                    .await
                    .unwrap(),
            ),
            "RoleBinding" => drop(
                Api::<RoleBinding>::namespaced(client.clone(), kns)
                    .create(&pp, &serde_json::from_value(doc).unwrap())
                    .await
                    .unwrap(),
            ),
            _ => {}
        }
    }
    let sas: Api<ServiceAccount> = Api::namespaced(client.clone(), kns);
    let request = TokenRequest {
        spec: Some(TokenRequestSpec {
            expiration_seconds: Some(3600),
            ..Default::default()
        }),
        ..Default::default()
    };
    let sa_name = format!("{release}-kauth");
    let token = sas
        .create_token_request(&sa_name, &pp, &request)
        .await
        .unwrap()
        .status
        .unwrap()
        .token
        .unwrap();
    // The admin kubeconfig with the ServiceAccount's token instead of the admin's.
    let admin = kube::config::Kubeconfig::read().unwrap();
    let mut kc = admin.clone();
    for auth in &mut kc.auth_infos {
        if let Some(info) = auth.auth_info.as_mut() {
            info.token = Some(token.clone().into());
        }
    }
    let path = dir.join("sa-kubeconfig");
    std::fs::write(&path, serde_json::to_string(&kc).unwrap()).unwrap();
    path
}

#[tokio::test]
#[ignore = "needs a cluster: make test-cluster"]
async fn the_charts_rbac_is_enough_and_no_more() {
    let (client, id, kns, [ns]) = setup(["team"]).await;
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = chart_identity(&client, &kns, &format!("r{id}"), dir.path()).await;
    let kauth = Kauth::start(&kns, "rbac", Some(&kubeconfig)).await;

    own_api(&client, &ns).await;
    create(&client, &m2m_client(&ns, "app")).await;
    ready_client(&client, &ns, "app").await;
    wait_until(
        "claims recorded with the chart's identity",
        Duration::from_secs(5),
        async || recorded_claim(&client, &kns, "scopeValues", &format!("api.{ns}")).await["namespace"] == json!(ns),
    )
    .await;
    let data = secret_data(&client, &ns, "app-oauth").await;
    wait_until("token with the chart's identity", Duration::from_secs(5), async || {
        token(&kauth.url, &data["CLIENT_ID"], &data["CLIENT_SECRET"], "")
            .await
            .0
            == 200
    })
    .await;
    wait_until("default SigningKey created", Duration::from_secs(5), async || {
        Api::<SigningKey>::namespaced(client.clone(), &kns)
            .get_opt("default")
            .await
            .unwrap()
            .is_some()
    })
    .await;

    // The chart's identity may read the ServiceAccount issuer's keys: secretless clients work.
    service_account(&client, &ns, "worker").await;
    let sa_client: OAuthClient = serde_json::from_value(json!({
        "apiVersion": "kauth.dev/v1alpha1", "kind": "OAuthClient",
        "metadata": {"name": "worker", "namespace": ns},
        "spec": {"serviceAccount": "worker", "scopes": [format!("api.{ns}")]}
    }))
    .unwrap();
    create(&client, &sa_client).await;
    ready_client(&client, &ns, "worker").await;
    let projected = mint(&client, &ns, "worker", &kauth.url).await;
    wait_until(
        "ServiceAccount token with the chart's identity",
        Duration::from_secs(5),
        async || {
            let form = [
                ("grant_type", "client_credentials"),
                ("client_assertion_type", kauth::workload_identity::JWT_BEARER_ASSERTION),
                ("client_assertion", projected.as_str()),
            ];
            post_token(&kauth.url, None, &form).await.0 == 200
        },
    )
    .await;

    // The same identity may not write outside its rules.
    let config = kube::Config::from_custom_kubeconfig(
        kube::config::Kubeconfig::read_from(&kubeconfig).unwrap(),
        &kube::config::KubeConfigOptions::default(),
    )
    .await
    .unwrap();
    let sa_client = Client::try_from(config).unwrap();
    let forbidden = |r: Result<_, kube::Error>| matches!(r, Err(kube::Error::Api(s)) if s.code == 403);
    let sa_secrets: Api<Secret> = Api::namespaced(sa_client.clone(), &ns);
    assert!(
        forbidden(
            sa_secrets
                .delete("app-oauth", &DeleteParams::default())
                .await
                .map(|_| ())
        ),
        "delete Secret"
    );
    // ConfigMaps: kauth may create (the JWKS one; create cannot be bound to a name), but it
    // cannot read, list, change or delete any ConfigMap but `kauth-jwks`.
    let cm: ConfigMap = serde_json::from_value(json!({"metadata": {"name": "x", "namespace": ns}})).unwrap();
    create(&client, &cm).await;
    let sa_config_maps = Api::<ConfigMap>::namespaced(sa_client.clone(), &ns);
    assert!(
        forbidden(sa_config_maps.get("x").await.map(|_| ())),
        "get another ConfigMap"
    );
    assert!(
        forbidden(sa_config_maps.list(&ListParams::default()).await.map(|_| ())),
        "list ConfigMaps"
    );
    let change = Patch::Merge(json!({"data": {"k": "v"}}));
    assert!(
        forbidden(
            sa_config_maps
                .patch("x", &PatchParams::default(), &change)
                .await
                .map(|_| ())
        ),
        "patch another ConfigMap"
    );
    assert!(
        forbidden(sa_config_maps.delete("x", &DeleteParams::default()).await.map(|_| ())),
        "delete another ConfigMap"
    );
    let spec_patch = Patch::Merge(json!({"spec": {"audiences": ["https://evil.example.com"]}}));
    assert!(
        forbidden(
            Api::<OAuthClient>::namespaced(sa_client.clone(), &ns)
                .patch("app", &PatchParams::default(), &spec_patch)
                .await
                .map(|_| ())
        ),
        "patch an OAuthClient's spec"
    );
    let other_ns_key: SigningKey =
        serde_json::from_value(json!({"metadata": {"name": "k", "namespace": ns}, "spec": {}})).unwrap();
    assert!(
        forbidden(
            Api::<SigningKey>::namespaced(sa_client, &ns)
                .create(&PostParams::default(), &other_ns_key)
                .await
                .map(|_| ())
        ),
        "SigningKey outside kauth's namespace"
    );
}
