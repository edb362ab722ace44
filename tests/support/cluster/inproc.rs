//! Nodes inside the test process: `ferrium::server::start` on a runtime of
//! their own, for tests where a separate process is not the point (no
//! kill -9, no signals, no exit codes, no log file to read). Several run in
//! one process: each node has its own metrics and listeners.

use std::path::Path;
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::Duration;

/// A running in-process node; stopping it (or dropping it) shuts it down.
pub struct InProcess {
    stop: Option<tokio::sync::oneshot::Sender<Duration>>,
    thread: Option<JoinHandle<()>>,
}

impl InProcess {
    /// Loads `config` as `ferrium-server --config` does (no environment
    /// variables, no flags) and starts the node; returns once it listens.
    pub fn start(config: &Path) -> InProcess {
        let loaded = ferrium::config::load(
            Some(config),
            std::iter::empty(),
            &ferrium::config::CliOverrides::default(),
        )
        .and_then(|loaded| {
            let errors = ferrium::config::validate(&loaded);
            if errors.is_empty() {
                Ok(loaded)
            } else {
                Err(errors)
            }
        })
        .unwrap_or_else(|errors| {
            let text: Vec<String> = errors.iter().map(|e| e.to_string()).collect();
            panic!("{}: {}", config.display(), text.join("; "))
        });
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<Duration>();
        let (ready_tx, ready_rx) = mpsc::channel::<Result<(), String>>();
        let name = format!("node-{}", loaded.config.node.id);
        let thread = std::thread::Builder::new()
            .name(name)
            .spawn(move || {
                let runtime = tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(2)
                    .enable_all()
                    .build()
                    .expect("a runtime for an in-process node");
                runtime.block_on(async move {
                    let node = match ferrium::server::start(loaded.config).await {
                        Ok(node) => node,
                        Err(e) => {
                            let _ = ready_tx.send(Err(e));
                            return;
                        }
                    };
                    let _ = ready_tx.send(Ok(()));
                    // A dropped sender (the test panicked) stops at once.
                    let grace = stop_rx.await.unwrap_or(Duration::ZERO);
                    node.shutdown(grace).await;
                });
            })
            .expect("spawn an in-process node");
        match ready_rx.recv() {
            Ok(Ok(())) => {}
            Ok(Err(e)) => panic!("the in-process node did not start: {e}"),
            Err(_) => panic!("the in-process node's thread ended before it started"),
        }
        InProcess {
            stop: Some(stop_tx),
            thread: Some(thread),
        }
    }

    /// Shuts the node down as SIGTERM would, letting requests in flight
    /// finish for up to `grace`, and waits until its store is closed.
    pub fn stop(mut self, grace: Duration) {
        self.stop_now(grace);
    }

    fn stop_now(&mut self, grace: Duration) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(grace);
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Drop for InProcess {
    fn drop(&mut self) {
        self.stop_now(Duration::ZERO);
    }
}
