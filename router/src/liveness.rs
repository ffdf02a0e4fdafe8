//! [`LiveView`]: this shard's view of which gateways are alive, and the judgement of the
//! sessions a lookup returned.
//!
//! The view is re-read every `--liveness-poll-ms`. A session whose gateway is not in the view
//! may belong to a gateway that started after the view was read, so the view is read again
//! (one read serves every message waiting on it) and only a view asked for *after* the
//! session was read may call it dead. Dead sessions are left out of routing and removed from
//! the registry in the background (lazy cleanup).
//!
//! For `--liveness-grace-ms` after a failed read, a gateway missing from the view counts as
//! alive: the gateways could not renew their records while the registry was unreachable
//! either, so a Redis failover or outage can expire every record although no gateway died.

use std::cell::{Cell, RefCell};
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use registry::{LiveSet, Registry, SessionEntry, Verdict};

/// One shard's liveness view.
pub struct LiveView {
    registry: Registry,
    set: RefCell<Rc<LiveSet>>,
    /// When the read behind `set` was issued (`None`: never read).
    asked_at: Cell<Option<Instant>>,
    /// When the read in flight was issued.
    inflight: Cell<Option<Instant>>,
    /// The last finished read: when it was issued, and whether it worked.
    last: Cell<Option<(Instant, bool)>>,
    /// Bumped when a read finishes; waiters wake on it.
    gen: Cell<u64>,
    waiters: RefCell<Vec<Waker>>,
    /// When a read last failed.
    failed_at: Cell<Option<Instant>>,
    grace: Duration,
}

/// Clears the in-flight mark and wakes waiters even if the reading task is dropped.
struct Finish<'a> {
    view: &'a LiveView,
    asked: Instant,
    ok: bool,
}

impl Drop for Finish<'_> {
    fn drop(&mut self) {
        self.view.inflight.set(None);
        self.view.last.set(Some((self.asked, self.ok)));
        if !self.ok {
            self.view.failed_at.set(Some(Instant::now()));
        }
        self.view.gen.set(self.view.gen.get() + 1);
        for w in self.view.waiters.borrow_mut().drain(..) {
            w.wake();
        }
    }
}

struct Changed<'a> {
    view: &'a LiveView,
    gen: u64,
}

impl Future for Changed<'_> {
    type Output = ();
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if self.view.gen.get() != self.gen {
            return Poll::Ready(());
        }
        self.view.waiters.borrow_mut().push(cx.waker().clone());
        Poll::Pending
    }
}

/// The sessions of one lookup, judged.
#[derive(Debug, Default)]
pub struct Judged {
    /// Route to these.
    pub live: Vec<SessionEntry>,
    /// Gone: their gateway is dead or restarted.
    pub dead: Vec<SessionEntry>,
}

impl LiveView {
    /// A view that has not been read yet.
    pub fn new(registry: Registry, grace: Duration) -> LiveView {
        LiveView {
            registry,
            set: RefCell::default(),
            asked_at: Cell::new(None),
            inflight: Cell::new(None),
            last: Cell::new(None),
            gen: Cell::new(0),
            waiters: RefCell::default(),
            failed_at: Cell::new(None),
            grace,
        }
    }

    /// True within the grace period after a failed read (see the module doc).
    fn in_grace(&self, now: Instant) -> bool {
        self.failed_at
            .get()
            .is_some_and(|f| now.saturating_duration_since(f) < self.grace)
    }

    /// Live gateway instances in the current view.
    pub fn gateways(&self) -> usize {
        self.set.borrow().len()
    }

    /// Re-reads the view unless a read issued at or after `after` already finished or is in
    /// flight (then waits for it). `false` if the read failed.
    pub async fn refresh_after(&self, after: Instant) -> bool {
        loop {
            if self.asked_at.get().is_some_and(|a| a >= after) {
                return true;
            }
            if let Some((asked, false)) = self.last.get() {
                if asked >= after {
                    return false;
                }
            }
            if self.inflight.get().is_some() {
                Changed {
                    view: self,
                    gen: self.gen.get(),
                }
                .await;
                continue;
            }
            let asked = Instant::now();
            self.inflight.set(Some(asked));
            let mut finish = Finish {
                view: self,
                asked,
                ok: false,
            };
            match self.registry.live_gateways().await {
                Ok(records) => {
                    *self.set.borrow_mut() = Rc::new(LiveSet::new(&records));
                    self.asked_at.set(Some(asked));
                    finish.ok = true;
                }
                Err(e) => tracing::debug!(error = %e, "reading gateway liveness failed"),
            }
            drop(finish);
        }
    }

    /// Splits the sessions of a lookup whose reply arrived at `read_at` into live and dead.
    /// Sessions of gateways the view does not know wait for a view read after `read_at`; if
    /// that read fails, or a read failed within the grace period, they count as live (a
    /// delivery attempt answers for them), so a liveness outage never turns into a wrong
    /// `offline`.
    pub async fn judge(&self, entries: Vec<SessionEntry>, read_at: Instant) -> Judged {
        let mut set = self.set.borrow().clone();
        // The common case, every session alive: hand the lookup's Vec back as it is.
        if entries.iter().all(|e| set.verdict(e) == Verdict::Alive) {
            return Judged {
                live: entries,
                dead: Vec::new(),
            };
        }
        let mut out = Judged::default();
        let unknown = entries.iter().any(|e| set.verdict(e) == Verdict::Unknown);
        let mut fresh = self.asked_at.get().is_some_and(|a| a >= read_at);
        if unknown && !fresh {
            fresh = self.refresh_after(read_at).await;
            set = self.set.borrow().clone();
        }
        if unknown && fresh && self.in_grace(Instant::now()) {
            fresh = false;
        }
        for e in entries {
            match set.verdict(&e) {
                Verdict::Alive => out.live.push(e),
                Verdict::Dead => out.dead.push(e),
                Verdict::Unknown if fresh => out.dead.push(e),
                Verdict::Unknown => out.live.push(e),
            }
        }
        out
    }
}
