//! The faults of a real control plane that are not one request's answer: an outage (connections
//! refused, then back on the same port), slow writes, dropped watches; and requests counted per client.

use std::time::Duration;

use super::FakeApiServer;
use super::faults::RequestRecord;
use super::server::{self, accept_loop};

impl FakeApiServer {
    /// Delay added before every write (create, update, patch, delete), on top of
    /// [`FakeApiServer::set_latency`]: a real API server's reads come from its watch cache in well under a
    /// millisecond while each write waits for etcd (≈ 5 ms with fsync on a real disk), so this is what
    /// makes a test that counts cost see the writes.
    pub fn set_write_latency(&self, latency: Duration) {
        *self.shared.write_latency.lock() = latency;
    }

    /// Stops the server as a control-plane outage does: the listening socket is closed (a connect gets
    /// `ECONNREFUSED`, as from a stopped kube-apiserver) and every open connection and watch is cut. The
    /// store is kept; [`FakeApiServer::end_outage`] brings the server back on the same port.
    pub async fn begin_outage(&self) {
        let accept = self.shared.accept.lock().take();
        self.shared.disconnect_all();
        if let Some(accept) = accept {
            accept.abort();
            // The listener closes when the aborted task is dropped: wait for that, so the next connect
            // is refused.
            let _ = accept.await;
        }
    }

    /// Listens again on the same port after [`FakeApiServer::begin_outage`]. Like a restarted
    /// kube-apiserver, whose watch cache starts at the current version, the watch history is dropped:
    /// a client resuming a watch from before the outage is told 410 Expired and has to list again.
    /// Must be called from within the Tokio runtime; panics if the port cannot be bound again.
    pub fn end_outage(&self) {
        let mut accept = self.shared.accept.lock();
        if accept.is_some() {
            return;
        }
        let listener = match server::listen(self.shared.addr) {
            Ok(l) => l,
            Err(e) => panic!("binding {} again after an outage: {e}", self.shared.addr),
        };
        self.shared.store.lock().compact();
        *accept = Some(tokio::spawn(accept_loop(listener, self.shared.clone())));
    }

    /// Whether the server is in an outage ([`FakeApiServer::begin_outage`]).
    pub fn in_outage(&self) -> bool {
        self.shared.accept.lock().is_none()
    }

    /// Ends every open watch stream, as a real server does when it sheds load or a proxy in between
    /// closes long requests; other connections stay up. Clients resume from their last version.
    pub fn drop_watches(&self) {
        self.shared.drop_watches_tx.send_modify(|e| *e += 1);
    }

    /// Requests per client ([`RequestRecord::client`]: impersonated identity, else User-Agent) among those
    /// `filter` keeps, e.g. to tell a receiver's writes from its controllers' or to count the calls of one
    /// tenant's identity.
    pub fn requests_by_client(
        &self,
        filter: impl Fn(&RequestRecord) -> bool,
    ) -> std::collections::BTreeMap<String, usize> {
        let mut out = std::collections::BTreeMap::new();
        for r in self.shared.log.lock().iter().filter(|r| filter(r)) {
            *out.entry(r.client().to_string()).or_insert(0) += 1;
        }
        out
    }
}
