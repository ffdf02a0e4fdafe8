//! Cluster mode against a real 6-node Redis Cluster (testkit): routing, pipelines across
//! slots, `MOVED` after a slot migration, `ASK` during one, and a master killed under write
//! load.

use std::cell::{Cell, RefCell};
use std::future::Future;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use resp_client::slot::key_slot;
use resp_client::{Batch, Client, Config, Error, Reply};
use testkit::{redis_cmd, RedisCluster};

const WAIT: Duration = Duration::from_secs(10);
/// The per-call deadline of half the writers in the failover test.
const PER_CALL: Duration = Duration::from_millis(300);

fn run<F, Fut>(f: F)
where
    F: FnOnce() -> Fut + Send + 'static,
    Fut: Future<Output = ()> + 'static,
{
    glommio::LocalExecutorBuilder::default()
        .spawn(f)
        .expect("spawn glommio executor")
        .join()
        .expect("executor thread");
}

fn bulk(r: &Reply) -> Vec<u8> {
    r.as_bytes().map(|b| b.to_vec()).unwrap_or_default()
}

/// A key whose slot is served by `master`, different from the slots in `avoid`.
fn key_on(cluster: &RedisCluster, master: &str, prefix: &str, avoid: &[u16]) -> String {
    (0..10_000)
        .map(|i| format!("{{{prefix}{i}}}"))
        .find(|k| {
            let slot = key_slot(k.as_bytes());
            !avoid.contains(&slot) && cluster.master_of_slot(slot) == master
        })
        .expect("some key lands on every master")
}

#[test]
fn routing_pipelines_moved_and_ask() {
    let cluster = Arc::new(RedisCluster::start());
    let url = cluster.seed_url();
    let c = cluster.clone();
    run(move || async move {
        let cluster = c;
        let client = Client::new(Config::from_url(&url).unwrap().with_max_in_flight(1000));
        // Room on the seed's connection before the slot map is known.
        client.ready(1000).await.unwrap();
        // Used at once: sent to the first seed, redirected once the map is known.
        let early = client.submit(&[b"SET", b"early", b"1"]);
        assert!(early.await.unwrap().is_ok());
        client.wait_connected(WAIT).await.unwrap();
        let stats = client.stats();
        assert!(stats.connected);
        assert_eq!(stats.nodes, 3, "one connection per master");
        assert!(stats.topology_refreshes >= 1);
        // Room on every master; more than the bound never fits.
        client.ready(1000).await.unwrap();
        assert_eq!(
            client.ready(1001).await,
            Err(Error::Overloaded {
                max_in_flight: 1000
            })
        );
        // A per-call deadline on a routed command that answers in time.
        let timed = client.submit_with_timeout(&[b"SET", b"timed", b"1"], WAIT);
        assert!(timed.await.unwrap().is_ok());

        // Routing: keys spread over every slot range, each on its slot's master.
        let keys: Vec<String> = (0..300).map(|i| format!("key:{i}")).collect();
        let sets: Vec<_> = keys
            .iter()
            .map(|k| client.submit(&[b"SET", k.as_bytes(), k.as_bytes()]))
            .collect();
        for s in sets {
            assert!(s.await.unwrap().is_ok());
        }
        for k in keys.iter().step_by(37) {
            let owner = cluster.master_of_slot(key_slot(k.as_bytes()));
            assert_eq!(
                redis_cmd(&owner, &["GET", k]),
                format!("${}\r\n{k}\r\n", k.len()),
                "{k} lives on its slot's master"
            );
        }
        let redirects_before = client.stats().redirects;
        for k in &keys {
            assert_eq!(
                bulk(&client.cmd(&[b"GET", k.as_bytes()]).await.unwrap()),
                k.as_bytes()
            );
        }
        assert_eq!(
            client.stats().redirects,
            redirects_before,
            "no redirect once the map is known"
        );
        assert_eq!(
            client.cmd(&[b"PING"]).await.unwrap(),
            Reply::Simple(bytes::Bytes::from_static(b"PONG"))
        );

        // A pipeline spanning slots: split per node, replies in the caller's order.
        let mut batch = Batch::new();
        for (i, k) in keys.iter().enumerate().take(100) {
            if i % 2 == 0 {
                batch.push(&[b"GET", k.as_bytes()]);
            } else {
                batch.push(&[b"STRLEN", k.as_bytes()]);
            }
        }
        let replies = client.submit_batch(batch).await.unwrap();
        assert_eq!(replies.len(), 100);
        for (i, (r, k)) in replies.iter().zip(&keys).enumerate() {
            if i % 2 == 0 {
                assert_eq!(bulk(r), k.as_bytes(), "reply {i}");
            } else {
                assert_eq!(r, &Reply::Int(k.len() as i64), "reply {i}");
            }
        }
        let cmds: Vec<[&[u8]; 2]> = keys[..10]
            .iter()
            .map(|k| [&b"GET"[..], k.as_bytes()])
            .collect();
        let cmds: Vec<&[&[u8]]> = cmds.iter().map(|c| &c[..]).collect();
        let replies = client.submit_many(&cmds).await.unwrap();
        assert_eq!(
            replies.iter().map(bulk).collect::<Vec<_>>(),
            keys[..10]
                .iter()
                .map(|k| k.as_bytes().to_vec())
                .collect::<Vec<_>>()
        );

        // MOVED: move a slot behind the client's back; the next command follows the redirect.
        let masters: Vec<String> = cluster.masters().into_iter().map(|m| m.addr).collect();
        let (a, b) = (&masters[0], &masters[1]);
        let moved_key = key_on(&cluster, a, "mv", &[]);
        let moved_slot = key_slot(moved_key.as_bytes());
        assert!(client
            .cmd(&[b"SET", moved_key.as_bytes(), b"before"])
            .await
            .unwrap()
            .is_ok());
        let in_batch = format!("{moved_key}:batch");
        assert!(client
            .cmd(&[b"SET", in_batch.as_bytes(), b"x"])
            .await
            .unwrap()
            .is_ok());
        cluster.move_slot(moved_slot, b);
        let before = client.stats().redirects;
        assert_eq!(
            bulk(&client.cmd(&[b"GET", moved_key.as_bytes()]).await.unwrap()),
            b"before"
        );
        assert!(client.stats().redirects > before, "followed a MOVED");
        assert!(client
            .cmd(&[b"SET", moved_key.as_bytes(), b"after"])
            .await
            .unwrap()
            .is_ok());
        assert_eq!(redis_cmd(b, &["GET", &moved_key]), "$5\r\nafter\r\n");

        // MOVED inside a batch that spans nodes: move the slot back, then batch.
        cluster.move_slot(moved_slot, a);
        let mut batch = Batch::new();
        batch.push(&[b"GET", keys[0].as_bytes()]);
        batch.push(&[b"GET", in_batch.as_bytes()]);
        batch.push(&[b"GET", keys[1].as_bytes()]);
        let replies = client.submit_batch(batch).await.unwrap();
        assert_eq!(
            replies.iter().map(bulk).collect::<Vec<_>>(),
            vec![
                keys[0].as_bytes().to_vec(),
                b"x".to_vec(),
                keys[1].as_bytes().to_vec()
            ]
        );

        // ASK: a slot half migrated; a key already moved is served by the importing node.
        let ask_key = key_on(&cluster, a, "ask", &[moved_slot]);
        let ask_slot = key_slot(ask_key.as_bytes());
        let stays = format!("{ask_key}:stays");
        let goes = format!("{ask_key}:goes");
        let fresh = format!("{ask_key}:fresh");
        assert!(client
            .cmd(&[b"SET", stays.as_bytes(), b"s"])
            .await
            .unwrap()
            .is_ok());
        assert!(client
            .cmd(&[b"SET", goes.as_bytes(), b"g"])
            .await
            .unwrap()
            .is_ok());
        cluster.begin_slot_migration(ask_slot, a, b);
        let (host, port) = b.rsplit_once(':').unwrap();
        assert_eq!(
            redis_cmd(a, &["MIGRATE", host, port, &goes, "0", "5000"]),
            "+OK\r\n"
        );
        let before = client.stats().redirects;
        assert_eq!(
            bulk(&client.cmd(&[b"GET", goes.as_bytes()]).await.unwrap()),
            b"g"
        );
        assert!(client.stats().redirects > before, "followed an ASK");
        assert_eq!(
            bulk(&client.cmd(&[b"GET", stays.as_bytes()]).await.unwrap()),
            b"s"
        );
        // A new key of a migrating slot is created on the importing node.
        assert!(client
            .cmd(&[b"SET", fresh.as_bytes(), b"f"])
            .await
            .unwrap()
            .is_ok());
        assert_eq!(
            redis_cmd(b, &["CLUSTER", "COUNTKEYSINSLOT", &ask_slot.to_string()]),
            ":2\r\n",
            "the moved key and the new one are on the importing node"
        );
        // ASK does not change the slot map: the slot's other keys still go to a.
        assert_eq!(
            bulk(&client.cmd(&[b"GET", stays.as_bytes()]).await.unwrap()),
            b"s"
        );
        cluster.migrate_keys(ask_slot, a, b);
        cluster.finish_slot_migration(ask_slot, b);
        for (k, v) in [(&stays, b"s"), (&goes, b"g"), (&fresh, b"f")] {
            assert_eq!(bulk(&client.cmd(&[b"GET", k.as_bytes()]).await.unwrap()), v);
        }
        assert_eq!(redis_cmd(b, &["GET", &stays]), "$1\r\ns\r\n");
        assert!(client.stats().connected);
    });
}

#[test]
fn master_killed_under_write_load() {
    let cluster = RedisCluster::start_with_node_timeout(Duration::from_millis(1000));
    let url = cluster.seed_url();
    let victim = cluster.master_of_slot(0);
    let stop = Arc::new(AtomicBool::new(false));
    let killed = Arc::new(AtomicBool::new(false));
    let (stop2, killed2) = (stop.clone(), killed.clone());
    let timeout = Duration::from_secs(1);
    // The killer runs on its own thread while the executor writes.
    let killer = std::thread::spawn(move || {
        let mut cluster = cluster;
        std::thread::sleep(Duration::from_millis(700));
        // Redis replication is asynchronous: a crash may lose writes Redis acknowledged in its
        // last moments, by design. Crash at a moment when the replica has them all, so that
        // a lost write can only be the client's fault (writes paused meanwhile are in flight
        // and fail with the node).
        cluster.crash_master_in_sync(&victim);
        killed2.store(true, Ordering::SeqCst);
        let masters = cluster.wait_failover(&victim, Duration::from_secs(30));
        std::thread::sleep(Duration::from_millis(1500));
        stop2.store(true, Ordering::SeqCst);
        (cluster, masters)
    });
    run(move || async move {
        let config = Config::from_url(&url)
            .unwrap()
            .with_command_timeout(timeout)
            .with_reconnect_backoff(Duration::from_millis(20), Duration::from_millis(200));
        let client = Client::new(config);
        client.wait_connected(WAIT).await.unwrap();
        let acked = Rc::new(RefCell::new(Vec::<(String, u32)>::new()));
        let errors = Rc::new(RefCell::new(Vec::<Error>::new()));
        let acked_after_kill = Rc::new(Cell::new(0u32));
        let slowest = Rc::new(Cell::new(Duration::ZERO));
        // Writers 2 and 3 give every call a deadline of its own, shorter than the client's.
        let slowest_timed = Rc::new(Cell::new(Duration::ZERO));
        let mut writers = Vec::new();
        for w in 0..4u32 {
            let (client, acked, errors, stop, killed) = (
                client.clone(),
                acked.clone(),
                errors.clone(),
                stop.clone(),
                killed.clone(),
            );
            let (slowest, acked_after_kill) = (slowest.clone(), acked_after_kill.clone());
            let slowest_timed = slowest_timed.clone();
            writers.push(glommio::spawn_local(async move {
                let mut i = 0u32;
                while !stop.load(Ordering::SeqCst) {
                    i += 1;
                    let key = format!("w{w}:{i}");
                    let val = i.to_string();
                    let t = Instant::now();
                    let args: [&[u8]; 3] = [b"SET", key.as_bytes(), val.as_bytes()];
                    let r = if w >= 2 {
                        let r = client.submit_with_timeout(&args, PER_CALL).await;
                        slowest_timed.set(slowest_timed.get().max(t.elapsed()));
                        r
                    } else {
                        client.submit(&args).await
                    };
                    slowest.set(slowest.get().max(t.elapsed()));
                    match r {
                        Ok(reply) if reply.is_ok() => {
                            acked.borrow_mut().push((key, i));
                            if killed.load(Ordering::SeqCst) {
                                acked_after_kill.set(acked_after_kill.get() + 1);
                            }
                        }
                        Ok(other) => panic!("SET answered {other:?}"),
                        Err(e) => errors.borrow_mut().push(e),
                    }
                    glommio::timer::sleep(Duration::from_millis(1)).await;
                }
            }));
        }
        for w in writers {
            w.await;
        }
        let errors = errors.take();
        for e in errors.iter() {
            assert!(
                matches!(
                    e,
                    Error::ConnectionLost
                        | Error::Timeout
                        | Error::Disconnected
                        | Error::ClusterUnavailable(_)
                ),
                "a clear error: {e:?}"
            );
        }
        assert!(
            slowest.get() < timeout * 2 + Duration::from_millis(500),
            "no call hangs past its timeout: slowest {:?}",
            slowest.get()
        );
        // Slack for timer lateness on a loaded test machine; far below the 1 s command timeout.
        assert!(
            slowest_timed.get() < PER_CALL + Duration::from_millis(300),
            "no call with a deadline of its own runs past it: slowest {:?}",
            slowest_timed.get()
        );
        assert!(
            acked_after_kill.get() > 100,
            "writes go on after the failover"
        );
        // Every acknowledged write is on the new masters.
        let acked = acked.take();
        let mut lost = Vec::new();
        for chunk in acked.chunks(500) {
            let mut batch = Batch::new();
            for (k, _) in chunk {
                batch.push(&[b"GET", k.as_bytes()]);
            }
            let replies = client.submit_batch(batch).await.unwrap();
            for ((k, v), r) in chunk.iter().zip(replies) {
                if bulk(&r) != v.to_string().as_bytes() {
                    lost.push(format!("{k}={r:?}@{}", key_slot(k.as_bytes())));
                }
            }
        }
        assert!(
            lost.is_empty(),
            "{} of {} acknowledged writes lost: {:?}",
            lost.len(),
            acked.len(),
            &lost[..lost.len().min(20)]
        );
        eprintln!(
            "failover: {} writes acknowledged ({} after the kill), {} failed, slowest call {:?} (with a {:?} deadline: {:?}), stats {:?}",
            acked.len(),
            acked_after_kill.get(),
            errors.len(),
            slowest.get(),
            PER_CALL,
            slowest_timed.get(),
            client.stats()
        );
        assert!(client.stats().connected);
    });
    let (_cluster, masters) = killer.join().expect("killer thread");
    assert_eq!(masters.len(), 3);
}
