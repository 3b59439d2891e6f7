//! Reading a container's CRI log file for `kubectl logs`, following it while the
//! container runs.
//!
//! Follow mode polls the file (every [`POLL_INTERVAL`]) rather than using inotify, and
//! asks the runtime whether the container still runs at most every
//! [`RUNNING_CHECK_INTERVAL`]; once it has exited, what is left in the file is sent and
//! the response ends, as the kubelet does. Only the current file is read, as the
//! kubelet reads it; a follow that reaches the end of a file the log rotation
//! renamed (`<path>.<timestamp>`) goes on in the new file at `path`.

use std::future::Future;
use std::io::SeekFrom;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::time::Duration;

use axum::body::Bytes;
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncSeek, AsyncSeekExt, BufReader};
use tokio::sync::mpsc;

use super::cri_log::{self, LogFormatter, LogOptions, Progress};

/// How often a followed file is checked for new records.
pub const POLL_INTERVAL: Duration = Duration::from_millis(200);

/// How often follow mode asks the runtime whether the container still runs.
pub const RUNNING_CHECK_INTERVAL: Duration = Duration::from_secs(1);

/// Bytes read backwards at a time to find where the last `tailLines` records begin.
const TAIL_BLOCK: u64 = 64 * 1024;

/// Sends the log file at `path` to `out` with `options` applied. Returns when the
/// output is complete, `limitBytes` is reached, the receiver is gone (the client
/// left), or — following — the container stopped running (`running` answers false)
/// and the rest of the file was sent.
pub async fn stream_log_file<F, Fut>(
    path: &Path,
    options: LogOptions,
    mut running: F,
    out: mpsc::Sender<Bytes>,
) -> std::io::Result<()>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let mut file = tokio::fs::File::open(path).await?;
    let meta = file.metadata().await?;
    let mut inode = meta.ino();
    let start = match options.tail_lines {
        Some(tail) => find_tail_start(&mut file, meta.len(), tail).await?,
        None => 0,
    };
    file.seek(SeekFrom::Start(start)).await?;
    let follow = options.follow;
    let mut records_left = options.tail_lines.filter(|_| !follow);
    let mut formatter = LogFormatter::new(options);
    let mut reader = BufReader::new(file);
    let mut line = Vec::new();
    let mut exited = false;
    let mut last_check: Option<tokio::time::Instant> = None;
    let mut rotated_to: Option<tokio::fs::File> = None;
    loop {
        if records_left == Some(0) {
            return Ok(());
        }
        let n = reader.read_until(b'\n', &mut line).await?;
        let complete = line.last() == Some(&b'\n');
        if !complete {
            if !follow || exited {
                // The end of the file: a last record without its newline is sent too.
                if !line.is_empty() {
                    send_record(&mut formatter, &line, &out).await;
                }
                return Ok(());
            }
            if n == 0 {
                // At the end of a followed file: keep any incomplete record and wait.
                if out.is_closed() {
                    return Ok(());
                }
                if let Some(next) = rotated_to.take() {
                    // The old file was read to its end once more: on to the new one.
                    inode = next.metadata().await?.ino();
                    reader = BufReader::new(next);
                    continue;
                }
                if let Some(next) = reopened(path, inode).await? {
                    // The log was rotated: the runtime writes a new file at `path`.
                    rotated_to = Some(next);
                    continue;
                }
                let now = tokio::time::Instant::now();
                if last_check.is_none_or(|t| now - t >= RUNNING_CHECK_INTERVAL) {
                    last_check = Some(now);
                    if !running().await {
                        // Read what was written before it exited, then stop.
                        exited = true;
                        continue;
                    }
                }
                tokio::time::sleep(POLL_INTERVAL).await;
            }
            continue;
        }
        let progress = send_record(&mut formatter, &line, &out).await;
        line.clear();
        if let Some(left) = records_left.as_mut() {
            *left -= 1;
        }
        match progress {
            Some(Progress::More) => {}
            Some(Progress::Done) | None => return Ok(()),
        }
    }
}

/// The file now at `path` if it is not the one read (inode `inode`): the log
/// rotation renamed the old one and the runtime writes a new one there.
/// `None` while the old one is still in place, or before the new one exists.
async fn reopened(path: &Path, inode: u64) -> std::io::Result<Option<tokio::fs::File>> {
    match tokio::fs::metadata(path).await {
        Ok(meta) if meta.ino() != inode => match tokio::fs::File::open(path).await {
            Ok(file) => Ok(Some(file)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        },
        Ok(_) => Ok(None),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

/// Formats one record and sends it; `None` when the client is gone. Lines that are
/// not CRI records are skipped, as the kubelet skips them.
async fn send_record(
    formatter: &mut LogFormatter,
    line: &[u8],
    out: &mpsc::Sender<Bytes>,
) -> Option<Progress> {
    let record = match cri_log::parse_record(line) {
        Ok(record) => record,
        Err(error) => {
            tracing::warn!(%error, "skipping a line that is not a CRI log record");
            return Some(Progress::More);
        }
    };
    let mut buf = Vec::new();
    let progress = formatter.write(&record, &mut buf);
    if !buf.is_empty() && out.send(Bytes::from(buf)).await.is_err() {
        return None;
    }
    Some(progress)
}

/// The offset where the last `tail` records of `file` (`len` bytes) begin,
/// reading it backwards one block at a time into one buffer: a tail longer than
/// the file reads it once, never more than [`TAIL_BLOCK`] bytes held.
async fn find_tail_start<R>(file: &mut R, len: u64, tail: u64) -> std::io::Result<u64>
where
    R: AsyncRead + AsyncSeek + Unpin,
{
    if tail == 0 {
        return Ok(len);
    }
    let mut scan = cri_log::TailScan::new(tail);
    let mut buf = vec![0; usize::try_from(TAIL_BLOCK.min(len)).unwrap_or(0)];
    let mut end = len;
    while end > 0 {
        let block = TAIL_BLOCK.min(end);
        let from = end - block;
        let chunk = &mut buf[..usize::try_from(block).unwrap_or(0)];
        file.seek(SeekFrom::Start(from)).await?;
        file.read_exact(chunk).await?;
        if let Some(start) = scan.scan_back(chunk, from) {
            return Ok(start);
        }
        end = from;
    }
    Ok(0)
}

#[cfg(test)]
mod tests {
    use std::io::Write;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;

    use super::*;

    async fn collect(mut rx: mpsc::Receiver<Bytes>) -> String {
        let mut s = Vec::new();
        while let Some(b) = rx.recv().await {
            s.extend_from_slice(&b);
        }
        String::from_utf8(s).unwrap()
    }

    fn record(text: &str) -> String {
        format!("2026-01-02T03:04:05.000000001Z stdout F {text}\n")
    }

    #[tokio::test]
    async fn tail_reads_only_the_last_records_of_a_large_file() {
        let mut file = tempfile::NamedTempFile::new().unwrap();
        // Several tail blocks of records, so the backwards search crosses blocks.
        for i in 0..5000 {
            file.write_all(record(&format!("line {i:05} {}", "x".repeat(40))).as_bytes())
                .unwrap();
        }
        let options = LogOptions {
            tail_lines: Some(2),
            ..Default::default()
        };
        let (tx, rx) = mpsc::channel(16);
        stream_log_file(file.path(), options, || async { true }, tx)
            .await
            .unwrap();
        let out = collect(rx).await;
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(lines.len(), 2);
        assert!(
            lines[0].starts_with("line 04998") && lines[1].starts_with("line 04999"),
            "{out}"
        );
    }

    /// A file in memory that counts what is read from it.
    struct CountingReader {
        inner: std::io::Cursor<Vec<u8>>,
        bytes_read: u64,
        largest_read: usize,
    }

    impl AsyncRead for CountingReader {
        fn poll_read(
            mut self: std::pin::Pin<&mut Self>,
            cx: &mut std::task::Context<'_>,
            buf: &mut tokio::io::ReadBuf<'_>,
        ) -> std::task::Poll<std::io::Result<()>> {
            let before = buf.filled().len();
            let polled = std::pin::Pin::new(&mut self.inner).poll_read(cx, buf);
            let n = buf.filled().len() - before;
            self.bytes_read += n as u64;
            self.largest_read = self.largest_read.max(n);
            polled
        }
    }

    impl AsyncSeek for CountingReader {
        fn start_seek(
            mut self: std::pin::Pin<&mut Self>,
            position: SeekFrom,
        ) -> std::io::Result<()> {
            std::pin::Pin::new(&mut self.inner).start_seek(position)
        }

        fn poll_complete(
            mut self: std::pin::Pin<&mut Self>,
            cx: &mut std::task::Context<'_>,
        ) -> std::task::Poll<std::io::Result<u64>> {
            std::pin::Pin::new(&mut self.inner).poll_complete(cx)
        }
    }

    #[tokio::test]
    async fn a_tail_longer_than_a_big_file_reads_it_once_in_bounded_blocks() {
        // 8 MiB of records: 128 tail blocks.
        let line = record(&"y".repeat(64));
        let records = 8 * 1024 * 1024 / line.len();
        let data = line.repeat(records).into_bytes();
        let len = data.len() as u64;
        let mut file = CountingReader {
            inner: std::io::Cursor::new(data),
            bytes_read: 0,
            largest_read: 0,
        };
        let start = find_tail_start(&mut file, len, 10 * records as u64)
            .await
            .unwrap();
        assert_eq!(start, 0, "fewer records than asked for: from the start");
        assert_eq!(file.bytes_read, len, "every byte read once");
        assert!(
            file.largest_read as u64 <= TAIL_BLOCK,
            "{}",
            file.largest_read
        );

        // The last 3 records: one block read.
        file.bytes_read = 0;
        let start = find_tail_start(&mut file, len, 3).await.unwrap();
        assert_eq!(start, len - 3 * line.len() as u64);
        assert!(file.bytes_read <= TAIL_BLOCK);
        // Exactly as many records as the file has: all of it.
        let start = find_tail_start(&mut file, len, records as u64)
            .await
            .unwrap();
        assert_eq!(start, 0);
        assert_eq!(find_tail_start(&mut file, len, 0).await.unwrap(), len);
    }

    #[tokio::test]
    async fn follow_streams_growing_file_until_the_container_exits() {
        let mut file = tempfile::NamedTempFile::new().unwrap();
        file.write_all(record("before").as_bytes()).unwrap();
        let path = file.path().to_path_buf();
        let running = Arc::new(AtomicBool::new(true));
        let (tx, mut rx) = mpsc::channel(16);
        let options = LogOptions {
            follow: true,
            ..Default::default()
        };
        let still_running = running.clone();
        let reader = tokio::spawn(async move {
            let check = move || {
                let r = still_running.load(Ordering::SeqCst);
                async move { r }
            };
            stream_log_file(&path, options, check, tx).await
        });
        assert_eq!(rx.recv().await.unwrap(), Bytes::from("before\n"));

        // A record written in two pieces arrives only when complete, as one line.
        let half = record("grown while reading");
        let (a, b) = half.split_at(20);
        file.write_all(a.as_bytes()).unwrap();
        file.flush().unwrap();
        tokio::time::sleep(POLL_INTERVAL * 2).await;
        file.write_all(b.as_bytes()).unwrap();
        file.flush().unwrap();
        assert_eq!(
            rx.recv().await.unwrap(),
            Bytes::from("grown while reading\n")
        );

        // The container writes its last line and exits: the line is sent, then the end.
        file.write_all(record("last words").as_bytes()).unwrap();
        running.store(false, Ordering::SeqCst);
        let rest = tokio::time::timeout(Duration::from_secs(5), collect(rx))
            .await
            .expect("follow ends");
        assert_eq!(rest, "last words\n");
        reader.await.unwrap().unwrap();
    }

    #[tokio::test]
    async fn follow_goes_on_in_the_new_file_after_a_rotation() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("0.log");
        std::fs::write(&path, record("first file")).unwrap();
        let (tx, mut rx) = mpsc::channel(16);
        let options = LogOptions {
            follow: true,
            ..Default::default()
        };
        let running = Arc::new(AtomicBool::new(true));
        let still_running = running.clone();
        let follow_path = path.clone();
        let reader = tokio::spawn(async move {
            let check = move || {
                let r = still_running.load(Ordering::SeqCst);
                async move { r }
            };
            stream_log_file(&follow_path, options, check, tx).await
        });
        assert_eq!(rx.recv().await.unwrap(), Bytes::from("first file\n"));

        // Rotation: renamed, a last line still lands in the old file, then the
        // runtime reopens a new file at the path.
        let rotated = dir.path().join("0.log.20261203-130000");
        std::fs::rename(&path, &rotated).unwrap();
        let mut old = std::fs::OpenOptions::new()
            .append(true)
            .open(&rotated)
            .unwrap();
        old.write_all(record("late in the old file").as_bytes())
            .unwrap();
        std::fs::write(&path, record("second file")).unwrap();
        assert_eq!(
            rx.recv().await.unwrap(),
            Bytes::from("late in the old file\n")
        );
        assert_eq!(rx.recv().await.unwrap(), Bytes::from("second file\n"));

        running.store(false, Ordering::SeqCst);
        let rest = tokio::time::timeout(Duration::from_secs(5), collect(rx))
            .await
            .expect("follow ends");
        assert_eq!(rest, "");
        reader.await.unwrap().unwrap();
    }

    #[tokio::test]
    async fn follow_stops_when_the_client_goes_away() {
        let file = tempfile::NamedTempFile::new().unwrap();
        let (tx, rx) = mpsc::channel(1);
        drop(rx);
        let options = LogOptions {
            follow: true,
            ..Default::default()
        };
        let done = stream_log_file(file.path(), options, || async { true }, tx);
        tokio::time::timeout(Duration::from_secs(5), done)
            .await
            .expect("returns")
            .unwrap();
    }
}
