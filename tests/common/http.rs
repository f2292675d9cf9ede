//! A minimal HTTP/1.1 client for attacking the console the way a script would: from any
//! loopback source address (127.0.0.0/8), with a session cookie, concurrently (tokio).

use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// An answer: status, raw header block, body.
#[derive(Debug, Clone)]
pub struct Answer {
    pub status: u16,
    pub headers: String,
    pub body: String,
}

impl Answer {
    /// The `name=value` of the first `Set-Cookie`, if any.
    pub fn cookie(&self) -> Option<String> {
        self.headers.lines().find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case("set-cookie")
                .then(|| v.trim().split(';').next().unwrap_or("").to_owned())
        })
    }
}

/// Sends one request from `from` to the console on loopback `port`; `None` if nothing
/// answered within `timeout`.
pub async fn request(
    from: Ipv4Addr,
    port: u16,
    method: &str,
    path: &str,
    cookie: Option<&str>,
    form: Option<&str>,
    timeout: Duration,
) -> Option<Answer> {
    tokio::time::timeout(timeout, async {
        let socket = tokio::net::TcpSocket::new_v4().ok()?;
        socket.bind(SocketAddr::from((from, 0))).ok()?;
        let mut s = socket
            .connect(SocketAddr::from(([127, 0, 0, 1], port)))
            .await
            .ok()?;
        let mut req = format!(
            "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n"
        );
        if let Some(c) = cookie {
            req.push_str(&format!("Cookie: {c}\r\n"));
        }
        if let Some(body) = form {
            req.push_str(&format!(
                "Content-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\n\r\n{body}",
                body.len()
            ));
        } else {
            req.push_str("\r\n");
        }
        s.write_all(req.as_bytes()).await.ok()?;
        let mut raw = Vec::new();
        s.read_to_end(&mut raw).await.ok()?;
        let text = String::from_utf8_lossy(&raw).into_owned();
        let (head, body) = text.split_once("\r\n\r\n")?;
        let status = head.split_whitespace().nth(1)?.parse().ok()?;
        Some(Answer {
            status,
            headers: head.to_owned(),
            body: body.to_owned(),
        })
    })
    .await
    .ok()
    .flatten()
}

/// Percent-encodes a form value.
pub fn form_value(v: &str) -> String {
    use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC as ALL};
    // All but the unreserved characters of RFC 3986.
    const VALUE: &AsciiSet = &ALL.remove(b'-').remove(b'_').remove(b'.').remove(b'~');
    utf8_percent_encode(v, VALUE).to_string()
}
