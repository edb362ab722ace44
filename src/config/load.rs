//! Loading: search paths, the file, `FERRIUM_*` environment variables and
//! command-line flags, in that order of precedence (later wins).
//!
//! A file is read twice: once as a spanned TOML tree, to report unknown and
//! unsupported keys with their line and column before anything else, and once
//! through serde for the typed values. Environment and command-line values
//! are checked against the key's type before they are merged, so every error
//! names where the bad value came from.

use super::{Config, KEYS, KeyType, UNSUPPORTED, key_doc};
use std::collections::BTreeMap;
use std::fmt;
use std::ops::Range;
use std::path::{Path, PathBuf};
use toml::de::{DeTable, DeValue};

/// Where `--config` is looked for when it is not given, in order.
pub const SEARCH_PATHS: &[&str] = &[
    "./ferrium.toml",
    "./config/ferrium.toml",
    "/etc/ferrium/config.toml",
    "~/.config/ferrium/config.toml",
    "~/.ferrium.toml",
];

/// One configuration problem, with where it was found and how to fix it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// A file (with line and column when known), an environment variable or a flag.
    pub origin: String,
    /// The key concerned, as `section.key`, when there is one.
    pub key: Option<String>,
    pub message: String,
    pub fix: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: ", self.origin)?;
        if let Some(key) = &self.key {
            write!(f, "{key}: ")?;
        }
        write!(f, "{}", self.message)?;
        if !self.fix.is_empty() {
            write!(f, "; fix: {}", self.fix)?;
        }
        Ok(())
    }
}

/// Values given on the command line, as `(key path, value, flag)`.
#[derive(Debug, Clone, Default)]
pub struct CliOverrides {
    pub values: Vec<(&'static str, String, &'static str)>,
}

impl CliOverrides {
    pub fn set(&mut self, key: &'static str, value: String, flag: &'static str) {
        self.values.push((key, value, flag));
    }
}

/// A loaded (not yet validated) configuration and where each part came from.
#[derive(Debug, Clone)]
pub struct LoadedConfig {
    pub config: Config,
    /// The file that was read, if any.
    pub file: Option<PathBuf>,
    /// Keys set by an environment variable or a flag, and which one.
    pub overrides: BTreeMap<String, String>,
    /// Problems that do not stop the server (e.g. a `FERRIUM_*` variable
    /// that names no key, which may belong to another tool).
    pub warnings: Vec<String>,
}

impl LoadedConfig {
    /// Where the effective value of `key` came from, for error messages.
    pub fn origin_of(&self, key: &str) -> String {
        if let Some(origin) = self.overrides.get(key) {
            return origin.clone();
        }
        match &self.file {
            Some(file) => file.display().to_string(),
            None => "built-in defaults".to_string(),
        }
    }
}

fn expand_home(path: &str) -> PathBuf {
    if let Some(rest) = path.strip_prefix("~/") {
        if let Some(home) = std::env::var_os("HOME") {
            return PathBuf::from(home).join(rest);
        }
    }
    PathBuf::from(path)
}

/// The search paths, expanded, each with whether it exists.
pub fn search_paths() -> Vec<(PathBuf, bool)> {
    SEARCH_PATHS
        .iter()
        .map(|p| {
            let path = expand_home(p);
            let exists = path.is_file();
            (path, exists)
        })
        .collect()
}

/// `FERRIUM_` variables of Ferrium's other tools, which the server ignores
/// without a warning.
const TOOL_VARIABLES: &[&str] = &["FERRIUM_ENDPOINTS", "FERRIUM_TOKEN"];

/// Loads the configuration: `file` if given, else the first search path that
/// exists, else built-in defaults; then environment variables (`env`, usually
/// `std::env::vars()`), then command-line values.
pub fn load(
    file: Option<&Path>,
    env: impl IntoIterator<Item = (String, String)>,
    cli: &CliOverrides,
) -> Result<LoadedConfig, Vec<ConfigError>> {
    let file = match file {
        Some(path) => Some(path.to_path_buf()),
        None => search_paths()
            .into_iter()
            .find(|(_, exists)| *exists)
            .map(|(p, _)| p),
    };
    let mut errors = Vec::new();
    let mut table = toml::Table::new();
    if let Some(path) = &file {
        match read_file(path) {
            Ok(t) => table = t,
            Err(mut e) => errors.append(&mut e),
        }
    }
    let mut overrides = BTreeMap::new();
    let mut warnings = Vec::new();
    for (name, value) in env {
        let Some(rest) = name.strip_prefix("FERRIUM_") else {
            continue;
        };
        // The test-only failpoint is read (and warned about) by the store.
        if TOOL_VARIABLES.contains(&name.as_str()) || name == crate::store::FAIL_WAL_SYNC_ENV {
            continue;
        }
        let origin = format!("environment variable {name}");
        match env_key(rest) {
            Some(key) => match apply_override(&mut table, key, &value) {
                Ok(()) => {
                    overrides.insert(key.path.to_string(), origin);
                }
                Err(e) => errors.push(ConfigError {
                    origin,
                    key: Some(key.path.to_string()),
                    message: e,
                    fix: format!("the value must be: {}", key.ty),
                }),
            },
            None => {
                let guess = rest.to_ascii_lowercase().replacen('_', ".", 1);
                let hint = match suggest(&guess) {
                    Some(s) => format!("did you mean {}?", env_name(s)),
                    None => "variables are named FERRIUM_<SECTION>_<KEY>, e.g. FERRIUM_NODE_ID"
                        .to_string(),
                };
                warnings.push(format!(
                    "{origin} names no configuration key and is ignored; {hint}"
                ));
            }
        }
    }
    for (path, value, flag) in &cli.values {
        let Some(key) = key_doc(path) else {
            continue;
        };
        match apply_override(&mut table, key, value) {
            Ok(()) => {
                overrides.insert(key.path.to_string(), format!("command-line flag {flag}"));
            }
            Err(e) => errors.push(ConfigError {
                origin: format!("command-line flag {flag}"),
                key: Some(key.path.to_string()),
                message: e,
                fix: format!("the value must be: {}", key.ty),
            }),
        }
    }
    if !errors.is_empty() {
        return Err(errors);
    }
    let config: Config = toml::Value::Table(table)
        .try_into()
        .map_err(|e: toml::de::Error| {
            vec![ConfigError {
                origin: "merged configuration".to_string(),
                key: None,
                message: e.message().to_string(),
                fix: "check the values set by FERRIUM_* variables and flags".to_string(),
            }]
        })?;
    Ok(LoadedConfig {
        config,
        file,
        overrides,
        warnings,
    })
}

/// Reads and checks one file; returns its table with every key known.
fn read_file(path: &Path) -> Result<toml::Table, Vec<ConfigError>> {
    let shown = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|e| {
        let fix = if e.kind() == std::io::ErrorKind::NotFound {
            format!("check the path, or create one with `ferrium-server --generate-config {shown}`")
        } else {
            "make the file readable by the server's user".to_string()
        };
        vec![ConfigError {
            origin: shown.clone(),
            key: None,
            message: format!("cannot read the configuration file: {e}"),
            fix,
        }]
    })?;
    let at = |span: Option<Range<usize>>| match span {
        Some(span) => {
            let (line, col) = line_col(&text, span.start);
            format!("{shown}:{line}:{col}")
        }
        None => shown.clone(),
    };
    let tree = DeTable::parse(&text).map_err(|e| {
        vec![ConfigError {
            origin: at(e.span()),
            key: None,
            message: format!("invalid TOML: {}", e.message().trim()),
            fix: "correct the TOML syntax at this position".to_string(),
        }]
    })?;
    let mut walk = Walk::default();
    walk.table(tree.get_ref(), "");
    let mut errors: Vec<ConfigError> = std::mem::take(&mut walk.problems)
        .into_iter()
        .map(|(span, key, message, fix)| ConfigError {
            origin: at(Some(span)),
            key: Some(key),
            message,
            fix,
        })
        .collect();
    if !errors.is_empty() {
        return Err(errors);
    }
    if let Err(e) = toml::from_str::<Config>(&text) {
        let span = e.span();
        let key = span.as_ref().and_then(|s| walk.key_at(s.start));
        let fix = match key.as_deref().and_then(key_doc) {
            Some(doc) => format!("the value must be: {}", doc.ty),
            None => "see CONFIG.md for the expected type".to_string(),
        };
        errors.push(ConfigError {
            origin: at(span),
            key,
            message: e.message().trim().to_string(),
            fix,
        });
        return Err(errors);
    }
    toml::from_str::<toml::Table>(&text).map_err(|e| {
        vec![ConfigError {
            origin: at(e.span()),
            key: None,
            message: e.message().to_string(),
            fix: "correct the TOML syntax at this position".to_string(),
        }]
    })
}

/// Walks the spanned tree: records each value's span under its key path and
/// collects unknown or unsupported keys.
#[derive(Default)]
struct Walk {
    spans: Vec<(Range<usize>, String)>,
    problems: Vec<(Range<usize>, String, String, String)>,
}

impl Walk {
    fn table(&mut self, table: &DeTable<'_>, prefix: &str) {
        for (key, value) in table.iter() {
            let name: &str = key.get_ref();
            let path = if prefix.is_empty() {
                name.to_string()
            } else {
                format!("{prefix}.{name}")
            };
            self.spans.push((value.span(), path.clone()));
            let key_span = key.span();
            if prefix.is_empty() {
                self.section(&path, key_span, value.get_ref());
                continue;
            }
            let lookup = path.clone();
            if let Some((_, hint)) = UNSUPPORTED.iter().find(|(k, _)| *k == lookup) {
                self.problems.push((
                    key_span,
                    path.clone(),
                    "this key of the original Ferrium is not supported".to_string(),
                    hint.to_string(),
                ));
                continue;
            }
            match key_doc(&lookup) {
                Some(doc) if doc.ty == KeyType::ArrayOfTables => {
                    if let DeValue::Array(items) = value.get_ref() {
                        for item in items.iter() {
                            if let DeValue::Table(t) = item.get_ref() {
                                self.table(t, &format!("{path}[]"));
                            }
                        }
                    }
                }
                Some(_) => {}
                None => self.unknown(key_span, &path),
            }
        }
    }

    fn section(&mut self, name: &str, span: Range<usize>, value: &DeValue<'_>) {
        let known = KEYS.iter().any(|k| k.path.split('.').next() == Some(name));
        if !known {
            self.unknown(span, name);
            return;
        }
        match value {
            DeValue::Table(t) => self.table(t, name),
            _ => self.problems.push((
                span,
                name.to_string(),
                "is a section and must be a table".to_string(),
                format!("write it as a [{name}] header followed by its keys"),
            )),
        }
    }

    fn unknown(&mut self, span: Range<usize>, path: &str) {
        let fix = match suggest(path) {
            Some(s) => format!("did you mean `{s}`?"),
            None => "remove it; CONFIG.md lists every key".to_string(),
        };
        self.problems
            .push((span, path.to_string(), "unknown key".to_string(), fix));
    }

    /// The innermost key whose value contains byte `pos`.
    fn key_at(&self, pos: usize) -> Option<String> {
        self.spans
            .iter()
            .filter(|(span, _)| span.start <= pos && pos < span.end.max(span.start + 1))
            .min_by_key(|(span, _)| span.end - span.start)
            .map(|(_, path)| path.clone())
    }
}

fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let col = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line, col)
}

/// The closest known key (or section) to `path`, if one is close enough.
pub fn suggest(path: &str) -> Option<&'static str> {
    let leaf = |p: &str| p.rsplit('.').next().unwrap_or(p).to_string();
    let section = |p: &str| p.split('.').next().unwrap_or(p).to_string();
    let mut candidates: Vec<&'static str> = KEYS
        .iter()
        .map(|k| k.path)
        .filter(|p| !p.contains("[]"))
        .collect();
    if !path.contains('.') {
        for k in KEYS {
            if let Some(s) = k.path.split('.').next() {
                if !candidates.contains(&s) {
                    candidates.push(s);
                }
            }
        }
    }
    let mut best: Option<(usize, &'static str)> = None;
    for cand in candidates {
        let full = levenshtein(path, cand);
        let same_section = section(path) == section(cand) && cand.contains('.');
        let by_leaf = levenshtein(&leaf(path), &leaf(cand)) + if same_section { 0 } else { 2 };
        let prefix = leaf(path).len() >= 4 && leaf(cand).starts_with(&leaf(path));
        let score = if prefix {
            usize::from(!same_section)
        } else {
            full.min(by_leaf)
        };
        if best.is_none_or(|(b, _)| score < b) {
            best = Some((score, cand));
        }
    }
    let limit = (leaf(path).len() / 3).max(2);
    best.filter(|(score, _)| *score <= limit).map(|(_, c)| c)
}

fn levenshtein(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.chars().collect();
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.iter().enumerate() {
        let mut cur = vec![i + 1];
        for (j, cb) in b.iter().enumerate() {
            let cost = usize::from(ca != cb);
            cur.push((prev[j] + cost).min(prev[j + 1] + 1).min(cur[j] + 1));
        }
        prev = cur;
    }
    prev[b.len()]
}

/// `FERRIUM_NODE_ID` for `node.id`.
pub fn env_name(path: &str) -> String {
    format!("FERRIUM_{}", path.replace('.', "_").to_ascii_uppercase())
}

fn env_key(rest: &str) -> Option<&'static super::KeyDoc> {
    KEYS.iter().find(|k| {
        k.ty != KeyType::ArrayOfTables
            && !k.path.contains("[]")
            && env_name(k.path) == format!("FERRIUM_{rest}")
    })
}

/// Checks `raw` against the key's type and stores it in the merged table.
fn apply_override(table: &mut toml::Table, key: &super::KeyDoc, raw: &str) -> Result<(), String> {
    use super::{Address, ByteSize, Millis};
    let value = match key.ty {
        KeyType::Integer => toml::Value::Integer(
            raw.trim()
                .parse::<i64>()
                .ok()
                .filter(|v| *v >= 0)
                .ok_or_else(|| format!("\"{raw}\" is not a non-negative integer"))?,
        ),
        KeyType::Boolean => toml::Value::Boolean(match raw.trim() {
            "true" | "1" | "yes" | "on" => true,
            "false" | "0" | "no" | "off" => false,
            _ => return Err(format!("\"{raw}\" is not a boolean (true or false)")),
        }),
        KeyType::Address => {
            Address::parse(raw)?;
            toml::Value::String(raw.to_string())
        }
        KeyType::Duration => {
            Millis::parse(raw)?;
            toml::Value::String(raw.to_string())
        }
        KeyType::Size => {
            ByteSize::parse(raw, 1)?;
            toml::Value::String(raw.to_string())
        }
        KeyType::SizeMiB => {
            ByteSize::parse(raw, 1 << 20)?;
            toml::Value::String(raw.to_string())
        }
        KeyType::Enum(values) => {
            if !values.contains(&raw) {
                return Err(format!("\"{raw}\" is not one of {}", values.join(", ")));
            }
            toml::Value::String(raw.to_string())
        }
        KeyType::String | KeyType::Path => {
            if raw.is_empty() {
                return Err("the value is empty".to_string());
            }
            toml::Value::String(raw.to_string())
        }
        KeyType::StringList => toml::Value::Array(
            raw.split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(|s| toml::Value::String(s.to_string()))
                .collect(),
        ),
        KeyType::ArrayOfTables => return Err("cannot be set this way; use the file".to_string()),
    };
    let Some((section, name)) = key.path.split_once('.') else {
        return Err("not a section key".to_string());
    };
    let entry = table
        .entry(section.to_string())
        .or_insert_with(|| toml::Value::Table(toml::Table::new()));
    match entry {
        toml::Value::Table(t) => {
            t.insert(name.to_string(), value);
            Ok(())
        }
        _ => Err(format!("[{section}] in the file is not a table")),
    }
}

/// An example value for keys that have no default, shown commented out.
fn example(path: &str) -> Option<&'static str> {
    Some(match path {
        "node.name" => "\"ferrium-1\"",
        "node.advertise_http_addr" => "\"10.0.0.1:8001\"",
        "node.advertise_grpc_addr" => "\"10.0.0.1:9001\"",
        "logging.file_path" => "\"/var/log/ferrium/ferrium.log\"",
        "cluster.initial_members" => {
            "[{ id = 1, http_addr = \"127.0.0.1:8001\", grpc_addr = \"127.0.0.1:9001\" }]"
        }
        "security.cert_file" => "\"/etc/ferrium/tls/node.crt\"",
        "security.key_file" => "\"/etc/ferrium/tls/node.key\"",
        "security.ca_file" => "\"/etc/ferrium/tls/ca.crt\"",
        "security.tokens" => "[{ token = \"change-me\", role = \"admin\" }]",
        "security.token_file" => "\"/etc/ferrium/tokens\"",
        "security.cluster_secret_file" => "\"/etc/ferrium/cluster-secret\"",
        "security.peer_names" => "[\"node1.ferrium.internal\", \"node2.ferrium.internal\"]",
        "security.cert_roles" => "[{ name = \"cn:ops@example.com\", role = \"admin\" }]",
        _ => return None,
    })
}

/// A file with every key, its default and a one-line comment.
pub fn generate_config() -> String {
    let defaults =
        toml::Value::try_from(Config::default()).unwrap_or(toml::Value::Table(toml::Table::new()));
    let mut out = String::from(
        "# Ferrium configuration. Every key is optional; the values below are the\n\
         # built-in defaults. See CONFIG.md for details.\n",
    );
    let mut current = "";
    for key in KEYS.iter().filter(|k| !k.path.contains("[]")) {
        let Some((section, name)) = key.path.split_once('.') else {
            continue;
        };
        if section != current {
            out.push_str(&format!("\n[{section}]\n"));
            current = section;
        }
        out.push_str(&format!("# {} ({})\n", key.doc, key.ty));
        let value = defaults
            .get(section)
            .and_then(|s| s.get(name))
            .filter(|v| !matches!(v, toml::Value::Array(a) if a.is_empty()));
        match value {
            Some(v) => out.push_str(&format!("{name} = {v}\n")),
            None => out.push_str(&format!(
                "# {name} = {}\n",
                example(key.path).unwrap_or("\"\"")
            )),
        }
    }
    out
}

/// The effective configuration as TOML, with secrets replaced.
pub fn render_effective(config: &Config) -> String {
    let mut shown = config.clone();
    for t in &mut shown.security.tokens {
        t.token = "<redacted>".to_string();
    }
    toml::to_string(&shown).unwrap_or_else(|e| format!("# cannot render configuration: {e}\n"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suggestions() {
        assert_eq!(
            suggest("raft.election_timeout_mn"),
            Some("raft.election_timeout_min")
        );
        assert_eq!(suggest("raft.heartbeat"), Some("raft.heartbeat_interval"));
        assert_eq!(suggest("nod"), Some("node"));
        assert_eq!(
            suggest("node.heartbeat_interval"),
            Some("raft.heartbeat_interval")
        );
        assert_eq!(suggest("storage.zzzzzzzzzzzzzz"), None);
    }

    #[test]
    fn generated_file_loads_as_the_defaults() {
        let text = generate_config();
        let parsed: Config = toml::from_str(&text).expect("generated config parses");
        assert_eq!(parsed, Config::default());
    }

    #[test]
    fn env_names() {
        assert_eq!(
            env_name("raft.heartbeat_interval"),
            "FERRIUM_RAFT_HEARTBEAT_INTERVAL"
        );
        assert!(env_key("NODE_ID").is_some());
        assert!(env_key("NODE_IDX").is_none());
    }

    #[test]
    fn ferriumctl_endpoints_variable_is_not_a_warning() {
        let env = vec![("FERRIUM_ENDPOINTS".to_string(), "a:1,b:2".to_string())];
        let loaded = load(Some(Path::new("/dev/null")), env, &CliOverrides::default())
            .expect("empty configuration loads");
        assert!(loaded.warnings.is_empty(), "{:?}", loaded.warnings);
    }
}
