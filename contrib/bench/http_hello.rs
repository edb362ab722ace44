//! A trivial Ferrium HTTP server for benchmarks: `GET /hello` answers a small
//! fixed JSON body. Used by `contrib/bench/http-vs-nginx.sh`.
//!
//! Usage: `http-hello [ADDR]` (default 127.0.0.1:8080); `FERRIUM_BENCH_THREADS`
//! sets the number of runtime worker threads (default: one per CPU).

use ferrium::http::{Method, Request, Response, Router, Server, ServerConfig};

/// The same bytes nginx serves in the comparison.
const BODY: &str = r#"{"status":"healthy","service":"ferrium","version":"0.1.0"}"#;

fn main() -> std::io::Result<()> {
    let addr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:8080".to_string());
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    if let Some(n) = std::env::var("FERRIUM_BENCH_THREADS")
        .ok()
        .and_then(|v| v.parse().ok())
    {
        builder.worker_threads(n);
    }
    let runtime = builder.enable_all().build()?;
    runtime.block_on(async {
        let router = Router::new().route(Method::Get, "/hello", |_req: Request| async {
            Response::with_body(200, "application/json", BODY)
        });
        let server = Server::bind(addr, ServerConfig::default(), router).await?;
        eprintln!("http-hello listening on {}", server.local_addr()?);
        let stop = server.shutdown_handle();
        tokio::spawn(async move {
            if tokio::signal::ctrl_c().await.is_ok() {
                stop.shutdown();
            }
        });
        server.run().await
    })
}
