//! The container and Kubernetes examples under `contrib/` cannot run here,
//! but their configuration must load: each is checked with
//! `ferrium-server --validate-config` as the image or each pod would start it.

mod common;

use common::{Scratch, server_bin};
use std::process::Command;

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
    validate(&config, &[], &scratch.path);
}

#[test]
fn kubernetes_config_validates_for_every_pod() {
    let scratch = Scratch::new("k8s-config");
    let yaml = include_str!("../contrib/kubernetes/ferrium.yaml");
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
    let config = scratch.path.join("config.toml");
    std::fs::write(&config, toml).unwrap();
    for ordinal in 0..3 {
        let host = format!("ferrium-{ordinal}");
        validate(
            &config,
            &[
                ("FERRIUM_NODE_ID", (ordinal + 1).to_string()),
                (
                    "FERRIUM_NODE_ADVERTISE_HTTP_ADDR",
                    format!("{host}.ferrium:8001"),
                ),
                (
                    "FERRIUM_NODE_ADVERTISE_GRPC_ADDR",
                    format!("{host}.ferrium:9001"),
                ),
            ],
            &scratch.path.join(&host),
        );
    }
}
