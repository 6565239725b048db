//! An answer the gateway gives before a device's body has ended (a 413 for a declared
//! length over the limit, the relay's refusal of a body that outgrew its limit) reaches
//! the device whole, and the device may go on sending to its end: the gateway reads and
//! drops what still comes for a while before it closes (a lingering close). A close with
//! bytes unread makes the kernel reset the connection, which fails the device's sends and
//! can destroy the answer before the device has read it (seen in CI: a 413 whose body
//! broke off with "connection error").

mod emulated;

use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_early_answer_reaches_a_device_still_sending() {
    let bed = emulated::two_links_with(|p| p.max_body_bytes = 1 << 20).await;
    let url = bed.origin_url("/digest");
    let host = bed.origin;
    let total = 4usize << 20;
    let tcp = tokio::net::TcpStream::connect(bed.proxy)
        .await
        .expect("connect");
    let (mut rd, mut wr) = tcp.into_split();
    let head = format!("POST {url} HTTP/1.1\r\nHost: {host}\r\nContent-Length: {total}\r\n\r\n");
    wr.write_all(head.as_bytes()).await.expect("head sent");
    let reader = tokio::spawn(async move {
        let mut got = Vec::new();
        let r = rd.read_to_end(&mut got).await;
        (r, got)
    });
    // 4 MiB in 64 KiB pieces, 10 ms apart (about 50 Mbit/s): the 413 comes at once
    let piece = vec![7u8; 64 * 1024];
    for i in 0..total / piece.len() {
        if let Err(e) = wr.write_all(&piece).await {
            panic!("piece {i} of the body not sent: {e}");
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let (read, got) = tokio::time::timeout(Duration::from_secs(10), reader)
        .await
        .expect("the answer ends within 10 s of the body's end")
        .expect("reader");
    let text = String::from_utf8_lossy(&got);
    read.unwrap_or_else(|e| panic!("the answer not read to its end ({e}): {text:?}"));
    assert!(text.starts_with("HTTP/1.1 413"), "{text}");
    assert!(text.contains("limit"), "{text}");
}
