//! Bearer tokens: read from `security.tokens` and `security.token_file`,
//! kept only as SHA-256 digests and compared digest to digest in constant
//! time, so neither the bytes nor the length of a token leak through timing.
//!
//! The token file holds one `TOKEN ROLE` pair per line (`#` starts a
//! comment). A token may also be written as `sha256:` and the 64 hex digits
//! of its SHA-256 digest (`printf %s "$TOKEN" | sha256sum`), so that the
//! file does not hold the secret itself. Plain tokens must have at least
//! [`MIN_TOKEN_LEN`] characters.

use crate::config::{Role, SecurityConfig};
use sha2::{Digest as _, Sha256};
use std::path::Path;
use subtle::ConstantTimeEq;

/// The shortest plain token accepted.
pub const MIN_TOKEN_LEN: usize = 16;

/// Marks a token written as its digest.
pub const DIGEST_PREFIX: &str = "sha256:";

type Digest = [u8; 32];

fn digest(token: &[u8]) -> Digest {
    Sha256::digest(token).into()
}

/// A token entry that cannot be used: the key concerned, what is wrong and
/// the fix. Never carries the token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenError {
    pub key: &'static str,
    pub message: String,
    pub fix: String,
}

impl std::fmt::Display for TokenError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}; fix: {}", self.key, self.message, self.fix)
    }
}

/// Why one written token is unusable.
enum Unusable {
    Short,
    BadDigest,
}

impl Unusable {
    fn message(&self) -> String {
        match self {
            Unusable::Short => format!("the token is shorter than {MIN_TOKEN_LEN} characters"),
            Unusable::BadDigest => format!(
                "a {DIGEST_PREFIX} entry must be followed by 64 hexadecimal digits (a SHA-256 digest)"
            ),
        }
    }

    fn fix(&self) -> &'static str {
        match self {
            Unusable::Short => {
                "use long random tokens, e.g. `openssl rand -hex 32`, or store a token's digest as sha256:HEX"
            }
            Unusable::BadDigest => {
                "make the digest with `printf %s \"$TOKEN\" | sha256sum` and write sha256: followed by its 64 hex digits"
            }
        }
    }
}

/// The digest of a token as written: the token itself, or `sha256:HEX`.
fn stored(written: &str) -> Result<Digest, Unusable> {
    if let Some(hex) = written.strip_prefix(DIGEST_PREFIX) {
        return from_hex(hex).ok_or(Unusable::BadDigest);
    }
    if written.chars().count() < MIN_TOKEN_LEN {
        return Err(Unusable::Short);
    }
    Ok(digest(written.as_bytes()))
}

fn from_hex(hex: &str) -> Option<Digest> {
    if hex.len() != 64 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(hex.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(out)
}

/// The tokens a node accepts, with their roles.
#[derive(Default)]
pub struct Tokens {
    entries: Vec<(Digest, Role)>,
}

impl Tokens {
    /// Reads `security.tokens` and the token file. Every unusable entry is
    /// reported, by key and (in the file) by line.
    pub fn load(s: &SecurityConfig) -> Result<Tokens, Vec<TokenError>> {
        let mut entries = Vec::new();
        let mut errors = Vec::new();
        for (i, t) in s.tokens.iter().enumerate() {
            match stored(&t.token) {
                Ok(d) => entries.push((d, t.role)),
                Err(why) => errors.push(TokenError {
                    key: "security.tokens",
                    message: format!("entry {}: {}", i + 1, why.message()),
                    fix: why.fix().to_string(),
                }),
            }
        }
        if let Some(path) = &s.token_file {
            match std::fs::read_to_string(path) {
                Ok(text) => read_file(path, &text, &mut entries, &mut errors),
                Err(e) => errors.push(TokenError {
                    key: "security.token_file",
                    message: format!("cannot read {}: {e}", path.display()),
                    fix: "check the path and that the server's user may read it".to_string(),
                }),
            }
        }
        if errors.is_empty() {
            Ok(Tokens { entries })
        } else {
            Err(errors)
        }
    }

    /// How many tokens there are.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The role of `token`. Every entry is compared, digest to digest in
    /// constant time, whatever matches.
    pub fn role_of(&self, token: &str) -> Option<Role> {
        let given = digest(token.as_bytes());
        let mut found = None;
        for (d, role) in &self.entries {
            if bool::from(d[..].ct_eq(&given[..])) {
                found = Some(*role);
            }
        }
        found
    }
}

fn read_file(
    path: &Path,
    text: &str,
    entries: &mut Vec<(Digest, Role)>,
    errors: &mut Vec<TokenError>,
) {
    let mut fail = |n: usize, message: String, fix: &str| {
        errors.push(TokenError {
            key: "security.token_file",
            message: format!("{}:{}: {message}", path.display(), n + 1),
            fix: fix.to_string(),
        })
    };
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let mut parts = line.split_whitespace();
        let (Some(token), Some(role), None) = (parts.next(), parts.next(), parts.next()) else {
            fail(
                n,
                "expected \"TOKEN ROLE\"".to_string(),
                "write one token and its role (read, write or admin) per line",
            );
            continue;
        };
        let role = match role {
            "read" => Role::Read,
            "write" => Role::Write,
            "admin" => Role::Admin,
            _ => {
                fail(
                    n,
                    "the role must be read, write or admin".to_string(),
                    "write the role after the token",
                );
                continue;
            }
        };
        match stored(token) {
            Ok(d) => entries.push((d, role)),
            Err(why) => fail(n, why.message(), why.fix()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::TokenEntry;

    fn config(tokens: &[(&str, Role)], file: Option<&Path>) -> SecurityConfig {
        SecurityConfig {
            tokens: tokens
                .iter()
                .map(|(t, role)| TokenEntry {
                    token: t.to_string(),
                    role: *role,
                })
                .collect(),
            token_file: file.map(Path::to_path_buf),
            ..SecurityConfig::default()
        }
    }

    fn hex(d: &Digest) -> String {
        d.iter().map(|b| format!("{b:02x}")).collect()
    }

    #[test]
    fn plain_and_digest_tokens() {
        let d = hex(&digest(b"stored-as-digest-0123"));
        let as_digest = format!("{DIGEST_PREFIX}{d}");
        let upper = format!("{DIGEST_PREFIX}{}", d.to_uppercase());
        let t = Tokens::load(&config(
            &[
                ("plain-token-0123456789", Role::Read),
                (&as_digest, Role::Write),
                (&upper, Role::Admin),
            ],
            None,
        ))
        .unwrap();
        assert_eq!(t.len(), 3);
        assert_eq!(t.role_of("plain-token-0123456789"), Some(Role::Read));
        assert_eq!(t.role_of("stored-as-digest-0123"), Some(Role::Admin));
        assert_eq!(t.role_of(&as_digest), None);
        assert_eq!(t.role_of(&d), None);
        assert_eq!(t.role_of(""), None);
        assert_eq!(t.role_of("plain-token-012345678"), None);
    }

    #[test]
    fn unusable_entries_are_all_reported_without_the_token() {
        let errors = Tokens::load(&config(
            &[
                ("short", Role::Read),
                ("sha256:abc", Role::Read),
                ("long-enough-token-0123", Role::Read),
            ],
            None,
        ))
        .err()
        .unwrap();
        assert_eq!(errors.len(), 2);
        assert!(errors[0].message.contains("entry 1: the token is shorter"));
        assert!(errors[1].message.contains("64 hexadecimal digits"));
        assert!(errors.iter().all(|e| !e.to_string().contains("short ")));
    }

    #[test]
    fn token_file_lines() {
        let dir = std::env::temp_dir().join(format!("ferrium-tokens-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("tokens");
        std::fs::write(
            &file,
            "# comment\n\nfile-token-0123456789 write\nshort read\nfile-token-0123456789abc root\nalone\n",
        )
        .unwrap();
        let errors = Tokens::load(&config(&[], Some(&file))).err().unwrap();
        let lines: Vec<String> = errors.iter().map(|e| e.message.clone()).collect();
        assert_eq!(errors.len(), 3, "{lines:?}");
        assert!(lines[0].ends_with("tokens:4: the token is shorter than 16 characters"));
        assert!(lines[1].contains("tokens:5: the role must be"));
        assert!(lines[2].contains("tokens:6: expected"));
        std::fs::write(&file, "file-token-0123456789 write\n").unwrap();
        let t = Tokens::load(&config(&[], Some(&file))).unwrap();
        assert_eq!(t.role_of("file-token-0123456789"), Some(Role::Write));
        let missing = Tokens::load(&config(&[], Some(&dir.join("none"))));
        assert_eq!(missing.err().unwrap()[0].key, "security.token_file");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
