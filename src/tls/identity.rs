//! Who a verified client certificate names: its subject distinguished name
//! (and the common names in it) and its subjectAltName DNS names and URIs.
//! Read once per connection, right after the TLS handshake, and carried
//! into every request of the connection as [`super::TlsConnectInfo`].
//!
//! Distinguished names use the RFC 4514 string form, most specific part
//! first (`CN=reparent-bot,OU=ops,O=Example,C=US`), which is what
//! `openssl x509 -noout -subject -nameopt RFC2253` prints and how Go's
//! `pkix.Name.String()` (Vitess's `--grpc-auth-mtls-allowed-substrings`)
//! renders the usual attributes. Attribute types RFC 4514 names (`CN`, `L`,
//! `ST`, `O`, `OU`, `C`, `STREET`, `DC`, `UID`) are written by name, any
//! other by its dotted OID with the value as `#` + the hex of its DER.

use std::fmt;

use rustls::pki_types::CertificateDer;
use x509_parser::prelude::{FromDer, GeneralName, X509Certificate};

/// An attribute type and value of a distinguished name.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Attribute {
    /// `CN`, `O`, ... in upper case, or a dotted OID.
    pub kind: String,
    /// The value, unescaped; `#`-prefixed hex of the DER value for types
    /// without a name or values that are not strings.
    pub value: String,
}

/// A distinguished name: relative distinguished names, most specific first
/// (RFC 4514 order), each a set of attributes (usually one).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DistinguishedName(pub Vec<Vec<Attribute>>);

/// A distinguished name that cannot be parsed (RFC 4514 string form).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not a distinguished name ({0}); expected e.g. CN=reparent-bot,O=Example")]
pub struct DnSyntaxError(String);

/// RFC 4514's attribute type names, by OID.
const NAMED_TYPES: [(&str, &str); 9] = [
    ("2.5.4.3", "CN"),
    ("2.5.4.7", "L"),
    ("2.5.4.8", "ST"),
    ("2.5.4.10", "O"),
    ("2.5.4.11", "OU"),
    ("2.5.4.6", "C"),
    ("2.5.4.9", "STREET"),
    ("0.9.2342.19200300.100.1.25", "DC"),
    ("0.9.2342.19200300.100.1.1", "UID"),
];

impl DistinguishedName {
    /// Parses the RFC 4514 string form. Attribute types are matched without
    /// regard to case (`cn=` is `CN=`); spaces around `,`, `+` and `=` are
    /// ignored; `\,`, `\+`, `\"`, `\\`, `\<`, `\>`, `\;`, `\=`, `\#`, `\ `
    /// and `\XX` (hex) escapes are understood.
    pub fn parse(text: &str) -> Result<DistinguishedName, DnSyntaxError> {
        let mut rdns: Vec<Vec<Attribute>> = Vec::new();
        let mut current: Vec<Attribute> = Vec::new();
        let mut chars = text.chars().peekable();
        loop {
            // type
            let mut kind = String::new();
            for c in chars.by_ref() {
                if c == '=' {
                    break;
                }
                kind.push(c);
            }
            let kind = kind.trim();
            if kind.is_empty() {
                return Err(DnSyntaxError(format!("an attribute without a type in {text:?}")));
            }
            if !kind
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '.' || c == '-')
            {
                return Err(DnSyntaxError(format!("bad attribute type {kind:?}")));
            }
            let kind = canonical_type(kind);
            // value, up to an unescaped ',' or '+'
            let mut raw: Vec<u8> = Vec::new();
            let mut trailing_spaces = 0usize;
            let mut separator = None;
            while let Some(c) = chars.next() {
                match c {
                    ',' | '+' => {
                        separator = Some(c);
                        break;
                    }
                    '\\' => {
                        trailing_spaces = 0;
                        let Some(next) = chars.next() else {
                            return Err(DnSyntaxError(format!("a lone \\ at the end of {text:?}")));
                        };
                        if next.is_ascii_hexdigit() {
                            let Some(low) = chars.next().filter(char::is_ascii_hexdigit) else {
                                return Err(DnSyntaxError(format!("a bad \\XX escape in {text:?}")));
                            };
                            let byte = u8::from_str_radix(&format!("{next}{low}"), 16)
                                .map_err(|e| DnSyntaxError(e.to_string()))?;
                            raw.push(byte);
                        } else {
                            let mut buf = [0u8; 4];
                            raw.extend_from_slice(next.encode_utf8(&mut buf).as_bytes());
                        }
                    }
                    ' ' if raw.is_empty() => {}
                    c => {
                        trailing_spaces = if c == ' ' { trailing_spaces + 1 } else { 0 };
                        let mut buf = [0u8; 4];
                        raw.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
                    }
                }
            }
            raw.truncate(raw.len() - trailing_spaces);
            let value = String::from_utf8(raw)
                .map_err(|_| DnSyntaxError(format!("the value of {kind} is not UTF-8")))?;
            if value.is_empty() {
                return Err(DnSyntaxError(format!("{kind} has an empty value")));
            }
            let value = if value.starts_with('#') {
                value.to_ascii_lowercase()
            } else {
                value
            };
            current.push(Attribute { kind, value });
            match separator {
                Some('+') => {}
                Some(_) => rdns.push(std::mem::take(&mut current)),
                None => {
                    rdns.push(current);
                    break;
                }
            }
        }
        Ok(DistinguishedName(rdns))
    }

    /// The values of its common names (`CN`), most specific first.
    pub fn common_names(&self) -> impl Iterator<Item = &str> {
        self.0
            .iter()
            .flatten()
            .filter(|a| a.kind == "CN")
            .map(|a| a.value.as_str())
    }
}

/// `cn` is `CN`; a dotted OID of a named type is that name.
fn canonical_type(kind: &str) -> String {
    let upper = kind.to_ascii_uppercase();
    NAMED_TYPES
        .iter()
        .find(|(oid, _)| *oid == kind)
        .map_or(upper, |(_, name)| (*name).to_string())
}

impl fmt::Display for DistinguishedName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, rdn) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            for (j, a) in rdn.iter().enumerate() {
                if j > 0 {
                    f.write_str("+")?;
                }
                write!(f, "{}=", a.kind)?;
                if a.value.starts_with('#') && !NAMED_TYPES.iter().any(|(_, n)| *n == a.kind) {
                    f.write_str(&a.value)?;
                } else {
                    write_escaped(f, &a.value)?;
                }
            }
        }
        Ok(())
    }
}

/// RFC 4514 escaping of a string value.
fn write_escaped(f: &mut fmt::Formatter<'_>, value: &str) -> fmt::Result {
    let last = value.chars().count().saturating_sub(1);
    for (i, c) in value.chars().enumerate() {
        let special = matches!(c, ',' | '+' | '"' | '\\' | '<' | '>' | ';' | '=')
            || (i == 0 && (c == '#' || c == ' '))
            || (i == last && c == ' ');
        if special {
            write!(f, "\\{c}")?;
        } else if c.is_control() {
            let mut buf = [0u8; 4];
            for b in c.encode_utf8(&mut buf).bytes() {
                write!(f, "\\{b:02X}")?;
            }
        } else {
            write!(f, "{c}")?;
        }
    }
    Ok(())
}

/// The names of a client certificate (see the module doc).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PeerIdentity {
    /// The leaf certificate's subject.
    pub subject: DistinguishedName,
    /// Its subjectAltName DNS names.
    pub dns_names: Vec<String>,
    /// Its subjectAltName URIs (e.g. SPIFFE IDs).
    pub uris: Vec<String>,
    /// The subject of every certificate the client presented, leaf first
    /// (Vitess's `--grpc-auth-mtls-allowed-substrings` looks at them all).
    pub chain_subjects: Vec<String>,
    /// Why the leaf certificate's names could not be read (an
    /// identity with an error matches nothing).
    pub error: Option<String>,
}

impl PeerIdentity {
    /// The identity of a presented chain (leaf first); `None` for an empty one.
    pub fn from_chain(chain: &[CertificateDer<'_>]) -> Option<PeerIdentity> {
        let (leaf, rest) = chain.split_first()?;
        let mut identity = match X509Certificate::from_der(leaf.as_ref()) {
            Ok((_, cert)) => {
                let mut identity = PeerIdentity {
                    subject: subject_of(&cert),
                    ..PeerIdentity::default()
                };
                match cert.subject_alternative_name() {
                    Ok(Some(san)) => {
                        for name in &san.value.general_names {
                            match name {
                                GeneralName::DNSName(n) => identity.dns_names.push((*n).to_string()),
                                GeneralName::URI(u) => identity.uris.push((*u).to_string()),
                                _ => {}
                            }
                        }
                    }
                    Ok(None) => {}
                    Err(e) => identity.error = Some(format!("its subjectAltName cannot be read: {e}")),
                }
                identity
            }
            Err(e) => PeerIdentity {
                error: Some(format!("the client certificate cannot be parsed: {e}")),
                ..PeerIdentity::default()
            },
        };
        identity.chain_subjects.push(identity.subject.to_string());
        for cert in rest {
            if let Ok((_, cert)) = X509Certificate::from_der(cert.as_ref()) {
                identity.chain_subjects.push(subject_of(&cert).to_string());
            }
        }
        Some(identity)
    }
}

impl fmt::Display for PeerIdentity {
    /// `subject "CN=x,O=y", DNS [a, b], URI [u]`: names only, never key material.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "subject {:?}", self.subject.to_string())?;
        if !self.dns_names.is_empty() {
            write!(f, ", DNS [{}]", self.dns_names.join(", "))?;
        }
        if !self.uris.is_empty() {
            write!(f, ", URI [{}]", self.uris.join(", "))?;
        }
        if let Some(e) = &self.error {
            write!(f, " ({e})")?;
        }
        Ok(())
    }
}

fn subject_of(cert: &X509Certificate<'_>) -> DistinguishedName {
    let mut rdns: Vec<Vec<Attribute>> = cert
        .subject()
        .iter_rdn()
        .map(|rdn| {
            rdn.iter()
                .map(|atv| {
                    let oid = atv.attr_type().to_id_string();
                    let named = NAMED_TYPES.iter().find(|(o, _)| *o == oid);
                    match (named, atv.as_str()) {
                        (Some((_, name)), Ok(s)) => Attribute {
                            kind: (*name).to_string(),
                            value: s.to_string(),
                        },
                        _ => Attribute {
                            kind: named.map_or(oid.clone(), |(_, n)| (*n).to_string()),
                            value: der_hex(atv.attr_value()),
                        },
                    }
                })
                .collect()
        })
        .collect();
    rdns.reverse();
    DistinguishedName(rdns)
}

/// `#` + the hex of a value's DER (type, length and content), RFC 4514's
/// form for values that are not strings of a named type.
fn der_hex(any: &x509_parser::asn1_rs::Any<'_>) -> String {
    use x509_parser::asn1_rs::ToDer;
    let der = any.to_der_vec().unwrap_or_else(|_| any.data.to_vec());
    let mut out = String::with_capacity(1 + 2 * der.len());
    out.push('#');
    for b in der {
        out.push_str(&format!("{b:02x}"));
    }
    out
}

#[cfg(test)]
mod tests {
    use rcgen::{CertificateParams, DnType, KeyPair, SanType};

    use super::*;

    fn dn(s: &str) -> DistinguishedName {
        DistinguishedName::parse(s).expect("valid DN")
    }

    #[test]
    fn distinguished_names_parse_round_trip_and_compare_without_case_or_spacing() {
        let a = dn("CN=reparent-bot,OU=ops,O=Example\\, Inc.,C=US");
        assert_eq!(a.0.len(), 4);
        assert_eq!(a.0[2][0].value, "Example, Inc.");
        assert_eq!(a.to_string(), "CN=reparent-bot,OU=ops,O=Example\\, Inc.,C=US");
        assert_eq!(a, dn("cn = reparent-bot , ou=ops, o=Example\\2C Inc., c=US"));
        assert_eq!(a, dn("2.5.4.3=reparent-bot,OU=ops,O=Example\\, Inc.,C=US"));
        assert_ne!(a, dn("CN=Reparent-bot,OU=ops,O=Example\\, Inc.,C=US"));
        assert_ne!(a, dn("CN=reparent-bot,O=Example\\, Inc.,C=US"));
        let multi = dn("CN=a+UID=7,O=x");
        assert_eq!(multi.0[0].len(), 2);
        assert_eq!(multi.to_string(), "CN=a+UID=7,O=x");
        assert_eq!(multi.common_names().collect::<Vec<_>>(), ["a"]);
        assert_eq!(dn("CN=\\ lead,O=trail\\ ").0[0][0].value, " lead");
    }

    #[test]
    fn malformed_distinguished_names_are_errors_not_panics() {
        for bad in [
            "",
            "CN",
            "=x",
            "CN=",
            "CN=a,",
            "CN=a\\",
            "CN=a\\4",
            "CN=a\\zz,O=",
            "C N=x",
            "CN=\\ff",
        ] {
            let e = DistinguishedName::parse(bad);
            assert!(e.is_err(), "{bad:?} parsed as {e:?}");
        }
    }

    #[test]
    fn a_certificate_s_subject_and_alternative_names_are_read() {
        let mut params = CertificateParams::new(vec!["bot.ops.example.com".to_string()]).expect("params");
        params.subject_alt_names.push(SanType::URI(
            "spiffe://example.org/ns/ops/sa/bot".try_into().expect("uri"),
        ));
        // (rcgen starts with a CN of its own; the subject is built anew.)
        params.distinguished_name = rcgen::DistinguishedName::new();
        params.distinguished_name.push(DnType::CountryName, "US");
        params
            .distinguished_name
            .push(DnType::OrganizationName, "Example, Inc.");
        params.distinguished_name.push(DnType::CommonName, "reparent-bot");
        let key = KeyPair::generate().expect("key");
        let cert = params.self_signed(&key).expect("cert");
        let id = PeerIdentity::from_chain(&[cert.der().clone()]).expect("an identity");
        assert_eq!(id.error, None);
        assert_eq!(id.subject, dn("CN=reparent-bot,O=Example\\, Inc.,C=US"));
        assert_eq!(id.subject.to_string(), "CN=reparent-bot,O=Example\\, Inc.,C=US");
        assert_eq!(id.dns_names, ["bot.ops.example.com"]);
        assert_eq!(id.uris, ["spiffe://example.org/ns/ops/sa/bot"]);
        assert_eq!(id.chain_subjects, ["CN=reparent-bot,O=Example\\, Inc.,C=US"]);
        let shown = id.to_string();
        assert!(
            shown.contains("reparent-bot") && shown.contains("bot.ops.example.com"),
            "{shown}"
        );

        assert!(PeerIdentity::from_chain(&[]).is_none());
        let junk = PeerIdentity::from_chain(&[CertificateDer::from(vec![0x30, 0x03, 0x01])]).expect("some");
        assert!(junk.error.is_some(), "{junk:?}");
    }
}
