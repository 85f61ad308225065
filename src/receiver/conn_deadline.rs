//! Separate deadlines for a request head and for an idle kept-alive connection on the public listener.
//!
//! hyper's `header_read_timeout` starts whenever a connection waits for a request head, idle or not, so a
//! kept-alive connection was closed 10 s after its last request. Whatever sends to the receiver (Apple,
//! an Ingress controller, a load balancer) keeps idle connections longer (nginx 60 s, most HTTP clients
//! 90 s) and may send its next POST on one at the moment the receiver closes it: the request is lost on
//! the way ("connection closed before message completed", a proxy's 502), and a POST is not retried on
//! another connection. The peer must be the one that closes an idle connection, so the receiver waits
//! longer (`--keep-alive-timeout`) for a request to begin, and keeps the short header deadline for a
//! request that has begun (a slow or hostile client still cannot hold a connection with a trickle).

use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::{Instant, Sleep};

/// Where a connection stands, as far as its deadline goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// No request under way since this instant: the keep-alive deadline runs.
    Idle(Instant),
    /// Bytes of a request head arrived from this instant on: the header deadline runs.
    Head(Instant),
    /// A request is being served (its body has its own deadline in the handler): no deadline here.
    Serving,
}

/// The deadlines of one connection.
#[derive(Debug, Clone, Copy)]
pub struct Deadlines {
    /// Time for a request's head to arrive once its first bytes did.
    pub header: Duration,
    /// Time an idle connection is kept for its next request.
    pub keep_alive: Duration,
}

impl Deadlines {
    /// When the connection is to be closed in `phase`, if nothing arrives. Pure.
    fn at(&self, phase: Phase) -> Option<Instant> {
        match phase {
            Phase::Idle(since) => Some(since + self.keep_alive),
            Phase::Head(since) => Some(since + self.header),
            Phase::Serving => None,
        }
    }
}

#[derive(Debug)]
struct Shared {
    phase: Phase,
    /// The reader waiting without a deadline while a request was served: woken when it is done, so its
    /// next wait has the keep-alive deadline (hyper does not read again on its own until bytes arrive).
    reader: Option<Waker>,
}

/// The phase a connection's service and its IO share: the service says when a request is served and
/// done, the IO when a new one begins.
#[derive(Debug, Clone)]
pub struct Tracker(Arc<Mutex<Shared>>);

impl Tracker {
    fn new() -> Self {
        // A new connection has the header time for its first request, as before any keep-alive: a
        // client that connects and sends nothing holds a connection no longer than one that trickles.
        Tracker(Arc::new(Mutex::new(Shared {
            phase: Phase::Head(Instant::now()),
            reader: None,
        })))
    }

    fn shared(&self) -> std::sync::MutexGuard<'_, Shared> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    #[cfg(test)]
    fn phase(&self) -> Phase {
        self.shared().phase
    }

    /// A request's head was read: it is being served.
    pub fn serving(&self) {
        self.shared().phase = Phase::Serving;
    }

    /// The response was produced: the connection waits for its next request.
    pub fn done(&self) {
        let reader = {
            let mut shared = self.shared();
            shared.phase = Phase::Idle(Instant::now());
            shared.reader.take()
        };
        if let Some(reader) = reader {
            reader.wake();
        }
    }

    fn bytes_arrived(&self) {
        let mut shared = self.shared();
        if let Phase::Idle(_) = shared.phase {
            shared.phase = Phase::Head(Instant::now());
        }
    }

    /// The deadline of the current phase; without one, `waker` is woken when the request is done.
    fn deadline(&self, deadlines: &Deadlines, waker: &Waker) -> (Phase, Option<Instant>) {
        let mut shared = self.shared();
        let at = deadlines.at(shared.phase);
        if at.is_none() {
            shared.reader = Some(waker.clone());
        }
        (shared.phase, at)
    }
}

/// A connection's IO that fails reads once its deadline has passed, so hyper closes the connection.
pub struct DeadlineIo<T> {
    inner: T,
    tracker: Tracker,
    deadlines: Deadlines,
    sleep: Pin<Box<Sleep>>,
}

impl<T> DeadlineIo<T> {
    /// Wraps `inner`; the returned tracker is for the connection's service.
    pub fn new(inner: T, deadlines: Deadlines) -> (Self, Tracker) {
        let tracker = Tracker::new();
        let io = DeadlineIo {
            inner,
            tracker: tracker.clone(),
            deadlines,
            sleep: Box::pin(tokio::time::sleep(deadlines.keep_alive)),
        };
        (io, tracker)
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for DeadlineIo<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        match Pin::new(&mut this.inner).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                if buf.filled().len() > before {
                    this.tracker.bytes_arrived();
                }
                Poll::Ready(Ok(()))
            }
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Pending => {
                let (phase, deadline) = this.tracker.deadline(&this.deadlines, cx.waker());
                let Some(deadline) = deadline else {
                    return Poll::Pending;
                };
                if this.sleep.deadline() != deadline {
                    this.sleep.as_mut().reset(deadline);
                }
                match this.sleep.as_mut().poll(cx) {
                    Poll::Ready(()) => Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        match phase {
                            Phase::Head(_) => "request head not received in time",
                            _ => "kept-alive connection idle too long",
                        },
                    ))),
                    Poll::Pending => Poll::Pending,
                }
            }
        }
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for DeadlineIo<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const D: Deadlines = Deadlines {
        header: Duration::from_millis(300),
        keep_alive: Duration::from_secs(75),
    };

    #[test]
    fn an_idle_connection_waits_the_keep_alive_time_a_begun_head_only_the_header_time() {
        let t = Instant::now();
        assert_eq!(D.at(Phase::Idle(t)), Some(t + Duration::from_secs(75)));
        assert_eq!(D.at(Phase::Head(t)), Some(t + Duration::from_millis(300)));
        assert_eq!(
            D.at(Phase::Serving),
            None,
            "the handler bounds a request's body"
        );
    }

    #[test]
    fn the_first_bytes_of_a_request_start_the_header_deadline_and_the_answer_restarts_idling() {
        let tracker = Tracker::new();
        tracker.done();
        assert!(matches!(tracker.phase(), Phase::Idle(_)));
        tracker.bytes_arrived();
        let Phase::Head(started) = tracker.phase() else {
            panic!("a head begun")
        };
        tracker.bytes_arrived();
        assert_eq!(
            tracker.phase(),
            Phase::Head(started),
            "more of the same head"
        );
        tracker.serving();
        tracker.bytes_arrived();
        assert_eq!(tracker.phase(), Phase::Serving, "the body is the handler's");
        tracker.done();
        assert!(matches!(tracker.phase(), Phase::Idle(_)));
    }

    #[tokio::test]
    async fn reads_fail_once_the_deadline_passed() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let deadlines = Deadlines {
            header: Duration::from_millis(100),
            keep_alive: Duration::from_millis(300),
        };
        let mut buf = [0u8; 8];
        let (near, _far) = tokio::io::duplex(64);
        let (mut io, _) = DeadlineIo::new(near, deadlines);
        let started = Instant::now();
        let e = io.read(&mut buf).await.unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::TimedOut);
        let waited = started.elapsed();
        assert!(
            waited < Duration::from_millis(250),
            "new: the header time ({waited:?})"
        );

        let (near, mut far) = tokio::io::duplex(64);
        let (mut io, tracker) = DeadlineIo::new(near, deadlines);
        tracker.serving();
        tracker.done();
        let started = Instant::now();
        let e = io.read(&mut buf).await.unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::TimedOut);
        assert!(
            started.elapsed() >= Duration::from_millis(300),
            "idle: the keep-alive time"
        );

        tracker.done();
        far.write_all(b"POST").await.unwrap();
        assert_eq!(io.read(&mut buf).await.unwrap(), 4);
        let begun = Instant::now();
        let e = io.read(&mut buf).await.unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::TimedOut);
        let waited = begun.elapsed();
        assert!(
            waited < Duration::from_millis(250),
            "a begun head: the header time ({waited:?})"
        );
    }
}
