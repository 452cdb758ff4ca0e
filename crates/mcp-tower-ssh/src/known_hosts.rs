//! [`KnownHosts`]: an OpenSSH known_hosts file, and the verdict ([`HostKeyVerdict`]) on a key
//! a server presents.
//!
//! Written here rather than taken from russh's `check_known_hosts_path` because that one
//! splits fields on single spaces only, fails the whole check on one unparsable line, knows
//! neither wildcards, negation nor `@revoked`, and reports a second key of the same
//! algorithm (a key rotation in progress) as a changed key.

use std::{fmt, path::Path};

use data_encoding::BASE64;
use hmac::{Hmac, KeyInit, Mac};
use russh::keys::{HashAlg, PublicKey};
use sha1::Sha1;

/// What a known_hosts line says about its keys.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Marker {
    /// A plain line: the key is the host's.
    None,
    /// `@revoked`: the key must never be accepted.
    Revoked,
    /// `@cert-authority`: the key signs host certificates (not supported: skipped).
    CertAuthority,
}

#[derive(Debug, Clone)]
struct Entry {
    line: usize,
    marker: Marker,
    patterns: String,
    key: PublicKey,
}

/// A parsed known_hosts file.
#[derive(Debug, Clone, Default)]
pub struct KnownHosts {
    entries: Vec<Entry>,
    skipped: Vec<usize>,
}

/// The verdict on a host key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostKeyVerdict {
    /// The key is recorded for the host (at this line).
    Trusted {
        /// The matching line (1-based).
        line: usize,
    },
    /// The host is recorded with other keys: the key changed, or someone is in the middle.
    Mismatch {
        /// The lines recording the host (1-based).
        lines: Vec<usize>,
        /// The fingerprints recorded there (`SHA256:…`).
        expected: Vec<String>,
    },
    /// The host is not in the file at all.
    Unknown,
    /// The key is listed as `@revoked`.
    Revoked {
        /// The `@revoked` line (1-based).
        line: usize,
    },
}

impl KnownHosts {
    /// Parses known_hosts text. Lines that cannot be parsed are skipped (and listed by
    /// [`skipped_lines`](Self::skipped_lines)), as OpenSSH does.
    pub fn parse(text: &str) -> Self {
        let mut hosts = KnownHosts::default();
        for (index, raw) in text.lines().enumerate() {
            let line = index + 1;
            let trimmed = raw.trim();
            if trimmed.is_empty() || trimmed.starts_with('#') {
                continue;
            }
            let mut fields = trimmed.split_ascii_whitespace();
            let mut first = fields.next();
            let marker = match first {
                Some("@revoked") => Marker::Revoked,
                Some("@cert-authority") => Marker::CertAuthority,
                Some(m) if m.starts_with('@') => {
                    hosts.skipped.push(line);
                    continue;
                }
                _ => Marker::None,
            };
            if marker != Marker::None {
                first = fields.next();
            }
            let (Some(patterns), Some(algorithm), Some(base64)) =
                (first, fields.next(), fields.next())
            else {
                hosts.skipped.push(line);
                continue;
            };
            match PublicKey::from_openssh(&format!("{algorithm} {base64}")) {
                Ok(key) => hosts.entries.push(Entry {
                    line,
                    marker,
                    patterns: patterns.to_owned(),
                    key,
                }),
                Err(_) => hosts.skipped.push(line),
            }
        }
        hosts
    }

    /// Reads and parses the file at `path`.
    pub fn read(path: &Path) -> std::io::Result<Self> {
        std::fs::read_to_string(path).map(|text| Self::parse(&text))
    }

    /// Lines that were neither comments nor parsable entries (1-based).
    pub fn skipped_lines(&self) -> &[usize] {
        &self.skipped
    }

    /// Number of parsed entries.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether the file has no entries.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The verdict on `key` presented by `host` (as known_hosts names it: `name` on port 22,
    /// `[name]:port` otherwise).
    pub fn verify(&self, host: &str, key: &PublicKey) -> HostKeyVerdict {
        let matching = self
            .entries
            .iter()
            .filter(|e| host_matches(host, &e.patterns));
        let mut recorded = Vec::new();
        let mut trusted = None;
        for entry in matching {
            let same = entry.key.key_data() == key.key_data();
            match entry.marker {
                Marker::Revoked if same => return HostKeyVerdict::Revoked { line: entry.line },
                Marker::None if same => trusted = trusted.or(Some(entry.line)),
                Marker::None => recorded.push(entry),
                Marker::Revoked | Marker::CertAuthority => {}
            }
        }
        if let Some(line) = trusted {
            return HostKeyVerdict::Trusted { line };
        }
        if recorded.is_empty() {
            return HostKeyVerdict::Unknown;
        }
        HostKeyVerdict::Mismatch {
            lines: recorded.iter().map(|e| e.line).collect(),
            expected: recorded.iter().map(|e| fingerprint(&e.key)).collect(),
        }
    }
}

/// The SHA-256 fingerprint of `key`, as OpenSSH prints it (`SHA256:…`).
pub fn fingerprint(key: &PublicKey) -> String {
    key.fingerprint(HashAlg::Sha256).to_string()
}

impl fmt::Display for HostKeyVerdict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HostKeyVerdict::Trusted { line } => write!(f, "trusted (line {line})"),
            HostKeyVerdict::Mismatch { lines, expected } => write!(
                f,
                "the host is recorded with another key ({}; lines {}): the host key changed, or someone is intercepting the connection",
                expected.join(", "),
                lines
                    .iter()
                    .map(usize::to_string)
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            HostKeyVerdict::Unknown => f.write_str("the host is not in the known_hosts file"),
            HostKeyVerdict::Revoked { line } => {
                write!(f, "the key is marked @revoked (line {line})")
            }
        }
    }
}

/// Whether `host` matches a comma-separated pattern list: some pattern matches and no
/// negated (`!`) one does.
fn host_matches(host: &str, patterns: &str) -> bool {
    let mut matched = false;
    for pattern in patterns.split(',') {
        if let Some(negated) = pattern.strip_prefix('!') {
            if pattern_matches(host, negated) {
                return false;
            }
        } else if pattern_matches(host, pattern) {
            matched = true;
        }
    }
    matched
}

fn pattern_matches(host: &str, pattern: &str) -> bool {
    if let Some(hashed) = pattern.strip_prefix("|1|") {
        return hashed_matches(host, hashed);
    }
    wildcard_matches(host.as_bytes(), pattern.as_bytes())
}

/// `|1|salt|hash`: hash = HMAC-SHA1(key = salt, message = host), both base64.
fn hashed_matches(host: &str, hashed: &str) -> bool {
    let Some((salt, hash)) = hashed.split_once('|') else {
        return false;
    };
    let (Ok(salt), Ok(hash)) = (
        BASE64.decode(salt.as_bytes()),
        BASE64.decode(hash.as_bytes()),
    ) else {
        return false;
    };
    let Ok(mac) = Hmac::<Sha1>::new_from_slice(&salt) else {
        return false;
    };
    mac.chain_update(host.as_bytes())
        .verify_slice(&hash)
        .is_ok()
}

/// `*` matches any run of characters, `?` one character; case-insensitive, like OpenSSH.
fn wildcard_matches(text: &[u8], pattern: &[u8]) -> bool {
    let (mut t, mut p) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while t < text.len() {
        if p < pattern.len() && (pattern[p] == b'?' || pattern[p].eq_ignore_ascii_case(&text[t])) {
            t += 1;
            p += 1;
        } else if p < pattern.len() && pattern[p] == b'*' {
            star = Some((p, t));
            p += 1;
        } else if let Some((sp, st)) = star {
            p = sp + 1;
            t = st + 1;
            star = Some((sp, st + 1));
        } else {
            return false;
        }
    }
    pattern[p..].iter().all(|&c| c == b'*')
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use russh::keys::{PrivateKey, ssh_key::private::Ed25519Keypair};

    fn key(seed: u8) -> PublicKey {
        PrivateKey::from(Ed25519Keypair::from_seed(&[seed; 32]))
            .public_key()
            .clone()
    }

    fn line(patterns: &str, key: &PublicKey) -> String {
        format!("{patterns} {}", key.to_openssh().unwrap())
    }

    #[test]
    fn plain_bracketed_and_wildcard_names() {
        let (a, b) = (key(1), key(2));
        let text = format!(
            "# comment\n\n{}\n{}\n{}\n",
            line("web-1,10.0.0.5", &a),
            line("[127.0.0.1]:2222", &b),
            line("*.example.com,!evil.example.com", &a),
        );
        let hosts = KnownHosts::parse(&text);
        assert_eq!(hosts.len(), 3);
        assert_eq!(
            hosts.verify("web-1", &a),
            HostKeyVerdict::Trusted { line: 3 }
        );
        assert_eq!(
            hosts.verify("10.0.0.5", &a),
            HostKeyVerdict::Trusted { line: 3 }
        );
        assert_eq!(
            hosts.verify("[127.0.0.1]:2222", &b),
            HostKeyVerdict::Trusted { line: 4 }
        );
        assert_eq!(
            hosts.verify("127.0.0.1", &b),
            HostKeyVerdict::Unknown,
            "port matters"
        );
        assert_eq!(
            hosts.verify("db.EXAMPLE.com", &a),
            HostKeyVerdict::Trusted { line: 5 }
        );
        assert_eq!(
            hosts.verify("evil.example.com", &a),
            HostKeyVerdict::Unknown
        );
        assert_eq!(hosts.verify("web-2", &a), HostKeyVerdict::Unknown);
    }

    #[test]
    fn another_key_for_a_known_host_is_a_mismatch_naming_the_expected_fingerprint() {
        let (a, b) = (key(1), key(2));
        let hosts = KnownHosts::parse(&line("web-1", &a));
        let verdict = hosts.verify("web-1", &b);
        assert_eq!(
            verdict,
            HostKeyVerdict::Mismatch {
                lines: vec![1],
                expected: vec![fingerprint(&a)],
            }
        );
        assert!(verdict.to_string().contains(&fingerprint(&a)));
    }

    #[test]
    fn two_keys_of_one_algorithm_during_a_rotation_both_pass() {
        let (a, b) = (key(1), key(2));
        let hosts = KnownHosts::parse(&format!("{}\n{}", line("web-1", &a), line("web-1", &b)));
        assert_eq!(
            hosts.verify("web-1", &b),
            HostKeyVerdict::Trusted { line: 2 }
        );
    }

    #[test]
    fn revoked_keys_are_refused_even_when_also_listed() {
        let a = key(1);
        let hosts = KnownHosts::parse(&format!(
            "{}\n@revoked {}",
            line("web-1", &a),
            line("*", &a)
        ));
        assert_eq!(
            hosts.verify("web-1", &a),
            HostKeyVerdict::Revoked { line: 2 }
        );
    }

    #[test]
    fn hashed_names_match_like_openssh() {
        let a = key(1);
        // `ssh-keygen -H` form for "[127.0.0.1]:2222", salt of 20 bytes.
        let salt = [7u8; 20];
        let mac = Hmac::<Sha1>::new_from_slice(&salt)
            .unwrap()
            .chain_update(b"[127.0.0.1]:2222")
            .finalize()
            .into_bytes();
        let pattern = format!("|1|{}|{}", BASE64.encode(&salt), BASE64.encode(&mac));
        let hosts = KnownHosts::parse(&line(&pattern, &a));
        assert_eq!(
            hosts.verify("[127.0.0.1]:2222", &a),
            HostKeyVerdict::Trusted { line: 1 }
        );
        assert_eq!(
            hosts.verify("[127.0.0.1]:2223", &a),
            HostKeyVerdict::Unknown
        );
    }

    #[test]
    fn bad_lines_are_skipped_not_fatal_and_tabs_separate_fields() {
        let a = key(1);
        let good = line("web-1", &a).replacen(' ', "\t", 1);
        let text = format!("garbage\nweb-1 ssh-ed25519 notbase64!!\n@weird x y z\n{good}\n");
        let hosts = KnownHosts::parse(&text);
        assert_eq!(hosts.skipped_lines(), &[1, 2, 3]);
        assert_eq!(
            hosts.verify("web-1", &a),
            HostKeyVerdict::Trusted { line: 4 }
        );
    }

    #[test]
    fn wildcards() {
        assert!(wildcard_matches(b"abc", b"a*"));
        assert!(wildcard_matches(b"abc", b"*c"));
        assert!(wildcard_matches(b"abc", b"a?c"));
        assert!(!wildcard_matches(b"abc", b"a?"));
        assert!(wildcard_matches(b"", b"*"));
        assert!(!wildcard_matches(b"abd", b"*c"));
    }
}
