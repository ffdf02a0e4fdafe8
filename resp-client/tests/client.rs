//! The client against a real `redis-server` (testkit) and against fake servers that misbehave.

use std::future::Future;
use std::io::{Read, Write};
use std::net::TcpListener;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use resp_client::{Batch, Client, Config, Error, Reply};
use testkit::{redis_cmd, RedisServer};

const WAIT: Duration = Duration::from_secs(5);

/// Runs `f` on a fresh glommio executor thread.
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

fn bulk(r: &Reply) -> &[u8] {
    r.as_bytes().map(|b| &b[..]).unwrap_or(b"<not bulk>")
}

async fn connected(config: Config) -> Client {
    let client = Client::new(config);
    client.wait_connected(WAIT).await.expect("connects");
    client
}

#[test]
fn set_get_and_replies_of_every_kind() {
    let redis = RedisServer::start();
    let url = redis.url();
    run(move || async move {
        let client = Client::new(Config::from_url(&url).unwrap());
        // Used at once: queued during the first connection attempt, sent when it succeeds.
        let early = client.submit(&[b"SET", b"early", b"1"]);
        assert!(!client.is_connected());
        assert!(early.await.unwrap().is_ok());
        client.wait_connected(WAIT).await.unwrap();
        assert!(client.submit(&[b"SET", b"k", b"v"]).await.unwrap().is_ok());
        assert_eq!(bulk(&client.cmd(&[b"GET", b"k"]).await.unwrap()), b"v");
        assert!(client.cmd(&[b"GET", b"missing"]).await.unwrap().is_nil());
        assert_eq!(
            client.cmd(&[b"INCRBY", b"n", b"5"]).await.unwrap(),
            Reply::Int(5)
        );
        let err = client.cmd(&[b"NOSUCHCOMMAND"]).await.unwrap();
        assert!(err.error_message().unwrap().starts_with("ERR"), "{err:?}");
        let arr = client.cmd(&[b"MGET", b"k", b"missing"]).await.unwrap();
        assert_eq!(arr.into_array().unwrap().len(), 2);
        assert_eq!(
            client.submit(&[]).await,
            Err(Error::InvalidCommand(
                "a command needs at least one argument"
            ))
        );
        let stats = client.stats();
        assert!(stats.connected);
        assert_eq!((stats.in_flight, stats.reconnects), (0, 0));
    });
}

#[test]
fn submit_enqueues_at_call_time() {
    let redis = RedisServer::start();
    let url = redis.url();
    run(move || async move {
        let client = connected(Config::from_url(&url).unwrap()).await;
        let first = client.submit(&[b"INCR", b"c"]);
        let second = client.submit(&[b"INCR", b"c"]);
        // Awaited in reverse: the order on the wire is the order of the calls.
        assert_eq!(second.await.unwrap(), Reply::Int(2));
        assert_eq!(first.await.unwrap(), Reply::Int(1));
        // A future dropped unawaited still sends its command and keeps the order.
        drop(client.submit(&[b"INCR", b"c"]));
        assert_eq!(
            client.cmd(&[b"GET", b"c"]).await.unwrap(),
            Reply::Bulk("3".into())
        );
    });
}

#[test]
fn pipelined_burst_from_many_tasks() {
    const TASKS: usize = 50;
    const PER_TASK: usize = 200; // 10,000 commands in flight at once
    let redis = RedisServer::start();
    let url = redis.url();
    let addr = redis.addr();
    run(move || async move {
        let client = connected(Config::from_url(&url).unwrap()).await;
        let before = commands_processed(&addr);
        let mut tasks = Vec::new();
        for t in 0..TASKS {
            let client = client.clone();
            tasks.push(glommio::spawn_local(async move {
                let key = format!("burst:{t}");
                // Queue everything first, then await in order.
                let futs: Vec<_> = (0..PER_TASK)
                    .map(|_| client.submit(&[b"INCR", key.as_bytes()]))
                    .collect();
                for (i, f) in futs.into_iter().enumerate() {
                    assert_eq!(f.await.unwrap(), Reply::Int(i as i64 + 1), "task {t}");
                }
            }));
        }
        // All tasks queue before any reply is read: the in-flight count peaks at 10,000.
        glommio::yield_if_needed().await;
        for task in tasks {
            task.await;
        }
        // A batch: replies in order, as one Vec.
        let cmds: Vec<Vec<u8>> = (0..100)
            .map(|i| format!("batch:{i}").into_bytes())
            .collect();
        let sets: Vec<[&[u8]; 3]> = cmds.iter().map(|k| [b"SET" as &[u8], k, k]).collect();
        let set_refs: Vec<&[&[u8]]> = sets.iter().map(|c| &c[..]).collect();
        let replies = client.submit_many(&set_refs).await.unwrap();
        assert_eq!(replies.len(), 100);
        assert!(replies.iter().all(Reply::is_ok));
        let mut batch = Batch::new();
        for k in &cmds {
            batch.push(&[b"GET", k]);
        }
        let replies = client.submit_batch(batch).await.unwrap();
        for (k, r) in cmds.iter().zip(&replies) {
            assert_eq!(bulk(r), &k[..]);
        }
        assert_eq!(client.submit_batch(Batch::new()).await.unwrap(), vec![]);
        let after = commands_processed(&addr);
        assert!(after - before >= (TASKS * PER_TASK) as u64);
        let stats = client.stats();
        assert_eq!(stats.in_flight, 0);
        // Commands queued by many tasks share writes.
        assert!(stats.commands >= 10_200, "{stats:?}");
        assert!(
            stats.writes * 20 < stats.commands,
            "little coalescing: {stats:?}"
        );
    });
}

/// `total_commands_processed` from `INFO stats`.
fn commands_processed(addr: &str) -> u64 {
    let info = redis_cmd(addr, &["INFO", "stats"]);
    info.lines()
        .find_map(|l| l.strip_prefix("total_commands_processed:"))
        .and_then(|v| v.trim().parse().ok())
        .expect("total_commands_processed in INFO")
}

#[test]
fn in_flight_bound_is_backpressure() {
    let redis = RedisServer::start();
    let url = redis.url();
    run(move || async move {
        let client = connected(Config::from_url(&url).unwrap().with_max_in_flight(10)).await;
        let futs: Vec<_> = (0..10).map(|_| client.submit(&[b"PING"])).collect();
        let start = Instant::now();
        assert_eq!(
            client.submit(&[b"PING"]).await,
            Err(Error::Overloaded { max_in_flight: 10 })
        );
        assert_eq!(
            client.submit_many(&[&[b"PING"]]).await,
            Err(Error::Overloaded { max_in_flight: 10 })
        );
        assert!(
            start.elapsed() < Duration::from_millis(250),
            "fails at once"
        );
        assert_eq!(client.stats().in_flight, 10);
        for f in futs {
            assert_eq!(f.await.unwrap(), Reply::Simple("PONG".into()));
        }
        assert!(client.cmd(&[b"PING"]).await.is_ok(), "room again");
    });
}

#[test]
fn redis_restart_fails_cleanly_then_recovers() {
    let mut redis = RedisServer::start();
    let url = redis.url();
    run(move || async move {
        let config = Config::from_url(&url)
            .unwrap()
            .with_command_timeout(Duration::from_secs(3))
            .with_reconnect_backoff(Duration::from_millis(20), Duration::from_millis(200));
        let client = connected(config).await;
        client.cmd(&[b"SET", b"k", b"v"]).await.unwrap();
        // In flight when Redis dies: BLPOP keeps the request open on the server.
        let in_flight = client.submit(&[b"BLPOP", b"nothing", b"10"]);
        glommio::timer::sleep(Duration::from_millis(50)).await; // written and blocking
        redis.stop();
        let start = Instant::now();
        assert_eq!(in_flight.await, Err(Error::ConnectionLost));
        // Down: fail fast, never hang.
        for _ in 0..3 {
            let t = Instant::now();
            assert_eq!(client.cmd(&[b"GET", b"k"]).await, Err(Error::Disconnected));
            assert!(t.elapsed() < Duration::from_millis(250));
            glommio::timer::sleep(Duration::from_millis(100)).await;
        }
        assert!(start.elapsed() < Duration::from_secs(2));
        assert!(!client.stats().connected);
        assert!(client.stats().connect_errors > 0, "{:?}", client.stats());
        redis.restart();
        client.wait_connected(WAIT).await.expect("reconnects");
        assert!(
            client.cmd(&[b"GET", b"k"]).await.unwrap().is_nil(),
            "empty after restart"
        );
        assert!(client.cmd(&[b"SET", b"k", b"w"]).await.unwrap().is_ok());
        assert_eq!(client.stats().reconnects, 1);
    });
}

#[test]
fn slow_reply_times_out_and_resets_connection() {
    let redis = RedisServer::start();
    let url = redis.url();
    let addr = redis.addr();
    run(move || async move {
        let config = Config::from_url(&url)
            .unwrap()
            .with_command_timeout(Duration::from_millis(200))
            .with_reconnect_backoff(Duration::from_millis(20), Duration::from_millis(100));
        let client = connected(config).await;
        // Redis holds every client's commands for 600 ms.
        assert_eq!(redis_cmd(&addr, &["CLIENT", "PAUSE", "600"]), "+OK\r\n");
        let start = Instant::now();
        let a = client.submit(&[b"PING"]);
        let b = client.submit(&[b"PING"]);
        assert_eq!(a.await, Err(Error::Timeout));
        let b = b.await;
        assert!(
            matches!(b, Err(Error::Timeout | Error::ConnectionLost)),
            "{b:?}"
        );
        let waited = start.elapsed();
        assert!(
            waited >= Duration::from_millis(190) && waited < Duration::from_millis(900),
            "{waited:?}"
        );
        // The connection was reset; after the pause the client works again.
        glommio::timer::sleep(Duration::from_millis(600)).await;
        client.wait_connected(WAIT).await.unwrap();
        assert_eq!(
            client.cmd(&[b"PING"]).await.unwrap(),
            Reply::Simple("PONG".into())
        );
        assert!(client.stats().reconnects >= 1);
    });
}

#[test]
fn per_call_timeout_ends_only_that_call() {
    let redis = RedisServer::start();
    let url = redis.url();
    let addr = redis.addr();
    run(move || async move {
        let config = Config::from_url(&url)
            .unwrap()
            .with_command_timeout(Duration::from_secs(3));
        let client = connected(config).await;
        client.cmd(&[b"SET", b"k", b"v"]).await.unwrap();
        // Redis holds every client's commands for 400 ms: the per-call deadlines pass, the
        // connection-wide one does not.
        assert_eq!(redis_cmd(&addr, &["CLIENT", "PAUSE", "400"]), "+OK\r\n");
        let start = Instant::now();
        let short = client.submit_with_timeout(&[b"GET", b"k"], Duration::from_millis(100));
        let mut batch = Batch::new();
        batch
            .push(&[b"GET", b"k"])
            .push(&[b"PING"])
            .with_timeout(Duration::from_millis(150));
        let short_batch = client.submit_batch(batch);
        let patient = client.submit(&[b"GET", b"k"]);
        let roomy = client.submit_with_timeout(&[b"PING"], Duration::from_secs(2));
        assert_eq!(short.await, Err(Error::Timeout));
        let t = start.elapsed();
        assert!(
            t >= Duration::from_millis(95) && t < Duration::from_millis(300),
            "{t:?}"
        );
        assert_eq!(short_batch.await, Err(Error::Timeout));
        let t = start.elapsed();
        assert!(
            t >= Duration::from_millis(145) && t < Duration::from_millis(350),
            "{t:?}"
        );
        // The others are answered on the same connection once Redis resumes: the late reply
        // to the timed-out calls was read and dropped, not matched to anyone else.
        assert_eq!(bulk(&patient.await.unwrap()), b"v");
        assert_eq!(roomy.await.unwrap(), Reply::Simple("PONG".into()));
        assert_eq!(bulk(&client.cmd(&[b"GET", b"k"]).await.unwrap()), b"v");
        let stats = client.stats();
        assert_eq!(stats.reconnects, 0, "no reset: {stats:?}");
        assert_eq!(stats.timeouts, 0, "{stats:?}");
        assert_eq!(stats.in_flight, 0, "{stats:?}");
        // A failed call stays failed at once (no timer).
        let t = Instant::now();
        assert!(matches!(
            client
                .submit_with_timeout(&[], Duration::from_secs(5))
                .await,
            Err(Error::InvalidCommand(_))
        ));
        assert!(t.elapsed() < Duration::from_millis(50));
    });
}

#[test]
fn dropped_futures_give_their_cells_back() {
    let redis = RedisServer::start();
    let url = redis.url();
    run(move || async move {
        let client = connected(Config::from_url(&url).unwrap()).await;
        // Dropped before the reply (abandoned), dropped after it (never polled), awaited:
        // every reply still goes to the right request.
        for round in 0..200u32 {
            let v = round.to_string();
            drop(client.submit(&[b"SET", b"k", v.as_bytes()]));
            let unpolled = client.submit(&[b"GET", b"k"]);
            let get = client.submit(&[b"GET", b"k"]);
            assert_eq!(bulk(&get.await.unwrap()), v.as_bytes());
            drop(unpolled);
        }
        assert_eq!(client.stats().in_flight, 0);
    });
}

#[test]
fn ready_waits_for_room() {
    let redis = RedisServer::start();
    let url = redis.url();
    let addr = redis.addr();
    run(move || async move {
        let client = connected(Config::from_url(&url).unwrap().with_max_in_flight(4)).await;
        client.ready(4).await.unwrap();
        assert_eq!(
            client.ready(5).await,
            Err(Error::Overloaded { max_in_flight: 4 }),
            "can never fit"
        );
        assert_eq!(redis_cmd(&addr, &["CLIENT", "PAUSE", "200"]), "+OK\r\n");
        let start = Instant::now();
        let full: Vec<_> = (0..4).map(|_| client.submit(&[b"PING"])).collect();
        assert!(matches!(
            client.submit(&[b"PING"]).await,
            Err(Error::Overloaded { .. })
        ));
        // A producer waits instead of failing: room comes back with the replies.
        client.ready(2).await.unwrap();
        assert!(
            start.elapsed() >= Duration::from_millis(150),
            "{:?}",
            start.elapsed()
        );
        let more: Vec<_> = (0..2).map(|_| client.submit(&[b"PING"])).collect();
        for f in full.into_iter().chain(more) {
            assert_eq!(f.await.unwrap(), Reply::Simple("PONG".into()));
        }
        let stats = client.stats();
        assert_eq!(stats.overloaded, 1, "{stats:?}");
    });
}

#[test]
fn dropping_the_last_handle_closes_pending_requests() {
    let redis = RedisServer::start();
    let url = redis.url();
    run(move || async move {
        let client = connected(Config::from_url(&url).unwrap()).await;
        let pending = client.submit(&[b"PING"]);
        drop(client);
        assert_eq!(pending.await, Err(Error::Closed));
    });
}

#[test]
fn auth_and_select_on_connect() {
    let redis = RedisServer::start();
    let addr = redis.addr();
    assert_eq!(
        redis_cmd(
            &addr,
            &["ACL", "SETUSER", "alice", "on", ">s3cret", "~*", "+@all"]
        ),
        "+OK\r\n"
    );
    let url = format!("redis://alice:s3cret@{addr}/2");
    let bad_url = format!("redis://alice:wrong@{addr}/2");
    run(move || async move {
        let client = connected(Config::from_url(&url).unwrap()).await;
        client.cmd(&[b"SET", b"in-db-2", b"1"]).await.unwrap();
        assert_eq!(redis_cmd(&addr, &["EXISTS", "in-db-2"]), ":0\r\n");
        assert_eq!(
            client.cmd(&[b"ACL", b"WHOAMI"]).await.unwrap(),
            Reply::Bulk("alice".into())
        );
        // A rejected AUTH never counts as connected; requests fail fast.
        let bad = Client::new(Config::from_url(&bad_url).unwrap());
        assert_eq!(
            bad.wait_connected(Duration::from_millis(300)).await,
            Err(Error::Disconnected)
        );
        assert!(bad.stats().connect_errors >= 1);
        assert_eq!(bad.cmd(&[b"PING"]).await, Err(Error::Disconnected));
    });
}

#[test]
fn reply_over_max_reply_bytes_is_a_protocol_error() {
    let redis = RedisServer::start();
    let url = redis.url();
    run(move || async move {
        let client = connected(Config::from_url(&url).unwrap().with_max_reply_bytes(1000)).await;
        let big = vec![b'x'; 2000];
        client.cmd(&[b"SET", b"big", &big]).await.unwrap();
        let after = client.submit(&[b"PING"]);
        match client.submit(&[b"GET", b"big"]).await {
            Err(Error::Protocol(msg)) => assert!(msg.contains("bulk string of 2000"), "{msg}"),
            other => panic!("{other:?}"),
        }
        // The PING before it was answered; the connection is then rebuilt.
        assert!(after.await.is_ok());
        client.wait_connected(WAIT).await.unwrap();
        assert!(client.cmd(&[b"STRLEN", b"big"]).await.is_ok());
    });
}

/// A fake Redis: answers every read on every connection with `answer`, until dropped.
struct FakeServer {
    addr: String,
    stop: Arc<AtomicBool>,
    connections: Arc<AtomicUsize>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl FakeServer {
    fn start(answer: &'static [u8]) -> FakeServer {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let stop = Arc::new(AtomicBool::new(false));
        let connections = Arc::new(AtomicUsize::new(0));
        let (stop2, conns2) = (stop.clone(), connections.clone());
        let thread = std::thread::spawn(move || {
            let mut open = Vec::new();
            while !stop2.load(Ordering::Relaxed) {
                if let Ok((s, _)) = listener.accept() {
                    conns2.fetch_add(1, Ordering::Relaxed);
                    s.set_nonblocking(false).unwrap();
                    s.set_read_timeout(Some(Duration::from_millis(20))).unwrap();
                    open.push(s);
                }
                for s in &mut open {
                    let mut buf = [0u8; 1024];
                    if let Ok(n) = s.read(&mut buf) {
                        if n > 0 {
                            let _ = s.write_all(answer);
                        }
                    }
                }
                std::thread::sleep(Duration::from_millis(5));
            }
        });
        FakeServer {
            addr,
            stop,
            connections,
            thread: Some(thread),
        }
    }
}

impl Drop for FakeServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn expect_protocol_error(answer: &'static [u8], expect: &'static str) {
    let fake = FakeServer::start(answer);
    let addr = fake.addr.clone();
    run(move || async move {
        // RESP2: these servers answer every read the same way, HELLO included.
        let config = Config::default()
            .with_addr(addr)
            .with_resp3(false)
            .with_reconnect_backoff(Duration::from_millis(10), Duration::from_millis(20));
        let client = connected(config).await;
        match client.cmd(&[b"PING"]).await {
            Err(Error::Protocol(msg)) => assert!(msg.contains(expect), "{msg}"),
            other => panic!("{other:?}"),
        }
        // Reset and reconnected (to the same misbehaving server).
        client.wait_connected(WAIT).await.unwrap();
        assert!(client.stats().reconnects >= 1);
    });
    assert!(fake.connections.load(Ordering::Relaxed) >= 1);
}

#[test]
fn fake_server_garbage_is_a_protocol_error() {
    expect_protocol_error(
        b"HTTP/1.1 400 Bad Request\r\n\r\n",
        "invalid reply type byte",
    );
}

#[test]
fn fake_server_huge_bulk_length_is_a_protocol_error() {
    expect_protocol_error(b"$999999999999\r\n", "bulk string of 999999999999");
}

#[test]
fn fake_server_huge_array_count_is_a_protocol_error() {
    expect_protocol_error(b"*99999999999\r\n", "array length of 99999999999");
}

#[test]
fn fake_server_extra_reply_resets_the_connection() {
    let fake = FakeServer::start(b"+PONG\r\n+PONG\r\n");
    let addr = fake.addr.clone();
    run(move || async move {
        let config = Config::default()
            .with_resp3(false)
            .with_addr(addr)
            .with_reconnect_backoff(Duration::from_millis(10), Duration::from_millis(20));
        let client = connected(config).await;
        // The first PONG answers; the second has no request: the connection is reset.
        assert_eq!(
            client.cmd(&[b"PING"]).await,
            Ok(Reply::Simple("PONG".into()))
        );
        let deadline = Instant::now() + WAIT;
        while client.stats().reconnects == 0 && Instant::now() < deadline {
            glommio::timer::sleep(Duration::from_millis(10)).await;
        }
        assert!(client.stats().reconnects >= 1);
    });
}

#[test]
fn unreachable_redis_fails_fast() {
    let port = testkit::free_port(); // nothing listens there
    run(move || async move {
        let client = Client::new(Config::default().with_addr(format!("127.0.0.1:{port}")));
        // Queued during the first attempt, which is refused: Disconnected, quickly.
        let t = Instant::now();
        assert_eq!(client.cmd(&[b"PING"]).await, Err(Error::Disconnected));
        assert!(t.elapsed() < Duration::from_millis(900));
        assert_eq!(
            client.wait_connected(Duration::from_millis(200)).await,
            Err(Error::Disconnected)
        );
        let t = Instant::now();
        assert_eq!(client.cmd(&[b"PING"]).await, Err(Error::Disconnected));
        assert!(t.elapsed() < Duration::from_millis(250));
        assert!(!client.stats().connected);
    });
}

#[test]
fn resp3_is_negotiated_and_can_be_turned_off() {
    let redis = RedisServer::start();
    let url = redis.url();
    run(move || async move {
        for (url, resp) in [
            (url.clone(), "resp=3"),
            (format!("{url}?protocol=2"), "resp=2"),
        ] {
            let client = connected(Config::from_url(&url).unwrap()).await;
            let info = client.cmd(&[b"CLIENT", b"INFO"]).await.unwrap();
            let text = match &info {
                Reply::Verbatim { text, .. } => text.clone(),
                other => other.as_bytes().cloned().expect("CLIENT INFO text"),
            };
            let text = String::from_utf8_lossy(&text).into_owned();
            assert!(text.contains(resp), "{url}: {text}");
            // Replies keep working either way: nil, ints, arrays.
            assert!(client.cmd(&[b"GET", b"missing"]).await.unwrap().is_nil());
            assert_eq!(
                client
                    .cmd(&[b"INCR", b"n"])
                    .await
                    .unwrap()
                    .as_int()
                    .map(|n| n > 0),
                Some(true)
            );
        }
    });
}

/// A Redis from before `HELLO` (5.x): the client falls back to RESP2 and a plain `AUTH`.
#[test]
fn falls_back_to_resp2_and_auth_without_hello() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let seen = Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let seen2 = seen.clone();
    std::thread::spawn(move || {
        let (mut s, _) = listener.accept().unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut buf = Vec::new();
        let mut chunk = [0u8; 1024];
        loop {
            while let Some((name, used)) = parse_command(&buf) {
                buf.drain(..used);
                let reply: &[u8] = match name.as_str() {
                    "HELLO" => b"-ERR unknown command 'HELLO', with args beginning with: '3'\r\n",
                    "AUTH" | "SELECT" => b"+OK\r\n",
                    _ => b"+PONG\r\n",
                };
                seen2.lock().unwrap().push(name);
                if s.write_all(reply).is_err() {
                    return;
                }
            }
            match s.read(&mut chunk) {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        }
    });
    run(move || async move {
        let config = Config::default()
            .with_addr(addr)
            .with_auth(None, Some("pw".into()));
        let client = connected(config).await;
        assert_eq!(
            client.cmd(&[b"PING"]).await.unwrap(),
            Reply::Simple(bytes::Bytes::from_static(b"PONG"))
        );
    });
    assert_eq!(*seen.lock().unwrap(), ["HELLO", "AUTH", "PING"]);
}

/// The name of the first complete RESP command in `buf` and its length in bytes.
fn parse_command(buf: &[u8]) -> Option<(String, usize)> {
    fn line(buf: &[u8], at: usize) -> Option<(usize, usize)> {
        let end = at + buf.get(at..)?.windows(2).position(|w| w == b"\r\n")?;
        let n = std::str::from_utf8(&buf[at + 1..end]).ok()?.parse().ok()?;
        Some((n, end + 2))
    }
    let (count, mut pos) = line(buf, 0)?;
    let mut name = String::new();
    for i in 0..count {
        let (len, data) = line(buf, pos)?;
        let arg = buf.get(data..data + len)?;
        if i == 0 {
            name = String::from_utf8_lossy(arg).to_uppercase();
        }
        pos = data + len + 2;
        if buf.len() < pos {
            return None;
        }
    }
    Some((name, pos))
}
