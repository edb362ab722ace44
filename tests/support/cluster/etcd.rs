//! A real etcd 3.4 member (Debian's `etcd-server`), for tests that run the
//! same client commands against etcd and Ferrium and compare what comes
//! back. One member on kernel-assigned loopback ports, its data in the
//! scratch directory; killed when dropped.

use super::{Scratch, reserve_port};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The etcd binary: `FERRIUM_TEST_ETCD` if set, else `etcd` on the PATH.
pub fn etcd_bin() -> String {
    std::env::var("FERRIUM_TEST_ETCD").unwrap_or_else(|_| "etcd".into())
}

/// The etcdctl binary: `FERRIUM_TEST_ETCDCTL` if set, else `etcdctl`.
pub fn etcdctl_bin() -> String {
    std::env::var("FERRIUM_TEST_ETCDCTL").unwrap_or_else(|_| "etcdctl".into())
}

pub struct Etcd {
    child: Child,
    /// `127.0.0.1:PORT` of its client (gRPC and JSON gateway) listener.
    pub client_addr: String,
    pub scratch: Scratch,
    /// Held while etcd runs (etcd's listeners set SO_REUSEADDR too).
    _ports: (super::ReservedPort, super::ReservedPort),
}

impl Etcd {
    /// Starts one etcd member and waits until it answers.
    pub fn start(name: &str) -> Etcd {
        let scratch = Scratch::new(&format!("etcd-{name}"));
        let client = reserve_port();
        let peer = reserve_port();
        let client_url = format!("http://{}", client.addr());
        let peer_url = format!("http://{}", peer.addr());
        let log = std::fs::File::create(scratch.path.join("etcd.log")).expect("etcd log");
        let child = Command::new(etcd_bin())
            .arg("--name=e1")
            .arg(format!("--data-dir={}", scratch.path.join("data").display()))
            .arg(format!("--listen-client-urls={client_url}"))
            .arg(format!("--advertise-client-urls={client_url}"))
            .arg(format!("--listen-peer-urls={peer_url}"))
            .arg(format!("--initial-advertise-peer-urls={peer_url}"))
            .arg(format!("--initial-cluster=e1={peer_url}"))
            .arg("--initial-cluster-token=ferrium-test")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "cannot start {} ({e}): the etcd API tests compare with etcd 3.4; install it with `apt-get install etcd-server etcd-client` (contrib/check-prereqs.sh does)",
                    etcd_bin()
                )
            });
        let etcd = Etcd {
            child,
            client_addr: client.addr(),
            scratch,
            _ports: (client, peer),
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let ok = Command::new(etcdctl_bin())
                .env("ETCDCTL_API", "3")
                .arg(format!("--endpoints={}", etcd.client_addr))
                .args(["endpoint", "health"])
                .output()
                .is_ok_and(|o| o.status.success());
            if ok {
                return etcd;
            }
            assert!(
                Instant::now() < deadline,
                "etcd did not become healthy within 30 s; its log is in {}",
                etcd.scratch.path.display()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Etcd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
