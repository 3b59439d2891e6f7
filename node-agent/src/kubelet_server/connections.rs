//! How many connections the kubelet server holds, which go when there are too
//! many, and how long each may take to show who it is.
//!
//! ```text
//! accept -> [ unauthenticated ] --first authenticated request--> [ authenticated ] -> close
//!              |  oldest closed when a new one finds it full
//!              |  closed when not authenticated within first_request_timeout
//! ```
//!
//! A slow-loris client (many connections, headers sent a byte at a time) never
//! leaves the first stage, where at most [`Limits::max_unauthenticated`]
//! connections wait; a new connection past that closes the oldest waiting one
//! instead of being refused, so the API server, whose client certificate
//! authenticates it at the handshake, milliseconds after its accept, still gets
//! in while a flood holds every other place. At most [`Limits::max_connections`]
//! in all: when every place is taken by authenticated connections, a new one is
//! closed at accept. Upgraded streams (exec, attach, port-forward) leave the count
//! when hyper hands them over.
//!
//! The kubelet's Go server has none of these bounds (`ReadTimeout` 4 h, no header
//! timeout, no connection cap); its `IdleTimeout` (90 s) is kept here as hyper's
//! header-read timeout, which starts when a kept-alive connection goes idle, so it
//! bounds both the wait for the next request and the reading of its headers.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::locked::Locked;
use crate::serve::metrics::{KubeletServerMetrics, ShedReason};

/// The server's bounds on connections.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Limits {
    /// The TLS handshake must end within this.
    pub handshake_timeout: Duration,
    /// From accept to the first authenticated request (handshake and headers included).
    pub first_request_timeout: Duration,
    /// An idle kept-alive connection is closed after this; a request's headers
    /// must arrive within it (the kubelet's `IdleTimeout`).
    pub idle_timeout: Duration,
    /// Open connections at most (upgraded streams not counted).
    pub max_connections: usize,
    /// Connections at most that have not authenticated a request yet.
    pub max_unauthenticated: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            handshake_timeout: Duration::from_secs(10),
            first_request_timeout: Duration::from_secs(30),
            idle_timeout: Duration::from_secs(90),
            // The agent's open-file limit is often 1024; half of it for this server.
            max_connections: 512,
            max_unauthenticated: 128,
        }
    }
}

/// What [`ConnectionTable::admit`] decided for a new connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Admission {
    /// Serve it as connection `id`; close connection `evict` first to make room.
    Admitted { id: u64, evict: Option<u64> },
    /// Every place is taken by authenticated connections: close it.
    Full,
}

/// Which connections are open, at which stage (pure bookkeeping). Ids grow with
/// each accept, so the smallest unauthenticated id is the oldest.
#[derive(Debug)]
pub struct ConnectionTable {
    next_id: u64,
    unauthenticated: BTreeSet<u64>,
    authenticated: HashSet<u64>,
    max_connections: usize,
    max_unauthenticated: usize,
}

impl ConnectionTable {
    pub fn new(limits: &Limits) -> Self {
        ConnectionTable {
            next_id: 0,
            unauthenticated: BTreeSet::new(),
            authenticated: HashSet::new(),
            max_connections: limits.max_connections.max(1),
            max_unauthenticated: limits.max_unauthenticated.max(1),
        }
    }

    /// A new connection: admitted (making room by closing the oldest
    /// unauthenticated one when a bound is reached), or refused when every place
    /// is held by authenticated connections.
    pub fn admit(&mut self) -> Admission {
        let total = self.unauthenticated.len() + self.authenticated.len();
        let evict = if total >= self.max_connections
            || self.unauthenticated.len() >= self.max_unauthenticated
        {
            match self.unauthenticated.pop_first() {
                Some(oldest) => Some(oldest),
                None => return Admission::Full,
            }
        } else {
            None
        };
        let id = self.next_id;
        self.next_id += 1;
        self.unauthenticated.insert(id);
        Admission::Admitted { id, evict }
    }

    /// Connection `id` authenticated a request: it is no longer evicted. `false`
    /// when it is closed or was authenticated already.
    pub fn authenticate(&mut self, id: u64) -> bool {
        if self.unauthenticated.remove(&id) {
            self.authenticated.insert(id);
            true
        } else {
            false
        }
    }

    pub fn is_authenticated(&self, id: u64) -> bool {
        self.authenticated.contains(&id)
    }

    /// Connection `id` is gone (closed, evicted, or upgraded).
    pub fn close(&mut self, id: u64) {
        self.unauthenticated.remove(&id);
        self.authenticated.remove(&id);
    }

    /// Open connections: (unauthenticated, authenticated).
    pub fn counts(&self) -> (usize, usize) {
        (self.unauthenticated.len(), self.authenticated.len())
    }
}

/// The table shared by the accept loop and the connections, with a way to close
/// each unauthenticated connection.
pub struct Connections {
    state: Mutex<Shared>,
    metrics: KubeletServerMetrics,
}

struct Shared {
    table: ConnectionTable,
    /// Cancelled to close an unauthenticated connection.
    evictors: HashMap<u64, CancellationToken>,
}

impl Connections {
    pub fn new(limits: &Limits, metrics: KubeletServerMetrics) -> Arc<Self> {
        Arc::new(Connections {
            state: Mutex::new(Shared {
                table: ConnectionTable::new(limits),
                evictors: HashMap::new(),
            }),
            metrics,
        })
    }

    /// A place for a new connection, `None` when it must be closed at once.
    pub fn admit(self: &Arc<Self>) -> Option<ConnectionSlot> {
        let mut state = self.state.locked();
        let admitted = match state.table.admit() {
            Admission::Full => {
                drop(state);
                self.metrics.connection_shed(ShedReason::Full);
                return None;
            }
            Admission::Admitted { id, evict } => {
                if let Some(evicted) = evict.and_then(|e| state.evictors.remove(&e)) {
                    evicted.cancel();
                    self.metrics.connection_shed(ShedReason::Evicted);
                }
                let evicted = CancellationToken::new();
                state.evictors.insert(id, evicted.clone());
                ConnectionSlot {
                    ticket: ConnectionTicket {
                        id,
                        connections: self.clone(),
                    },
                    evicted,
                }
            }
        };
        self.publish(&state.table);
        Some(admitted)
    }

    fn publish(&self, table: &ConnectionTable) {
        let (unauthenticated, authenticated) = table.counts();
        self.metrics.set_connections(unauthenticated, authenticated);
    }
}

/// A connection's place, held by its task; dropping it frees the place.
pub struct ConnectionSlot {
    ticket: ConnectionTicket,
    evicted: CancellationToken,
}

impl ConnectionSlot {
    /// Cancelled when the connection must close to make room.
    pub fn evicted(&self) -> &CancellationToken {
        &self.evicted
    }

    /// What the connection's requests carry, to mark it authenticated.
    pub fn ticket(&self) -> ConnectionTicket {
        self.ticket.clone()
    }
}

impl Drop for ConnectionSlot {
    fn drop(&mut self) {
        let connections = &self.ticket.connections;
        let mut state = connections.state.locked();
        state.table.close(self.ticket.id);
        state.evictors.remove(&self.ticket.id);
        connections.publish(&state.table);
    }
}

/// Put on every request of a connection (a request extension), so the auth
/// filter can mark the connection authenticated.
#[derive(Clone)]
pub struct ConnectionTicket {
    id: u64,
    connections: Arc<Connections>,
}

impl ConnectionTicket {
    /// A request of this connection was authenticated: it keeps its place.
    pub fn authenticated(&self) {
        let mut state = self.connections.state.locked();
        if state.table.authenticate(self.id) {
            state.evictors.remove(&self.id);
            self.connections.publish(&state.table);
        }
    }

    pub fn is_authenticated(&self) -> bool {
        self.connections
            .state
            .locked()
            .table
            .is_authenticated(self.id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(max_connections: usize, max_unauthenticated: usize) -> ConnectionTable {
        ConnectionTable::new(&Limits {
            max_connections,
            max_unauthenticated,
            ..Limits::default()
        })
    }

    fn admitted(admission: Admission) -> (u64, Option<u64>) {
        match admission {
            Admission::Admitted { id, evict } => (id, evict),
            Admission::Full => panic!("refused"),
        }
    }

    #[test]
    fn past_the_unauthenticated_bound_the_oldest_waiting_connection_goes() {
        let mut t = table(10, 3);
        let ids: Vec<_> = (0..3).map(|_| admitted(t.admit())).collect();
        assert_eq!(ids, vec![(0, None), (1, None), (2, None)]);
        // The API server's connection arrives in a flood: the oldest waiting one goes.
        let (api, evict) = admitted(t.admit());
        assert_eq!(evict, Some(0));
        assert!(t.authenticate(api));
        assert!(!t.authenticate(api), "once");
        // The flood goes on; the authenticated connection is never the one closed.
        let evicted: Vec<_> = (0..5).map(|_| admitted(t.admit()).1).collect();
        assert_eq!(evicted, vec![None, Some(1), Some(2), Some(4), Some(5)]);
        assert!(t.is_authenticated(api));
        assert_eq!(t.counts(), (3, 1));
    }

    #[test]
    fn when_authenticated_connections_hold_every_place_new_ones_are_refused() {
        let mut t = table(3, 3);
        for _ in 0..3 {
            let (id, _) = admitted(t.admit());
            t.authenticate(id);
        }
        assert_eq!(t.admit(), Admission::Full);
        // One closes: there is room again, and no one is evicted for it.
        t.close(1);
        let (id, evict) = admitted(t.admit());
        assert_eq!(evict, None);
        // Full again with one waiting: that one makes room.
        assert_eq!(admitted(t.admit()).1, Some(id));
        assert_eq!(t.counts(), (1, 2));
    }

    #[test]
    fn closing_forgets_a_connection_at_any_stage() {
        let mut t = table(10, 10);
        let (a, _) = admitted(t.admit());
        let (b, _) = admitted(t.admit());
        t.authenticate(b);
        t.close(a);
        t.close(b);
        t.close(b);
        assert_eq!(t.counts(), (0, 0));
        assert!(
            !t.authenticate(a),
            "a closed connection is not brought back"
        );
    }

    #[test]
    fn slots_publish_their_counts_and_eviction_cancels_the_oldest() {
        let metrics = crate::serve::metrics::Metrics::new();
        let limits = Limits {
            max_unauthenticated: 2,
            ..Limits::default()
        };
        let connections = Connections::new(&limits, metrics.kubelet_server.clone());
        let first = connections.admit().unwrap();
        let second = connections.admit().unwrap();
        second.ticket().authenticated();
        assert!(second.ticket().is_authenticated());
        let third = connections.admit().unwrap();
        assert!(!first.evicted().is_cancelled());
        let _fourth = connections.admit().unwrap();
        assert!(first.evicted().is_cancelled(), "the oldest waiting one");
        assert!(!third.evicted().is_cancelled());
        drop(first);
        drop(second);
        let text = metrics.encode();
        for line in [
            "kubelet_server_connections_shed_total{reason=\"evicted\"} 1",
            "kubelet_server_connections{stage=\"unauthenticated\"} 2",
            "kubelet_server_connections{stage=\"authenticated\"} 0",
        ] {
            assert!(text.contains(line), "{line} missing in\n{text}");
        }
    }
}
