//! loadgen's hot path: each worker owns one keep-alive HTTP/1.1 connection, writes a booking in
//! one buffer and reads the answer in place (httparse). At 256 connections against `bare-serve`,
//! the pooled reqwest client cost ~4x wrk's CPU per request, opened ~1.8 connections per worker
//! as its pool churned (which made the server pay too), and reached a third of wrk's rate from
//! the same server: loadgen measured itself. Everything off the hot path (events, polls,
//! replays) stays on `ApiClient`'s reqwest. `https` URLs keep using reqwest for bookings too.

use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;

use super::client::{Answer, ApiClient, IDEMPOTENCY_KEY_HEADER, classify, shed_if};

/// Where booking attempts go, resolved once per run from the bookings URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    host: String,
    port: u16,
    /// `Host` header value.
    authority: String,
    /// Path and query, as written on the request line.
    target: String,
}

impl Endpoint {
    /// The endpoint of a plain `http` URL; `None` for other schemes (reqwest serves those).
    pub fn of(url: &reqwest::Url) -> Option<Self> {
        if url.scheme() != "http" {
            return None;
        }
        let host = url.host_str()?.to_string();
        let port = url.port_or_known_default()?;
        let authority = match url.port() {
            Some(port) => format!("{host}:{port}"),
            None => host.clone(),
        };
        let target = match url.query() {
            Some(q) => format!("{}?{q}", url.path()),
            None => url.path().to_string(),
        };
        // The URL form of an IPv6 literal is bracketed; the socket address wants it bare.
        let host = host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_string();
        Some(Self {
            host,
            port,
            authority,
            target,
        })
    }
}

/// One worker's way to book: its own connection, or the pooled client for `https`.
pub enum Booker {
    Direct(BookingConn),
    Pooled {
        client: ApiClient,
        url: reqwest::Url,
    },
}

impl Booker {
    pub fn new(
        client: &ApiClient,
        url: &reqwest::Url,
        endpoint: Option<&Arc<Endpoint>>,
        timeout: Duration,
    ) -> Self {
        match endpoint {
            Some(endpoint) => Booker::Direct(BookingConn::new(endpoint.clone(), timeout)),
            None => Booker::Pooled {
                client: client.clone(),
                url: url.clone(),
            },
        }
    }

    pub async fn book(&mut self, body: &[u8], key: Option<&str>, bearer: Option<&str>) -> Answer {
        match self {
            Booker::Direct(conn) => conn.book(body, key, bearer).await,
            Booker::Pooled { client, url } => client.book(url, body.to_vec(), key, bearer).await,
        }
    }
}

/// Why an exchange failed, and whether the request may be sent again on a new connection.
struct Failure {
    kind: &'static str,
    /// Nothing reached a reused connection's peer: it had closed it while idle (keep-alive
    /// timeout). reqwest retries those too; every other failure is an answer of its own.
    retry: bool,
}

const READ_CHUNK: usize = 8 * 1024;
/// A response head larger than this is not a booking answer.
const MAX_HEAD: usize = 64 * 1024;
const MAX_HEADERS: usize = 32;

/// A connection idle this long is checked for a close by the server before it is used again
/// (an open-loop worker at a low rate waits seconds between requests).
const IDLE_CHECK: Duration = Duration::from_secs(1);

/// A keep-alive HTTP/1.1 connection that sends booking POSTs one at a time.
pub struct BookingConn {
    endpoint: Arc<Endpoint>,
    timeout: Duration,
    stream: Option<TcpStream>,
    last_used: Instant,
    request: Vec<u8>,
    buf: Vec<u8>,
}

impl BookingConn {
    pub fn new(endpoint: Arc<Endpoint>, timeout: Duration) -> Self {
        Self {
            endpoint,
            timeout,
            stream: None,
            last_used: Instant::now(),
            request: Vec::with_capacity(512),
            buf: Vec::with_capacity(READ_CHUNK),
        }
    }

    /// Drops an idle connection the server has closed (or sent something unasked on), so the
    /// request goes out on a new one instead of failing on a dead one.
    fn drop_if_closed(&mut self) {
        if let Some(stream) = &self.stream
            && self.last_used.elapsed() >= IDLE_CHECK
        {
            let mut probe = [0u8; 1];
            match stream.try_read(&mut probe) {
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                _ => self.stream = None,
            }
        }
    }

    /// One booking attempt within the request timeout; never a Rust error (see `Answer`).
    pub async fn book(&mut self, body: &[u8], key: Option<&str>, bearer: Option<&str>) -> Answer {
        self.write_request(body, key, bearer);
        self.drop_if_closed();
        let outcome = match tokio::time::timeout(self.timeout, self.exchange_with_retry()).await {
            Ok(outcome) => outcome,
            Err(_) => Err("timeout"),
        };
        self.last_used = Instant::now();
        match outcome {
            Ok((status, retry_after, body)) => {
                shed_if(classify(status, &self.buf[body]), retry_after)
            }
            Err(kind) => {
                // The connection's state is unknown after a failure: the next attempt starts afresh.
                self.stream = None;
                Answer::Failed(kind)
            }
        }
    }

    fn write_request(&mut self, body: &[u8], key: Option<&str>, bearer: Option<&str>) {
        use std::io::Write;
        let r = &mut self.request;
        r.clear();
        let e = &self.endpoint;
        let _ = write!(
            r,
            "POST {} HTTP/1.1\r\nhost: {}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n",
            e.target,
            e.authority,
            body.len()
        );
        if let Some(key) = key {
            let _ = write!(r, "{IDEMPOTENCY_KEY_HEADER}: {key}\r\n");
        }
        if let Some(bearer) = bearer {
            let _ = write!(r, "authorization: {bearer}\r\n");
        }
        r.extend_from_slice(b"\r\n");
        r.extend_from_slice(body);
    }

    async fn exchange_with_retry(
        &mut self,
    ) -> Result<(u16, bool, std::ops::Range<usize>), &'static str> {
        match self.exchange().await {
            Err(Failure { retry: true, .. }) => {
                self.stream = None;
                self.exchange().await.map_err(|f| f.kind)
            }
            other => other.map_err(|f| f.kind),
        }
    }

    /// Sends `self.request` and reads the answer into `self.buf`: status, whether a 503 said
    /// `Retry-After`, and where the body is in the buffer.
    async fn exchange(&mut self) -> Result<(u16, bool, std::ops::Range<usize>), Failure> {
        let reused = self.stream.is_some();
        if self.stream.is_none() {
            let e = &self.endpoint;
            let stream = TcpStream::connect((e.host.as_str(), e.port))
                .await
                .map_err(|_| Failure {
                    kind: "connect",
                    retry: false,
                })?;
            stream.set_nodelay(true).map_err(|_| Failure {
                kind: "connect",
                retry: false,
            })?;
            self.stream = Some(stream);
        }
        let stream = self.stream.as_mut().expect("connected above");
        if stream.write_all(&self.request).await.is_err() {
            return Err(Failure {
                kind: "request",
                retry: reused,
            });
        }
        self.buf.clear();
        // The head.
        let (status, retry_after, framing, close, head_len) = loop {
            let n = read_more(stream, &mut self.buf)
                .await
                .map_err(|_| Failure {
                    kind: "request",
                    retry: false,
                })?;
            if n == 0 {
                // Closed before a byte of answer: on a reused connection the peer closed it idle,
                // but it may also have read the request; reqwest does not retry this either.
                return Err(Failure {
                    kind: "request",
                    retry: false,
                });
            }
            let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
            let mut response = httparse::Response::new(&mut headers);
            match response.parse(&self.buf) {
                Ok(httparse::Status::Complete(len)) => {
                    let status = response.code.unwrap_or(0);
                    let head = Head::of(response.headers);
                    let close = head.close || response.version == Some(0);
                    break (
                        status,
                        status == 503 && head.retry_after,
                        head.framing,
                        close,
                        len,
                    );
                }
                Ok(httparse::Status::Partial) if self.buf.len() < MAX_HEAD => continue,
                _ => {
                    return Err(Failure {
                        kind: "request",
                        retry: false,
                    });
                }
            }
        };
        let body = match framing {
            Framing::Length(len) => {
                let end = head_len + len;
                while self.buf.len() < end {
                    if read_more(stream, &mut self.buf)
                        .await
                        .map_err(|_| body_failure())?
                        == 0
                    {
                        return Err(body_failure());
                    }
                }
                head_len..end
            }
            Framing::Chunked => {
                let end = read_chunked(stream, &mut self.buf, head_len).await?;
                head_len..end
            }
            Framing::UntilClose => {
                while read_more(stream, &mut self.buf)
                    .await
                    .map_err(|_| body_failure())?
                    > 0
                {}
                self.stream = None;
                return Ok((status, retry_after, head_len..self.buf.len()));
            }
        };
        if close {
            self.stream = None;
        }
        Ok((status, retry_after, body))
    }
}

fn body_failure() -> Failure {
    Failure {
        kind: "body",
        retry: false,
    }
}

/// Appends what the socket has to `buf` (into its spare capacity: nothing is zeroed first).
async fn read_more(stream: &mut TcpStream, buf: &mut Vec<u8>) -> std::io::Result<usize> {
    buf.reserve(READ_CHUNK);
    stream.read_buf(buf).await
}

/// A chunked body, decoded in place: the chunks' data is moved to follow the head; returns the
/// end of the decoded body in `buf`.
async fn read_chunked(
    stream: &mut TcpStream,
    buf: &mut Vec<u8>,
    head_len: usize,
) -> Result<usize, Failure> {
    let mut out = head_len; // end of the decoded body
    let mut at = head_len; // start of the next chunk's size line
    loop {
        match httparse::parse_chunk_size(&buf[at..]) {
            Ok(httparse::Status::Complete((size_len, size))) => {
                let size = usize::try_from(size).map_err(|_| body_failure())?;
                let data = at + size_len;
                // The chunk's data and its CRLF.
                while buf.len() < data + size + 2 {
                    if read_more(stream, buf).await.map_err(|_| body_failure())? == 0 {
                        return Err(body_failure());
                    }
                }
                if size == 0 {
                    // No trailers are expected from booking-app; the final CRLF ends the body.
                    return Ok(out);
                }
                buf.copy_within(data..data + size, out);
                out += size;
                at = data + size + 2;
            }
            Ok(httparse::Status::Partial) => {
                if read_more(stream, buf).await.map_err(|_| body_failure())? == 0 {
                    return Err(body_failure());
                }
            }
            Err(_) => return Err(body_failure()),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Framing {
    Length(usize),
    Chunked,
    UntilClose,
}

/// What the response head says about the body and the connection.
struct Head {
    framing: Framing,
    close: bool,
    retry_after: bool,
}

impl Head {
    fn of(headers: &[httparse::Header<'_>]) -> Self {
        let mut head = Head {
            framing: Framing::UntilClose,
            close: false,
            retry_after: false,
        };
        for h in headers {
            let value = std::str::from_utf8(h.value).unwrap_or("").trim();
            if h.name.eq_ignore_ascii_case("content-length") {
                if let Ok(len) = value.parse()
                    && head.framing != Framing::Chunked
                {
                    head.framing = Framing::Length(len);
                }
            } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
                if value.to_ascii_lowercase().contains("chunked") {
                    head.framing = Framing::Chunked;
                }
            } else if h.name.eq_ignore_ascii_case("connection") {
                head.close |= value.eq_ignore_ascii_case("close");
            } else if h.name.eq_ignore_ascii_case("retry-after") {
                head.retry_after = true;
            }
        }
        head
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::net::TcpListener;

    fn endpoint(url: &str) -> Option<Endpoint> {
        Endpoint::of(&reqwest::Url::parse(url).unwrap())
    }

    #[test]
    fn endpoints_come_from_plain_http_urls_only() {
        let e = endpoint("http://127.0.0.1:18181/events/abc/bookings").unwrap();
        assert_eq!((e.host.as_str(), e.port), ("127.0.0.1", 18181));
        assert_eq!(
            (e.authority.as_str(), e.target.as_str()),
            ("127.0.0.1:18181", "/events/abc/bookings")
        );
        let e = endpoint("http://booking.sale.svc/events/x/bookings?a=1").unwrap();
        assert_eq!(
            (e.port, e.authority.as_str(), e.target.as_str()),
            (80, "booking.sale.svc", "/events/x/bookings?a=1")
        );
        assert_eq!(endpoint("http://[::1]:8080/x").unwrap().host, "::1");
        assert_eq!(endpoint("https://example.com/x"), None);
    }

    /// A server that answers each request read with the next canned response, then closes.
    async fn serve(
        responses: Vec<&'static [u8]>,
    ) -> (Arc<Endpoint>, tokio::task::JoinHandle<Vec<Vec<u8>>>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let handle = tokio::spawn(async move {
            let (mut socket, _) = listener.accept().await.unwrap();
            let mut seen = Vec::new();
            for response in responses {
                let mut buf = vec![0u8; 4096];
                let n = socket.read(&mut buf).await.unwrap();
                seen.push(buf[..n].to_vec());
                socket.write_all(response).await.unwrap();
            }
            seen
        });
        let url =
            reqwest::Url::parse(&format!("http://127.0.0.1:{port}/events/e1/bookings")).unwrap();
        (Arc::new(Endpoint::of(&url).unwrap()), handle)
    }

    #[tokio::test]
    async fn bookings_share_one_connection_and_answers_are_classified() {
        let id = "7f0c3f5e-1a2b-4c3d-8e9f-0a1b2c3d4e5f";
        let body = format!(r#"{{"id":"{id}"}}"#);
        let head = format!(
            "HTTP/1.1 202 Accepted\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n",
            body.len()
        );
        let pending: &'static [u8] = Box::leak((head + &body).into_bytes().into_boxed_slice());
        let (endpoint, server) = serve(vec![
            b"HTTP/1.1 201 Created\r\ncontent-length: 2\r\n\r\n{}",
            pending,
            // Chunked, split inside the JSON: decoded in place before it is read.
            b"HTTP/1.1 409 Conflict\r\ntransfer-encoding: chunked\r\n\r\n\
              10\r\n{\"error\":{\"code\"\r\n10\r\n:\"sold_out\"}}   \r\n0\r\n\r\n",
            b"HTTP/1.1 503 Service Unavailable\r\nretry-after: 1\r\ncontent-length: 45\r\n\r\n\
              {\"error\":{\"code\":\"overloaded\",\"message\":\"x\"}}",
            // Retry-After alone is not shedding: `unavailable` leaves the outcome unknown.
            b"HTTP/1.1 503 Service Unavailable\r\nretry-after: 1\r\ncontent-length: 0\r\n\r\n",
        ])
        .await;
        let mut conn = BookingConn::new(endpoint, Duration::from_secs(5));
        assert_eq!(
            conn.book(
                br#"{"user_id":"u","quantity":1}"#,
                Some("k-1"),
                Some("Bearer t")
            )
            .await,
            Answer::Confirmed
        );
        assert_eq!(
            conn.book(b"{}", None, None).await,
            Answer::Pending(id.parse().unwrap())
        );
        assert_eq!(
            conn.book(b"{}", None, None).await,
            Answer::Refused(super::super::client::Refusal::SoldOut)
        );
        assert_eq!(conn.book(b"{}", None, None).await, Answer::Shed);
        assert_eq!(conn.book(b"{}", None, None).await, Answer::Unexpected(503));
        let seen = server.await.unwrap();
        let first = String::from_utf8(seen[0].clone()).unwrap();
        assert!(
            first.starts_with("POST /events/e1/bookings HTTP/1.1\r\n"),
            "{first}"
        );
        assert!(
            first.contains("\r\nIdempotency-Key: k-1\r\n")
                && first.contains("\r\nauthorization: Bearer t\r\n")
                && first.contains("content-length: 28\r\n"),
            "{first}"
        );
        assert!(
            first.ends_with("\r\n\r\n{\"user_id\":\"u\",\"quantity\":1}"),
            "{first}"
        );
        assert!(
            !String::from_utf8(seen[1].clone())
                .unwrap()
                .contains("Idempotency-Key")
        );
    }

    #[tokio::test]
    async fn a_closed_connection_is_an_unknown_outcome_and_the_next_attempt_reconnects() {
        // The server reads the request and closes without answering.
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let server = tokio::spawn(async move {
            let (mut socket, _) = listener.accept().await.unwrap();
            let mut buf = vec![0u8; 4096];
            let _ = socket.read(&mut buf).await;
            drop(socket);
            let (mut socket, _) = listener.accept().await.unwrap();
            let _ = socket.read(&mut buf).await;
            socket
                .write_all(b"HTTP/1.1 201 Created\r\ncontent-length: 0\r\n\r\n")
                .await
                .unwrap();
        });
        let url = reqwest::Url::parse(&format!("http://127.0.0.1:{port}/b")).unwrap();
        let mut conn = BookingConn::new(
            Arc::new(Endpoint::of(&url).unwrap()),
            Duration::from_secs(5),
        );
        let answer = conn.book(b"{}", Some("k"), None).await;
        assert_eq!(answer, Answer::Failed("request"));
        assert!(answer.outcome_unknown());
        assert_eq!(conn.book(b"{}", Some("k"), None).await, Answer::Confirmed);
        server.await.unwrap();
    }

    #[tokio::test]
    async fn a_silent_server_times_out_and_nothing_listening_is_a_connect_failure() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let _hold = tokio::spawn(async move {
            let (socket, _) = listener.accept().await.unwrap();
            tokio::time::sleep(Duration::from_secs(5)).await;
            drop(socket);
        });
        let url = reqwest::Url::parse(&format!("http://127.0.0.1:{port}/b")).unwrap();
        let mut conn = BookingConn::new(
            Arc::new(Endpoint::of(&url).unwrap()),
            Duration::from_millis(200),
        );
        assert_eq!(
            conn.book(b"{}", None, None).await,
            Answer::Failed("timeout")
        );

        let free = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = free.local_addr().unwrap().port();
        drop(free);
        let url = reqwest::Url::parse(&format!("http://127.0.0.1:{port}/b")).unwrap();
        let mut conn = BookingConn::new(
            Arc::new(Endpoint::of(&url).unwrap()),
            Duration::from_secs(2),
        );
        assert_eq!(
            conn.book(b"{}", None, None).await,
            Answer::Failed("connect")
        );
    }
}
