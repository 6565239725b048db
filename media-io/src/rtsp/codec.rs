//! RTSP/1.0 on a push connection: request heads, interleaved RTP frames (`$`, channel,
//! length) and replies. Bounded: a request head over [`MAX_HEADER`] bytes or a body over
//! [`MAX_BODY`] is an error, never a bigger buffer.

use tokio::io::{AsyncRead, AsyncReadExt};

/// Largest request head (request line and headers).
pub const MAX_HEADER: usize = 16 * 1024;
/// Largest request body (an ANNOUNCE's SDP).
pub const MAX_BODY: usize = 64 * 1024;

/// What is wrong with the bytes an encoder sent.
#[derive(Debug, thiserror::Error)]
pub enum CodecError {
    /// The connection failed or closed.
    #[error("connection: {0}")]
    Io(#[from] std::io::Error),
    /// The request line is not `METHOD URL RTSP/1.x`.
    #[error("bad request line {0:?}")]
    RequestLine(String),
    /// Not RTSP/1.x.
    #[error("not RTSP/1.x: {0:?}")]
    Version(String),
    /// A header line without a colon.
    #[error("bad header line {0:?}")]
    HeaderLine(String),
    /// Content-Length is not a number.
    #[error("bad Content-Length {0:?}")]
    ContentLength(String),
    /// Content-Length over [`MAX_BODY`].
    #[error("body of {0} bytes is too large")]
    BodyTooLarge(usize),
    /// Request head over [`MAX_HEADER`].
    #[error("request head too large")]
    HeadTooLarge,
}

/// A message from the encoder: a request head or an interleaved frame's header.
#[derive(Debug)]
pub enum Message {
    /// A request; its body (`content_length` bytes) follows.
    Request(RequestHead),
    /// An interleaved frame of `len` bytes on `channel` follows.
    Interleaved {
        /// Interleaved channel (RTP on even, RTCP on odd numbers by convention).
        channel: u8,
        /// Frame length.
        len: usize,
    },
}

/// A request line and its headers.
#[derive(Debug, Clone)]
pub struct RequestHead {
    /// `ANNOUNCE`, `SETUP`, ...
    pub method: String,
    /// Request URL as sent.
    pub url: String,
    /// Headers in order.
    pub headers: Vec<(String, String)>,
    /// Body length.
    pub content_length: usize,
}

/// A whole request.
#[derive(Debug, Clone)]
pub struct Request {
    /// Its head.
    pub head: RequestHead,
    /// Its body.
    pub body: Vec<u8>,
}

impl Request {
    /// First header `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.head
            .headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The method.
    pub fn method(&self) -> &str {
        &self.head.method
    }

    /// The URL.
    pub fn url(&self) -> &str {
        &self.head.url
    }
}

/// A reply: status line, extra headers, and whether the connection closes after it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    /// `200 OK`, `401 Unauthorized`, ...
    pub status: &'static str,
    /// Headers besides CSeq and Server.
    pub headers: Vec<(&'static str, String)>,
    /// Close the connection once sent.
    pub close: bool,
}

impl Reply {
    /// `status` with no extra headers, connection kept.
    pub fn status(status: &'static str) -> Self {
        Self {
            status,
            headers: Vec::new(),
            close: false,
        }
    }

    /// Adds a header.
    pub fn header(mut self, name: &'static str, value: impl Into<String>) -> Self {
        self.headers.push((name, value.into()));
        self
    }

    /// Closes the connection after this reply.
    pub fn closing(mut self) -> Self {
        self.close = true;
        self
    }

    /// The reply's bytes, answering the request with `cseq`.
    pub fn encode(&self, cseq: &str) -> Vec<u8> {
        let mut s = format!(
            "RTSP/1.0 {}\r\nCSeq: {cseq}\r\nServer: canopy-gateway\r\n",
            self.status
        );
        for (k, v) in &self.headers {
            s.push_str(k);
            s.push_str(": ");
            // a header value never carries a line break into the reply
            s.extend(v.chars().filter(|c| *c != '\r' && *c != '\n'));
            s.push_str("\r\n");
        }
        s.push_str("\r\n");
        s.into_bytes()
    }
}

/// Parses a request head (request line + headers, without the blank line).
pub fn parse_head(text: &str) -> Result<RequestHead, CodecError> {
    let mut lines = text.split("\r\n").flat_map(|l| l.split('\n'));
    let first = lines.next().unwrap_or("");
    let mut f = first.split(' ');
    let (Some(method), Some(url), Some(version)) = (f.next(), f.next(), f.next()) else {
        return Err(CodecError::RequestLine(first.chars().take(200).collect()));
    };
    if !version.starts_with("RTSP/1.") {
        return Err(CodecError::Version(version.chars().take(40).collect()));
    }
    let mut headers = Vec::new();
    let mut content_length = 0;
    for l in lines.filter(|l| !l.is_empty()) {
        let Some((k, v)) = l.split_once(':') else {
            return Err(CodecError::HeaderLine(l.chars().take(200).collect()));
        };
        let (k, v) = (k.trim().to_string(), v.trim().to_string());
        if k.eq_ignore_ascii_case("content-length") {
            content_length = v
                .parse()
                .map_err(|_| CodecError::ContentLength(v.chars().take(40).collect()))?;
            if content_length > MAX_BODY {
                return Err(CodecError::BodyTooLarge(content_length));
            }
        }
        headers.push((k, v));
    }
    Ok(RequestHead {
        method: method.to_string(),
        url: url.to_string(),
        headers,
        content_length,
    })
}

/// Path of an RTSP URL (`rtsp://host:port/a/b` → `a/b`; a bare path is taken as is).
pub fn url_path(url: &str) -> &str {
    let rest = url
        .strip_prefix("rtsp://")
        .or_else(|| url.strip_prefix("rtsps://"))
        .map_or(url, |r| r.find('/').map_or("", |i| &r[i..]));
    let rest = rest.split('?').next().unwrap_or("");
    rest.trim_matches('/')
}

/// Reads the next message: an interleaved frame header (`$`, channel, length) or a request
/// head. `buf` is scratch space.
pub async fn read_message<R: AsyncRead + Unpin>(
    rd: &mut R,
    buf: &mut Vec<u8>,
) -> Result<Message, CodecError> {
    let first = rd.read_u8().await?;
    if first == b'$' {
        let channel = rd.read_u8().await?;
        let len = rd.read_u16().await?;
        return Ok(Message::Interleaved {
            channel,
            len: usize::from(len),
        });
    }
    buf.clear();
    buf.push(first);
    loop {
        let b = rd.read_u8().await?;
        buf.push(b);
        if buf.ends_with(b"\r\n\r\n") || buf.ends_with(b"\n\n") {
            break;
        }
        if buf.len() > MAX_HEADER {
            return Err(CodecError::HeadTooLarge);
        }
    }
    let text = String::from_utf8_lossy(buf);
    parse_head(text.trim_end()).map(Message::Request)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_heads_and_paths() {
        let h = parse_head(
            "ANNOUNCE rtsp://127.0.0.1:8554/stage RTSP/1.0\r\nCSeq: 2\r\nContent-Length: 10",
        )
        .unwrap();
        assert_eq!((h.method.as_str(), h.content_length), ("ANNOUNCE", 10));
        assert!(matches!(
            parse_head("GET / HTTP/1.1"),
            Err(CodecError::Version(_))
        ));
        assert!(matches!(
            parse_head("SETUP x RTSP/1.0\r\nContent-Length: 99999999"),
            Err(CodecError::BodyTooLarge(_))
        ));
        assert!(matches!(
            parse_head("SETUP x RTSP/1.0\r\nnocolon"),
            Err(CodecError::HeaderLine(_))
        ));
        assert_eq!(
            url_path("rtsp://h:8554/stage/streamid=0"),
            "stage/streamid=0"
        );
        assert_eq!(url_path("rtsp://h:8554/stage?x=1"), "stage");
        assert_eq!(url_path("rtsp://h"), "");
    }

    #[test]
    fn replies_are_one_header_per_line() {
        let r = Reply::status("200 OK")
            .header("Session", "abc;timeout=60\r\nX-Evil: 1")
            .encode("7");
        let text = String::from_utf8(r).unwrap();
        assert_eq!(
            text,
            "RTSP/1.0 200 OK\r\nCSeq: 7\r\nServer: canopy-gateway\r\nSession: abc;timeout=60X-Evil: 1\r\n\r\n"
        );
    }

    #[tokio::test]
    async fn messages_from_bytes() {
        let mut input: &[u8] = b"$\x00\x00\x03abcOPTIONS rtsp://h/x RTSP/1.0\r\nCSeq: 1\r\n\r\n";
        let mut buf = Vec::new();
        match read_message(&mut input, &mut buf).await.unwrap() {
            Message::Interleaved { channel: 0, len: 3 } => {}
            other => panic!("{other:?}"),
        }
        input = &input[3..];
        match read_message(&mut input, &mut buf).await.unwrap() {
            Message::Request(h) => assert_eq!(h.method, "OPTIONS"),
            other => panic!("{other:?}"),
        }
        let big = vec![b'a'; MAX_HEADER + 10];
        let mut input: &[u8] = &big;
        assert!(matches!(
            read_message(&mut input, &mut buf).await,
            Err(CodecError::HeadTooLarge)
        ));
    }
}
