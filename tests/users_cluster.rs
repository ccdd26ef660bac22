//! SPEC §12 on a real Redis Cluster (3 masters, 3 replicas): a user's
//! sessions and the user's index live in different slots, on different
//! masters, and still list, revoke and expire as on one node. Slow (the
//! cluster takes seconds to form), so in a test binary of its own.

mod common;
#[path = "topology/mod.rs"]
mod topology;
mod users_support;

use std::time::Duration;

use sessiongate::session::cookie::Sid;
use sessiongate::session::{CookieChange, Instructions};
use users_support::{admin, bind, config_text, sessions_for};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_users_sessions_across_the_masters_are_listed_trimmed_and_revoked() {
    let cluster = topology::Cluster::start();
    let store = format!(
        "kind = \"cluster\"\nnodes = [{}]\nwait_replicas = 1",
        cluster.seeds()
    );
    let sessions = sessions_for(&config_text(&store, "max_per_user = 4"));
    // The holders of these sessions: more than one master, or the test
    // shows nothing (random sids: four land on one master of three one
    // time in 27, so logins go on until the four newest do not).
    let holders = |sids: &[String]| {
        cluster
            .masters()
            .into_iter()
            .filter(|&m| {
                let keys = cluster.nodes[m].session_keys();
                sids.iter().any(|sid| keys.contains(&format!("sg:{sid}")))
            })
            .count()
    };
    let mut ada = Vec::new();
    while ada.len() < 5 || holders(&ada[ada.len() - 4..]) < 2 {
        assert!(
            ada.len() < 50,
            "50 logins and the newest four on one master"
        );
        ada.push(bind(&sessions, "ada").await);
        tokio::time::sleep(Duration::from_millis(3)).await;
    }
    let ada = ada[ada.len() - 5..].to_vec();
    let bob = bind(&sessions, "bob").await;
    let listed = |body: &serde_json::Value| -> Vec<String> {
        body["sessions"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s["sid"].as_str().unwrap().to_string())
            .collect()
    };
    let (_, body) = admin(&sessions, "GET", "/sessions?user=ada").await;
    assert_eq!(
        listed(&body),
        ada[1..],
        "max_per_user = 4 keeps the 4 newest"
    );

    // The sessions and the index are spread over more than one master.
    assert!(
        holders(&ada[1..]) > 1,
        "all on one master: the test shows nothing"
    );

    // A password change on one device: a fresh sid there, the others out.
    let this = sessions.resolve(Sid::parse(&ada[2])).await.unwrap();
    let asks = Instructions::parse([], [b"rotate, destroy-others".as_slice()]);
    let CookieChange::Set(kept) = sessions.commit(&this, asks).await.unwrap() else {
        panic!("rotate sets a cookie");
    };
    let (_, body) = admin(&sessions, "GET", "/sessions?user=ada").await;
    assert_eq!(listed(&body), [kept.as_str().to_string()]);

    let path = format!("/sessions/{}", kept.as_str());
    assert_eq!(
        admin(&sessions, "DELETE", &path).await.0,
        http::StatusCode::NO_CONTENT
    );
    let (_, body) = admin(&sessions, "GET", "/sessions?user=ada").await;
    assert!(listed(&body).is_empty());
    let (_, body) = admin(&sessions, "GET", "/sessions?user=bob").await;
    assert_eq!(listed(&body), [bob]);

    // Nothing on any master lacks a TTL.
    for m in cluster.masters() {
        let mut connection = cluster.nodes[m].connection();
        let keys: Vec<String> = redis::cmd("KEYS").arg("*").query(&mut connection).unwrap();
        for key in keys {
            let ttl: i64 = redis::cmd("PTTL").arg(&key).query(&mut connection).unwrap();
            assert!(ttl > 0, "{key} has no TTL ({ttl})");
        }
    }
    let (status, body) = admin(&sessions, "DELETE", "/sessions?user=bob").await;
    assert_eq!(
        (status, body),
        (http::StatusCode::OK, serde_json::json!({"destroyed": 1}))
    );
}
