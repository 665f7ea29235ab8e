//! The accept loop in front of the router: how many connections are open, who may hold them and
//! for how long. axum's `serve` bounds none of this, so each socket is served here by hyper's
//! HTTP/1 connection directly, under three rules:
//!
//! - At most `http.max_connections` are open (lowered to what the open-file limit leaves). Past
//!   it the connection idle the longest (no request in flight) is closed to admit the new one, so
//!   sockets held open and unused cannot keep others out — a health probe gets in. When every
//!   connection has a request in flight (or a burst has outrun the closing of idle ones) the new
//!   one is answered 503 and closed. The surplus is
//!   accepted and answered rather than left in the listen backlog: a backlog full of idle
//!   connections would keep a probe queued behind them, then drop its SYNs once it overflows
//!   (the client retrying after seconds), and the client would never learn why.
//! - One client address (an IPv6 /64) holds at most `http.max_unauthenticated_per_ip`
//!   connections that have not presented a valid token; a connection over it is answered 429 and
//!   closed. A connection leaves the count at its first request with a valid token, so a
//!   dashboard or SIEM behind one address is not held to it.
//! - While no request is in flight a connection has a deadline: a new one's first request head
//!   must have arrived `http.header_read_timeout_seconds` after it was accepted (slow-header
//!   clients), a kept-alive one's next head `http.idle_timeout_seconds` after the previous
//!   response. A response being sent, such as the findings stream, is a request in flight: it is
//!   never cut.
//!
//! Refusals never spawn a task or wait: the answer is written to the fresh socket's empty send
//! buffer and the socket closed, so a flood of connections costs a few system calls each.

use std::collections::{BTreeMap, HashMap};
use std::convert::Infallible;
use std::io::{Read as _, Write as _};
use std::net::{IpAddr, Ipv6Addr};
use std::pin::{Pin, pin};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, Weak};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::http::{Request, header};
use http_body::{Frame, SizeHint};
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Notify;
use tokio::time::Instant;
use tower::ServiceExt as _;
use tracing::Instrument as _;

use super::ApiError;
use super::HttpConfig;
use super::auth::{Auth, Role};
use crate::telemetry::metrics::Metrics;

/// File descriptors left to the rest of the service when the connection cap is fitted to the
/// open-file limit: Kafka's sockets, the journal, archive and outbox files, DataFusion's reads.
const RESERVED_FDS: u64 = 512;
/// Connections admitted past the cap while the idle ones closed for them have yet to close.
const EVICTION_SLACK: usize = 64;
/// How often, and how long each time, a new connection waits for closing idle ones to be gone
/// when `EVICTION_SLACK` of them are still closing.
const EVICTION_WAITS: usize = 4;
const EVICTION_WAIT: Duration = Duration::from_millis(25);

/// Bounds of the connections (`[http]`).
#[derive(Debug, Clone, Copy)]
pub struct ConnectionLimits {
    /// Most connections open at once.
    pub max: usize,
    /// Most connections one client address holds before presenting a valid token; 0 for no cap.
    pub max_unauthenticated_per_ip: usize,
    /// A new connection's first request head must have arrived this long after it was accepted.
    pub header_read_timeout: Duration,
    /// A kept-alive connection's next request head must have arrived this long after the
    /// previous response was sent.
    pub idle_timeout: Duration,
}

impl ConnectionLimits {
    /// From `[http]`.
    pub fn from_config(cfg: &HttpConfig) -> ConnectionLimits {
        ConnectionLimits {
            max: cfg.max_connections,
            max_unauthenticated_per_ip: cfg.max_unauthenticated_per_ip,
            header_read_timeout: Duration::from_secs(cfg.header_read_timeout_seconds),
            idle_timeout: Duration::from_secs(cfg.idle_timeout_seconds),
        }
    }
}

/// Serves `app` on the connections `listener` accepts, within `limits`. Runs until the task is
/// dropped.
pub(super) async fn accept(
    listener: TcpListener,
    app: Router,
    auth: Arc<Auth>,
    metrics: Arc<Metrics>,
    limits: ConnectionLimits,
) -> std::io::Result<()> {
    let limits = ConnectionLimits {
        max: fit_to_open_files(limits.max),
        ..limits
    };
    let gate = Arc::new(Gate::new(limits, metrics));
    let per_ip_answer = ApiError::too_many_connections(limits.max_unauthenticated_per_ip).raw_response();
    let capacity_answer =
        ApiError::unavailable("the server is at its connection limit with no connection idle; retry shortly")
            .raw_response();
    let mut http = hyper::server::conn::http1::Builder::new();
    // hyper's own head timer also runs while a kept-alive connection waits; at the longer of
    // the two it never fires before the deadlines below and stands behind them.
    http.timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout.max(limits.idle_timeout));
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(error) if is_connection_error(&error) => continue,
            Err(error) => {
                // Out of file descriptors or memory: waiting lets connections close.
                tracing::error!(%error, "Failed to accept an HTTP connection; retrying in a second.");
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        };
        let client = client_of(peer.ip());
        let mut admitted = gate.admit(client);
        // Idle connections told to close for new ones close when their tasks next run: a burst
        // of arrivals waits for them briefly rather than be refused.
        for _ in 0..EVICTION_WAITS {
            if !matches!(admitted, Err(Refusal::Closing)) {
                break;
            }
            let _ = tokio::time::timeout(EVICTION_WAIT, gate.closed.notified()).await;
            admitted = gate.admit(client);
        }
        let conn = match admitted {
            Ok(conn) => conn,
            Err(Refusal::PerIp) => {
                gate.metrics.http_refused("per_ip");
                tracing::debug!(%peer, "Refused an HTTP connection: its address holds its share.");
                refuse(stream, &per_ip_answer);
                continue;
            }
            Err(Refusal::Capacity | Refusal::Closing) => {
                gate.metrics.http_refused("capacity");
                refuse(stream, &capacity_answer);
                continue;
            }
        };
        let span = tracing::debug_span!("http_connection", %peer);
        tokio::spawn(
            serve_connection(stream, conn, app.clone(), Arc::clone(&auth), http.clone(), limits).instrument(span),
        );
    }
}

/// Serves one connection until it ends or its deadline passes (dropping it closes the socket).
async fn serve_connection(
    stream: TcpStream,
    conn: Arc<Conn>,
    app: Router,
    auth: Arc<Auth>,
    http: hyper::server::conn::http1::Builder,
    limits: ConnectionLimits,
) {
    let service = {
        let conn = Arc::clone(&conn);
        hyper::service::service_fn(move |request: Request<Incoming>| {
            let busy = conn.busy();
            if conn.counts_against_its_address()
                && request.headers().contains_key(header::AUTHORIZATION)
                && auth.check(request.headers(), Role::Read).is_ok()
            {
                conn.authenticated();
            }
            let app = app.clone();
            async move {
                let response = app.oneshot(request.map(Body::new)).await?;
                Ok::<_, Infallible>(response.map(|body| Sending { body, _busy: busy }))
            }
        })
    };
    let mut connection = pin!(http.serve_connection(TokioIo::new(stream), service));
    loop {
        let deadline = conn.deadline(&limits);
        tokio::select! {
            result = connection.as_mut() => {
                if let Err(error) = result {
                    tracing::debug!(%error, "HTTP connection ended with an error.");
                }
                return;
            }
            () = conn.changed.notified() => {}
            () = sleep_until(deadline) => {
                if conn.deadline(&limits).is_some_and(|d| d <= Instant::now()) {
                    return;
                }
            }
        }
    }
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}

/// Answers a socket that is not served and closes it, without waiting: the answer fits the
/// fresh socket's empty send buffer.
fn refuse(stream: TcpStream, answer: &[u8]) {
    // tokio's `try_read`/`try_write` would not even try before the reactor has seen the socket
    // ready, so the (still non-blocking) std socket is used.
    let Ok(mut stream) = stream.into_std() else {
        return;
    };
    // What the client already sent is read first: closing a socket with unread data resets the
    // connection, and a reset may reach the client before it has read the answer.
    let mut sent = [0u8; 4096];
    let _ = stream.read(&mut sent);
    let _ = stream.write(answer);
}

fn is_connection_error(error: &std::io::Error) -> bool {
    use std::io::ErrorKind;
    matches!(
        error.kind(),
        ErrorKind::ConnectionRefused | ErrorKind::ConnectionAborted | ErrorKind::ConnectionReset
    )
}

/// The key a client's connections are counted under: its address, an IPv6 client's /64 (one
/// host commonly holds a whole /64), an IPv4-mapped IPv6 address as IPv4.
fn client_of(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6(Ipv6Addr::from_bits(v6.to_bits() & !((1u128 << 64) - 1))),
        },
        v4 => v4,
    }
}

/// `wanted`, or less when the open-file limit (raised to its hard limit first) leaves less room
/// beside the rest of the service.
fn fit_to_open_files(wanted: usize) -> usize {
    let soft = match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(soft) => soft,
        Err(error) => {
            tracing::warn!(%error, "Could not raise the open-file limit.");
            match rlimit::getrlimit(rlimit::Resource::NOFILE) {
                Ok((soft, _)) => soft,
                Err(_) => return wanted,
            }
        }
    };
    let room = soft.saturating_sub(RESERVED_FDS + EVICTION_SLACK as u64).max(1);
    let room = usize::try_from(room).unwrap_or(usize::MAX);
    if room < wanted {
        tracing::warn!(
            max_connections = wanted,
            open_file_limit = soft,
            serving = room,
            "http.max_connections is more than the open-file limit leaves room for; serving fewer."
        );
    }
    wanted.min(room)
}

enum Refusal {
    /// The client's address holds its share of connections without a token.
    PerIp,
    /// The cap is reached and no connection is idle.
    Capacity,
    /// The cap is reached and `EVICTION_SLACK` idle connections are still closing.
    Closing,
}

/// The connections open, per client, and which are idle since when.
struct Gate {
    limits: ConnectionLimits,
    /// Connections admitted and not yet closed.
    open: AtomicUsize,
    /// Idle connections told to close for a new one, not yet closed.
    evicting: AtomicUsize,
    /// Told when one of those has closed.
    closed: Notify,
    /// Connections without a valid token yet, per client.
    unauthenticated: Mutex<HashMap<IpAddr, usize>>,
    /// Idle connections by when they became idle (a ticket from `next_ticket`), oldest first.
    idle: Mutex<BTreeMap<u64, Weak<Conn>>>,
    next_ticket: AtomicU64,
    /// Whether the cap was reached lately (logged once until the load eases).
    saturated: AtomicBool,
    metrics: Arc<Metrics>,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Gate {
    fn new(limits: ConnectionLimits, metrics: Arc<Metrics>) -> Gate {
        Gate {
            limits,
            open: AtomicUsize::new(0),
            evicting: AtomicUsize::new(0),
            closed: Notify::new(),
            unauthenticated: Mutex::new(HashMap::new()),
            idle: Mutex::new(BTreeMap::new()),
            next_ticket: AtomicU64::new(0),
            saturated: AtomicBool::new(false),
            metrics,
        }
    }

    /// A new connection of `client`, or why not. Only the accept loop admits, so a count read
    /// here can only fall before it is raised.
    fn admit(self: &Arc<Gate>, client: IpAddr) -> Result<Arc<Conn>, Refusal> {
        let per_ip = self.limits.max_unauthenticated_per_ip;
        if per_ip > 0 && lock(&self.unauthenticated).get(&client).is_some_and(|n| *n >= per_ip) {
            return Err(Refusal::PerIp);
        }
        if self.open.load(Ordering::Acquire) >= self.limits.max {
            if !self.saturated.swap(true, Ordering::Relaxed) {
                tracing::warn!(
                    max_connections = self.limits.max,
                    "HTTP connections at http.max_connections: closing the longest idle for new ones."
                );
            }
            if self.evicting.load(Ordering::Acquire) >= EVICTION_SLACK {
                return Err(Refusal::Closing);
            }
            if !self.evict_oldest_idle() {
                return Err(Refusal::Capacity);
            }
        } else if self.open.load(Ordering::Relaxed) < self.limits.max / 10 * 9 {
            self.saturated.store(false, Ordering::Relaxed);
        }
        if per_ip > 0 {
            *lock(&self.unauthenticated).entry(client).or_default() += 1;
        }
        self.open.fetch_add(1, Ordering::AcqRel);
        self.metrics.http_connections(1);
        let conn = Arc::new(Conn {
            gate: Arc::clone(self),
            client: Mutex::new((per_ip > 0).then_some(client)),
            state: Mutex::new(State {
                in_flight: 0,
                served: false,
                idle_since: Instant::now(),
                ticket: None,
            }),
            evicted: AtomicBool::new(false),
            changed: Notify::new(),
        });
        {
            let mut state = lock(&conn.state);
            conn.become_idle(&mut state);
        }
        Ok(conn)
    }

    /// Tells the connection idle the longest to close; false when none is idle.
    fn evict_oldest_idle(&self) -> bool {
        loop {
            let Some((_, oldest)) = lock(&self.idle).pop_first() else {
                return false;
            };
            // A connection that closed meanwhile is passed over.
            if let Some(conn) = oldest.upgrade() {
                self.evicting.fetch_add(1, Ordering::AcqRel);
                conn.evicted.store(true, Ordering::Release);
                conn.changed.notify_one();
                self.metrics.http_evicted();
                return true;
            }
        }
    }

    fn release_client(&self, client: IpAddr) {
        let mut counts = lock(&self.unauthenticated);
        if let Some(n) = counts.get_mut(&client) {
            *n -= 1;
            if *n == 0 {
                counts.remove(&client);
            }
        }
    }
}

/// One connection's standing, shared by its task, its requests and the gate. Dropped when the
/// connection has closed.
struct Conn {
    gate: Arc<Gate>,
    /// Its client, while it counts against `max_unauthenticated_per_ip`.
    client: Mutex<Option<IpAddr>>,
    state: Mutex<State>,
    /// Told to close for a new connection (it does once idle).
    evicted: AtomicBool,
    /// Wakes the connection's task to look at its deadline again.
    changed: Notify,
}

struct State {
    /// Requests received whose responses are not yet sent.
    in_flight: usize,
    /// Whether a request has arrived.
    served: bool,
    /// Since when no request is in flight.
    idle_since: Instant,
    /// Its place among the idle connections, while idle.
    ticket: Option<u64>,
}

impl Conn {
    /// A request arrived: the connection is busy until the returned guard (kept by the
    /// response's body) is dropped.
    fn busy(self: &Arc<Conn>) -> Busy {
        let mut state = lock(&self.state);
        state.in_flight += 1;
        state.served = true;
        if let Some(ticket) = state.ticket.take() {
            lock(&self.gate.idle).remove(&ticket);
        }
        drop(state);
        self.changed.notify_one();
        Busy(Arc::clone(self))
    }

    /// Enters the idle connections (the state's lock held, so `busy` cannot interleave).
    fn become_idle(self: &Arc<Conn>, state: &mut State) {
        let ticket = self.gate.next_ticket.fetch_add(1, Ordering::Relaxed);
        state.idle_since = Instant::now();
        state.ticket = Some(ticket);
        lock(&self.gate.idle).insert(ticket, Arc::downgrade(self));
    }

    /// When the connection is to close, unless a request arrives first: `None` while one is in
    /// flight.
    fn deadline(&self, limits: &ConnectionLimits) -> Option<Instant> {
        let state = lock(&self.state);
        if state.in_flight > 0 {
            return None;
        }
        if self.evicted.load(Ordering::Acquire) {
            return Some(state.idle_since);
        }
        let wait = if state.served {
            limits.idle_timeout
        } else {
            limits.header_read_timeout
        };
        Some(state.idle_since + wait)
    }

    fn counts_against_its_address(&self) -> bool {
        lock(&self.client).is_some()
    }

    /// A request presented a valid token: the connection no longer counts against its address.
    fn authenticated(&self) {
        if let Some(client) = lock(&self.client).take() {
            self.gate.release_client(client);
        }
    }
}

impl Drop for Conn {
    fn drop(&mut self) {
        let state = self.state.get_mut().unwrap_or_else(PoisonError::into_inner);
        if let Some(ticket) = state.ticket.take() {
            lock(&self.gate.idle).remove(&ticket);
        }
        if let Some(client) = self.client.get_mut().unwrap_or_else(PoisonError::into_inner).take() {
            self.gate.release_client(client);
        }
        if *self.evicted.get_mut() {
            self.gate.evicting.fetch_sub(1, Ordering::AcqRel);
            self.gate.closed.notify_one();
        }
        self.gate.open.fetch_sub(1, Ordering::AcqRel);
        self.gate.metrics.http_connections(-1);
    }
}

/// A request in flight on its connection.
struct Busy(Arc<Conn>);

impl Drop for Busy {
    fn drop(&mut self) {
        let conn = &self.0;
        let mut state = lock(&conn.state);
        state.in_flight -= 1;
        if state.in_flight == 0 {
            conn.become_idle(&mut state);
        }
        drop(state);
        conn.changed.notify_one();
    }
}

/// A response body that keeps its request in flight until hyper has sent it and dropped it.
struct Sending {
    body: Body,
    _busy: Busy,
}

impl http_body::Body for Sending {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clients_are_addresses_and_ipv6_prefixes() {
        let ip = |s: &str| s.parse::<IpAddr>().expect("address");
        assert_eq!(client_of(ip("127.0.0.2")), ip("127.0.0.2"));
        assert_eq!(client_of(ip("::ffff:10.1.2.3")), ip("10.1.2.3"));
        assert_eq!(client_of(ip("2001:db8:1:2:aaaa:bbbb:cccc:dddd")), ip("2001:db8:1:2::"));
        assert_eq!(client_of(ip("2001:db8:1:2::1")), client_of(ip("2001:db8:1:2:ffff::9")));
    }

    fn gate(max: usize, per_ip: usize) -> Arc<Gate> {
        let limits = ConnectionLimits {
            max,
            max_unauthenticated_per_ip: per_ip,
            header_read_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(60),
        };
        Arc::new(Gate::new(limits, Arc::new(Metrics::default())))
    }

    #[test]
    fn an_address_over_its_share_is_refused_until_one_authenticates() {
        let gate = gate(10, 2);
        let (a, b) = ("10.0.0.1".parse().expect("ip"), "10.0.0.2".parse().expect("ip"));
        let first = gate.admit(a).ok().expect("first");
        let _second = gate.admit(a).ok().expect("second");
        assert!(matches!(gate.admit(a), Err(Refusal::PerIp)));
        assert!(gate.admit(b).is_ok(), "another address has its own share");
        first.authenticated();
        let third = gate.admit(a).ok().expect("a slot freed by the token");
        assert!(matches!(gate.admit(a), Err(Refusal::PerIp)));
        drop(third);
        assert!(gate.admit(a).is_ok(), "a closed connection frees its slot");
    }

    #[test]
    fn at_the_cap_the_longest_idle_is_evicted_and_busy_ones_are_not() {
        let gate = gate(2, 0);
        let ip: IpAddr = "10.0.0.1".parse().expect("ip");
        let older = gate.admit(ip).ok().expect("older");
        let newer = gate.admit(ip).ok().expect("newer");
        let _third = gate.admit(ip).ok().expect("admitted by evicting one");
        assert!(older.evicted.load(Ordering::Acquire), "the longest idle goes");
        assert!(!newer.evicted.load(Ordering::Acquire));
        let limits = gate.limits;
        let since = |conn: &Conn| lock(&conn.state).idle_since;
        assert_eq!(older.deadline(&limits), Some(since(&older)), "closes at once");
        // The newer one is busy: only the third is idle, and it is evicted next.
        let busy = newer.busy();
        assert_eq!(newer.deadline(&limits), None, "no deadline with a request in flight");
        let _fourth = gate.admit(ip).ok().expect("admitted by evicting the third");
        assert!(!newer.evicted.load(Ordering::Acquire));
        drop(busy);
        assert_eq!(
            newer.deadline(&limits),
            Some(since(&newer) + limits.idle_timeout),
            "idle again, until the idle timeout"
        );
        assert_eq!(gate.evicting.load(Ordering::Acquire), 2);
        drop(older);
        assert_eq!(gate.evicting.load(Ordering::Acquire), 1);
    }

    #[test]
    fn at_the_cap_a_burst_waits_for_the_idle_ones_closing_for_it() {
        let gate = gate(1, 0);
        let ip: IpAddr = "10.0.0.1".parse().expect("ip");
        // Each new connection is admitted by evicting the previous one, which has not closed.
        let mut open: Vec<Arc<Conn>> = (0..=EVICTION_SLACK)
            .map(|_| gate.admit(ip).ok().expect("admitted"))
            .collect();
        assert_eq!(gate.evicting.load(Ordering::Acquire), EVICTION_SLACK);
        assert!(matches!(gate.admit(ip), Err(Refusal::Closing)));
        drop(open.remove(0));
        assert!(gate.admit(ip).is_ok(), "one evicted connection closed");
    }

    #[test]
    fn at_the_cap_with_every_connection_busy_the_new_one_is_refused() {
        let gate = gate(1, 0);
        let ip: IpAddr = "10.0.0.1".parse().expect("ip");
        let only = gate.admit(ip).ok().expect("only");
        let _busy = only.busy();
        assert!(matches!(gate.admit(ip), Err(Refusal::Capacity)));
        assert_eq!(gate.metrics.http_open(), 1);
    }
}
