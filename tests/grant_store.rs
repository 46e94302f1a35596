//! One grant-store suite, run against SQLite and PostgreSQL.
//!
//! PostgreSQL comes from `KAUTH_TEST_POSTGRES_URL` (`make test` starts a throwaway server on
//! 127.0.0.1 and sets it); every test gets a database of its own.

mod support;

use kauth::store::{ClientObject, Grant, GrantStore, Issued, PendingRequest, Redemption, RefreshUse, Session};

const NOW: i64 = 1_800_000_000;

/// The client object the grants below belong to.
const WEB: ClientObject = ClientObject {
    id: "shop.web",
    uid: "uid-web",
};
/// Another client.
const OTHER: ClientObject = ClientObject {
    id: "other.client",
    uid: "uid-other",
};
/// The same client id held by a re-created object (a new uid).
const WEB_RECREATED: ClientObject = ClientObject {
    id: "shop.web",
    uid: "uid-web-2",
};

/// A store location: `(url, keep-alive)`; the temp dir must outlive the store.
struct Backend {
    url: String,
    _dir: Option<tempfile::TempDir>,
}

fn sqlite() -> Backend {
    let dir = tempfile::tempdir().unwrap();
    Backend {
        url: format!("sqlite://{}", dir.path().join("grants.db").display()),
        _dir: Some(dir),
    }
}

async fn postgres() -> Backend {
    Backend {
        url: support::fresh_postgres_database().await,
        _dir: None,
    }
}

fn grant() -> Grant {
    Grant {
        client_id: "shop.web".into(),
        client_uid: "uid-web".into(),
        subject: "alice".into(),
        scopes: vec!["openid".into(), "offline_access".into()],
        audiences: vec!["https://orders.example.com".into()],
        redirect_uri: "https://shop.example.com/cb".into(),
        nonce: Some("n-0S6_WzA2Mj".into()),
        code_challenge: Some("E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM".into()),
        dpop_jkt: None,
        sid: None,
        auth_time: NOW - 5,
        amr: vec!["pwd".into()],
    }
}

fn issue(jti: &str) -> Issued {
    Issued {
        jti: jti.into(),
        exp: NOW + 300,
    }
}

/// A store in which code `c1` was redeemed (access token `at-1`) and started family `f1`
/// with refresh token `r1` (valid an hour, the family a day).
async fn with_family(b: &Backend) -> GrantStore {
    let store = GrantStore::open(&b.url).await.unwrap();
    store.insert_code("c1", &grant(), NOW + 60).await.unwrap();
    store.redeem_code("c1", NOW, &issue("at-1")).await.unwrap();
    assert!(
        store
            .start_family("c1", "f1", "r1", &grant(), NOW + 3600, NOW + 86400)
            .await
            .unwrap()
    );
    store
}

async fn code_is_redeemed_once_even_when_raced(b: Backend) {
    let store = GrantStore::open(&b.url).await.unwrap();
    store.insert_code("c1", &grant(), NOW + 60).await.unwrap();
    let tasks: Vec<_> = (0..8)
        .map(|i| {
            let store = store.clone();
            tokio::spawn(async move { store.redeem_code("c1", NOW, &issue(&format!("at-{i}"))).await.unwrap() })
        })
        .collect();
    let mut granted = 0;
    for t in tasks {
        match t.await.unwrap() {
            Redemption::Granted(g) => {
                assert_eq!(g, grant());
                granted += 1;
            }
            Redemption::Replayed(_) => {}
            Redemption::Invalid => panic!("a redeemed code is a replay, not unknown"),
        }
    }
    assert_eq!(granted, 1, "exactly one redemption wins");
}

async fn replay_revokes_everything_the_code_issued(b: Backend) {
    let store = GrantStore::open(&b.url).await.unwrap();
    store.insert_code("c1", &grant(), NOW + 60).await.unwrap();
    assert!(matches!(
        store.redeem_code("c1", NOW, &issue("at-1")).await.unwrap(),
        Redemption::Granted(_)
    ));
    assert!(
        store
            .start_family("c1", "f1", "r1", &grant(), NOW + 3600, NOW + 86400)
            .await
            .unwrap()
    );
    assert!(matches!(
        store
            .use_refresh("r1", &WEB, NOW + 1, ("r2", NOW + 3600), &issue("at-2"))
            .await
            .unwrap(),
        RefreshUse::Rotated(_)
    ));
    let Redemption::Replayed(revoked) = store.redeem_code("c1", NOW + 2, &issue("at-x")).await.unwrap() else {
        panic!("second use is a replay")
    };
    let mut jtis: Vec<_> = revoked.iter().map(|r| r.jti.as_str()).collect();
    jtis.sort();
    assert_eq!(jtis, ["at-1", "at-2"], "the code's token and the family's tokens");
    let mirrored: Vec<_> = store.revocations_since(0, NOW).await.unwrap();
    assert_eq!(mirrored.len(), 2, "revocations are recorded for every replica");
    assert_eq!(
        store
            .use_refresh("r2", &WEB, NOW + 3, ("r3", NOW + 3600), &issue("at-3"))
            .await
            .unwrap(),
        RefreshUse::Invalid,
        "the family is revoked"
    );
}

async fn a_replay_before_the_family_starts_leaves_no_family(b: Backend) {
    let store = GrantStore::open(&b.url).await.unwrap();
    store.insert_code("c1", &grant(), NOW + 60).await.unwrap();
    store.redeem_code("c1", NOW, &issue("at-1")).await.unwrap();
    let Redemption::Replayed(revoked) = store.redeem_code("c1", NOW, &issue("at-2")).await.unwrap() else {
        panic!("replay")
    };
    assert_eq!(revoked, vec![issue("at-1")]);
    assert!(
        !store
            .start_family("c1", "f1", "r1", &grant(), NOW + 3600, NOW + 86400)
            .await
            .unwrap(),
        "a family for a replayed code is refused"
    );
    assert_eq!(
        store
            .use_refresh("r1", &WEB, NOW, ("r2", NOW + 3600), &issue("at-3"))
            .await
            .unwrap(),
        RefreshUse::Invalid
    );
}

async fn expired_and_unknown_codes_are_invalid(b: Backend) {
    let store = GrantStore::open(&b.url).await.unwrap();
    store.insert_code("c1", &grant(), NOW + 60).await.unwrap();
    assert_eq!(
        store.redeem_code("c1", NOW + 60, &issue("a")).await.unwrap(),
        Redemption::Invalid,
        "expired at expires_at"
    );
    assert_eq!(
        store.redeem_code("nope", NOW, &issue("a")).await.unwrap(),
        Redemption::Invalid
    );
}

async fn refresh_tokens_rotate_and_reuse_revokes_the_family(b: Backend) {
    let store = with_family(&b).await;
    assert_eq!(
        store
            .use_refresh("r1", &OTHER, NOW, ("rx", NOW + 3600), &issue("at-x"))
            .await
            .unwrap(),
        RefreshUse::Invalid,
        "another client's refresh token is refused"
    );
    assert_eq!(
        store
            .use_refresh("r1", &WEB, NOW, ("r2", NOW + 3600), &issue("at-2"))
            .await
            .unwrap(),
        RefreshUse::Rotated(grant())
    );
    assert_eq!(
        store
            .use_refresh("r1", &OTHER, NOW, ("ry", NOW + 3600), &issue("at-y"))
            .await
            .unwrap(),
        RefreshUse::Invalid,
        "another client cannot trigger the reuse response"
    );
    let RefreshUse::Reused(revoked) = store
        .use_refresh("r1", &WEB, NOW, ("rx", NOW + 3600), &issue("at-x"))
        .await
        .unwrap()
    else {
        panic!("reuse of a rotated token")
    };
    assert_eq!(
        revoked,
        vec![issue("at-1"), issue("at-2")],
        "every access token of the family, the code's first one included"
    );
    assert_eq!(
        store
            .use_refresh("r2", &WEB, NOW, ("r3", NOW + 3600), &issue("at-3"))
            .await
            .unwrap(),
        RefreshUse::Invalid,
        "the successor dies with the family"
    );
    assert_eq!(
        store
            .use_refresh("rx", &WEB, NOW, ("r4", NOW + 3600), &issue("at-4"))
            .await
            .unwrap(),
        RefreshUse::Invalid,
        "the reuse stored no successor"
    );
}

async fn a_refresh_token_is_used_once_even_when_raced(b: Backend) {
    let store = with_family(&b).await;
    let tasks: Vec<_> = (0..8)
        .map(|i| {
            let store = store.clone();
            tokio::spawn(async move {
                store
                    .use_refresh(
                        "r1",
                        &WEB,
                        NOW,
                        (&format!("next-{i}"), NOW + 3600),
                        &issue(&format!("at-{i}")),
                    )
                    .await
                    .unwrap()
            })
        })
        .collect();
    let mut rotated = 0;
    for t in tasks {
        if let RefreshUse::Rotated(_) = t.await.unwrap() {
            rotated += 1;
        }
    }
    assert_eq!(rotated, 1);
}

async fn refresh_tokens_and_families_expire(b: Backend) {
    let store = GrantStore::open(&b.url).await.unwrap();
    store.insert_code("c1", &grant(), NOW + 60).await.unwrap();
    store.redeem_code("c1", NOW, &issue("at-1")).await.unwrap();
    store
        .start_family("c1", "f1", "r1", &grant(), NOW + 100, NOW + 150)
        .await
        .unwrap();
    assert_eq!(
        store
            .use_refresh("r1", &WEB, NOW + 100, ("r2", NOW + 200), &issue("a"))
            .await
            .unwrap(),
        RefreshUse::Invalid,
        "the token expired"
    );
    store.insert_code("c2", &grant(), NOW + 60).await.unwrap();
    store.redeem_code("c2", NOW, &issue("at-2")).await.unwrap();
    store
        .start_family("c2", "f2", "s1", &grant(), NOW + 1000, NOW + 150)
        .await
        .unwrap();
    assert_eq!(
        store
            .use_refresh("s1", &WEB, NOW + 150, ("s2", NOW + 1000), &issue("b"))
            .await
            .unwrap(),
        RefreshUse::Invalid,
        "the family outlived its absolute lifetime"
    );
}

async fn revoking_a_refresh_token_ends_its_family(b: Backend) {
    let store = with_family(&b).await;
    store
        .use_refresh("r1", &WEB, NOW, ("r2", NOW + 3600), &issue("at-2"))
        .await
        .unwrap();
    assert_eq!(
        store.revoke_refresh_of("r2", &WEB, NOW).await.unwrap(),
        vec![issue("at-1"), issue("at-2")]
    );
    assert_eq!(
        store
            .use_refresh("r2", &WEB, NOW, ("r3", NOW + 3600), &issue("at-3"))
            .await
            .unwrap(),
        RefreshUse::Reused(vec![issue("at-1"), issue("at-2")]),
        "a revoked token counts as used"
    );
    assert!(store.revoke_refresh_of("unknown", &WEB, NOW).await.unwrap().is_empty());
    assert!(
        store.revoke_refresh_of("r2", &OTHER, NOW).await.unwrap().is_empty(),
        "not its token"
    );
}

async fn sessions_people_consent_and_pending_requests(b: Backend) {
    let store = GrantStore::open(&b.url).await.unwrap();
    let session = Session {
        subject: "alice".into(),
        auth_time: NOW,
        credential: "c1".into(),
        amr: vec!["pwd".into(), "otp".into(), "mfa".into()],
    };
    store.create_session("s1", &session, NOW + 100).await.unwrap();
    assert_eq!(store.session("s1", NOW + 99).await.unwrap(), Some(session));
    assert_eq!(store.session("s1", NOW + 100).await.unwrap(), None, "expired");
    store.end_session("s1").await.unwrap();
    assert_eq!(store.session("s1", NOW).await.unwrap(), None, "ended");

    let claims = serde_json::json!({"email": "alice@example.com", "groups": ["admins"]});
    store.save_subject("alice", &claims, NOW).await.unwrap();
    let newer = serde_json::json!({"email": "alice@example.org"});
    store.save_subject("alice", &newer, NOW + 1).await.unwrap();
    assert_eq!(store.subject("alice").await.unwrap(), Some(newer));
    assert_eq!(store.subject("bob").await.unwrap(), None);

    assert_eq!(store.consent("alice", "uid-web").await.unwrap(), None, "never approved");
    let scopes = vec!["openid".to_string(), "orders.read".to_string()];
    store.remember_consent("alice", "uid-web", &scopes, NOW).await.unwrap();
    assert_eq!(store.consent("alice", "uid-web").await.unwrap(), Some(scopes.clone()));
    store
        .remember_consent("alice", "uid-web", &scopes[..1], NOW)
        .await
        .unwrap();
    assert_eq!(
        store.consent("alice", "uid-web").await.unwrap(),
        Some(scopes[..1].to_vec())
    );
    assert_eq!(
        store.consent("alice", "uid-web-2").await.unwrap(),
        None,
        "consent belongs to the client object, not to its id"
    );
    store.remember_consent("alice", "uid-quiet", &[], NOW).await.unwrap();
    assert_eq!(
        store.consent("alice", "uid-quiet").await.unwrap(),
        Some(Vec::new()),
        "approving sign-in alone is remembered"
    );

    let pending = PendingRequest {
        browser: "b".into(),
        csrf: "x".into(),
        request: "{}".into(),
    };
    store.put_auth_request("q1", &pending, NOW + 600).await.unwrap();
    assert_eq!(store.auth_request("q1", NOW).await.unwrap(), Some(pending));
    assert!(store.finish_auth_request("q1").await.unwrap());
    assert!(!store.finish_auth_request("q1").await.unwrap(), "finished once");
    assert_eq!(store.auth_request("q1", NOW).await.unwrap(), None);
}

async fn state_survives_reopening_and_sweeping_removes_only_expired_rows(b: Backend) {
    let store = GrantStore::open(&b.url).await.unwrap();
    store.insert_code("c1", &grant(), NOW + 60).await.unwrap();
    store
        .create_session(
            "old",
            &Session {
                subject: "a".into(),
                auth_time: NOW,
                credential: String::new(),
                amr: Vec::new(),
            },
            NOW + 10,
        )
        .await
        .unwrap();
    store
        .create_session(
            "new",
            &Session {
                subject: "a".into(),
                auth_time: NOW,
                credential: String::new(),
                amr: Vec::new(),
            },
            NOW + 1000,
        )
        .await
        .unwrap();
    store.revoke(&issue("gone"), NOW).await.unwrap();
    store
        .revoke(
            &Issued {
                jti: "stale".into(),
                exp: NOW + 5,
            },
            NOW,
        )
        .await
        .unwrap();
    drop(store);
    let store = GrantStore::open(&b.url)
        .await
        .expect("reopening applies no migration twice");
    assert!(store.session("new", NOW).await.unwrap().is_some());
    assert_eq!(
        store.sweep(NOW + 20).await.unwrap(),
        2,
        "the old session and the stale revocation"
    );
    assert!(store.session("new", NOW).await.unwrap().is_some());
    let left: Vec<_> = store
        .revocations_since(0, NOW)
        .await
        .unwrap()
        .into_iter()
        .map(|r| r.jti)
        .collect();
    assert_eq!(left, ["gone"]);
    assert!(matches!(
        store.redeem_code("c1", NOW, &issue("a")).await.unwrap(),
        Redemption::Granted(_)
    ));
}

/// Attack: a client is deleted and re-created under the same client id (or the id passes to
/// another namespace): the new object must not refresh the old one's tokens, and deleting a
/// client revokes its families with the access tokens they issued.
async fn refresh_families_belong_to_the_client_object(b: Backend) {
    let store = with_family(&b).await;
    assert_eq!(
        store
            .use_refresh("r1", &WEB_RECREATED, NOW, ("rx", NOW + 3600), &issue("at-x"))
            .await
            .unwrap(),
        RefreshUse::Invalid,
        "same client id, another object"
    );
    assert!(
        store
            .revoke_refresh_of("r1", &WEB_RECREATED, NOW)
            .await
            .unwrap()
            .is_empty()
    );
    store
        .use_refresh("r1", &WEB, NOW, ("r2", NOW + 3600), &issue("at-2"))
        .await
        .unwrap();
    let existing: std::collections::HashSet<String> = ["uid-web".to_string()].into();
    assert!(
        store
            .revoke_families_of_deleted_clients(&existing, NOW)
            .await
            .unwrap()
            .is_empty(),
        "a client that exists keeps its families"
    );
    let revoked = store
        .revoke_families_of_deleted_clients(&Default::default(), NOW)
        .await
        .unwrap();
    assert_eq!(revoked, vec![issue("at-1"), issue("at-2")]);
    assert!(
        store
            .revocations_since(0, NOW)
            .await
            .unwrap()
            .iter()
            .any(|r| r.jti == "at-2"),
        "the access token is revoked too"
    );
    assert_eq!(
        store
            .use_refresh("r2", &WEB, NOW, ("r3", NOW + 3600), &issue("at-3"))
            .await
            .unwrap(),
        RefreshUse::Invalid,
        "the family is gone"
    );
}

/// People who leave: their sessions (all, or those of an old password) and their refresh
/// families end, with the access tokens the families issued.
async fn a_person_who_leaves_loses_sessions_and_families(b: Backend) {
    let store = with_family(&b).await;
    for (id, credential) in [("s-old", "pw1"), ("s-new", "pw2")] {
        let session = Session {
            subject: "alice".into(),
            auth_time: NOW,
            credential: credential.into(),
            amr: vec!["pwd".into()],
        };
        store.create_session(id, &session, NOW + 100).await.unwrap();
    }
    let mut holders = store.people_holding_grants(NOW).await.unwrap();
    holders.sort();
    assert_eq!(
        holders,
        [
            ("alice".to_string(), None),
            ("alice".to_string(), Some("pw1".to_string())),
            ("alice".to_string(), Some("pw2".to_string())),
        ]
    );
    assert_eq!(store.end_sessions_of("alice", Some("pw1")).await.unwrap(), 1);
    assert!(
        store.session("s-old", NOW).await.unwrap().is_none(),
        "the old password's session"
    );
    assert!(store.session("s-new", NOW).await.unwrap().is_some());
    assert_eq!(
        store.revoke_families_of_person("alice", NOW).await.unwrap(),
        vec![issue("at-1")]
    );
    assert_eq!(store.end_sessions_of("alice", None).await.unwrap(), 1);
    assert!(store.people_holding_grants(NOW).await.unwrap().is_empty());
    assert_eq!(
        store
            .use_refresh("r1", &WEB, NOW, ("r2", NOW + 3600), &issue("at-2"))
            .await
            .unwrap(),
        RefreshUse::Invalid
    );
}

/// Concurrent writes share commits on SQLite: one that fails (a duplicate code) or is cut off
/// by the deadline is undone alone, and every write that reported success is there after a
/// reopen.
async fn concurrent_writes_stand_or_fall_alone(b: Backend) {
    let store = GrantStore::open(&b.url).await.unwrap();
    store.insert_code("taken", &grant(), NOW + 60).await.unwrap();
    // Writes cut off by a deadline while they wait for a shared SQLite commit (PostgreSQL
    // cannot even connect within 3 ms, and has no shared commits to test).
    let hurried = if b.url.starts_with("sqlite:") {
        // Opening (which checks the migrations) within 3 ms can miss on a busy machine: the
        // point is the deadline of the writes below, so the open may take a few tries.
        let mut tries = 0;
        loop {
            match GrantStore::open_with_deadline(&b.url, std::time::Duration::from_millis(3)).await {
                Ok(store) => break store,
                Err(e) if tries < 50 => {
                    tries += 1;
                    eprintln!("opening with a 3 ms deadline: {e}; again");
                }
                Err(e) => panic!("could not open within 3 ms in 50 tries: {e}"),
            }
        }
    } else {
        store.clone()
    };
    let tasks: Vec<_> = (0..96)
        .map(|i| {
            let store = if i % 3 == 2 { hurried.clone() } else { store.clone() };
            tokio::spawn(async move {
                let id = if i % 3 == 1 {
                    "taken".to_string()
                } else {
                    format!("code-{i}")
                };
                (i, store.insert_code(&id, &grant(), NOW + 60).await.is_ok())
            })
        })
        .collect();
    let mut kept = Vec::new();
    for t in tasks {
        let (i, ok) = t.await.unwrap();
        match i % 3 {
            0 => assert!(ok, "write {i} failed beside failing ones"),
            1 => assert!(!ok, "a duplicate code was accepted"),
            _ => {}
        }
        if ok {
            kept.push(i);
        }
    }
    drop((store, hurried));
    let reopened = GrantStore::open(&b.url).await.unwrap();
    for i in kept {
        let redeemed = reopened
            .redeem_code(&format!("code-{i}"), NOW, &issue(&format!("at-{i}")))
            .await;
        assert!(
            matches!(redeemed.unwrap(), Redemption::Granted(_)),
            "code-{i} was reported stored but is gone"
        );
    }
    reopened.insert_code("after", &grant(), NOW + 60).await.unwrap();
}

/// A write that stops halfway (here: the token's family was revoked after the token was
/// marked used) is undone: asking again finds the same unused token, not a "reuse".
async fn a_write_that_stops_halfway_leaves_no_trace(b: Backend) {
    let store = with_family(&b).await;
    store.revoke_families_of_person("alice", NOW).await.unwrap();
    for attempt in 0..2 {
        let used = store
            .use_refresh("r1", &WEB, NOW + 1, ("r2", NOW + 3600), &issue("at-2"))
            .await
            .unwrap();
        assert!(matches!(used, RefreshUse::Invalid), "attempt {attempt}: {used:?}");
    }
}

/// Device requests (RFC 8628): found by their user code while pending, answered once, polled
/// at the pace they set, and an approval is a code redeemed once under the same id. Two
/// stores on one database stand for two replicas.
async fn device_requests_are_answered_once_and_polled_at_their_pace(b: Backend) {
    use kauth::store::{DevicePoll, DeviceRequest};
    let (store, replica) = (
        GrantStore::open(&b.url).await.unwrap(),
        GrantStore::open(&b.url).await.unwrap(),
    );
    let request = |id: &str| DeviceRequest {
        id: id.into(),
        client_id: WEB.id.into(),
        client_uid: WEB.uid.into(),
        request: r#"{"scopes":["openid"],"audiences":[]}"#.into(),
    };
    assert!(
        store
            .start_device_request(&request("d1"), "BCDFGHJK", 5, NOW + 600)
            .await
            .unwrap()
    );
    assert!(
        !replica
            .start_device_request(&request("d2"), "BCDFGHJK", 5, NOW + 600)
            .await
            .unwrap(),
        "a user code is never given twice while it lives"
    );
    assert_eq!(
        replica.device_request("BCDFGHJK", NOW + 1).await.unwrap(),
        Some(request("d1"))
    );
    assert_eq!(
        replica.device_request("BCDFGHJK", NOW + 600).await.unwrap(),
        None,
        "expired"
    );
    let poll = |s: &GrantStore, client: ClientObject<'static>, at: i64| {
        let s = s.clone();
        async move { s.poll_device_request("d1", client.id, client.uid, at).await.unwrap() }
    };
    assert_eq!(poll(&store, WEB, NOW + 5).await, DevicePoll::Pending);
    assert_eq!(
        poll(&replica, WEB, NOW + 6).await,
        DevicePoll::SlowDown,
        "1 s after the last poll"
    );
    assert_eq!(
        poll(&store, WEB, NOW + 12).await,
        DevicePoll::SlowDown,
        "the interval is 10 s now"
    );
    assert_eq!(
        poll(&store, WEB, NOW + 26).await,
        DevicePoll::SlowDown,
        "and 15 s after that"
    );
    assert_eq!(
        poll(&store, WEB, NOW + 46).await,
        DevicePoll::Pending,
        "20 s: slow enough"
    );
    assert_eq!(
        poll(&store, OTHER, NOW + 47).await,
        DevicePoll::Unknown,
        "another client's code"
    );
    assert_eq!(
        poll(&store, WEB_RECREATED, NOW + 47).await,
        DevicePoll::Unknown,
        "a re-created client"
    );
    let mut approved = grant();
    approved.redirect_uri = String::new();
    assert!(
        replica
            .answer_device_request("d1", Some(&approved), NOW + 50)
            .await
            .unwrap()
    );
    assert!(
        !store.answer_device_request("d1", None, NOW + 51).await.unwrap(),
        "answered once"
    );
    assert_eq!(
        store.device_request("BCDFGHJK", NOW + 52).await.unwrap(),
        None,
        "no longer pending"
    );
    assert_eq!(poll(&store, WEB, NOW + 53).await, DevicePoll::Approved);
    assert_eq!(
        store.redeem_code("d1", NOW + 53, &issue("at-d")).await.unwrap(),
        Redemption::Granted(approved)
    );
    assert!(matches!(
        replica.redeem_code("d1", NOW + 54, &issue("at-e")).await.unwrap(),
        Redemption::Replayed(_)
    ));

    assert!(
        store
            .start_device_request(&request("d3"), "CDFGHJKL", 5, NOW + 600)
            .await
            .unwrap()
    );
    assert!(store.answer_device_request("d3", None, NOW + 10).await.unwrap());
    let denied = store
        .poll_device_request("d3", WEB.id, WEB.uid, NOW + 20)
        .await
        .unwrap();
    assert_eq!(denied, DevicePoll::Denied);
    assert!(
        store
            .start_device_request(&request("d4"), "DFGHJKLM", 5, NOW + 600)
            .await
            .unwrap()
    );
    assert!(
        !store
            .answer_device_request("d4", Some(&grant()), NOW + 600)
            .await
            .unwrap(),
        "too late"
    );
    let late = store
        .poll_device_request("d4", WEB.id, WEB.uid, NOW + 700)
        .await
        .unwrap();
    assert_eq!(late, DevicePoll::Expired);
    assert_eq!(
        store.redeem_code("d4", NOW + 700, &issue("at-f")).await.unwrap(),
        Redemption::Invalid
    );
}

/// A value used once is refused a second time, by any of several stores on one database raced
/// together (the replicas' DPoP `jti`s), until it expires and is swept.
async fn a_value_is_used_once_across_stores_even_when_raced(b: Backend) {
    let stores = [
        GrantStore::open(&b.url).await.unwrap(),
        GrantStore::open(&b.url).await.unwrap(),
        GrantStore::open(&b.url).await.unwrap(),
    ];
    let attempts = stores.iter().cycle().take(12).map(|s| s.use_once("dpop:x", NOW + 60));
    let firsts = futures::future::join_all(attempts)
        .await
        .into_iter()
        .filter(|r| *r.as_ref().unwrap())
        .count();
    assert_eq!(firsts, 1);
    assert!(
        stores[1].use_once("dpop:y", NOW + 60).await.unwrap(),
        "another value is its own"
    );
    stores[0].sweep(NOW + 61).await.unwrap();
    assert!(
        stores[2].use_once("dpop:x", NOW + 120).await.unwrap(),
        "after its window the row is swept"
    );
}

/// A shared secret is made once, by whichever of several stores on one database asks first
/// (replicas raced at start), and every store reads the same one from then on.
async fn a_shared_secret_is_made_once_and_the_same_for_every_store(b: Backend) {
    let stores = [
        GrantStore::open(&b.url).await.unwrap(),
        GrantStore::open(&b.url).await.unwrap(),
        GrantStore::open(&b.url).await.unwrap(),
    ];
    let asked = stores.iter().cycle().take(9).map(|s| s.shared_secret("dpop-nonce"));
    let secrets: Vec<Vec<u8>> = futures::future::join_all(asked)
        .await
        .into_iter()
        .map(Result::unwrap)
        .collect();
    assert_eq!(secrets[0].len(), 32);
    assert!(secrets.iter().all(|s| *s == secrets[0]), "one secret for all");
    let other = stores[1].shared_secret("another").await.unwrap();
    assert_ne!(other, secrets[0], "each name has its own");
    stores[0].sweep(i64::MAX - 1).await.unwrap();
    let reopened = GrantStore::open(&b.url).await.unwrap();
    assert_eq!(reopened.shared_secret("dpop-nonce").await.unwrap(), secrets[0], "kept");
}

/// Second factors: the TOTP row holds the secret only sealed (the raw row, read past the store,
/// never has it in clear), a time step counts once and only moving forward, even when raced by
/// several stores, and a recovery code once; enrolling again replaces everything.
async fn second_factors_are_sealed_and_each_code_counts_once(b: Backend) {
    use kauth::second_factors::SealingKey;
    let stores = [
        GrantStore::open(&b.url).await.unwrap(),
        GrantStore::open(&b.url).await.unwrap(),
        GrantStore::open(&b.url).await.unwrap(),
    ];
    let key = SealingKey::new(&[9; 32]);
    let secret = b"twenty bytes secret!";
    let sealed = key.seal(secret, "alice");
    let recovery_digest = |code: &str| key.recovery_digest("alice", code);
    let digests = vec![recovery_digest("abcd-efgh"), recovery_digest("jkmn-pqrs")];
    assert!(
        stores[0]
            .enroll_totp("alice", "pw1", &sealed, &digests, NOW)
            .await
            .unwrap()
    );
    // A second enrollment, raced or not, does not replace the first.
    assert!(
        !stores[1]
            .enroll_totp("alice", "pw1", &key.seal(b"another", "alice"), &[], NOW)
            .await
            .unwrap()
    );
    let stored = stores[1].totp_of("alice").await.unwrap().unwrap();
    assert_eq!(key.open(&stored.sealed, "alice").as_deref(), Some(&secret[..]));
    assert_eq!(stored.credential, "pw1");
    assert_eq!(stores[1].totp_of("bob").await.unwrap(), None);

    // The raw rows, as a database reader would see them.
    sqlx::any::install_default_drivers();
    let pool = sqlx::AnyPool::connect(&b.url).await.unwrap();
    let rows = sqlx::query("SELECT subject, id, sealed FROM second_factors")
        .fetch_all(&pool)
        .await
        .unwrap();
    assert_eq!(rows.len(), 3);
    for row in &rows {
        use sqlx::Row;
        let all = format!(
            "{} {} {}",
            row.get::<String, _>("subject"),
            row.get::<String, _>("id"),
            row.get::<String, _>("sealed")
        );
        assert!(!all.contains("twenty bytes"), "a secret in clear: {all}");
        assert!(!all.contains("abcd"), "a recovery code in clear: {all}");
    }

    // One step, raced: one winner; an earlier step after it: refused.
    let raced = stores.iter().cycle().take(9).map(|s| s.use_totp_step("alice", 100));
    let winners = futures::future::join_all(raced)
        .await
        .into_iter()
        .filter(|r| *r.as_ref().unwrap())
        .count();
    assert_eq!(winners, 1);
    assert!(!stores[2].use_totp_step("alice", 99).await.unwrap(), "an earlier step");
    assert!(stores[2].use_totp_step("alice", 101).await.unwrap(), "the next step");
    assert!(
        !stores[0].use_totp_step("bob", 500).await.unwrap(),
        "no factor, no step"
    );

    // Recovery codes: each once, across stores; unknown ones never.
    let code = recovery_digest("ABCD EFGH");
    assert_eq!(code, digests[0], "read leniently");
    assert!(stores[0].use_recovery_code("alice", &code).await.unwrap());
    assert!(!stores[1].use_recovery_code("alice", &code).await.unwrap());
    assert!(
        !stores[1]
            .use_recovery_code("bob", &recovery_digest("jkmn-pqrs"))
            .await
            .unwrap()
    );
    assert_eq!(stores[2].recovery_codes_left("alice").await.unwrap(), 1);

    // Removed, then enrolled again (another password): new secret, old recovery codes gone.
    assert_eq!(stores[2].remove_second_factors("alice").await.unwrap(), 3);
    assert!(
        stores[0]
            .enroll_totp(
                "alice",
                "pw2",
                &key.seal(b"another secret", "alice"),
                &[recovery_digest("wxyz-2345")],
                NOW
            )
            .await
            .unwrap()
    );
    let again = stores[1].totp_of("alice").await.unwrap().unwrap();
    assert_eq!((again.last_step, again.credential.as_str()), (0, "pw2"));
    assert!(
        !stores[1]
            .use_recovery_code("alice", &recovery_digest("jkmn-pqrs"))
            .await
            .unwrap()
    );
    assert_eq!(stores[2].remove_second_factors("alice").await.unwrap(), 2);
    assert_eq!(stores[2].totp_of("alice").await.unwrap(), None);
    // A factor of another password (void since) is replaced by an enrollment; one of the
    // same password stands.
    assert!(stores[0].enroll_totp("alice", "pw2", &sealed, &[], NOW).await.unwrap());
    assert!(
        stores[0].enroll_totp("alice", "pw3", &sealed, &[], NOW).await.unwrap(),
        "void"
    );
    assert!(!stores[1].enroll_totp("alice", "pw3", &sealed, &[], NOW).await.unwrap());
    assert_eq!(stores[2].totp_of("alice").await.unwrap().unwrap().credential, "pw3");
}

/// Passkeys: a credential id belongs to one person (another person's registration of it is
/// refused and changes nothing), a person holds at most the limit even when additions race
/// across stores, only the owner's row is used or removed, and the raw row holds the passkey
/// only sealed.
async fn passkeys_are_sealed_owned_and_bounded(b: Backend) {
    use kauth::store::{MAX_PASSKEYS_PER_PERSON, PasskeyAdded, StoredPasskey};
    let stores = [
        GrantStore::open(&b.url).await.unwrap(),
        GrantStore::open(&b.url).await.unwrap(),
        GrantStore::open(&b.url).await.unwrap(),
    ];
    let key = kauth::second_factors::SealingKey::new(&[9; 32]);
    let passkey = |subject: &str, id: &str| StoredPasskey {
        credential_id: id.into(),
        subject: subject.into(),
        sealed: key.seal(b"public key of the passkey", subject),
        name: format!("{subject}'s {id}"),
        created_at: NOW,
        last_used_at: 0,
        credential: "pw1".into(),
    };
    assert_eq!(
        stores[0].add_passkey(&passkey("alice", "c1")).await.unwrap(),
        PasskeyAdded::Added
    );
    // Bob claims alice's credential id: refused, and alice's row is as it was.
    assert_eq!(
        stores[1].add_passkey(&passkey("bob", "c1")).await.unwrap(),
        PasskeyAdded::Taken
    );
    assert_eq!(
        stores[2].add_passkey(&passkey("alice", "c1")).await.unwrap(),
        PasskeyAdded::Taken
    );
    let stored = stores[2].passkey("c1").await.unwrap().unwrap();
    assert_eq!(stored, passkey("alice", "c1").clone_with_sealed(&stored.sealed));
    assert_eq!(
        key.open(&stored.sealed, "alice").as_deref(),
        Some(&b"public key of the passkey"[..])
    );
    assert!(stores[0].passkeys_of("bob").await.unwrap().is_empty());

    // Additions raced across stores stop at the limit.
    let raced = (0..MAX_PASSKEYS_PER_PERSON + 5).map(|i| {
        let store = stores[i as usize % 3].clone();
        let p = passkey("alice", &format!("r{i}"));
        async move { store.add_passkey(&p).await.unwrap() }
    });
    let outcomes = futures::future::join_all(raced).await;
    let added = outcomes.iter().filter(|o| **o == PasskeyAdded::Added).count() as i64;
    assert_eq!(added, MAX_PASSKEYS_PER_PERSON - 1, "{outcomes:?}");
    assert!(outcomes.iter().all(|o| *o != PasskeyAdded::Taken), "{outcomes:?}");
    assert_eq!(
        stores[1].passkeys_of("alice").await.unwrap().len() as i64,
        MAX_PASSKEYS_PER_PERSON
    );

    // Only the owner uses or removes a passkey.
    assert!(!stores[0].passkey_used("bob", "c1", Some("x"), NOW + 1).await.unwrap());
    assert!(!stores[0].remove_passkey("bob", "c1").await.unwrap());
    assert!(stores[0].passkey_used("alice", "c1", None, NOW + 1).await.unwrap());
    let used = stores[1].passkey("c1").await.unwrap().unwrap();
    assert_eq!((used.last_used_at, used.sealed == stored.sealed), (NOW + 1, true));
    assert!(
        stores[1]
            .passkey_used("alice", "c1", Some("resealed"), NOW + 2)
            .await
            .unwrap()
    );
    assert_eq!(stores[2].passkey("c1").await.unwrap().unwrap().sealed, "resealed");
    assert!(stores[2].remove_passkey("alice", "c1").await.unwrap());
    assert_eq!(stores[0].passkey("c1").await.unwrap(), None);
    // Its id is free again, for anyone.
    assert_eq!(
        stores[0].add_passkey(&passkey("bob", "c1")).await.unwrap(),
        PasskeyAdded::Added
    );
    // A new password (a reset): alice's passkeys of the old one are void; her next addition
    // removes them instead of meeting the limit.
    let renewed = StoredPasskey {
        credential: "pw2".into(),
        ..passkey("alice", "n1")
    };
    assert_eq!(stores[1].add_passkey(&renewed).await.unwrap(), PasskeyAdded::Added);
    assert_eq!(stores[2].passkeys_of("alice").await.unwrap(), vec![renewed]);
    assert_eq!(stores[2].passkeys_of("bob").await.unwrap().len(), 1, "bob's untouched");

    // The raw rows, as a database reader would see them.
    sqlx::any::install_default_drivers();
    let pool = sqlx::AnyPool::connect(&b.url).await.unwrap();
    let rows = sqlx::query("SELECT sealed FROM passkeys")
        .fetch_all(&pool)
        .await
        .unwrap();
    for row in &rows {
        use sqlx::Row;
        let sealed: String = row.get("sealed");
        assert!(!sealed.contains("public key"), "a passkey in clear: {sealed}");
    }
}

/// Failed attempts: one limit for every store (replica), even when raced; a window ends and
/// starts afresh; a right password takes an address's attempt back and forgets an account's.
async fn attempts_are_counted_against_one_limit_across_stores(b: Backend) {
    let stores = [
        GrantStore::open(&b.url).await.unwrap(),
        GrantStore::open(&b.url).await.unwrap(),
        GrantStore::open(&b.url).await.unwrap(),
    ];
    let raced = (0..20).map(|i| {
        let store = stores[i % 3].clone();
        async move { store.count_attempt("u:alice", 5, 900, NOW).await.unwrap() }
    });
    let outcomes = futures::future::join_all(raced).await;
    assert_eq!(outcomes.iter().filter(|o| o.is_none()).count(), 5, "{outcomes:?}");
    assert!(
        outcomes.iter().flatten().all(|wait| (1..=900).contains(wait)),
        "{outcomes:?}"
    );
    assert_eq!(
        stores[1].count_attempt("u:alice", 5, 900, NOW + 899).await.unwrap(),
        Some(1)
    );
    assert_eq!(
        stores[2].count_attempt("u:bob", 5, 900, NOW).await.unwrap(),
        None,
        "per key"
    );
    // The window ended: a fresh one.
    assert_eq!(
        stores[0].count_attempt("u:alice", 5, 900, NOW + 900).await.unwrap(),
        None
    );
    for _ in 0..4 {
        assert_eq!(
            stores[0].count_attempt("u:alice", 5, 900, NOW + 901).await.unwrap(),
            None
        );
    }
    assert!(
        stores[0]
            .count_attempt("u:alice", 5, 900, NOW + 901)
            .await
            .unwrap()
            .is_some()
    );
    stores[1].uncount_attempt("u:alice").await.unwrap();
    assert_eq!(
        stores[2].count_attempt("u:alice", 5, 900, NOW + 902).await.unwrap(),
        None,
        "one back"
    );
    stores[1].forget_attempts("u:alice").await.unwrap();
    for _ in 0..5 {
        assert_eq!(
            stores[2].count_attempt("u:alice", 5, 900, NOW + 903).await.unwrap(),
            None,
            "forgotten"
        );
    }
    // Swept once their window is over.
    stores[0]
        .sweep(NOW + 903 + kauth::store::ATTEMPT_WINDOW_SECS)
        .await
        .unwrap();
    sqlx::any::install_default_drivers();
    let pool = sqlx::AnyPool::connect(&b.url).await.unwrap();
    let left = sqlx::query("SELECT key FROM attempts").fetch_all(&pool).await.unwrap();
    assert!(left.is_empty(), "{} rows left", left.len());
}

trait WithSealed {
    fn clone_with_sealed(&self, sealed: &str) -> Self;
}

impl WithSealed for kauth::store::StoredPasskey {
    fn clone_with_sealed(&self, sealed: &str) -> Self {
        Self {
            sealed: sealed.into(),
            ..self.clone()
        }
    }
}

/// The clients a session signed in to are recorded once per client object (a second sign-in
/// extends it) and taken once when the session ends; expired records are swept.
async fn a_sessions_clients_are_taken_once(b: Backend) {
    use kauth::store::SessionClient;
    let store = GrantStore::open(&b.url).await.unwrap();
    let web = SessionClient {
        client_id: WEB.id.into(),
        client_uid: WEB.uid.into(),
        subject: "alice".into(),
    };
    let other = SessionClient {
        client_id: OTHER.id.into(),
        client_uid: OTHER.uid.into(),
        subject: "alice".into(),
    };
    store.signed_in_to("sid-1", &web, NOW + 60).await.unwrap();
    store.signed_in_to("sid-1", &web, NOW + 120).await.unwrap();
    store.signed_in_to("sid-1", &other, NOW + 60).await.unwrap();
    store.signed_in_to("sid-2", &web, NOW + 60).await.unwrap();
    let mut taken = store.take_session_clients("sid-1").await.unwrap();
    taken.sort_by(|a, b| a.client_id.cmp(&b.client_id));
    assert_eq!(taken, vec![other, web.clone()]);
    assert!(store.take_session_clients("sid-1").await.unwrap().is_empty(), "once");
    store.sweep(NOW + 61).await.unwrap();
    assert!(store.take_session_clients("sid-2").await.unwrap().is_empty(), "swept");
}

/// The DPoP key a code or a refresh family is bound to is read without spending either.
async fn bindings_are_read_without_spending(b: Backend) {
    let store = GrantStore::open(&b.url).await.unwrap();
    let bound = Grant {
        dpop_jkt: Some("thumbprint".into()),
        ..grant()
    };
    store.insert_code("bound", &bound, NOW + 60).await.unwrap();
    store.insert_code("plain", &grant(), NOW + 60).await.unwrap();
    assert_eq!(
        store.code_binding("bound", NOW).await.unwrap(),
        Some(Some("thumbprint".into()))
    );
    assert_eq!(store.code_binding("plain", NOW).await.unwrap(), Some(None));
    assert_eq!(store.code_binding("none", NOW).await.unwrap(), None);
    assert_eq!(store.code_binding("bound", NOW + 61).await.unwrap(), None, "expired");
    assert!(
        matches!(
            store.redeem_code("bound", NOW, &issue("at-b")).await.unwrap(),
            Redemption::Granted(_)
        ),
        "still unspent"
    );
    assert!(
        store
            .start_family("bound", "fb", "rb", &bound, NOW + 3600, NOW + 86400)
            .await
            .unwrap()
    );
    assert_eq!(
        store.refresh_grant("rb", &WEB).await.unwrap().and_then(|g| g.dpop_jkt),
        Some("thumbprint".into())
    );
    assert_eq!(store.refresh_grant("nope", &WEB).await.unwrap(), None);
    assert_eq!(
        store.refresh_grant("rb", &OTHER).await.unwrap(),
        None,
        "another client's"
    );
}

/// Runs each suite function once per backend.
macro_rules! suite {
    ($($name:ident),* $(,)?) => {
        mod sqlite_backend {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $name() {
                    super::$name(super::sqlite()).await
                }
            )*
        }
        mod postgres_backend {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $name() {
                    super::$name(super::postgres().await).await
                }
            )*
        }
    };
}

suite!(
    code_is_redeemed_once_even_when_raced,
    replay_revokes_everything_the_code_issued,
    a_replay_before_the_family_starts_leaves_no_family,
    expired_and_unknown_codes_are_invalid,
    refresh_tokens_rotate_and_reuse_revokes_the_family,
    a_refresh_token_is_used_once_even_when_raced,
    refresh_tokens_and_families_expire,
    revoking_a_refresh_token_ends_its_family,
    sessions_people_consent_and_pending_requests,
    state_survives_reopening_and_sweeping_removes_only_expired_rows,
    refresh_families_belong_to_the_client_object,
    a_person_who_leaves_loses_sessions_and_families,
    concurrent_writes_stand_or_fall_alone,
    a_write_that_stops_halfway_leaves_no_trace,
    device_requests_are_answered_once_and_polled_at_their_pace,
    a_value_is_used_once_across_stores_even_when_raced,
    a_shared_secret_is_made_once_and_the_same_for_every_store,
    second_factors_are_sealed_and_each_code_counts_once,
    passkeys_are_sealed_owned_and_bounded,
    attempts_are_counted_against_one_limit_across_stores,
    a_sessions_clients_are_taken_once,
    bindings_are_read_without_spending,
);
