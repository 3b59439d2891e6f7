//! A streamed response body whose end goes out in a write of its own, after
//! the data before it was flushed.
//!
//! hyper writes every frame a body has ready into one buffer and flushes it
//! when the body has nothing more to give. A log whose reader finished before
//! hyper came back for more then leaves in one TLS record: its last chunk and
//! the terminating `0\r\n\r\n` together. Go's HTTP/1.1 client reads them in one
//! `Read`, which returns the data with `io.EOF`; the API server's websocket
//! stream of `pods/log` (`wsstream`'s `messageCopy`) drops the data of a read
//! that returns an error, so the websocket client got an empty log. The
//! kubelet flushes every write of a log (`flushwriter`), so its end always
//! comes apart. [`EndApart`] answers `Pending` once, waking itself, between
//! data and the end: hyper flushes the data, then comes back for the end.

use std::pin::Pin;
use std::task::{Context, Poll};

use futures::Stream;

/// `inner`, with a `Pending` (the task woken at once) between its last item
/// and its end whenever that item was handed out since the last `Pending`.
pub struct EndApart<S> {
    inner: S,
    /// An item went out since `inner` or this last answered `Pending`.
    unflushed: bool,
    /// `inner` has ended (it is not polled again).
    ended: bool,
}

impl<S> EndApart<S> {
    pub fn new(inner: S) -> Self {
        EndApart {
            inner,
            unflushed: false,
            ended: false,
        }
    }
}

impl<S: Stream + Unpin> Stream for EndApart<S> {
    type Item = S::Item;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<S::Item>> {
        let this = &mut *self;
        if !this.ended {
            match Pin::new(&mut this.inner).poll_next(cx) {
                Poll::Ready(Some(item)) => {
                    this.unflushed = true;
                    return Poll::Ready(Some(item));
                }
                Poll::Ready(None) => this.ended = true,
                Poll::Pending => {
                    this.unflushed = false;
                    return Poll::Pending;
                }
            }
        }
        if this.unflushed {
            this.unflushed = false;
            cx.waker().wake_by_ref();
            return Poll::Pending;
        }
        Poll::Ready(None)
    }
}

#[cfg(test)]
mod tests {
    use std::task::Waker;

    use futures::task::noop_waker;

    use super::*;
    use crate::locked::Locked;

    fn poll<S: Stream + Unpin>(stream: &mut S, waker: &Waker) -> Poll<Option<S::Item>> {
        Pin::new(stream).poll_next(&mut Context::from_waker(waker))
    }

    #[test]
    fn the_end_comes_one_pending_after_the_last_item() {
        let waker = noop_waker();
        let mut body = EndApart::new(futures::stream::iter([1, 2]));
        assert_eq!(poll(&mut body, &waker), Poll::Ready(Some(1)));
        assert_eq!(poll(&mut body, &waker), Poll::Ready(Some(2)));
        assert_eq!(poll(&mut body, &waker), Poll::Pending);
        assert_eq!(poll(&mut body, &waker), Poll::Ready(None));
        assert_eq!(poll(&mut body, &waker), Poll::Ready(None));
    }

    #[test]
    fn an_empty_body_or_one_already_flushed_ends_at_once() {
        let waker = noop_waker();
        let mut empty = EndApart::new(futures::stream::iter(Vec::<u8>::new()));
        assert_eq!(poll(&mut empty, &waker), Poll::Ready(None));

        // An item, then the inner stream waits (hyper flushes), then ends.
        let (tx, rx) = futures::channel::mpsc::unbounded();
        let mut body = EndApart::new(rx);
        tx.unbounded_send(7).unwrap();
        assert_eq!(poll(&mut body, &waker), Poll::Ready(Some(7)));
        assert_eq!(poll(&mut body, &waker), Poll::Pending);
        drop(tx);
        assert_eq!(poll(&mut body, &waker), Poll::Ready(None));
    }

    #[test]
    fn the_task_is_woken_to_take_the_end() {
        let woken = std::sync::Arc::new(Woken::default());
        let waker = Waker::from(woken.clone());
        let mut body = EndApart::new(futures::stream::iter([1]));
        assert_eq!(poll(&mut body, &waker), Poll::Ready(Some(1)));
        assert_eq!(poll(&mut body, &waker), Poll::Pending);
        assert!(woken.0.load(std::sync::atomic::Ordering::SeqCst));
        assert_eq!(poll(&mut body, &waker), Poll::Ready(None));
    }

    #[derive(Default)]
    struct Woken(std::sync::atomic::AtomicBool);

    /// The server's side of a connection: what it wrote between two flushes,
    /// one entry per flush.
    struct Recorder {
        inner: tokio::io::DuplexStream,
        pending: Vec<u8>,
        flushed: std::sync::Arc<std::sync::Mutex<Vec<Vec<u8>>>>,
    }

    impl tokio::io::AsyncRead for Recorder {
        fn poll_read(
            mut self: Pin<&mut Self>,
            cx: &mut Context<'_>,
            buf: &mut tokio::io::ReadBuf<'_>,
        ) -> Poll<std::io::Result<()>> {
            Pin::new(&mut self.inner).poll_read(cx, buf)
        }
    }

    impl tokio::io::AsyncWrite for Recorder {
        fn poll_write(
            mut self: Pin<&mut Self>,
            cx: &mut Context<'_>,
            buf: &[u8],
        ) -> Poll<std::io::Result<usize>> {
            let this = &mut *self;
            let written = Pin::new(&mut this.inner).poll_write(cx, buf);
            if let Poll::Ready(Ok(n)) = written {
                this.pending.extend_from_slice(&buf[..n]);
            }
            written
        }

        fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
            let this = &mut *self;
            let flushed = Pin::new(&mut this.inner).poll_flush(cx);
            if flushed.is_ready() && !this.pending.is_empty() {
                let bytes = std::mem::take(&mut this.pending);
                this.flushed.locked().push(bytes);
            }
            flushed
        }

        fn poll_shutdown(
            mut self: Pin<&mut Self>,
            cx: &mut Context<'_>,
        ) -> Poll<std::io::Result<()>> {
            Pin::new(&mut self.inner).poll_shutdown(cx)
        }
    }

    /// Serves one GET over hyper's HTTP/1.1 whose body is `records` (all there
    /// at once, as a short log read before hyper asks), through [`EndApart`]
    /// when `apart`; what the server flushed, one entry per flush.
    async fn served(records: &[&'static str], apart: bool) -> Vec<Vec<u8>> {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};

        let (server, mut client) = tokio::io::duplex(64 * 1024);
        let flushed = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let io = Recorder {
            inner: server,
            pending: Vec::new(),
            flushed: flushed.clone(),
        };
        let chunks: Vec<Result<axum::body::Bytes, std::convert::Infallible>> = records
            .iter()
            .map(|r| Ok(axum::body::Bytes::from_static(r.as_bytes())))
            .collect();
        let body = std::sync::Mutex::new(Some(chunks));
        let service = hyper::service::service_fn(move |_request| {
            let chunks = body.locked().take().unwrap_or_default();
            let stream = futures::stream::iter(chunks);
            let body = if apart {
                axum::body::Body::from_stream(EndApart::new(stream))
            } else {
                axum::body::Body::from_stream(stream)
            };
            async move { Ok::<_, std::convert::Infallible>(axum::http::Response::new(body)) }
        });
        let connection = tokio::spawn(
            hyper::server::conn::http1::Builder::new()
                .serve_connection(hyper_util::rt::TokioIo::new(io), service),
        );
        client
            .write_all(b"GET / HTTP/1.1\r\nHost: node\r\nConnection: close\r\n\r\n")
            .await
            .unwrap();
        let mut answer = Vec::new();
        client.read_to_end(&mut answer).await.unwrap();
        assert!(answer.ends_with(b"0\r\n\r\n"), "{answer:?}");
        connection.await.unwrap().unwrap();
        let flushed = flushed.locked().clone();
        flushed
    }

    #[tokio::test]
    async fn hyper_flushes_a_short_log_before_its_end() {
        let records = ["container is alive\n", "second line\n"];
        // Without it, the data and the end leave together: what Go's client
        // reads as data with EOF in one Read.
        let together = served(&records, false).await;
        let last = together.last().unwrap();
        assert!(
            last.ends_with(b"0\r\n\r\n") && last.len() > 5,
            "{together:?}"
        );

        let apart = served(&records, true).await;
        assert_eq!(apart.last().unwrap(), b"0\r\n\r\n", "{apart:?}");
        let data: Vec<u8> = apart.concat();
        let text = String::from_utf8_lossy(&data);
        assert!(text.contains("container is alive\n"), "{text}");
        assert!(text.contains("second line\n"), "{text}");
    }

    impl std::task::Wake for Woken {
        fn wake(self: std::sync::Arc<Self>) {
            self.0.store(true, std::sync::atomic::Ordering::SeqCst);
        }
    }
}
