//! systemd's service notification protocol (`sd_notify`), without libsystemd.
//!
//! Under `Type=notify` systemd passes a datagram socket in `$NOTIFY_SOCKET`
//! and waits for `READY=1` before it considers the unit started; `STOPPING=1`
//! tells it the shutdown it sees is intended. The protocol is one datagram of
//! newline-separated `KEY=VALUE` lines, so std's `UnixDatagram` is all it
//! takes. A socket path starting with `@` lives in Linux's abstract namespace.
//!
//! Notification is best effort and never fails the caller: outside systemd
//! (no `NOTIFY_SOCKET`) it does nothing, and a send error is only logged.

use std::os::unix::net::UnixDatagram;

/// Sends `state` (e.g. `"READY=1"`) to the service manager, if there is one.
pub fn notify(state: &str) {
    let Some(path) = std::env::var_os("NOTIFY_SOCKET") else {
        return;
    };
    let Some(path) = path.to_str().filter(|p| !p.is_empty()) else {
        log::warn!("NOTIFY_SOCKET is not a usable path; not notifying systemd of {state}");
        return;
    };
    if let Err(e) = send(path, state) {
        log::warn!("cannot notify systemd of {state} through NOTIFY_SOCKET={path}: {e}");
    }
}

fn send(path: &str, state: &str) -> std::io::Result<usize> {
    let socket = UnixDatagram::unbound()?;
    match path.strip_prefix('@') {
        Some(name) => send_abstract(&socket, name, state),
        None => socket.send_to(state.as_bytes(), path),
    }
}

#[cfg(any(target_os = "linux", target_os = "android"))]
fn send_abstract(socket: &UnixDatagram, name: &str, state: &str) -> std::io::Result<usize> {
    #[cfg(target_os = "android")]
    use std::os::android::net::SocketAddrExt;
    #[cfg(target_os = "linux")]
    use std::os::linux::net::SocketAddrExt;
    let addr = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes())?;
    socket.send_to_addr(state.as_bytes(), &addr)
}

#[cfg(not(any(target_os = "linux", target_os = "android")))]
fn send_abstract(_: &UnixDatagram, _: &str, _: &str) -> std::io::Result<usize> {
    Err(std::io::Error::new(
        std::io::ErrorKind::Unsupported,
        "abstract socket names exist only on Linux",
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    // One test touches NOTIFY_SOCKET so that tests in parallel never race on it.
    #[test]
    fn notifies_path_and_abstract_sockets_and_is_a_no_op_without_one() {
        let dir = std::env::temp_dir().join(format!("ferrium-notify-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("notify.sock");
        let listener = UnixDatagram::bind(&path).unwrap();
        listener
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        let mut buf = [0u8; 64];

        // SAFETY: no other test in this crate reads or writes NOTIFY_SOCKET.
        unsafe { std::env::set_var("NOTIFY_SOCKET", &path) };
        notify("READY=1");
        let n = listener.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"READY=1");

        #[cfg(target_os = "linux")]
        {
            use std::os::linux::net::SocketAddrExt;
            let name = format!("ferrium-notify-test-{}", std::process::id());
            let addr = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes()).unwrap();
            let abstract_listener = UnixDatagram::bind_addr(&addr).unwrap();
            abstract_listener
                .set_read_timeout(Some(Duration::from_secs(5)))
                .unwrap();
            unsafe { std::env::set_var("NOTIFY_SOCKET", format!("@{name}")) };
            notify("STOPPING=1");
            let n = abstract_listener.recv(&mut buf).unwrap();
            assert_eq!(&buf[..n], b"STOPPING=1");
        }

        unsafe { std::env::remove_var("NOTIFY_SOCKET") };
        notify("READY=1"); // no socket: nothing happens, nothing panics
        let _ = std::fs::remove_dir_all(&dir);
    }
}
