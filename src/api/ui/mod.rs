//! The console (`/ui`): one page, its script and its styles, compiled into
//! the binary so that it works offline and needs nothing beside the node.
//!
//! The files hold no data. What the page shows it asks for with the
//! caller's token (or client certificate) through the same routes as any
//! client: `/cluster/status`, `/metrics`, `/range`, `/write` and `/watch`,
//! so access follows the API's roles and nothing here decides who may see
//! what.

use super::op::{Op, Routes};
use crate::http::{Method, Request, Response};

const PAGE: &str = include_str!("index.html");
const SCRIPT: &str = include_str!("app.js");
const STYLES: &str = include_str!("style.css");

/// The files, by path, with their content types.
const FILES: [(&str, &str, &str); 4] = [
    ("/ui", "text/html; charset=utf-8", PAGE),
    ("/ui/", "text/html; charset=utf-8", PAGE),
    ("/ui/app.js", "text/javascript; charset=utf-8", SCRIPT),
    ("/ui/style.css", "text/css; charset=utf-8", STYLES),
];

/// Adds the console's routes to `routes`.
pub fn routes(mut routes: Routes) -> Routes {
    for (path, content_type, body) in FILES {
        routes = routes.route(
            Method::Get,
            path,
            Op::Console,
            move |_req: Request| async move { file(content_type, body) },
        );
    }
    routes
}

/// A static file. The page's own policy keeps it to its own origin: no
/// script, style or connection anywhere else, and no framing by other sites.
fn file(content_type: &'static str, body: &'static str) -> Response {
    Response::with_body(200, content_type, body)
        .header("cache-control", "no-cache")
        .header("x-content-type-options", "nosniff")
        .header(
            "content-security-policy",
            "default-src 'self'; img-src 'self' data:; frame-ancestors 'none'; base-uri 'none'; form-action 'none'",
        )
        .header("referrer-policy", "no-referrer")
}

/// The total size of the console's files, in bytes.
pub fn size() -> usize {
    PAGE.len() + SCRIPT.len() + STYLES.len()
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_console_weighs_under_100_kib() {
        assert!(super::size() < 100 * 1024, "{} bytes", super::size());
    }

    #[test]
    fn the_page_loads_only_its_own_script_and_styles() {
        assert!(super::PAGE.contains("/ui/app.js"));
        assert!(super::PAGE.contains("/ui/style.css"));
        for outside in ["http://", "https://", "//cdn"] {
            assert!(
                !super::PAGE.contains(&format!("src=\"{outside}"))
                    && !super::PAGE.contains(&format!("href=\"{outside}")),
                "the page loads something from elsewhere ({outside})"
            );
        }
    }
}
