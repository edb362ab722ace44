//! Who a verified certificate names, each name with its kind.
//!
//! Configured names carry their kind (`dns:`, `uri:`, `ip:`, `cn:`) and
//! match only a presented name of that kind: an e-mail or URI subject
//! alternative name, or a common name, that happens to spell a member's DNS
//! name makes nobody a member. DNS and URI SANs and IP addresses are read
//! with rustls-webpki's own name API; the subject common name, which webpki
//! does not offer, with the small DER reader below. This module only reads
//! certificates rustls has already verified against the CA.

use rustls::pki_types::{CertificateDer, DnsName, ServerName};
use std::fmt;
use std::net::IpAddr;
use webpki::EndEntityCert;

/// A certificate name in the configuration, with its kind.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CertName {
    /// A DNS subject alternative name, compared exactly (ASCII case
    /// ignored; a configured name never acts as a wildcard).
    Dns(String),
    /// A URI subject alternative name, compared exactly.
    Uri(String),
    /// An IP address subject alternative name.
    Ip(IpAddr),
    /// The subject common name, compared exactly.
    Cn(String),
}

impl fmt::Display for CertName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CertName::Dns(n) => write!(f, "dns:{n}"),
            CertName::Uri(n) => write!(f, "uri:{n}"),
            CertName::Ip(n) => write!(f, "ip:{n}"),
            CertName::Cn(n) => write!(f, "cn:{n}"),
        }
    }
}

/// A configured name that cannot be used, with the spelling to use instead.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NameError {
    pub message: String,
    pub fix: String,
}

impl fmt::Display for NameError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}; fix: {}", self.message, self.fix)
    }
}

fn refuse(message: impl Into<String>, fix: impl Into<String>) -> NameError {
    NameError {
        message: message.into(),
        fix: fix.into(),
    }
}

/// Splits `kind:value` when `kind` is one we know; `None` otherwise.
fn split_kind(s: &str) -> Option<(&str, &str)> {
    let (kind, value) = s.split_once(':')?;
    matches!(kind, "dns" | "uri" | "ip" | "cn" | "email").then_some((kind, value))
}

fn dns(value: &str, entry: &str) -> Result<CertName, NameError> {
    if DnsName::try_from(value).is_err() {
        return Err(refuse(
            format!("\"{entry}\" is not a DNS name"),
            "write the DNS name exactly as in the certificate's subject alternative names, e.g. dns:node1.ferrium.internal",
        ));
    }
    Ok(CertName::Dns(value.to_string()))
}

fn uri(value: &str, entry: &str) -> Result<CertName, NameError> {
    if value.is_empty() || value.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(refuse(
            format!("\"{entry}\" is not a URI"),
            "write the URI exactly as in the certificate, e.g. uri:spiffe://ferrium.internal/node/1",
        ));
    }
    Ok(CertName::Uri(value.to_string()))
}

impl CertName {
    /// A `security.cert_roles` name: `dns:`, `uri:`, `ip:` or `cn:` and the
    /// value. A name without a kind is refused: it used to match any field,
    /// and guessing one would silently change who has a role.
    pub fn role_name(entry: &str) -> Result<CertName, NameError> {
        let kinds = |v: &str| {
            format!(
                "write \"cn:{v}\" for the subject common name, \"dns:{v}\" for a DNS subject alternative name, \"uri:{v}\" for a URI one or \"ip:{v}\" for an IP address"
            )
        };
        let Some((kind, value)) = split_kind(entry) else {
            return Err(refuse(
                format!("\"{entry}\" does not say which certificate name it means"),
                kinds(entry),
            ));
        };
        match kind {
            "dns" => dns(value, entry),
            "uri" => uri(value, entry),
            "ip" => value.parse().map(CertName::Ip).map_err(|_| {
                refuse(
                    format!("\"{entry}\" is not an IP address"),
                    "write e.g. ip:10.0.0.7 or ip:fd00::7",
                )
            }),
            "cn" if !value.is_empty() => Ok(CertName::Cn(value.to_string())),
            "cn" => Err(refuse(
                format!("\"{entry}\" names no common name"),
                "write the subject common name after cn:, e.g. cn:ops@example.com",
            )),
            _ => Err(refuse(
                format!("\"{entry}\": e-mail names are not used to authenticate"),
                kinds(value),
            )),
        }
    }

    /// A `security.peer_names` entry: a DNS name (bare or as `dns:`), or a
    /// URI as `uri:`. Members are never recognised by a common name, an
    /// e-mail name or an IP address, which other certificates from the
    /// same CA may carry too.
    pub fn peer_name(entry: &str) -> Result<CertName, NameError> {
        let fix = "name members by the DNS name in their certificates' subject alternative names (node1.ferrium.internal or dns:node1.ferrium.internal), or by a URI one (uri:spiffe://...)";
        match split_kind(entry) {
            None if entry.contains(':') => Err(refuse(
                format!("\"{entry}\" is not a DNS name"),
                format!("a URI subject alternative name is written \"uri:{entry}\""),
            )),
            None => dns(entry, entry),
            Some(("dns", value)) => dns(value, entry),
            Some(("uri", value)) => uri(value, entry),
            Some(("cn", _)) => Err(refuse(
                format!(
                    "\"{entry}\": members are not recognised by their subject common name, which any client certificate may spell the same"
                ),
                fix,
            )),
            Some(("email", _)) => Err(refuse(
                format!("\"{entry}\": members are not recognised by an e-mail name"),
                fix,
            )),
            Some(_) => Err(refuse(
                format!("\"{entry}\": members are not recognised by an IP address"),
                fix,
            )),
        }
    }
}

/// The names of a certificate rustls has verified, parsed once per check.
pub struct CertNames<'a> {
    cert: EndEntityCert<'a>,
}

impl<'a> CertNames<'a> {
    /// `None` for a certificate webpki cannot parse (rustls would not have
    /// accepted it).
    pub fn parse(der: &'a CertificateDer<'a>) -> Option<CertNames<'a>> {
        EndEntityCert::try_from(der)
            .ok()
            .map(|cert| CertNames { cert })
    }

    /// Whether the certificate carries `name`, of the same kind.
    pub fn has(&self, name: &CertName) -> bool {
        match name {
            CertName::Dns(n) => self.dns_names().any(|d| d.eq_ignore_ascii_case(n)),
            CertName::Uri(n) => self.cert.valid_uri_names().any(|u| u == n),
            CertName::Ip(ip) => self
                .cert
                .verify_is_valid_for_subject_name(&ServerName::IpAddress((*ip).into()))
                .is_ok(),
            CertName::Cn(n) => common_names(self.cert.subject()).any(|c| c == n),
        }
    }

    /// The DNS subject alternative names.
    pub fn dns_names(&self) -> impl Iterator<Item = &'a str> {
        self.cert.valid_dns_names()
    }
}

/// One DER element: tag, contents, and the rest of the input.
fn der(input: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, rest) = input.split_first()?;
    let (&first, rest) = rest.split_first()?;
    let (len, rest) = if first < 0x80 {
        (first as usize, rest)
    } else {
        let n = (first & 0x7f) as usize;
        if n == 0 || n > 4 || rest.len() < n {
            return None;
        }
        let len = rest[..n]
            .iter()
            .fold(0usize, |acc, &b| (acc << 8) | b as usize);
        (len, &rest[n..])
    };
    if rest.len() < len {
        return None;
    }
    Some((tag, &rest[..len], &rest[len..]))
}

const SEQUENCE: u8 = 0x30;
const SET: u8 = 0x31;
const OID: u8 = 0x06;
/// The string types a common name is written in that are text as they are.
const UTF8_STRING: u8 = 0x0c;
const PRINTABLE_STRING: u8 = 0x13;
const IA5_STRING: u8 = 0x16;
/// 2.5.4.3, commonName.
const OID_CN: &[u8] = &[0x55, 0x04, 0x03];

/// The common names in the contents of a subject `Name` (a SEQUENCE OF
/// SET OF {type, value}). Stops quietly at anything malformed.
fn common_names(subject: &[u8]) -> impl Iterator<Item = &str> {
    let mut names = Vec::new();
    let _ = collect_common_names(subject, &mut names);
    names.into_iter()
}

fn collect_common_names<'a>(subject: &'a [u8], names: &mut Vec<&'a str>) -> Option<()> {
    let mut rdns = subject;
    while !rdns.is_empty() {
        let (SET, set, next) = der(rdns)? else {
            return None;
        };
        rdns = next;
        let mut attrs = set;
        while !attrs.is_empty() {
            let (SEQUENCE, attr, next) = der(attrs)? else {
                return None;
            };
            attrs = next;
            let (OID, oid, value) = der(attr)? else {
                return None;
            };
            if oid != OID_CN {
                continue;
            }
            let (UTF8_STRING | PRINTABLE_STRING | IA5_STRING, text, _) = der(value)? else {
                continue;
            };
            if let Ok(s) = std::str::from_utf8(text) {
                names.push(s);
            }
        }
    }
    Some(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn der_lengths() {
        assert_eq!(der(&[0x30, 0x00]), Some((0x30, &[][..], &[][..])));
        assert_eq!(
            der(&[0x04, 0x01, 0xaa, 0xbb]),
            Some((4, &[0xaa][..], &[0xbb][..]))
        );
        let mut long = vec![0x04, 0x81, 0x80];
        long.extend(std::iter::repeat_n(7u8, 0x80));
        assert_eq!(der(&long).map(|(_, c, _)| c.len()), Some(0x80));
        assert_eq!(der(&[0x04, 0x05, 0x00]), None);
        assert_eq!(der(&[0x04, 0x80]), None);
        assert_eq!(der(&[0x04]), None);
    }

    #[test]
    fn common_names_of_a_subject() {
        // SET { SEQUENCE { OID 2.5.4.6 (C), PrintableString "NL" } },
        // SET { SEQUENCE { OID 2.5.4.3 (CN), UTF8String "ops" } }
        let subject = [
            0x31, 0x0b, 0x30, 0x09, 0x06, 0x03, 0x55, 0x04, 0x06, 0x13, 0x02, b'N', b'L', 0x31,
            0x0c, 0x30, 0x0a, 0x06, 0x03, 0x55, 0x04, 0x03, 0x0c, 0x03, b'o', b'p', b's',
        ];
        assert_eq!(common_names(&subject).collect::<Vec<_>>(), vec!["ops"]);
        assert_eq!(common_names(&subject[..20]).count(), 0);
        assert_eq!(common_names(&[0xff; 16]).count(), 0);
        assert_eq!(common_names(b"").count(), 0);
    }

    #[test]
    fn garbage_is_no_certificate() {
        let der = CertificateDer::from(&[0x30, 0x03, 0x30, 0x01, 0x00][..]);
        assert!(CertNames::parse(&der).is_none());
        let der = CertificateDer::from(&[0xff; 64][..]);
        assert!(CertNames::parse(&der).is_none());
    }

    #[test]
    fn role_names_need_a_kind() {
        assert_eq!(
            CertName::role_name("cn:ops@example.com"),
            Ok(CertName::Cn("ops@example.com".into()))
        );
        assert_eq!(
            CertName::role_name("dns:app.example.com"),
            Ok(CertName::Dns("app.example.com".into()))
        );
        assert_eq!(
            CertName::role_name("uri:spiffe://x/app"),
            Ok(CertName::Uri("spiffe://x/app".into()))
        );
        assert_eq!(
            CertName::role_name("ip:10.0.0.7"),
            Ok(CertName::Ip("10.0.0.7".parse().unwrap()))
        );
        let e = CertName::role_name("ops@example.com").unwrap_err();
        assert!(e.fix.contains("cn:ops@example.com"), "{e}");
        assert!(CertName::role_name("email:ops@example.com").is_err());
        assert!(CertName::role_name("dns:not a name").is_err());
        assert!(CertName::role_name("ip:10.0.0").is_err());
        assert!(CertName::role_name("cn:").is_err());
        assert!(CertName::role_name("uri:").is_err());
    }

    #[test]
    fn peer_names_are_dns_or_uri() {
        assert_eq!(
            CertName::peer_name("node1.ferrium.internal"),
            Ok(CertName::Dns("node1.ferrium.internal".into()))
        );
        assert_eq!(
            CertName::peer_name("dns:node1.ferrium.internal"),
            Ok(CertName::Dns("node1.ferrium.internal".into()))
        );
        assert_eq!(
            CertName::peer_name("uri:spiffe://x/node/1"),
            Ok(CertName::Uri("spiffe://x/node/1".into()))
        );
        for bad in [
            "cn:node1",
            "email:a@b",
            "ip:127.0.0.1",
            "spiffe://x/1",
            "not a name",
        ] {
            assert!(CertName::peer_name(bad).is_err(), "{bad}");
        }
        let e = CertName::peer_name("spiffe://x/1").unwrap_err();
        assert!(e.fix.contains("uri:spiffe://x/1"), "{e}");
    }
}
