//! The Helm chart: lint, render, and the CRDs it ships are the generated ones.

use std::path::{Path, PathBuf};
use std::process::Command;

mod support;

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// helm from the cached tools (tests/cluster/tools.sh fetches it once).
fn helm() -> PathBuf {
    let out = Command::new("bash")
        .arg(root().join("tests/cluster/tools.sh"))
        .output()
        .expect("tools.sh runs");
    assert!(
        out.status.success(),
        "tools.sh failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    PathBuf::from(String::from_utf8(out.stdout).unwrap().trim()).join("helm")
}

fn helm_run(args: &[&str]) -> (bool, String) {
    let out = Command::new(helm()).args(args).current_dir(root()).output().unwrap();
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

#[test]
fn chart_lints_strictly_and_renders() {
    let (ok, out) = helm_run(&[
        "lint",
        "--strict",
        "charts/kauth",
        "--set",
        "issuer=https://auth.example.com",
    ]);
    assert!(ok, "{out}");
    let (ok, out) = helm_run(&[
        "template",
        "kauth",
        "charts/kauth",
        "-n",
        "kauth",
        "--set",
        "issuer=https://auth.example.com",
        "--set",
        "podDisruptionBudget.enabled=true",
        "--set",
        "networkPolicy.enabled=true",
        "--set",
        "serviceMonitor.enabled=true",
    ]);
    assert!(ok, "{out}");
    for kind in [
        "ServiceAccount",
        "ClusterRole",
        "Role",
        "Deployment",
        "Service",
        "PodDisruptionBudget",
        "NetworkPolicy",
        "ServiceMonitor",
    ] {
        assert!(out.contains(&format!("kind: {kind}\n")), "{kind} missing");
    }
    for restricted in [
        "runAsNonRoot: true",
        "readOnlyRootFilesystem: true",
        "allowPrivilegeEscalation: false",
        "drop: [ALL]",
        "type: RuntimeDefault",
    ] {
        assert!(out.contains(restricted), "{restricted} missing");
    }
    assert!(out.contains("--issuer=https://auth.example.com"));
    // The only deletes are of kauth's own ConfigMaps, by name: the JWKS ConfigMap (withdrawn
    // where no longer wanted) and the claims record of earlier versions (once moved into its
    // shards, in kauth's namespace).
    let docs = render(&[]);
    let deleting: Vec<(&serde_json::Value, &serde_json::Value)> = docs
        .iter()
        .filter(|d| d["kind"] == "ClusterRole" || d["kind"] == "Role")
        .flat_map(|d| d["rules"].as_array().unwrap().iter().map(move |r| (&d["kind"], r)))
        .filter(|(_, rule)| rule["verbs"].as_array().unwrap().iter().any(|v| v == "delete"))
        .collect();
    assert_eq!(deleting.len(), 2, "{deleting:?}");
    for (kind, rule) in &deleting {
        assert_eq!(rule["resources"], serde_json::json!(["configmaps"]));
        let named = if *kind == "Role" { "kauth-claims" } else { "kauth-jwks" };
        assert_eq!(rule["resourceNames"], serde_json::json!([named]), "{kind}");
    }
    let off = render(&["jwks.configMapName="]);
    assert!(
        off.iter()
            .filter(|d| d["kind"] == "ClusterRole")
            .all(|d| !d["rules"].to_string().contains("delete")),
        "no JWKS delivery, no delete"
    );
}

#[test]
fn chart_refuses_bad_values() {
    let (ok, out) = helm_run(&["template", "kauth", "charts/kauth"]);
    assert!(!ok && out.contains("issuer"), "issuer is required: {out}");
    let (ok, out) = helm_run(&["template", "kauth", "charts/kauth", "--set", "issuer=ftp://x"]);
    assert!(!ok && out.contains("issuer"), "issuer must be http(s): {out}");
    let (ok, _) = helm_run(&[
        "template",
        "kauth",
        "charts/kauth",
        "--set",
        "issuer=https://a",
        "--set",
        "replicaCount=2",
    ]);
    assert!(!ok, "several replicas need the shared store");
    let (ok, out) = helm_run(&[
        "template",
        "kauth",
        "charts/kauth",
        "--set",
        "issuer=https://a",
        "--set",
        "replicaCount=2",
        "--set",
        "sharedStore.enabled=true",
    ]);
    assert!(
        !ok && out.contains("name"),
        "the shared store needs the Secret holding its URL: {out}"
    );
    let (ok, out) = helm_run(&[
        "template",
        "kauth",
        "charts/kauth",
        "--set",
        "issuer=https://a",
        "--set",
        "replicaCount=2",
        "--set",
        "sharedStore.enabled=true",
        "--set",
        "sharedStore.urlSecret.name=kauth-db",
    ]);
    assert!(ok, "{out}");
    assert!(
        out.contains("KAUTH_STORE_URL") && out.contains("name: \"kauth-db\", key: \"url\""),
        "the URL comes from the Secret: {out}"
    );
}

#[test]
fn chart_crds_are_the_generated_ones() {
    let chart = std::fs::read_to_string(root().join("charts/kauth/crds/kauth.dev.yaml")).unwrap();
    let generated = std::fs::read_to_string(root().join("crds/kauth.dev.yaml")).unwrap();
    assert!(chart == generated, "charts/kauth/crds is stale: run `make crds`");
}

#[test]
fn people_and_connectors_are_mounted_and_rendered_as_kauth_reads_them() {
    let values = root().join("target/chart-sign-in-values.yaml");
    std::fs::write(
        &values,
        r#"
issuer: https://auth.example.com
people: {local: {secretName: kauth-users}}
connectors:
  - id: corp
    name: Corporate SSO
    issuer: https://login.corp.example.com
    clientId: kauth
    clientSecretRef: {name: corp-oidc, key: client-secret}
    scopes: [profile, email]
    claims: {groups: roles}
  - id: partner
    name: Partner
    issuer: https://idp.partner.example.com
    clientId: kauth-partner
    clientSecretRef: {name: corp-oidc, key: partner-secret}
"#,
    )
    .unwrap();
    let values = values.to_str().unwrap();
    let (ok, out) = helm_run(&["lint", "--strict", "charts/kauth", "-f", values]);
    assert!(ok, "{out}");
    let (ok, out) = helm_run(&["template", "kauth", "charts/kauth", "-f", values]);
    assert!(ok, "{out}");
    let docs: Vec<serde_json::Value> = serde_saphyr::from_multiple(&out).unwrap();
    let kind = |k: &str| docs.iter().find(|d| d["kind"] == k).unwrap_or_else(|| panic!("no {k}"));
    let container = &kind("Deployment")["spec"]["template"]["spec"]["containers"][0];
    let env: Vec<(String, String)> = container["env"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["name"].as_str().unwrap().into(),
                e["value"].as_str().unwrap_or("").into(),
            )
        })
        .collect();
    for (name, value) in [
        ("KAUTH_USERS_FILE", "/etc/kauth/people/users.yaml"),
        ("KAUTH_CONNECTORS_FILE", "/etc/kauth/connectors/connectors.yaml"),
        ("KAUTH_SECRETS_DIR", "/etc/kauth/secrets"),
    ] {
        assert!(env.contains(&(name.into(), value.into())), "{name} in {env:?}");
    }
    let mounts = container["volumeMounts"].to_string();
    assert_eq!(
        mounts.matches("/etc/kauth/secrets/corp-oidc").count(),
        1,
        "one mount per Secret: {mounts}"
    );
    // The rendered connectors.yaml is what kauth parses, with secrets read from the mounts.
    let text = kind("ConfigMap")["data"]["connectors.yaml"].as_str().unwrap();
    let parsed =
        kauth::connectors::Connectors::parse(text, |name, key| (name == "corp-oidc").then(|| format!("{key}-value")))
            .unwrap();
    let corp = parsed.get("corp").unwrap();
    assert_eq!(corp.client_secret, "client-secret-value");
    assert_eq!(corp.claims.groups, "roles");
    assert_eq!(parsed.get("partner").unwrap().client_secret, "partner-secret-value");
    // A connector without https, or with an inline secret, is refused by the schema.
    for bad in ["connectors[0].issuer=http://idp", "connectors[0].clientSecret=inline"] {
        let (ok, out) = helm_run(&["template", "kauth", "charts/kauth", "-f", values, "--set", bad]);
        assert!(!ok, "{bad} accepted: {out}");
    }
}

/// Renders the chart with `sets` and parses its documents.
fn render(sets: &[&str]) -> Vec<serde_json::Value> {
    let mut args = vec![
        "template",
        "kauth",
        "charts/kauth",
        "-n",
        "kauth",
        "--set",
        "issuer=https://auth.example.com",
    ];
    for s in sets {
        args.extend(["--set", s]);
    }
    let (ok, out) = helm_run(&args);
    assert!(ok, "{out}");
    serde_saphyr::from_multiple(&out).unwrap()
}

fn find<'a>(docs: &'a [serde_json::Value], kind: &str, name: &str) -> &'a serde_json::Value {
    docs.iter()
        .find(|d| d["kind"] == kind && d["metadata"]["name"] == name)
        .unwrap_or_else(|| panic!("no {kind} {name}"))
}

/// Metrics and health live on the operations port: probes and the ServiceMonitor use it, the
/// provider's Service does not expose it, and the NetworkPolicy (on by default) lets the
/// provider port in and only DNS and the API out.
#[test]
fn operations_listener_is_apart_and_network_policy_is_on_by_default() {
    let docs = render(&["serviceMonitor.enabled=true", "tenancy.firstPartyNamespaces={portal}"]);
    let deployment = find(&docs, "Deployment", "kauth");
    let container = &deployment["spec"]["template"]["spec"]["containers"][0];
    let args = container["args"].to_string();
    assert!(args.contains("--ops-listen=0.0.0.0:9090"), "{args}");
    assert!(
        args.contains("--claim-grace=24h") && args.contains("--first-party-namespace=portal"),
        "{args}"
    );
    assert_eq!(container["livenessProbe"]["httpGet"]["port"], "ops");
    assert_eq!(container["readinessProbe"]["httpGet"]["port"], "ops");
    let provider = find(&docs, "Service", "kauth");
    let ports: Vec<_> = provider["spec"]["ports"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["targetPort"].clone())
        .collect();
    assert_eq!(
        ports,
        [serde_json::json!("http")],
        "the provider's Service exposes only the provider"
    );
    let metrics = find(&docs, "Service", "kauth-metrics");
    assert_eq!(metrics["spec"]["ports"][0]["targetPort"], "ops");
    let monitor = find(&docs, "ServiceMonitor", "kauth");
    assert_eq!(monitor["spec"]["endpoints"][0]["port"], "ops");
    assert_eq!(
        monitor["spec"]["selector"]["matchLabels"]["app.kubernetes.io/component"],
        "metrics"
    );

    let policy = find(&docs, "NetworkPolicy", "kauth");
    assert_eq!(policy["spec"]["policyTypes"], serde_json::json!(["Ingress", "Egress"]));
    let ingress = policy["spec"]["ingress"].as_array().unwrap();
    assert_eq!(ingress.len(), 1, "only the provider port by default: {ingress:?}");
    assert_eq!(ingress[0]["ports"][0]["port"], "http");
    let egress = policy["spec"]["egress"].as_array().unwrap();
    let ports: Vec<i64> = egress
        .iter()
        .flat_map(|rule| {
            rule["ports"]
                .as_array()
                .unwrap()
                .iter()
                .map(|p| p["port"].as_i64().unwrap())
        })
        .collect();
    assert_eq!(ports, [53, 53, 443, 6443], "DNS and the API only: {egress:?}");

    // With a shared store and connectors, their ports open too; trusted proxies become flags.
    let docs = render(&[
        "sharedStore.enabled=true",
        "sharedStore.urlSecret.name=db",
        "trustedProxies={10.0.0.0/8}",
        "networkPolicy.metricsFrom[0].namespaceSelector.matchLabels.name=monitoring",
    ]);
    let policy = find(&docs, "NetworkPolicy", "kauth");
    assert!(policy["spec"]["egress"].to_string().contains("5432"));
    assert_eq!(policy["spec"]["ingress"][1]["ports"][0]["port"], "ops");
    let args = find(&docs, "Deployment", "kauth")["spec"]["template"]["spec"]["containers"][0]["args"].to_string();
    assert!(args.contains("--trusted-proxy=10.0.0.0/8"), "{args}");
    let (ok, _) = helm_run(&[
        "template",
        "kauth",
        "charts/kauth",
        "--set",
        "issuer=https://a",
        "--set",
        "trustedProxies={everyone}",
    ]);
    assert!(!ok, "a trusted proxy must be a CIDR");
}

/// The two paths to kauth (issue 11): an Ingress and an HTTPRoute for the issuer URL (host
/// and path from the issuer, TLS from the same Secret), kauth's own HTTPS from a Secret or a
/// cert-manager Certificate (probes stay on the plain operations port), and the preset
/// kubectl client.
#[test]
fn ingress_httproute_and_tls_follow_the_issuer() {
    let render_at = |issuer: &str, sets: &[&str]| {
        let mut all = vec![format!("issuer={issuer}")];
        all.extend(sets.iter().map(|s| s.to_string()));
        let refs: Vec<&str> = all.iter().map(String::as_str).collect();
        render(&refs)
    };
    let docs = render_at(
        "https://login.example.com/auth",
        &[
            "ingress.enabled=true",
            "ingress.className=nginx",
            "tls.enabled=true",
            "tls.certManager.enabled=true",
            "tls.certManager.issuerRef.name=letsencrypt",
            "httpRoute.enabled=true",
            "httpRoute.parentRefs[0].name=public",
            "kubectlClient.enabled=true",
        ],
    );
    let ingress = find(&docs, "Ingress", "kauth");
    let rule = &ingress["spec"]["rules"][0];
    assert_eq!(rule["host"], "login.example.com");
    assert_eq!(rule["http"]["paths"][0]["path"], "/auth");
    assert_eq!(rule["http"]["paths"][0]["backend"]["service"]["name"], "kauth");
    assert_eq!(ingress["spec"]["ingressClassName"], "nginx");
    assert_eq!(ingress["spec"]["tls"][0]["hosts"][0], "login.example.com");
    assert_eq!(ingress["spec"]["tls"][0]["secretName"], "kauth-tls");
    let certificate = find(&docs, "Certificate", "kauth");
    assert_eq!(certificate["spec"]["secretName"], "kauth-tls");
    assert_eq!(certificate["spec"]["issuerRef"]["name"], "letsencrypt");
    assert_eq!(certificate["spec"]["dnsNames"][0], "login.example.com");
    let route = find(&docs, "HTTPRoute", "kauth");
    assert_eq!(route["spec"]["hostnames"][0], "login.example.com");
    assert_eq!(route["spec"]["rules"][0]["matches"][0]["path"]["value"], "/auth");
    assert_eq!(route["spec"]["parentRefs"][0]["name"], "public");
    let pod = &find(&docs, "Deployment", "kauth")["spec"]["template"]["spec"];
    let args = pod["containers"][0]["args"].to_string();
    assert!(args.contains("--tls-cert-file=/etc/kauth/tls/tls.crt"), "{args}");
    assert_eq!(pod["containers"][0]["readinessProbe"]["httpGet"]["port"], "ops");
    let volumes = pod["volumes"].to_string();
    assert!(volumes.contains("\"secretName\":\"kauth-tls\""), "{volumes}");
    let kubectl = find(&docs, "OAuthClient", "kubectl");
    assert_eq!(kubectl["spec"]["clientType"], "public");
    assert_eq!(kubectl["spec"]["redirectUris"][0], "http://127.0.0.1/callback");

    // An issuer with a port and no path; an existing Secret; nothing optional by default.
    let docs = render_at(
        "https://auth.example.com:8443",
        &["ingress.enabled=true", "tls.enabled=true", "tls.secretName=mine"],
    );
    let ingress = find(&docs, "Ingress", "kauth");
    assert_eq!(ingress["spec"]["rules"][0]["host"], "auth.example.com");
    assert_eq!(ingress["spec"]["rules"][0]["http"]["paths"][0]["path"], "/");
    assert_eq!(ingress["spec"]["tls"][0]["secretName"], "mine");
    assert!(
        docs.iter()
            .all(|d| d["kind"] != "Certificate" && d["kind"] != "HTTPRoute")
    );
    let plain = render(&[]);
    assert!(
        plain.iter().all(
            |d| !["Ingress", "HTTPRoute", "Certificate", "OAuthClient"].contains(&d["kind"].as_str().unwrap_or(""))
        )
    );
    let (ok, out) = helm_run(&[
        "template",
        "kauth",
        "charts/kauth",
        "--set",
        "issuer=https://a.example.com",
        "--set",
        "tls.enabled=true",
    ]);
    assert!(!ok && out.contains("tls.secretName"), "{out}");
}

/// The `kauth_...` metric names in a PromQL expression.
fn metric_names(expr: &str) -> Vec<String> {
    let mut names = Vec::new();
    let mut rest = expr;
    while let Some(at) = rest.find("kauth_") {
        let name: String = rest[at..]
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect();
        rest = &rest[at + name.len()..];
        names.push(name);
    }
    names
}

/// The dashboard and the alerts (issue 13) query only metrics kauth exports: every
/// `kauth_...` name in a panel or rule is in a running kauth's /metrics (counters by their
/// `_total` samples, histograms by `_bucket`, `_sum`, `_count`).
#[tokio::test]
async fn every_metric_the_dashboard_and_alerts_query_is_exported() {
    let docs = render(&[
        "monitoring.dashboard.enabled=true",
        "monitoring.prometheusRule.enabled=true",
    ]);
    let mut exprs: Vec<String> = find(&docs, "PrometheusRule", "kauth")["spec"]["groups"][0]["rules"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["expr"].as_str().unwrap().to_string())
        .collect();
    let alerts = exprs.len();
    let dashboard: serde_json::Value = serde_json::from_str(
        find(&docs, "ConfigMap", "kauth-dashboard")["data"]["kauth.json"]
            .as_str()
            .unwrap(),
    )
    .unwrap();
    for panel in dashboard["panels"].as_array().unwrap() {
        for target in panel["targets"].as_array().unwrap() {
            exprs.push(target["expr"].as_str().unwrap().to_string());
        }
    }
    assert!(alerts >= 6 && exprs.len() > alerts + 8, "{exprs:?}");
    // A running kauth after some traffic (a labelled family is listed once it has a sample)...
    let p = support::TestProvider::start(&[("scopes.yaml", support::SCOPES), ("clients.yaml", support::CLIENTS)]).await;
    let (id, secret) = p.credentials("shop", "backend");
    let token = reqwest::Client::new()
        .post(format!("{}/token", p.url))
        .basic_auth(id, Some(secret))
        .form(&[("grant_type", "client_credentials")])
        .send()
        .await
        .unwrap();
    assert_eq!(token.status(), 200);
    let mut exposition = reqwest::get(format!("{}/metrics", p.ops_url))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    // ...and the families this traffic leaves empty: the controller's, which standalone has no
    // use for, and the use of a rotated-out secret (the cluster tier's retirement test sees it
    // on a running kauth): the same registry, after one sample each.
    let controller = kauth::metrics::Metrics::new();
    controller.reconciled("OAuthClient", Some("kube"));
    controller.previous_secret_used("shop.backend");
    let key = kauth::metrics::SigningKeyLabels {
        signing_key: "kauth/default".into(),
    };
    controller.signing_key_next_step.get_or_create(&key).set(1);
    exposition.push_str(&controller.render());
    // Families (counters and histograms included) are listed by their TYPE line, samples or not.
    let families: std::collections::BTreeSet<&str> = exposition
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.split(' ').next())
        .collect();
    for expr in &exprs {
        let names = metric_names(expr);
        assert!(!names.is_empty(), "no kauth metric in {expr}");
        for name in names {
            let family = ["_total", "_bucket", "_sum", "_count"]
                .iter()
                .find_map(|suffix| name.strip_suffix(suffix))
                .unwrap_or(&name);
            assert!(
                families.contains(family) || families.contains(name.as_str()),
                "{name} (in {expr}) is not a metric kauth exports: {families:?}"
            );
        }
    }
}

/// Tracing is off by default; `tracing.otlpEndpoint` turns it on with the standard OTEL_*
/// variables, and `extraEnv` adds any other (a sampler here).
#[test]
fn tracing_values_become_the_standard_otel_environment() {
    let env_of = |docs: &[serde_json::Value]| -> std::collections::BTreeMap<String, String> {
        find(docs, "Deployment", "kauth")["spec"]["template"]["spec"]["containers"][0]["env"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|e| Some((e["name"].as_str()?.to_string(), e["value"].as_str()?.to_string())))
            .collect()
    };
    let off = env_of(&render(&[]));
    assert!(!off.keys().any(|k| k.starts_with("OTEL_")), "{off:?}");
    let on = env_of(&render(&[
        "tracing.otlpEndpoint=http://otel-collector.observability:4318",
        "extraEnv[0].name=OTEL_TRACES_SAMPLER",
        "extraEnv[0].value=parentbased_traceidratio",
    ]));
    assert_eq!(
        on["OTEL_EXPORTER_OTLP_ENDPOINT"],
        "http://otel-collector.observability:4318"
    );
    assert_eq!(on["OTEL_EXPORTER_OTLP_PROTOCOL"], "http/protobuf");
    assert_eq!(on["OTEL_SERVICE_NAME"], "kauth");
    assert_eq!(on["OTEL_TRACES_SAMPLER"], "parentbased_traceidratio");
    let (ok, out) = helm_run(&[
        "template",
        "kauth",
        "charts/kauth",
        "--set",
        "issuer=https://auth.example.com",
        "--set",
        "tracing.protocol=grpc",
    ]);
    assert!(!ok && out.contains("protocol"), "grpc is refused: {out}");
}

/// `jwks.namespaceSelector.matchLabels` becomes the flag kauth parses (all labels must match).
#[test]
fn jwks_namespace_selector_reaches_kauth() {
    let args_of = |docs: &[serde_json::Value]| {
        find(docs, "Deployment", "kauth")["spec"]["template"]["spec"]["containers"][0]["args"].to_string()
    };
    assert!(!args_of(&render(&[])).contains("--jwks-namespace-selector"));
    let args = args_of(&render(&["jwks.namespaceSelector.matchLabels.team=payments"]));
    let flag = args
        .split('"')
        .find_map(|a| a.strip_prefix("--jwks-namespace-selector="))
        .expect("the selector flag");
    let parsed = kauth::controller::jwks::parse_match_labels(flag).unwrap();
    assert_eq!(parsed, [("team".to_string(), "payments".to_string())].into());
}

/// `requirePushedAuthorizationRequests` becomes the flag kauth reads, and only when set.
#[test]
fn requiring_pushed_authorization_requests_reaches_kauth() {
    let args_of = |docs: &[serde_json::Value]| {
        find(docs, "Deployment", "kauth")["spec"]["template"]["spec"]["containers"][0]["args"].to_string()
    };
    let flag = "\"--require-pushed-authorization-requests\"";
    assert!(!args_of(&render(&[])).contains(flag));
    assert!(args_of(&render(&["requirePushedAuthorizationRequests=true"])).contains(flag));
}

#[test]
fn second_factors_for_listed_groups_reach_kauth_as_kauth_reads_them() {
    let env_of = |docs: &[serde_json::Value]| {
        find(docs, "Deployment", "kauth")["spec"]["template"]["spec"]["containers"][0]["env"]
            .as_array()
            .cloned()
            .unwrap_or_default()
    };
    let groups = |env: &[serde_json::Value]| {
        env.iter()
            .find(|e| e["name"] == "KAUTH_REQUIRE_SECOND_FACTOR_GROUPS")
            .map(|e| e["value"].as_str().unwrap().to_string())
    };
    assert_eq!(groups(&env_of(&render(&[]))), None);
    let docs = render(&["people.secondFactors.requiredGroups={cluster-admins,shop-admins}"]);
    assert_eq!(groups(&env_of(&docs)).as_deref(), Some("cluster-admins,shop-admins"));
}

/// Every trap a newcomer hit (issue 15): values that only make sense together are refused with
/// a sentence that names what to set, never a schema's "Must validate ..." or a silent nothing.
#[test]
fn values_that_only_make_sense_together_are_refused_with_a_sentence() {
    let refused = |sets: &[&str], sentence: &str| {
        let mut args = vec!["template", "kauth", "charts/kauth", "-n", "kauth"];
        for s in sets {
            args.extend(["--set", s]);
        }
        let (ok, out) = helm_run(&args);
        assert!(!ok, "{sets:?} rendered:\n{out}");
        assert!(out.contains(sentence), "{sets:?}: {out}");
        assert!(!out.contains("Must validate"), "{sets:?}: {out}");
    };
    let issuer = "issuer=https://auth.example.com";
    refused(&[], "issuer is required: the URL tokens carry");
    refused(&["issuer=ftp://x"], "must be an http(s) URL without query or fragment");
    refused(
        &[issuer, "replicaCount=2"],
        "replicaCount 2 needs sharedStore.enabled=true",
    );
    refused(
        &[issuer, "replicaCount=2", "sharedStore.enabled=true"],
        "sharedStore.enabled needs sharedStore.urlSecret.name",
    );
    refused(
        &[
            issuer,
            "tls.certManager.enabled=true",
            "tls.certManager.issuerRef.name=le",
        ],
        "tls.certManager.enabled needs tls.enabled=true",
    );
    refused(&[issuer, "tls.enabled=true"], "tls.enabled needs tls.secretName");
    refused(
        &[issuer, "httpRoute.enabled=true"],
        "httpRoute.enabled needs httpRoute.parentRefs",
    );
    refused(
        &[issuer, "controller.enabled=false", "provider.enabled=false"],
        "kauth would do nothing",
    );
}

/// What platform teams install: each combination lints strictly and renders what it says.
#[test]
fn the_combinations_platform_teams_use_lint_and_render() {
    for sets in [
        &[
            "ingress.enabled=true",
            "ingress.className=nginx",
            "ingress.tls.secretName=auth-tls",
        ][..],
        &[
            "httpRoute.enabled=true",
            "httpRoute.parentRefs[0].name=public",
            "httpRoute.parentRefs[0].namespace=gw",
        ],
        &[
            "tls.enabled=true",
            "tls.certManager.enabled=true",
            "tls.certManager.issuerRef.name=letsencrypt",
        ],
        &["tls.enabled=true", "tls.secretName=kauth-tls", "ingress.enabled=true"],
        &[
            "replicaCount=2",
            "sharedStore.enabled=true",
            "sharedStore.urlSecret.name=kauth-db",
            "podDisruptionBudget.enabled=true",
        ],
        &[
            "monitoring.dashboard.enabled=true",
            "monitoring.prometheusRule.enabled=true",
            "serviceMonitor.enabled=true",
        ],
        &[
            "networkPolicy.enabled=true",
            "networkPolicy.egress.apiServer.to[0].ipBlock.cidr=10.0.0.1/32",
        ],
        &[
            "kubectlClient.enabled=true",
            "people.local.secretName=kauth-users",
            "persistence.enabled=true",
        ],
    ] {
        let mut args = vec![
            "lint",
            "--strict",
            "charts/kauth",
            "--set",
            "issuer=https://auth.example.com",
        ];
        for s in sets {
            args.extend(["--set", s]);
        }
        let (ok, out) = helm_run(&args);
        assert!(ok, "{sets:?}: {out}");
        render(sets);
    }
    let route = render(&["httpRoute.enabled=true", "httpRoute.parentRefs[0].name=public"]);
    assert_eq!(
        find(&route, "HTTPRoute", "kauth")["spec"]["parentRefs"][0]["name"],
        "public"
    );
    // cert-manager for a public ACME issuer: the issuer's host alone (in-cluster names are
    // refused by such issuers), unless asked for.
    let tls = [
        "tls.enabled=true",
        "tls.certManager.enabled=true",
        "tls.certManager.issuerRef.name=le",
    ];
    let cert = render(&tls);
    assert_eq!(
        find(&cert, "Certificate", "kauth")["spec"]["dnsNames"],
        serde_json::json!(["auth.example.com"])
    );
    let private = render(&[&tls[..], &["tls.certManager.inClusterNames=true"]].concat());
    assert_eq!(
        find(&private, "Certificate", "kauth")["spec"]["dnsNames"][1],
        "kauth.kauth.svc"
    );
}

/// The chart README names every key of values.yaml.
#[test]
fn every_value_is_documented_in_the_chart_readme() {
    let values: serde_json::Value =
        serde_saphyr::from_str(&std::fs::read_to_string(root().join("charts/kauth/values.yaml")).unwrap()).unwrap();
    let readme = std::fs::read_to_string(root().join("charts/kauth/README.md")).unwrap();
    // Maps whose keys are the user's own (labels, resources) are one value.
    const FREE_FORM: &[&str] = &[
        "resources",
        "annotations",
        "labels",
        "matchLabels",
        "podAnnotations",
        "nodeSelector",
    ];
    fn keys(value: &serde_json::Value, path: String, out: &mut Vec<String>) {
        match value.as_object() {
            Some(map) if !map.is_empty() && !FREE_FORM.iter().any(|f| path.ends_with(f)) => {
                for (k, v) in map {
                    let next = if path.is_empty() {
                        k.clone()
                    } else {
                        format!("{path}.{k}")
                    };
                    keys(v, next, out);
                }
            }
            _ => out.push(path),
        }
    }
    let mut all = Vec::new();
    keys(&values, String::new(), &mut all);
    let missing: Vec<&String> = all.iter().filter(|k| !readme.contains(&format!("`{k}`"))).collect();
    assert!(missing.is_empty(), "not in charts/kauth/README.md: {missing:?}");
    // The Service's port as the README says it.
    let service = render(&[]);
    let port = find(&service, "Service", "kauth")["spec"]["ports"][0]["port"].clone();
    assert!(readme.contains(&format!("`service.port` ({port})")), "port {port}");
    // The image the chart runs is the crate's version (what `make image` tags).
    let chart = std::fs::read_to_string(root().join("charts/kauth/Chart.yaml")).unwrap();
    assert!(
        chart.contains(&format!("appVersion: \"{}\"", env!("CARGO_PKG_VERSION"))),
        "{chart}"
    );
}

/// NOTES.txt's first app, applied as written (to standalone, which judges manifests as the
/// controller does), gets a token: it used to answer invalid_target (no audience granted).
#[tokio::test]
async fn the_first_app_in_notes_gets_a_token() {
    let notes = std::fs::read_to_string(root().join("charts/kauth/templates/NOTES.txt")).unwrap();
    let start = notes.find("<<YAML\n").expect("a heredoc") + "<<YAML\n".len();
    let end = start + notes[start..].find("\n  YAML\n").expect("its end");
    let yaml: String = notes[start..end]
        .lines()
        .map(|l| l.strip_prefix("  ").unwrap_or(l))
        .collect::<Vec<_>>()
        .join("\n");
    let p = support::TestProvider::start(&[("first-app.yaml", &yaml)]).await;
    assert!(p.problems().is_empty(), "{:?}", p.problems());
    let (id, secret) = p.credentials("my-team", "my-app");
    let r = support::rp_http()
        .post(format!("{}/token", p.url))
        .basic_auth(&id, Some(&secret))
        .form(&[("grant_type", "client_credentials")])
        .send()
        .await
        .unwrap();
    let status = r.status();
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(status, 200, "{body}");
    assert!(
        notes.contains("addressed to https://my-team.example.com"),
        "the note says what the token is for"
    );
}
