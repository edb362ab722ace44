//! Configuration and command line of `ferrium-server`, tested through the
//! real binary (exit status, messages) and through `ferrium::config` where a
//! key-by-key sweep is clearer.

use crate::support;
use ferrium::config::{self, CliOverrides, Config, KEYS, KeyType};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const SERVER: &str = env!("CARGO_BIN_EXE_ferrium-server");

/// A fresh scratch directory under the target dir, removed on drop.
struct Scratch(PathBuf);

impl Scratch {
    fn new(name: &str) -> Scratch {
        let dir = std::env::temp_dir().join(format!(
            "ferrium-config-test-{}-{}",
            name,
            std::process::id()
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("scratch dir can be created");
        Scratch(dir)
    }

    fn path(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }

    fn write(&self, name: &str, text: &str) -> PathBuf {
        let p = self.path(name);
        std::fs::write(&p, text).expect("scratch file can be written");
        p
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Runs the server binary in `cwd` with a clean `FERRIUM_*` environment.
fn server(cwd: &Path, args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(SERVER);
    cmd.current_dir(cwd).args(args);
    for (k, _) in std::env::vars() {
        if k.starts_with("FERRIUM_") || k == "RUST_LOG" {
            cmd.env_remove(k);
        }
    }
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().expect("ferrium-server runs")
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Acceptance: generate, then validate the generated file.
#[test]
fn generated_config_validates_and_prints_effective_config() {
    let s = Scratch::new("generate");
    let out = server(&s.0, &["--generate-config", "x.toml"], &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = std::fs::read_to_string(s.path("x.toml")).unwrap();
    for key in KEYS.iter().filter(|k| !k.path.contains("[]")) {
        let name = key.path.split_once('.').unwrap().1;
        assert!(
            text.contains(&format!("{name} =")),
            "generated file lacks {}",
            key.path
        );
    }
    let out = server(&s.0, &["--config", "x.toml", "--validate-config"], &[]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let effective: Config = toml::from_str(&stdout(&out)).expect("effective config is TOML");
    assert_eq!(effective, Config::default());
    assert!(stderr(&out).contains("configuration is valid"));

    // Generating over an existing file refuses rather than overwrite it.
    let again = server(&s.0, &["--generate-config", "x.toml"], &[]);
    assert_eq!(again.status.code(), Some(2));
    assert!(stderr(&again).contains("already exists"));
}

/// Acceptance: every shipped file loads and validates. Host-specific paths
/// (data directory, certificates) are pointed at scratch files.
#[test]
fn every_shipped_file_loads_and_validates() {
    let s = Scratch::new("shipped");
    // Real certificates, made with the commands CONFIG.md documents.
    support::cluster::tls::run_in(&s.0, &support::cluster::tls::documented_setup());
    let tokens = s.write("tokens", "0123456789abcdef0123 admin\n");
    let mut files = Vec::new();
    let mut stack = vec![repo().join("etc")];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let p = entry.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else if p.extension().is_some_and(|e| e == "toml") {
                files.push(p);
            }
        }
    }
    assert!(
        files.len() >= 9,
        "expected the default and 8 examples, found {files:?}"
    );
    for file in files {
        let data = s.path("data");
        let (cert, key, ca) = (s.path("node1.crt"), s.path("node1.key"), s.path("ca.crt"));
        let env = [
            ("FERRIUM_NODE_DATA_DIR", data.to_str().unwrap()),
            ("FERRIUM_SECURITY_CERT_FILE", cert.to_str().unwrap()),
            ("FERRIUM_SECURITY_KEY_FILE", key.to_str().unwrap()),
            ("FERRIUM_SECURITY_CA_FILE", ca.to_str().unwrap()),
            ("FERRIUM_SECURITY_TOKEN_FILE", tokens.to_str().unwrap()),
        ];
        let out = server(
            &s.0,
            &["--config", file.to_str().unwrap(), "--validate-config"],
            &env,
        );
        assert_eq!(
            out.status.code(),
            Some(0),
            "{}: {}",
            file.display(),
            stderr(&out)
        );
    }
}

/// A non-default valid value for every scalar key, as an env/flag string,
/// and the TOML value it must produce.
fn sample(key: &config::KeyDoc) -> Option<(String, toml::Value)> {
    use toml::Value as V;
    Some(match (key.path, key.ty) {
        ("node.id", _) => ("7".into(), V::Integer(7)),
        ("node.http_addr", _) => (
            "127.0.0.1:18001".into(),
            V::String("127.0.0.1:18001".into()),
        ),
        ("node.grpc_addr", _) => (
            "127.0.0.1:19001".into(),
            V::String("127.0.0.1:19001".into()),
        ),
        ("security.enable_tls" | "security.enable_mtls", _) => return None,
        ("security.auth_method", _) => return None,
        (_, KeyType::Integer) => ("4242".into(), V::Integer(4242)),
        (_, KeyType::Boolean) => {
            let default = toml::Value::try_from(Config::default()).unwrap();
            let (s, n) = key.path.split_once('.').unwrap();
            let current = default[s][n].as_bool().unwrap();
            ((!current).to_string(), V::Boolean(!current))
        }
        (_, KeyType::String) => ("sample-name".into(), V::String("sample-name".into())),
        (_, KeyType::Path) => return None,
        (_, KeyType::Address) => ("10.1.2.3:4567".into(), V::String("10.1.2.3:4567".into())),
        (_, KeyType::Duration) => ("4321ms".into(), V::String("4321ms".into())),
        (_, KeyType::Size) => ("3MiB".into(), V::String("3MiB".into())),
        (_, KeyType::SizeMiB) => ("96".into(), V::String("96MiB".into())),
        (_, KeyType::Enum(values)) => {
            let default = toml::Value::try_from(Config::default()).unwrap();
            let (s, n) = key.path.split_once('.').unwrap();
            let current = default[s][n].as_str().unwrap().to_string();
            let other = values.iter().find(|v| **v != current)?;
            (other.to_string(), V::String(other.to_string()))
        }
        (_, KeyType::StringList) => (
            "a.example, b.example".into(),
            V::Array(vec![
                V::String("a.example".into()),
                V::String("b.example".into()),
            ]),
        ),
        (_, KeyType::ArrayOfTables) => return None,
    })
}

/// Acceptance: each `FERRIUM_*` variable overrides the file.
#[test]
fn every_environment_variable_overrides_the_file() {
    let s = Scratch::new("env");
    let file = s.write("base.toml", &config::generate_config());
    let mut checked = 0;
    for key in KEYS.iter().filter(|k| !k.path.contains("[]")) {
        let Some((raw, expected)) = sample(key).or_else(|| match key.ty {
            KeyType::Path => Some(("/tmp/x".into(), toml::Value::String("/tmp/x".into()))),
            _ => None,
        }) else {
            continue;
        };
        let env = vec![(config::env_name(key.path), raw.clone())];
        let loaded = config::load(Some(&file), env, &CliOverrides::default())
            .unwrap_or_else(|e| panic!("{}={raw}: {e:?}", config::env_name(key.path)));
        let got = toml::Value::try_from(&loaded.config).unwrap();
        let (sec, name) = key.path.split_once('.').unwrap();
        assert_eq!(
            got[sec][name],
            expected,
            "{} did not override",
            config::env_name(key.path)
        );
        assert_eq!(
            loaded.origin_of(key.path),
            format!("environment variable {}", config::env_name(key.path))
        );
        checked += 1;
    }
    // Enum, boolean and security switches are covered above or below.
    assert!(checked >= 40, "only {checked} keys were checked");

    // A FERRIUM_ variable naming no key is a warning with a suggestion (it
    // may belong to another tool, such as ferriumctl).
    let env = vec![("FERRIUM_NODE_IDD".to_string(), "3".to_string())];
    let loaded = config::load(Some(&file), env, &CliOverrides::default()).unwrap();
    assert!(
        loaded.warnings[0].contains("did you mean FERRIUM_NODE_ID?"),
        "{:?}",
        loaded.warnings
    );
}

/// Acceptance: each command-line flag overrides the file (and the environment).
#[test]
fn every_flag_overrides_file_and_environment() {
    let s = Scratch::new("flags");
    let data = s.path("flag-data");
    let file = s.write(
        "base.toml",
        "[node]\nid = 1\nhttp_addr = \"127.0.0.1:8001\"\ngrpc_addr = \"127.0.0.1:9001\"\ndata_dir = \"./d\"\n[logging]\nlevel = \"info\"\nformat = \"text\"\n",
    );
    let out = server(
        &s.0,
        &[
            "-c",
            file.to_str().unwrap(),
            "--id",
            "9",
            "--http-addr",
            "127.0.0.1:18009",
            "--grpc-addr",
            "localhost:19009",
            "--data-dir",
            data.to_str().unwrap(),
            "--log-level",
            "debug",
            "--format",
            "json",
            "--validate-config",
        ],
        &[("FERRIUM_NODE_ID", "5"), ("FERRIUM_LOGGING_LEVEL", "warn")],
    );
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let c: Config = toml::from_str(&stdout(&out)).unwrap();
    assert_eq!(c.node.id, 9);
    assert_eq!(c.node.http_addr.to_string(), "127.0.0.1:18009");
    assert_eq!(c.node.grpc_addr.to_string(), "localhost:19009");
    assert_eq!(c.node.data_dir, data);
    assert_eq!(c.logging.level, config::LogLevel::Debug);
    assert_eq!(c.logging.format, config::LogFormat::Json);

    // --log-format is the documented spelling.
    let out = server(
        &s.0,
        &[
            "-c",
            file.to_str().unwrap(),
            "--log-format",
            "json",
            "--validate-config",
        ],
        &[],
    );
    let c: Config = toml::from_str(&stdout(&out)).unwrap();
    assert_eq!(c.logging.format, config::LogFormat::Json);

    // The environment overrides the file when no flag is given.
    let out = server(
        &s.0,
        &["-c", file.to_str().unwrap(), "--validate-config"],
        &[("FERRIUM_NODE_ID", "5")],
    );
    let c: Config = toml::from_str(&stdout(&out)).unwrap();
    assert_eq!(c.node.id, 5);
}

/// Runs `--validate-config` on `text` and returns stderr, asserting exit 2,
/// no panic, and a message naming the file and the key.
fn rejected(s: &Scratch, name: &str, text: &str, key: &str, env: &[(&str, &str)]) -> String {
    let file = s.write(name, text);
    let out = server(
        &s.0,
        &["--config", file.to_str().unwrap(), "--validate-config"],
        env,
    );
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(2), "{name}: {err}");
    assert!(!err.contains("panicked"), "{name}: {err}");
    assert!(
        err.contains(key),
        "{name}: message lacks the key {key}: {err}"
    );
    assert!(err.contains("fix:"), "{name}: message lacks a fix: {err}");
    err
}

/// Acceptance: bad input yields exit status 2 and a message naming the file,
/// the key and the fix.
#[test]
fn bad_configurations_are_rejected_with_file_key_and_fix() {
    let s = Scratch::new("bad");
    let err = rejected(
        &s,
        "unknown.toml",
        "[raft]\nheartbeat_interval = 100\nelection_timeout_mn = 500\n",
        "raft.election_timeout_mn",
        &[],
    );
    assert!(err.contains("unknown.toml:3:1"), "{err}");
    assert!(
        err.contains("did you mean `raft.election_timeout_min`?"),
        "{err}"
    );

    // Limits above what a snapshot or a peer request holds: an entry over
    // them, once committed, would make every later snapshot fail.
    for (name, text, key) in [
        (
            "key.toml",
            "[network]\nmax_key_size = \"2MiB\"\n",
            "network.max_key_size",
        ),
        (
            "value.toml",
            "[network]\nmax_message_size = \"128MiB\"\nmax_value_size = \"64MiB\"\n",
            "network.max_value_size",
        ),
        (
            "message.toml",
            "[network]\nmax_message_size = \"256MiB\"\n",
            "network.max_message_size",
        ),
    ] {
        let err = rejected(&s, name, text, key, &[]);
        assert!(err.contains("at most"), "{err}");
    }

    let err = rejected(&s, "section.toml", "[nodes]\nid = 2\n", "nodes", &[]);
    assert!(err.contains("did you mean `node`?"), "{err}");

    let err = rejected(&s, "type.toml", "[node]\nid = \"two\"\n", "node.id", &[]);
    assert!(err.contains("type.toml:2:6"), "{err}");

    let err = rejected(
        &s,
        "duration.toml",
        "[raft]\nheartbeat_interval = \"2 fortnights\"\n",
        "raft.heartbeat_interval",
        &[],
    );
    assert!(err.contains("250ms"), "{err}");

    let err = rejected(
        &s,
        "election.toml",
        "[raft]\nheartbeat_interval = \"500ms\"\nelection_timeout_min = \"300ms\"\nelection_timeout_max = \"600ms\"\n",
        "raft.election_timeout_min",
        &[],
    );
    assert!(err.contains("election.toml"), "{err}");

    let err = rejected(
        &s,
        "ports.toml",
        "[node]\nhttp_addr = \"127.0.0.1:8001\"\ngrpc_addr = \"127.0.0.1:8001\"\n",
        "node.grpc_addr",
        &[],
    );
    assert!(err.contains("ports.toml"), "{err}");

    // Port 0 binds (the kernel picks the port), but is never advertised or
    // listed as a member's address, and a member listed in initial_members
    // needs a port its peers can know.
    let err = rejected(
        &s,
        "advertise-zero.toml",
        "[node]\nadvertise_http_addr = \"127.0.0.1:0\"\n",
        "node.advertise_http_addr",
        &[],
    );
    assert!(err.contains("port 0"), "{err}");
    let err = rejected(
        &s,
        "member-zero.toml",
        "[node]\nhttp_addr = \"127.0.0.1:0\"\n[cluster]\ninitial_members = [{ id = 1, http_addr = \"127.0.0.1:8001\" }, { id = 2, http_addr = \"127.0.0.1:0\" }]\n",
        "cluster.initial_members",
        &[],
    );
    assert!(
        err.contains("port 0") && err.contains("learns its port only when it starts"),
        "{err}"
    );
    let zero = s.write(
        "zero.toml",
        "[node]\nhttp_addr = \"127.0.0.1:0\"\ngrpc_addr = \"127.0.0.1:0\"\n",
    );
    let out = server(
        &s.0,
        &["--config", zero.to_str().unwrap(), "--validate-config"],
        &[],
    );
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));

    let err = rejected(
        &s,
        "tls.toml",
        "[security]\nenable_tls = true\ncert_file = \"/nonexistent/node.crt\"\nkey_file = \"/nonexistent/node.key\"\n",
        "security.cert_file",
        &[],
    );
    assert!(
        err.contains("/nonexistent/node.crt") && err.contains("tls.toml"),
        "{err}"
    );

    // A data directory below a regular file cannot be created, even by root.
    let blocker = s.write("blocker", "");
    let text = format!("[node]\ndata_dir = \"{}/data\"\n", blocker.display());
    let err = rejected(&s, "datadir.toml", &text, "node.data_dir", &[]);
    assert!(err.contains("datadir.toml"), "{err}");

    let err = rejected(
        &s,
        "original.toml",
        "[storage]\nenable_wal = true\n",
        "storage.enable_wal",
        &[],
    );
    assert!(err.contains("not supported"), "{err}");

    let err = rejected(&s, "syntax.toml", "[node\nid = 1\n", "", &[]);
    assert!(err.contains("syntax.toml:1"), "{err}");

    // An environment variable with a bad value is named as the origin.
    let err = rejected(
        &s,
        "env.toml",
        "",
        "raft.heartbeat_interval",
        &[("FERRIUM_RAFT_HEARTBEAT_INTERVAL", "soon")],
    );
    assert!(
        err.contains("environment variable FERRIUM_RAFT_HEARTBEAT_INTERVAL"),
        "{err}"
    );

    // Several problems are all reported, one line each.
    let file = s.write(
        "many.toml",
        "[node]\nid = 0\nhttp_addr = \"0.0.0.0:8001\"\n",
    );
    let out = server(
        &s.0,
        &["--config", file.to_str().unwrap(), "--validate-config"],
        &[],
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).matches("configuration error").count() >= 2,
        "{}",
        stderr(&out)
    );

    // A bad flag is a usage error, status 2.
    let out = server(&s.0, &["--id"], &[]);
    assert_eq!(out.status.code(), Some(2));
    let out = server(&s.0, &["--bogus"], &[]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("--bogus"));

    // A missing --config file says how to make one.
    let out = server(&s.0, &["--config", "nope.toml", "--validate-config"], &[]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("--generate-config"),
        "{}",
        stderr(&out)
    );
}

/// Acceptance: the search paths are listed and the existing ones marked.
#[test]
fn list_config_paths_marks_existing_files() {
    let s = Scratch::new("paths");
    let out = server(&s.0, &["--list-config-paths"], &[]);
    assert!(out.status.success());
    let text = stdout(&out);
    for p in config::SEARCH_PATHS {
        let tail = p.trim_start_matches("~/").trim_start_matches("./");
        assert!(text.contains(tail), "{p} missing from {text}");
    }
    assert!(text.contains("./ferrium.toml") && text.contains("[missing]"));

    s.write("ferrium.toml", "[node]\nid = 3\n");
    let out = server(&s.0, &["--list-config-paths"], &[]);
    let text = stdout(&out);
    let line = text.lines().find(|l| l.contains("./ferrium.toml")).unwrap();
    assert!(line.contains("[exists, would be loaded]"), "{text}");

    // And that file is what the server then loads.
    let out = server(
        &s.0,
        &["--validate-config"],
        &[("FERRIUM_NODE_DATA_DIR", s.path("d").to_str().unwrap())],
    );
    let c: Config = toml::from_str(&stdout(&out)).unwrap();
    assert_eq!(c.node.id, 3);
}

/// Acceptance: CONFIG.md documents every key of the schema.
#[test]
fn config_md_documents_every_key() {
    let doc = std::fs::read_to_string(repo().join("CONFIG.md")).unwrap();
    let missing: Vec<&str> = KEYS
        .iter()
        .map(|k| k.path)
        .filter(|p| !doc.contains(&format!("`{p}`")))
        .collect();
    assert!(missing.is_empty(), "CONFIG.md lacks {missing:?}");
    for (key, _) in config::UNSUPPORTED {
        assert!(
            doc.contains(&format!("`{key}`")),
            "CONFIG.md lacks unsupported key {key}"
        );
    }
}

/// The schema table and the serde structs describe the same keys.
#[test]
fn keys_table_matches_the_structs() {
    let mut full = Config::default();
    full.node.name = Some("n".into());
    full.node.advertise_http_addr = Some(config::Address::new("h", 1));
    full.node.advertise_grpc_addr = Some(config::Address::new("h", 2));
    full.logging.file_path = Some("f".into());
    full.backup.dir = Some("b".into());
    full.security.cert_file = Some("c".into());
    full.security.key_file = Some("k".into());
    full.security.ca_file = Some("a".into());
    full.security.token_file = Some("t".into());
    full.security.cluster_secret_file = Some("s".into());
    full.security.tokens = vec![config::TokenEntry {
        token: "x".into(),
        role: config::Role::Read,
    }];
    full.security.peer_names = vec!["p".into()];
    full.security.cert_roles = vec![config::CertRole {
        name: "n".into(),
        role: config::Role::Read,
    }];
    let v = toml::Value::try_from(&full).unwrap();
    let mut serialized = Vec::new();
    for (section, table) in v.as_table().unwrap() {
        for key in table.as_table().unwrap().keys() {
            serialized.push(format!("{section}.{key}"));
        }
    }
    serialized.push("cluster.initial_members".into());
    let documented: Vec<String> = KEYS
        .iter()
        .filter(|k| !k.path.contains("[]"))
        .map(|k| k.path.to_string())
        .collect();
    serialized.sort();
    serialized.dedup();
    let mut documented_sorted = documented.clone();
    documented_sorted.sort();
    assert_eq!(serialized, documented_sorted);
}

/// Help and version work and exit 0.
#[test]
fn help_and_version() {
    let s = Scratch::new("help");
    let out = server(&s.0, &["--help"], &[]);
    assert!(out.status.success());
    for flag in [
        "--config",
        "--id",
        "--http-addr",
        "--grpc-addr",
        "--data-dir",
        "--log-level",
        "--log-format",
        "--generate-config",
        "--validate-config",
        "--list-config-paths",
        "--version",
    ] {
        assert!(stdout(&out).contains(flag), "help lacks {flag}");
    }
    let out = server(&s.0, &["-V"], &[]);
    let version = stdout(&out);
    let version = version.trim();
    assert!(
        version.starts_with(&format!("ferrium-server {} (", env!("CARGO_PKG_VERSION")))
            && (version.ends_with(" build, opt-level 1)")
                || version.ends_with(" build, opt-level 3)")),
        "{version}"
    );
}

/// Secrets never appear in --validate-config output.
#[test]
fn tokens_are_redacted_in_effective_config() {
    let s = Scratch::new("redact");
    let file = s.write(
        "t.toml",
        &format!(
            "[security]\nauth_method = \"token\"\ntokens = [{{ token = \"s3cr3t-s3cr3t-s3cr3t\", role = \"admin\" }}]\ncluster_secret_file = \"{}\"\n",
            s.write("secret", "0123456789abcdef0123456789abcdef").display()
        ),
    );
    let out = server(
        &s.0,
        &["-c", file.to_str().unwrap(), "--validate-config"],
        &[("FERRIUM_NODE_DATA_DIR", s.path("d").to_str().unwrap())],
    );
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(!stdout(&out).contains("s3cr3t") && !stderr(&out).contains("s3cr3t"));
    assert!(stdout(&out).contains("<redacted>"));
}

/// The entries of `security.token_file` are checked when the configuration
/// is validated: a short token or a malformed digest fails with the file
/// and line, never the token itself.
#[test]
fn token_file_entries_are_checked_at_validation() {
    let s = Scratch::new("token-file");
    let secret = s.write("secret", "0123456789abcdef0123456789abcdef");
    let data = s.path("d");
    let check = |tokens: &str| {
        let file = s.write("tokens", tokens);
        let cfg = s.write(
            "t.toml",
            &format!(
                "[security]\nauth_method = \"token\"\ntoken_file = \"{}\"\ncluster_secret_file = \"{}\"\n",
                file.display(),
                secret.display()
            ),
        );
        server(
            &s.0,
            &["-c", cfg.to_str().unwrap(), "--validate-config"],
            &[("FERRIUM_NODE_DATA_DIR", data.to_str().unwrap())],
        )
    };
    let digest = "sha256:".to_string() + &"ab".repeat(32);
    let out = check(&format!(
        "# token role\n0123456789abcdef0123 admin\n{digest} read\n"
    ));
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));

    let out = check("0123456789abcdef0123 admin\nshort-secret read\n");
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(err.contains("security.token_file"), "{err}");
    assert!(err.contains("tokens:2"), "{err}");
    assert!(err.contains("shorter than 16 characters"), "{err}");
    assert!(
        !err.contains("short-secret"),
        "the message shows the token: {err}"
    );

    for bad in ["sha256:abcd read\n", &format!("{digest}zz read\n")] {
        let out = check(bad);
        assert_eq!(out.status.code(), Some(2), "{bad}: {}", stderr(&out));
        assert!(
            stderr(&out).contains("64 hexadecimal digits"),
            "{}",
            stderr(&out)
        );
    }
    let out = check("0123456789abcdef0123 root\n");
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("read, write or admin"),
        "{}",
        stderr(&out)
    );
}

/// Certificate names say which field they mean; ambiguous or unsafe ones
/// are refused with the spelling to use.
#[test]
fn certificate_names_say_their_kind() {
    let s = Scratch::new("cert-kinds");
    let data = s.path("d");
    let check = |security: &str| {
        let cfg = s.write("c.toml", &format!("[security]\n{security}"));
        server(
            &s.0,
            &["-c", cfg.to_str().unwrap(), "--validate-config"],
            &[("FERRIUM_NODE_DATA_DIR", data.to_str().unwrap())],
        )
    };
    let out = check(
        "peer_names = [\"node1.ferrium.internal\", \"dns:node2.ferrium.internal\", \"uri:spiffe://ferrium.internal/node/3\"]
cert_roles = [
  { name = \"cn:ops@example.com\", role = \"admin\" },
  { name = \"dns:app.example.com\", role = \"write\" },
  { name = \"uri:spiffe://ferrium.internal/app\", role = \"write\" },
  { name = \"ip:10.0.0.7\", role = \"read\" },
]
",
    );
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));

    let out = check("cert_roles = [{ name = \"ops@example.com\", role = \"admin\" }]\n");
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(err.contains("security.cert_roles"), "{err}");
    assert!(err.contains("cn:ops@example.com"), "{err}");
    assert!(err.contains("dns:ops@example.com"), "{err}");

    for (peer, hint) in [
        ("cn:node1.ferrium.internal", "common name"),
        ("email:node1@ferrium.internal", "e-mail"),
        (
            "spiffe://ferrium.internal/node/1",
            "uri:spiffe://ferrium.internal/node/1",
        ),
    ] {
        let out = check(&format!("peer_names = [\"{peer}\"]\n"));
        assert_eq!(out.status.code(), Some(2), "{peer}: {}", stderr(&out));
        let err = stderr(&out);
        assert!(
            err.contains("security.peer_names") && err.contains(hint),
            "{peer}: {err}"
        );
    }
    let out = check("cert_roles = [{ name = \"email:ops@example.com\", role = \"admin\" }]\n");
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("e-mail"), "{}", stderr(&out));
}
