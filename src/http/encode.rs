//! Writing message heads: the status line or request line framing headers,
//! decimal and hex numbers without allocation, and the cached `Date` value.

use std::cell::RefCell;
use std::time::{SystemTime, UNIX_EPOCH};

use super::response::{HeaderText, reason};

/// Whether a response with this status never has a body (RFC 9110 6.4.1).
pub(crate) fn status_has_no_body(status: u16) -> bool {
    (100..200).contains(&status) || status == 204 || status == 304
}

/// Whether a handler-set header is one the server writes itself.
pub(crate) fn is_framing_header(name: &str) -> bool {
    ["content-length", "transfer-encoding", "date", "connection"]
        .iter()
        .any(|h| name.eq_ignore_ascii_case(h))
}

/// How the body length is announced in a head.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum HeadLength {
    Known(u64),
    Chunked,
    /// Neither (HTTP/1.0 stream until close, or a body-less status).
    Omit,
}

/// Appends a response head to `out`.
pub(crate) fn write_head(
    out: &mut Vec<u8>,
    version: &str,
    status: u16,
    headers: &[(HeaderText, HeaderText)],
    length: HeadLength,
    connection: Option<&str>,
) {
    out.extend_from_slice(version.as_bytes());
    out.push(b' ');
    push_u64(out, u64::from(status));
    out.push(b' ');
    out.extend_from_slice(reason(status).as_bytes());
    out.extend_from_slice(b"\r\ndate: ");
    with_date(|d| out.extend_from_slice(d));
    out.extend_from_slice(b"\r\n");
    match length {
        HeadLength::Known(n) => {
            out.extend_from_slice(b"content-length: ");
            push_u64(out, n);
            out.extend_from_slice(b"\r\n");
        }
        HeadLength::Chunked => out.extend_from_slice(b"transfer-encoding: chunked\r\n"),
        HeadLength::Omit => {}
    }
    if let Some(c) = connection {
        out.extend_from_slice(b"connection: ");
        out.extend_from_slice(c.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    for (name, value) in headers {
        if is_framing_header(name) || !header_is_safe(name, value) {
            continue;
        }
        out.extend_from_slice(name.as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"\r\n");
}

/// A header with CR or LF in it would let a handler (or whoever fed it the
/// value) inject fields or a second response; such fields are dropped.
pub(crate) fn header_is_safe(name: &str, value: &str) -> bool {
    !name.is_empty()
        && name.bytes().all(|b| b.is_ascii_graphic() && b != b':')
        && !value.bytes().any(|b| b == b'\r' || b == b'\n' || b == 0)
}

/// Appends the decimal form of `n` without allocating.
pub(crate) fn push_u64(out: &mut Vec<u8>, mut n: u64) {
    let mut digits = [0u8; 20];
    let mut i = digits.len();
    loop {
        i -= 1;
        digits[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[i..]);
}

/// Appends the hexadecimal form of `n` (a chunk size).
pub(crate) fn push_hex(out: &mut Vec<u8>, mut n: u64) {
    let mut digits = [0u8; 16];
    let mut i = digits.len();
    loop {
        i -= 1;
        digits[i] = b"0123456789abcdef"[(n & 0xf) as usize];
        n >>= 4;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[i..]);
}

thread_local! {
    static DATE: RefCell<(u64, [u8; 29])> = const { RefCell::new((u64::MAX, [0u8; 29])) };
}

/// Calls `f` with the current IMF-fixdate, e.g. `Sun, 06 Nov 1994 08:49:37 GMT`.
pub(crate) fn with_date<R>(f: impl FnOnce(&[u8]) -> R) -> R {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    DATE.with(|cell| {
        let mut cached = cell.borrow_mut();
        if cached.0 != now {
            cached.1 = format_date(now);
            cached.0 = now;
        }
        f(&cached.1)
    })
}

fn format_date(secs: u64) -> [u8; 29] {
    const DAYS: [&[u8; 3]; 7] = [b"Thu", b"Fri", b"Sat", b"Sun", b"Mon", b"Tue", b"Wed"];
    const MONTHS: [&[u8; 3]; 12] = [
        b"Jan", b"Feb", b"Mar", b"Apr", b"May", b"Jun", b"Jul", b"Aug", b"Sep", b"Oct", b"Nov",
        b"Dec",
    ];
    let days = secs / 86_400;
    let rem = secs % 86_400;
    let (h, m, s) = (rem / 3600, (rem / 60) % 60, rem % 60);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);

    let mut out = [0u8; 29];
    let two = |v: u64| [b'0' + (v / 10) as u8, b'0' + (v % 10) as u8];
    out[..3].copy_from_slice(DAYS[(days % 7) as usize]);
    out[3..5].copy_from_slice(b", ");
    out[5..7].copy_from_slice(&two(day as u64));
    out[7] = b' ';
    out[8..11].copy_from_slice(MONTHS[(month - 1) as usize]);
    out[11] = b' ';
    let y = year.clamp(0, 9999) as u64;
    out[12..14].copy_from_slice(&two(y / 100));
    out[14..16].copy_from_slice(&two(y % 100));
    out[16] = b' ';
    out[17..19].copy_from_slice(&two(h));
    out[19] = b':';
    out[20..22].copy_from_slice(&two(m));
    out[22] = b':';
    out[23..25].copy_from_slice(&two(s));
    out[25..].copy_from_slice(b" GMT");
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::borrow::Cow;

    #[test]
    fn dates_are_imf_fixdate() {
        assert_eq!(&format_date(784_111_777), b"Sun, 06 Nov 1994 08:49:37 GMT");
        assert_eq!(&format_date(0), b"Thu, 01 Jan 1970 00:00:00 GMT");
        assert_eq!(
            &format_date(1_709_210_096),
            b"Thu, 29 Feb 2024 12:34:56 GMT"
        );
    }

    #[test]
    fn heads_have_date_and_length_and_drop_framing_headers() {
        let mut out = Vec::new();
        let headers = vec![
            (
                Cow::Borrowed("content-type"),
                Cow::Borrowed("application/json"),
            ),
            (Cow::Borrowed("Content-Length"), Cow::Borrowed("999")),
            (Cow::Borrowed("x-evil"), Cow::Borrowed("a\r\nset-cookie: b")),
        ];
        write_head(
            &mut out,
            "HTTP/1.1",
            200,
            &headers,
            HeadLength::Known(12),
            None,
        );
        let text = String::from_utf8(out).unwrap();
        assert!(text.starts_with("HTTP/1.1 200 OK\r\ndate: "));
        assert!(text.contains("\r\ncontent-length: 12\r\n"));
        assert!(!text.contains("999"));
        assert!(!text.contains("evil"));
        assert!(text.ends_with("content-type: application/json\r\n\r\n"));
    }
}
