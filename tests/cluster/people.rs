//! People: sign-in through `kauth run` with an RS256 ID token, and `kauth login` for
//! kubectl against the apiserver.

use crate::harness::*;

/// The HTTP status of listing ConfigMaps in `ns` with `bearer` as the only credential.
async fn list_as(bearer: &str, ns: &str) -> u16 {
    let mut config = kube::Config::infer().await.unwrap();
    config.auth_info = kube::config::AuthInfo {
        token: Some(bearer.to_string().into()),
        ..Default::default()
    };
    let client = Client::try_from(config).unwrap();
    match Api::<ConfigMap>::namespaced(client, ns)
        .list(&ListParams::default())
        .await
    {
        Ok(_) => 200,
        Err(kube::Error::Api(status)) => status.code,
        Err(e) => panic!("{e}"),
    }
}

/// A browser over HTTPS that trusts `ca` (reqwest is built without TLS here): keeps the
/// cookies kauth sets, follows no redirect.
struct TlsBrowser {
    client: hyper_util::client::legacy::Client<
        hyper_rustls::HttpsConnector<hyper_util::client::legacy::connect::HttpConnector>,
        http_body_util::Full<bytes::Bytes>,
    >,
    cookies: std::sync::Mutex<BTreeMap<String, String>>,
}

impl TlsBrowser {
    fn new(ca: &Path) -> Self {
        Self {
            client: support::https_trusting(ca),
            cookies: Default::default(),
        }
    }

    /// GET (no form) or POST `form` to `url`: status, Location and body.
    async fn send(&self, url: &str, form: Option<&[(&str, &str)]>) -> (u16, Option<String>, String) {
        use http_body_util::BodyExt;
        let cookie = self
            .cookies
            .lock()
            .unwrap()
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join("; ");
        let mut request = http::Request::builder().uri(url).header("cookie", cookie);
        let body = match form {
            Some(form) => {
                request = request
                    .method("POST")
                    .header("content-type", "application/x-www-form-urlencoded");
                url::form_urlencoded::Serializer::new(String::new())
                    .extend_pairs(form)
                    .finish()
            }
            None => String::new(),
        };
        let response = self
            .client
            .request(
                request
                    .body(http_body_util::Full::new(bytes::Bytes::from(body)))
                    .unwrap(),
            )
            .await
            .unwrap();
        for set in response.headers().get_all("set-cookie") {
            let pair = set.to_str().unwrap().split(';').next().unwrap();
            if let Some((name, value)) = pair.split_once('=') {
                self.cookies.lock().unwrap().insert(name.into(), value.into());
            }
        }
        let status = response.status().as_u16();
        let location = response
            .headers()
            .get("location")
            .map(|l| l.to_str().unwrap().to_string());
        let body = response.into_body().collect().await.unwrap().to_bytes();
        (status, location, String::from_utf8_lossy(&body).into_owned())
    }
}

/// A person types a device's `code` at kauth's /device page, signs in and allows it.
async fn answer_device(issuer: &str, ca: &Path, code: &str, (user, password): (&str, &str)) {
    let browser = TlsBrowser::new(ca);
    let (mut status, mut location, mut body) = browser
        .send(&format!("{issuer}/device"), Some(&[("user_code", code)]))
        .await;
    while status == 303 {
        let to = location.clone().unwrap();
        let (page_status, _, page) = browser.send(&to, None).await;
        assert_eq!(page_status, 200, "{page}");
        let (request, csrf) = (
            support::hidden_field(&page, "request"),
            support::hidden_field(&page, "csrf"),
        );
        let (action, form): (&str, Vec<(&str, &str)>) = if to.contains("/login") {
            (
                "/login",
                vec![
                    ("request", &request),
                    ("csrf", &csrf),
                    ("username", user),
                    ("password", password),
                ],
            )
        } else {
            (
                "/consent",
                vec![("request", &request), ("csrf", &csrf), ("decision", "allow")],
            )
        };
        (status, location, body) = browser.send(&format!("{issuer}{action}"), Some(&form)).await;
    }
    assert!(body.contains("Device signed in"), "{status}: {body}");
}

fn standalone_with_tls(manifests: &Path, state: &Path) -> (Child, String, PathBuf) {
    use std::io::{BufRead, BufReader};
    let mut child = Command::new(kauth_bin())
        .args(["standalone", "--port", "0", "--ops-port", "0", "--tls", "self-signed"])
        .arg("--manifests")
        .arg(manifests)
        .arg("--state-dir")
        .arg(state)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let first = lines.next().unwrap().unwrap();
    std::thread::spawn(move || lines.for_each(drop));
    let issuer = first
        .split("issuer ")
        .nth(1)
        .and_then(|rest| rest.split(' ').next())
        .unwrap()
        .to_string();
    (child, issuer, state.join("tls/ca.crt"))
}

#[tokio::test]
#[ignore = "needs a cluster: make test-cluster"]
async fn a_person_signs_in_through_kauth_run_and_gets_an_rs256_id_token() {
    let (client, _, kns, [ns]) = setup(["app"]).await;
    // The chart mounts the kauth-users Secret; here the file stands in for the mount.
    let people = tempfile::tempdir().unwrap();
    let users = people.path().join("users.yaml");
    std::fs::write(
        &users,
        format!(
            "users:\n- username: alice\n  email: alice@example.com\n  passwordHash: '{}'\n",
            kauth::people::hash_password("wonderland")
        ),
    )
    .unwrap();
    let kauth = Kauth::spawn_with(&kns, "sign-in", None, &["--users-file", users.to_str().unwrap()]);
    kauth.wait_ready(Duration::from_secs(30)).await;
    let web: OAuthClient = serde_json::from_value(json!({
        "apiVersion": "kauth.dev/v1alpha1", "kind": "OAuthClient",
        "metadata": {"name": "web", "namespace": ns},
        "spec": {"grantTypes": ["authorization_code"], "redirectUris": ["https://app.example.com/cb"]}
    }))
    .unwrap();
    create(&client, &web).await;
    ready_client(&client, &ns, "web").await;
    let creds = secret_data(&client, &ns, "web-oauth").await;
    // With no SigningKey at all, kauth creates the ES256 default and an RS256 key for ID tokens.
    let keys: Api<SigningKey> = Api::namespaced(client.clone(), &kns);
    wait_until("default SigningKeys", Duration::from_secs(10), async || {
        let names: Vec<String> = keys
            .list(&ListParams::default())
            .await
            .unwrap()
            .items
            .iter()
            .map(|k| k.name_any())
            .collect();
        names.contains(&"default".to_string()) && names.contains(&"default-rs256".to_string())
    })
    .await;

    // The provider publishes the RS256 key once its Secret reached the cache.
    wait_until("an RS256 key in the JWKS", Duration::from_secs(20), async || {
        let jwks: Value = reqwest::get(format!("{}/jwks", kauth.url))
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        jwks["keys"].as_array().unwrap().iter().any(|k| k["kty"] == "RSA")
    })
    .await;
    let browser = reqwest::Client::builder()
        .cookie_store(true)
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let authorize = format!(
        "{}/authorize?client_id={}&response_type=code&scope=openid%20email&state=s&nonce=n&redirect_uri=https%3A%2F%2Fapp.example.com%2Fcb",
        kauth.url, creds["CLIENT_ID"]
    );
    let location = |r: &reqwest::Response| r.headers()["location"].to_str().unwrap().to_string();
    let mut to_client = None;
    // The client's Secret may still be on its way into the provider's registry (Ready is
    // written by the controller, which does not wait for the provider): retry briefly.
    wait_until("sign-in through kauth run", Duration::from_secs(20), async || {
        let r = browser.get(&authorize).send().await.unwrap();
        if r.status() != 303 {
            return false;
        }
        let page = browser.get(location(&r)).send().await.unwrap().text().await.unwrap();
        let form = [
            ("request", support::hidden_field(&page, "request")),
            ("csrf", support::hidden_field(&page, "csrf")),
            ("username", "alice".into()),
            ("password", "wonderland".into()),
        ];
        let r = browser
            .post(format!("{}/login", kauth.url))
            .form(&form)
            .send()
            .await
            .unwrap();
        if r.status() != 303 {
            return false;
        }
        let page = browser.get(location(&r)).send().await.unwrap().text().await.unwrap();
        let form = [
            ("request", support::hidden_field(&page, "request")),
            ("csrf", support::hidden_field(&page, "csrf")),
            ("decision", "allow".into()),
        ];
        let r = browser
            .post(format!("{}/consent", kauth.url))
            .form(&form)
            .send()
            .await
            .unwrap();
        to_client = Some(location(&r));
        true
    })
    .await;
    let back = url::Url::parse(&to_client.unwrap()).unwrap();
    let code = back.query_pairs().find(|(k, _)| k == "code").unwrap().1.into_owned();
    let tokens: Value = reqwest::Client::new()
        .post(format!("{}/token", kauth.url))
        .basic_auth(&creds["CLIENT_ID"], Some(&creds["CLIENT_SECRET"]))
        .form(&[
            ("grant_type", "authorization_code"),
            ("code", &code),
            ("redirect_uri", "https://app.example.com/cb"),
        ])
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let id_token = tokens["id_token"].as_str().unwrap_or_else(|| panic!("{tokens}"));
    let header = jsonwebtoken::decode_header(id_token).unwrap();
    assert_eq!(header.alg, jsonwebtoken::Algorithm::RS256);
    let jwks: Value = reqwest::get(format!("{}/jwks", kauth.url))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(
        jwks["keys"]
            .as_array()
            .unwrap()
            .iter()
            .any(|k| k["kid"].as_str() == header.kid.as_deref()),
        "the ID token's key is published"
    );
}

/// People sign in to the cluster itself (issue 11): the apiserver is started with its OIDC
/// flags pointing at kauth over HTTPS (kauth's own TLS, a local CA), `kauth login --device` is
/// kubectl's credential plugin, and kubectl is then the person: RBAC bound to the person's
/// group (with kauth's prefix) allows exactly what it grants, and a tampered token is refused.
#[tokio::test]
#[ignore = "needs a cluster: make test-cluster"]
async fn people_sign_in_to_the_apiserver_with_kauth_login() {
    let Some(dir) = local_apiserver() else {
        eprintln!("skipped: KUBECONFIG is not the local test apiserver, which this test restarts");
        return;
    };
    let work = tempfile::tempdir().unwrap();
    let manifests = work.path().join("manifests");
    std::fs::create_dir_all(&manifests).unwrap();
    for entry in std::fs::read_dir(root().join("examples")).unwrap() {
        let path = entry.unwrap().path();
        std::fs::copy(&path, manifests.join(path.file_name().unwrap())).unwrap();
    }
    std::fs::write(manifests.join("kubectl.yaml"), support::KUBECTL_CLIENT).unwrap();
    std::fs::write(manifests.join("ci.yaml"), support::CI_CLUSTER_ACCESS).unwrap();
    let (kauth, issuer, ca) = standalone_with_tls(&manifests, &work.path().join("state"));
    // Killed when the test ends, also when it fails halfway.
    let kauth = support::binary::Running(kauth);
    let config = Command::new(kauth_bin())
        .args(["cluster-auth-config", "--client-id", "kauth.kubectl"])
        .arg(format!("--issuer={issuer}"))
        .arg(format!("--apiserver-ca-path={}", ca.display()))
        .output()
        .unwrap();
    assert!(config.status.success(), "{}", String::from_utf8_lossy(&config.stderr));
    let flags: Vec<String> = String::from_utf8(config.stdout)
        .unwrap()
        .lines()
        .take_while(|l| !l.starts_with("---"))
        .filter(|l| l.starts_with("--"))
        .map(str::to_string)
        .collect();
    assert!(flags.iter().any(|f| f == "--oidc-username-prefix=kauth:"), "{flags:?}");

    // The apiserver again, with the flags kauth printed (the original ones are put back last).
    let original = kill_apiserver(&dir);
    let mut with_oidc = original.clone();
    with_oidc.0.extend(flags.iter().cloned());
    relaunch_apiserver(&dir, &with_oidc);
    let admin = client_when_ready().await;
    let id = unique();
    let (mine, other) = (format!("people-{id}"), format!("closed-{id}"));
    namespace(&admin, &mine).await;
    namespace(&admin, &other).await;
    let role: Role = serde_json::from_value(json!({
        "metadata": {"name": "read-config", "namespace": mine},
        "rules": [{"apiGroups": [""], "resources": ["configmaps"], "verbs": ["get", "list"]}]
    }))
    .unwrap();
    create(&admin, &role).await;
    let binding: RoleBinding = serde_json::from_value(json!({
        "metadata": {"name": "shop-admins-read", "namespace": mine},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "read-config"},
        "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "Group", "name": "kauth:shop-admins"}]
    }))
    .unwrap();
    create(&admin, &binding).await;

    // kauth login, as kubectl will run it: the device grant, answered by alice.
    let cache = work.path().join("login-cache");
    let login_args = vec![
        "login".to_string(),
        format!("--issuer={issuer}"),
        "--client-id=kauth.kubectl".to_string(),
        format!("--certificate-authority={}", ca.display()),
        format!("--cache-dir={}", cache.display()),
        "--device".to_string(),
    ];
    let mut login = Command::new(kauth_bin())
        .args(&login_args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let code = {
        use std::io::{BufRead, BufReader};
        let stderr = BufReader::new(login.stderr.take().unwrap());
        let line = stderr
            .lines()
            .map_while(Result::ok)
            .find(|l| l.contains("enter the code"))
            .expect("kauth login prints the code");
        line.rsplit(' ').next().unwrap().to_string()
    };
    answer_device(&issuer, &ca, &code, ("alice", "alice-demo-password")).await;
    let out = login.wait_with_output().unwrap();
    assert!(out.status.success());
    let credential: Value = serde_json::from_slice(&out.stdout).unwrap();
    let token = credential["status"]["token"].as_str().unwrap().to_string();

    // The apiserver reads kauth's discovery document when it starts, in the background.
    let started = Instant::now();
    while list_as(&token, &mine).await != 200 {
        if started.elapsed() > Duration::from_secs(40) {
            let log = std::fs::read_to_string(dir.join("apiserver.log")).unwrap_or_default();
            let oidc: Vec<&str> = log.lines().filter(|l| l.to_lowercase().contains("oidc")).collect();
            panic!(
                "the apiserver never accepted kauth's ID token; its OIDC log lines:\n{}",
                oidc.join("\n")
            );
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    eprintln!(
        "the apiserver accepted the ID token {:?} after it was started",
        started.elapsed()
    );

    // kubectl with a kubeconfig whose user runs kauth login (from the cache now).
    let kubeconfig = work.path().join("alice.kubeconfig");
    let server = kube::Config::infer().await.unwrap().cluster_url.to_string();
    let server = server.trim_end_matches('/');
    let args: String = login_args[..5].iter().map(|a| format!("\n        - {a:?}")).collect();
    std::fs::write(
        &kubeconfig,
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: local\n  cluster: {{server: {server:?}, insecure-skip-tls-verify: true}}\nusers:\n- name: alice\n  user:\n    exec:\n      apiVersion: client.authentication.k8s.io/v1\n      command: {:?}\n      args:{args}\n      interactiveMode: Never\ncontexts:\n- name: alice\n  context: {{cluster: local, user: alice}}\ncurrent-context: alice\n",
            kauth_bin().display()
        ),
    )
    .unwrap();
    let kubectl = |args: &[&str]| {
        let tools = PathBuf::from(std::env::var("KAUTH_TOOLS").expect("KAUTH_TOOLS (tests/cluster/tools.sh)"));
        let out = Command::new(tools.join("kubectl"))
            .arg("--kubeconfig")
            .arg(&kubeconfig)
            .args(args)
            .output()
            .unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr),
        )
    };
    let (ok, said) = kubectl(&["get", "configmaps", "-n", &mine]);
    assert!(ok, "alice's group may list ConfigMaps in {mine}: {said}");
    let (ok, said) = kubectl(&["get", "configmaps", "-n", &other]);
    assert!(
        !ok && said.contains("User \"kauth:alice\""),
        "and nowhere else, as kauth:alice: {said}"
    );
    let (ok, said) = kubectl(&["get", "secrets", "-n", &mine]);
    assert!(!ok && said.contains("forbidden"), "nor anything else: {said}");

    // A tampered token (one claim changed, signature kept) is refused outright.
    let tampered = {
        use base64::Engine;
        let engine = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        let parts: Vec<&str> = token.split('.').collect();
        let mut claims: Value = serde_json::from_slice(&engine.decode(parts[1]).unwrap()).unwrap();
        claims["groups"] = json!(["system:masters"]);
        format!("{}.{}.{}", parts[0], engine.encode(claims.to_string()), parts[2])
    };
    assert_eq!(list_as(&tampered, &mine).await, 401, "a tampered token");
    assert_eq!(list_as(&token, &mine).await, 200, "the genuine one");

    // CI, no person (issue 25): the CI's own client logs in with its secret, non-interactively,
    // for the cluster's audience (the platform's Scope); the apiserver sees it as
    // kauth:client:ci.deployer, which RBAC names like anyone else.
    let ci_binding: RoleBinding = serde_json::from_value(json!({
        "metadata": {"name": "ci-deployer-read", "namespace": mine},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "read-config"},
        "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": "kauth:client:ci.deployer"}]
    }))
    .unwrap();
    create(&admin, &ci_binding).await;
    let secret = work.path().join("state/secrets/ci/deployer-oauth/CLIENT_SECRET");
    let ci_args = [
        "login".to_string(),
        format!("--issuer={issuer}"),
        "--client-id=ci.deployer".to_string(),
        format!("--certificate-authority={}", ca.display()),
        format!("--cache-dir={}", work.path().join("ci-cache").display()),
        format!("--client-secret-file={}", secret.display()),
        "--scope=kubernetes".to_string(),
    ];
    let ci_kubeconfig = work.path().join("ci.kubeconfig");
    let args: String = ci_args.iter().map(|a| format!("\n        - {a:?}")).collect();
    std::fs::write(
        &ci_kubeconfig,
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: local\n  cluster: {{server: {server:?}, insecure-skip-tls-verify: true}}\nusers:\n- name: ci\n  user:\n    exec:\n      apiVersion: client.authentication.k8s.io/v1\n      command: {:?}\n      args:{args}\n      interactiveMode: Never\ncontexts:\n- name: ci\n  context: {{cluster: local, user: ci}}\ncurrent-context: ci\n",
            kauth_bin().display()
        ),
    )
    .unwrap();
    let kubectl_as = |config: &Path, args: &[&str]| {
        let tools = PathBuf::from(std::env::var("KAUTH_TOOLS").expect("KAUTH_TOOLS (tests/cluster/tools.sh)"));
        let out = Command::new(tools.join("kubectl"))
            .arg("--kubeconfig")
            .arg(config)
            .args(args)
            .stdin(Stdio::null())
            .output()
            .unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr),
        )
    };
    let (ok, said) = kubectl_as(&ci_kubeconfig, &["get", "configmaps", "-n", &mine]);
    assert!(ok, "the CI's client may list ConfigMaps in {mine}: {said}");
    let (ok, said) = kubectl_as(&ci_kubeconfig, &["get", "configmaps", "-n", &other]);
    assert!(
        !ok && said.contains("User \"kauth:client:ci.deployer\""),
        "and nowhere else, as itself (never a person): {said}"
    );

    drop(kauth);
    let _ = kill_apiserver(&dir);
    relaunch_apiserver(&dir, &original);
    client_when_ready().await;
}
