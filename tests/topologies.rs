//! SPEC §10 on real processes: a Redis Cluster losing a master, Sentinel
//! failovers, TLS, an ACL user, a network cut. Slow (real failovers take
//! seconds), so in a test binary of its own: `cargo test --test topologies`.
//! Every process runs on free 127.0.0.1 ports (the network cut: inside a
//! namespace the test makes), and every request loop is bounded in count and
//! time.

mod topology;

use std::time::{Duration, Instant};

use http::StatusCode;
use topology::*;

/// A 3-master/3-replica cluster: sessions land on every master; `kill -9`
/// of one master while clients update their own sessions loses no
/// acknowledged update (`wait_replicas = 1`), and once its replica is
/// promoted its sessions are served again with their data, without a
/// restart of the gate.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_master_lost_and_replica_promoted() {
    let mut cluster = Cluster::start();
    let backend = Backend::start().await;
    let gate = Gate::start(
        &backend,
        &format!(
            "kind = \"cluster\"\nnodes = [{}]\nwait_replicas = 1\ntimeout = \"500ms\"\nretry_after = \"1s\"",
            cluster.seeds()
        ),
    )
    .await;
    let clients = 24;
    let load = Workload::start(
        &gate,
        clients,
        Duration::from_millis(20),
        2_000,
        Duration::from_secs(30),
    )
    .await;
    // Sessions land on all three masters.
    let masters = cluster.masters();
    for &m in &masters {
        let keys = cluster.nodes[m].session_keys();
        assert!(!keys.is_empty(), "master {m} holds no session");
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let victim = masters[0];
    let heir = cluster
        .replica_of(victim)
        .expect("the victim has a replica");
    let victims_sessions = cluster.nodes[victim].session_keys();
    let killed_at = Instant::now();
    cluster.nodes[victim].kill();
    let promoted = {
        let heir = &cluster.nodes[heir];
        wait_for(Duration::from_secs(15), || {
            heir.info("replication").get("role").map(String::as_str) == Some("master")
        })
    };
    assert!(promoted, "the replica was not promoted");
    let promoted_after = killed_at.elapsed();
    // The new master has no replica until the old one comes back: bring it
    // back (it rejoins as a replica), so that writes can be confirmed again.
    tokio::time::sleep(Duration::from_millis(500)).await;
    cluster.nodes[victim].restart();
    let rejoined = wait_for(Duration::from_secs(15), || {
        let info = cluster.nodes[victim].info("replication");
        info.get("role").map(String::as_str) == Some("slave")
            && info.get("master_link_status").map(String::as_str) == Some("up")
    });
    assert!(rejoined, "the old master did not rejoin as a replica");
    let healthy_at = Instant::now();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (clients_done, outcomes) = load.finish().await;
    let counts = statuses(&outcomes);
    eprintln!(
        "cluster: promoted {promoted_after:?} after kill -9; statuses {counts:?}; {} sessions were on the lost master",
        victims_sessions.len()
    );
    for status in counts.keys() {
        assert!(
            *status == 200 || *status == 503,
            "only 200 and 503 expected: {counts:?}"
        );
    }
    // Every client updated successfully after the failover, the lost
    // master's sessions included.
    let recovered_at = healthy_at;
    for c in 0..clients {
        assert!(
            outcomes
                .iter()
                .any(|o| o.client == c && o.status == StatusCode::OK && o.at > recovered_at),
            "client {c} was never served after the failover"
        );
    }
    let acked = acknowledged(&outcomes, clients);
    let (lost, notes) = lost_updates(&clients_done, &acked, Duration::from_secs(10)).await;
    assert_eq!(lost, 0, "acknowledged updates lost: {notes:?}");
    // The lost master's sessions are served with their data.
    let heirs_keys = cluster.nodes[heir].session_keys();
    for key in &victims_sessions {
        assert!(
            heirs_keys.contains(key),
            "{key} did not survive the failover"
        );
    }
}
