//! The container and Kubernetes examples under `contrib/` cannot run here,
//! but their configuration must load: each is checked with
//! `ferrium-server --validate-config` as the image or each pod would start it.

use crate::support::cluster::{Scratch, server_bin};
use std::process::Command;

/// The examples listen on all interfaces, so they must ship with client
/// authentication and peer authentication turned on.
fn assert_authenticated(text: &str, what: &str) {
    let config: toml::Value = toml::from_str(text).expect("the example is TOML");
    let security = &config["security"];
    assert_eq!(
        security["auth_method"].as_str(),
        Some("token"),
        "{what} binds 0.0.0.0 without client authentication"
    );
    assert!(
        security.get("cluster_secret_file").is_some()
            || security.get("enable_mtls").and_then(|v| v.as_bool()) == Some(true),
        "{what} binds 0.0.0.0 without peer authentication"
    );
    assert!(
        config["node"]["http_addr"]
            .as_str()
            .unwrap()
            .starts_with("0.0.0.0")
    );
}

/// Secret files for `--validate-config`, in place of the mounted secrets.
fn secrets(dir: &std::path::Path) -> Vec<(&'static str, String)> {
    let tokens = dir.join("tokens");
    let secret = dir.join("cluster-secret");
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(&tokens, "0123456789abcdef0123456789abcdef admin\n").unwrap();
    std::fs::write(&secret, "fedcba9876543210fedcba9876543210\n").unwrap();
    vec![
        ("FERRIUM_SECURITY_TOKEN_FILE", tokens.display().to_string()),
        (
            "FERRIUM_SECURITY_CLUSTER_SECRET_FILE",
            secret.display().to_string(),
        ),
    ]
}

fn validate(config: &std::path::Path, env: &[(&str, String)], data_dir: &std::path::Path) {
    let mut cmd = Command::new(server_bin());
    for (k, _) in std::env::vars() {
        if k.starts_with("FERRIUM_") {
            cmd.env_remove(k);
        }
    }
    let out = cmd
        .arg("--config")
        .arg(config)
        .arg("--validate-config")
        .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
        // /var/lib/ferrium is the volume in both examples.
        .env("FERRIUM_NODE_DATA_DIR", data_dir)
        .output()
        .expect("run ferrium-server");
    assert!(
        out.status.success(),
        "{} {env:?}: {}",
        config.display(),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn docker_config_validates() {
    let scratch = Scratch::new("docker-config");
    let config =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("contrib/docker/config.toml");
    let text = std::fs::read_to_string(&config).unwrap();
    assert!(text.contains("data_dir = \"/var/lib/ferrium\""));
    assert_authenticated(&text, "contrib/docker/config.toml");
    validate(
        &config,
        &secrets(&scratch.path.join("secrets")),
        &scratch.path,
    );
}

#[test]
fn kubernetes_config_validates_for_every_pod() {
    let scratch = Scratch::new("k8s-config");
    let yaml = include_str!(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/contrib/kubernetes/ferrium.yaml"
    ));
    let block = yaml
        .split("config.toml: |\n")
        .nth(1)
        .and_then(|rest| rest.split("\n---").next())
        .expect("a config.toml block in the ConfigMap");
    let toml: String = block
        .lines()
        .map(|l| l.strip_prefix("    ").unwrap_or(l))
        .collect::<Vec<_>>()
        .join("\n");
    assert_authenticated(&toml, "the Kubernetes ConfigMap");
    let config = scratch.path.join("config.toml");
    std::fs::write(&config, &toml).unwrap();
    let secret_env = secrets(&scratch.path.join("secrets"));
    for ordinal in 0..3 {
        let host = format!("ferrium-{ordinal}");
        let mut env = secret_env.clone();
        env.extend([
            ("FERRIUM_NODE_ID", (ordinal + 1).to_string()),
            (
                "FERRIUM_NODE_ADVERTISE_HTTP_ADDR",
                format!("{host}.ferrium:8001"),
            ),
            (
                "FERRIUM_NODE_ADVERTISE_GRPC_ADDR",
                format!("{host}.ferrium:9001"),
            ),
        ]);
        validate(&config, &env, &scratch.path.join(&host));
    }
}
