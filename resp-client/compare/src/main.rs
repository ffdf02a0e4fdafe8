//! Side-by-side Redis client comparison: the same command mix, at the same depth, on the same
//! `redis-server`, through our `resp-client` (glommio/io_uring or tokio/epoll backend), redis-rs
//! (multiplexed connection, tokio), fred (tokio) and `redis-benchmark -P` (the C reference).
//!
//! ```text
//! resp-compare --addr 127.0.0.1:6379 --client ours|ours-epoll|redis-rs|fred|redis-benchmark \
//!              --mix setget|registry --depth 16 --ops 200000
//! ```
//!
//! Every client uses one connection. `--depth N` = N operations in flight, in one of two
//! styles: `--style tasks` (default): N tasks each awaiting its operations one after another;
//! `--style pipeline`: one task queues N operations (ours: N `submit`s; redis-rs: one
//! `redis::pipe()`; fred: one `pipeline()`) and then awaits them, like redis-benchmark's
//! `-c 1 -P N`. Mixes:
//! - `setget`: `SET key:<i> <32 bytes> EX 60` for half the ops, then `GET key:<i>`, over 10,000
//!   keys;
//! - `registry`: the session registry's commands over 10,000 users, per 10 operations one
//!   `register` (pipeline of `ZREMRANGEBYSCORE`, `ZADD`, `PEXPIRE NX`, `PEXPIRE GT`), one
//!   `refresh` (`ZADD`, `PEXPIRE NX`, `PEXPIRE GT`) and eight `lookup`s (`ZRANGE ... BYSCORE`);
//!   redis-benchmark runs the lookup alone.
//!
//! Prints one line: `client mix depth ops seconds ops_per_sec cpu_ns_per_op`, where CPU is this
//! process' user+system time (`getrusage`) over the timed part (redis-benchmark: the child's),
//! so it counts the client's whole cost: its runtime, its I/O threads, its syscalls.

use std::rc::Rc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

const KEYS: u64 = 10_000;
const VALUE: &str = "0123456789abcdef0123456789abcdef";

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Mix {
    SetGet,
    Registry,
}

#[derive(Clone, Debug)]
struct Args {
    client: String,
    addr: String,
    mix: Mix,
    depth: u64,
    ops: u64,
    warmup: u64,
    /// `tasks`: `depth` tasks, each awaiting its requests one by one. `pipeline`: one task
    /// queues `depth` operations, then awaits them all (redis-benchmark's `-P`).
    pipeline: bool,
    /// `batch` (ours only): like `pipeline`, but the `depth` operations go into one `Batch`
    /// with one future for all their replies (the analogue of `redis::pipe()`).
    batch: bool,
}

fn parse_args() -> Args {
    let mut a = Args {
        client: "ours".into(),
        addr: "127.0.0.1:6379".into(),
        mix: Mix::SetGet,
        depth: 16,
        ops: 200_000,
        warmup: 20_000,
        pipeline: false,
        batch: false,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let v = it.next().unwrap_or_else(|| panic!("{flag} needs a value"));
        match flag.as_str() {
            "--client" => a.client = v,
            "--addr" => a.addr = v,
            "--mix" => {
                a.mix = match v.as_str() {
                    "setget" => Mix::SetGet,
                    "registry" => Mix::Registry,
                    _ => panic!("--mix setget|registry"),
                }
            }
            "--depth" => a.depth = v.parse().expect("--depth N"),
            "--ops" => a.ops = v.parse().expect("--ops N"),
            "--warmup" => a.warmup = v.parse().expect("--warmup N"),
            "--style" => {
                (a.pipeline, a.batch) = match v.as_str() {
                    "tasks" => (false, false),
                    "pipeline" => (true, false),
                    "batch" => (true, true),
                    _ => panic!("--style tasks|pipeline|batch"),
                }
            }
            _ => panic!("unknown flag {flag}"),
        }
    }
    a
}

/// Process CPU time (user + system).
fn cpu_time(who: i32) -> Duration {
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(who, &mut ru) };
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    tv(ru.ru_utime) + tv(ru.ru_stime)
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

/// What one operation does. Keys and members are made once up front ([`Names`]), so the
/// per-op cost measured is the client's, not the harness' string formatting.
enum Op {
    Set(&'static str),
    Get(&'static str),
    Register {
        key: &'static str,
        member: &'static str,
    },
    Refresh {
        key: &'static str,
        member: &'static str,
    },
    Lookup(&'static str),
}

/// Every key and member the mixes use.
struct Names {
    keys: Vec<String>,
    users: Vec<String>,
    members: Vec<String>,
}

fn names() -> &'static Names {
    static NAMES: std::sync::OnceLock<Names> = std::sync::OnceLock::new();
    NAMES.get_or_init(|| Names {
        keys: (0..KEYS).map(|i| format!("key:{i}")).collect(),
        users: (0..KEYS)
            .map(|u| format!("connect:u:{{user{u}}}"))
            .collect(),
        members: (0..KEYS)
            .map(|u| format!("{:016x}|gw-1|{}|10.0.0.7:7100", u, u % 4))
            .collect(),
    })
}

/// Operation `i` of phase `phase` (setget: 0 = SET, 1 = GET).
fn op(mix: Mix, phase: u32, i: u64) -> Op {
    let n = names();
    let u = (i % KEYS) as usize;
    match mix {
        Mix::SetGet if phase == 0 => Op::Set(&n.keys[u]),
        Mix::SetGet => Op::Get(&n.keys[u]),
        Mix::Registry => match i % 10 {
            0 => Op::Register {
                key: &n.users[u],
                member: &n.members[u],
            },
            5 => Op::Refresh {
                key: &n.users[u],
                member: &n.members[u],
            },
            _ => Op::Lookup(&n.users[u]),
        },
    }
}

fn phases(mix: Mix) -> u32 {
    match mix {
        Mix::SetGet => 2,
        Mix::Registry => 1,
    }
}

struct Outcome {
    secs: f64,
    cpu: Duration,
}

fn report(a: &Args, o: &Outcome, ops: u64) {
    println!(
        "{}{} {} {} {} {:.3} {:.0} {:.0}",
        a.client,
        if a.batch {
            "/batch"
        } else if a.pipeline && a.client != "redis-benchmark" {
            "/pipeline"
        } else {
            ""
        },
        match a.mix {
            Mix::SetGet => "setget",
            Mix::Registry => "registry",
        },
        a.depth,
        ops,
        o.secs,
        ops as f64 / o.secs,
        o.cpu.as_nanos() as f64 / ops as f64
    );
}

fn main() {
    let a = parse_args();
    names();
    match a.client.as_str() {
        "ours" => ours(&a, runtime::rt::Backend::Uring),
        "ours-epoll" => ours(&a, runtime::rt::Backend::Epoll),
        "redis-rs" => redis_rs(&a),
        "fred" => fred_client(&a),
        "redis-benchmark" => redis_benchmark(&a),
        other => panic!("unknown client {other}"),
    }
}

// ---- ours ---------------------------------------------------------------------------------

fn ours(a: &Args, backend: runtime::rt::Backend) {
    let result = Arc::new(Mutex::new(None));
    let (args, out) = (a.clone(), result.clone());
    runtime::shards::Shards::spawn("compare", 1, false, backend, move |_| async move {
        use resp_client::{Batch, Client, Config, Int};
        let mut config = Config::from_url(&format!("redis://{}", args.addr)).unwrap();
        // On a shared machine a batch can stall past the 1-s default: a timing run must not
        // fail for it.
        config.command_timeout = Duration::from_secs(30);
        let client = Client::new(config);
        client
            .wait_connected(Duration::from_secs(5))
            .await
            .expect("connect");
        enum Started {
            One(resp_client::ReplyFuture),
            Batch(resp_client::BatchFuture),
        }
        impl Started {
            async fn finish(self) {
                let ok = match self {
                    Started::One(f) => f.await.is_ok(),
                    Started::Batch(f) => f.await.is_ok(),
                };
                assert!(ok, "request failed");
            }
        }
        /// Appends the operation's commands to `b`.
        fn push(b: &mut Batch, o: Op) {
            match o {
                Op::Set(k) => {
                    b.push(&[b"SET", k.as_bytes(), VALUE.as_bytes(), b"EX", b"60"]);
                }
                Op::Get(k) => {
                    b.push(&[b"GET", k.as_bytes()]);
                }
                Op::Lookup(k) => {
                    let min = format!("({}", now_ms());
                    b.push(&[b"ZRANGE", k.as_bytes(), min.as_bytes(), b"+inf", b"BYSCORE"]);
                }
                Op::Register { key, member } => {
                    let (now, ttl) = (now_ms(), Int::from(60_000));
                    let k = key.as_bytes();
                    b.push(&[b"ZREMRANGEBYSCORE", k, b"-inf", Int::from(now).as_ref()]);
                    b.push(&[
                        b"ZADD",
                        k,
                        Int::from(now + 60_000).as_ref(),
                        member.as_bytes(),
                    ]);
                    b.push(&[b"PEXPIRE", k, ttl.as_ref(), b"NX"]);
                    b.push(&[b"PEXPIRE", k, ttl.as_ref(), b"GT"]);
                }
                Op::Refresh { key, member } => {
                    let (now, ttl) = (now_ms(), Int::from(60_000));
                    let k = key.as_bytes();
                    b.push(&[
                        b"ZADD",
                        k,
                        Int::from(now + 60_000).as_ref(),
                        member.as_bytes(),
                    ]);
                    b.push(&[b"PEXPIRE", k, ttl.as_ref(), b"NX"]);
                    b.push(&[b"PEXPIRE", k, ttl.as_ref(), b"GT"]);
                }
            }
        }
        /// Queues the operation's commands now.
        fn start(client: &Client, o: Op) -> Started {
            match o {
                Op::Set(k) => Started::One(client.submit(&[
                    b"SET",
                    k.as_bytes(),
                    VALUE.as_bytes(),
                    b"EX",
                    b"60",
                ])),
                Op::Get(k) => Started::One(client.submit(&[b"GET", k.as_bytes()])),
                Op::Lookup(k) => {
                    let min = format!("({}", now_ms());
                    Started::One(client.submit(&[
                        b"ZRANGE",
                        k.as_bytes(),
                        min.as_bytes(),
                        b"+inf",
                        b"BYSCORE",
                    ]))
                }
                batch @ (Op::Register { .. } | Op::Refresh { .. }) => {
                    let mut b = Batch::new();
                    push(&mut b, batch);
                    Started::Batch(client.submit_batch(b))
                }
            }
        }
        let run = |ops: u64| {
            let client = client.clone();
            let args = args.clone();
            async move {
                for phase in 0..phases(args.mix) {
                    let per_phase = ops / u64::from(phases(args.mix));
                    if args.batch {
                        let mut i = 0;
                        while i < per_phase {
                            let end = (i + args.depth).min(per_phase);
                            let mut b = Batch::new();
                            for j in i..end {
                                push(&mut b, op(args.mix, phase, j));
                            }
                            if let Err(e) = client.submit_batch(b).await {
                                panic!("batch failed: {e}");
                            }
                            i = end;
                        }
                        continue;
                    }
                    if args.pipeline {
                        let mut started = Vec::with_capacity(args.depth as usize);
                        let mut i = 0;
                        while i < per_phase {
                            let end = (i + args.depth).min(per_phase);
                            started
                                .extend((i..end).map(|j| start(&client, op(args.mix, phase, j))));
                            for s in started.drain(..) {
                                s.finish().await;
                            }
                            i = end;
                        }
                        continue;
                    }
                    let mut tasks = Vec::new();
                    for t in 0..args.depth {
                        let client = client.clone();
                        let depth = args.depth;
                        let mix = args.mix;
                        tasks.push(runtime::rt::spawn(async move {
                            let mut i = t;
                            while i < per_phase {
                                start(&client, op(mix, phase, i)).finish().await;
                                i += depth;
                            }
                        }));
                    }
                    for t in tasks {
                        t.await;
                    }
                }
            }
        };
        run(args.warmup).await;
        let (t0, c0) = (Instant::now(), cpu_time(libc::RUSAGE_SELF));
        run(args.ops).await;
        let o = Outcome {
            secs: t0.elapsed().as_secs_f64(),
            cpu: cpu_time(libc::RUSAGE_SELF) - c0,
        };
        let _ = Rc::new(()); // shard-local
        *out.lock().unwrap() = Some(o);
    })
    .expect("start shard")
    .join()
    .expect("shard");
    let o = result.lock().unwrap().take().expect("result");
    report(a, &o, a.ops);
}

// ---- redis-rs -----------------------------------------------------------------------------

fn redis_rs(a: &Args) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let args = a.clone();
    let o = rt.block_on(async move {
        let client = redis::Client::open(format!("redis://{}", args.addr)).unwrap();
        let con = client.get_multiplexed_async_connection().await.unwrap();
        /// Adds the operation's commands to `p`.
        fn add(p: &mut redis::Pipeline, o: Op) {
            match o {
                Op::Set(k) => {
                    p.cmd("SET").arg(k).arg(VALUE).arg("EX").arg(60);
                }
                Op::Get(k) => {
                    p.cmd("GET").arg(k);
                }
                Op::Lookup(k) => {
                    p.cmd("ZRANGE")
                        .arg(k)
                        .arg(format!("({}", now_ms()))
                        .arg("+inf")
                        .arg("BYSCORE");
                }
                Op::Register { key, member } => {
                    let now = now_ms();
                    p.cmd("ZREMRANGEBYSCORE").arg(key).arg("-inf").arg(now);
                    p.cmd("ZADD").arg(key).arg(now + 60_000).arg(member);
                    p.cmd("PEXPIRE").arg(key).arg(60_000).arg("NX");
                    p.cmd("PEXPIRE").arg(key).arg(60_000).arg("GT");
                }
                Op::Refresh { key, member } => {
                    p.cmd("ZADD").arg(key).arg(now_ms() + 60_000).arg(member);
                    p.cmd("PEXPIRE").arg(key).arg(60_000).arg("NX");
                    p.cmd("PEXPIRE").arg(key).arg(60_000).arg("GT");
                }
            }
        }
        async fn one(con: &mut redis::aio::MultiplexedConnection, o: Op) {
            let r: redis::RedisResult<redis::Value> = match o {
                Op::Set(k) => {
                    redis::cmd("SET")
                        .arg(k)
                        .arg(VALUE)
                        .arg("EX")
                        .arg(60)
                        .query_async(con)
                        .await
                }
                Op::Get(k) => redis::cmd("GET").arg(k).query_async(con).await,
                Op::Lookup(k) => {
                    redis::cmd("ZRANGE")
                        .arg(k)
                        .arg(format!("({}", now_ms()))
                        .arg("+inf")
                        .arg("BYSCORE")
                        .query_async(con)
                        .await
                }
                Op::Register { key, member } => {
                    let now = now_ms();
                    redis::pipe()
                        .cmd("ZREMRANGEBYSCORE")
                        .arg(key)
                        .arg("-inf")
                        .arg(now)
                        .cmd("ZADD")
                        .arg(key)
                        .arg(now + 60_000)
                        .arg(member)
                        .cmd("PEXPIRE")
                        .arg(key)
                        .arg(60_000)
                        .arg("NX")
                        .cmd("PEXPIRE")
                        .arg(key)
                        .arg(60_000)
                        .arg("GT")
                        .query_async(con)
                        .await
                }
                Op::Refresh { key, member } => {
                    let now = now_ms();
                    redis::pipe()
                        .cmd("ZADD")
                        .arg(key)
                        .arg(now + 60_000)
                        .arg(member)
                        .cmd("PEXPIRE")
                        .arg(key)
                        .arg(60_000)
                        .arg("NX")
                        .cmd("PEXPIRE")
                        .arg(key)
                        .arg(60_000)
                        .arg("GT")
                        .query_async(con)
                        .await
                }
            };
            r.expect("request failed");
        }
        let run = |ops: u64| {
            let con = con.clone();
            let args = args.clone();
            async move {
                for phase in 0..phases(args.mix) {
                    let per_phase = ops / u64::from(phases(args.mix));
                    if args.pipeline {
                        let mut con = con.clone();
                        let mut i = 0;
                        while i < per_phase {
                            let end = (i + args.depth).min(per_phase);
                            let mut p = redis::pipe();
                            for j in i..end {
                                add(&mut p, op(args.mix, phase, j));
                            }
                            let r: redis::RedisResult<Vec<redis::Value>> =
                                p.query_async(&mut con).await;
                            r.expect("pipeline failed");
                            i = end;
                        }
                        continue;
                    }
                    let mut tasks = Vec::new();
                    for t in 0..args.depth {
                        let mut con = con.clone();
                        let (depth, mix) = (args.depth, args.mix);
                        tasks.push(tokio::spawn(async move {
                            let mut i = t;
                            while i < per_phase {
                                one(&mut con, op(mix, phase, i)).await;
                                i += depth;
                            }
                        }));
                    }
                    for t in tasks {
                        t.await.unwrap();
                    }
                }
            }
        };
        run(args.warmup).await;
        let (t0, c0) = (Instant::now(), cpu_time(libc::RUSAGE_SELF));
        run(args.ops).await;
        Outcome {
            secs: t0.elapsed().as_secs_f64(),
            cpu: cpu_time(libc::RUSAGE_SELF) - c0,
        }
    });
    report(a, &o, a.ops);
}

// ---- fred ---------------------------------------------------------------------------------

fn fred_client(a: &Args) {
    use fred::prelude::*;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let args = a.clone();
    let o = rt.block_on(async move {
        let config = Config::from_url(&format!("redis://{}", args.addr)).unwrap();
        let client = Builder::from_config(config).build().unwrap();
        client.init().await.unwrap();
        type FredPipeline = fred::clients::Pipeline<fred::clients::Client>;
        /// Queues the operation's commands on `p`.
        async fn add(p: &FredPipeline, o: Op) {
            use fred::cmd;
            let queued: Result<(), Error> = match o {
                Op::Set(k) => p.set(k, VALUE, Some(Expiration::EX(60)), None, false).await,
                Op::Get(k) => p.get(k).await,
                Op::Lookup(k) => {
                    let min = format!("({}", now_ms());
                    p.custom(cmd!("ZRANGE"), vec![k, &min, "+inf", "BYSCORE"])
                        .await
                }
                Op::Register { key, member } => {
                    let now = now_ms();
                    let (now_s, exp) = (now.to_string(), (now + 60_000).to_string());
                    let _: () = p
                        .custom(cmd!("ZREMRANGEBYSCORE"), vec![key, "-inf", &now_s])
                        .await
                        .unwrap();
                    let _: () = p
                        .custom(cmd!("ZADD"), vec![key, &exp, member])
                        .await
                        .unwrap();
                    let _: () = p
                        .custom(cmd!("PEXPIRE"), vec![key, "60000", "NX"])
                        .await
                        .unwrap();
                    p.custom(cmd!("PEXPIRE"), vec![key, "60000", "GT"]).await
                }
                Op::Refresh { key, member } => {
                    let exp = (now_ms() + 60_000).to_string();
                    let _: () = p
                        .custom(cmd!("ZADD"), vec![key, &exp, member])
                        .await
                        .unwrap();
                    let _: () = p
                        .custom(cmd!("PEXPIRE"), vec![key, "60000", "NX"])
                        .await
                        .unwrap();
                    p.custom(cmd!("PEXPIRE"), vec![key, "60000", "GT"]).await
                }
            };
            queued.expect("queue on pipeline");
        }
        async fn one(client: &fred::clients::Client, o: Op) {
            use fred::cmd;
            let r: Result<Value, Error> = match o {
                Op::Set(k) => {
                    client
                        .set(k, VALUE, Some(Expiration::EX(60)), None, false)
                        .await
                }
                Op::Get(k) => client.get(k).await,
                Op::Lookup(k) => {
                    let min = format!("({}", now_ms());
                    client
                        .custom(cmd!("ZRANGE"), vec![k, &min, "+inf", "BYSCORE"])
                        .await
                }
                multi => {
                    let p = client.pipeline();
                    add(&p, multi).await;
                    p.all().await
                }
            };
            r.expect("request failed");
        }
        let run = |ops: u64| {
            let client = client.clone();
            let args = args.clone();
            async move {
                for phase in 0..phases(args.mix) {
                    let per_phase = ops / u64::from(phases(args.mix));
                    if args.pipeline {
                        let mut i = 0;
                        while i < per_phase {
                            let end = (i + args.depth).min(per_phase);
                            let p = client.pipeline();
                            for j in i..end {
                                add(&p, op(args.mix, phase, j)).await;
                            }
                            let r: Result<Value, Error> = p.all().await;
                            r.expect("pipeline failed");
                            i = end;
                        }
                        continue;
                    }
                    let mut tasks = Vec::new();
                    for t in 0..args.depth {
                        let client = client.clone();
                        let (depth, mix) = (args.depth, args.mix);
                        tasks.push(tokio::spawn(async move {
                            let mut i = t;
                            while i < per_phase {
                                one(&client, op(mix, phase, i)).await;
                                i += depth;
                            }
                        }));
                    }
                    for t in tasks {
                        t.await.unwrap();
                    }
                }
            }
        };
        run(args.warmup).await;
        let (t0, c0) = (Instant::now(), cpu_time(libc::RUSAGE_SELF));
        run(args.ops).await;
        Outcome {
            secs: t0.elapsed().as_secs_f64(),
            cpu: cpu_time(libc::RUSAGE_SELF) - c0,
        }
    });
    report(a, &o, a.ops);
}

// ---- redis-benchmark ----------------------------------------------------------------------

fn redis_benchmark(a: &Args) {
    let (host, port) = a.addr.rsplit_once(':').expect("host:port");
    let commands: Vec<Vec<String>> = match a.mix {
        Mix::SetGet => vec![
            vec![
                "SET".into(),
                "key:__rand_int__".into(),
                VALUE.into(),
                "EX".into(),
                "60".into(),
            ],
            vec!["GET".into(), "key:__rand_int__".into()],
        ],
        Mix::Registry => vec![vec![
            "ZRANGE".into(),
            "connect:u:{user__rand_int__}".into(),
            format!("({}", now_ms()),
            "+inf".into(),
            "BYSCORE".into(),
        ]],
    };
    let per = a.ops / commands.len() as u64;
    let mut secs = 0.0;
    let c0 = cpu_time(libc::RUSAGE_CHILDREN);
    for cmd in &commands {
        let t0 = Instant::now();
        let out = std::process::Command::new("redis-benchmark")
            .args(["-h", host, "-p", port, "-c", "1", "-q", "--csv"])
            .args(["-P", &a.depth.to_string(), "-n", &per.to_string()])
            .args(["-r", &KEYS.to_string()])
            .args(cmd)
            .output()
            .expect("run redis-benchmark");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let wall = t0.elapsed().as_secs_f64();
        // CSV: "test","rps",...: prefer its own rate (excludes process start).
        let text = String::from_utf8_lossy(&out.stdout);
        let rps = text
            .lines()
            .last()
            .and_then(|l| l.split(',').nth(1))
            .and_then(|f| f.trim_matches('"').parse::<f64>().ok());
        secs += rps.map_or(wall, |r| per as f64 / r);
    }
    let o = Outcome {
        secs,
        cpu: cpu_time(libc::RUSAGE_CHILDREN) - c0,
    };
    report(a, &o, per * commands.len() as u64);
}
