//! Scale benchmarks on a real apiserver (`make bench` runs them; `make test-cluster` skips
//! them): thousands of clients becoming Ready, and kauth starting on clients already there.

use crate::harness::*;

/// A scale test's client count (`make bench` sets 10,000; the suite keeps 1,000 within CI's
/// time), apiserver client, run id, and kauth's and the clients' namespaces (created).
async fn scale_setup(prefix: &str) -> (usize, Client, String, String, String) {
    let n: usize = std::env::var("KAUTH_SCALE_CLIENTS").map_or(1000, |v| v.parse().unwrap());
    let (client, id, kns, [ns]) = setup([prefix]).await;
    (n, client, id, kns, ns)
}

/// The Scope of a scale test: `value` granted to its own namespace.
async fn scale_scope(client: &Client, ns: &str, value: &str) {
    let scope: Scope = serde_json::from_value(json!({
        "apiVersion": "kauth.dev/v1alpha1", "kind": "Scope",
        "metadata": {"name": "read", "namespace": ns},
        "spec": {"value": value, "audience": format!("https://{ns}.example.com")}
    }))
    .unwrap();
    create(client, &scope).await;
}

/// Creates OAuthClients `c0`..`c{n-1}` asking for `scope`, 16 at a time.
async fn create_scale_clients(api: &Api<OAuthClient>, n: usize, scope: &str) {
    let ns = api.namespace().unwrap_or_default().to_string();
    futures::stream::iter(0..n)
        .map(|i| {
            let api = api.clone();
            let obj: OAuthClient = serde_json::from_value(json!({
                "apiVersion": "kauth.dev/v1alpha1", "kind": "OAuthClient",
                "metadata": {"name": format!("c{i}"), "namespace": ns},
                "spec": {"scopes": [scope]}
            }))
            .unwrap();
            async move { api.create(&PostParams::default(), &obj).await.map(|_| ()) }
        })
        .buffer_unordered(16)
        .try_collect::<Vec<_>>()
        .await
        .unwrap();
}

/// Deletes a scale test's clients and Secrets: the test cluster has no garbage collector, and
/// every later kauth of the run would otherwise cache and judge them too.
async fn remove_scale_clients(client: &Client, ns: &str) {
    delete_all(Api::<OAuthClient>::namespaced(client.clone(), ns)).await;
    delete_all(Api::<Secret>::namespaced(client.clone(), ns)).await;
}

/// Deletes everything in `api`. Deleting 10,000 objects can outlast the apiserver's request
/// deadline (it answers 500, having deleted some): the next call takes up what is left.
async fn delete_all<K>(api: Api<K>)
where
    K: kube::Resource<DynamicType = ()> + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    for attempt in 1.. {
        match api
            .delete_collection(&DeleteParams::default(), &ListParams::default())
            .await
        {
            Ok(_) => return,
            Err(e) if attempt < 5 => eprintln!("deleting all {}: {e}; again", K::kind(&())),
            Err(e) => panic!("deleting all {}: {e}", K::kind(&())),
        }
    }
}

/// Returns once all `n` OAuthClients of `api` are Ready, as one watch of them tells.
async fn all_ready(api: Api<OAuthClient>, n: usize) {
    use kube::runtime::{WatchStreamExt, watcher};
    let mut ready = std::collections::HashSet::new();
    let events = watcher(api, watcher::Config::default())
        .default_backoff()
        .applied_objects();
    let mut events = std::pin::pin!(events);
    while let Some(client) = events.next().await {
        let Ok(client) = client else { continue };
        let is_ready = client
            .status
            .as_ref()
            .is_some_and(|s| condition_is_true(&s.conditions, "Ready"));
        if is_ready {
            ready.insert(client.name_any());
        } else {
            ready.remove(&client.name_any());
        }
        if ready.len() == n {
            return;
        }
    }
}

#[tokio::test]
#[ignore = "a benchmark: make bench runs it on a cluster"]
async fn bench_scale_a_thousand_clients_become_ready() {
    let (n, client, id, kns, ns) = scale_setup("scale").await;
    let kauth = Kauth::start(&kns, "scale", None).await;
    scale_scope(&client, &ns, &format!("scale.read.{id}")).await;
    let api: Api<OAuthClient> = Api::namespaced(client.clone(), &ns);
    // Counted from one watch, as an observer would. Listing every client every 20 ms cost
    // the apiserver more CPU than kauth's own writes did, and slowed what it measured.
    let all_ready = tokio::spawn(all_ready(api.clone(), n));
    let cpu_before = Cpu::now(kauth.child.id());
    let started = Instant::now();
    create_scale_clients(&api, n, &format!("scale.read.{id}")).await;
    let applied = started.elapsed();
    tokio::time::timeout(Duration::from_secs(600), all_ready)
        .await
        .expect("every client Ready within 600 s")
        .unwrap();
    let ready = started.elapsed();
    let memory = |field: &str| {
        std::fs::read_to_string(format!("/proc/{}/status", kauth.child.id()))
            .unwrap()
            .lines()
            .find_map(|l| l.strip_prefix(field).map(|v| v.trim().to_string()))
            .unwrap_or_default()
    };
    let rss_at_ready = memory("VmRSS:");
    let cpu = Cpu::now(kauth.child.id()).since(&cpu_before);
    // At the moment the last client turns Ready, kauth may be building the catalog for the
    // last Secrets next to the one it serves; a few seconds later only one is left.
    tokio::time::sleep(Duration::from_secs(5)).await;
    eprintln!(
        "scale: {n} OAuthClients applied in {applied:?}; all Ready {ready:?} after the first was applied; kauth RSS {rss_at_ready} then, {} 5 s later, peak {}; CPU seconds meanwhile: {cpu}",
        memory("VmRSS:"),
        memory("VmHWM:")
    );
    remove_scale_clients(&client, &ns).await;
}

#[tokio::test]
#[ignore = "a benchmark: make bench runs it on a cluster"]
async fn bench_scale_kauth_starts_on_existing_clients() {
    // Where the time of the scale test goes: the same clients, created before kauth runs, so
    // the apiserver's cost of the creates and kauth's cost (its writes and the apiserver's
    // work for them) are measured apart.
    let (n, client, id, kns, ns) = scale_setup("existing").await;
    scale_scope(&client, &ns, &format!("existing.read.{id}")).await;
    let api: Api<OAuthClient> = Api::namespaced(client.clone(), &ns);
    let before_creates = Cpu::now(0);
    let started = Instant::now();
    create_scale_clients(&api, n, &format!("existing.read.{id}")).await;
    let applied = started.elapsed();
    let creates = Cpu::now(0).since(&before_creates);
    let all_ready = tokio::spawn(all_ready(api.clone(), n));
    let started = Instant::now();
    let kauth = Kauth::start(&kns, "existing", None).await;
    let cpu_before = Cpu::now(kauth.child.id());
    tokio::time::timeout(Duration::from_secs(600), all_ready)
        .await
        .expect("every client Ready within 600 s")
        .unwrap();
    let cpu = Cpu::now(kauth.child.id()).since(&cpu_before);
    eprintln!(
        "scale (clients there before kauth): {n} OAuthClients created in {applied:?} with nothing else running (CPU seconds: {creates}); kauth started and made all Ready in {:?} (CPU seconds: {cpu})",
        started.elapsed()
    );
    remove_scale_clients(&client, &ns).await;
}
