//! Targets that are IPv4 addresses in disguise ("2130706433", "0x7f.1",
//! "127.1", "127.0.0.1."): a parent proxy resolves them with getaddrinfo,
//! whose `inet_aton` reads them as the address, so `deny_destinations`
//! must read them the same way before the parent is asked.

use std::net::{IpAddr, Ipv4Addr};

/// What a target host is, read as generously as a resolver would.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Host {
    /// An address, in whatever notation.
    Ip(IpAddr),
    /// A name: only its resolver knows the address.
    Name,
    /// Ends in a number but is no address (`1.2.3.4.5`, `0x1g`,
    /// `999.1`): no honest name looks like that, so it is refused rather
    /// than left to a resolver's reading.
    Malformed,
}

/// Classifies `host` (brackets around IPv6 allowed). The rule is the URL
/// standard's "ends in a number": a host whose last label is decimal or
/// `0x` hex is an IPv4 address of one to four parts (decimal, `0x` hex or
/// leading-`0` octal, the last part filling the remaining bytes).
pub(crate) fn classify(host: &str) -> Host {
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    if let Ok(ip) = bare.parse::<IpAddr>() {
        return Host::Ip(ip);
    }
    let name = bare.strip_suffix('.').unwrap_or(bare);
    let last = name.rsplit('.').next().unwrap_or_default();
    if !numeric(last) {
        return Host::Name;
    }
    ipv4(name).map_or(Host::Malformed, |v4| Host::Ip(IpAddr::V4(v4)))
}

fn numeric(label: &str) -> bool {
    let hex = label
        .strip_prefix("0x")
        .or_else(|| label.strip_prefix("0X"));
    match hex {
        Some(h) => h.bytes().all(|b| b.is_ascii_hexdigit()),
        None => !label.is_empty() && label.bytes().all(|b| b.is_ascii_digit()),
    }
}

fn ipv4(name: &str) -> Option<Ipv4Addr> {
    let parts = name.split('.').map(part).collect::<Option<Vec<u64>>>()?;
    let (last, init) = parts.split_last()?;
    if parts.len() > 4 || init.iter().any(|n| *n > 255) {
        return None;
    }
    // The last part fills the bytes the others left: 5 - parts bytes.
    let room = 8 * (5 - parts.len() as u32);
    if room < 64 && *last >= 1u64 << room {
        return None;
    }
    let mut value = *last;
    for (i, n) in init.iter().enumerate() {
        value += n << (8 * (3 - i));
    }
    u32::try_from(value).ok().map(Ipv4Addr::from)
}

/// One part: `0x` hex, leading-`0` octal, else decimal.
fn part(p: &str) -> Option<u64> {
    let (digits, radix) = if let Some(h) = p.strip_prefix("0x").or_else(|| p.strip_prefix("0X")) {
        (h, 16)
    } else if p.len() > 1 && p.starts_with('0') {
        (&p[1..], 8)
    } else {
        (p, 10)
    };
    if p.is_empty() || !digits.chars().all(|c| c.is_digit(radix)) {
        return None;
    }
    if digits.is_empty() {
        return Some(0);
    }
    u64::from_str_radix(digits, radix).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v4(s: &str) -> Host {
        Host::Ip(IpAddr::V4(s.parse().unwrap()))
    }

    #[test]
    fn disguised_ipv4_is_read_as_inet_aton_reads_it() {
        for h in [
            "2130706433",
            "0x7f000001",
            "0x7f.1",
            "127.1",
            "127.0.1",
            "0177.0.0.1",
            "127.0.0.1.",
            "0X7F.0.0.01",
        ] {
            assert_eq!(classify(h), v4("127.0.0.1"), "{h}");
        }
        assert_eq!(classify("169.254.43518"), v4("169.254.169.254"));
        assert_eq!(classify("[::1]"), Host::Ip("::1".parse().unwrap()));
        for h in [
            "1.2.3.4.5",
            "256.1.1.1",
            "1.0x1000000",
            "4294967296",
            "1.2.3.256",
            "09",
            "1..1",
        ] {
            assert_eq!(classify(h), Host::Malformed, "{h}");
        }
        for h in [
            "example.com",
            "1.2.3.com",
            "svc",
            "0x7f.example",
            "a1",
            "0x1g",
        ] {
            assert_eq!(classify(h), Host::Name, "{h}");
        }
    }
}
