//! Fault-injecting proxies for tests: [`HttpFaultProxy`] stands in front of moto and can refuse,
//! delay, or answer with SES-style errors on command; [`TcpProxy`] stands in front of RabbitMQ
//! and can be cut (every connection dropped, new ones refused) or stalled (a silent partition:
//! nothing forwarded, nothing closed), and restored. Each test gets its own, so faults never
//! leak into tests running in parallel.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

/// What the HTTP proxy does with a request.
#[derive(Debug, Clone, PartialEq)]
pub enum HttpFault {
    /// Forward to the upstream.
    Pass,
    /// Close the connection without answering (a network failure to the client).
    Refuse,
    /// Wait, then forward.
    Delay(Duration),
    /// Answer with this status and SES error type (`x-amzn-ErrorType`), e.g.
    /// `(429, "TooManyRequestsException")` or `(500, "InternalFailure")`.
    Error(u16, String),
}

struct HttpState {
    default: HttpFault,
    /// Faults for the next requests, used up one per request before `default` applies.
    queued: VecDeque<HttpFault>,
}

/// An HTTP/1.1 proxy that handles one request per connection (answering `Connection: close`),
/// so that every request, even on a client's pooled connection, sees the current fault.
pub struct HttpFaultProxy {
    pub addr: SocketAddr,
    state: Arc<Mutex<HttpState>>,
    requests: Arc<AtomicU64>,
    cancel: CancellationToken,
}

impl HttpFaultProxy {
    pub async fn start(upstream: &str) -> Self {
        let upstream: SocketAddr = upstream
            .trim_start_matches("http://")
            .trim_end_matches('/')
            .parse()
            .expect("upstream is http://host:port");
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind proxy");
        let addr = listener.local_addr().expect("proxy address");
        let state = Arc::new(Mutex::new(HttpState {
            default: HttpFault::Pass,
            queued: VecDeque::new(),
        }));
        let requests = Arc::new(AtomicU64::new(0));
        let cancel = CancellationToken::new();
        let (st, rq, cn) = (state.clone(), requests.clone(), cancel.clone());
        tokio::spawn(async move {
            loop {
                let (client, _) = tokio::select! {
                    a = listener.accept() => match a { Ok(c) => c, Err(_) => continue },
                    _ = cn.cancelled() => return,
                };
                let (st, rq) = (st.clone(), rq.clone());
                tokio::spawn(async move {
                    let _ = handle(client, upstream, st, rq).await;
                });
            }
        });
        Self {
            addr,
            state,
            requests,
            cancel,
        }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Applies `fault` to every request from now on.
    pub fn set(&self, fault: HttpFault) {
        let mut s = self.state.lock().expect("proxy state");
        s.default = fault;
        s.queued.clear();
    }

    /// Applies `fault` to the next `n` requests, then goes back to the default.
    pub fn next(&self, n: usize, fault: HttpFault) {
        let mut s = self.state.lock().expect("proxy state");
        s.queued.extend(std::iter::repeat_n(fault, n));
    }

    pub fn requests(&self) -> u64 {
        self.requests.load(Ordering::Relaxed)
    }
}

impl Drop for HttpFaultProxy {
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}

async fn handle(
    mut client: TcpStream,
    upstream: SocketAddr,
    state: Arc<Mutex<HttpState>>,
    requests: Arc<AtomicU64>,
) -> std::io::Result<()> {
    let request = read_request(&mut client).await?;
    requests.fetch_add(1, Ordering::Relaxed);
    let fault = {
        let mut s = state.lock().expect("proxy state");
        s.queued.pop_front().unwrap_or_else(|| s.default.clone())
    };
    match fault {
        HttpFault::Refuse => return Ok(()),
        HttpFault::Error(status, kind) => {
            let body = format!("{{\"message\":\"injected {kind}\"}}");
            let resp = format!(
                "HTTP/1.1 {status} Injected\r\ncontent-type: application/json\r\nx-amzn-errortype: {kind}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                body.len()
            );
            client.write_all(resp.as_bytes()).await?;
            return client.shutdown().await;
        }
        HttpFault::Delay(d) => tokio::time::sleep(d).await,
        HttpFault::Pass => {}
    }
    let mut up = TcpStream::connect(upstream).await?;
    up.write_all(&with_connection_close(&request)).await?;
    let mut response = Vec::new();
    up.read_to_end(&mut response).await?;
    client.write_all(&response).await?;
    client.shutdown().await
}

/// Reads one request: the head, then `content-length` bytes of body.
async fn read_request(s: &mut TcpStream) -> std::io::Result<Vec<u8>> {
    let mut buf = Vec::with_capacity(4096);
    let mut chunk = [0u8; 4096];
    let head_end = loop {
        let n = s.read(&mut chunk).await?;
        if n == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        buf.extend_from_slice(&chunk[..n]);
        if let Some(p) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break p + 4;
        }
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).to_ascii_lowercase();
    let len: usize = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0);
    while buf.len() < head_end + len {
        let n = s.read(&mut chunk).await?;
        if n == 0 {
            break;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    Ok(buf)
}

fn with_connection_close(request: &[u8]) -> Vec<u8> {
    let head_end = request
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map_or(request.len(), |p| p + 4);
    let head = String::from_utf8_lossy(&request[..head_end]);
    let mut out = String::new();
    for line in head.split("\r\n").filter(|l| !l.is_empty()) {
        if !line.to_ascii_lowercase().starts_with("connection:") {
            out.push_str(line);
            out.push_str("\r\n");
        }
    }
    out.push_str("connection: close\r\n\r\n");
    let mut bytes = out.into_bytes();
    bytes.extend_from_slice(&request[head_end..]);
    bytes
}

/// A TCP proxy that can be cut or stalled. [`TcpProxy::cut`] drops every open connection and
/// refuses new ones until [`TcpProxy::restore`]: "RabbitMQ went away", with a FIN or RST the
/// client sees at once. [`TcpProxy::stall`] is a silent partition instead: until
/// [`TcpProxy::unstall`] no byte goes through in either direction, yet no socket is closed, so
/// the client learns nothing from TCP and only its own timeouts (heartbeats) can tell.
pub struct TcpProxy {
    pub addr: SocketAddr,
    inner: Arc<Mutex<CancellationToken>>,
    down: Arc<std::sync::atomic::AtomicBool>,
    stalled: tokio::sync::watch::Sender<bool>,
    accepted: Arc<AtomicU64>,
    stop: CancellationToken,
    /// Where new connections go: [`TcpProxy::retarget`] moves it, as a managed database's DNS
    /// name moves to a promoted replica.
    upstream: Arc<Mutex<SocketAddr>>,
}

impl TcpProxy {
    pub async fn start(upstream: SocketAddr) -> Self {
        let target = Arc::new(Mutex::new(upstream));
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind proxy");
        let addr = listener.local_addr().expect("proxy address");
        let inner = Arc::new(Mutex::new(CancellationToken::new()));
        let down = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (stalled, _) = tokio::sync::watch::channel(false);
        let accepted = Arc::new(AtomicU64::new(0));
        let stop = CancellationToken::new();
        let (inn, dn, st, acc) = (inner.clone(), down.clone(), stop.clone(), accepted.clone());
        let stall = stalled.clone();
        let tgt = target.clone();
        tokio::spawn(async move {
            loop {
                let (client, _) = tokio::select! {
                    a = listener.accept() => match a { Ok(c) => c, Err(_) => continue },
                    _ = st.cancelled() => return,
                };
                acc.fetch_add(1, Ordering::Relaxed);
                if dn.load(Ordering::Relaxed) {
                    drop(client);
                    continue;
                }
                let cut = inn.lock().expect("proxy state").clone();
                let stall = stall.subscribe();
                let upstream = *tgt.lock().expect("proxy target");
                tokio::spawn(async move {
                    tokio::select! {
                        _ = forward(client, upstream, stall) => {}
                        _ = cut.cancelled() => {}
                    }
                });
            }
        });
        Self {
            addr,
            inner,
            down,
            stalled,
            accepted,
            stop,
            upstream: target,
        }
    }

    /// Sends new connections to `to` from now on; open ones stay where they are (cut them to
    /// move everyone).
    pub fn retarget(&self, to: SocketAddr) {
        *self.upstream.lock().expect("proxy target") = to;
    }

    /// Drops every connection and refuses new ones.
    pub fn cut(&self) {
        self.down.store(true, Ordering::Relaxed);
        let mut t = self.inner.lock().expect("proxy state");
        t.cancel();
        *t = CancellationToken::new();
    }

    pub fn restore(&self) {
        self.down.store(false, Ordering::Relaxed);
    }

    /// A silent partition: from now on nothing is forwarded either way, and nothing is closed.
    /// Open connections stay open with their bytes held back (as behind a link that drops every
    /// packet: the sender's kernel keeps them, and TCP delivers them once the link is back). A
    /// new connection is accepted but held, never connected upstream: the closest a listening
    /// socket comes to dropped SYNs (the kernel completes the handshake before `accept`), so a
    /// client's connect succeeds and its protocol handshake hangs.
    pub fn stall(&self) {
        self.stalled.send_replace(true);
    }

    /// Ends [`TcpProxy::stall`]: held bytes and held connections go through, in order.
    pub fn unstall(&self) {
        self.stalled.send_replace(false);
    }

    /// Connections accepted so far (refused and held ones included): a client that gave up a
    /// connection and opened another shows up here.
    pub fn accepted(&self) -> u64 {
        self.accepted.load(Ordering::Relaxed)
    }
}

impl Drop for TcpProxy {
    fn drop(&mut self) {
        self.stop.cancel();
        self.inner.lock().expect("proxy state").cancel();
    }
}

/// Waits while the proxy is stalled (returns at once when it is not).
async fn flowing(stall: &mut tokio::sync::watch::Receiver<bool>) {
    // An error means the proxy is gone: its connections are being cancelled anyway.
    let _ = stall.wait_for(|stalled| !*stalled).await;
}

/// One proxied connection: connects upstream (once not stalled), then pumps both ways, like
/// `copy_bidirectional` but holding every byte, and every end of stream, while stalled.
async fn forward(
    client: TcpStream,
    upstream: SocketAddr,
    mut stall: tokio::sync::watch::Receiver<bool>,
) -> std::io::Result<()> {
    flowing(&mut stall).await;
    let up = TcpStream::connect(upstream).await?;
    let (client_read, client_write) = client.into_split();
    let (up_read, up_write) = up.into_split();
    // An error either way ends both (dropping the halves closes the sockets); an end of stream
    // is passed on and the other direction goes on until its own end.
    tokio::try_join!(
        pump(client_read, up_write, stall.clone()),
        pump(up_read, client_write, stall),
    )?;
    Ok(())
}

async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    mut stall: tokio::sync::watch::Receiver<bool>,
) -> std::io::Result<()> {
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        // Nothing is read while stalled, so what the sender writes piles up in its socket
        // buffers instead of here; a chunk read just before the stall is held too.
        flowing(&mut stall).await;
        let n = from.read(&mut buf).await?;
        flowing(&mut stall).await;
        if n == 0 {
            return to.shutdown().await;
        }
        to.write_all(&buf[..n]).await?;
    }
}
