use chrono::{Datelike, TimeZone};
use proptest::prelude::*;

use super::*;

fn q(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn now() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 1, 2, 3, 4, 5).unwrap()
}

/// Formats every line of `file` with `options`, as one response would.
fn render(file: &str, options: LogOptions) -> String {
    let mut formatter = LogFormatter::new(options);
    let mut out = Vec::new();
    for line in file.split_inclusive('\n') {
        let record = parse_record(line.as_bytes()).expect(line);
        if formatter.write(&record, &mut out) == Progress::Done {
            break;
        }
    }
    String::from_utf8(out).unwrap()
}

const LOG: &str = "\
2026-01-02T03:04:01.000000001Z stdout F one
2026-01-02T03:04:02.5Z stderr F two (stderr)
2026-01-02T03:04:03Z stdout P thr
2026-01-02T03:04:03.1Z stdout P e
2026-01-02T03:04:03.2Z stdout F e joined
2026-01-02T03:04:04Z stdout F four
";

#[test]
fn parses_full_and_partial_records_of_both_streams() {
    let r = parse_record(b"2026-01-02T03:04:01.123456789Z stdout F hello world\n").unwrap();
    assert_eq!(r.stream, LogStream::Stdout);
    assert!(!r.partial);
    assert_eq!(r.content, b"hello world\n");
    assert_eq!(
        format_timestamp(&r.timestamp),
        "2026-01-02T03:04:01.123456789Z"
    );

    let r = parse_record(b"2026-01-02T03:04:01+02:00 stderr P half\n").unwrap();
    assert_eq!(r.stream, LogStream::Stderr);
    assert!(r.partial);
    assert_eq!(r.content, b"half", "a partial record loses its newline");

    // Extra tags after `:` are ignored; content keeps its own spaces.
    let r = parse_record(b"2026-01-02T03:04:01Z stdout F:x  two  spaces\n").unwrap();
    assert_eq!(r.content, b" two  spaces\n");
}

#[test]
fn refuses_lines_that_are_not_cri_records() {
    assert_eq!(parse_record(b"garbage"), Err(CriLogError::NoTimestamp));
    assert!(matches!(
        parse_record(b"yesterday stdout F x"),
        Err(CriLogError::BadTimestamp(_))
    ));
    assert_eq!(
        parse_record(b"2026-01-02T03:04:01Z stdout"),
        Err(CriLogError::NoStream)
    );
    assert_eq!(
        parse_record(b"2026-01-02T03:04:01Z stdin F x"),
        Err(CriLogError::BadStream("stdin".into()))
    );
    assert_eq!(
        parse_record(b"2026-01-02T03:04:01Z stdout F"),
        Err(CriLogError::NoTag)
    );
}

#[test]
fn output_joins_partial_records_and_mixes_streams() {
    assert_eq!(
        render(LOG, LogOptions::default()),
        "one\ntwo (stderr)\nthree joined\nfour\n"
    );
}

#[test]
fn timestamps_prefix_each_logical_line_once() {
    let out = render(
        LOG,
        LogOptions {
            timestamps: true,
            ..Default::default()
        },
    );
    assert_eq!(
        out,
        "2026-01-02T03:04:01.000000001Z one\n\
         2026-01-02T03:04:02.500000000Z two (stderr)\n\
         2026-01-02T03:04:03.000000000Z three joined\n\
         2026-01-02T03:04:04.000000000Z four\n"
    );
}

#[test]
fn since_skips_older_records() {
    let since = Utc.with_ymd_and_hms(2026, 1, 2, 3, 4, 2).unwrap();
    let out = render(
        LOG,
        LogOptions {
            since: Some(since),
            ..Default::default()
        },
    );
    assert_eq!(out, "two (stderr)\nthree joined\nfour\n");
}

#[test]
fn limit_bytes_counts_prefixes_and_cuts_the_last_line() {
    assert_eq!(
        render(
            LOG,
            LogOptions {
                limit_bytes: Some(6),
                ..Default::default()
            }
        ),
        "one\ntw"
    );
    let out = render(
        LOG,
        LogOptions {
            limit_bytes: Some(34),
            timestamps: true,
            ..Default::default()
        },
    );
    assert_eq!(out, "2026-01-02T03:04:01.000000001Z one");
}

#[test]
fn stream_selection_keeps_one_stream() {
    let only_err = LogOptions {
        stream: StreamSelection::Stderr,
        ..Default::default()
    };
    assert_eq!(render(LOG, only_err), "two (stderr)\n");
}

#[test]
fn tail_start_finds_the_last_records() {
    let data = LOG.as_bytes();
    let start = |n| tail_start(data, n, true).map(|i| std::str::from_utf8(&data[i..]).unwrap());
    assert_eq!(start(0), Some(""));
    assert_eq!(start(1), Some("2026-01-02T03:04:04Z stdout F four\n"));
    assert_eq!(start(2).map(|s| s.lines().count()), Some(2));
    assert_eq!(
        start(100),
        Some(LOG),
        "more lines than the file has: all of it"
    );
    // A chunk from the middle of a file cannot tell where its first record starts.
    assert_eq!(tail_start(&data[40..], 100, false), None);
    // A last record still being written counts as one.
    assert_eq!(tail_start(b"a\nb\npartial", 1, true), Some(4));
}

#[test]
fn query_options_as_the_api_server_sends_them() {
    let o = LogOptions::from_query(
        &q(&[
            ("follow", "true"),
            ("previous", "1"),
            ("timestamps", "true"),
            ("tailLines", "10"),
            ("limitBytes", "500"),
            ("sinceSeconds", "60"),
        ]),
        now(),
    )
    .unwrap();
    assert!(o.follow && o.previous && o.timestamps);
    assert_eq!((o.tail_lines, o.limit_bytes), (Some(10), Some(500)));
    assert_eq!(o.since, Some(now() - chrono::Duration::seconds(60)));

    let o = LogOptions::from_query(
        &q(&[("sinceTime", "2026-01-01T00:00:00Z"), ("tail", "all")]),
        now(),
    )
    .unwrap();
    assert_eq!(
        o.since,
        Some(Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap())
    );
    assert_eq!(o.tail_lines, None);
    assert_eq!(
        LogOptions::from_query(&q(&[("tail", "3")]), now())
            .unwrap()
            .tail_lines,
        Some(3)
    );
}

#[test]
fn query_options_the_kubelet_refuses() {
    for bad in [
        &[("tailLines", "-1")][..],
        &[("limitBytes", "0")],
        &[("sinceSeconds", "0")],
        &[("sinceSeconds", "5"), ("sinceTime", "2026-01-01T00:00:00Z")],
        &[("sinceTime", "yesterday")],
        &[("follow", "yes")],
        &[("stream", "Stdin")],
        &[("stream", "Stdout"), ("tailLines", "1")],
    ] {
        assert!(LogOptions::from_query(&q(bad), now()).is_err(), "{bad:?}");
    }
}

#[test]
fn huge_since_seconds_means_every_record() {
    // Past what a chrono Duration holds, and past the earliest DateTime.
    for seconds in [i64::MAX, i64::MAX / 1000, 400_000 * 365 * 86_400] {
        let value = seconds.to_string();
        let o = LogOptions::from_query(&q(&[("sinceSeconds", value.as_str())]), now()).unwrap();
        assert_eq!(o.since, None, "sinceSeconds={seconds}");
    }
    // Just inside the range: a real bound.
    let o = LogOptions::from_query(&q(&[("sinceSeconds", "3153600000")]), now()).unwrap();
    assert_eq!(o.since.map(|t| t.year()), Some(1926));
}

#[test]
fn since_time_far_away_is_taken_as_it_is() {
    let past = LogOptions::from_query(&q(&[("sinceTime", "0001-01-01T00:00:00Z")]), now()).unwrap();
    assert_eq!(render(LOG, past).lines().count(), 4);
    let future =
        LogOptions::from_query(&q(&[("sinceTime", "9999-12-31T23:59:59+23:59")]), now()).unwrap();
    assert_eq!(render(LOG, future), "");
}

proptest! {
    /// Scanning a file backwards in blocks of any size finds the tail where
    /// scanning all of it at once does.
    #[test]
    fn tail_scan_in_blocks_agrees_with_the_whole_file(
        lines in proptest::collection::vec("[a-z]{0,5}", 0..12),
        newline_at_end in any::<bool>(),
        tail in 1u64..15,
        block in 1usize..9,
    ) {
        let mut data = lines.join("\n");
        if newline_at_end {
            data.push('\n');
        }
        let data = data.as_bytes();
        let mut scan = TailScan::new(tail);
        let mut end = data.len();
        let mut found = None;
        while end > 0 && found.is_none() {
            let from = end.saturating_sub(block);
            found = scan.scan_back(&data[from..end], from as u64);
            end = from;
        }
        let whole = tail_start(data, tail, true).map(|i| i as u64);
        prop_assert_eq!(found.or(Some(0)), whole);
    }

    /// However a line is split into partial records, the output is the line.
    #[test]
    fn partial_records_reassemble_any_split(text in "[a-z ]{1,40}", cuts in proptest::collection::vec(0usize..40, 0..4)) {
        let mut cuts: Vec<usize> = cuts.into_iter().filter(|c| *c > 0 && *c < text.len()).collect();
        cuts.sort();
        cuts.dedup();
        let mut file = String::new();
        let mut from = 0;
        for cut in cuts {
            file.push_str(&format!("2026-01-02T03:04:01Z stdout P {}\n", &text[from..cut]));
            from = cut;
        }
        file.push_str(&format!("2026-01-02T03:04:01Z stdout F {}\n", &text[from..]));
        let out = render(&file, LogOptions { timestamps: true, ..Default::default() });
        prop_assert_eq!(out, format!("2026-01-02T03:04:01.000000000Z {text}\n"));
    }
}
