//! A local Connect stack that `perf run` starts and stops itself: a `redis-server` on a free
//! port, one `router` and two `gateway`s (one shard each, rate limits raised so the load is not
//! refused), all on loopback; `perf faults` assembles its own from the same parts and signals
//! or kills them by name. Every child is killed when the `Stack` is dropped. Servers' stderr
//! goes to perf's with `PERF_STACK_LOGS=1`.

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};

/// The JWT secret the stack's gateways check and perf signs with.
pub const SECRET: &str = "perf-run-secret-0123456789";
/// How long one process may take to start listening.
const START_TIMEOUT: Duration = Duration::from_secs(15);

/// A running stack.
pub struct Stack {
    children: Vec<(String, Child)>,
    /// Gateway client URLs (`ws://127.0.0.1:PORT/ws`).
    pub urls: Vec<String>,
}

impl Stack {
    /// Starts Redis, a router and `gateways` gateways. `bin_dir` holds `router` and `gateway`.
    pub fn start(bin_dir: &Path, gateways: usize) -> anyhow::Result<Stack> {
        let mut stack = Stack::empty();
        let redis_port = stack.start_redis()?;
        let registry = format!("redis://127.0.0.1:{redis_port}");
        let router_port = free_port()?;
        stack.router(bin_dir, "router", router_port, &registry)?;
        let routers = [format!("127.0.0.1:{router_port}")];
        for i in 0..gateways {
            stack.gateway(bin_dir, i, &routers, &registry)?;
        }
        // Let the gateways' router links come up before the first client registers.
        std::thread::sleep(Duration::from_millis(500));
        Ok(stack)
    }

    /// A stack with nothing started yet (`perf faults` assembles its own).
    pub fn empty() -> Stack {
        Stack {
            children: Vec::new(),
            urls: Vec::new(),
        }
    }

    /// Starts a router (one shard, no admin port) on `port`.
    pub fn router(
        &mut self,
        bin_dir: &Path,
        name: &str,
        port: u16,
        registry: &str,
    ) -> anyhow::Result<()> {
        self.spawn(
            name,
            Command::new(bin(bin_dir, "router")?).args([
                "--listen",
                &format!("127.0.0.1:{port}"),
                "--registry",
                registry,
                "--shards",
                "1",
                "--admin-listen",
                "off",
            ]),
            port,
        )
    }

    /// Starts gateway `i` (`gateway{i}`, one shard, rate limits raised so the load is not
    /// refused) linked to `routers`; its client URL joins [`Stack::urls`].
    pub fn gateway(
        &mut self,
        bin_dir: &Path,
        i: usize,
        routers: &[String],
        registry: &str,
    ) -> anyhow::Result<()> {
        let port = free_port()?;
        let internal = free_port()?;
        let mut cmd = Command::new(bin(bin_dir, "gateway")?);
        cmd.args([
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--internal-listen",
            &format!("127.0.0.1:{internal}"),
            "--registry",
            registry,
            "--jwt-secret",
            SECRET,
            "--shards",
            "1",
            "--instance-id",
            &format!("perf-gw{i}"),
            "--msg-rate",
            "1000000",
            "--msg-burst",
            "1000000",
            "--admin-listen",
            "off",
        ]);
        for r in routers {
            cmd.args(["--router", r]);
        }
        self.spawn(&format!("gateway{i}"), &mut cmd, port)?;
        self.urls.push(format!("ws://127.0.0.1:{port}/ws"));
        Ok(())
    }

    /// Sends `signal` to the server named `name`.
    pub fn signal(&self, name: &str, signal: libc::c_int) -> anyhow::Result<()> {
        let (_, child) = self
            .children
            .iter()
            .find(|(n, _)| n == name)
            .with_context(|| format!("no server {name}"))?;
        // SAFETY: kill(2) on the pid of a child we spawned and have not reaped.
        if unsafe { libc::kill(child.id() as libc::pid_t, signal) } != 0 {
            bail!(
                "signal {signal} to {name}: {}",
                std::io::Error::last_os_error()
            );
        }
        Ok(())
    }

    /// Kills the server named `name` (SIGKILL) and reaps it.
    pub fn kill(&mut self, name: &str) -> anyhow::Result<()> {
        let i = self
            .children
            .iter()
            .position(|(n, _)| n == name)
            .with_context(|| format!("no server {name}"))?;
        let (_, mut child) = self.children.remove(i);
        child.kill().with_context(|| format!("killing {name}"))?;
        let _ = child.wait();
        Ok(())
    }

    /// Starts redis-server and `servers` Socket.IO peer processes (`node server.js` in `dir`,
    /// installing its npm packages into `dir/node_modules` first if they are missing).
    pub fn start_socketio(dir: &Path, servers: usize) -> anyhow::Result<Stack> {
        npm_install(dir)?;
        let mut stack = Stack {
            children: Vec::new(),
            urls: Vec::new(),
        };
        let redis_port = stack.start_redis()?;
        let registry = format!("redis://127.0.0.1:{redis_port}");
        for i in 0..servers {
            let port = free_port()?;
            stack.spawn(
                &format!("node{i}"),
                Command::new("node")
                    .current_dir(dir)
                    .arg("server.js")
                    .args(["--port", &port.to_string(), "--redis", &registry])
                    .args(["--secret", SECRET]),
                port,
            )?;
            stack
                .urls
                .push(format!("ws://127.0.0.1:{port}{}", crate::eio::PATH));
        }
        Ok(stack)
    }

    fn start_redis(&mut self) -> anyhow::Result<u16> {
        let redis_port = free_port()?;
        self.spawn(
            "redis",
            Command::new("redis-server").args([
                "--port",
                &redis_port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ]),
            redis_port,
        )?;
        Ok(redis_port)
    }

    pub fn spawn(&mut self, name: &str, cmd: &mut Command, port: u16) -> anyhow::Result<()> {
        // Every server gets the hard open-file limit as its soft one (20,000 here), as a
        // service manager would give it, whatever the server does itself.
        // SAFETY: the closure runs between fork and exec and only calls async-signal-safe
        // getrlimit/setrlimit and prctl.
        unsafe {
            cmd.pre_exec(|| {
                let mut lim = libc::rlimit {
                    rlim_cur: 0,
                    rlim_max: 0,
                };
                if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) == 0 {
                    lim.rlim_cur = lim.rlim_max;
                    libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
                }
                // If perf dies without dropping the stack (Ctrl-C), the servers go with it.
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                Ok(())
            });
        }
        if std::env::var_os("PERF_STACK_LOGS").is_some() {
            cmd.stderr(Stdio::inherit());
        } else {
            cmd.stderr(Stdio::null());
        }
        let child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .spawn()
            .with_context(|| format!("starting {name} ({cmd:?})"))?;
        self.children.push((name.to_string(), child));
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let deadline = Instant::now() + START_TIMEOUT;
        while TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_err() {
            if let Some((_, c)) = self.children.last_mut() {
                if let Some(status) = c.try_wait()? {
                    bail!("{name} exited at start-up: {status}");
                }
            }
            if Instant::now() > deadline {
                bail!("{name} did not listen on {addr} within {START_TIMEOUT:?}");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(())
    }

    /// Name and pid of every server process, in start order.
    pub fn pids(&self) -> Vec<(String, u32)> {
        self.children
            .iter()
            .map(|(n, c)| (n.clone(), c.id()))
            .collect()
    }
}

impl Drop for Stack {
    fn drop(&mut self) {
        for (_, c) in self.children.iter_mut().rev() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// `npm install` in `dir` unless its `node_modules` already holds socket.io.
fn npm_install(dir: &Path) -> anyhow::Result<()> {
    if dir.join("node_modules/socket.io/package.json").is_file()
        && dir
            .join("node_modules/@socket.io/redis-adapter/package.json")
            .is_file()
    {
        return Ok(());
    }
    eprintln!("perf: npm install in {} (first run)", dir.display());
    let status = Command::new("npm")
        .current_dir(dir)
        .args(["install", "--no-audit", "--no-fund", "--loglevel", "error"])
        .status()
        .context("running npm install (is Node.js installed?)")?;
    if !status.success() {
        bail!("npm install in {} failed: {status}", dir.display());
    }
    Ok(())
}

/// A port free on 127.0.0.1 right now (bound and released; good enough on a test machine).
pub fn free_port() -> anyhow::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")
        .context("binding a free port")?
        .local_addr()?
        .port())
}

/// `name` in `bin_dir`, which must exist.
fn bin(bin_dir: &Path, name: &str) -> anyhow::Result<PathBuf> {
    let p = bin_dir.join(name);
    if !p.is_file() {
        bail!(
            "{} not found: build it with `cargo build --release -p {name}` or pass --bin-dir",
            p.display()
        );
    }
    Ok(p)
}
