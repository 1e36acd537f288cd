//! A tokio/axum HTTP server that runs under relaunch (or systemd socket activation).
//!
//! It answers every request with `pid=<pid> lang=rust`. See README.md beside Cargo.toml.

use std::io::{self, ErrorKind};
use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::{SocketAddr, UnixDatagram};
use std::pin::{pin, Pin};
use std::process::ExitCode;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use hyper::server::conn::http1;
use hyper_util::rt::TokioIo;
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::{watch, Notify};
use tokio::task::JoinSet;

/// After a stop, how long a connection we accepted may take to send its first request.
const FIRST_REQUEST_GRACE: Duration = Duration::from_secs(5);
/// A stop gives the requests in flight this long, then exits anyway.
const STOP_GRACE: Duration = Duration::from_secs(8);

fn main() -> ExitCode {
    // One thread is plenty for an example; `#[tokio::main]` would work the same.
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(err) => return fail(&format!("cannot start the tokio runtime: {err}")),
    };
    match runtime.block_on(serve()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(msg) => fail(&msg),
    }
}

fn fail(msg: &str) -> ExitCode {
    eprintln!("axum-example: {msg}");
    ExitCode::FAILURE
}

async fn serve() -> Result<(), String> {
    // 1. Handle SIGTERM/SIGINT from now on: a stop that arrives while we start still ends us
    //    cleanly, instead of killing us by the default action.
    let mut term = signal(SignalKind::terminate()).map_err(|e| format!("SIGTERM: {e}"))?;
    let mut int = signal(SignalKind::interrupt()).map_err(|e| format!("SIGINT: {e}"))?;

    // 2. The inherited socket: fd 3, ours only if LISTEN_PID is our pid (listenfd checks).
    let std_listener = listenfd::ListenFd::from_env()
        .take_tcp_listener(0)
        .map_err(|e| format!("inherited socket at fd 3: {e}"))?
        .ok_or("no socket inherited: run me under relaunch (LISTEN_FDS/LISTEN_PID unset)")?;
    // `from_std` needs a non-blocking socket, and a launcher may pass a blocking one: then a
    // connection that another generation accepted first would leave us stuck in accept(),
    // deaf to SIGTERM.
    std_listener
        .set_nonblocking(true)
        .map_err(|e| format!("setting O_NONBLOCK: {e}"))?;
    let listener = TcpListener::from_std(std_listener).map_err(|e| format!("tokio: {e}"))?;

    let body = format!("pid={} lang=rust\n", std::process::id());
    let app = Router::new().fallback(move || async move { body });

    // 3. Connections that arrive before the first accept wait in the queue: say READY=1 now.
    notify_ready().map_err(|e| format!("sending READY=1 to NOTIFY_SOCKET: {e}"))?;
    eprintln!("axum-example: pid {} serving", std::process::id());

    let (stop_tx, stop_rx) = watch::channel(false);
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _peer)) => {
                    connections.spawn(connection(stream, app.clone(), stop_rx.clone()));
                }
                Err(err) => {
                    // E.g. out of file descriptors: back off instead of spinning.
                    eprintln!("axum-example: accept: {err}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            },
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
            _ = term.recv() => break,
            _ = int.recv() => break,
        }
    }

    // 4. Stop: close our copy of the listener (never shutdown() it: relaunch and the next
    //    generation share it, and connections still queued are theirs), then let every
    //    connection finish its request (see `connection`).
    drop(listener);
    let _ = stop_tx.send(true);
    let drained = tokio::time::timeout(STOP_GRACE, async {
        while connections.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        eprintln!("axum-example: requests still open after {STOP_GRACE:?}, exiting anyway");
    }
    eprintln!("axum-example: pid {} stopped", std::process::id());
    Ok(())
}

/// Serves one HTTP/1 connection until it ends, or until a stop has let it finish its request.
async fn connection(stream: TcpStream, app: Router, mut stop: watch::Receiver<bool>) {
    let first_bytes = Arc::new(Notify::new());
    let io = TokioIo::new(FirstBytes {
        stream,
        notify: Some(Arc::clone(&first_bytes)),
    });
    let conn = http1::Builder::new().serve_connection(io, TowerToHyperService::new(app));
    let mut conn = pin!(conn);
    tokio::select! {
        _ = conn.as_mut() => return,
        _ = stop.wait_for(|stopping| *stopping) => {}
    }
    // Stopping. hyper's graceful shutdown closes a connection that has sent no byte yet as if
    // it were idle. But we accepted it, so its client connected before the stop and its
    // request may be on its way: closing now would fail that request. (This is also why this
    // example does not use `axum::serve`, whose graceful shutdown does exactly that.) Give the
    // first bytes a moment to arrive.
    tokio::select! {
        _ = conn.as_mut() => return,
        () = first_bytes.notified() => {}
        () = tokio::time::sleep(FIRST_REQUEST_GRACE) => {}
    }
    // Finish the request in flight with `Connection: close`; close an idle keep-alive
    // connection at once.
    conn.as_mut().graceful_shutdown();
    let _ = conn.await; // a client that went away is not our error
}

/// A connection's socket that says when its first bytes have been read.
struct FirstBytes {
    stream: TcpStream,
    notify: Option<Arc<Notify>>,
}

impl AsyncRead for FirstBytes {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let poll = Pin::new(&mut this.stream).poll_read(cx, buf);
        if buf.filled().len() > before {
            if let Some(notify) = this.notify.take() {
                notify.notify_one(); // kept as a permit until someone waits
            }
        }
        poll
    }
}

impl AsyncWrite for FirstBytes {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().stream).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_shutdown(cx)
    }
}

/// Sends `READY=1` to `$NOTIFY_SOCKET` (`relaunch --ready notify`, systemd `Type=notify`);
/// does nothing without it. A name starting with `@` is an abstract socket.
fn notify_ready() -> io::Result<()> {
    let Some(path) = std::env::var_os("NOTIFY_SOCKET") else {
        return Ok(());
    };
    let bytes = path.as_encoded_bytes();
    let addr = match bytes.strip_prefix(b"@") {
        Some(name) => SocketAddr::from_abstract_name(name)?,
        None if bytes.starts_with(b"/") => SocketAddr::from_pathname(&path)?,
        None => return Err(io::Error::new(ErrorKind::InvalidInput, "not an address")),
    };
    UnixDatagram::unbound()?.send_to_addr(b"READY=1", &addr)?;
    Ok(())
}
