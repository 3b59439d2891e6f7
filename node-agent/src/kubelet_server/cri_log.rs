//! The CRI container log format and the `kubectl logs` options applied to it (pure).
//!
//! The runtime (containerd) writes each container's stdout and stderr to one file,
//! one record per line: `<RFC3339Nano timestamp> <stdout|stderr> <P|F> <content>`.
//! A line longer than the runtime's buffer is split into records tagged `P`
//! (partial, the newline dropped) and ended by one tagged `F` (full). This is the
//! format the kubelet reads in `cri-client/pkg/logs`; its output rules are followed
//! here: a timestamp prefixes each *logical* line only (not the continuation of a
//! partial one), `sinceTime` filters by record timestamp, `limitBytes` counts the
//! bytes sent (prefix included) and cuts the last record, `tailLines` counts records.

use chrono::{DateTime, FixedOffset, SecondsFormat, Utc};

/// Which of the container's streams a record came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogStream {
    Stdout,
    Stderr,
}

/// One parsed record of a CRI log file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CriLogRecord<'a> {
    pub timestamp: DateTime<FixedOffset>,
    pub stream: LogStream,
    /// Tagged `P`: the line goes on in the next record.
    pub partial: bool,
    /// The content, with its newline for a full record and without for a partial one.
    pub content: &'a [u8],
}

/// Why a line of a log file is not a CRI record.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum CriLogError {
    #[error("timestamp is not found")]
    NoTimestamp,
    #[error("unexpected timestamp {0:?}")]
    BadTimestamp(String),
    #[error("stream type is not found")]
    NoStream,
    #[error("unexpected stream type {0:?}")]
    BadStream(String),
    #[error("log tag is not found")]
    NoTag,
}

/// Parses one line of a CRI log file (with or without its trailing newline).
pub fn parse_record(line: &[u8]) -> Result<CriLogRecord<'_>, CriLogError> {
    let (timestamp, rest) = split_field(line).ok_or(CriLogError::NoTimestamp)?;
    let timestamp = std::str::from_utf8(timestamp)
        .ok()
        .and_then(|t| DateTime::parse_from_rfc3339(t).ok())
        .ok_or_else(|| CriLogError::BadTimestamp(String::from_utf8_lossy(timestamp).into()))?;
    let (stream, rest) = split_field(rest).ok_or(CriLogError::NoStream)?;
    let stream = match stream {
        b"stdout" => LogStream::Stdout,
        b"stderr" => LogStream::Stderr,
        other => {
            return Err(CriLogError::BadStream(
                String::from_utf8_lossy(other).into(),
            ))
        }
    };
    let (tags, mut content) = split_field(rest).ok_or(CriLogError::NoTag)?;
    // Tags are `:`-separated for forward compatibility; the first says partial or full.
    let partial = tags.split(|b| *b == b':').next() == Some(b"P");
    if partial {
        content = content.strip_suffix(b"\n").unwrap_or(content);
    }
    Ok(CriLogRecord {
        timestamp,
        stream,
        partial,
        content,
    })
}

fn split_field(line: &[u8]) -> Option<(&[u8], &[u8])> {
    let space = line.iter().position(|b| *b == b' ')?;
    Some((&line[..space], &line[space + 1..]))
}

/// Which streams the client asked for (`stream=All|Stdout|Stderr`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum StreamSelection {
    #[default]
    All,
    Stdout,
    Stderr,
}

impl StreamSelection {
    fn includes(self, stream: LogStream) -> bool {
        match self {
            StreamSelection::All => true,
            StreamSelection::Stdout => stream == LogStream::Stdout,
            StreamSelection::Stderr => stream == LogStream::Stderr,
        }
    }
}

/// The options of `GET /containerLogs/...` (a `v1.PodLogOptions` as query parameters).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LogOptions {
    /// `follow`: keep streaming until the container exits.
    pub follow: bool,
    /// `previous`: the container instance before the current one.
    pub previous: bool,
    /// `timestamps`: prefix each line with its timestamp.
    pub timestamps: bool,
    /// `tailLines` (or the legacy `tail`): only the last N records.
    pub tail_lines: Option<u64>,
    /// `limitBytes`: stop after this many bytes of output.
    pub limit_bytes: Option<u64>,
    /// `sinceTime`, or now minus `sinceSeconds`: skip older records.
    pub since: Option<DateTime<Utc>>,
    /// `stream`: which of stdout and stderr.
    pub stream: StreamSelection,
}

/// A query the kubelet would refuse (it answers 422 or 400).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct InvalidLogOptions(pub String);

impl LogOptions {
    /// Reads the options from the query's `(name, value)` pairs; `now` resolves `sinceSeconds`.
    pub fn from_query(
        query: &[(String, String)],
        now: DateTime<Utc>,
    ) -> Result<Self, InvalidLogOptions> {
        let value = |name: &str| {
            query
                .iter()
                .rev()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.as_str())
        };
        let flag = |name: &str| match value(name) {
            None => Ok(false),
            Some(v) => parse_go_bool(v)
                .ok_or_else(|| InvalidLogOptions(format!("{name}: invalid boolean {v:?}"))),
        };
        let number = |name: &str| -> Result<Option<i64>, InvalidLogOptions> {
            value(name)
                .map(|v| {
                    v.parse::<i64>()
                        .map_err(|_| InvalidLogOptions(format!("{name}: invalid number {v:?}")))
                })
                .transpose()
        };
        // `tail` is the kubelet's legacy spelling of tailLines; `all` means no limit.
        let tail = match value("tail") {
            Some("all") => None,
            Some(_) => number("tail")?,
            None => number("tailLines")?,
        };
        let tail_lines = match tail {
            Some(n) if n < 0 => return Err(InvalidLogOptions("tailLines must be >= 0".into())),
            n => n.map(|n| n as u64),
        };
        let limit_bytes = match number("limitBytes")? {
            Some(n) if n < 1 => return Err(InvalidLogOptions("limitBytes must be >= 1".into())),
            n => n.map(|n| n as u64),
        };
        let since_seconds = number("sinceSeconds")?;
        let since_time = value("sinceTime")
            .map(|t| {
                DateTime::parse_from_rfc3339(t)
                    .map(|t| t.with_timezone(&Utc))
                    .map_err(|_| {
                        InvalidLogOptions(format!("sinceTime: invalid RFC3339 time {t:?}"))
                    })
            })
            .transpose()?;
        let since = match (since_seconds, since_time) {
            (Some(_), Some(_)) => {
                return Err(InvalidLogOptions(
                    "at most one of sinceTime or sinceSeconds may be specified".into(),
                ))
            }
            (Some(s), None) if s < 1 => {
                return Err(InvalidLogOptions("sinceSeconds must be >= 1".into()))
            }
            (Some(s), None) => seconds_before(now, s),
            (None, t) => t,
        };
        let stream = match value("stream") {
            None | Some("All") => StreamSelection::All,
            Some("Stdout") => StreamSelection::Stdout,
            Some("Stderr") => StreamSelection::Stderr,
            Some(other) => return Err(InvalidLogOptions(format!("invalid stream type {other:?}"))),
        };
        if stream != StreamSelection::All && tail_lines.is_some() {
            // As the API validates: tailLines counts records of both streams.
            return Err(InvalidLogOptions(
                "tailLines cannot be combined with a single stream".into(),
            ));
        }
        Ok(LogOptions {
            follow: flag("follow")?,
            previous: flag("previous")?,
            timestamps: flag("timestamps")?,
            tail_lines,
            limit_bytes,
            since,
            stream,
        })
    }
}

/// `now` minus `seconds`; `None` (no filter: every record) when that is before
/// the earliest time there is. A request may ask for any `int64`, and the
/// kubelet's `time.Duration` arithmetic would wrap around there.
fn seconds_before(now: DateTime<Utc>, seconds: i64) -> Option<DateTime<Utc>> {
    chrono::Duration::try_seconds(seconds).and_then(|ago| now.checked_sub_signed(ago))
}

/// Go's `strconv.ParseBool`, which the API's query decoding uses.
fn parse_go_bool(v: &str) -> Option<bool> {
    match v {
        "1" | "t" | "T" | "TRUE" | "true" | "True" => Some(true),
        "0" | "f" | "F" | "FALSE" | "false" | "False" => Some(false),
        _ => None,
    }
}

/// What to do after a record was written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Progress {
    /// Keep reading.
    More,
    /// `limitBytes` is reached: stop.
    Done,
}

/// Turns records into the bytes `kubectl logs` receives, applying `since`,
/// `stream`, `timestamps` and `limitBytes`. One per response.
#[derive(Debug)]
pub struct LogFormatter {
    options: LogOptions,
    remaining: Option<u64>,
    /// The previous record ended a line (or there was none): the next one starts a line.
    at_line_start: bool,
}

impl LogFormatter {
    pub fn new(options: LogOptions) -> Self {
        LogFormatter {
            remaining: options.limit_bytes,
            options,
            at_line_start: true,
        }
    }

    /// Appends the output for `record` to `out`.
    pub fn write(&mut self, record: &CriLogRecord<'_>, out: &mut Vec<u8>) -> Progress {
        // Skipped records still end or continue a line, as in the kubelet.
        let starts_line = self.at_line_start;
        self.at_line_start = record.content.last() == Some(&b'\n') || record.content.is_empty();
        if matches!(self.options.since, Some(since) if record.timestamp < since) {
            return Progress::More;
        }
        if !self.options.stream.includes(record.stream) {
            return Progress::More;
        }
        let mut line = Vec::with_capacity(record.content.len() + 36);
        if self.options.timestamps && starts_line {
            line.extend_from_slice(format_timestamp(&record.timestamp).as_bytes());
            line.push(b' ');
        }
        line.extend_from_slice(record.content);
        match self.remaining.as_mut() {
            None => {
                out.extend_from_slice(&line);
                Progress::More
            }
            Some(remaining) => {
                let n = line
                    .len()
                    .min(usize::try_from(*remaining).unwrap_or(usize::MAX));
                out.extend_from_slice(&line[..n]);
                *remaining -= n as u64;
                if *remaining == 0 {
                    Progress::Done
                } else {
                    Progress::More
                }
            }
        }
    }
}

/// The kubelet's output format: RFC3339 with exactly nine fraction digits, `Z` for UTC.
pub fn format_timestamp(t: &DateTime<FixedOffset>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Nanos, true)
}

/// Where the last `tail` records of `data` begin. `data` is the end of a file (or
/// all of it); `None` means more than `data` is needed to find the start. A final
/// record without its newline counts as a record, as in the kubelet.
pub fn tail_start(data: &[u8], tail: u64, data_is_whole_file: bool) -> Option<usize> {
    if tail == 0 {
        return Some(data.len());
    }
    match TailScan::new(tail).scan_back(data, 0) {
        Some(start) => usize::try_from(start).ok(),
        None => data_is_whole_file.then_some(0),
    }
}

/// Finds where the last `tail` records of a file begin while it is read backwards
/// one block at a time, keeping only a count: the memory is one block however
/// far back the records go.
#[derive(Clone, Debug)]
pub struct TailScan {
    tail: u64,
    seen: u64,
    /// No byte scanned yet: the file's last byte is still to come.
    at_end: bool,
}

impl TailScan {
    /// A scan for the last `tail` (≥ 1) records.
    pub fn new(tail: u64) -> Self {
        TailScan {
            tail,
            seen: 0,
            at_end: true,
        }
    }

    /// Scans `block`, the bytes just before those scanned so far, found at
    /// `offset` in the file. `Some(start)` once the last `tail` records are known to
    /// begin at file offset `start`; `None`: read the block before this one (at
    /// offset 0, the whole file is fewer records: they begin at 0).
    pub fn scan_back(&mut self, block: &[u8], offset: u64) -> Option<u64> {
        let mut block = block;
        if self.at_end && !block.is_empty() {
            self.at_end = false;
            // A newline at the very end closes the last record; it does not start a new one.
            block = block.strip_suffix(b"\n").unwrap_or(block);
        }
        for (i, b) in block.iter().enumerate().rev() {
            if *b == b'\n' {
                self.seen += 1;
                if self.seen >= self.tail {
                    return Some(offset + i as u64 + 1);
                }
            }
        }
        None
    }
}

#[cfg(test)]
#[path = "cri_log_tests.rs"]
mod tests;
