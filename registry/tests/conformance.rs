//! One conformance suite, run against the memory backend and real Redis targets: one plain
//! redis-server, one over TLS with a password, and a 6-node Redis Cluster.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use registry::{
    Error, GatewayRecord, LiveSet, MemoryRegistry, Registry, RegistryOptions, SessionEntry, Verdict,
};
use resp_client::Config;
use testkit::{redis_cmd, redis_cmd_auth, RedisCluster, RedisServer};

const WAIT: Duration = Duration::from_secs(5);
const LONG: Duration = Duration::from_secs(60);

/// What a suite function gets: the registry, and a way to read a user's key TTL.
struct Ctx {
    reg: Registry,
    backend: Backend,
}

enum Backend {
    Memory(MemoryRegistry),
    /// A node's plain address and password.
    Redis(String, Option<String>),
    Cluster(Arc<RedisCluster>),
}

impl Ctx {
    /// Loses every key, like a Redis restart without persistence.
    fn flush(&self) {
        match &self.backend {
            Backend::Memory(m) => m.store().flush(),
            Backend::Redis(addr, pw) => {
                let r = redis_cmd_auth(addr, pw.as_deref(), &["FLUSHALL"]);
                assert!(r.starts_with("+OK"), "{r:?}");
            }
            Backend::Cluster(c) => c.flushall(),
        }
    }

    /// The user's key TTL in ms (`PTTL`), `None` if the key does not exist.
    fn key_ttl_ms(&self, user: &str) -> Option<i64> {
        self.raw_key_ttl_ms(&registry::schema::key(user), user)
    }

    /// `PTTL` of a raw key; for memory, of `user`'s key.
    fn raw_key_ttl_ms(&self, key: &str, user: &str) -> Option<i64> {
        match &self.backend {
            Backend::Memory(m) => m.store().key_ttl_ms(user, registry::schema::now_ms()),
            Backend::Redis(..) | Backend::Cluster(_) => {
                let reply = match &self.backend {
                    Backend::Redis(addr, pw) => redis_cmd_auth(addr, pw.as_deref(), &["PTTL", key]),
                    Backend::Cluster(c) => {
                        let owner = c.master_of_slot(resp_client::slot::key_slot(key.as_bytes()));
                        redis_cmd(&owner, &["PTTL", key])
                    }
                    Backend::Memory(_) => unreachable!(),
                };
                let ms: i64 = reply
                    .trim_start_matches(':')
                    .trim_end()
                    .parse()
                    .unwrap_or_else(|_| panic!("PTTL reply {reply:?}"));
                assert_ne!(ms, -1, "every key Connect writes has a TTL");
                (ms >= 0).then_some(ms)
            }
        }
    }
}

fn on_glommio<Fut: Future<Output = ()> + 'static>(f: impl FnOnce() -> Fut + Send + 'static) {
    glommio::LocalExecutorBuilder::default()
        .spawn(f)
        .expect("spawn glommio executor")
        .join()
        .expect("executor thread");
}

fn on_memory<Fut: Future<Output = ()> + 'static>(suite: fn(Ctx) -> Fut) {
    on_glommio(move || {
        let m = MemoryRegistry::new();
        suite(Ctx {
            reg: Registry::Memory(m.clone()),
            backend: Backend::Memory(m),
        })
    });
}

fn on_redis<Fut: Future<Output = ()> + 'static>(suite: fn(Ctx) -> Fut) {
    let redis = RedisServer::start();
    let (url, addr) = (redis.url(), redis.addr());
    on_glommio(move || async move {
        let reg = Registry::connect(&url, RegistryOptions::default()).expect("connect");
        reg.wait_ready(WAIT).await.expect("redis ready");
        suite(Ctx {
            reg,
            backend: Backend::Redis(addr, None),
        })
        .await
    });
    drop(redis);
}

fn on_tls<Fut: Future<Output = ()> + 'static>(suite: fn(Ctx) -> Fut) {
    let redis = RedisServer::start_tls(Some("conformance-pw"));
    let (url, addr) = (redis.tls_url().expect("TLS URL"), redis.addr());
    on_glommio(move || async move {
        let reg = Registry::connect(&url, RegistryOptions::default()).expect("connect");
        reg.wait_ready(WAIT).await.expect("redis ready over TLS");
        suite(Ctx {
            reg,
            backend: Backend::Redis(addr, Some("conformance-pw".into())),
        })
        .await
    });
    drop(redis);
}

/// One suite case, boxed so that the cluster target can run them all in a row.
type Case = fn(Ctx) -> std::pin::Pin<Box<dyn Future<Output = ()>>>;

/// The whole suite on one cluster (forming one takes seconds), a fresh registry per case.
fn on_cluster(suites: Vec<(&'static str, Case)>) {
    let cluster = Arc::new(RedisCluster::start());
    let c = cluster.clone();
    on_glommio(move || async move {
        for (name, suite) in suites {
            let reg =
                Registry::connect(&c.seed_url(), RegistryOptions::default()).expect("connect");
            reg.wait_ready(WAIT).await.expect("cluster ready");
            eprintln!("cluster: {name}");
            suite(Ctx {
                reg,
                backend: Backend::Cluster(c.clone()),
            })
            .await;
            c.flushall();
        }
    });
    drop(cluster);
}

macro_rules! conformance {
    ($($name:ident),* $(,)?) => {
        mod memory {
            $( #[test] fn $name() { super::on_memory(super::$name) } )*
        }
        mod redis {
            $( #[test] fn $name() { super::on_redis(super::$name) } )*
        }
        mod tls {
            $( #[test] fn $name() { super::on_tls(super::$name) } )*
        }
        #[test]
        fn cluster_conformance() {
            let suites: Vec<(&'static str, Case)> = vec![
                $( (stringify!($name), |ctx| Box::pin($name(ctx))) ),*
            ];
            on_cluster(suites);
        }
    };
}

conformance!(
    register_then_lookup,
    several_devices_and_gateways,
    refresh_extends_expiry,
    short_ttl_expires,
    unregister_removes_exactly_one_session,
    unregister_unknown_is_false,
    operations_queue_at_call_time,
    invalid_input_is_rejected,
    liveness_records_expire_and_report_loss,
    dead_gateways_sessions_read_as_gone,
    remove_sessions_removes_exactly_those,
);

fn entry(user: &str, session: u64, instance: &str, shard: u16) -> SessionEntry {
    SessionEntry {
        user: user.into(),
        session,
        instance: instance.into(),
        epoch: 1,
        shard,
        addr: format!("127.0.0.1:{}", 7000 + u32::from(shard)),
    }
}

async fn register_then_lookup(ctx: Ctx) {
    let reg = &ctx.reg;
    assert_eq!(reg.lookup("alice").await.unwrap(), vec![]);
    assert_eq!(ctx.key_ttl_ms("alice"), None);
    let e = entry("alice", 0xdead_beef, "gw-1", 2);
    reg.register(&e, LONG).await.unwrap();
    assert_eq!(reg.lookup("alice").await.unwrap(), vec![e.clone()]);
    assert_eq!(reg.lookup("bob").await.unwrap(), vec![]);
    let ttl = ctx.key_ttl_ms("alice").expect("key exists");
    assert!(ttl > 50_000 && ttl <= 60_000, "{ttl}");
    // Registering again is idempotent.
    reg.register(&e, LONG).await.unwrap();
    assert_eq!(reg.lookup("alice").await.unwrap(), vec![e]);
}

async fn several_devices_and_gateways(ctx: Ctx) {
    let reg = &ctx.reg;
    let sessions = [
        entry("carol", 1, "gw-1", 0),
        entry("carol", 2, "gw-1", 1),
        entry("carol", 3, "gw-2", 0),
        entry("carol", u64::MAX, "gw-3", u16::MAX),
    ];
    for s in &sessions {
        reg.register(s, LONG).await.unwrap();
    }
    reg.register(&entry("dave", 1, "gw-1", 0), LONG)
        .await
        .unwrap();
    let mut found = reg.lookup("carol").await.unwrap();
    found.sort_by_key(|e| e.session);
    assert_eq!(found, sessions.to_vec());
    assert_eq!(reg.lookup("dave").await.unwrap().len(), 1);
}

async fn refresh_extends_expiry(ctx: Ctx) {
    let reg = &ctx.reg;
    let ttl = Duration::from_millis(400);
    let a = entry("erin", 1, "gw-1", 0);
    let b = entry("frank", 2, "gw-1", 0);
    reg.register(&a, ttl).await.unwrap();
    reg.register(&b, ttl).await.unwrap();
    for _ in 0..3 {
        glommio::timer::sleep(Duration::from_millis(250)).await;
        reg.refresh(&[a.clone(), b.clone()], ttl).await.unwrap();
    }
    // 750 ms after registering with a 400 ms TTL: alive thanks to the refreshes.
    assert_eq!(reg.lookup("erin").await.unwrap(), vec![a.clone()]);
    assert_eq!(reg.lookup("frank").await.unwrap(), vec![b]);
    // A longer refresh raises the key's TTL too.
    reg.refresh(std::slice::from_ref(&a), LONG).await.unwrap();
    assert!(ctx.key_ttl_ms("erin").unwrap() > 50_000);
    // A refresh re-creates an entry that is gone (plain ZADD).
    assert!(reg.unregister(&a).await.unwrap());
    reg.refresh(std::slice::from_ref(&a), LONG).await.unwrap();
    assert_eq!(reg.lookup("erin").await.unwrap(), vec![a]);
    reg.refresh(&[], LONG).await.unwrap();
}

async fn short_ttl_expires(ctx: Ctx) {
    let reg = &ctx.reg;
    let e = entry("gina", 1, "gw-1", 0);
    reg.register(&e, Duration::from_millis(300)).await.unwrap();
    assert_eq!(reg.lookup("gina").await.unwrap(), vec![e.clone()]);
    let ttl = ctx.key_ttl_ms("gina").expect("the key has a TTL");
    assert!(ttl > 0 && ttl <= 300, "{ttl}");
    glommio::timer::sleep(Duration::from_millis(400)).await;
    assert_eq!(reg.lookup("gina").await.unwrap(), vec![]);
    assert_eq!(ctx.key_ttl_ms("gina"), None, "the key itself expired");
    // One long-lived and one expired member: the key lives as long as the long one, and the
    // expired one is cleaned by the next register.
    reg.register(&entry("gina", 2, "gw-1", 0), Duration::from_millis(100))
        .await
        .unwrap();
    reg.register(&entry("gina", 3, "gw-1", 0), LONG)
        .await
        .unwrap();
    glommio::timer::sleep(Duration::from_millis(150)).await;
    assert_eq!(
        reg.lookup("gina").await.unwrap(),
        vec![entry("gina", 3, "gw-1", 0)]
    );
    assert!(ctx.key_ttl_ms("gina").unwrap() > 50_000);
    reg.register(&entry("gina", 4, "gw-1", 0), LONG)
        .await
        .unwrap();
    assert!(
        !reg.unregister(&entry("gina", 2, "gw-1", 0)).await.unwrap(),
        "register removed the expired member"
    );
}

async fn unregister_removes_exactly_one_session(ctx: Ctx) {
    let reg = &ctx.reg;
    // The stale-cleanup race: A registered, the same user reconnects as B (maybe through
    // another gateway), then A's old gateway cleans up late.
    let a = entry("hank", 1, "gw-1", 0);
    let b = entry("hank", 2, "gw-2", 1);
    reg.register(&a, LONG).await.unwrap();
    reg.register(&b, LONG).await.unwrap();
    assert!(reg.unregister(&a).await.unwrap());
    assert_eq!(reg.lookup("hank").await.unwrap(), vec![b.clone()]);
    // Same session id on another gateway or shard is another session.
    let b_elsewhere = SessionEntry {
        shard: 9,
        ..b.clone()
    };
    assert!(!reg.unregister(&b_elsewhere).await.unwrap());
    assert_eq!(reg.lookup("hank").await.unwrap(), vec![b.clone()]);
    assert!(reg.unregister(&b).await.unwrap());
    assert_eq!(reg.lookup("hank").await.unwrap(), vec![]);
    assert_eq!(ctx.key_ttl_ms("hank"), None, "an empty set is deleted");
}

async fn unregister_unknown_is_false(ctx: Ctx) {
    let reg = &ctx.reg;
    assert!(!reg.unregister(&entry("ivy", 1, "gw-1", 0)).await.unwrap());
    reg.register(&entry("ivy", 1, "gw-1", 0), LONG)
        .await
        .unwrap();
    assert!(!reg.unregister(&entry("ivy", 2, "gw-1", 0)).await.unwrap());
    assert!(reg.unregister(&entry("ivy", 1, "gw-1", 0)).await.unwrap());
    assert!(!reg.unregister(&entry("ivy", 1, "gw-1", 0)).await.unwrap());
}

async fn operations_queue_at_call_time(ctx: Ctx) {
    let reg = &ctx.reg;
    let e = entry("jack", 1, "gw-1", 0);
    // Issued in this order, awaited in reverse: each sees the effects of the earlier calls.
    let before = reg.lookup("jack");
    let register = reg.register(&e, LONG);
    let after = reg.lookup("jack");
    let unregister = reg.unregister(&e);
    let last = reg.lookup("jack");
    assert_eq!(last.await.unwrap(), vec![]);
    assert!(unregister.await.unwrap());
    assert_eq!(after.await.unwrap(), vec![e]);
    register.await.unwrap();
    assert_eq!(before.await.unwrap(), vec![]);
    // Many lookups in flight at once, awaited in order.
    let lookups: Vec<_> = (0..1000).map(|_| reg.lookup("jack")).collect();
    for l in lookups {
        assert_eq!(l.await.unwrap(), vec![]);
    }
}

async fn invalid_input_is_rejected(ctx: Ctx) {
    let reg = &ctx.reg;
    for user in ["", "a{b}", "{x", "y}", "a|b"] {
        assert!(
            matches!(reg.lookup(user).await, Err(Error::InvalidUser(_))),
            "{user:?}"
        );
        let e = entry(user, 1, "gw-1", 0);
        assert!(matches!(
            reg.register(&e, LONG).await,
            Err(Error::InvalidUser(_))
        ));
        assert!(matches!(
            reg.unregister(&e).await,
            Err(Error::InvalidUser(_))
        ));
    }
    let bad_instance = entry("kim", 1, "gw|1", 0);
    assert!(matches!(
        reg.register(&bad_instance, LONG).await,
        Err(Error::InvalidEntry(_))
    ));
    let good = entry("kim", 2, "gw-1", 0);
    assert!(matches!(
        reg.refresh(&[good.clone(), bad_instance], LONG).await,
        Err(Error::InvalidEntry(_))
    ));
    assert_eq!(
        reg.lookup("kim").await.unwrap(),
        vec![],
        "nothing of a rejected batch was written"
    );
    // Unusual but valid user ids pass through untouched.
    let odd = entry("o.k_user+tag@example.com:-", 3, "gw-1", 0);
    reg.register(&odd, LONG).await.unwrap();
    assert_eq!(reg.lookup(&odd.user).await.unwrap(), vec![odd]);
}

fn gateway(instance: &str, epoch: u64) -> GatewayRecord {
    GatewayRecord {
        instance: instance.into(),
        epoch,
        addr: "127.0.0.1:7200".into(),
    }
}

async fn liveness_records_expire_and_report_loss(ctx: Ctx) {
    let reg = &ctx.reg;
    let short = Duration::from_millis(300);
    assert_eq!(reg.live_gateways().await.unwrap(), vec![]);
    assert!(
        reg.heartbeat(&gateway("gw-1", 1), short).await.unwrap(),
        "first beat creates"
    );
    assert!(
        !reg.heartbeat(&gateway("gw-1", 1), short).await.unwrap(),
        "then extends"
    );
    assert!(reg.heartbeat(&gateway("gw-2", 5), LONG).await.unwrap());
    let mut live = reg.live_gateways().await.unwrap();
    live.sort_by(|a, b| a.instance.cmp(&b.instance));
    assert_eq!(live, vec![gateway("gw-1", 1), gateway("gw-2", 5)]);
    if !matches!(ctx.backend, Backend::Memory(_)) {
        let ttl = ctx
            .raw_key_ttl_ms(registry::schema::GATEWAYS_KEY, "")
            .expect("the gateways key has a TTL");
        assert!(ttl > 50_000, "{ttl}");
    }
    // A stalled gateway: its record expires, and its next beat says so.
    glommio::timer::sleep(Duration::from_millis(400)).await;
    assert_eq!(reg.live_gateways().await.unwrap(), vec![gateway("gw-2", 5)]);
    assert!(reg.heartbeat(&gateway("gw-1", 1), short).await.unwrap());
    // Redis lost everything: the next beat of every gateway says so.
    ctx.flush();
    assert!(reg.heartbeat(&gateway("gw-2", 5), LONG).await.unwrap());
    assert!(!reg.heartbeat(&gateway("gw-2", 5), LONG).await.unwrap());
    // A clean shutdown removes the record at once.
    assert!(reg.retire(&gateway("gw-2", 5)).await.unwrap());
    assert!(!reg.retire(&gateway("gw-2", 5)).await.unwrap());
    assert!(reg
        .live_gateways()
        .await
        .unwrap()
        .iter()
        .all(|g| g.instance != "gw-2"));
    let bad = GatewayRecord {
        instance: "g|w".into(),
        ..gateway("x", 1)
    };
    assert!(matches!(
        reg.heartbeat(&bad, LONG).await,
        Err(Error::InvalidEntry(_))
    ));
}

async fn dead_gateways_sessions_read_as_gone(ctx: Ctx) {
    let reg = &ctx.reg;
    // gw-1 restarted (epoch 1 -> 2), gw-2 died, gw-3 is alive.
    let old = entry("lena", 1, "gw-1", 0);
    let new = SessionEntry {
        session: 2,
        epoch: 2,
        ..old.clone()
    };
    let dead = entry("lena", 3, "gw-2", 0);
    let live = entry("lena", 4, "gw-3", 0);
    reg.heartbeat(&gateway("gw-1", 2), LONG).await.unwrap();
    reg.heartbeat(&gateway("gw-3", 1), LONG).await.unwrap();
    for e in [&old, &new, &dead, &live] {
        reg.register(e, LONG).await.unwrap();
    }
    let set = LiveSet::new(&reg.live_gateways().await.unwrap());
    let mut verdicts: Vec<(u64, Verdict)> = reg
        .lookup("lena")
        .await
        .unwrap()
        .iter()
        .map(|e| (e.session, set.verdict(e)))
        .collect();
    verdicts.sort_by_key(|v| v.0);
    assert_eq!(
        verdicts,
        vec![
            (1, Verdict::Dead),
            (2, Verdict::Alive),
            (3, Verdict::Unknown),
            (4, Verdict::Alive)
        ]
    );
}

async fn remove_sessions_removes_exactly_those(ctx: Ctx) {
    let reg = &ctx.reg;
    let keep = entry("mia", 1, "gw-1", 0);
    let gone = [entry("mia", 2, "gw-2", 0), entry("nils", 3, "gw-2", 0)];
    reg.register(&keep, LONG).await.unwrap();
    for e in &gone {
        reg.register(e, LONG).await.unwrap();
    }
    let mut batch = gone.to_vec();
    batch.push(entry("nobody", 9, "gw-2", 0));
    assert_eq!(reg.remove_sessions(&batch).await.unwrap(), 2);
    assert_eq!(reg.lookup("mia").await.unwrap(), vec![keep]);
    assert_eq!(reg.lookup("nils").await.unwrap(), vec![]);
    assert_eq!(reg.remove_sessions(&[]).await.unwrap(), 0);
}

#[test]
fn memory_url_is_the_process_global_store() {
    let e = entry("global-user-test", 1, "gw-1", 0);
    let e2 = e.clone();
    on_glommio(move || async move {
        let reg = Registry::connect("memory://", RegistryOptions::default()).unwrap();
        reg.register(&e2, LONG).await.unwrap();
    });
    // Another executor, another thread: the same store.
    on_glommio(move || async move {
        let reg = Registry::connect("memory://", RegistryOptions::default()).unwrap();
        assert_eq!(
            reg.lookup("global-user-test").await.unwrap(),
            vec![e.clone()]
        );
        assert!(reg.unregister(&e).await.unwrap());
        assert!(reg.redis_stats().is_none());
    });
}

#[test]
fn bad_urls_are_clear_errors() {
    for url in [
        "memory:",
        "memory://x",
        "http://h:1",
        "redis://h:0",
        "h:6379",
    ] {
        assert!(
            matches!(
                Registry::connect(url, RegistryOptions::default()),
                Err(Error::InvalidUrl(_))
            ),
            "{url}"
        );
    }
    for url in [
        "rediss://h:1?bogus=1",
        "redis://h:1?ca=/x.pem",
        "rediss://h:1?ca=/nonexistent/ca.pem",
        "redis-cluster://h:1/2",
        "redis://a:1,b:2",
    ] {
        assert!(
            matches!(
                Registry::connect(url, RegistryOptions::default()),
                Err(Error::InvalidUrl(_))
            ),
            "{url}"
        );
    }
    assert!(matches!(
        Registry::connect("unix:///tmp/redis.sock", RegistryOptions::default()),
        Err(Error::Unsupported(_))
    ));
}

#[test]
fn redis_restart_fails_fast_then_recovers() {
    let mut redis = RedisServer::start();
    let url = redis.url();
    on_glommio(move || async move {
        let mut opts = RegistryOptions::default();
        opts.redis = Config::default()
            .with_reconnect_backoff(Duration::from_millis(20), Duration::from_millis(200));
        let reg = Registry::connect(&url, opts).unwrap();
        reg.wait_ready(WAIT).await.unwrap();
        let e = entry("lena", 1, "gw-1", 0);
        reg.register(&e, LONG).await.unwrap();
        redis.stop();
        // While down, every operation fails with a Redis error quickly; none hangs.
        let start = Instant::now();
        let mut saw_disconnected = false;
        for _ in 0..5 {
            let t = Instant::now();
            let err = reg.lookup("lena").await.unwrap_err();
            assert!(matches!(err, Error::Redis(_)), "{err}");
            saw_disconnected |= err.is_retryable();
            assert!(matches!(reg.register(&e, LONG).await, Err(Error::Redis(_))));
            assert!(matches!(
                reg.refresh(std::slice::from_ref(&e), LONG).await,
                Err(Error::Redis(_))
            ));
            assert!(matches!(reg.unregister(&e).await, Err(Error::Redis(_))));
            assert!(
                t.elapsed() < Duration::from_millis(1100),
                "bounded by the command timeout"
            );
            glommio::timer::sleep(Duration::from_millis(50)).await;
        }
        assert!(
            saw_disconnected,
            "fails fast with a retryable error once the loss is seen"
        );
        assert!(start.elapsed() < Duration::from_secs(3));
        assert!(!reg.redis_stats().unwrap().connected);
        redis.restart();
        reg.wait_ready(WAIT).await.expect("reconnects");
        // Redis lost everything; the next refresh re-creates the session.
        assert_eq!(reg.lookup("lena").await.unwrap(), vec![]);
        reg.refresh(std::slice::from_ref(&e), LONG).await.unwrap();
        assert_eq!(reg.lookup("lena").await.unwrap(), vec![e]);
        assert!(reg.redis_stats().unwrap().reconnects >= 1);
    });
}

#[test]
fn corrupt_members_are_skipped() {
    let redis = RedisServer::start();
    let (url, addr) = (redis.url(), redis.addr());
    on_glommio(move || async move {
        let reg = Registry::connect(&url, RegistryOptions::default()).unwrap();
        reg.wait_ready(WAIT).await.unwrap();
        let e = entry("mia", 1, "gw-1", 0);
        reg.register(&e, LONG).await.unwrap();
        let key = registry::schema::key("mia");
        let far = (registry::schema::now_ms() + 60_000).to_string();
        assert_eq!(
            redis_cmd(&addr, &["ZADD", &key, &far, "not a member"]),
            ":1\r\n"
        );
        assert_eq!(reg.lookup("mia").await.unwrap(), vec![e]);
        // A foreign key of another type under our name: a clear command error, not a panic.
        redis_cmd(&addr, &["SET", &registry::schema::key("nina"), "x"]);
        assert!(
            matches!(reg.lookup("nina").await, Err(Error::Command(m)) if m.starts_with("WRONGTYPE"))
        );
    });
}

/// A refresh batch of many users lands on every master (split per node by the client) and
/// each user's key lives on its slot's master.
#[test]
fn cluster_refresh_batch_spans_nodes() {
    let cluster = Arc::new(RedisCluster::start());
    let c = cluster.clone();
    on_glommio(move || async move {
        let reg = Registry::connect(&c.seed_url(), RegistryOptions::default()).unwrap();
        reg.wait_ready(WAIT).await.unwrap();
        let entries: Vec<SessionEntry> = (0..200)
            .map(|i| entry(&format!("user{i}"), i, "gw-1", (i % 4) as u16))
            .collect();
        reg.refresh(&entries, LONG).await.unwrap();
        let lookups: Vec<_> = entries.iter().map(|e| reg.lookup(&e.user)).collect();
        for (e, l) in entries.iter().zip(lookups) {
            assert_eq!(l.await.unwrap(), vec![e.clone()]);
        }
        let mut per_master = std::collections::HashMap::new();
        for e in &entries {
            let key = registry::schema::key(&e.user);
            let owner = c.master_of_slot(resp_client::slot::key_slot(key.as_bytes()));
            let reply = redis_cmd(&owner, &["ZCARD", &key]);
            assert_eq!(reply, ":1\r\n", "{key} on {owner}");
            *per_master.entry(owner).or_insert(0) += 1;
        }
        assert_eq!(per_master.len(), 3, "users spread over every master");
        let stats = reg.redis_stats().unwrap();
        assert!(stats.connected && stats.nodes == 3, "{stats:?}");
        assert_eq!(stats.redirects, 0);
    });
    drop(cluster);
}
