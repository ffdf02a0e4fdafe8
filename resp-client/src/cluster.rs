//! Redis Cluster mode: one [`NodeClient`] (pipelined connection) per master, a 16384-entry slot
//! table routing each command to its key's master, `MOVED`/`ASK` handling, and a background
//! task that (re)loads the slot map.
//!
//! Hot path: hash the key ([`crate::slot`]), one table lookup, encode the command once into a
//! shared arena (kept as a refcounted [`Bytes`] slice in case it must be resent) and copy it
//! into the node's write buffer. Redirects, waits for a new master and batch reassembly are
//! the slow path (boxed futures).
//!
//! Retry rules: a command is resent only when Redis certainly did not execute it: a `MOVED`,
//! `ASK`, `TRYAGAIN`, `CLUSTERDOWN`, `READONLY`, `MASTERDOWN` or `LOADING` reply, or
//! [`Error::Disconnected`] (nothing was sent). Waiting for the cluster to heal is bounded by
//! [`Config::command_timeout`] counted from the first retry, so a command completes within
//! about twice the command timeout. [`Error::ConnectionLost`] and [`Error::Timeout`] (the
//! command may have executed) are returned to the caller, and the slot map is reloaded.

use std::cell::RefCell;
use std::future::poll_fn;
use std::rc::{Rc, Weak};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::{Bytes, BytesMut};
use futures_lite::future::or;

use crate::client::{BatchFuture, NodeClient, ReplyCell, ReplyFuture, Stats};
use crate::codec::{encode_command, encoded_len};
use crate::redirect::{complete_addr, host_of, parse_redirect, Redirect};
use crate::route::{command_key, EncodedCommands};
use crate::slot::{key_slot, SLOTS};
use crate::topology::{Topology, NO_NODE};
use crate::{Batch, Config, Error, Reply};
use runtime::backoff::Backoff;

/// Reloads of the slot map are at least this far apart, however many redirects or errors ask
/// for one (a failing node makes every request ask).
pub const MIN_REFRESH_GAP: Duration = Duration::from_millis(100);
/// First wait before resending a command whose slot has no reachable master; doubles per
/// wait up to [`MAX_RETRY_WAIT`], all within the command timeout.
const FIRST_RETRY_WAIT: Duration = Duration::from_millis(10);
const MAX_RETRY_WAIT: Duration = Duration::from_millis(160);
/// Size of each chunk of the encoding arena.
const ARENA_CHUNK: usize = 64 * 1024;
/// `ASKING`, encoded.
const ASKING: &[u8] = b"*1\r\n$6\r\nASKING\r\n";

/// The cluster handle inside a [`crate::Client`].
#[derive(Clone)]
pub(crate) struct ClusterClient {
    handle: Rc<Handle>,
}

struct Handle {
    shared: Rc<Shared>,
}

impl Drop for Handle {
    fn drop(&mut self) {
        self.shared.shut_down();
    }
}

pub(crate) struct Shared {
    config: Config,
    state: RefCell<State>,
    /// Commands are encoded here and split off as `Bytes` (kept for resending).
    arena: RefCell<BytesMut>,
}

struct State {
    /// Connections by index; `None` marks a retired node's free place (indices stay stable).
    nodes: Vec<Option<Node>>,
    /// Index into `nodes` of each slot's master, or [`NO_NODE`].
    slots: Box<[u16]>,
    /// A slot map was loaded (until then every slot points at the first seed).
    known: bool,
    shutdown: bool,
    refresh_wanted: bool,
    /// The refresh task, while it waits for a reason to refresh.
    refresher: Option<Waker>,
    refreshes: u64,
    redirects: u64,
}

struct Node {
    addr: String,
    client: NodeClient,
}

impl State {
    /// The node serving `slot` (any master for keyless commands).
    fn route(&self, slot: Option<u16>) -> Option<usize> {
        let n = match slot {
            Some(s) => self.slots[usize::from(s)],
            None => match self.slots[0] {
                NO_NODE => return self.nodes.iter().position(Option::is_some),
                n => n,
            },
        };
        (n != NO_NODE).then_some(usize::from(n))
    }

    fn node(&self, idx: usize) -> Option<&Node> {
        self.nodes.get(idx).and_then(Option::as_ref)
    }

    /// The index of the node at `addr`, connecting to it if it is new.
    fn node_index(&mut self, addr: &str, config: &Config) -> usize {
        if let Some(i) = self
            .nodes
            .iter()
            .position(|n| n.as_ref().is_some_and(|n| n.addr == addr))
        {
            return i;
        }
        let node = Some(Node {
            addr: addr.to_string(),
            client: NodeClient::new(node_config(config, addr)),
        });
        match self.nodes.iter().position(Option::is_none) {
            Some(i) => {
                self.nodes[i] = node;
                i
            }
            None => {
                self.nodes.push(node);
                self.nodes.len() - 1
            }
        }
    }

    /// Nodes some slot points at.
    fn masters(&self) -> Vec<usize> {
        let mut used = vec![false; self.nodes.len()];
        for &n in self.slots.iter() {
            if n != NO_NODE {
                used[usize::from(n)] = true;
            }
        }
        (0..used.len()).filter(|&i| used[i]).collect()
    }
}

/// The configuration of one node's connection: the cluster's, at `addr`, not clustered.
fn node_config(config: &Config, addr: &str) -> Config {
    let mut c = config.clone();
    c.addr = addr.to_string();
    c.cluster = false;
    c.seeds = Vec::new();
    c
}

impl ClusterClient {
    pub fn new(config: Config) -> ClusterClient {
        let first = Node {
            addr: config.addr.clone(),
            client: NodeClient::new(node_config(&config, &config.addr)),
        };
        let shared = Rc::new(Shared {
            state: RefCell::new(State {
                nodes: vec![Some(first)],
                slots: vec![0; SLOTS].into_boxed_slice(),
                known: false,
                shutdown: false,
                refresh_wanted: true,
                refresher: None,
                refreshes: 0,
                redirects: 0,
            }),
            config,
            arena: RefCell::new(BytesMut::new()),
        });
        runtime::rt::spawn(refresh_task(shared.clone())).detach();
        ClusterClient {
            handle: Rc::new(Handle { shared }),
        }
    }

    pub fn submit(&self, args: &[&[u8]]) -> ReplyFuture {
        if args.is_empty() {
            return ReplyFuture::failed(Error::InvalidCommand(
                "a command needs at least one argument",
            ));
        }
        let shared = &self.handle.shared;
        let slot = command_key(args).map(key_slot);
        let cmd = shared.encode(args);
        shared.send(cmd, slot)
    }

    pub fn submit_batch(&self, batch: Batch) -> BatchFuture {
        if let Some(e) = batch.error {
            return BatchFuture::failed(e);
        }
        if batch.count == 0 {
            return BatchFuture::ready(Ok(Vec::new()));
        }
        let buf = batch.buf.freeze();
        let mut cmds = Vec::with_capacity(batch.count);
        let mut it = EncodedCommands::new(&buf);
        while let Ok(Some((start, end, key))) = it.next_command() {
            cmds.push(Cmd {
                start,
                end,
                slot: key.map(key_slot),
            });
        }
        if cmds.len() != batch.count {
            return BatchFuture::failed(Error::InvalidCommand("malformed batch"));
        }
        let shared = &self.handle.shared;
        let all: Vec<u32> = (0..cmds.len() as u32).collect();
        let first = shared.queue_batch(&buf, &cmds, &all);
        match first {
            Err(e) if !waits_for_cluster(&e) => BatchFuture::failed(e),
            first => BatchFuture::cluster(finish_batch(Rc::downgrade(shared), buf, cmds, first)),
        }
    }

    pub async fn wait_connected(&self, timeout: Duration) -> Result<(), Error> {
        let deadline = Instant::now() + timeout;
        loop {
            if self.is_connected() {
                return Ok(());
            }
            let now = Instant::now();
            if now >= deadline {
                return Err(Error::Disconnected);
            }
            runtime::rt::sleep((deadline - now).min(Duration::from_millis(5))).await;
        }
    }

    /// See [`crate::Client::ready`]: room on every master's connection.
    pub async fn ready(&self, n: usize) -> Result<(), Error> {
        let masters: Vec<NodeClient> = {
            let st = self.handle.shared.state.borrow();
            if st.shutdown {
                return Err(Error::Closed);
            }
            if !st.known {
                // Before the first slot map, commands queue on the seed's connection.
                st.nodes
                    .iter()
                    .flatten()
                    .map(|n| n.client.clone())
                    .collect()
            } else {
                st.masters()
                    .into_iter()
                    .filter_map(|i| st.node(i).map(|n| n.client.clone()))
                    .collect()
            }
        };
        for node in masters {
            node.ready(n).await?;
        }
        Ok(())
    }

    pub fn is_connected(&self) -> bool {
        let st = self.handle.shared.state.borrow();
        st.known
            && !st.slots.contains(&NO_NODE)
            && st
                .masters()
                .into_iter()
                .all(|i| st.node(i).is_some_and(|n| n.client.is_connected()))
    }

    pub fn stats(&self) -> Stats {
        let connected = self.is_connected();
        let st = self.handle.shared.state.borrow();
        let mut total = Stats {
            connected,
            redirects: st.redirects,
            topology_refreshes: st.refreshes,
            ..Stats::default()
        };
        for node in st.nodes.iter().flatten() {
            let s = node.client.stats();
            total.in_flight += s.in_flight;
            total.reconnects += s.reconnects;
            total.connect_errors += s.connect_errors;
            total.writes += s.writes;
            total.commands += s.commands;
            total.latency_us = total.latency_us.max(s.latency_us);
            total.timeouts += s.timeouts;
            total.overloaded += s.overloaded;
            total.nodes += 1;
        }
        total
    }

    pub fn config(&self) -> &Config {
        &self.handle.shared.config
    }
}

/// One command of a cluster batch: its bytes in the batch buffer and its slot.
#[derive(Clone, Copy)]
struct Cmd {
    start: usize,
    end: usize,
    slot: Option<u16>,
}

/// The queued parts of a batch: per node, which commands (indices into the batch) and the
/// future of their replies.
struct Part {
    node: usize,
    indices: Vec<u32>,
    replies: BatchFuture,
}

/// Errors after which a command waits for the cluster to heal and is resent.
fn waits_for_cluster(e: &Error) -> bool {
    matches!(e, Error::Disconnected | Error::ClusterUnavailable(_))
}

impl Shared {
    fn shut_down(&self) {
        let nodes = {
            let mut st = self.state.borrow_mut();
            st.shutdown = true;
            if let Some(w) = st.refresher.take() {
                w.wake();
            }
            std::mem::take(&mut st.nodes)
        };
        drop(nodes); // outside the borrow: each node fails its pending requests with Closed
    }

    fn encode(&self, args: &[&[u8]]) -> Bytes {
        let mut arena = self.arena.borrow_mut();
        let len = encoded_len(args);
        if arena.capacity() < len {
            arena.reserve(len.max(ARENA_CHUNK));
        }
        encode_command(&mut arena, args);
        arena.split().freeze()
    }

    fn request_refresh(&self) {
        let mut st = self.state.borrow_mut();
        st.refresh_wanted = true;
        if let Some(w) = st.refresher.take() {
            w.wake();
        }
    }

    /// Queues `cmd` on its slot's master: the fast path of [`ClusterClient::submit`].
    fn send(self: &Rc<Self>, cmd: Bytes, slot: Option<u16>) -> ReplyFuture {
        let st = self.state.borrow();
        if st.shutdown {
            return ReplyFuture::failed(Error::Closed);
        }
        let err = match st.route(slot).and_then(|i| st.node(i).map(|n| (i, n))) {
            None => unserved(slot),
            Some((idx, node)) => match node.client.queue_encoded_one(&cmd) {
                Ok(cell) => {
                    return ReplyFuture::routed(RoutedReply {
                        cell,
                        cmd,
                        cluster: Rc::downgrade(self),
                        slot,
                        node: idx as u16,
                    })
                }
                Err(e) => e,
            },
        };
        drop(st);
        if !waits_for_cluster(&err) {
            return ReplyFuture::failed(err);
        }
        self.request_refresh();
        ReplyFuture::retrying(retry(Rc::downgrade(self), cmd, slot, Err(err), None))
    }

    /// Queues `cmd` on node `idx` (after `ASKING` if `asking`).
    fn send_to(&self, idx: usize, cmd: &[u8], asking: bool) -> Sent {
        let st = self.state.borrow();
        if st.shutdown {
            return Sent::Failed(Error::Closed);
        }
        let Some(node) = st.node(idx) else {
            return Sent::Failed(Error::Disconnected);
        };
        if asking {
            Sent::Asking(node.client.queue_encoded([ASKING, cmd], 2))
        } else {
            match node.client.queue_encoded_one(cmd) {
                Ok(cell) => Sent::One(ReplyFuture::waiting(cell)),
                Err(e) => Sent::Failed(e),
            }
        }
    }

    /// Queues the commands `which` of a batch, grouped per node, all or none.
    fn queue_batch(&self, buf: &Bytes, cmds: &[Cmd], which: &[u32]) -> Result<Vec<Part>, Error> {
        let st = self.state.borrow();
        if st.shutdown {
            return Err(Error::Closed);
        }
        let mut groups: Vec<(usize, Vec<u32>)> = Vec::new();
        for &i in which {
            let slot = cmds[i as usize].slot;
            let idx = st
                .route(slot)
                .filter(|&n| st.node(n).is_some())
                .ok_or_else(|| unserved(slot))?;
            match groups.iter_mut().find(|(n, _)| *n == idx) {
                Some((_, list)) => list.push(i),
                None => groups.push((idx, vec![i])),
            }
        }
        for (idx, list) in &groups {
            if let Some(node) = st.node(*idx) {
                node.client.admit(list.len())?;
            }
        }
        let mut parts = Vec::with_capacity(groups.len());
        for (idx, list) in groups {
            let Some(node) = st.node(idx) else { continue };
            let slices = list.iter().map(|&i| {
                let c = cmds[i as usize];
                &buf[c.start..c.end]
            });
            let replies = node.client.queue_encoded(slices, list.len());
            parts.push(Part {
                node: idx,
                indices: list,
                replies,
            });
        }
        Ok(parts)
    }

    /// A `MOVED` for `slot` to `addr`: point the slot there now and reload the whole map soon.
    fn on_moved(&self, slot: u16, addr: &str) -> usize {
        let idx = {
            let mut st = self.state.borrow_mut();
            st.redirects += 1;
            let idx = st.node_index(addr, &self.config);
            if let Some(s) = st.slots.get_mut(usize::from(slot)) {
                *s = idx as u16;
            }
            idx
        };
        self.request_refresh();
        idx
    }

    /// The index of the node at `addr` (connecting to it if new), counting a redirect.
    fn redirect_to(&self, addr: &str) -> usize {
        let mut st = self.state.borrow_mut();
        st.redirects += 1;
        st.node_index(addr, &self.config)
    }

    /// A redirect address with an empty host completed with the host of node `from`.
    fn full_addr(&self, addr: &str, from: Option<usize>) -> String {
        let st = self.state.borrow();
        let host = from
            .and_then(|i| st.node(i))
            .map_or(host_of(&self.config.addr), |n| host_of(&n.addr))
            .to_string();
        complete_addr(addr, &host)
    }

    /// Loads the slot map from a known master, another known node or a seed.
    async fn fetch_topology(&self) -> Result<Topology, String> {
        let candidates: Vec<(String, Option<NodeClient>)> = {
            let st = self.state.borrow();
            let mut list: Vec<(String, Option<NodeClient>)> = Vec::new();
            let masters = st.masters();
            let mut push = |node: &Node| {
                if !list.iter().any(|(a, _)| *a == node.addr) {
                    list.push((node.addr.clone(), Some(node.client.clone())));
                }
            };
            for &i in &masters {
                if let Some(n) = st.node(i).filter(|n| n.client.is_connected()) {
                    push(n);
                }
            }
            for n in st.nodes.iter().flatten() {
                push(n);
            }
            for seed in std::iter::once(&self.config.addr).chain(&self.config.seeds) {
                if !list.iter().any(|(a, _)| a == seed) {
                    list.push((seed.clone(), None));
                }
            }
            list
        };
        let mut errors = Vec::new();
        for (addr, client) in candidates {
            if self.state.borrow().shutdown {
                return Err("shut down".into());
            }
            // A seed that is no known node gets a short-lived connection of its own.
            let client =
                client.unwrap_or_else(|| NodeClient::new(node_config(&self.config, &addr)));
            match self.query_topology(&client, &addr).await {
                Ok(t) if t.covered() > 0 => return Ok(t),
                Ok(_) => errors.push(format!("{addr}: no slot served")),
                Err(e) => errors.push(format!("{addr}: {e}")),
            }
        }
        Err(errors.join("; "))
    }

    async fn query_topology(&self, client: &NodeClient, addr: &str) -> Result<Topology, String> {
        let host = host_of(addr);
        let reply = client
            .submit(&[b"CLUSTER", b"SHARDS"])
            .await
            .map_err(|e| e.to_string())?;
        if !matches!(reply, Reply::Error(_)) {
            return Topology::from_shards_reply(&reply, host, self.config.tls.is_some())
                .map_err(|e| e.to_string());
        }
        // Redis before 7.0: no CLUSTER SHARDS.
        match client.submit(&[b"CLUSTER", b"SLOTS"]).await {
            Ok(Reply::Error(e)) => Err(String::from_utf8_lossy(&e).into_owned()),
            Ok(reply) => Topology::from_slots_reply(&reply, host).map_err(|e| e.to_string()),
            Err(e) => Err(e.to_string()),
        }
    }

    /// Installs a freshly loaded slot map; retires idle nodes no slot points at any more.
    fn apply(&self, topology: &Topology) {
        let retired = {
            let mut st = self.state.borrow_mut();
            let map: Vec<u16> = topology
                .masters()
                .iter()
                .map(|addr| st.node_index(addr, &self.config) as u16)
                .collect();
            for (slot, &t) in st.slots.iter_mut().zip(topology.slot_table()) {
                *slot = if t == NO_NODE {
                    NO_NODE
                } else {
                    map[usize::from(t)]
                };
            }
            st.known = true;
            st.refreshes += 1;
            let masters = st.masters();
            let mut retired = Vec::new();
            for (i, place) in st.nodes.iter_mut().enumerate() {
                let idle = place
                    .as_ref()
                    .is_some_and(|n| n.client.stats().in_flight == 0);
                if idle && !masters.contains(&i) {
                    retired.extend(place.take());
                }
            }
            retired
        };
        for node in &retired {
            tracing::debug!(addr = %node.addr, "Redis Cluster node no longer a master; disconnecting");
        }
    }

    /// Resolves when a refresh is asked for or the client shuts down.
    fn poll_refresh_wanted(&self, cx: &Context<'_>) -> Poll<()> {
        let mut st = self.state.borrow_mut();
        if st.refresh_wanted || st.shutdown {
            return Poll::Ready(());
        }
        match &st.refresher {
            Some(w) if w.will_wake(cx.waker()) => {}
            _ => st.refresher = Some(cx.waker().clone()),
        }
        Poll::Pending
    }
}

fn unserved(slot: Option<u16>) -> Error {
    match slot {
        Some(s) => Error::ClusterUnavailable(format!("no reachable master serves slot {s}")),
        None => Error::ClusterUnavailable("no reachable node".into()),
    }
}

/// A command queued on one node, not yet resent: the cluster's fast path inside
/// [`ReplyFuture`].
pub(crate) struct RoutedReply {
    cell: ReplyCell,
    cmd: Bytes,
    cluster: Weak<Shared>,
    slot: Option<u16>,
    node: u16,
}

/// The reply future type of the slow path.
pub(crate) type RetryFuture =
    std::pin::Pin<Box<dyn std::future::Future<Output = Result<Reply, Error>>>>;

impl RoutedReply {
    /// `Ok(poll)` with the final answer or `Pending`; `Err(future)` when the command must be
    /// resent: the caller polls that future instead from now on.
    pub(crate) fn poll(
        &mut self,
        cx: &Context<'_>,
    ) -> Result<Poll<Result<Reply, Error>>, RetryFuture> {
        let result = match self.cell.poll_take(cx) {
            Poll::Pending => return Ok(Poll::Pending),
            Poll::Ready(r) => r,
        };
        let resend = match &result {
            Ok(Reply::Error(e)) => parse_redirect(e).is_some(),
            Err(e) if waits_for_cluster(e) => true,
            Err(e) => {
                if e.is_connection_fatal() {
                    if let Some(c) = self.cluster.upgrade() {
                        c.request_refresh();
                    }
                }
                false
            }
            Ok(_) => false,
        };
        if !resend {
            return Ok(Poll::Ready(result));
        }
        Err(Box::pin(retry(
            self.cluster.clone(),
            self.cmd.clone(),
            self.slot,
            result,
            Some(usize::from(self.node)),
        )))
    }
}

/// A command resent to one node.
enum Sent {
    One(ReplyFuture),
    Asking(BatchFuture),
    Failed(Error),
}

impl Sent {
    async fn reply(self) -> Result<Reply, Error> {
        match self {
            Sent::One(f) => f.await,
            Sent::Asking(f) => {
                let mut replies = f.await?;
                replies
                    .pop()
                    .ok_or_else(|| Error::Protocol("no reply after ASKING".into()))
            }
            Sent::Failed(e) => Err(e),
        }
    }
}

/// What to do with a command's latest outcome.
enum Next {
    Done,
    Send { node: usize, asking: bool },
    Wait,
}

/// The slow path of one command: follows redirects and waits for the cluster to heal, within
/// the limits in the module doc. `last` is the outcome that made it necessary; `from` the node
/// that gave it.
async fn retry(
    cluster: Weak<Shared>,
    cmd: Bytes,
    slot: Option<u16>,
    mut last: Result<Reply, Error>,
    mut from: Option<usize>,
) -> Result<Reply, Error> {
    let Some(shared) = cluster.upgrade() else {
        return Err(Error::Closed);
    };
    let deadline = Instant::now() + shared.config.command_timeout;
    let max_redirects = shared.config.max_redirects;
    drop(shared);
    let (mut redirects, mut waits) = (0u32, 0u32);
    loop {
        let next = {
            let Some(shared) = cluster.upgrade() else {
                return Err(Error::Closed);
            };
            match &last {
                Ok(Reply::Error(e)) => match parse_redirect(e) {
                    None => Next::Done,
                    Some(Redirect::Moved { slot, addr }) => {
                        redirects += 1;
                        let addr = shared.full_addr(&addr, from);
                        Next::Send {
                            node: shared.on_moved(slot, &addr),
                            asking: false,
                        }
                    }
                    Some(Redirect::Ask { addr, .. }) => {
                        redirects += 1;
                        let addr = shared.full_addr(&addr, from);
                        Next::Send {
                            node: shared.redirect_to(&addr),
                            asking: true,
                        }
                    }
                    Some(Redirect::Retry) => Next::Wait,
                },
                Err(e) if waits_for_cluster(e) => Next::Wait,
                Err(e) => {
                    if e.is_connection_fatal() {
                        shared.request_refresh();
                    }
                    Next::Done
                }
                Ok(_) => Next::Done,
            }
        };
        if redirects > max_redirects {
            return Err(Error::ClusterUnavailable(format!(
                "more than {max_redirects} redirects (last: {})",
                describe(&last)
            )));
        }
        let (node, asking) = match next {
            Next::Done => return last,
            Next::Send { node, asking } => (node, asking),
            Next::Wait => {
                if let Some(shared) = cluster.upgrade() {
                    shared.request_refresh();
                }
                let now = Instant::now();
                if now >= deadline {
                    return Err(match last {
                        Err(e) => e,
                        Ok(r) => Error::ClusterUnavailable(describe(&Ok(r))),
                    });
                }
                let wait = (FIRST_RETRY_WAIT * 2u32.pow(waits.min(4))).min(MAX_RETRY_WAIT);
                waits += 1;
                runtime::rt::sleep(wait.min(deadline - now)).await;
                let route = match cluster.upgrade() {
                    Some(shared) => shared.state.borrow().route(slot),
                    None => return Err(Error::Closed),
                };
                match route {
                    Some(node) => (node, false),
                    None => {
                        last = Err(unserved(slot));
                        continue;
                    }
                }
            }
        };
        let sent = match cluster.upgrade() {
            Some(shared) => shared.send_to(node, &cmd, asking),
            None => return Err(Error::Closed),
        };
        last = sent.reply().await;
        from = Some(node);
    }
}

fn describe(outcome: &Result<Reply, Error>) -> String {
    match outcome {
        Ok(Reply::Error(e)) => String::from_utf8_lossy(e).into_owned(),
        Ok(r) => format!("{r:?}"),
        Err(e) => e.to_string(),
    }
}

/// Waits for a cluster batch's parts, puts the replies back in command order, and resends the
/// commands that were redirected (or that could not be queued because their node was down).
async fn finish_batch(
    cluster: Weak<Shared>,
    buf: Bytes,
    cmds: Vec<Cmd>,
    first: Result<Vec<Part>, Error>,
) -> Result<Vec<Reply>, Error> {
    let n = cmds.len();
    let mut results: Vec<Option<Result<Reply, Error>>> = (0..n).map(|_| None).collect();
    let mut answered_by = vec![None; n];
    let mut parts = match first {
        Ok(parts) => parts,
        Err(e) => {
            // Nothing was queued: every command waits for the cluster.
            for r in &mut results {
                *r = Some(Err(e.clone()));
            }
            Vec::new()
        }
    };
    // Fast path: one part holding the whole batch.
    if parts.len() == 1 && parts[0].indices.len() == n {
        let part = parts.remove(0);
        let replies = part.replies.await?;
        if !replies
            .iter()
            .any(|r| matches!(r, Reply::Error(e) if parse_redirect(e).is_some()))
        {
            return Ok(replies);
        }
        for (i, r) in replies.into_iter().enumerate() {
            results[i] = Some(Ok(r));
            answered_by[i] = Some(part.node);
        }
    }
    for part in parts {
        let replies = part.replies.await?;
        for (&i, r) in part.indices.iter().zip(replies) {
            results[i as usize] = Some(Ok(r));
            answered_by[i as usize] = Some(part.node);
        }
    }
    // Resend what was redirected, one command at a time (rare: during resharding/failover).
    for i in 0..n {
        let resend = match &results[i] {
            Some(Ok(Reply::Error(e))) => parse_redirect(e).is_some(),
            Some(Err(e)) => waits_for_cluster(e),
            _ => false,
        };
        if resend {
            let c = cmds[i];
            let last = results[i].take().unwrap_or(Err(Error::Disconnected));
            let r = retry(
                cluster.clone(),
                buf.slice(c.start..c.end),
                c.slot,
                last,
                answered_by[i],
            )
            .await;
            results[i] = Some(r);
        }
    }
    let mut out = Vec::with_capacity(n);
    for r in results {
        out.push(r.unwrap_or(Err(Error::ConnectionLost))?);
    }
    Ok(out)
}

/// The background task of a cluster client: loads the slot map at start (with backoff until
/// it succeeds), then whenever asked (redirects, errors) at most every [`MIN_REFRESH_GAP`],
/// and every [`Config::topology_refresh`].
async fn refresh_task(shared: Rc<Shared>) {
    let cfg = &shared.config;
    let seed = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
        ^ (Rc::as_ptr(&shared) as u64);
    let mut backoff = Backoff::new(cfg.reconnect_min, cfg.reconnect_max, seed);
    let mut last: Option<Instant> = None;
    let mut failing = false;
    loop {
        let wanted = async {
            poll_fn(|cx| shared.poll_refresh_wanted(cx)).await;
        };
        or(wanted, runtime::rt::sleep(cfg.topology_refresh)).await;
        if let Some(t) = last {
            let next = t + MIN_REFRESH_GAP;
            let now = Instant::now();
            if next > now {
                runtime::rt::sleep(next - now).await;
            }
        }
        if shared.state.borrow().shutdown {
            break;
        }
        shared.state.borrow_mut().refresh_wanted = false;
        last = Some(Instant::now());
        let fetched = or(shared.fetch_topology(), async {
            poll_fn(|cx| {
                let mut st = shared.state.borrow_mut();
                if st.shutdown {
                    Poll::Ready(())
                } else {
                    // Park on the same waker slot: a shutdown wakes it.
                    st.refresher = Some(cx.waker().clone());
                    Poll::Pending
                }
            })
            .await;
            Err("shut down".to_string())
        })
        .await;
        match fetched {
            Ok(topology) => {
                tracing::debug!(?topology, "Redis Cluster slot map loaded");
                shared.apply(&topology);
                backoff.reset();
                failing = false;
            }
            Err(reason) => {
                if shared.state.borrow().shutdown {
                    break;
                }
                if failing {
                    tracing::debug!(%reason, "Redis Cluster slot map reload failed");
                } else {
                    tracing::warn!(%reason, "Redis Cluster slot map reload failed");
                }
                failing = true;
                let delay = backoff.next_delay();
                or(runtime::rt::sleep(delay), async {
                    poll_fn(|cx| {
                        let mut st = shared.state.borrow_mut();
                        if st.shutdown {
                            Poll::Ready(())
                        } else {
                            st.refresher = Some(cx.waker().clone());
                            Poll::Pending
                        }
                    })
                    .await
                })
                .await;
                shared.state.borrow_mut().refresh_wanted = true;
            }
        }
    }
    tracing::debug!("Redis Cluster client shut down");
}
